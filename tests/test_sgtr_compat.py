"""SGTR's run-time layer without the host: the ``cvpods._C`` stand-in against torchvision, each
compatibility and data shim in isolation, and the launcher's argument and settings handling."""

import collections
import json
import os
import sys
import types

import h5py
import numpy as np
import pytest
import torch
import torchvision
from easydict import EasyDict

from sgg_plugins.hosts import common
from sgg_plugins.hosts.sgtr import HostNotFoundError, compat, data, launch, locate_host, ops


def _grad(fn, inputs, grad_output):
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    return torch.autograd.grad(fn(*leaves), leaves, grad_output)


# ----------------------------------------------------------------------------------------------
# cvpods._C stand-in


def test_ml_nms_is_per_label_nms_by_decreasing_score():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60.]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    labels = torch.tensor([1.0, 1.0, 2.0, 1.0])  # the host passes labels as floats
    keep = ops.ml_nms(boxes, scores, labels, 0.5)
    # box 1 overlaps box 0 (same label) and goes; box 2 overlaps box 0 but has another label and stays
    assert keep.tolist() == [3, 0, 2]
    assert torch.equal(keep, torchvision.ops.batched_nms(boxes, scores, labels.long(), 0.5))


@pytest.mark.parametrize("aligned", [True, False])
def test_roi_align_forward_and_backward_match_torchvision(aligned):
    torch.manual_seed(0)
    features = torch.randn(2, 3, 12, 10)
    rois = torch.tensor([[0, 1.0, 1.5, 7.0, 9.0], [1, 0.0, 0.0, 9.0, 11.0]])
    out = ops.roi_align_forward(features, rois, 0.5, 3, 4, 2, aligned)
    ref = torchvision.ops.roi_align(features, rois, (3, 4), 0.5, 2, aligned=aligned)
    assert torch.equal(out, ref)
    grad_out = torch.randn_like(ref)
    (ref_grad,) = _grad(lambda f: torchvision.ops.roi_align(f, rois, (3, 4), 0.5, 2, aligned=aligned), [features],
                        grad_out)
    with torch.no_grad():  # as inside the host's autograd Function.backward
        grad = ops.roi_align_backward(grad_out, rois, 0.5, 3, 4, 2, 3, 12, 10, 2, aligned)
    assert torch.allclose(grad, ref_grad, atol=1e-6)
    assert grad.abs().sum() > 0


