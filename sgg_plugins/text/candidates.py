"""The text candidates of CLIP predicate matching (seed 003 §3.2, ``MODEL.CLIPMATCH``), embedded once.

§3.2: "For each triple in the set of k ground truth triples, we first enumerated p (subject,
predicate_i, object) triples where p is the number of predicates. We then concatenated each of
these triples into 'subject predicate object' string format, resulting in m = k * p sentences. We
also added a 'null relation' string as a matched pair with union image regions or (subject, object)
pairs that have no visual relationship."

The candidates of a (subject, object) class pair are therefore its p prompts, whatever the
predicate of the ground truth; which class pairs need them is the question. A ground-truth triplet
can only have a (subject, object) class pair that carries a relation somewhere in the training
split, so the bank embeds exactly those pairs (K of them), each with every predicate: K * p + 1
texts (the null text last). Every class combination would be O² * p texts (1.1 M for VG-150/50);
K is the number of distinct (subject, object) class pairs of the training relations, which on
VG-150 is a small fraction of the 22,350 ordered pairs. Storage is (K * p + 1) * D floats
(D = 512 for ViT-B-32), kept on the CPU side of the host unless moved.

This module reuses RCL's bank machinery (:mod:`sgg_plugins.text.bank_builder`): the same OpenCLIP
loading (``load_clip``: local files, ``local-dir:`` folders, the quick offline failure), the same
batched encoding (``encode_texts``), the same weights identity in the cache key, the same cache
folder and atomic writes. CLIP never runs in a training step: the file is computed once (or by
``sgg-plugins embed-candidates`` on a machine with internet) and loaded afterwards.

Index convention (SGB's): label 0 is the background for objects and predicates. Text id
``k * p + (predicate - 1)`` is the prompt of class pair k with that predicate; ``K * p`` is the
null text.
"""

import hashlib
import logging
import os
import re

import torch

from ..regularizers.transfer import check_values

from .bank_builder import _check_class_list
from .cache import default_cache_file, save_atomically, unfit_parts, weights_identity
from .clip_encoder import load_clip, resolve_clip_weights
from .encoders import encode_texts
from .weights import LOCAL_DIR, SENTENCE_TRANSFORMERS, CLIPUnavailableError

logger = logging.getLogger(__name__)

DEFAULT_PROMPT = "{subject} {predicate} {object}"  # "'subject predicate object' string format" (§3.2)
DEFAULT_NULL_PROMPT = "null relation"
# Bumped whenever what the file holds or how it is computed changes: old caches are then recomputed.
CANDIDATE_FORMAT = 1
FILE_KIND = "clipmatch_candidates"  # tells this file from RCL's bank, which shares the cache folder


