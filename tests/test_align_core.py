"""Host-free core of relation alignment (seed 002): masking, losses, heads, extra-pass helpers."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from sgg_plugins.regularizers.align import (
    UntiedMLPHead, alignment_kl, dropout_disabled, frozen_running_stats,
    dropout_sites, mask_elements, mask_input, supervised_alignment_loss,
    untied_linear_copy)

# 2 relations x 3 predicates; logits are log-probabilities plus a per-row offset (softmax ignores it)
TARGET_P = [[0.5, 0.25, 0.25], [0.2, 0.3, 0.5]]
MIRROR_P = [[1 / 3, 1 / 3, 1 / 3], [0.5, 0.3, 0.2]]


def logits_of(probs, offset=(0.0, 3.0)):
    return torch.tensor(probs).log() + torch.tensor(offset)[:, None]


# ----------------------------------------------------------------------------- KL
def test_forward_kl_matches_hand_computation():
    # sum_c P_t (log P_t - log P_m), per row, then the mean over the 2 rows
    row0 = 0.5 * math.log(0.5 * 3) + 0.25 * math.log(0.25 * 3) + 0.25 * math.log(0.25 * 3)
    row1 = 0.2 * math.log(0.2 / 0.5) + 0.3 * math.log(0.3 / 0.3) + 0.5 * math.log(0.5 / 0.2)
    loss = alignment_kl(logits_of(MIRROR_P), logits_of(TARGET_P), direction="forward")
    assert loss.item() == pytest.approx((row0 + row1) / 2, rel=1e-5)
    log_m, log_t = logits_of(MIRROR_P).log_softmax(-1), logits_of(TARGET_P).log_softmax(-1)
    reference = F.kl_div(log_m, log_t, log_target=True, reduction="batchmean")
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)


def test_reverse_kl_matches_hand_computation():
    # sum_c P_m (log P_m - log P_t)
    third = 1 / 3
    row0 = third * math.log(third / 0.5) + 2 * third * math.log(third / 0.25)
    row1 = 0.5 * math.log(0.5 / 0.2) + 0.3 * math.log(1.0) + 0.2 * math.log(0.2 / 0.5)
    loss = alignment_kl(logits_of(MIRROR_P), logits_of(TARGET_P), direction="reverse")
    assert loss.item() == pytest.approx((row0 + row1) / 2, rel=1e-5)


def test_element_reduction_is_the_relation_reduction_over_the_class_count():
    mirror, target = logits_of(MIRROR_P), logits_of(TARGET_P)
    per_relation = alignment_kl(mirror, target, reduction="relation")
    per_element = alignment_kl(mirror, target, reduction="element")
    assert per_element.item() == pytest.approx(per_relation.item() / 3, rel=1e-6)
    log_m, log_t = mirror.log_softmax(-1), target.log_softmax(-1)
    assert per_element.item() == pytest.approx(F.kl_div(log_m, log_t, log_target=True).item(), rel=1e-5)
    with pytest.raises(ValueError, match="reduction"):
        alignment_kl(mirror, target, reduction="sum")


def test_kl_with_minus_inf_logits_has_finite_gradients_both_directions():
    # A class the mirror rules out (−inf logit): P_mirror = 0 there. Reverse KL used to give NaN
    # gradients through the unselected branch of 0 log 0.
    for direction in ("forward", "reverse"):
        mirror = torch.tensor([[2.0, float("-inf"), 0.5], [0.1, 0.2, 0.3]], requires_grad=True)
        target = torch.tensor([[1.0, -3.0, 0.0], [0.3, 0.2, 0.1]])
        if direction == "forward":
            target = torch.tensor([[1.0, float("-inf"), 0.0], [0.3, 0.2, 0.1]])
        loss = alignment_kl(mirror, target, direction)
        loss.backward()
        assert torch.isfinite(loss), direction
        assert not torch.isnan(mirror.grad).any(), direction


def test_kl_is_zero_for_identical_branches_when_nothing_is_masked():
    features = torch.randn(6, 8)
    head = nn.Linear(8, 5)
    target = head(features)
    mirror = head(mask_elements(features, 0.0))
    for direction in ("forward", "reverse"):
        assert alignment_kl(mirror, target, direction).item() == pytest.approx(0.0, abs=1e-7)


def test_bernoulli_kl_is_cross_entropy_minus_entropy_per_class():
    mirror, target = torch.randn(4, 7), torch.randn(4, 7)
    p = target.sigmoid()
    cross = F.binary_cross_entropy_with_logits(mirror, p, reduction="none").sum(-1)
    entropy = F.binary_cross_entropy_with_logits(target, p, reduction="none").sum(-1)
    loss = alignment_kl(mirror, target, distribution="bernoulli")
    assert loss.item() == pytest.approx((cross - entropy).mean().item(), rel=1e-5)


def test_kl_gradient_reaches_the_mirror_only():
    features = torch.randn(5, 8)
    original_head, mirror_head = nn.Linear(8, 4), nn.Linear(8, 4)
    for direction in ("forward", "reverse"):
        original_head.zero_grad(set_to_none=True)
        mirror_head.zero_grad(set_to_none=True)
        alignment_kl(mirror_head(features), original_head(features), direction).backward()
        assert original_head.weight.grad is None and original_head.bias.grad is None
        assert mirror_head.weight.grad.abs().sum() > 0


def test_kl_with_zero_and_one_row_and_fp16_extremes_is_finite():
    empty = torch.zeros(0, 51, requires_grad=True)
    loss = alignment_kl(empty, torch.zeros(0, 51))
    assert loss.dim() == 0 and loss.item() == 0.0 and loss.dtype == torch.float32
    loss.backward()
    assert empty.grad.shape == (0, 51)

    mirror = torch.tensor([[60000.0, -60000.0, 0.0]], dtype=torch.float16, requires_grad=True)
    target = torch.tensor([[-60000.0, 60000.0, 0.0]], dtype=torch.float16)
    for direction in ("forward", "reverse"):
        loss = alignment_kl(mirror, target, direction)
        loss.backward()
        assert torch.isfinite(loss) and loss.item() > 1e4
        assert torch.isfinite(mirror.grad).all()
        mirror.grad = None


def test_kl_rejects_mismatched_shapes_and_unknown_direction():
    with pytest.raises(ValueError, match="same shape"):
        alignment_kl(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="direction"):
        alignment_kl(torch.zeros(2, 3), torch.zeros(2, 3), direction="backward")


# ----------------------------------------------------------------------------- supervised (SA)
def test_supervised_loss_is_the_hosts_cross_entropy_with_background():
    logits = torch.randn(6, 5)
    labels = torch.tensor([0, 0, 3, 1, 0, 4])
    loss = supervised_alignment_loss(logits, labels)
    assert loss.item() == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-6)
    assert supervised_alignment_loss(logits, torch.tensor([1, 2, 3, 1, 0, 4])).item() != loss.item()


def test_supervised_loss_zero_rows_and_bad_labels():
    empty = torch.zeros(0, 5, requires_grad=True)
    loss = supervised_alignment_loss(empty, torch.zeros(0, dtype=torch.long))
    assert loss.item() == 0.0
    loss.backward()
    one = supervised_alignment_loss(torch.tensor([[3e4, -3e4]], dtype=torch.float16), torch.tensor([1]))
    assert torch.isfinite(one)
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        supervised_alignment_loss(torch.zeros(2, 5), torch.tensor([0, 5]))


# ----------------------------------------------------------------------------- masking
@pytest.mark.parametrize("p", [0.05, 0.1, 0.3, 0.5])
def test_mask_zeroes_a_fraction_p_without_rescaling(p):
    x = torch.ones(200_000)
    masked = mask_elements(x, p, torch.Generator().manual_seed(0))
    assert (masked == 0).float().mean().item() == pytest.approx(p, abs=0.005)
    assert set(masked.unique().tolist()) <= {0.0, 1.0}  # kept values unchanged: no 1 / (1 - p)
    again = mask_elements(x, p, torch.Generator().manual_seed(0))
    assert torch.equal(masked, again)


def test_mask_with_p_zero_is_the_input_itself_and_bad_p_fails():
    x = torch.randn(3, 4)
    assert mask_elements(x, 0.0) is x
    with pytest.raises(ValueError, match="MASK_PROB"):
        mask_elements(x, 1.0)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_relation_unit_masks_whole_rows_with_probability_p(p):
    x = torch.rand(20000, 8) + 1.0  # no zero before masking
    masked = mask_input(x, p, unit="relation", generator=torch.Generator().manual_seed(0))
    zero_rows = (masked == 0).all(1)
    assert ((masked == 0).any(1) == zero_rows).all()  # a row is kept whole or zeroed whole
    assert abs(zero_rows.float().mean().item() - p) < 0.015
    assert torch.equal(masked[~zero_rows], x[~zero_rows])  # kept rows unscaled


def test_element_unit_masks_scalars_independently():
    x = torch.rand(4000, 16) + 1.0
    masked = mask_input(x, 0.1, unit="element", generator=torch.Generator().manual_seed(0))
    zeros = masked == 0
    assert abs(zeros.float().mean().item() - 0.1) < 0.01
    # Rows are not zeroed whole: the chance of a whole 16-wide row is 1e-16.
    assert not zeros.all(1).any() and zeros.any(1).float().mean() > 0.7
    with pytest.raises(ValueError, match="MASK_UNIT"):
        mask_input(x, 0.1, unit="row")


# ----------------------------------------------------------------------------- heads
def test_untied_mlp_head_layers():
    head = UntiedMLPHead(16, 51, hidden_dim=32)
    kinds = [type(m) for m in head]
    assert kinds == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert [(m.in_features, m.out_features) for m in head if isinstance(m, nn.Linear)] == \
        [(16, 32), (32, 32), (32, 51)]
    assert head(torch.randn(3, 16)).shape == (3, 51)


def test_untied_linear_copy_has_equal_values_but_its_own_parameters():
    layer = nn.Linear(8, 5)
    copy = untied_linear_copy(layer)
    assert torch.equal(copy.weight, layer.weight) and torch.equal(copy.bias, layer.bias)
    assert copy.weight is not layer.weight and copy.weight.data_ptr() != layer.weight.data_ptr()
    with torch.no_grad():
        copy.weight.add_(1.0)
    assert not torch.equal(copy.weight, layer.weight)


# ----------------------------------------------------------------------------- extra passes
class MovingAverage(nn.Module):
    """Reassigns its registered buffer on every training forward, like the Causal predictor."""

    def __init__(self, dim):
        super().__init__()
        self.register_buffer("avg", torch.zeros(dim))

    def forward(self, x):
        if self.training:
            with torch.no_grad():
                self.avg = self.avg * 0.9 + 0.1 * x.mean(0)
        return x


def test_frozen_running_stats_restores_inplace_and_reassigned_buffers():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), MovingAverage(4)).train()
    model(torch.randn(8, 4))
    batchnorm, moving = model[1], model[2]
    before = {name: b.clone() for name, b in model.named_buffers()}
    avg_object = moving.avg
    x = torch.randn(8, 4) * 5 + 3
    with frozen_running_stats(model):
        out = model(x)
        model(x)
        hidden = model[0](x)
        batch_normed = (hidden - hidden.mean(0)) / (hidden.var(0, unbiased=False) + 1e-5).sqrt()
        assert torch.allclose(out, batch_normed * batchnorm.weight + batchnorm.bias, atol=1e-5)
        assert not torch.equal(batchnorm.running_mean, before["1.running_mean"])
        assert not torch.equal(moving.avg, before["2.avg"])
    for name, b in model.named_buffers():
        assert torch.equal(b, before[name]), name
    assert moving.avg is avg_object and "avg" in moving._buffers


def test_clean_pass_backward_still_works_after_a_frozen_extra_pass():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)).train()
    clean_loss = model(torch.randn(8, 4)).pow(2).sum()
    with frozen_running_stats(model):
        extra_loss = model(torch.randn(8, 4)).pow(2).sum()
    (clean_loss + extra_loss).backward()  # restoring the stats must not break the saved graph
    assert model[0].weight.grad is not None


def test_frozen_running_stats_restores_on_exception():
    model = nn.BatchNorm1d(3).train()
    before = model.running_var.clone()
    with pytest.raises(RuntimeError, match="boom"):
        with frozen_running_stats(model):
            model(torch.randn(5, 3) * 4)
            raise RuntimeError("boom")
    assert torch.equal(model.running_var, before) and model.num_batches_tracked.item() == 0


class OwnMaskDropout(nn.Module):
    """Drops through a float attribute, like the host's tree-LSTMs and DecoderRNN."""

    def __init__(self, dropout):
        super().__init__()
        self.dropout = dropout

    def forward(self, x):
        if self.dropout > 0.0 and self.training:
            x = x * (torch.rand_like(x) > self.dropout).float() / (1 - self.dropout)
        return x


