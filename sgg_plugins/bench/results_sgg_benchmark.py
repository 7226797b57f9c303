"""Reading what Maelic/SGG-Benchmark writes into a run's ``output_dir`` (with bench:
``<out>/<variant>/seed<k>/``).

From the host's code (``tools/relation_train_net_hydra.py``, ``tools/relation_eval_hydra.py``,
``sgg_benchmark/engine``), checked on real runs through the launchers:

- training writes ``config.yml`` and ``hydra_config.yaml`` (the merged config; with the plug-in the
  objectives' nodes go to ``sgg_plugins.yaml`` beside them), ``log.txt``, ``model_epoch_<e>.pth``
  (or ``model_best.pth`` with ``--save-best``), ``last_checkpoint`` and
  ``<datasets.name>_statistics.cache`` (``fg_matrix`` and ``rel_classes`` as SGB's);
- ``log.txt``: the trainer's line every ``log_interval`` iterations of an epoch (200, from its
  first): ``Epoch <e> [<i>/<n>] | loss=<total> | loss: [ rel=2.244 | loss_align=2.367 ] |
  lr=5.50e-03 | ...``, the loss dict's entries as the host abbreviates them (``rel`` for
  ``loss_rel``, ``dis`` for ``loss_dis`` ...), the plug-in's under their own names;
- its test script, ``relation_eval_hydra.py --checkpoint-dir <run> --task <t> --save-predictions
  --output-dir <run>/inference`` (what bench's test stage runs), evaluates the run's latest checkpoint
  with its saved config and writes ``inference/<test set>_<task>_det<N>/eval_results_top_100.json``
  (SGB's result-dict keys: ``<mode>_recall`` per image, ``_mean_recall``, ``_mean_recall_list``,
  ``_zeroshot_recall``, with the K values as strings), ``predictions.pth`` (which its
  ``test.allow_load_from_cache`` would evaluate instead of the model; bench deletes it before each
  test) and ``results.json`` (latency).
"""

import json
import re
from pathlib import Path

from .results import dataset_from_catalog, effective_opt, read_metrics

RESULT_FILE = "eval_results_top_100.json"
EVALUATION_FILES = (RESULT_FILE, "predictions.pth", "results.json")
EVALUATION_FOLDER = "inference"
TRAIN_LOG = "log.txt"
SAVED_CONFIG = "config.yml"
HOST_LOG_INTERVAL = 200  # the trainer's detached logging interval, a literal in engine/trainer.py
_RESULT_FOLDER = re.compile(r"^(?P<test_set>.+)_(?:predcls|sgcls|sgdet)_det\d+$")
_TRAINING_LINE = re.compile(r"Epoch (\d+) \[(\d+)/(\d+)\] \| loss=(\S+) \| loss: \[ (.*?) \] \| lr=(\S+)")
_LOSS_ENTRY = re.compile(r"(\S+)=(\S+)")
DATA_DIR_KEYS = ("++datasets.data_dir", "+datasets.data_dir", "datasets.data_dir")


def read_saved_config(run_dir):
    """The run's ``config.yml`` as plain containers, or ``{}`` before training wrote it."""
    path = Path(run_dir) / SAVED_CONFIG
    if not path.is_file():
        return {}
    import yaml

    return yaml.safe_load(path.read_text()) or {}


def read_training_lines(log_path):
    """``[(iterations done, {name: value}, lr)]`` from the trainer's lines of ``log.txt``; iterations are
    counted over epochs (``e * n + i``); a repeated iteration (a resumed run appends) keeps the last."""
    rows = {}
    for line in Path(log_path).read_text(errors="replace").splitlines():
        match = _TRAINING_LINE.search(line)
        if match is None:
            continue
        epoch, done, per_epoch, total, entries, lr = match.groups()
        values = {"loss": float(total)}
        values.update({name: float(value) for name, value in _LOSS_ENTRY.findall(entries)})
        rows[int(epoch) * int(per_epoch) + int(done)] = (values, float(lr), int(per_epoch))
    return [(iteration, *rows[iteration]) for iteration in sorted(rows)]


