"""The report of ``gpu_check.py``: the overhead table against issue 21's goals, and the whole report
as markdown (printed, and written with its JSON beside it)."""

import json
import math
from pathlib import Path

# Issue 21's goals at GPU scale: each objective alone, all five together, peak memory, evaluation.
STEP_GOAL_ALONE = 1.10
STEP_GOAL_ALL = 1.35
MEMORY_GOAL = 1.05
# Evaluation runs the host's own code with or without the plug-in (no objective runs at test time),
# so its goal is 1.00x and any ratio off 1 is timing noise; 2 % allows for that noise, and only a
# slowdown counts.
EVAL_GOAL = 1.02
TIMED = ("step", "predictor", "memory", "eval")


def sgb_overhead_rows(results, predictor):
    """Rows of the table from ``sgb_overhead.measure_variants``' results for ``predictor``: times in ms."""
    rows = []
    for key, result in results.items():
        name, _, variant = key.partition("/")
        if name != predictor:
            continue
        row = {"variant": variant}
        for timed, field in zip(TIMED, ("step_s", "predictor_s", "memory_mb", "eval_s")):
            scale = 1 if timed == "memory" else 1000
            row[timed] = None if result[field] is None else result[field] * scale
            row[f"{timed}_ratio"] = result[f"{field}_ratio"]
        row["missed_goals"] = missed_goals(row)
        rows.append(row)
    return rows


def sgtr_overhead_row(baseline, align):
    """The SGTR ALIGN row from ``sgtr_align_overhead.run_variant``'s two summaries (no goal was set)."""
    row = {"variant": "SGTR align", "predictor": None, "predictor_ratio": None, "eval": None, "eval_ratio": None,
           "step": align["step_ms"], "step_ratio": align["step_ms"] / baseline["step_ms"],
           "memory": align["peak_mb"], "memory_ratio": align["peak_mb"] / max(baseline["peak_mb"], 1e-9)}
    row["missed_goals"] = None
    return row


def missed_goals(row):
    """The goals a variant's row misses (``[]``: all met); ``None`` for the baseline, which has none."""
    if row["variant"] == "baseline":
        return None
    step_goal = STEP_GOAL_ALL if row["variant"] == "all" else STEP_GOAL_ALONE
    checks = ((f"step <= {step_goal:.2f}x", row["step_ratio"], step_goal),
              (f"memory <= {MEMORY_GOAL:.2f}x", row["memory_ratio"], MEMORY_GOAL),
              (f"eval <= {EVAL_GOAL:.2f}x", row["eval_ratio"], EVAL_GOAL))
    # A ratio that is NaN (a zero baseline) meets no goal.
    return [goal for goal, ratio, limit in checks if ratio is None or not ratio <= limit]


def _number(value, digits):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def _goal_cell(missed):
    if missed is None:
        return "—"
    return "met" if not missed else "missed: " + ", ".join(missed)


def _summary_line(report):
    env = report.get("environment", {})
    parts = [f"**{report['status']}**"]
    parts += [value for value in (env.get("gpu"), env.get("torch") and f"torch {env['torch']} (CUDA {env.get('cuda')})",
                                  env.get("commit") and f"commit {env['commit']}") if value]
    if "seconds" in report:
        within = "within" if report["seconds"] <= report["budget_s"] else "OVER"
        parts.append(f"{report['seconds']:.0f} s, {within} the {report['budget_s']} s budget")
    return " · ".join(parts)


def format_markdown(report):
    """The report as markdown: status line, host runs, overhead table, notes."""
    lines = ["# GPU check", "", _summary_line(report)]
    if report["status"] == "skipped":
        return "\n".join(lines + ["", report["reason"], ""])
    if report.get("section_seconds"):
        lines += ["", "Sections: " + ", ".join(f"{name} {seconds:.0f} s"
                                               for name, seconds in report["section_seconds"].items())]
    lines += ["", "## Host runs on CUDA: one training run and its evaluation each", ""]
    lines += _table(["host", "predictor", "objectives", "DTYPE", "result", "s", "R@100", "mR@100", "why it failed"],
                    [[row["host"].upper(), row["predictor"], row["objective"], row["dtype"],
                      "pass" if row["passed"] else "FAIL", _number(row["seconds"], 1),
                      _number(row["recall"].get("R@100"), 3), _number(row["recall"].get("mR@100"), 3), row["reason"]]
                     for row in report["rows"]])
    overhead = report.get("overhead")
    if overhead:
        lines += ["", "## Step overhead", "", overhead["settings"], ""]
        # A worker's error ends with its log tail: the first line here, the whole in the JSON.
        lines += [f"Failed: {error.splitlines()[0]}" for error in overhead["errors"]]
        if overhead["rows"]:
            lines += _table(["variant", "step ms", "step ×", "predictor fwd ms", "×", "peak memory MB", "×",
                             "eval ms", "×", "goals"],
                            [[row["variant"], _number(row["step"], 1), _number(row["step_ratio"], 2),
                              _number(row["predictor"], 1), _number(row["predictor_ratio"], 2),
                              _number(row["memory"], 0), _number(row["memory_ratio"], 2), _number(row["eval"], 1),
                              _number(row["eval_ratio"], 2), _goal_cell(row["missed_goals"])]
                             for row in overhead["rows"]])
    if report.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {note}" for note in report["notes"]]
    return "\n".join(lines + [""])


def write_report(report, out):
    """The markdown to ``out`` and the JSON beside it (``out`` with the suffix ``.json``; given a
    ``.json`` path, the markdown goes beside it with ``.md``). Returns both paths."""
    out = Path(out)
    json_path = out.with_suffix(".json")
    markdown_path = out.with_suffix(".md") if out == json_path else out
    out.parent.mkdir(parents=True, exist_ok=True)
    markdown_path.write_text(format_markdown(report))
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return markdown_path, json_path
