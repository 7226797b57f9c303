"""The SGB adapter against small predictors that follow the host's signatures (no host needed)."""

import pytest
import torch

import fake_sgb as fake
from sgg_plugins.hosts.sgb.predictors import regularized_predictor_class


def build(base, seed=0, **opts):
    torch.manual_seed(seed)
    cfg = fake.make_cfg(base.__name__, **opts)
    model = regularized_predictor_class(base)(cfg, fake.IN_CHANNELS)
    return model


def run(model, batch=None):
    proposals, pairs, labels, binarys, roi, union = batch or fake.make_batch()
    return model(proposals, pairs, labels, binarys, roi, union)


def grads_of(loss, model, inputs=()):
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(loss, list(params.values()) + list(inputs), allow_unused=True)
    named = {n: g for n, g in zip(params, grads)}
    return named, grads[len(params):]


def nonzero(grad):
    return grad is not None and grad.abs().sum() > 0


PREDICTORS = [fake.MotifPredictor, fake.VCTreePredictor, fake.TransformerPredictor, fake.IMPPredictor]


@pytest.mark.parametrize("base", PREDICTORS)
def test_eval_outputs_identical_to_host_class(base):
    torch.manual_seed(0)
    host = base(fake.make_cfg(base.__name__), fake.IN_CHANNELS)
    ours = build(base, ALIGN_ENABLED=True, PROBE_ENABLED=True)
    ours.load_state_dict(host.state_dict(), strict=False)
    host.eval(), ours.eval()
    batch = fake.make_batch()
    with torch.no_grad():
        for a, b in zip(run(host, batch)[1], run(ours, batch)[1]):
            assert torch.equal(a, b)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in ours.modules())


@pytest.mark.parametrize("base", PREDICTORS)
def test_host_parameter_names_unchanged_plugin_under_prefix(base):
    torch.manual_seed(0)
    host_keys = set(base(fake.make_cfg(base.__name__), fake.IN_CHANNELS).state_dict())
    keys = set(build(base, ALIGN_ENABLED=True, PROBE_ENABLED=True).state_dict())
    assert host_keys <= keys
    assert all(k.startswith("sgg_plugins.") for k in keys - host_keys)
    assert keys - host_keys


@pytest.mark.parametrize("base", PREDICTORS)
def test_align_gradient_reaches_context_and_untied_head_only(base):
    model = build(base, ALIGN_ENABLED=True)
    model.train()
    batch = fake.make_batch()
    _, _, losses = run(model, batch)
    loss = losses["loss_align"]
    assert torch.isfinite(loss) and loss > 0
    named, (g_roi, g_union) = grads_of(loss, model, batch[4:])
    assert g_roi is None and g_union is None, "DETACH_INPUT: no alignment gradient into input features"
    assert any(nonzero(g) for n, g in named.items() if n.startswith("sgg_plugins.align_heads"))
    assert any(nonzero(g) for n, g in named.items() if n.startswith("context_layer"))
    for path in model.spec.classifiers:
        assert not nonzero(named[path + ".weight"]), "the original head gets no alignment gradient"
    assert not any(nonzero(g) for n, g in named.items() if n.startswith("freq_bias")), "no prior in the mirror"


def test_align_without_detach_reaches_input_features():
    model = build(fake.MotifPredictor, ALIGN_ENABLED=True, ALIGN_DETACH_INPUT=False)
    batch = fake.make_batch()
    _, (g_roi, g_union) = grads_of(run(model, batch)[2]["loss_align"], model, batch[4:])
    assert nonzero(g_roi) and nonzero(g_union)


@pytest.mark.parametrize("base", [fake.MotifPredictor, fake.TransformerPredictor])
def test_unmasked_tied_mirror_with_prior_is_the_original(base):
    """p = 0, tied head, prior kept: the mirror is the original predictor and the KL is exactly zero,
    also where the host has dropout (the target then comes from the no-dropout pass)."""
    model = build(base, ALIGN_ENABLED=True, ALIGN_MASK_PROB=0.0, ALIGN_HEAD="tied", ALIGN_USE_FREQ_BIAS=True)
    assert float(run(model)[2]["loss_align"].detach()) == pytest.approx(0.0, abs=1e-6)


def test_tied_head_trains_the_original_head_and_adds_no_parameters():
    model = build(fake.MotifPredictor, ALIGN_ENABLED=True, ALIGN_HEAD="tied")
    assert not list(model.sgg_plugins.parameters())
    named, _ = grads_of(run(model)[2]["loss_align"], model)
    assert nonzero(named["rel_compress.weight"])


def test_untied_linear_head_is_a_copy_of_the_classifier():
    model = build(fake.MotifPredictor, ALIGN_ENABLED=True, ALIGN_HEAD="untied_linear")
    head = model.sgg_plugins["align_heads"]["rel_compress"]
    assert torch.equal(head.weight, model.rel_compress.weight) and head.weight is not model.rel_compress.weight


