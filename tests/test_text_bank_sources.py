"""RCL's text bank from the dataset file (every training triplet), per-predicate training counts, and the
one-line errors for a missing, corrupt or mismatched MODEL.RCL.TEXT_EMBEDDINGS file."""
import pytest
import torch
import torch.nn.functional as F

from sgg_plugins.text import bank_builder
from sgg_plugins.text.bank import TextEmbeddingBank
from sgg_plugins.text.bank_builder import cache_key, load_or_compute_bank, text_bank_from_roidb
from sgg_plugins.text.clip_encoder import _offline_message
from sgg_plugins.text.vg_files import predicate_training_counts, read_vg_training_triplets
from sgg_plugins.text.weights import CLIPUnavailableError

h5py = pytest.importorskip("h5py")

OBJ = ["__background__", "man", "horse", "shirt", "tree"]
PRED = ["__background__", "riding", "wearing", "above", "next to"]


def write_roidb(path):
    """Five split-0 images and one test image, in SGB's VG-SGG.h5 layout.

    Image 0: man riding horse (overlapping boxes); image 1: shirt above tree, man next to tree, boxes far
    apart (the host's frequency statistics drop such pairs, and with them every 'above' and 'next to');
    image 2: no relation; image 3 (test): man wearing shirt; image 4: man wearing shirt twice (duplicate
    pair); image 5: tree above horse.
    """
    boxes = [[0, 0, 50, 50], [10, 10, 60, 60],                            # image 0
             [0, 0, 10, 10], [400, 400, 420, 420], [200, 0, 210, 10],       # image 1
             [0, 0, 5, 5],                                                  # image 2
             [0, 0, 50, 50], [10, 10, 40, 40],                              # image 3
             [0, 0, 50, 50], [10, 10, 40, 40],                              # image 4
             [0, 0, 30, 30], [100, 100, 130, 130]]                          # image 5
    with h5py.File(path, "w") as h5:
        h5["split"] = [0, 0, 0, 2, 0, 0]
        h5["img_to_first_box"] = [0, 2, 5, 6, 8, 10]
        h5["img_to_last_box"] = [1, 4, 5, 7, 9, 11]
        h5["img_to_first_rel"] = [0, 1, -1, 3, 4, 6]
        h5["img_to_last_rel"] = [0, 2, -1, 3, 5, 6]
        h5["labels"] = [[1], [2], [3], [4], [1], [3], [1], [3], [1], [3], [4], [2]]
        h5["boxes_1024"] = boxes
        h5["relationships"] = [[0, 1], [2, 3], [4, 3], [6, 7], [8, 9], [8, 9], [10, 11]]
        h5["predicates"] = [[1], [3], [4], [2], [2], [2], [3]]
    return str(path)


TRAIN_TRIPLETS = [[1, 1, 2], [3, 3, 4], [1, 4, 4], [1, 2, 3], [1, 2, 3], [4, 3, 2]]


def fake_compute_bank(obj_classes, pred_classes, triplet_labels, model, pretrained, prompt=None, object_prompt=None,
                      device="cpu", batch_size=256):
    """Stands in for CLIP: random unit vectors, the tables shaped as compute_bank's."""
    gen = torch.Generator().manual_seed(0)
    o, p, dim = len(obj_classes), len(pred_classes), 8

    def unit(*shape):
        return F.normalize(torch.randn(*shape, dim, generator=gen), dim=-1)

    triplet_labels = torch.as_tensor(triplet_labels).reshape(-1, 3)
    return TextEmbeddingBank(unit(o), unit(p), unit(o, p), unit(p, o), triplet_labels, unit(len(triplet_labels)))


def test_training_triplets_are_every_relation_of_split_0_including_non_overlapping_pairs(tmp_path):
    roidb = write_roidb(tmp_path / "VG-SGG.h5")
    assert read_vg_training_triplets(roidb).tolist() == TRAIN_TRIPLETS
    # SGB's training set proper: the first num_val_im split-0 images with relations go to validation.
    assert read_vg_training_triplets(roidb, num_val_im=1).tolist() == TRAIN_TRIPLETS[1:]


def test_text_bank_from_roidb_covers_every_training_triplet(tmp_path, monkeypatch):
    roidb = write_roidb(tmp_path / "VG-SGG.h5")
    monkeypatch.setattr(bank_builder, "compute_bank", fake_compute_bank)
    bank = text_bank_from_roidb(roidb, OBJ, PRED, cache_path=str(tmp_path / "bank.pt"))
    triplets = torch.tensor(TRAIN_TRIPLETS)
    _, found = bank.triplets(triplets[:, 0], triplets[:, 1], triplets[:, 2])
    assert found.all()  # 100 % of the training relations, 'above' and 'next to' (non-overlapping) included
    assert sorted(bank.triplet_labels[:, 1].unique().tolist()) == [1, 2, 3, 4]
    assert not bank.triplets(torch.tensor([2]), torch.tensor([1]), torch.tensor([1]))[1].any()


