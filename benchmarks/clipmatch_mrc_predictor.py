"""What MODEL.CLIPMATCH and MODEL.MRC add to the host's relation predictor alone: forward + backward
of the real SGB predictor (built as the host's relation head builds it), baseline and variants
interleaved call by call in one process on the same batch, medians over ``--repeats``.

Interleaving within one process makes the ratio robust on a busy shared machine, where separate
processes (sgb_overhead.py) see load changes larger than the effect. The batch is ``--images``
images of ``--objects`` objects with every ordered pair sampled (the predictor's PredCls input),
features of the configured widths.

    SGB_ROOT=... PYTHONPATH=.:benchmarks python benchmarks/clipmatch_mrc_predictor.py --data DATA \
        --clipmatch-opts MODEL.CLIPMATCH.TEXT_EMBEDDINGS candidates.pt MODEL.CLIPMATCH.CLIP_MODEL M \
        MODEL.CLIPMATCH.CLIP_PRETRAINED W [--predictors MotifPredictor ...] [-- more host opts]
"""
import argparse
import os
import statistics
import tempfile
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_batch(cfg, images, objects, seed=0):
    from maskrcnn_benchmark.structures.bounding_box import BoxList

    g = torch.Generator().manual_seed(seed)
    num_obj_cls, num_rel_cls = cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES, cfg.MODEL.ROI_RELATION_HEAD.NUM_CLASSES
    proposals, pairs, labels, binarys = [], [], [], []
    for _ in range(images):
        xy = torch.rand(objects, 2, generator=g) * 200
        boxes = BoxList(torch.cat([xy, xy + 10 + torch.rand(objects, 2, generator=g) * 50], 1), (256, 256), mode="xyxy")
        boxes.add_field("labels", torch.randint(1, num_obj_cls, (objects,), generator=g))
        proposals.append(boxes)
        idx = torch.cartesian_prod(torch.arange(objects), torch.arange(objects))
        idx = idx[idx[:, 0] != idx[:, 1]]
        pairs.append(idx)
        rel = torch.zeros(len(idx), dtype=torch.long)
        rel[torch.randperm(len(idx), generator=g)[:6]] = torch.randint(1, num_rel_cls, (6,), generator=g)
        labels.append(rel)
        binary = torch.zeros(objects, objects, dtype=torch.long)
        binary[idx[:, 0], idx[:, 1]] = (rel > 0).long()
        binarys.append(binary)
    dim = cfg.MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM
    return (proposals, pairs, labels, binarys, torch.randn(images * objects, dim, generator=g),
            torch.randn(sum(len(p) for p in pairs), dim, generator=g))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a dataset folder made by `sgg-plugins make-synthetic-vg`")
    parser.add_argument("--predictors", nargs="+",
                        default=["MotifPredictor", "VCTreePredictor", "TransformerPredictor", "IMPPredictor"])
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--objects", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--clipmatch-opts", nargs="*", default=[])
    parser.add_argument("opts", nargs=argparse.REMAINDER)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default); 1 on a busy shared machine, where "
                             "threads contending with other processes make every op slower")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from sgg_plugins.hosts.sgb import install
    from sgg_plugins.hosts.sgb.overlay import overlay_opts

    root = install()
    from maskrcnn_benchmark.config import cfg as host_cfg
    from maskrcnn_benchmark.modeling.roi_heads.relation_head import roi_relation_predictors

    with open(os.path.join(args.data, "dataset.opts")) as f:
        dataset_opts = f.read().split()
    variants = {"baseline": [], "clipmatch": ["MODEL.CLIPMATCH.ENABLED", True, *args.clipmatch_opts],
                "mrc": ["MODEL.MRC.ENABLED", True]}
    print(f"{torch.get_num_threads()} threads, {args.images} images x {args.objects} objects, "
          f"{args.images * args.objects * (args.objects - 1)} pairs")
    with tempfile.TemporaryDirectory() as out:
        for predictor_name in args.predictors:
            models = {}
            for name, extra in variants.items():
                cfg = host_cfg.clone()
                cfg.merge_from_file(os.path.join(root, "configs", "e2e_relation_X_101_32_8_FPN_1x.yaml"))
                cfg.merge_from_list(overlay_opts(os.path.join(REPO, "configs", "sgb", "synthetic_cpu.opts"))
                                    + dataset_opts + ["OUTPUT_DIR", out, "GLOVE_DIR", os.path.join(out, "glove"),
                                                      "MODEL.ROI_RELATION_HEAD.PREDICTOR", predictor_name,
                                                      "MODEL.ROI_RELATION_HEAD.USE_GT_BOX", True,
                                                      "MODEL.ROI_RELATION_HEAD.USE_GT_OBJECT_LABEL", True,
                                                      *extra, *[o for o in args.opts if o != "--"]])
                torch.manual_seed(0)
                models[name] = roi_relation_predictors.make_roi_relation_predictor(
                    cfg, cfg.MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM).train()
            batch = make_batch(cfg, args.images, args.objects)
            times = {name: [] for name in models}
            for repeat in range(args.repeats + 2):
                for name, model in models.items():
                    start = time.perf_counter()
                    _, rel_dists, losses = model(*batch)
                    (sum(d.sum() for d in rel_dists) + sum(losses.values(), torch.zeros(()))).backward()
                    model.zero_grad(set_to_none=True)
                    if repeat >= 2:
                        times[name].append(time.perf_counter() - start)
            base = statistics.median(times["baseline"])
            row = "  ".join(f"{name} {statistics.median(t) * 1000:7.1f} ms ({statistics.median(t) / base:4.2f}x)"
                            for name, t in times.items())
            print(f"{predictor_name:22s} {row}")


if __name__ == "__main__":
    main()
