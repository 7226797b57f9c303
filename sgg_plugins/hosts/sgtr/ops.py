"""A torchvision-backed stand-in for SGTR's compiled extension ``cvpods._C``.

Nine cvpods modules import ``_C`` at import time, but on SGTR's VG train and eval path no compiled
op is called: ``ml_nms`` is only read as an attribute when ``cvpods.layers.nms`` is imported, and
the environment log asks ``get_compiler_version`` / ``get_cuda_version``. The module below answers
those and maps every op that has a torchvision counterpart, with the exact arguments cvpods'
``layers/*.py`` pass to ``_C`` (outputs and gradients written into the tensors the host
preallocated, where its C++ signature does so):

- ``ml_nms`` -> ``torchvision.ops.batched_nms`` (per-label NMS, kept indices by decreasing score);
- ``roi_align_forward`` / ``_backward`` -> ``roi_align(aligned=...)`` and its autograd;
- ``deform_conv_*`` and ``modulated_deform_conv_*`` -> ``deform_conv2d`` (with ``mask`` for the
  modulated form) and its autograd;
- ``psroi_pooling_forward_cuda`` / ``_backward_cuda`` -> ``ps_roi_pool`` (torchvision's box
  rounding) and its autograd.

Every other op (rotated boxes and NMS, ``swap_align2nat``, ``border_align``, the C++ COCOeval,
cvpods' own sigmoid focal loss kernel) raises :class:`MissingCompiledOpError` naming the op when
the host reads it, which is when it is about to call it.
"""

import logging
import sys
import types
from pathlib import Path

import torch
import torchvision

from ..common import load_compiled_extension, serve_module

MODULE_NAME = "cvpods._C"


def get_compiler_version():
    return f"none: sgg-plugins stand-in for {MODULE_NAME} (torchvision {torchvision.__version__})"


def get_cuda_version():
    return torch.version.cuda or "none"


def ml_nms(boxes, scores, labels, iou_threshold):
    """Indices kept by NMS run separately per label, by decreasing score (FCOS' multi-label NMS)."""
    return torchvision.ops.batched_nms(boxes, scores, labels.long(), float(iou_threshold))


def roi_align_forward(features, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    """(K, C, pooled_height, pooled_width) bilinear pooling over rois (K, 5) [batch, x1, y1, x2, y2]."""
    return torchvision.ops.roi_align(
        features, rois, (pooled_height, pooled_width), spatial_scale, sampling_ratio, aligned=bool(aligned)
    )


def _vjp(function, inputs, grad_output):
    """Gradients of ``function(*inputs)`` w.r.t. each of ``inputs`` for ``grad_output``.

    The host calls the backward ops inside its own autograd ``backward`` (grad mode off), hence the
    explicit enable_grad; leaves are detached copies so the host's tensors are not touched.
    """
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_() for t in inputs]
        output = function(*leaves)
        return torch.autograd.grad(output, leaves, grad_output, allow_unused=True)


def roi_align_backward(
    grad_output, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels, height, width,
    sampling_ratio, aligned,
):
    """Gradient w.r.t. the (batch_size, channels, height, width) features.

    ROIAlign is linear in the features, so its gradient does not depend on their values: the
    forward on zeros, back-propagated, gives exactly torchvision's gradient.
    """
    features = grad_output.new_zeros((batch_size, channels, height, width))
    (grad,) = _vjp(
        lambda f: roi_align_forward(f, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned),
        [features], grad_output,
    )
    return grad


def _deform(input, offset, weight, bias, mask, stride, padding, dilation):
    return torchvision.ops.deform_conv2d(
        input, offset, weight, bias, stride=stride, padding=padding, dilation=dilation, mask=mask
    )


def deform_conv_forward(
    input, weight, offset, output, columns, ones, kW, kH, dW, dH, padW, padH, dilW, dilH, group,
    deformable_group, im2col_step,
):
    """Writes the deformable convolution of ``input`` into ``output`` (groups come from the shapes)."""
    output.copy_(_deform(input, offset, weight, None, None, (dH, dW), (padH, padW), (dilH, dilW)))


def deform_conv_backward_input(
    input, offset, grad_output, grad_input, grad_offset, weight, columns, kW, kH, dW, dH, padW, padH, dilW,
    dilH, group, deformable_group, im2col_step,
):
    """Writes the gradients w.r.t. ``input`` and ``offset`` into ``grad_input`` / ``grad_offset``."""
    grads = _vjp(
        lambda x, o: _deform(x, o, weight, None, None, (dH, dW), (padH, padW), (dilH, dilW)),
        [input, offset], grad_output,
    )
    grad_input.copy_(grads[0])
    grad_offset.copy_(grads[1])


def deform_conv_backward_filter(
    input, offset, grad_output, grad_weight, columns, ones, kW, kH, dW, dH, padW, padH, dilW, dilH, group,
    deformable_group, scale, im2col_step,
):
    """Adds ``scale`` times the gradient w.r.t. the weight to ``grad_weight`` (as the kernel does).

    The convolution is linear in its weight, so the gradient does not depend on the weight's values
    (which the host does not pass): zeros of its shape stand for it.
    """
    (grad,) = _vjp(
        lambda w: _deform(input, offset, w, None, None, (dH, dW), (padH, padW), (dilH, dilW)),
        [torch.zeros_like(grad_weight)], grad_output,
    )
    grad_weight.add_(grad, alpha=scale)


