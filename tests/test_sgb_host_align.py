"""MODEL.ALIGN on the real SGB host (needs SGB_ROOT): training through our launcher, eval outputs
unchanged by the plug-in, and checkpoints that move between the plug-in and the vanilla host."""

import math
import re
import subprocess

import pytest
import torch

from conftest import host_command, needs_sgb, run_host
from sgg_plugins.hosts.sgb import install

pytestmark = needs_sgb

FAST_TRAIN = ["SOLVER.MAX_ITER", "2", "SOLVER.CHECKPOINT_PERIOD", "2", "SOLVER.VAL_PERIOD", "1000"]
NO_CACHE = ["TEST.ALLOW_LOAD_FROM_CACHE", "False"]
PREDICTORS = ["MotifPredictor", "VCTreePredictor", "TransformerPredictor", "IMPPredictor", "CausalAnalysisPredictor"]


def logged_losses(log, name):
    return [float(v) for v in re.findall(rf"{name}: ([-\d.naninf]+) \(", log)]


def train(synthetic_vg, tmp_path, predictor, mode="predcls", opts=()):
    out = tmp_path / f"{predictor}_{mode}"
    cmd = host_command(synthetic_vg, "relation_train_net", predictor, mode,
                       ["MODEL.ALIGN.ENABLED", "True", *FAST_TRAIN, *opts], out, ["--skip-test"])
    log = run_host(cmd, cwd=tmp_path)
    return out, log


def predictions(synthetic_vg, tmp_path, predictor, weight, name, opts=(), launcher_args=()):
    out = tmp_path / name
    out.mkdir()  # the host's test script writes into OUTPUT_DIR without creating it
    cmd = host_command(synthetic_vg, "relation_test_net", predictor, "predcls",
                       ["MODEL.WEIGHT", str(weight), *NO_CACHE, *opts], out, launcher_args)
    log = run_host(cmd, cwd=tmp_path)
    (results,) = out.glob("inference/*/eval_results.pytorch")
    install()  # the predictions are the host's BoxLists: unpickling imports the host
    return torch.load(results, weights_only=False)["predictions"], log


def assert_identical(preds_a, preds_b):
    assert len(preds_a) == len(preds_b) > 0
    for a, b in zip(preds_a, preds_b):
        assert torch.equal(a.bbox, b.bbox)
        assert a.fields() == b.fields()
        for field in a.fields():
            assert torch.equal(a.get_field(field), b.get_field(field)), field


@pytest.mark.parametrize("predictor", PREDICTORS)
def test_align_trains_and_leaves_eval_unchanged(synthetic_vg, tmp_path, predictor):
    out, log = train(synthetic_vg, tmp_path, predictor)
    values = logged_losses(log, "loss_align")
    assert values and all(math.isfinite(v) and v > 0 for v in values), log[-3000:]
    weight = out / "model_final.pth"
    assert weight.is_file()

    with_align, test_log = predictions(synthetic_vg, tmp_path, predictor, weight, "eval_align",
                                       ["MODEL.ALIGN.ENABLED", "True"])
    assert "mR @ 100" in test_log and "ng-mR @ 100" in test_log
    vanilla, _ = predictions(synthetic_vg, tmp_path, predictor, weight, "eval_vanilla",
                             launcher_args=["--without-plugin"])
    assert_identical(with_align, vanilla)


@pytest.mark.parametrize("predictor", ["MotifPredictor", "VCTreePredictor"])
@pytest.mark.parametrize("mode", ["sgcls", "sgdet"])
def test_align_trains_in_sgcls_and_sgdet(synthetic_vg, tmp_path, predictor, mode):
    _, log = train(synthetic_vg, tmp_path, predictor, mode)
    values = logged_losses(log, "loss_align")
    assert values and all(math.isfinite(v) for v in values), log[-3000:]


def test_vanilla_checkpoint_fine_tunes_with_align(synthetic_vg, tmp_path):
    vanilla_out = tmp_path / "vanilla"
    cmd = host_command(synthetic_vg, "relation_train_net", "MotifPredictor", "predcls", FAST_TRAIN,
                       vanilla_out, ["--without-plugin", "--skip-test"])
    run_host(cmd, cwd=tmp_path)
    vanilla_weights = torch.load(vanilla_out / "model_final.pth", weights_only=False)["model"]
    assert not any("sgg_plugins" in k for k in vanilla_weights)

    _, log = train(synthetic_vg, tmp_path, "MotifPredictor",
                   opts=["MODEL.WEIGHT", str(vanilla_out / "model_final.pth")])
    assert logged_losses(log, "loss_align")
    assert "sgg_plugins.align_heads" in log  # the loader reports the plug-in keys it left at their init


def test_explicit_align_name_and_bad_value_fail_before_training(synthetic_vg, tmp_path):
    cmd = host_command(synthetic_vg, "relation_train_net", "MotifPredictor", "predcls",
                       ["MODEL.ALIGN.ENABLED", "True", "MODEL.ALIGN.MASK_PROB", "1.5", *FAST_TRAIN],
                       tmp_path / "bad", ["--skip-test"])
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert "MODEL.ALIGN.MASK_PROB = 1.5 is not allowed; expected a number in [0.0, 1.0)" in result.stdout + result.stderr
    assert "iter:" not in result.stdout + result.stderr
