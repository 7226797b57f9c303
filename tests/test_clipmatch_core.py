"""CLIP predicate matching (seed 003 §3.2-3.3): the two-way cross entropy against a hand computation,
the candidate table, edge cases, and the candidate text bank's cache and offline behaviour."""

import math
import time

import pytest
import torch
import torch.nn.functional as F

from sgg_plugins.regularizers.clipmatch import PredicateMatchingLoss, two_way_cross_entropy
from sgg_plugins.text.candidates import CandidateTextBank, candidate_texts

OBJ = ["__background__", "man", "horse", "shirt", "hat"]
PRED = ["__background__", "riding", "wearing", "on"]
P = 3
DIM = 8


def make_bank(pairs=((1, 2), (1, 3), (4, 1)), seed=0):
    torch.manual_seed(seed)
    texts = F.normalize(torch.randn(len(pairs), P, DIM), dim=-1)
    null = F.normalize(torch.randn(DIM), dim=0)
    return CandidateTextBank(torch.tensor(pairs), texts, null, num_objects=len(OBJ) - 1), texts, null


# ------------------------------------------------------------------------------------------------
# The loss against the formulas of §3.3, written out term by term.


def reference_loss(logits, target, multi_positive):
    """L_v-CE + L_l-CE with explicit sums over the table's cells (the paper's notation)."""
    n, m = len(logits), len(logits[0])
    positive = [[target[i] == j for j in range(m)] for i in range(n)]
    l_v = 0.0
    for i in range(n):
        denominator = sum(math.exp(logits[i][j]) for j in range(m))
        l_v += sum(-math.log(math.exp(logits[i][j]) / denominator) for j in range(m) if positive[i][j])
    l_v /= n
    columns = []
    for j in range(m):
        denominator = sum(math.exp(logits[i][j]) for i in range(n))
        terms = [-math.log(math.exp(logits[i][j]) / denominator) for i in range(n) if positive[i][j]]
        columns.append(terms)
    if multi_positive == "sum":  # verbatim: 1/|S_l| sum_T sum_I 1[y_I = y_T] (-log softmax)
        l_l = sum(sum(t) for t in columns) / m
    else:  # each column's CE against the uniform distribution over its positives, mean over such columns
        with_positive = [sum(t) / len(t) for t in columns if t]
        l_l = sum(with_positive) / len(with_positive)
    return l_v + l_l


def test_two_way_cross_entropy_matches_the_hand_computation_with_shared_and_null_texts():
    # Columns: 0 'man riding horse', 1 'man wearing shirt', 2 'man on horse' (no positive),
    # 3 'null relation'. Rows 0 and 1 share triplet column 0; rows 3, 4, 5 are background (null).
    logits = [[2.0, 0.5, 1.0, -1.0],
              [1.5, -0.5, 0.0, 0.3],
              [0.1, 1.2, -0.3, 0.4],
              [0.2, 0.1, 0.0, 1.0],
              [-1.0, 0.7, 0.2, 0.5],
              [0.0, 0.0, 0.0, 0.0]]
    target = [0, 0, 1, 3, 3, 3]
    for mode in ("mean", "sum"):
        total, row, column = two_way_cross_entropy(torch.tensor(logits, dtype=torch.float64),
                                                   torch.tensor(target), mode)
        assert total.item() == pytest.approx(reference_loss(logits, target, mode), rel=1e-12)
        assert (row + column).item() == pytest.approx(total.item(), rel=1e-12)
    # The two forms differ exactly by the per-column weighting and normaliser.
    mean, _, _ = two_way_cross_entropy(torch.tensor(logits), torch.tensor(target), "mean")
    summed, _, _ = two_way_cross_entropy(torch.tensor(logits), torch.tensor(target), "sum")
    assert mean.item() != pytest.approx(summed.item())


def test_column_optimum_is_uniform_over_positives():
    # A column whose softmax over rows is uniform on its 3 positives (and 0 elsewhere) has zero gradient
    # in both forms: the forms share their minimiser.
    logits = torch.tensor([[0.0, 50.0], [0.0, 50.0], [0.0, 50.0], [60.0, 0.0]], requires_grad=True)
    target = torch.tensor([1, 1, 1, 0])
    for mode in ("mean", "sum"):
        _, _, column = two_way_cross_entropy(logits, target, mode)
        (grad,) = torch.autograd.grad(column, logits)
        assert grad[:, 1].abs().max() < 1e-6


