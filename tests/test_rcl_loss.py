"""Relational contrastive loss (seed 001): hand computations, sampling, levels, gradients, edge cases."""
import logging
import math
import types

import pytest
import torch
import torch.nn.functional as F

from sgg_plugins.config import RCL_DEFAULTS
from sgg_plugins.regularizers.rcl import RelationalContrastiveLoss, contrastive_loss, negative_log_weights
from sgg_plugins.text.bank import TextEmbeddingBank

NUM_OBJ, NUM_PRED, TEXT_DIM = 5, 4, 6


def random_bank(triplets, seed=0, text_dim=TEXT_DIM, requires_grad=False, predicates=None):
    """A bank of random unit vectors over NUM_OBJ objects and NUM_PRED predicates; also returns its sources."""
    gen = torch.Generator().manual_seed(seed)

    def unit(*shape):
        table = F.normalize(torch.randn(*shape, text_dim, generator=gen), dim=-1)
        return table.requires_grad_(requires_grad)

    triplets = torch.tensor(triplets)
    sources = dict(objects=unit(NUM_OBJ + 1), predicates=unit(NUM_PRED + 1),
                   subject_predicate=unit(NUM_OBJ + 1, NUM_PRED + 1), predicate_object=unit(NUM_PRED + 1, NUM_OBJ + 1),
                   triplets=unit(len(triplets)))
    if predicates is not None:
        sources["predicates"] = predicates
    bank = TextEmbeddingBank(sources["objects"], sources["predicates"], sources["subject_predicate"],
                             sources["predicate_object"], triplets, sources["triplets"])
    return bank, sources


def hand_rcl(visual, text, similarity, tau, gamma, eps, eta, weighted):
    """Eq. 4-5 with the dictionary of Eq. 7, written out with explicit exp and log over python floats."""
    n = len(visual)

    def cos(a, b):
        return float(a @ b) / (float(a.norm()) * float(b.norm()))

    total = 0.0
    for k in range(n):
        members = [q for q in range(n) if q != k and eta <= similarity[k][q] <= eps]
        scores = {q: max(similarity[k][q], 0.0) for q in members}
        mean = sum(scores.values()) / len(members) if members else 0.0
        weight = {q: (scores[q] / mean if (weighted and mean > 0) else 1.0) for q in members}
        positive = math.exp(cos(visual[k], text[k]) / tau)
        denom_v2t = positive + sum(weight[q] * math.exp(cos(visual[k], text[q]) / tau) for q in members)
        denom_t2v = positive + sum(weight[q] * math.exp(cos(text[k], visual[q]) / tau) for q in members)
        total += gamma * -math.log(positive / denom_v2t) + (1 - gamma) * -math.log(positive / denom_t2v)
    return total / n


def test_contrastive_loss_matches_hand_computation():
    torch.manual_seed(0)
    visual, text = torch.randn(4, 3), torch.randn(4, 3)
    similarity = torch.tensor([[1.0, 0.9, 0.2, 0.5],
                               [0.9, 1.0, 0.6, -0.3],
                               [0.2, 0.6, 1.0, 0.1],
                               [0.5, -0.3, 0.1, 1.0]])
    tau, gamma = 0.1, 0.3
    # ε = 1 keeps synonyms (Table 5 'No Del. Syn.'); a relation is still never its own negative.
    for weighted, eps in ((True, 0.7), (False, 0.7), (True, 1.0)):
        logits = F.normalize(visual, dim=-1) @ F.normalize(text, dim=-1).t() / tau
        log_weights = negative_log_weights(similarity, None, synonym_threshold=eps, min_similarity=0.0,
                                           weighted=weighted)
        got = contrastive_loss(logits, log_weights, gamma)
        want = hand_rcl(visual, text, similarity.tolist(), tau, gamma, eps=eps, eta=0.0, weighted=weighted)
        assert got.item() == pytest.approx(want, rel=1e-5)