class CandidateTextBank:
    """Frozen, L2-normalised CLIP embeddings of every candidate text, with vectorised lookups.

    Args:
        class_pairs: [K, 2] long (subject, object) class labels, 1-based, no duplicates.
        texts: [K, P, D] embedding of the prompt of class pair k with predicate j + 1.
        null: [D] embedding of the null text.
        meta: free-form dict (class names, cache key) kept with the file.
    """

    def __init__(self, class_pairs, texts, null, num_objects, meta=None):
        class_pairs = torch.as_tensor(class_pairs, dtype=torch.long).reshape(-1, 2)
        if texts.dim() != 3 or texts.shape[0] != class_pairs.shape[0] or null.shape != texts.shape[-1:]:
            raise ValueError(f"CandidateTextBank: texts {tuple(texts.shape)} and null {tuple(null.shape)} do not fit "
                             f"{class_pairs.shape[0]} class pairs ([K, P, D] and [D] expected)")
        self.num_objects = int(num_objects)
        self.num_predicates = texts.shape[1]
        self.dim = texts.shape[2]
        self.meta = dict(meta or {})
        keys = self._pair_key(class_pairs[:, 0], class_pairs[:, 1])
        # Sorted keys make the class pairs searchable with torch.searchsorted.
        self.pair_keys, order = keys.sort()
        if (self.pair_keys[1:] == self.pair_keys[:-1]).any():
            raise ValueError("CandidateTextBank: class_pairs holds the same (subject, object) pair twice.")
        self.class_pairs = class_pairs[order]
        self.table = torch.cat([texts.detach().float()[order].reshape(-1, self.dim), null.detach().float()[None]])

    @property
    def num_pairs(self):
        return self.class_pairs.shape[0]

    @property
    def null_id(self):
        return self.num_pairs * self.num_predicates

    @property
    def device(self):
        return self.table.device

    def to(self, device):
        """Move the tables to ``device`` (in place; a no-op when already there). Returns self."""
        device = torch.device(device)
        if self.device != device:
            for name in ("pair_keys", "class_pairs", "table"):
                setattr(self, name, getattr(self, name).to(device))
        return self

    def _pair_key(self, subj, obj):
        return subj.long() * (self.num_objects + 1) + obj.long()

    def _check(self, labels, upper, what):
        if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise TypeError(f"{what} labels must be an integer tensor, got {labels.dtype}")
        if labels.numel():  # on a GPU a queued check: reading the range would wait for it on every step
            check_values((labels < 0) | (labels > upper), lambda: (
                f"{what} labels must lie in [0, {upper}] (0 = background) for this candidate text "
                f"bank, got range [{int(labels.min())}, {int(labels.max())}]; were the embeddings "
                f"made for another dataset's class list?"),
                f"{what} labels outside [0, {upper}] for this text bank")
        return labels.long().to(self.device)

    def pair_index(self, subj, obj):
        """Row k of each (subject, object) class pair in the bank [N], and ``found`` [N] bool."""
        keys = self._pair_key(self._check(subj, self.num_objects, "subject"),
                              self._check(obj, self.num_objects, "object"))
        if self.num_pairs == 0:
            return torch.zeros_like(keys), torch.zeros_like(keys, dtype=torch.bool)
        index = torch.searchsorted(self.pair_keys, keys).clamp(max=self.num_pairs - 1)
        return index, self.pair_keys[index] == keys

    def candidates(self, subj, obj):
        """The p + 1 candidate text ids of each pair, [N, p + 1]: its p prompts, then the null text.

        Pairs whose class pair is not in the bank (``found`` False) get -1 for the p prompts.
        """
        index, found = self.pair_index(subj, obj)
        prompts = index[:, None] * self.num_predicates + torch.arange(self.num_predicates, device=self.device)
        prompts = torch.where(found[:, None], prompts, torch.full_like(prompts, -1))
        return torch.cat([prompts, torch.full_like(index, self.null_id)[:, None]], 1), found

    def target_ids(self, subj, pred, obj):
        """The text each pair matches [N]: its triplet's prompt, or the null text for predicate 0.

        -1 for a foreground pair whose class pair is not in the bank.
        """
        pred = self._check(pred, self.num_predicates, "predicate")
        index, found = self.pair_index(subj, obj)
        prompt = index * self.num_predicates + (pred - 1)
        target = torch.where(found, prompt, torch.full_like(prompt, -1))
        return torch.where(pred == 0, torch.full_like(prompt, self.null_id), target)

    def embeddings(self, ids):
        """[...] text ids -> [..., D] embeddings."""
        return self.table[ids]

    def state_dict(self):
        num_pairs = self.num_pairs
        return {
            "kind": FILE_KIND,
            "format": CANDIDATE_FORMAT,
            "class_pairs": self.class_pairs.cpu(),
            "texts": self.table[:-1].reshape(num_pairs, self.num_predicates, self.dim).cpu(),
            "null": self.table[-1].cpu(),
            "num_objects": self.num_objects,
            "meta": self.meta,
        }

    def save(self, path):
        save_atomically(self.state_dict(), path)

    @classmethod
    def load(cls, path, device="cpu"):
        remedy = f"recreate it with `sgg-plugins embed-candidates ... --out {path}`"
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise FileNotFoundError(f"candidate text embedding file not found: {path}") from None
        except Exception as error:
            # Not torch's message: several lines, advising weights_only=False, i.e. running whatever
            # code the file holds, never the way out for a file that should hold only tensors.
            raise ValueError(f"{path} is not a readable candidate text embedding file ({type(error).__name__}: "
                             f"truncated, or not written by sgg-plugins); {remedy}.") from None
        if not isinstance(state, dict) or state.get("kind") != FILE_KIND:
            raise ValueError(f"{path} is not a candidate text embedding file (an RCL file from `sgg-plugins embed`?); "
                             f"{remedy}.")
        if state.get("format") != CANDIDATE_FORMAT:
            raise ValueError(f"{path} has candidate text format {state.get('format')!r}, this version reads "
                             f"{CANDIDATE_FORMAT}; {remedy}.")
        bank = cls(state["class_pairs"], state["texts"], state["null"], state["num_objects"], meta=state["meta"])
        return bank.to(device)


