"""SGTR through its own, unmodified scripts on synthetic data, on CPU (needs SGTR_ROOT).

One training run (4 iterations: checkpoints at 2 and 4, an evaluation at 4) is shared by the
tests; the resume and test-script runs start from its output folder.
"""

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SGTR_ROOT = os.environ.get("SGTR_ROOT")
pytestmark = pytest.mark.skipif(not SGTR_ROOT, reason="needs an SGTR checkout: set SGTR_ROOT")
OVERLAY = REPO / "configs" / "sgtr" / "synthetic_cpu.opts"


def overlay_opts():
    return [token for line in OVERLAY.read_text().splitlines() if line.strip() for token in line.split(None, 1)]


def checkout_digest(root):
    """A digest of every file of the checkout (path and bytes): any write to it changes it."""
    digest = hashlib.sha256()
    for path in sorted(Path(root).rglob("*")):
        if path.is_file() or path.is_symlink():
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes() if path.is_file() else os.readlink(path).encode())
    return digest.hexdigest()


def run_sgtr(script, run_dir, data_dir, *args, timeout=900):
    """Run a launcher from ``run_dir``: its options, the CPU overlay, then ``args``' KEY VALUE opts."""
    options = [a for a in args if a.startswith("--")]
    opts = [a for a in args if not a.startswith("--")]
    cmd = [sys.executable, str(REPO / "tools" / f"sgtr_{script}.py"), "--vg-dir", str(data_dir), *options,
           *overlay_opts(), *opts]
    # One thread unless the caller chose: on a machine shared with other jobs torch's default thread
    # pool spins and a step of the CPU overlay took 10-80 s instead of about 1 s.
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    result = subprocess.run(cmd, cwd=run_dir, capture_output=True, text=True, timeout=timeout, env=env)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    return log


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synthetic_vg):
    run_dir = tmp_path_factory.mktemp("sgtr_run")
    before = checkout_digest(SGTR_ROOT)
    out = run_dir / "out"
    log = run_sgtr("train_net", run_dir, synthetic_vg, "MODEL.WEIGHTS", "''", "OUTPUT_DIR", str(out))
    return {"run_dir": run_dir, "out": out, "log": log, "digest": before, "data": synthetic_vg}


def metrics(out):
    return [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]


def test_trains_checkpoints_and_evaluates_on_cpu(trained):
    out, log = trained["out"], trained["log"]
    assert "skip_git_commit=True" in log and "disable_gpu_check=True" in log
    assert "sgg-plugins compat: cvpods._C is not built" in log
    assert {"model_0000001.pth", "model_0000003.pth", "model_final.pth", "last_checkpoint"} <= {
        p.name for p in out.iterdir()}
    losses = [m["total_loss"] for m in metrics(out) if "total_loss" in m]
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)
    assert "SGG eval:   R @ 20" in log and "mR @ 100" in log  # the evaluation at iteration 4
    assert (out / "evaluation_res.txt").is_file()
    assert os.path.islink(trained["run_dir"] / "log")  # the host's link lands in the run folder


def test_resumes_from_the_last_checkpoint(trained):
    log = run_sgtr("train_net", trained["run_dir"], trained["data"], "--resume", "MODEL.WEIGHTS", "''",
                   "OUTPUT_DIR", str(trained["out"]), "SOLVER.LR_SCHEDULER.MAX_ITER", "5", "TEST.EVAL_PERIOD", "0")
    assert "Starting training from iteration 4" in log
    assert [m["iteration"] for m in metrics(trained["out"]) if "total_loss" in m][-1] == 4


def test_test_script_prints_recall_and_mean_recall(trained):
    log = run_sgtr("test_net", trained["run_dir"], trained["data"],
                   "MODEL.TEST_WEIGHTS", str(trained["out"] / "model_final.pth"))
    for line in ("SGG eval:   R @ 20", "SGG eval:  mR @ 20", "SGG eval: ng-mR @ 20", "copypaste: sgdet_recall/top20"):
        assert line in log


@pytest.fixture(scope="module")
def aligned(trained):
    """MODEL.ALIGN fine-tuning from the vanilla run's weights (2 iterations, a checkpoint at 2)."""
    out = trained["run_dir"] / "out_align"
    log = run_sgtr("train_net", trained["run_dir"], trained["data"], "MODEL.ALIGN.ENABLED", "True",
                   "MODEL.WEIGHTS", str(trained["out"] / "model_final.pth"), "OUTPUT_DIR", str(out),
                   "SOLVER.LR_SCHEDULER.MAX_ITER", "2", "SOLVER.CHECKPOINT_PERIOD", "2", "TEST.EVAL_PERIOD", "0")
    return {"out": out, "log": log}


def test_align_trains_from_a_vanilla_checkpoint_with_finite_alignment_losses(aligned):
    assert "MODEL.ALIGN on SGTR: masks (p=0.1) on 18 cross-attention blocks" in aligned["log"]
    steps = [m for m in metrics(aligned["out"]) if "total_loss" in m]
    assert len(steps) == 2
    for m in steps:
        values = [m[f"loss_align_{k}"] for k in ("predicate", "subject", "object")]
        assert all(math.isfinite(v) and v >= 0 for v in values)
        assert math.isfinite(m["total_loss"])


def _copypaste(log):
    return [line.split("copypaste: ", 1)[1] for line in log.splitlines() if "copypaste: " in line]


def test_align_checkpoint_evaluates_in_the_vanilla_host_identically(aligned, trained):
    weights = str(aligned["out"] / "model_final.pth")
    vanilla = run_sgtr("test_net", trained["run_dir"], trained["data"], "--without-plugin",
                       "MODEL.TEST_WEIGHTS", weights)
    plugged = run_sgtr("test_net", trained["run_dir"], trained["data"], "MODEL.TEST_WEIGHTS", weights)
    assert "sgdet_mean_recall/top100" in "\n".join(_copypaste(vanilla))
    assert _copypaste(vanilla) == _copypaste(plugged)


def test_host_checkout_is_untouched(trained):
    # Runs after the others in this module (file order): every run so far went through the launcher.
    assert checkout_digest(SGTR_ROOT) == trained["digest"]
