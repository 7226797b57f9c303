"""``sgg-plugins report``: tables, paired significance tests and plots from finished bench runs.

Reads, for every ``<bench>/<variant>/seed<k>/`` folder, the host's own evaluation output, its
training losses and schedule, and ``run.json``; nothing the host's evaluator computed is computed
again. Where these are depends on the host (``bench.json``'s ``host``): SGB's
``inference/<test set>/result_dict.pytorch``, ``log.txt`` and ``config.yml``
(``results.SgbOutputs``), SGTR's ``result_dict.pytorch`` with ``evaluation_res.txt``,
``metrics.json`` and ``config.json`` (``results_sgtr.SgtrOutputs``). Writes into ``--out`` (every
path in them relative to the bench folder, so a report reads the same when the folder moves):

- ``report.md``: R@K, mR@K, F@K (harmonic mean of R@K and mR@K), ng-mR@K, zR@K as mean ± sample
  standard deviation (ddof = 1) over seeds, in percent; the noise floor (the difference a paired
  test over the baseline's seeds can detect given its seed-to-seed std); head/body/tail mR@100;
  each predicate's share of the baseline's seed-to-seed variance of mR@100;
  per variant the per-seed differences to the baseline with ``scipy.stats.ttest_rel``,
  ``scipy.stats.wilcoxon`` and the t-based 95 % confidence interval of the mean difference; every
  run's status, LR schedule, where it stopped and how long it took;
- ``report.csv`` and ``report.json``: every number of the report, in the host's units (fractions);
- ``per_predicate_recall.png``: the host's per-predicate R@100 (the list behind mR@100) as grouped
  bars, predicates sorted by training frequency, one bar per variant;
- ``training_losses.png``: every loss the host logged, per variant and seed.

A run's evaluation must be its own: a result file older than the run's test stage is refused,
and one the host may have computed from cached predictions (``TEST.ALLOW_LOAD_FROM_CACHE`` not
False and no cleared cache recorded) is flagged.

Head/body/tail: predicates are ranked by their number of training samples, counted from the
dataset h5 (``--vg-h5``, or the synthetic dataset named by the bench's ``PATHS_CATALOG``, or SGTR's
``--vg-dir``); the host's ``*_statistics.cache`` is only a flagged fallback, because the hosts
count it over overlapping pairs only. By default the most frequent third of the predicate classes
is *head*, the least frequent third *tail*, the rest *body* (``--head-frac`` / ``--tail-frac``;
ties keep predicate order); SGTR runs instead default to the host's own split
(``LONGTAIL_PART_DICT`` in their ``config.json``, the fixed VG150 split of BGNN and SGTR) when it
has one entry per predicate, so the report's head/body/tail mR@100 are the host's "longtail part
recall". ``--head-above`` / ``--tail-below`` split by training counts instead, and ``--split-file``
gives the groups explicitly.
"""

import csv
import json
import math
import os
import shlex
import statistics
import sys
from pathlib import Path

from .outputs import host_outputs
from .plan import bench_commands
from .results import (
    HOST_NUM_VAL_IMAGES,
    ResultError,
    check_evaluation_freshness,
    count_predicates_in_h5,
    find_statistics_cache,
    read_predicate_statistics,
)

GROUPS = ("head", "body", "tail")
# Metric families of the main table, as in the papers' tables; others go to the CSV / JSON only.
TABLE_FAMILIES = ("R", "mR", "F", "ng-mR", "zR")
SPLIT_K = 100
PNG_DPI = 120


class ReportError(ValueError):
    """The bench folder or a report option cannot produce a report."""


# ---------------------------------------------------------------- statistics

