"""Masked relation classification (seed 004): the classifier, one-object images, and, through the
SGB adapter on a small predictor whose object context mixes the objects of an image as the host's
do, context isolation, gradient routing and untouched running statistics (no host needed)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_sequence, pad_packed_sequence

import fake_sgb as fake
from sgg_plugins.regularizers.align import batch_statistics_norms, running_statistics
from sgg_plugins.regularizers.mrc import MaskedRelationClassifier, one_object_images

NUM_OBJ, NUM_REL, IN, HID, EMB = 5, 4, 6, 5, 3


class BoxList:
    """Slices like SGB's BoxList: boxes and every field, the image size kept."""

    mode = "xyxy"

    def __init__(self, bbox, labels, size=(64, 48)):
        self.bbox, self.size, self.fields = bbox, size, {"labels": labels}

    def __getitem__(self, item):
        return BoxList(self.bbox[item], self.fields["labels"][item], self.size)

    def __len__(self):
        return self.bbox.shape[0]

    def get_field(self, name):
        return self.fields[name]


class LSTMContext(nn.Module):
    """As the host's: a per-object input (ROI feature, label embedding, box embedding through a
    BatchNorm over the batch), a bidirectional LSTM over each image's objects, an output projection."""

    def __init__(self):
        super().__init__()
        self.obj_embed1 = nn.Embedding(NUM_OBJ, EMB)
        self.pos_embed = nn.Sequential(nn.Linear(4, EMB), nn.BatchNorm1d(EMB))
        self.obj_ctx_rnn = nn.LSTM(IN + 2 * EMB, HID, bidirectional=True)
        self.lin_edge_h = nn.Linear(2 * HID, HID)
        self.decoder_rnn = nn.Linear(HID, NUM_OBJ)  # object decoding: not run in PredCls

    def forward(self, x, proposals, rel_pair_idxs, logger=None):
        labels = torch.cat([p.get_field("labels") for p in proposals])
        boxes = torch.cat([p.bbox / torch.tensor(p.size * 2, dtype=torch.float) for p in proposals])
        inputs = torch.cat([x, self.obj_embed1(labels), self.pos_embed(boxes)], -1)
        lengths = torch.tensor([len(p) for p in proposals])
        out, _ = pad_packed_sequence(self.obj_ctx_rnn(pack_sequence(list(inputs.split(lengths.tolist())),
                                                                    enforce_sorted=False))[0], batch_first=True)
        states = out[torch.arange(out.shape[1]) < lengths[:, None]]  # image by image, in object order
        return F.one_hot(labels, NUM_OBJ).float(), labels, self.lin_edge_h(states), None


class MotifPredictor(nn.Module):
    def __init__(self, config, in_channels):
        super().__init__()
        self.context_layer = LSTMContext()
        self.post_emb = nn.Linear(HID, 2 * HID)
        self.rel_compress = nn.Linear(2 * HID, NUM_REL)

    def forward(self, proposals, rel_pair_idxs, rel_labels, rel_binarys, roi_features, union_features, logger=None):
        obj_dists, _, edge_ctx, _ = self.context_layer(roi_features, proposals, logger)
        halves = self.post_emb(edge_ctx).view(-1, 2, HID)
        offsets = torch.cumsum(torch.tensor([0] + [len(p) for p in proposals[:-1]]), 0)
        pairs = torch.cat([p + o for p, o in zip(rel_pair_idxs, offsets)])
        rel_dists = self.rel_compress(torch.cat([halves[pairs[:, 0], 0], halves[pairs[:, 1], 1]], -1))
        num_objs, num_rels = [len(p) for p in proposals], [len(p) for p in rel_pair_idxs]
        return obj_dists.split(num_objs), rel_dists.split(num_rels), {}


