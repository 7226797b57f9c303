"""How much of SGB's clipped gradient step is a regularizer's, at a saved checkpoint.

    OMP_NUM_THREADS=1 SGB_ROOT=/opt/hosts/sgb python docs/cpu_bench/grad_share.py RUN_DIR [CKPT ...] \
        [--batches 3] [--loss-key loss_align]

RUN_DIR is a finished bench run (config.yml, model_*.pth). The model is built as that run trained
it: the host's config merged from the run's config.yml, the plug-in installed as the launchers
install it, the host's frozen modules frozen as tools/relation_train_net.py freezes them, and the
host's own train loader. For each batch, in train mode, it takes the gradient of the supervised
losses (loss_rel + loss_refine_obj) and of the regularizer's loss (``--loss-key``: loss_align for
MODEL.ALIGN, loss_rcl for MODEL.RCL, ...) separately from ONE forward (same masks, same sampled
pairs), and reports the norms SGB's clip_grad_norm would see over every trainable parameter
(maskrcnn_benchmark/utils/checkpoint.py: one global norm, scaled to GRAD_NORM_CLIP). A run without
that loss (a baseline) gets the supervised numbers and the clip only. Nothing is written into
RUN_DIR: statistics and labels go to a temporary OUTPUT_DIR.
"""
import argparse
import random
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(1, str(Path(__file__).resolve().parents[2]))  # run from a clone, not installed
from sgg_plugins.hosts.sgb import install  # noqa: E402

SUPERVISED = ("loss_rel", "loss_refine_obj")


def build(run_dir, out_dir):
    install(os.environ.get("SGB_ROOT"))  # compat shims + plug-in, before the host is imported
    from maskrcnn_benchmark.config import cfg
    from maskrcnn_benchmark.modeling.detector import build_detection_model

    cfg = cfg.clone()
    cfg.merge_from_file(str(run_dir / "config.yml"))
    # The run's frequency statistics cache, so the host does not recompute them; OUTPUT_DIR is ours.
    for cache in run_dir.glob("*_statistics.cache"):
        shutil.copy(cache, out_dir)
    cfg.merge_from_list(["OUTPUT_DIR", str(out_dir), "GLOVE_DIR", str(out_dir / "glove"),
                         "MODEL.PRETRAINED_DETECTOR_CKPT", "", "DATALOADER.NUM_WORKERS", 0])
    cfg.freeze()
    model = build_detection_model(cfg)
    # As relation_train_net.py's fix_eval_modules: the detector is frozen, only the relation head trains.
    for module in (model.rpn, model.backbone, model.roi_heads.box):
        for p in module.parameters():
            p.requires_grad = False
    return cfg, model


def norm(grads, names=None):
    return sum(float(g.pow(2).sum()) for n, g in grads.items() if names is None or n in names) ** 0.5


def dot(a, b, names):
    return sum(float((a[n] * b[n]).sum()) for n in names)


def module_of(name):
    return name.split("predictor.")[-1].replace("roi_heads.relation.", "").rsplit(".", 1)[0]