def mean_std(values):
    """``(mean, sample std with ddof=1, n)`` of the values that exist; std is None below 2 values."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None, 0
    std = statistics.stdev(values) if len(values) > 1 else None
    return statistics.fmean(values), std, len(values)


def paired_test(variant_by_seed, baseline_by_seed, confidence=0.95):
    """Paired tests of a variant against the baseline over the seeds both finished.

    With d_s = variant_s - baseline_s: ``scipy.stats.ttest_rel`` (two-sided; t, df, p and the
    t-based ``confidence`` interval of mean(d)) and ``scipy.stats.wilcoxon`` (two-sided signed-rank,
    exact for small n). Below two seeds, or when d is the same on every seed (no spread, so no t),
    the t-test is not available and ``note`` says why.
    """
    seeds = sorted(s for s, v in variant_by_seed.items() if v is not None and baseline_by_seed.get(s) is not None)
    variant = [variant_by_seed[s] for s in seeds]
    baseline = [baseline_by_seed[s] for s in seeds]
    diffs = [v - b for v, b in zip(variant, baseline)]
    result = {"seeds": seeds, "diffs": diffs, "n": len(diffs), "mean_diff": None, "std_diff": None,
              "t": None, "df": None, "p": None, "ci_low": None, "ci_high": None, "confidence": confidence,
              "wilcoxon_statistic": None, "wilcoxon_p": None, "note": ""}
    if diffs:
        result["mean_diff"] = statistics.fmean(diffs)
    if len(diffs) < 2:
        result["note"] = "n/a: fewer than 2 seeds finished for both"
        return result
    from scipy import stats

    std = statistics.stdev(diffs)
    result["std_diff"] = std
    if any(abs(d) > 1e-12 for d in diffs):
        # zero_method="wilcox" drops zero differences, as the signed-rank test defines them.
        wilcoxon = stats.wilcoxon(variant, baseline, alternative="two-sided")
        result.update(wilcoxon_statistic=float(wilcoxon.statistic), wilcoxon_p=float(wilcoxon.pvalue))
    # Recalls are fractions: a spread below 1e-12 is rounding, and t would be meaninglessly huge.
    if std < 1e-12:
        result["note"] = "n/a: the difference is the same on every seed"
        return result
    ttest = stats.ttest_rel(variant, baseline, alternative="two-sided")
    interval = ttest.confidence_interval(confidence_level=confidence)
    result.update(t=float(ttest.statistic), df=int(ttest.df), p=float(ttest.pvalue),
                  ci_low=float(interval.low), ci_high=float(interval.high))
    return result


def detectable_difference(baseline_std, n, alpha=0.05, power=0.8):
    """The noise floor of a paired t-test over ``n`` seeds, from the baseline's seed-to-seed std.

    Assumes the variant's seeds scatter as the baseline's and independently of them, so the paired
    differences have sd(d) = sqrt(2) * baseline_std. Returns ``{"significant": the smallest |mean d|
    that gives p < alpha (t_{1-alpha/2, n-1} * sd(d) / sqrt(n)), "at_power": the true difference the
    test detects with probability ``power`` (from the noncentral t), "wilcoxon_min_p": the smallest
    two-sided p the signed-rank test can give with n pairs, 2 / 2**n}``; None entries below 2 seeds.
    """
    result = {"n": n, "baseline_std": baseline_std, "alpha": alpha, "power": power, "sd_diff": None,
              "significant": None, "at_power": None, "wilcoxon_min_p": 2 / 2 ** n if n else None}
    if n < 2 or baseline_std is None:
        return result
    from scipy import optimize, stats

    df = n - 1
    sd_diff = math.sqrt(2) * baseline_std
    critical = stats.t.ppf(1 - alpha / 2, df)
    result.update(sd_diff=sd_diff, significant=critical * sd_diff / math.sqrt(n))
    if sd_diff == 0:
        result["at_power"] = 0.0
        return result

    def shortfall(noncentrality):
        # The far tail is below 1e-16 once the effect is sizeable, where scipy's nct.cdf can give NaN.
        far_tail = stats.nct.cdf(-critical, df, noncentrality)
        detected = stats.nct.sf(critical, df, noncentrality) + (0.0 if math.isnan(far_tail) else far_tail)
        return detected - power

    # Power 0.8 needs a noncentrality below 30 for every df >= 1 (about 17 for two seeds).
    noncentrality = optimize.brentq(shortfall, 0.0, 30.0)
    result["at_power"] = noncentrality * sd_diff / math.sqrt(n)
    return result


def mean_recall_variance_shares(recall_by_seed):
    """Each predicate's share of the seed-to-seed variance of mR@K, or None where mR@K did not vary.

    mR@K is the mean of the P per-predicate recalls r_1..r_P, so over seeds
    Var(mR) = (1/P^2) * sum_i sum_j Cov(r_i, r_j), and predicate i's share is
    sum_j Cov(r_i, r_j) / sum_ij Cov(r_i, r_j). The shares sum to 1; a negative one marks a predicate
    whose recall moves against the others' (a near-synonym taking recall from another).
    ``recall_by_seed``: one sequence per predicate, its recall on the same >= 2 seeds.
    """
    import numpy as np

    covariance = np.atleast_2d(np.cov(np.asarray(recall_by_seed, dtype=float)))  # sample (ddof=1), as the std
    row_sums = covariance.sum(axis=1)
    total = row_sums.sum()
    return None if total <= 0 else (row_sums / total).tolist()


def f_at_k(recall, mean_recall):
    """F@K: the harmonic mean of R@K and mR@K (None where either is missing; 0 where both are 0)."""
    if recall is None or mean_recall is None:
        return None
    return 0.0 if recall + mean_recall == 0 else 2 * recall * mean_recall / (recall + mean_recall)


# ---------------------------------------------------------------- head / body / tail

def split_by_rank(counts, head_frac=1 / 3, tail_frac=1 / 3):
    """Group of each predicate: the ``round(n * head_frac)`` most frequent are head, the
    ``round(n * tail_frac)`` least frequent tail, the rest body. Ties keep predicate order."""
    for name, frac in (("--head-frac", head_frac), ("--tail-frac", tail_frac)):
        if not 0 <= frac <= 1:
            raise ReportError(f"{name} = {frac} must be in [0, 1]")
    if head_frac + tail_frac > 1:
        raise ReportError(f"--head-frac + --tail-frac = {head_frac + tail_frac} must not exceed 1")
    n = len(counts)
    n_head, n_tail = round(n * head_frac), round(n * tail_frac)
    order = sorted(range(n), key=lambda i: (-counts[i], i))
    groups = [None] * n
    for rank, predicate in enumerate(order):
        groups[predicate] = "head" if rank < n_head else "tail" if rank >= n - n_tail else "body"
    return groups


def split_by_counts(counts, head_above, tail_below):
    """Head: more than ``head_above`` training samples; tail: fewer than ``tail_below``; body: the rest."""
    if tail_below > head_above + 1:
        raise ReportError(f"--tail-below {tail_below} must not exceed --head-above {head_above} + 1")
    return ["head" if c > head_above else "tail" if c < tail_below else "body" for c in counts]


def read_split_file(path, names):
    """Groups from a JSON file: ``{"head": [...], "body": [...], "tail": [...]}`` with predicate
    names or 1-based predicate indices, or a list of ``"h"``/``"b"``/``"t"`` per predicate index
    (a leading ``null`` for background is allowed, as in SGTR's ``LONGTAIL_PART_DICT``)."""
    path = Path(path)
    if not path.is_file():
        raise ReportError(f"--split-file {path} does not exist")
    try:
        spec = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ReportError(f"--split-file {path} is not valid JSON: {error}") from error
    n = len(names)
    letters = {"h": "head", "b": "body", "t": "tail"}
    if isinstance(spec, list):
        if len(spec) == n + 1 and spec[0] in (None, ""):
            spec = spec[1:]
        if len(spec) != n or any(str(s).lower()[:1] not in letters for s in spec):
            raise ReportError(f"--split-file {path}: a list needs one of 'h', 'b', 't' for each of the {n} predicates")
        return [letters[str(s).lower()[:1]] for s in spec]
    if not isinstance(spec, dict) or set(spec) - set(GROUPS):
        raise ReportError(f"--split-file {path}: expected keys among {GROUPS} or a list of 'h'/'b'/'t'")
    groups = [None] * n
    for group, members in spec.items():
        for member in members:
            if isinstance(member, int) and 1 <= member <= n:
                index = member - 1
            elif member in names:
                index = names.index(member)
            else:
                raise ReportError(f"--split-file {path}: {member!r} is neither a predicate name nor an index in 1..{n}")
            if groups[index] is not None:
                raise ReportError(f"--split-file {path}: predicate {names[index]!r} is in two groups")
            groups[index] = group
    missing = [names[i] for i in range(n) if groups[i] is None]
    if missing:
        raise ReportError(f"--split-file {path}: predicates in no group: {', '.join(missing)}")
    return groups


# ---------------------------------------------------------------- reading the bench

def relative_to(path, bench_dir):
    """``path`` as seen from the bench folder: what the report writes, so it reads the same anywhere."""
    return os.path.relpath(Path(path).resolve(), Path(bench_dir).resolve())


# A path inside a host checkout is written as under its variable: the checkout's place is the
# reporting machine's, not the bench's.
HOST_ROOT_VARIABLES = ("SGB_ROOT", "SGTR_ROOT")


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
    out = [os.path.basename(command[0])] if command else []
    for token in command[1:]:
        if os.path.isabs(token):
            out.append(portable_path(token, bench_dir, environ))
        elif "=" in token and os.path.isabs(token.partition("=")[2]):
            key, _, value = token.partition("=")
            out.append(f"{key}={portable_path(value, bench_dir, environ)}")
        else:
            out.append(token)
    return out


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


# ---------------------------------------------------------------- building the report

def build_report(args):
    bench_dir = Path(args.bench_dir)
    if not bench_dir.is_dir():
        raise ReportError(f"{bench_dir} is not a folder (give the --out folder of sgg-plugins bench)")
    variants, seeds, planned_baseline, plan = load_plan(bench_dir, args.variants)
    baseline = args.baseline or planned_baseline
    if baseline is not None and baseline not in variants:
        raise ReportError(f"baseline {baseline!r} is not among the variants {', '.join(variants)}; pass --baseline")

    host = bench_host(bench_dir, plan)
    outputs = host_outputs(host)
    runs = {(v, s): read_run(bench_dir / v / f"seed{s}", args.dataset, outputs) for v in variants for s in seeds}
    done = [r for r in runs.values() if r["status"] == "done"]
    if not done:
        notes = "; ".join(f"{v}/seed{s}: {r['status']} {r['note']}" for (v, s), r in runs.items())
        raise ReportError(f"no finished run with host results in {bench_dir} ({notes})")
    modes = {r["result"]["mode"] for r in done}
    if len(modes) > 1:
        raise ReportError(f"runs were evaluated in different modes ({', '.join(sorted(modes))}); report them separately")

    order = [baseline] + [v for v in variants if v != baseline] if baseline else variants
    names, counts, statistics_path, statistics_how = predicate_statistics(
        args, bench_dir, plan, [bench_dir / v / f"seed{s}" for v in order for s in seeds], outputs)
    statistics_source = relative_to(statistics_path, bench_dir) if statistics_path else None
    num_predicates = len(done[0]["result"]["per_predicate_recall"].get(SPLIT_K, []))
    if counts is not None and len(counts) != num_predicates:
        raise ReportError(f"{statistics_source} has {len(counts)} predicates but the host's mR@{SPLIT_K} list has "
                          f"{num_predicates}: the statistics belong to another dataset")
    first_done = next(bench_dir / v / f"seed{s}" for (v, s), r in runs.items() if r["status"] == "done")
    host_groups, host_note = outputs.host_split(first_done, num_predicates)
    split_options = (args.split_file, args.head_above, args.tail_below, args.head_frac, args.tail_frac)
    groups, split_rule = None, f"not computed: {statistics_how}"
    if host_groups is not None and all(option is None for option in split_options):
        groups, split_rule = host_groups, host_note
    elif counts is not None:
        head_frac = 1 / 3 if args.head_frac is None else args.head_frac
        tail_frac = 1 / 3 if args.tail_frac is None else args.tail_frac
        if args.split_file:
            groups = read_split_file(args.split_file, names)
            split_rule = f"groups from {relative_to(args.split_file, bench_dir)}"
        elif args.head_above is not None or args.tail_below is not None:
            if args.head_above is None or args.tail_below is None:
                raise ReportError("--head-above and --tail-below go together")
            groups = split_by_counts(counts, args.head_above, args.tail_below)
            split_rule = (f"head: more than {args.head_above} training samples; tail: fewer than "
                          f"{args.tail_below}; body: the rest")
        else:
            groups = split_by_rank(counts, head_frac, tail_frac)
            split_rule = (f"predicates ranked by training samples; head: the {round(len(counts) * head_frac)} "
                          f"most frequent ({head_frac:.3g} of {len(counts)}), tail: the "
                          f"{round(len(counts) * tail_frac)} least frequent ({tail_frac:.3g}), body: the rest")
        if host_note and host_groups is None:
            split_rule += f" ({host_note})"
    if names is None:
        names = [f"predicate {i}" for i in range(1, num_predicates + 1)]

    # Per-run numbers: the host's metrics, F@K, and the head/body/tail means of per-predicate recall.
    per_run = {}
    for key, run in runs.items():
        if run["status"] != "done":
            continue
        metrics = dict(run["result"]["metrics"])
        for k in sorted({int(m.split("@")[1]) for m in metrics if m.startswith("R@")}):
            if f"mR@{k}" in metrics:
                metrics[f"F@{k}"] = f_at_k(metrics[f"R@{k}"], metrics[f"mR@{k}"])
        recall = run["result"]["per_predicate_recall"].get(SPLIT_K)
        if groups is not None and recall is not None:
            for group in GROUPS:
                members = [r for r, g in zip(recall, groups) if g == group]
                metrics[f"{group} mR@{SPLIT_K}"] = statistics.fmean(members) if members else None
        per_run[key] = metrics
    metric_names = list(dict.fromkeys(m for metrics in per_run.values() for m in metrics))

    summary = {}
    for variant in order:
        summary[variant] = {}
        for metric in metric_names:
            by_seed = {s: per_run[(variant, s)].get(metric) for s in seeds if (variant, s) in per_run}
            mean, std, n = mean_std(by_seed.values())
            summary[variant][metric] = {"mean": mean, "std": std, "n": n, "by_seed": by_seed}

    paired, noise_floor = {}, {}
    if baseline is not None:
        for variant in order[1:]:
            paired[variant] = {m: paired_test(summary[variant][m]["by_seed"], summary[baseline][m]["by_seed"])
                               for m in metric_names}
        for metric in metric_names:
            entry = summary[baseline][metric]
            noise_floor[metric] = detectable_difference(entry["std"], entry["n"], alpha=args.alpha)

    predicates = []
    for i, name in enumerate(names):
        recall = {}
        for variant in order:
            by_seed = {s: per_run_recall(runs[(variant, s)], i) for s in seeds if runs[(variant, s)]["status"] == "done"}
            mean, std, n = mean_std(by_seed.values())
            recall[variant] = {"mean": mean, "std": std, "n": n, "by_seed": by_seed}
        predicates.append({"index": i + 1, "name": name, "train_count": counts[i] if counts else None,
                           "group": groups[i] if groups else None, f"R@{SPLIT_K}": recall})
    # Where the baseline's noise floor comes from: its mR@K spread split by predicate, over the seeds
    # on which every predicate has a recall.
    spread_seeds = []
    if baseline is not None:
        spread_seeds = [s for s in seeds if all(p[f"R@{SPLIT_K}"][baseline]["by_seed"].get(s) is not None
                                                for p in predicates)]
    shares = None
    if len(spread_seeds) >= 2:
        shares = mean_recall_variance_shares(
            [[p[f"R@{SPLIT_K}"][baseline]["by_seed"][s] for s in spread_seeds] for p in predicates])
    for i, predicate in enumerate(predicates):
        predicate["baseline_variance_share"] = shares[i] if shares else None

    return {
        "bench_dir": ".",
        "bench_name": bench_dir.resolve().name,
        "host": host,
        "commands": [relative_command(command, bench_dir) for command in bench_commands(plan)],
        "mode": modes.pop(),
        "test_set": done[0]["test_set"],
        "baseline": baseline,
        "variants": order,
        "seeds": seeds,
        "paths": "relative to the bench folder",
        "std": "sample standard deviation (ddof=1) over seeds",
        "test": ("scipy.stats.ttest_rel and scipy.stats.wilcoxon, two-sided, paired over seeds, not corrected "
                 "for multiple comparisons; CI: t-based 95% interval of the mean paired difference"),
        "alpha": args.alpha,
        "split": {"rule": split_rule, "statistics": statistics_source, "counts_from": statistics_how, "k": SPLIT_K},
        "metrics": metric_names,
        "runs": [{"variant": v, "seed": s, "status": r["status"], "note": r["note"], "flag": r["flag"],
                  "result_file": r["result_file"], "seconds": r["seconds"], "schedule": r["schedule"],
                  "metrics": per_run.get((v, s))} for (v, s), r in runs.items()],
        "summary": summary,
        "paired": paired,
        "noise_floor": noise_floor,
        "variance_share": {"metric": f"mR@{SPLIT_K}", "seeds": spread_seeds if shares else [],
                           "rule": "predicate i: sum_j Cov(r_i, r_j) / sum_ij Cov(r_i, r_j) over the baseline's "
                                   "seeds (sample covariance); the shares sum to 1"},
        "predicates": predicates,
        "losses": {v: {s: runs[(v, s)]["losses"] for s in seeds if runs[(v, s)]["losses"]} for v in order},
    }


def per_run_recall(run, index):
    recall = run["result"]["per_predicate_recall"].get(SPLIT_K)
    return recall[index] if recall is not None else None


# ---------------------------------------------------------------- writing

def _pct(value, digits=2):
    return "–" if value is None else f"{100 * value:.{digits}f}"


def _cell(entry, row_n=None):
    if entry["mean"] is None:
        return "–"
    cell = _pct(entry["mean"]) + (f" ± {_pct(entry['std'])}" if entry["std"] is not None else "")
    return cell + (f" (n={entry['n']})" if row_n is not None and entry["n"] < row_n else "")


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _signed(value):
    return "–" if value is None else f"{100 * value:+.2f}"


def _p(value, alpha):
    return "n/a" if value is None else f"{value:.3g}" + (" *" if value < alpha else "")


def _log_period(report):
    """The iteration step between the host's loss log lines, from the recorded curves (or None)."""
    steps = {b[0] - a[0] for by_seed in report["losses"].values() for curves in by_seed.values()
             for points in curves.values() for a, b in zip(points, points[1:])}
    return min(steps) if steps else None


def _schedule_text(schedule):
    if not schedule:
        return "–", "–"
    kind = schedule["type"] or "?"
    if kind == "WarmupReduceLROnPlateau":
        kind += f", {len(schedule['decays'])} LR decay(s)" + (
            f" at {', '.join(map(str, schedule['decays']))}" if schedule["decays"] else "")
    stopped = "–" if schedule["stopped_at"] is None else f"{schedule['stopped_at']} of {schedule['max_iter']} ({schedule['stop_reason']})"
    return kind, stopped


def write_markdown(report, path, plots):
    summary, variants, alpha = report["summary"], report["variants"], report["alpha"]
    available = [m for m in report["metrics"] if any(summary[v][m]["n"] for v in variants)]
    main = [m for m in available if m.split("@")[0] in TABLE_FAMILIES]
    main.sort(key=lambda m: TABLE_FAMILIES.index(m.split("@")[0]))
    split = [f"{g} mR@{SPLIT_K}" for g in GROUPS if f"{g} mR@{SPLIT_K}" in available]
    seeds = report["seeds"]
    outputs = host_outputs(report["host"])

    lines = [
        "# Benchmark report", "",
        f"Bench folder `{report['bench_name']}` (every path below is relative to it) · mode **{report['mode']}** · "
        f"test set `{report['test_set']}` · seeds {', '.join(map(str, seeds))}", "",
        f"Numbers are the host evaluator's own outputs ({outputs.result_description} of each run), "
        "in percent: mean ± sample standard deviation (ddof = 1) over the seeds whose run finished; *n* is that "
        "number of seeds. R@K and zR@K are the means of the host's per-image recalls, as the host prints them; "
        "F@K is the harmonic mean of R@K and mR@K, per run. – marks a metric the host did not produce.", "",
    ]
    if report["commands"]:
        # As typed: a token is quoted only when it holds whitespace (an overlay's '' stays '').
        typed = [" ".join(shlex.quote(t) if not t or any(c.isspace() for c in t) else t for t in command)
                 for command in report["commands"]]
        title = "Command:" if len(typed) == 1 else f"Commands ({len(typed)} bench runs into this folder, in order):"
        lines += [title, "", "```", *typed, "```", ""]
    lines += ["## Results", ""]
    rows = []
    for v in variants:
        row_n = max(summary[v][m]["n"] for m in main)
        rows.append([v, row_n] + [_cell(summary[v][m], row_n) for m in main])
    lines += _table(["Variant", "n"] + main, rows)

    baseline = report["baseline"]
    floor = report["noise_floor"]
    if baseline and floor:
        lines += ["", "## Noise floor", "",
                  f"From the baseline's seed-to-seed standard deviation, assuming a variant's seeds scatter as "
                  f"much and independently (sd of the paired difference = √2 · std): the smallest mean difference "
                  f"a paired t-test over the baseline's n seeds finds at p < {alpha} (two-sided), and the true "
                  f"difference it detects with 80 % power. The Wilcoxon signed-rank test cannot reach p below "
                  f"2 / 2ⁿ (0.0625 for n = 5): with fewer than 6 seeds it is never significant at 0.05.", ""]
        rows = []
        for metric in [m for m in ("R@50", "mR@50", "F@50", "R@100", "mR@100", "F@100") if m in floor]:
            entry = floor[metric]
            rows.append([metric, entry["n"], _pct(entry["baseline_std"]), _pct(entry["significant"]),
                         _pct(entry["at_power"]),
                         "–" if entry["wilcoxon_min_p"] is None else f"{entry['wilcoxon_min_p']:.3g}"])
        lines += _table(["Metric", "n", "baseline std", f"smallest Δ with p < {alpha}", "Δ at 80 % power",
                         "min Wilcoxon p"], rows)

    sources = sorted((p for p in report["predicates"] if p["baseline_variance_share"] is not None),
                     key=lambda p: -p["baseline_variance_share"])
    if sources:
        spread_seeds = report["variance_share"]["seeds"]
        lines += ["", f"Where the baseline's spread of mR@{SPLIT_K} comes from: mR@{SPLIT_K} is the mean of the "
                  f"per-predicate recalls, so its variance over seeds is the sum of their covariances divided by "
                  f"P², and each predicate's share is its row of that sum. The shares add up to 100 %; a negative "
                  f"one is a predicate whose recall moves against the others'. The {min(5, len(sources))} largest:",
                  ""]
        rows = [[p["name"], p["group"] or "–", "–" if p["train_count"] is None else p["train_count"],
                 " / ".join(_pct(p[f"R@{SPLIT_K}"][baseline]["by_seed"][s], 0) for s in spread_seeds),
                 f"{100 * p['baseline_variance_share']:.0f} %"] for p in sources[:5]]
        lines += _table(["Predicate", "group", "training samples",
                         f"{baseline} R@{SPLIT_K}, seeds {', '.join(map(str, spread_seeds))}", "share"], rows)

    lines += ["", f"## Head / body / tail mR@{SPLIT_K}", "", f"Split: {report['split']['rule']}.", ""]
    if split:
        lines += [f"Training counts: {report['split']['counts_from']}, `{report['split']['statistics']}`.", ""]
        lines += _table(["Variant", "n"] + [m.split()[0] for m in split],
                        [[v, summary[v][split[0]]["n"]] + [_cell(summary[v][m]) for m in split] for v in variants])
        lines.append("")
        by_frequency = sorted(report["predicates"], key=lambda p: -p["train_count"])
        for group in GROUPS:
            members = [f"{p['name']} ({p['train_count']})" for p in by_frequency if p["group"] == group]
            lines.append(f"- **{group}** ({len(members)}): {', '.join(members)}")
    if report["paired"]:
        lines += ["", f"## Against `{baseline}`", "",
                  "Per-seed difference d_s = variant_s − baseline_s in percentage points; mean Δ with its t-based "
                  "95 % confidence interval; p of the paired t-test (`scipy.stats.ttest_rel`) and of the Wilcoxon "
                  "signed-rank test (`scipy.stats.wilcoxon`), both two-sided, not corrected for multiple "
                  f"comparisons; * marks p < {alpha}."]
        for variant, tests in report["paired"].items():
            lines += ["", f"### {variant} − {baseline}", ""]
            rows = []
            for metric in main + split:
                test = tests[metric]
                diffs = dict(zip(test["seeds"], test["diffs"]))
                interval = ("–" if test["ci_low"] is None else f"[{_signed(test['ci_low'])}, {_signed(test['ci_high'])}]")
                rows.append([metric] + [_signed(diffs.get(s)) for s in seeds] + [
                    _signed(test["mean_diff"]), interval,
                    "n/a" if test["t"] is None else f"{test['t']:.2f}",
                    test["note"] or _p(test["p"], alpha), _p(test["wilcoxon_p"], alpha),
                ])
            lines += _table(["Metric"] + [f"seed {s}" for s in seeds] + ["mean Δ", "95 % CI", "t", "p (t)",
                                                                          "p (Wilcoxon)"], rows)
    lines += ["", "## Runs", "", f"{outputs.schedule_description} Times from `run.json`.", ""]
    rows = []
    for r in report["runs"]:
        kind, stopped = _schedule_text(r["schedule"])
        note = r["note"] or r["result_file"] or ""
        if r["flag"]:
            note = f"⚠ {r['flag']}; {note}"
        seconds = r["seconds"] or {}
        rows.append([r["variant"], r["seed"], r["status"] if r["status"] == "done" else f"**{r['status']}**",
                     kind, stopped, "–" if seconds.get("train") is None else f"{seconds['train']:.0f}",
                     "–" if seconds.get("test") is None else f"{seconds['test']:.0f}", note])
    lines += _table(["Variant", "Seed", "Status", "Schedule", "Stopped at", "train s", "test s", "Note"], rows)
    total = sum(v for r in report["runs"] for v in (r["seconds"] or {}).values() if v)
    lines += ["", f"Total recorded run time: {total / 3600:.2f} h ({total:.0f} s)."]
    missing = [r for r in report["runs"] if r["status"] != "done"]
    if missing:
        lines += ["", f"{len(missing)} run(s) without results are left out of every mean and test above."]
    flagged = [r for r in report["runs"] if r["flag"]]
    if flagged:
        lines += ["", f"⚠ {len(flagged)} run(s) are included but flagged: their evaluation may not be their own."]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{title}]({name})" for name, title in plots.items()]
        period = _log_period(report)
        if period is not None:
            lines += ["", outputs.log_period_note(period)]
    lines += ["", "Every number above, in the host's units (fractions), is in `report.csv` and `report.json`.", ""]
    Path(path).write_text("\n".join(lines))


