"""Reading what SGTR writes into a run's ``OUTPUT_DIR`` (with bench: ``<out>/<variant>/seed<k>/``).

From SGTR's code (``cvpods/evaluation/sgg_vg_evaluation.py``, ``cvpods/engine``, ``tools/train_net.py``
and ``tools/test_net.py``), checked on a real run of the host through the launchers with
``OUTPUT_DIR <run>`` in the opts of both scripts:

- ``result_dict.pytorch`` and ``evaluation_res.txt``, in the run folder itself: the last evaluation.
  Training evaluates ``DATASETS.TEST`` every ``TEST.EVAL_PERIOD`` iterations and after the last;
  ``test_net.py``, given ``MODEL.TEST_WEIGHTS <run>/model_final.pth``, merges that folder's
  ``config.json`` (its ``OUTPUT_DIR`` included) and overwrites both files. With several test sets
  each evaluation writes the same two files, so the last set's are kept. The dict has SGB's keys
  for R@K (``<mode>_recall``), ng-R@K (``_recall_nogc``), zR@K (``_zeroshot_recall``), A@K, and mR@K
  with its per-predicate list (``_mean_recall``, ``_mean_recall_list``); ng-mR@K goes to another
  dict of the host's, so it is read from ``evaluation_res.txt`` (``SGG eval: ng-mR @ 20: 0.1234;
  ...``, to the 4 decimals the host prints).
- ``config.json``: the whole training config, which the test takes back: ``SEED``,
  ``DATASETS.TEST``, ``SOLVER.LR_SCHEDULER`` (``NAME``, ``MAX_ITER``, ``STEPS``), ``TEST.EVAL_PERIOD``,
  ``GLOBAL.LOG_INTERVAL`` and ``MODEL.ROI_RELATION_HEAD.LONGTAIL_PART_DICT``, the head/body/tail
  split of the host's own "longtail part recall".
- ``metrics.json``: one JSON object per line, every ``GLOBAL.LOG_INTERVAL`` iterations and after the
  last: ``iteration`` (0-based: the line after the N-th iteration says N - 1); every entry of the
  loss dict (``total_loss``, ``loss_*``, the plug-in's ``loss_align_*``, and the decoder's
  per-level auxiliaries ``loss_ce_0`` ... and ``aux_loss_*/layer0`` ...) as the median of the last
  20 iterations; ``lr``, ``time``; after an evaluation its numbers (``sgg_vg_metrics/sgdet_recall/top100``,
  ...), repeated on every later line. A resumed run appends to it.
- ``model_final.pth``, ``model_<iteration>.pth``, ``last_checkpoint``; ``vgs_statistics.cache``
  (``fg_matrix`` and ``rel_classes`` as SGB's).
- The text logs go to subfolders: ``<YYYY-MM-DD_HH-MM>-<EXPERIMENT_NAME>/log.txt`` for training,
  ``eval.<YYYY-MM-DD_HH-MM>/log.txt`` for a test (with the ``copypaste:`` lines).

SGTR's evaluator keeps no cache of predictions: every evaluation runs the model.
"""

import json
import math
import re
from pathlib import Path

from .results import effective_opt, load_torch_file, read_metrics

RESULT_FILE = "result_dict.pytorch"
EVALUATION_TEXT = "evaluation_res.txt"
EVALUATION_FILES = (RESULT_FILE, EVALUATION_TEXT)
METRICS_FILE = "metrics.json"
SAVED_CONFIG = "config.json"
FINAL_CHECKPOINT = "model_final.pth"
_NG_MEAN_RECALL = re.compile(r"\bng-mR @ (\d+): ([^;\s]+)")
# The decoder's intermediate levels (DETR's auxiliary losses) repeat the last level's losses.
_PER_LEVEL_LOSS = re.compile(r"(_\d+|/layer\d+)$")
_EVALUATED_RECALL = re.compile(r"^sgg_vg_metrics/(?:predcls|sgcls|sgdet)_recall/top100$")
_GROUP_LETTERS = {"h": "head", "b": "body", "t": "tail"}


def read_saved_config(run_dir):
    """The run's ``config.json`` as a dict, or ``{}`` when training has not written it."""
    path = Path(run_dir) / SAVED_CONFIG
    return json.loads(path.read_text()) if path.is_file() else {}


def _number_or_none(text):
    value = float(text)
    return None if math.isnan(value) else value


