"""Training-step, memory and eval overhead of plug-in variants against the baseline, on the real SGB host.

Shared by ``align_overhead.py``, ``rcl_overhead.py``, ``probe_overhead.py`` and
``clipmatch_mrc_overhead.py`` (through ``compare``, which prints the table) and by ``gpu_check.py``
(through ``measure_variants``). Every variant runs in a fresh worker process (so its peak memory is
its own) on the same pre-loaded batches with the same seed; baseline and variants alternate over
``--repeats`` rounds so machine drift hits both alike. Ratios are of medians, variant over
baseline, from the same invocation; the rounds alternate the order of the variants.

The relation predictor's forward (which contains every extra pass of the plug-in) is also timed on
its own ("pred"), since on CPU the frozen detector dominates the step and its noise hides small
differences.

Memory: on GPU the peak of ``torch.cuda.max_memory_allocated`` during the training steps; on CPU
the growth of the process's peak resident set over the training steps (activations, gradients,
optimizer state), since the resident set as a whole is dominated by libraries and weights.
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
PREDCLS = ["MODEL.ROI_RELATION_HEAD.USE_GT_BOX", "True", "MODEL.ROI_RELATION_HEAD.USE_GT_OBJECT_LABEL", "True"]


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker(config_file, opts, steps, warmup, eval_batches):
    """Build the host model with ``opts``, time ``steps`` training steps and an eval pass; print JSON."""
    sys.path.insert(0, REPO)
    from sgg_plugins.hosts.sgb import install

    install()
    import torch
    from maskrcnn_benchmark.config import cfg
    from maskrcnn_benchmark.data import make_data_loader
    from maskrcnn_benchmark.modeling.detector import build_detection_model

    cfg.merge_from_file(config_file)
    cfg.merge_from_list(opts)
    cfg.freeze()
    torch.manual_seed(0)
    model = build_detection_model(cfg).to(cfg.MODEL.DEVICE)
    # As the host's trainer does: the detector is frozen, but stays in training mode.
    for module in (model.rpn, model.backbone, model.roi_heads.box):
        for p in module.parameters():
            p.requires_grad_(False)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    # Reseeded after the build: a variant's extra modules draw from the RNG at construction, and
    # every variant must see the same batches in the same order.
    torch.manual_seed(0)
    loader = iter(make_data_loader(cfg, mode="train", is_distributed=False))
    batches = [next(loader) for _ in range(warmup + steps)]
    test_loader = make_data_loader(cfg, mode="test", is_distributed=False)[0]
    test_batches = [b for _, b in zip(range(eval_batches), test_loader)]
    device = torch.device(cfg.MODEL.DEVICE)
    cuda = device.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    # The relation predictor's forward holds every extra pass of the plug-in: timed on its own it
    # shows where the time goes, free of the frozen detector's share of the step.
    predictor = model.roi_heads.relation.predictor
    predictor_times = []

    def predictor_started(*_):
        sync()
        predictor_times.append(-time.perf_counter())

    def predictor_finished(*_):
        sync()
        predictor_times[-1] += time.perf_counter()

    predictor.register_forward_pre_hook(predictor_started)
    predictor.register_forward_hook(predictor_finished)

    model.train()
    step_times, losses = [], {}
    rss_before = _peak_rss_mb()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for i, (images, targets, _) in enumerate(batches):
        images, targets = images.to(device), [t.to(device) for t in targets]
        sync()
        start = time.perf_counter()
        loss_dict = model(images, targets)
        sum(loss_dict.values()).backward()
        optimizer.step()
        optimizer.zero_grad()
        sync()
        if i >= warmup:
            step_times.append(time.perf_counter() - start)
            for k, v in loss_dict.items():
                losses.setdefault(k, []).append(float(v))
    memory = torch.cuda.max_memory_allocated() / 2**20 if cuda else _peak_rss_mb() - rss_before
    predictor_s = statistics.median(predictor_times[warmup:])

    model.eval()
    eval_times = []
    with torch.no_grad():
        for images, targets, _ in test_batches:
            images, targets = images.to(device), [t.to(device) for t in targets]
            sync()
            start = time.perf_counter()
            model(images, targets)
            sync()
            eval_times.append(time.perf_counter() - start)
    print("SGG_BENCH_RESULT " + json.dumps(dict(
        step_s=statistics.median(step_times), predictor_s=predictor_s, eval_s=statistics.median(eval_times) if eval_times else None,
        memory_mb=memory, device=str(device), losses={k: statistics.mean(v) for k, v in losses.items()})))


def run_worker(config_file, opts, args):
    # The host caches dataset statistics in OUTPUT_DIR: a scratch folder per worker keeps runs apart.
    with tempfile.TemporaryDirectory(prefix="sgg_bench_") as output_dir:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--config-file", config_file,
               "--steps", str(args.steps), "--warmup", str(args.warmup), "--eval-batches", str(args.eval_batches),
               "--opts", *opts, "OUTPUT_DIR", output_dir]
        out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    for line in out.stdout.splitlines():
        if line.startswith("SGG_BENCH_RESULT "):
            return json.loads(line[len("SGG_BENCH_RESULT "):])
    raise RuntimeError(f"worker failed ({out.returncode}) for opts {opts}:\n{out.stderr[-3000:]}")


def measure_variants(config_file, base_opts, variants, predictors, args):
    """Run every variant of ``variants`` (name -> extra opts; "baseline" must be one) for each predictor.

    ``args`` holds ``steps``, ``warmup``, ``eval_batches`` and ``repeats``. Returns
    ``{"<predictor>/<variant>": row}``, each row with the medians over the rounds (``step_s``,
    ``predictor_s``, ``memory_mb``, ``eval_s``), their ratios to the baseline's (``<key>_ratio``), the
    last round's mean losses and the device. A worker that fails raises RuntimeError with its log tail.
    """
    results = {}
    for predictor in predictors:
        runs = {name: [] for name in variants}
        for round_index in range(args.repeats):
            # Alternate the order each round so that whatever the first process of a round pays
            # (cold file caches) falls on every variant alike.
            order = list(variants.items())
            for name, extra in order if round_index % 2 == 0 else order[::-1]:
                opts = base_opts + PREDCLS + ["MODEL.ROI_RELATION_HEAD.PREDICTOR", predictor] + extra
                runs[name].append(run_worker(config_file, opts, args))
        base = runs["baseline"]
        for name, rs in runs.items():
            row = dict(step_s=statistics.median(r["step_s"] for r in rs),
                       predictor_s=statistics.median(r["predictor_s"] for r in rs),
                       memory_mb=statistics.median(r["memory_mb"] for r in rs),
                       eval_s=statistics.median(r["eval_s"] for r in rs), losses=rs[-1]["losses"],
                       device=rs[-1]["device"])
            for key in ("step_s", "predictor_s", "memory_mb", "eval_s"):
                denominator = statistics.median(r[key] for r in base)
                row[key + "_ratio"] = row[key] / denominator if denominator else float("nan")
            results[f"{predictor}/{name}"] = row
    return results


def compare(variants, description, argv=None):
    """``variants``: name -> extra opts; "baseline" must be one. Prints a table of ratios."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config-file", required=True,
                        help="the host's stock config, e.g. $SGB_ROOT/configs/e2e_relation_X_101_32_8_FPN_1x.yaml")
    parser.add_argument("--predictors", nargs="+", default=["MotifPredictor"])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--eval-batches", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2, help="alternating rounds of every variant")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("opts", nargs=argparse.REMAINDER,
                        help="host opts shared by every variant (the small CPU overlay, PATHS_CATALOG, ...)")
    args = parser.parse_args(argv)
    base_opts = [o for o in args.opts if o != "--"]
    results = measure_variants(args.config_file, base_opts, variants, args.predictors, args)
    print(f"{'predictor/variant':38s} {'step s':>7s} {'step x':>7s} {'pred s':>7s} {'pred x':>7s} "
          f"{'mem MB':>7s} {'mem x':>6s} {'eval s':>7s} {'eval x':>7s}")
    for key, row in results.items():
        print(f"{key:38s} {row['step_s']:7.3f} {row['step_s_ratio']:7.2f} {row['predictor_s']:7.3f} "
              f"{row['predictor_s_ratio']:7.2f} {row['memory_mb']:7.1f} {row['memory_mb_ratio']:6.2f} "
              f"{row['eval_s']:7.3f} {row['eval_s_ratio']:7.2f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    if "--worker" in sys.argv:
        p = argparse.ArgumentParser()
        p.add_argument("--worker", action="store_true")
        p.add_argument("--config-file")
        p.add_argument("--steps", type=int)
        p.add_argument("--warmup", type=int)
        p.add_argument("--eval-batches", type=int)
        p.add_argument("--opts", nargs=argparse.REMAINDER, default=[])
        a = p.parse_args()
        worker(a.config_file, a.opts, a.steps, a.warmup, a.eval_batches)
    else:
        sys.exit("run align_overhead.py, rcl_overhead.py or probe_overhead.py")
