"""Host-free tests of the SGB run-time shims and the torchvision stand-in for maskrcnn_benchmark._C."""

import logging
import math
import pickle
import sys
import types

import numpy as np
import pytest
import torch
import torchvision
from yacs.config import CfgNode

from sgg_plugins.hosts.common import PreparedModuleFinder
from sgg_plugins.hosts.sgb import compat, ops

# --------------------------------------------------------------------------------------------
# naive references, written from the legacy (maskrcnn-benchmark) definitions


def reference_nms(boxes, scores, threshold):
    """Greedy NMS, legacy +1 box size, suppress when IoU > threshold, kept indices by decreasing score."""
    order = np.argsort(-scores, kind="stable")
    kept = []
    for i in order:
        suppressed = False
        for j in kept:
            w = min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0]) + 1
            h = min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1]) + 1
            inter = max(w, 0) * max(h, 0)
            area_i = (boxes[i, 2] - boxes[i, 0] + 1) * (boxes[i, 3] - boxes[i, 1] + 1)
            area_j = (boxes[j, 2] - boxes[j, 0] + 1) * (boxes[j, 3] - boxes[j, 1] + 1)
            if inter / (area_i + area_j - inter) > threshold:
                suppressed = True
                break
        if not suppressed:
            kept.append(i)
    return np.array(kept)


def bilinear(plane, y, x):
    height, width = plane.shape
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return 0.0
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(y), int(x)
    if y0 >= height - 1:
        y0 = y1 = height - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= width - 1:
        x0 = x1 = width - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return (
        (1 - ly) * (1 - lx) * plane[y0, x0]
        + (1 - ly) * lx * plane[y0, x1]
        + ly * (1 - lx) * plane[y1, x0]
        + ly * lx * plane[y1, x1]
    )


def reference_roi_align(features, rois, scale, out_h, out_w, sampling_ratio):
    """Legacy ROIAlign: no half-pixel shift, roi size at least 1, sampling grid averaged per bin."""
    out = np.zeros((len(rois), features.shape[1], out_h, out_w))
    for k, (b, x1, y1, x2, y2) in enumerate(rois):
        x1, y1, x2, y2 = x1 * scale, y1 * scale, x2 * scale, y2 * scale
        roi_w, roi_h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
        bin_h, bin_w = roi_h / out_h, roi_w / out_w
        grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / out_h)
        grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / out_w)
        for c in range(features.shape[1]):
            plane = features[int(b), c]
            for ph in range(out_h):
                for pw in range(out_w):
                    total = 0.0
                    for iy in range(grid_h):
                        y = y1 + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                        for ix in range(grid_w):
                            x = x1 + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                            total += bilinear(plane, y, x)
                    out[k, c, ph, pw] = total / (grid_h * grid_w)
    return out


def reference_roi_pool(features, rois, scale, out_h, out_w):
    """Legacy ROIPool: corners rounded to the grid, +1 size, max per bin, argmax -1 for an empty bin."""
    height, width = features.shape[2:]
    out = np.zeros((len(rois), features.shape[1], out_h, out_w))
    argmax = np.full(out.shape, -1)
    for k, (b, x1, y1, x2, y2) in enumerate(rois):
        x1, y1, x2, y2 = (int(np.floor(v * scale + 0.5)) for v in (x1, y1, x2, y2))
        bin_h, bin_w = max(y2 - y1 + 1, 1) / out_h, max(x2 - x1 + 1, 1) / out_w
        for ph in range(out_h):
            for pw in range(out_w):
                h0 = min(max(int(np.floor(ph * bin_h)) + y1, 0), height)
                h1 = min(max(int(np.ceil((ph + 1) * bin_h)) + y1, 0), height)
                w0 = min(max(int(np.floor(pw * bin_w)) + x1, 0), width)
                w1 = min(max(int(np.ceil((pw + 1) * bin_w)) + x1, 0), width)
                if h1 <= h0 or w1 <= w0:
                    continue
                for c in range(features.shape[1]):
                    window = features[int(b), c, h0:h1, w0:w1]
                    r, s = np.unravel_index(np.argmax(window), window.shape)
                    out[k, c, ph, pw] = window[r, s]
                    argmax[k, c, ph, pw] = (h0 + r) * width + (w0 + s)
    return out, argmax


