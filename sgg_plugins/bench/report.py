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
  run's status, LR schedule with the LR decays before its test, the last LR the host logged, where
  it stopped and how long it took, and a warning naming each tested run whose LR was never lowered;
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

import json
import statistics
import sys
from pathlib import Path

from .head_body_tail import GROUPS, SPLIT_K, choose_groups
from .outputs import host_outputs
from .plan import bench_commands
from .report_csv import write_csv
from .report_inputs import (
    ReportError,
    bench_host,
    load_plan,
    predicate_statistics,
    read_run,
    relative_command,
    relative_to,
)
from .report_markdown import write_markdown
from .report_plots import plot_losses, plot_per_predicate
from .report_statistics import (detectable_difference, f_at_k, mean_recall_std_with_each_held, mean_recall_variance_shares,
                                mean_std, paired_test)
from .results import HOST_NUM_VAL_IMAGES, ResultError


def build_report(args):
    """Everything the report says, as one JSON-ready dict, from the bench folder and options in ``args``."""
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
    groups, split_rule = choose_groups(args, bench_dir, names, counts, statistics_how, host_groups, host_note)
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
    shares = held_std = None
    if len(spread_seeds) >= 2:
        baseline_recalls = [[p[f"R@{SPLIT_K}"][baseline]["by_seed"][s] for s in spread_seeds] for p in predicates]
        shares = mean_recall_variance_shares(baseline_recalls)
        held_std = mean_recall_std_with_each_held(baseline_recalls)
    for i, predicate in enumerate(predicates):
        predicate["baseline_variance_share"] = shares[i] if shares else None
        predicate["baseline_std_if_held"] = held_std[i] if shares else None  # None where shares are: mR did not move

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
                  "lr_decayed_before_test": lr_decayed_before_test(r["schedule"]),
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


def lr_decayed_before_test(schedule):
    """Whether the run's LR was lowered before its test: a run tested at its starting LR scores weights
    still moving with it. None where the host's reader cannot tell (no schedule, or one whose decays it
    does not read)."""
    if not schedule or schedule["decays"] is None:
        return None
    return bool(schedule["decays"])


def per_run_recall(run, index):
    recall = run["result"]["per_predicate_recall"].get(SPLIT_K)
    return recall[index] if recall is not None else None


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
