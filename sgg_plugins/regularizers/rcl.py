"""Relational contrastive learning (RelCLIP, seed 001 §3.3, ``MODEL.RCL``): host-free core.

Each foreground relation k with a ground-truth triplet ⟨s, p, o⟩ gives a visual embedding (from the
host's relation feature and its two object features) and a text embedding (frozen CLIP, from a
:class:`~sgg_plugins.text.bank.TextEmbeddingBank`). A two-way InfoNCE (Eq. 4–5) pulls the
pair of relation k together and pushes apart relation k and the texts (visuals) of its negative
dictionary Q_k; Q_k holds the batch's other relations whose phrase similarity to k lies in [η, ε]
(Eq. 7), each weighted by its normalised similarity.

Levels (Table 3 of the paper); v = adapted visual features, t = CLIP text embeddings, ‖·‖ = L2
normalisation, W = learnable matrices (bias-free linear layers), e = the sampling embedding whose
cosine similarity builds Q_k (Eq. 7):

- ``dual`` (Eq. 2, 3, 6): two objectives summed,
  subject-predicate: ‖v_r − v_obj‖W^vs against ‖t_r − t_obj‖W^ts, e = e("subject predicate");
  predicate-object:  ‖v_r − v_subj‖W^vo against ‖t_r − t_subj‖W^to, e = e("predicate object").
- ``triple``: the whole triplet, ‖v_r‖W^v against ‖t_r‖W^t, e = e("subject predicate object").
- ``unary``: the predicate alone. The paper gives no formula; following Eq. 2's "exclude the
  information of the subject or object by subtracting their features", both are subtracted:
  ‖v_r − v_subj − v_obj‖W^v against ‖t_pred‖W^t, e = e("predicate").

e is the bank's sampling embedding (``bank.sampling_embeddings``): by default the mean GloVe vector
of the phrase's word tokens, as the paper ("word embeddings for the word tokens of subject-predicate
and predicate-object", Eq. 7), or the CLIP embedding of the bare phrase (the triplet prompt at the
triple level). ε = 0.7 was tuned on word embeddings (Table 6); CLIP's text embeddings are much more
alike, so the same ε keeps far fewer negatives. The mean size of Q_k is kept after every call
(``last_kept_negatives``, ``last_stats``) for the host's log.

Choices the paper leaves open, made here:

- Adapters (h_rel, h_obj of §3.2; h_obj is shared by subject and object, as in the paper) map the
  host's features to ``adapter_dim``: ``adapter="linear"``, one fully connected layer; or
  ``"attention"``, the paper's "a fully connected layer and two multi-head attention layers"
  (:class:`AttentionAdapter`), attending within each image. W^v maps ``adapter_dim`` to D_v and
  W^t maps D_t to D_v (the paper has D_t = D_v = 512 and square W's; ``adapter_dim`` defaults to
  D_v; a host whose classifier reads h_rel's output needs h_rel to keep the classifier's width, and
  a rectangular W^t allows another text encoder's width). The host adapter may apply h_rel itself
  (where the classifier reads it) and pass the adapted relation features (``rel_adapted``).
- τ (Eq. 4) is not given by the paper. ``learn_temperature``: a learnable logit scale 1/τ as CLIP
  trains its own (Radford et al. 2021: initialised at 1/0.07, stored as its log, clipped at 100);
  otherwise the fixed ``temperature``.
- Eq. 5 writes 1/N² Σ over N² pairs; each query k has exactly one positive, so this is the mean
  over the N queries of γ l^(v→t) + (1 − γ) l^(t→v), which is what is computed.
- The positive is always in its own denominator (weight 1), as in InfoNCE.
- "Normalised similarity" weights (Eq. 7, Table 5): w_kq = s⁺_kq / mean_{q∈Q_k} s⁺_kq with s⁺ =
  max(s, 0), so the weights of a dictionary average 1 and ``weighted_negatives=False`` (all 1) is
  the same scale. A dictionary whose similarities are all ≤ 0 falls back to weights 1. With
  η < 0, members with s ≤ 0 thus get weight 0 when weighted.
- Q_k is the same dictionary for both directions. Relations with the same sampling phrase (the same
  "subject predicate", resp. "predicate object" at the dual level, triplet at the triple level,
  predicate at the unary level) have similarity 1 > ε and are never each other's negatives there
  (Fig. 4: "man lying on grass" is too similar to "person lying on bed" to be its negative at the
  subject-predicate level, and is one at the predicate-object level).

Everything is batched over relations with [N, N] masks; CLIP never runs here.
"""
import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from .distributed import gather_rows, gathers, row_counts, tell_once_without_negatives

