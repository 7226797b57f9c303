"""MODEL.CLIPMATCH's candidate class pairs: every training relation of the dataset file has its texts.

The candidates of a sampled pair are the p prompts of its (subject, object) class pair. They once
came from the host's ``fg_matrix``, which SGB counts with ``filter_non_overlap=True``: the class
pairs whose relations all join non-overlapping boxes ("near", "left of" ...) had no texts, and
PredCls/SGCls training, which keeps those relations, left them out of the loss. On the bench
preset's synthetic data, the bank the objective builds must hold the class pair of every training
relation read straight from the h5, including relations between non-overlapping boxes whose class
pairs the overlap-filtered statistics lack (host-free: with SGB's overlap rule written out here;
with SGB_ROOT: with the host's own ``get_dataset_statistics``).
"""

import json
import logging
import os
import sys

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fake_sgb as fake
from conftest import needs_sgb, random_open_clip
from sgg_plugins.config import ConfigError
from sgg_plugins.data.synthetic_vg import write_synthetic_vg
from sgg_plugins.data.vg_check import VGFiles
from sgg_plugins.regularizers.clipmatch import PredicateMatchingLoss
from sgg_plugins.text import candidates as candidates_module
from sgg_plugins.text.candidates import CandidateTextBank
from sgg_plugins.text.weights import CLIPUnavailableError

