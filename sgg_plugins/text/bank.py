"""Text embeddings for relational contrastive learning (seed 001, ``MODEL.RCL``): CLIP's, or a sentence encoder's.

RelCLIP (§3.2) embeds every relation label with a frozen CLIP text encoder: the triplet prompt gives
t_r, the object prompts give t_subj and t_obj, and the semantic-aware sampling (Eq. 7) compares the
"subject predicate" and "predicate object" phrases of two relations. CLIP never runs inside a
training step: :func:`~sgg_plugins.text.bank_builder.load_or_compute_bank` embeds everything once,
caches it to a file keyed by everything that changes the numbers, and later runs load that file.

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

This module is the bank and its file format; the encoders are in :mod:`sgg_plugins.text.clip_encoder` and
:mod:`sgg_plugins.text.sentence_encoder`, which import open_clip and sentence_transformers inside the
functions that need them, so the bank loads without either.
"""
import torch

from ..regularizers.transfer import check_values
from .cache import save_atomically
from .weights import SENTENCE_TRANSFORMERS


DEFAULT_PROMPT = "a photo of a {subject} {predicate} {object}"
DEFAULT_OBJECT_PROMPT = "a photo of a {object}"
# The sampling phrases of Eq. 7 and the unary text: bare words, like the paper's word embeddings.
SUBJECT_PREDICATE_PHRASE = "{subject} {predicate}"
PREDICATE_OBJECT_PHRASE = "{predicate} {object}"
PREDICATE_PHRASE = "{predicate}"
# Bumped whenever what the file holds or how it is computed changes: old caches are then recomputed.
CACHE_FORMAT = 1


class TextEmbeddingBank:
    """Frozen, L2-normalised text embeddings (CLIP's or a sentence encoder's) with vectorized lookups by label tensors.

    Build it with :func:`~sgg_plugins.text.bank_builder.load_or_compute_bank`, :meth:`load`, or directly
    from tensors (custom texts, tests). All tables are detached: gradients never reach them.

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
