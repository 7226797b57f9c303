import os
import sys

# The fixtures (fake_sgb) live beside the tests.
sys.path.insert(0, os.path.dirname(__file__))

import json  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SGB_ROOT = os.environ.get("SGB_ROOT")
needs_sgb = pytest.mark.skipif(not SGB_ROOT, reason="needs an SGB checkout: set SGB_ROOT")

MODES = {
    "predcls": ["MODEL.ROI_RELATION_HEAD.USE_GT_BOX", "True", "MODEL.ROI_RELATION_HEAD.USE_GT_OBJECT_LABEL", "True"],
    "sgcls": ["MODEL.ROI_RELATION_HEAD.USE_GT_BOX", "True", "MODEL.ROI_RELATION_HEAD.USE_GT_OBJECT_LABEL", "False"],
    "sgdet": ["MODEL.ROI_RELATION_HEAD.USE_GT_BOX", "False", "MODEL.ROI_RELATION_HEAD.USE_GT_OBJECT_LABEL", "False"],
}


@pytest.fixture(scope="session")
def synthetic_vg(tmp_path_factory):
    """A small synthetic VG-format dataset for host runs, written once per test session."""
    from sgg_plugins.data.synthetic_vg import write_synthetic_vg

    out = tmp_path_factory.mktemp("synthetic_vg") / "data"
    write_synthetic_vg(str(out), num_images=40, seed=0)
    return out


def host_command(synthetic_vg, script, predictor, mode="predcls", opts=(), out_dir=None, launcher_args=()):
    """The launcher command line a user would type, with the small CPU overlay and the dataset's opts."""
    from sgg_plugins.hosts.sgb.overlay import overlay_opts

    cmd = [sys.executable, os.path.join(REPO, "tools", f"{script}.py"), *launcher_args,
           "--config-file", os.path.join(SGB_ROOT, "configs", "e2e_relation_X_101_32_8_FPN_1x.yaml"),
           *overlay_opts(os.path.join(REPO, "configs", "sgb", "synthetic_cpu.opts")),
           *overlay_opts(str(synthetic_vg / "dataset.opts")),
           *MODES[mode], "MODEL.ROI_RELATION_HEAD.PREDICTOR", predictor,
           "GLOVE_DIR", str(synthetic_vg.parent / "glove"), *opts]
    if out_dir is not None:
        cmd += ["OUTPUT_DIR", str(out_dir)]
    return cmd


def run_host(cmd, cwd, timeout=900):
    """Run a launcher command; fail the test with the log tail if it fails."""
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    log = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(cmd)}\nfailed ({result.returncode}):\n{log[-4000:]}"
    return log


FAST_TRAIN = ["SOLVER.MAX_ITER", "2", "SOLVER.CHECKPOINT_PERIOD", "2", "SOLVER.VAL_PERIOD", "1000"]
NO_CACHE = ["TEST.ALLOW_LOAD_FROM_CACHE", "False"]


def logged_losses(log, name):
    """Every value the host's MetricLogger printed for ``name``."""
    return [float(v) for v in re.findall(rf"{name}: ([-\d.naninf]+) \(", log)]


def train_briefly(synthetic_vg, tmp_path, predictor, mode="predcls", opts=()):
    """Two iterations and a checkpoint through our launcher; returns OUTPUT_DIR and the log."""
    out = tmp_path / f"{predictor}_{mode}"
    cmd = host_command(synthetic_vg, "relation_train_net", predictor, mode, [*FAST_TRAIN, *opts], out,
                       ["--skip-test"])
    log = run_host(cmd, cwd=tmp_path)
    return out, log


def host_predictions(synthetic_vg, tmp_path, predictor, weight, name, opts=(), launcher_args=()):
    out = tmp_path / name
    out.mkdir()  # the host's test script writes into OUTPUT_DIR without creating it
    cmd = host_command(synthetic_vg, "relation_test_net", predictor, "predcls",
                       ["MODEL.WEIGHT", str(weight), *NO_CACHE, *opts], out, launcher_args)
    log = run_host(cmd, cwd=tmp_path)
    (results,) = out.glob("inference/*/eval_results.pytorch")
    from sgg_plugins.hosts.sgb import install

    install()  # the predictions are the host's BoxLists: unpickling imports the host
    return torch.load(results, weights_only=False)["predictions"], log


def assert_identical_predictions(preds_a, preds_b):
    assert len(preds_a) == len(preds_b) > 0
    for a, b in zip(preds_a, preds_b):
        assert torch.equal(a.bbox, b.bbox)
        assert a.fields() == b.fields()
        for field in a.fields():
            assert torch.equal(a.get_field(field), b.get_field(field)), field


