"""Maelic/SGG-Benchmark's own training script through the launcher, on the synthetic data in its
COCO-JSON layout, on the CPU: the vanilla host, ``model.align.enabled=true`` on MotifPredictor
PredCls, and the refusals that stop a run in one line. Needs a checkout in ``SGGB_ROOT``."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SGGB_ROOT = os.environ.get("SGGB_ROOT")
pytestmark = pytest.mark.skipif(not SGGB_ROOT, reason="needs an SGG-Benchmark checkout: set SGGB_ROOT")


@pytest.fixture(scope="module")
def coco_data(tmp_path_factory):
    from sgg_plugins.data.synthetic_vg import write_synthetic_vg

    out = tmp_path_factory.mktemp("sggb") / "data"
    write_synthetic_vg(str(out), num_images=40, image_size=160, seed=0, coco_layout=True)
    return out


def checkout_digest(root):
    """Every file of the checkout, by path and content: the launcher must leave it untouched."""
    digest = hashlib.sha256()
    for path in sorted(Path(root).rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def train(coco_data, run_dir, *overrides, launcher_args=()):
    """The command a user types: the host's Motifs PSG config, PredCls, the CPU overlay, the data."""
    lines = (coco_data / "sgg_benchmark.overrides").read_text().split()
    lines += (REPO / "configs" / "sgg_benchmark" / "synthetic_cpu.overrides").read_text().split()
    cmd = [sys.executable, str(REPO / "tools" / "sgg_benchmark_train_net.py"), *launcher_args,
           "--config-path", os.path.join(SGGB_ROOT, "configs", "hydra", "PSG"), "--config-name", "MotifPredictor",
           "--task", "predcls", *lines, f"output_dir={run_dir / 'out'}", *overrides]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    run_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.run(cmd, cwd=run_dir, capture_output=True, text=True, timeout=900, env=env)


def test_align_trains_and_evaluates_motifs_predcls_through_the_launcher(coco_data, tmp_path):
    before = checkout_digest(SGGB_ROOT)
    result = train(coco_data, tmp_path / "align", "model.align.enabled=true")
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "sgg-plugins: MotifPredictor with model.align" in log
    assert "loss_align=" in log  # the host's own training log line, beside its loss_rel
    assert "Start evaluation on synthetic_vg_test dataset" in log and "mR @ 100" in log
    saved = (tmp_path / "align" / "out" / "hydra_config.yaml").read_text()
    assert "align:" in saved and "enabled: true" in saved  # the run's saved config has the node
    assert checkout_digest(SGGB_ROOT) == before


def test_the_vanilla_host_runs_without_the_plugin(coco_data, tmp_path):
    result = train(coco_data, tmp_path / "vanilla", launcher_args=["--without-plugin"])
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "loss_align" not in log and "mR @ 100" in log


@pytest.mark.parametrize("override, line", [
    ("model.align.mask_prob=1.5", "error: model.align.mask_prob = 1.5 is not allowed; expected a number in [0.0, 1.0)."),
    ("model.align.mask_prob=often", "error: model.align.mask_prob: Value 'often' of type 'str' could not be converted "
                                    "to Float"),
    ("model.rcl.enabled=true", "error: model.rcl.enabled=true: RCL is not attached on SGG-Benchmark yet"),
])
def test_bad_input_stops_before_training_with_one_line(coco_data, tmp_path, override, line):
    result = train(coco_data, tmp_path / "bad", override)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(line), result.stderr[-2000:]
    assert "Starting training loop" not in result.stdout + result.stderr
