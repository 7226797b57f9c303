"""MODEL.ALIGN on SGB predictors: the mirrored relation predictor of seed 002 §3.1 and §3.3.

The mirror is the original predictor's edge context and the layers after it, rerun with the same
modules and weights on masked inputs, with the relation head replaced by an untied one and no
predicate prior:

- "we duplicate the edge context LSTM and its subsequent prediction layers. Random masks are
  applied on both input to the edge context LSTM and the relation feature" (§3.3). The object
  context, its embeddings, the decoded object labels and VCTree's forest are the clean pass's,
  reused, not recomputed: the mirror reruns only ``CONTEXTS[...].modules`` and the predictor's
  ``refinement`` layers, through the host's own forward (``context_layer.forward`` is overridden
  for that one pass to return the clean outputs with the edge context recomputed).
- "we stop the gradient of the alignment loss at the input feature. This ensures that the
  alignment loss only affects the message passing and feature refinement in the relation
  predictor" (§3.1): with DETACH_INPUT the edge input and the relation feature are detached before
  the mask, so the object context, the input features, the original head and the prior get
  exactly zero alignment gradient.
- "We replace the last two linear layers of the mirrored relation predictor with a 3-layer MLP with
  ReLU activation … the pairwise combined object features and the masked relation features are
  fed to the MLP" (§3.3): HEAD untied_mlp. "untied_linear" unties only the final logit layer(s)
  (§3.2, SGTR's form); "tied" uses the original head (Table 3 'PH').
- "we turn off all the dropout operations inside the mirrored … decoder … and we conduct another
  forward pass of the original decoder without the dropout operations to form the target" (§4.1):
  the target pass is made only when dropout ran inside the mirrored part in the clean pass
  (Transformer's edge encoder); it reruns the same part, unmasked, with the original head.
IMP has no separate object context (its nodes and edges pass messages jointly from their unary
projections on), so its whole predictor is the mirror, rerun on its masked, detached inputs.
"""

import torch
from torch import nn

from ....regularizers.align import (
    UntiedMLPHead,
    alignment_kl,
    mask_input,
    supervised_alignment_loss,
    untied_linear_copy,
)
from ....config import ConfigError
from ...hooks import Tap, capture, has_path, map_floating, overridden_method, replace_outputs, resolve
from ..specs import CONTEXTS
from .base import SGBObjective, require


def _linear_in(module):
    """in_features of a Linear, or of the first Linear of a Sequential (Causal's post_cat)."""
    layer = module if isinstance(module, nn.Linear) else next(m for m in module.modules() if isinstance(m, nn.Linear))
    return layer.in_features


def _first_tensor(union):
    # Causal with SEPARATE_SPATIAL passes (union_features, spatial_conv_feats).
    return union[0] if isinstance(union, (tuple, list)) else union


class MirroredAlignment(SGBObjective):
    """ALIGN's loss, whatever the mirror: the mirror's relation logits against the original's (Eq. 2),
    or the supervised loss on the mirror (Table 3 'SA'). A host's mirror gives ``mirrored_modules``,
    ``_mirror_pass(step)`` (the mirror's relation logits) and ``_target_pass(step)`` (the original's
    same part rerun unmasked without dropout, called under no_grad only when dropout ran in it)."""

    node = "ALIGN"

    def losses(self, step):
        cfg = self.cfg
        predictor = step.predictor
        mirror_logits = self._mirror_pass(step)
        if cfg.LOSS == "supervised":
            # Table 3 'SA': "plug the same supervised loss in the mirrored relation predictor", at
            # the host's own weight (SUPERVISED_WEIGHT), not λ.
            loss = supervised_alignment_loss(mirror_logits, step.rel_labels_cat)
            return {"loss_align": cfg.SUPERVISED_WEIGHT * loss}
        if step.dropout_ran([resolve(predictor, p) for p in self.mirrored_modules(predictor)]):
            with torch.no_grad():
                target = self._target_pass(step)
        else:
            target = step.rel_logits
        loss = alignment_kl(mirror_logits, target, direction=cfg.KL_DIRECTION, reduction=cfg.KL_REDUCTION)
        return {"loss_align": cfg.WEIGHT * loss}

    def _mask(self, x):
        return mask_input(x, self.cfg.MASK_PROB, unit=self.cfg.MASK_UNIT)


