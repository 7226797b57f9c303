"""The papers' protocols as config overlays (configs/sgb/paper_*): the two forms agree, the values
are the papers', and (with SGB_ROOT) every key exists in the host's config and merges onto its stock
relation config."""

import math
import os
import subprocess
import sys

import pytest

from sgg_plugins.hosts.sgb.overlay import overlay_opts

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = ("paper_002_motifs", "paper_001_rcl")


def recipe(name, ext):
    return overlay_opts(os.path.join(REPO, "configs", "sgb", f"{name}.{ext}"))


@pytest.mark.parametrize("name", RECIPES)
def test_yaml_and_opts_forms_agree(name):
    assert recipe(name, "yaml") == recipe(name, "opts")


def test_seed_002_motifs_settings():
    opts = dict(zip(*[iter(recipe("paper_002_motifs", "opts"))] * 2))
    # "a batch size of 24, and SGD optimizer with momentum 0.9 and weight decay 0.0001 ... initial
    # learning rate to 0.01 ... a total of 100K iterations"
    assert opts["SOLVER.IMS_PER_BATCH"] == "24" and opts["SOLVER.MOMENTUM"] == "0.9"
    # SGB's optimizer rate is BASE_LR x IMS_PER_BATCH (make_optimizer's rl_factor in relation_train_net.py)
    assert float(opts["SOLVER.WEIGHT_DECAY"]) == 1e-4
    assert float(opts["SOLVER.BASE_LR"]) * int(opts["SOLVER.IMS_PER_BATCH"]) == pytest.approx(0.01, rel=1e-5)
    assert opts["SOLVER.MAX_ITER"] == "100000" and opts["MODEL.ROI_RELATION_HEAD.PREDICTOR"] == "MotifPredictor"
    # The cosine's stand-in: 10x drops where cos-annealing from 1 to 0 over 100K crosses 10^-0.5 and 10^-1.5.
    steps = [int(s) for s in opts["SOLVER.STEPS"].strip("()").split(",")]
    for step, level in zip(steps, (10 ** -0.5, 10 ** -1.5)):
        assert (1 + math.cos(math.pi * step / 100000)) / 2 == pytest.approx(level, abs=0.01)
    assert opts["SOLVER.SCHEDULE.TYPE"] == "WarmupMultiStepLR" and opts["SOLVER.GAMMA"] == "0.1"
    assert opts["TEST.ALLOW_LOAD_FROM_CACHE"] == "False"


def test_seed_001_settings():
    opts = dict(zip(*[iter(recipe("paper_001_rcl", "opts"))] * 2))
    # "SGD optimizer for 20,000 iterations with image batch size 12. The initial learning rate is 0.001."
    assert (opts["SOLVER.IMS_PER_BATCH"], opts["SOLVER.MAX_ITER"]) == ("12", "20000")
    assert float(opts["SOLVER.BASE_LR"]) * 12 == pytest.approx(0.001, rel=1e-5)


@pytest.mark.skipif(not os.environ.get("SGB_ROOT"), reason="needs an SGB checkout: set SGB_ROOT")
@pytest.mark.parametrize("name", RECIPES)
def test_host_recipe_keys_merge_onto_the_stock_config(name):
    """yacs refuses unknown keys and wrong types: merge in a fresh process with the host's defaults."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from maskrcnn_benchmark.config.defaults import _C as cfg;"
        "cfg = cfg.clone(); cfg.merge_from_file(sys.argv[1] + '/configs/e2e_relation_X_101_32_8_FPN_1x.yaml');"
        "cfg.merge_from_list(sys.argv[2:]); print(cfg.SOLVER.BASE_LR * cfg.SOLVER.IMS_PER_BATCH)"
    )
    result = subprocess.run([sys.executable, "-c", code, os.environ["SGB_ROOT"], *recipe(name, "opts")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
