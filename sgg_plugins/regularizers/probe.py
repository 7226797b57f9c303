"""Relationship probe (seed 000, ``MODEL.PROBE``): host-free core.

A structural probe B (Eq. 2) maps each object's contextual feature u_i to B u_i; the squared distance
‖B(u_i − u_j)‖² between two objects should equal their shortest-path distance in the image's
annotated scene graph taken as undirected (Eq. 5). A second term (Eq. 6) asks the relationship
matrix R = (d_B²) of an image to be stable across two views of its context (clean and masked pass).

Images have different object counts, so everything works on a padded batch [B, n_max, ...] with a
boolean object mask [B, n_max]; padded entries never reach a loss.
"""
import torch
import torch.nn.functional as F
from torch import nn


class StructuralProbe(nn.Module):
    """B of Eq. 2: a rank-``rank`` linear map whose squared distances model graph distances.

    B is initialised U(−0.05, 0.05) as in the structural probe the paper builds on (Hewitt & Manning,
    its ref. [26]); the paper itself gives no initialisation.
    """

    def __init__(self, dim, rank=128):
        super().__init__()
        if dim < 1 or rank < 1:
            raise ValueError(f"StructuralProbe needs dim >= 1 and rank >= 1, got dim={dim}, rank={rank}")
        self.proj = nn.Linear(dim, rank, bias=False)
        nn.init.uniform_(self.proj.weight, -0.05, 0.05)

    def pairwise(self, features, mask):
        """features [B, n, D], mask [B, n] bool -> squared distances [B, n, n], 0 on padded pairs.

        Differences of the projections rather than ‖Bu_i‖² + ‖Bu_j‖² − 2⟨Bu_i, Bu_j⟩: the expansion
        cancels catastrophically for nearby objects (worse under fp16 autocast) and needs a clamp
        that kills the gradient where it bites; differences are exact, never negative, exactly 0 on
        the diagonal with a zero (not NaN) gradient there. The cost is a [B, n, n, rank] tensor, a
        few tens of MB for the object counts of scene graph images. Computed in fp32.
        """
        if features.dim() != 3 or mask.shape != features.shape[:2]:
            raise ValueError(f"pairwise expects features [B, n, D] and mask [B, n], got "
                             f"{tuple(features.shape)} and {tuple(mask.shape)}")
        projected = self.proj(features).float()
        sq_dist = (projected[:, :, None] - projected[:, None, :]).pow(2).sum(-1)
        return sq_dist.masked_fill(~pair_mask_of(mask), 0.0)

    def forward(self, features):
        """features [n, D] of one image -> squared distances [n, n]."""
        mask = torch.ones(features.shape[:1], dtype=torch.bool, device=features.device)
        return self.pairwise(features[None], mask[None])[0]


def pair_mask_of(mask):
    """Object mask [B, n] -> pair mask [B, n, n]: True where both objects are real."""
    return mask[:, :, None] & mask[:, None, :]


