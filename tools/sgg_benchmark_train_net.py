"""Train (and test) a Maelic/SGG-Benchmark model with sgg-plugins: runs the host's own, unmodified
tools/relation_train_net_hydra.py.

    python tools/sgg_benchmark_train_net.py [--host-root PATH] [--without-plugin] \
        --config-path $SGGB_ROOT/configs/hydra/PSG --config-name MotifPredictor --task predcls \
        model.align.enabled=true [HYDRA OVERRIDES ...]

The host checkout comes from --host-root, else $SGGB_ROOT, else the importable sgg_benchmark; see
sgg_plugins/hosts/sgg_benchmark/launch.py for what the launcher adds.
"""

import sys
from pathlib import Path

# Lets the script run from a clone of sgg-plugins that is not pip-installed.
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from sgg_plugins.hosts.sgg_benchmark.launch import run_host_script  # noqa: E402

if __name__ == "__main__":
    run_host_script("train", sys.argv[1:])