# ------------------------------------------------------------------------------------------------
# The candidate table.


def test_candidates_are_the_p_prompts_of_the_class_pair_then_null():
    bank, texts, null = make_bank()
    ids, found = bank.candidates(torch.tensor([1, 4, 2]), torch.tensor([3, 1, 2]))
    assert ids.shape == (3, P + 1)
    assert found.tolist() == [True, True, False]
    assert (ids[:, -1] == bank.null_id).all()
    assert torch.equal(bank.embeddings(ids[0, :P]), texts[1])  # (man, shirt) is the second pair given
    assert torch.equal(bank.embeddings(ids[1, :P]), texts[2])
    assert (ids[2, :P] == -1).all()  # (horse, horse) has no candidates in the bank
    assert torch.equal(bank.embeddings(ids[0, -1]), null)


def test_prompt_texts_follow_the_subject_predicate_object_form():
    assert candidate_texts(OBJ, PRED, [[1, 2]]) == ["man riding horse", "man wearing horse", "man on horse"]


def test_targets_foreground_to_its_triplet_background_to_null():
    bank, texts, null = make_bank()
    target = bank.target_ids(torch.tensor([1, 1, 2, 3]), torch.tensor([2, 0, 0, 1]), torch.tensor([3, 3, 1, 3]))
    assert torch.equal(bank.embeddings(target[0]), texts[1, 1])  # man wearing shirt
    assert target[1] == target[2] == bank.null_id  # background pairs, in the bank or not
    assert target[3] == -1  # foreground pair whose class pair is unknown


def test_batch_table_rows_columns_and_targets():
    bank, texts, null = make_bank()
    loss = PredicateMatchingLoss(rel_dim=5, text_dim=DIM)
    #            fg (man,horse,riding) x2, fg (man,shirt,wearing), bg (man,horse), bg (hat,man), bg (horse,shirt)
    subj = torch.tensor([1, 1, 1, 1, 4, 2])
    pred = torch.tensor([1, 1, 2, 0, 0, 0])
    obj = torch.tensor([2, 2, 3, 2, 1, 3])
    rows, target, columns = loss.table(subj, pred, obj, bank)
    assert rows.all()
    # Columns: p prompts of each distinct foreground class pair (2 of them) and the null text.
    assert columns.numel() == 2 * P + 1
    column_text = bank.embeddings(columns)
    assert torch.equal(column_text[target[0]], texts[0, 0]) and target[0] == target[1]  # shared triplet
    assert torch.equal(column_text[target[2]], texts[1, 1])
    assert (columns[target[3:]] == bank.null_id).all()  # every background row matches null
    # The (hat, man) background pair's own prompts are not columns: texts come from the ground truth.
    hat_man = bank.candidates(torch.tensor([4]), torch.tensor([1]))[0][0, :P]
    assert not torch.isin(hat_man, columns).any()


def test_forward_equals_the_table_loss_of_the_projected_features():
    bank, _, _ = make_bank()
    torch.manual_seed(1)
    loss = PredicateMatchingLoss(rel_dim=5, text_dim=DIM, temperature=0.1)
    relation = torch.randn(6, 5)
    subj, pred, obj = torch.tensor([1, 1, 1, 1, 4, 2]), torch.tensor([1, 1, 2, 0, 0, 0]), torch.tensor([2, 2, 3, 2, 1, 3])
    rows, target, columns = loss.table(subj, pred, obj, bank)
    visual = F.normalize(loss.head(relation), dim=-1)
    logits = (visual @ bank.embeddings(columns).t() / 0.1).double().tolist()
    assert loss(relation, subj, pred, obj, bank).item() == pytest.approx(
        reference_loss(logits, target.tolist(), "mean"), rel=1e-5)


# ------------------------------------------------------------------------------------------------
# Edge cases: finite, and connected to the head so every step has the same parameters in its graph.