logger = logging.getLogger(__name__)

LEVELS = ("dual", "triple", "unary")
ADAPTERS = ("linear", "attention")
# Heads of the attention adapters: 8 heads of 64 channels at D_v = 512, the head width of CLIP's
# own text transformer (512 wide, 8 heads) whose embeddings the adapted features meet.
ATTENTION_HEADS = 8
# CLIP clips its learned logit scale at 100 (τ = 0.01) "to prevent scaling the logits by more than
# 100, which we found necessary to prevent training instability" (Radford et al. 2021, §2.5).
MAX_LOGIT_SCALE = 100.0


def negative_log_weights(similarity, inverse=None, synonym_threshold=0.7, min_similarity=0.0, weighted=True):
    """Log-weight of relation q in the denominator of query k (Eq. 4 with Q_k of Eq. 7), [N, N].

    Args:
        similarity: [U, U] cosine similarities between the U distinct sampling texts of the batch.
        inverse: [N] the text row of each relation; None when every relation has its own row (U = N).

    The diagonal is 0 (the positive, weight 1). Off the diagonal, q is in Q_k when
    ``min_similarity <= similarity <= synonym_threshold``; outside Q_k the weight is exactly 0
    (log-weight -inf): synonyms and uninformative samples never act as negatives. Inside, the
    weight is 1, or with ``weighted`` the normalised similarity (module docstring).

    Weights only depend on the two texts and on how many relations share each text, so they are
    computed on [U, U] and spread to [N, N] once.
    """
    num_texts = similarity.shape[0]
    if inverse is None:
        inverse = torch.arange(num_texts, device=similarity.device)
    # index_add, not bincount: bincount reads the largest row on the GPU (a sync); the counts are exact.
    counts = torch.zeros(num_texts, dtype=torch.long, device=inverse.device).index_add_(
        0, inverse, torch.ones_like(inverse)).to(similarity.dtype)
    member = ((similarity >= min_similarity) & (similarity <= synonym_threshold)).to(similarity.dtype)
    weights = member
    if weighted:
        # Sums over Q_k: every relation with a member text, minus k itself (one of its own text's rows).
        size = member @ counts - member.diagonal()
        score = similarity.clamp(min=0) * member
        total = score @ counts - score.diagonal()
        scale = (size / total.clamp(min=1e-12)).unsqueeze(1)
        weights = torch.where(total.unsqueeze(1) > 0, score * scale, member)
    log_weights = weights.log()[inverse][:, inverse]
    return log_weights.fill_diagonal_(0.0)


# The phrases each level ranks its negatives by (Eq. 7): columns of a (subject, predicate, object) triplet.
PHRASE_PARTS = {
    "dual": {"subject-predicate": (0, 1), "predicate-object": (1, 2)},
    "triple": {"triplet": (0, 1, 2)},
    "unary": {"predicate": (1,)},
}


def synonym_pairs(bank, triplets, level, synonym_threshold, top=5):
    """How Eq. 7's synonym cut acts on the training split, per phrase kind of ``level``.

    Returns {kind: (share, pairs)}: ``share`` is the fraction of pairs of training relations with
    different phrases whose sampling similarity exceeds ε (so that, in a batch drawn from the
    split, that share of the candidate negatives is dropped as "synonyms"); ``pairs`` the ``top``
    most similar dropped pairs of phrases whose predicates differ, as ((labels), (labels),
    similarity), labels in (subject, predicate, object) order with the absent parts None.
    What it tells: on word vectors the dropped pairs are near-synonyms; on a sentence encoder's
    phrase embeddings, unrelated predicates with a shared subject can be dropped too.
    """
    report = {}
    for kind, parts in PHRASE_PARTS[level].items():
        phrases, counts = torch.unique(triplets[:, list(parts)], dim=0, return_counts=True)
        labels = [phrases[:, parts.index(col)] if col in parts else None for col in range(3)]
        embedded = F.normalize(bank.sampling_embeddings(subj=labels[0], pred=labels[1], obj=labels[2]).float(), dim=-1)
        counts = counts.to(embedded)
        similarity = embedded @ embedded.t()
        dropped = (similarity > synonym_threshold).fill_diagonal_(False)
        pairs_total = counts.sum() ** 2 - (counts ** 2).sum()
        share = float((counts @ (dropped.to(counts) @ counts)) / pairs_total) if pairs_total > 0 else 0.0
        other_predicate = labels[1][:, None] != labels[1][None, :]
        candidates = torch.triu(dropped & other_predicate, diagonal=1).nonzero()
        order = similarity[candidates[:, 0], candidates[:, 1]].argsort(descending=True)[:top]
        as_labels = [tuple(None if l is None else int(l[i]) for l in labels) for i in range(len(phrases))]
        report[kind] = (share, [(as_labels[int(i)], as_labels[int(j)], float(similarity[i, j]))
                                for i, j in candidates[order]])
    return report


