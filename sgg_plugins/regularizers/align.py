"""Self-supervised relation alignment (seed 002, ``MODEL.ALIGN``): the host-free core.

A mirrored relation predictor (same modules and weights as the original, except the last
projection head) runs a second time on randomly masked inputs; its relation distribution is pulled
towards the original branch's distribution by a KL loss (Eqs. 1-3). This module holds the pieces
that need no host: the masking, the losses, the untied heads, and context managers that let an
adapter run extra forward passes without dropout, without touching running statistics, or with
batch-statistics normalisation running on its running statistics (MODEL.MRC's one-object pass).
"""
import contextlib

import torch
import torch.nn.functional as F
from torch import nn

KL_DIRECTIONS = ("forward", "reverse")
KL_DISTRIBUTIONS = ("softmax", "bernoulli")
KL_REDUCTIONS = ("relation", "element")
MASK_UNITS = ("element", "relation")
# Float attributes through which modules drop at run time: the host's DecoderRNN (`rnn_drop`),
# tree-LSTMs (`dropout`), nn.RNNBase and nn.MultiheadAttention (`dropout`), and modules calling
# F.dropout / scaled_dot_product_attention themselves. (SGB's contexts also hold a
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


def mask_rows(x, p, generator=None):
    """Zero each row ``x[i]`` (one relation's or object's whole vector) with probability ``p``."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"mask probability must be in [0, 1), got {p} (MODEL.ALIGN.MASK_PROB)")
    if p == 0.0:
        return x
    draw_device = generator.device if generator is not None else x.device
    dropped = torch.rand(x.shape[:1], generator=generator, device=draw_device) < p
    return x.masked_fill(dropped.to(x.device).view(-1, *([1] * (x.dim() - 1))), 0)


def mask_input(x, p, unit="element", generator=None):
    """Eq. 1 with MODEL.ALIGN.MASK_UNIT: "relation" zeroes whole rows R_i, "element" scalars.

    §3.1.1: R ∈ R^{N×d}, "N is the number of relations and d is the dimensionality of feature
    vector for each relation … for each element R_i in R, the masking operation independently zeros
    it out with probability p". R_i indexes a row, one relation's feature vector; the SGTR form
    (§3.2) likewise hides a whole key vector from a query when it sets one attention entry to
    −inf. "relation" is therefore the default; "element" (each scalar) is the other reading of the
    word "element" and is offered as an option.
    """
    if unit not in MASK_UNITS:
        raise ValueError(f"mask unit must be one of {MASK_UNITS}, got {unit!r} (MODEL.ALIGN.MASK_UNIT)")
    return mask_elements(x, p, generator) if unit == "element" else mask_rows(x, p, generator)


# ----------------------------------------------------------------------------- losses (Eq. 2)
def _as_rows(logits, name):
    if logits.dim() < 2:
        raise ValueError(f"{name} must be (num_relations, num_classes) or have more leading dims, "
                         f"got shape {tuple(logits.shape)}")
    return logits.reshape(-1, logits.shape[-1]).float()  # float32: fp16 logits stay finite


def _zero_loss(logits):
    # A zero that is still connected to the graph, so backward() and DDP see the usual parameters.
    return logits.float().sum() * 0.0


def alignment_kl(mirror_logits, target_logits, direction="forward", distribution="softmax", reduction="relation"):
    """KL between the original (target) and the mirrored relation distributions.

    ``forward``: KL(P_target || P_mirror) = sum P_t (log P_t - log P_m), the target as reference
    distribution, as ``F.kl_div(log_P_mirror, log_P_target, log_target=True)``; ``reverse``:
    KL(P_mirror || P_target). Eq. 2 is written KL(P_masked || P_original), i.e. ``reverse``; its
    text says "we fix P_original and treat it as the target in the KL loss to optimize P_masked",
    which is how a distillation KL is conventionally written with the target as reference, i.e.
    ``forward``. docs/methods.md takes the text's reading as the default; both are offered. The
    target is detached: no gradient flows into the original branch.
    ``distribution="bernoulli"`` treats each class as an independent sigmoid (focal/sigmoid
    classifiers) and sums the per-class Bernoulli KLs. Everything is computed in float32 log space.

    ``reduction`` (MODEL.ALIGN.KL_REDUCTION; the paper gives λ = 10 but not the reduction):
    "relation" sums over classes and averages over relations (a true KL per relation,
    ``reduction="batchmean"``); "element" averages over classes too (``F.kl_div``'s default
    ``reduction="mean"``), which is smaller by the number of classes (51 on VG-50).
    """
    if reduction not in KL_REDUCTIONS:
        raise ValueError(f"KL reduction must be one of {KL_REDUCTIONS}, got {reduction!r}")
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
        # 0 log 0 = 0. Both logs are replaced where p = 0 *before* the product: a −inf there would
        # give 0 · inf = NaN in the backward of the unselected branch of torch.where.
        support = p > 0
        kl = kl + p * (torch.where(support, log_p, 0.0) - torch.where(support, log_q, 0.0))
    return kl.sum(dim=-1).mean() if reduction == "relation" else kl.mean()


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

    The paper gives no hidden width (MODEL.ALIGN.HEAD_HIDDEN_DIM). Layers keep PyTorch's default
    initialisation: the head is new, there are no original weights to copy.
    """

    def __init__(self, in_dim, out_dim, hidden_dim):
        super().__init__(nn.Linear(in_dim, hidden_dim), nn.ReLU(),
                         nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
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


def batch_statistics_norms(module):
    """(name, submodule) for every normalisation layer inside ``module`` that normalises with the
    statistics of the batch in training mode: BatchNorm1d/2d/3d, their lazy forms and SyncBatchNorm
    (every subclass of ``_BatchNorm``), found by type, whatever their names. LayerNorm, GroupNorm and
    InstanceNorm normalise each sample with its own statistics and are not listed."""
    return [(name, m) for name, m in module.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@contextlib.contextmanager
def running_statistics(module, statistics=None):
    """Inside the block, every batch-statistics normalisation layer of ``module``
    (:func:`batch_statistics_norms`) normalises each sample with its running statistics.

    Such a layer in training mode normalises with the mean and variance of the whole batch, so one
    sample's output depends on every other sample of the batch; with running statistics it depends
    on that sample alone. Those layers alone are put in eval mode: their running statistics are
    read, never updated (nor ``num_batches_tracked``), their affine weight and bias still receive
    gradient, and the rest of ``module`` keeps its mode (dropout, the host's ``self.training``
    branches). ``statistics`` (optional): layer name (relative to ``module``) -> dict with the
    ``running_mean`` and ``running_var`` to normalise with instead of the layer's current buffers,
    e.g. clones taken before the step's clean pass updated them with the batch; the buffers
    themselves are not written. On exit every layer's ``training`` flag and buffer objects are
    exactly what they were on entry. A layer built with ``track_running_stats=False`` has no
    running statistics (it normalises with the batch's even in eval mode): ValueError.
    """
    norms = batch_statistics_norms(module)
    untracked = [name for name, m in norms if m.running_mean is None or m.running_var is None]
    if untracked:
        raise ValueError(f"{', '.join(untracked)}: built with track_running_stats=False, no running statistics "
                         f"to normalise with (they use the batch's statistics even in eval mode)")
    statistics = statistics or {}
    saved = [(m, m.training, dict(m._buffers)) for _, m in norms]
    try:
        for name, m in norms:
            for key in ("running_mean", "running_var"):
                if key in statistics.get(name, {}):
                    m._buffers[key] = statistics[name][key]
            m.training = False  # the layer alone (train() would recurse into any submodule)
        yield [m for _, m in norms]
    finally:
        for m, was_training, buffers in saved:
            m.training = was_training
            m._buffers.update(buffers)


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


@contextlib.contextmanager
def dropout_calls(sites):
    """Yields the set of ``sites`` that were called inside the block (filled as it runs).

    A predictor may own dropout that a given mode never calls (SGB builds Motifs' SGCls decoder,
    with dropout, also for PredCls): only dropout that ran, and ran inside the part a later pass
    reruns, makes the clean pass unfit as that pass's target.
    """
    called = set()
    handles = [site.register_forward_pre_hook(lambda module, _args: called.add(module)) for site in sites]
    try:
        yield called
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


# ----------------------------------------------------------------------------- attention-logit masks
def attention_logit_mask(batch, heads, queries, keys, p, key_padding_mask=None, generator=None, device=None):
    """The boolean mask of the SGTR form (§3.2), for ``nn.MultiheadAttention``'s ``attn_mask``.

    "each element in the attention matrix has an independent probability p to be set to −inf
    before fed to the softmax operation": shape (batch * heads, queries, keys), True where the
    logit is masked, drawn independently per element (per head too). A query row whose keys would
    all be masked, by the draw together with the ``key_padding_mask`` (batch, keys) the block
    already gets, would give a softmax of −inf only, i.e. NaN; such a row keeps only the padding
    (the draw is dropped for that row), so the masked attention is always a distribution.
    """
    drawn = torch.rand((batch * heads, queries, keys), generator=generator, device=device) < p
    blocked = drawn
    if key_padding_mask is not None:
        padding = key_padding_mask.to(device=drawn.device, dtype=torch.bool)
        blocked = drawn | padding.repeat_interleave(heads, dim=0)[:, None, :]
    return drawn & ~blocked.all(dim=-1, keepdim=True)
