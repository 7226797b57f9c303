"""MODEL.PROBE on SGB predictors: the relationship probe of seed 000 on per-object context features.

The probe reads a per-object context feature of the clean pass (``specs.probe_features``) and,
for the contrastive term, the same feature of a second view: the context rerun on masked inputs.
"""

from ....regularizers.align import mask_elements
from ....regularizers.probe import RelationshipProbeLoss
from ...hooks import Tap, capture, map_floating, resolve
from .base import SGBObjective, require


class ProbeObjective(SGBObjective):
    node = "PROBE"

    def __init__(self, predictor, config):
        super().__init__()

        self.cfg = cfg = config.MODEL.PROBE
        require(predictor, (predictor.spec.probe_features[cfg.FEATURE].path,
                            predictor.spec.object_dim.rpartition(".")[0]), self.node)
        path, _, attribute = predictor.spec.object_dim.rpartition(".")
        self.loss = RelationshipProbeLoss(dim=getattr(resolve(predictor, path), attribute), rank=cfg.RANK,
                                          max_distance=cfg.MAX_DISTANCE, temperature=cfg.TEMPERATURE)

    def taps(self, predictor):
        return {"probe": predictor.spec.probe_features[self.cfg.FEATURE],
                "probe_context_call": Tap("context_layer", "call")}

    def losses(self, step):
        cfg = self.cfg
        view = self._view(step) if cfg.CONTRAST_WEIGHT > 0 else None
        graph_pairs = [pairs[labels > 0] for pairs, labels in zip(step.rel_pair_idxs, step.rel_labels)]
        losses = self.loss(step.clean["probe"], step.num_objs, graph_pairs, view)
        out = {"loss_probe": cfg.WEIGHT * losses["loss_probe"]}
        if view is not None:
            out["loss_probe_contrast"] = cfg.CONTRAST_WEIGHT * losses["loss_probe_contrast"]
        return out

    def _view(self, step):
        """The second view: the context rerun on masked (detached) input features."""
        args, kwargs = step.clean["probe_context_call"]
        args = map_floating(lambda t: mask_elements(t.detach(), self.cfg.MASK_PROB), args)
        tap = {"probe": step.spec.probe_features[self.cfg.FEATURE]}
        with step.extra_pass(), capture(step.predictor, tap) as found:
            step.predictor.context_layer(*args, **kwargs)
        return found["probe"]
