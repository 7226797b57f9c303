"""Run-time shims that let Maelic/SGG-Benchmark train and evaluate on a machine without CUDA and
without network access, with no host file edited. Each is applied once, only where needed, and
reported once on the ``sgg_plugins`` logger (``common.apply_shims``):

- ``model.device cpu``: the host's configs say ``device: "cuda"`` and its schema defaults to it;
  without a GPU, ``get_cfg`` (which the training script calls on the composed config) and
  ``load_config_from_file`` (which its test script ``relation_eval_hydra.py`` calls on a run's saved
  config) return the config with ``model.device`` set to ``cpu``, with a warning.
- ``CUDA timing events``: the host's evaluation loop (``engine/inference.py``,
  ``compute_on_dataset``) times every batch with ``torch.cuda.Event`` and ``torch.cuda.synchronize``,
  which fail without an NVIDIA driver (``Found no NVIDIA driver``) even on a CPU model. While that
  function runs on such a machine, the two are wall-clock stand-ins: ``elapsed_time`` in
  milliseconds, as CUDA's, so the host's reported timings keep their unit.
- ``PredCls evaluation without detections``: ``GeneralizedYOLO.forward`` returns empty predictions
  for the whole batch when its detector finds no box in the batch's first image, before it would
  pass the ground-truth targets (PredCls: ``use_gt_object_label``) to the relation head, which never
  reads the detector's boxes there; the evaluator then fails on the empty scores
  (``rel_scores[:, 1:]``: ``too many indices``). A detector with random weights (a synthetic run)
  finds nothing. In PredCls evaluation without a box head, an image without detections gets its
  targets' boxes as stand-in detections, so the host goes on to the relation head as it does when
  the detector found anything; those boxes are not read (the relation head gets the targets), and
  batches with detections run exactly as before.
- ``GloVe without a download``: without ``<glove_dir>/glove.6B.<dim>d.pt`` or ``.txt`` the host
  downloads the 800 MB GloVe archive; as on SGB, the object embeddings use fixed random vectors
  seeded by each word instead, with a warning (``sgb.data``'s wrapper, which reads the same
  ``load_word_vectors(root, wv_type, dim)`` call).
"""

import contextlib
import functools
import logging
import time

import torch

from ..common import LOGGER_NAME, apply_shims

logger = logging.getLogger(LOGGER_NAME)
_applied = []


def _no_cuda():
    return not torch.cuda.is_available()


class WallClockEvent:
    """Stands in for ``torch.cuda.Event(enable_timing=True)`` on the CPU: ``record()`` notes the time,
    ``elapsed_time(end)`` is the milliseconds between two recorded events."""

    def __init__(self, enable_timing=False, blocking=False, interprocess=False):
        self.recorded_at = None

    def record(self, stream=None):
        self.recorded_at = time.perf_counter()

    def synchronize(self):
        pass

    def query(self):
        return True

    def elapsed_time(self, end_event):
        return (end_event.recorded_at - self.recorded_at) * 1000.0


@contextlib.contextmanager
def wall_clock_cuda_timing():
    """Inside the block, ``torch.cuda.Event`` and ``torch.cuda.synchronize`` work without CUDA."""
    saved = torch.cuda.Event, torch.cuda.synchronize
    torch.cuda.Event, torch.cuda.synchronize = WallClockEvent, lambda device=None: None
    try:
        yield
    finally:
        torch.cuda.Event, torch.cuda.synchronize = saved


def _timed_on_the_cpu(compute_on_dataset):
    @functools.wraps(compute_on_dataset)
    def compute(*args, **kwargs):
        if torch.cuda.is_available():
            return compute_on_dataset(*args, **kwargs)
        with wall_clock_cuda_timing():
            return compute_on_dataset(*args, **kwargs)

    compute.sgg_plugins_original = compute_on_dataset
    return compute


def install_cuda_timing_shim():
    from sgg_benchmark.engine import inference

    if not hasattr(inference.compute_on_dataset, "sgg_plugins_original"):
        inference.compute_on_dataset = _timed_on_the_cpu(inference.compute_on_dataset)


def cpu_when_no_gpu(cfg):
    """``cfg`` (the host's merged config) with ``model.device`` cpu when it names CUDA and there is no GPU."""
    device = str(cfg.model.device)
    if device.startswith("cuda") and _no_cuda():
        cfg.model.device = "cpu"
        logger.warning("sgg-plugins: model.device is %r but no GPU is available; running on cpu", device)
    return cfg


def _falling_back_to_cpu(load_config):
    @functools.wraps(load_config)
    def load_config_on_this_machine(*args, **kwargs):
        return cpu_when_no_gpu(load_config(*args, **kwargs))

    load_config_on_this_machine.sgg_plugins_original = load_config
    return load_config_on_this_machine


def install_device_fallback():
    import sgg_benchmark.config as config_package
    from sgg_benchmark.config import hydra_config

    for name in ("get_cfg", "load_config_from_file"):
        if not hasattr(getattr(hydra_config, name), "sgg_plugins_original"):
            wrapped = _falling_back_to_cpu(getattr(hydra_config, name))
            setattr(hydra_config, name, wrapped)
            # The package re-exports both: tools/evaluate.py imports them from there.
            if hasattr(config_package, name):
                setattr(config_package, name, wrapped)


def _detections_or_targets(postprocess, targets):
    def postprocess_with_stand_ins(outputs, image_sizes, *args, **kwargs):
        proposals = postprocess(outputs, image_sizes, *args, **kwargs)
        for proposal, target in zip(proposals, targets):
            if proposal["boxes"].shape[0] == 0:
                proposal["boxes"] = target["boxes"].to(proposal["boxes"].device).clone()
        return proposals

    return postprocess_with_stand_ins


def _predcls_eval_without_detections(forward):
    @functools.wraps(forward)
    def forward_with_stand_ins(self, images, targets=None, *args, **kwargs):
        if self.training or targets is None or not self.predcls or self.cfg.model.box_head:
            return forward(self, images, targets, *args, **kwargs)
        from ..hooks import overridden_method

        stand_ins = _detections_or_targets(self.backbone.postprocess, targets)
        with overridden_method(self.backbone, "postprocess", stand_ins):
            return forward(self, images, targets, *args, **kwargs)

    forward_with_stand_ins.sgg_plugins_original = forward
    return forward_with_stand_ins


def install_predcls_eval_shim():
    from sgg_benchmark.modeling.detector import generalized_yolo

    detector = generalized_yolo.GeneralizedYOLO
    if not hasattr(detector.forward, "sgg_plugins_original"):
        detector.forward = _predcls_eval_without_detections(detector.forward)


def install_glove_without_download():
    # The wrapper SGB's data shims put on the same loader (same signature, same fallback).
    from sgg_benchmark.utils import txt_embeddings

    from ..sgb.data import _word_vectors_without_download

    if not hasattr(txt_embeddings.load_word_vectors, "sgg_plugins_original"):
        txt_embeddings.load_word_vectors = _word_vectors_without_download(txt_embeddings.load_word_vectors)


SHIMS = (
    ("model.device cpu", _no_cuda, install_device_fallback),
    ("CUDA timing events in evaluation", _no_cuda, install_cuda_timing_shim),
    ("PredCls evaluation without detections", lambda: True, install_predcls_eval_shim),
    ("GloVe without a download", lambda: True, install_glove_without_download),
)


def install_compat():
    """Apply every needed shim of ``SHIMS`` (once per process); returns the names applied so far."""
    return apply_shims(SHIMS, _applied)
