"""What every part of ``gpu_check.py`` runs on: a small synthetic dataset, CLIP text banks, the
normalised backbone, and each objective's opts.

No file of the check comes from outside the machine: the dataset is synthetic, GloVe is the host
shim's fixed random vectors, and the text encoder of RCL and CLIPMATCH is OpenCLIP's ViT-B-32 with
random weights (seed 0), as in ``docs/cpu_bench/run.sh``: every text gets a fixed, distinct vector
of CLIP's width, without CLIP's semantics, which a check of running code does not need.
"""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STOCK_CONFIG = "configs/e2e_relation_X_101_32_8_FPN_1x.yaml"  # relative to $SGB_ROOT
SGB_OVERLAY = REPO / "configs" / "sgb" / "synthetic_cpu.opts"
OBJECTIVES = ("align", "rcl", "probe", "clipmatch", "mrc")
# The objectives whose opts need a text bank file and its encoder.
TEXT_OBJECTIVES = ("rcl", "clipmatch")
CLIP_MODEL = "ViT-B-32"
# The stock X-101-FPN with random weights gave NaN losses on the GPU (issue 21): its frozen
# BatchNorm is the identity without ImageNet statistics, so activations grow block after block.
# GroupNorm normalises every block from random weights (He et al., "Rethinking ImageNet
# Pre-training"); the CPU benchmark's detector (docs/cpu_bench/run.sh) uses this same R-50-FPN.
STABLE_BACKBONE = ["MODEL.BACKBONE.CONV_BODY", "R-50-FPN", "MODEL.RESNETS.NUM_GROUPS", "1",
                   "MODEL.RESNETS.WIDTH_PER_GROUP", "64", "MODEL.RESNETS.STRIDE_IN_1X1", "True",
                   "MODEL.RESNETS.STEM_FUNC", "StemWithGN", "MODEL.RESNETS.TRANS_FUNC", "BottleneckWithGN"]
STABLE_BACKBONE_NAME = "R-50-FPN with GroupNorm (docs/cpu_bench/run.sh's detector), random weights"
# 60 images: 12 test images for each row's evaluation, 44 training images (12 per overhead batch).
DATASET = dict(num_images=60, test_fraction=0.2, num_val_images=4, seed=0)


class MissingInput(RuntimeError):
    """An input a row needs could not be made (its message says why); the row fails with it."""


def write_dataset(work):
    """The synthetic VG-format dataset in ``work/data``; returns its folder."""
    from sgg_plugins.data.synthetic_vg import write_synthetic_vg

    data = Path(work) / "data"
    write_synthetic_vg(str(data), **DATASET)
    return data


def sgb_dataset_opts(data):
    """The dataset's catalog opts and a GloVe folder (empty: the host shim's fixed vectors)."""
    from sgg_plugins.hosts.sgb.overlay import overlay_opts

    return [*overlay_opts(str(Path(data) / "dataset.opts")), "GLOVE_DIR", str(Path(data).parent / "glove")]


def make_text_banks(data, work, device):
    """Random ViT-B-32 weights and the banks of RCL and CLIPMATCH, embedded on ``device`` with the
    project's own commands; returns ``{objective: opts naming the bank and its encoder}``."""
    import open_clip
    import torch

    from sgg_plugins import cli

    weights = Path(work) / "clip_vit_b32_random_seed0.pt"
    torch.manual_seed(0)
    torch.save(open_clip.create_model(CLIP_MODEL, pretrained=None).state_dict(), weights)
    files = ["--dict-file", str(Path(data) / "VG-SGG-dicts-with-attri.json"),
             "--roidb-file", str(Path(data) / "VG-SGG-with-attri.h5")]
    encoder = ["--clip-model", CLIP_MODEL, "--clip-pretrained", str(weights), "--device", device]
    opts = {}
    for objective, command in (("rcl", "embed"), ("clipmatch", "embed-candidates")):
        bank = Path(work) / f"{objective}_text_bank.pt"
        if cli.main([command, *files, *encoder, "--out", str(bank)]) != 0:
            raise MissingInput(f"sgg-plugins {command} failed")
        key = f"MODEL.{objective.upper()}"
        opts[objective] = [f"{key}.TEXT_EMBEDDINGS", str(bank), f"{key}.CLIP_MODEL", CLIP_MODEL,
                           f"{key}.CLIP_PRETRAINED", str(weights)]
    # The synthetic runs' GLOVE_DIR holds no GloVe file: CLIP phrases rank RCL's negatives.
    opts["rcl"] += ["MODEL.RCL.SAMPLING_EMBEDDINGS", "clip"]
    return opts


def enabled_objectives(opts):
    """The objectives a list of opts enables, in OBJECTIVES order."""
    pairs = dict(zip(opts[::2], opts[1::2]))
    return [name for name in OBJECTIVES if str(pairs.get(f"MODEL.{name.upper()}.ENABLED")) == "True"]


def variant_opts(variant, text_banks):
    """Opts of a bench variant name (``baseline``, an objective, ``all``) with the text banks it needs.

    ``text_banks``: what :func:`make_text_banks` returned, or a string saying why it could not run
    (raised as :class:`MissingInput` when the variant needs a bank).
    """
    from sgg_plugins.bench.plan import BUILTIN_VARIANTS

    opts = list(BUILTIN_VARIANTS[variant])
    for objective in enabled_objectives(opts):
        if objective in TEXT_OBJECTIVES:
            if isinstance(text_banks, str):
                raise MissingInput(f"no text bank for {objective}: {text_banks}")
            opts += text_banks[objective]
    return opts


def host_environment(threads):
    """The environment of a host run: ours, with ``threads`` OpenMP threads unless already chosen."""
    return {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(threads))}
