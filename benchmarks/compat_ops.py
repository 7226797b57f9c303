"""Time the torchvision-backed stand-ins for SGB's compiled ops against the compiled ones, same run.

    python benchmarks/compat_ops.py [--host-root PATH] [--device cpu|cuda] [--repeats N]

The compiled extension is the host's built ``maskrcnn_benchmark/_C*.so`` (host from --host-root or
$SGB_ROOT). Without one, or when it does not load with this torch, only our timings are printed.
Sizes are those of a relation-training step: FPN level features of two images, 512 ROIs pooled to
7x7, 2000 proposals through NMS. Runs in well under a minute on 2 CPU cores.
"""

import argparse
import logging
import os
import sys
from pathlib import Path

import torch

sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from sgg_plugins.hosts.sgb import ops  # noqa: E402
from timing import median_ms  # noqa: E402


def make_inputs(device):
    generator = torch.Generator().manual_seed(0)
    corners = torch.rand(512, 2, 2, generator=generator) * 256
    batch_index = torch.randint(0, 2, (512, 1), generator=generator).float()
    xy = torch.rand(2000, 2, generator=generator) * 600
    inputs = {
        "features": torch.randn(2, 256, 64, 64, generator=generator),
        "rois": torch.cat([batch_index, corners.min(1).values, corners.max(1).values], 1),
        "boxes": torch.cat([xy, xy + torch.rand(2000, 2, generator=generator) * 200], 1),
        "scores": torch.rand(2000, generator=generator),
        "grad_pooled": torch.randn(512, 256, 7, 7, generator=generator),
    }
    return {name: tensor.to(device) for name, tensor in inputs.items()}


def op_calls(extension, x):
    """(name, zero-argument call) for each op, with the host's argument order."""
    scale, size = 0.25, 7
    _, argmax = ops.roi_pool_forward(x["features"], x["rois"], scale, size, size)
    b, c, h, w = x["features"].shape
    return [
        ("nms (2000 boxes)", lambda: extension.nms(x["boxes"], x["scores"], 0.7)),
        ("roi_align_forward", lambda: extension.roi_align_forward(x["features"], x["rois"], scale, size, size, 2)),
        ("roi_align_backward", lambda: extension.roi_align_backward(x["grad_pooled"], x["rois"], scale, size, size, b, c, h, w, 2)),
        ("roi_pool_forward", lambda: extension.roi_pool_forward(x["features"], x["rois"], scale, size, size)),
        (
            "roi_pool_backward",
            lambda: extension.roi_pool_backward(
                x["grad_pooled"], x["features"], x["rois"], argmax, scale, size, size, b, c, h, w
            ),
        ),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host-root", default=os.environ.get("SGB_ROOT"), help="SGB checkout (default: $SGB_ROOT)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    compiled = ops.load_compiled_extension(args.host_root, logging.getLogger("sgg_plugins")) if args.host_root else None
    if compiled is None:
        where = f"under {args.host_root}" if args.host_root else "(no --host-root / SGB_ROOT given)"
        print(f"No compiled maskrcnn_benchmark._C importable {where}: timing the torchvision stand-in only.")
    standin, _ = ops.build_extension_module()
    inputs = make_inputs(device)
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"{'op':<22}{'stand-in ms':>13}{'compiled ms':>13}{'ratio':>8}")
    compiled_calls = dict(op_calls(compiled, inputs)) if compiled is not None else {}
    for name, call in op_calls(standin, inputs):
        ours = median_ms(call, args.repeats, device, warmup=1)
        theirs_text, ratio_text = "-", "-"
        if name in compiled_calls:
            try:
                theirs = median_ms(compiled_calls[name], args.repeats, device, warmup=1)
                theirs_text, ratio_text = f"{theirs:.2f}", f"{ours / theirs:.2f}"
            except RuntimeError as error:  # e.g. the compiled CPU build has no ROIPool / ROIAlign backward
                theirs_text = "n/a: " + str(error).splitlines()[0][:40]
        print(f"{name:<22}{ours:>13.2f}{theirs_text:>13}{ratio_text:>8}")


if __name__ == "__main__":
    main()