def test_negative_weights_exclude_synonyms_and_follow_similarities():
    similarity = torch.tensor([[1.0, 0.9, 0.2, 0.6, -0.1],
                               [0.9, 1.0, 0.3, 0.7, 0.4],
                               [0.2, 0.3, 1.0, 0.71, 0.0],
                               [0.6, 0.7, 0.71, 1.0, 0.5],
                               [-0.1, 0.4, 0.0, 0.5, 1.0]])
    weights = negative_log_weights(similarity, None, synonym_threshold=0.7, min_similarity=0.0).exp()
    assert torch.equal(weights.diagonal(), torch.ones(5))
    # Above ε (synonyms) or below η: exactly 0, never a negative.
    assert weights[0, 1] == 0 and weights[1, 0] == 0 and weights[2, 3] == 0 and weights[0, 4] == 0
    assert weights[1, 3] > 0  # ε itself is inside the dictionary
    # Row 0: Q = {2, 3} with similarities 0.2 and 0.6 -> weights proportional, averaging 1.
    assert weights[0, 2].item() == pytest.approx(0.2 / 0.4)
    assert weights[0, 3].item() == pytest.approx(0.6 / 0.4)
    # Row 2: Q = {0, 1, 4}; similarity 0 gets weight 0, the others share a mean of 1 over 3 members.
    assert weights[2, 4] == 0
    assert weights[2, 0].item() == pytest.approx(3 * 0.2 / 0.5)
    assert weights[2, 1].item() == pytest.approx(3 * 0.3 / 0.5)
    unweighted = negative_log_weights(similarity, None, synonym_threshold=0.7, weighted=False).exp()
    member = (similarity >= 0) & (similarity <= 0.7) & ~torch.eye(5, dtype=torch.bool)
    assert torch.equal(unweighted, member.float() + torch.eye(5))


def test_weights_from_unique_texts_equal_weights_per_relation():
    torch.manual_seed(1)
    unique = F.normalize(torch.randn(4, 3), dim=-1)
    inverse = torch.tensor([0, 2, 1, 0, 3, 2, 2])
    per_relation = unique[inverse] @ unique[inverse].t()
    for weighted, eps in ((True, 0.7), (False, 0.7), (True, 1.5)):  # ε > 1 keeps identical texts as negatives
        grouped = negative_log_weights(unique @ unique.t(), inverse, synonym_threshold=eps, min_similarity=-1.0,
                                       weighted=weighted)
        direct = negative_log_weights(per_relation, None, synonym_threshold=eps, min_similarity=-1.0,
                                      weighted=weighted)
        assert torch.allclose(grouped.exp(), direct.exp(), atol=1e-6)


# A batch with a repeated triplet (rows 0 and 3) and background relations (pred 0).
TRIPLETS = [[1, 1, 2], [2, 3, 1], [3, 2, 4], [4, 4, 5], [1, 3, 5], [5, 1, 3]]
SUBJ = torch.tensor([1, 2, 3, 1, 4, 2, 1, 5])
PRED = torch.tensor([1, 3, 2, 1, 4, 0, 3, 1])
OBJ = torch.tensor([2, 1, 4, 2, 5, 3, 5, 3])


def features(n=8, rel_dim=7, obj_dim=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(n, d, generator=gen).requires_grad_() for d in (rel_dim, obj_dim, obj_dim)]


def expected_embeddings(module, level, rel_feats, subj_feats, obj_feats, bank, rows):
    """The visual / text / sampling embeddings of each level, per relation, straight from the paper's formulas."""
    s, p, o = SUBJ[rows], PRED[rows], OBJ[rows]
    v_r = module.rel_adapter(rel_feats[rows])
    v_s, v_o = module.obj_adapter(subj_feats[rows]), module.obj_adapter(obj_feats[rows])
    t_r, found = bank.triplets(s, p, o)
    assert found.all()
    t_s, t_o, t_p = bank.objects(s), bank.objects(o), bank.predicates(p)
    def unit(x):
        return F.normalize(x, dim=-1)

    if level == "dual":  # Eq. 2, 3, 6
        visual, text = module.visual_proj, module.text_proj
        return [(visual[0](unit(v_r - v_o)), text[0](unit(t_r - t_o)), bank.subject_predicate(s, p)),
                (visual[1](unit(v_r - v_s)), text[1](unit(t_r - t_s)), bank.predicate_object(p, o))]
    if level == "triple":
        return [(module.visual_proj[0](F.normalize(v_r, dim=-1)), module.text_proj[0](t_r), t_r)]
    return [(module.visual_proj[0](F.normalize(v_r - v_s - v_o, dim=-1)), module.text_proj[0](t_p), t_p)]


