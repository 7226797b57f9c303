"""The text banks of MODEL.RCL and MODEL.CLIPMATCH are checked by the launchers' preflight
(``sgg_plugins.hosts.sgb.text_banks``): a missing, corrupt, stale or foreign ``TEXT_EMBEDDINGS``
file, or CLIP weights that cannot be had, stops with one line before the host prints its config.

Host-free tests run the check on a yacs config shaped like the host's, the PATHS_CATALOG lookup stood
in; the host tests run the real launcher and assert its whole output and exit status.
"""

import difflib
import os
import subprocess

import pytest
import torch
import torch.nn.functional as F
from yacs.config import CfgNode

from conftest import host_command, needs_sgb
from sgg_plugins.config import add_sgg_plugins_config
from sgg_plugins.data.synthetic_vg import write_synthetic_vg
from sgg_plugins.data.vg_check import VGFiles
from sgg_plugins.hosts.sgb import catalog
from sgg_plugins.hosts.sgb.text_banks import check_text_banks
from sgg_plugins.text import bank_builder, candidates, encoders
from sgg_plugins.text.bank import TextEmbeddingBank
from sgg_plugins.text.bank_builder import load_or_compute_bank

TRAIN = "VG_stanford_filtered_with_attribute_train"
EMBED = "`sgg-plugins embed --dict-file VG-SGG-dicts.json --roidb-file VG-SGG.h5 --clip-model ViT-B-32 --clip-pretrained openai"


@pytest.fixture(scope="module")
def small_vg(tmp_path_factory):
    out = tmp_path_factory.mktemp("vg") / "data"
    write_synthetic_vg(str(out), num_images=12, seed=1, image_size=64)
    return out


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No CLIP weights cached anywhere, no network, and an empty default bank cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HOME", str(tmp_path))  # open_clip's URL downloads would be in ~/.cache/clip
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture
def cfg(small_vg, monkeypatch, offline):
    files = VGFiles(str(small_vg / "VG-SGG-with-attri.h5"), str(small_vg / "VG-SGG-dicts-with-attri.json"),
                    str(small_vg / "image_data.json"), str(small_vg / "VG_100K"))
    # Only the catalog lookup (the host's import_file) is stood in for; the dataset's files are read.
    monkeypatch.setattr(catalog, "catalog_datasets", lambda config, names: {name: files for name in names})
    node = CfgNode({"DATASETS": {"TRAIN": (TRAIN,)}, "PATHS_CATALOG": str(small_vg / "paths_catalog.py"),
                    "MODEL": {"ROI_RELATION_HEAD": {"PREDICTOR": "MotifPredictor"}}})
    return add_sgg_plugins_config(node)


def fake_compute_bank(obj_classes, pred_classes, triplet_labels, model, pretrained, prompt=None, object_prompt=None,
                      device="cpu", batch_size=256):
    """Stands in for CLIP: random unit vectors shaped as compute_bank's tables."""
    o, p, dim = len(obj_classes), len(pred_classes), 8

    def unit(*shape):
        return F.normalize(torch.randn(*shape, dim), dim=-1)

    triplet_labels = torch.as_tensor(triplet_labels).reshape(-1, 3)
    return TextEmbeddingBank(unit(o), unit(p), unit(o, p), unit(p, o), triplet_labels, unit(len(triplet_labels)))


def fake_compute_candidates(obj_classes, pred_classes, class_pairs, model, pretrained, prompt=None, null_prompt=None,
                            device="cpu", batch_size=256):
    pairs = torch.as_tensor(class_pairs).reshape(-1, 2)
    texts = F.normalize(torch.randn(len(pairs), len(pred_classes) - 1, 8), dim=-1)
    return candidates.CandidateTextBank(pairs, texts, F.normalize(torch.randn(8), dim=0), len(obj_classes) - 1)


def write_rcl_file(cfg, path, monkeypatch, obj_rename=None, model="ViT-B-32", pretrained="openai"):
    """An RCL bank file as `sgg-plugins embed` writes it for the config's training data (CLIP stood in)."""
    monkeypatch.setattr(bank_builder, "compute_bank", fake_compute_bank)
    obj_classes, pred_classes, triplets = catalog.training_text_sources(cfg)
    if obj_rename:
        obj_classes = [obj_rename if i == 1 else name for i, name in enumerate(obj_classes)]
    load_or_compute_bank(obj_classes, pred_classes, triplets, model=model, pretrained=pretrained, cache_path=str(path))
    return obj_classes


def write_candidate_file(cfg, path, monkeypatch):
    monkeypatch.setattr(candidates, "compute_candidate_bank", fake_compute_candidates)
    obj_classes, pred_classes, triplets = catalog.training_text_sources(cfg)
    candidates.load_or_compute_candidate_bank(obj_classes, pred_classes, triplets[:, [0, 2]], cache_path=str(path))


def error_line(cfg):
    with pytest.raises(catalog.PreflightError) as caught:
        check_text_banks(cfg)
    return str(caught.value)


