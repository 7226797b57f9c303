"""MODEL.ALIGN on the real SGB host (needs SGB_ROOT): training through our launcher, eval outputs
unchanged by the plug-in, and checkpoints that move between the plug-in and the vanilla host."""

import math
import subprocess

import pytest
import torch

from conftest import (FAST_TRAIN, assert_identical_predictions, host_command, host_predictions, logged_losses,
                      needs_sgb, run_host, train_briefly)

pytestmark = needs_sgb

PREDICTORS = ["MotifPredictor", "VCTreePredictor", "TransformerPredictor", "IMPPredictor", "CausalAnalysisPredictor"]
ALIGN = ["MODEL.ALIGN.ENABLED", "True"]


@pytest.mark.parametrize("predictor", PREDICTORS)
def test_align_trains_and_leaves_eval_unchanged(synthetic_vg, tmp_path, predictor):
    out, log = train_briefly(synthetic_vg, tmp_path, predictor, opts=ALIGN)
    values = logged_losses(log, "loss_align")
    assert values and all(math.isfinite(v) and v > 0 for v in values), log[-3000:]
    weight = out / "model_final.pth"
    assert weight.is_file()

    with_align, test_log = host_predictions(synthetic_vg, tmp_path, predictor, weight, "eval_align", ALIGN)
    assert "mR @ 100" in test_log and "ng-mR @ 100" in test_log
    vanilla, _ = host_predictions(synthetic_vg, tmp_path, predictor, weight, "eval_vanilla",
                                  launcher_args=["--without-plugin"])
    assert_identical_predictions(with_align, vanilla)


@pytest.mark.parametrize("predictor", ["MotifPredictor", "VCTreePredictor"])
@pytest.mark.parametrize("mode", ["sgcls", "sgdet"])
def test_align_trains_in_sgcls_and_sgdet(synthetic_vg, tmp_path, predictor, mode):
    _, log = train_briefly(synthetic_vg, tmp_path, predictor, mode, ALIGN)
    values = logged_losses(log, "loss_align")
    assert values and all(math.isfinite(v) for v in values), log[-3000:]


def test_vanilla_checkpoint_fine_tunes_with_align(synthetic_vg, tmp_path):
    vanilla_out = tmp_path / "vanilla"
    cmd = host_command(synthetic_vg, "relation_train_net", "MotifPredictor", "predcls", FAST_TRAIN,
                       vanilla_out, ["--without-plugin", "--skip-test"])
    run_host(cmd, cwd=tmp_path)
    vanilla_weights = torch.load(vanilla_out / "model_final.pth", weights_only=False)["model"]
    assert not any("sgg_plugins" in k for k in vanilla_weights)

    _, log = train_briefly(synthetic_vg, tmp_path, "MotifPredictor",
                           opts=[*ALIGN, "MODEL.WEIGHT", str(vanilla_out / "model_final.pth")])
    assert logged_losses(log, "loss_align")
    assert "sgg_plugins.align.mlp" in log  # the loader reports the plug-in keys it left at their init


def test_explicit_align_name_and_bad_value_fail_before_training(synthetic_vg, tmp_path):
    cmd = host_command(synthetic_vg, "relation_train_net", "MotifPredictor", "predcls",
                       ["MODEL.ALIGN.ENABLED", "True", "MODEL.ALIGN.MASK_PROB", "1.5", *FAST_TRAIN],
                       tmp_path / "bad", ["--skip-test"])
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert "MODEL.ALIGN.MASK_PROB = 1.5 is not allowed; expected a number in [0.0, 1.0)" in result.stdout + result.stderr
    assert "iter:" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr  # a one-line error from the launcher
