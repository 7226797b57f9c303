"""MODEL.ALIGN in its SGTR form, without the host: against ``fake_sgtr`` (SGTR's module layout and
call signatures), the attention-logit masks, exactly which parameters the alignment loss trains,
the dropout-free target, Table 3's supervised alignment (the host's criterion on the mirror), eval
and the host's losses untouched, and the config on SGTR's object."""

import pytest
import torch
from easydict import EasyDict

from fake_sgtr import LEVELS, FakeSGTR, align_cfg, batch
from sgg_plugins.config import ConfigError
from sgg_plugins.hosts.sgtr import plugin
from sgg_plugins.hosts.sgtr.align import attach_alignment, cross_attention_blocks, masked_cross_attention
from sgg_plugins.regularizers.align import alignment_kl, attention_logit_mask

ALIGN_KEYS = ("loss_align_predicate", "loss_align_subject", "loss_align_object")


# ----------------------------------------------------------------------------------------------
# masks


def test_mask_statistics_each_logit_independently_with_probability_p():
    g = torch.Generator().manual_seed(0)
    mask = attention_logit_mask(4, 8, 50, 100, 0.1, generator=g)
    assert mask.shape == (32, 50, 100) and mask.dtype == torch.bool
    assert abs(mask.float().mean().item() - 0.1) < 0.005  # 160,000 draws: 5 standard deviations is 0.004
    assert not torch.equal(mask[0], mask[1])  # each head of each image draws its own
    # independence: the rate of pairs of neighbouring masked logits is p^2
    both = (mask[..., 1:] & mask[..., :-1]).float().mean().item()
    assert abs(both - 0.01) < 0.002


def test_a_fully_masked_row_falls_back_to_the_padding_alone():
    padding = torch.tensor([[False, False, True, True], [False, False, False, False]])
    g = torch.Generator().manual_seed(1)
    mask = attention_logit_mask(2, 3, 200, 4, 0.6, key_padding_mask=padding, generator=g)
    blocked = mask | padding.repeat_interleave(3, dim=0)[:, None, :]
    assert not blocked.all(-1).any()  # every row keeps a key to attend to
    drawn = torch.rand((6, 200, 4), generator=torch.Generator().manual_seed(1)) < 0.6
    # image 0 has two keys: rows whose draw hit both of them are dropped; every other row is the draw
    hits_both = drawn[:3, :, 0] & drawn[:3, :, 1]
    assert hits_both.any()
    assert not mask[:3][hits_both].any()
    assert torch.equal(mask[:3][~hits_both], drawn[:3][~hits_both])
    assert torch.equal(mask[3:][~drawn[3:].all(-1)], drawn[3:][~drawn[3:].all(-1)])
    assert not attention_logit_mask(1, 1, 5, 3, 1.0).any()  # p = 1 masks every row fully: all fall back


def test_masked_attention_never_gives_nan_and_masks_reach_the_softmax():
    torch.manual_seed(0)
    model = FakeSGTR()
    blocks = cross_attention_blocks(model.relation_decoder, "structural")
    seen = []
    with masked_cross_attention(blocks, 0.9):  # the spies run after the mask hooks
        hooks = [b.register_forward_pre_hook(lambda m, a, k: seen.append(k["attn_mask"]), with_kwargs=True)
                 for b in blocks]
        model(*batch(padded_columns=3))
    for h in hooks:
        h.remove()
    assert len(blocks) == 3 * LEVELS and len(seen) == 3 * LEVELS
    assert all(torch.isfinite(b.last_attention).all() for b in blocks)
    assert all(mask.any() for mask in seen)
    for a, b in zip(seen, seen[1:]):
        assert a.shape != b.shape or not torch.equal(a, b)  # a fresh mask per block
    assert not any(b._forward_pre_hooks for b in blocks)  # removed after the block