def write_csv(report, path):
    """Long format: one number per row (section, variant, seed, metric, statistic, value)."""
    rows = []
    for run in report["runs"]:
        for metric, value in (run["metrics"] or {}).items():
            rows.append(["run", run["variant"], run["seed"], metric, "value", value])
        schedule = run["schedule"] or {}
        for key in ("type", "max_iter", "stopped_at", "stop_reason"):
            rows.append(["schedule", run["variant"], run["seed"], key, "value", schedule.get(key)])
        for stage, seconds in (run["seconds"] or {}).items():
            rows.append(["time", run["variant"], run["seed"], stage, "seconds", seconds])
    for variant, metrics in report["summary"].items():
        for metric, entry in metrics.items():
            for statistic in ("mean", "std", "n"):
                rows.append(["summary", variant, "", metric, statistic, entry[statistic]])
    for variant, tests in report["paired"].items():
        for metric, test in tests.items():
            for seed, diff in zip(test["seeds"], test["diffs"]):
                rows.append(["paired", variant, seed, metric, "diff", diff])
            for statistic in ("n", "mean_diff", "std_diff", "ci_low", "ci_high", "t", "df", "p",
                              "wilcoxon_statistic", "wilcoxon_p"):
                rows.append(["paired", variant, "", metric, statistic, test[statistic]])
    for metric, entry in report["noise_floor"].items():
        for statistic in ("n", "baseline_std", "sd_diff", "significant", "at_power", "wilcoxon_min_p"):
            rows.append(["noise_floor", report["baseline"], "", metric, statistic, entry[statistic]])
    for predicate in report["predicates"]:
        name = predicate["name"]
        rows.append(["predicate", "", "", name, "train_count", predicate["train_count"]])
        rows.append(["predicate", "", "", name, "group", predicate["group"]])
        rows.append(["predicate", report["baseline"], "", name, "variance_share", predicate["baseline_variance_share"]])
        for variant, entry in predicate[f"R@{SPLIT_K}"].items():
            for seed, value in entry["by_seed"].items():
                rows.append(["predicate", variant, seed, name, f"R@{SPLIT_K}", value])
    for variant, by_seed in report["losses"].items():
        for seed, curves in by_seed.items():
            for loss, points in curves.items():
                rows += [["loss", variant, seed, loss, f"iter {iteration}", value] for iteration, value in points]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["section", "variant", "seed", "metric", "statistic", "value"])
        writer.writerows([["" if c is None else c for c in row] for row in rows])