def random_rois(generator, num, batch, size, dtype=torch.float32):
    corners = torch.rand(num, 2, 2, generator=generator) * size
    x1y1, x2y2 = corners.min(1).values, corners.max(1).values
    batch_index = torch.randint(0, batch, (num, 1), generator=generator).float()
    return torch.cat([batch_index, x1y1, x2y2], 1).to(dtype)


# --------------------------------------------------------------------------------------------
# ops


def test_nms_matches_legacy_reference():
    generator = torch.Generator().manual_seed(0)
    xy = torch.rand(60, 2, generator=generator) * 40
    wh = torch.rand(60, 2, generator=generator) * 20
    boxes = torch.cat([xy, xy + wh], 1)
    scores = torch.rand(60, generator=generator)
    for threshold in (0.3, 0.5, 0.7):
        keep = ops.nms(boxes, scores, threshold)
        assert keep.dtype == torch.int64
        np.testing.assert_array_equal(keep.numpy(), reference_nms(boxes.numpy(), scores.numpy(), threshold))


def test_nms_uses_the_plus_one_box_size():
    # Pixel boxes [0,0,9,9] and [5,0,14,9]: legacy IoU = 50/150 = 0.333; without +1 it is 40/140 = 0.286.
    boxes = torch.tensor([[0.0, 0.0, 9.0, 9.0], [5.0, 0.0, 14.0, 9.0]])
    scores = torch.tensor([0.9, 0.8])
    assert ops.nms(boxes, scores, 0.3).tolist() == [0]
    assert ops.nms(boxes, scores, 0.34).tolist() == [0, 1]


@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_roi_align_forward_matches_legacy_reference(sampling_ratio):
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(2, 3, 9, 11, generator=generator, dtype=torch.float64)
    rois = random_rois(generator, 5, 2, 40, torch.float64)
    rois[0, 1:] = torch.tensor([4.0, 4.0, 4.5, 4.2], dtype=torch.float64)  # smaller than one cell
    pooled = ops.roi_align_forward(features, rois, 0.25, 3, 2, sampling_ratio)
    expected = reference_roi_align(features.numpy(), rois.numpy(), 0.25, 3, 2, sampling_ratio)
    np.testing.assert_allclose(pooled.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_roi_pool_forward_matches_legacy_reference():
    generator = torch.Generator().manual_seed(2)
    features = torch.randn(2, 3, 8, 10, generator=generator)
    rois = random_rois(generator, 6, 2, 36)
    pooled, argmax = ops.roi_pool_forward(features, rois, 0.25, 3, 3)
    expected, expected_argmax = reference_roi_pool(features.numpy(), rois.numpy(), 0.25, 3, 3)
    np.testing.assert_allclose(pooled.numpy(), expected, rtol=1e-6)
    assert argmax.dtype == torch.int32
    np.testing.assert_array_equal(argmax.numpy(), expected_argmax)


class HostStyleROIAlign(torch.autograd.Function):
    """How the host's layers/roi_align.py drives _C: our forward and backward, no autograd in between."""

    @staticmethod
    def forward(ctx, features, rois, output_size, scale, sampling_ratio):
        ctx.save_for_backward(rois)
        ctx.args = (output_size, scale, sampling_ratio, features.shape)
        return ops.roi_align_forward(features, rois, scale, output_size[0], output_size[1], sampling_ratio)

    @staticmethod
    def backward(ctx, grad_output):
        (rois,) = ctx.saved_tensors
        (out_h, out_w), scale, sampling_ratio, (b, c, h, w) = ctx.args
        grad = ops.roi_align_backward(grad_output, rois, scale, out_h, out_w, b, c, h, w, sampling_ratio)
        return grad, None, None, None, None


class HostStyleROIPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features, rois, output_size, scale):
        pooled, argmax = ops.roi_pool_forward(features, rois, scale, output_size[0], output_size[1])
        ctx.save_for_backward(features, rois, argmax)
        ctx.args = (output_size, scale)
        return pooled

    @staticmethod
    def backward(ctx, grad_output):
        features, rois, argmax = ctx.saved_tensors
        (out_h, out_w), scale = ctx.args
        b, c, h, w = features.shape
        grad = ops.roi_pool_backward(grad_output, features, rois, argmax, scale, out_h, out_w, b, c, h, w)
        return grad, None, None, None


