"""Train an SGB relation model with sgg-plugins: runs the host's own tools/relation_train_net.py.

    python tools/relation_train_net.py [--host-root PATH] --config-file CONFIG [KEY VALUE ...]

The host checkout comes from --host-root, else $SGB_ROOT, else the importable maskrcnn_benchmark.
Works the same under torchrun and python -m torch.distributed.launch.
"""

import sys
from pathlib import Path

# Lets the script run from a clone of sgg-plugins that is not pip-installed.
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from sgg_plugins.hosts.sgb.launch import run_host_script  # noqa: E402

if __name__ == "__main__":
    run_host_script("relation_train_net", sys.argv[1:])