def no_text_encoder(*args, **kwargs):
    raise AssertionError("the preflight resolved or built a text encoder for a file that serves the run")


def test_files_that_serve_the_run_pass_without_any_text_encoder(cfg, tmp_path, monkeypatch):
    write_rcl_file(cfg, tmp_path / "rcl.pt", monkeypatch)
    write_candidate_file(cfg, tmp_path / "cand.pt", monkeypatch)
    for module, name in ((bank_builder, "resolve_text_encoder"), (encoders, "load_clip"),
                         (candidates, "resolve_clip_weights"), (candidates, "load_clip")):
        monkeypatch.setattr(module, name, no_text_encoder)
    cfg.MODEL.RCL.ENABLED = cfg.MODEL.CLIPMATCH.ENABLED = True
    cfg.MODEL.RCL.TEXT_EMBEDDINGS, cfg.MODEL.CLIPMATCH.TEXT_EMBEDDINGS = str(tmp_path / "rcl.pt"), str(tmp_path / "cand.pt")
    check_text_banks(cfg)


def test_missing_rcl_file_without_clip_weights(cfg, tmp_path):
    path = tmp_path / "typo.pt"
    cfg.MODEL.RCL.ENABLED, cfg.MODEL.RCL.TEXT_EMBEDDINGS = True, str(path)
    assert error_line(cfg) == (
        f"MODEL.RCL.TEXT_EMBEDDINGS: no file {path}, and it cannot be computed here (CLIP weights 'openai' for "
        f"ViT-B-32 are not in the local cache and cannot be downloaded (HF_HUB_OFFLINE is set)): make it with "
        f"{EMBED} --out {path}` on a machine with the text encoder's weights (the training dataset's files), or "
        f"correct the path.")


def test_corrupt_rcl_file(cfg, tmp_path, monkeypatch):
    path = tmp_path / "rcl.pt"
    write_rcl_file(cfg, path, monkeypatch)
    path.write_bytes(path.read_bytes()[:1000])  # an interrupted copy
    cfg.MODEL.RCL.ENABLED, cfg.MODEL.RCL.TEXT_EMBEDDINGS = True, str(path)
    assert error_line(cfg) == (
        f"MODEL.RCL: {path} is not a readable text embedding file (RuntimeError: truncated, or not written by "
        f"sgg-plugins); recreate it with `sgg-plugins embed ... --out {path}`.")


def test_stale_rcl_file_made_for_another_dataset(cfg, tmp_path, monkeypatch):
    path = tmp_path / "rcl.pt"
    stored = write_rcl_file(cfg, path, monkeypatch, obj_rename="lamppost")
    requested = catalog.training_text_sources(cfg)[0]
    cfg.MODEL.RCL.ENABLED, cfg.MODEL.RCL.TEXT_EMBEDDINGS = True, str(path)
    assert error_line(cfg) == (
        f"MODEL.RCL.TEXT_EMBEDDINGS {path} was made for other settings (obj_classes: stored {len(stored) - 1} names, "
        f"requested {len(requested) - 1}, first difference at label 1: 'lamppost' vs {requested[1]!r}); make it with "
        f"{EMBED} --out {path}`, or set the MODEL.RCL keys to the stored values.")


def test_foreign_rcl_file_of_another_text_encoder(cfg, tmp_path, monkeypatch):
    path = tmp_path / "rcl.pt"
    write_rcl_file(cfg, path, monkeypatch, model="sentence-transformers:all-MiniLM-L6-v2", pretrained="")
    cfg.MODEL.RCL.ENABLED, cfg.MODEL.RCL.TEXT_EMBEDDINGS = True, str(path)
    assert error_line(cfg) == (
        f"MODEL.RCL.TEXT_EMBEDDINGS {path} was made for other settings (clip_model: stored "
        f"'sentence-transformers:all-MiniLM-L6-v2', requested 'ViT-B-32'; clip_weights: stored "
        f"'name:all-MiniLM-L6-v2', requested 'tag:openai'); make it with {EMBED} --out {path}`, or set the "
        f"MODEL.RCL keys to the stored values.")


def test_each_objective_refuses_the_other_s_file(cfg, tmp_path, monkeypatch):
    write_rcl_file(cfg, tmp_path / "rcl.pt", monkeypatch)
    write_candidate_file(cfg, tmp_path / "cand.pt", monkeypatch)
    cfg.MODEL.RCL.ENABLED, cfg.MODEL.RCL.TEXT_EMBEDDINGS = True, str(tmp_path / "cand.pt")
    assert error_line(cfg) == (
        f"MODEL.RCL: {tmp_path / 'cand.pt'} is a clipmatch_candidates file (from `sgg-plugins embed-candidates`, for "
        f"MODEL.CLIPMATCH), not an RCL text embedding file; make one with `sgg-plugins embed ... --out "
        f"{tmp_path / 'cand.pt'}`.")
    cfg.MODEL.RCL.ENABLED = False
    cfg.MODEL.CLIPMATCH.ENABLED, cfg.MODEL.CLIPMATCH.TEXT_EMBEDDINGS = True, str(tmp_path / "rcl.pt")
    assert error_line(cfg) == (
        f"MODEL.CLIPMATCH: {tmp_path / 'rcl.pt'} is not a candidate text embedding file (an RCL file from "
        f"`sgg-plugins embed`?); recreate it with `sgg-plugins embed-candidates ... --out {tmp_path / 'rcl.pt'}`.")


