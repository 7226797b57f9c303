"""The ``sgg-plugins`` console command.

Each subcommand lives next to the code it drives and exposes ``add_arguments(parser)`` and
``run(args)``; this file only wires them up, importing a module when its subcommand is used so that
``sgg-plugins --help`` needs no optional dependency.
"""

import argparse
import importlib
import sys

# name -> (module, one-line help)
SUBCOMMANDS = {
    "make-synthetic-vg": ("sgg_plugins.data.synthetic_vg", "write a small VG-format dataset in SGB's file layout"),
    "patch": ("sgg_plugins.hosts.sgb.patching", "check, apply or revert the one-line import patch on an SGB checkout"),
    "embed": ("sgg_plugins.embed_cli", "compute and cache the CLIP text embeddings used by MODEL.RCL"),
    "embed-candidates": ("sgg_plugins.text.candidates_cli",
                         "compute and cache the CLIP candidate texts used by MODEL.CLIPMATCH"),
    "demo": ("sgg_plugins.demo", "the main job in one command: synthetic data, baseline and ALIGN trained and tested"),
    "doctor": ("sgg_plugins.doctor", "check the host, a config's or a folder's dataset, GloVe, CLIP files and GPUs"),
    "bench": ("sgg_plugins.bench.runner", "train and test baseline and regularized variants over seeds"),
    "report": ("sgg_plugins.bench.report", "tables, significance tests and plots from finished bench runs"),
}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="sgg-plugins",
        description="Tools of sgg-plugins, training-time regularizers for scene graph generation hosts.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (_, help_text) in SUBCOMMANDS.items():
        # Only the names here: a subcommand's arguments come from its module, imported when chosen.
        sub.add_parser(name, help=help_text, description=help_text)
    return parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        parser.parse_args(argv)  # prints help or the usage error
        return 2
    name = argv[0]
    module = importlib.import_module(SUBCOMMANDS[name][0])
    p = argparse.ArgumentParser(prog=f"sgg-plugins {name}", description=SUBCOMMANDS[name][1])
    module.add_arguments(p)
    args = p.parse_args(argv[1:])
    return module.run(args) or 0


if __name__ == "__main__":
    sys.exit(main())
