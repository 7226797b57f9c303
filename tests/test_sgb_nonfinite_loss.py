"""A non-finite training loss stops the run (``sgg_plugins.hosts.sgb.nonfinite_loss``).

Host-free tests drive the hooks on stand-ins with the host's signatures: ``HostMetricLogger``
follows ``maskrcnn_benchmark.utils.metric_logger`` (tensors turned into floats by ``.item()``,
kept in each meter's ``deque``), ``clip_grad_norm`` the host's (total norm of the named parameters'
gradients). The host tests train through the real launcher with ``SOLVER.BASE_LR 1e6``, which
with seed 0 gives a finite loss at iterations 1 and 2 and NaN from iteration 3 on.
"""

import os
import subprocess
from collections import defaultdict, deque
from types import SimpleNamespace

import pytest
import torch

from conftest import host_command, needs_sgb
from sgg_plugins.config import ConfigError, add_sgg_plugins_config, validate_config
from sgg_plugins.hosts.sgb import nonfinite_loss, training_log
from sgg_plugins.hosts.sgb.nonfinite_loss import NonFiniteLossError

ADVICE = ("lower SOLVER.BASE_LR, or set MODEL.SGG_PLUGINS.MAX_NONFINITE_STEPS N to skip up to N such "
          "iterations in a row")


class SmoothedValue:
    def __init__(self):
        self.deque = deque(maxlen=20)

    def update(self, value):
        self.deque.append(value)


class HostMetricLogger:
    def __init__(self):
        self.meters = defaultdict(SmoothedValue)

    def update(self, **kwargs):
        for name, value in kwargs.items():
            self.meters[name].update(value.item() if isinstance(value, torch.Tensor) else value)


def host_clip_grad_norm(named_parameters, max_norm, logger, clip=False, verbose=False):
    total = sum(p.grad.norm(2) ** 2 for _, p in named_parameters if p.grad is not None) ** 0.5
    return total


@pytest.fixture
def hooked(monkeypatch):
    """(cfg, MetricLogger, clip_grad_norm) with the plug-in's hooks, as ``install`` leaves them."""
    cfg = SimpleNamespace(MODEL=SimpleNamespace(SGG_PLUGINS=SimpleNamespace(MAX_NONFINITE_STEPS=0)))
    update = nonfinite_loss._stopping_on_nonfinite_loss(HostMetricLogger.update, cfg)
    monkeypatch.setattr(HostMetricLogger, "update", update)
    monkeypatch.setitem(training_log._STATE, "start_iteration", 0)
    monkeypatch.setattr(nonfinite_loss, "_RUN", {"iteration": 0, "streak": 0, "counted": False})
    return cfg, HostMetricLogger, nonfinite_loss._dropping_nonfinite_gradients(host_clip_grad_norm, cfg)


def train(meters, losses, clip=None, gradient_norms=()):
    """The host loop's meter updates for each iteration's {name: loss}, then its clip_grad_norm of a
    gradient of the given norm (1.0 when not given); training_log counts iterations."""
    norms = list(gradient_norms) + [1.0] * (len(losses) - len(gradient_norms))
    for iteration_losses, norm in zip(losses, norms):
        meters.update(loss=sum(iteration_losses.values()), **iteration_losses)
        if clip is not None:
            clip(gradients(norm), 5.0, None)
        meters.sgg_plugins_iterations = getattr(meters, "sgg_plugins_iterations", 0) + 1
        meters.update(time=0.1, data=0.01)


def stop_line(losses, clip=None, gradient_norms=()):
    with pytest.raises(NonFiniteLossError) as caught:
        train(HostMetricLogger(), losses, clip, gradient_norms)
    return str(caught.value)


def test_first_nonfinite_loss_stops_naming_keys_and_iteration(hooked):
    finite = {"loss_rel": torch.tensor(0.7), "loss_refine_obj": torch.tensor(0.1)}
    bad = {"loss_rel": torch.tensor(float("nan")), "loss_refine_obj": torch.tensor(0.1),
           "loss_probe_contrast": torch.tensor(float("inf"))}
    assert stop_line([finite] * 4 + [bad]) == (
        "training stopped at iteration 5, before its update and checkpoint: non-finite loss (loss_rel = nan, "
        f"loss_probe_contrast = inf); {ADVICE}")


def test_a_resumed_run_names_the_iteration_counted_from_its_checkpoint(hooked, monkeypatch):
    monkeypatch.setitem(training_log._STATE, "start_iteration", 100)
    assert stop_line([{"loss_rel": 0.5}, {"loss_rel": float("-inf")}]).startswith(
        "training stopped at iteration 102, before its update and checkpoint: non-finite loss (loss_rel = -inf)")


def test_only_the_summed_loss_non_finite_is_named(hooked):
    meters = HostMetricLogger()
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss \(loss = inf\)"):
        meters.update(loss=float("inf"), loss_rel=1e308, loss_obj=1e308)


def test_up_to_n_in_a_row_pass_and_a_good_iteration_resets_the_count(hooked):
    cfg, _, clip = hooked
    cfg.MODEL.SGG_PLUGINS.MAX_NONFINITE_STEPS = 2
    nan, fine = {"loss_rel": float("nan")}, {"loss_rel": 0.5}
    train(HostMetricLogger(), [fine, nan, nan, fine, nan, nan, fine], clip)
    assert stop_line([fine, nan, nan, fine, nan, nan, nan], clip) == (
        "training stopped at iteration 7, before its update and checkpoint: non-finite loss or gradients in 3 "
        "iterations in a row, more than MODEL.SGG_PLUGINS.MAX_NONFINITE_STEPS 2 (loss (loss_rel = nan) in this "
        "one); lower SOLVER.BASE_LR")


