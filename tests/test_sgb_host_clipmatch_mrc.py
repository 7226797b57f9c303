"""MODEL.CLIPMATCH and MODEL.MRC on the real SGB host (needs SGB_ROOT).

In this process, on the host's own predictors and object contexts (the small CPU overlay): MRC's
masked-context representation of an object does not change when any other object's features
change, the MRC gradient reaches exactly the object-context modules the pass runs and the MLP, and
the extra pass leaves every buffer as the clean pass leaves it. Through the launcher: each
objective trains every predictor in PredCls with its loss in the host's log, eval is bit-identical
to the vanilla host, and all five objectives train together on Motifs SGCls.
"""

import math

import pytest
import torch

from conftest import GT_MODES as MODES
from conftest import (assert_identical_predictions, build_predictor, host_predictions, in_process_cfg, random_open_clip,
                      logged_losses, make_batch, needs_sgb, train_briefly)

pytestmark = needs_sgb

PREDICTORS = ["MotifPredictor", "VCTreePredictor", "TransformerPredictor", "IMPPredictor"]

# The object-context modules the MRC pass runs, per predictor and mode: with the ROI features
# detached, exactly their parameters (and the MLP's) may get MRC gradient.
MRC_MODULES = {
    # obj_embed1 -> (with pos_embed) obj_ctx_rnn -> lin_obj_h -> with obj_embed2: edge_ctx_rnn -> lin_edge_h.
    # In SGCls the decoder only commits labels (no gradient path to edge_ctx).
    "MotifPredictor": ("obj_embed1", "obj_embed2", "pos_embed", "obj_ctx_rnn", "lin_obj_h", "edge_ctx_rnn",
                       "lin_edge_h"),
    # The tree-building branch (box_embed, overlap_embed, obj_reduce, emb_reduce, vctree_score_net)
    # only decides the forest, single nodes here.
    "VCTreePredictor": ("obj_embed1", "obj_embed2", "pos_embed", "obj_ctx_rnn", "edge_ctx_rnn"),
    "TransformerPredictor": ("obj_embed1", "obj_embed2", "bbox_embed", "lin_obj", "context_obj", "lin_edge",
                             "context_edge"),
    # Nodes without messages: the unary projection and the node GRU; the message weights and the
    # edge side get nothing.
    "IMPPredictor": ("obj_unary", "node_gru"),
}
# Transformer's SGCls decodes object labels with out_obj from the object encoder; they are only
# committed labels (argmax) for the edge input, so out_obj gets no gradient either.


def host_cfg(host, predictor, mode, *opts):
    return in_process_cfg(host, predictor, mode, "MODEL.MRC.ENABLED", True, *opts)


