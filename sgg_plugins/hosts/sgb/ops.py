"""A torchvision-backed stand-in for SGB's compiled extension ``maskrcnn_benchmark._C``.

The host's C++/CUDA extension does not build on torch >= 1.11 without source edits, and its CPU
build has no ROIAlign backward. Relation training and evaluation only need nms, ROIAlign and
ROIPool, which torchvision provides on CPU and GPU. The functions below take exactly the arguments
the host's ``maskrcnn_benchmark/layers/{nms,roi_align,roi_pool}.py`` pass to ``_C``.

Semantics follow the host's CUDA build, the one SGB results were produced with:
- nms uses the legacy "+1" box size (a box [0, 0, 9, 9] is 10 pixels wide), suppresses a box when
  its IoU with a kept box is strictly above the threshold, and returns the kept indices sorted by
  decreasing score (the host's CPU build returns the same boxes in index order);
- ROIAlign is the legacy, non-"aligned" variant (no half-pixel shift), sampling_ratio <= 0 adaptive;
- ROIPool rounds box corners to the feature grid and returns an int32 argmax with -1 for empty bins.

Ops with no torchvision counterpart (sigmoid focal loss, deformable conv/pooling) raise a clear
error when called, so configs that do not use them import and run unchanged.
"""

import logging
import sys
import types
from pathlib import Path

import torch
import torchvision

from .. import common

MODULE_NAME = "maskrcnn_benchmark._C"


def nms(boxes, scores, threshold):
    """Indices of the boxes kept by non-maximum suppression, by decreasing score.

    boxes (N, 4) xyxy in pixels, inclusive corners; the legacy +1 size convention is reproduced by
    moving the far corner one pixel out, which gives the same areas and intersections.
    """
    far_corner_shift = boxes.new_tensor([0.0, 0.0, 1.0, 1.0])
    return torchvision.ops.nms(boxes + far_corner_shift, scores, float(threshold))


def roi_align_forward(features, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio):
    """(K, C, pooled_height, pooled_width) bilinear pooling of ``features`` over rois (K, 5) [batch, x1, y1, x2, y2]."""
    return torchvision.ops.roi_align(
        features, rois, (pooled_height, pooled_width), spatial_scale, sampling_ratio, aligned=False
    )


def roi_align_backward(
    grad_output, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels, height, width, sampling_ratio
):
    """Gradient w.r.t. the (batch_size, channels, height, width) features: torchvision's own backward
    kernel, the one its ``roi_align`` autograd calls (CPU and CUDA), so the gradient is exactly
    torchvision's without running a forward pass to get it."""
    return torch.ops.torchvision._roi_align_backward(
        grad_output, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels, height, width,
        sampling_ratio, False,
    )


def roi_pool_forward(features, rois, spatial_scale, pooled_height, pooled_width):
    """(output, argmax): max pooling over rois (K, 5); argmax indexes the height*width plane, -1 where a bin is empty."""
    return torch.ops.torchvision.roi_pool(features, rois, spatial_scale, pooled_height, pooled_width)


def roi_pool_backward(
    grad_output, features, rois, argmax, spatial_scale, pooled_height, pooled_width, batch_size, channels, height, width
):
    """Gradient w.r.t. ``features``: torchvision's own backward kernel, which routes each bin's
    gradient to the position ``argmax`` (from :func:`roi_pool_forward`) recorded. ``features`` is in
    the host's signature only; the kernel needs its shape, which the host passes too."""
    return torch.ops.torchvision._roi_pool_backward(
        grad_output, rois, argmax, spatial_scale, pooled_height, pooled_width, batch_size, channels, height, width,
    )


SUPPORTED_OPS = {
    "nms": nms,
    "roi_align_forward": roi_align_forward,
    "roi_align_backward": roi_align_backward,
    "roi_pool_forward": roi_pool_forward,
    "roi_pool_backward": roi_pool_backward,
}

# op name -> (what it is, which host option uses it)
UNSUPPORTED_OPS = {
    "sigmoid_focalloss_forward": ("sigmoid focal loss", "MODEL.RETINANET_ON"),
    "sigmoid_focalloss_backward": ("sigmoid focal loss", "MODEL.RETINANET_ON"),
    "deform_conv_forward": ("deformable convolution", "MODEL.RESNETS.STAGE_WITH_DCN"),
    "deform_conv_backward_input": ("deformable convolution", "MODEL.RESNETS.STAGE_WITH_DCN"),
    "deform_conv_backward_parameters": ("deformable convolution", "MODEL.RESNETS.STAGE_WITH_DCN"),
    "modulated_deform_conv_forward": ("modulated deformable convolution", "MODEL.RESNETS.STAGE_WITH_DCN"),
    "modulated_deform_conv_backward": ("modulated deformable convolution", "MODEL.RESNETS.STAGE_WITH_DCN"),
    "deform_psroi_pooling_forward": ("deformable PS-ROI pooling", "a deformable pooler"),
    "deform_psroi_pooling_backward": ("deformable PS-ROI pooling", "a deformable pooler"),
}


class UnsupportedOpError(NotImplementedError):
    """A host op that the torchvision stand-in cannot provide was called."""


def _unsupported(name, what, option):
    def refuse(*args, **kwargs):
        raise UnsupportedOpError(
            f"{MODULE_NAME}.{name} ({what}) has no torchvision counterpart in the sgg-plugins stand-in. "
            f"Turn off {option} in the config, or build the host's own extension "
            "(`python setup.py build develop` in the SGB checkout, which needs a torch it compiles with)."
        )

    refuse.__name__ = name
    return refuse


def build_extension_module(compiled=None):
    """A module named ``maskrcnn_benchmark._C``: the compiled ops where ``compiled`` has them, ours elsewhere.

    Returns (module, names of the ops taken from the stand-in).
    """
    module = types.ModuleType(MODULE_NAME, "torchvision-backed stand-in for SGB's compiled ops (sgg-plugins)")
    standin_ops = dict(SUPPORTED_OPS)
    standin_ops.update({name: _unsupported(name, *use) for name, use in UNSUPPORTED_OPS.items()})
    filled_in = []
    for name, op in standin_ops.items():
        if compiled is not None and hasattr(compiled, name):
            setattr(module, name, getattr(compiled, name))
        else:
            setattr(module, name, op)
            filled_in.append(name)
    return module, filled_in


def load_compiled_extension(host_root, logger):
    """The host's own built ``_C`` extension if there is one and it loads with this torch, else None."""
    return common.load_compiled_extension(Path(host_root) / "maskrcnn_benchmark", MODULE_NAME, logger)


def install_ops(host_root, logger=None):
    """Make ``maskrcnn_benchmark._C`` importable before the host imports it. Idempotent.

    Uses the host's compiled extension when it is built and loads, filling in only the ops it
    lacks; otherwise the torchvision stand-in. Returns the module that ``import`` will give.
    """
    logger = logger or logging.getLogger("sgg_plugins")
    if MODULE_NAME in sys.modules:
        return sys.modules[MODULE_NAME]
    served = common.served_module(MODULE_NAME)
    if served is not None:
        return served
    compiled = load_compiled_extension(host_root, logger)
    module, filled_in = build_extension_module(compiled)
    if compiled is None:
        logger.info("sgg-plugins: %s is not built; using torchvision for nms, ROIAlign and ROIPool", MODULE_NAME)
    elif filled_in:
        logger.info("sgg-plugins: the host's built %s lacks %s; using the stand-in for those", MODULE_NAME, filled_in)
    return common.serve_module(MODULE_NAME, module)