def batched_graph_distances(pairs_per_image, num_objs, max_distance):
    """Shortest-path lengths in each image's relation graph taken as undirected, capped at max_distance.

    pairs_per_image: list of integer tensors (E_i, 2) of (subject, object) indices into that image's
    objects; num_objs: list of ints. Returns (distances [B, n_max, n_max] float32, mask [B, n_max]).
    Unreachable pairs and pairs at least max_distance apart take max_distance; the diagonal is 0.
    BFS for all sources at once: each step multiplies the frontier by the adjacency matrix, so there
    are max_distance − 1 batched matmuls and no loop over pairs or images.
    """
    if len(pairs_per_image) != len(num_objs):
        raise ValueError(f"got {len(pairs_per_image)} relation tensors for {len(num_objs)} images")
    if int(max_distance) != max_distance or max_distance < 1:
        raise ValueError(f"max_distance must be an integer >= 1 (MODEL.PROBE.MAX_DISTANCE), got {max_distance}")
    device = pairs_per_image[0].device if pairs_per_image else torch.device("cpu")
    pairs = [p.reshape(0, 2) if p.numel() == 0 else p for p in pairs_per_image]
    for index, p in enumerate(pairs):
        if p.dim() != 2 or p.shape[1] != 2 or p.is_floating_point():
            raise ValueError(f"relation pairs of image {index} must be an integer tensor (E, 2) of object "
                             f"indices, got dtype {p.dtype} shape {tuple(p.shape)}")
    num_images, n_max = len(num_objs), max(num_objs, default=0)
    counts = torch.as_tensor(num_objs, dtype=torch.long, device=device)
    mask = torch.arange(n_max, device=device)[None] < counts[:, None]

    edges = torch.cat(pairs).to(device=device, dtype=torch.long) if pairs else torch.zeros(0, 2, dtype=torch.long)
    image_of_edge = torch.repeat_interleave(torch.arange(num_images, device=device),
                                            torch.as_tensor([len(p) for p in pairs], device=device))
    out_of_range = (edges < 0) | (edges >= counts[image_of_edge][:, None])
    if out_of_range.any():
        bad = out_of_range.any(1).nonzero()[0, 0]
        image = int(image_of_edge[bad])
        raise ValueError(f"relation pair {edges[bad].tolist()} of image {image} refers to an object outside "
                         f"0..{num_objs[image] - 1} (the image has {num_objs[image]} objects)")

    adjacency = torch.zeros(num_images, n_max, n_max, dtype=torch.bool, device=device)
    adjacency[image_of_edge, edges[:, 0], edges[:, 1]] = True
    adjacency = (adjacency | adjacency.transpose(1, 2)).float()  # undirected; duplicates are harmless
    frontier = torch.eye(n_max, dtype=torch.bool, device=device).expand(num_images, n_max, n_max)
    reached = frontier.clone()
    distances = torch.full((num_images, n_max, n_max), float(max_distance), device=device)
    distances = distances.masked_fill(frontier, 0.0)
    for step in range(1, int(max_distance)):
        frontier = (torch.bmm(frontier.float(), adjacency) > 0) & ~reached  # self-loops stay behind
        distances = distances.masked_fill(frontier, float(step))
        reached = reached | frontier
    return distances, mask


def graph_distances(rel_pairs, num_nodes, max_distance):
    """Shortest-path lengths [n, n] (float32) of one image; see ``batched_graph_distances``."""
    return batched_graph_distances([rel_pairs], [num_nodes], max_distance)[0][0]


def probe_loss(pred_sq_dist, graph_dist, mask):
    """Eq. 5: per image Σ_ij |d_G(i, j) − d_B²(i, j)| / n_i², averaged over images.

    Only images with at least two objects count in the average: an image with one object has no pair
    (its only entry, the diagonal, is 0 on both sides) and would just dilute the loss of the others.
    Images with two or more objects but no relation do count: all their pairs should sit at the cap.
    A batch with no such image gives 0 (still attached to the graph).
    """
    if pred_sq_dist.shape != graph_dist.shape or pred_sq_dist.shape[:2] != mask.shape:
        raise ValueError(f"probe_loss expects [B, n, n], [B, n, n], [B, n]; got {tuple(pred_sq_dist.shape)}, "
                         f"{tuple(graph_dist.shape)}, {tuple(mask.shape)}")
    error = (graph_dist.to(pred_sq_dist.dtype) - pred_sq_dist).abs()
    per_image = error.masked_fill(~pair_mask_of(mask), 0.0).sum((1, 2))
    num_objs = mask.sum(1).to(pred_sq_dist.dtype)
    counted = num_objs >= 2
    per_image = per_image / num_objs.clamp(min=1).pow(2)
    return (per_image * counted).sum() / counted.sum().clamp(min=1)