def contrastive_loss(logits, log_weights, gamma=0.5):
    """Two-way weighted InfoNCE (Eq. 4–5), mean over the N queries.

    Args:
        logits: [N, N], ``logits[k, q] = cos(v_k, t_q) / τ``; the text-to-visual direction reads
            its columns, since cos(t_k, v_q) = logits[q, k].
        log_weights: [N, N] from :func:`negative_log_weights`; -inf removes q from k's denominator.
        gamma: γ, the weight of the visual-to-text direction.
    """
    positive = logits.diagonal()
    visual_to_text = torch.logsumexp(logits + log_weights, dim=1) - positive
    text_to_visual = torch.logsumexp(logits.t() + log_weights, dim=1) - positive
    return (gamma * visual_to_text + (1 - gamma) * text_to_visual).mean()


def pad_by_group(values, groups):
    """[N, D] rows and [N] group ids -> ([G, n_max, D] zero-padded, [G, n_max] bool mask, rows' (group, slot)).

    Only groups that occur get a row, so every padded row has at least one real token (an all-masked
    attention row would be NaN). Rows keep their order within a group. One sort, no loop.
    """
    _, group_of_row = torch.unique(groups, return_inverse=True)
    counts = torch.bincount(group_of_row)
    order = torch.argsort(group_of_row, stable=True)
    first_row = counts.cumsum(0) - counts
    slot = torch.empty_like(group_of_row)
    slot[order] = torch.arange(len(order), device=groups.device) - first_row[group_of_row[order]]
    padded = values.new_zeros(len(counts), int(counts.max()), values.shape[-1])
    padded = padded.index_put((group_of_row, slot), values)
    mask = torch.arange(padded.shape[1], device=groups.device)[None] < counts[:, None]
    return padded, mask, (group_of_row, slot)


class AttentionAdapter(nn.Module):
    """h_rel / h_obj of §3.2: "Each adaptor consists of a fully connected layer and two multi-head
    attention layers."

    Over what the attention attends: a relation (an object) attends to the other relations (objects)
    of its own image. §3.2 applies h_rel to one pooled RoI feature and its position embedding per
    pair (Eq. 1); multi-head attention needs a set of tokens, and the RoIs of one image are the set
    that exists before any label is known (the same set at training and, in the paper, test time).
    Tokens of different images never attend to each other (an image's features must not depend on
    what else is in the batch). Images have different token counts: the tokens are padded per image
    and the padding is masked out as keys (:func:`pad_by_group`); padded queries are dropped.

    Each attention layer is wrapped as in the Transformer the paper builds on (Vaswani et al. 2017,
    post-norm): x ← LayerNorm(x + MHA(x, x, x)). The residual keeps each token's own feature in its
    output; without it, two attention layers at initialisation would mostly average the image.
    """

    def __init__(self, in_dim, out_dim, num_heads=ATTENTION_HEADS, num_layers=2):
        super().__init__()
        if out_dim % num_heads:
            raise ValueError(f"MODEL.RCL.EMBED_DIM ({out_dim}) must be a multiple of the attention adapter's "
                             f"{num_heads} heads (MODEL.RCL.ADAPTER attention), e.g. 512")
        self.fc = nn.Linear(in_dim, out_dim)
        self.attention = nn.ModuleList(nn.MultiheadAttention(out_dim, num_heads, batch_first=True)
                                       for _ in range(num_layers))
        self.norms = nn.ModuleList(nn.LayerNorm(out_dim) for _ in range(num_layers))

    @property
    def in_features(self):
        return self.fc.in_features

    def forward(self, features, groups):
        """features [N, in_dim], groups [N] (the image of each row) -> [N, out_dim]."""
        padded, mask, rows = pad_by_group(self.fc(features), groups)
        for attention, norm in zip(self.attention, self.norms):
            attended, _ = attention(padded, padded, padded, key_padding_mask=~mask, need_weights=False)
            padded = norm(padded + attended)
        return padded[rows]


