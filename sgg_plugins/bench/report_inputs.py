"""What the report reads from a bench folder: its plan, the host that made the runs, each run's
status, host results, training and timings, and the predicates' training counts; and how a path
in the report is written so that the report reads the same wherever the folder goes.
"""

import json
import os
from pathlib import Path

from .results import (
    check_evaluation_freshness,
    count_predicates_in_h5,
    find_statistics_cache,
    read_predicate_statistics,
)


class ReportError(ValueError):
    """The bench folder or a report option cannot produce a report."""


def relative_to(path, bench_dir):
    """``path`` as seen from the bench folder: what the report writes, so it reads the same anywhere."""
    return os.path.relpath(Path(path).resolve(), Path(bench_dir).resolve())


# A path inside a host checkout is written as under its variable: the checkout's place is the
# reporting machine's, not the bench's.
HOST_ROOT_VARIABLES = ("SGB_ROOT", "SGTR_ROOT", "SGGB_ROOT")


def portable_path(path, bench_dir, environ=os.environ):
    """``path`` as ``$SGB_ROOT/...`` (``$SGTR_ROOT/...``) when it lies in that checkout, else relative
    to the bench folder."""
    resolved = Path(path).resolve()
    for variable in HOST_ROOT_VARIABLES:
        root = environ.get(variable)
        if root and resolved.is_relative_to(Path(root).resolve()):
            return f"${variable}/{resolved.relative_to(Path(root).resolve()).as_posix()}"
    return relative_to(path, bench_dir)


def relative_command(command, bench_dir, environ=os.environ):
    """A recorded command line with every absolute path made portable (:func:`portable_path`).

    The program itself is named by its file name (``sgg-plugins``), as a user would type it.
    """
    def portable(token):
        if " " in token:  # a variant's "name=opts" holds a whole option list in one argument
            return " ".join(portable(word) for word in token.split(" "))
        if os.path.isabs(token):
            return portable_path(token, bench_dir, environ)
        key, equals, value = token.partition("=")
        if equals and os.path.isabs(value):
            return f"{key}={portable_path(value, bench_dir, environ)}"
        return token

    return ([os.path.basename(command[0])] if command else []) + [portable(token) for token in command[1:]]


def load_plan(bench_dir, only_variants=None):
    """``(variants in order, seeds, baseline name, bench.json or {})``, from ``bench.json`` or the layout."""
    plan_path = bench_dir / "bench.json"
    plan = {}
    if plan_path.exists():
        plan = json.loads(plan_path.read_text())
        variants, seeds, baseline = list(plan["variants"]), list(plan["seeds"]), plan.get("baseline")
    else:
        run_dirs = sorted(bench_dir.glob("*/seed*"))
        variants = list(dict.fromkeys(d.parent.name for d in run_dirs if d.is_dir()))
        seeds = sorted({int(d.name[4:]) for d in run_dirs if d.name[4:].isdigit()})
        baseline = "baseline" if "baseline" in variants else None
    if only_variants:
        unknown = [v for v in only_variants if v not in variants]
        if unknown:
            raise ReportError(f"--variants {' '.join(unknown)}: not in {bench_dir} (has {', '.join(variants)})")
        variants = list(only_variants)
    if not variants or not seeds:
        raise ReportError(f"no runs in {bench_dir}: expected <variant>/seed<k>/ folders written by sgg-plugins bench")
    return variants, seeds, baseline, plan


def bench_host(bench_dir, plan):
    """The host that made the runs: ``bench.json``'s ``host`` (SGB when a bench.json predates SGTR support),
    else SGTR when a run folder holds SGTR's ``config.json`` and ``metrics.json``."""
    if plan:
        return plan.get("host", "sgb")
    sgtr = any((d / "config.json").is_file() and (d / "metrics.json").is_file() for d in bench_dir.glob("*/seed*"))
    return "sgtr" if sgtr else "sgb"


def read_run(run_dir, dataset, outputs):
    """Status, host metrics, losses, schedule and timings of one run folder, read by the host's ``outputs``.

    A result file older than the run's test stage is refused (status ``stale``); one the host may
    have computed from cached predictions is kept but flagged (see ``check_evaluation_freshness``).
    """
    run = {"status": "missing", "note": "", "flag": "", "result_file": None, "result": None, "losses": {},
           "schedule": None, "seconds": {}}
    if not run_dir.is_dir():
        run["note"] = "not run"
        return run
    run["losses"], run["schedule"] = outputs.read_training(run_dir)
    record = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").exists() else None
    if record:
        run["seconds"] = {stage: entry.get("seconds") for stage, entry in record.get("stages", {}).items()}
    if record and record.get("status") != "done":
        failed = [(stage, e) for stage, e in record.get("stages", {}).items() if e.get("status") != "done"]
        stage, entry = failed[0] if failed else ("run", {})
        run["status"] = record.get("status", "missing")
        run["note"] = f"{stage} {entry.get('status', 'unfinished')}" + (
            f" (return code {entry['returncode']})" if entry.get("returncode") is not None else "")
        return run
    result_files = outputs.find_results(run_dir)
    if dataset is not None:
        result_files = {name: path for name, path in result_files.items() if name == dataset}
    if not result_files:
        run["note"] = f"no result file ({outputs.result_description})" + (f" for {dataset}" if dataset else "")
        return run
    if len(result_files) > 1:
        raise ReportError(f"{run_dir} has results for several test sets ({', '.join(result_files)}); choose one with --dataset")
    (test_set, path), = result_files.items()
    run["result_file"] = relative_to(path, run_dir.parent.parent)
    verdict, note = check_evaluation_freshness(path, record)
    if verdict == "stale":
        run.update(status="stale", note=note)
        return run
    run.update(status="done", test_set=test_set, flag=note, result=outputs.read_result(path))
    return run


def predicate_statistics(args, bench_dir, plan, run_dirs, outputs):
    """``(names, counts, source, how)`` of the training predicates, or ``(None, None, None, reason)``.

    Counts come, in this order, from ``--statistics`` (a host cache named explicitly), ``--vg-h5``,
    the bench's own dataset (SGB: a synthetic dataset's ``PATHS_CATALOG``; SGTR: ``--vg-dir``), and
    only then from a host ``*_statistics.cache`` in a run folder, which is flagged: the hosts count
    it over overlapping pairs only, which leaves out relations whose boxes never overlap.
    """
    if args.statistics:
        return (*read_predicate_statistics(args.statistics), args.statistics, "the host's statistics cache")
    if args.vg_h5:
        if not args.vg_dict:
            raise ReportError("--vg-h5 needs --vg-dict (VG-SGG-dicts-with-attri.json) for the predicate names")
        return (*count_predicates_in_h5(args.vg_h5, args.vg_dict, args.num_val_images),
                args.vg_h5, "training-split relations in the dataset h5")
    dataset = outputs.training_dataset(plan, bench_dir)
    if dataset is not None:
        h5_path, dict_path, num_val = dataset
        return (*count_predicates_in_h5(h5_path, dict_path, num_val), h5_path,
                f"training-split relations in the dataset h5 (the first {num_val} training images are validation)")
    for run_dir in run_dirs:
        cache = find_statistics_cache(run_dir)
        if cache is not None:
            return (*read_predicate_statistics(cache), cache,
                    f"the host's statistics cache, {outputs.statistics_caveat}; pass --vg-h5 for the training "
                    f"annotations' own counts")
    return None, None, None, "no dataset h5 (--vg-h5, a synthetic PATHS_CATALOG or --vg-dir) and no *_statistics.cache"
