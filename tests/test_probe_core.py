"""Host-free core of the relationship probe (MODEL.PROBE, seed 000)."""
import math

import pytest
import torch

from sgg_plugins.regularizers.probe import (
    RelationshipProbeLoss, StructuralProbe, batched_graph_distances, graph_distances, probe_loss,
    relation_matrix_contrastive)


def edges(*pairs):
    return torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)


def test_probe_distances_match_double_loop():
    torch.manual_seed(0)
    probe = StructuralProbe(dim=6, rank=3)
    features = torch.randn(5, 6)
    B = probe.proj.weight
    expected = torch.empty(5, 5)
    for i in range(5):
        for j in range(5):
            diff = B @ (features[i] - features[j])
            expected[i, j] = diff @ diff
    got = probe(features)
    torch.testing.assert_close(got, expected)
    assert (got.diagonal() == 0).all()


def test_padded_pairwise_equals_per_image_and_zeroes_padding():
    torch.manual_seed(0)
    probe = StructuralProbe(dim=4, rank=8)
    small, big = torch.randn(2, 4), torch.randn(4, 4)
    padded = torch.stack([torch.cat([small, torch.randn(2, 4)]), big])
    mask = torch.tensor([[True, True, False, False], [True] * 4])
    out = probe.pairwise(padded, mask)
    torch.testing.assert_close(out[0, :2, :2], probe(small))
    torch.testing.assert_close(out[1], probe(big))
    assert (out[0, 2:] == 0).all() and (out[0, :, 2:] == 0).all()


def test_graph_distances_chain_and_cap():
    chain = edges((0, 1), (1, 2), (2, 3), (3, 4), (4, 5))
    idx = torch.arange(6)
    expected = (idx[:, None] - idx[None]).abs().clamp(max=4).float()
    torch.testing.assert_close(graph_distances(chain, 6, max_distance=4), expected)
    torch.testing.assert_close(graph_distances(chain, 6, max_distance=2), expected.clamp(max=2))


def test_graph_distances_star_directed_selfloop_duplicates():
    # Star centred on 2, edges in both directions, a self-loop and a duplicate edge.
    star = edges((2, 0), (1, 2), (2, 3), (2, 3), (3, 2), (2, 2))
    expected = torch.tensor([[0, 2, 1, 2],
                             [2, 0, 1, 2],
                             [1, 1, 0, 1],
                             [2, 2, 1, 0]], dtype=torch.float)
    torch.testing.assert_close(graph_distances(star, 4, max_distance=4), expected)


def test_graph_distances_disconnected_parts_and_isolated_node():
    dist = graph_distances(edges((0, 1), (2, 3)), 5, max_distance=3)
    expected = torch.full((5, 5), 3.0)
    expected.fill_diagonal_(0)
    expected[0, 1] = expected[1, 0] = expected[2, 3] = expected[3, 2] = 1
    torch.testing.assert_close(dist, expected)
    assert graph_distances(edges(), 3, 4).tolist() == [[0, 4, 4], [4, 0, 4], [4, 4, 0]]


def test_batched_graph_distances_pad_and_mask():
    dist, mask = batched_graph_distances([edges((0, 1)), edges((0, 1), (1, 2)), edges()], [2, 3, 0], 4)
    assert dist.shape == (3, 3, 3) and mask.tolist() == [[1, 1, 0], [1, 1, 1], [0, 0, 0]]
    torch.testing.assert_close(dist[0, :2, :2], graph_distances(edges((0, 1)), 2, 4))
    torch.testing.assert_close(dist[1], graph_distances(edges((0, 1), (1, 2)), 3, 4))


@pytest.mark.parametrize("pairs, message", [
    (edges((0, 3)), "outside 0..2"),
    (edges((-1, 0)), "outside 0..2"),
    (torch.tensor([[0.0, 1.0]]), "integer tensor"),
    (torch.tensor([0, 1, 2]), r"\(E, 2\)"),
])
def test_graph_distances_bad_pairs_fail_clearly(pairs, message):
    with pytest.raises(ValueError, match=message):
        graph_distances(pairs, 3, 4)
    with pytest.raises(ValueError, match="max_distance"):
        graph_distances(edges((0, 1)), 3, 0)


def test_probe_loss_zero_when_probe_reproduces_a_chain():
    # Squared distances of collinear points grow as (i − j)², not |i − j|; a chain 0-1-2 bent at a
    # right angle in the plane B keeps has squared distances 1, 1, 2, its graph distances. The
    # third feature axis, which B drops, carries arbitrary values.
    features = torch.tensor([[1.0, 0.0, 5.0], [0.0, 0.0, -2.0], [0.0, 1.0, 7.0]])
    probe = StructuralProbe(dim=3, rank=2)
    with torch.no_grad():
        probe.proj.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    pred = probe(features)
    graph = graph_distances(edges((0, 1), (1, 2)), 3, max_distance=4)
    torch.testing.assert_close(pred, graph)
    assert probe_loss(pred[None], graph[None], torch.ones(1, 3, dtype=torch.bool)).item() == 0.0


def test_probe_loss_hand_computation_and_image_average():
    pred = torch.zeros(2, 3, 3)
    pred[0, 0, 1] = pred[0, 1, 0] = 3.0
    graph = torch.zeros(2, 3, 3)
    graph[0, 0, 1] = graph[0, 1, 0] = 1.0
    mask = torch.tensor([[True, True, False], [True, False, False]])
    pred[0, 2, 2] = 100.0  # padding: ignored
    # image 0: (|1 - 3| * 2) / 2² = 1; image 1 has one object and is not counted.
    assert probe_loss(pred, graph, mask).item() == pytest.approx(1.0)


