"""RCL, PROBE, CLIPMATCH and MRC on Maelic/SGG-Benchmark's MotifPredictor (PredCls, CPU), each
trained through the launcher with its loss in the host's own training log line; all five together
on its Motifs, VCTree and Transformer.
Needs a checkout in ``SGGB_ROOT`` (and OpenCLIP for the text banks of RCL and CLIPMATCH).

RCL and CLIPMATCH read their text banks from files computed once, before training, the way the
README tells users to (``sgg-plugins embed`` / ``embed-candidates`` on the dataset's files, with a
small OpenCLIP architecture whose random weights are saved locally), so the runs load, not compute,
them; their training triplets are read from the host's COCO-JSON training split."""

import argparse
import math
import re

import pytest

from conftest import random_open_clip
from test_sgg_benchmark_host import SGGB_ROOT, coco_data, train  # noqa: F401 (coco_data: a fixture)

pytestmark = pytest.mark.skipif(not SGGB_ROOT, reason="needs an SGG-Benchmark checkout: set SGGB_ROOT")


@pytest.fixture(scope="module")
def text_banks(coco_data, tmp_path_factory):  # noqa: F811 (the imported fixture)
    """``{node: its overrides}`` for RCL and CLIPMATCH, their embeddings written before training."""
    pytest.importorskip("open_clip")
    from sgg_plugins import cli
    from sgg_plugins.text import candidates_cli

    folder = tmp_path_factory.mktemp("clip")
    model = "sggp-sggb-tiny-clip"
    weights = random_open_clip(folder, model, embed_dim=32)
    files = ["--dict-file", str(coco_data / "VG-SGG-dicts-with-attri.json"),
             "--roidb-file", str(coco_data / "VG-SGG-with-attri.h5")]
    clip = ["--clip-model", model, "--clip-pretrained", weights]
    assert cli.main(["embed", *files, *clip, "--out", str(folder / "rcl.pt")]) == 0
    parser = argparse.ArgumentParser()
    candidates_cli.add_arguments(parser)
    assert candidates_cli.run(parser.parse_args([*files, *clip, "--out", str(folder / "candidates.pt"),
                                                 "--device", "cpu"])) == 0
    weights_overrides = lambda node: [f"model.{node}.clip_model={model}", f"model.{node}.clip_pretrained={weights}"]
    return {"rcl": ["model.rcl.enabled=true", "model.rcl.sampling_embeddings=clip",
                    f"model.rcl.text_embeddings={folder / 'rcl.pt'}", *weights_overrides("rcl")],
            "clipmatch": ["model.clipmatch.enabled=true", f"model.clipmatch.text_embeddings={folder / 'candidates.pt'}",
                          *weights_overrides("clipmatch")],
            "probe": ["model.probe.enabled=true"], "mrc": ["model.mrc.enabled=true"]}


def logged_losses(log, name):
    """Every value of ``name`` in the host's training lines (``loss: [ rel=2.244 | loss_rcl=1.979 ]``)."""
    return [float(v) for v in re.findall(rf"\b{name}=(-?[0-9.]+|nan|inf)", log)]


def assert_trained(result, *names):
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    for name in names:
        values = logged_losses(log, name)
        assert values and all(math.isfinite(v) for v in values), f"{name} not logged finite:\n{log[-3000:]}"
    return log


@pytest.mark.parametrize("node, losses", [("rcl", ("loss_rcl",)), ("probe", ("loss_probe", "loss_probe_contrast")),
                                          ("clipmatch", ("loss_clipmatch",)), ("mrc", ("loss_mrc",))])
def test_each_objective_trains_motifs_predcls(coco_data, tmp_path, text_banks, node, losses):  # noqa: F811
    log = assert_trained(train(coco_data, tmp_path / node, *text_banks[node], "--skip-test"), *losses)
    assert f"sgg-plugins: MotifPredictor with model.{node}" in log
    if node in ("rcl", "clipmatch"):
        assert "text embeddings loaded from" in log  # no CLIP at training time
        assert "72 training relations" in log  # every relation of the COCO training split
    if node == "probe":  # supervised by each image's annotated scene graph, lent by the relation head
        assert "supervising graph = the foreground pairs" not in log


@pytest.mark.parametrize("predictor", ["MotifPredictor", "VCTreePredictor", "TransformerPredictor"])
def test_all_five_objectives_train_together_on_each_predictor(coco_data, tmp_path, text_banks, predictor):  # noqa: F811
    overrides = [override for node in ("rcl", "probe", "clipmatch", "mrc") for override in text_banks[node]]
    log = assert_trained(train(coco_data, tmp_path / "all", "model.align.enabled=true", *overrides, "--skip-test",
                               predictor=predictor),
                         "loss_align", "loss_rcl", "loss_probe", "loss_clipmatch", "loss_mrc")
    assert f"sgg-plugins: {predictor} with model.align, model.rcl, model.probe, model.clipmatch, model.mrc" in log
