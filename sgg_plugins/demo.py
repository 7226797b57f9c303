"""``sgg-plugins demo``: the whole main job in one command, in minutes on a CPU.

    sgg-plugins demo [--out DIR] [--host-root PATH | --get-host DIR]

Writes the synthetic Visual Genome-format dataset, trains and tests Motifs PredCls twice through
the launchers (the baseline, and with MODEL.ALIGN), with the small CPU configuration, by running
``sgg-plugins bench`` (variants baseline and align, seed 0) and ``sgg-plugins report``, and prints
the two side by side. A rerun resumes: finished runs are kept.

The SGB host is the user's checkout (``--host-root``, else ``$SGB_ROOT``, else the importable one).
Without one, the command says how to clone it at the commit sgg-plugins is tested against;
``--get-host DIR`` runs that clone itself (on a machine with network access). The host is only
cloned: never built, patched or copied into this project.
"""

import os
import shlex
import subprocess
import sys
from pathlib import Path

from .hosts.locate import HostNotFoundError, locate_host

SGB_UPSTREAM = "https://github.com/KaihuaTang/Scene-Graph-Benchmark.pytorch.git"
SGB_COMMIT = "6f75881ad6076d3a1aee34e9bead2b3595631086"  # the checkout the host tests run against
REPO = Path(__file__).resolve().parent.parent
OVERLAY = REPO / "configs" / "sgb" / "synthetic_cpu.opts"
STOCK_CONFIG = "configs/e2e_relation_X_101_32_8_FPN_1x.yaml"
PREDCLS = ["MODEL.ROI_RELATION_HEAD.USE_GT_BOX", "True", "MODEL.ROI_RELATION_HEAD.USE_GT_OBJECT_LABEL", "True",
           "MODEL.ROI_RELATION_HEAD.PREDICTOR", "MotifPredictor"]


class DemoError(RuntimeError):
    """The demo cannot go on; the message says why and what to do."""


def clone_commands(folder):
    return [["git", "clone", SGB_UPSTREAM, str(folder)], ["git", "-C", str(folder), "checkout", "--quiet", SGB_COMMIT]]


def how_to_get_a_host():
    commands = " && ".join(shlex.join(c) for c in clone_commands("Scene-Graph-Benchmark.pytorch"))
    return ("the demo needs an SGB checkout (unmodified, unbuilt). Get one with\n"
            f"    {commands}\n"
            "then run `sgg-plugins demo --host-root Scene-Graph-Benchmark.pytorch` (or set SGB_ROOT), "
            "or let the demo clone it: `sgg-plugins demo --get-host Scene-Graph-Benchmark.pytorch`")


def get_host(folder):
    """Clone SGB into ``folder`` at ``SGB_COMMIT`` unless it already holds a checkout. Returns its root."""
    folder = Path(folder)
    try:
        return locate_host(folder)
    except HostNotFoundError:
        if folder.exists() and any(folder.iterdir()):
            raise DemoError(f"--get-host {folder} exists and is not an SGB checkout: choose a new folder") from None
    for command in clone_commands(folder):
        print("$", shlex.join(command), flush=True)
        result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if result.returncode != 0:
            raise DemoError(f"`{shlex.join(command)}` failed ({result.returncode}): {result.stdout.strip()[-500:]}")
    return locate_host(folder)


def _results_table(report_md):
    """The report's main table (the lines under "## Results")."""
    lines = Path(report_md).read_text().splitlines()
    start = lines.index("## Results") + 1
    table = []
    for line in lines[start:]:
        if line.startswith("## "):
            break
        if line.startswith("|"):
            table.append(line)
    return "\n".join(table)


def add_arguments(parser):
    parser.add_argument("--out", default="sgg_plugins_demo", help="folder for the data, runs and report "
                                                                  "(default: %(default)s)")
    hosts = parser.add_mutually_exclusive_group()
    hosts.add_argument("--host-root", default=None,
                       help="SGB checkout (default: $SGB_ROOT, else the importable maskrcnn_benchmark)")
    hosts.add_argument("--get-host", default=None, metavar="DIR",
                       help=f"clone SGB into DIR at the tested commit {SGB_COMMIT[:10]} (needs network access) "
                            "and use it; a DIR that already holds the checkout is used as it is")
    parser.add_argument("--images", type=int, default=160, help="synthetic images (default: %(default)s)")
    parser.add_argument("--iterations", type=int, default=20,
                        help="training iterations per run (default: %(default)s, as the CPU overlay)")


def run(args):
    from . import cli
    from .data.synthetic_vg import write_synthetic_vg
    from .hosts.sgb.overlay import overlay_opts

    try:
        root = get_host(args.get_host) if args.get_host else locate_host(args.host_root)
    except HostNotFoundError as error:
        print(f"sgg-plugins demo: {error}\n{how_to_get_a_host()}", file=sys.stderr)
        return 2
    except DemoError as error:
        print(f"sgg-plugins demo: error: {error}", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    data = out / "data"
    if not (data / "dataset.opts").is_file():
        print(f"writing the synthetic dataset to {data}", flush=True)
        write_synthetic_vg(str(data), num_images=args.images, seed=0)
    iterations = str(args.iterations)
    opts = [*overlay_opts(str(OVERLAY)), *overlay_opts(str(data / "dataset.opts")), *PREDCLS,
            "GLOVE_DIR", str(out / "glove"), "SOLVER.MAX_ITER", iterations,
            "SOLVER.CHECKPOINT_PERIOD", iterations, "SOLVER.VAL_PERIOD", iterations]
    bench = out / "bench"
    env_root = os.environ.get("SGB_ROOT")
    os.environ["SGB_ROOT"] = str(root)  # the launchers the bench starts find the same host
    try:
        code = cli.main(["bench", "--config-file", str(root / STOCK_CONFIG), "--out", str(bench),
                         "--variants", "baseline", "align", "--seeds", "0", "--cwd", str(root), "--", *opts])
        if code != 0:
            print(f"sgg-plugins demo: a run failed; its log is in {bench}/<variant>/seed0/", file=sys.stderr)
            return code
        code = cli.main(["report", str(bench)])
    finally:
        if env_root is None:
            del os.environ["SGB_ROOT"]
        else:
            os.environ["SGB_ROOT"] = env_root
    if code != 0:
        return code
    print(f"\nMotifs PredCls on {args.images} synthetic images, {iterations} iterations, seed 0 "
          "(one seed on toy data: a smoke test of the pipeline, not evidence for either variant):\n")
    print(_results_table(bench / "report" / "report.md"))
    return 0
