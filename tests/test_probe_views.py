"""The probe's augmented view (seed 000 §4.1), its MLP projection head (§3.3.2) and the full annotated graph."""
import math

import pytest
import torch

from sgg_plugins.regularizers.probe import (ROI_OPS, RelationMatrixHead, RelationshipProbeLoss, augment_rois,
                                            chance_contrast, graph_pairs_from_relation_maps,
                                            standardised_relation_vectors)


def rois(num=2000, images=40, seed=0):
    gen = torch.Generator().manual_seed(seed)
    image_of_roi = torch.randint(images, (num,), generator=gen)
    image_of_roi[:images] = torch.arange(images)  # every image has a RoI
    sizes = torch.tensor([[800.0, 600.0]]).expand(num, 2)
    xy = torch.rand(num, 2, generator=gen) * torch.tensor([500.0, 300.0]) + 100
    wh = torch.rand(num, 2, generator=gen) * 100 + 20
    boxes = torch.cat([xy, xy + wh], 1)
    pooled = torch.randn(num, 3, 7, 7, generator=gen)
    return pooled, boxes, sizes, image_of_roi


def test_every_roi_gets_one_of_the_four_ops_uniformly_and_exactly():
    pooled, boxes, sizes, image_of_roi = rois()
    view = augment_rois(pooled, boxes, sizes, image_of_roi, generator=torch.Generator().manual_seed(1))
    ops, flipped = view["ops"], view["image_flipped"]
    shares = torch.bincount(ops, minlength=4).float() / len(ops)
    assert ROI_OPS == ("hflip", "rot90", "rot180", "rot270")
    assert (shares - 0.25).abs().max() < 0.04  # 2000 draws: 3.5 standard deviations
    # Each RoI's map is exactly its op (then mirrored when its image was flipped).
    expected = {0: pooled.flip(-1), 1: pooled.rot90(1, (-2, -1)), 2: pooled.rot90(2, (-2, -1)),
                3: pooled.rot90(3, (-2, -1))}
    for op, maps in expected.items():
        rows = ops == op
        want = torch.where(flipped[rows, None, None, None], maps[rows].flip(-1), maps[rows])
        torch.testing.assert_close(view["pooled"][rows], want, rtol=0, atol=0)
    # No RoI's map is left as it was, except where a RoI-level HFlip undoes its image's flip (the
    # paper's RoI augmentations of the flipped image's RoIs); those RoIs' boxes are mirrored.
    unchanged = (view["pooled"] - pooled).flatten(1).abs().amax(1).eq(0)
    assert torch.equal(unchanged, (ops == 0) & flipped)


def test_box_jitter_scales_width_and_height_in_the_paper_range_about_the_centre():
    pooled, boxes, sizes, image_of_roi = rois()
    view = augment_rois(pooled, boxes, sizes, image_of_roi, generator=torch.Generator().manual_seed(2),
                        image_flip_prob=0.0)
    scales = view["scales"]
    assert scales.min() >= 0.8 and scales.max() <= 1.2
    assert abs(scales.mean().item() - 1.0) < 0.01 and abs(scales.std().item() - 0.4 / math.sqrt(12)) < 0.01
    # Boxes well inside the image: centre kept, size scaled exactly.
    inside = (boxes[:, :2] > 30).all(1) & (boxes[:, 2:] < torch.tensor([700.0, 500.0])).all(1)
    out = view["boxes"]
    torch.testing.assert_close((out[inside, :2] + out[inside, 2:]) / 2, (boxes[inside, :2] + boxes[inside, 2:]) / 2,
                               rtol=0, atol=1e-3)
    torch.testing.assert_close(out[inside, 2:] - out[inside, :2], (boxes[inside, 2:] - boxes[inside, :2]) * scales[inside],
                               rtol=0, atol=1e-3)


def test_jittered_boxes_are_clipped_to_the_image():
    boxes = torch.tensor([[0.0, 0.0, 100.0, 100.0], [700.0, 500.0, 799.0, 599.0]])
    view = augment_rois(None, boxes, torch.tensor([[800.0, 600.0]] * 2), torch.tensor([0, 0]),
                        generator=torch.Generator().manual_seed(0), jitter=(1.2, 1.2), image_flip_prob=0.0)
    assert view["pooled"] is None
    # Centre 749.5, half width 49.5 x 1.2 = 59.4: 690.1 .. 808.9, clipped to 799 (width - 1).
    torch.testing.assert_close(view["boxes"], torch.tensor([[0.0, 0.0, 110.0, 110.0], [690.1, 490.1, 799.0, 599.0]]))


