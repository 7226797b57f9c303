"""``report.md``: the report's tables and notes, in percent, for a reader."""

import shlex
from pathlib import Path

from .head_body_tail import GROUPS, SPLIT_K
from .outputs import host_outputs
from .report_plots import loss_log_period

# Metric families of the main table, as in the papers' tables; others go to the CSV / JSON only.
TABLE_FAMILIES = ("R", "mR", "F", "ng-mR", "zR")


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


def _schedule_cells(schedule):
    """A run's Schedule (with its LR decays before the test), Final LR and Stopped-at cells."""
    if not schedule:
        return "–", "–", "–"
    kind = schedule["type"] or "?"
    if schedule["decays"] is not None:
        kind += f", {len(schedule['decays'])} LR decay(s)" + (
            f" at {', '.join(map(str, schedule['decays']))}" if schedule["decays"] else "")
    final_lr = "–"
    if schedule["final_lr"] is not None:
        final_lr = f"{schedule['final_lr']:.3g}"
        if schedule["final_lr_iter"] != schedule["stopped_at"]:
            # The plug-in's LOG_PERIOD lines carry no lr: the last one logged may be older.
            final_lr += f" (iter {schedule['final_lr_iter']})"
    stopped = "–" if schedule["stopped_at"] is None else f"{schedule['stopped_at']} of {schedule['max_iter']} ({schedule['stop_reason']})"
    return kind, final_lr, stopped


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
        measured_std = (floor or {}).get(f"mR@{SPLIT_K}", {}).get("baseline_std")
        measured = "" if measured_std is None else f" (against {_pct(measured_std)} as measured)"
        lines += ["", f"Where the baseline's spread of mR@{SPLIT_K} comes from: mR@{SPLIT_K} is the mean of the "
                  f"per-predicate recalls, so its variance over seeds is the sum of their covariances divided by "
                  f"P², and each predicate's share is its row of that sum. The shares add up to 100 %; a negative "
                  f"one is a predicate whose recall moves against the others'. The last column is the std "
                  f"mR@{SPLIT_K} would have had with that predicate's recall at its mean on every seed{measured}: how "
                  f"far the floor would fall were that predicate decided the same way by every seed. "
                  f"The {min(5, len(sources))} largest shares:",
                  ""]
        rows = [[p["name"], p["group"] or "–", "–" if p["train_count"] is None else p["train_count"],
                 " / ".join(_pct(p[f"R@{SPLIT_K}"][baseline]["by_seed"][s], 0) for s in spread_seeds),
                 f"{100 * p['baseline_variance_share']:.0f} %", _pct(p["baseline_std_if_held"])]
                for p in sources[:5]]
        lines += _table(["Predicate", "group", "training samples",
                         f"{baseline} R@{SPLIT_K}, seeds {', '.join(map(str, spread_seeds))}", "share",
                         f"mR@{SPLIT_K} std if held"], rows)

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
        kind, final_lr, stopped = _schedule_cells(r["schedule"])
        note = r["note"] or r["result_file"] or ""
        if r["flag"]:
            note = f"⚠ {r['flag']}; {note}"
        seconds = r["seconds"] or {}
        rows.append([r["variant"], r["seed"], r["status"] if r["status"] == "done" else f"**{r['status']}**",
                     kind, final_lr, stopped, "–" if seconds.get("train") is None else f"{seconds['train']:.0f}",
                     "–" if seconds.get("test") is None else f"{seconds['test']:.0f}", note])
    lines += _table(["Variant", "Seed", "Status", "Schedule", "Final LR", "Stopped at", "train s", "test s", "Note"],
                    rows)
    undecayed = [f"{r['variant']}/seed{r['seed']}" for r in report["runs"]
                 if r["status"] == "done" and r["lr_decayed_before_test"] is False]
    if undecayed:
        lines += ["", f"⚠ {len(undecayed)} run(s) ended at their starting LR, with no LR decay before the test: "
                      f"their test scores an unsettled iterate ({', '.join(undecayed)})."]
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
        period = loss_log_period(report)
        if period is not None:
            lines += ["", outputs.log_period_note(period)]
    lines += ["", "Every number above, in the host's units (fractions), is in `report.csv` and `report.json`.", ""]
    Path(path).write_text("\n".join(lines))