def _deform_inputs(seed=0, groups=1):
    torch.manual_seed(seed)
    x = torch.randn(2, 4, 7, 6)
    weight = torch.randn(6, 4 // groups, 3, 3)
    offset = torch.randn(2, 2 * 9, 7, 6) * 0.5
    mask = torch.rand(2, 9, 7, 6)
    bias = torch.randn(6)
    return x, weight, offset, mask, bias


def test_deform_conv_forward_and_backward_match_torchvision():
    x, weight, offset, _, _ = _deform_inputs()
    conv_args = (3, 3, 1, 1, 1, 1, 1, 1, 1, 1)  # kW kH dW dH padW padH dilW dilH group deformable_group
    output = torch.empty(2, 6, 7, 6)
    ops.deform_conv_forward(x, weight, offset, output, None, None, *conv_args, 64)
    ref_fn = lambda x_, o_, w_: torchvision.ops.deform_conv2d(x_, o_, w_, padding=(1, 1))  # noqa: E731
    assert torch.allclose(output, ref_fn(x, offset, weight), atol=1e-5)

    grad_out = torch.randn_like(output)
    ref_x, ref_o, ref_w = _grad(ref_fn, [x, offset, weight], grad_out)
    grad_x, grad_o = torch.zeros_like(x), torch.zeros_like(offset)
    grad_w = torch.full_like(weight, 1.0)  # the kernel adds scale * gradient to what is there
    with torch.no_grad():
        ops.deform_conv_backward_input(x, offset, grad_out, grad_x, grad_o, weight, None, *conv_args, 64)
        ops.deform_conv_backward_filter(x, offset, grad_out, grad_w, None, None, *conv_args, 0.5, 64)
    assert torch.allclose(grad_x, ref_x, atol=1e-4) and torch.allclose(grad_o, ref_o, atol=1e-4)
    assert torch.allclose(grad_w, 1.0 + 0.5 * ref_w, atol=1e-4)


@pytest.mark.parametrize("with_bias", [True, False])
def test_modulated_deform_conv_matches_torchvision(with_bias):
    x, weight, offset, mask, bias = _deform_inputs(1)
    if not with_bias:
        bias = x.new_empty(1)  # the host's placeholder
    geometry = (3, 3, 1, 1, 1, 1, 1, 1, 1, 1)  # kernel h w, stride h w, pad h w, dilation h w, group, dg
    output = torch.empty(2, 6, 7, 6)
    ops.modulated_deform_conv_forward(x, weight, bias, None, offset, mask, output, None, *geometry, with_bias)

    def ref_fn(x_, w_, b_, o_, m_):
        return torchvision.ops.deform_conv2d(x_, o_, w_, b_ if with_bias else None, padding=(1, 1), mask=m_)

    assert torch.allclose(output, ref_fn(x, weight, bias, offset, mask), atol=1e-5)
    grad_out = torch.randn_like(output)
    inputs = [x, weight, bias, offset, mask]
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    refs = torch.autograd.grad(ref_fn(*leaves), leaves, grad_out, allow_unused=True)
    buffers = [torch.zeros_like(t) for t in inputs]
    g_x, g_w, g_b, g_o, g_m = buffers
    with torch.no_grad():
        ops.modulated_deform_conv_backward(x, weight, bias, None, offset, mask, None, g_x, g_w, g_b, g_o, g_m,
                                           grad_out, *geometry, with_bias)
    for buffer, ref in zip(buffers, refs):
        if ref is None:
            assert torch.count_nonzero(buffer) == 0  # the unused placeholder bias stays zero
        else:
            assert torch.allclose(buffer, ref, atol=1e-4)


def test_psroi_pooling_matches_torchvision_ps_roi_pool():
    torch.manual_seed(2)
    features = torch.randn(1, 3 * 2 * 2, 8, 8)
    rois = torch.tensor([[0, 0.0, 0.0, 6.0, 7.0], [0, 2.0, 1.0, 7.0, 5.0]])
    mapping = torch.zeros(2, 3, 2, 2, dtype=torch.int32)
    out = ops.psroi_pooling_forward_cuda(features, rois, mapping, 2, 2, 1.0, 2, 3)
    assert torch.equal(out, torchvision.ops.ps_roi_pool(features, rois, (2, 2), 1.0))
    assert mapping[1, 2, 1, 0].item() == (2 * 2 + 1) * 2 + 0  # the input channel of output bin (c=2, h=1, w=0)
    grad_out = torch.randn_like(out)
    (ref,) = _grad(lambda f: torchvision.ops.ps_roi_pool(f, rois, (2, 2), 1.0), [features], grad_out)
    grad = ops.psroi_pooling_backward_cuda(grad_out, rois, mapping, 1, 12, 8, 8, 1.0)
    assert torch.allclose(grad, ref, atol=1e-6)


def test_psroi_pooling_with_a_group_size_torchvision_lacks_names_the_op():
    with pytest.raises(ops.MissingCompiledOpError, match="psroi_pooling with group_size 3"):
        ops.psroi_pooling_forward_cuda(torch.zeros(1, 12, 4, 4), torch.zeros(1, 5), torch.zeros(1, 3, 2, 2), 2, 2,
                                       1.0, 3, 3)


def test_stand_in_names_an_op_it_lacks_and_answers_the_environment_log():
    module = ops.build_standin()
    with pytest.raises(ops.MissingCompiledOpError, match=r"cvpods\._C\.nms_rotated is a compiled cvpods op"):
        module.nms_rotated
    assert not hasattr(module, "box_iou_rotated")  # hasattr-style probes see an absent attribute
    with pytest.raises(AttributeError) as dunder:
        module.__path__
    assert not isinstance(dunder.value, ops.MissingCompiledOpError)
    assert "stand-in" in module.get_compiler_version() and module.__file__ == ops.__file__
    assert module.ml_nms is ops.ml_nms


def test_stand_in_prefers_the_compiled_ops_and_fills_in_the_rest():
    def compiled_nms(*args):
        return "compiled"

    module = ops.build_standin(types.SimpleNamespace(ml_nms=compiled_nms, nms_rotated=compiled_nms))
    assert module.ml_nms is compiled_nms and module.nms_rotated is compiled_nms
    assert module.roi_align_forward is ops.roi_align_forward


def test_stand_in_is_served_to_import(monkeypatch):
    module = ops.build_standin()
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    monkeypatch.delitem(sys.modules, "sgg_test_pkg_C", raising=False)
    common.serve_module("sgg_test_pkg_C", module)
    import sgg_test_pkg_C  # noqa: F401

    assert sys.modules["sgg_test_pkg_C"] is module
    assert common.serve_module("sgg_test_pkg_C", ops.build_standin()) is module  # once per name
    del sys.modules["sgg_test_pkg_C"]


# ----------------------------------------------------------------------------------------------
# compatibility shims, one by one


class HostStatistics:
    def __init__(self, count):
        self.count = count


def _run_as_host_code(root, source, **names):
    """Run ``source`` as if it were a host file under ``root`` (shims recognise host code by file)."""
    namespace = dict(names)
    exec(compile(source, os.path.join(str(root), "cvpods", "fake.py"), "exec"), namespace)
    return namespace


def test_host_code_is_recognised_by_its_file(tmp_path, monkeypatch):
    monkeypatch.setitem(compat._host, "root", str(tmp_path))

    def shim():
        return compat.called_from_host()

    assert _run_as_host_code(tmp_path, "result = shim()", shim=shim)["result"] is True
    assert shim() is False  # called from this test file


def test_torch_load_from_host_code_unpickles_host_files_others_keep_the_safe_default(tmp_path, monkeypatch):
    monkeypatch.setitem(compat._host, "root", str(tmp_path))
    path = tmp_path / "statistics.cache"
    torch.save({"statistics": HostStatistics(2)}, path)  # a class: not loadable with weights_only=True
    load = compat.host_torch_load(torch.load)
    loaded = _run_as_host_code(tmp_path, "result = load(path)", load=load, path=str(path))["result"]
    assert loaded["statistics"].count == 2
    with pytest.raises(Exception, match="[Ww]eights only load failed"):
        load(str(path))


def test_cuda_from_host_code_is_a_no_op_others_reach_torch(tmp_path, monkeypatch):
    monkeypatch.setitem(compat._host, "root", str(tmp_path))

    def refuse(self, *args, **kwargs):
        raise RuntimeError("the original .cuda()")

    cuda = compat.host_cuda_noop(refuse)
    tensor = torch.zeros(2)
    assert _run_as_host_code(tmp_path, "result = cuda(t)", cuda=cuda, t=tensor)["result"] is tensor
    with pytest.raises(RuntimeError, match="the original"):
        cuda(tensor)


def test_pil_linear_shim(monkeypatch):
    from PIL import Image

    if hasattr(Image, "LINEAR"):
        monkeypatch.delattr(Image, "LINEAR")
    assert compat._needs_pil_linear()
    compat._install_pil_linear()
    assert Image.LINEAR == Image.BILINEAR and not compat._needs_pil_linear()
    monkeypatch.delattr(Image, "LINEAR")


def test_collections_mapping_shim(monkeypatch):
    monkeypatch.delattr(collections, "Mapping", raising=False)
    compat._install_collections_mapping()
    assert collections.Mapping is collections.abc.Mapping
    monkeypatch.delattr(collections, "Mapping")


def test_imp_stand_in_finds_and_loads_a_config_module(tmp_path, monkeypatch):
    (tmp_path / "config.py").write_text("value = 41 + 1\n")
    monkeypatch.delitem(sys.modules, "config", raising=False)
    found = compat.find_module("config", [str(tmp_path)])
    module = compat.load_module("config", *found)
    assert module.value == 42 and sys.modules["config"] is module and found[0].closed
    with pytest.raises(ImportError, match="No module named 'absent'"):
        compat.find_module("absent", [str(tmp_path)])


def test_numpy_aliases_shim(monkeypatch):
    monkeypatch.delattr(np, "float", raising=False)
    assert "float" in common.missing_numpy_aliases()
    assert "np.float" in common.install_numpy_aliases()
    assert np.float is float
    monkeypatch.delattr(np, "float")


def test_shims_apply_once_and_only_where_needed(caplog):
    calls = []
    shims = (("needed", lambda: True, lambda: calls.append("needed") or "detail"),
             ("not needed", lambda: False, lambda: calls.append("not needed")))
    applied = []
    with caplog.at_level("DEBUG", logger="sgg_plugins"):
        assert common.apply_shims(shims, applied) == ["needed"]
        assert common.apply_shims(shims, applied) == ["needed"]
    assert calls == ["needed"]
    # At DEBUG: a shim keeps the host's behaviour, so a run's INFO log does not list it.
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [("DEBUG", "sgg-plugins compat: needed (detail)")]


# ----------------------------------------------------------------------------------------------
# data and evaluator shims, one by one


def _image_data(tmp_path, ids):
    path = tmp_path / "image_data.json"
    path.write_text(json.dumps([{"image_id": i, "width": 10, "height": 10} for i in ids]))
    return str(path)


def test_image_list_of_any_size_is_read_without_the_vg_count_assert(tmp_path):
    def host_loader(img_dir, image_file, check):
        raise AssertionError("108073")

    load = data.load_image_filenames_any_count(host_loader)
    fns, info = load("/images", _image_data(tmp_path, [7, 1592, 9]), False)  # 1592 is a corrupted VG image
    assert fns == ["/images/7.jpg", "/images/9.jpg"] and [i["image_id"] for i in info] == [7, 9]
    (tmp_path / "present").mkdir()
    (tmp_path / "present" / "9.jpg").write_bytes(b"")
    fns, _ = load(str(tmp_path / "present"), _image_data(tmp_path, [7, 9]), True)  # check_img_file: present only
    assert fns == [str(tmp_path / "present" / "9.jpg")]


def test_image_list_of_vg_size_goes_to_the_host(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "VG_IMAGE_COUNT", 2)
    load = data.load_image_filenames_any_count(lambda *args: "host")
    assert load("/images", _image_data(tmp_path, [7, 1722, 9]), False) == "host"


def _h5(tmp_path, train, test):
    path = tmp_path / "VG-SGG-with-attri.h5"
    n = train + test
    with h5py.File(path, "w") as h5:
        h5["split"] = np.array([0] * train + [2] * test)
        h5["img_to_first_box"] = np.zeros(n, dtype=np.int32)
        h5["img_to_first_rel"] = np.array([0] * (n - 1) + [-1], dtype=np.int32)
    return str(path)


@pytest.mark.parametrize("train, debug_during_load", [(30, True), (5002, False)])
def test_validation_split_uses_the_host_debug_size_only_for_small_datasets(tmp_path, train, debug_during_load):
    seen = []

    def host_load(self, anno_file):
        seen.append(self.cfg.DEBUG)
        return "loaded"

    dataset = types.SimpleNamespace(cfg=EasyDict(DEBUG=False))
    load = data.small_dataset_validation(host_load)
    assert load(dataset, _h5(tmp_path, train, 3)) == "loaded"
    assert seen == [debug_during_load] and dataset.cfg.DEBUG is False


def test_zero_shot_triplets_come_from_the_dataset_folder_or_are_empty(tmp_path):
    author_path = "/public/home/author/vg_motif_anno/zeroshot_triplet.pytorch"
    load = data.zero_shot_from_dataset(torch.load, lambda: str(tmp_path))
    empty = load(author_path, map_location="cpu")
    assert empty.shape == (0, 3) and empty.dtype == torch.long
    torch.save(torch.tensor([[1, 2, 3]]), tmp_path / data.ZERO_SHOT_FILE)
    assert load(author_path, map_location="cpu").tolist() == [[1, 2, 3]]
    other = tmp_path / "other.pt"
    torch.save(torch.ones(1), other)
    assert load(str(other)).tolist() == [1.0]


def test_stagewise_summary_leaves_out_pair_statistics_only_without_any(tmp_path):
    def host_summary(self, mode):
        if self.eval_rel_pair_prop:
            return int(np.mean(self.result_dict[f"{mode}_{self.type}_effective_union_pairs_range"]) + 1)
        return "without pair statistics"

    summary = data.without_empty_pair_statistics(host_summary)
    evaluator = types.SimpleNamespace(type="stagewise", eval_rel_pair_prop=400,
                                      result_dict={"sgdet_stagewise_effective_union_pairs_range": []})
    with pytest.raises(ValueError), np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        host_summary(evaluator, "sgdet")  # the host's crash: int(nan)
    assert summary(evaluator, "sgdet") == "without pair statistics" and evaluator.eval_rel_pair_prop == 400
    evaluator.result_dict["sgdet_stagewise_effective_union_pairs_range"] = [3.0, 5.0]
    assert summary(evaluator, "sgdet") == 5


def test_vg_folder_is_read_from_anywhere_with_a_clear_error(tmp_path):
    for name in ("VG-SGG-with-attri.h5", "VG-SGG-dicts-with-attri.json", "image_data.json"):
        (tmp_path / name).write_text("")
    (tmp_path / "VG_100K").mkdir()
    table = {"vgs": {"vgs_train": ("vg/VG_100k_images", "vg/vg_motif_anno"), "vgs_test": ("a", "b")}}
    data.point_splits_at(table, str(tmp_path))
    assert table["vgs"]["vgs_train"] == (str(tmp_path / "VG_100K"), str(tmp_path))
    os.remove(tmp_path / "image_data.json")
    with pytest.raises(FileNotFoundError, match="has no image_data.json"):
        data.vg_folders(str(tmp_path))


# ----------------------------------------------------------------------------------------------
# launcher


@pytest.fixture
def fake_sgtr(tmp_path):
    root = tmp_path / "SGTR"
    experiment = root / launch.DEFAULT_EXPERIMENT
    experiment.mkdir(parents=True)
    for path in ("cvpods/__init__.py", "tools/train_net.py", "tools/test_net.py"):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text("")
    (experiment / "net.py").write_text("")
    (experiment / "config_vg_sgtr.py").write_text("")
    run = tmp_path / "run"
    run.mkdir()
    return root, run


def test_host_arguments_take_out_launcher_options_and_force_the_safe_flags():
    values, host = launch.host_arguments(
        ["--host-root=/h", "--resume", "--experiment", "exp", "--num-gpus", "2", "--without-plugin",
         "SOLVER.IMS_PER_BATCH", "4", "--vg-dir", "/d"])
    assert values == {"--host-root": "/h", "--experiment": "exp", "--without-plugin": True, "--vg-dir": "/d"}
    assert host == ["--skip_git_commit", "--disable_gpu_check", "--resume", "--num-gpus", "2",
                    "SOLVER.IMS_PER_BATCH", "4"]
    _, host = launch.host_arguments(["--skip_git_commit", "A", "1"])
    assert host == ["--disable_gpu_check", "--skip_git_commit", "A", "1"]
    with pytest.raises(SystemExit, match="--experiment needs a value"):
        launch.host_arguments(["--experiment"])


def test_opts_are_read_after_the_host_options():
    opts = launch.opts_of(["--skip_git_commit", "--num-gpus", "2", "--dist-url=tcp://x", "--resume",
                           "MODEL.TEST_WEIGHTS", "/w.pth", "SOLVER.IMS_PER_BATCH", "4"])
    assert opts == {"MODEL.TEST_WEIGHTS": "/w.pth", "SOLVER.IMS_PER_BATCH": "4"}
    with pytest.raises(launch.LaunchError, match="odd number"):
        launch.opts_of(["A", "1", "B"])


def test_settings_default_to_the_vg_experiment_and_cwd_output(fake_sgtr):
    root, run = fake_sgtr
    settings = launch.resolve_settings("train_net", {"--host-root": str(root)}, cwd=run, environ={})
    assert settings["experiment"] == str(root / launch.DEFAULT_EXPERIMENT)
    assert settings["config"] == "config_vg_sgtr.py" and settings["plugin"] is True
    assert settings["cvpods_output"] == str(run.resolve() / "output")
    assert launch.resolve_settings("train_net", {"--host-root": str(root)}, cwd=run,
                                   environ={"CVPODS_OUTPUT": "/o"})["cvpods_output"] == "/o"


@pytest.mark.parametrize("values, message", [
    ({"--experiment": "playground/none"}, "has no net.py"),
    ({"--config": "config_oiv6.py"}, "--config config_oiv6.py: no such file"),
    ({"--vg-dir": "/nonexistent"}, "has no VG-SGG-with-attri.h5"),
])
def test_bad_settings_fail_with_one_line(fake_sgtr, values, message):
    root, run = fake_sgtr
    with pytest.raises(launch.LaunchError, match=message):
        launch.resolve_settings("train_net", {"--host-root": str(root), **values}, cwd=run, environ={})


def test_the_run_folder_may_not_be_inside_the_checkout(fake_sgtr):
    root, _ = fake_sgtr
    with pytest.raises(launch.LaunchError, match="inside the SGTR checkout"):
        launch.resolve_settings("train_net", {"--host-root": str(root)}, cwd=root / launch.DEFAULT_EXPERIMENT,
                                environ={})


def test_host_is_found_from_the_option_then_the_environment(fake_sgtr, monkeypatch):
    root, _ = fake_sgtr
    monkeypatch.delenv("SGTR_ROOT", raising=False)
    with pytest.raises(HostNotFoundError, match="SGTR_ROOT is unset"):
        locate_host()
    monkeypatch.setenv("SGTR_ROOT", str(root))
    assert locate_host() == root.resolve()
    with pytest.raises(HostNotFoundError, match="has no cvpods/__init__.py"):
        locate_host(str(root / "tools"))


def test_weights_that_are_not_there_fail_before_the_host_starts(tmp_path):
    config = EasyDict(MODEL=EasyDict(WEIGHTS="/storage/author/vg_detr.pth", TEST_WEIGHTS="/author/model.pth"))
    with pytest.raises(launch.LaunchError, match="MODEL.WEIGHTS /storage/author/vg_detr.pth does not exist"):
        launch.check_weights("train_net", config, {})
    launch.check_weights("train_net", config, {"MODEL.WEIGHTS": "''"})  # '' starts from scratch
    launch.check_weights("train_net", config, {"MODEL.WEIGHTS": ""})
    launch.check_weights("train_net", EasyDict(MODEL=EasyDict(WEIGHTS="detectron2://R-50.pkl")), {})
    with pytest.raises(launch.LaunchError, match="MODEL.TEST_WEIGHTS /author/model.pth does not exist"):
        launch.check_weights("test_net", config, {})


def test_launcher_without_a_host_prints_one_line(tmp_path):
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "SGTR_ROOT"}
    script = os.path.join(os.path.dirname(os.path.dirname(__file__)), "tools", "sgtr_train_net.py")
    result = subprocess.run([sys.executable, script, "SOLVER.IMS_PER_BATCH", "2"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "error: No SGTR host given: no --host-root and SGTR_ROOT is unset. " + __import__(
            "sgg_plugins.hosts.sgtr", fromlist=["HOW_TO_POINT"]).HOW_TO_POINT]


def test_class_counts_come_from_the_dataset_unless_the_opts_set_them(tmp_path):
    (tmp_path / "VG-SGG-dicts-with-attri.json").write_text(json.dumps(
        {"label_to_idx": {"man": 1, "cup": 2, "hat": 3}, "predicate_to_idx": {"on": 1, "has": 2}}))
    assert launch.with_class_counts(["--resume", "A", "1"], str(tmp_path)) == [
        "--resume", "A", "1", "MODEL.DETR.NUM_CLASSES", "3", "MODEL.ROI_RELATION_HEAD.NUM_CLASSES", "2"]
    assert launch.with_class_counts(["MODEL.DETR.NUM_CLASSES", "7"], str(tmp_path)) == [
        "MODEL.DETR.NUM_CLASSES", "7", "MODEL.ROI_RELATION_HEAD.NUM_CLASSES", "2"]


def test_chained_shims_still_see_the_host_behind_them(tmp_path, monkeypatch):
    # the zero-shot wrapper sits in front of the weights_only one: the host must still be recognised
    monkeypatch.setitem(compat._host, "root", str(tmp_path))
    path = tmp_path / "statistics.cache"
    torch.save({"statistics": HostStatistics(3)}, path)
    load = data.zero_shot_from_dataset(compat.host_torch_load(torch.load), lambda: str(tmp_path))
    loaded = _run_as_host_code(tmp_path, "result = load(path)", load=load, path=str(path))["result"]
    assert loaded["statistics"].count == 3


def test_host_script_runs_in_the_launchers_namespace_under_its_own_file_name(tmp_path):
    # The launcher keeps its __file__ (spawned workers re-run the launcher, which installs the shims);
    # the code keeps the host file's name (tracebacks, and the shims' host-code check).
    script = tmp_path / "train_net.py"
    script.write_text("def main():\n    return __name__\nWHERE = main.__code__.co_filename\n")
    namespace = {"__file__": "/repo/tools/sgtr_train_net.py"}
    launch.execute(str(script), namespace, "__mp_main__")
    assert namespace["main"]() == "__mp_main__" and namespace["WHERE"] == str(script)
    assert namespace["__file__"] == "/repo/tools/sgtr_train_net.py"


def _config_with_align():
    return EasyDict(MODEL=EasyDict(WEIGHTS="", ALIGN=EasyDict(ENABLED=False)), SOLVER=EasyDict(BASE_LR=0.1))


@pytest.mark.parametrize("key, plugin, expected", [
    ("MODEL.RCL.ENABLED", True, "MODEL.RCL.ENABLED: only MODEL.ALIGN of sgg-plugins exists on SGTR"),
    ("MODEL.PROBE.WEIGHT", True, "MODEL.PROBE.WEIGHT: only MODEL.ALIGN of sgg-plugins exists on SGTR"),
    ("MODEL.ALIGN.ENABLED", False, "MODEL.ALIGN.ENABLED: --without-plugin runs the vanilla host"),
    ("SOLVER.BASE_LRR", True, "SOLVER.BASE_LRR is not a key of this experiment's config"),
    ("SOLVER.BASE_LR.X", True, "SOLVER.BASE_LR.X is not a key of this experiment's config"),
])
def test_unknown_opt_keys_stop_in_one_line_before_the_host_merges(key, plugin, expected):
    config = _config_with_align()
    if not plugin:
        del config.MODEL["ALIGN"]
    with pytest.raises(launch.LaunchError, match="^" + expected.replace(".", r"\.")):
        launch.check_opt_keys(config, {"SOLVER.BASE_LR": "0.01", key: "True"}, plugin)


def test_known_opt_keys_pass():
    launch.check_opt_keys(_config_with_align(), {"SOLVER.BASE_LR": "0.01", "MODEL.ALIGN.ENABLED": "True"}, True)
