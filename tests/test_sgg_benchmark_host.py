"""Maelic/SGG-Benchmark's own training and test scripts through the launchers, on the synthetic data
in its COCO-JSON layout, on the CPU: the vanilla host, ``model.align.enabled=true`` on MotifPredictor
PredCls, its checkpoint evaluated by the plug-in and by the vanilla host, and the refusals that stop
a run in one line. Needs a checkout in ``SGGB_ROOT``."""

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


def launch(tool, run_dir, args):
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(REPO / "tools" / tool), *args]
    return subprocess.run(cmd, cwd=run_dir, capture_output=True, text=True, timeout=900, env=env)


def train(coco_data, run_dir, *overrides, launcher_args=(), predictor="MotifPredictor"):
    """The command a user types: the host's PSG config of ``predictor``, PredCls, the CPU overlay,
    the data; the run's files go to ``run_dir/out``."""
    lines = (coco_data / "sgg_benchmark.overrides").read_text().split()
    lines += (REPO / "configs" / "sgg_benchmark" / "synthetic_cpu.overrides").read_text().split()
    return launch("sgg_benchmark_train_net.py", run_dir, [
        *launcher_args, "--config-path", os.path.join(SGGB_ROOT, "configs", "hydra", "PSG"),
        "--config-name", predictor, "--task", "predcls", *lines, f"output_dir={run_dir / 'out'}", *overrides])


@pytest.fixture(scope="module")
def aligned(coco_data, tmp_path_factory):
    """One ALIGN training run (4 iterations, validation and test), with the checkout's digest around it."""
    run_dir = tmp_path_factory.mktemp("align")
    before = checkout_digest(SGGB_ROOT)
    result = train(coco_data, run_dir, "model.align.enabled=true")
    return {"result": result, "out": run_dir / "out", "unchanged": checkout_digest(SGGB_ROOT) == before}


def test_align_trains_and_evaluates_motifs_predcls_through_the_launcher(aligned):
    log = aligned["result"].stdout + aligned["result"].stderr
    assert aligned["result"].returncode == 0, log[-4000:]
    assert "sgg-plugins: MotifPredictor with model.align" in log
    assert "loss_align=" in log  # the host's own training log line, beside its loss_rel
    assert "Start evaluation on synthetic_vg_test dataset" in log and "mR @ 100" in log
    # The run's saved configs are the vanilla host's (its test script reads them back); the
    # objectives' nodes are recorded beside them.
    import yaml

    for name in ("hydra_config.yaml", "config.yml"):
        assert "align" not in yaml.safe_load((aligned["out"] / name).read_text())["model"]
    assert yaml.safe_load((aligned["out"] / "sgg_plugins.yaml").read_text())["model"]["align"]["enabled"] is True
    assert aligned["unchanged"]  # the checkout's files byte-identical after the run


def predictions(path):
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)


def assert_identical_predictions(expected, actual):
    import torch

    assert len(expected) == len(actual) > 0
    for one, other in zip(expected, actual):
        assert one.keys() == other.keys()
        for key, value in one.items():
            assert torch.equal(value, other[key]) if torch.is_tensor(value) else value == other[key], key


def test_align_checkpoint_evaluates_in_the_vanilla_host_bit_identically(aligned, coco_data, tmp_path):
    """The ALIGN checkpoint (the mirror's parameters included) evaluated four ways, every prediction
    tensor equal: by the training run's own test, by the plug-in's --eval-only with model.align on,
    and by the vanilla host through its training script's --eval-only and its test script reading
    the run directory's saved config."""
    import torch

    checkpoint = aligned["out"] / "model_epoch_0.pth"
    assert any(".sgg_plugins.align." in key for key in torch.load(checkpoint, weights_only=False)["model"])
    plugged = train(coco_data, tmp_path / "plugged", "model.align.enabled=true",
                    launcher_args=["--eval-only", "--checkpoint", str(checkpoint)])
    vanilla = train(coco_data, tmp_path / "vanilla", launcher_args=["--without-plugin", "--eval-only", "--checkpoint",
                                                                    str(checkpoint)])
    tested = launch("sgg_benchmark_test_net.py", tmp_path / "tested", [
        "--without-plugin", "--checkpoint-dir", str(aligned["out"]), "--task", "predcls", "--save-predictions",
        "--output-dir", str(tmp_path / "tested" / "out")])
    for result in (plugged, vanilla, tested):
        assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
        assert "mR @ 100" in result.stdout + result.stderr
    expected = predictions(aligned["out"] / "predictions.pth")
    for path in (tmp_path / "plugged" / "out" / "predictions.pth", tmp_path / "vanilla" / "out" / "predictions.pth",
                 tmp_path / "tested" / "out" / "synthetic_vg_test_predcls_det100" / "predictions.pth"):
        assert_identical_predictions(expected, predictions(path))


def test_the_vanilla_host_runs_without_the_plugin(coco_data, tmp_path):
    result = train(coco_data, tmp_path / "vanilla", launcher_args=["--without-plugin"])
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "loss_align" not in log and "mR @ 100" in log


@pytest.mark.parametrize("override, line", [
    ("model.align.mask_prob=1.5", "error: model.align.mask_prob = 1.5 is not allowed; expected a number in [0.0, 1.0)."),
    ("model.align.mask_prob=often", "error: model.align.mask_prob: Value 'often' of type 'str' could not be converted "
                                    "to Float"),
    ("model.align.enabled=true ++model.roi_relation_head.predictor=IMPPredictor",
     "error: model.align.enabled=true: model.roi_relation_head.predictor=IMPPredictor is not supported by it"),
])
def test_bad_input_stops_before_training_with_one_line(coco_data, tmp_path, override, line):
    result = train(coco_data, tmp_path / "bad", *override.split())
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(line), result.stderr[-2000:]
    assert "Starting training loop" not in result.stdout + result.stderr


def test_align_trains_react_plus_plus_and_its_checkpoint_evaluates_in_the_vanilla_host(coco_data, tmp_path):
    """REACT++ (its PSG config; PredCls with RoI-pooled box features: configs/sgg_benchmark/
    react_predcls.overrides) with model.align: loss_align beside REACT++'s own losses, and the
    vanilla host's --eval-only of the checkpoint predicts exactly what the run's own test did."""
    react = (REPO / "configs" / "sgg_benchmark" / "react_predcls.overrides").read_text().split()
    result = train(coco_data, tmp_path / "react", *react, "model.align.enabled=true", predictor="REACT++")
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "sgg-plugins: REACTPlusPlusPredictor with model.align" in log
    assert "loss_align=" in log and "dis=" in log and "mR @ 100" in log
    vanilla = train(coco_data, tmp_path / "vanilla", *react, predictor="REACT++", launcher_args=[
        "--without-plugin", "--eval-only", "--checkpoint", str(tmp_path / "react" / "out" / "model_epoch_0.pth")])
    assert vanilla.returncode == 0, (vanilla.stdout + vanilla.stderr)[-4000:]
    assert_identical_predictions(predictions(tmp_path / "react" / "out" / "predictions.pth"),
                                 predictions(tmp_path / "vanilla" / "out" / "predictions.pth"))
