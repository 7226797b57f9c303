"""RCL's sampling embeddings (GloVe, Eq. 7), kept-negative statistics and the attention adapter (§3.2)."""
import logging
import math

import pytest
import torch
import torch.nn.functional as F

from sgg_plugins.regularizers.rcl import AttentionAdapter, RelationalContrastiveLoss, pad_by_group
from sgg_plugins.text.bank import TextEmbeddingBank
from sgg_plugins.text.glove import GloveUnavailableError, glove_phrases, read_word_vectors

OBJ = ["__background__", "man", "horse", "shirt"]
PRED = ["__background__", "riding", "in front of", "wearing"]
# Hand-picked 3-d word vectors: "riding" and "wearing" close, "in front of" apart.
WORDS = {"man": [1.0, 0.0, 0.0], "horse": [0.0, 1.0, 0.0], "shirt": [0.0, 0.0, 1.0],
         "riding": [1.0, 1.0, 0.0], "wearing": [1.0, 0.8, 0.2], "in": [0.0, 0.0, -1.0],
         "front": [-1.0, 0.0, 0.0], "of": [0.0, -1.0, 0.0], "the": [9.0, 9.0, 9.0]}


def write_glove(folder, words=WORDS, dim=3):
    path = folder / f"glove.6B.{dim}d.txt"
    path.write_text("".join(f"{w} {' '.join(str(v) for v in vec)}\n" for w, vec in words.items()))
    return path


def hand_mean(*words):
    return torch.tensor([WORDS[w] for w in words]).mean(0)


def clip_bank(triplets, dim=6, seed=0):
    gen = torch.Generator().manual_seed(seed)

    def unit(*shape):
        return F.normalize(torch.randn(*shape, dim, generator=gen), dim=-1)

    o, p = len(OBJ), len(PRED)
    return TextEmbeddingBank(unit(o), unit(p), unit(o, p), unit(p, o), torch.tensor(triplets), unit(len(triplets)))


def test_glove_phrase_embeddings_are_token_means_read_from_the_host_file(tmp_path):
    write_glove(tmp_path)
    phrases = glove_phrases(OBJ, PRED, str(tmp_path), 3)
    subj, pred, obj = torch.tensor([1, 1]), torch.tensor([2, 1]), torch.tensor([2, 3])
    torch.testing.assert_close(phrases.phrase(subj, pred), torch.stack([hand_mean("man", "in", "front", "of"),
                                                                         hand_mean("man", "riding")]))
    torch.testing.assert_close(phrases.phrase(None, pred, obj), torch.stack([hand_mean("in", "front", "of", "horse"),
                                                                              hand_mean("riding", "shirt")]))
    torch.testing.assert_close(phrases.phrase(subj, pred, obj)[1], hand_mean("man", "riding", "shirt"))
    torch.testing.assert_close(phrases.phrase(None, pred)[0], hand_mean("in", "front", "of"))


def test_host_pt_cache_is_preferred_and_gives_the_same_vectors(tmp_path):
    write_glove(tmp_path)
    words = list(WORDS)
    torch.save(({w: i for i, w in enumerate(words)}, torch.tensor([WORDS[w] for w in words]), 3),
               tmp_path / "glove.6B.3d.pt")
    vectors, dim = read_word_vectors(str(tmp_path / "glove.6B.3d.pt"), {"riding", "of", "zebra"})
    assert dim == 3 and set(vectors) == {"riding", "of"}
    from_pt = glove_phrases(OBJ, PRED, str(tmp_path), 3)
    (tmp_path / "glove.6B.3d.pt").unlink()
    from_txt = glove_phrases(OBJ, PRED, str(tmp_path), 3)
    assert from_pt.source.startswith("glove.6B.3d.pt") and from_txt.source.startswith("glove.6B.3d.txt")
    torch.testing.assert_close(from_pt.pred_sums, from_txt.pred_sums)


def test_glove_similarity_ranks_negatives_by_hand_cosines(tmp_path):
    """Q_k of Eq. 7 at the dual level from GloVe phrase cosines, against a hand count."""
    write_glove(tmp_path)
    triplets = [[1, 1, 2], [1, 3, 3], [1, 2, 2], [2, 1, 3]]  # man riding horse, man wearing shirt, ...
    bank = clip_bank(triplets).use_sampling_embeddings(glove_phrases(OBJ, PRED, str(tmp_path), 3))
    assert bank.sampling_source.startswith("word vectors glove.6B.3d.txt")
    eps = 0.7
    sp = [hand_mean(*(OBJ[s].split() + PRED[p].split())) for s, p, _ in triplets]
    po = [hand_mean(*(PRED[p].split() + OBJ[o].split())) for _, p, o in triplets]

    def kept(embeddings):
        n = len(embeddings)
        cos = [[float(F.cosine_similarity(a, b, dim=0)) for b in embeddings] for a in embeddings]
        return sum(sum(1 for q in range(n) if q != k and 0.0 <= cos[k][q] <= eps) for k in range(n)) / n

    hand = (kept(sp) + kept(po)) / 2
    assert 0 < hand < 3  # the hand vectors make some, not all, pairs synonyms
    loss_fn = RelationalContrastiveLoss(5, 4, text_dim=6, embed_dim=8, synonym_threshold=eps)
    labels = torch.tensor(triplets)
    loss = loss_fn(torch.randn(4, 5), torch.randn(4, 4), torch.randn(4, 4), labels[:, 0], labels[:, 1], labels[:, 2],
                   bank)
    assert torch.isfinite(loss)
    assert loss_fn.last_kept_negatives.item() == pytest.approx(hand)
    assert loss_fn.last_stats["rcl_kept_share"].item() == pytest.approx(hand / 3)
    assert loss_fn.last_stats["rcl_relations"].item() == 4
    assert not loss_fn.last_kept_negatives.requires_grad


