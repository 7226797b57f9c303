"""Where a CPU training step of docs/cpu_bench/run.sh goes, and what skipping the detector's unread work saves.

    SGB_ROOT=... python benchmarks/cpu_step_profile.py --data WORK/data [--detector WORK/detector/model_final.pth]
        [--steps 8] [--warmup 2] [--test-images 20] [--rounds 2]

The run is the protocol's Motifs PredCls (run.sh's overlay and sizes, batch 4, LR 0.01, WarmupMultiStepLR)
on the dataset made by run.sh or ``sgg-plugins make-synthetic-vg DIR --preset bench``; without
``--detector`` the frozen detector has random weights, which times the same work. Each variant runs
in a fresh process at ``OMP_NUM_THREADS=1`` (run.sh's per-run setting) with the same seeds, in
alternating order over ``--rounds`` rounds, and does what the host's ``relation_train_net.py`` loop
does per step (forward, backward, the host's ``clip_grad_norm``, optimizer and scheduler steps),
then times the eval forward on ``--test-images`` test images:

- ``host``: the host's own forwards (``unread_work`` uninstalled);
- ``skip unread``: ``sgg_plugins.hosts.sgb.unread_work`` installed, as every launcher run has it.

Prints ms per step by phase for both, the ratio to ``host`` from the same invocation, whether every
loss of every step and every test prediction is bit-identical, and the host variant's cost centres:
forward time by module (inclusive, so nested rows are parts of the row above) and the top operators
by self time under torch's profiler.
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VARIANTS = ("host", "skip unread")
PHASES = ("data", "forward", "backward", "clip_grad_norm", "optimizer", "step")
# run.sh's relation run at MODE=predcls, SCHEDULE=multistep, ITERS=400 (its decays at 240 and 320).
PROTOCOL_OPTS = """MODEL.RESNETS.STEM_FUNC StemWithGN MODEL.RESNETS.TRANS_FUNC BottleneckWithGN
    MODEL.BACKBONE.FREEZE_CONV_BODY_AT 0 INPUT.MIN_SIZE_TRAIN (128,) INPUT.MAX_SIZE_TRAIN 160
    INPUT.MIN_SIZE_TEST 128 INPUT.MAX_SIZE_TEST 160
    MODEL.ROI_RELATION_HEAD.USE_GT_BOX True MODEL.ROI_RELATION_HEAD.USE_GT_OBJECT_LABEL True
    MODEL.ROI_RELATION_HEAD.PREDICTOR MotifPredictor SOLVER.IMS_PER_BATCH 4 SOLVER.BASE_LR 0.01
    SOLVER.MAX_ITER 400 SOLVER.WARMUP_ITERS 100 SOLVER.SCHEDULE.TYPE WarmupMultiStepLR
    SOLVER.STEPS (240,320) SOLVER.TO_VAL False SOLVER.PRE_VAL False""".split()


def cost_centres(model):
    """(label, module) whose forward time the profile reports; indented labels are parts of the one above."""
    relation = model.roi_heads.relation
    union = relation.union_feature_extractor
    return [("backbone body (frozen)", model.backbone.body), ("FPN (frozen)", model.backbone.fpn),
            ("RPN (frozen)", model.rpn), ("box head (frozen)", model.roi_heads.box),
            ("relation head", relation),
            ("  object features: pool 4 levels + 3x3 conv + fc", relation.box_feature_extractor),
            ("    object pooler: roi_align on each box's FPN level", relation.box_feature_extractor.pooler),
            ("  union features", union),
            ("    union pooler: roi_align x4, 1024->256 conv", union.feature_extractor.pooler),
            ("    rectangle convs", union.rect_conv),
            ("  Motifs predictor (context LSTMs, classifiers)", relation.predictor)]


def worker(variant, data, detector, steps, warmup, test_images, profile_steps):
    sys.path.insert(0, str(REPO))
    from sgg_plugins.hosts.sgb import install
    from sgg_plugins.hosts.sgb.overlay import overlay_opts

    root = install()
    if variant == "host":
        from sgg_plugins.hosts.sgb.unread_work import uninstall_unread_work_skips

        uninstall_unread_work_skips()
    import logging

    import numpy as np
    import torch
    from maskrcnn_benchmark.config import cfg
    from maskrcnn_benchmark.data import make_data_loader
    from maskrcnn_benchmark.modeling.detector import build_detection_model
    from maskrcnn_benchmark.solver import make_lr_scheduler, make_optimizer
    from maskrcnn_benchmark.utils.checkpoint import DetectronCheckpointer, clip_grad_norm

    logger = logging.getLogger("cpu_step_profile")
    output_dir = tempfile.mkdtemp(prefix="cpu_step_profile_")
    cfg.merge_from_file(str(root / "configs" / "e2e_relation_X_101_32_8_FPN_1x.yaml"))
    cfg.merge_from_list(overlay_opts(str(REPO / "configs" / "sgb" / "synthetic_cpu.opts")) + PROTOCOL_OPTS
                        + overlay_opts(str(Path(data) / "dataset.opts"))
                        + ["OUTPUT_DIR", output_dir, "GLOVE_DIR", str(Path(output_dir) / "glove"),
                           "MODEL.PRETRAINED_DETECTOR_CKPT", detector or ""])
    cfg.freeze()
    # What the launcher does with SGG_PLUGINS_SEED=0, then the host's train() in order.
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    model = build_detection_model(cfg)
    eval_modules = (model.rpn, model.backbone, model.roi_heads.box)
    optimizer = make_optimizer(cfg, model, logger, slow_heads=[], slow_ratio=10.0,
                               rl_factor=float(cfg.SOLVER.IMS_PER_BATCH))
    scheduler = make_lr_scheduler(cfg, optimizer, logger)
    if detector:
        DetectronCheckpointer(cfg, model, optimizer, scheduler, output_dir, False, custom_scheduler=True).load(
            detector, with_optim=False, load_mapping={
                "roi_heads.relation.box_feature_extractor": "roi_heads.box.feature_extractor",
                "roi_heads.relation.union_feature_extractor.feature_extractor": "roi_heads.box.feature_extractor"})
    loader = iter(make_data_loader(cfg, mode="train", is_distributed=False))

    forward_s = defaultdict(float)
    def add_clock(label, sign):
        return lambda *_: forward_s.__setitem__(label, forward_s[label] + sign * time.perf_counter())

    for label, module in cost_centres(model):
        module.register_forward_pre_hook(add_clock(label, -1))
        module.register_forward_hook(add_clock(label, +1))

    def train_step(iteration):
        times = {"step": -time.perf_counter(), "data": -time.perf_counter()}
        images, targets, _ = next(loader)
        times["data"] += time.perf_counter()
        model.train()
        for module in eval_modules:
            for p in module.parameters():
                p.requires_grad = False
        times["forward"] = -time.perf_counter()
        loss_dict = model(images, targets)
        losses = sum(loss for loss in loss_dict.values())
        times["forward"] += time.perf_counter()
        times["backward"] = -time.perf_counter()
        optimizer.zero_grad()
        losses.backward()
        times["backward"] += time.perf_counter()
        times["clip_grad_norm"] = -time.perf_counter()
        clip_grad_norm([(n, p) for n, p in model.named_parameters() if p.requires_grad],
                       max_norm=cfg.SOLVER.GRAD_NORM_CLIP, logger=logger,
                       verbose=iteration == 1 or iteration % cfg.SOLVER.PRINT_GRAD_FREQ == 0, clip=True)
        times["clip_grad_norm"] += time.perf_counter()
        times["optimizer"] = -time.perf_counter()
        optimizer.step()
        scheduler.step()
        times["optimizer"] += time.perf_counter()
        times["step"] += time.perf_counter()
        return times, {k: float(v).hex() for k, v in loss_dict.items()}

    step_times, losses = [], []
    for iteration in range(1, warmup + steps + 1):
        if iteration == warmup + 1:
            forward_s.clear()
        times, step_losses = train_step(iteration)
        losses.append(step_losses)
        if iteration > warmup:
            step_times.append(times)
    module_ms = {label: 1000 * forward_s[label] / steps for label, _ in cost_centres(model)}

    model.eval()
    test_ms, predictions = [], []
    test_loader = make_data_loader(cfg, mode="test", is_distributed=False)[0]
    with torch.no_grad():
        for _, (images, targets, _) in zip(range(test_images), test_loader):
            start = time.perf_counter()
            (output,) = model(images, targets)
            test_ms.append(1000 * (time.perf_counter() - start))
            predictions.append({f: output.get_field(f).flatten().tolist() for f in output.fields()})
    # After the test, which must see the same weights in every variant.
    top_ops = []
    if profile_steps:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for iteration in range(profile_steps):
                train_step(warmup + steps + 1 + iteration)
        events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
        total = sum(e.self_cpu_time_total for e in events)
        top_ops = [(e.key, e.count // profile_steps, e.self_cpu_time_total / 1000 / profile_steps,
                    e.self_cpu_time_total / total) for e in events[:12]]

    print("SGG_STEP_PROFILE " + json.dumps(dict(
        phases_ms={p: 1000 * statistics.median(t[p] for t in step_times) for p in PHASES},
        module_ms=module_ms, top_ops=top_ops, losses=losses, test_ms=statistics.median(test_ms) if test_ms else None,
        predictions=predictions)))


def run_worker(variant, args, profile_steps):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, __file__, "--worker", variant, "--data", args.data, "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--test-images", str(args.test_images), "--profile-steps", str(profile_steps)]
    if args.detector:
        cmd += ["--detector", args.detector]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in out.stdout.splitlines():
        if line.startswith("SGG_STEP_PROFILE "):
            return json.loads(line[len("SGG_STEP_PROFILE "):])
    raise RuntimeError(f"{variant} worker failed ({out.returncode}):\n{out.stderr[-3000:]}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a bench-preset synthetic dataset (its dataset.opts)")
    parser.add_argument("--detector", help="the frozen detector's checkpoint (default: random weights)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--test-images", type=int, default=20)
    parser.add_argument("--profile-steps", type=int, default=3,
                        help="steps under torch's profiler (host variant, last round)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    runs = {v: [] for v in VARIANTS}
    for round_index in range(args.rounds):
        for variant in VARIANTS if round_index % 2 == 0 else VARIANTS[::-1]:
            profile_steps = args.profile_steps if variant == "host" and round_index == args.rounds - 1 else 0
            runs[variant].append(run_worker(variant, args, profile_steps))

    def median_over_rounds(variant, key, phase=None):
        return statistics.median(r[key][phase] if phase else r[key] for r in runs[variant])

    print(f"OMP_NUM_THREADS=1, {args.steps} timed steps after {args.warmup}, {args.rounds} rounds, "
          f"load average before the table: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"{'ms per step':16s}" + "".join(f"{v:>14s}" for v in VARIANTS) + f"{'ratio':>8s}")
    for phase in PHASES:
        values = [median_over_rounds(v, "phases_ms", phase) for v in VARIANTS]
        print(f"{phase:16s}" + "".join(f"{x:14.1f}" for x in values) + f"{values[1] / values[0]:8.2f}")
    test = [median_over_rounds(v, "test_ms") for v in VARIANTS]
    print(f"{'test, per image':16s}" + "".join(f"{x:14.1f}" for x in test) + f"{test[1] / test[0]:8.2f}")
    reference = runs["host"][0]
    identical_losses = all(r["losses"] == reference["losses"] for rs in runs.values() for r in rs)
    identical_predictions = all(r["predictions"] == reference["predictions"] for rs in runs.values() for r in rs)
    print(f"every loss of every step bit-identical across variants and rounds: {identical_losses}; "
          f"every test prediction identical: {identical_predictions}")

    host_step = median_over_rounds("host", "phases_ms", "step")
    print(f"\nhost: forward by module (ms per step, share of the {host_step:.0f} ms step)")
    for label in runs["host"][0]["module_ms"]:
        ms = median_over_rounds("host", "module_ms", label)
        print(f"  {label:52s} {ms:8.1f} {100 * ms / host_step:6.1f} %")
    print("\nhost: top operators by self time under torch.profiler (ms per step, share of profiled time)")
    for name, calls, ms, share in runs["host"][-1]["top_ops"]:
        print(f"  {name:45s} {calls:5d} calls {ms:8.1f} {100 * share:6.1f} %")
    return 0 if identical_losses and identical_predictions else 1


if __name__ == "__main__":
    if "--worker" in sys.argv:
        p = argparse.ArgumentParser()
        p.add_argument("--worker", choices=VARIANTS)
        p.add_argument("--data")
        p.add_argument("--detector")
        p.add_argument("--steps", type=int)
        p.add_argument("--warmup", type=int)
        p.add_argument("--test-images", type=int)
        p.add_argument("--profile-steps", type=int)
        a = p.parse_args()
        worker(a.worker, a.data, a.detector, a.steps, a.warmup, a.test_images, a.profile_steps)
    else:
        sys.exit(main())
