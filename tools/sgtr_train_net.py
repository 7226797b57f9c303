"""Train SGTR with sgg-plugins: runs the host's own, unmodified tools/train_net.py.

    python tools/sgtr_train_net.py [--host-root PATH] [--experiment DIR] [--config FILE] [--vg-dir DIR]
        [--without-plugin] [--resume] [--eval-only] [--num-gpus N] [KEY VALUE ...]

Run it from a folder outside the SGTR checkout (found from --host-root, else $SGTR_ROOT); see
sgg_plugins/hosts/sgtr/launch.py for what the launcher adds and handles.
"""

import sys
from pathlib import Path

# Lets the script run from a clone of sgg-plugins that is not pip-installed.
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from sgg_plugins.hosts.sgtr.launch import run_host_script, run_in_spawned_worker  # noqa: E402

if __name__ == "__main__":
    run_host_script("train_net", sys.argv[1:], globals())
elif __name__ == "__mp_main__":  # a worker the host's launch spawned (--num-gpus > 1)
    run_in_spawned_worker(globals())