@pytest.mark.parametrize("case", ["no_pair", "all_background", "one_foreground", "one_background", "unknown_pair"])
def test_no_nan_in_edge_cases(case):
    bank, _, _ = make_bank()
    loss = PredicateMatchingLoss(rel_dim=5, text_dim=DIM)
    labels = {"no_pair": ([], [], []), "all_background": ([1, 4, 2], [0, 0, 0], [2, 1, 3]),
              "one_foreground": ([1], [3], [2]), "one_background": ([2], [0], [3]),
              "unknown_pair": ([2, 1], [1, 0], [2, 3])}[case]
    subj, pred, obj = (torch.tensor(v, dtype=torch.long) for v in labels)
    relation = torch.randn(len(subj), 5, requires_grad=True)
    value = loss(relation, subj, pred, obj, bank)
    assert torch.isfinite(value)
    value.backward()
    for param in loss.parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all()
    assert torch.isfinite(relation.grad).all()
    if case == "unknown_pair":
        assert loss.dropped == 1 and relation.grad[0].abs().sum() == 0


def test_gradient_reaches_the_head_and_the_relation_feature_not_the_texts():
    bank, _, _ = make_bank()
    loss = PredicateMatchingLoss(rel_dim=5, text_dim=DIM)
    relation = torch.randn(4, 5, requires_grad=True)
    loss(relation, torch.tensor([1, 1, 4, 2]), torch.tensor([1, 2, 0, 0]), torch.tensor([2, 3, 1, 3]), bank).backward()
    assert all(p.grad.abs().sum() > 0 for p in loss.parameters())
    assert (relation.grad.abs().sum(1) > 0).all()
    assert not bank.table.requires_grad


def test_bad_settings_fail_with_one_clear_line():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        PredicateMatchingLoss(5, DIM, temperature=0.0)
    with pytest.raises(ValueError, match="multi_positive must be one of mean, sum"):
        PredicateMatchingLoss(5, DIM, multi_positive="max")
    bank, _, _ = make_bank()
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\].*another dataset"):
        bank.candidates(torch.tensor([9]), torch.tensor([1]))


# ------------------------------------------------------------------------------------------------
# The bank file: computed once with (tiny) CLIP, then loaded; offline failure names CLIPMATCH's keys.

open_clip = pytest.importorskip("open_clip")
from conftest import random_open_clip  # noqa: E402
from sgg_plugins.text import candidates as candidates_module  # noqa: E402
from sgg_plugins.text.weights import CLIPUnavailableError  # noqa: E402



@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    return random_open_clip(tmp_path_factory.mktemp("tiny_clip_candidates"), "sggp-tiny-clip-cand")


def test_bank_is_computed_once_then_loaded_and_matches_clip(tiny_weights, tmp_path, monkeypatch):
    calls = []
    original = candidates_module.compute_candidate_bank
    monkeypatch.setattr(candidates_module, "compute_candidate_bank", lambda *a, **k: calls.append(a) or original(*a, **k))
    kwargs = dict(obj_classes=OBJ, pred_classes=PRED, class_pairs=torch.tensor([[1, 2], [1, 3], [1, 2]]),
                  model="sggp-tiny-clip-cand", pretrained=tiny_weights, cache_path=str(tmp_path / "candidates.pt"))
    bank = candidates_module.load_or_compute_candidate_bank(**kwargs)
    again = candidates_module.load_or_compute_candidate_bank(**kwargs)
    assert len(calls) == 1 and torch.equal(bank.table, again.table)
    assert bank.num_pairs == 2 and bank.table.shape == (2 * P + 1, 16)
    # A file holding more class pairs than asked for is reused; another null text is recomputed.
    candidates_module.load_or_compute_candidate_bank(**{**kwargs, "class_pairs": torch.tensor([[1, 3]])})
    assert len(calls) == 1
    other = candidates_module.load_or_compute_candidate_bank(**kwargs, null_prompt="no relation")
    assert len(calls) == 2 and not torch.equal(other.table[-1], bank.table[-1])
    # Row for (man, shirt, wearing) is CLIP's normalised embedding of "man wearing shirt".
    from sgg_plugins.text.clip_encoder import load_clip
    from sgg_plugins.text.encoders import encode_texts

    clip, tokenizer = load_clip("sggp-tiny-clip-cand", tiny_weights)
    expected = encode_texts(clip, tokenizer, ["man wearing shirt", "null relation"])
    ids, _ = bank.candidates(torch.tensor([1]), torch.tensor([3]))
    assert torch.allclose(bank.embeddings(ids[0, [1, 3]]), expected, atol=1e-6)