# ---------------------------------------------------------------------------------------------
# The host's real predictors built in this process (the small CPU overlay, a small dataset's
# statistics) and a made-up training batch, for exact gradient and isolation checks.

STOCK_CONFIG = "configs/e2e_relation_X_101_32_8_FPN_1x.yaml"
GT_MODES = {"predcls": (True, True), "sgcls": (True, False)}


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    from sgg_plugins.data.synthetic_vg import write_synthetic_vg
    from sgg_plugins.hosts.sgb import install

    root = install(SGB_ROOT)
    data = str(tmp_path_factory.mktemp("in_process_data"))
    write_synthetic_vg(data, num_images=24, image_size=128, seed=3, overwrite=True)
    return root, data, tmp_path_factory.mktemp("in_process_out")


def in_process_cfg(host, predictor, mode, *opts):
    """The host's config as its tools build it: stock YAML, the overlay, the dataset's opts."""
    from maskrcnn_benchmark.config import cfg

    from sgg_plugins.hosts.sgb.overlay import overlay_opts

    root, data, out = host
    with open(os.path.join(data, "dataset.opts")) as f:
        dataset_opts = f.read().split()
    gt_box, gt_label = GT_MODES[mode]
    cfg = cfg.clone()
    cfg.merge_from_file(os.path.join(root, STOCK_CONFIG))
    cfg.merge_from_list(overlay_opts(os.path.join(REPO, "configs", "sgb", "synthetic_cpu.opts")) + dataset_opts + [
        "OUTPUT_DIR", str(out), "GLOVE_DIR", str(out / "glove"),
        "MODEL.ROI_RELATION_HEAD.PREDICTOR", predictor,
        "MODEL.ROI_RELATION_HEAD.USE_GT_BOX", gt_box, "MODEL.ROI_RELATION_HEAD.USE_GT_OBJECT_LABEL", gt_label,
        *opts])
    return cfg


def build_predictor(cfg, seed=0):
    """As the host's relation head builds its predictor (through the plug-in's factory)."""
    from maskrcnn_benchmark.modeling.roi_heads.relation_head import relation_head

    torch.manual_seed(seed)
    return relation_head.make_roi_relation_predictor(cfg, cfg.MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM).train()


def make_batch(cfg, num_objs=(5, 4), seed=0):
    """Proposals with boxes and labels, sampled pairs with labels (a third background), features."""
    from maskrcnn_benchmark.structures.bounding_box import BoxList

    g = torch.Generator().manual_seed(seed)
    num_obj_cls = cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES
    num_rel_cls = cfg.MODEL.ROI_RELATION_HEAD.NUM_CLASSES
    proposals, pairs, labels, binarys = [], [], [], []
    for n in num_objs:
        xy = torch.rand(n, 2, generator=g) * 80
        wh = 10 + torch.rand(n, 2, generator=g) * 40
        boxes = BoxList(torch.cat([xy, xy + wh], 1), (128, 128), mode="xyxy")
        boxes.add_field("labels", torch.randint(1, num_obj_cls, (n,), generator=g))
        boxes.add_field("predict_logits", torch.randn(n, num_obj_cls, generator=g))
        proposals.append(boxes)
        idx = torch.cartesian_prod(torch.arange(n), torch.arange(n))
        idx = idx[idx[:, 0] != idx[:, 1]]
        pairs.append(idx)
        rel = torch.randint(0, num_rel_cls, (len(idx),), generator=g)
        rel[::3] = 0
        labels.append(rel)
        binary = torch.zeros(n, n, dtype=torch.long)
        binary[idx[:, 0], idx[:, 1]] = (rel > 0).long()
        binarys.append(binary)
    dim = cfg.MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM
    roi = torch.randn(sum(num_objs), dim, generator=g, requires_grad=True)
    union = torch.randn(sum(len(p) for p in pairs), dim, generator=g, requires_grad=True)
    return proposals, pairs, labels, binarys, roi, union


# ---------------------------------------------------------------------------------------------
# A tiny OpenCLIP architecture with random weights saved to a file: the real loading and encoding
# code runs offline without any downloaded weights.

TINY_CLIP_CFG = {"embed_dim": 16,
                 "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
                 "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def random_open_clip(folder, name, seed=0, embed_dim=16):
    """Register the architecture ``name`` with OpenCLIP and save random weights for it: the path."""
    import open_clip

    (folder / f"{name}.json").write_text(json.dumps(dict(TINY_CLIP_CFG, embed_dim=embed_dim)))
    open_clip.add_model_config(folder / f"{name}.json")
    torch.manual_seed(seed)
    path = folder / f"{name}_{seed}.pt"
    torch.save(open_clip.create_model(name, pretrained=None).state_dict(), path)
    return str(path)
