"""``sgg-plugins embed``'s command line: the options, documented, without importing torch or a text encoder.

The embedding itself is ``sgg_plugins.text.embed_command.run``, imported only when the command runs, so
``sgg-plugins embed --help`` answers at once.
"""

from .config import RCL_DEFAULTS


def add_arguments(parser):
    source = parser.add_argument_group("classes and triplets (a dataset, or class lists)")
    source.add_argument("--dict-file", help="SGB's VG-SGG-dicts.json (idx_to_label, idx_to_predicate)")
    source.add_argument("--roidb-file", help="SGB's VG-SGG.h5: triplets are read from its training split")
    source.add_argument("--obj-classes", help="object class names, one per line, line i = label i (no background)")
    source.add_argument("--pred-classes", help="predicate names, one per line, line i = label i (no background)")
    source.add_argument("--triplets", help="with class lists: 'subject predicate object' label triples "
                        "(1-based integers), one per line; MODEL.RCL only uses relations whose triplet is listed")
    clip = parser.add_argument_group("text encoder (must match MODEL.RCL's keys of the training run)")
    clip.add_argument("--clip-model", default=RCL_DEFAULTS["CLIP_MODEL"],
                      help="OpenCLIP model name, or local-dir:/path to a saved OpenCLIP model folder, or "
                           "sentence-transformers:NAME_OR_FOLDER for a sentence-transformers encoder instead of CLIP "
                           "(MODEL.RCL.CLIP_MODEL; default %(default)s)")
    clip.add_argument("--clip-pretrained", default=RCL_DEFAULTS["CLIP_PRETRAINED"],
                      help="OpenCLIP weights tag or local checkpoint file, unused for local-dir: and "
                           "sentence-transformers: (MODEL.RCL.CLIP_PRETRAINED; default %(default)s)")
    clip.add_argument("--prompt", default=RCL_DEFAULTS["PROMPT"],
                      help="triplet prompt with {subject}, {predicate}, {object} (MODEL.RCL.PROMPT; "
                           "default '%(default)s')")
    clip.add_argument("--object-prompt", default=RCL_DEFAULTS["OBJECT_PROMPT"],
                      help="object class prompt with {object} (MODEL.RCL.OBJECT_PROMPT; default '%(default)s')")
    parser.add_argument("--out", required=True, help="embedding file to write (use it as MODEL.RCL.TEXT_EMBEDDINGS)")
    parser.add_argument("--device", default=None,
                        help="where the text encoder runs, e.g. cpu or cuda:0 (default: cuda if available, else cpu)")
    parser.add_argument("--batch-size", type=int, default=256,
                        help="texts encoded per forward pass (default %(default)s); lower it if memory runs out")


def run(args):
    import torch

    from .text.embed_command import run as embed

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return embed(args)