def test_roi_align_backward_passes_gradcheck_and_equals_torchvision_autograd():
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(2, 2, 6, 7, generator=generator, dtype=torch.float64, requires_grad=True)
    rois = random_rois(generator, 4, 2, 24, torch.float64)
    assert torch.autograd.gradcheck(lambda f: HostStyleROIAlign.apply(f, rois, (2, 3), 0.25, 2), (features,))

    grad_output = torch.randn(4, 2, 2, 3, generator=generator, dtype=torch.float64)
    ours = ops.roi_align_backward(grad_output, rois, 0.25, 2, 3, 2, 2, 6, 7, 0)
    pooled = torchvision.ops.roi_align(features, rois, (2, 3), 0.25, 0, aligned=False)
    (theirs,) = torch.autograd.grad(pooled, features, grad_output)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_roi_pool_backward_passes_gradcheck_and_equals_torchvision_autograd():
    generator = torch.Generator().manual_seed(4)
    features = torch.randn(2, 2, 6, 7, generator=generator, dtype=torch.float64, requires_grad=True)
    rois = random_rois(generator, 4, 2, 24, torch.float64)
    assert torch.autograd.gradcheck(lambda f: HostStyleROIPool.apply(f, rois, (2, 2), 0.25), (features,))

    grad_output = torch.randn(4, 2, 2, 2, generator=generator, dtype=torch.float64)
    _, argmax = ops.roi_pool_forward(features.detach(), rois, 0.25, 2, 2)
    ours = ops.roi_pool_backward(grad_output, features.detach(), rois, argmax, 0.25, 2, 2, 2, 2, 6, 7)
    pooled = torchvision.ops.roi_pool(features, rois, (2, 2), 0.25)
    (theirs,) = torch.autograd.grad(pooled, features, grad_output)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    # The gradient lands exactly on the argmax cells, summed over rois and bins.
    expected = torch.zeros(2 * 2 * 6 * 7, dtype=torch.float64)
    plane_offsets = (rois[:, 0].long()[:, None] * 2 + torch.arange(2)[None]) * 42
    flat_index = (argmax.long() + plane_offsets[:, :, None, None]).flatten()
    expected.index_add_(0, flat_index, grad_output.flatten())
    torch.testing.assert_close(ours.flatten(), expected)


def test_unsupported_op_raises_naming_the_op():
    module, filled_in = ops.build_extension_module()
    assert set(filled_in) == set(ops.SUPPORTED_OPS) | set(ops.UNSUPPORTED_OPS)
    with pytest.raises(ops.UnsupportedOpError, match=r"maskrcnn_benchmark\._C\.sigmoid_focalloss_forward.*RETINANET_ON"):
        module.sigmoid_focalloss_forward(torch.zeros(2, 3), torch.zeros(2, dtype=torch.int), 3, 2.0, 0.25)
    with pytest.raises(NotImplementedError, match="deform_conv_forward"):
        module.deform_conv_forward()


def test_compiled_ops_are_kept_and_only_missing_ones_filled_in():
    compiled = types.SimpleNamespace(nms=lambda *a: "compiled nms")
    module, filled_in = ops.build_extension_module(compiled)
    assert module.nms is compiled.nms
    assert module.roi_align_forward is ops.roi_align_forward
    assert "nms" not in filled_in and "roi_align_forward" in filled_in


