"""Contrastive negatives from every process of a ``torch.distributed`` run (``MODEL.SGG_PLUGINS.GATHER_NEGATIVES``).

A contrastive loss computed on one process's batch sees only that process's images as negatives:
with SGB's recipe of 12 images over several GPUs, or one image per process, most or all of them are
missing (PROBE's contrast is exactly 0 with one image per process). As SimCLR and OpenCLIP do
(``ClipLoss`` with ``gather_with_grad``), each process gathers the embeddings of every process, with
gradient, and computes the loss of the whole global batch:

- the loss value on every process is the one a single process would compute on all the images;
- the gradient that reaches each process's own rows is the sum, over processes, of what their
  losses send back through the gather (``torch.distributed.nn.functional.all_gather``); every
  process computes the same loss, so that is ``world_size`` times the single-process gradient, and
  DDP's average over processes gives the single-process gradient back exactly.

Rows may differ in number from process to process (relations, images): each gather first shares
the counts, pads to the largest and trims after. Every process must make the same gathers in the
same order (collectives), also those with nothing to add: the callers decide from global counts.
"""

import logging
import warnings

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn

logger = logging.getLogger(__name__)
_told_without_negatives = set()


def gathers(enabled):
    """Whether negatives are gathered: ``enabled`` and a process group of more than one process."""
    return bool(enabled) and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def row_counts(count, device):
    """Every process's ``count`` (an int), in rank order: one small all_gather."""
    local = torch.tensor([int(count)], device=device)
    counts = [torch.zeros_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, local)
    return [int(c) for c in torch.cat(counts).tolist()]


def gather_rows(tensor, counts=None):
    """The rows of ``tensor`` of every process, concatenated in rank order.

    Floating-point rows keep their gradient: what the loss sends back to another process's copy of
    this process's rows returns here. ``counts`` (from :func:`row_counts`) spares the count exchange
    when the caller has it.
    """
    counts = row_counts(tensor.shape[0], tensor.device) if counts is None else counts
    padded = torch.nn.functional.pad(tensor, [0, 0] * (tensor.dim() - 1) + [0, max(counts) - tensor.shape[0]])
    if tensor.is_floating_point() and tensor.requires_grad:
        # The public differentiable gather (OpenCLIP's): torch 2.14 marks it deprecated in favour of a
        # private module's, but it is the same collective and gradient, and every torch has it.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            parts = dist_nn.all_gather(padded)
    else:
        parts = [torch.empty_like(padded) for _ in counts]
        dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:count] for part, count in zip(parts, counts)])


def global_max(value, device):
    """The largest ``value`` (an int) over the processes."""
    return max(row_counts(value, device))


def tell_once_without_negatives(loss_name, why, gathered):
    """Log, once per process and loss, that ``loss_name`` had no negatives in a step (its value is
    then 0 or carries no contrast), and why; silence would read as a converged loss."""
    if loss_name in _told_without_negatives:
        return
    _told_without_negatives.add(loss_name)
    scope = ("the batch of every process" if gathered else
             "this process's batch (negatives are not gathered across processes: no process group, one "
             "process, or MODEL.SGG_PLUGINS.GATHER_NEGATIVES False)")
    logger.warning("%s has no negatives in %s: %s. Said once.", loss_name, scope, why)
