"""MODEL.RCL's objective on SGB-shaped fake predictors: the kept-negative statistic is logged at the host's
logging period and never enters the loss dict; the attention adapter runs inside a real step (no host needed)."""
import logging

import pytest
import torch

import fake_sgb as fake
from sgg_plugins.hosts.sgb.objectives import rcl
from sgg_plugins.hosts.sgb.predictors import regularized_predictor_class


@pytest.fixture
def text(monkeypatch):
    """Every triplet the fake classes allow, random CLIP tables, stand-in word vectors."""
    fakes = fake.FakeText()
    monkeypatch.setattr(rcl, "training_text_sources", fakes.sources)
    monkeypatch.setattr(rcl, "load_or_compute_bank", fakes.bank)
    monkeypatch.setattr(rcl, "glove_phrases", fakes.glove_phrases)


def build(**opts):
    torch.manual_seed(0)
    cfg = fake.make_cfg("MotifPredictor", RCL_ENABLED=True, RCL_EMBED_DIM=16, **opts)
    return regularized_predictor_class(fake.MotifPredictor)(cfg, fake.IN_CHANNELS)


def test_kept_negatives_are_logged_at_the_first_step_and_every_period_never_as_a_loss(text, caplog, monkeypatch):
    monkeypatch.setattr(rcl, "LOG_PERIOD", 3)
    model = build(RCL_SYNONYM_THRESHOLD=1.0, RCL_MIN_SIMILARITY=-1.0, RCL_WEIGHTED_NEGATIVES=False)
    with caplog.at_level(logging.INFO, logger=rcl.__name__):
        losses = model(*fake.make_batch())[2]
        assert set(losses) == {"loss_rcl"}
        first = [r.getMessage() for r in caplog.records if "negatives kept per query" in r.getMessage()]
        # ε = 1, η = −1, unweighted: every other foreground relation is a negative of every query.
        stats = model.sgg_plugins.rcl.loss.last_stats
        assert len(first) == 1 and f"{float(stats['rcl_kept_negatives']):.1f} negatives kept" in first[0]
        assert "(100% of the batch's other relations) over the last 1 steps" in first[0]
        for _ in range(3):
            model(*fake.make_batch())
    logged = [r.getMessage() for r in caplog.records if "negatives kept per query" in r.getMessage()]
    assert len(logged) == 2 and "over the last 2 steps" in logged[1]  # steps 2 and 3, logged at step 3


def test_an_emptied_dictionary_is_warned_about_once(text, caplog):
    model = build(RCL_SYNONYM_THRESHOLD=-0.99, RCL_MIN_SIMILARITY=-1.0)
    with caplog.at_level(logging.INFO, logger=rcl.__name__):
        model(*fake.make_batch())
        model(*fake.make_batch())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == rcl.__name__]
    assert len(warnings) == 1 and "keeps only 0% of the other relations" in warnings[0]
    assert "SAMPLING_EMBEDDINGS glove" in warnings[0]


def test_a_learned_logit_scale_is_logged_and_a_flattened_one_warned_about_once(text, caplog, monkeypatch):
    """Under SGB's SGD at its LR the learned 1/tau fell from 14.3 to 0.3-2.1 on every bench run,
    leaving loss_rcl near log(negatives) with no gradient: the log must show the scale, and say so."""
    monkeypatch.setattr(rcl, "LOG_PERIOD", 1)
    model = build(RCL_LEARN_TEMPERATURE=True)
    with caplog.at_level(logging.INFO, logger=rcl.__name__):
        model(*fake.make_batch())
        with torch.no_grad():
            model.sgg_plugins.rcl.loss.log_logit_scale.fill_(torch.tensor(0.5).log())
        model(*fake.make_batch())
        model(*fake.make_batch())
    messages = [r.getMessage() for r in caplog.records if r.name == rcl.__name__]
    scales = [m for m in messages if "negatives kept per query" in m]
    assert "logit scale 1/tau 14.29" in scales[0] and "logit scale 1/tau 0.50" in scales[1]
    flat = [m for m in messages if "learned logit scale" in m]
    assert flat == [flat[0]] and "fallen from 14.3 to 0.50 (tau 2.00)" in flat[0]
    assert "LEARN_TEMPERATURE False" in flat[0]


def test_a_fixed_temperature_is_never_warned_about(text, caplog, monkeypatch):
    monkeypatch.setattr(rcl, "LOG_PERIOD", 1)
    model = build(RCL_LEARN_TEMPERATURE=False, RCL_TEMPERATURE=2.0)
    with caplog.at_level(logging.INFO, logger=rcl.__name__):
        model(*fake.make_batch())
    assert not [r for r in caplog.records if "learned logit scale" in r.getMessage()]


def test_attention_adapter_trains_inside_a_step(text):
    model = build(RCL_ADAPTER="attention", RCL_PLACEMENT="side")
    loss = model(*fake.make_batch())[2]["loss_rcl"]
    loss.backward()
    adapter = model.sgg_plugins.rcl.loss.rel_adapter
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adapter.attention.parameters())


def test_glove_dim_reads_its_own_width_beside_the_hosts_and_a_missing_file_is_one_config_line(
        text, tmp_path, monkeypatch):
    """MODEL.RCL.GLOVE_DIM ranks Eq. 7's negatives by glove.6B.<GLOVE_DIM>d whatever width the host's
    object embeddings use (EMBED_DIM 200 here); without the file, one ConfigError line before training."""
    from sgg_plugins.config import ConfigError
    from sgg_plugins.text import glove

    monkeypatch.setattr(rcl, "glove_phrases", glove.glove_phrases)  # the real reader, not the fixture's
    words = {name: [float(i), 1.0, -1.0] for i, name in enumerate(fake.OBJ_NAMES + fake.PRED_NAMES)}
    (tmp_path / "glove.6B.3d.txt").write_text("".join(f"{w} {' '.join(map(str, v))}\n" for w, v in words.items()))
    cfg = fake.make_cfg("MotifPredictor", RCL_ENABLED=True, RCL_EMBED_DIM=16, RCL_SAMPLING_EMBEDDINGS="glove",
                        RCL_GLOVE_DIM=3)
    cfg.GLOVE_DIR = str(tmp_path)
    model = regularized_predictor_class(fake.MotifPredictor)(cfg, fake.IN_CHANNELS)
    assert "glove.6B.3d.txt" in model.sgg_plugins.rcl.text_bank.sampling_source
    cfg.MODEL.RCL.GLOVE_DIM = 0  # the host's EMBED_DIM, 200: no such file there
    with pytest.raises(ConfigError, match=r"needs glove\.6B\.200d\.txt .* GLOVE_DIR") as error:
        regularized_predictor_class(fake.MotifPredictor)(cfg, fake.IN_CHANNELS)
    assert "\n" not in str(error.value)


def test_a_side_adapter_that_nothing_reads_is_said_once_before_training(text, caplog):
    with caplog.at_level(logging.WARNING, logger=rcl.__name__):
        build(RCL_PLACEMENT="side", RCL_DETACH_INPUT=True)
        build(RCL_PLACEMENT="side", RCL_DETACH_INPUT=False)
        build(RCL_PLACEMENT="classifier", RCL_DETACH_INPUT=True)
    said = [r.getMessage() for r in caplog.records if "nothing of the host reads" in r.getMessage()]
    assert len(said) == 1 and "PLACEMENT side with DETACH_INPUT True" in said[0]
