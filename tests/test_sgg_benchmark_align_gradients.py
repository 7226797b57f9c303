"""MODEL.ALIGN on SGG-Benchmark's real predictors, in this process: the alignment gradient reaches
exactly the declared parameters and every other one gets exactly zero (seed 002 §3.1, §3.3; for
REACT++ the adaptation in docs/methods.md). Needs a checkout in ``SGGB_ROOT``.

Each test composes the host's own PSG config with Hydra (the CPU overlay, PredCls, the synthetic
data's statistics), builds the predictor through the host's ``make_roi_relation_predictor`` (with
the plug-in registered), runs one training forward on a made-up batch and back-propagates
``loss_align`` alone.
"""

import os

import pytest
import torch

from sgg_plugins.hosts.sgg_benchmark.text_sources import read_coco_scene_graphs
from test_sgg_benchmark_host import REPO, SGGB_ROOT, coco_data  # noqa: F401 (coco_data: a fixture)

pytestmark = pytest.mark.skipif(not SGGB_ROOT, reason="needs an SGG-Benchmark checkout: set SGGB_ROOT")
IN_CHANNELS = 256  # the CPU overlay's roi_box_head.mlp_head_dim
HEADS = ["untied_mlp", "untied_linear", "tied"]


def overrides_file(*parts):
    return (REPO.joinpath(*parts)).read_text().split()


