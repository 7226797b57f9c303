"""Reading what Scene-Graph-Benchmark writes into a run's ``OUTPUT_DIR``.

- ``inference/<test dataset>/result_dict.pytorch``: the evaluator's ``result_dict`` (``vg_eval.py``,
  ``sgg_eval.py``). Keys are ``<mode>_<metric>`` with ``mode`` one of predcls/sgcls/sgdet:
  ``_recall``, ``_recall_nogc``, ``_zeroshot_recall``, ``_ng_zeroshot_recall`` hold one value per
  test image for each K (the host prints their mean); ``_mean_recall`` and ``_ng_mean_recall`` hold
  the final mR@K; ``_mean_recall_list`` holds the per-predicate recall behind mR@K (predicates 1..R-1,
  background excluded); ``_accuracy_hit`` / ``_accuracy_count`` give A@K.
- ``log.txt``: the training log; every 200 iterations a line
  ``... iter: 400  loss: 0.81 (0.93)  loss_rel: 0.52 (0.61)  ...  time: ...  lr: ...`` where each
  meter reads ``name: windowed median (global average)``.
- ``config.yml``: the merged config the training script saved (``SOLVER.SCHEDULE.TYPE``,
  ``SOLVER.MAX_ITER``, ``SOLVER.VAL_PERIOD``, ``SOLVER.STEPS``); with ``WarmupMultiStepLR`` the LR
  is multiplied by ``SOLVER.GAMMA`` after each iteration in ``STEPS``; with
  ``WarmupReduceLROnPlateau`` the log has ``Validation Result: 0.63`` after each validation (the
  mean per-image R@100 on the validation split), ``Trigger Schedule Decay`` when the LR is lowered
  and ``Trigger MAX_DECAY_STEP at iteration N.`` when training stops early. The ``lr`` of a log
  line is the LR of that iteration's update (the scheduler steps after the line), of the host's
  last parameter group, which it scales by ``IMS_PER_BATCH``: not ``BASE_LR`` itself. The
  plug-in's ``MODEL.SGG_PLUGINS.LOG_PERIOD`` lines have no ``lr``.
- ``<train dataset names>_statistics.cache``: ``get_dataset_statistics`` output with ``fg_matrix``
  (object x object x predicate counts on the training split; slot 0 holds background counts) and
  ``rel_classes`` (predicate names, background first).

Nothing here re-evaluates predictions: numbers are read as the host computed them. torch, h5py and
numpy are imported inside the functions that need them.

:class:`SgbOutputs` gathers this layout for the bench runner and the report; ``results_sgtr.py``
has SGTR's, behind the same methods (``outputs.host_outputs`` picks one by host name).
"""

import json
import re
from pathlib import Path

MODES = ("predcls", "sgcls", "sgdet", "phrdet", "preddet")

# Our metric name -> result_dict key suffix, for metrics stored as one value per test image.
PER_IMAGE_METRICS = {"R": "recall", "ng-R": "recall_nogc", "zR": "zeroshot_recall", "ng-zR": "ng_zeroshot_recall"}
# Our metric name -> key suffix, for mean recalls the host stores as final numbers.
MEAN_RECALL_METRICS = {"mR": "mean_recall", "ng-mR": "ng_mean_recall"}

RESULT_FILE = "result_dict.pytorch"
# What the host's evaluation writes into inference/<test set>/: removed before a bench test stage runs.
EVALUATION_FILES = ("eval_results.pytorch", RESULT_FILE)
TRAIN_LOG = "log.txt"
SAVED_CONFIG = "config.yml"
# The host's relation_train_net.py logs its meters every 200 iterations (a literal in its loop).
HOST_LOG_PERIOD = 200
# The host's own catalog validates on the first 5000 training images.
HOST_NUM_VAL_IMAGES = 5000
STATISTICS_GLOB = "*_statistics.cache"


class ResultError(ValueError):
    """A host output is missing or does not have the layout Scene-Graph-Benchmark writes."""