def test_supervised_alignment_uses_the_labels():
    model = build(fake.MotifPredictor, ALIGN_ENABLED=True, ALIGN_LOSS="supervised")
    batch = fake.make_batch()
    torch.manual_seed(1)
    first = run(model, batch)[2]["loss_align"]
    flipped = list(batch)
    flipped[2] = [(l + 1) % fake.NUM_REL_CLASSES for l in batch[2]]
    torch.manual_seed(1)
    assert not torch.allclose(first, run(model, flipped)[2]["loss_align"])


def test_align_weight_scales_the_logged_loss():
    batch = fake.make_batch()
    values = []
    for weight in (1.0, 10.0):
        model = build(fake.MotifPredictor, ALIGN_ENABLED=True, ALIGN_WEIGHT=weight)
        torch.manual_seed(3)
        values.append(float(run(model, batch)[2]["loss_align"].detach()))
    assert values[1] == pytest.approx(10 * values[0], rel=1e-5)


def test_extra_passes_leave_running_statistics_as_the_clean_pass_does():
    torch.manual_seed(0)
    host = fake.MotifPredictor(fake.make_cfg(), fake.IN_CHANNELS)
    ours = build(fake.MotifPredictor, ALIGN_ENABLED=True, PROBE_ENABLED=True)
    ours.load_state_dict(host.state_dict(), strict=False)
    batch = fake.make_batch()
    run(host, batch), run(ours, batch)
    bn_host, bn_ours = host.context_layer.pos_embed[1], ours.context_layer.pos_embed[1]
    assert torch.equal(bn_host.running_mean, bn_ours.running_mean)
    assert torch.equal(bn_host.running_var, bn_ours.running_var)
    assert int(bn_host.num_batches_tracked) == int(bn_ours.num_batches_tracked) == 1


def test_vctree_extra_passes_reuse_the_clean_forest(monkeypatch):
    calls = []
    original = fake.generate_forest
    monkeypatch.setattr(fake, "generate_forest", lambda s: calls.append(1) or original(s))
    model = build(fake.VCTreePredictor, ALIGN_ENABLED=True, PROBE_ENABLED=True, PROBE_FEATURE="obj_ctx")
    run(model)
    assert len(calls) == 1


def test_mirror_is_deterministic_without_dropout_given_the_mask_seed():
    model = build(fake.TransformerPredictor, ALIGN_ENABLED=True)
    batch = fake.make_batch()
    torch.manual_seed(5)
    mirror_a = model._mirror_pass(_step(model, batch))[0]
    torch.manual_seed(5)
    mirror_b = model._mirror_pass(_step(model, batch))[0]
    assert torch.equal(mirror_a, mirror_b)


def _step(model, batch):
    proposals, pairs, labels, binarys, roi, union = batch
    return dict(host_args=(proposals, pairs, labels, binarys), roi=roi, union=union, logger=None,
                forests=[], clean={}, dropped=False)


@pytest.mark.parametrize("base", PREDICTORS)
@pytest.mark.parametrize("feature", ["edge_ctx", "obj_ctx"])
def test_probe_losses_are_finite_and_train_the_context(base, feature):
    model = build(base, PROBE_ENABLED=True, PROBE_FEATURE=feature)
    losses = run(model)[2]
    assert set(losses) >= {"loss_probe", "loss_probe_contrast"}
    assert all(torch.isfinite(v) for v in losses.values())
    named, _ = grads_of(losses["loss_probe"], model)
    assert any(nonzero(g) for n, g in named.items() if n.startswith("context_layer"))
    assert any(nonzero(g) for n, g in named.items() if n.startswith("sgg_plugins.probe"))


def test_probe_shares_the_alignment_pass_for_edge_features():
    model = build(fake.MotifPredictor, ALIGN_ENABLED=True, PROBE_ENABLED=True, PROBE_FEATURE="edge_ctx")
    calls = []
    model.context_layer.register_forward_hook(lambda *a: calls.append(1))
    run(model)
    assert len(calls) == 2  # the clean pass and the mirror, no third context pass


def test_probe_without_contrast_has_no_second_view():
    model = build(fake.MotifPredictor, PROBE_ENABLED=True, PROBE_CONTRAST_WEIGHT=0.0)
    calls = []
    model.context_layer.register_forward_hook(lambda *a: calls.append(1))
    losses = run(model)[2]
    assert "loss_probe_contrast" not in losses and len(calls) == 1


def test_no_relations_in_the_foreground_gives_finite_losses():
    model = build(fake.MotifPredictor, ALIGN_ENABLED=True, PROBE_ENABLED=True)
    batch = list(fake.make_batch())
    batch[2] = [torch.zeros_like(l) for l in batch[2]]
    losses = run(model, batch)[2]
    assert all(torch.isfinite(v) for v in losses.values())


# ----------------------------------------------------------------------------- RCL


