"""MODEL.CLIPMATCH on SGB predictors: CLIP predicate matching (seed 003 §3.2-3.3).

The visual side is the relation representation of every sampled pair: the input of the host's
relation classifier (``specs.relation_feature``: Motifs' and Transformer's ``rel_compress``,
VCTree's ``ctx_compress``, IMP's ``context_layer.rel_fc``), read from the clean pass and projected
into CLIP's text space by the objective's head (``regularizers.clipmatch``). The text side is the
candidate bank (``text.candidates``): for every (subject, object) class pair that carries a
relation in the training split (the host's ``fg_matrix``), its p prompts, plus the null text,
embedded once when the model is built; CLIP never runs in a step.

Causal is left out: its relation logits are the sum of three classifiers on three different
features (union, context, prior), so no one feature is "the relation representation" to match.
"""

import torch

from ....config import ConfigError
from ....regularizers.clipmatch import PredicateMatchingLoss
from ....text.candidates import load_or_compute_candidate_bank
from ...hooks import Tap, resolve
from .base import SGBObjective, require
from ..catalog import dataset_statistics


class ClipMatchObjective(SGBObjective):
    node = "CLIPMATCH"

    def __init__(self, predictor, config):
        super().__init__()
        self.cfg = cfg = config.MODEL.CLIPMATCH
        spec = predictor.spec
        if not spec.relation_feature:
            raise ConfigError(f"MODEL.CLIPMATCH: {type(predictor).__name__} has no single relation "
                              f"representation (its logits sum several classifiers); disable MODEL.CLIPMATCH for it.")
        require(predictor, (spec.relation_feature,), self.node)
        stats = dataset_statistics(config)
        # fg_matrix[s, o, p] counts the training split's triplets: the class pairs a ground-truth
        # triplet can have are those with any predicate.
        class_pairs = torch.nonzero(torch.as_tensor(stats["fg_matrix"])[:, :, 1:].sum(-1) > 0)
        try:
            self.text_bank = load_or_compute_candidate_bank(
                stats["obj_classes"], stats["rel_classes"], class_pairs, model=cfg.CLIP_MODEL,
                pretrained=cfg.CLIP_PRETRAINED, prompt=cfg.PROMPT, null_prompt=cfg.NULL_PROMPT,
                cache_path=cfg.TEXT_EMBEDDINGS or None)
        except (ValueError, FileNotFoundError, ImportError) as error:
            # An unreadable or foreign TEXT_EMBEDDINGS file, or no OpenCLIP to compute one: one line
            # before training (the launcher prints ConfigError so), not a traceback.
            raise ConfigError(f"MODEL.CLIPMATCH: {error}") from None
        self.loss = PredicateMatchingLoss(resolve(predictor, spec.relation_feature).in_features, self.text_bank.dim,
                                          temperature=cfg.TEMPERATURE, multi_positive=cfg.MULTI_POSITIVE)

    def taps(self, predictor):
        return {"clipmatch_relation": Tap(predictor.spec.relation_feature, "input")}

    def losses(self, step):
        subj, obj = step.pair_rows
        labels = step.obj_labels
        relation = step.clean["clipmatch_relation"]
        self.text_bank.to(relation.device)  # in place; a no-op once it is there
        loss = self.loss(relation, labels[subj], step.rel_labels_cat, labels[obj], self.text_bank)
        return {"loss_clipmatch": self.cfg.WEIGHT * loss}
