"""Cost of the relationship-probe loss alone (forward + backward) against the host's relation loss.

The baseline is a plain cross-entropy over the relation logits of the same images: SGB samples
ROI_RELATION_HEAD.BATCH_SIZE_PER_IMAGE = 64 pairs per image and scores 51 predicate classes. Both
sides start from leaf tensors that need a gradient, so neither counts the model that made them.

    PYTHONPATH=. python3 benchmarks/probe_loss.py [--images 8 --objects 64 --dim 512 --device cpu]
"""
import argparse

import torch
from timing import median_ms
import torch.nn.functional as F

from sgg_plugins.regularizers.probe import RelationshipProbeLoss


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--objects", type=int, default=64, help="objects per image")
    parser.add_argument("--relations", type=int, default=12, help="annotated relations per image")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--rank", type=int, default=128)
    parser.add_argument("--pairs", type=int, default=64, help="sampled relation pairs per image (baseline)")
    parser.add_argument("--classes", type=int, default=51)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    num_objs = [args.objects] * args.images
    rel_pairs = [torch.randint(args.objects, (args.relations, 2), device=device) for _ in num_objs]
    clean = torch.randn(sum(num_objs), args.dim, device=device, requires_grad=True)
    view2 = torch.randn(sum(num_objs), args.dim, device=device, requires_grad=True)
    module = RelationshipProbeLoss(args.dim, rank=args.rank).to(device)

    logits = torch.randn(args.images * args.pairs, args.classes, device=device, requires_grad=True)
    labels = torch.randint(args.classes, (args.images * args.pairs,), device=device)

    def probe_only():
        module(clean, num_objs, rel_pairs)["loss_probe"].backward()

    def probe_and_contrast():
        losses = module(clean, num_objs, rel_pairs, view2)
        (losses["loss_probe"] + 0.5 * losses["loss_probe_contrast"]).backward()

    def cross_entropy():
        F.cross_entropy(logits, labels).backward()

    baseline = median_ms(cross_entropy, args.repeats, device, warmup=3)
    print(f"{args.images} images x {args.objects} objects, D={args.dim}, rank={args.rank}, "
          f"{args.relations} relations/image, device={device}, threads={torch.get_num_threads()}")
    print(f"relation cross-entropy ({args.images * args.pairs} pairs x {args.classes} classes): {baseline:8.2f} ms")
    for name, step in (("probe loss", probe_only), ("probe + contrast (2 views)", probe_and_contrast)):
        ms = median_ms(step, args.repeats, device, warmup=3)
        print(f"{name:<27}: {ms:8.2f} ms  ({ms / baseline:6.1f}x the cross-entropy)")


if __name__ == "__main__":
    main()