def test_predicate_training_counts_follow_the_host_training_split(tmp_path):
    roidb = write_roidb(tmp_path / "VG-SGG.h5")
    assert predicate_training_counts(roidb, 4, num_val_im=0).tolist() == [0, 1, 2, 2, 1]
    assert predicate_training_counts(roidb, 4, num_val_im=1).tolist() == [0, 0, 2, 2, 1]
    with pytest.raises(ValueError, match="do not fit 3 predicates"):
        predicate_training_counts(roidb, 3, num_val_im=0)


def test_roidb_with_a_relation_past_the_boxes_fails_in_one_line(tmp_path):
    roidb = write_roidb(tmp_path / "VG-SGG.h5")
    with h5py.File(roidb, "a") as h5:
        h5["relationships"][0] = [0, 99]
    with pytest.raises(ValueError, match=r"relationships index boxes outside 0\.\.11 \(found 0\.\.99\)"):
        read_vg_training_triplets(roidb)


# ---------------------------------------------------------------- MODEL.RCL.TEXT_EMBEDDINGS errors


def test_missing_text_embeddings_file_names_the_file_and_the_way_out(tmp_path, monkeypatch):
    path = str(tmp_path / "missing.pt")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_hub"))

    def no_clip(*args, **kwargs):  # what compute_bank meets offline, without loading OpenCLIP
        raise CLIPUnavailableError(_offline_message("ViT-B-32", "openai", "HF_HUB_OFFLINE is set"))

    monkeypatch.setattr(bank_builder, "compute_bank", no_clip)
    with pytest.raises(FileNotFoundError) as error:
        load_or_compute_bank(OBJ, PRED, torch.tensor(TRAIN_TRIPLETS), cache_path=path, user_file=True)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"MODEL.RCL.TEXT_EMBEDDINGS: no file {path}, and it cannot "
                                                       f"be computed here (CLIP weights 'openai' for ViT-B-32 are "
                                                       f"not in the local cache")
    assert "sgg-plugins embed" in message and f"--out {path}" in message and "correct the path" in message
    # Where CLIP can run, the named file is computed and written, as before.
    monkeypatch.setattr(bank_builder, "compute_bank", fake_compute_bank)
    load_or_compute_bank(OBJ, PRED, torch.tensor(TRAIN_TRIPLETS), cache_path=path, user_file=True)
    assert TextEmbeddingBank.load(path).triplet_keys.numel() == 5


def test_corrupt_text_embeddings_file_never_advises_weights_only_false(tmp_path):
    path = tmp_path / "bank.pt"
    good = fake_compute_bank(OBJ, PRED, torch.tensor(TRAIN_TRIPLETS).unique(dim=0), "m", "w")
    good.save(str(path))
    path.write_bytes(path.read_bytes()[:200])  # truncated
    with pytest.raises(ValueError) as error:
        load_or_compute_bank(OBJ, PRED, torch.tensor(TRAIN_TRIPLETS), cache_path=str(path), user_file=True)
    message = str(error.value)
    assert "\n" not in message and "not a readable text embedding file" in message and str(path) in message
    assert "weights_only" not in message and f"--out {path}" in message


def test_text_embeddings_made_for_other_settings_list_stored_and_requested_values(tmp_path, monkeypatch):
    path = str(tmp_path / "bank.pt")
    triplets = torch.tensor(TRAIN_TRIPLETS)
    stored = fake_compute_bank(OBJ, PRED, triplets.unique(dim=0), "RN50", "openai")
    stored.meta["key"] = cache_key(OBJ, PRED, torch.zeros(0, dtype=torch.long), "RN50", "yfcc15m",
                                   "a {subject} {predicate} {object}", "a photo of a {object}")
    stored.save(path)
    monkeypatch.setattr(bank_builder, "compute_bank", lambda *a, **k: pytest.fail("a user's file is never recomputed"))
    with pytest.raises(ValueError) as error:
        load_or_compute_bank(OBJ[:-1] + ["bush"], PRED, triplets, model="ViT-B-32", pretrained="openai",
                             cache_path=path, user_file=True)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"MODEL.RCL.TEXT_EMBEDDINGS {path} was made for other settings")
    assert "clip_model: stored 'RN50', requested 'ViT-B-32'" in message
    assert "clip_weights: stored 'tag:yfcc15m', requested 'tag:openai'" in message
    assert "prompt: stored 'a {subject} {predicate} {object}', requested 'a photo of a {subject}" in message
    assert "obj_classes: stored 4 names, requested 4, first difference at label 4: 'tree' vs 'bush'" in message
    assert "--clip-model ViT-B-32 --clip-pretrained openai" in message


def test_text_embeddings_lacking_training_triplets_say_how_many(tmp_path, monkeypatch):
    path = str(tmp_path / "bank.pt")
    triplets = torch.tensor(TRAIN_TRIPLETS)
    monkeypatch.setattr(bank_builder, "compute_bank", fake_compute_bank)
    load_or_compute_bank(OBJ, PRED, triplets[:2], cache_path=path)  # e.g. made from the frequency statistics
    with pytest.raises(ValueError, match=r"triplets: the file lacks 3 of the 5 training triplets requested"):
        load_or_compute_bank(OBJ, PRED, triplets, cache_path=path, user_file=True)
    # The same file serves when it covers the request.
    assert load_or_compute_bank(OBJ, PRED, triplets[:1], cache_path=path, user_file=True).triplet_keys.numel() == 2