TRAIN = "VG_stanford_filtered_with_attribute_train"  # the name the synthetic catalog serves
CLIP_NAME = "sggp-tiny-clip-pairs"


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """A small bench-preset dataset: its folder and its training relations read straight from the h5."""
    out = tmp_path_factory.mktemp("bench_vg") / "data"
    write_synthetic_vg(str(out), preset="bench", num_images=600, seed=0)
    return out, training_relations(out)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A small OpenCLIP architecture with random weights, saved locally: the real encoding, offline."""
    pytest.importorskip("open_clip")
    return CLIP_NAME, random_open_clip(tmp_path_factory.mktemp("tiny_clip_pairs"), CLIP_NAME)


def training_relations(data):
    """Every relation of split 0 as the h5 holds it: (subject class, object class, predicate, boxes overlap
    by SGB's rule, image is one of the first num_val_im ones) per row; read here without the plug-in's readers."""
    with h5py.File(data / "VG-SGG-with-attri.h5", "r") as h5:
        split, first_rel, last_rel = h5["split"][:], h5["img_to_first_rel"][:], h5["img_to_last_rel"][:]
        first_box = h5["img_to_first_box"][:]
        relationships, predicates = h5["relationships"][:], h5["predicates"][:, 0]
        labels, boxes = h5["labels"][:, 0], h5["boxes_1024"][:].astype(float)  # boxes: centre x, y, width, height
    with open(data / "paths_catalog.py") as f:
        num_val = int(next(line for line in f if line.startswith("NUM_VAL_IMAGES")).split("=")[1].split("#")[0])
    rows = []
    for rank, image in enumerate(np.flatnonzero((split == 0) & (first_box >= 0) & (first_rel >= 0))):
        for rel in range(first_rel[image], last_rel[image] + 1):
            s, o = relationships[rel]
            # SGB's bbox_overlaps on xyxy boxes with its +1 pixel convention: the intersection's
            # width and height are both positive.
            gap = (boxes[s, 2:] + boxes[o, 2:]) / 2 - np.abs(boxes[s, :2] - boxes[o, :2]) + 1
            rows.append((labels[s], labels[o], predicates[rel], bool((gap > 0).all()), rank < num_val))
    return np.array(rows, dtype=np.int64)


def fg_matrix_class_pairs(relations):
    """The class pairs SGB's fg_matrix has: its statistics drop the validation images and every
    relation between non-overlapping boxes (``get_VG_statistics``, ``filter_non_overlap=True``)."""
    kept = relations[(relations[:, 3] == 1) & (relations[:, 4] == 0)]
    return set(map(tuple, kept[:, :2].tolist()))


def assert_bank_serves_every_relation(objective, relations):
    bank = objective.text_bank
    subj, obj, pred = (torch.as_tensor(relations[:, i]) for i in range(3))
    _, found = bank.pair_index(subj, obj)
    assert bool(found.all()), f"{int((~found).sum())} of {len(found)} training relations have no candidate texts"
    # Through the loss's own table: no foreground pair is left out, each row targets its own triplet's prompt.
    loss = objective.loss
    rows, target, column_ids = loss.table(subj, pred, obj, bank)
    assert bool(rows.all()) and loss.dropped == 0 and loss.foreground == len(relations)
    index, _ = bank.pair_index(subj, obj)
    assert torch.equal(column_ids[target], index * bank.num_predicates + pred - 1)


def test_old_source_would_miss_non_overlapping_relations(bench):
    """The data the test below relies on: relations between non-overlapping boxes whose class pair
    no overlapping training relation has, so an fg_matrix-built bank lacks them."""
    _, relations = bench
    missed = ~np.array([tuple(r) in fg_matrix_class_pairs(relations) for r in relations[:, :2].tolist()])
    assert (relations[:, 3] == 0).sum() > 0 and missed.sum() > 0
    assert (relations[missed, 3] == 0).mean() > 0.5  # mostly non-overlapping ones, the rest in validation images


def test_the_objective_s_bank_covers_every_training_relation_of_the_bench_data(bench, tiny_clip, tmp_path,
                                                                                monkeypatch, caplog):
    from sgg_plugins.hosts.sgb import catalog

    data, relations = bench
    files = VGFiles(str(data / "VG-SGG-with-attri.h5"), str(data / "VG-SGG-dicts-with-attri.json"),
                    str(data / "image_data.json"), str(data / "VG_100K"))
    # Only the PATHS_CATALOG lookup (the host's import_file) is stood in for; the files are read as in a run.
    monkeypatch.setattr(catalog, "catalog_datasets", lambda cfg, names: {name: files for name in names})
    model, weights = tiny_clip
    cfg = fake.make_cfg("MotifPredictor", CLIPMATCH_ENABLED=True, CLIPMATCH_CLIP_MODEL=model,
                        CLIPMATCH_CLIP_PRETRAINED=weights, CLIPMATCH_TEXT_EMBEDDINGS=str(tmp_path / "cand.pt"))
    cfg.DATASETS = type(cfg)({"TRAIN": (TRAIN,)})
    cfg.PATHS_CATALOG = str(data / "paths_catalog.py")
    from sgg_plugins.hosts.sgb.predictors import regularized_predictor_class

    caplog.set_level(logging.INFO, logger="sgg_plugins")
    objective = regularized_predictor_class(fake.MotifPredictor)(cfg, fake.IN_CHANNELS).sgg_plugins["clipmatch"]
    bank = objective.text_bank
    with open(data / "VG-SGG-dicts-with-attri.json") as f:
        names = json.load(f)
    labels = names["idx_to_label"]
    assert bank.meta["obj_classes"][1:] == [labels[str(i)] for i in range(1, len(labels) + 1)]
    assert bank.num_predicates == len(names["idx_to_predicate"])
    assert bank.num_pairs == len(set(map(tuple, relations[:, :2].tolist())))  # exactly the training class pairs
    assert_bank_serves_every_relation(objective, relations)
    assert f"{len(relations)} training relations" in caplog.text

    # A bank file made for the overlap-filtered class pairs (the old source) is not reused.
    old_pairs = torch.tensor(sorted(fg_matrix_class_pairs(relations)))
    texts = F.normalize(torch.randn(len(old_pairs), bank.num_predicates, bank.dim), dim=-1)
    stale = CandidateTextBank(old_pairs, texts, bank.table[-1], bank.num_objects, meta=bank.meta)
    stale.save(str(tmp_path / "cand.pt"))
    caplog.clear()
    objective = regularized_predictor_class(fake.MotifPredictor)(cfg, fake.IN_CHANNELS).sgg_plugins["clipmatch"]
    lacking = len(set(map(tuple, relations[:, :2].tolist())) - fg_matrix_class_pairs(relations))
    assert f"class-pair set lacking {lacking} requested ones" in caplog.text
    assert_bank_serves_every_relation(objective, relations)
    assert torch.equal(objective.text_bank.table, bank.table)


@pytest.mark.parametrize("open_clip_installed", [True, False])
def test_a_stale_file_without_clip_to_recompute_fails_with_one_line(tmp_path, monkeypatch, open_clip_installed):
    obj, pred = ["__background__", "man", "horse"], ["__background__", "near", "riding"]
    path = tmp_path / "cand.pt"
    bank = CandidateTextBank(torch.tensor([[1, 2]]), F.normalize(torch.randn(1, 2, 4), dim=-1),
                             F.normalize(torch.randn(4), dim=0), 2)
    bank.meta["key"] = candidates_module.cache_key(obj, pred, torch.tensor([1 * 3 + 2]), "ViT-B-32", "/none.pt",
                                                   candidates_module.DEFAULT_PROMPT,
                                                   candidates_module.DEFAULT_NULL_PROMPT)
    bank.save(str(path))
    kwargs = dict(model="ViT-B-32", pretrained="/none.pt", cache_path=str(path))
    # Same settings and class pairs: loaded. One more class pair: not served by this file.
    assert candidates_module.load_or_compute_candidate_bank(obj, pred, torch.tensor([[1, 2]]), **kwargs).num_pairs == 1
    if open_clip_installed:
        pytest.importorskip("open_clip")
    else:
        monkeypatch.setitem(sys.modules, "open_clip", None)  # import open_clip raises ImportError
    with pytest.raises((CLIPUnavailableError, ImportError)) as error:
        candidates_module.load_or_compute_candidate_bank(obj, pred, torch.tensor([[1, 2], [2, 1]]), **kwargs)
    message = str(error.value)
    assert f"{path} was made with a class-pair set lacking 1 requested ones, and recomputing needs" in message
    assert "MODEL.CLIPMATCH" in message and "MODEL.RCL" not in message and "\n" not in message
    assert ("pip install open_clip_torch" in message) != open_clip_installed


def test_a_pair_without_candidates_at_train_time_is_counted_and_explained(caplog):
    torch.manual_seed(0)
    bank = CandidateTextBank(torch.tensor([[1, 2]]), F.normalize(torch.randn(1, 3, 8), dim=-1),
                             F.normalize(torch.randn(8), dim=0), 4)
    loss = PredicateMatchingLoss(5, 8)
    subj, obj = torch.tensor([1, 3, 3, 1]), torch.tensor([2, 4, 4, 4])
    caplog.set_level(logging.WARNING, logger="sgg_plugins")
    warnings = []
    for step in range(4):
        value = loss(torch.randn(4, 5), subj, torch.tensor([1, 2, 3, 0]), obj, bank)
        assert torch.isfinite(value)
        warnings.append(len(caplog.records))
    # Two foreground pairs of (3, 4) per step have no texts: 2, 4, 6, 8 left out; warned at 2, 4 and 8 (doubling).
    assert (loss.dropped, loss.foreground) == (8, 12)
    assert warnings == [1, 2, 2, 3]
    message = caplog.records[-1].getMessage()
    assert "(3, 4)" in message and "8 of 12 foreground pairs so far" in message
    assert "not that file's relations" in message and "\n" not in message


def test_a_training_dataset_without_vg_files_fails_before_training_with_one_line(monkeypatch):
    from sgg_plugins.hosts.sgb import catalog
    from sgg_plugins.hosts.sgb.predictors import regularized_predictor_class

    monkeypatch.setattr(catalog, "catalog_datasets", lambda cfg, names: {})  # a COCO-style entry, say
    cfg = fake.make_cfg("MotifPredictor", CLIPMATCH_ENABLED=True)
    cfg.DATASETS = type(cfg)({"TRAIN": ("my_coco_train",)})
    cfg.PATHS_CATALOG = "/data/paths_catalog.py"
    with pytest.raises(ConfigError) as error:
        regularized_predictor_class(fake.MotifPredictor)(cfg, fake.IN_CHANNELS)
    message = str(error.value)
    assert message.startswith("MODEL.CLIPMATCH reads its triplets from the training dataset's VG-SGG.h5")
    assert "my_coco_train is not a Visual Genome-format dataset" in message and "\n" not in message


# ------------------------------------------------------------------------------------------------
# The host's own statistics (needs SGB_ROOT).


@needs_sgb
def test_on_the_host_the_bank_covers_what_its_fg_matrix_misses(bench, tiny_clip, tmp_path, caplog):
    from conftest import build_predictor, in_process_cfg
    from sgg_plugins.hosts.sgb import install

    root = install(os.environ["SGB_ROOT"])  # puts the host's maskrcnn_benchmark on the path
    from maskrcnn_benchmark.data.build import get_dataset_statistics

    data, relations = bench
    model, weights = tiny_clip
    cfg = in_process_cfg((root, str(data), tmp_path), "MotifPredictor", "predcls", "MODEL.CLIPMATCH.ENABLED", True,
                         "MODEL.CLIPMATCH.CLIP_MODEL", model, "MODEL.CLIPMATCH.CLIP_PRETRAINED", weights,
                         "MODEL.CLIPMATCH.TEXT_EMBEDDINGS", str(tmp_path / "cand.pt"))
    fg_matrix = torch.as_tensor(get_dataset_statistics(cfg)["fg_matrix"])
    host_pairs = set(map(tuple, torch.nonzero(fg_matrix[:, :, 1:].sum(-1) > 0).tolist()))
    assert host_pairs == fg_matrix_class_pairs(relations)  # the rule written out above is the host's
    missed = np.array([tuple(r) not in host_pairs for r in relations[:, :2].tolist()])
    assert missed.sum() > 0 and (relations[missed, 3] == 0).any()  # the old source lacked these relations

    caplog.set_level(logging.INFO, logger="sgg_plugins")
    objective = build_predictor(cfg).sgg_plugins["clipmatch"]
    assert_bank_serves_every_relation(objective, relations)
    assert "candidate text embeddings written to" in caplog.text