def measure(model, cfg, loader, num_batches, loss_key):
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    rows = []
    for b, (images, targets, _) in zip(range(num_batches), loader):
        model.train()
        losses = model(images, targets)
        sup = sum(v for k, v in losses.items() if k in SUPERVISED)
        parts = {"sup": sup}
        if loss_key in losses:
            parts["reg"] = losses[loss_key]
        grads = {}
        for key, loss in parts.items():
            g = torch.autograd.grad(loss, [p for _, p in params], retain_graph=True, allow_unused=True)
            grads[key] = {n: (x if x is not None else torch.zeros_like(p)) for (n, p), x in zip(params, g)}
        # The step the host takes is on the sum; by linearity its gradient is the sum of the parts.
        total = {n: sum(grads[k][n] for k in grads) for n, _ in params}
        has_reg = "reg" in grads
        # Parameters both losses reach (host parameters the regularizer trains).
        shared = {n for n, _ in params if has_reg
                  and grads["sup"][n].abs().sum() > 0 and grads["reg"][n].abs().sum() > 0}
        # Parameters only the regularizer reaches: its own modules, unused at inference.
        own = {n for n, _ in params if has_reg
               and grads["sup"][n].abs().sum() == 0 and grads["reg"][n].abs().sum() > 0}
        t = norm(total)
        clip = min(1.0, cfg.SOLVER.GRAD_NORM_CLIP / (t + 1e-6))
        # The clip the same supervised gradient would get alone (what a baseline step sees).
        clip_sup_alone = min(1.0, cfg.SOLVER.GRAD_NORM_CLIP / (norm(grads["sup"]) + 1e-6))
        nan = float("nan")
        row = dict(batch=b, loss_sup=sup.item(), loss_reg=parts["reg"].item() if has_reg else nan,
                   g_sup=norm(grads["sup"]), g_reg=norm(grads["reg"]) if has_reg else nan,
                   g_total=t, clip=clip, sup_scale_vs_alone=clip / clip_sup_alone,
                   own_share=(norm(total, own) / t) ** 2 if own else nan,
                   shared_share=(norm(total, shared) / t) ** 2 if shared else nan,
                   shared_reg=norm(grads["reg"], shared) if shared else nan,
                   shared_sup=norm(grads["sup"], shared) if shared else nan,
                   # Do the two pull the shared parameters the same way? Cosine of their gradients there.
                   shared_cos=(dot(grads["sup"], grads["reg"], shared)
                               / (norm(grads["sup"], shared) * norm(grads["reg"], shared))) if shared else nan)
        rows.append(row)
        if b == 0 and has_reg:
            print("  shared parameters (both losses):", sorted({module_of(n) for n in shared}))
            print(f"  {loss_key}-only parameters:", sorted({module_of(n) for n in own}))
        if b == 0:  # where each loss's gradient norm lives, by module (top 12 of the total)
            by_module = {}
            for n, _ in params:
                m = module_of(n)
                s = by_module.setdefault(m, [0.0, 0.0, 0.0])
                s[0] += float(grads["sup"][n].pow(2).sum())
                if has_reg:
                    s[1] += float(grads["reg"][n].pow(2).sum())
                    s[2] += float((grads["sup"][n] * grads["reg"][n]).sum())
            top = sorted(by_module.items(), key=lambda kv: -(kv[1][0] + kv[1][1]))[:12]
            print(f"  batch 0 grad norm by module (sup | {loss_key} | cos):")
            for m, (s, r, d) in top:
                cos = d / (s * r) ** 0.5 if s > 0 and r > 0 else nan
                print(f"    {m:60s} {s ** .5:9.3f} | {r ** .5:9.3f} | {cos:6.3f}")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("checkpoints", nargs="*", default=["model_0000100.pth"])
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--loss-key", default="loss_align",
                        help="the regularizer's loss-dict key: loss_align (MODEL.ALIGN), loss_rcl (MODEL.RCL), ...")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg, model = build(args.run_dir, Path(tmp))
        from maskrcnn_benchmark.data import make_data_loader

        print(f"{args.run_dir}  clip at SOLVER.GRAD_NORM_CLIP = {cfg.SOLVER.GRAD_NORM_CLIP}  regularizer {args.loss_key}")
        header = ("ckpt", "b", "L_sup", "L_reg", "|g_sup|", "|g_reg|", "|g_tot|", "clip",
                  "sup×", "own%", "shared%", "|gr_sh|", "|gs_sh|", "cos_sh")
        for ckpt in args.checkpoints:
            state = torch.load(args.run_dir / ckpt, map_location="cpu", weights_only=False)["model"]
            model.load_state_dict(state)  # strict: the run's model and ours must match key for key
            # Same images, sampled pairs and masks for every checkpoint (torch, and numpy for the sampler).
            torch.manual_seed(args.seed), np.random.seed(args.seed), random.seed(args.seed)
            loader = make_data_loader(cfg, mode="train", is_distributed=False, start_iter=0)
            rows = measure(model, cfg, loader, args.batches, args.loss_key)
            print("  ".join(f"{h:>9}" for h in header))
            for r in rows:
                print("  ".join(f"{v:>9}" for v in (ckpt.replace("model_", "").replace(".pth", ""), r["batch"])) + "  " +
                      "  ".join(f"{r[k]:9.4g}" for k in ("loss_sup", "loss_reg", "g_sup", "g_reg", "g_total",
                                                         "clip", "sup_scale_vs_alone")) + "  " +
                      f"{100 * r['own_share']:8.1f}%  {100 * r['shared_share']:8.1f}%  {r['shared_reg']:9.4g}  {r['shared_sup']:9.4g}  {r['shared_cos']:9.3f}")
    print(f"L_reg, |g_reg| = {args.loss_key} and its gradient norm. sup× = clip / the clip the supervised gradient\n"
          "alone would get: how much the regularizer's share of the global norm shrinks the supervised step.\n"
          f"own% = share of |g_tot|^2 on parameters only {args.loss_key} reaches (the plug-in's own modules);\n"
          "shared% = share of |g_tot|^2 on the parameters both losses reach; |gr_sh|, |gs_sh| = regularizer and\n"
          "supervised gradient norms there, cos_sh = cosine between the two gradients on them.")


if __name__ == "__main__":
    main()