def test_image_level_flip_mirrors_every_box_of_half_the_images():
    pooled, boxes, sizes, image_of_roi = rois(images=400, num=2000)
    no_jitter = dict(jitter=(1.0, 1.0), generator=torch.Generator().manual_seed(3))
    view = augment_rois(pooled, boxes, sizes, image_of_roi, **no_jitter)
    flipped = view["image_flipped"]
    per_image = torch.zeros(400, dtype=torch.bool).index_put((image_of_roi,), flipped)
    assert abs(per_image.float().mean().item() - 0.5) < 0.08  # 400 images: 3.2 standard deviations
    assert (flipped == per_image[image_of_roi]).all()  # all RoIs of an image or none
    mirrored = torch.stack([799 - boxes[:, 2], boxes[:, 1], 799 - boxes[:, 0], boxes[:, 3]], 1)
    torch.testing.assert_close(view["boxes"][flipped], mirrored[flipped])
    torch.testing.assert_close(view["boxes"][~flipped], boxes[~flipped])


def test_augment_rejects_non_square_maps():
    with pytest.raises(ValueError, match=r"must be \[N, C, h, h\]"):
        augment_rois(torch.zeros(2, 3, 7, 5), torch.zeros(2, 4), torch.ones(2, 2), torch.tensor([0, 0]))


# ---------------------------------------------------------------- the projection head


def test_projection_head_exists_by_default_and_receives_gradient_from_the_contrast():
    torch.manual_seed(0)
    module = RelationshipProbeLoss(dim=8, projection_dim=16, max_objects=6)
    assert isinstance(module.head, RelationMatrixHead)
    linear = [m for m in module.head.mlp if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(15, 15), (15, 16)]
    assert RelationshipProbeLoss(dim=8).head.mlp[-1].out_features == 256
    num_objs = [5, 4, 7]
    clean, view = torch.randn(16, 8), torch.randn(16, 8)
    losses = module(clean, num_objs, [torch.tensor([[0, 1]]), torch.tensor([[1, 2]]), torch.tensor([[0, 6]])], view)
    losses["loss_probe_contrast"].backward()
    for name, param in module.head.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert module.probe.proj.weight.grad.abs().sum() > 0
    # Without a second view the head is still in the graph (a zero), so every rank uses it.
    module.zero_grad()
    module(clean, num_objs, [torch.zeros(0, 2, dtype=torch.long)] * 3)["loss_probe_contrast"].backward()
    assert all(p.grad is not None for p in module.head.parameters())


def test_head_reads_the_first_max_objects_and_pads_smaller_images():
    view = torch.rand(2, 5, 5)
    view = view + view.transpose(1, 2)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    vectors, used = standardised_relation_vectors(view, mask, max_objects=4)
    assert vectors.shape == (2, 6) and used.tolist() == [[True] * 4, [True, True, True, False]]
    first = view[0, :4, :4][torch.triu_indices(4, 4, 1).unbind()]
    torch.testing.assert_close(vectors[0], torch.nn.functional.normalize(first - first.mean(), dim=0))
    # Upper-triangle order (0,1) (0,2) (0,3) (1,2) (1,3) (2,3): the pairs with object 3 are padding.
    assert vectors[1, [2, 4, 5]].abs().sum() == 0 and vectors[1, [0, 1, 3]].abs().gt(0).all()
    padded, _ = standardised_relation_vectors(view[:, :3, :3], mask[:, :3], max_objects=6)
    assert padded.shape == (2, 15)


def test_informative_views_give_a_contrast_between_zero_and_chance():
    torch.manual_seed(0)
    module = RelationshipProbeLoss(dim=16, projection_dim=32, max_objects=8)
    num_objs = [6] * 8
    clean = torch.randn(48, 16)
    pairs = [torch.zeros(0, 2, dtype=torch.long)] * 8
    same = module(clean, num_objs, pairs, clean)["loss_probe_contrast"].item()
    noisy = module(clean, num_objs, pairs, clean + 0.5 * torch.randn(48, 16))["loss_probe_contrast"].item()
    unrelated = module(clean, num_objs, pairs, torch.randn(48, 16))["loss_probe_contrast"].item()
    assert same < noisy < unrelated
    assert unrelated == pytest.approx(chance_contrast(8), rel=0.2)


# ---------------------------------------------------------------- the supervising graph


def test_full_graph_comes_from_the_relation_maps_not_the_sampled_pairs():
    relation = torch.zeros(5, 5, dtype=torch.long)
    relation[0, 1], relation[3, 2], relation[4, 0] = 7, 1, 3
    pairs = graph_pairs_from_relation_maps([relation, torch.zeros(2, 2, dtype=torch.long)])
    assert pairs[0].tolist() == [[0, 1], [3, 2], [4, 0]] and pairs[1].shape == (0, 2)
    module = RelationshipProbeLoss(dim=4, projection_dim=0)
    features = torch.randn(7, 4)
    full = module(features, [5, 2], pairs)["loss_probe"]
    sampled = module(features, [5, 2], [pairs[0][:1], pairs[1]])["loss_probe"]
    assert full.item() != pytest.approx(sampled.item())