def test_kept_negatives_count_every_other_relation_with_synonyms_kept_and_zero_when_empty():
    triplets = [[1, 1, 2], [1, 3, 3], [2, 2, 1], [3, 1, 1], [2, 3, 2]]
    labels = torch.tensor(triplets)
    bank = clip_bank(triplets)
    args = (torch.randn(5, 5), torch.randn(5, 4), torch.randn(5, 4), labels[:, 0], labels[:, 1], labels[:, 2], bank)
    keep_all = RelationalContrastiveLoss(5, 4, 6, embed_dim=8, synonym_threshold=1.0, min_similarity=-1.0,
                                         weighted_negatives=False)
    keep_all(*args)
    assert keep_all.last_kept_negatives.item() == 4.0 and keep_all.last_stats["rcl_kept_share"].item() == 1.0
    # ε below every similarity: the dictionaries are empty and the statistic says so.
    keep_none = RelationalContrastiveLoss(5, 4, 6, embed_dim=8, synonym_threshold=-1.0, min_similarity=-1.0)
    keep_none(*args)
    assert keep_none.last_kept_negatives.item() == 0.0


def test_missing_glove_file_is_one_line_naming_glove_dir_and_the_clip_way_out(tmp_path):
    (tmp_path / "glove.6B.50d.txt").write_text("man 1 2\n")
    with pytest.raises(GloveUnavailableError) as error:
        glove_phrases(OBJ, PRED, str(tmp_path), 200)
    message = str(error.value)
    assert "\n" not in message and str(tmp_path) in message and "GLOVE_DIR" in message
    assert "glove.6B.200d.txt" in message and "holds glove.6B.50d.txt" in message
    assert "MODEL.RCL.SAMPLING_EMBEDDINGS clip" in message
    with pytest.raises(GloveUnavailableError, match="does not exist"):
        glove_phrases(OBJ, PRED, str(tmp_path / "nowhere"), 200)


def test_words_missing_from_glove_get_fixed_vectors_and_a_warning(tmp_path, caplog):
    write_glove(tmp_path, {w: v for w, v in WORDS.items() if w != "horse"})
    with caplog.at_level(logging.WARNING):
        first = glove_phrases(OBJ, PRED, str(tmp_path), 3)
    assert "horse" in caplog.text
    second = glove_phrases(OBJ, PRED, str(tmp_path), 3)
    torch.testing.assert_close(first.obj_sums, second.obj_sums)  # the stand-in is fixed per word
    assert first.obj_sums[2].abs().sum() > 0


def test_a_file_whose_vectors_do_not_match_its_name_fails_clearly(tmp_path):
    (tmp_path / "glove.6B.3d.txt").write_text("man 1 2 3 4\n")
    with pytest.raises(ValueError, match="holds 4-d vectors, its name says 3-d"):
        glove_phrases(OBJ, PRED, str(tmp_path), 3)


# ---------------------------------------------------------------- the attention adapter (§3.2)


def test_pad_by_group_round_trips_and_masks():
    values = torch.arange(12.0).view(6, 2)
    groups = torch.tensor([3, 0, 3, 3, 7, 0])
    padded, mask, rows = pad_by_group(values, groups)
    assert padded.shape == (3, 3, 2) and mask.tolist() == [[True, True, False], [True, True, True],
                                                            [True, False, False]]
    torch.testing.assert_close(padded[rows], values)
    assert padded[~mask].abs().sum() == 0


def test_attention_adapter_shapes_and_tokens_attend_within_their_image_only():
    torch.manual_seed(0)
    adapter = AttentionAdapter(10, 16, num_heads=8).eval()
    features = torch.randn(7, 10)
    groups = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    out = adapter(features, groups)
    assert out.shape == (7, 16)
    # Another image's tokens, their number or the padding never change an image's outputs.
    changed = features.clone()
    changed[3:] = torch.randn(4, 10)
    torch.testing.assert_close(adapter(changed, groups)[:3], out[:3])
    torch.testing.assert_close(adapter(features[:3], groups[:3]), out[:3])
    # ... while a token of the same image does (it is attention, not a per-token map).
    changed = features.clone()
    changed[1] += 1.0
    assert not torch.allclose(adapter(changed, groups)[0], out[0])