class AlignObjective(MirroredAlignment):
    def __init__(self, predictor, config):
        super().__init__()
        self.cfg = cfg = config.MODEL.ALIGN
        spec = predictor.spec
        self.context = None
        require(predictor, ("context_layer", spec.logit_layers[0]), self.node)
        if spec.align_mirror == "edge":
            name = next((c.__name__ for c in type(predictor.context_layer).__mro__ if c.__name__ in CONTEXTS), None)
            if name is None:
                raise ConfigError(
                    f"MODEL.ALIGN: the predictor's context_layer is a {type(predictor.context_layer).__name__}, which "
                    f"is none of (and derives from none of) {', '.join(CONTEXTS)}: the mirror does not know where "
                    f"its edge context starts.")
            self.context = CONTEXTS[name]
            require(predictor, [f"context_layer.{m}" for m in self.context.modules], self.node)
        present = [p for p in spec.head if has_path(predictor, p)]
        self.logit_layers = [p for p in spec.logit_layers if p in present]
        self.pair_feature = next((p for p in spec.pair_feature if has_path(predictor, p)), None)
        if self.pair_feature is None:
            require(predictor, spec.pair_feature[:1], self.node)
        gates = [g for g in spec.gates if has_path(predictor, g)]
        if cfg.HEAD == "untied_mlp" and gates:
            raise ConfigError(
                f"MODEL.ALIGN.HEAD untied_mlp: this predictor multiplies its relation logits by a gate "
                f"({', '.join(gates)}; Causal's FUSION_TYPE gate) that an MLP replacing its last layers cannot "
                f"stand in for; use MODEL.ALIGN.HEAD untied_linear or tied, or FUSION_TYPE sum.")
        # The union feature enters the untied MLP only where the original predictor reads it.
        self.reads_union = spec.align_mirror == "edge" and getattr(predictor, "use_vision", True)
        num_rel = resolve(predictor, self.logit_layers[0]).out_features
        if cfg.HEAD == "untied_mlp":
            pair_dim = _linear_in(resolve(predictor, self.pair_feature))
            union_dim = config.MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM if self.reads_union else 0
            self.mlp = UntiedMLPHead(pair_dim + union_dim, num_rel, cfg.HEAD_HIDDEN_DIM or pair_dim)
        elif cfg.HEAD == "untied_linear":
            self.linear = nn.ModuleDict({p.replace(".", "_"): untied_linear_copy(resolve(predictor, p))
                                         for p in self.logit_layers})

    # ------------------------------------------------------------------ what ALIGN reads and trains
    def taps(self, predictor):
        if self.context is None:
            return {}
        return {"align_context": Tap("context_layer", "output"), "align_edge_call": self.context.edge_call}

    def mirrored_modules(self, predictor):
        """Paths of the host modules the mirror shares with the original, and so trains.

        The declared answer to "which parameters does alignment reach" (tested exactly): the
        context's message passing, the refinement after it, and whatever of the original head the
        chosen HEAD still runs. The mirror's own head lives under ``sgg_plugins.align``.
        """
        spec = predictor.spec
        shared = tuple(f"context_layer.{m}" for m in self.context.modules) if self.context else ()
        shared += spec.refinement
        if self.cfg.HEAD == "untied_mlp":  # the MLP replaces the head; what feeds its pair input runs
            head = spec.pair_feature_feeders.get(self.pair_feature, ())
        elif self.cfg.HEAD == "untied_linear":
            head = tuple(p for p in spec.head if p not in self.logit_layers)
        else:
            head = spec.head
        return tuple(p for p in shared + head if has_path(predictor, p))

    # ------------------------------------------------------------------ the passes
    def _mirror_pass(self, step):
        return self._run(step, mirrored=True)

    def _target_pass(self, step):
        return self._run(step, mirrored=False)

    def _run(self, step, mirrored):
        """Relation logits of the mirror (masked inputs, untied head, no prior) or, with
        ``mirrored=False``, of the original predictor's same part without dropout (the target)."""
        predictor = step.predictor
        detach = self.cfg.DETACH_INPUT
        roi, union = step.roi_features, step.union_features
        if detach:
            roi, union = roi.detach(), map_floating(torch.Tensor.detach, union)
        if mirrored:
            union = map_floating(self._mask, union)
            if self.context is None:  # IMP: mask the object features entering message passing
                roi = self._mask(roi)
        context_forward = self._context_forward(step, mirrored) if self.context is not None else None
        pair_tap = {"pair": Tap(self.pair_feature, "input")} if mirrored and self.cfg.HEAD == "untied_mlp" else {}
        with step.extra_pass(), overridden_method(predictor.context_layer, "forward", context_forward), \
                capture(predictor, pair_tap) as found, \
                replace_outputs(predictor, self._head_replacements(predictor, union, found) if mirrored else {}):
            _, rel_dists, _ = predictor.host_forward(*step.host_args, roi, union, step.logger)
        return torch.cat(rel_dists, 0)

    def _context_forward(self, step, mirrored):
        """``context_layer.forward`` for one pass: the clean outputs, edge context recomputed."""
        mirror = self.context
        context = step.predictor.context_layer
        args, kwargs = step.clean["align_edge_call"]
        edge_input = args[mirror.masked_arg]
        if self.cfg.DETACH_INPUT:
            edge_input = edge_input.detach()
        if mirrored:
            edge_input = self._mask(edge_input)
        args = args[:mirror.masked_arg] + (edge_input,) + args[mirror.masked_arg + 1:]
        # Object logits and VCTree's binary scores are detached: nothing of the alignment loss may
        # reach the object context through them.
        clean = list(map_floating(torch.Tensor.detach, step.clean["align_context"]))
        num_objs = step.num_objs

        def forward(*_args, **_kwargs):
            out = list(clean)
            out[mirror.edge_index] = mirror.rerun(context, args, kwargs, num_objs)
            return tuple(out)

        return forward

    def _head_replacements(self, predictor, masked_union, found):
        """Output replacements of the head's layers for the mirrored pass (hooks.replace_outputs)."""
        cfg = self.cfg
        spec = predictor.spec

        def zero(x, out):
            return torch.zeros_like(out)

        fixed = {}
        if spec.freq_bias and has_path(predictor, spec.freq_bias):
            # Without the prior (§3.3), or with it as a fixed input: alignment never trains it.
            fixed[spec.freq_bias] = (lambda x, out: out.detach()) if cfg.USE_FREQ_BIAS else zero
        if cfg.HEAD == "tied":
            return fixed
        if cfg.HEAD == "untied_linear":
            for path in self.logit_layers:
                fixed[path] = lambda x, out, _layer=self.linear[path.replace(".", "_")]: _layer(x)
            return fixed
        # untied_mlp: the first logit layer's output becomes the MLP's, fed the pair feature
        # recorded in the same pass and the masked relation feature; the parallel logit layers of
        # the original head contribute nothing.
        union = _first_tensor(masked_union)

        def mlp_logits(x, out):
            inputs = [found["pair"]] + ([union] if self.reads_union else [])
            return self.mlp(torch.cat(inputs, -1))

        first, *others = self.logit_layers
        fixed[first] = mlp_logits
        for path in others:
            fixed[path] = zero
        return fixed