def masked_context_representations(predictor, batch):
    """Run one training step; return (loss dict, what the MRC objective encoded for each object)."""
    objective = predictor.sgg_plugins["mrc"]
    found = []
    original = objective.encode_alone
    objective.encode_alone = lambda step: found.append(original(step)) or found[-1]
    try:
        losses = predictor(*batch)[2]
    finally:
        del objective.encode_alone
    return losses, found[0]


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("predictor_name", PREDICTORS)
def test_masked_context_ignores_other_objects_and_gradient_reaches_exactly_the_context(host, predictor_name, mode):
    cfg = host_cfg(host, predictor_name, mode)
    predictor = build_predictor(cfg)
    batch = make_batch(cfg)
    torch.manual_seed(1)  # the same dropout draws in the clean pass as the reference's below
    losses, before = masked_context_representations(predictor, batch)
    assert torch.isfinite(losses["loss_mrc"]) and losses["loss_mrc"] > 0

    # The MRC pass left every buffer as the clean pass alone leaves it.
    reference = build_predictor(host_cfg(host, predictor_name, mode, "MODEL.MRC.ENABLED", False))
    torch.manual_seed(1)
    reference(*make_batch(cfg))
    buffers = dict(predictor.named_buffers())
    for name, buffer in reference.named_buffers():
        assert torch.equal(buffer, buffers[name]), name

    # Gradient routing.
    predictor.zero_grad(set_to_none=True)
    losses["loss_mrc"].backward()
    reached = {n for n, p in predictor.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    modules = tuple(f"context_layer.{m}." for m in MRC_MODULES[predictor_name]) + ("sgg_plugins.mrc.",)
    assert all(n.startswith(modules) for n in reached), sorted(n for n in reached if not n.startswith(modules))
    for module in modules:
        assert any(n.startswith(module) for n in reached), f"{module} got no MRC gradient"
    roi, union = batch[4], batch[5]
    assert roi.grad is None and union.grad is None

    # Isolation: change the features of objects 1 (first image) and 6 (second image).
    changed = list(batch)
    changed[4] = batch[4].detach().clone()
    changed[4][[1, 6]] += torch.randn(2, changed[4].shape[1]) * 3
    _, after = masked_context_representations(predictor, changed)
    others = [i for i in range(len(before)) if i not in (1, 6)]
    assert torch.equal(before[others], after[others])
    assert not torch.allclose(before[[1, 6]], after[[1, 6]])


# ------------------------------------------------------------------------------------------------
# Through the launcher.

open_clip = pytest.importorskip("open_clip")



@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """(model name, weights file): a small OpenCLIP architecture with random weights saved locally."""
    return "sggp-host-tiny-clip-cm", random_open_clip(tmp_path_factory.mktemp("clip"), "sggp-host-tiny-clip-cm",
                                                      embed_dim=32)


def dataset_files(synthetic_vg):
    return ["--dict-file", str(synthetic_vg / "VG-SGG-dicts-with-attri.json"),
            "--roidb-file", str(synthetic_vg / "VG-SGG-with-attri.h5")]


@pytest.fixture(scope="module")
def clipmatch(synthetic_vg, tiny_clip, tmp_path_factory):
    """Opts for MODEL.CLIPMATCH with candidate embeddings computed once, before training, by
    `embed-candidates` for the dataset's files (the launcher then only loads the file)."""
    import argparse

    from sgg_plugins.text import candidates_cli

    model, weights = tiny_clip
    out = tmp_path_factory.mktemp("candidates") / "candidates.pt"
    parser = argparse.ArgumentParser()
    candidates_cli.add_arguments(parser)
    args = parser.parse_args([*dataset_files(synthetic_vg), "--clip-model", model, "--clip-pretrained", weights,
                              "--out", str(out), "--device", "cpu"])
    assert candidates_cli.run(args) == 0
    return ["MODEL.CLIPMATCH.ENABLED", "True", "MODEL.CLIPMATCH.TEXT_EMBEDDINGS", str(out),
            "MODEL.CLIPMATCH.CLIP_MODEL", model, "MODEL.CLIPMATCH.CLIP_PRETRAINED", weights]


MRC = ["MODEL.MRC.ENABLED", "True"]


def assert_finite_losses(log, *names):
    for name in names:
        values = logged_losses(log, name)
        assert values and all(math.isfinite(v) for v in values), f"{name} not logged finite:\n{log[-3000:]}"


@pytest.mark.parametrize("predictor", PREDICTORS)
def test_clipmatch_and_mrc_train_and_leave_eval_unchanged(synthetic_vg, tmp_path, clipmatch, predictor):
    opts = [*clipmatch, *MRC]
    out, log = train_briefly(synthetic_vg, tmp_path, predictor, opts=opts)
    assert_finite_losses(log, "loss_clipmatch", "loss_mrc")
    assert "candidate text embeddings loaded from" in log  # no CLIP computation at training time
    weight = out / "model_final.pth"
    with_plugin, _ = host_predictions(synthetic_vg, tmp_path, predictor, weight, "eval_plugin", opts)
    vanilla, _ = host_predictions(synthetic_vg, tmp_path, predictor, weight, "eval_vanilla",
                                  launcher_args=["--without-plugin"])
    assert_identical_predictions(with_plugin, vanilla)


def test_all_five_objectives_on_motifs_sgcls(synthetic_vg, tmp_path, tiny_clip, clipmatch):
    from sgg_plugins import cli

    model, weights = tiny_clip
    assert cli.main(["embed", *dataset_files(synthetic_vg), "--clip-model", model, "--clip-pretrained", weights,
                     "--out", str(tmp_path / "rcl.pt")]) == 0
    rcl = ["MODEL.RCL.ENABLED", "True", "MODEL.RCL.SAMPLING_EMBEDDINGS", "clip",
           "MODEL.RCL.TEXT_EMBEDDINGS", str(tmp_path / "rcl.pt"),
           "MODEL.RCL.CLIP_MODEL", model, "MODEL.RCL.CLIP_PRETRAINED", weights]
    opts = ["MODEL.ALIGN.ENABLED", "True", "MODEL.PROBE.ENABLED", "True", *rcl, *clipmatch, *MRC]
    _, log = train_briefly(synthetic_vg, tmp_path, "MotifPredictor", "sgcls", opts)
    assert_finite_losses(log, "loss_align", "loss_rcl", "loss_probe", "loss_clipmatch", "loss_mrc")
