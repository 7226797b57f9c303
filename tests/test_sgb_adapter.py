"""The SGB adapter against small predictors that follow the host's signatures (no host needed)."""

import pytest
import torch

import fake_sgb as fake
from sgg_plugins.hosts.sgb.predictors import regularized_predictor_class
from sgg_plugins.text.glove import WordVectorPhrases


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


def declared(model):
    """Parameter names the alignment mirror declares it trains (host modules + its own head)."""
    modules = model.sgg_plugins["align"].mirrored_modules(model)
    return {n for n, _ in model.named_parameters()
            if n.startswith("sgg_plugins.align.") or any(n.startswith(m + ".") for m in modules)}


@pytest.mark.parametrize("head", ["untied_mlp", "untied_linear", "tied"])
@pytest.mark.parametrize("base", PREDICTORS)
def test_align_gradient_reaches_exactly_the_declared_modules(base, head):
    """Seed 002 §3.1: "the alignment loss only affects the message passing and feature refinement
    in the relation predictor": every parameter outside the declared set gets exactly zero."""
    model = build(base, ALIGN_ENABLED=True, ALIGN_HEAD=head)
    batch = fake.make_batch()
    loss = run(model, batch)[2]["loss_align"]
    assert torch.isfinite(loss) and loss > 0
    named, (g_roi, g_union) = grads_of(loss, model, batch[4:])
    got = {n for n, g in named.items() if nonzero(g)}
    assert got == declared(model), f"extra {sorted(got - declared(model))}, missing {sorted(declared(model) - got)}"
    assert not nonzero(g_roi) and not nonzero(g_union), "DETACH_INPUT: no alignment gradient into input features"


def test_motifs_declared_modules_are_the_edge_context_and_post_emb():
    model = build(fake.MotifPredictor, ALIGN_ENABLED=True)
    assert model.sgg_plugins["align"].mirrored_modules(model) == (
        "context_layer.edge_ctx_rnn", "context_layer.lin_edge_h", "post_emb")
    tied = build(fake.MotifPredictor, ALIGN_ENABLED=True, ALIGN_HEAD="tied")
    assert tied.sgg_plugins["align"].mirrored_modules(tied)[-2:] == ("post_cat", "rel_compress")


def test_align_without_detach_reaches_object_context_and_input_features():
    model = build(fake.MotifPredictor, ALIGN_ENABLED=True, ALIGN_DETACH_INPUT=False)
    batch = fake.make_batch()
    named, (g_roi, g_union) = grads_of(run(model, batch)[2]["loss_align"], model, batch[4:])
    assert nonzero(g_roi) and nonzero(g_union)
    assert nonzero(named["context_layer.obj_ctx_rnn.weight_ih_l0"])


def test_mirror_reuses_the_clean_object_context(monkeypatch):
    model = build(fake.MotifPredictor, ALIGN_ENABLED=True)
    calls = {"obj_ctx": 0, "edge_ctx": 0}
    for name in calls:
        original = getattr(model.context_layer, name)
        monkeypatch.setattr(model.context_layer, name,
                            lambda *a, _n=name, _o=original, **k: calls.__setitem__(_n, calls[_n] + 1) or _o(*a, **k))
    run(model)
    assert calls == {"obj_ctx": 1, "edge_ctx": 2}


@pytest.mark.parametrize("base", [fake.MotifPredictor, fake.TransformerPredictor])
def test_unmasked_tied_mirror_with_prior_is_the_original(base):
    """p = 0, tied head, prior kept: the mirror is the original predictor and the KL is exactly zero,
    also where the host has dropout (the target then comes from the no-dropout pass)."""
    model = build(base, ALIGN_ENABLED=True, ALIGN_MASK_PROB=0.0, ALIGN_HEAD="tied", ALIGN_USE_FREQ_BIAS=True)
    assert float(run(model)[2]["loss_align"].detach()) == pytest.approx(0.0, abs=1e-6)


def test_tied_head_adds_no_parameters():
    model = build(fake.MotifPredictor, ALIGN_ENABLED=True, ALIGN_HEAD="tied")
    assert not list(model.sgg_plugins.parameters())


def test_untied_linear_head_is_a_copy_of_the_classifier():
    model = build(fake.MotifPredictor, ALIGN_ENABLED=True, ALIGN_HEAD="untied_linear")
    head = model.sgg_plugins["align"].linear["rel_compress"]
    assert torch.equal(head.weight, model.rel_compress.weight) and head.weight is not model.rel_compress.weight