@pytest.mark.parametrize("level", ["dual", "triple", "unary"])
@pytest.mark.parametrize("weighted", [True, False])
def test_levels_compare_the_paper_embeddings(level, weighted):
    torch.manual_seed(0)
    bank, _ = random_bank(TRIPLETS)
    module = RelationalContrastiveLoss(7, 5, TEXT_DIM, embed_dim=8, level=level, temperature=0.2, gamma=0.4,
                                       synonym_threshold=0.5, min_similarity=-0.2, weighted_negatives=weighted)
    assert len(module.visual_proj) == (2 if level == "dual" else 1)
    rel_feats, subj_feats, obj_feats = features()
    got = module(rel_feats, subj_feats, obj_feats, SUBJ, PRED, OBJ, bank)
    rows = PRED > 0
    want = 0.0
    for visual, text, sampling in expected_embeddings(module, level, rel_feats, subj_feats, obj_feats, bank, rows):
        sampling = F.normalize(sampling, dim=-1)
        want += hand_rcl(visual.detach(), text.detach(), (sampling @ sampling.t()).tolist(), 0.2, 0.4, eps=0.5,
                         eta=-0.2, weighted=weighted)
    assert got.item() == pytest.approx(want, rel=1e-4)


def test_synonym_features_do_not_change_the_loss():
    # Unary level: sampling similarity = cosine of the predicate texts. Predicates 1-3 are orthogonal
    # (similarity 0: negatives of each other); predicate 4 is 0.577 from each, above ε = 0.5: a synonym of all.
    predicates = torch.zeros(NUM_PRED + 1, 3)
    predicates[1:4] = torch.eye(3)
    predicates[4] = F.normalize(torch.ones(3), dim=0)
    bank, _ = random_bank(TRIPLETS, text_dim=3, predicates=predicates)
    module = RelationalContrastiveLoss(7, 5, 3, embed_dim=8, level="unary", synonym_threshold=0.5)
    subj, pred, obj = torch.tensor([1, 2, 3, 4]), torch.tensor([1, 3, 2, 4]), torch.tensor([2, 1, 4, 5])
    rel_feats, subj_feats, obj_feats = features(n=4)
    loss = module(rel_feats, subj_feats, obj_feats, subj, pred, obj, bank)
    loss.backward()
    # Row 3 (predicate 4) is in nobody's dictionary and has none of its own: no influence at all.
    for feats in (rel_feats, subj_feats, obj_feats):
        assert torch.equal(feats.grad[3], torch.zeros_like(feats.grad[3]))
        assert feats.grad[:3].abs().sum() > 0
    moved = [feats.detach().clone() for feats in (rel_feats, subj_feats, obj_feats)]
    for feats in moved:
        feats[3] += 10 * torch.randn_like(feats[3])
    assert module(*moved, subj, pred, obj, bank).item() == pytest.approx(loss.item(), abs=1e-6)
    moved[0][0] += 1.0  # a real negative moving does change it
    assert module(*moved, subj, pred, obj, bank).item() != pytest.approx(loss.item(), abs=1e-6)


def test_gradients_reach_adapters_and_features_never_the_text():
    bank, sources = random_bank(TRIPLETS, requires_grad=True)
    for table in (bank.object_table, bank.predicate_table, bank.subject_predicate_table,
                  bank.predicate_object_table, bank.triplet_table):
        assert not table.requires_grad
    module = RelationalContrastiveLoss(7, 5, TEXT_DIM, embed_dim=8, synonym_threshold=0.9, min_similarity=-1.0)
    rel_feats, subj_feats, obj_feats = features()
    module(rel_feats, subj_feats, obj_feats, SUBJ, PRED, OBJ, bank).backward()
    for name, param in module.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    foreground = PRED > 0
    for feats in (rel_feats, subj_feats, obj_feats):
        assert (feats.grad[foreground].abs().sum(1) > 0).all()
        assert torch.equal(feats.grad[~foreground], torch.zeros_like(feats.grad[~foreground]))
    for name, tensor in sources.items():
        assert tensor.grad is None, name


def test_background_relations_are_ignored():
    bank, _ = random_bank(TRIPLETS)
    module = RelationalContrastiveLoss(7, 5, TEXT_DIM, embed_dim=8)
    rel_feats, subj_feats, obj_feats = features()
    with_background = module(rel_feats, subj_feats, obj_feats, SUBJ, PRED, OBJ, bank)
    fg = PRED > 0
    without = module(rel_feats[fg], subj_feats[fg], obj_feats[fg], SUBJ[fg], PRED[fg], OBJ[fg], bank)
    assert with_background.item() == pytest.approx(without.item(), rel=1e-6)