def test_masked_logits_get_zero_attention():
    torch.manual_seed(0)
    model = FakeSGTR()
    block = model.relation_decoder.predicate_decoder.layers[0].multihead_attn
    masks = []
    with masked_cross_attention([block], 0.5):
        block.register_forward_pre_hook(lambda m, a, k: masks.append(k["attn_mask"]), with_kwargs=True)
        model(*batch())
    weights = block.last_attention.flatten(0, 1)  # batch * heads, queries, keys
    assert (weights[masks[-1]] == 0).all() and (weights[~masks[-1]] > 0).any()


# ----------------------------------------------------------------------------------------------
# the objective on the model


def _model(seed=0, **cfg):
    torch.manual_seed(seed)
    model = FakeSGTR(focal=cfg.pop("focal", True))
    model.train()
    return model, attach_alignment(model, align_cfg(**cfg))


STRUCTURAL_DECODER = ("relation_decoder.predicate_decoder.", "relation_decoder.entities_aware_decoder.",
                      "relation_decoder.rel_ent_crs_decoder_layers_sub.", "relation_decoder.rel_decoder_norm.",
                      "relation_decoder.rel_ent_crs_decoder_norm.", "relation_decoder.ent_rel_fuse_fc_")


@pytest.mark.parametrize("head", ["untied_linear", "tied"])
def test_alignment_gradient_reaches_exactly_the_structural_decoder_and_the_mirror_heads(head):
    model, _ = _model(HEAD=head)
    out = model(*batch())
    sum(out[k] for k in ALIGN_KEYS).backward()
    names = dict(model.named_parameters())
    heads = ("sgg_plugins.",) if head == "untied_linear" else (
        "rel_class_embed.", "relation_decoder.sub_class_embed.", "relation_decoder.obj_class_embed.")
    expected = {n for n in names if n.startswith(STRUCTURAL_DECODER + heads)}
    touched = {n for n, p in names.items() if p.grad is not None and p.grad.abs().sum() > 0}
    assert touched == expected
    for name, p in names.items():
        if name not in expected:
            assert p.grad is None or torch.count_nonzero(p.grad) == 0, name
    # the encoder, query generator and entity side (the decoder's inputs) get nothing
    assert {"relation_decoder.encoder.0.weight", "relation_decoder.rel_q_gen.weight",
            "entity_decoder.0.weight", "backbone.weight"}.isdisjoint(touched)


def test_without_masks_the_mirror_is_the_dropout_free_target_kl_exactly_zero():
    model, plugin = _model(MASK_PROB=0.0, HEAD="tied")
    out = model(*batch())
    assert all(out[k].item() == 0.0 for k in ALIGN_KEYS)
    # and the dropout of the host's own pass is back on afterwards
    assert all(m.training for m in model.modules())
    assert model.relation_decoder.predicate_decoder.layers[0].multihead_attn.dropout == 0.1


def test_losses_are_weighted_kls_at_the_last_layer_bernoulli_for_the_focal_predicate_classifier():
    for focal, distribution in ((True, "bernoulli"), (False, "softmax")):
        model, plugin = _model(focal=focal, WEIGHT=10.0)
        assert plugin.predicate_distribution == distribution
        captured = {}
        original = plugin._structural_decoder_pass

        def spy(record, masks):
            features = original(record, masks)
            heads = plugin.mirror_heads() if masks else plugin.original_heads()
            captured["mirror" if masks else "target"] = [head(f).detach() for head, f in zip(heads, features)]
            return features

        plugin._structural_decoder_pass = spy
        out = model(*batch())
        for i, (key, dist) in enumerate(zip(ALIGN_KEYS, (distribution, "softmax", "softmax"))):
            expected = 10.0 * alignment_kl(captured["mirror"][i], captured["target"][i], distribution=dist,
                                               reduction=plugin.reduction)
            assert torch.allclose(out[key], expected)
            assert out[key].item() > 0
        assert captured["mirror"][0].shape[-1] == model.rel_class_embed.out_features


