"""OpenCLIP's text encoder: resolving its weights without hanging offline, and loading it.

A local checkpoint file, a tag whose weights are already in the Hugging Face or CLIP cache, or a
``local-dir:`` folder load with no network; a tag to download is tried only after the hub probe of
:mod:`sgg_plugins.text.weights` answers. open_clip is imported inside the functions that need it.
"""
import difflib
import importlib.util
import os
import warnings

from .weights import LOCAL_DIR, CLIPUnavailableError, _hub_cache_dir, hub_unreachable_reason


def _import_open_clip():
    try:
        with warnings.catch_warnings():
            # timm, under open_clip, imports wandb when installed, whose models warn through pydantic on import
            # (4 lines of wandb's schema business before the one line a bad input gets).
            warnings.filterwarnings("ignore", module=r"pydantic\.")
            import open_clip
    except ImportError:
        raise ImportError("MODEL.RCL needs OpenCLIP to compute text embeddings: `pip install open_clip_torch "
                          "--no-deps && pip install ftfy regex huggingface_hub` (keeps your torch), or set "
                          "MODEL.RCL.TEXT_EMBEDDINGS to a file made with `sgg-plugins embed`.") from None
    return open_clip


def _downloads_from_hf_hub(tag_cfg):
    """open_clip prefers the Hugging Face hub when the tag has an entry there and the hub client is installed."""
    return bool(tag_cfg.get("hf_hub")) and importlib.util.find_spec("huggingface_hub") is not None


def _cached_weights_file(tag_cfg):
    """The already-downloaded file for an OpenCLIP tag, or None; looks where open_clip would download to."""
    if tag_cfg.get("file"):
        return tag_cfg["file"] if os.path.isfile(tag_cfg["file"]) else None
    if _downloads_from_hf_hub(tag_cfg):
        from huggingface_hub import try_to_load_from_cache
        from open_clip.pretrained import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

        repo_id, filename = os.path.split(tag_cfg["hf_hub"])
        filename = filename or HF_WEIGHTS_NAME
        # open_clip tries a .safetensors twin first; either may be the cached one.
        candidates = [filename]
        if filename == HF_WEIGHTS_NAME:
            candidates.insert(0, HF_SAFE_WEIGHTS_NAME)
        elif filename.endswith((".bin", ".pth")):
            candidates.insert(0, filename[:-4] + ".safetensors")
        for name in candidates:
            path = try_to_load_from_cache(repo_id, name, cache_dir=_hub_cache_dir())
            if isinstance(path, str) and os.path.isfile(path):
                return path
    if tag_cfg.get("url"):
        path = os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(tag_cfg["url"]))
        if os.path.isfile(path):
            return path
    return None


def _offline_message(model, pretrained, reason):
    return (f"CLIP weights {pretrained!r} for {model} are not in the local cache and cannot be downloaded "
            f"({reason}). Two ways out: set MODEL.RCL.CLIP_PRETRAINED (--clip-pretrained of `sgg-plugins embed`) "
            f"to a local OpenCLIP checkpoint file (e.g. one copied from a machine with internet), or set "
            f"MODEL.RCL.TEXT_EMBEDDINGS to an embedding file made on a machine with internet with "
            f"`sgg-plugins embed --dict-file VG-SGG-dicts.json "
            f"--roidb-file VG-SGG.h5 --clip-model {model} --clip-pretrained {pretrained} --out FILE`.")


def resolve_clip_weights(model, pretrained):
    """Check ``model`` and ``pretrained`` without touching the network longer than a probe.

    Returns ``(weights, force_quick_gelu)`` for ``open_clip.create_model``: a local file when one
    is given or already cached (so open_clip never goes online), else the tag to download.
    Raises :class:`CLIPUnavailableError` naming the fix.
    """
    open_clip = _import_open_clip()
    if model.startswith(LOCAL_DIR):
        # A saved OpenCLIP folder carries its own config and weights; open_clip ignores `pretrained`.
        folder = model[len(LOCAL_DIR):]
        if not os.path.isfile(os.path.join(folder, "open_clip_config.json")):
            raise CLIPUnavailableError(f"MODEL.RCL.CLIP_MODEL = {model!r}: {folder} has no open_clip_config.json; "
                                       "a local-dir: model is a folder as OpenCLIP saves one for the Hugging Face hub.")
        return None, False
    models = open_clip.list_models()
    if model not in models:
        close = difflib.get_close_matches(model, models, n=5) or [m for m in ("ViT-B-32", "ViT-B-16", "ViT-L-14",
                                                                              "RN50") if m in models]
        raise CLIPUnavailableError(f"unknown OpenCLIP model {model!r} (MODEL.RCL.CLIP_MODEL); e.g. "
                                   f"{', '.join(close)} (open_clip.list_models() lists all {len(models)}).")
    if not pretrained:
        raise CLIPUnavailableError("MODEL.RCL.CLIP_PRETRAINED is empty: give an OpenCLIP tag (e.g. 'openai') or a "
                                   "local checkpoint file; random text weights would make the embeddings meaningless.")
    if os.path.isfile(pretrained):
        return pretrained, False
    tag_cfg = open_clip.get_pretrained_cfg(model, pretrained)
    if not tag_cfg:
        tags = open_clip.list_pretrained_tags_by_model(model)
        looks_like_path = os.sep in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors"))
        what = "no such checkpoint file" if looks_like_path else "not a weights tag of this model"
        raise CLIPUnavailableError(f"MODEL.RCL.CLIP_PRETRAINED = {pretrained!r}: {what}. Tags for {model}: "
                                   f"{', '.join(tags) or 'none'}; or give the path of a local checkpoint file.")
    # The tag knows the activation its weights were trained with (OpenAI's need QuickGELU).
    quick_gelu = bool(tag_cfg.get("quick_gelu", False))
    cached = _cached_weights_file(tag_cfg)
    if cached:
        return cached, quick_gelu
    reason = hub_unreachable_reason(None if _downloads_from_hf_hub(tag_cfg) else tag_cfg.get("url"))
    if reason:
        raise CLIPUnavailableError(_offline_message(model, pretrained, reason))
    return pretrained, quick_gelu


def load_clip(model, pretrained, device="cpu"):
    """Frozen OpenCLIP model (eval mode) and its tokenizer."""
    open_clip = _import_open_clip()
    weights, quick_gelu = resolve_clip_weights(model, pretrained)
    try:
        clip = open_clip.create_model(model, pretrained=weights, force_quick_gelu=quick_gelu, device=device)
    except Exception as error:  # a failed download, or a checkpoint of another architecture
        hint = ("is MODEL.RCL.CLIP_PRETRAINED a checkpoint of MODEL.RCL.CLIP_MODEL?" if weights and os.path.isfile(weights) else
                _offline_message(model, pretrained, "the download failed"))
        raise CLIPUnavailableError(f"could not load CLIP weights {weights} into {model} "
                                   f"({type(error).__name__}: {str(error)[:300]}); {hint}") from None
    clip.eval().requires_grad_(False)
    return clip, open_clip.get_tokenizer(model)