def modulated_deform_conv_forward(
    input, weight, bias, ones, offset, mask, output, columns, kernel_h, kernel_w, stride_h, stride_w, pad_h,
    pad_w, dilation_h, dilation_w, group, deformable_group, with_bias,
):
    """Writes the modulated (DCNv2) deformable convolution into ``output``."""
    output.copy_(_deform(
        input, offset, weight, bias if with_bias else None, mask,
        (stride_h, stride_w), (pad_h, pad_w), (dilation_h, dilation_w),
    ))


def modulated_deform_conv_backward(
    input, weight, bias, ones, offset, mask, columns, grad_input, grad_weight, grad_bias, grad_offset, grad_mask,
    grad_output, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, group,
    deformable_group, with_bias,
):
    """Writes the gradients w.r.t. input, weight, bias (when used), offset and mask into the host's buffers."""
    def conv(x, w, b, o, m):
        return _deform(x, o, w, b if with_bias else None, m, (stride_h, stride_w), (pad_h, pad_w),
                       (dilation_h, dilation_w))

    grads = _vjp(conv, [input, weight, bias, offset, mask], grad_output)
    for target, grad in zip((grad_input, grad_weight, grad_bias, grad_offset, grad_mask), grads):
        if grad is not None:
            target.copy_(grad)


def _check_ps_layout(features, pooled_height, pooled_width, group_size, output_dim):
    if group_size != pooled_height or group_size != pooled_width:
        raise MissingCompiledOpError(
            f"{MODULE_NAME}.psroi_pooling with group_size {group_size} != output size "
            f"({pooled_height}, {pooled_width}) has no torchvision counterpart (ps_roi_pool uses one position-sensitive "
            "group per output bin); build cvpods' extension to use it"
        )
    if features.shape[1] != output_dim * pooled_height * pooled_width:
        raise ValueError(
            f"psroi_pooling: the features have {features.shape[1]} channels, expected output_dim x "
            f"{pooled_height} x {pooled_width} = {output_dim * pooled_height * pooled_width}"
        )


def psroi_pooling_forward_cuda(
    features, rois, mapping_channel, pooled_height, pooled_width, spatial_scale, group_size, output_dim
):
    """Position-sensitive average pooling; ``mapping_channel`` gets the input channel of each output bin."""
    _check_ps_layout(features, pooled_height, pooled_width, group_size, output_dim)
    bins = torch.arange(output_dim * pooled_height * pooled_width, device=mapping_channel.device)
    mapping_channel.copy_(bins.view(1, output_dim, pooled_height, pooled_width).expand_as(mapping_channel))
    return torchvision.ops.ps_roi_pool(features, rois, (pooled_height, pooled_width), spatial_scale)


def psroi_pooling_backward_cuda(
    grad_output, rois, mapping_channel, batch_size, channels, height, width, spatial_scale
):
    """Gradient w.r.t. the (batch_size, channels, height, width) features (average pooling is linear)."""
    _, _, pooled_height, pooled_width = grad_output.shape
    features = grad_output.new_zeros((batch_size, channels, height, width))
    (grad,) = _vjp(
        lambda f: torchvision.ops.ps_roi_pool(f, rois, (pooled_height, pooled_width), spatial_scale),
        [features], grad_output,
    )
    return grad


PROVIDED = {fn.__name__: fn for fn in (
    get_compiler_version, get_cuda_version, ml_nms, roi_align_forward, roi_align_backward,
    deform_conv_forward, deform_conv_backward_input, deform_conv_backward_filter,
    modulated_deform_conv_forward, modulated_deform_conv_backward,
    psroi_pooling_forward_cuda, psroi_pooling_backward_cuda,
)}


class MissingCompiledOpError(AttributeError):
    """A ``cvpods._C`` op with no torchvision counterpart was asked for."""


class _StandInModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise MissingCompiledOpError(
            f"{MODULE_NAME}.{name} is a compiled cvpods op with no torchvision counterpart, and cvpods' C++ "
            "extension is not built; sgg-plugins' stand-in covers SGTR's VG path only. Build cvpods' extension "
            "in the SGTR checkout (python setup.py build develop) to use the configuration that needs it."
        )


def build_standin(compiled=None):
    """A module named ``cvpods._C``: the compiled ops where ``compiled`` has them, ours elsewhere."""
    module = _StandInModule(MODULE_NAME, "torchvision-backed stand-in for cvpods' compiled ops (sgg-plugins)")
    module.__file__ = __file__
    if compiled is not None:
        module.__dict__.update({k: v for k, v in vars(compiled).items() if not k.startswith("__")})
    for name, fn in PROVIDED.items():
        module.__dict__.setdefault(name, fn)
    return module


def install_ops(host_root, logger=None):
    """Make ``cvpods._C`` importable before the host imports it. Idempotent. Returns the module."""
    logger = logger or logging.getLogger("sgg_plugins")
    if MODULE_NAME in sys.modules:
        return sys.modules[MODULE_NAME]
    compiled = load_compiled_extension(Path(host_root) / "cvpods", MODULE_NAME, logger)
    module = build_standin(compiled)
    if compiled is None:
        logger.info(
            "sgg-plugins compat: %s is not built; stand-in with torchvision's batched_nms, roi_align, deform_conv2d "
            "and ps_roi_pool", MODULE_NAME,
        )
    return serve_module(MODULE_NAME, module)