def plot_per_predicate(report, path):
    """Grouped bars: per predicate (most frequent first) one bar per variant, mean ± std over seeds.

    Predicates are categories, so nothing joins them; dotted lines and labels mark head/body/tail.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    predicates = report["predicates"]
    has_counts = predicates[0]["train_count"] is not None
    order = sorted(range(len(predicates)), key=lambda i: (-(predicates[i]["train_count"] or 0), i))
    variants = report["variants"]
    bar_width = 0.8 / len(variants)
    fig, (ax_count, ax) = plt.subplots(2, 1, figsize=(max(8.0, 0.22 * len(order) * (1 + len(variants))), 6.5),
                                       sharex=True, gridspec_kw={"height_ratios": [1, 3]})
    x = list(range(len(order)))
    if has_counts:
        ax_count.bar(x, [predicates[i]["train_count"] for i in order], color="0.6", width=0.8)
        ax_count.set_yscale("log")
        ax_count.set_ylabel("train samples")
    else:
        ax_count.set_axis_off()
    for j, variant in enumerate(variants):
        entries = [predicates[i][f"R@{SPLIT_K}"][variant] for i in order]
        positions = [xi + (j - (len(variants) - 1) / 2) * bar_width for xi in x]
        spread = [100 * e["std"] if e["std"] is not None else 0 for e in entries]
        ax.bar(positions, [100 * e["mean"] if e["mean"] is not None else 0 for e in entries], width=bar_width,
               yerr=spread if any(e["std"] is not None for e in entries) else None, capsize=1.5,
               error_kw={"elinewidth": 0.7}, label=variant, hatch="//" if variant == report["baseline"] else None,
               edgecolor="white", linewidth=0.3)
    groups = [predicates[i]["group"] for i in order]
    if groups[0] is not None:
        starts = [0] + [k for k in range(1, len(groups)) if groups[k] != groups[k - 1]] + [len(groups)]
        for a, b in zip(starts, starts[1:]):
            if a:
                for axis in (ax, ax_count):
                    axis.axvline(a - 0.5, color="k", linewidth=0.8, linestyle=":")
            ax.text((a + b - 1) / 2, 1.01, groups[a], transform=ax.get_xaxis_transform(), ha="center",
                    va="bottom", fontsize=9)
    ax.set_ylabel(f"R@{SPLIT_K} per predicate (%)")
    ax.set_ylim(0, 105)
    ax.set_xticks(x)
    ax.set_xticklabels([predicates[i]["name"] for i in order], rotation=90, fontsize=8)
    ax.set_xlabel("predicates, most frequent in training first" if has_counts else "predicates (no training counts)")
    ax.legend(fontsize=8, ncol=len(variants), loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    fig.suptitle(f"{report['mode']}: per-predicate R@{SPLIT_K}, mean ± std over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=PNG_DPI)
    plt.close(fig)


def plot_losses(report, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = report["losses"]
    names = list(dict.fromkeys(n for by_seed in losses.values() for curves in by_seed.values() for n in curves))
    columns = min(3, len(names))
    rows = math.ceil(len(names) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.4 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, name in zip(axes.flat, names):
        for j, (variant, by_seed) in enumerate(losses.items()):
            labelled = False
            for seed, curves in by_seed.items():
                if name not in curves:
                    continue
                iterations, values = zip(*curves[name])
                # Markers: each is one point the host logged.
                ax.plot(iterations, values, color=colors[j % len(colors)], linewidth=1, alpha=0.8,
                        marker="o", markersize=3, label=None if labelled else variant)
                labelled = True
        ax.set_title(name)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.set_axis_off()
    period = _log_period(report)
    fig.suptitle(f"training losses from the host's {host_outputs(report['host']).losses_description}, one line per seed"
                 + (f"; a point every {period} iterations" if period else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=PNG_DPI)
    plt.close(fig)


# ---------------------------------------------------------------- command line

def add_arguments(parser):
    parser.add_argument("bench_dir", help="the --out folder of sgg-plugins bench")
    parser.add_argument("--out", default=None, help="where to write the report (default: BENCH_DIR/report)")
    parser.add_argument("--baseline", default=None, help="variant the others are compared to (default: 'baseline')")
    parser.add_argument("--variants", nargs="+", default=None, help="variants to report, in this order (default: all)")
    parser.add_argument("--dataset", default=None, help="test set folder under inference/ when a run has several")
    parser.add_argument("--statistics", default=None,
                        help="the host's <train set>_statistics.cache (default: the first found in the run folders)")
    parser.add_argument("--vg-h5", default=None, help="VG-SGG-with-attri.h5 to count the training split's predicates for head/body/tail")
    parser.add_argument("--vg-dict", default=None, help="VG-SGG-dicts-with-attri.json, with --vg-h5")
    parser.add_argument("--num-val-images", type=int, default=HOST_NUM_VAL_IMAGES,
                        help="with --vg-h5: training images the host holds out for validation "
                             f"(its num_val_im; default {HOST_NUM_VAL_IMAGES})")
    parser.add_argument("--head-frac", type=float, default=None,
                        help="share of predicate classes, most frequent first, in head (default: 1/3; SGTR runs: "
                             "the host's own split when it fits the dataset)")
    parser.add_argument("--tail-frac", type=float, default=None,
                        help="share of predicate classes, least frequent first, in tail (default: 1/3)")
    parser.add_argument("--head-above", type=int, default=None, help="split by counts: head has more training samples than this")
    parser.add_argument("--tail-below", type=int, default=None, help="split by counts: tail has fewer training samples than this")
    parser.add_argument("--split-file", default=None,
                        help='JSON {"head": [...], "body": [...], "tail": [...]} (names or 1-based indices) '
                             "or a list of 'h'/'b'/'t' per predicate")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level marked with * (default: 0.05)")


def run(args):
    try:
        report = build_report(args)
    except (ReportError, ResultError) as error:
        print(f"sgg-plugins report: error: {error}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(args.bench_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    plots = {"per_predicate_recall.png": f"Per-predicate R@{SPLIT_K}"}
    plot_per_predicate(report, out / "per_predicate_recall.png")
    if any(report["losses"].values()):
        plot_losses(report, out / "training_losses.png")
        plots["training_losses.png"] = "Training losses"
    write_markdown(report, out / "report.md", plots)
    write_csv(report, out / "report.csv")
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    missing = [f"{r['variant']}/seed{r['seed']}" for r in report["runs"] if r["status"] != "done"]
    print(f"report: {out / 'report.md'}" + (f" ({len(missing)} run(s) without results: {', '.join(missing)})" if missing else ""))
    return 0


