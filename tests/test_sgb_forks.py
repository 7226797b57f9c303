"""SGB forks and custom predictors: a class registered under another name gets the objectives when
its layout is a stock one's (by its base class or by MODEL.SGG_PLUGINS.PREDICTOR_LAYOUT), and a
clear one-line error names what is missing when it is not; a checkout of Maelic/SGG-Benchmark,
which renamed the package, is sent to its own launcher."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import fake_sgb as fake
from sgg_plugins.config import ConfigError
from sgg_plugins.hosts.sgb.predictors import make_predictor


class ForkMotifPredictor(fake.MotifPredictor):
    """A fork's predictor: a subclass of a stock one, registered under its own name."""


class CopiedMotifs(nn.Module):
    """A copied class: the stock Motifs' attributes and forward, not a subclass of it."""

    def __init__(self, config, in_channels):
        super().__init__()
        self.context_layer = fake.LSTMContext()
        self.post_emb = nn.Linear(fake.HIDDEN, 2 * fake.HIDDEN)
        self.post_cat = nn.Linear(2 * fake.HIDDEN, fake.POOLING)
        self.rel_compress = nn.Linear(fake.POOLING, fake.NUM_REL_CLASSES)
        self.freq_bias = fake.FrequencyBias()

    pair_reps = fake.MotifPredictor.pair_reps
    forward = fake.MotifPredictor.forward


class Unrelated(nn.Module):
    def __init__(self, config, in_channels):
        super().__init__()
        self.context_layer = fake.LSTMContext()
        self.rel_compress = nn.Linear(fake.POOLING, fake.NUM_REL_CLASSES)


REGISTRY = {"MotifPredictor": fake.MotifPredictor, "ForkMotifPredictor": ForkMotifPredictor,
            "CopiedMotifs": CopiedMotifs, "Unrelated": Unrelated}


def build(name, layout="", **opts):
    cfg = fake.make_cfg(name, **opts)
    cfg.MODEL.SGG_PLUGINS.PREDICTOR_LAYOUT = layout
    torch.manual_seed(0)
    return make_predictor(REGISTRY, cfg, fake.IN_CHANNELS)


def test_subclass_under_another_name_gets_the_objectives_by_its_base():
    model = build("ForkMotifPredictor", ALIGN_ENABLED=True, PROBE_ENABLED=True)
    assert isinstance(model, ForkMotifPredictor) and model.spec_name == "MotifPredictor"
    losses = model(*fake.make_batch())[2]
    assert {"loss_align", "loss_probe"} <= set(losses) and all(torch.isfinite(v) for v in losses.values())


def test_copied_class_needs_the_layout_key_and_then_trains():
    with pytest.raises(ConfigError, match="'CopiedMotifs' .* neither a stock SGB predictor nor a subclass.*"
                                          "MODEL.SGG_PLUGINS.PREDICTOR_LAYOUT"):
        build("CopiedMotifs", ALIGN_ENABLED=True)
    model = build("CopiedMotifs", layout="MotifPredictor", ALIGN_ENABLED=True)
    assert model.spec_name == "MotifPredictor"
    assert torch.isfinite(model(*fake.make_batch())[2]["loss_align"])


def test_declared_layout_that_does_not_match_names_the_missing_modules():
    with pytest.raises(ConfigError) as error:
        build("Unrelated", layout="MotifPredictor", RCL_ENABLED=False, PROBE_ENABLED=True)
    message = str(error.value)
    assert "\n" not in message
    assert "Unrelated follows the MotifPredictor layout but has no post_emb" in message
    assert "PREDICTOR_LAYOUT" in message


def test_without_objectives_the_registered_class_is_built_as_it_is():
    assert type(build("CopiedMotifs")) is CopiedMotifs


def test_align_prefix_switches_alignment_on_and_unknown_names_get_a_suggestion():
    model = build("AlignForkMotifPredictor")
    assert isinstance(model, ForkMotifPredictor) and "align" in model.sgg_plugins
    with pytest.raises(ConfigError, match="'ForkMotifPredictr' is not a registered predictor; did you mean "
                                          "ForkMotifPredictor\\?"):
        build("ForkMotifPredictr")
    with pytest.raises(ConfigError, match="'AlignFooPredictor' is not a registered predictor"):
        build("AlignFooPredictor")


def test_sgg_benchmark_checkout_is_sent_to_its_own_launcher_in_one_line(tmp_path):
    """Maelic/SGG-Benchmark's layout given to the SGB launcher: package sgg_benchmark, the same tools/ scripts."""
    checkout = tmp_path / "SGG-Benchmark"
    (checkout / "sgg_benchmark").mkdir(parents=True)
    (checkout / "tools").mkdir()
    (checkout / "tools" / "relation_train_net.py").write_text("raise SystemExit('the host must not run')\n")
    launcher = Path(__file__).resolve().parent.parent / "tools" / "relation_train_net.py"
    env = {name: value for name, value in os.environ.items() if name != "SGB_ROOT"}
    result = subprocess.run([sys.executable, str(launcher), "--host-root", str(checkout), "--config-file", "x.yaml"],
                            capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (1, "", (
        f"error: The SGB host from --host-root is unusable: {checkout} is Maelic/SGG-Benchmark (package "
        "sgg_benchmark), a host of its own: run it with tools/sgg_benchmark_train_net.py (docs/sgg_benchmark.md; "
        "so far model.align on its MotifPredictor, issue 23); the SGB launchers run Scene-Graph-Benchmark.pytorch "
        "and forks that keep its maskrcnn_benchmark package and predictor registry.\n"))
