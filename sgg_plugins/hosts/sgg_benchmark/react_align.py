"""MODEL.ALIGN on SGG-Benchmark's REACT++ (``REACTPlusPlusPredictor``): seed 002's mirrored relation
predictor for a predictor without an edge LSTM. docs/methods.md states this adaptation.

REACT++ turns each object's RoI feature into subject and object slots (``vis_proj``), refines each
slot by cross-attention to the object-class prototypes under a geometry bias (``sub_sem_attn``,
``obj_sem_attn``, their norms and feed-forwards), composes each pair (``s * o + s - o``,
``compose_ffn``), lets the pair attend to its image's scene tokens or union feature (``scene_*`` /
``union_*``), and classifies by cosine between ``proj_head(r)`` and ``proj_head`` of a prototype
bank, times a learned logit scale (plus the frequency prior, when configured). There is no edge
context to duplicate; seed 002 §3.1 defines the mirror by its role: "message passing and feature
refinement in the relation predictor", run again on masked inputs, with an untied head. Here:

- **Mirrored** (rerun with the same modules and weights, ``MIRRORED_MODULES``): the relation-
  representation path above, from ``vis_proj`` to the context branch. Its inputs are masked by
  Eq. 1 with MASK_PROB / MASK_UNIT: the RoI features (the only input of ``vis_proj``; "relation"
  zeroes an object's whole row) and the union / scene-token features (the "relation feature" of
  §3.3; "relation" zeroes a whole row). With DETACH_INPUT both are detached first (§3.1).
- **Reused** from the clean pass, detached, not recomputed (as Motifs' object context): the
  label-derived semantics (``obj_lift`` of the object embeddings), the geometry bias
  (``geom_rope``), the object- and predicate-prototype keys, and whether the clean pass applied the
  context branch (REACT++'s ``union_dropout`` skips it at random; the mirror follows the clean pass).
- **Head** (§3.1.2: "the network weights between the mirrored and the original relation predictors
  are all tied except for the last prediction head"): REACT++'s prediction head is the prototype
  classifier, ``proj_head`` on both sides of a cosine against the prototype bank, times the logit
  scale. The mirror's is untied whole: its own prototypes and logit scale (initialised from the
  original's), and as projection either a 3-layer ReLU MLP in place of ``proj_head``'s two linear
  layers (HEAD untied_mlp, §3.3's "replace the last two linear layers … with a 3-layer MLP", width
  HEAD_HIDDEN_DIM or the predictor's D) or an untied copy of ``proj_head`` (HEAD untied_linear,
  §3.2's untied copy of the last projection). HEAD tied uses the original classifier (proj_head,
  prototypes, scale), which then also learns from the alignment (Table 3 'PH').
- **No prior** in the mirror (§3.3) unless USE_FREQ_BIAS, then as a fixed input.
- **Loss**: the KL of Eq. 2 on the predicate distributions of every sampled pair (alignment_kl,
  KL_DIRECTION / KL_REDUCTION), the original's distribution the fixed target; or LOSS supervised.
  REACT++ drops out inside the mirrored path in training (context_dropout_rate), so the target then
  comes from an extra no-grad, no-dropout pass of the original path on the unmasked inputs (§4.1).
  Extra passes leave every buffer as it was (``frozen_running_stats``: REACT++'s prototype EMA).

The passes run REACT++'s own forward: the reused tensors are substituted at their modules, the
masked inputs are its arguments, and the relation representation is read at ``proj_head``'s input.
"""

import contextlib
import copy

import torch
import torch.nn.functional as F
from torch import nn

from ...regularizers.align import UntiedMLPHead
from ..hooks import Tap, capture, has_path, overridden_method, patched_attribute, replace_outputs
from ..sgb.objectives.align import MirroredAlignment

LAYOUT = "REACTPlusPlusPredictor"
# The relation-representation path, in forward order; the context branch is one of two flavours.
MIRRORED_MODULES = ("vis_proj", "sub_sem_attn", "obj_sem_attn", "vis_sem_norm", "sub_ffn", "obj_ffn", "sub_norm",
                    "obj_norm", "compose_ffn", "compose_norm", "scene_proj", "scene_cross_attn", "scene_norm",
                    "scene_gate", "union_proj", "union_attn", "union_norm", "union_gate")
CONTEXT_BRANCH_ENTRIES = ("scene_proj", "union_proj")
# The original prototype classifier (trained by the alignment only with HEAD tied).
CLASSIFIER_MODULES = ("proj_head",)
CLASSIFIER_PARAMETERS = ("proto_weight", "logit_scale")
MAX_LOGIT_SCALE = 100.0  # REACT++'s clamp of exp(logit_scale)


def prototype_logits(relation, prototypes, projection, logit_scale):
    """REACT++'s classifier: cosine of the projected relation and projected prototypes, scaled."""
    rel = F.normalize(projection(relation).float(), dim=-1)
    protos = F.normalize(projection(prototypes).float(), dim=-1)
    return rel @ protos.t() * logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)


