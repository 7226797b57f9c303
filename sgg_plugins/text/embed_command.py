"""``sgg-plugins embed``: writes RCL's text embedding file (its options are :mod:`sgg_plugins.embed_cli`)."""
import os

import torch

from .bank_builder import load_or_compute_bank
from .vg_files import read_vg_classes, read_vg_training_triplets
from .weights import LOCAL_DIR, SENTENCE_TRANSFORMERS, CLIPUnavailableError


def _read_lines(path, what):
    try:
        with open(path) as handle:
            return [line.strip() for line in handle if line.strip()]
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} file not found: {path}") from None


def run(args):
    if args.dict_file or args.roidb_file:
        if not (args.dict_file and args.roidb_file):
            raise SystemExit("sgg-plugins embed: --dict-file and --roidb-file go together")
        obj_classes, pred_classes = read_vg_classes(args.dict_file)
        triplets = read_vg_training_triplets(args.roidb_file)
    elif args.obj_classes and args.pred_classes:
        obj_classes = ["__background__"] + _read_lines(args.obj_classes, "--obj-classes")
        pred_classes = ["__background__"] + _read_lines(args.pred_classes, "--pred-classes")
        rows = [line.replace(",", " ").split() for line in _read_lines(args.triplets, "--triplets")] \
            if args.triplets else []
        if any(len(row) != 3 or not all(v.isdigit() for v in row) for row in rows):
            raise SystemExit(f"sgg-plugins embed: every line of {args.triplets} must be three integer labels")
        triplets = torch.tensor([[int(v) for v in row] for row in rows], dtype=torch.long).reshape(-1, 3)
    else:
        raise SystemExit("sgg-plugins embed: give --dict-file and --roidb-file, or --obj-classes and --pred-classes")
    before = os.stat(args.out).st_mtime_ns if os.path.isfile(args.out) else None
    try:
        bank = load_or_compute_bank(obj_classes, pred_classes, triplets, model=args.clip_model,
                                    pretrained=args.clip_pretrained, prompt=args.prompt,
                                    object_prompt=args.object_prompt, cache_path=args.out, device=args.device,
                                    batch_size=args.batch_size)
    except (CLIPUnavailableError, ValueError, FileNotFoundError, ImportError) as error:
        raise SystemExit(f"sgg-plugins embed: {error}")
    written = before is None or os.stat(args.out).st_mtime_ns != before
    print(f"{'wrote' if written else 'up to date, kept'} {args.out}: {bank.num_objects} object classes, "
          f"{bank.num_predicates} predicates, {bank.triplet_keys.numel()} triplets, dim {bank.dim} "
          f"({args.clip_model}" + ("" if args.clip_model.startswith((LOCAL_DIR, SENTENCE_TRANSFORMERS))
                                   else f", {args.clip_pretrained}") + ")")
    if bank.triplet_keys.numel() == 0:
        print("note: no triplets embedded; MODEL.RCL leaves out every relation whose triplet is not in the file "
              "(give --roidb-file or --triplets)")
    return 0