def host_config(coco_data, out_dir, config_name, *overrides):  # noqa: F811
    """The host's Config wrapper for ``config_name`` as its training script composes it, PredCls."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    from sgg_plugins.hosts.sgg_benchmark import install

    install(SGGB_ROOT)
    from sgg_benchmark.config import hydra_config

    lines = (coco_data / "sgg_benchmark.overrides").read_text().split()
    lines += overrides_file("configs", "sgg_benchmark", "synthetic_cpu.overrides")
    if config_name == "REACT++":
        lines += overrides_file("configs", "sgg_benchmark", "react_predcls.overrides")
    lines += ["++model.roi_relation_head.use_gt_box=true", "++model.roi_relation_head.use_gt_object_label=true",
              f"++output_dir={out_dir}", "++model.align.enabled=true", *overrides]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=os.path.join(SGGB_ROOT, "configs", "hydra", "PSG"), version_base=None):
        cfg = hydra_config.get_cfg(compose(config_name=config_name, overrides=lines))
    obj_classes, pred_classes, _ = read_coco_scene_graphs(coco_data / "train" / "_annotations.coco.json")
    with open_dict(cfg):  # as the training script sets them from its training dataset
        cfg.model.roi_box_head.num_classes = len(obj_classes)
        cfg.model.roi_relation_head.num_classes = len(pred_classes)
    return hydra_config.Config(cfg)


def build_predictor(cfg):
    from sgg_benchmark.modeling.roi_heads.relation_head import relation_head

    torch.manual_seed(0)
    predictor = relation_head.make_roi_relation_predictor(cfg, IN_CHANNELS)
    return predictor.train()


def make_batch(cfg, predictor, num_objs=(4, 3)):
    """(proposals, rel_pair_idxs, rel_labels, rel_binarys, roi_features, union_features): every ordered
    pair of each image, about half foreground; union features as the configured extractor gives them
    (REACT++'s scene context: 16 tokens per image; Motifs: one row per pair)."""
    g = torch.Generator().manual_seed(1)
    num_obj_classes, num_rel = cfg.model.roi_box_head.num_classes, cfg.model.roi_relation_head.num_classes
    proposals, pairs, labels, binarys = [], [], [], []
    for n in num_objs:
        corners = torch.rand(n, 2, generator=g) * 100
        boxes = torch.cat([corners, corners + 10 + torch.rand(n, 2, generator=g) * 50], 1)
        proposals.append({"boxes": boxes, "labels": torch.randint(1, num_obj_classes, (n,), generator=g),
                          "image_size": (160, 160), "mode": "xyxy"})
        idx = torch.tensor([(i, j) for i in range(n) for j in range(n) if i != j])
        pairs.append(idx)
        rel = torch.randint(1, num_rel, (len(idx),), generator=g) * (torch.rand(len(idx), generator=g) < 0.5)
        labels.append(rel)
        binary = torch.zeros(n, n, dtype=torch.long)
        binary[idx[rel > 0, 0], idx[rel > 0, 1]] = 1
        binarys.append(binary)
    roi = torch.randn(sum(num_objs), IN_CHANNELS, generator=g, requires_grad=True)
    rows = len(num_objs) * 16 if getattr(predictor, "use_scene_context", False) else sum(len(p) for p in pairs)
    dim = IN_CHANNELS if hasattr(predictor, "use_scene_context") else cfg.model.roi_relation_head.context_pooling_dim
    union = torch.randn(rows, dim, generator=g, requires_grad=True)
    return proposals, pairs, labels, binarys, roi, union


def align_gradients(predictor, batch):
    *args, roi, union = batch
    _, _, losses = predictor(*args, roi, union)
    predictor.zero_grad(set_to_none=True)
    losses["loss_align"].backward()
    nonzero = {name for name, p in predictor.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    return losses, nonzero


def declared_parameters(predictor):
    objective = predictor.sgg_plugins["align"]
    modules = objective.mirrored_modules(predictor)
    own = getattr(objective, "mirrored_parameters", lambda p: ())(predictor)
    return {name for name, p in predictor.named_parameters() if p.requires_grad and (
        name.startswith("sgg_plugins.align.") or name in own or any(name.startswith(m + ".") for m in modules))}


@pytest.fixture(scope="module")
def statistics_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("sggb_statistics")  # the host caches its dataset statistics here


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("config_name", ["REACT++", "MotifPredictor", "VCTreePredictor", "TransformerPredictor"])
def test_alignment_gradient_reaches_exactly_the_declared_parameters(coco_data, statistics_dir, config_name, head):  # noqa: F811
    # p = 0.5: with p = 0.1, one seed's draw may mask no row of either input (then tied gives KL 0).
    cfg = host_config(coco_data, statistics_dir, config_name, f"++model.align.head={head}",
                      "++model.align.mask_prob=0.5")
    predictor = build_predictor(cfg)
    batch = make_batch(cfg, predictor)
    losses, nonzero = align_gradients(predictor, batch)
    assert torch.isfinite(losses["loss_align"]) and losses["loss_align"] > 0
    declared = declared_parameters(predictor)
    assert nonzero == declared, f"unexpected: {sorted(nonzero - declared)}\nmissing: {sorted(declared - nonzero)}"
    for features in batch[-2:]:  # the gradient stops at the input features (§3.1)
        assert features.grad is None or not features.grad.any()


def test_react_mirror_declares_its_relation_path_and_reuses_the_rest(coco_data, statistics_dir):  # noqa: F811
    cfg = host_config(coco_data, statistics_dir, "REACT++")
    predictor = build_predictor(cfg)
    _, nonzero = align_gradients(predictor, make_batch(cfg, predictor))
    trained = {name.split(".")[0] for name in nonzero}
    assert {"vis_proj", "sub_sem_attn", "obj_sem_attn", "compose_ffn", "scene_cross_attn", "sgg_plugins"} <= trained
    # The reused label semantics, geometry and prototype keys, the original classifier: exactly zero.
    for name, parameter in predictor.named_parameters():
        if name.split(".")[0] in ("obj_lift", "rel_lift", "geom_rope", "proj_head", "proto_weight", "logit_scale"):
            assert parameter.grad is None or not parameter.grad.any(), name


def test_react_target_pass_is_the_original_without_dropout_and_leaves_buffers(coco_data, statistics_dir):  # noqa: F811
    """With no dropout the extra pass of the original path reproduces the host's own logits exactly,
    and the extra passes leave the prototype EMA as the clean pass leaves it."""
    cfg = host_config(coco_data, statistics_dir, "REACT++", "++model.roi_relation_head.context_dropout_rate=0.0")
    predictor = build_predictor(cfg)
    objective = predictor.sgg_plugins["align"]
    seen = {}
    original = objective._pass

    def recording_pass(step, masked):
        result = original(step, masked)
        if not masked:
            seen["target"] = result[1]
        seen["step"], seen["buffers"] = step, {k: v.clone() for k, v in predictor.proto_ema.named_buffers()}
        return result

    objective._pass = recording_pass
    *args, roi, union = make_batch(cfg, predictor)
    predictor(*args, roi, union)
    step = seen["step"]
    with torch.no_grad():
        _, target = original(step, masked=False)
    assert torch.equal(target, step.rel_logits.detach())
    for key, value in predictor.proto_ema.named_buffers():
        assert torch.equal(value, seen["buffers"][key]), key


def test_react_tied_mirror_without_masks_is_the_original_exactly(coco_data, statistics_dir):  # noqa: F811
    """MASK_PROB 0 and HEAD tied: the mirror reruns exactly the original path and classifier (the
    prior is off in this config), so the KL to the no-dropout target is exactly zero."""
    cfg = host_config(coco_data, statistics_dir, "REACT++", "++model.align.head=tied", "++model.align.mask_prob=0.0")
    predictor = build_predictor(cfg)
    *args, roi, union = make_batch(cfg, predictor)
    _, _, losses = predictor(*args, roi, union)
    assert losses["loss_align"].item() == 0.0