def batch(seed=0, num_objs=(4, 3)):
    g = torch.Generator().manual_seed(seed)
    proposals, pairs, labels = [], [], []
    for n in num_objs:
        xy = torch.rand(n, 2, generator=g) * 30
        proposals.append(BoxList(torch.cat([xy, xy + 5 + torch.rand(n, 2, generator=g) * 10], 1),
                                 torch.randint(1, NUM_OBJ, (n,), generator=g)))
        pair = torch.tensor([(i, j) for i in range(n) for j in range(n) if i != j])
        pairs.append(pair)
        labels.append(torch.randint(0, NUM_REL, (len(pair),), generator=g))
    roi = torch.randn(sum(num_objs), IN, generator=g)
    return proposals, pairs, labels, None, roi, None


def build(**opts):
    from sgg_plugins.hosts.sgb.predictors import regularized_predictor_class

    torch.manual_seed(0)
    cfg = fake.make_cfg("MotifPredictor", **opts)
    cfg.MODEL.ROI_RELATION_HEAD.NUM_CLASSES = NUM_REL
    return regularized_predictor_class(MotifPredictor)(cfg, IN).train()


def run(model, data):
    proposals, pairs, labels, binarys, roi, union = data
    return model(proposals, pairs, labels, binarys, roi, union)


def recorded_alone(model):
    """Wrap the objective's encode_alone to keep what it returns."""
    objective = model.sgg_plugins.mrc
    found = []
    original = objective.encode_alone
    objective.encode_alone = lambda step: found.append(original(step)) or found[-1]
    return found


# ------------------------------------------------------------------------------------------------


def test_classifier_is_the_cross_entropy_of_an_mlp_over_the_concatenated_pair():
    torch.manual_seed(0)
    classifier = MaskedRelationClassifier(object_dim=3, num_relations=4, hidden_dim=7)
    objects = torch.randn(5, 3)
    subj, obj, labels = torch.tensor([0, 2, 4]), torch.tensor([1, 1, 3]), torch.tensor([0, 3, 2])
    first, second = classifier.mlp[0], classifier.mlp[2]
    logits = second(torch.relu(first(torch.cat([objects[subj], objects[obj]], 1))))
    expected = -logits.log_softmax(1)[torch.arange(3), labels].mean()
    assert classifier.loss(objects, subj, obj, labels).item() == pytest.approx(expected.item(), rel=1e-6)


def test_classifier_without_pairs_is_a_connected_zero():
    classifier = MaskedRelationClassifier(3, 4, 7)
    objects = torch.randn(2, 3, requires_grad=True)
    loss = classifier.loss(objects, torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long),
                           torch.zeros(0, dtype=torch.long))
    assert loss.item() == 0.0
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() == 0 for p in classifier.parameters())


def test_one_object_images_keep_order_boxes_fields_and_image_size():
    proposals = batch()[0]
    alone = one_object_images(proposals)
    assert [len(b) for b in alone] == [1] * 7
    assert torch.equal(torch.cat([b.bbox for b in alone]), torch.cat([p.bbox for p in proposals]))
    assert torch.equal(torch.cat([b.get_field("labels") for b in alone]),
                       torch.cat([p.get_field("labels") for p in proposals]))
    assert all(b.size == (64, 48) for b in alone)


def with_boxes_moved(proposals, rows):
    """The proposals with the boxes of the global ``rows`` shifted and shrunk."""
    moved, start = [], 0
    for boxes in proposals:
        bbox = boxes.bbox.clone()
        for row in [r - start for r in rows if start <= r < start + len(boxes)]:
            bbox[row, :2] += torch.tensor([4.0, 2.5])
            bbox[row, 2:] = bbox[row, :2] + (boxes.bbox[row, 2:] - boxes.bbox[row, :2]) * 0.6
        moved.append(BoxList(bbox, boxes.get_field("labels"), boxes.size))
        start += len(boxes)
    return moved


def encoded_alone(model, state, data):
    """What MRC encodes for each object in one training step that starts from ``state``."""
    model.load_state_dict(state)  # the same running statistics at the start of every step
    found = recorded_alone(model)
    try:
        run(model, data)
    finally:
        del model.sgg_plugins.mrc.encode_alone
    return found[0]