@pytest.mark.parametrize("loss", ["kl", "supervised"])
def test_host_losses_and_eval_outputs_are_unchanged(loss):
    plain, _ = _model(seed=3, WEIGHT=10.0, LOSS=loss)
    reference = FakeSGTR()
    reference.load_state_dict({k: v for k, v in plain.state_dict().items() if not k.startswith("sgg_plugins.")})
    reference.train()
    torch.manual_seed(7)
    with_plugin = plain(*batch())
    torch.manual_seed(7)
    vanilla = reference(*batch())
    added = set(ALIGN_KEYS) if loss == "kl" else {f"loss_align_sup_{k[len('loss_'):]}" for k in vanilla
                                                  if k.startswith("loss_")}
    assert set(with_plugin) - set(vanilla) == added
    assert all(torch.equal(with_plugin[k], vanilla[k]) for k in vanilla)
    plain.eval()
    reference.eval()
    calls = []
    for block in cross_attention_blocks(plain.relation_decoder, "structural"):
        block.register_forward_pre_hook(lambda m, a, k: calls.append(k.get("attn_mask")), with_kwargs=True)
    a, b = plain(*batch()), reference(*batch())
    assert all(torch.equal(a[k], b[k]) for k in b) and set(a) == set(b)
    assert calls and all(mask is None for mask in calls)  # no mask, one pass: nothing of the plug-in ran


def test_untied_heads_take_the_loaded_weights_at_the_first_step_and_keep_their_own_after():
    model, plugin = _model()
    with torch.no_grad():  # what the host's checkpoint load does after the model is built
        model.rel_class_embed.weight.add_(1.0)
        model.sub_class_embed[0].bias.add_(2.0)
    model(*batch())
    assert torch.equal(plugin.predicate_head.weight, model.rel_class_embed.weight)
    assert torch.equal(plugin.subject_head.bias, model.sub_class_embed[-1].bias)
    assert plugin.predicate_head.weight is not model.rel_class_embed.weight
    state = model.state_dict()
    assert bool(state["sgg_plugins.heads_copied"])
    with torch.no_grad():
        plugin.object_head.weight.zero_()  # trained apart from the original: not copied again
    model(*batch())
    assert torch.count_nonzero(plugin.object_head.weight) == 0


def test_plugin_parameter_names_avoid_the_hosts_remapped_substrings():
    model, _ = _model()
    ours = [k for k in model.state_dict() if k.startswith("sgg_plugins.")]
    assert ours and not any("class_embed" in k or "bbox_embed" in k for k in ours)


@pytest.mark.parametrize("which, count", [("structural", 3 * LEVELS), ("predicate", LEVELS), ("entity", 2 * LEVELS)])
def test_masked_decoders_key_selects_the_cross_attention_blocks(which, count):
    model = FakeSGTR()
    blocks = cross_attention_blocks(model.relation_decoder, which)
    assert len(blocks) == count and len(set(map(id, blocks))) == count


# ----------------------------------------------------------------------------------------------
# LOSS supervised (Table 3 "SA"): the host's relation criterion on the mirror


# What the mirror reruns and trains under LOSS supervised besides the structural decoder and the
# class heads: the host's box and relation-vector heads, which turn its features into the boxes
# and vectors the criterion matches and regresses.
SHARED_BOX_HEADS = ("rel_vector_embed.", "relation_decoder.sub_bbox_embed.", "relation_decoder.obj_bbox_embed.")


def _criterion_calls(model):
    """Every call of the host's relation criterion: (predictions dict, targets, kwargs, losses)."""
    calls = []
    model.rel_criterion.register_forward_hook(
        lambda m, args, kwargs, out: calls.append((dict(args[0]), args[1], kwargs, out[0])), with_kwargs=True)
    return calls