def test_clip_pretrained_naming_a_file_that_does_not_exist(cfg):
    cfg.MODEL.RCL.ENABLED, cfg.MODEL.RCL.CLIP_PRETRAINED = True, "/nowhere/clip.pt"
    import open_clip

    tags = ", ".join(open_clip.list_pretrained_tags_by_model("ViT-B-32"))
    assert error_line(cfg) == (f"MODEL.RCL.CLIP_PRETRAINED = '/nowhere/clip.pt': no such checkpoint file. Tags for "
                               f"ViT-B-32: {tags}; or give the path of a local checkpoint file.")


def test_clip_model_open_clip_cannot_build(cfg):
    cfg.MODEL.CLIPMATCH.ENABLED, cfg.MODEL.CLIPMATCH.CLIP_MODEL = True, "ViT-B-33"
    import open_clip

    models = open_clip.list_models()
    assert error_line(cfg) == (
        f"MODEL.CLIPMATCH: unknown OpenCLIP model 'ViT-B-33' (MODEL.CLIPMATCH.CLIP_MODEL); e.g. "
        f"{', '.join(difflib.get_close_matches('ViT-B-33', models, n=5))} (open_clip.list_models() lists all "
        f"{len(models)}).")


def test_stale_candidate_file_is_refused_only_when_it_cannot_be_recomputed(cfg, tmp_path, monkeypatch):
    """CLIPMATCH recomputes a stale file of its own (tests/test_clipmatch_candidates.py); without CLIP it cannot."""
    path = tmp_path / "cand.pt"
    write_candidate_file(cfg, path, monkeypatch)
    cfg.MODEL.CLIPMATCH.ENABLED, cfg.MODEL.CLIPMATCH.TEXT_EMBEDDINGS = True, str(path)
    cfg.MODEL.CLIPMATCH.NULL_PROMPT = "no relation"
    line = error_line(cfg)
    assert line.startswith(f"MODEL.CLIPMATCH: {path} was made with a different null_prompt, and recomputing needs "
                           f"CLIP: CLIP weights 'openai' for ViT-B-32 are not in the local cache and cannot be "
                           f"downloaded (HF_HUB_OFFLINE is set). Two ways out: set MODEL.CLIPMATCH.CLIP_PRETRAINED")
    assert "MODEL.RCL" not in line and "\n" not in line


# ---------------------------------------------------------------------------------------------
# through the real launcher: the line is all it prints


def launcher_output(synthetic_vg, tmp_path, opts):
    cmd = host_command(synthetic_vg, "relation_train_net", "MotifPredictor", "predcls", opts, tmp_path / "out")
    # No CLIP weights cached (HOME: open_clip's URL downloads), no network, an empty default bank cache.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"), "HOME": str(tmp_path),
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    return result.returncode, result.stdout, result.stderr


@needs_sgb
def test_launcher_stops_on_a_missing_rcl_file_with_its_line_alone(synthetic_vg, tmp_path):
    path = tmp_path / "typo.pt"
    status, stdout, stderr = launcher_output(synthetic_vg, tmp_path, [
        "MODEL.RCL.ENABLED", "True", "MODEL.RCL.TEXT_EMBEDDINGS", str(path)])
    assert (status, stdout, stderr) == (1, "", (
        f"error: MODEL.RCL.TEXT_EMBEDDINGS: no file {path}, and it cannot be computed here (CLIP weights 'openai' "
        f"for ViT-B-32 are not in the local cache and cannot be downloaded (HF_HUB_OFFLINE is set)): make it with "
        f"{EMBED} --out {path}` on a machine with the text encoder's weights (the training dataset's files), or "
        f"correct the path.\n"))


@needs_sgb
def test_launcher_stops_on_a_corrupt_candidate_file_with_its_line_alone(synthetic_vg, tmp_path):
    path = tmp_path / "cand.pt"
    path.write_bytes(b"not a torch file")
    status, stdout, stderr = launcher_output(synthetic_vg, tmp_path, [
        "MODEL.CLIPMATCH.ENABLED", "True", "MODEL.CLIPMATCH.TEXT_EMBEDDINGS", str(path)])
    assert (status, stdout, stderr) == (1, "", (
        f"error: MODEL.CLIPMATCH: {path} is not a readable candidate text embedding file (UnpicklingError: "
        f"truncated, or not written by sgg-plugins); recreate it with `sgg-plugins embed-candidates ... --out "
        f"{path}`.\n"))