class ReactPlusPlusAlignObjective(MirroredAlignment):
    """The mirror of the module docstring; its loss is SGB's (``MirroredAlignment.losses``)."""

    def __init__(self, predictor, config):
        super().__init__()
        self.cfg = cfg = config.MODEL.ALIGN
        if cfg.HEAD != "tied":
            if cfg.HEAD == "untied_mlp":
                self.projection = UntiedMLPHead(predictor.D, predictor.D, cfg.HEAD_HIDDEN_DIM or predictor.D)
            else:
                self.projection = copy.deepcopy(predictor.proj_head)
            with torch.no_grad():
                self.prototypes = nn.Parameter(predictor._proto_bank().detach().clone())
                self.logit_scale = nn.Parameter(predictor.logit_scale.detach().clone())

    def taps(self, predictor):
        taps = {"align_prototype_keys": Tap("", "output", method="_get_cached_protos"),
                "align_semantics": Tap("obj_lift", "output", call="first"),
                "align_geometry": Tap("geom_rope", "output")}
        for path in CONTEXT_BRANCH_ENTRIES:
            if has_path(predictor, path):
                taps["align_context_branch"] = Tap(path, "output")
        return taps

    def mirrored_modules(self, predictor):
        """Paths of the host modules the alignment trains (tested exactly), beside ``sgg_plugins.align``."""
        paths = MIRRORED_MODULES + (CLASSIFIER_MODULES if self.cfg.HEAD == "tied" else ())
        return tuple(p for p in paths if has_path(predictor, p))

    def mirrored_parameters(self, predictor):
        """The predictor's own Parameters (not modules) the alignment trains: the classifier's, when tied."""
        return CLASSIFIER_PARAMETERS if self.cfg.HEAD == "tied" else ()

    def _mirror_pass(self, step):
        relation, _ = self._pass(step, masked=True)
        return self._mirror_logits(step, relation)

    def _target_pass(self, step):
        return self._pass(step, masked=False)[1]

    def _pass(self, step, masked):
        """One extra pass of REACT++'s forward: (the relation representation at ``proj_head``'s
        input, the relation logits the host computes from it), on masked inputs or, unmasked, as
        the original without dropout (the target)."""
        predictor, clean = step.predictor, step.clean
        roi, union = step.roi_features, step.union_features
        if self.cfg.DETACH_INPUT:
            roi, union = roi.detach(), union.detach() if union is not None else None
        if masked:
            roi, union = self._mask(roi), self._mask(union) if union is not None else None
        obj_keys, pred_keys, protos_norm, _ = clean["align_prototype_keys"]
        reused = (obj_keys.detach(), pred_keys.detach() if pred_keys is not None else None, protos_norm.detach(), None)
        replacements = {"obj_lift": lambda x, out: clean["align_semantics"].detach()}
        if "align_geometry" in clean:
            replacements["geom_rope"] = lambda x, out: clean["align_geometry"].detach()
        # union_dropout 1.0 skips the context branch for sure, 0.0 never: as the clean pass did.
        skip_context = 0.0 if "align_context_branch" in clean else 1.0
        with step.extra_pass(), overridden_method(predictor, "_get_cached_protos", lambda: reused), \
                patched_attribute(predictor, "union_dropout", skip_context), \
                replace_outputs(predictor, replacements), \
                capture(predictor, {"relation": Tap("proj_head", "input")}) as found:
            _, rel_dists, _ = predictor.host_forward(*step.host_args, roi, union, step.logger)
        return found["relation"], torch.cat(rel_dists, 0)

    def _mirror_logits(self, step, relation):
        predictor = step.predictor
        if self.cfg.HEAD == "tied":
            # The original classifier, its prototypes' graph from the clean pass: it learns from this loss.
            protos_norm = step.clean["align_prototype_keys"][2]
            rel = F.normalize(predictor.proj_head(relation).float(), dim=-1)
            logits = rel @ protos_norm.float().t() * predictor.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
        else:
            logits = prototype_logits(relation, F.normalize(self.prototypes, dim=-1), self.projection,
                                      self.logit_scale)
        if self.cfg.USE_FREQ_BIAS and getattr(predictor, "use_bias", False):
            subj, obj = step.pair_rows
            labels = step.obj_labels
            pairs = torch.stack([labels[subj], labels[obj]], dim=1)
            logits = logits + predictor.freq_bias.index_with_labels(pairs).detach()
        return logits


class ReactPlusPlusPredictorMixin:
    """What REACT++ needs of the regularized predictor beyond SGG-Benchmark's: its own ALIGN
    objective, and no VCTree forest to record (it has no ``context_layer``)."""

    objectives = {"ALIGN": ReactPlusPlusAlignObjective}

    @contextlib.contextmanager
    def _forest_recorder(self, replay=None):
        yield []
