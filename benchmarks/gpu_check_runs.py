"""The rows of ``gpu_check.py``: one training run and its evaluation each, through our launchers and
the real, unmodified hosts, and the verdict on each.

An SGB row is one predictor with one objective (every pair ``SUPPORTED_PREDICTORS`` allows), in
PredCls: ``tools/relation_train_net.py`` with ``SOLVER.MAX_ITER 1`` trains one step, saves the
model and then runs the host's own test on the test split, as a user's run ends. One more row trains
Motifs with all five objectives under ``DTYPE float16`` (the launcher's torch.amp stand-in for apex).
The SGTR row trains ``tools/sgtr_train_net.py`` with MODEL.ALIGN (SGTR's one objective) for the CPU
overlay's 4 iterations and evaluates after the last, as ``tests/test_sgtr_host.py`` does on CPU.

A row passes when the launcher exits 0, every loss it logged is finite, each enabled objective's loss
is among them, the evaluation wrote mR@100, and (fp16 row) the launcher said that float16 autocast ran.
Rows run as parallel processes (``jobs``): each is small next to the GPU, and what is checked is that
it runs, not how fast.
"""

import math
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gpu_check_inputs import (REPO, SGB_OVERLAY, STABLE_BACKBONE, STOCK_CONFIG, MissingInput, enabled_objectives,
                              host_environment, sgb_dataset_opts, variant_opts)
from sgb_overhead import PREDCLS
from sgtr_align_overhead import overlay_opts as sgtr_overlay_opts

FP16_ROW = ("MotifPredictor", "all", "float16")
# What the launcher logs when DTYPE float16 really trains in float16 (sgg_plugins/hosts/sgb/compat.py).
FP16_ENGAGED = "sgg-plugins amp: O1 = float16 autocast on CUDA"
# What a row's evaluation reports. mR@100 must be a number: the host computes it from every test
# image. R@100 is None when the evaluator finds no test image with a ground-truth relation (SGTR's
# on the synthetic test images, in a CPU run), so it is reported, not required.
RECALLS = ("R@100", "mR@100")
LOG_TAIL = 3000


def sgb_rows(supported=None):
    """Every (predictor, objective, dtype) row: each objective on each predictor it supports, in
    float32, then the float16 row."""
    from sgg_plugins.config import SUPPORTED_PREDICTORS

    supported = SUPPORTED_PREDICTORS if supported is None else supported
    predictors = list(dict.fromkeys(p for names in supported.values() for p in names))
    rows = [(predictor, objective, "float32") for predictor in predictors for objective in supported
            if predictor in supported[objective]]
    return rows + [FP16_ROW]


def sgb_command(row, data, text_banks, out_dir, device, sgb_root):
    """The launcher command line of an SGB row (raises MissingInput when a text bank is missing)."""
    from sgg_plugins.bench.host_commands import NO_CACHE_OPTS
    from sgg_plugins.hosts.sgb.overlay import overlay_opts

    predictor, variant, dtype = row
    return [sys.executable, str(REPO / "tools" / "relation_train_net.py"),
            "--config-file", str(Path(sgb_root) / STOCK_CONFIG), *overlay_opts(str(SGB_OVERLAY)), *STABLE_BACKBONE,
            *sgb_dataset_opts(data), *PREDCLS, "MODEL.ROI_RELATION_HEAD.PREDICTOR", predictor,
            *variant_opts(variant, text_banks), "DTYPE", dtype, "MODEL.DEVICE", device,
            "SOLVER.MAX_ITER", "1", "SOLVER.VAL_PERIOD", "1000", *NO_CACHE_OPTS, "OUTPUT_DIR", str(out_dir)]


def sgtr_command(data, out_dir, device):
    """The launcher command line of the SGTR row: MODEL.ALIGN, the CPU overlay's schedule, from scratch."""
    return [sys.executable, str(REPO / "tools" / "sgtr_train_net.py"), "--vg-dir", str(data), *sgtr_overlay_opts(),
            "MODEL.WEIGHTS", "''", "MODEL.DEVICE", device, "MODEL.ALIGN.ENABLED", "True", "OUTPUT_DIR", str(out_dir)]


