"""The synthetic VG writer: SGB's file format, its filters, long-tailed predicates, determinism. Host-free."""

import importlib.util
import json
import os
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
from PIL import Image

from sgg_plugins import cli
from sgg_plugins.data.synthetic_vg import BOX_SCALE, OBJECT_VOCABULARY, first_last_indices, write_synthetic_vg

H5_DTYPES = {
    "split": (np.int32, 1), "img_to_first_box": (np.int32, 1), "img_to_last_box": (np.int32, 1),
    "img_to_first_rel": (np.int32, 1), "img_to_last_rel": (np.int32, 1), "labels": (np.int64, 2),
    "attributes": (np.int64, 2), "boxes_1024": (np.int32, 2), "relationships": (np.int32, 2),
    "predicates": (np.int64, 2),
}


def read(out):
    with h5py.File(os.path.join(out, "VG-SGG-with-attri.h5"), "r") as f:
        h5 = {key: f[key][:] for key in f.keys()}
    with open(os.path.join(out, "VG-SGG-dicts-with-attri.json")) as f:
        dicts = json.load(f)
    with open(os.path.join(out, "image_data.json")) as f:
        images = json.load(f)
    return h5, dicts, images


def corners_as_the_host_reads_them(boxes_1024):
    """cx, cy, w, h -> x1, y1, x2, y2 with SGB's in-place integer arithmetic."""
    boxes = boxes_1024.copy()
    boxes[:, :2] = boxes[:, :2] - boxes[:, 2:] / 2
    boxes[:, 2:] = boxes[:, :2] + boxes[:, 2:]
    return boxes


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("synvg"))
    summary = write_synthetic_vg(out, num_images=160, image_size=96, seed=3, num_val_images=20,
                                 overwrite=True)
    return out, summary


def test_first_last_indices_are_inclusive_with_minus_one_for_none():
    first, last = first_last_indices([2, 0, 3, 1])
    assert first.tolist() == [0, -1, 2, 5]
    assert last.tolist() == [1, -1, 4, 5]
    assert first.dtype == np.int32


def test_files_fields_shapes_and_dtypes(dataset):
    out, _ = dataset
    for name in ("image_data.json", "VG-SGG-dicts-with-attri.json", "VG-SGG-with-attri.h5",
                 "paths_catalog.py", "dataset.opts", "VG_100K"):
        assert os.path.exists(os.path.join(out, name)), name
    h5, dicts, images = read(out)
    assert set(h5) == set(H5_DTYPES)
    for key, (dtype, ndim) in H5_DTYPES.items():
        assert h5[key].dtype == dtype and h5[key].ndim == ndim, key
    num_boxes, num_rels = len(h5["labels"]), len(h5["predicates"])
    assert h5["labels"].shape == (num_boxes, 1) and h5["attributes"].shape == (num_boxes, 10)
    assert h5["boxes_1024"].shape == (num_boxes, 4)
    assert h5["relationships"].shape == (num_rels, 2) and h5["predicates"].shape == (num_rels, 1)
    assert len(images) == len(h5["split"]) == 160
    assert {"image_id", "width", "height"} <= set(images[0])


def test_dictionaries_are_one_based_and_inverse(dataset):
    out, _ = dataset
    h5, dicts, _ = read(out)
    for kind, inverse in (("label", "idx_to_label"), ("predicate", "idx_to_predicate"), ("attribute", "idx_to_attribute")):
        to_idx = dicts[f"{kind}_to_idx"]
        assert sorted(to_idx.values()) == list(range(1, len(to_idx) + 1))
        assert "__background__" not in to_idx  # the host adds it as index 0
        assert {int(i): name for i, name in dicts[inverse].items()} == {i: name for name, i in to_idx.items()}
    assert len(dicts["label_to_idx"]) == 15 and len(dicts["predicate_to_idx"]) == 10
    assert sum(dicts["predicate_count"].values()) == len(h5["predicates"])
    assert sum(dicts["object_count"].values()) == len(h5["labels"])


