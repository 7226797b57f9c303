"""Evaluate a Maelic/SGG-Benchmark run with sgg-plugins installed: runs the host's own, unmodified
tools/relation_eval_hydra.py, which reads the run directory's saved config.

    python tools/sgg_benchmark_test_net.py [--host-root PATH] [--without-plugin] \
        --checkpoint-dir output/motifs_predcls_align --task predcls [--save-predictions ...]

The objectives are training-time only: a run trained with them evaluates here and in the vanilla
host alike (its saved config holds the host's keys only; sgg_plugins/hosts/sgg_benchmark/run_files.py).
The host checkout comes from --host-root, else $SGGB_ROOT, else the importable sgg_benchmark.
"""

import sys
from pathlib import Path

# Lets the script run from a clone of sgg-plugins that is not pip-installed.
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from sgg_plugins.hosts.sgg_benchmark.launch import run_host_script  # noqa: E402

if __name__ == "__main__":
    run_host_script("test", sys.argv[1:])