def _supervised_keys(host_losses):
    return {f"loss_align_sup_{k[len('loss_'):]}": k for k in host_losses if k.startswith("loss_")}


@pytest.mark.parametrize("focal", [True, False])
def test_supervised_alignment_is_the_hosts_criterion_on_the_mirrors_predictions(focal):
    model, plugin = _model(focal=focal, LOSS="supervised", SUPERVISED_WEIGHT=2.0)
    calls = _criterion_calls(model)
    out = model(*batch())
    (host_predictions, targets, host_kwargs, host_terms), (mirror_predictions, mirror_targets, mirror_kwargs, _) = calls
    # called the way the host calls it: the same targets and entity matching, the last level only
    assert mirror_targets is targets and mirror_kwargs == host_kwargs == {"det_match_res": None}
    assert set(mirror_predictions) == set(host_predictions) and "aux_outputs" not in mirror_predictions
    # one loss per host loss term, the host's weight times SUPERVISED_WEIGHT; the metrics are left out
    keys = _supervised_keys(host_terms)
    assert set(k for k in out if k.startswith("loss_align")) == set(keys)
    assert ("loss_rel_focal" if focal else "loss_rel_ce") in keys.values()
    with torch.no_grad():
        direct, _ = model.rel_criterion({k: v.detach() for k, v in mirror_predictions.items()}, targets,
                                        det_match_res=None)
    for key, term in keys.items():
        assert torch.isfinite(out[key]) and out[key].requires_grad
        assert torch.allclose(out[key], 2.0 * model.weight_dict[term] * direct[term]), key
    # the relation decoder's predictions are the mirror's own, the entity detector's the clean pass's
    for key, value in mirror_predictions.items():
        if key in ("pred_logits", "pred_boxes"):
            assert torch.equal(value, host_predictions[key]) and not value.requires_grad
        else:
            assert not torch.allclose(value, host_predictions[key]), key


def test_supervised_alignment_without_masks_and_with_tied_heads_is_the_hosts_own_loss():
    """A hand check of the whole chain: with p = 0, tied heads and no dropout anywhere, the mirror
    is the clean pass, so each supervised term is the host's own term times SUPERVISED_WEIGHT."""
    model, plugin = _model(MASK_PROB=0.0, HEAD="tied", LOSS="supervised", SUPERVISED_WEIGHT=3.0)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(module, torch.nn.MultiheadAttention):
            module.dropout = 0.0
    out = model(*batch())
    keys = _supervised_keys(k for k in out if not k.startswith("loss_align"))
    assert len(keys) == 6 and set(keys) <= set(out)
    for key, term in keys.items():
        assert torch.allclose(out[key], 3.0 * out[term], rtol=1e-5, atol=1e-6), key


def test_supervised_alignment_runs_the_mirror_alone_and_keeps_the_criterions_state():
    model, plugin = _model(LOSS="supervised")
    passes = []
    original = plugin._structural_decoder_pass
    plugin._structural_decoder_pass = lambda record, masks: passes.append((masks, torch.is_grad_enabled())) or \
        original(record, masks)
    decoder_runs = []
    model.relation_decoder.register_forward_hook(lambda *a: decoder_runs.append(1))
    host_cache = []
    model.rel_criterion.register_forward_hook(lambda m, a, o: host_cache.append(m.entities_match_cache))
    model(*batch())
    # no target pass (no KL): the host's pass and the masked mirror with gradient, nothing else
    assert passes == [(True, True)] and len(decoder_runs) == 2
    # the host's evaluation reads the criterion's match cache: it is the host's call's again
    assert model.rel_criterion.entities_match_cache is host_cache[0] is not host_cache[1]