def test_index_ranges_and_contiguous_blocks(dataset):
    out, _ = dataset
    h5, dicts, _ = read(out)
    assert h5["labels"].min() >= 1 and h5["labels"].max() <= len(dicts["label_to_idx"])
    assert h5["predicates"].min() >= 1 and h5["predicates"].max() <= len(dicts["predicate_to_idx"])
    attributes = h5["attributes"]
    assert attributes.min() >= 0 and attributes.max() <= len(dicts["attribute_to_idx"])
    assert (attributes[:, 0] > 0).all()  # every object has its colour
    first_box, last_box = h5["img_to_first_box"], h5["img_to_last_box"]
    first_rel, last_rel = h5["img_to_first_rel"], h5["img_to_last_rel"]
    # every image has boxes and relations; blocks are contiguous and cover every row once
    assert (first_box >= 0).all() and (first_rel >= 0).all()
    assert first_box[0] == 0 and (first_box[1:] == last_box[:-1] + 1).all() and last_box[-1] == len(h5["labels"]) - 1
    assert first_rel[0] == 0 and (first_rel[1:] == last_rel[:-1] + 1).all() and last_rel[-1] == len(h5["predicates"]) - 1
    # relationships are global box rows inside their image's block, never a box with itself
    image_of_rel = np.repeat(np.arange(len(first_rel)), last_rel - first_rel + 1)
    rels = h5["relationships"]
    assert (rels >= first_box[image_of_rel, None]).all() and (rels <= last_box[image_of_rel, None]).all()
    assert (rels[:, 0] != rels[:, 1]).all()


def test_splits_and_validation_size(dataset):
    out, summary = dataset
    h5, _, _ = read(out)
    assert set(np.unique(h5["split"])) == {0, 2}
    assert (h5["split"] == 2).sum() == 40
    test_rows = np.where(h5["split"] == 2)[0]
    assert test_rows.max() - test_rows.min() > 40  # interleaved, not a block at the end
    assert summary["num_val"] == 20 and summary["num_train"] == 100


def test_boxes_lie_inside_their_images_where_the_host_puts_them(dataset):
    out, _ = dataset
    h5, _, images = read(out)
    boxes_1024 = h5["boxes_1024"]
    assert (boxes_1024[:, :2] >= 0).all() and (boxes_1024[:, 2:] > 0).all()  # the host's asserts
    corners = corners_as_the_host_reads_them(boxes_1024)
    # even sizes: the host's integer round trip gives back the exact corners (x2 - x1 == w)
    assert (corners[:, 2:] - corners[:, :2] == boxes_1024[:, 2:]).all()
    counts = h5["img_to_last_box"] - h5["img_to_first_box"] + 1
    width = np.repeat([im["width"] for im in images], counts)
    height = np.repeat([im["height"] for im in images], counts)
    scale = np.maximum(width, height) / BOX_SCALE
    pixels = corners * scale[:, None]
    assert (pixels >= 0).all()
    # inside [0, size - 1]: the host's clip_to_image leaves them unchanged
    assert (pixels[:, 2] <= width - 1).all() and (pixels[:, 3] <= height - 1).all()
    assert (pixels[:, 2] - pixels[:, 0] >= 2).all() and (pixels[:, 3] - pixels[:, 1] >= 2).all()


def test_every_image_keeps_a_relation_under_the_overlap_filter(dataset):
    out, _ = dataset
    h5, _, _ = read(out)
    corners = corners_as_the_host_reads_them(h5["boxes_1024"]).astype(np.float64)
    subject, obj = corners[h5["relationships"][:, 0]], corners[h5["relationships"][:, 1]]
    # the host's boxlist_iou counts boxes with (min x2 - max x1 + 1) > 0 in both axes as overlapping
    overlap_w = np.minimum(subject[:, 2], obj[:, 2]) - np.maximum(subject[:, 0], obj[:, 0]) + 1
    overlap_h = np.minimum(subject[:, 3], obj[:, 3]) - np.maximum(subject[:, 1], obj[:, 1]) + 1
    overlapping = (overlap_w > 0) & (overlap_h > 0)
    image_of_rel = np.repeat(np.arange(len(h5["split"])), h5["img_to_last_rel"] - h5["img_to_first_rel"] + 1)
    assert np.bincount(image_of_rel, weights=overlapping, minlength=len(h5["split"])).min() >= 1
    assert not overlapping.all()  # 'near', 'above', ... relate separate boxes


