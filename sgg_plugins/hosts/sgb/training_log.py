"""``MODEL.SGG_PLUGINS.LOG_PERIOD``: the host's training log line every N iterations.

SGB's ``relation_train_net.py`` and ``detector_pretrain_net.py`` print their meters
(``iter: N  loss: 0.81 (0.93)  loss_rel: ...``) when ``iteration % 200 == 0`` or at the last
iteration, with 200 a literal in their loops: a run of a few hundred iterations leaves one or two
points for a loss plot. With ``LOG_PERIOD`` N > 0, the plug-in prints the same meters, through the
host's logger and in its format, after every N-th iteration the host does not log itself. No host
file changes, and nothing changes at the default 0.

Which iteration a line belongs to: both loops update their ``MetricLogger`` with ``time=`` exactly
once per iteration, after the losses; the iteration is the one the run resumed from plus the
iterations counted since. A run resumes when its ``OUTPUT_DIR`` has a ``last_checkpoint``: then the
checkpointer's ``load`` returns that checkpoint's ``iteration``. Otherwise it starts at 0, whatever
the loaded weights say (a relation run loads the detector's final checkpoint, iteration included,
and ignores it). A meter line of ours reads ``iter: N`` as the host's does, so ``sgg-plugins report`` and any
parser of the host's log take both.
"""

import functools
import logging

# The host's own period, a literal in its training loops.
HOST_LOG_PERIOD = 200
# What the host's loops pass to MetricLogger.update once per iteration, after the losses.
PER_ITERATION_METER = "time"

_STATE = {"installed": False, "start_iteration": 0}


def is_logged_by_us(iteration, period, max_iter):
    """Whether iteration ``iteration`` gets our line: on our period, and not one the host logs."""
    if period <= 0 or iteration % period:
        return False
    return iteration % HOST_LOG_PERIOD != 0 and iteration != max_iter


def iteration_of_loss_update(meters):
    """The iteration (counted from 1, as the host's log prints it) of a loss update of ``meters``.

    The losses come before the iteration's ``time`` update, which counts it."""
    return _STATE["start_iteration"] + getattr(meters, "sgg_plugins_iterations", 0) + 1


def _recording_start(load):
    @functools.wraps(load)
    def checkpointer_load(self, *args, **kwargs):
        resuming = self.has_checkpoint()
        extra = load(self, *args, **kwargs)
        _STATE["start_iteration"] = int((extra or {}).get("iteration", 0)) if resuming else 0
        return extra

    return checkpointer_load


def _logging_every_period(update, cfg):
    host_logger = logging.getLogger("maskrcnn_benchmark")

    @functools.wraps(update)
    def meters_update(self, **kwargs):
        update(self, **kwargs)
        if PER_ITERATION_METER not in kwargs:
            return
        self.sgg_plugins_iterations = getattr(self, "sgg_plugins_iterations", 0) + 1
        iteration = _STATE["start_iteration"] + self.sgg_plugins_iterations
        if is_logged_by_us(iteration, cfg.MODEL.SGG_PLUGINS.LOG_PERIOD, cfg.SOLVER.MAX_ITER):
            host_logger.info(self.delimiter.join([f"iter: {iteration}", str(self), "(sgg-plugins LOG_PERIOD)"]))

    return meters_update


def install_training_log():
    """Wrap the host's ``MetricLogger.update`` and its checkpointer's ``load``. Idempotent."""
    if _STATE["installed"]:
        return
    from maskrcnn_benchmark.config import cfg
    from maskrcnn_benchmark.utils import checkpoint, metric_logger

    metric_logger.MetricLogger.update = _logging_every_period(metric_logger.MetricLogger.update, cfg)
    checkpoint.Checkpointer.load = _recording_start(checkpoint.Checkpointer.load)
    _STATE["installed"] = True