@pytest.mark.parametrize("pred", [[0, 0, 0], [1, 0, 0], [1, 0, 3]])
def test_fewer_than_two_relations_give_a_connected_zero(pred):
    # [1, 0, 3]: two foreground relations, but triplet (2, 3, 3) is not in the bank.
    bank, _ = random_bank(TRIPLETS)
    module = RelationalContrastiveLoss(7, 5, TEXT_DIM, embed_dim=8)
    rel_feats, subj_feats, obj_feats = features(n=3)
    loss = module(rel_feats, subj_feats, obj_feats, torch.tensor([1, 2, 2]), torch.tensor(pred),
                  torch.tensor([2, 1, 3]), bank)
    assert loss.item() == 0 and loss.requires_grad
    loss.backward()
    for tensor in [rel_feats, subj_feats, obj_feats, *module.parameters()]:
        assert tensor.grad is not None and torch.equal(tensor.grad, torch.zeros_like(tensor.grad))


def test_all_synonyms_give_zero_without_nan():
    bank, _ = random_bank(TRIPLETS)
    module = RelationalContrastiveLoss(7, 5, TEXT_DIM, embed_dim=8, level="triple")
    rel_feats, subj_feats, obj_feats = features(n=3)
    same = torch.tensor([1, 1, 1]), torch.tensor([1, 1, 1]), torch.tensor([2, 2, 2])  # one triplet, three times
    loss = module(rel_feats, subj_feats, obj_feats, *same, bank)
    loss.backward()
    assert loss.item() == 0 and not torch.isnan(rel_feats.grad).any()


def test_triplets_missing_from_the_bank_are_dropped_and_counted(caplog):
    bank, _ = random_bank(TRIPLETS)
    module = RelationalContrastiveLoss(7, 5, TEXT_DIM, embed_dim=8)
    rel_feats, subj_feats, obj_feats = features(n=9)
    subj, pred, obj = (torch.cat([labels, torch.tensor([extra])]) for labels, extra in ((SUBJ, 5), (PRED, 2), (OBJ, 5)))
    with caplog.at_level(logging.WARNING, logger="sgg_plugins.regularizers.rcl"):
        with_missing = module(rel_feats, subj_feats, obj_feats, subj, pred, obj, bank)
        module(rel_feats, subj_feats, obj_feats, subj, pred, obj, bank)
    assert module.dropped_triplets == 2
    assert len([r for r in caplog.records if "missing from the text embeddings" in r.message]) == 1
    without = module(rel_feats[:8], subj_feats[:8], obj_feats[:8], SUBJ, PRED, OBJ, bank)
    assert with_missing.item() == pytest.approx(without.item(), rel=1e-6)


def test_text_dim_may_differ_from_embed_dim_and_config_builds_it():
    bank, _ = random_bank(TRIPLETS, text_dim=10)
    cfg = types.SimpleNamespace(**dict(RCL_DEFAULTS, EMBED_DIM=16))
    module = RelationalContrastiveLoss.from_config(cfg, rel_dim=7, obj_dim=5, text_dim=bank.dim)
    assert module.text_proj[0].weight.shape == (16, 10) and module.level == "dual"
    rel_feats, subj_feats, obj_feats = features()
    assert torch.isfinite(module(rel_feats, subj_feats, obj_feats, SUBJ, PRED, OBJ, bank))


def test_bad_input_fails_with_a_clear_message():
    bank, _ = random_bank(TRIPLETS)
    module = RelationalContrastiveLoss(7, 5, TEXT_DIM, embed_dim=8)
    rel_feats, subj_feats, obj_feats = features()
    with pytest.raises(ValueError, match=r"subj_feats must be \[8, 5\]"):
        module(rel_feats, subj_feats[:, :4], obj_feats, SUBJ, PRED, OBJ, bank)
    with pytest.raises(ValueError, match=r"pred_labels must be \[8\]"):
        module(rel_feats, subj_feats, obj_feats, SUBJ, PRED[:7], OBJ, bank)
    with pytest.raises(ValueError, match=r"object labels must lie in \[0, 5\]"):
        module(rel_feats, subj_feats, obj_feats, SUBJ, PRED, OBJ + 3, bank)
    with pytest.raises(ValueError, match="text_dim 12 .* dim 6"):
        RelationalContrastiveLoss(7, 5, 12)(rel_feats, subj_feats, obj_feats, SUBJ, PRED, OBJ, bank)
    with pytest.raises(ValueError, match="level"):
        RelationalContrastiveLoss(7, 5, 6, level="quad")
    with pytest.raises(ValueError, match="no negative could remain"):
        RelationalContrastiveLoss(7, 5, 6, synonym_threshold=0.2, min_similarity=0.5)
