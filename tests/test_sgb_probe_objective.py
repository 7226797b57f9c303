"""MODEL.PROBE's objective on SGB-shaped fake predictors: the augmented view reaches the context, and the
full annotated graph supervises the probe when the adapter provides it (no host needed)."""
import pytest
import torch

import fake_sgb as fake
from sgg_plugins.hosts.sgb.objectives import probe as probe_objective
from sgg_plugins.hosts.sgb.predictors import regularized_predictor_class


def build(**opts):
    torch.manual_seed(0)
    return regularized_predictor_class(fake.MotifPredictor)(fake.make_cfg("MotifPredictor", **opts), fake.IN_CHANNELS)


def with_shared(monkeypatch, **entries):
    """Run every ProbeObjective.losses with ``entries`` in step.shared, as the adapter would put them."""
    original = probe_objective.ProbeObjective.losses

    def losses(self, step):
        step.shared.update(entries)
        return original(self, step)

    monkeypatch.setattr(probe_objective.ProbeObjective, "losses", losses)


def context_inputs(model):
    """Record every call of the context: (roi features, proposals' boxes)."""
    calls = []
    model.context_layer.register_forward_pre_hook(
        lambda module, args: calls.append((args[0].detach().clone(), [p.bbox.clone() for p in args[1]])))
    return calls


def test_augment_view_reruns_the_context_on_moved_boxes_and_the_same_features():
    model = build(PROBE_ENABLED=True)
    calls = context_inputs(model)
    batch = fake.make_batch()
    losses = model(*batch)[2]
    assert len(calls) == 2 and torch.isfinite(losses["loss_probe_contrast"])
    (clean_feats, clean_boxes), (view_feats, view_boxes) = calls
    torch.testing.assert_close(view_feats, clean_feats)  # no pooled maps provided: features as they were
    for clean, view, proposal in zip(clean_boxes, view_boxes, batch[0]):
        assert not torch.allclose(clean, view) and torch.equal(clean, proposal.bbox)  # host proposals untouched


def test_augment_view_flips_and_rotates_the_pooled_maps_through_the_box_head(monkeypatch):
    batch = fake.make_batch()
    num = sum(len(p) for p in batch[0])
    pooled = torch.randn(num, 3, 2, 2)
    box_head = torch.nn.Linear(12, fake.IN_CHANNELS)
    seen = []
    with_shared(monkeypatch, sgb_pooled_rois=pooled,
                sgb_box_head=lambda maps: seen.append(maps) or box_head(maps.flatten(1)))
    model = build(PROBE_ENABLED=True)
    calls = context_inputs(model)
    model(*batch)
    (maps,) = seen
    assert maps.shape == pooled.shape and not torch.equal(maps, pooled)
    # Every RoI's map is one of the paper's flips / rotations of its own map (possibly composed
    # with the image flip): its entries are a permutation of the original's.
    torch.testing.assert_close(maps.flatten(2).sort(-1).values, pooled.flatten(2).sort(-1).values)
    torch.testing.assert_close(calls[1][0], box_head(maps.flatten(1)).detach())


def test_full_relation_maps_supervise_the_probe_when_provided(monkeypatch):
    batch = fake.make_batch()
    maps = [torch.zeros(len(p), len(p), dtype=torch.long) for p in batch[0]]
    maps[0][0, 3] = 2  # a relation the sampler never kept as foreground
    sampled = build(PROBE_ENABLED=True, PROBE_CONTRAST_WEIGHT=0.0)(*batch)[2]["loss_probe"]
    with_shared(monkeypatch, sgb_relation_maps=maps)
    full = build(PROBE_ENABLED=True, PROBE_CONTRAST_WEIGHT=0.0)(*batch)[2]["loss_probe"]
    assert full.item() != pytest.approx(sampled.item())
    # The same loss as the core computes from the maps' pairs.
    model = build(PROBE_ENABLED=True, PROBE_CONTRAST_WEIGHT=0.0)
    features = {}
    model.context_layer.register_forward_hook(lambda m, a, out: features.update(edge=out[2]))
    model(*batch)
    core = model.sgg_plugins.probe.loss(features["edge"], [len(p) for p in batch[0]],
                                        [torch.tensor([[0, 3]]), torch.zeros(0, 2, dtype=torch.long)])
    torch.testing.assert_close(full, core["loss_probe"])
