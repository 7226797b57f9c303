"""A non-finite training loss stops the run before that iteration's update and checkpoint.

SGB's training loops keep going on a NaN or infinite loss: the update spreads it to the weights,
and the checkpoints that follow are saved with them. The plug-in stops such a run, as detectron2
does with ``FloatingPointError``: one line naming the loss keys and the iteration.

Where it looks: the host's loops hand every iteration's reduced loss dict to
``MetricLogger.update(loss=..., **loss_dict_reduced)`` right after the forward, before the
backward, the update and the checkpoint, and ``update`` turns each value into a Python float
(``.item()``), a GPU synchronisation the host makes anyway. The check reads those floats back from
the meters, so it adds none. Under torch.distributed the reduced dict is the average over all
processes on rank 0 only; the other ranks hold their own or partial sums, which are non-finite only
if some process's loss is, and so stop only when rank 0 does.

Under DTYPE float16 the loss scaler's skipped steps are not failures: their loss is finite (the
logged loss is never the scaled one; it is the gradients that overflow), so they never count here.

``MODEL.SGG_PLUGINS.MAX_NONFINITE_STEPS`` N > 0 lets N bad iterations in a row pass: the run stops
at the (N+1)-th. A passed iteration must not train on what it computed, so with N > 0 the host's
``clip_grad_norm`` (called on every rank between the backward and ``optimizer.step()``) also drops
the gradients when their total norm is non-finite, as the loss scaler drops an overflowed step's,
and counts that iteration as bad too; the norm is the same on every rank (DDP has averaged the
gradients) and the host has just synchronised on it, so every rank skips the same steps at no
extra cost. At the default 0 that function does nothing more than the host's. A skipped step's
forward still updates BatchNorm running statistics, as a loss scaler's skipped step does.
"""

import functools
import logging
import math

from .training_log import iteration_of_loss_update

# The meter the host's loops set to the summed loss, in the same update as each loss of the dict.
SUMMED_LOSS_METER = "loss"
KEY = "MODEL.SGG_PLUGINS.MAX_NONFINITE_STEPS"

_STATE = {"installed": False}
# This process's training loop: the last loss update's iteration, how many iterations in a row
# were bad (a non-finite loss or gradient norm), and whether the current one is counted already.
_RUN = {"iteration": 0, "streak": 0, "counted": False}


class NonFiniteLossError(FloatingPointError):
    """The training loss (or, with MAX_NONFINITE_STEPS > 0, the gradient) is NaN or infinite; the
    message is the one line to show."""


def nonfinite_losses(values):
    """The names of the non-finite values of ``{name: float}``, the summed loss only when it alone is."""
    bad = [name for name, value in values.items() if not math.isfinite(value)]
    parts = [name for name in bad if name != SUMMED_LOSS_METER]
    return parts or bad


def stop_line(iteration, what, streak, allowed):
    """The line a stopped run prints; ``what`` is non-finite in iteration ``iteration``."""
    if streak == 1:
        found = f"non-finite {what}"
    else:
        found = f"non-finite loss or gradients in {streak} iterations in a row, more than {KEY} {allowed} ({what} " \
                "in this one)"
    advice = "lower SOLVER.BASE_LR" + ("" if allowed else f", or set {KEY} N to skip up to N such iterations in a row")
    return f"training stopped at iteration {iteration}, before its update and checkpoint: {found}; {advice}"


def _count_bad_iteration(what, cfg):
    """Count the current iteration as bad (once) and stop the run past the allowed streak."""
    if not _RUN["counted"]:
        _RUN["streak"] += 1
        _RUN["counted"] = True
    allowed = cfg.MODEL.SGG_PLUGINS.MAX_NONFINITE_STEPS
    if _RUN["streak"] > allowed:
        raise NonFiniteLossError(stop_line(_RUN["iteration"], what, _RUN["streak"], allowed))
    logging.getLogger("maskrcnn_benchmark").warning(
        "iteration %d: non-finite %s, step skipped (%d in a row of the %d that %s lets pass)",
        _RUN["iteration"], what, _RUN["streak"], allowed, KEY)


def _stopping_on_nonfinite_loss(update, cfg):
    @functools.wraps(update)
    def meters_update(self, **kwargs):
        update(self, **kwargs)
        if SUMMED_LOSS_METER not in kwargs:
            return
        if not _RUN["counted"]:  # the previous iteration was good, its loss and its gradients
            _RUN["streak"] = 0
        _RUN["iteration"] = iteration_of_loss_update(self)
        _RUN["counted"] = False
        # The floats update() has just made of the values: no second conversion, no synchronisation.
        values = {name: self.meters[name].deque[-1] for name in kwargs}
        bad_names = nonfinite_losses(values)
        if not bad_names:
            return
        _count_bad_iteration("loss (" + ", ".join(f"{name} = {values[name]}" for name in bad_names) + ")", cfg)

    return meters_update


def _dropping_nonfinite_gradients(clip_grad_norm, cfg):
    @functools.wraps(clip_grad_norm)
    def clip(named_parameters, *args, **kwargs):
        total_norm = clip_grad_norm(named_parameters, *args, **kwargs)
        if cfg.MODEL.SGG_PLUGINS.MAX_NONFINITE_STEPS and not math.isfinite(float(total_norm)):
            for _, parameter in named_parameters:
                parameter.grad = None  # optimizers skip a parameter without a gradient, momentum included
            # A finite loss with overflowing gradients counts too: otherwise every step could be
            # skipped, silently, for the rest of the run.
            _count_bad_iteration(f"gradient norm ({float(total_norm)})", cfg)
        return total_norm

    return clip


def install_nonfinite_loss_stop():
    """Wrap the host's ``MetricLogger.update`` and ``clip_grad_norm``. Idempotent.

    Must run before the host's training script imports ``clip_grad_norm`` by name."""
    if _STATE["installed"]:
        return
    from maskrcnn_benchmark.config import cfg
    from maskrcnn_benchmark.utils import checkpoint, metric_logger

    metric_logger.MetricLogger.update = _stopping_on_nonfinite_loss(metric_logger.MetricLogger.update, cfg)
    checkpoint.clip_grad_norm = _dropping_nonfinite_gradients(checkpoint.clip_grad_norm, cfg)
    _STATE["installed"] = True