def test_predicates_are_long_tailed_with_near_synonyms(dataset):
    out, _ = dataset
    _, dicts, _ = read(out)
    counts = sorted(dicts["predicate_count"].values(), reverse=True)
    assert min(counts) >= 1  # every predicate class occurs
    assert counts[0] >= 8 * counts[-1]
    assert sum(counts[:3]) > 0.5 * sum(counts)  # a head of three predicates holds most relations
    for synonym in ("on top of", "next to"):
        assert dicts["predicate_count"][synonym] > 0
    most_common = max(dicts["predicate_count"], key=dicts["predicate_count"].get)
    assert most_common == "on"


def test_fewer_predicates_merge_into_their_parents(tmp_path):
    write_synthetic_vg(str(tmp_path), num_images=12, num_predicates=3, num_object_classes=4, image_size=96)
    h5, dicts, _ = read(str(tmp_path))
    assert set(dicts["predicate_to_idx"]) == {"on", "has", "near"}
    assert set(dicts["label_to_idx"]) == {"man", "table", "cup", "hat"}
    assert h5["predicates"].max() <= 3


def test_images_decode_with_the_listed_size(dataset):
    out, _ = dataset
    _, _, images = read(out)
    for entry in images[:10]:
        with Image.open(os.path.join(out, "VG_100K", f"{entry['image_id']}.jpg")) as image:
            assert image.format == "JPEG" and image.size == (entry["width"], entry["height"])
            assert max(image.size) == 96
            image.load()
    assert not {1592, 1722, 4616, 4617} & {entry["image_id"] for entry in images}


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    def files(out):
        result = {}
        for root, _, names in os.walk(out):
            for name in names:
                path = os.path.join(root, name)
                with open(path, "rb") as f:
                    result[os.path.relpath(path, out)] = f.read().replace(out.encode(), b"OUT")
        return result

    a, b, c = (str(tmp_path / name) for name in "abc")
    write_synthetic_vg(a, num_images=10, image_size=96, seed=7)
    write_synthetic_vg(b, num_images=10, image_size=96, seed=7)
    write_synthetic_vg(c, num_images=10, image_size=96, seed=8)
    assert files(a) == files(b)
    assert files(a)["VG-SGG-with-attri.h5"] != files(c)["VG-SGG-with-attri.h5"]


