"""MODEL.RCL on SGB predictors: relation and object features against CLIP text (seed 001 §3.2-3.3).

The visual side is the input of the host's relation classifier (the relation representation) and
the per-object representations of the pair, read from the clean pass; the text side is a bank of
frozen text embeddings, CLIP's or, with ``CLIP_MODEL sentence-transformers:<name or folder>``, a
sentence encoder's, computed once when the model is built (the encoder never runs in a step). The
text projections take their input width from the bank (512 for ViT-B-32, 384 for all-MiniLM-L6-v2).

The bank holds every triplet of the training split as the dataset file holds it (SGB's VG-SGG.h5
from ``PATHS_CATALOG`` for ``DATASETS.TRAIN``), not the host's frequency statistics, which drop the
relations between non-overlapping boxes (whole predicates on small datasets). The negatives of
Eq. 7 are ranked by GloVe phrase vectors from the host's ``GLOVE_DIR`` (SAMPLING_EMBEDDINGS glove,
the paper's) or by the bank's phrase embeddings (clip), whichever encoder made them. The mean number
of negatives kept per query is logged every host logging period, outside the loss dict.
"""

import logging

import torch

from ....config import ConfigError
from ....regularizers.rcl import RelationalContrastiveLoss
from ....text.clip_text import load_or_compute_bank
from ....text.glove import glove_phrases
from ...hooks import Tap, resolve
from ..catalog import training_text_sources
from .base import SGBObjective, require

logger = logging.getLogger(__name__)

# relation_train_net.py prints its meters every 200 iterations (a literal there); the kept-negative
# statistic is logged at the same period, averaged over it, and at the first step.
LOG_PERIOD = 200
# Below this share of the other relations kept as negatives, RCL has (almost) nothing to contrast.
FEW_NEGATIVES_SHARE = 0.05


class RclObjective(SGBObjective):
    node = "RCL"

    def __init__(self, predictor, config):
        super().__init__()
        self.cfg = cfg = config.MODEL.RCL
        spec = predictor.spec
        require(predictor, (spec.relation_feature, spec.object_feature.path, spec.object_dim.rpartition(".")[0]),
                self.node)
        obj_classes, pred_classes, triplets = training_text_sources(config)
        try:
            self.text_bank = load_or_compute_bank(
                obj_classes, pred_classes, triplets, model=cfg.CLIP_MODEL,
                pretrained=cfg.CLIP_PRETRAINED, prompt=cfg.PROMPT, object_prompt=cfg.OBJECT_PROMPT,
                cache_path=cfg.TEXT_EMBEDDINGS or None, user_file=bool(cfg.TEXT_EMBEDDINGS))
        except (ValueError, FileNotFoundError, ImportError) as error:
            # A missing, foreign or unreadable TEXT_EMBEDDINGS file, or no OpenCLIP / sentence-transformers
            # to compute one: one line before training (the launcher prints ConfigError so), not a traceback.
            raise ConfigError(f"MODEL.RCL: {error}") from None
        if cfg.SAMPLING_EMBEDDINGS == "glove":
            self.text_bank.use_sampling_embeddings(
                glove_phrases(obj_classes, pred_classes, config.GLOVE_DIR, config.MODEL.ROI_RELATION_HEAD.EMBED_DIM))
        logger.info("MODEL.RCL: %d training relations, %d distinct triplets, all in the text bank; negatives ranked "
                    "by %s", len(triplets), self.text_bank.triplet_keys.numel(), self.text_bank.sampling_source)
        object_dim_path, _, attribute = spec.object_dim.rpartition(".")
        self.loss = RelationalContrastiveLoss.from_config(
            cfg, rel_dim=resolve(predictor, spec.relation_feature).in_features,
            obj_dim=getattr(resolve(predictor, object_dim_path), attribute), text_dim=self.text_bank.dim)
        self._steps = 0
        self._kept = []
        self._share = []
        self._warned_few = False

    def taps(self, predictor):
        spec = predictor.spec
        return {"rcl_relation": Tap(spec.relation_feature, "input"), "rcl_objects": spec.object_feature}

    def losses(self, step):
        subj, obj = step.pair_rows
        objects = step.clean["rcl_objects"]
        if step.spec.object_layout == "halves":
            half = objects.shape[1] // 2
            subj_feats, obj_feats = objects[subj, :half], objects[obj, half:]
        else:
            subj_feats, obj_feats = objects[subj], objects[obj]
        labels = step.obj_labels
        relation = step.clean["rcl_relation"]
        self.text_bank.to(relation.device)  # in place; a no-op once it is there
        rel_image = torch.repeat_interleave(torch.arange(len(step.rel_pair_idxs), device=relation.device),
                                            torch.as_tensor([len(p) for p in step.rel_pair_idxs],
                                                            device=relation.device))
        loss = self.loss(relation, subj_feats, obj_feats, labels[subj], step.rel_labels_cat, labels[obj],
                         self.text_bank, rel_image=rel_image, subj_rows=subj, obj_rows=obj)
        self._log_kept_negatives()
        return {"loss_rcl": self.cfg.WEIGHT * loss}

    def _log_kept_negatives(self):
        """Mean |Q_k| over the logging period: a user must see when sampling empties the dictionary."""
        stats = self.loss.last_stats
        self._steps += 1
        if stats.get("rcl_relations", 0) >= 2:
            self._kept.append(float(stats["rcl_kept_negatives"]))
            self._share.append(float(stats["rcl_kept_share"]))
        if self._steps != 1 and self._steps % LOG_PERIOD:
            return
        if self._kept:
            kept, share = sum(self._kept) / len(self._kept), sum(self._share) / len(self._share)
            logger.info("MODEL.RCL: %.1f negatives kept per query (%.0f%% of the batch's other relations) over the "
                        "last %d steps; negatives ranked by %s", kept, 100 * share, len(self._kept),
                        self.text_bank.sampling_source)
            if share < FEW_NEGATIVES_SHARE and not self._warned_few:
                self._warned_few = True
                logger.warning("MODEL.RCL: SYNONYM_THRESHOLD %.2f keeps only %.0f%% of the other relations as "
                               "negatives (%s): RCL has almost nothing to contrast; raise SYNONYM_THRESHOLD or "
                               "use SAMPLING_EMBEDDINGS glove", self.cfg.SYNONYM_THRESHOLD, 100 * share,
                               self.text_bank.sampling_source)
        self._kept, self._share = [], []