def test_offline_fails_at_once_naming_clipmatch_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(CLIPUnavailableError) as error:
        candidates_module.load_or_compute_candidate_bank(OBJ, PRED, [[1, 2]], model="ViT-B-32", pretrained="openai",
                                                         cache_dir=str(tmp_path))
    assert time.monotonic() - start < 2.0
    message = str(error.value)
    assert "MODEL.CLIPMATCH.CLIP_PRETRAINED" in message and "MODEL.CLIPMATCH.TEXT_EMBEDDINGS" in message
    assert "sgg-plugins embed-candidates" in message and "MODEL.RCL" not in message
    assert "sgg-plugins embed " not in message and "sgg-plugins embed`" not in message


def test_embed_candidates_command_covers_every_training_class_pair(tiny_weights, tmp_path, capsys):
    import argparse

    from sgg_plugins.data.synthetic_vg import write_synthetic_vg
    from sgg_plugins.text import candidates_cli
    from sgg_plugins.text.vg_files import read_vg_training_triplets

    data = tmp_path / "vg"
    write_synthetic_vg(str(data), num_images=12, seed=0)
    parser = argparse.ArgumentParser()
    candidates_cli.add_arguments(parser)
    argv = ["--dict-file", str(data / "VG-SGG-dicts-with-attri.json"), "--roidb-file", str(data / "VG-SGG-with-attri.h5"),
            "--clip-model", "sggp-tiny-clip-cand", "--clip-pretrained", tiny_weights, "--out", str(tmp_path / "c.pt")]
    assert candidates_cli.run(parser.parse_args(argv)) == 0
    assert "wrote" in capsys.readouterr().out
    bank = CandidateTextBank.load(str(tmp_path / "c.pt"))
    triplets = read_vg_training_triplets(str(data / "VG-SGG-with-attri.h5"))
    expected = torch.unique(triplets[:, [0, 2]], dim=0)
    assert torch.equal(bank.class_pairs, expected)
    assert candidates_cli.run(parser.parse_args(argv)) == 0
    assert "up to date, kept" in capsys.readouterr().out


