"""The real SGB checkout, unmodified, running on this torch through install(): its own layer classes."""

import os
import sys
from pathlib import Path

import pytest
import torch
import torchvision

pytestmark = pytest.mark.skipif(not os.environ.get("SGB_ROOT"), reason="needs an SGB checkout: set SGB_ROOT")


@pytest.fixture(scope="module")
def host_root():
    from sgg_plugins.hosts.sgb import install

    return install()


def random_rois(generator, num, batch, size):
    corners = torch.rand(num, 2, 2, generator=generator) * size
    batch_index = torch.randint(0, batch, (num, 1), generator=generator).float()
    return torch.cat([batch_index, corners.min(1).values, corners.max(1).values], 1)


def test_host_imports_with_the_stand_in_extension(host_root):
    import maskrcnn_benchmark
    import maskrcnn_benchmark.modeling.detector  # noqa: F401  the whole model code imports

    from sgg_plugins.hosts.sgb import ops

    assert Path(maskrcnn_benchmark.__file__).resolve().parent.parent == host_root
    if not any((host_root / "maskrcnn_benchmark").glob("_C*.so")):
        assert maskrcnn_benchmark._C.roi_align_forward is ops.roi_align_forward


def test_host_nms_and_boxlist_nms(host_root):
    from maskrcnn_benchmark.layers import nms
    from maskrcnn_benchmark.structures.bounding_box import BoxList
    from maskrcnn_benchmark.structures.boxlist_ops import boxlist_nms

    boxes = torch.tensor([[0.0, 0.0, 9.0, 9.0], [5.0, 0.0, 14.0, 9.0], [30.0, 30.0, 40.0, 40.0]])
    scores = torch.tensor([0.8, 0.9, 0.1])
    # legacy IoU of the first two boxes is 1/3: suppressed at 0.3, kept at 0.34; by decreasing score
    assert nms(boxes, scores, 0.3).tolist() == [1, 2]
    assert nms(boxes, scores, 0.34).tolist() == [1, 0, 2]
    boxlist = BoxList(boxes, (50, 50), mode="xyxy")
    boxlist.add_field("scores", scores)
    kept, keep = boxlist_nms(boxlist, 0.3, max_proposals=1)
    assert keep.tolist() == [1] and torch.equal(kept.bbox, boxes[1:2])


def test_host_roi_align_and_roi_pool_match_torchvision_with_gradients(host_root):
    from maskrcnn_benchmark.layers import ROIAlign, ROIPool

    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 4, 12, 14, generator=generator, requires_grad=True)
    rois = random_rois(generator, 7, 2, 50)
    grad_output = torch.randn(7, 4, 3, 3, generator=generator)

    for host_layer, reference in (
        (ROIAlign((3, 3), 0.25, 2), lambda f: torchvision.ops.roi_align(f, rois, (3, 3), 0.25, 2, aligned=False)),
        (ROIPool((3, 3), 0.25), lambda f: torchvision.ops.roi_pool(f, rois, (3, 3), 0.25)),
    ):
        pooled = host_layer(features, rois)
        (grad,) = torch.autograd.grad(pooled, features, grad_output)
        expected = reference(features)
        (expected_grad,) = torch.autograd.grad(expected, features, grad_output)
        torch.testing.assert_close(pooled, expected, rtol=0, atol=0)
        torch.testing.assert_close(grad, expected_grad, rtol=0, atol=0)


def test_host_pooler_runs_multi_level(host_root):
    from maskrcnn_benchmark.modeling.poolers import Pooler
    from maskrcnn_benchmark.structures.bounding_box import BoxList

    pooler = Pooler(output_size=(4, 4), scales=(0.25, 0.125), sampling_ratio=2)
    features = [torch.randn(1, 3, 32, 32), torch.randn(1, 3, 16, 16)]
    proposals = [BoxList(torch.tensor([[0.0, 0.0, 20.0, 20.0], [10.0, 10.0, 120.0, 110.0]]), (128, 128))]
    assert pooler(features, proposals).shape == (2, 3, 4, 4)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU behaviour")
def test_host_loss_with_unconditional_cuda_call_builds_on_cpu(host_root):
    from maskrcnn_benchmark.modeling.roi_heads.relation_head.loss import RelationLossComputation

    loss = RelationLossComputation(False, 0, 0, False, 0, False, [0.25, 0.75])
    torch.testing.assert_close(loss.pred_weight, torch.tensor([2.0, 4.0, 4.0 / 3.0]))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU behaviour")
def test_host_config_falls_back_to_cpu(host_root):
    from maskrcnn_benchmark.config import cfg

    assert "ALIGN" in cfg.MODEL  # the plug-in's nodes are registered
    local = cfg.clone()
    local.merge_from_list(["MODEL.DEVICE", "cuda"])
    local.freeze()
    assert local.MODEL.DEVICE == "cpu"


def test_zeroshot_triplets_load_from_any_working_directory(host_root, tmp_path, monkeypatch):
    from maskrcnn_benchmark.data.datasets.evaluation.vg import vg_eval

    monkeypatch.chdir(tmp_path)
    # The statement vg_eval.py runs, evaluated in vg_eval's own namespace (so as host code).
    statement = 'torch.load("maskrcnn_benchmark/data/datasets/evaluation/vg/zeroshot_triplet.pytorch", map_location=torch.device("cpu"))'
    triplets = eval(statement, vars(vg_eval))
    assert triplets.ndim == 2 and triplets.shape[1] == 3 and len(triplets) > 0


def test_launcher_runs_the_host_script_with_its_own_arguments(host_root, tmp_path, monkeypatch, capsys):
    from sgg_plugins.hosts.sgb.launch import run_host_script

    monkeypatch.chdir(tmp_path)
    argv_before = list(sys.argv)
    with pytest.raises(SystemExit) as exit_info:
        run_host_script("relation_test_net", ["--host-root", str(host_root), "--local-rank=0", "--help"])
    assert exit_info.value.code == 0
    assert "--config-file FILE" in capsys.readouterr().out  # the host's own parser answered
    assert sys.argv == argv_before


def test_autoinstall_finds_the_host_of_the_importing_script(host_root, tmp_path):
    import sgg_plugins.hosts.sgb.autoinstall as autoinstall  # installs for SGB_ROOT: the test file is in no host

    other_host = tmp_path / "sgb"
    (other_host / "maskrcnn_benchmark").mkdir(parents=True)
    (other_host / "tools").mkdir()
    script = other_host / "tools" / "relation_train_net.py"
    script.write_text("")
    # What the patched line sees: a frame running <host>/tools/relation_train_net.py.
    as_host_script = compile("result = find()", str(script), "exec")
    namespace = {"find": autoinstall._importing_host_root}
    exec(as_host_script, namespace)
    assert namespace["result"] == other_host.resolve()
    not_a_host = compile("result = find()", str(tmp_path / "elsewhere.py"), "exec")
    exec(not_a_host, namespace)
    assert namespace["result"] is None
