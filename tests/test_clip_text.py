"""CLIP text embedding bank: cache round trip and invalidation, lookups, offline failure, `sgg-plugins embed`.

A tiny OpenCLIP architecture (text width 32, one layer) with random weights saved to a local file
goes through the real loading path (``open_clip.create_model(name, pretrained=<file>)``).
"""
import json
import os
import socket
import time

import pytest
import torch

open_clip = pytest.importorskip("open_clip")

from conftest import TINY_CLIP_CFG, random_open_clip  # noqa: E402
from sgg_plugins import cli  # noqa: E402
from sgg_plugins.text import bank_builder, vg_files, weights  # noqa: E402
from sgg_plugins.text.bank import TextEmbeddingBank  # noqa: E402
from sgg_plugins.text.bank_builder import load_or_compute_bank  # noqa: E402
from sgg_plugins.text.clip_encoder import load_clip, resolve_clip_weights  # noqa: E402
from sgg_plugins.text.weights import CLIPUnavailableError  # noqa: E402

OBJ = ["__background__", "man", "horse", "shirt"]
PRED = ["__background__", "riding", "wearing"]
TRIPLETS = torch.tensor([[1, 1, 2], [1, 2, 3], [1, 1, 2]])  # a duplicate is fine


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Register two tiny architectures and save random weights for them; returns the file paths."""
    folder = tmp_path_factory.mktemp("tiny_clip")
    random_open_clip(folder, "sggp-tiny-clip-b")
    return {seed: random_open_clip(folder, "sggp-tiny-clip", seed) for seed in (0, 1)}


@pytest.fixture
def count_computations(monkeypatch):
    calls = []
    original = bank_builder.compute_bank

    def counting(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(bank_builder, "compute_bank", counting)
    return calls


def bank_for(tiny, tmp_path, **overrides):
    kwargs = dict(obj_classes=OBJ, pred_classes=PRED, triplets=TRIPLETS, model="sggp-tiny-clip", pretrained=tiny[0],
                  cache_dir=str(tmp_path))
    kwargs.update(overrides)
    return load_or_compute_bank(**kwargs)


def test_cache_round_trip(tiny, tmp_path, count_computations):
    first = bank_for(tiny, tmp_path)
    files = os.listdir(tmp_path)
    assert len(files) == 1 and len(count_computations) == 1
    second = bank_for(tiny, tmp_path)
    assert len(count_computations) == 1  # loaded, not recomputed
    for name in ("object_table", "predicate_table", "subject_predicate_table", "predicate_object_table",
                 "triplet_keys", "triplet_table"):
        assert torch.equal(getattr(first, name), getattr(second, name)), name
    assert second.meta["obj_classes"] == OBJ


def test_cache_is_recomputed_when_a_key_part_changes(tiny, tmp_path, count_computations):
    path = str(tmp_path / "bank.pt")
    bank_for(tiny, tmp_path, cache_path=path)
    changes = {"model": dict(model="sggp-tiny-clip-b"), "weights": dict(pretrained=tiny[1]),
               "prompt": dict(prompt="{subject} {predicate} {object}"),
               "object_prompt": dict(object_prompt="an image of a {object}"),
               "classes": dict(obj_classes=OBJ[:3] + ["jacket"]),
               "triplets": dict(triplets=torch.cat([TRIPLETS, torch.tensor([[2, 1, 3]])]))}
    for number, (part, change) in enumerate(changes.items(), start=2):
        bank_for(tiny, tmp_path, cache_path=path, **change)
        assert len(count_computations) == number, part
    bank_for(tiny, tmp_path, cache_path=path, **change)
    assert len(count_computations) == number  # the rewritten file is current again


def test_a_file_covering_more_triplets_is_reused(tiny, tmp_path, count_computations):
    path = str(tmp_path / "bank.pt")
    bank_for(tiny, tmp_path, cache_path=path)
    subset = bank_for(tiny, tmp_path, cache_path=path, triplets=TRIPLETS[:1])
    assert len(count_computations) == 1 and subset.triplet_keys.numel() == 2


def test_weights_file_identity_is_its_content(tiny, tmp_path, count_computations):
    bank_for(tiny, tmp_path)
    (cache_file,) = os.listdir(tmp_path)
    copy = tmp_path / "copied_elsewhere.pt"
    copy.write_bytes(open(tiny[0], "rb").read())
    os.utime(copy, (1, 1))
    bank_for(tiny, tmp_path, pretrained=str(copy), cache_path=str(tmp_path / cache_file))
    assert len(count_computations) == 1


def test_embeddings_are_normalised_and_lookups_index_by_label(tiny, tmp_path):
    bank = bank_for(tiny, tmp_path)
    clip, tokenizer = load_clip("sggp-tiny-clip", tiny[0])

    def encode(text):
        return torch.nn.functional.normalize(clip.encode_text(tokenizer([text])), dim=-1)[0]

    for table in (bank.object_table[1:], bank.predicate_table[1:], bank.subject_predicate_table[1:, 1:],
                  bank.predicate_object_table[1:, 1:], bank.triplet_table):
        assert torch.allclose(table.norm(dim=-1), torch.ones(table.shape[:-1]), atol=1e-5)
    assert bank.object_table[0].abs().sum() == 0 and bank.predicate_table[0].abs().sum() == 0
    with torch.no_grad():
        assert torch.allclose(bank.objects(torch.tensor([3]))[0], encode("a photo of a shirt"), atol=1e-5)
        assert torch.allclose(bank.predicates(torch.tensor([2]))[0], encode("wearing"), atol=1e-5)
        assert torch.allclose(bank.subject_predicate(torch.tensor([2]), torch.tensor([1]))[0], encode("horse riding"),
                              atol=1e-5)
        assert torch.allclose(bank.predicate_object(torch.tensor([2]), torch.tensor([3]))[0], encode("wearing shirt"),
                              atol=1e-5)
        emb, found = bank.triplets(torch.tensor([1, 2, 1]), torch.tensor([2, 1, 1]), torch.tensor([3, 1, 2]))
        assert found.tolist() == [True, False, True]
        assert torch.allclose(emb[0], encode("a photo of a man wearing shirt"), atol=1e-5)
        assert torch.allclose(emb[2], encode("a photo of a man riding horse"), atol=1e-5)
        assert emb[1].abs().sum() == 0
    with pytest.raises(ValueError, match=r"object labels must lie in \[0, 3\]"):
        bank.objects(torch.tensor([4]))


def test_a_bank_without_triplets_finds_none(tiny, tmp_path):
    bank = bank_for(tiny, tmp_path, triplets=torch.zeros(0, 3, dtype=torch.long))
    emb, found = bank.triplets(torch.tensor([1]), torch.tensor([1]), torch.tensor([2]))
    assert not found.any() and emb.shape == (1, bank.dim)


@pytest.fixture
def empty_hub_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HOME", str(tmp_path))  # open_clip's URL downloads would look in ~/.cache/clip
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)


def assert_names_both_ways_out(message):
    assert "MODEL.RCL.CLIP_PRETRAINED" in message and "MODEL.RCL.TEXT_EMBEDDINGS" in message
    assert "sgg-plugins embed" in message


def test_offline_tag_fails_at_once_with_hf_hub_offline(empty_hub_cache, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(CLIPUnavailableError) as error:
        load_or_compute_bank(OBJ, PRED, TRIPLETS, model="ViT-B-32", pretrained="openai", cache_dir=str(tmp_path))
    assert time.monotonic() - start < 2.0
    assert_names_both_ways_out(str(error.value))


def test_unreachable_hub_fails_within_the_probe_timeout(empty_hub_cache, monkeypatch):
    # A server that accepts connections and never answers: the worst case, a silent firewall.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    monkeypatch.setattr(weights, "HUB_PROBE_URL", f"http://127.0.0.1:{server.getsockname()[1]}")
    monkeypatch.setattr(weights, "HUB_PROBE_TIMEOUT_S", 0.5)
    try:
        start = time.monotonic()
        with pytest.raises(CLIPUnavailableError) as error:
            resolve_clip_weights("ViT-B-32", "laion2b_s34b_b79k")
        assert time.monotonic() - start < 1.5
    finally:
        server.close()
    assert_names_both_ways_out(str(error.value))


def test_refused_connection_fails_at_once(empty_hub_cache, monkeypatch):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    monkeypatch.setattr(weights, "HUB_PROBE_URL", f"http://127.0.0.1:{port}")
    start = time.monotonic()
    with pytest.raises(CLIPUnavailableError, match="unreachable"):
        resolve_clip_weights("ViT-B-32", "openai")
    assert time.monotonic() - start < 2.0


def test_a_cached_tag_needs_no_network(empty_hub_cache, monkeypatch, tmp_path):
    # huggingface_hub's cache layout for the file open_clip downloads for ViT-B-32 / openai.
    repo = tmp_path / "hub" / "models--timm--vit_base_patch32_clip_224.openai"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    weights = repo / "snapshots" / "abc123" / "open_clip_model.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"not really weights")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path, quick_gelu = resolve_clip_weights("ViT-B-32", "openai")
    assert path == str(weights) and quick_gelu  # OpenAI's weights were trained with QuickGELU


def test_unknown_model_and_tag_list_valid_choices(empty_hub_cache):
    with pytest.raises(CLIPUnavailableError, match=r"unknown OpenCLIP model 'ViT-B-33'.*ViT-B-32"):
        resolve_clip_weights("ViT-B-33", "openai")
    with pytest.raises(CLIPUnavailableError, match=r"not a weights tag.*laion2b_s34b_b79k"):
        resolve_clip_weights("ViT-B-32", "laion9000")
    with pytest.raises(CLIPUnavailableError, match="no such checkpoint file"):
        resolve_clip_weights("ViT-B-32", "/nowhere/clip.pt")


def test_stale_file_that_cannot_be_recomputed_says_what_differs(tiny, tmp_path, empty_hub_cache, monkeypatch):
    path = str(tmp_path / "bank.pt")
    bank_for(tiny, tmp_path, cache_path=path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CLIPUnavailableError, match="different clip_model, clip_weights"):
        load_or_compute_bank(OBJ, PRED, TRIPLETS, model="ViT-B-32", pretrained="openai", cache_path=path)

    def offline(*args, **kwargs):
        raise CLIPUnavailableError("offline")

    monkeypatch.setattr(bank_builder, "compute_bank", offline)
    with pytest.raises(CLIPUnavailableError, match="triplet set lacking 1 requested ones, .*offline"):
        bank_for(tiny, tmp_path, cache_path=path, triplets=torch.tensor([[3, 2, 1]]))


def test_weights_of_another_architecture_fail_clearly(tiny):
    with pytest.raises(CLIPUnavailableError, match="checkpoint of MODEL.RCL.CLIP_MODEL"):
        load_clip("RN50", tiny[0])


def test_unreadable_file_fails_clearly(tmp_path):
    bad = tmp_path / "bank.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable text embedding file"):
        TextEmbeddingBank.load(str(bad))


def write_vg(tmp_path):
    """A 3-image VG-SGG.h5 + dicts: image 0 (train) has two relations, image 1 (test) one, image 2 none."""
    h5py = pytest.importorskip("h5py")
    dict_file = tmp_path / "VG-SGG-dicts.json"
    dict_file.write_text(json.dumps({"idx_to_label": {"1": "man", "2": "horse", "3": "shirt"},
                                     "idx_to_predicate": {"1": "riding", "2": "wearing"}}))
    roidb_file = tmp_path / "VG-SGG.h5"
    with h5py.File(roidb_file, "w") as h5:
        h5["split"] = [0, 2, 0]
        h5["img_to_first_box"] = [0, 3, -1]
        h5["img_to_last_box"] = [2, 4, -1]
        h5["img_to_first_rel"] = [0, 2, -1]
        h5["img_to_last_rel"] = [1, 2, -1]
        h5["labels"] = [[1], [2], [3], [3], [2]]  # boxes 0-2 in image 0, 3-4 in image 1
        h5["relationships"] = [[0, 1], [0, 2], [3, 4]]
        h5["predicates"] = [[1], [2], [1]]
    return str(dict_file), str(roidb_file)


def test_embed_cli_from_a_vg_dataset(tiny, tmp_path, capsys):
    dict_file, roidb_file = write_vg(tmp_path)
    assert vg_files.read_vg_training_triplets(roidb_file).tolist() == [[1, 1, 2], [1, 2, 3]]  # not (3, 1, 2): test
    out = tmp_path / "emb.pt"
    argv = ["embed", "--dict-file", dict_file, "--roidb-file", roidb_file, "--clip-model", "sggp-tiny-clip",
            "--clip-pretrained", tiny[0], "--out", str(out), "--device", "cpu"]
    assert cli.main(argv) == 0
    assert f"wrote {out}: 3 object classes, 2 predicates, 2 triplets, dim 16" in capsys.readouterr().out
    bank = TextEmbeddingBank.load(str(out))
    assert bank.triplet_labels.tolist() == [[1, 1, 2], [1, 2, 3]]
    # The training run finds the file current for the same classes, model and weights: no CLIP needed.
    again = load_or_compute_bank(OBJ, PRED, TRIPLETS, model="sggp-tiny-clip", pretrained=tiny[0], cache_path=str(out))
    assert torch.equal(again.triplet_table, bank.triplet_table)


def test_embed_cli_from_class_lists(tiny, tmp_path, capsys):
    (tmp_path / "objs.txt").write_text("man\nhorse\nshirt\n")
    (tmp_path / "preds.txt").write_text("riding\nwearing\n")
    (tmp_path / "triplets.txt").write_text("1 1 2\n1,2,3\n")
    out = tmp_path / "emb.pt"
    argv = ["embed", "--obj-classes", str(tmp_path / "objs.txt"), "--pred-classes", str(tmp_path / "preds.txt"),
            "--triplets", str(tmp_path / "triplets.txt"), "--clip-model", "sggp-tiny-clip", "--clip-pretrained",
            tiny[0], "--out", str(out), "--device", "cpu"]
    assert cli.main(argv) == 0
    assert "2 triplets" in capsys.readouterr().out
    assert TextEmbeddingBank.load(str(out)).meta["obj_classes"] == OBJ
    with pytest.raises(SystemExit, match="give --dict-file and --roidb-file, or --obj-classes"):
        cli.main(["embed", "--out", str(out)])


def save_model_folder(folder, weights_file):
    """An OpenCLIP model folder (open_clip_config.json + weights), as `local-dir:` loads it."""
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP_CFG, "preprocess_cfg": {}}))
    (folder / "open_clip_pytorch_model.bin").write_bytes(open(weights_file, "rb").read())
    return f"local-dir:{folder}"


def test_local_model_folder_loads_and_keys_the_cache_by_its_content(tiny, tmp_path, count_computations):
    model = save_model_folder(tmp_path / "clip_folder", tiny[0])
    folder_bank = bank_for(tiny, tmp_path / "cache", model=model, pretrained="")
    file_bank = bank_for(tiny, tmp_path / "cache_file")
    assert torch.allclose(folder_bank.triplet_table, file_bank.triplet_table, atol=1e-6)  # same weights
    bank_for(tiny, tmp_path / "cache", model=model, pretrained="")
    assert len(count_computations) == 2  # the folder's bank was reused
    (tmp_path / "clip_folder" / "open_clip_pytorch_model.bin").write_bytes(open(tiny[1], "rb").read())
    bank_for(tiny, tmp_path / "cache", model=model, pretrained="")
    assert len(count_computations) == 3  # new weights in the folder: recomputed


def test_local_model_folder_without_config_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CLIPUnavailableError, match="has no open_clip_config.json"):
        resolve_clip_weights(f"local-dir:{tmp_path / 'empty'}", "")
