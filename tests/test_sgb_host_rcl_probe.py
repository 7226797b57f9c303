"""MODEL.RCL and MODEL.PROBE on the real SGB host (needs SGB_ROOT), alone and with MODEL.ALIGN.

The text embeddings come the way the README tells users to make them: `sgg-plugins embed` for the
dataset's files, with a small OpenCLIP model whose random weights are saved to a local checkpoint.
"""

import math

import pytest

from conftest import (assert_identical_predictions, host_predictions, logged_losses, needs_sgb, random_open_clip,
                      train_briefly)
from sgg_plugins import cli

pytestmark = needs_sgb
open_clip = pytest.importorskip("open_clip")



@pytest.fixture(scope="module")
def embeddings(synthetic_vg, tmp_path_factory):
    """(opts for MODEL.RCL, path) with embeddings computed once by `sgg-plugins embed`."""
    folder = tmp_path_factory.mktemp("clip")
    weights = random_open_clip(folder, "sggp-host-tiny-clip", embed_dim=32)
    out = folder / "text_embeddings.pt"
    assert cli.main(["embed", "--dict-file", str(synthetic_vg / "VG-SGG-dicts-with-attri.json"),
                     "--roidb-file", str(synthetic_vg / "VG-SGG-with-attri.h5"),
                     "--clip-model", "sggp-host-tiny-clip", "--clip-pretrained", str(weights),
                     "--out", str(out)]) == 0
    # CLIP phrases rank the negatives: the synthetic runs' GLOVE_DIR holds no GloVe file.
    opts = ["MODEL.RCL.ENABLED", "True", "MODEL.RCL.SAMPLING_EMBEDDINGS", "clip", "MODEL.RCL.TEXT_EMBEDDINGS", str(out),
            "MODEL.RCL.CLIP_MODEL", "sggp-host-tiny-clip", "MODEL.RCL.CLIP_PRETRAINED", str(weights)]
    return opts


PROBE = ["MODEL.PROBE.ENABLED", "True"]
ALIGN = ["MODEL.ALIGN.ENABLED", "True"]


def assert_finite_losses(log, *names):
    for name in names:
        values = logged_losses(log, name)
        assert values and all(math.isfinite(v) for v in values), f"{name} not logged finite:\n{log[-3000:]}"


@pytest.mark.parametrize("placement", ["side", "classifier"])
def test_rcl_trains_from_precomputed_embeddings_and_evaluates_by_its_placement(synthetic_vg, tmp_path, embeddings,
                                                                               placement):
    """side: the checkpoint evaluates as the vanilla host's; classifier: the host's classifier reads
    the trained h_rel, so the same checkpoint's predictions differ from the vanilla host's."""
    opts = [*embeddings, "MODEL.RCL.PLACEMENT", placement]
    out, log = train_briefly(synthetic_vg, tmp_path, "MotifPredictor", opts=opts)
    assert_finite_losses(log, "loss_rcl")
    assert "text embeddings loaded from" in log  # no CLIP computation at training time
    weight = out / "model_final.pth"
    with_rcl, _ = host_predictions(synthetic_vg, tmp_path, "MotifPredictor", weight, "eval_rcl", opts)
    vanilla, _ = host_predictions(synthetic_vg, tmp_path, "MotifPredictor", weight, "eval_vanilla",
                                  launcher_args=["--without-plugin"])
    if placement == "side":
        assert_identical_predictions(with_rcl, vanilla)
    else:
        with pytest.raises(AssertionError):
            assert_identical_predictions(with_rcl, vanilla)


@pytest.mark.parametrize("feature", ["edge_ctx", "obj_ctx"])
def test_probe_trains_and_leaves_eval_unchanged(synthetic_vg, tmp_path, feature):
    opts = [*PROBE, "MODEL.PROBE.FEATURE", feature]
    out, log = train_briefly(synthetic_vg, tmp_path, "MotifPredictor", opts=opts)
    assert_finite_losses(log, "loss_probe", "loss_probe_contrast")
    # The relation head lends the predictor the full annotated graph and the pooled RoI maps: the
    # probe neither falls back to the sampled pairs nor to a boxes-only view.
    assert "supervising graph = the foreground pairs" not in log
    assert "pooled RoI maps are not available" not in log
    weight = out / "model_final.pth"
    with_probe, _ = host_predictions(synthetic_vg, tmp_path, "MotifPredictor", weight, "eval_probe", opts)
    vanilla, _ = host_predictions(synthetic_vg, tmp_path, "MotifPredictor", weight, "eval_vanilla",
                                  launcher_args=["--without-plugin"])
    assert_identical_predictions(with_probe, vanilla)


@pytest.mark.parametrize("predictor,mode", [("MotifPredictor", "predcls"), ("VCTreePredictor", "sgcls"),
                                            ("TransformerPredictor", "predcls"), ("IMPPredictor", "predcls"),
                                            ("MotifPredictor", "sgdet")])
def test_three_regularizers_in_one_run(synthetic_vg, tmp_path, embeddings, predictor, mode):
    _, log = train_briefly(synthetic_vg, tmp_path, predictor, mode, [*ALIGN, *PROBE, *embeddings])
    assert_finite_losses(log, "loss_align", "loss_rcl", "loss_probe", "loss_probe_contrast")
