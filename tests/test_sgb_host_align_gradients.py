"""MODEL.ALIGN on the host's real predictors: the alignment gradient reaches exactly the modules
the paper names, and every other parameter gets exactly zero (seed 002 §3.1, §3.3).

Each test builds a real SGB predictor in this process (the host's classes, the small CPU overlay,
statistics of a small synthetic dataset), runs one training forward on a made-up batch, and
back-propagates ``loss_align`` alone.
"""


import pytest
import torch

from conftest import GT_MODES as MODES
from conftest import build_predictor, in_process_cfg, make_batch, needs_sgb

pytestmark = needs_sgb

PREDICTORS = ["MotifPredictor", "VCTreePredictor", "TransformerPredictor", "IMPPredictor",
              "CausalAnalysisPredictor"]


def host_cfg(host, predictor, mode, *opts):
    return in_process_cfg(host, predictor, mode, "MODEL.ALIGN.ENABLED", True, *opts)


def align_gradients(predictor, batch):
    *args, roi, union = batch
    _, _, losses = predictor(*args, roi, union)
    predictor.zero_grad(set_to_none=True)
    losses["loss_align"].backward()
    nonzero = {name for name, p in predictor.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    return losses, nonzero, roi, union


def declared_parameters(predictor):
    objective = predictor.sgg_plugins["align"]
    modules = objective.mirrored_modules(predictor)
    names = {name for name, _ in predictor.named_parameters()}
    return {n for n in names if n.startswith("sgg_plugins.align.")
            or any(n.startswith(m + ".") for m in modules)}


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("predictor_name", PREDICTORS)
@pytest.mark.parametrize("head", ["untied_mlp", "untied_linear", "tied"])
def test_alignment_gradient_reaches_exactly_the_declared_modules(host, predictor_name, mode, head):
    cfg = host_cfg(host, predictor_name, mode, "MODEL.ALIGN.HEAD", head)
    predictor = build_predictor(cfg)
    losses, nonzero, roi, union = align_gradients(predictor, make_batch(cfg))
    assert torch.isfinite(losses["loss_align"]) and losses["loss_align"] > 0
    declared = declared_parameters(predictor)
    assert nonzero == declared, (
        f"unexpected: {sorted(nonzero - declared)}\nmissing: {sorted(declared - nonzero)}")
    # The gradient stops at the input features (§3.1).
    for t in (roi, union):
        assert t.grad is None or not t.grad.any()


@pytest.mark.parametrize("head", ["untied_linear", "tied"])
def test_causal_gate_fusion_trains_the_gate_as_part_of_the_head(host, head):
    cfg = host_cfg(host, "CausalAnalysisPredictor", "predcls", "MODEL.ALIGN.HEAD", head,
                   "MODEL.ROI_RELATION_HEAD.CAUSAL.FUSION_TYPE", "gate")
    predictor = build_predictor(cfg)
    _, nonzero, *_ = align_gradients(predictor, make_batch(cfg))
    assert nonzero == declared_parameters(predictor)
    assert any(n.startswith("ctx_gate_fc.") for n in nonzero)


@pytest.mark.parametrize("head", ["untied_mlp", "tied"])
def test_prior_kept_in_the_mirror_is_not_trained_by_alignment(host, head):
    cfg = host_cfg(host, "MotifPredictor", "sgcls", "MODEL.ALIGN.USE_FREQ_BIAS", True, "MODEL.ALIGN.HEAD", head)
    predictor = build_predictor(cfg)
    _, nonzero, *_ = align_gradients(predictor, make_batch(cfg))
    assert not any(n.startswith("freq_bias") for n in nonzero)
    assert nonzero == declared_parameters(predictor)


def test_causal_gate_fusion_refuses_the_untied_mlp_in_one_line(host):
    from sgg_plugins.config import ConfigError

    cfg = host_cfg(host, "CausalAnalysisPredictor", "predcls", "MODEL.ROI_RELATION_HEAD.CAUSAL.FUSION_TYPE", "gate")
    with pytest.raises(ConfigError, match="MODEL.ALIGN.HEAD untied_mlp: .*ctx_gate_fc.*use MODEL.ALIGN.HEAD untied_linear"):
        build_predictor(cfg)


# What alignment trains on each real predictor with the default untied MLP, written out here (not
# read from the code under test): the edge context, the refinement after it, and nothing else of
# the host (README's table).
EXPECTED_MIRRORED = {
    ("MotifPredictor", "motifs"): {"context_layer.edge_ctx_rnn", "context_layer.lin_edge_h", "post_emb"},
    ("VCTreePredictor", "motifs"): {"context_layer.edge_ctx_rnn", "post_emb"},
    ("TransformerPredictor", "motifs"): {"context_layer.lin_edge", "context_layer.context_edge", "post_emb"},
    ("IMPPredictor", "motifs"): {"context_layer.obj_unary", "context_layer.edge_unary", "context_layer.edge_gru",
                                 "context_layer.node_gru", "context_layer.sub_vert_w_fc",
                                 "context_layer.obj_vert_w_fc", "context_layer.out_edge_w_fc",
                                 "context_layer.in_edge_w_fc"},
    ("CausalAnalysisPredictor", "motifs"): {"context_layer.edge_ctx_rnn", "context_layer.lin_edge_h", "post_emb"},
    ("CausalAnalysisPredictor", "vctree"): {"context_layer.edge_ctx_rnn", "post_emb"},
    # VTransE: its pair feature (head - tail) reaches ctx_compress scaled by spt_emb(box geometry).
    ("CausalAnalysisPredictor", "vtranse"): {"context_layer.fc_layer", "post_emb", "spt_emb"},
}


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("predictor_name,context", list(EXPECTED_MIRRORED))
def test_alignment_trains_the_modules_the_readme_names(host, predictor_name, context, mode):
    cfg = host_cfg(host, predictor_name, mode, "MODEL.ROI_RELATION_HEAD.CAUSAL.CONTEXT_LAYER", context)
    predictor = build_predictor(cfg)
    _, nonzero, *_ = align_gradients(predictor, make_batch(cfg))
    host_params = {n for n in nonzero if not n.startswith("sgg_plugins.")}
    expected = EXPECTED_MIRRORED[(predictor_name, context)]
    assert all(any(n.startswith(m + ".") for m in expected) for n in host_params), sorted(host_params)
    assert all(any(n.startswith(m + ".") for n in host_params) for m in expected)
    assert any(n.startswith("sgg_plugins.align.mlp.") for n in nonzero)


@pytest.mark.parametrize("unit,p", [("relation", 0.5), ("element", 0.3)])
def test_mirror_inputs_are_masked_as_eq1_says_and_the_clean_pass_is_not(host, unit, p):
    """The edge-LSTM input and the union feature the MLP reads are masked with probability p
    (whole rows or single elements), kept values unscaled; the clean pass sees them unmasked."""
    cfg = host_cfg(host, "MotifPredictor", "predcls", "MODEL.ALIGN.MASK_PROB", p, "MODEL.ALIGN.MASK_UNIT", unit)
    predictor = build_predictor(cfg)
    edge_inputs, mlp_inputs = [], []
    predictor.context_layer.edge_ctx_rnn.register_forward_pre_hook(lambda m, a: edge_inputs.append(a[0].data))
    predictor.sgg_plugins["align"].mlp[0].register_forward_pre_hook(lambda m, a: mlp_inputs.append(a[0]))
    batch = make_batch(cfg, num_objs=(40, 40))
    align_gradients(predictor, batch)
    clean, mirrored = edge_inputs
    union = batch[-1]
    mirrored_union = mlp_inputs[0][:, -union.shape[1]:]
    for kept_from, seen in ((clean, mirrored), (union, mirrored_union)):
        zero = seen == 0
        assert not (kept_from == 0).any()
        if unit == "relation":
            rows = zero.all(1)
            assert (zero.any(1) == rows).all()  # rows are kept or zeroed whole
            assert abs(rows.float().mean().item() - p) < (0.2 if len(rows) < 100 else 0.06)
        else:
            assert abs(zero.float().mean().item() - p) < 0.03
        assert torch.equal(seen[~zero], kept_from[~zero])  # no rescaling


@pytest.mark.parametrize("predictor_name", ["MotifPredictor", "VCTreePredictor", "TransformerPredictor"])
def test_object_context_gets_no_alignment_gradient_but_does_without_detach(host, predictor_name):
    """The leak issue 12 measured: the object context must be exactly zero with DETACH_INPUT and
    is reached (through the edge input) without it."""
    cfg = host_cfg(host, predictor_name, "sgcls")
    predictor = build_predictor(cfg)
    _, nonzero, *_ = align_gradients(predictor, make_batch(cfg))
    context = {n for n in nonzero if n.startswith("context_layer.obj") or n.startswith("context_layer.pos_embed")
               or n.startswith("context_layer.context_obj") or n.startswith("context_layer.decoder")}
    assert not context
    cfg = host_cfg(host, predictor_name, "sgcls", "MODEL.ALIGN.DETACH_INPUT", False)
    predictor = build_predictor(cfg)
    _, nonzero, *_ = align_gradients(predictor, make_batch(cfg))
    assert any(n.startswith("context_layer.obj_embed") or n.startswith("context_layer.lin_obj")
               for n in nonzero)


@pytest.mark.parametrize("predictor_name", ["MotifPredictor", "VCTreePredictor", "CausalAnalysisPredictor"])
def test_mirror_reuses_the_clean_object_context(host, predictor_name, monkeypatch):
    """One object-context pass and one forest per step: the mirror reruns the edge context only."""
    import sys

    cfg = host_cfg(host, predictor_name, "sgcls")
    predictor = build_predictor(cfg)
    context = predictor.context_layer
    calls = {"obj_ctx": 0, "edge_ctx": 0, "forest": 0}
    for name in ("obj_ctx", "edge_ctx"):
        original = getattr(context, name)

        def counted(*a, _name=name, _original=original, **k):
            calls[_name] += 1
            return _original(*a, **k)

        monkeypatch.setattr(context, name, counted)
    module = sys.modules[type(context).__module__]
    if hasattr(module, "generate_forest"):
        build = module.generate_forest

        def counted_forest(*a, **k):
            calls["forest"] += 1
            return build(*a, **k)

        monkeypatch.setattr(module, "generate_forest", counted_forest)
    align_gradients(predictor, make_batch(cfg))
    assert calls["obj_ctx"] == 1
    assert calls["edge_ctx"] == 2  # clean + mirror; no target pass: no dropout ran in the mirrored part
    assert calls["forest"] == (1 if hasattr(module, "generate_forest") else 0)


def test_transformer_target_pass_reruns_only_the_edge_encoder_without_dropout(host, monkeypatch):
    cfg = host_cfg(host, "TransformerPredictor", "predcls")
    predictor = build_predictor(cfg)
    calls = {"context_obj": 0, "context_edge": 0}
    for name in calls:
        module = getattr(predictor.context_layer, name)
        module.register_forward_pre_hook(lambda *_a, _n=name: calls.__setitem__(_n, calls[_n] + 1))
    align_gradients(predictor, make_batch(cfg))
    assert calls == {"context_obj": 1, "context_edge": 3}  # clean, mirror, no-dropout target


def test_eval_outputs_unchanged_and_plugin_parameters_under_prefix(host):
    from maskrcnn_benchmark.modeling.roi_heads.relation_head.roi_relation_predictors import MotifPredictor

    cfg = host_cfg(host, "MotifPredictor", "predcls")
    predictor = build_predictor(cfg, seed=1)
    torch.manual_seed(1)
    vanilla = MotifPredictor(cfg, cfg.MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM)
    vanilla.load_state_dict(predictor.state_dict(), strict=False)
    host_names = {n for n, _ in vanilla.named_parameters()}
    assert {n for n, _ in predictor.named_parameters()} - host_names == {
        n for n, _ in predictor.named_parameters() if n.startswith("sgg_plugins.align.")}
    *args, roi, union = make_batch(cfg)
    predictor.eval(), vanilla.eval()
    with torch.no_grad():
        a = predictor(*args, roi, union)
        b = vanilla(*args, roi, union)
    for x, y in zip(a[1], b[1]):
        assert torch.equal(x, y)


def test_untied_mlp_width_and_inputs(host):
    cfg = host_cfg(host, "MotifPredictor", "predcls")
    predictor = build_predictor(cfg)
    mlp = predictor.sgg_plugins["align"].mlp
    hidden = cfg.MODEL.ROI_RELATION_HEAD.CONTEXT_HIDDEN_DIM
    union = cfg.MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM
    linears = [m for m in mlp if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (2 * hidden + union, 2 * hidden), (2 * hidden, 2 * hidden), (2 * hidden, cfg.MODEL.ROI_RELATION_HEAD.NUM_CLASSES)]
    cfg = host_cfg(host, "MotifPredictor", "predcls", "MODEL.ALIGN.HEAD_HIDDEN_DIM", 32)
    assert build_predictor(cfg).sgg_plugins["align"].mlp[0].out_features == 32


def test_fork_predictor_registered_under_its_own_name_gets_alignment(host):
    """A fork's subclass of the host's MotifPredictor, registered in the host's registry under a
    new name, is built with alignment through the relation head's own factory call."""
    from maskrcnn_benchmark.modeling import registry
    from maskrcnn_benchmark.modeling.roi_heads.relation_head import relation_head
    from maskrcnn_benchmark.modeling.roi_heads.relation_head.roi_relation_predictors import MotifPredictor

    if "ForkMotifPredictor" not in registry.ROI_RELATION_PREDICTOR:
        registry.ROI_RELATION_PREDICTOR.register("ForkMotifPredictor", type("ForkMotifPredictor", (MotifPredictor,), {}))
    cfg = host_cfg(host, "ForkMotifPredictor", "predcls")
    torch.manual_seed(0)
    predictor = relation_head.make_roi_relation_predictor(cfg, cfg.MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM).train()
    assert type(predictor).__mro__[2].__name__ == "ForkMotifPredictor" and predictor.spec_name == "MotifPredictor"
    _, nonzero, *_ = align_gradients(predictor, make_batch(cfg))
    assert nonzero == declared_parameters(predictor)