def find_result_dicts(run_dir):
    """``{test dataset name: path}`` of every ``inference/<name>/result_dict.pytorch`` in a run."""
    return {path.parent.name: path for path in sorted(Path(run_dir).glob(f"inference/*/{RESULT_FILE}"))}


def load_torch_file(path):
    """Load a file the host wrote with ``torch.save`` (pickled dicts: needs ``weights_only=False``)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ResultError(f"{path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise ResultError(f"{path} could not be read by torch.load ({type(error).__name__}: {error})") from error


def detect_mode(result_dict, source="result dict"):
    modes = [mode for mode in MODES if f"{mode}_recall" in result_dict]
    if len(modes) != 1:
        raise ResultError(
            f"{source} is not a Scene-Graph-Benchmark relation result_dict: expected exactly one "
            f"'<mode>_recall' key with mode in {MODES}, found keys {sorted(result_dict)[:8]}"
        )
    return modes[0]


def read_metrics(result_dict, source="result dict"):
    """The host's numbers from one ``result_dict``.

    Returns ``{"mode", "metrics": {"R@50": 0.63, "mR@100": 0.17, ...}, "per_predicate_recall":
    {K: [recall of predicate 1, 2, ...]}}``. Values are fractions, as the host stores them. A metric
    the host left empty (zero-shot recall when no test triplet is zero-shot) is ``None``.
    """
    import numpy as np

    mode = detect_mode(result_dict, source)
    metrics = {}
    for name, suffix in PER_IMAGE_METRICS.items():
        for k, per_image in result_dict.get(f"{mode}_{suffix}", {}).items():
            # The host reports the mean over test images of these per-image values.
            metrics[f"{name}@{k}"] = float(np.mean(per_image)) if len(per_image) else None
    for name, suffix in MEAN_RECALL_METRICS.items():
        for k, value in result_dict.get(f"{mode}_{suffix}", {}).items():
            metrics[f"{name}@{k}"] = float(value)
    hits = result_dict.get(f"{mode}_accuracy_hit", {})
    counts = result_dict.get(f"{mode}_accuracy_count", {})
    for k, per_image_hits in hits.items():
        if len(per_image_hits):
            # A@K as the host prints it: mean hits over mean ground-truth count.
            metrics[f"A@{k}"] = float(np.mean(per_image_hits) / np.mean(counts[k]))
    per_predicate = {
        int(k): [float(v) for v in values]
        for k, values in result_dict.get(f"{mode}_mean_recall_list", {}).items()
    }
    return {"mode": mode, "metrics": metrics, "per_predicate_recall": per_predicate}


_ITERATION = re.compile(r"\biter: (\d+)\b")
# A MetricLogger meter: "name: <windowed median> (<global average>)".
_METER = re.compile(r"(\w+): (\S+) \((\S+)\)")
_NOT_LOSSES = {"time", "data"}


def read_training_losses(log_path):
    """Loss curves from the host's ``log.txt``: ``{loss name: [(iteration, windowed median), ...]}``.

    Every meter of a training line except ``time`` and ``data`` is a loss (the trainer logs the
    total ``loss`` and every key of the loss dict, plug-in losses included). A resumed run appends
    to the same log, so a repeated iteration keeps its latest value.
    """
    curves = {}
    for line in Path(log_path).read_text(errors="replace").splitlines():
        iteration = _ITERATION.search(line)
        if iteration is None:
            continue
        for name, median, _ in _METER.findall(line):
            if name in _NOT_LOSSES:
                continue
            try:
                value = float(median)
            except ValueError:
                continue
            curves.setdefault(name, {})[int(iteration.group(1))] = value
    return {name: sorted(points.items()) for name, points in curves.items()}


def find_statistics_cache(run_dir):
    caches = sorted(Path(run_dir).glob(STATISTICS_GLOB))
    return caches[0] if caches else None


def read_predicate_statistics(cache_path):
    """Predicate names and training-set counts from the host's ``*_statistics.cache``.

    Returns ``(names, counts)`` for predicates 1..R-1 (background dropped), the order of the
    evaluator's per-predicate lists. Counts sum ``fg_matrix`` over subject and object classes;
    its predicate slot 0 holds background pair counts and is skipped.
    """
    statistics = load_torch_file(cache_path)
    if not isinstance(statistics, dict) or "fg_matrix" not in statistics or "rel_classes" not in statistics:
        raise ResultError(f"{cache_path} is not a Scene-Graph-Benchmark statistics cache (needs fg_matrix, rel_classes)")
    fg_matrix = statistics["fg_matrix"]
    counts = fg_matrix[:, :, 1:].sum(0).sum(0)
    counts = [int(c) for c in (counts.tolist() if hasattr(counts, "tolist") else counts)]
    names = list(statistics["rel_classes"])[1:]
    if len(names) != len(counts):
        raise ResultError(f"{cache_path}: {len(names)} predicate names but fg_matrix has {len(counts)} predicates")
    return names, counts


def count_predicates_in_h5(h5_path, dict_path, num_val_im=HOST_NUM_VAL_IMAGES):
    """Predicate names and training-set counts straight from the VG files, without a trained run.

    Follows the host's training split: images with ``split == 0`` that have boxes and relations,
    minus the first ``num_val_im`` of them (the host's validation set). These are the counts of
    the training annotations; the host's ``*_statistics.cache`` is built with
    ``filter_non_overlap=True`` and so leaves out images whose related boxes never overlap, which
    changes the ranking of spatial predicates: the report prefers these counts.
    """
    import h5py
    import numpy as np

    for path, what in ((h5_path, "VG-SGG-with-attri.h5"), (dict_path, "VG-SGG-dicts-with-attri.json")):
        if not Path(path).is_file():
            raise ResultError(f"{path} does not exist (expected the dataset's {what})")
    idx_to_predicate = json.loads(Path(dict_path).read_text())["idx_to_predicate"]
    num_predicates = len(idx_to_predicate) + 1
    names = [idx_to_predicate[str(i)] for i in range(1, num_predicates)]
    with h5py.File(h5_path, "r") as h5:
        split = h5["split"][:]
        first_rel = h5["img_to_first_rel"][:]
        last_rel = h5["img_to_last_rel"][:]
        keep = (split == 0) & (h5["img_to_first_box"][:] >= 0) & (first_rel >= 0)
        train_images = np.flatnonzero(keep)[num_val_im:]
        predicates = h5["predicates"][:, 0]
    # Relations of an image are the inclusive range first..last: mark them with a +1/-1 cumsum.
    edges = np.zeros(len(predicates) + 1, dtype=np.int64)
    np.add.at(edges, first_rel[train_images], 1)
    np.add.at(edges, last_rel[train_images] + 1, -1)
    in_train = np.cumsum(edges[:-1]) > 0
    counts = np.bincount(predicates[in_train], minlength=num_predicates)[1:]
    return names, [int(c) for c in counts]


_VALIDATION = re.compile(r"Validation Result: (\S+)")
_DECAY = re.compile(r"Trigger Schedule Decay")
_EARLY_STOP = re.compile(r"Trigger MAX_DECAY_STEP at iteration (\d+)")
# The LR field of the host's own meter line ("... lr: 0.040000  max mem: ...").
_LOGGED_LR = re.compile(r"\blr: (\S+)")
MULTI_STEP = "WarmupMultiStepLR"


def read_schedule(run_dir):
    """Which LR schedule a run trained with, its LR decays and when it stopped, from ``config.yml``
    and ``log.txt``.

    Returns ``{"type", "max_iter", "val_period", "steps", "last_logged_iter", "stopped_at",
    "stop_reason", "decays": [iteration, ...], "final_lr", "final_lr_iter", "validations":
    [(iteration, value), ...]}``; what a file does not hold is None. ``decays``: with
    ``WarmupMultiStepLR`` the ``STEPS`` below ``stopped_at`` (a step lowers the LR of the updates
    after it, so one at the last iteration lowers none), otherwise the log's ``Trigger Schedule
    Decay`` lines. ``final_lr``: the ``lr`` of the last ``iter: N`` line that has one, logged at
    ``final_lr_iter``. A validation or decay line is attributed to the last ``iter: N`` line logged
    before it (the host validates right after logging when VAL_PERIOD is a multiple of its log period).
    """
    run_dir = Path(run_dir)
    schedule = {"type": None, "max_iter": None, "val_period": None, "steps": None, "last_logged_iter": None,
                "stopped_at": None, "stop_reason": None, "decays": [], "final_lr": None, "final_lr_iter": None,
                "validations": []}
    config_path = run_dir / SAVED_CONFIG
    if config_path.is_file():
        import yaml

        try:
            solver = (yaml.safe_load(config_path.read_text()) or {}).get("SOLVER", {})
        except yaml.YAMLError:
            solver = {}
        steps = solver.get("STEPS")
        schedule.update(type=(solver.get("SCHEDULE") or {}).get("TYPE"), max_iter=solver.get("MAX_ITER"),
                        val_period=solver.get("VAL_PERIOD"), steps=None if steps is None else [int(s) for s in steps])
    log_path = run_dir / TRAIN_LOG
    if not log_path.is_file():
        return schedule
    iteration = None
    for line in log_path.read_text(errors="replace").splitlines():
        logged = _ITERATION.search(line)
        if logged:
            iteration = int(logged.group(1))
            schedule["last_logged_iter"] = iteration
            lr = _LOGGED_LR.search(line)
            if lr:
                schedule.update(final_lr=float(lr.group(1)), final_lr_iter=iteration)
            continue
        validation = _VALIDATION.search(line)
        if validation:
            schedule["validations"].append((iteration, float(validation.group(1))))
        elif _DECAY.search(line):
            schedule["decays"].append(iteration)
        else:
            stop = _EARLY_STOP.search(line)
            if stop:
                schedule.update(stopped_at=int(stop.group(1)), stop_reason="MAX_DECAY_STEP (validation plateau)")
    if schedule["stopped_at"] is None and schedule["last_logged_iter"] is not None:
        schedule["stopped_at"] = schedule["last_logged_iter"]
        if schedule["max_iter"] is not None and schedule["last_logged_iter"] >= schedule["max_iter"]:
            schedule["stop_reason"] = "MAX_ITER"
        else:
            schedule["stop_reason"] = "unknown (log ends before MAX_ITER)"
    if schedule["type"] == MULTI_STEP and schedule["steps"] is not None and schedule["stopped_at"] is not None:
        schedule["decays"] = [step for step in schedule["steps"] if step < schedule["stopped_at"]]
    return schedule


def effective_opt(command, key):
    """The value a host command line gives ``key`` (its last occurrence, as yacs merges), or None."""
    values = [command[i + 1] for i in range(len(command) - 1) if command[i] == key]
    return values[-1] if values else None


def check_evaluation_freshness(result_path, record, cache_key="TEST.ALLOW_LOAD_FROM_CACHE"):
    """``(verdict, note)`` on whether a run's evaluation is its own, from its ``run.json`` record.

    ``"stale"``: the result file is older than the start of the run's last test stage (it was left
    by an earlier run in the same folder); ``"flagged"``: nothing stopped the host from evaluating
    cached predictions (its ``TEST.ALLOW_LOAD_FROM_CACHE`` defaults to True) or there is no record
    to check against; ``"ok"`` otherwise.
    """
    test = (record or {}).get("stages", {}).get("test")
    if not test:
        return "flagged", "no run.json test record: not checked that this run wrote its evaluation"
    started = test.get("started_unix")
    written = Path(result_path).stat().st_mtime
    if started is not None and written < started:
        return "stale", (f"{Path(result_path).name} is older than this run's test ({written - started:+.0f} s): "
                         f"left by an earlier run; rerun bench to test again")
    if effective_opt(test.get("command", []), cache_key) != "False" and "cleared" not in test:
        return "flagged", f"test ran without {cache_key} False: may have evaluated cached predictions"
    return "ok", ""


_NUM_VAL = re.compile(r"^NUM_VAL_IMAGES\s*=\s*(\d+)", re.MULTILINE)


def dataset_from_catalog(catalog_path):
    """``(h5, dict json, num_val_im)`` of a synthetic dataset's ``paths_catalog.py``, or None.

    The catalog ``sgg-plugins make-synthetic-vg`` writes sits next to the dataset files and states
    its validation size; any other catalog (the host's own) is not parsed.
    """
    catalog_path = Path(catalog_path)
    folder = catalog_path.parent
    h5_path, dict_path = folder / "VG-SGG-with-attri.h5", folder / "VG-SGG-dicts-with-attri.json"
    if not (catalog_path.is_file() and h5_path.is_file() and dict_path.is_file()):
        return None
    num_val = _NUM_VAL.search(catalog_path.read_text(errors="replace"))
    return h5_path, dict_path, int(num_val.group(1)) if num_val else HOST_NUM_VAL_IMAGES


class SgbOutputs:
    """A Scene-Graph-Benchmark run folder as the bench runner and the report read it.

    SGTR's counterpart (``results_sgtr.SgtrOutputs``) has the same methods and attributes; the
    report and the runner only go through them, so neither knows either host's file layout.
    """

    host = "sgb"
    result_description = "`inference/<test set>/result_dict.pytorch`"
    losses_description = "log.txt (windowed median)"
    schedule_description = (
        "Schedule, LR decays and stop from each run's `config.yml` and `log.txt`: with `WarmupMultiStepLR` the "
        "host lowers the LR after each of `SOLVER.STEPS` (those below the last iteration lowered it before the "
        "test); with `WarmupReduceLROnPlateau` it lowers the LR when validation R@100 stops improving and stops "
        "after MAX_DECAY_STEP decays, so a regularizer can change when a run stops. Final LR: the `lr` of the "
        "last `iter:` line of `log.txt` that has one (at the iteration in brackets when that is not the last), "
        "the LR of the host's last parameter group, which it scales by `IMS_PER_BATCH`.")
    statistics_caveat = "built with filter_non_overlap=True (it drops images whose related boxes never overlap)"

    def find_results(self, run_dir):
        """``{test set name: result file}`` of a run folder."""
        return find_result_dicts(run_dir)

    def evaluation_files(self, run_dir):
        """Every file an evaluation of this run left (what a new test stage deletes first)."""
        return [path for name in EVALUATION_FILES for path in sorted(Path(run_dir).glob(f"inference/*/{name}"))]

    def has_trained_model(self, run_dir):
        """Whether training left the checkpoint the test stage evaluates (the host's checkpointer loads
        ``last_checkpoint`` in preference to ``MODEL.WEIGHT``)."""
        return (Path(run_dir) / "last_checkpoint").exists()

    def read_result(self, path):
        return read_metrics(load_torch_file(path), source=str(path))

    def read_training(self, run_dir):
        """``(loss curves, schedule)`` of a run folder; ``({}, None)`` before the host logged anything."""
        log_path = Path(run_dir) / TRAIN_LOG
        if not log_path.is_file():
            return {}, None
        return read_training_losses(log_path), read_schedule(run_dir)

    def log_period_note(self, period):
        return (f"The loss curves have one point per {period} iterations: the host's training loop logs its "
                f"meters every {HOST_LOG_PERIOD} iterations (a literal in its relation_train_net.py); "
                f"MODEL.SGG_PLUGINS.LOG_PERIOD N adds the same line every N iterations.")

    def training_dataset(self, plan, bench_dir):
        """``(h5, dicts json, validation images)`` of the bench's dataset when its ``PATHS_CATALOG`` is a
        synthetic dataset's catalog, else None (the host's own catalog is not parsed)."""
        catalog = effective_opt(plan.get("base_opts", []), "PATHS_CATALOG")
        return dataset_from_catalog(Path(plan.get("cwd", bench_dir)) / catalog) if catalog else None

    def host_split(self, run_dir, num_predicates):
        """``(groups, note)``: the head/body/tail split the host itself defines, and a note on it or on
        why it is not used. SGB defines none."""
        return None, None

