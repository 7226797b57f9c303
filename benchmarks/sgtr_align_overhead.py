"""Training-step time and peak memory of SGTR with and without MODEL.ALIGN, on the real host.

    SGTR_ROOT=/path/to/SGTR python benchmarks/sgtr_align_overhead.py [--vg-dir DATA] [--steps 4] [--repeats 2]

Each variant runs in a fresh worker process (its peak memory is its own), built from SGTR's VG
experiment config with the small CPU overlay (``configs/sgtr/synthetic_cpu.opts``) and the
dataset's class counts, on the same batches (the host's own train loader, seeded) and the same
initial weights. A step is the host trainer's: forward (the loss dict; with ALIGN it includes the
target and mirror passes of the structural decoder), the sum of the losses, backward, optimizer
step. Baseline and ALIGN alternate over ``--repeats`` rounds; the ratio is of medians, ALIGN over
baseline, from this one invocation.

Also reported: the process's CPU time per step (all threads), which a machine shared with other
jobs disturbs less than wall time. Memory: on GPU the peak of ``torch.cuda.max_memory_allocated`` over the steps; on CPU the growth of
the process's peak resident set over the steps (activations, gradients, optimizer state).
Without ``--vg-dir`` a synthetic dataset is written to a temporary folder first.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OVERLAY = os.path.join(REPO, "configs", "sgtr", "synthetic_cpu.opts")
VARIANTS = {"baseline": [], "align": ["MODEL.ALIGN.ENABLED", "True"]}


def overlay_opts():
    with open(OVERLAY) as f:
        return [token for line in f if line.strip() for token in line.split(None, 1)]


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker(vg_dir, variant_opts, steps, warmup, run_dir, threads):
    """Build SGTR with the variant's opts, time ``steps`` training steps; print one JSON line."""
    sys.path.insert(0, REPO)
    if threads:
        import torch

        torch.set_num_threads(threads)
    os.chdir(run_dir)
    from sgg_plugins.hosts.sgtr.launch import apply_environment, prepare, resolve_settings, with_class_counts

    settings = resolve_settings("train_net", {"--vg-dir": vg_dir})
    apply_environment(settings)
    opts = with_class_counts([*overlay_opts(), "MODEL.WEIGHTS", "''", "OUTPUT_DIR", run_dir, *variant_opts], vg_dir)
    prepare(settings, opts)
    import torch
    from config import config
    from cvpods.data import build_detection_train_loader
    from cvpods.engine.trainer import fix_eval_modules
    from cvpods.solver import build_optimizer

    import net

    config.merge_from_list(opts)
    torch.manual_seed(0)
    loader = iter(build_detection_train_loader(config))
    batches = [next(loader) for _ in range(warmup + steps)]
    torch.manual_seed(0)
    model = net.build_model(config)
    fix_eval_modules(model, config.MODEL.WEIGHTS_FIXED)
    optimizer = build_optimizer(config, model)
    device = torch.device(config.MODEL.DEVICE)
    on_gpu = device.type == "cuda"

    def step(batch):
        losses = model(batch)
        total = sum(v for v in losses.values() if v.requires_grad)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        return {k: float(v) for k, v in losses.items() if k.startswith("loss_align")}

    for batch in batches[:warmup]:
        step(batch)
    if on_gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss_before = _peak_rss_mb()
    times, cpu_times, align_losses = [], [], []
    for batch in batches[warmup:]:
        start, cpu_start = time.perf_counter(), time.process_time()
        align_losses.append(step(batch))
        if on_gpu:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    peak = torch.cuda.max_memory_allocated() / 2**20 if on_gpu else _peak_rss_mb() - rss_before
    print(json.dumps({"step_ms": 1000 * statistics.median(times), "cpu_ms": 1000 * statistics.median(cpu_times),
                      "peak_mb": peak, "device": str(device),
                      "align_losses": align_losses}))


def run_variant(name, vg_dir, steps, warmup, threads):
    with tempfile.TemporaryDirectory(prefix=f"sgtr_{name}_") as run_dir:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--vg-dir", vg_dir,
               "--steps", str(steps), "--warmup", str(warmup), "--run-dir", run_dir, "--threads", str(threads)]
        result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"the {name} worker failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vg-dir", help="a VG-format dataset (default: a synthetic one in a temporary folder)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2, help="rounds of baseline and align, alternating")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads per worker (0: torch's default). 1 gives steadier CPU timings on a "
                             "machine shared with other jobs, where idle OpenMP threads spin")
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.vg_dir, VARIANTS[args.worker], args.steps, args.warmup, args.run_dir, args.threads)
        return
    if not os.environ.get("SGTR_ROOT"):
        raise SystemExit("error: set SGTR_ROOT to an SGTR checkout")
    with tempfile.TemporaryDirectory(prefix="sgtr_bench_data_") as scratch:
        vg_dir = args.vg_dir
        if vg_dir is None:
            from sgg_plugins.data.synthetic_vg import write_synthetic_vg

            vg_dir = os.path.join(scratch, "data")
            write_synthetic_vg(vg_dir, num_images=40, seed=0)
        results = {name: [] for name in VARIANTS}
        for round_index in range(args.repeats):
            order = list(VARIANTS) if round_index % 2 == 0 else list(reversed(VARIANTS))
            for name in order:
                results[name].append(run_variant(name, vg_dir, args.steps, args.warmup, args.threads))
    summary = {name: {"step_ms": statistics.median(r["step_ms"] for r in runs),
                      "cpu_ms": statistics.median(r["cpu_ms"] for r in runs),
                      "peak_mb": statistics.median(r["peak_mb"] for r in runs),
                      "device": runs[0]["device"]} for name, runs in results.items()}
    for name, s in summary.items():
        print(f"{name:9s} step {s['step_ms']:9.1f} ms (process CPU time {s['cpu_ms']:9.1f} ms)   "
              f"peak {s['peak_mb']:8.1f} MB   ({s['device']})")
    base, align = summary["baseline"], summary["align"]
    print(f"align / baseline: step time x{align['step_ms'] / base['step_ms']:.2f} "
          f"(CPU time x{align['cpu_ms'] / base['cpu_ms']:.2f}), "
          f"peak memory x{align['peak_mb'] / max(base['peak_mb'], 1e-9):.2f} "
          f"({args.steps} steps after {args.warmup} warm-up, median of {args.repeats} rounds, "
          f"threads {args.threads or 'default'})")
    finite = all(v == v and abs(v) != float("inf") for r in results["align"] for step in r["align_losses"]
                 for v in step.values())
    print(f"align losses finite in every step: {finite}")


if __name__ == "__main__":
    main()
