"""Skip the frozen detector's work that relation training and testing on ground-truth boxes never read.

With ``MODEL.ROI_RELATION_HEAD.USE_GT_BOX True`` (PredCls, SGCls) the host still runs its RPN and,
in PredCls, its box head's feature extractor, and then throws both results away:

- ``RPNModule.forward``: the box head replaces the proposals with the targets' boxes, and
  ``GeneralizedRCNN`` drops the RPN's losses when ``MODEL.RELATION_ON``. The RPN head's convolutions
  on every FPN level, the proposal decoding and NMS, and the loss are about a tenth of a CPU
  training step (``benchmarks/cpu_step_profile.py``). One thing of the RPN's training pass does
  reach the rest of the run: its loss samples anchors with ``torch.randperm``, which advances
  torch's global generator that the relation head's dropout and sampling draw from afterwards. The
  shortcut therefore still matches the anchors to the targets and runs the host's own sampler on
  them (cheap: box overlaps, no convolution), so every later random draw, and so every loss, is
  bit-identical to the host's. In evaluation the RPN draws nothing and is skipped whole.
- ``ROIBoxHead.forward`` with ``USE_GT_OBJECT_LABEL True`` (PredCls): the host pools and runs
  fc6/fc7 on the ground-truth boxes, then ``CombinedROIHeads`` overwrites that output with the
  relation head's. The shortcut returns the host's proposals (the targets' boxes and fields) without it.

Both hand over to the host's forward whenever anything could read what is skipped: RPN-only and
RetinaNet models, mask or keypoint heads (they read the box head's features), SGDet (it uses the
proposals), SGCls for the box head (its predictor classifies the pooled features).
``install_unread_work_skips`` reports itself once, like the compatibility shims;
``uninstall_unread_work_skips`` restores the host's forwards (the profile's "before").
"""

import functools
import logging

from ..common import apply_shims

_applied = []


def _gt_boxes_without_other_heads(cfg):
    """Relation model on ground-truth boxes whose detector has no head that reads proposals or box features."""
    model = cfg.MODEL
    return (model.RELATION_ON and model.ROI_RELATION_HEAD.USE_GT_BOX and not model.RPN_ONLY
            and not model.RETINANET_ON and not model.MASK_ON and not model.KEYPOINT_ON)


def _rpn_forward_without_proposals(original):
    from maskrcnn_benchmark.structures.boxlist_ops import cat_boxlist

    @functools.wraps(original)
    def forward(self, images, features, targets=None):
        if not _gt_boxes_without_other_heads(self.cfg):
            return original(self, images, features, targets)
        if self.training:
            # The host's loss draws from torch's generator only here (rpn/loss.py): the same call on the same labels.
            anchors = self.anchor_generator(images, features)
            labels, _ = self.loss_evaluator.prepare_targets(
                [cat_boxlist(anchors_per_image) for anchors_per_image in anchors], targets)
            self.loss_evaluator.fg_bg_sampler(labels)
        return None, {}

    forward.sgg_plugins_original = original
    return forward


def _box_head_forward_without_features(original):
    @functools.wraps(original)
    def forward(self, features, proposals, targets=None):
        relation = self.cfg.MODEL.ROI_RELATION_HEAD
        if not (_gt_boxes_without_other_heads(self.cfg) and relation.USE_GT_OBJECT_LABEL):
            return original(self, features, proposals, targets)
        return None, [target.copy_with_fields(["labels", "attributes"]) for target in targets], {}

    forward.sgg_plugins_original = original
    return forward


def _install():
    from maskrcnn_benchmark.modeling.roi_heads.box_head.box_head import ROIBoxHead
    from maskrcnn_benchmark.modeling.rpn.rpn import RPNModule

    if not hasattr(RPNModule.forward, "sgg_plugins_original"):
        RPNModule.forward = _rpn_forward_without_proposals(RPNModule.forward)
    if not hasattr(ROIBoxHead.forward, "sgg_plugins_original"):
        ROIBoxHead.forward = _box_head_forward_without_features(ROIBoxHead.forward)
    return "PredCls/SGCls: no RPN proposals, RPN loss or PredCls box features; the RPN's random draws kept"


SHIMS = (("the frozen detector's unread work is skipped", lambda: True, _install),)


def install_unread_work_skips(logger=None):
    """Install the two shortcuts of the module docstring into the imported host. Idempotent."""
    return apply_shims(SHIMS, _applied, what="speed", logger=logger or logging.getLogger("sgg_plugins"))


def uninstall_unread_work_skips():
    """Give the host back its own RPN and box-head forwards."""
    from maskrcnn_benchmark.modeling.roi_heads.box_head.box_head import ROIBoxHead
    from maskrcnn_benchmark.modeling.rpn.rpn import RPNModule

    for owner in (RPNModule, ROIBoxHead):
        original = getattr(owner.forward, "sgg_plugins_original", None)
        if original is not None:
            owner.forward = original
    _applied.clear()
