"""Self-supervised relation alignment (seed 002, ``MODEL.ALIGN``): the host-free core.

A mirrored relation predictor (same modules and weights as the original, except the last
projection head) runs a second time on randomly masked inputs; its relation distribution is pulled
towards the original branch's distribution by a KL loss (Eqs. 1-3). This module holds the pieces
that need no host: the masking, the losses, the untied heads, and context managers that let an
adapter run extra forward passes without dropout and without touching running statistics.
"""
import contextlib

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence

ALIGNMENT_HEADS = ("untied_mlp", "untied_linear", "tied")
KL_DIRECTIONS = ("forward", "reverse")
KL_DISTRIBUTIONS = ("softmax", "bernoulli")
# Float attributes through which modules apply their own dropout when training: the host's
# DecoderRNN (`rnn_drop`), tree-LSTMs (`dropout`), nn.RNNBase and nn.MultiheadAttention
# (`dropout`), and modules calling F.dropout / scaled_dot_product_attention themselves.
# Float attributes through which modules drop at run time. (SGB's contexts also hold a
# ``dropout_rate``, but only hand it to their submodules at construction: it is not listed.)
DROPOUT_ATTRIBUTES = ("dropout", "rnn_drop", "dropout_p")


# ----------------------------------------------------------------------------- masking (Eq. 1)
def mask_elements(x, p, generator=None):
    """Zero each element of ``x`` independently with probability ``p`` (Eq. 1).

    Eq. 1 keeps the surviving elements as they are (R_i with probability 1 - p), so, unlike
    dropout, nothing is rescaled by 1 / (1 - p). ``p == 0`` returns ``x`` itself. Gradients flow
    to the kept elements; the caller detaches ``x`` first when the alignment must stop at the input.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"mask probability must be in [0, 1), got {p} (MODEL.ALIGN.MASK_PROB)")
    if p == 0.0:
        return x
    # Draw where the generator lives (a CPU generator cannot fill a CUDA tensor), then move.
    draw_device = generator.device if generator is not None else x.device
    dropped = torch.rand(x.shape, generator=generator, device=draw_device) < p
    return x.masked_fill(dropped.to(x.device), 0)


def mask_packed_sequence(packed, p, generator=None):
    """``mask_elements`` on the ``.data`` of a PackedSequence; the packing layout is kept."""
    if p == 0.0:
        return packed
    return PackedSequence(mask_elements(packed.data, p, generator), packed.batch_sizes,
                          packed.sorted_indices, packed.unsorted_indices)


# ----------------------------------------------------------------------------- losses (Eq. 2)
def _as_rows(logits, name):
    if logits.dim() < 2:
        raise ValueError(f"{name} must be (num_relations, num_classes) or have more leading dims, "
                         f"got shape {tuple(logits.shape)}")
    return logits.reshape(-1, logits.shape[-1]).float()  # float32: fp16 logits stay finite


def _zero_loss(logits):
    # A zero that is still connected to the graph, so backward() and DDP see the usual parameters.
    return logits.float().sum() * 0.0


def alignment_kl(mirror_logits, target_logits, direction="forward", distribution="softmax"):
    """KL between the original (target) and the mirrored relation distributions, mean over rows.

    ``forward``: KL(P_target || P_mirror) = sum P_t (log P_t - log P_m), the target as reference
    distribution, as ``F.kl_div(log_P_mirror, log_P_target, log_target=True)``; ``reverse``:
    KL(P_mirror || P_target). The target is detached: no gradient flows into the original branch.
    ``distribution="bernoulli"`` treats each class as an independent sigmoid (focal/sigmoid
    classifiers) and sums the per-class Bernoulli KLs. Everything is computed in float32 log space.
    """
    if direction not in KL_DIRECTIONS:
        raise ValueError(f"KL direction must be one of {KL_DIRECTIONS}, got {direction!r}")
    if distribution not in KL_DISTRIBUTIONS:
        raise ValueError(f"KL distribution must be one of {KL_DISTRIBUTIONS}, got {distribution!r}")
    if mirror_logits.shape != target_logits.shape:
        raise ValueError(f"mirror logits {tuple(mirror_logits.shape)} and target logits "
                         f"{tuple(target_logits.shape)} must have the same shape")
    mirror = _as_rows(mirror_logits, "mirror_logits")
    target = _as_rows(target_logits.detach(), "target_logits")
    if mirror.shape[0] == 0:
        return _zero_loss(mirror_logits)
    if distribution == "softmax":
        log_mirror = [F.log_softmax(mirror, dim=-1)]
        log_target = [F.log_softmax(target, dim=-1)]
    else:  # the two outcomes of each class: log sigma(z) and log sigma(-z)
        log_mirror = [F.logsigmoid(mirror), F.logsigmoid(-mirror)]
        log_target = [F.logsigmoid(target), F.logsigmoid(-target)]
    if direction == "reverse":
        log_mirror, log_target = log_target, log_mirror
    kl = 0.0
    for log_p, log_q in zip(log_target, log_mirror):  # log_p is the reference distribution
        p = log_p.exp()
        kl = kl + torch.where(p > 0, p * (log_p - log_q), 0.0)  # 0 log 0 = 0, not NaN
    return kl.sum(dim=-1).mean()


def supervised_alignment_loss(mirror_logits, labels):
    """Table 3 'SA': the mirror gets the host's supervised relation loss instead of the KL.

    Cross-entropy over the predicate labels of every sampled pair, background (0) included, mean
    over pairs, as the host's relation loss does.
    """
    logits = _as_rows(mirror_logits, "mirror_logits")
    labels = labels.reshape(-1).long()
    if labels.shape[0] != logits.shape[0]:
        raise ValueError(f"{labels.shape[0]} labels for {logits.shape[0]} relation logits rows")
    if logits.shape[0] == 0:
        return _zero_loss(mirror_logits)
    if ((labels < 0) | (labels >= logits.shape[1])).any():
        raise ValueError(f"relation labels must lie in [0, {logits.shape[1]}), got values in "
                         f"[{labels.min().item()}, {labels.max().item()}]")
    return F.cross_entropy(logits, labels)


# ----------------------------------------------------------------------------- heads (§3.2, §3.3)
class UntiedMLPHead(nn.Sequential):
    """The mirror's untied 3-layer MLP head with ReLU (§3.3): Linear-ReLU-Linear-ReLU-Linear.

    The paper does not give the hidden size; it defaults to ``in_dim``. Layers keep PyTorch's
    default initialisation: the head is new, there are no original weights to copy.
    """

    def __init__(self, in_dim, out_dim, hidden_dim=None):
        hidden_dim = hidden_dim or in_dim
        super().__init__(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True),
                         nn.Linear(hidden_dim, hidden_dim), nn.ReLU(inplace=True),
                         nn.Linear(hidden_dim, out_dim))
        self.in_features, self.out_features = in_dim, out_dim


def untied_linear_copy(layer):
    """An untied copy of the original last layer (§3.2): new Parameters, same initial values."""
    if not isinstance(layer, nn.Linear):
        raise TypeError(f"untied_linear_copy expects an nn.Linear, got {type(layer).__name__}")
    copy = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None,
                     device=layer.weight.device, dtype=layer.weight.dtype)
    with torch.no_grad():
        copy.weight.copy_(layer.weight)
        if layer.bias is not None:
            copy.bias.copy_(layer.bias)
    return copy


def build_alignment_head(kind, layer):
    """The mirror's projection head replacing ``layer`` (``MODEL.ALIGN.HEAD``).

    "untied_mlp" and "untied_linear" return a new module with ``layer``'s in/out features.
    "tied" (Table 3 'PH') returns None: the caller runs the original ``layer`` itself. Returning
    ``layer`` instead would invite storing it as a second submodule, which registers the same
    Parameters under two names (doubled in state_dict, checkpoints that no longer match the host).
    """
    if kind not in ALIGNMENT_HEADS:
        raise ValueError(f"alignment head must be one of {ALIGNMENT_HEADS}, got {kind!r} "
                         f"(MODEL.ALIGN.HEAD)")
    if kind == "tied":
        return None
    if kind == "untied_linear":
        return untied_linear_copy(layer)
    head = UntiedMLPHead(layer.in_features, layer.out_features)
    return head.to(device=layer.weight.device, dtype=layer.weight.dtype)


# ----------------------------------------------------------------------------- extra passes
@contextlib.contextmanager
def frozen_running_stats(module):
    """Extra forward passes inside leave every buffer of ``module`` as it was on entry.

    Covers in-place updates (BatchNorm running_mean/var, num_batches_tracked) and buffers that
    code reassigns (``self.avg = self.avg * 0.99 + ...``): on exit the original tensor object is put
    back and, if it was written in place, its saved values are copied back. Only buffers are
    cloned, never parameters. Forwards inside still run in training mode (batch statistics).
    """
    saved = [(owner, name, buffer, buffer.detach().clone())
             for owner in module.modules()
             for name, buffer in owner._buffers.items() if buffer is not None]
    try:
        yield module
    finally:
        for owner, name, buffer, values in saved:
            owner._buffers[name] = buffer
            # Through .data, which has its own version counter: the clean pass's BatchNorm saved
            # these tensors for backward, and a visible in-place write would make that backward
            # fail. (BatchNorm's own in-place update does not bump the version either.)
            buffer.data.copy_(values)


def _dropout_modules(module):
    return [m for m in module.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]


def _dropout_attributes(module):
    """(owner, attribute name, value) for every float dropout attribute that is > 0."""
    return [(m, name, getattr(m, name)) for m in module.modules() for name in DROPOUT_ATTRIBUTES
            if isinstance(getattr(m, name, None), (int, float))
            and not isinstance(getattr(m, name), bool) and getattr(m, name) > 0]


def dropout_sites(module):
    """The submodules of ``module`` that would drop something in training mode, when called."""
    sites = [m for m in _dropout_modules(module) if m.p > 0]
    sites += [owner for owner, _, _ in _dropout_attributes(module) if owner not in sites]
    return sites


def has_dropout(module):
    """True if any part of ``module`` would drop something in training mode."""
    return bool(dropout_sites(module))


@contextlib.contextmanager
def dropout_used(sites):
    """Yields a list that is non-empty after the block if any of ``sites`` was called inside it.

    A predictor may own dropout that a given mode never calls (SGB builds Motifs' SGCls decoder,
    with dropout, also for PredCls): only dropout that ran makes the clean pass unfit as a target.
    """
    used = []
    handles = [site.register_forward_pre_hook(lambda *_: used.append(True) if not used else None)
               for site in sites]
    try:
        yield used
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def dropout_disabled(module):
    """No dropout anywhere inside ``module``, the rest of it left in its current mode.

    Dropout modules (nn.Dropout*, AlphaDropout, ...) are put in eval mode alone. Modules that drop
    through a float attribute (``DROPOUT_ATTRIBUTES``: nn.LSTM/GRU between layers,
    nn.MultiheadAttention, the host's tree-LSTMs and DecoderRNN) get it set to 0.0 rather than
    eval(): a cuDNN RNN refuses backward in eval mode, and the mirror needs gradients. BatchNorm
    and any other ``self.training`` branch keep seeing training mode. Restored on exit.
    """
    dropouts = [(m, m.training) for m in _dropout_modules(module)]
    attributes = _dropout_attributes(module)
    try:
        for m, _ in dropouts:
            m.train(False)
        for owner, name, _ in attributes:
            setattr(owner, name, 0.0)
        yield module
    finally:
        for m, was_training in dropouts:
            m.train(was_training)
        for owner, name, value in attributes:
            setattr(owner, name, value)