def read_schedule(run_dir, rows):
    """The run's schedule in the keys of the SGB reader's (``results.read_schedule``), from
    ``config.yml`` and the training lines: SGG-Benchmark trains ``solver.max_epoch`` epochs (its
    ``max_iter`` caps none of them), so ``max_iter`` is epochs times the iterations per epoch the log
    shows; LR decays are not read (``decays`` None)."""
    solver = read_saved_config(run_dir).get("solver", {})
    max_epoch = solver.get("max_epoch")
    schedule = {"type": (solver.get("schedule") or {}).get("type"), "max_iter": None, "val_period": None,
                "steps": solver.get("steps"), "last_logged_iter": None, "stopped_at": None, "stop_reason": None,
                "decays": None, "final_lr": None, "final_lr_iter": None, "validations": []}
    if not rows:
        return schedule
    last, _, lr, per_epoch = rows[-1]
    max_iter = max_epoch * per_epoch if max_epoch else None
    schedule.update(max_iter=max_iter, last_logged_iter=last, stopped_at=last, final_lr=lr, final_lr_iter=last,
                    stop_reason=f"max_epoch {max_epoch}; the host logs every {HOST_LOG_INTERVAL} iterations of an "
                                f"epoch, so the last logged iteration is not the last trained")
    return schedule


class SggBenchmarkOutputs:
    """An SGG-Benchmark run folder as the bench runner and the report read it (see ``results.SgbOutputs``)."""

    host = "sgg-benchmark"
    result_description = f"`{EVALUATION_FOLDER}/<test set>_<task>_det<N>/{RESULT_FILE}`"
    losses_description = "log.txt (the trainer's line every 200 iterations of an epoch)"
    schedule_description = (
        "Schedule from each run's `config.yml` (`solver.schedule.type`, `solver.max_epoch`) and `log.txt`: the "
        "host trains whole epochs; stopped at = the last iteration its log shows. LR decays are not read.")
    statistics_caveat = "counted over the training relations the host's COCO reader keeps (non-overlapping pairs too)"

    def find_results(self, run_dir):
        results = {}
        for path in sorted(Path(run_dir).glob(f"{EVALUATION_FOLDER}/*/{RESULT_FILE}")):
            match = _RESULT_FOLDER.match(path.parent.name)
            results[match.group("test_set") if match else path.parent.name] = path
        return results

    def evaluation_files(self, run_dir):
        return [path for name in EVALUATION_FILES for path in sorted(Path(run_dir).glob(f"{EVALUATION_FOLDER}/*/{name}"))]

    def has_trained_model(self, run_dir):
        return any(Path(run_dir).glob("model_*.pth"))

    def read_result(self, path):
        return read_metrics(json.loads(Path(path).read_text()), source=str(path))

    def read_training(self, run_dir):
        log_path = Path(run_dir) / TRAIN_LOG
        if not log_path.is_file():
            return {}, None
        rows = read_training_lines(log_path)
        curves = {}
        for iteration, values, _, _ in rows:
            for name, value in values.items():
                curves.setdefault(name, []).append((iteration, value))
        return curves, read_schedule(run_dir, rows)

    def log_period_note(self, period):
        return (f"The loss curves have one point per {period} iterations: the host's trainer logs its losses at the "
                f"first and every {HOST_LOG_INTERVAL}th iteration of each epoch (a literal in engine/trainer.py).")

    def training_dataset(self, plan, bench_dir):
        """``(h5, dicts json, validation images)`` when ``datasets.data_dir`` of the base opts is a folder
        ``sgg-plugins make-synthetic-vg --coco`` wrote (its VG files and catalog beside the COCO
        layout, the same splits), else None."""
        for key in DATA_DIR_KEYS:
            data_dir = effective_opt(plan.get("base_opts", []), key)
            if data_dir:
                return dataset_from_catalog(Path(data_dir) / "paths_catalog.py")
        return None

    def host_split(self, run_dir, num_predicates):
        return None, None