def read_ng_mean_recall(text_path):
    """``{K: ng-mR@K}`` from the host's ``evaluation_res.txt``; a ``nan`` the host printed is None."""
    values = {}
    for k, value in _NG_MEAN_RECALL.findall(Path(text_path).read_text(errors="replace")):
        values.setdefault(int(k), _number_or_none(value))
    return values


def read_result(path):
    """:func:`read_metrics` of ``result_dict.pytorch`` plus ng-mR@K from the ``evaluation_res.txt`` beside it."""
    path = Path(path)
    result = read_metrics(load_torch_file(path), source=str(path))
    text_path = path.parent / EVALUATION_TEXT
    if text_path.is_file():
        result["metrics"].update({f"ng-mR@{k}": v for k, v in read_ng_mean_recall(text_path).items()})
    return result


def read_metric_lines(metrics_path):
    """The lines of ``metrics.json`` by iteration, the last written winning (a resumed or restarted run
    appends); a line cut off by a killed process is skipped."""
    rows = {}
    for line in Path(metrics_path).read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "iteration" in row:
            rows[int(row["iteration"])] = row
    return [rows[i] for i in sorted(rows)]


def read_training_losses(metrics_path):
    """Loss curves from ``metrics.json``: ``{loss name: [(iterations done, median of the last 20), ...]}``.

    Every entry whose name holds ``loss`` (what the host's own log printer treats as a loss), less the
    decoder's per-level auxiliaries; iterations are counted from 1, as the host's log prints them.
    """
    curves = {}
    for row in read_metric_lines(metrics_path):
        for name, value in row.items():
            if "loss" in name and not _PER_LEVEL_LOSS.search(name) and isinstance(value, (int, float)):
                curves.setdefault(name, {})[row["iteration"] + 1] = float(value)
    return {name: sorted(points.items()) for name, points in curves.items()}


def _evaluated_within(previous, current, eval_period, max_iter):
    """The last iteration in (previous, current] after which training evaluated, or None
    (the host's EvalHook: every ``eval_period`` iterations, and after the last unless it is negative)."""
    if eval_period is None:
        return None
    if eval_period >= 0 and max_iter is not None and previous < max_iter <= current:
        return max_iter
    if eval_period > 0 and current // eval_period * eval_period > previous:
        return current // eval_period * eval_period
    return None


def read_schedule(run_dir):
    """The run's LR schedule and where it stopped, from ``config.json`` and ``metrics.json``, with the
    keys of the SGB reader's schedule: ``type`` (``SOLVER.LR_SCHEDULER.NAME``), ``max_iter``,
    ``val_period`` (``TEST.EVAL_PERIOD``), ``steps``, ``last_logged_iter``, ``stopped_at``,
    ``stop_reason``, ``decays`` (for a multi-step schedule the ``STEPS`` below the last iteration,
    which lowered the LR of the updates after them; None for other schedules and for an epoch-based
    run, whose saved STEPS are not the ones it used), ``final_lr`` and ``final_lr_iter`` (the ``lr``
    of the last ``metrics.json`` line, the LR of that iteration's update) and ``validations``
    (iteration, R@100 of the training-time evaluation, taken from the first ``metrics.json`` line
    written after it)."""
    config = read_saved_config(run_dir)
    scheduler = config.get("SOLVER", {}).get("LR_SCHEDULER", {})
    max_iter = int(scheduler["MAX_ITER"]) if scheduler.get("MAX_ITER") is not None else None
    eval_period = config.get("TEST", {}).get("EVAL_PERIOD")
    steps = [int(step) for step in scheduler.get("STEPS", ())]
    if scheduler.get("MAX_EPOCH") is not None:
        # train_net.py saves config.json before its trainer turns MAX_EPOCH into MAX_ITER, STEPS and
        # EVAL_PERIOD: the saved iteration counts are not the ones the run used.
        max_iter = eval_period = steps = None
    multi_step = "MultiStep" in str(scheduler.get("NAME")) and steps is not None
    schedule = {"type": scheduler.get("NAME"), "max_iter": max_iter, "val_period": eval_period, "steps": steps,
                "last_logged_iter": None, "stopped_at": None, "stop_reason": None,
                "decays": [] if multi_step else None, "final_lr": None, "final_lr_iter": None, "validations": []}
    metrics_path = Path(run_dir) / METRICS_FILE
    rows = read_metric_lines(metrics_path) if metrics_path.is_file() else []
    previous = 0
    for row in rows:
        current = row["iteration"] + 1
        evaluated = _evaluated_within(previous, current, eval_period, max_iter)
        recall = next((value for key, value in row.items() if _EVALUATED_RECALL.match(key)), None)
        if evaluated is not None and isinstance(recall, (int, float)):
            schedule["validations"].append((evaluated, None if math.isnan(recall) else float(recall)))
        previous = current
    if not rows:
        return schedule
    last = rows[-1]["iteration"] + 1
    reached = max_iter is not None and last >= max_iter
    schedule.update(last_logged_iter=last, stopped_at=last,
                    stop_reason="MAX_ITER" if reached else "unknown (metrics.json ends before MAX_ITER)")
    if isinstance(rows[-1].get("lr"), (int, float)):
        schedule.update(final_lr=float(rows[-1]["lr"]), final_lr_iter=last)
    if multi_step:
        schedule["decays"] = [step for step in steps if step < last]
    return schedule