def test_without_open_clip_the_error_names_clipmatch(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_open_clip(name, *args, **kwargs):
        if name == "open_clip":
            raise ImportError("No module named 'open_clip'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_open_clip)
    with pytest.raises(ImportError) as error:
        candidates_module.load_or_compute_candidate_bank(OBJ, PRED, [[1, 2]], cache_dir=str(tmp_path))
    assert "MODEL.CLIPMATCH" in str(error.value) and "MODEL.RCL" not in str(error.value)


def test_an_rcl_file_is_refused_clearly(tmp_path):
    path = tmp_path / "rcl.pt"
    torch.save({"format": 1, "objects": torch.zeros(2, 4)}, path)
    with pytest.raises(ValueError, match="RCL file"):
        CandidateTextBank.load(str(path))


# ------------------------------------------------------------------------------------------------
# Through the SGB adapter, on small predictors with the host's signatures (tests/fake_sgb.py).

import fake_sgb as fake  # noqa: E402


@pytest.fixture
def clipmatch_statistics(monkeypatch):
    """The training relations as the dataset file holds them (class pairs 1-2, 1-3, 4-1 only, one twice)
    and a random bank built for the class pairs the objective asks for."""
    from sgg_plugins.hosts.sgb.objectives import clipmatch

    triplets = torch.tensor([[1, 1, 2], [1, 2, 3], [4, 3, 1], [1, 3, 2]])
    classes = ([f"o{i}" for i in range(fake.NUM_OBJ_CLASSES)], [f"r{i}" for i in range(fake.NUM_REL_CLASSES)])
    requested = {}

    def sources(config, node):
        requested.update(node=node)
        return (*classes, triplets)

    def bank(obj_classes, pred_classes, class_pairs, **kwargs):
        requested.update(class_pairs=class_pairs, classes=(obj_classes, pred_classes), **kwargs)
        class_pairs = torch.unique(torch.as_tensor(class_pairs), dim=0)  # as load_or_compute_candidate_bank does
        g = torch.Generator().manual_seed(0)
        texts = F.normalize(torch.randn(len(class_pairs), fake.NUM_REL_CLASSES - 1, 16, generator=g), dim=-1)
        return CandidateTextBank(class_pairs, texts, F.normalize(torch.randn(16, generator=g), dim=0),
                                 fake.NUM_OBJ_CLASSES - 1)

    monkeypatch.setattr(clipmatch, "training_text_sources", sources)
    monkeypatch.setattr(clipmatch, "load_or_compute_candidate_bank", bank)
    requested["classes_read"] = classes
    return requested


def build_fake(base, **opts):
    from sgg_plugins.hosts.sgb.predictors import regularized_predictor_class

    torch.manual_seed(0)
    return regularized_predictor_class(base)(fake.make_cfg(base.__name__, **opts), fake.IN_CHANNELS).train()


def test_bank_gets_the_ground_truth_class_pairs_and_the_config(clipmatch_statistics):
    build_fake(fake.MotifPredictor, CLIPMATCH_ENABLED=True, CLIPMATCH_TEXT_EMBEDDINGS="/data/cand.pt",
               CLIPMATCH_NULL_PROMPT="no relation", CLIPMATCH_CLIP_PRETRAINED="/ckpt/clip.bin")
    # Every training relation's (subject, object) class pair, from the dataset file, with the dict file's names.
    assert clipmatch_statistics["node"] == "MODEL.CLIPMATCH"
    assert sorted(map(tuple, clipmatch_statistics["class_pairs"].tolist())) == [(1, 2), (1, 2), (1, 3), (4, 1)]
    assert clipmatch_statistics["classes"] == clipmatch_statistics["classes_read"]
    assert clipmatch_statistics["cache_path"] == "/data/cand.pt"
    assert clipmatch_statistics["null_prompt"] == "no relation"
    assert clipmatch_statistics["pretrained"] == "/ckpt/clip.bin"


@pytest.mark.parametrize("base", [fake.MotifPredictor, fake.VCTreePredictor, fake.TransformerPredictor,
                                  fake.IMPPredictor])
def test_clipmatch_trains_its_head_and_the_relation_representation(base, clipmatch_statistics):
    model = build_fake(base, CLIPMATCH_ENABLED=True)
    proposals, pairs, labels, binarys, roi, union = fake.make_batch()
    # Foreground pairs get class pairs the bank holds.
    for p in proposals:
        p.fields["labels"] = torch.tensor([1, 2, 3, 4][:len(p)])
    loss = model(proposals, pairs, labels, binarys, roi, union)[2]["loss_clipmatch"]
    assert torch.isfinite(loss) and loss > 0
    params = dict(model.named_parameters())
    grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()), allow_unused=True)))
    reached = {n for n, g in grads.items() if g is not None and g.abs().sum() > 0}
    assert {n for n in params if n.startswith("sgg_plugins.clipmatch")} <= reached
    assert any(n.startswith("context_layer") for n in reached)  # upstream of the relation representation
    classifier = model.spec.relation_feature
    assert not any(n.startswith(classifier + ".") for n in reached)  # the classifier reads it; we read its input


def test_composes_with_align_and_probe_and_weight_scales(clipmatch_statistics):
    batch = fake.make_batch()
    others = dict(ALIGN_ENABLED=True, PROBE_ENABLED=True)
    one = build_fake(fake.MotifPredictor, CLIPMATCH_ENABLED=True, **others)(*batch)[2]
    quarter = build_fake(fake.MotifPredictor, CLIPMATCH_ENABLED=True, CLIPMATCH_WEIGHT=0.25, **others)(*batch)[2]
    assert {"loss_clipmatch", "loss_align", "loss_probe"} <= set(one)
    assert quarter["loss_clipmatch"].item() == pytest.approx(0.25 * one["loss_clipmatch"].item(), rel=1e-5)


def test_an_unreadable_embedding_file_fails_before_training_with_one_line(clipmatch_statistics, monkeypatch, tmp_path):
    from sgg_plugins.config import ConfigError
    from sgg_plugins.hosts.sgb.objectives import clipmatch

    monkeypatch.setattr(clipmatch, "load_or_compute_candidate_bank", candidates_module.load_or_compute_candidate_bank)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a torch file")
    with pytest.raises(ConfigError) as error:
        build_fake(fake.MotifPredictor, CLIPMATCH_ENABLED=True, CLIPMATCH_TEXT_EMBEDDINGS=str(broken))
    message = str(error.value)
    assert message.startswith("MODEL.CLIPMATCH: ") and str(broken) in message and "\n" not in message
    assert "embed-candidates" in message
