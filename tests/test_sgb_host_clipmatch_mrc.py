"""MODEL.CLIPMATCH and MODEL.MRC on the real SGB host (needs SGB_ROOT).

In this process, on the host's own predictors and object contexts (the small CPU overlay): MRC's
masked-context representation of an object is bit-identical when any other object's features or
box change (batch-statistics norms run on their running statistics in that pass), the MRC gradient
reaches exactly the object-context modules the pass runs and the MLP (norms' affine parameters
included), and the extra pass leaves every buffer as the clean pass leaves it. Through the launcher: each
objective trains every predictor in PredCls with its loss in the host's log, eval is bit-identical
to the vanilla host, and all five objectives train together on Motifs SGCls.
"""

import contextlib
import math

import pytest
import torch

from conftest import GT_MODES as MODES
from conftest import (assert_identical_predictions, build_predictor, host_predictions, in_process_cfg, random_open_clip,
                      logged_losses, make_batch, needs_sgb, train_briefly)

from sgg_plugins.regularizers.align import batch_statistics_norms

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
def test_mrc_gradient_reaches_exactly_the_context_and_buffers_are_the_clean_pass_s(host, predictor_name, mode):
    cfg = host_cfg(host, predictor_name, mode)
    predictor = build_predictor(cfg)
    batch = make_batch(cfg)
    torch.manual_seed(1)  # the same dropout draws in the clean pass as the reference's below
    losses, _ = masked_context_representations(predictor, batch)
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
    # A norm on the representation's path (Motifs' and VCTree's pos_embed) runs on running
    # statistics in the MRC pass and still trains: its weight and bias get MRC gradient.
    for path, norm in batch_statistics_norms(predictor.context_layer):
        if f"context_layer.{path}.".startswith(modules):
            assert norm.weight.grad.abs().sum() > 0 and norm.bias.grad.abs().sum() > 0, path


# ------------------------------------------------------------------------------------------------
# "Independently" exactly: nothing of another object reaches an object's MRC representation.

# Contexts whose box encoding goes through a BatchNorm (pos_embed; VCTree's tree scorer has two more).
WITH_BATCH_NORM = {"MotifPredictor", "VCTreePredictor"}
OTHERS = [1, 6]  # one object of each image of make_batch's (5, 4) objects


def with_boxes_moved(proposals, rows):
    """The proposals (host BoxLists) with the boxes of the global ``rows`` shifted and shrunk."""
    moved, start = [], 0
    for boxes in proposals:
        copy = boxes.copy_with_fields(boxes.fields())
        copy.bbox = boxes.bbox.clone()
        for row in [r - start for r in rows if start <= r < start + len(boxes)]:
            copy.bbox[row, :2] += torch.tensor([9.0, 4.0])
            copy.bbox[row, 2:] = copy.bbox[row, :2] + (boxes.bbox[row, 2:] - boxes.bbox[row, :2]) * 0.6
        moved.append(copy)
        start += len(boxes)
    return moved


def norm_calls(predictor):
    """Record (training flag, running mean, running var) at every call of each context norm."""
    calls = {}
    handles = []
    for path, norm in batch_statistics_norms(predictor.context_layer):
        calls[path] = []
        handles.append(norm.register_forward_pre_hook(
            lambda m, args, _calls=calls[path]: _calls.append((m.training, m.running_mean.clone(),
                                                               m.running_var.clone()))))
    return calls, handles


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("predictor_name", PREDICTORS)
def test_each_object_sees_only_itself_exactly(host, predictor_name, mode, monkeypatch):
    cfg = host_cfg(host, predictor_name, mode)
    predictor = build_predictor(cfg)
    batch = make_batch(cfg)
    predictor(*make_batch(cfg, seed=5))  # one step: running statistics that are not the initial ones
    start = {k: v.clone() for k, v in predictor.state_dict().items()}
    norms = batch_statistics_norms(predictor.context_layer)
    assert bool(norms) == (predictor_name in WITH_BATCH_NORM)

    def encode(proposals=batch[0], roi=batch[4]):
        predictor.load_state_dict(start)  # every step starts from the same running statistics
        return masked_context_representations(predictor, (proposals, *batch[1:4], roi, batch[5]))[1]

    calls, handles = norm_calls(predictor)
    try:
        reference = encode()
    finally:
        for handle in handles:
            handle.remove()
    roi = batch[4].detach().clone()
    roi[OTHERS] += torch.randn(len(OTHERS), roi.shape[1]) * 3
    features_changed = encode(roi=roi)
    boxes_moved = encode(proposals=with_boxes_moved(batch[0], OTHERS))
    subjects = [i for i in range(len(reference)) if i not in OTHERS]
    assert torch.equal(reference[subjects], features_changed[subjects])
    assert torch.equal(reference[subjects], boxes_moved[subjects])
    # The changed objects' own representations do change (IMP's context reads no box).
    assert not torch.allclose(reference[OTHERS], features_changed[OTHERS])
    if predictor_name != "IMPPredictor":
        assert not torch.allclose(reference[OTHERS], boxes_moved[OTHERS])

    # Each norm: batch statistics in the clean pass, then, in the MRC pass, eval mode on the running
    # statistics as they were before the step (the clean pass has updated them with the batch by then).
    for path, norm in norms:
        (clean_training, *_), *alone = calls[path]
        assert clean_training and alone and norm.training, path
        for training, mean, var in alone:
            assert not training and torch.equal(mean, start[f"context_layer.{path}.running_mean"]), path
            assert torch.equal(var, start[f"context_layer.{path}.running_var"]), path
        assert not torch.equal(norm.running_mean, start[f"context_layer.{path}.running_mean"]), path

    if predictor_name in WITH_BATCH_NORM:
        # The defect this guards against: with the norms on batch statistics in the one-object pass,
        # another object's box reaches the subject's representation.
        from sgg_plugins.hosts.sgb.objectives import mrc

        monkeypatch.setattr(mrc, "running_statistics", lambda module, statistics=None: contextlib.nullcontext())
        assert not torch.equal(reference[subjects], encode(proposals=with_boxes_moved(batch[0], OTHERS))[subjects])


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