def test_padding_does_not_change_probe_loss():
    torch.manual_seed(0)
    module = RelationshipProbeLoss(dim=8, rank=4)
    small, big = torch.randn(3, 8), torch.randn(7, 8)
    pairs_small, pairs_big = edges((0, 1), (2, 1)), edges((0, 6), (1, 2), (3, 4))
    alone_small = module(small, [3], [pairs_small])["loss_probe"]
    alone_big = module(big, [7], [pairs_big])["loss_probe"]
    both = module(torch.cat([small, big]), [3, 7], [pairs_small, pairs_big])["loss_probe"]
    torch.testing.assert_close(both, (alone_small + alone_big) / 2)


def test_gradients_reach_probe_and_features():
    torch.manual_seed(0)
    module = RelationshipProbeLoss(dim=8, rank=4)
    clean = torch.randn(9, 8, requires_grad=True)
    view2 = (clean.detach() + 0.1 * torch.randn(9, 8)).requires_grad_()
    losses = module(clean, [4, 5], [edges((0, 1), (1, 2)), edges((0, 4))], view2)
    (losses["loss_probe"] + losses["loss_probe_contrast"]).backward()
    for grad in (module.probe.proj.weight.grad, clean.grad, view2.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("num_objs, pairs", [
    ([1], [edges()]),                          # a batch of one image with one object
    ([4], [edges((0, 1))]),                    # a batch of one image
    ([1, 5, 0], [edges(), edges(), edges()]),  # one object, no relations, no object
    ([2, 1], [edges((0, 1)), edges()]),        # no image has enough objects for the contrast
])
def test_degenerate_batches_give_finite_losses_and_gradients(num_objs, pairs):
    torch.manual_seed(0)
    module = RelationshipProbeLoss(dim=8, rank=4)
    clean = torch.randn(sum(num_objs), 8, requires_grad=True)
    view2 = torch.randn(sum(num_objs), 8, requires_grad=True)
    losses = module(clean, num_objs, pairs, view2)
    total = losses["loss_probe"] + losses["loss_probe_contrast"]
    assert torch.isfinite(total)
    total.backward()
    assert torch.isfinite(module.probe.proj.weight.grad).all() and torch.isfinite(clean.grad).all()
    if len(num_objs) == 1 or max(num_objs) < 3:
        assert losses["loss_probe_contrast"].item() == 0.0


def test_contrast_is_zero_without_second_view():
    module = RelationshipProbeLoss(dim=8)
    losses = module(torch.randn(4, 8), [4], [edges((0, 1))])
    assert set(losses) == {"loss_probe", "loss_probe_contrast"} and losses["loss_probe_contrast"].item() == 0


def test_contrast_lower_when_views_agree_than_when_shuffled():
    torch.manual_seed(0)
    view_a = torch.rand(6, 5, 5)
    view_a = view_a + view_a.transpose(1, 2)
    mask = torch.ones(6, 5, dtype=torch.bool)
    agree = relation_matrix_contrastive(view_a, view_a + 0.01 * torch.rand(6, 5, 5), mask, 0.1)
    shuffled = relation_matrix_contrastive(view_a, view_a.roll(1, dims=0), mask, 0.1)
    assert agree < shuffled
    # Correlation, not raw values: an affine change of one view leaves the loss unchanged.
    torch.testing.assert_close(relation_matrix_contrastive(view_a, 3 * view_a + 2, mask, 0.1),
                               relation_matrix_contrastive(view_a, view_a, mask, 0.1))


def test_contrast_hand_computation_two_images_of_different_sizes():
    torch.manual_seed(0)
    tau = 0.5
    sizes = (3, 4)
    mats = {view: [torch.rand(n, n) for n in sizes] for view in "ab"}
    mats = {view: [m + m.t() for m in matrices] for view, matrices in mats.items()}  # R is symmetric

    def embedding(matrix):  # centred off-diagonal entries, laid out in a 4x4 grid, unit norm
        n = matrix.shape[0]
        off = ~torch.eye(n, dtype=torch.bool)
        centred = torch.zeros(4, 4)
        centred[:n, :n] = torch.where(off, matrix - matrix[off].mean(), torch.zeros(()))
        return centred.flatten() / centred.norm()

    z = [embedding(mats["a"][0]), embedding(mats["a"][1]), embedding(mats["b"][0]), embedding(mats["b"][1])]
    expected = 0.0
    for anchor, positive in ((0, 2), (1, 3), (2, 0), (3, 1)):
        sims = {k: math.exp(float(z[anchor] @ z[k]) / tau) for k in range(4) if k != anchor}
        expected += -math.log(sims[positive] / sum(sims.values()))
    expected /= 4

    def pad(matrices):
        out = torch.zeros(2, 4, 4)
        for i, m in enumerate(matrices):
            out[i, :m.shape[0], :m.shape[0]] = m
        return out

    mask = torch.tensor([[True, True, True, False], [True] * 4])
    got = relation_matrix_contrastive(pad(mats["a"]), pad(mats["b"]), mask, tau)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_bad_arguments_fail_clearly():
    module = RelationshipProbeLoss(dim=8)
    with pytest.raises(ValueError, match="num_objs sums to 5"):
        module(torch.randn(4, 8), [2, 3], [edges(), edges()])
    with pytest.raises(ValueError, match="one rel_pairs tensor per image"):
        module(torch.randn(4, 8), [4], [])
    with pytest.raises(ValueError, match="features_view2"):
        module(torch.randn(4, 8), [4], [edges()], torch.randn(3, 8))
    with pytest.raises(ValueError, match="TEMPERATURE"):
        RelationshipProbeLoss(dim=8, temperature=0.0)