def test_untied_mlp_replaces_the_last_two_layers_fed_pair_and_relation_features():
    """§3.3: "the pairwise combined object features and the masked relation features are fed to
    the MLP": its input is post_cat's input (2h) and the union feature (the box head's width)."""
    model = build(fake.TransformerPredictor, ALIGN_ENABLED=True, ALIGN_HEAD_HIDDEN_DIM=7)
    mlp = model.sgg_plugins["align"].mlp
    assert [(m.in_features, m.out_features) for m in mlp if isinstance(m, torch.nn.Linear)] == [
        (2 * fake.HIDDEN + fake.POOLING, 7), (7, 7), (7, fake.NUM_REL_CLASSES)]
    named, _ = grads_of(run(model)[2]["loss_align"], model)
    for layer in ("post_cat", "rel_compress", "ctx_compress"):  # both parallel last layers replaced
        assert not nonzero(named[layer + ".weight"]), layer


def test_supervised_alignment_is_the_cross_entropy_at_its_own_weight():
    batch = fake.make_batch()
    values = []
    for weight in (10.0, 1.0):
        model = build(fake.MotifPredictor, ALIGN_ENABLED=True, ALIGN_LOSS="supervised", ALIGN_WEIGHT=weight,
                      ALIGN_SUPERVISED_WEIGHT=2.0)
        torch.manual_seed(1)
        values.append(float(run(model, batch)[2]["loss_align"].detach()))
    assert values[0] == pytest.approx(values[1])  # λ (WEIGHT) does not scale the supervised loss
    flipped = list(batch)
    flipped[2] = [(l + 1) % fake.NUM_REL_CLASSES for l in batch[2]]
    torch.manual_seed(1)
    assert float(run(model, flipped)[2]["loss_align"].detach()) != pytest.approx(values[1])


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
    from sgg_plugins.text.bank import TextEmbeddingBank

    g = torch.Generator().manual_seed(seed)
    O, P = fake.NUM_OBJ_CLASSES - 1, fake.NUM_REL_CLASSES - 1

    def unit(*shape):
        return torch.nn.functional.normalize(torch.randn(*shape, dim, generator=g), dim=-1)

    return TextEmbeddingBank(unit(O + 1), unit(P + 1), unit(O + 1, P + 1), unit(P + 1, O + 1), triplets,
                             unit(len(triplets)))


@pytest.fixture
def rcl_statistics(monkeypatch):
    """The host's dataset statistics and the bank, as the adapter asks for them when it is built."""
    from sgg_plugins.hosts.sgb.objectives import rcl

    fg_matrix = torch.ones(fake.NUM_OBJ_CLASSES, fake.NUM_OBJ_CLASSES, fake.NUM_REL_CLASSES)
    stats = {"fg_matrix": fg_matrix, "obj_classes": [f"o{i}" for i in range(fake.NUM_OBJ_CLASSES)],
             "rel_classes": [f"r{i}" for i in range(fake.NUM_REL_CLASSES)]}
    requested = {}

    def bank(obj_classes, pred_classes, triplets, **kwargs):
        requested.update(triplets=triplets, **kwargs)
        return random_bank(triplets)

    # The triplets of the training dataset file (here every one fg_matrix allows), and word vectors
    # standing in for GloVe (every word missing: fixed random vectors).
    triplets = torch.nonzero(fg_matrix[:, :, 1:] > 0)[:, [0, 2, 1]] + torch.tensor([0, 1, 0])
    monkeypatch.setattr(rcl, "training_text_sources",
                        lambda config: (stats["obj_classes"], stats["rel_classes"], triplets))
    monkeypatch.setattr(rcl, "glove_phrases",
                        lambda obj, pred, glove_dir, dim: WordVectorPhrases.from_classes(obj, pred, {}, dim))
    monkeypatch.setattr(rcl, "load_or_compute_bank", bank)
    return requested


def rcl_parameters(model):
    return {n for n, _ in model.named_parameters() if n.startswith("sgg_plugins.rcl.")}


@pytest.mark.parametrize("placement", ["classifier", "side"])
@pytest.mark.parametrize("base", PREDICTORS)
def test_rcl_detached_trains_exactly_its_own_parameters(base, placement, rcl_statistics):
    """DETACH_INPUT (seed 001's frozen encoders): RCL's gradient reaches every parameter of RCL's
    adapters, W matrices and logit scale, and every other parameter gets exactly zero, as do the
    predictor's input features."""
    model = build(base, RCL_ENABLED=True, RCL_EMBED_DIM=16, RCL_PLACEMENT=placement, RCL_DETACH_INPUT=True)
    batch = fake.make_batch()
    loss = run(model, batch)[2]["loss_rcl"]
    assert torch.isfinite(loss) and loss > 0
    named, inputs = grads_of(loss, model, batch[4:])
    got = {n for n, g in named.items() if nonzero(g)}
    assert got == rcl_parameters(model), f"extra {sorted(got - rcl_parameters(model))}"
    assert not any(nonzero(g) for g in inputs)


