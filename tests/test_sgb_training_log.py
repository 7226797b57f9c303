"""MODEL.SGG_PLUGINS.LOG_PERIOD, without a host: the hooks on stand-ins with the host's signatures.

``HostMetricLogger`` and ``HostCheckpointer`` follow ``maskrcnn_benchmark.utils.metric_logger``
and ``maskrcnn_benchmark.utils.checkpoint`` (``update(**kwargs)``, ``delimiter``, ``str()`` of
"name: median (global_avg)" meters; ``load(f, with_optim, update_schedule, load_mapping)`` that
returns the checkpoint's remaining dict and reads ``last_checkpoint`` first); ``train`` is the
loop of the host's ``relation_train_net.py``: resume, then per iteration the losses, then ``time=``,
then its own line at ``iteration % 200 == 0 or iteration == max_iter``.
"""

import logging
from types import SimpleNamespace

import pytest

from sgg_plugins.bench.results import read_training_losses
from sgg_plugins.config import ConfigError
from sgg_plugins.hosts.sgb import training_log


class HostMetricLogger:
    def __init__(self, delimiter="  "):
        self.meters = {}
        self.delimiter = delimiter

    def update(self, **kwargs):
        for name, value in kwargs.items():
            self.meters.setdefault(name, []).append(float(value))

    def __getattr__(self, attr):
        if attr in self.__dict__.get("meters", {}):
            return self.meters[attr]
        raise AttributeError(attr)

    def __str__(self):
        return self.delimiter.join(f"{name}: {values[-1]:.4f} ({sum(values) / len(values):.4f})"
                                   for name, values in self.meters.items())


class HostCheckpointer:
    def __init__(self, last_checkpoint=None, weights=None):
        self.last_checkpoint = last_checkpoint
        self.weights = weights or {}

    def has_checkpoint(self):
        return self.last_checkpoint is not None

    def load(self, f=None, with_optim=True, update_schedule=False, load_mapping={}):
        return dict(self.last_checkpoint if self.has_checkpoint() else self.weights.get(f, {}))


def train(checkpointer, max_iter, log):
    arguments = {"iteration": 0}
    if checkpointer.has_checkpoint():
        arguments.update(checkpointer.load("detector.pth"))
    else:
        checkpointer.load("detector.pth", with_optim=False)
    meters = HostMetricLogger()
    for iteration in range(arguments["iteration"] + 1, max_iter + 1):
        meters.update(loss=1.0 / iteration, loss_rel=0.5 / iteration)
        meters.update(time=0.1, data=0.01)
        if iteration % 200 == 0 or iteration == max_iter:
            log.info(meters.delimiter.join(["eta: 0:00:00", f"iter: {iteration}", str(meters), "lr: 0.01"]))


@pytest.fixture
def hooked(monkeypatch):
    """The hooks on the stand-ins, the host's logger captured; returns (cfg, log records)."""
    cfg = SimpleNamespace(MODEL=SimpleNamespace(SGG_PLUGINS=SimpleNamespace(LOG_PERIOD=0)),
                          SOLVER=SimpleNamespace(MAX_ITER=0))
    monkeypatch.setattr(HostMetricLogger, "update", training_log._logging_every_period(HostMetricLogger.update, cfg))
    monkeypatch.setattr(HostCheckpointer, "load", training_log._recording_start(HostCheckpointer.load))
    monkeypatch.setitem(training_log._STATE, "start_iteration", 0)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    host_logger = logging.getLogger("maskrcnn_benchmark")
    host_logger.addHandler(handler)
    monkeypatch.setattr(host_logger, "level", logging.INFO)
    yield cfg, records
    host_logger.removeHandler(handler)


def logged_iterations(records):
    return [int(r.getMessage().split("iter: ")[1].split()[0]) for r in records]


def test_default_leaves_the_host_log_as_it_is(hooked):
    cfg, records = hooked
    cfg.SOLVER.MAX_ITER = 450
    train(HostCheckpointer(), 450, logging.getLogger("maskrcnn_benchmark"))
    assert logged_iterations(records) == [200, 400, 450]


def test_every_period_once_the_host_lines_included(hooked):
    cfg, records = hooked
    cfg.MODEL.SGG_PLUGINS.LOG_PERIOD, cfg.SOLVER.MAX_ITER = 50, 230
    train(HostCheckpointer(weights={"detector.pth": {"iteration": 300}}), 230, logging.getLogger("maskrcnn_benchmark"))
    # A fresh relation run starts at 0 although the detector checkpoint it loads says 300.
    assert logged_iterations(records) == [50, 100, 150, 200, 230]


def test_a_resumed_run_counts_from_its_checkpoint(hooked):
    cfg, records = hooked
    cfg.MODEL.SGG_PLUGINS.LOG_PERIOD, cfg.SOLVER.MAX_ITER = 30, 200
    train(HostCheckpointer(last_checkpoint={"iteration": 100}), 200, logging.getLogger("maskrcnn_benchmark"))
    assert logged_iterations(records) == [120, 150, 180, 200]


def test_our_lines_are_read_as_the_host_lines(hooked, tmp_path):
    cfg, records = hooked
    cfg.MODEL.SGG_PLUGINS.LOG_PERIOD, cfg.SOLVER.MAX_ITER = 2, 4
    train(HostCheckpointer(), 4, logging.getLogger("maskrcnn_benchmark"))
    log = tmp_path / "log.txt"
    log.write_text("\n".join(f"2026-11-23 10:00:00,000 maskrcnn_benchmark INFO: {r.getMessage()}" for r in records))
    curves = read_training_losses(log)
    assert curves["loss"] == [(2, 0.5), (4, 0.25)] and curves["loss_rel"] == [(2, 0.25), (4, 0.125)]
    assert "time" not in curves


@pytest.mark.parametrize("value", [-1, 2.5, True, "50"])
def test_a_bad_period_names_the_key(value):
    import fake_sgb as fake
    from sgg_plugins.config import validate_config

    cfg = fake.make_cfg()
    cfg.MODEL.SGG_PLUGINS.LOG_PERIOD = value
    with pytest.raises(ConfigError, match="MODEL.SGG_PLUGINS.LOG_PERIOD"):
        validate_config(cfg)