def test_attention_adapter_gradients_reach_every_parameter():
    adapter = AttentionAdapter(10, 16, num_heads=8)
    features = torch.randn(5, 10, requires_grad=True)
    adapter(features, torch.tensor([0, 0, 1, 1, 1])).pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adapter.parameters())
    assert features.grad.abs().sum(1).gt(0).all()
    layers = [m for m in adapter.modules() if isinstance(m, torch.nn.MultiheadAttention)]
    assert len(layers) == 2 and isinstance(adapter.fc, torch.nn.Linear)


def test_rcl_with_the_attention_adapter_trains_it_and_never_the_text():
    torch.manual_seed(0)
    triplets = [[1, 1, 2], [1, 3, 3], [2, 2, 1], [3, 1, 1]]
    labels = torch.tensor(triplets + [[1, 0, 3]])  # one background pair: context for the attention only
    bank = clip_bank(triplets)
    loss_fn = RelationalContrastiveLoss(6, 4, 6, embed_dim=16, adapter="attention", synonym_threshold=1.0)
    rel = torch.randn(5, 6, requires_grad=True)
    objects = torch.randn(4, 4, requires_grad=True)
    subj_rows, obj_rows = torch.tensor([0, 0, 1, 2, 3]), torch.tensor([1, 2, 0, 0, 2])
    rel_image = torch.tensor([0, 0, 0, 1, 1])
    loss = loss_fn(rel, objects[subj_rows], objects[obj_rows], labels[:, 0], labels[:, 1], labels[:, 2], bank,
                   rel_image=rel_image, subj_rows=subj_rows, obj_rows=obj_rows)
    loss.backward()
    assert math.isfinite(loss.item()) and loss.item() > 0
    for name, param in loss_fn.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert rel.grad[4].abs().sum() > 0  # the background pair reaches the loss through the attention
    assert bank.triplet_table.grad is None
    with pytest.raises(ValueError, match="attention adapter needs rel_image"):
        loss_fn(rel, objects[subj_rows], objects[obj_rows], labels[:, 0], labels[:, 1], labels[:, 2], bank)


def test_attention_adapter_width_must_split_into_heads():
    with pytest.raises(ValueError, match="EMBED_DIM \\(100\\) must be a multiple"):
        RelationalContrastiveLoss(6, 4, 6, embed_dim=100, adapter="attention")
    with pytest.raises(ValueError, match="adapter 'mlp' is not one of linear, attention"):
        RelationalContrastiveLoss(6, 4, 6, adapter="mlp")


def test_synonym_pairs_against_explicit_loops():
    """synonym_pairs' share and top pairs, recomputed pair by pair over the training relations."""
    from sgg_plugins.regularizers.rcl import synonym_pairs

    gen = torch.Generator().manual_seed(1)
    num_obj, num_pred, dim = 4, 5, 3  # 3-d phrases: many pairs land above ε

    def unit(*shape):
        return F.normalize(torch.randn(*shape, dim, generator=gen), dim=-1)

    triplets = torch.randint(1, num_obj + 1, (40, 3), generator=gen)
    triplets[:, 1] = torch.randint(1, num_pred + 1, (40,), generator=gen)
    unique = torch.unique(triplets, dim=0)
    bank = TextEmbeddingBank(unit(num_obj + 1), unit(num_pred + 1), unit(num_obj + 1, num_pred + 1),
                             unit(num_pred + 1, num_obj + 1), unique, unit(len(unique)))
    report = synonym_pairs(bank, triplets, "dual", 0.7, top=3)
    tables = {"subject-predicate": lambda t: bank.subject_predicate_table[t[0], t[1]],
              "predicate-object": lambda t: bank.predicate_object_table[t[1], t[2]]}
    keys = {"subject-predicate": lambda t: (int(t[0]), int(t[1]), None),
            "predicate-object": lambda t: (None, int(t[1]), int(t[2]))}
    for kind, (share, pairs) in report.items():
        dropped = total = 0
        seen = {}
        for a in triplets:
            for b in triplets:
                if keys[kind](a) == keys[kind](b):
                    continue
                total += 1
                sim = float(F.cosine_similarity(tables[kind](a), tables[kind](b), dim=0))
                if sim > 0.7:
                    dropped += 1
                    if int(a[1]) != int(b[1]):
                        seen[frozenset((keys[kind](a), keys[kind](b)))] = sim
        assert share == pytest.approx(dropped / total, abs=1e-6)
        expected = sorted(seen.values(), reverse=True)[:3]
        assert [sim for *_, sim in pairs] == pytest.approx(expected, abs=1e-5)
        assert all(frozenset((a, b)) in seen for a, b, _ in pairs)