def host_runs(data, text_banks, work, device, sgb_root, sgtr_root):
    """Every row as ``{"host", "predictor", "objective", "dtype", "command" or "error", "out_dir"}``;
    a host without a checkout gets no rows (the report says so)."""
    runs = []
    if sgtr_root:
        out_dir = Path(work) / "runs" / "sgtr_align"
        runs.append(dict(host="sgtr", predictor="SGTR", objective="align", dtype="float32", out_dir=out_dir,
                         command=sgtr_command(data, out_dir, device)))
    for row in sgb_rows() if sgb_root else []:
        out_dir = Path(work) / "runs" / "_".join(row)
        run = dict(host="sgb", predictor=row[0], objective=row[1], dtype=row[2], out_dir=out_dir)
        try:
            run["command"] = sgb_command(row, data, text_banks, out_dir, device, sgb_root)
        except MissingInput as error:
            run["error"] = str(error)
        runs.append(run)
    return runs


def expected_losses(run):
    """Loss-name prefixes the run's log must hold: each enabled objective's."""
    if run["host"] == "sgtr":
        return ["loss_align"]
    from sgg_plugins.bench.plan import BUILTIN_VARIANTS

    return [f"loss_{name}" for name in enabled_objectives(BUILTIN_VARIANTS[run["objective"]])]


def judge(run, log):
    """``(passed, reason, last losses, {name in RECALLS: value})`` of a run that exited 0, from what
    the host wrote."""
    from sgg_plugins.bench.outputs import host_outputs
    from sgg_plugins.bench.results import ResultError

    reader = host_outputs(run["host"])
    curves, _ = reader.read_training(run["out_dir"])
    losses = {name: points[-1][1] for name, points in curves.items()}
    bad = sorted(name for name, value in losses.items() if not math.isfinite(value))
    if bad:
        return False, f"non-finite {', '.join(bad)}", losses, {}
    missing = [prefix for prefix in expected_losses(run) if not any(name.startswith(prefix) for name in losses)]
    if missing:
        return False, f"no {', '.join(missing)} logged", losses, {}
    results = list(reader.find_results(run["out_dir"]).values())
    if not results:
        return False, "the evaluation wrote no result", losses, {}
    try:
        metrics = reader.read_result(results[0])["metrics"]
    except ResultError as error:
        return False, str(error), losses, {}
    recall = {name: metrics.get(name) for name in RECALLS}
    if recall["mR@100"] is None:
        return False, "the evaluation wrote no mR@100", losses, recall
    if run["dtype"] == "float16" and FP16_ENGAGED not in log:
        return False, "DTYPE float16 did not train under float16 autocast", losses, recall
    return True, "", losses, recall


def execute(run, timeout, threads):
    """Run one row and judge it; returns the row's report entry."""
    entry = {key: run[key] for key in ("host", "predictor", "objective", "dtype")}
    if "error" in run:
        return dict(entry, passed=False, reason=run["error"], seconds=0.0, losses={}, recall={})
    run["out_dir"].mkdir(parents=True)  # SGB's test writes into OUTPUT_DIR without making it
    start = time.perf_counter()
    try:
        result = subprocess.run(run["command"], cwd=run["out_dir"], capture_output=True, timeout=timeout,
                                env=host_environment(threads))
        log = _text(result.stdout) + _text(result.stderr)
        if result.returncode == 0:
            passed, reason, losses, recall = judge(run, log)
        else:
            passed, reason, losses, recall = False, f"exit status {result.returncode}: {_last_line(log)}", {}, {}
    except subprocess.TimeoutExpired as expired:
        log = _text(expired.stdout) + _text(expired.stderr)
        passed, reason, losses, recall = False, f"stopped after {timeout} s", {}, {}
    entry.update(passed=passed, reason=reason, seconds=time.perf_counter() - start, losses=losses, recall=recall)
    if not passed:
        entry["log_tail"] = log[-LOG_TAIL:]
    return entry


def _last_line(log):
    """The log's last non-empty line, cut to 200 characters: the launchers end on a one-line error."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no output"


def _text(output):
    """Captured bytes as text (undecodable bytes replaced: a log is for reading)."""
    return (output or b"").decode(errors="replace")


def execute_all(runs, jobs, timeout, threads):
    """Every run, ``jobs`` at a time, SGTR's (the longest) first; entries in the order of ``runs``."""
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(lambda run: execute(run, timeout, threads), runs))
