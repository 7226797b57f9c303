"""Config nodes: defaults as docs/methods.md states them, and clear errors before the model is built."""

import pytest
from yacs.config import CfgNode

import fake_sgb as fake
from sgg_plugins.config import ConfigError, add_sgg_plugins_config, validate_config


def test_defaults_follow_methods_md():
    cfg = fake.make_cfg()
    a, r, p = cfg.MODEL.ALIGN, cfg.MODEL.RCL, cfg.MODEL.PROBE
    assert (a.ENABLED, a.MASK_PROB, a.WEIGHT, a.HEAD, a.LOSS, a.TARGET, a.USE_FREQ_BIAS, a.DETACH_INPUT) == (
        False, 0.1, 10.0, "untied_mlp", "kl", "original", False, True)
    assert a.KL_DIRECTION == "forward"
    assert (r.WEIGHT, r.LEVELS, r.TEMPERATURE, r.GAMMA, r.SYNONYM_THRESHOLD, r.MIN_SIMILARITY) == (
        1.0, "dual", 0.07, 0.5, 0.7, 0.0)
    assert (r.WEIGHTED_NEGATIVES, r.EMBED_DIM, r.TEXT_EMBEDDINGS, r.CLIP_MODEL, r.CLIP_PRETRAINED) == (
        True, 512, "", "ViT-B-32", "openai")
    assert r.PROMPT == "a photo of a {subject} {predicate} {object}"
    assert (p.WEIGHT, p.RANK, p.FEATURE, p.MAX_DISTANCE, p.CONTRAST_WEIGHT, p.TEMPERATURE) == (
        1.0, 128, "edge_ctx", 4, 1.0, 0.1)
    assert (p.VIEW, p.PROJECTION_DIM, r.SAMPLING_EMBEDDINGS, r.ADAPTER) == ("augment", 256, "glove", "linear")
    assert (a.MASK_UNIT, a.KL_REDUCTION, a.HEAD_HIDDEN_DIM, a.SUPERVISED_WEIGHT) == ("relation", "element", 0, 1.0)
    c, m = cfg.MODEL.CLIPMATCH, cfg.MODEL.MRC
    assert (c.ENABLED, c.WEIGHT, c.PROMPT, c.NULL_PROMPT, c.TEMPERATURE) == (
        False, 1.0, "{subject} {predicate} {object}", "null relation", 0.07)
    assert (m.ENABLED, m.WEIGHT, m.HIDDEN_DIM) == (False, 1.0, 512)
    validate_config(cfg)


def test_nodes_merge_from_opts_and_survive_clone():
    cfg = fake.make_cfg()
    cfg.merge_from_list(["MODEL.ALIGN.ENABLED", "True", "MODEL.ALIGN.MASK_PROB", "0.3"])
    clone = cfg.clone()
    assert clone.MODEL.ALIGN.ENABLED is True and clone.MODEL.ALIGN.MASK_PROB == 0.3


def test_adding_twice_keeps_user_values():
    cfg = fake.make_cfg(ALIGN_WEIGHT=3.0)
    add_sgg_plugins_config(cfg)
    assert cfg.MODEL.ALIGN.WEIGHT == 3.0