def evaluated_test_set(run_dir):
    """The test set of the run's evaluation: the last of its ``DATASETS.TEST`` (the one whose numbers
    the shared result file keeps)."""
    test_sets = read_saved_config(run_dir).get("DATASETS", {}).get("TEST") or ["unknown test set"]
    return test_sets[-1]


class SgtrOutputs:
    """An SGTR run folder as the bench runner and the report read it (see ``results.SgbOutputs``)."""

    host = "sgtr"
    result_description = "`result_dict.pytorch` and, for ng-mR@K, `evaluation_res.txt`"
    losses_description = "metrics.json (median of the last 20 iterations; per-decoder-level auxiliaries left out)"
    schedule_description = (
        "Schedule, LR decays and stop from each run's `config.json` and `metrics.json`: SGTR's LR schedulers "
        "change the LR at fixed iterations (`SOLVER.LR_SCHEDULER.STEPS` for `WarmupMultiStepLR`: those below "
        "the last iteration lowered it before the test), so every run trains `MAX_ITER` iterations. Final LR: "
        "the `lr` of the last line of `metrics.json`.")
    statistics_caveat = "counted over overlapping subject-object pairs only (the host's must_overlap=True)"

    def find_results(self, run_dir):
        path = Path(run_dir) / RESULT_FILE
        return {evaluated_test_set(run_dir): path} if path.is_file() else {}

    def evaluation_files(self, run_dir):
        return [Path(run_dir) / name for name in EVALUATION_FILES if (Path(run_dir) / name).is_file()]

    def has_trained_model(self, run_dir):
        return (Path(run_dir) / FINAL_CHECKPOINT).is_file()

    def read_result(self, path):
        return read_result(path)

    def read_training(self, run_dir):
        metrics_path = Path(run_dir) / METRICS_FILE
        if not metrics_path.is_file():
            return {}, None
        return read_training_losses(metrics_path), read_schedule(run_dir)

    def log_period_note(self, period):
        return (f"The loss curves have one point per {period} iterations: the host writes metrics.json every "
                f"GLOBAL.LOG_INTERVAL iterations (in each run's config.json) and after the last one.")

    def training_dataset(self, plan, bench_dir):
        """``(h5, dicts json, validation images)`` of the bench's ``--vg-dir``, or None without one."""
        from ..hosts.sgtr.data import validation_size

        vg_dir = effective_opt(plan.get("launcher_args", []), "--vg-dir")
        if not vg_dir:
            return None
        h5_path, dict_path = Path(vg_dir) / "VG-SGG-with-attri.h5", Path(vg_dir) / "VG-SGG-dicts-with-attri.json"
        if not (h5_path.is_file() and dict_path.is_file()):
            return None
        debug = effective_opt(plan.get("base_opts", []), "DEBUG") == "True"
        return h5_path, dict_path, validation_size(h5_path, debug=debug)

    def host_split(self, run_dir, num_predicates):
        """SGTR's own head/body/tail split (``LONGTAIL_PART_DICT``: background first, then 'h'/'b'/'t'
        per predicate), used when it has one entry per predicate of the dataset."""
        part = read_saved_config(run_dir).get("MODEL", {}).get("ROI_RELATION_HEAD", {}).get("LONGTAIL_PART_DICT")
        if not part:
            return None, None
        letters = list(part)[1:]
        if len(letters) != num_predicates:
            return None, (f"the host's LONGTAIL_PART_DICT splits {len(letters)} predicates, this dataset has "
                          f"{num_predicates}: not used")
        return [_GROUP_LETTERS[letter] for letter in letters], (
            "the host's own split, MODEL.ROI_RELATION_HEAD.LONGTAIL_PART_DICT in the runs' config.json "
            "(what SGTR's 'longtail part recall' uses)")