class DropoutEverywhere(nn.Module):
    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.5)
        self.lstm = nn.LSTM(4, 4, num_layers=2, dropout=0.5)
        self.own = OwnMaskDropout(0.5)
        self.norm = nn.BatchNorm1d(4)
        self.attention = nn.TransformerEncoderLayer(4, 2, dim_feedforward=8, dropout=0.5)

    def forward(self, x):  # x: (time, batch, 4)
        x, _ = self.lstm(self.drop(x))
        x = self.own(x)
        x = self.norm(x.reshape(-1, 4)).reshape(x.shape)
        return self.attention(x)


def test_dropout_disabled_makes_training_forward_deterministic_and_restores():
    torch.manual_seed(0)
    model = DropoutEverywhere().train()
    x = torch.randn(3, 5, 4)
    assert not torch.equal(model(x), model(x))  # dropout is really active
    with dropout_disabled(model):
        assert model.norm.training and model.lstm.training and model.own.training
        first = model(x)
        assert torch.equal(first, model(x))
        first.sum().backward()  # the mirror still gets gradients through the LSTM
    assert model.drop.training and model.drop.p == 0.5
    assert model.lstm.dropout == 0.5 and model.own.dropout == 0.5
    assert model.attention.self_attn.dropout == 0.5 and model.attention.dropout1.training
    assert not torch.equal(model(x), model(x))


