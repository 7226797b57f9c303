"""MODEL.RCL on the host's real predictors: where its gradient goes, and what the classifier reads.

- ``DETACH_INPUT True`` (seed 001 trains adapters on frozen CLIP encoders, "their parameters are
  fixed during training", §3.2): RCL's gradient reaches exactly RCL's own parameters, and every
  host parameter and the predictor's input features get exactly zero.
- ``PLACEMENT classifier`` (§3.4, "the learned relation feature v_ij^r is used to predict final
  relation label"): the host's classifier reads h_rel's output, so the relation loss trains h_rel;
  h_rel starts as the identity (the host's eval predictions bit for bit) and evaluation follows it
  once it moves. ``side``: evaluation is the host's whatever the adapter holds.

Each test builds a real SGB predictor in this process (conftest's ``host`` fixture: the host's
classes, the CPU overlay, a small synthetic dataset whose h5 the objective reads for its triplets);
the text tables are random and hold every triplet the class lists allow (the gradient sets do
not depend on what the texts say).
"""

import pytest
import torch
import torch.nn.functional as F

from conftest import GT_MODES as MODES
from conftest import build_predictor, in_process_cfg, make_batch, needs_sgb
from sgg_plugins.hosts.sgb.objectives import rcl
from sgg_plugins.text.bank import TextEmbeddingBank

pytestmark = needs_sgb

PREDICTORS = ["MotifPredictor", "VCTreePredictor", "TransformerPredictor", "IMPPredictor"]


@pytest.fixture
def random_text(monkeypatch):
    gen = torch.Generator().manual_seed(0)

    def unit(*shape):
        return F.normalize(torch.randn(*shape, 16, generator=gen), dim=-1)

    def bank(obj_classes, pred_classes, triplets, **kwargs):
        # Every triplet the class lists allow: the made-up batch's labels are random.
        o, p = len(obj_classes), len(pred_classes)
        grid = torch.cartesian_prod(torch.arange(1, o), torch.arange(1, p), torch.arange(1, o))
        return TextEmbeddingBank(unit(o), unit(p), unit(o, p), unit(p, o), grid, unit(len(grid)))

    monkeypatch.setattr(rcl, "load_or_compute_bank", bank)


def rcl_cfg(host, predictor, mode, *opts):
    return in_process_cfg(host, predictor, mode, "MODEL.RCL.ENABLED", True, "MODEL.RCL.SAMPLING_EMBEDDINGS", "clip",
                          "MODEL.RCL.EMBED_DIM", 32, *opts)


def rcl_parameters(predictor):
    return {n for n, _ in predictor.named_parameters() if n.startswith("sgg_plugins.rcl.")}


def nonzero_gradients(predictor, loss):
    predictor.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    return {name for name, p in predictor.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("placement", ["classifier", "side"])
@pytest.mark.parametrize("predictor_name", PREDICTORS)
def test_detached_rcl_trains_exactly_its_own_parameters(host, random_text, predictor_name, placement, mode):
    cfg = rcl_cfg(host, predictor_name, mode, "MODEL.RCL.PLACEMENT", placement, "MODEL.RCL.DETACH_INPUT", True)
    predictor = build_predictor(cfg)
    *args, roi, union = make_batch(cfg)
    losses = predictor(*args, roi, union)[2]
    assert torch.isfinite(losses["loss_rcl"]) and losses["loss_rcl"] > 0
    got = nonzero_gradients(predictor, losses["loss_rcl"])
    declared = rcl_parameters(predictor)
    assert got == declared, f"unexpected: {sorted(got - declared)}\nmissing: {sorted(declared - got)}"
    for features in (roi, union):
        assert features.grad is None or not features.grad.any()


@pytest.mark.parametrize("predictor_name", PREDICTORS)
def test_undetached_rcl_reaches_the_host_features_under_the_classifier(host, random_text, predictor_name):
    cfg = rcl_cfg(host, predictor_name, "predcls", "MODEL.RCL.DETACH_INPUT", False)
    predictor = build_predictor(cfg)
    *args, roi, union = make_batch(cfg)
    got = nonzero_gradients(predictor, predictor(*args, roi, union)[2]["loss_rcl"])
    assert rcl_parameters(predictor) <= got and got - rcl_parameters(predictor)
    assert roi.grad is not None and roi.grad.any()


def host_relation_scores(predictor, batch):
    predictor.eval()
    with torch.no_grad():
        return torch.cat(predictor(*batch)[1])


@pytest.mark.parametrize("predictor_name", PREDICTORS)
def test_classifier_placement_classifies_h_rel_output(host, random_text, predictor_name):
    cfg = rcl_cfg(host, predictor_name, "predcls", "MODEL.RCL.PLACEMENT", "classifier")
    vanilla = build_predictor(in_process_cfg(host, predictor_name, "predcls"))
    ours = build_predictor(cfg)
    missing, unexpected = ours.load_state_dict(vanilla.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("sgg_plugins.rcl.") for k in missing)
    batch = make_batch(cfg)
    assert torch.equal(host_relation_scores(vanilla, batch), host_relation_scores(ours, batch))

    ours.train()
    rel_dists = torch.cat(ours(*batch)[1])
    loss_rel = F.cross_entropy(rel_dists, torch.cat(batch[2]).long())
    assert "sgg_plugins.rcl.loss.rel_adapter.weight" in nonzero_gradients(ours, loss_rel)

    with torch.no_grad():
        ours.sgg_plugins.rcl.loss.rel_adapter.weight.mul_(0.5)
    assert not torch.equal(host_relation_scores(vanilla, batch), host_relation_scores(ours, batch))


@pytest.mark.parametrize("predictor_name", PREDICTORS)
def test_side_placement_evaluates_as_the_host(host, random_text, predictor_name):
    cfg = rcl_cfg(host, predictor_name, "predcls", "MODEL.RCL.PLACEMENT", "side")
    vanilla = build_predictor(in_process_cfg(host, predictor_name, "predcls"))
    ours = build_predictor(cfg)
    ours.load_state_dict(vanilla.state_dict(), strict=False)
    with torch.no_grad():
        ours.sgg_plugins.rcl.loss.rel_adapter.weight.normal_()
    batch = make_batch(cfg)
    assert torch.equal(host_relation_scores(vanilla, batch), host_relation_scores(ours, batch))