@pytest.mark.parametrize("change", ["features", "boxes"])
def test_an_objects_masked_context_representation_ignores_every_other_object(change):
    model = build(MRC_ENABLED=True, MRC_HIDDEN_DIM=16)
    run(model, batch(seed=1))  # running statistics that are not the initial ones
    state = {k: v.clone() for k, v in model.state_dict().items()}
    data = batch()
    changed = list(data)
    if change == "features":
        changed[4] = data[4].clone()
        changed[4][1] += 5.0  # another object of the first image
        changed[4][5] -= 3.0  # an object of the second image
    else:  # the box embedding goes through a BatchNorm, batch statistics in training mode
        changed[0] = with_boxes_moved(data[0], [1, 5])
    before, after = encoded_alone(model, state, data), encoded_alone(model, state, changed)
    unchanged = [0, 2, 3, 4, 6]
    assert torch.equal(before[unchanged], after[unchanged])
    assert not torch.allclose(before[[1, 5]], after[[1, 5]])
    # The host's own (clean) context does mix them: the test above could fail.
    clean = [model.context_layer(d[4], d[0], None)[2] for d in (data, changed)]
    assert not torch.allclose(clean[0][0], clean[1][0])


def test_the_one_object_pass_normalises_with_the_running_statistics_from_before_the_step():
    model = build(MRC_ENABLED=True, MRC_HIDDEN_DIM=16)
    run(model, batch(seed=1))
    norm = model.context_layer.pos_embed[1]
    before = norm.running_mean.clone(), norm.running_var.clone(), norm.num_batches_tracked.clone()
    calls = []
    handle = norm.register_forward_pre_hook(
        lambda m, args: calls.append((m.training, m.running_mean.clone(), m.running_var.clone())))
    try:
        run(model, batch())
    finally:
        handle.remove()
    (clean_training, *clean_stats), (alone_training, *alone_stats) = calls  # the clean pass, then MRC's
    assert clean_training and not alone_training and norm.training
    assert all(torch.equal(a, b) for a, b in zip(clean_stats + alone_stats, before[:2] * 2))
    # Only the clean pass updated them (the MRC pass neither updated nor reset them).
    assert not torch.equal(norm.running_mean, before[0]) and norm.num_batches_tracked == before[2] + 1


def test_mrc_gradient_reaches_exactly_the_object_context_it_runs_and_the_mlp():
    model = build(MRC_ENABLED=True, MRC_HIDDEN_DIM=16)
    data = list(batch())
    data[4] = data[4].requires_grad_()
    loss = run(model, data)[2]["loss_mrc"]
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(loss, list(params.values()) + [data[4]], allow_unused=True)
    reached = {n for n, g in zip(params, grads) if g is not None and g.abs().sum() > 0}
    expected = {n for n in params if n.startswith(("context_layer.obj_embed1", "context_layer.pos_embed",
                                                   "context_layer.obj_ctx_rnn", "context_layer.lin_edge_h",
                                                   "sgg_plugins.mrc.classifier"))}
    # A sequence of one object: the LSTM's recurrent weights only ever multiply the zero initial
    # state, so alone they get no gradient (their biases do).
    expected -= {n for n in expected if ".weight_hh" in n}
    assert reached == expected
    assert grads[-1] is None  # the ROI features are detached: nothing reaches the feature extractor


