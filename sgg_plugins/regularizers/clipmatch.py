"""CLIP predicate matching (seed 003 §3.2-3.3, ``MODEL.CLIPMATCH``): host-free core.

Every sampled pair's relation representation (what the host's relation classifier reads) is
projected into CLIP's text space by a small trainable head and matched, under a two-way cross
entropy, against a table of frozen CLIP text embeddings (:mod:`sgg_plugins.text.candidates`):

- Columns (the texts, S_l): "For each triple in the set of k ground truth triples, we first
  enumerated p (subject, predicate_i, object) triples … resulting in m = k * p sentences. We also
  added a 'null relation' string" (§3.2). The batch's foreground pairs give their (subject, object)
  classes' p prompts, the null text is added, and equal texts are one column (two foreground pairs
  with the same classes share their p columns).
- Rows (the visual embeddings, S_v): every sampled pair, foreground and background, "a 'null
  relation' string as a matched pair with union image regions or (subject, object) pairs that have
  no visual relationship": a foreground row's positive is its own triplet's prompt, a background
  row's the null text. Columns are distinct texts, so every row has exactly one positive.
- Loss: "we computed a cross entropy loss along the table's rows and a cross entropy loss along the
  table's columns … L_vl-CE = L_v-CE + L_l-CE" (§3.3), with "cosine similarity … as a distance
  metric d".

Choices the paper leaves open, made here:

- Several positives per column. A column is shared by every row with its label: all background
  pairs match the null text, several pairs may have the same triplet. The paper's L_l-CE sums
  -log softmax over every positive of a column and divides by |S_l| (``multi_positive="sum"``,
  verbatim). The default ``"mean"`` divides each column's sum by its number of positives, i.e. the
  cross entropy of the column's softmax over rows against the uniform distribution over its
  positives (the multi-positive form of UniCL, Yang et al. 2022), averaged over the columns that
  have a positive. Both have the same minimiser per column (softmax uniform over its positives);
  "mean" gives every text one vote, as a CLIP column has, instead of a weight proportional to its
  number of positives: SGB samples hundreds of background pairs per image against a handful of
  foreground ones, and under "sum" the null text's column would outweigh all triplet columns
  together. Columns without a positive (the p - 1 other predicates of a pair) are negatives of the
  row direction only; they have no target in the column direction.
- Similarity scale: d = cos(v, t) / τ with a fixed τ (``temperature``, default 0.07 = CLIP's
  initial logit scale 1/0.07). The formula of §3.3 has no scale (τ = 1 reproduces it), but a bare
  cosine in [-1, 1] makes a softmax over thousands of columns almost uniform; CLIP's learnable
  scale is part of the fine-tuned model there, while here the text side is frozen and only a small
  head learns, so a fixed τ keeps the loss's scale, and its balance with the host's loss under
  WEIGHT, constant through training.
- The head: "MLPs were attached on top of the frozen visual and language encoders" (Table 3,
  'Finetuned MLP'); the text encoder stays frozen here (CLIP never runs in a step), so one MLP
  (Linear, ReLU, Linear; hidden width = the text width) maps the relation representation to D_t.
"""

import logging

import torch
import torch.nn.functional as F
from torch import nn

from .distributed import gather_rows, gathers, row_counts, tell_once_without_negatives

logger = logging.getLogger(__name__)

MULTI_POSITIVE = ("mean", "sum")


def two_way_cross_entropy(logits, target, multi_positive="mean"):
    """L_v-CE + L_l-CE (§3.3) over a table of rows and distinct text columns.

    Args:
        logits: [N, M] scaled similarities d(I, T) of N visual rows and M text columns.
        target: [N] long, the column of each row's positive (each row has exactly one).
        multi_positive: how a column with several positives is reduced (module docstring).

    Returns (total, row_term, column_term). With no row, a zero connected to ``logits``.
    """
    if multi_positive not in MULTI_POSITIVE:
        raise ValueError(f"multi_positive must be one of {', '.join(MULTI_POSITIVE)}, got {multi_positive!r}")
    num_rows, num_cols = logits.shape
    if num_rows == 0:
        zero = logits.sum() * 0.0
        return zero, zero, zero
    # Rows: a softmax over the texts, one positive each.
    row_term = F.cross_entropy(logits, target)
    # Columns: a softmax over the rows; each row is a positive of its target column only, so the
    # positives' log-probabilities are gathered per row and summed per column.
    column_log_prob = logits.log_softmax(0).gather(1, target[:, None]).squeeze(1)
    per_column = torch.zeros(num_cols, dtype=logits.dtype, device=logits.device).index_add_(0, target, -column_log_prob)
    if multi_positive == "sum":
        column_term = per_column.sum() / num_cols
    else:
        # index_add, not bincount: bincount reads the largest target on the GPU (a sync); counts are exact.
        positives = torch.zeros(num_cols, dtype=torch.long, device=target.device).index_add_(
            0, target, torch.ones_like(target))
        has_positive = positives > 0
        column_term = (per_column[has_positive] / positives[has_positive]).mean()
    return row_term + column_term, row_term, column_term


