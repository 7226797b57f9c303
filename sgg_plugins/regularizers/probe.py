"""Relationship probe (seed 000, ``MODEL.PROBE``): host-free core.

A structural probe B (Eq. 2) maps each object's contextual feature u_i to B u_i; the squared distance
‖B(u_i − u_j)‖² between two objects should equal their shortest-path distance in the image's
annotated scene graph taken as undirected (Eq. 5). A second term (Eq. 6) asks the relationship
matrix R = (d_B²) of an image to be stable across two views of the image: "we adopt stochastic data
augmentation methods to transform an original image … into semantics-preserving data samples, and
treat them as positive pairs" (§3.3.2), through "nonlinear projections of vectorized relationship
matrices … using MLP projection head" (:class:`RelationMatrixHead`). The views are the paper's
RoI-level augmentations (§4.1, :func:`augment_rois`) or, as an ablation, a masked context input.

The supervising graph is the image's full annotated scene graph (SGB's ``relation`` field of the
targets, :func:`graph_pairs_from_relation_maps`), not only the pairs the relation sampler kept (SGB
keeps at most BATCH_SIZE_PER_IMAGE × POSITIVE_FRACTION = 16 foreground pairs per image by default).
Supervising a visual probe with annotated scene graphs is this project's adaptation: the paper
supervises its textual probe with dependency trees and trains the visual one through the contrast.

Images have different object counts, so everything works on a padded batch [B, n_max, ...] with a
boolean object mask [B, n_max]; padded entries never reach a loss.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from .distributed import gather_rows, gathers, global_max, row_counts, tell_once_without_negatives
from .transfer import check_values, to_device


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
    # Counts copied without waiting for the device, sizes from Python ints (transfer.py).
    counts = to_device(num_objs, device, torch.long)
    mask = torch.arange(n_max, device=device)[None] < counts[:, None]

    edges = torch.cat(pairs).to(device=device, dtype=torch.long) if pairs else torch.zeros(0, 2, dtype=torch.long)
    edge_counts = [len(p) for p in pairs]
    image_of_edge = torch.repeat_interleave(torch.arange(num_images, device=device),
                                            to_device(edge_counts, device, torch.long), output_size=sum(edge_counts))
    out_of_range = (edges < 0) | (edges >= counts[image_of_edge][:, None])

    def message():
        bad = out_of_range.any(1).nonzero()[0, 0]
        image = int(image_of_edge[bad])
        return (f"relation pair {edges[bad].tolist()} of image {image} refers to an object outside "
                f"0..{num_objs[image] - 1} (the image has {num_objs[image]} objects)")

    check_values(out_of_range, message, "a relation pair refers to an object outside its image")

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


def standardised_relation_vectors(view, mask, max_objects=None):
    """vec(R): the upper-triangle entries of each image's R, centred and L2-normalised, [B, K(K−1)/2].

    R is symmetric with a zero diagonal, so the strict upper triangle holds all of it once. Each
    image's entries are centred on their mean and scaled to unit norm, so what the head sees is the
    pattern of the matrix, not the scale and offset that the probe loss pins down (and that drift
    as the probe trains). Padded pairs are 0. ``max_objects`` (K) fixes the layout for a head: the
    first K objects of each image, padded to K ("to keep the sizes the same for the relationship
    matrices, the maximum numbers of … objects are … set to 36", §4.1); None: K = n_max.
    """
    n_max = mask.shape[1]
    size = n_max if max_objects is None else int(max_objects)
    if size > n_max:
        view = F.pad(view, (0, size - n_max, 0, size - n_max))
        mask = F.pad(mask, (0, size - n_max))
    view, mask = view[:, :size, :size].float(), mask[:, :size]
    rows, cols = torch.triu_indices(size, size, 1, device=mask.device)
    entries = view[:, rows, cols]
    real = mask[:, rows] & mask[:, cols]
    mean = entries.masked_fill(~real, 0.0).sum(1) / real.sum(1).clamp(min=1)
    centred = (entries - mean[:, None]).masked_fill(~real, 0.0)
    return F.normalize(centred, dim=1), mask


class RelationMatrixHead(nn.Module):
    """The MLP projection head of Eq. 6: z = W2 ReLU(W1 vec(R)) (§3.3.2, after SimCLR, the paper's [50]).

    Input: :func:`standardised_relation_vectors` over the first ``max_objects`` objects, fixed size
    K(K−1)/2; hidden width = input width, output ``projection_dim`` (SimCLR's layout).
    """

    def __init__(self, max_objects=36, projection_dim=256):
        super().__init__()
        if max_objects < 3 or projection_dim < 1:
            raise ValueError(f"the probe's projection head needs MAX_OBJECTS >= 3 and PROJECTION_DIM >= 1, got "
                             f"{max_objects} and {projection_dim}")
        self.max_objects = int(max_objects)
        width = self.max_objects * (self.max_objects - 1) // 2
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, projection_dim))

    def forward(self, view, mask):
        vectors, mask = standardised_relation_vectors(view, mask, self.max_objects)
        return self.mlp(vectors), mask


def relation_matrix_contrastive(view_a, view_b, mask, temperature=0.1, head=None, gather=False):
    """Eq. 6: NT-Xent between the relationship matrices of the same images under two views.

    Each R is vectorised (:func:`standardised_relation_vectors`) and, with ``head`` (a
    :class:`RelationMatrixHead`), projected by the MLP head before the cosine, as in the paper;
    without it the cosine of the standardised vectors is the correlation of the two matrices.
    vec(R) keeps pair identity, which is what makes the positive meaningful: both views index the
    same objects in the same order (as in the paper, negatives compare objects that merely share an
    index).

    As in Eq. 6, the 2B views form one pool: each view's positive is the other view of its image and
    its negatives are all 2(B − 1) views of the other images; averaging over all 2B anchors makes
    the loss symmetric (a→b and b→a). An image with fewer than three objects (among the head's
    first K) has a single distinct pair (or none), so a centred matrix of zeros: it is neither
    anchor nor negative. With fewer than two such images there are no negatives and the loss is 0
    (no NaN; :class:`RelationshipProbeLoss` says so once in the log).

    ``gather``: the pool is the images of every process of the ``torch.distributed`` run
    (:mod:`.distributed`): each process computes the loss of the global batch, with gradient
    through every process's embeddings.
    """
    if view_a.shape != view_b.shape or view_a.shape[:2] != mask.shape:
        raise ValueError(f"relation_matrix_contrastive expects views [B, n, n] and mask [B, n]; got "
                         f"{tuple(view_a.shape)}, {tuple(view_b.shape)}, {tuple(mask.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (MODEL.PROBE.TEMPERATURE), got {temperature}")

    # Without a head the vector layout follows the padded size: one size for every process's images.
    size = global_max(mask.shape[1], mask.device) if gather and head is None else None

    def embed(view):
        if head is None:
            return standardised_relation_vectors(view, mask, size)
        z, used = head(view, mask)
        return F.normalize(z, dim=1), used

    (z_a, used), (z_b, _) = embed(view_a), embed(view_b)
    participants = used.sum(1) >= 3
    if gather:
        counts = row_counts(mask.shape[0], mask.device)
        z_a, z_b, participants = (gather_rows(t, counts) for t in (z_a, z_b, participants))
    num_images = participants.shape[0]
    z = torch.cat([z_a, z_b])
    logits = z @ z.t() / temperature
    takes_part = participants.repeat(2)
    # Rows of non-participating anchors keep finite logits (they are zeroed below): an all -inf row
    # would give a NaN gradient through log_softmax even when its loss is masked out.
    excluded = torch.eye(2 * num_images, dtype=torch.bool, device=mask.device)
    excluded = excluded | (takes_part[:, None] & ~takes_part[None, :])
    logits = logits.masked_fill(excluded, float("-inf"))
    anchors = torch.arange(2 * num_images, device=mask.device)
    per_anchor = -logits.log_softmax(1)[anchors, anchors.roll(num_images)]
    return (per_anchor * takes_part).sum() / takes_part.sum().clamp(min=1)


class RelationshipProbeLoss(nn.Module):
    """Probe + both losses of ``MODEL.PROBE``; the caller applies WEIGHT and CONTRAST_WEIGHT.

    ``projection_dim`` > 0 builds the MLP projection head of Eq. 6 (``self.head``) over the first
    ``max_objects`` objects of each image; 0 contrasts the standardised matrices without a head.
    """

    def __init__(self, dim, rank=128, max_distance=4, temperature=0.1, projection_dim=256, max_objects=36,
                 gather_negatives=True):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0 (MODEL.PROBE.TEMPERATURE), got {temperature}")
        self.probe = StructuralProbe(dim, rank)
        self.head = RelationMatrixHead(max_objects, projection_dim) if projection_dim else None
        self.max_distance = max_distance
        self.temperature = temperature
        self.gather_negatives = gather_negatives

    def forward(self, features_clean, num_objs, rel_pairs, features_view2=None):
        """features_clean [Σ n_i, D] (images concatenated), num_objs list[int], rel_pairs list of
        (E_i, 2) index tensors (the full annotated graph: :func:`graph_pairs_from_relation_maps`),
        features_view2 same shape as features_clean or None.

        Returns dict(loss_probe, loss_probe_contrast); the contrast is 0 without a second view
        (still connected to the head, so every rank of a distributed run uses the same parameters).
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
            unused = sum(p.sum() for p in self.head.parameters()) * 0.0 if self.head is not None else 0.0
            losses["loss_probe_contrast"] = pred_clean.new_zeros(()) + unused
        else:
            pred_view2 = self.probe.pairwise(pad_per_image(features_view2, num_objs), mask)
            gather = gathers(self.gather_negatives)
            self._tell_without_negatives(num_objs, gather, features_clean.device)
            losses["loss_probe_contrast"] = relation_matrix_contrastive(
                pred_clean, pred_view2, mask, self.temperature, head=self.head, gather=gather)
        return losses

    def _tell_without_negatives(self, num_objs, gather, device):
        """Say once when fewer than two images (of every process, when gathered) take part in the
        contrast: counted from ``num_objs``, on the CPU, as :func:`relation_matrix_contrastive` counts."""
        limit = self.head.max_objects if self.head is not None else max(num_objs)
        taking_part = sum(min(n, limit) >= 3 for n in num_objs)
        if gather:
            taking_part = sum(row_counts(taking_part, device))
        if taking_part < 2:
            tell_once_without_negatives("MODEL.PROBE's contrast (loss_probe_contrast)",
                                        f"{taking_part} image(s) with at least three objects; the loss is 0", gather)


def pad_per_image(features, num_objs):
    """[Σ n_i, D] -> [B, n_max, D], zeros after each image's objects (one scatter, one gather back)."""
    counts = to_device(num_objs, features.device, torch.long)  # no sync (transfer.py)
    image = torch.repeat_interleave(torch.arange(len(num_objs), device=features.device), counts,
                                    output_size=features.shape[0])
    first_row = counts.cumsum(0) - counts
    position = torch.arange(features.shape[0], device=features.device) - first_row[image]
    padded = features.new_zeros(len(num_objs), max(num_objs), *features.shape[1:])
    return padded.index_put((image, position), features)


def graph_pairs_from_relation_maps(relation_maps):
    """SGB's per-image ``relation`` fields ([n_i, n_i], label of (subject, object), 0 = none) -> list
    of (E_i, 2) (subject, object) index tensors: the image's full annotated graph for the probe.

    The predictor's ``rel_pair_idxs`` / ``rel_labels`` hold only what the relation sampler kept
    (at most BATCH_SIZE_PER_IMAGE × POSITIVE_FRACTION foreground pairs per image); the targets
    hold every annotated relation, indexed like the proposals in PredCls and SGCls (SGB's box head
    copies the targets as proposals there).
    """
    return [m.nonzero() for m in relation_maps]


# ----------------------------------------------------------------------------------------------
# The augmented view (§4.1): "a few augmentations at the RoI feature level including HFlip,
# rotations (90°, 180°, and 270°) and bounding box jittering (with scale factors selected from the
# range of [0.8, 1.2])", plus "horizontal flipping (HFlip) at the image level".

ROI_OPS = ("hflip", "rot90", "rot180", "rot270")


def augment_rois(pooled, boxes, image_sizes, image_of_roi, generator=None, jitter=(0.8, 1.2), image_flip_prob=0.5,
                 num_images=None):
    """The second view of a batch of RoIs: the paper's RoI-level augmentations, vectorised.

    What is augmented where (SGB's predictor gets pooled feature *vectors*, fc7 of the box feature
    extractor; flipping or rotating a vector means nothing): the augmentation acts on the RoIAlign
    maps [N, C, h, w] *before* the box head's MLP (the caller re-runs that MLP, SGB's
    ``box_feature_extractor.forward_without_pool``, on the returned maps), and on the boxes that the
    predictor's context turns into position embeddings:

    - RoI level, each RoI independently: one of HFlip, 90°, 180°, 270° rotation of its pooled map,
      uniformly (``ops`` holds which, as an index into ROI_OPS). Every RoI is changed: a view with
      untouched RoIs would make the contrast easier, not more faithful.
    - Box jittering, each RoI independently: width and height scaled about the box centre by
      factors drawn uniformly from ``jitter`` ([0.8, 1.2]), then clipped to the image. The features
      are not re-pooled at the jittered box (the backbone's maps are gone by the predictor); the
      jitter reaches the model through the boxes.
    - Image level, each image with probability ``image_flip_prob``: a horizontal flip, i.e. every
      box of the image mirrored (SGB's ``BoxList.transpose``: x → width − x − 1) and every pooled map
      flipped, composed with the RoI-level op.

    Args:
        pooled: [N, C, h, w] pooled RoI maps (h == w, as RoIAlign's), or None for boxes only.
        boxes: [N, 4] xyxy boxes; image_sizes: [N, 2] (width, height) of each RoI's image;
        image_of_roi: [N] image index of each RoI; num_images: their number, when the caller knows it
            (else read from ``image_of_roi``: a sync on a GPU).
    Returns a dict: pooled (or None), boxes, ops [N], scales [N, 2], image_flipped [N] bool.
    """
    if pooled is not None and (pooled.dim() != 4 or pooled.shape[-1] != pooled.shape[-2]):
        raise ValueError(f"augment_rois: pooled RoI maps must be [N, C, h, h] (square, for rotations), got "
                         f"{tuple(pooled.shape)}")
    num, device = boxes.shape[0], boxes.device
    if pooled is not None and pooled.shape[0] != num:
        raise ValueError(f"augment_rois: {pooled.shape[0]} pooled maps for {num} boxes")
    low, high = jitter
    # Drawn on the CPU (the generator's, and the same draws on any device), copied without a sync.
    ops = torch.randint(len(ROI_OPS), (num,), generator=generator).to(device, non_blocking=True)
    scales = (low + (high - low) * torch.rand(num, 2, generator=generator)).to(device=device, dtype=boxes.dtype,
                                                                               non_blocking=True)
    if num_images is None:
        num_images = int(image_of_roi.max()) + 1 if num else 0
    image_flip = (torch.rand(num_images, generator=generator) < image_flip_prob).to(device, non_blocking=True)
    flipped = image_flip[image_of_roi] if num else torch.zeros(0, dtype=torch.bool, device=device)

    width, height = image_sizes[:, 0].to(boxes.dtype), image_sizes[:, 1].to(boxes.dtype)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) / 2 * scales
    jittered = torch.cat([centre - half, centre + half], 1)
    limit = torch.stack([width - 1, height - 1, width - 1, height - 1], 1)
    jittered = torch.minimum(jittered.clamp(min=0), limit)
    mirrored = torch.stack([width - 1 - jittered[:, 2], jittered[:, 1], width - 1 - jittered[:, 0], jittered[:, 3]], 1)
    out_boxes = torch.where(flipped[:, None], mirrored, jittered)

    out_pooled = None
    if pooled is not None:
        # All four ops on the whole batch, then each RoI's pick: four small copies, no loop.
        candidates = torch.stack([pooled.flip(-1)] + [pooled.rot90(k, (-2, -1)) for k in (1, 2, 3)])
        out_pooled = candidates[ops, torch.arange(num, device=device)]
        out_pooled = torch.where(flipped[:, None, None, None], out_pooled.flip(-1), out_pooled)
    return {"pooled": out_pooled, "boxes": out_boxes, "ops": ops, "scales": scales, "image_flipped": flipped}


def chance_contrast(num_images):
    """ln(2B − 1): the contrast when every view is equally similar to every other (no information)."""
    return math.log(2 * num_images - 1)
