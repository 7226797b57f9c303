"""MODEL.RCL on SGB predictors: relation and object features against CLIP text (seed 001 §3.2-3.3).

The visual side is the input of the host's relation classifier (the relation representation) and
the per-object representations of the pair, read from the clean pass, each through its adapter
(h_rel, h_obj). Where h_rel sits (``PLACEMENT``):

- ``classifier``, seed 001's architecture (§3.4: "the learned relation feature v_ij^r is used to
  predict final relation label"): a forward pre-hook on the host's relation classifier
  (``specs.relation_feature``) feeds it h_rel's output, in training and in evaluation, so the
  checkpoint's adapter is part of the model (a vanilla host that ignores ``sgg_plugins.*`` keys
  would evaluate a different model). h_rel keeps the classifier's input width; a linear h_rel
  starts as the identity, so at initialisation, and for a vanilla checkpoint fine-tuned with RCL,
  the host's predictions are unchanged. The host's frequency prior is added after the classifier,
  as before.
- ``side``: the adapters read the classifier's input beside it; inference is the host's own.

``DETACH_INPUT`` stops RCL's gradient at the host's features (the relation representation before
h_rel and the object features): RCL then trains only its adapters, W matrices and logit scale, as
seed 001 trains adapters on frozen CLIP encoders ("their parameters are fixed during training",
§3.2). With ``classifier`` placement the cross entropy still trains h_rel and everything under it;
RCL's h_rel is then recomputed on the detached input.

The text side is a bank of
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
from ....regularizers.rcl import ATTENTION_HEADS, RelationalContrastiveLoss, synonym_pairs
from ....regularizers.transfer import to_device
from ....text.bank_builder import load_or_compute_bank
from ....text.glove import GloveUnavailableError, glove_phrases
from ...hooks import Tap, resolve
from ..catalog import training_text_sources
from ..text_banks import TEXT_BANK_ERRORS, rcl_bank_arguments, text_bank_error_line
from .base import SGBObjective, require, text_encoder_device, training_split

logger = logging.getLogger(__name__)

# relation_train_net.py prints its meters every 200 iterations (a literal there); the kept-negative
# statistic is logged at the same period, averaged over it, and at the first step.
LOG_PERIOD = 200
# Below this share of the other relations kept as negatives, RCL has (almost) nothing to contrast.
FEW_NEGATIVES_SHARE = 0.05
# Below this learned logit scale (tau above 1), cosines in [-1, 1] barely separate the positive from
# dozens of negatives. Measured: under SGB's SGD at its LR, CLIP's learnable scale fell from 14.3 to
# 0.3-2.1 on every bench run (docs/cpu_bench).
FLAT_LOGIT_SCALE = 1.0


class RclObjective(SGBObjective):
    node = "RCL"

    def __init__(self, predictor, config):
        super().__init__()
        self.cfg = cfg = config.MODEL.RCL
        spec = predictor.spec
        require(predictor, (spec.relation_feature, spec.object_feature.path, spec.object_dim.rpartition(".")[0]),
                self.node)
        try:
            obj_classes, pred_classes, triplets = training_split(predictor, config, self.node, training_text_sources)
            self.text_bank = load_or_compute_bank(obj_classes, pred_classes, triplets, **rcl_bank_arguments(cfg),
                                                  device=text_encoder_device(config))
        except TEXT_BANK_ERRORS as error:
            # A missing, foreign or unreadable TEXT_EMBEDDINGS file, or no OpenCLIP / sentence-transformers
            # to compute one: one line before training (the launcher prints ConfigError so), not a traceback.
            # The launchers' preflight makes the same call first (text_banks.check_text_banks).
            raise ConfigError(text_bank_error_line(self.node, error)) from None
        if cfg.SAMPLING_EMBEDDINGS == "glove":
            try:
                self.text_bank.use_sampling_embeddings(glove_phrases(
                    obj_classes, pred_classes, config.GLOVE_DIR,
                    cfg.GLOVE_DIM or config.MODEL.ROI_RELATION_HEAD.EMBED_DIM))
            except GloveUnavailableError as error:
                raise ConfigError(str(error)) from None
        self._log_synonyms(obj_classes, pred_classes, triplets)
        logger.info("MODEL.RCL: %d training relations, %d distinct triplets, all in the text bank; negatives ranked "
                    "by %s", len(triplets), self.text_bank.triplet_keys.numel(), self.text_bank.sampling_source)
        object_dim_path, _, attribute = spec.object_dim.rpartition(".")
        classifier = resolve(predictor, spec.relation_feature)
        rel_dim = classifier.in_features
        in_classifier = cfg.PLACEMENT == "classifier"
        if in_classifier and cfg.ADAPTER == "attention" and rel_dim % ATTENTION_HEADS:
            raise ConfigError(f"MODEL.RCL.ADAPTER attention with PLACEMENT classifier keeps the width of the "
                              f"classifier's input ({spec.relation_feature}: {rel_dim}), which is not a multiple "
                              f"of the adapter's {ATTENTION_HEADS} heads; use ADAPTER linear or PLACEMENT side")
        self.loss = RelationalContrastiveLoss.from_config(
            cfg, rel_dim=rel_dim, obj_dim=getattr(resolve(predictor, object_dim_path), attribute),
            text_dim=self.text_bank.dim, adapter_dim=rel_dim if in_classifier else None,
            gather_negatives=config.MODEL.SGG_PLUGINS.GATHER_NEGATIVES)
        if not in_classifier and cfg.DETACH_INPUT:
            # Nothing of the host reads the side adapters and no RCL gradient reaches the host: the
            # trained model is the host's alone. Legitimate for an ablation, never what a user wants silently.
            logger.warning("MODEL.RCL: PLACEMENT side with DETACH_INPUT True trains only RCL's own adapters, which "
                           "nothing of the host reads: the model is the baseline's (set DETACH_INPUT False or "
                           "PLACEMENT classifier for RCL to act on it)")
        self._pairs_per_image = None
        self._classifier_input = None
        if in_classifier:
            if cfg.ADAPTER == "linear":
                with torch.no_grad():
                    self.loss.rel_adapter.weight.copy_(torch.eye(rel_dim))
                    self.loss.rel_adapter.bias.zero_()
            # Persistent hooks (the only objective that changes evaluation): the attention adapter
            # needs each relation's image, which the classifier's input no longer carries.
            predictor.register_forward_pre_hook(self._record_pairs, with_kwargs=True)
            classifier.register_forward_pre_hook(self._classify_adapted)
        self._steps = 0
        self._sums = None  # [steps counted, kept negatives, kept share], summed over a log period
        self._warned_few = False
        self._warned_flat = False

    def _log_synonyms(self, obj_classes, pred_classes, triplets):
        """What Eq. 7's synonym cut drops on this training split, once, before training.

        ε = 0.7 was tuned on word vectors (Table 6); on another encoder's phrase embeddings the
        same ε can drop unrelated predicates ('man wearing' ~ 'man near' at 0.83 on
        all-MiniLM-L6-v2), so there the line is a warning a user reads before trusting the ranking.
        """
        def text(labels):
            s, p, o = labels
            return " ".join(n for n in (s and obj_classes[s], pred_classes[p], o and obj_classes[o]) if n)

        on_word_vectors = self.text_bank.sampling is not None
        log = logger.info if on_word_vectors else logger.warning
        threshold = self.cfg.SYNONYM_THRESHOLD
        for kind, (share, pairs) in synonym_pairs(self.text_bank, triplets, self.cfg.LEVELS, threshold).items():
            shown = "; ".join(f"'{text(a)}' ~ '{text(b)}' {sim:.2f}" for a, b, sim in pairs) or "none"
            log("MODEL.RCL: Eq. 7 on %s phrases ranked by %s: %.1f%% of the training split's pairs of relations with "
                "different phrases are closer than SYNONYM_THRESHOLD %.2f and never each other's negatives; the most "
                "similar such pairs with different predicates: %s%s", kind, self.text_bank.sampling_source,
                100 * share, threshold, shown,
                "" if on_word_vectors else " (the paper ranks by word vectors: put GloVe in GLOVE_DIR and set "
                                           "SAMPLING_EMBEDDINGS glove)")

    def _record_pairs(self, predictor, args, kwargs):
        """Pre-hook on the predictor: how many relations each image has, for the attention adapter."""
        rel_pair_idxs = args[1] if len(args) > 1 else kwargs["rel_pair_idxs"]
        self._pairs_per_image = [len(pairs) for pairs in rel_pair_idxs]
        self._classifier_input = None

    def _classify_adapted(self, classifier, args):
        """Pre-hook on the host's relation classifier: it reads h_rel(relation representation)."""
        features = args[0]
        # The clean pass's input, kept for this step's loss (DETACH_INPUT recomputes h_rel from it);
        # later calls in the same step (another objective's extra pass) do not replace it.
        if self.training and self._classifier_input is None:
            self._classifier_input = features
        return (self.loss.adapt_relations(features, self._relation_images(self._pairs_per_image, features.device)),
                ) + tuple(args[1:])

    def _relation_images(self, pairs_per_image, device):
        """[N] the image of each relation; only the attention adapter reads it (None otherwise: no
        host-to-device copy on every forward for nothing)."""
        if self.cfg.ADAPTER != "attention" or pairs_per_image is None:
            return None
        counts = to_device(pairs_per_image, device, torch.long)  # no sync: transfer.py
        return torch.repeat_interleave(torch.arange(len(pairs_per_image), device=device), counts,
                                       output_size=sum(pairs_per_image))

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
        # With PLACEMENT classifier the tap reads what the classifier read: h_rel's output.
        relation, rel_adapted = step.clean["rcl_relation"], self.cfg.PLACEMENT == "classifier"
        rel_image = self._relation_images([len(p) for p in step.rel_pair_idxs], relation.device)
        if self.cfg.DETACH_INPUT:
            subj_feats, obj_feats = subj_feats.detach(), obj_feats.detach()
            if rel_adapted:
                relation = self.loss.adapt_relations(self._classifier_input.detach(), rel_image)
            else:
                relation = relation.detach()
        self._classifier_input = None
        self.text_bank.to(relation.device)  # in place; a no-op once it is there
        loss = self.loss(relation, subj_feats, obj_feats, labels[subj], step.rel_labels_cat, labels[obj],
                         self.text_bank, rel_image=rel_image, subj_rows=subj, obj_rows=obj, rel_adapted=rel_adapted)
        self._log_kept_negatives()
        return {"loss_rcl": self.cfg.WEIGHT * loss}

    def _log_kept_negatives(self):
        """Mean |Q_k| and the logit scale over the logging period: a user must see when sampling
        empties the dictionary, or when a learned temperature flattens the contrast.

        The statistics are summed on the loss's device and read once a period: a read on every step
        would make Python wait for the GPU on every step.
        """
        stats = self.loss.last_stats
        self._steps += 1
        counted = (stats["rcl_relations"] >= 2).float()
        step_sums = torch.stack([counted, stats["rcl_kept_negatives"] * counted, stats["rcl_kept_share"] * counted])
        self._sums = step_sums if self._sums is None else self._sums + step_sums
        if self._steps != 1 and self._steps % LOG_PERIOD:
            return
        steps, kept_sum, share_sum = self._sums.tolist()
        self._sums = None
        logit_scale = float(self.loss.logit_scale.detach())
        if steps:
            kept, share = kept_sum / steps, share_sum / steps
            logger.info("MODEL.RCL: %.1f negatives kept per query (%.0f%% of the batch's other relations) over the "
                        "last %d steps; logit scale 1/tau %.2f; negatives ranked by %s", kept, 100 * share, steps,
                        logit_scale, self.text_bank.sampling_source)
            if share < FEW_NEGATIVES_SHARE and not self._warned_few:
                self._warned_few = True
                logger.warning("MODEL.RCL: SYNONYM_THRESHOLD %.2f keeps only %.0f%% of the other relations as "
                               "negatives (%s): RCL has almost nothing to contrast; raise SYNONYM_THRESHOLD or "
                               "use SAMPLING_EMBEDDINGS glove", self.cfg.SYNONYM_THRESHOLD, 100 * share,
                               self.text_bank.sampling_source)
        if self.cfg.LEARN_TEMPERATURE and logit_scale < FLAT_LOGIT_SCALE and not self._warned_flat:
            self._warned_flat = True
            logger.warning("MODEL.RCL: the learned logit scale 1/tau has fallen from %.1f to %.2f (tau %.2f): every "
                           "negative scores about as the positive, loss_rcl sits near log(negatives) and its gradient "
                           "fades; the host's optimizer moves the scale at the host's learning rate. Set "
                           "LEARN_TEMPERATURE False (a fixed TEMPERATURE)", 1.0 / self.cfg.TEMPERATURE, logit_scale,
                           1.0 / logit_scale)
