"""Does a trained run's relation classifier see anything of the image for foreground pairs?

    OMP_NUM_THREADS=1 SGB_ROOT=/opt/hosts/sgb python docs/cpu_bench/relation_features.py RUN_DIR [RUN_DIR ...] \
        [--batches 4] [--untrained]

For each finished bench run (config.yml, model_final.pth), the model is built as grad_share.py
builds it (the run's config, the plug-in installed as the launchers install it, the host's own
train loader) and, in train mode without gradients, a few training batches go through it. Per batch
it reads the predictor's inputs and what its relation classifier reads, split by the sampled
pair's label (foreground: a ground-truth predicate; background: label 0):

- |union|: mean L2 norm of the union-box features (Motifs multiplies its pair representation by
  them, so a foreground pair whose union features are ~0 reaches the classifier as ~0);
- |classifier input|: mean L2 norm of what the relation classifier (rel_compress) reads;
- distinct: the mean cosine between the normalised classifier inputs of the batch's foreground
  pairs (1.000: every foreground pair looks the same to the classifier, which then tells predicates
  apart by the frequency prior alone).

``--untrained`` keeps only the detector's weights from the checkpoint (the relation head at its
initialisation), for the same numbers before any training.
"""
import argparse
import random
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grad_share import build  # noqa: E402  (the run's model, as it trained)


def measure(run_dir, batches, untrained):
    with tempfile.TemporaryDirectory() as tmp:
        cfg, model = build(run_dir, Path(tmp))
        from maskrcnn_benchmark.data import make_data_loader

        state = torch.load(run_dir / "model_final.pth", map_location="cpu", weights_only=False)["model"]
        if untrained:
            state = {k: v for k, v in state.items() if "roi_heads.relation" not in k}
        model.load_state_dict(state, strict=not untrained)
        predictor = model.roi_heads.relation.predictor
        seen = {}

        def read_inputs(module, args, kwargs):
            seen["labels"] = torch.cat(args[2])
            seen["union"] = args[5]

        def read_classifier_input(module, args):
            seen["classifier_input"] = args[0]

        hooks = [predictor.register_forward_pre_hook(read_inputs, with_kwargs=True),
                 predictor.rel_compress.register_forward_pre_hook(read_classifier_input)]
        torch.manual_seed(0), np.random.seed(0), random.seed(0)  # the same batches for every run
        loader = make_data_loader(cfg, mode="train", is_distributed=False, start_iter=0)
        model.train()
        rows = []
        with torch.no_grad():
            for _, (images, targets, _) in zip(range(batches), loader):
                model(images, targets)
                fg = seen["labels"] > 0
                union, inputs = seen["union"].norm(dim=1), seen["classifier_input"]
                unit = F.normalize(inputs[fg], dim=1)
                rows.append((float(union[fg].mean()), float(union[~fg].mean()), float(inputs[fg].norm(dim=1).mean()),
                             float(inputs[~fg].norm(dim=1).mean()), float((unit @ unit.t()).mean())))
        for hook in hooks:
            hook.remove()
        return np.array(rows).mean(0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--untrained", action="store_true")
    args = parser.parse_args()
    print("| run | |union| fg | |union| bg | |classifier input| fg | |classifier input| bg | distinct (cos fg) |")
    print("|---|---|---|---|---|---|")
    for run_dir in args.run_dirs:
        values = measure(run_dir, args.batches, args.untrained)
        name = f"{run_dir}{' (relation head untrained)' if args.untrained else ''}"
        print(f"| {name} | " + " | ".join(f"{v:.3f}" if i == 4 else f"{v:.1f}" for i, v in enumerate(values)) + " |")


if __name__ == "__main__":
    main()