def test_install_ops_serves_the_import_and_reports(tmp_path, monkeypatch, caplog):
    if "maskrcnn_benchmark" in sys.modules:
        pytest.skip("a real maskrcnn_benchmark is already imported in this session")
    package = tmp_path / "maskrcnn_benchmark"
    package.mkdir()
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "meta_path", [f for f in sys.meta_path if not isinstance(f, PreparedModuleFinder)])
    try:
        with caplog.at_level(logging.INFO, logger="sgg_plugins"):
            installed = ops.install_ops(tmp_path)
        assert "is not built" in caplog.text
        from maskrcnn_benchmark import _C

        assert _C is installed and _C.nms is ops.nms
        assert ops.install_ops(tmp_path) is installed
    finally:
        sys.modules.pop("maskrcnn_benchmark._C", None)
        sys.modules.pop("maskrcnn_benchmark", None)


# --------------------------------------------------------------------------------------------
# compat shims


def test_install_compat_applies_what_is_missing_once(caplog):
    with caplog.at_level(logging.INFO, logger="sgg_plugins"):
        applied = compat.install_compat()
    import apex.amp
    from torch._six import PY3, string_classes

    assert PY3 and str in string_classes
    if "apex (stand-in on torch.amp)" in applied:
        assert apex.amp.scale_loss is compat.scale_loss and apex.amp.initialize is compat.initialize
    assert torch.hub._download_url_to_file is not None
    assert np.float is float and np.ones(2, dtype=np.bool).dtype == bool
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sgg_plugins"):
        assert compat.install_compat() == applied
    assert caplog.text == ""


def test_amp_stand_in_on_cpu_is_float32_and_leaves_gradients_alone():
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    forward = model.forward
    assert compat.initialize(model, optimizer, opt_level="O1") == (model, optimizer)
    assert model.forward == forward  # no autocast wrapper on a CPU model
    loss = model(torch.ones(1, 3)).sum()
    assert loss.dtype == torch.float32
    with compat.scale_loss(loss, optimizer) as scaled:
        assert scaled is loss
        scaled.backward()
    torch.testing.assert_close(model.bias.grad, torch.ones(2))
    with pytest.raises(ValueError, match="O0.*O1.*'O2'"):
        compat.initialize(model, optimizer, opt_level="O2")


def test_loss_scaler_unscales_and_drops_overflowing_steps():
    weight = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    optimizer = torch.optim.SGD([weight], lr=1.0)
    scaler = compat.DynamicLossScaler(init_scale=8.0, growth_interval=2)
    compat._loss_scalers[optimizer] = scaler
    with compat.scale_loss((weight * torch.tensor([3.0, 4.0])).sum(), optimizer) as scaled:
        assert scaled.item() == pytest.approx(8.0 * 11.0)
        scaled.backward()
    torch.testing.assert_close(weight.grad, torch.tensor([3.0, 4.0]))  # unscaled

    optimizer.zero_grad()
    with compat.scale_loss((weight * torch.tensor([math.inf, 1.0])).sum(), optimizer) as scaled:
        scaled.backward()
    assert weight.grad is None and scaler.scale == 4.0
    optimizer.step()  # a parameter without gradient is skipped
    torch.testing.assert_close(weight.detach(), torch.tensor([1.0, 2.0]))

    for _ in range(2):
        optimizer.zero_grad()
        with compat.scale_loss(weight.sum(), optimizer) as scaled:
            scaled.backward()
    assert scaler.scale == 8.0  # grown after growth_interval finite steps


def test_float_function_runs_in_float32_under_cuda_autocast(monkeypatch):
    received = []
    wrapped = compat.float_function(lambda boxes, scores, k=None: received.append((boxes.dtype, scores.dtype, k)))
    wrapped(torch.zeros(2, dtype=torch.float16), torch.zeros(2, dtype=torch.float16))
    assert received[-1] == (torch.float16, torch.float16, None)  # untouched outside autocast
    monkeypatch.setattr(torch, "is_autocast_enabled", lambda device_type=None: True)
    wrapped(torch.zeros(2, dtype=torch.float16), torch.zeros(2, dtype=torch.int64), k=torch.zeros(1, dtype=torch.float16))
    boxes_dtype, scores_dtype, k = received[-1]
    assert (boxes_dtype, scores_dtype, k.dtype) == (torch.float32, torch.int64, torch.float32)