@pytest.mark.parametrize("key,value,message", [
    ("ALIGN_MASK_PROB", 1.0, "MODEL.ALIGN.MASK_PROB"),
    ("ALIGN_MASK_PROB", -0.1, "[0.0, 1.0)"),
    ("ALIGN_HEAD", "mlp", "'untied_mlp', 'untied_linear', 'tied'"),
    ("ALIGN_LOSS", "ce", "MODEL.ALIGN.LOSS"),
    ("ALIGN_KL_DIRECTION", "both", "'forward', 'reverse'"),
    ("ALIGN_WEIGHT", -1.0, "MODEL.ALIGN.WEIGHT"),
    ("RCL_LEVELS", "quad", "'dual', 'triple', 'unary'"),
    ("RCL_TEMPERATURE", 0.0, "MODEL.RCL.TEMPERATURE"),
    ("RCL_GAMMA", 1.5, "MODEL.RCL.GAMMA"),
    ("RCL_MIN_SIMILARITY", 0.9, "must not exceed"),
    ("RCL_PROMPT", "a {subject} and {object}", "{predicate}"),
    ("PROBE_RANK", 0, "MODEL.PROBE.RANK"),
    ("PROBE_FEATURE", "roi", "'edge_ctx', 'obj_ctx'"),
    ("PROBE_MAX_DISTANCE", 0, "MODEL.PROBE.MAX_DISTANCE"),
    ("PROBE_TEMPERATURE", -1.0, "MODEL.PROBE.TEMPERATURE"),
    ("ALIGN_MASK_UNIT", "row", "'element', 'relation'"),
    ("ALIGN_KL_REDUCTION", "mean", "'relation', 'element'"),
    ("ALIGN_HEAD_HIDDEN_DIM", -4, "MODEL.ALIGN.HEAD_HIDDEN_DIM"),
    ("ALIGN_SUPERVISED_WEIGHT", -1.0, "MODEL.ALIGN.SUPERVISED_WEIGHT"),
    ("RCL_SAMPLING_EMBEDDINGS", "word2vec", "'glove', 'clip'"),
    ("RCL_ADAPTER", "mlp", "'linear', 'attention'"),
    ("PROBE_VIEW", "flip", "'augment', 'mask'"),
    ("PROBE_PROJECTION_DIM", 0, "MODEL.PROBE.PROJECTION_DIM"),
    ("CLIPMATCH_PROMPT", "{subject} {object}", "MODEL.CLIPMATCH.PROMPT"),
    ("CLIPMATCH_NULL_PROMPT", " ", "MODEL.CLIPMATCH.NULL_PROMPT"),
    ("CLIPMATCH_TEMPERATURE", 0.0, "MODEL.CLIPMATCH.TEMPERATURE"),
    ("MRC_HIDDEN_DIM", 0, "MODEL.MRC.HIDDEN_DIM"),
])
def test_bad_values_name_the_key_and_the_allowed_values(key, value, message):
    with pytest.raises(ConfigError) as err:
        validate_config(fake.make_cfg(**{key: value}))
    assert message in str(err.value)


@pytest.mark.parametrize("node", ["ALIGN", "RCL", "PROBE"])
def test_unsupported_layout_is_refused_when_enabled(node):
    cfg = fake.make_cfg("MyCustomPredictor", **{f"{node}_ENABLED": True})
    cfg.MODEL.SGG_PLUGINS.PREDICTOR_LAYOUT = "NoSuchPredictor"
    with pytest.raises(ConfigError, match="PREDICTOR_LAYOUT = 'NoSuchPredictor'.*MotifPredictor"):
        validate_config(cfg)
    # A name that is not a stock one is decided from its class when the model is built.
    validate_config(fake.make_cfg("MyCustomPredictor", **{f"{node}_ENABLED": True}))


def test_stock_predictor_an_objective_does_not_support_is_refused():
    cfg = fake.make_cfg("CausalAnalysisPredictor", RCL_ENABLED=True)
    with pytest.raises(ConfigError, match="MODEL.RCL.ENABLED .*CausalAnalysisPredictor.*supported: MotifPredictor"):
        validate_config(cfg)
    cfg = fake.make_cfg("MyCopiedCausal", RCL_ENABLED=True)
    cfg.MODEL.SGG_PLUGINS.PREDICTOR_LAYOUT = "CausalAnalysisPredictor"
    with pytest.raises(ConfigError, match="'MyCopiedCausal' \\(layout CausalAnalysisPredictor\\)"):
        validate_config(cfg)


def test_explicit_align_names_are_supported():
    validate_config(fake.make_cfg("AlignMotifPredictor", ALIGN_ENABLED=True))


def test_string_for_bool_is_refused():
    cfg = fake.make_cfg()
    cfg.MODEL.ALIGN.ENABLED = "yes"
    with pytest.raises(ConfigError, match="MODEL.ALIGN.ENABLED.*True or False"):
        validate_config(cfg)


def test_nodes_use_the_hosts_cfgnode_class():
    class HostNode(CfgNode):
        pass

    cfg = HostNode()
    cfg.MODEL = HostNode()
    add_sgg_plugins_config(cfg)
    assert type(cfg.MODEL.ALIGN) is HostNode