def _unique_class_pairs(class_pairs, num_obj):
    class_pairs = torch.as_tensor(class_pairs, dtype=torch.long).reshape(-1, 2)
    if class_pairs.numel() and ((class_pairs < 1) | (class_pairs > num_obj)).any():
        row = class_pairs[((class_pairs < 1) | (class_pairs > num_obj)).any(1)][0].tolist()
        raise ValueError(f"class pair {row} is out of range: (subject, object) labels must lie in [1, {num_obj}]")
    keys = (class_pairs[:, 0] * (num_obj + 1) + class_pairs[:, 1]).unique()
    return torch.stack([keys // (num_obj + 1), keys % (num_obj + 1)], 1), keys


def cache_key(obj_classes, pred_classes, pair_keys, model, pretrained, prompt, null_prompt):
    return {
        "format": CANDIDATE_FORMAT,
        "clip_model": model,
        "clip_weights": weights_identity(pretrained, model),
        "prompt": prompt,
        "null_prompt": null_prompt,
        "obj_classes": list(obj_classes[1:]),
        "pred_classes": list(pred_classes[1:]),
        "class_pairs_sha256": hashlib.sha256(pair_keys.numpy().tobytes()).hexdigest(),
    }


def _clipmatch_message(error):
    """The CLIP errors of :mod:`sgg_plugins.text.clip_encoder` name MODEL.RCL's keys and `sgg-plugins embed`;
    the same error, ours named."""
    text = re.sub(r"sgg-plugins embed\b(?!-)", "sgg-plugins embed-candidates", str(error))
    return type(error)(text.replace("MODEL.RCL", "MODEL.CLIPMATCH"))


def load_or_compute_candidate_bank(obj_classes, pred_classes, class_pairs, model="ViT-B-32", pretrained="openai",
                                   prompt=DEFAULT_PROMPT, null_prompt=DEFAULT_NULL_PROMPT, cache_dir=None,
                                   cache_path=None, device="cpu", batch_size=256, dry_run=False):
    """The candidate text bank for these classes and class pairs, from the cache when it is current.

    Args:
        obj_classes, pred_classes: names indexed by label, entry 0 the background.
        class_pairs: [K, 2] (subject, object) labels that need candidates (duplicates ok).
        prompt: template with {subject} {predicate} {object}; null_prompt: the null text.
        cache_path: the file to use (``MODEL.CLIPMATCH.TEXT_EMBEDDINGS``); or ``cache_dir``: a folder
            where the file is named by the key's digest (default ``~/.cache/sgg_plugins/text_embeddings``).

    The file is reused when it was made with the same model, weights, templates and class lists and
    holds every requested class pair; otherwise it is recomputed (needs CLIP) and overwritten.
    ``dry_run`` (the launchers' preflight) computes nothing: the same checks and errors, and where the
    bank would be computed, only a check that CLIP's weights can be had (no model built); None then.

    ``model`` must be OpenCLIP's: seed 003 matches relations in CLIP's text space, which CLIP trained
    to align with images; a sentence-transformers encoder (which ``MODEL.RCL`` accepts) was trained
    on text alone, so matching against it would be another method under this one's name.
    """
    if model.startswith(SENTENCE_TRANSFORMERS):
        raise ValueError(f"MODEL.CLIPMATCH.CLIP_MODEL {model!r}: CLIP predicate matching needs CLIP's image-aligned "
                         f"text space (seed 003), which a sentence-transformers encoder does not have; give an "
                         f"OpenCLIP model (only MODEL.RCL accepts {SENTENCE_TRANSFORMERS}).")
    obj_classes = _check_class_list(obj_classes, "obj_classes")
    pred_classes = _check_class_list(pred_classes, "pred_classes")
    missing = [field for field in ("{subject}", "{predicate}", "{object}") if field not in prompt]
    if missing:
        raise ValueError(f"prompt template {prompt!r} lacks {', '.join(missing)}")
    if not null_prompt.strip():
        raise ValueError("the null relation text is empty")
    class_pairs, pair_keys = _unique_class_pairs(class_pairs, len(obj_classes) - 1)
    key = cache_key(obj_classes, pred_classes, pair_keys, model, pretrained, prompt, null_prompt)
    cache_path = cache_path or default_cache_file(cache_dir, "clip_candidates", model, pretrained, key)

    stale_reason = ""
    if os.path.isfile(cache_path):
        bank = CandidateTextBank.load(cache_path, device=device)
        changed, uncovered = unfit_parts(bank.meta.get("key", {}), key, "class_pairs_sha256", pair_keys,
                                         bank.pair_keys)
        if not changed and not uncovered:
            if not dry_run:
                logger.info("candidate text embeddings loaded from %s", cache_path)
            return bank
        what = (f"a different {', '.join(changed)}" if changed
                else f"a class-pair set lacking {uncovered} requested ones")
        stale_reason = f"{cache_path} was made with {what}"
        if not dry_run:
            logger.warning("%s: recomputing the candidate text embeddings", stale_reason)

    try:
        if dry_run:
            resolve_clip_weights(model, pretrained)
            return None
        bank = compute_candidate_bank(obj_classes, pred_classes, class_pairs, model, pretrained, prompt, null_prompt,
                                      device=device, batch_size=batch_size)
    except ImportError as error:  # no OpenCLIP
        error = _clipmatch_message(error)
        raise ImportError(f"{stale_reason}, and recomputing needs OpenCLIP: {error}" if stale_reason
                          else str(error)) from None
    except CLIPUnavailableError as error:
        error = _clipmatch_message(error)
        raise CLIPUnavailableError(f"{stale_reason}, and recomputing needs CLIP: {error}" if stale_reason
                                   else str(error)) from None
    bank.meta["key"] = key
    bank.save(cache_path)
    logger.info("candidate text embeddings written to %s", cache_path)
    return bank


def candidate_texts(obj_classes, pred_classes, class_pairs, prompt=DEFAULT_PROMPT):
    """The K * p prompt strings, class pair by class pair, predicates in label order."""
    return [prompt.format(subject=obj_classes[s], predicate=p, object=obj_classes[o])
            for s, o in torch.as_tensor(class_pairs).reshape(-1, 2).tolist() for p in pred_classes[1:]]


def compute_candidate_bank(obj_classes, pred_classes, class_pairs, model, pretrained, prompt=DEFAULT_PROMPT,
                           null_prompt=DEFAULT_NULL_PROMPT, device="cpu", batch_size=256):
    """Run CLIP once over the K * p prompts and the null text."""
    clip, tokenizer = load_clip(model, pretrained, device=device)
    class_pairs = torch.as_tensor(class_pairs, dtype=torch.long).reshape(-1, 2)
    texts = candidate_texts(obj_classes, pred_classes, class_pairs, prompt) + [null_prompt]
    embeddings = encode_texts(clip, tokenizer, texts, device=device, batch_size=batch_size, desc="CLIP candidates")
    del clip
    num_pairs, num_pred = class_pairs.shape[0], len(pred_classes) - 1
    meta = {"obj_classes": list(obj_classes), "pred_classes": list(pred_classes), "clip_model": model,
            "clip_pretrained": str(pretrained)}
    bank = CandidateTextBank(class_pairs, embeddings[:-1].reshape(num_pairs, num_pred, -1), embeddings[-1],
                             len(obj_classes) - 1, meta=meta)
    return bank.to(device)


def run(args):
    """``sgg-plugins embed-candidates`` (options in :mod:`sgg_plugins.text.candidates_cli`)."""
    from .vg_files import read_vg_classes, read_vg_training_triplets

    obj_classes, pred_classes = read_vg_classes(args.dict_file)
    triplets = read_vg_training_triplets(args.roidb_file)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    before = os.stat(args.out).st_mtime_ns if os.path.isfile(args.out) else None
    try:
        bank = load_or_compute_candidate_bank(obj_classes, pred_classes, triplets[:, [0, 2]], model=args.clip_model,
                                              pretrained=args.clip_pretrained, prompt=args.prompt,
                                              null_prompt=args.null_prompt, cache_path=args.out, device=device,
                                              batch_size=args.batch_size)
    except (CLIPUnavailableError, ValueError, FileNotFoundError) as error:
        raise SystemExit(f"sgg-plugins embed-candidates: {error}")
    written = before is None or os.stat(args.out).st_mtime_ns != before
    print(f"{'wrote' if written else 'up to date, kept'} {args.out}: {bank.num_pairs} (subject, object) class pairs "
          f"x {bank.num_predicates} predicates + the null text, dim {bank.dim} "
          f"({args.clip_model}" + ("" if args.clip_model.startswith(LOCAL_DIR) else f", {args.clip_pretrained}") + ")")
    return 0