@pytest.mark.parametrize("head", ["untied_linear", "tied"])
def test_supervised_gradient_reaches_exactly_the_structural_decoder_and_the_heads_the_mirror_uses(head):
    model, _ = _model(HEAD=head, LOSS="supervised")
    out = model(*batch())
    sum(v for k, v in out.items() if k.startswith("loss_align")).backward()
    names = dict(model.named_parameters())
    class_heads = ("sgg_plugins.",) if head == "untied_linear" else (
        "rel_class_embed.", "relation_decoder.sub_class_embed.", "relation_decoder.obj_class_embed.")
    expected = {n for n in names if n.startswith(STRUCTURAL_DECODER + class_heads + SHARED_BOX_HEADS)}
    touched = {n for n, p in names.items() if p.grad is not None and p.grad.abs().sum() > 0}
    assert touched == expected
    for name, p in names.items():
        if name not in expected:
            assert p.grad is None or torch.count_nonzero(p.grad) == 0, name
    # the gradient stops at the decoder's inputs: encoder, query generator, entity detector
    assert {"relation_decoder.encoder.0.weight", "relation_decoder.rel_q_gen.weight", "entity_decoder.0.weight",
            "class_embed.weight", "bbox_embed.weight", "backbone.weight"}.isdisjoint(touched)


# ----------------------------------------------------------------------------------------------
# config on SGTR's config object


def _host_config():
    return EasyDict(MODEL=EasyDict(DEVICE="cpu", REL_DETR=EasyDict(NUM_QUERIES=180)))


def test_align_node_is_registered_on_the_hosts_config_with_sgtr_defaults():
    config = _host_config()
    plugin.register_config(config)
    align = config.MODEL.ALIGN
    assert align.ENABLED is False and align.MASK_PROB == 0.1 and align.WEIGHT == 10.0
    assert align.HEAD == "untied_linear" and align.MASKED_DECODERS == "structural"
    align.HEAD = "tied"
    plugin.register_config(config)  # idempotent: a value set since stays
    assert config.MODEL.ALIGN.HEAD == "tied"
    plugin.validate(config)


@pytest.mark.parametrize("key, value, message", [
    ("HEAD", "untied_mlp", "MODEL.ALIGN.HEAD = 'untied_mlp' is not available on SGTR"),
    ("LOSS", "contrastive", "MODEL.ALIGN.LOSS = 'contrastive' is not allowed"),
    ("SUPERVISED_WEIGHT", -1.0, "MODEL.ALIGN.SUPERVISED_WEIGHT = -1.0 is not allowed"),
    ("MASKED_DECODERS", "all", "MODEL.ALIGN.MASKED_DECODERS = 'all' is not allowed"),
    ("MASK_PROB", 1.5, "MODEL.ALIGN.MASK_PROB = 1.5 is not allowed"),
])
def test_bad_align_values_fail_with_one_line(key, value, message):
    config = _host_config()
    plugin.register_config(config)
    config.MODEL.ALIGN.ENABLED = True
    config.MODEL.ALIGN[key] = value
    with pytest.raises(ConfigError, match=message):
        plugin.validate(config)


def test_build_model_is_validated_then_gets_the_objective_only_when_enabled():
    import types

    built = []

    def build_model(cfg):
        built.append(cfg)
        torch.manual_seed(0)
        return FakeSGTR()

    net = types.SimpleNamespace(build_model=build_model)
    plugin.wrap_build_model(net)
    plugin.wrap_build_model(net)  # idempotent: wrapped once
    assert net.build_model.sgg_plugins_original is build_model
    config = _host_config()
    plugin.register_config(config)
    assert not hasattr(net.build_model(config), "sgg_plugins")
    config.MODEL.ALIGN.ENABLED = True
    assert hasattr(net.build_model(config), "sgg_plugins")
    config.MODEL.ALIGN.LOSS = "supervised"
    assert net.build_model(config).sgg_plugins.supervised
    config.MODEL.ALIGN.HEAD = "untied_mlp"
    with pytest.raises(ConfigError, match="MODEL.ALIGN.HEAD"):
        net.build_model(config)
    assert len(built) == 3  # the bad config never reached the host's build
