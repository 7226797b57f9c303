"""MODEL.PROBE on SGB predictors: the relationship probe of seed 000 on per-object context features.

The probe reads a per-object context feature of the clean pass (``specs.probe_features``) and,
for the contrastive term (Eq. 6), the same feature of a second view, the predictor's context rerun
(an extra pass: no dropout, frozen running statistics) on:

- ``VIEW augment`` (default): the paper's augmentations (§4.1, ``regularizers.probe.augment_rois``).
  SGB's predictor receives pooled feature *vectors* (fc7 of the relation head's box feature
  extractor), which cannot be flipped or rotated; what the predictor's context can see changed is
  (a) the RoI maps, when the adapter provides the relation head's pooled maps and box MLP
  (``step.shared["sgb_pooled_rois"]``, ``["sgb_box_head"]``): each map flipped or rotated, then run
  through that MLP again; (b) the boxes, from which the context computes its position embedding:
  image-level flip and per-RoI jitter (scale factors in [0.8, 1.2]). Without the pooled maps only
  (b) applies, and the log says so once.
- ``VIEW mask``: the context's floating inputs masked with MASK_PROB (the earlier, weaker view).

The supervising graph is the image's full annotated graph: SGB's ``relation`` field of the targets
when the adapter provides it (``step.shared["sgb_relation_maps"]``), else the foreground pairs the
relation sampler kept (at most BATCH_SIZE_PER_IMAGE × POSITIVE_FRACTION per image), said once.
"""

import logging

import torch

from ....regularizers.align import mask_elements
from ....regularizers.probe import RelationshipProbeLoss, augment_rois, graph_pairs_from_relation_maps
from ....regularizers.transfer import to_device
from ...hooks import Tap, capture, map_floating, resolve
from .base import SGBObjective, require

logger = logging.getLogger(__name__)


class ProbeObjective(SGBObjective):
    node = "PROBE"

    def __init__(self, predictor, config):
        super().__init__()

        self.cfg = cfg = config.MODEL.PROBE
        require(predictor, (predictor.spec.probe_features[cfg.FEATURE].path,
                            predictor.spec.object_dim.rpartition(".")[0]), self.node)
        path, _, attribute = predictor.spec.object_dim.rpartition(".")
        self.loss = RelationshipProbeLoss(dim=getattr(resolve(predictor, path), attribute), rank=cfg.RANK,
                                          max_distance=cfg.MAX_DISTANCE, temperature=cfg.TEMPERATURE,
                                          projection_dim=cfg.PROJECTION_DIM,
                                          gather_negatives=config.MODEL.SGG_PLUGINS.GATHER_NEGATIVES)
        self._said = set()

    def _once(self, key, message, *args):
        if key not in self._said:
            self._said.add(key)
            logger.info(message, *args)

    def taps(self, predictor):
        return {"probe": predictor.spec.probe_features[self.cfg.FEATURE],
                "probe_context_call": Tap("context_layer", "call")}

    def losses(self, step):
        cfg = self.cfg
        view = self._view(step) if cfg.CONTRAST_WEIGHT > 0 else None
        losses = self.loss(step.clean["probe"], step.num_objs, self._graph(step), view)
        out = {"loss_probe": cfg.WEIGHT * losses["loss_probe"]}
        if view is not None:
            out["loss_probe_contrast"] = cfg.CONTRAST_WEIGHT * losses["loss_probe_contrast"]
        return out

    def _graph(self, step):
        maps = step.shared.get("sgb_relation_maps")
        if maps is not None:
            return graph_pairs_from_relation_maps(maps)
        self._once("graph", "MODEL.PROBE: supervising graph = the foreground pairs the relation sampler kept (the "
                            "targets' full relation maps are not passed to the predictor)")
        return [pairs[labels > 0] for pairs, labels in zip(step.rel_pair_idxs, step.rel_labels)]

    def _view(self, step):
        """The second view's per-object context feature (module docstring)."""
        args, kwargs = step.clean["probe_context_call"]
        if self.cfg.VIEW == "mask":
            args = map_floating(lambda t: mask_elements(t.detach(), self.cfg.MASK_PROB), args)
        else:
            features, proposals = self._augmented_inputs(step)
            # The context's own call with its RoI features and proposals swapped for the view's:
            # every stock context takes them as its first two arguments, found here by identity.
            args = tuple(features if a is step.roi_features else proposals if a is step.proposals else a
                         for a in args)
        tap = {"probe": step.spec.probe_features[self.cfg.FEATURE]}
        with step.extra_pass(), capture(step.predictor, tap) as found:
            step.predictor.context_layer(*args, **kwargs)
        return found["probe"]

    def _augmented_inputs(self, step):
        proposals = step.proposals
        device = step.roi_features.device
        boxes = torch.cat([step.boxes_of(p) for p in proposals])
        # Python values copied without waiting for the device; sizes known here, not read back (transfer.py).
        sizes = to_device([step.size_of(p) for p in proposals], device, boxes.dtype)
        counts = to_device(step.num_objs, device, torch.long)
        image_of_roi = torch.repeat_interleave(torch.arange(len(proposals), device=device), counts,
                                               output_size=sum(step.num_objs))
        pooled, box_head = step.shared.get("sgb_pooled_rois"), step.shared.get("sgb_box_head")
        if pooled is None or box_head is None:
            self._once("pooled", "MODEL.PROBE VIEW augment: the relation head's pooled RoI maps are not available "
                                 "to the predictor; the view flips and jitters the boxes only (no RoI-map "
                                 "flips or rotations)")
            pooled = None
        view = augment_rois(None if pooled is None else pooled.detach(), boxes, sizes[image_of_roi], image_of_roi,
                            num_images=len(proposals))
        features = step.roi_features.detach() if pooled is None else box_head(view["pooled"])
        if features.shape != step.roi_features.shape:  # e.g. ATTRIBUTE_ON appends attribute features
            raise ValueError(f"MODEL.PROBE VIEW augment: the box head gives {tuple(features.shape)} features for "
                             f"the predictor's {tuple(step.roi_features.shape)}; use MODEL.PROBE.VIEW mask")
        moved = [step.with_boxes(p, b) for p, b in zip(proposals, view["boxes"].split(step.num_objs))]
        return features, moved
