"""MODEL.CLIPMATCH on SGB predictors: CLIP predicate matching (seed 003 §3.2-3.3).

The visual side is the relation representation of every sampled pair: the input of the host's
relation classifier (``specs.relation_feature``: Motifs' and Transformer's ``rel_compress``,
VCTree's ``ctx_compress``, IMP's ``context_layer.rel_fc``), read from the clean pass and projected
into CLIP's text space by the objective's head (``regularizers.clipmatch``). The text side is the
candidate bank (``text.candidates``): for every (subject, object) class pair of every relation of
the training split as the dataset file holds it (``catalog.training_text_sources``: the VG-SGG.h5
and dict file of DATASETS.TRAIN), its p prompts, plus the null text, embedded once when the model
is built; CLIP never runs in a step.

Not the host's ``fg_matrix``: SGB counts it with ``filter_non_overlap=True``, so it lacks the class
pairs whose relations all join non-overlapping boxes ("near", "next to", "left of", "above" ...),
which PredCls and SGCls training still samples as foreground. Built from it, the bank left those
relations out of the loss (12.6 % of the bench preset's training relations, 133 class pairs).

Causal is left out: its relation logits are the sum of three classifiers on three different
features (union, context, prior), so no one feature is "the relation representation" to match.
"""

import logging

import torch

from ....config import ConfigError
from ....regularizers.clipmatch import PredicateMatchingLoss
from ....text.candidates import load_or_compute_candidate_bank
from ...hooks import Tap, resolve
from .base import SGBObjective, require, text_encoder_device, training_split
from ..catalog import training_text_sources
from ..text_banks import candidate_bank_arguments, text_bank_error_line

logger = logging.getLogger(__name__)


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
        obj_classes, pred_classes, triplets = training_split(predictor, config, self.node, candidate_sources)
        try:
            self.text_bank = load_or_compute_candidate_bank(
                obj_classes, pred_classes, triplets[:, [0, 2]], device=text_encoder_device(config),
                **candidate_bank_arguments(cfg))
        except (ValueError, FileNotFoundError, ImportError) as error:
            # An unreadable or foreign TEXT_EMBEDDINGS file, or no OpenCLIP to compute one: one line
            # (the launchers' preflight finds these before the host starts; this is for other callers).
            raise ConfigError(text_bank_error_line(self.node, error)) from None
        # The bank holds every requested class pair (load_or_compute_candidate_bank recomputes a file
        # that lacks one); counted here from the bank itself, so the log states what it holds.
        _, found = self.text_bank.pair_index(triplets[:, 0], triplets[:, 2])
        covered = int(found.sum())
        if covered != len(triplets):
            raise ConfigError(f"MODEL.CLIPMATCH: the candidate text bank lacks the class pairs of "
                              f"{len(triplets) - covered} of the {len(triplets)} training relations")
        logger.info("MODEL.CLIPMATCH: %d training relations (overlapping boxes or not), %d distinct (subject, object) "
                    "class pairs, every one with its %d prompts in the candidate texts", len(triplets),
                    len(torch.unique(triplets[:, [0, 2]], dim=0)), self.text_bank.num_predicates)
        self.loss = PredicateMatchingLoss(resolve(predictor, spec.relation_feature).in_features, self.text_bank.dim,
                                          temperature=cfg.TEMPERATURE, multi_positive=cfg.MULTI_POSITIVE,
                                          gather_negatives=config.MODEL.SGG_PLUGINS.GATHER_NEGATIVES)

    def taps(self, predictor):
        return {"clipmatch_relation": Tap(predictor.spec.relation_feature, "input")}

    def losses(self, step):
        subj, obj = step.pair_rows
        labels = step.obj_labels
        relation = step.clean["clipmatch_relation"]
        self.text_bank.to(relation.device)  # in place; a no-op once it is there
        loss = self.loss(relation, labels[subj], step.rel_labels_cat, labels[obj], self.text_bank)
        return {"loss_clipmatch": self.cfg.WEIGHT * loss}


def candidate_sources(config):
    """(obj_classes, pred_classes, [T, 3] triplets) whose (subject, object) class pairs get candidates.

    Every relation of the training split as DATASETS.TRAIN's VG-SGG.h5 holds it, overlapping boxes
    or not, the class names from its dict file. A training dataset in another format has no such
    file: one line before training.
    """
    try:
        return training_text_sources(config, node="MODEL.CLIPMATCH")
    except (ValueError, FileNotFoundError) as error:  # PreflightError is a ValueError
        message = str(error)
        raise ConfigError(message if message.startswith("MODEL.CLIPMATCH") else f"MODEL.CLIPMATCH: {message}") \
            from None