def random_bank(triplets, dim=16, seed=0):
    from sgg_plugins.text.clip_text import TextEmbeddingBank

    g = torch.Generator().manual_seed(seed)
    O, P = fake.NUM_OBJ_CLASSES - 1, fake.NUM_REL_CLASSES - 1

    def unit(*shape):
        return torch.nn.functional.normalize(torch.randn(*shape, dim, generator=g), dim=-1)

    return TextEmbeddingBank(unit(O + 1), unit(P + 1), unit(O + 1, P + 1), unit(P + 1, O + 1), triplets,
                             unit(len(triplets)))


@pytest.fixture
def rcl_statistics(monkeypatch):
    """The host's dataset statistics and the bank, as the adapter asks for them when it is built."""
    import sgg_plugins.text.clip_text as clip_text
    from sgg_plugins.hosts.sgb.predictors import RegularizedPredictorMixin

    fg_matrix = torch.ones(fake.NUM_OBJ_CLASSES, fake.NUM_OBJ_CLASSES, fake.NUM_REL_CLASSES)
    stats = {"fg_matrix": fg_matrix, "obj_classes": [f"o{i}" for i in range(fake.NUM_OBJ_CLASSES)],
             "rel_classes": [f"r{i}" for i in range(fake.NUM_REL_CLASSES)]}
    requested = {}

    def bank(obj_classes, pred_classes, triplets, **kwargs):
        requested.update(triplets=triplets, **kwargs)
        return random_bank(triplets)

    monkeypatch.setattr(RegularizedPredictorMixin, "_dataset_statistics", lambda self, config: stats)
    monkeypatch.setattr(clip_text, "load_or_compute_bank", bank)
    return requested


@pytest.mark.parametrize("base", PREDICTORS)
def test_rcl_loss_trains_adapters_and_relation_features(base, rcl_statistics):
    model = build(base, RCL_ENABLED=True, RCL_EMBED_DIM=16)
    losses = run(model)[2]
    assert torch.isfinite(losses["loss_rcl"]) and losses["loss_rcl"] > 0
    named, _ = grads_of(losses["loss_rcl"], model)
    assert any(nonzero(g) for n, g in named.items() if n.startswith("sgg_plugins.rcl"))
    assert any(nonzero(g) for n, g in named.items() if n.startswith("context_layer"))
    assert not any(nonzero(g) for n, g in named.items() if n.startswith(model.spec.classifiers[0]))


def test_rcl_bank_covers_every_training_triplet_and_the_config(rcl_statistics):
    build(fake.MotifPredictor, RCL_ENABLED=True, RCL_TEXT_EMBEDDINGS="/data/emb.pt",
          RCL_CLIP_PRETRAINED="/ckpt/clip.bin")
    triplets = rcl_statistics["triplets"]
    O, R = fake.NUM_OBJ_CLASSES, fake.NUM_REL_CLASSES
    assert len(triplets) == O * O * (R - 1) and int(triplets[:, 1].min()) == 1  # predicates are 1-based
    assert rcl_statistics["cache_path"] == "/data/emb.pt"
    assert rcl_statistics["pretrained"] == "/ckpt/clip.bin"


def test_rcl_weight_and_composition_with_align(rcl_statistics):
    model = build(fake.MotifPredictor, RCL_ENABLED=True, RCL_EMBED_DIM=16, RCL_WEIGHT=0.0,
                  ALIGN_ENABLED=True, PROBE_ENABLED=True)
    losses = run(model)[2]
    assert set(losses) == {"loss_align", "loss_rcl", "loss_probe", "loss_probe_contrast"}
    assert float(losses["loss_rcl"].detach()) == 0.0


def count_context_calls(model):
    calls = []
    model.context_layer.register_forward_hook(lambda *a: calls.append(1))
    return calls


def test_target_pass_only_where_dropout_ran():
    """Transformer's dropout runs: a no-dropout target pass is made. Dropout in a module the mode
    never calls (as SGB's SGCls decoder in PredCls) does not cost that pass."""
    transformer = build(fake.TransformerPredictor, ALIGN_ENABLED=True)
    calls = count_context_calls(transformer)
    run(transformer)
    assert len(calls) == 3  # clean, mirror, target

    motifs = build(fake.MotifPredictor, ALIGN_ENABLED=True)
    motifs.unused_decoder = torch.nn.Dropout(0.2)
    motifs._dropout_sites = [motifs.unused_decoder]
    calls = count_context_calls(motifs)
    run(motifs)
    assert len(calls) == 2  # clean and mirror only


def test_supported_predictors_in_config_match_what_the_specs_provide():
    """config.py states support without importing the host adapter; the specs must back it."""
    from sgg_plugins.config import SUPPORTED_PREDICTORS
    from sgg_plugins.hosts.sgb.specs import SPECS

    assert set(SUPPORTED_PREDICTORS["align"]) == set(SPECS)
    assert set(SUPPORTED_PREDICTORS["rcl"]) == {n for n, s in SPECS.items() if s.relation_feature and s.object_feature}
    assert set(SUPPORTED_PREDICTORS["probe"]) == {n for n, s in SPECS.items() if s.probe_features}