class Unpicklable:
    """A class torch.load(weights_only=True) refuses."""

    def __init__(self, value):
        self.value = value


def _call_as_host(source, **names):
    """Run ``source`` as if written in a host module, so the host-scoped shims see a host caller."""
    namespace = {"__name__": "maskrcnn_benchmark.fake_module", **names}
    exec(source, namespace)
    return namespace["result"]


def test_host_torch_load_is_scoped_to_host_callers(tmp_path, monkeypatch):
    compat.install_compat()
    fake_host = tmp_path / "host"
    (fake_host / "maskrcnn_benchmark" / "data").mkdir(parents=True)
    torch.save({"cache": Unpicklable(7)}, fake_host / "maskrcnn_benchmark" / "data" / "cache.pytorch")
    fake_package = types.ModuleType("maskrcnn_benchmark")
    fake_package.__file__ = str(fake_host / "maskrcnn_benchmark" / "__init__.py")
    monkeypatch.setitem(sys.modules, "maskrcnn_benchmark", fake_package)
    monkeypatch.chdir(tmp_path)  # not the host root: the relative path only exists under the host

    loaded = _call_as_host("result = torch.load('maskrcnn_benchmark/data/cache.pytorch')", torch=torch)
    assert loaded["cache"].value == 7
    with pytest.raises(FileNotFoundError):
        torch.load("maskrcnn_benchmark/data/cache.pytorch")  # other callers: no host-relative lookup
    with pytest.raises(pickle.UnpicklingError):
        torch.load(fake_host / "maskrcnn_benchmark" / "data" / "cache.pytorch")  # and weights_only stays True
    with pytest.raises(pickle.UnpicklingError):  # an explicit choice by the host is respected
        _call_as_host("result = torch.load('maskrcnn_benchmark/data/cache.pytorch', weights_only=True)", torch=torch)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU behaviour")
def test_cuda_is_a_no_op_only_for_host_code_without_gpu():
    compat.install_compat()
    tensor, module = torch.ones(2), torch.nn.Linear(2, 2)
    assert _call_as_host("result = (t.cuda(), m.cuda())", t=tensor, m=module) == (tensor, module)
    with pytest.raises((RuntimeError, AssertionError)):
        tensor.cuda()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU behaviour")
def test_watched_config_falls_back_to_cpu_when_frozen(tmp_path, caplog):
    cfg = CfgNode({"MODEL": {"DEVICE": "cuda", "RPN": {"NMS_THRESH": 0.5}}, "OUTPUT_DIR": ""})
    compat.watch_device(cfg)
    (tmp_path / "config.yaml").write_text("MODEL:\n  DEVICE: cuda:1\n  RPN:\n    NMS_THRESH: 0.7\n")
    cfg.merge_from_file(str(tmp_path / "config.yaml"))  # nested nodes still merge
    cfg.merge_from_list(["MODEL.DEVICE", "cuda:0"])
    with caplog.at_level(logging.WARNING, logger="sgg_plugins"):
        cfg.freeze()
    assert cfg.MODEL.DEVICE == "cpu" and cfg.MODEL.RPN.NMS_THRESH == 0.7 and cfg.is_frozen()
    assert "MODEL.DEVICE is 'cuda:0' but no GPU is available" in caplog.text
    assert compat.WATCH_DEVICE_FLAG not in cfg and "sgg_plugins" not in cfg.dump()

    clone = cfg.clone()
    clone.defrost()
    clone.MODEL.DEVICE = "cuda"
    clone.freeze()
    assert clone.MODEL.DEVICE == "cpu"
    restored = pickle.loads(pickle.dumps(clone))
    restored.defrost()
    restored.MODEL.DEVICE = "cuda"
    restored.freeze()
    assert restored.MODEL.DEVICE == "cpu"

    unwatched = CfgNode({"MODEL": {"DEVICE": "cuda"}})
    unwatched.freeze()
    assert unwatched.MODEL.DEVICE == "cuda"  # only the host's config is touched
