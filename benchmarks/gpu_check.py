"""The GPU check: does every part of the project run on one CUDA GPU, and what does each objective cost
there? One command, within 5 minutes on one GPU:

    SGB_ROOT=/path/to/Scene-Graph-Benchmark.pytorch SGTR_ROOT=/path/to/SGTR \\
        python benchmarks/gpu_check.py --out docs/gpu_check/report.md

1. Host runs (``gpu_check_runs.py``): every SGB predictor x every objective it supports, one
   training step and the host's test through our launcher, a ``DTYPE float16`` row, and SGTR with
   MODEL.ALIGN trained and evaluated; pass or fail per row.
2. Step overhead on SGB (``sgb_overhead.py``'s worker): Motifs PredCls, baseline against each
   objective alone and all five, at the stock config's image sizes and relation head with a
   normalised backbone (``gpu_check_inputs.STABLE_BACKBONE``): median step, relation-predictor
   forward, peak CUDA memory and eval, as ratios to the baseline of the same run, against issue 21's
   goals. Then SGTR's ALIGN step and memory ratio (``sgtr_align_overhead.py``'s worker).

Writes the report to stdout and, with ``--out FILE``, as markdown to FILE and JSON beside it. Exit
status 0 when every row passed (goals missed do not fail the check: they are the work's targets),
1 when a row failed, an overhead run failed, or a host checkout was missing. Without a CUDA GPU it
prints one line, writes a report whose status is "skipped", and exits 0.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gpu_check_inputs import (REPO, STABLE_BACKBONE, STABLE_BACKBONE_NAME, STOCK_CONFIG, MissingInput,
                              make_text_banks, sgb_dataset_opts, variant_opts, write_dataset)
from gpu_check_report import format_markdown, sgb_overhead_rows, sgtr_overhead_row, write_report

BUDGET_S = 300
OVERHEAD_PREDICTOR = "MotifPredictor"
SECTIONS = ("host-runs", "sgb-overhead", "sgtr-overhead")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="write the report here as markdown, and as JSON beside it (.json)")
    parser.add_argument("--jobs", type=int, default=6, help="host runs at a time (default 6)")
    parser.add_argument("--timeout", type=int, default=240, help="seconds before a host run is stopped (default 240)")
    parser.add_argument("--steps", type=int, default=10, help="timed SGB steps per variant (default 10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed SGB steps first (default 3)")
    parser.add_argument("--eval-batches", type=int, default=3, help="timed eval batches of 4 images (default 3)")
    parser.add_argument("--batch", type=int, default=12, help="images per SGB training step (default 12, SGB's)")
    parser.add_argument("--repeats", type=int, default=1, help="alternating rounds of the SGB variants (default 1)")
    parser.add_argument("--sgtr-steps", type=int, default=4, help="timed SGTR steps per variant (default 4)")
    parser.add_argument("--skip", action="append", default=[], choices=SECTIONS, help="leave out a section")
    parser.add_argument("--work", help="scratch folder, kept (default: a temporary folder, removed)")
    return parser.parse_args(argv)


def environment():
    """GPU, torch and the project's commit, for the report."""
    import torch

    try:
        commit = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True,
                                text=True, timeout=30).stdout.strip() or None
    except OSError:
        commit = None
    return {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
            "commit": commit}


def measure_sgb_overhead(data, text_banks, device, sgb_root, args):
    """The SGB rows of the overhead table (every bench variant, ``OVERHEAD_PREDICTOR``, PredCls)."""
    from sgb_overhead import measure_variants

    from sgg_plugins.bench.plan import DEFAULT_VARIANTS

    variants = {name: variant_opts(name, text_banks) for name in DEFAULT_VARIANTS}
    base_opts = [*STABLE_BACKBONE, *sgb_dataset_opts(data), "MODEL.WEIGHT", "''",
                 "MODEL.PRETRAINED_DETECTOR_CKPT", "''", "MODEL.DEVICE", device, "DTYPE", "float32",
                 "SOLVER.IMS_PER_BATCH", str(args.batch), "TEST.IMS_PER_BATCH", "4", "DATALOADER.NUM_WORKERS", "0"]
    results = measure_variants(str(Path(sgb_root) / STOCK_CONFIG), base_opts, variants, [OVERHEAD_PREDICTOR], args)
    return sgb_overhead_rows(results, OVERHEAD_PREDICTOR)


def measure_sgtr_overhead(data, args):
    """The SGTR ALIGN row of the overhead table: baseline, then ALIGN, one worker each."""
    from sgtr_align_overhead import run_variant

    baseline, align = (run_variant(name, str(data), args.sgtr_steps, 1, 0) for name in ("baseline", "align"))
    return sgtr_overhead_row(baseline, align)