def test_overflowing_gradients_of_a_finite_loss_count_as_bad_iterations(hooked):
    """Else a diverged run would skip every step, silently, to its end."""
    cfg, _, clip = hooked
    cfg.MODEL.SGG_PLUGINS.MAX_NONFINITE_STEPS = 2
    nan, huge = {"loss_rel": float("nan")}, {"loss_rel": 1e35}
    assert stop_line([huge, nan, huge, huge], clip, [float("inf")] * 4).startswith(
        "training stopped at iteration 3, before its update and checkpoint: non-finite loss or gradients in 3 "
        "iterations in a row, more than MODEL.SGG_PLUGINS.MAX_NONFINITE_STEPS 2 (gradient norm (inf) in this one)")


def test_a_loss_scaler_skipped_step_is_not_a_failure(hooked):
    """Under float16 the gradients overflow, not the logged loss: the stand-in scales only what it
    hands to backward(), so the loss dict the host logs stays finite."""
    from sgg_plugins.hosts.sgb import compat

    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    compat._loss_scalers[optimizer] = compat.DynamicLossScaler(init_scale=2.0 ** 120)
    torch.nn.init.ones_(model.weight)
    loss = model(torch.ones(1, 2)).sum() * 1e10  # finite; times the scale, past float32's range
    assert torch.isfinite(loss) and not torch.isfinite(loss * 2.0 ** 120)
    with compat.scale_loss(loss, optimizer) as scaled:
        scaled.backward()
    assert all(p.grad is None for p in model.parameters())  # the step is skipped
    train(HostMetricLogger(), [{"loss_rel": loss.detach()}])  # and training goes on


def gradients(*values):
    parameters = [torch.nn.Parameter(torch.zeros(1)) for _ in values]
    for parameter, value in zip(parameters, values):
        parameter.grad = torch.tensor([value])
    return [(f"p{i}", p) for i, p in enumerate(parameters)]


def test_passed_steps_drop_non_finite_gradients(hooked):
    cfg, _, clip = hooked
    named = gradients(1.0, float("nan"))
    clip(named, 5.0, None)
    assert all(p.grad is not None for _, p in named)  # at the default the host's function is unchanged
    cfg.MODEL.SGG_PLUGINS.MAX_NONFINITE_STEPS = 1
    clip(named, 5.0, None)
    assert all(p.grad is None for _, p in named)
    finite = gradients(3.0, 4.0)
    assert float(clip(finite, 5.0, None)) == 5.0 and all(p.grad is not None for _, p in finite)


@pytest.mark.parametrize("value", [-1, 1.5, True])
def test_max_nonfinite_steps_is_validated(value):
    from yacs.config import CfgNode

    cfg = add_sgg_plugins_config(CfgNode({"MODEL": {"ROI_RELATION_HEAD": {"PREDICTOR": "MotifPredictor"}}}))
    cfg.MODEL.SGG_PLUGINS.MAX_NONFINITE_STEPS = value
    with pytest.raises(ConfigError) as caught:
        validate_config(cfg)
    assert str(caught.value) == (f"MODEL.SGG_PLUGINS.MAX_NONFINITE_STEPS = {value!r} is not allowed; expected 0 "
                                 "(stop at the first non-finite loss) or a positive integer.")


# ---------------------------------------------------------------------------------------------
# through the real launcher

DIVERGING = ["SOLVER.BASE_LR", "1e6", "SOLVER.MAX_ITER", "8", "SOLVER.CHECKPOINT_PERIOD", "1",
             "SOLVER.VAL_PERIOD", "1000"]


def diverging_run(synthetic_vg, tmp_path, opts=()):
    out = tmp_path / "out"
    cmd = host_command(synthetic_vg, "relation_train_net", "MotifPredictor", "predcls", [*DIVERGING, *opts], out,
                       ["--skip-test"])
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "SGG_PLUGINS_SEED": "0"})
    assert "Traceback" not in result.stderr
    return result, out


def saved_iterations(out):
    return sorted(int(p.stem.split("_")[1]) for p in out.glob("model_*.pth"))


@needs_sgb
def test_diverging_run_stops_at_the_first_nan_and_saves_nothing_from_it_on(synthetic_vg, tmp_path):
    result, out = diverging_run(synthetic_vg, tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: training stopped at iteration 3, before its update and checkpoint: non-finite loss "
        f"(loss_rel = nan); {ADVICE}")
    assert saved_iterations(out) == [1, 2]
    assert (out / "last_checkpoint").read_text().strip() == str(out / "model_0000002.pth")


@needs_sgb
def test_passed_bad_steps_leave_the_weights_as_they_were(synthetic_vg, tmp_path):
    result, out = diverging_run(synthetic_vg, tmp_path, ["MODEL.SGG_PLUGINS.MAX_NONFINITE_STEPS", "2"])
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: training stopped at iteration 4, before its update and checkpoint: non-finite loss or gradients "
        "in 3 iterations in a row, more than MODEL.SGG_PLUGINS.MAX_NONFINITE_STEPS 2 (gradient norm (inf) in this "
        "one); lower SOLVER.BASE_LR")
    assert saved_iterations(out) == [1, 2, 3]
    weights = [torch.load(out / f"model_000000{i}.pth", map_location="cpu", weights_only=False)["model"]
               for i in (1, 2, 3)]
    # Buffers the skipped steps' forwards update, as under a loss scaler: BatchNorm's running
    # statistics and the Motifs context's moving averages (untreated_*_feat).
    running_statistics = ("running_mean", "running_var", "num_batches_tracked")
    for name, tensor in weights[0].items():
        if name.endswith(running_statistics) or ".untreated_" in name:
            assert torch.isfinite(weights[2][name].float()).all(), name
        else:
            assert torch.equal(weights[1][name], tensor) and torch.equal(weights[2][name], tensor), name