class PredicateMatchingLoss(nn.Module):
    """The projection head and L_vl-CE from host features, labels and a candidate text bank.

    Args:
        rel_dim: width of the host's relation representation.
        text_dim: D_t of the bank (``CandidateTextBank.dim``).
        temperature: τ of d = cos / τ.
        multi_positive: "mean" or "sum" (module docstring).

    ``dropped`` counts the foreground pairs left out because the bank has no candidate texts for
    their (subject, object) class pair, out of ``foreground`` seen. The bank holds every class pair
    of the training split's relations (the SGB objective builds it from the dataset file and checks
    it), so this should not happen; when it does, the pairs trained on are not the dataset file's
    relations, and a warning says so the first time and again each time the count doubles.
    """

    def __init__(self, rel_dim, text_dim, temperature=0.07, multi_positive="mean", gather_negatives=True):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"CLIPMATCH temperature must be > 0, got {temperature}")
        if multi_positive not in MULTI_POSITIVE:
            raise ValueError(f"CLIPMATCH multi_positive must be one of {', '.join(MULTI_POSITIVE)}, "
                             f"got {multi_positive!r}")
        self.temperature = temperature
        self.multi_positive = multi_positive
        self.gather_negatives = gather_negatives
        self.head = nn.Sequential(nn.Linear(rel_dim, text_dim), nn.ReLU(inplace=True), nn.Linear(text_dim, text_dim))
        self.dropped = 0
        self.foreground = 0
        self._warn_at = 1

    def table(self, subj, pred, obj, bank):
        """The batch's table: which rows take part, each row's target column, and the column texts.

        Returns (rows [N] bool, target [R] long column index per kept row, column_ids [M] text ids).
        """
        return self._table(subj, pred, obj, bank)[:3]

    def _table(self, subj, pred, obj, bank):
        """:meth:`table` and whether every row takes part (then ``rows`` need not be applied).

        Two GPU syncs: one read of the counts and the unique of the columns. The candidates are
        looked up for every pair, a background pair's replaced by the null text, which is a column
        anyway: the same set of columns as from the foreground pairs alone, without selecting them.
        """
        fg = pred > 0
        candidates, found = bank.candidates(subj, obj)
        candidates = torch.where(fg[:, None], candidates, torch.full_like(candidates, bank.null_id))
        found = found | ~fg
        targets = bank.target_ids(subj, pred, obj)
        rows = targets >= 0
        num_fg, missing = torch.stack([fg.sum(), (~found).sum()]).tolist()  # one device sync
        self.foreground += num_fg
        # Only a foreground pair without candidates has no target: with none missing, every row takes part.
        every_row = not missing
        if missing:
            self._count_dropped(missing, subj[~found], obj[~found])
            candidates = candidates[found]
        column_ids = torch.cat([candidates.flatten(), torch.full((1,), bank.null_id, dtype=targets.dtype, device=targets.device)])
        # Columns and targets in one unique: each row's target becomes its column index.
        column_ids, inverse = torch.unique(torch.cat([targets if every_row else targets[rows], column_ids]),
                                           return_inverse=True)
        num_rows = len(targets) if every_row else int(rows.sum())
        return rows, inverse[:num_rows], column_ids, every_row

    def _count_dropped(self, missing, subj, obj):
        self.dropped += missing
        if self.dropped < self._warn_at:
            return
        while self._warn_at <= self.dropped:
            self._warn_at *= 2
        pairs = [tuple(p) for p in torch.unique(torch.stack([subj, obj], 1), dim=0).tolist()]
        shown = ", ".join(map(str, pairs[:8])) + (" ..." if len(pairs) > 8 else "")
        logger.warning(
            "MODEL.CLIPMATCH: %d foreground pair(s) of this step, (subject, object) class labels %s, have no "
            "candidate texts and take no part in loss_clipmatch (%d of %d foreground pairs so far). The candidate "
            "texts cover the class pair of every training relation of the dataset file (SGB: DATASETS.TRAIN's "
            "VG-SGG.h5), so these pairs are not that file's relations: the dataset the host trains on relabels or "
            "adds relations. Next warning at %d pairs left out.", missing, shown, self.dropped, self.foreground,
            self._warn_at)

    def forward(self, relation, subj, pred, obj, bank):
        """L_vl-CE of the batch's sampled pairs.

        Args:
            relation: [N, rel_dim] relation representations of the sampled pairs.
            subj, pred, obj: [N] labels; pred 0 marks a background pair.
            bank: a :class:`~sgg_plugins.text.candidates.CandidateTextBank` on ``relation``'s device.

        Under ``torch.distributed`` (``gather_negatives``), the table is every process's: all rows,
        and the texts of them all (:mod:`.distributed`).
        """
        rows, target, column_ids, every_row = self._table(subj, pred, obj, bank)
        visual = F.normalize(self.head(relation if every_row else relation[rows]), dim=-1)
        gather = gathers(self.gather_negatives)
        if gather:
            counts = row_counts(visual.shape[0], visual.device)
            visual, target_ids = gather_rows(visual, counts), gather_rows(column_ids[target], counts)
            column_ids = torch.unique(gather_rows(column_ids))
            target = torch.searchsorted(column_ids, target_ids)
        if visual.shape[0] < 2:
            tell_once_without_negatives("MODEL.CLIPMATCH's text-to-visual cross entropy (in loss_clipmatch)",
                                        f"{visual.shape[0]} row(s): a text column has no other row to tell apart",
                                        gather)
        texts = bank.embeddings(column_ids).to(visual.dtype)
        logits = visual @ texts.t() / self.temperature
        total, _, _ = two_way_cross_entropy(logits, target, self.multi_positive)
        return total
