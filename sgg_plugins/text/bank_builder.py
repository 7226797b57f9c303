"""RCL's text bank for given classes and triplets: computed once by the text encoder, then loaded from its cache file.

CLIP never runs inside a training step: :func:`load_or_compute_bank` embeds everything once, caches
it to a file keyed by everything that changes the numbers, and later runs load that file. What the
bank holds is described in :mod:`sgg_plugins.text.bank`.
"""
import hashlib
import logging
import os

import torch

from .bank import (
    CACHE_FORMAT,
    DEFAULT_OBJECT_PROMPT,
    DEFAULT_PROMPT,
    PREDICATE_OBJECT_PHRASE,
    PREDICATE_PHRASE,
    SUBJECT_PREDICATE_PHRASE,
    TextEmbeddingBank,
)
from .cache import default_cache_file, unfit_parts, weights_identity
from .encoders import embed_texts, resolve_text_encoder
from .vg_files import read_vg_training_triplets
from .weights import CLIPUnavailableError

logger = logging.getLogger(__name__)


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


def compute_bank(obj_classes, pred_classes, triplet_labels, model, pretrained, prompt=DEFAULT_PROMPT,
                 object_prompt=DEFAULT_OBJECT_PROMPT, device="cpu", batch_size=256):
    """Run the text encoder once over every prompt and phrase the bank holds (see :mod:`sgg_plugins.text.bank`)."""
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


def text_bank_from_roidb(roidb_file, obj_classes, pred_classes, **bank_options):
    """The RCL text bank for every training triplet of SGB's dataset file ``roidb_file`` (VG-SGG.h5).

    ``obj_classes`` / ``pred_classes``: the host's class lists, background at 0 (its dataset's
    ``ind_to_classes`` / ``ind_to_predicates``). ``bank_options``: those of :func:`load_or_compute_bank`
    (model, pretrained, prompt, object_prompt, cache_path, user_file, device).
    """
    return load_or_compute_bank(obj_classes, pred_classes, read_vg_training_triplets(roidb_file), **bank_options)