def overhead_settings(args):
    return (f"SGB: {OVERHEAD_PREDICTOR} PredCls, the stock config ($SGB_ROOT/{STOCK_CONFIG}: 600-1000 px images, "
            f"its relation head) with the backbone replaced by {STABLE_BACKBONE_NAME}; batch {args.batch}, fp32; "
            f"median of {args.steps} steps after {args.warmup} warm-up, eval {args.eval_batches} batches of 4 images; "
            f"each variant in its own process on the same batches ({args.repeats} round(s), "
            f"benchmarks/sgb_overhead.py); "
            f"ratios against the baseline of this run. SGTR: benchmarks/sgtr_align_overhead.py's worker "
            f"(configs/sgtr/synthetic_cpu.opts: R-50, 128-160 px, batch 2), {args.sgtr_steps} steps after 1 warm-up. "
            f"Goals (issue 21): step <= 1.10x for each objective alone, <= 1.35x for all five, memory <= 1.05x, "
            f"eval 1.00x.")


def run_checks(args, work, device="cuda"):
    """Every section not skipped; returns the report (without status and environment)."""
    roots = {"SGB_ROOT": os.environ.get("SGB_ROOT"), "SGTR_ROOT": os.environ.get("SGTR_ROOT")}
    report = {"rows": [], "notes": [], "section_seconds": {},
              "missing_hosts": [name for name, root in roots.items() if not root]}
    report["notes"] += [f"{name} is not set: that host was not checked" for name in report["missing_hosts"]]

    def timed(name, step):
        start = time.perf_counter()
        try:
            return step()
        finally:
            report["section_seconds"][name] = time.perf_counter() - start

    def inputs():
        data = write_dataset(work)
        try:
            text_banks = make_text_banks(data, work, device)
        except Exception as error:  # noqa: BLE001 - the rows that need a bank fail, naming the reason
            text_banks = f"{type(error).__name__}: {error}"
            report["notes"].append(f"text banks not made ({text_banks}): the RCL and CLIPMATCH rows fail")
        return data, text_banks

    data, text_banks = timed("inputs", inputs)
    if "host-runs" not in args.skip:
        from gpu_check_runs import execute_all, host_runs

        runs = host_runs(data, text_banks, work, device, roots["SGB_ROOT"], roots["SGTR_ROOT"])
        threads = max(1, (os.cpu_count() or 1) // args.jobs)
        report["rows"] = timed("host runs", lambda: execute_all(runs, args.jobs, args.timeout, threads))
    measures = []
    if "sgb-overhead" not in args.skip and roots["SGB_ROOT"]:
        measures.append(("sgb-overhead",
                         lambda: measure_sgb_overhead(data, text_banks, device, roots["SGB_ROOT"], args)))
    if "sgtr-overhead" not in args.skip and roots["SGTR_ROOT"]:
        measures.append(("sgtr-overhead", lambda: [measure_sgtr_overhead(data, args)]))
    if measures:
        report["overhead"] = {"settings": overhead_settings(args), "rows": [], "errors": []}
    for name, measure in measures:
        try:
            report["overhead"]["rows"] += timed(name, measure)
        except (RuntimeError, MissingInput, SystemExit) as error:  # a worker's failure, with its log tail
            report["overhead"]["errors"].append(f"{name}: {error}")
    return report


def status_of(report):
    """failed (a row or an overhead run failed), incomplete (a host was not checked), or passed."""
    if any(not row["passed"] for row in report["rows"]) or (report.get("overhead") or {}).get("errors"):
        return "failed"
    return "incomplete" if report["missing_hosts"] else "passed"


def no_gpu_reason():
    """Why the check cannot run here (no CUDA GPU), or None."""
    import torch

    if torch.cuda.is_available():
        return None
    return f"no CUDA GPU here (torch {torch.__version__}: torch.cuda.is_available() is False); nothing was run"


def main(argv=None):
    args = parse_args(argv)
    reason = no_gpu_reason()
    if reason:
        # One line and exit status 0: a CPU machine or CI has nothing wrong, only nothing to check.
        print(f"gpu_check: skipped: {reason}")
        if args.out:
            write_report({"status": "skipped", "reason": reason}, args.out)
        return 0
    start = time.perf_counter()
    work = Path(args.work or tempfile.mkdtemp(prefix="sgg_gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        report = run_checks(args, work)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    report.update(status=status_of(report), environment=environment(), seconds=time.perf_counter() - start,
                  budget_s=BUDGET_S)
    print(format_markdown(report))
    if args.out:
        print("written: " + ", ".join(str(path) for path in write_report(report, args.out)))
    return 0 if report["status"] == "passed" else 1


if __name__ == "__main__":
    sys.exit(main())
