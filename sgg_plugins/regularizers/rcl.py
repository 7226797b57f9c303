"""Relational contrastive learning (RelCLIP, seed 001 §3.3, ``MODEL.RCL``): host-free core.

Each foreground relation k with a ground-truth triplet ⟨s, p, o⟩ gives a visual embedding (from the
host's relation feature and its two object features) and a text embedding (frozen CLIP, from a
:class:`~sgg_plugins.text.clip_text.TextEmbeddingBank`). A two-way InfoNCE (Eq. 4–5) pulls the
pair of relation k together and pushes apart relation k and the texts (visuals) of its negative
dictionary Q_k; Q_k holds the batch's other relations whose phrase similarity to k lies in [η, ε]
(Eq. 7), each weighted by its normalised similarity.

Levels (Table 3 of the paper); v = adapted visual features, t = CLIP text embeddings, ‖·‖ = L2
normalisation, W = learnable matrices (bias-free linear layers), e = the sampling embedding whose
cosine similarity builds Q_k (Eq. 7):

- ``dual`` (Eq. 2, 3, 6): two objectives summed,
  subject-predicate: ‖v_r − v_obj‖W^vs against ‖t_r − t_obj‖W^ts, e = CLIP("subject predicate");
  predicate-object:  ‖v_r − v_subj‖W^vo against ‖t_r − t_subj‖W^to, e = CLIP("predicate object").
- ``triple``: the whole triplet, ‖v_r‖W^v against ‖t_r‖W^t, e = t_r (the triplet prompt).
- ``unary``: the predicate alone. The paper gives no formula; following Eq. 2's "exclude the
  information of the subject or object by subtracting their features", both are subtracted:
  ‖v_r − v_subj − v_obj‖W^v against ‖t_pred‖W^t, e = t_pred = CLIP("predicate").

Choices the paper leaves open, made here:

- Adapters: one linear layer each for the relation and the object features (shared by subject and
  object, as h_obj is in §3.2) to D_v. W^t maps D_t to D_v (the paper has D_t = D_v = 512 and
  square W^t; a rectangular W^t allows another CLIP width).
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

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

LEVELS = ("dual", "triple", "unary")


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
    counts = torch.bincount(inverse, minlength=num_texts).to(similarity.dtype)
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

    ``dropped_triplets`` counts the foreground relations left out because their triplet is not in
    the bank (a warning is logged the first time).
    """

    def __init__(self, rel_dim, obj_dim, text_dim, embed_dim=512, level="dual", temperature=0.07, gamma=0.5,
                 synonym_threshold=0.7, min_similarity=0.0, weighted_negatives=True):
        super().__init__()
        if level not in LEVELS:
            raise ValueError(f"RCL level {level!r} is not one of {', '.join(LEVELS)}")
        if not temperature > 0:
            raise ValueError(f"RCL temperature must be > 0, got {temperature}")
        if not 0 <= gamma <= 1:
            raise ValueError(f"RCL gamma must lie in [0, 1], got {gamma}")
        if min_similarity > synonym_threshold:
            raise ValueError(f"RCL min_similarity ({min_similarity}) exceeds synonym_threshold ({synonym_threshold}): "
                             f"no negative could remain")
        self.level = level
        self.temperature = temperature
        self.gamma = gamma
        self.synonym_threshold = synonym_threshold
        self.min_similarity = min_similarity
        self.weighted_negatives = weighted_negatives
        self.text_dim = text_dim
        self.rel_adapter = nn.Linear(rel_dim, embed_dim)
        self.obj_adapter = nn.Linear(obj_dim, embed_dim)
        num_objectives = 2 if level == "dual" else 1
        # dual: index 0 = subject-predicate (W^vs, W^ts), 1 = predicate-object (W^vo, W^to).
        self.visual_proj = nn.ModuleList(nn.Linear(embed_dim, embed_dim, bias=False) for _ in range(num_objectives))
        self.text_proj = nn.ModuleList(nn.Linear(text_dim, embed_dim, bias=False) for _ in range(num_objectives))
        self.dropped_triplets = 0
        self._warned_dropped = False

    @classmethod
    def from_config(cls, rcl_cfg, rel_dim, obj_dim, text_dim):
        """Build from the ``MODEL.RCL`` node of :mod:`sgg_plugins.config`."""
        return cls(rel_dim, obj_dim, text_dim, embed_dim=rcl_cfg.EMBED_DIM, level=rcl_cfg.LEVELS,
                   temperature=rcl_cfg.TEMPERATURE, gamma=rcl_cfg.GAMMA, synonym_threshold=rcl_cfg.SYNONYM_THRESHOLD,
                   min_similarity=rcl_cfg.MIN_SIMILARITY, weighted_negatives=rcl_cfg.WEIGHTED_NEGATIVES)

    def _check_inputs(self, rel_feats, subj_feats, obj_feats, labels, bank):
        n = rel_feats.shape[0]
        shapes = {"rel_feats": (rel_feats, self.rel_adapter.in_features),
                  "subj_feats": (subj_feats, self.obj_adapter.in_features),
                  "obj_feats": (obj_feats, self.obj_adapter.in_features)}
        for name, (feats, dim) in shapes.items():
            if feats.dim() != 2 or feats.shape != (n, dim):
                raise ValueError(f"RelationalContrastiveLoss: {name} must be [{n}, {dim}], got {tuple(feats.shape)}")
        for name, value in zip(("subj_labels", "pred_labels", "obj_labels"), labels):
            if value.shape != (n,):
                raise ValueError(f"RelationalContrastiveLoss: {name} must be [{n}], got {tuple(value.shape)}")
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
        dropped = int((~kept).sum())
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
        """Per objective: visual [M, D_v], text [U, D_v] (one row per unique triplet), sampling [U, D_t]."""
        s, p, o, t_r = triplet
        if self.level == "dual":
            t_subj, t_obj = bank.objects(s), bank.objects(o)
            return [
                (self.visual_proj[0](F.normalize(rel - obj, dim=-1)),
                 self.text_proj[0](F.normalize(t_r - t_obj, dim=-1)), bank.subject_predicate(s, p)),
                (self.visual_proj[1](F.normalize(rel - subj, dim=-1)),
                 self.text_proj[1](F.normalize(t_r - t_subj, dim=-1)), bank.predicate_object(p, o)),
            ]
        if self.level == "triple":
            return [(self.visual_proj[0](F.normalize(rel, dim=-1)), self.text_proj[0](F.normalize(t_r, dim=-1)), t_r)]
        t_pred = bank.predicates(p)
        return [(self.visual_proj[0](F.normalize(rel - subj - obj, dim=-1)),
                 self.text_proj[0](F.normalize(t_pred, dim=-1)), t_pred)]

    def forward(self, rel_feats, subj_feats, obj_feats, subj_labels, pred_labels, obj_labels, bank):
        """L_RCL for one batch of relations (a scalar).

        Args:
            rel_feats: [N, D_rel] relation features; subj_feats, obj_feats: [N, D_obj] features of
                each relation's subject and object.
            subj_labels, pred_labels, obj_labels: [N] ground-truth labels (SGB's: 0 = background).
                Only relations with pred_label > 0 and a triplet in the bank take part.
            bank: a TextEmbeddingBank (build one from tensors for custom texts); moved to the
                features' device on first use.
        """
        labels = (subj_labels, pred_labels, obj_labels)
        self._check_inputs(rel_feats, subj_feats, obj_feats, labels, bank)
        bank = bank.to(rel_feats.device)
        index, inverse, triplet = self._select_relations(*labels, bank)
        if index.numel() < 2:
            return self._zero(rel_feats, subj_feats, obj_feats)

        # fp32 throughout: cosines / τ reach 1 / 0.07 and the logsumexp wants the precision.
        with torch.autocast(device_type=rel_feats.device.type, enabled=False):
            rel = self.rel_adapter(rel_feats[index].float())
            subj = self.obj_adapter(subj_feats[index].float())
            obj = self.obj_adapter(obj_feats[index].float())
            loss = rel.new_zeros(())
            for visual, text, sampling in self._objectives(rel, subj, obj, triplet, bank):
                # [M, U] cosines against the unique texts, spread to [M, M] by each relation's triplet.
                visual = F.normalize(visual, dim=-1) / self.temperature
                logits = (visual @ F.normalize(text, dim=-1).t())[:, inverse]
                sampling = F.normalize(sampling, dim=-1)
                # Clamped so that ε = 1 (keep synonyms, Table 5) keeps identical texts despite rounding.
                similarity = (sampling @ sampling.t()).clamp(-1.0, 1.0)
                log_weights = negative_log_weights(similarity, inverse, self.synonym_threshold,
                                                   self.min_similarity, self.weighted_negatives)
                loss = loss + contrastive_loss(logits, log_weights, self.gamma)
        return loss