def relation_matrix_contrastive(view_a, view_b, mask, temperature=0.1):
    """Eq. 6: NT-Xent between the relationship matrices of the same images under two views.

    The paper vectorises each R (a fixed number of RoIs) and feeds it to an MLP head before the
    cosine. Here object counts vary per image, so a head over vec(R) would need a fixed pad size; we
    keep vec(R), padded with zeros, and drop the learnable head. vec(R) keeps pair identity, which is
    what makes the positive meaningful: both views index the same objects in the same order (as in
    the paper, negatives compare objects that merely share an index). Each image's off-diagonal
    entries are centred on their mean before the cosine, so the similarity is the correlation of
    the two matrices: invariant to the scale and offset that the probe loss already pins down.

    As in Eq. 6, the 2B views form one pool: each view's positive is the other view of its image and
    its negatives are all 2(B − 1) views of the other images; averaging over all 2B anchors makes
    the loss symmetric (a→b and b→a). An image with fewer than three objects has a single distinct
    pair (or none), so a centred matrix of zeros: it is neither anchor nor negative. With fewer than
    two such images there are no negatives and the loss is 0 (no NaN).
    """
    if view_a.shape != view_b.shape or view_a.shape[:2] != mask.shape:
        raise ValueError(f"relation_matrix_contrastive expects views [B, n, n] and mask [B, n]; got "
                         f"{tuple(view_a.shape)}, {tuple(view_b.shape)}, {tuple(mask.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (MODEL.PROBE.TEMPERATURE), got {temperature}")
    n_max = mask.shape[1]
    off_diagonal = pair_mask_of(mask) & ~torch.eye(n_max, dtype=torch.bool, device=mask.device)
    num_pairs = off_diagonal.sum((1, 2)).clamp(min=1)

    def embed(view):
        view = view.float()
        mean = view.masked_fill(~off_diagonal, 0.0).sum((1, 2)) / num_pairs
        centred = (view - mean[:, None, None]).masked_fill(~off_diagonal, 0.0)
        return F.normalize(centred.flatten(1), dim=1)

    num_images = mask.shape[0]
    z = torch.cat([embed(view_a), embed(view_b)])
    logits = z @ z.t() / temperature
    takes_part = (mask.sum(1) >= 3).repeat(2)
    # Rows of non-participating anchors keep finite logits (they are zeroed below): an all -inf row
    # would give a NaN gradient through log_softmax even when its loss is masked out.
    excluded = torch.eye(2 * num_images, dtype=torch.bool, device=mask.device)
    excluded = excluded | (takes_part[:, None] & ~takes_part[None, :])
    logits = logits.masked_fill(excluded, float("-inf"))
    anchors = torch.arange(2 * num_images, device=mask.device)
    per_anchor = -logits.log_softmax(1)[anchors, anchors.roll(num_images)]
    return (per_anchor * takes_part).sum() / takes_part.sum().clamp(min=1)


class RelationshipProbeLoss(nn.Module):
    """Probe + both losses of ``MODEL.PROBE``; the caller applies WEIGHT and CONTRAST_WEIGHT."""

    def __init__(self, dim, rank=128, max_distance=4, temperature=0.1):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0 (MODEL.PROBE.TEMPERATURE), got {temperature}")
        self.probe = StructuralProbe(dim, rank)
        self.max_distance = max_distance
        self.temperature = temperature

    def forward(self, features_clean, num_objs, rel_pairs, features_view2=None):
        """features_clean [Σ n_i, D] (images concatenated), num_objs list[int], rel_pairs list of
        (E_i, 2) index tensors, features_view2 same shape as features_clean or None.

        Returns dict(loss_probe, loss_probe_contrast); the contrast is 0 without a second view.
        """
        num_objs = [int(n) for n in num_objs]
        if not num_objs or len(rel_pairs) != len(num_objs):
            raise ValueError(f"need one rel_pairs tensor per image and at least one image; got "
                             f"{len(rel_pairs)} for {len(num_objs)} images")
        if sum(num_objs) != features_clean.shape[0]:
            raise ValueError(f"features_clean has {features_clean.shape[0]} rows but num_objs sums to {sum(num_objs)}")
        if features_view2 is not None and features_view2.shape != features_clean.shape:
            raise ValueError(f"features_view2 {tuple(features_view2.shape)} must match features_clean "
                             f"{tuple(features_clean.shape)}")
        graph_dist, mask = batched_graph_distances(
            [p.to(features_clean.device) for p in rel_pairs], num_objs, self.max_distance)
        pred_clean = self.probe.pairwise(pad_per_image(features_clean, num_objs), mask)
        losses = dict(loss_probe=probe_loss(pred_clean, graph_dist, mask))
        if features_view2 is None:
            losses["loss_probe_contrast"] = pred_clean.new_zeros(())
        else:
            pred_view2 = self.probe.pairwise(pad_per_image(features_view2, num_objs), mask)
            losses["loss_probe_contrast"] = relation_matrix_contrastive(pred_clean, pred_view2, mask, self.temperature)
        return losses


def pad_per_image(features, num_objs):
    """[Σ n_i, D] -> [B, n_max, D], zeros after each image's objects (one scatter, one gather back)."""
    counts = torch.as_tensor(num_objs, dtype=torch.long, device=features.device)
    image = torch.repeat_interleave(torch.arange(len(num_objs), device=features.device), counts)
    first_row = counts.cumsum(0) - counts
    position = torch.arange(features.shape[0], device=features.device) - first_row[image]
    padded = features.new_zeros(len(num_objs), max(num_objs), *features.shape[1:])
    return padded.index_put((image, position), features)