def test_dropout_disabled_restores_on_exception():
    model = DropoutEverywhere().train()
    with pytest.raises(RuntimeError, match="boom"):
        with dropout_disabled(model):
            raise RuntimeError("boom")
    assert model.drop.training and model.lstm.dropout == 0.5 and model.own.dropout == 0.5


def has_dropout(module):
    return bool(dropout_sites(module))


def test_dropout_sites_coverage():
    assert not has_dropout(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Dropout(0.0)))
    assert not has_dropout(nn.LSTM(4, 4, num_layers=2, dropout=0.0))
    assert not has_dropout(OwnMaskDropout(0))
    assert has_dropout(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1)))
    assert has_dropout(nn.LSTM(4, 4, num_layers=2, dropout=0.2))
    assert has_dropout(nn.MultiheadAttention(4, 2, dropout=0.1))
    assert has_dropout(OwnMaskDropout(0.3))
    rnn_drop = nn.Module()
    rnn_drop.rnn_drop = 0.2
    assert has_dropout(rnn_drop)


def test_construction_only_dropout_rate_is_not_dropout():
    context = nn.Module()
    context.dropout_rate = 0.2  # SGB's contexts keep the rate they handed to their submodules
    assert not has_dropout(context)


def test_dropout_calls_reports_only_sites_that_ran():
    from sgg_plugins.regularizers.align import dropout_calls, dropout_sites

    model = nn.Module()
    model.used = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
    model.unused = nn.LSTM(4, 4, num_layers=2, dropout=0.2)
    sites = dropout_sites(model)
    assert set(map(id, sites)) == {id(model.used[1]), id(model.unused)}
    with dropout_calls([model.unused]) as called:
        model.used(torch.randn(2, 4))
    assert not called
    with dropout_calls(sites) as called:
        model.used(torch.randn(2, 4))
    assert called == {model.used[1]}
    assert not any(s._forward_pre_hooks for s in sites)