def load_catalog(out):
    spec = importlib.util.spec_from_file_location("synthetic_catalog", os.path.join(out, "paths_catalog.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_cfg(use_gt_box=True, require_overlap=True):
    head = SimpleNamespace(USE_GT_BOX=use_gt_box, REQUIRE_BOX_OVERLAP=require_overlap)
    return SimpleNamespace(MODEL=SimpleNamespace(RELATION_ON=True, FLIP_AUG=False, ROI_RELATION_HEAD=head),
                           TEST=SimpleNamespace(CUSTUM_EVAL=False, CUSTUM_PATH="."))


def test_catalog_serves_the_stock_dataset_names(dataset):
    out, _ = dataset
    catalog = load_catalog(out).DatasetCatalog
    for split in ("train", "val", "test"):
        data = catalog.get(f"VG_stanford_filtered_with_attribute_{split}", fake_cfg())
        args = data["args"]
        assert data["factory"] == "VGDataset" and args["split"] == split and args["num_val_im"] == 20
        assert {key: args[key] for key in ("img_dir", "roidb_file", "dict_file", "image_file")} == {
            "img_dir": os.path.join(out, "VG_100K"), "roidb_file": os.path.join(out, "VG-SGG-with-attri.h5"),
            "dict_file": os.path.join(out, "VG-SGG-dicts-with-attri.json"),
            "image_file": os.path.join(out, "image_data.json")}
        assert args["filter_non_overlap"] is False  # ground-truth boxes: no overlap filter
    assert catalog.get("VG_stanford_filtered_with_attribute_train", fake_cfg(use_gt_box=False))["args"]["filter_non_overlap"] is True
    with pytest.raises(RuntimeError, match="serves VG_stanford_filtered_with_attribute_train"):
        catalog.get("VG_stanford_filtered_train", fake_cfg())


def test_dataset_opts_name_the_catalog_and_class_counts(dataset):
    out, _ = dataset
    with open(os.path.join(out, "dataset.opts")) as f:
        opts = dict(line.split() for line in f)
    assert opts == {"PATHS_CATALOG": os.path.join(out, "paths_catalog.py"),
                    "MODEL.ROI_BOX_HEAD.NUM_CLASSES": "16", "MODEL.ROI_RELATION_HEAD.NUM_CLASSES": "11",
                    "MODEL.ROI_ATTRIBUTE_HEAD.NUM_ATTRIBUTES": "15"}


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_object_classes=3), "num_object_classes=3"),
    (dict(num_predicates=13), "num_predicates=13"),
    (dict(test_fraction=1.0), "test_fraction=1.0"),
    (dict(num_images=2), "num_images=2"),
    (dict(num_val_images=200), "num_val_images=200"),
])
def test_bad_arguments_name_the_argument(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        write_synthetic_vg(str(tmp_path / "out"), **kwargs)
    assert not (tmp_path / "out").exists()


def test_refuses_a_non_empty_folder_without_overwrite(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="overwrite"):
        write_synthetic_vg(str(tmp_path), num_images=4)


def test_cli_writes_a_dataset_and_reports_errors(tmp_path, capsys):
    out = str(tmp_path / "cli")
    assert cli.main(["make-synthetic-vg", out, "--num-images", "6", "--image-size", "96", "--seed", "1"]) == 0
    assert "train" in capsys.readouterr().out
    assert len(read(out)[2]) == 6
    assert cli.main(["make-synthetic-vg", out, "--num-images", "6"]) == 2
    assert "not empty" in capsys.readouterr().err


# ---------------------------------------------------------------- the bench preset

BENCH_MARKERS = {"window": "home", "tree": "park", "car": "street"}


@pytest.fixture(scope="module")
def bench_dataset(tmp_path_factory):
    """The bench preset at half its size and tiny images (scenes are drawn the same way; seconds)."""
    out = str(tmp_path_factory.mktemp("benchvg"))
    summary = write_synthetic_vg(out, preset="bench", num_images=2000, image_size=64, seed=0)
    return out, summary


def _relations_with_context(out):
    """Per relation: (subject class, object class, predicate, the image's scene marker classes)."""
    h5, dicts, _ = read(out)
    names = {int(i): n for i, n in dicts["idx_to_label"].items()}
    predicates = {int(i): n for i, n in dicts["idx_to_predicate"].items()}
    labels = h5["labels"][:, 0]
    rows = []
    for first_box, last_box, first_rel, last_rel in zip(h5["img_to_first_box"], h5["img_to_last_box"],
                                                        h5["img_to_first_rel"], h5["img_to_last_rel"]):
        markers = {names[c] for c in labels[first_box:last_box + 1]} & set(BENCH_MARKERS)
        for r in range(first_rel, last_rel + 1):
            subject, obj = h5["relationships"][r]
            rows.append((names[labels[subject]], names[labels[obj]], predicates[h5["predicates"][r, 0]], markers))
    return rows


def test_bench_preset_sizes_and_a_steep_long_tail(bench_dataset):
    out, summary = bench_dataset
    _, dicts, _ = read(out)
    assert len(dicts["predicate_to_idx"]) == 21 and len(dicts["label_to_idx"]) == 20
    with open(os.path.join(out, "stats.json")) as f:
        stats = json.load(f)
    train = stats["predicates"]["count"]["train"]
    assert list(train) == sorted(train, key=train.get, reverse=True)  # most frequent first
    counts = list(train.values())
    assert min(counts) >= 10  # every predicate is learnable and testable
    assert counts[0] / counts[-1] >= 50 and stats["predicates"]["most_over_least_train"] == counts[0] / counts[-1]
    assert min(stats["predicates"]["count"]["test"].values()) >= 3
    # The counts are the h5's: train + val + test = the dictionary's counts over all images.
    for name, total in dicts["predicate_count"].items():
        assert sum(stats["predicates"]["count"][part][name] for part in ("train", "val", "test")) == total
    assert stats["images"] == {"train": summary["num_train"], "val": summary["num_val"], "test": summary["num_test"]}
    assert stats["settings"]["preset"] == "bench"


def test_bench_preset_near_synonyms_join_the_same_kinds_of_objects(bench_dataset):
    """A rare near-synonym is drawn for the same (subject role, object role) pairs as its common
    twin ('on top of' / 'on': a holdable on a support), so only statistics tell them apart."""
    role = dict(OBJECT_VOCABULARY)
    rows = _relations_with_context(bench_dataset[0])
    pairs = {}
    for subject, obj, predicate, _ in rows:
        pairs.setdefault(predicate, set()).add((role[subject], role[obj]))
    assert pairs["on top of"] == {("holdable", "support")}
    for common, rare in (("on", "on top of"), ("next to", "beside"), ("above", "over"), ("has", "with"),
                         ("near", "next to")):
        assert pairs[rare] <= pairs[common], (common, rare)


def test_bench_preset_predicates_that_only_context_decides(bench_dataset):
    """For the same subject and object classes, the scene marker (another object in the image)
    decides the predicate: knowing it makes the best guess right far more often."""
    rows = _relations_with_context(bench_dataset[0])
    assert all(len(markers) == 1 for *_, markers in rows)  # one scene marker per image
    people = {"man", "woman"}
    contextual = [r for r in rows if r[0] in people and r[2] in
                  ("holding", "carrying", "throwing", "watching", "playing with", "walking")]
    assert len(contextual) > 500

    def best_guess_accuracy(key):
        table = {}
        for row in contextual:
            table.setdefault(key(row), []).append(row[2])
        return sum(max(values.count(p) for p in set(values)) for values in table.values()) / len(contextual)

    by_pair = best_guess_accuracy(lambda r: (r[0], r[1]))
    by_pair_and_scene = best_guess_accuracy(lambda r: (r[0], r[1], min(r[3])))
    assert by_pair < 0.65 and by_pair_and_scene > 0.95
    # e.g. a person and a dog: 'watching' at home, 'playing with' in the park, 'walking' in the street
    dog = {}
    for subject, obj, predicate, markers in rows:
        if subject in people and obj == "dog" and predicate != "near":
            dog.setdefault(BENCH_MARKERS[min(markers)], set()).add(predicate)
    assert dog == {"home": {"watching"}, "park": {"playing with"}, "street": {"walking"}}


def test_bench_preset_is_deterministic_and_checked(tmp_path):
    write_synthetic_vg(str(tmp_path / "a"), preset="bench", num_images=30, image_size=64, seed=5)
    write_synthetic_vg(str(tmp_path / "b"), preset="bench", num_images=30, image_size=64, seed=5)
    for name in ("VG-SGG-with-attri.h5", "VG-SGG-dicts-with-attri.json", "stats.json", "VG_100K/1.jpg"):
        with open(tmp_path / "a" / name, "rb") as a, open(tmp_path / "b" / name, "rb") as b:
            assert a.read() == b.read(), name
    with pytest.raises(ValueError, match="scene markers .* need at least 15 object classes"):
        write_synthetic_vg(str(tmp_path / "c"), preset="bench", num_object_classes=10, num_images=30)
    with pytest.raises(ValueError, match="num_predicates=13: choose between 1 and 12"):
        write_synthetic_vg(str(tmp_path / "d"), num_predicates=13, num_images=30)
    with pytest.raises(ValueError, match="preset='huge'"):
        write_synthetic_vg(str(tmp_path / "e"), preset="huge")


def test_cli_bench_preset_states_its_frequencies(tmp_path, capsys):
    assert cli.main(["make-synthetic-vg", str(tmp_path / "d"), "--preset", "bench", "--num-images", "40",
                     "--image-size", "64"]) == 0
    out = capsys.readouterr().out
    assert "training predicates most / least frequent:" in out or "some predicate has no training relation" in out
    assert f"class and predicate counts per split: {tmp_path / 'd' / 'stats.json'}" in out
    with open(tmp_path / "d" / "stats.json") as f:
        assert json.load(f)["settings"]["num_images"] == 40
