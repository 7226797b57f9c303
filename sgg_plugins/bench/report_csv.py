"""``report.csv``: every number of the report in long format, in the host's units (fractions)."""

import csv

from .head_body_tail import SPLIT_K


def write_csv(report, path):
    """Long format: one number per row (section, variant, seed, metric, statistic, value)."""
    rows = []
    for run in report["runs"]:
        for metric, value in (run["metrics"] or {}).items():
            rows.append(["run", run["variant"], run["seed"], metric, "value", value])
        schedule = run["schedule"] or {}
        for key in ("type", "max_iter", "stopped_at", "stop_reason", "final_lr", "final_lr_iter"):
            rows.append(["schedule", run["variant"], run["seed"], key, "value", schedule.get(key)])
        for iteration in schedule.get("decays") or []:
            rows.append(["schedule", run["variant"], run["seed"], "lr_decay", "iteration", iteration])
        rows.append(["schedule", run["variant"], run["seed"], "lr_decayed_before_test", "value",
                     run["lr_decayed_before_test"]])
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
        rows.append(["predicate", report["baseline"], "", name, f"mR@{SPLIT_K}_std_if_held",
                     predicate["baseline_std_if_held"]])
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