def test_the_extra_pass_leaves_running_statistics_as_the_clean_pass_does():
    with_mrc, without = build(MRC_ENABLED=True), build()
    data = batch()
    run(with_mrc, data)
    run(without, data)
    for (name, a), (_, b) in zip(with_mrc.context_layer.named_buffers(), without.context_layer.named_buffers()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("case", ["all_background", "one_pair"])
def test_no_nan_with_all_background_or_one_pair(case):
    model = build(MRC_ENABLED=True)
    proposals, pairs, labels, binarys, roi, union = batch()
    if case == "all_background":
        labels = [torch.zeros_like(l) for l in labels]
    else:
        pairs = [pairs[0][:1], pairs[1][:0]]
        labels = [labels[0][:1].clamp(min=1), labels[1][:0]]
    loss = run(model, (proposals, pairs, labels, binarys, roi, union))[2]["loss_mrc"]
    assert torch.isfinite(loss)
    plugin = dict(model.sgg_plugins.named_parameters())
    grads = torch.autograd.grad(loss, list(plugin.values()), allow_unused=True)
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_weight_scales_the_loss():
    data = batch()
    one = run(build(MRC_ENABLED=True), data)[2]["loss_mrc"]
    half = run(build(MRC_ENABLED=True, MRC_WEIGHT=0.5), data)[2]["loss_mrc"]
    assert half.item() == pytest.approx(0.5 * one.item(), rel=1e-6)


def test_a_context_without_a_known_masking_fails_with_one_line():
    from sgg_plugins.config import ConfigError

    class OtherContext(LSTMContext):
        pass

    class Other(MotifPredictor):
        def __init__(self, config, in_channels):
            super().__init__(config, in_channels)
            self.context_layer = OtherContext()

    Other.__name__ = "MotifPredictor"
    from sgg_plugins.hosts.sgb.predictors import regularized_predictor_class

    cfg = fake.make_cfg("MotifPredictor", MRC_ENABLED=True)
    cfg.MODEL.ROI_RELATION_HEAD.NUM_CLASSES = NUM_REL
    with pytest.raises(ConfigError, match="MODEL.MRC: no object context to mask is known for OtherContext"):
        regularized_predictor_class(Other, "MotifPredictor")(cfg, IN)


def test_a_context_norm_without_running_statistics_fails_with_one_line():
    from sgg_plugins.config import ConfigError
    from sgg_plugins.hosts.sgb.predictors import regularized_predictor_class

    class Untracked(MotifPredictor):
        def __init__(self, config, in_channels):
            super().__init__(config, in_channels)
            self.context_layer.pos_embed[1] = nn.BatchNorm1d(EMB, track_running_stats=False)

    Untracked.__name__ = "MotifPredictor"
    cfg = fake.make_cfg("MotifPredictor", MRC_ENABLED=True)
    cfg.MODEL.ROI_RELATION_HEAD.NUM_CLASSES = NUM_REL
    with pytest.raises(ConfigError, match=r"MODEL.MRC: LSTMContext's pos_embed.1 normalise with batch statistics"):
        regularized_predictor_class(Untracked, "MotifPredictor")(cfg, IN)


# ------------------------------------------------------------------------------------------------
# regularizers.align.running_statistics: the one-object pass's normalisation.


class Mixed(nn.Module):
    """Batch-statistics norms of several kinds and modes among modules that must keep theirs."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 6)
        self.bn = nn.BatchNorm1d(6, momentum=0.3)
        self.drop = nn.Dropout(0.5)
        self.inner = nn.Sequential(nn.BatchNorm1d(6), nn.LayerNorm(6), nn.InstanceNorm1d(6, track_running_stats=True))
        self.sync = nn.SyncBatchNorm(6)

    def forward(self, x):
        return self.inner[1](self.inner[0](self.bn(self.lin(x))))


def trained_mixed():
    torch.manual_seed(0)
    model = Mixed().train()
    for _ in range(3):
        model(torch.randn(8, 4) * 2 + 1)
    model.inner[0].eval()  # one norm already in eval mode: its flag must come back as it was
    return model


def test_batch_statistics_norms_are_found_by_type_whatever_their_names():
    model = trained_mixed()
    assert [name for name, _ in batch_statistics_norms(model)] == ["bn", "inner.0", "sync"]


def test_running_statistics_make_each_row_depend_on_itself_alone_and_update_nothing():
    model = trained_mixed()
    buffers = {name: (b, b.clone()) for name, b in model.named_buffers()}
    flags = {name: m.training for name, m in model.named_modules()}
    x = torch.randn(5, 4) * 3
    other = x.clone()
    other[1:] = torch.randn(4, 4) * 7 - 2  # every other row changed
    with running_statistics(model) as norms:
        assert norms == [model.bn, model.inner[0], model.sync]
        assert not any(m.training for m in norms)
        assert model.training and model.drop.training and model.lin.training and model.inner[2].training
        out, out_other = model(x), model(other)
        model.sync(torch.randn(3, 6))  # SyncBatchNorm in eval mode: running statistics, no process group
    assert torch.equal(out[0], out_other[0])
    # What eval mode computes with the running statistics as they were (momentum 0.3: they matter).
    bn, bn0 = model.bn, model.inner[0]
    h = (model.lin(x) - bn.running_mean) / (bn.running_var + bn.eps).sqrt() * bn.weight + bn.bias
    h = (h - bn0.running_mean) / (bn0.running_var + bn0.eps).sqrt() * bn0.weight + bn0.bias
    assert torch.allclose(out, model.inner[1](h), atol=1e-6)
    for name, b in model.named_buffers():
        assert b is buffers[name][0] and torch.equal(b, buffers[name][1]), name
    assert {name: m.training for name, m in model.named_modules()} == flags
    # The affine parameters are trained.
    out.pow(2).sum().backward()
    for norm in (bn, bn0):
        assert norm.weight.grad.abs().sum() > 0 and norm.bias.grad.abs().sum() > 0


def test_running_statistics_given_replace_the_buffers_without_writing_them():
    model = trained_mixed()
    kept = model.bn.running_mean, model.bn.running_mean.clone(), model.bn.running_var.clone()
    given = {"bn": {"running_mean": torch.full((6,), 0.5), "running_var": torch.full((6,), 4.0)}}
    x = torch.randn(5, 4)
    with running_statistics(model, given):
        out = model.bn(model.lin(x))
    expected = (model.lin(x) - 0.5) / (4.0 + model.bn.eps) ** 0.5 * model.bn.weight + model.bn.bias
    assert torch.allclose(out, expected, atol=1e-6)
    assert model.bn.running_mean is kept[0]
    assert torch.equal(model.bn.running_mean, kept[1]) and torch.equal(model.bn.running_var, kept[2])
    assert model.bn.training


def test_running_statistics_restore_on_exception_and_refuse_norms_without_running_statistics():
    model = trained_mixed()
    mean = model.bn.running_mean
    with pytest.raises(RuntimeError, match="boom"):
        with running_statistics(model, {"bn": {"running_mean": torch.zeros(6)}}):
            raise RuntimeError("boom")
    assert model.bn.training and not model.inner[0].training and model.bn.running_mean is mean
    untracked = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3, track_running_stats=False)).train()
    with pytest.raises(ValueError, match="1: built with track_running_stats=False"):
        with running_statistics(untracked):
            pass
    assert untracked[1].training


def test_a_buffers_tap_keeps_a_modules_buffers_from_before_its_first_call():
    from sgg_plugins.hosts.hooks import Tap, capture

    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3)).train()
    before = {k: v.clone() for k, v in model[1]._buffers.items()}
    with capture(model, {"stats": Tap("1", "buffers")}) as found:
        model(torch.randn(4, 2) + 3)
        model(torch.randn(4, 2) + 3)
    assert found["stats"].keys() == before.keys()
    assert all(torch.equal(found["stats"][k], before[k]) for k in before)
    assert not torch.equal(model[1].running_mean, before["running_mean"])
    assert not model[1]._forward_pre_hooks  # removed on exit
    with pytest.raises(ValueError, match="'buffers' reads a module's state"):
        with capture(model, {"x": Tap("1", "output"), "y": Tap("1", "buffers", method="forward")}):
            pass
    assert not model[1]._forward_hooks