class RelationalContrastiveLoss(nn.Module):
    """L_RCL of Eq. 6 (or its unary / triple variants) from host features and a text bank.

    Args:
        rel_dim: D_rel of the host's relation feature (what its relation classifier reads).
        obj_dim: D_obj of the host's object features.
        text_dim: D_t of the text embeddings (the bank's ``dim``).
        embed_dim: D_v, where visual and text embeddings meet.
        level: "dual", "triple" or "unary" (module docstring).
        temperature: τ of Eq. 4.  gamma: γ of Eq. 5.
        synonym_threshold: ε; min_similarity: η (Eq. 7).
        weighted_negatives: weight the negatives by their normalised similarity (Table 5).
        adapter: "linear" or "attention" (module docstring).

    ``dropped_triplets`` counts the foreground relations left out because their triplet is not in
    the bank (a warning is logged the first time). After each call, ``last_kept_negatives`` is the
    mean |Q_k| over the queries (and over the two objectives at the dual level), and ``last_stats``
    holds it with ``rcl_kept_share`` (|Q_k| over the M − 1 other relations of the batch) and
    ``rcl_relations`` (M): detached statistics for the log, never part of the loss.
    """

    def __init__(self, rel_dim, obj_dim, text_dim, embed_dim=512, level="dual", temperature=0.07, gamma=0.5,
                 synonym_threshold=0.7, min_similarity=0.0, weighted_negatives=True, adapter="linear",
                 adapter_dim=None, learn_temperature=False, gather_negatives=True):
        super().__init__()
        if level not in LEVELS:
            raise ValueError(f"RCL level {level!r} is not one of {', '.join(LEVELS)}")
        if adapter not in ADAPTERS:
            raise ValueError(f"RCL adapter {adapter!r} is not one of {', '.join(ADAPTERS)}")
        if not temperature > 0:
            raise ValueError(f"RCL temperature must be > 0, got {temperature}")
        if not 0 <= gamma <= 1:
            raise ValueError(f"RCL gamma must lie in [0, 1], got {gamma}")
        if min_similarity > synonym_threshold:
            raise ValueError(f"RCL min_similarity ({min_similarity}) exceeds synonym_threshold ({synonym_threshold}): "
                             f"no negative could remain")
        self.level = level
        # CLIP's parametrisation: log(1/τ), so that the scale stays positive and moves multiplicatively.
        log_scale = torch.tensor(math.log(1.0 / temperature))
        if learn_temperature:
            self.log_logit_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_logit_scale", log_scale, persistent=False)
        self.gamma = gamma
        self.synonym_threshold = synonym_threshold
        self.min_similarity = min_similarity
        self.weighted_negatives = weighted_negatives
        self.text_dim = text_dim
        self.adapter = adapter
        self.adapter_dim = adapter_dim = adapter_dim or embed_dim
        if adapter == "attention":
            self.rel_adapter = AttentionAdapter(rel_dim, adapter_dim)
            self.obj_adapter = AttentionAdapter(obj_dim, adapter_dim)
        else:
            self.rel_adapter = nn.Linear(rel_dim, adapter_dim)
            self.obj_adapter = nn.Linear(obj_dim, adapter_dim)
        num_objectives = 2 if level == "dual" else 1
        # dual: index 0 = subject-predicate (W^vs, W^ts), 1 = predicate-object (W^vo, W^to).
        self.visual_proj = nn.ModuleList(nn.Linear(adapter_dim, embed_dim, bias=False) for _ in range(num_objectives))
        self.text_proj = nn.ModuleList(nn.Linear(text_dim, embed_dim, bias=False) for _ in range(num_objectives))
        self.gather_negatives = gather_negatives
        self.dropped_triplets = 0
        self._warned_dropped = False
        self.last_kept_negatives = torch.zeros(())
        self.last_stats = {}

    @classmethod
    def from_config(cls, rcl_cfg, rel_dim, obj_dim, text_dim, adapter_dim=None, gather_negatives=True):
        """Build from the ``MODEL.RCL`` node of :mod:`sgg_plugins.config` (and
        ``MODEL.SGG_PLUGINS.GATHER_NEGATIVES``)."""
        return cls(rel_dim, obj_dim, text_dim, embed_dim=rcl_cfg.EMBED_DIM, level=rcl_cfg.LEVELS,
                   temperature=rcl_cfg.TEMPERATURE, gamma=rcl_cfg.GAMMA, synonym_threshold=rcl_cfg.SYNONYM_THRESHOLD,
                   min_similarity=rcl_cfg.MIN_SIMILARITY, weighted_negatives=rcl_cfg.WEIGHTED_NEGATIVES,
                   adapter=rcl_cfg.ADAPTER, adapter_dim=adapter_dim, learn_temperature=rcl_cfg.LEARN_TEMPERATURE,
                   gather_negatives=gather_negatives)

    @property
    def logit_scale(self):
        """1/τ, clipped at 100 as CLIP clips its learned scale (its gradient stops there)."""
        return self.log_logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def adapt_relations(self, rel_feats, rel_image=None):
        """h_rel: [N, D_rel] -> [N, adapter_dim]; the attention adapter attends within each image."""
        if self.adapter == "attention":
            if rel_image is None:
                raise ValueError("the attention adapter needs the image of each relation (rel_image)")
            return self.rel_adapter(rel_feats, rel_image.to(rel_feats.device).long())
        return self.rel_adapter(rel_feats)

    def _check_inputs(self, rel_feats, subj_feats, obj_feats, labels, bank, layout, rel_adapted):
        n = rel_feats.shape[0]
        shapes = {"rel_feats": (rel_feats, self.adapter_dim if rel_adapted else self.rel_adapter.in_features),
                  "subj_feats": (subj_feats, self.obj_adapter.in_features),
                  "obj_feats": (obj_feats, self.obj_adapter.in_features)}
        for name, (feats, dim) in shapes.items():
            if feats.dim() != 2 or feats.shape != (n, dim):
                raise ValueError(f"RelationalContrastiveLoss: {name} must be [{n}, {dim}], got {tuple(feats.shape)}")
        for name, value in zip(("subj_labels", "pred_labels", "obj_labels"), labels):
            if value.shape != (n,):
                raise ValueError(f"RelationalContrastiveLoss: {name} must be [{n}], got {tuple(value.shape)}")
        if self.adapter == "attention":
            for name, value in (("rel_image", layout[0]), ("subj_rows", layout[1]), ("obj_rows", layout[2])):
                if value is None or value.shape != (n,):
                    raise ValueError(f"RelationalContrastiveLoss with the attention adapter needs {name} [{n}] (the "
                                     f"image of each relation and the rows of its subject and object), got "
                                     f"{None if value is None else tuple(value.shape)}")
        if bank.dim != self.text_dim:
            raise ValueError(f"RelationalContrastiveLoss was built for text_dim {self.text_dim} but the text "
                             f"embeddings have dim {bank.dim}: build it with the bank's dim (another CLIP model?)")

    def _zero(self, *feats):
        """A zero that touches every parameter, so DDP sees them all used and the graph stays connected."""
        zero = sum(feats_.sum() for feats_ in feats) * 0.0
        return zero + sum(param.sum() for param in self.parameters()) * 0.0

    def _select_relations(self, subj_labels, pred_labels, obj_labels, bank):
        """Indices of the foreground relations whose triplet the bank holds, their unique triplets.

        Texts are looked up and projected once per unique triplet; ``inverse`` maps each kept
        relation to its row among them.
        """
        foreground = (pred_labels > 0).nonzero().squeeze(1)
        subj, pred, obj = subj_labels[foreground], pred_labels[foreground], obj_labels[foreground]
        unique_keys, inverse = torch.unique(bank.triplet_key(subj, pred, obj), return_inverse=True)
        first = torch.empty_like(unique_keys).scatter_(0, inverse, torch.arange(len(inverse), device=inverse.device))
        subj, pred, obj = subj[first], pred[first], obj[first]
        triplet_text, found = bank.triplets(subj, pred, obj)
        kept = found[inverse]
        # One read for both counts (a GPU sync); when the bank holds every triplet, as it does for the
        # training split it was built from, no mask is applied (masking with all True is the identity).
        held, dropped = torch.stack([found.sum(), (~kept).sum()]).tolist()
        if not dropped and held == len(found):
            return foreground, inverse, (subj, pred, obj, triplet_text)
        if dropped:
            self.dropped_triplets += dropped
            if not self._warned_dropped:
                self._warned_dropped = True
                logger.warning("RCL: %d foreground relations have a triplet missing from the text embeddings and are "
                               "left out (counted in dropped_triplets; this warning is shown once). Embed the "
                               "training split's triplets (`sgg-plugins embed --roidb-file ...`).", dropped)
        inverse = (torch.cumsum(found, 0) - 1)[inverse[kept]]
        return foreground[kept], inverse, (subj[found], pred[found], obj[found], triplet_text[found])

    def _objectives(self, rel, subj, obj, triplet, bank):
        """Per objective: visual [M, D_v], text [U, D_v] (one row per unique triplet), sampling [U, D_e]."""
        s, p, o, t_r = triplet
        if self.level == "dual":
            t_subj, t_obj = bank.objects(s), bank.objects(o)
            return [
                (self.visual_proj[0](F.normalize(rel - obj, dim=-1)),
                 self.text_proj[0](F.normalize(t_r - t_obj, dim=-1)), bank.sampling_embeddings(subj=s, pred=p)),
                (self.visual_proj[1](F.normalize(rel - subj, dim=-1)),
                 self.text_proj[1](F.normalize(t_r - t_subj, dim=-1)), bank.sampling_embeddings(pred=p, obj=o)),
            ]
        if self.level == "triple":
            return [(self.visual_proj[0](F.normalize(rel, dim=-1)), self.text_proj[0](F.normalize(t_r, dim=-1)),
                     bank.sampling_embeddings(subj=s, pred=p, obj=o))]
        return [(self.visual_proj[0](F.normalize(rel - subj - obj, dim=-1)),
                 self.text_proj[0](F.normalize(bank.predicates(p), dim=-1)), bank.sampling_embeddings(pred=p))]

    def _adapt(self, index, rel_feats, subj_feats, obj_feats, layout, rel_adapted):
        """Adapted relation, subject and object features of the relations ``index`` ([M, adapter_dim] each).

        Linear: only the selected rows. Attention: every relation of the batch and every object
        (each (row, role) once: a subject or object met in several pairs is one token) takes part
        in its image's attention; the selected rows are read out after. ``rel_adapted``: the
        relation features are h_rel's output already.
        """
        if self.adapter == "linear":
            rel = rel_feats[index] if rel_adapted else self.rel_adapter(rel_feats[index])
            return rel, self.obj_adapter(subj_feats[index]), self.obj_adapter(obj_feats[index])
        rel_image, subj_rows, obj_rows = (t.to(rel_feats.device).long() for t in layout)
        n = rel_feats.shape[0]
        rel = rel_feats if rel_adapted else self.rel_adapter(rel_feats, rel_image)
        # Role in the key: in SGB's Motifs layout the subject and object features of one object are
        # different halves of its edge context, so the same row is two tokens in the two roles.
        keys = torch.cat([subj_rows * 2, obj_rows * 2 + 1])
        unique_keys, inverse = torch.unique(keys, return_inverse=True)
        first = torch.empty_like(unique_keys).scatter_(0, inverse, torch.arange(2 * n, device=keys.device))
        tokens = torch.cat([subj_feats, obj_feats])[first]
        objects = self.obj_adapter(tokens, torch.cat([rel_image, rel_image])[first])
        return rel[index], objects[inverse[:n][index]], objects[inverse[n:][index]]

    @staticmethod
    def _gather_objective(visual, text, sampling, keys, inverse, counts):
        """Every process's relations (:mod:`.distributed`): visual rows, and the unique triplets of
        them all with the map of each relation to its triplet, as one process would have them."""
        visual, text, sampling, keys = (gather_rows(t, counts) for t in (visual, text[inverse], sampling[inverse],
                                                                         keys[inverse]))
        unique_keys, inverse = torch.unique(keys, return_inverse=True)
        first = torch.empty_like(unique_keys).scatter_(0, inverse, torch.arange(len(keys), device=keys.device))
        return visual, text[first], sampling[first], inverse

    def _record(self, kept, candidates, relations):
        """Keep the statistics of the last call (detached, fp32)."""
        self.last_kept_negatives = kept.detach()
        self.last_stats = {"rcl_kept_negatives": kept.detach(),
                           "rcl_kept_share": (kept / candidates).detach() if candidates > 0 else kept.detach() * 0,
                           "rcl_relations": kept.new_full((), float(relations))}  # no host-to-device copy

    def forward(self, rel_feats, subj_feats, obj_feats, subj_labels, pred_labels, obj_labels, bank, rel_image=None,
                subj_rows=None, obj_rows=None, rel_adapted=False):
        """L_RCL for one batch of relations (a scalar).

        Args:
            rel_feats: [N, D_rel] relation features; subj_feats, obj_feats: [N, D_obj] features of
                each relation's subject and object.
            subj_labels, pred_labels, obj_labels: [N] ground-truth labels (SGB's: 0 = background).
                Only relations with pred_label > 0 and a triplet in the bank take part.
            bank: a TextEmbeddingBank (build one from tensors for custom texts); moved to the
                features' device on first use.
            rel_image, subj_rows, obj_rows: [N] the image of each relation and the (global) object
                rows of its subject and object; needed by the attention adapter only.
            rel_adapted: ``rel_feats`` are h_rel's output ([N, adapter_dim]), applied by the caller
                where the host's classifier reads them.
        """
        labels = (subj_labels, pred_labels, obj_labels)
        layout = (rel_image, subj_rows, obj_rows)
        self._check_inputs(rel_feats, subj_feats, obj_feats, labels, bank, layout, rel_adapted)
        bank = bank.to(rel_feats.device)
        index, inverse, triplet = self._select_relations(*labels, bank)
        gather = gathers(self.gather_negatives)
        counts = row_counts(index.numel(), rel_feats.device) if gather else [index.numel()]
        relations = sum(counts)
        if relations < 2:
            tell_once_without_negatives("MODEL.RCL's InfoNCE (loss_rcl)", f"{relations} relation(s) with a triplet "
                                        "in the text bank; the loss is 0", gather)
            zero = self._zero(rel_feats, subj_feats, obj_feats)
            self._record(zero.detach().float(), 0, relations)
            return zero

        # fp32 throughout: cosines / τ reach 1 / 0.07 and the logsumexp wants the precision.
        with torch.autocast(device_type=rel_feats.device.type, enabled=False):
            rel, subj, obj = self._adapt(index, rel_feats.float(), subj_feats.float(), obj_feats.float(), layout,
                                         rel_adapted)
            loss = rel.new_zeros(())
            kept = []
            for visual, text, sampling in self._objectives(rel, subj, obj, triplet, bank):
                visual = F.normalize(visual, dim=-1) * self.logit_scale
                text, sampling, objective_inverse = F.normalize(text, dim=-1), F.normalize(sampling, dim=-1), inverse
                if gather:
                    keys = bank.triplet_key(*triplet[:3])
                    visual, text, sampling, objective_inverse = self._gather_objective(visual, text, sampling, keys,
                                                                                       inverse, counts)
                # [M, U] cosines against the unique texts, spread to [M, M] by each relation's triplet.
                logits = (visual @ text.t())[:, objective_inverse]
                # Clamped so that ε = 1 (keep synonyms, Table 5) keeps identical texts despite rounding.
                similarity = (sampling @ sampling.t()).clamp(-1.0, 1.0)
                log_weights = negative_log_weights(similarity, objective_inverse, self.synonym_threshold,
                                                   self.min_similarity, self.weighted_negatives)
                loss = loss + contrastive_loss(logits, log_weights, self.gamma)
                # |Q_k|: the relations with a nonzero weight in k's denominator, less k itself.
                kept.append((torch.isfinite(log_weights).sum(1) - 1).float().mean())
        self._record(torch.stack(kept).mean(), relations - 1, relations)
        return loss