@pytest.mark.parametrize("placement", ["classifier", "side"])
@pytest.mark.parametrize("base", PREDICTORS)
def test_rcl_undetached_also_trains_the_features_under_the_classifier(base, placement, rcl_statistics):
    model = build(base, RCL_ENABLED=True, RCL_EMBED_DIM=16, RCL_PLACEMENT=placement, RCL_DETACH_INPUT=False)
    loss = run(model)[2]["loss_rcl"]
    named, _ = grads_of(loss, model)
    assert all(nonzero(named[n]) for n in rcl_parameters(model))
    assert any(nonzero(g) for n, g in named.items() if n.startswith("context_layer"))
    assert not any(nonzero(g) for n, g in named.items() if n.startswith(model.spec.relation_feature))


@pytest.mark.parametrize("base", PREDICTORS)
def test_rcl_classifier_placement_classifies_h_rel_output_in_training_and_eval(base, rcl_statistics):
    """Seed 001 §3.4: "the learned relation feature v_ij^r is used to predict final relation label".
    h_rel starts as the identity (the host's predictions, bit for bit); loss_rel's gradient reaches
    it; once it moves, evaluation changes with it."""
    torch.manual_seed(0)
    host = base(fake.make_cfg(base.__name__), fake.IN_CHANNELS)
    ours = build(base, RCL_ENABLED=True, RCL_EMBED_DIM=16, RCL_PLACEMENT="classifier")
    ours.load_state_dict(host.state_dict(), strict=False)
    batch = fake.make_batch()
    host.eval(), ours.eval()
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(run(host, batch)[1], run(ours, batch)[1]))
    ours.train()
    rel_dists = torch.cat(run(ours, batch)[1])
    labels = torch.cat(batch[2])
    loss_rel = torch.nn.functional.cross_entropy(rel_dists, labels)
    named, _ = grads_of(loss_rel, ours)
    h_rel = ours.sgg_plugins.rcl.loss.rel_adapter
    assert nonzero(named["sgg_plugins.rcl.loss.rel_adapter.weight"])
    with torch.no_grad():
        h_rel.weight.mul_(0.5)
    ours.eval()
    with torch.no_grad():
        assert not all(torch.equal(a, b) for a, b in zip(run(host, batch)[1], run(ours, batch)[1]))


@pytest.mark.parametrize("base", PREDICTORS)
def test_rcl_side_placement_leaves_eval_bit_identical_to_the_host(base, rcl_statistics):
    torch.manual_seed(0)
    host = base(fake.make_cfg(base.__name__), fake.IN_CHANNELS)
    ours = build(base, RCL_ENABLED=True, RCL_EMBED_DIM=16, RCL_PLACEMENT="side")
    ours.load_state_dict(host.state_dict(), strict=False)
    with torch.no_grad():  # an adapter that is not the identity must not matter in eval
        ours.sgg_plugins.rcl.loss.rel_adapter.weight.normal_()
    batch = fake.make_batch()
    host.eval(), ours.eval()
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(run(host, batch)[1], run(ours, batch)[1]))
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in ours.modules())


def test_rcl_learned_temperature_is_a_parameter_clipped_like_clips(rcl_statistics):
    learned = build(fake.MotifPredictor, RCL_ENABLED=True, RCL_EMBED_DIM=16, RCL_LEARN_TEMPERATURE=True)
    fixed = build(fake.MotifPredictor, RCL_ENABLED=True, RCL_EMBED_DIM=16, RCL_LEARN_TEMPERATURE=False,
                  RCL_TEMPERATURE=0.2)
    loss = learned.sgg_plugins.rcl.loss
    assert "sgg_plugins.rcl.loss.log_logit_scale" in dict(learned.named_parameters())
    assert float(loss.logit_scale.detach()) == pytest.approx(1 / 0.07)
    named, _ = grads_of(run(learned)[2]["loss_rcl"], learned)
    assert nonzero(named["sgg_plugins.rcl.loss.log_logit_scale"])
    with torch.no_grad():
        loss.log_logit_scale.fill_(10.0)
    assert float(loss.logit_scale) == 100.0
    assert "sgg_plugins.rcl.loss.log_logit_scale" not in fixed.state_dict()  # a fixed τ adds no key
    assert float(fixed.sgg_plugins.rcl.loss.logit_scale) == pytest.approx(5.0)


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


def test_target_pass_only_where_dropout_ran_in_the_mirrored_part():
    """Transformer's edge encoder drops: a no-dropout target pass of that part is made. Dropout
    that ran only in the object context (reused, not rerun) does not cost that pass."""
    transformer = build(fake.TransformerPredictor, ALIGN_ENABLED=True)
    edge_calls = []
    transformer.context_layer.context_edge.register_forward_hook(lambda *a: edge_calls.append(1))
    run(transformer)
    assert len(edge_calls) == 3  # clean, mirror, target

    transformer.context_layer.context_edge.layer[1].p = 0.0  # dropout only in the object encoder
    transformer._dropout_sites = [transformer.context_layer.context_obj.layer[1]]
    edge_calls.clear()
    run(transformer)
    assert len(edge_calls) == 2  # clean and mirror only


def test_supported_predictors_in_config_match_what_the_specs_provide():
    """config.py states support without importing the host adapter; the specs must back it."""
    from sgg_plugins.config import SUPPORTED_PREDICTORS
    from sgg_plugins.hosts.sgb.specs import SPECS

    assert set(SUPPORTED_PREDICTORS["align"]) == set(SPECS)
    assert set(SUPPORTED_PREDICTORS["rcl"]) == {n for n, s in SPECS.items() if s.relation_feature and s.object_feature}
    assert set(SUPPORTED_PREDICTORS["probe"]) == {n for n, s in SPECS.items() if s.probe_features}


@pytest.mark.parametrize("base", PREDICTORS)
def test_every_loss_exists_and_is_graph_connected_without_foreground(base, rcl_statistics):
    """A rank whose batch has no foreground relation still forms every plug-in loss, connected to
    every plug-in parameter, so that DDP ranks agree on keys and on which parameters get
    gradients (a missing key or an unused parameter on one rank makes the others wait)."""
    model = build(base, ALIGN_ENABLED=True, RCL_ENABLED=True, RCL_EMBED_DIM=16, PROBE_ENABLED=True)
    batch = list(fake.make_batch())
    batch[2] = [torch.zeros_like(l) for l in batch[2]]
    losses = run(model, batch)[2]
    assert set(losses) == {"loss_align", "loss_rcl", "loss_probe", "loss_probe_contrast"}
    assert all(torch.isfinite(v) and v.requires_grad for v in losses.values())
    plugin = dict(model.sgg_plugins.named_parameters())
    grads = torch.autograd.grad(sum(losses.values()), list(plugin.values()), allow_unused=True)
    assert [n for n, g in zip(plugin, grads) if g is None] == []


@pytest.mark.parametrize("head", ["untied_mlp", "tied"])
def test_prior_kept_in_the_mirror_is_a_fixed_input(head):
    model = build(fake.MotifPredictor, ALIGN_ENABLED=True, ALIGN_USE_FREQ_BIAS=True, ALIGN_HEAD=head)
    named, _ = grads_of(run(model)[2]["loss_align"], model)
    assert {n for n, g in named.items() if nonzero(g)} == declared(model)
    assert not nonzero(named["freq_bias.obj_baseline.weight"])


class FakeRelationHead(torch.nn.Module):
    """What ROIRelationHead holds that the predictor is not passed: cfg, the box extractor."""

    def __init__(self, gt_box=True):
        super().__init__()
        from yacs.config import CfgNode

        self.cfg = CfgNode({"MODEL": {"ATTRIBUTE_ON": False, "ROI_RELATION_HEAD": {"USE_GT_BOX": gt_box}}})
        self.box_feature_extractor = torch.nn.Module()
        self.box_feature_extractor.pooler = torch.nn.Identity()
        self.box_feature_extractor.forward_without_pool = lambda x: x.flatten(1)


class FakeTarget:
    def __init__(self, relation):
        self.relation = relation

    def get_field(self, name):
        assert name == "relation"
        return self.relation


@pytest.mark.parametrize("gt_box", [True, False])
def test_relation_head_lends_the_full_graph_and_pooled_maps_for_one_forward(gt_box):
    model = build(fake.MotifPredictor, PROBE_ENABLED=True)
    seen = {}
    original = model.sgg_plugins["probe"].losses
    model.sgg_plugins["probe"].losses = lambda step: seen.update(step.shared) or original(step)
    head = FakeRelationHead(gt_box)
    maps = [torch.zeros(4, 4, dtype=torch.long), torch.ones(3, 3, dtype=torch.long)]
    with model.relation_head_inputs(head, [FakeTarget(m) for m in maps]):
        pooled = head.box_feature_extractor.pooler(torch.randn(7, 3, 2, 2))  # flattens to IN_CHANNELS
        run(model)
    assert ("sgb_relation_maps" in seen) == gt_box  # SGDet's proposals are not the targets' boxes
    if gt_box:
        assert all(a is b for a, b in zip(seen["sgb_relation_maps"], maps))
    assert seen["sgb_pooled_rois"] is pooled and seen["sgb_box_head"] == head.box_feature_extractor.forward_without_pool
    assert not head.box_feature_extractor.pooler._forward_hooks and model._relation_head_inputs == {}
