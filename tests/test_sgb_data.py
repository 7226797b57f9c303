"""The SGB data shims, the synthetic catalog read by the host's own VGDataset, and the CPU overlay.

The tests marked ``needs_sgb`` install the real host from $SGB_ROOT into this process.
"""

import json
import logging
import os
import shutil

import h5py
import numpy as np
import pytest
import torch
from yacs.config import CfgNode

from sgg_plugins.data.synthetic_vg import write_synthetic_vg
from sgg_plugins.hosts.sgb.data import HashedWordVectors
from sgg_plugins.hosts.sgb.overlay import overlay_opts

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OVERLAY_YAML = os.path.join(REPO, "configs", "sgb", "synthetic_cpu.yaml")
OVERLAY_OPTS = os.path.join(REPO, "configs", "sgb", "synthetic_cpu.opts")
STOCK_CONFIG = "configs/e2e_relation_X_101_32_8_FPN_1x.yaml"
NUM_VAL = 4

needs_sgb = pytest.mark.skipif(not os.environ.get("SGB_ROOT"), reason="needs an SGB checkout: set SGB_ROOT")


# ---------------------------------------------------------------------------------------------
# host-free


def test_overlay_yaml_and_opts_files_agree():
    assert overlay_opts(OVERLAY_YAML) == overlay_opts(OVERLAY_OPTS)


def test_overlay_values_decode_as_yacs_decodes_the_yaml(tmp_path):
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("A:\n  B: (256,)\n  C: ''\n  D: [1.5, 2]\n  E: cpu\nF: 'True'\nG: \"'True'\"\n")
    opts = overlay_opts(str(overlay))
    assert opts[::2] == ["A.B", "A.C", "A.D", "A.E", "F", "G"]
    assert all(value and not any(c.isspace() for c in value) for value in opts[1::2])  # safe in $(cat FILE)
    decoded = [CfgNode._decode_cfg_value(value) for value in opts[1::2]]
    assert decoded == [(256,), "", (1.5, 2), "cpu", True, "True"]


def test_overlay_opts_file_errors_name_the_line(tmp_path):
    bad = tmp_path / "bad.opts"
    bad.write_text("SOLVER.MAX_ITER 20\nSOLVER.STEPS (10, 20)\n")
    with pytest.raises(ValueError, match=r"bad.opts:2: expected 'KEY VALUE'"):
        overlay_opts(str(bad))
    with pytest.raises(FileNotFoundError, match="missing.opts"):
        overlay_opts(str(tmp_path / "missing.opts"))


class ShareOfRankOne(torch.utils.data.Sampler):
    """What the host's DistributedSampler hands rank 1 of 2 over four images, unshuffled."""

    num_replicas = 2

    def __iter__(self):
        return iter([2, 3])

    def __len__(self):
        return 2


def test_grouped_batches_see_only_groups_with_images_in_this_ranks_share():
    from sgg_plugins.hosts.sgb.data import _groups_with_sampled_images

    seen = []

    class Batcher:  # the attributes of the host's GroupedBatchSampler that the wrapper reads
        groups = torch.tensor([0, 1])
        group_ids = torch.tensor([0, 0, 1, 1])  # images 0 and 1 are wide, 2 and 3 tall
        sampler = ShareOfRankOne()

        def _prepare_batches(self):
            seen.append(self.groups.tolist())
            return [[2, 3]]

    Batcher._prepare_batches = _groups_with_sampled_images(Batcher._prepare_batches)
    batcher = Batcher()
    assert batcher._prepare_batches() == [[2, 3]]
    assert seen == [[1]]  # group 0 has no image on this rank: an empty split would break the host
    assert batcher.groups.tolist() == [0, 1]  # restored after the call
    batcher.sampler = torch.utils.data.SequentialSampler(range(4))
    batcher._prepare_batches()
    assert seen[-1] == [0, 1]  # a whole-dataset sampler: the host's method unchanged


def test_hashed_word_vectors_are_fixed_per_word():
    table = HashedWordVectors(50)
    assert table.get("cup") == "cup"  # a word is its own index
    cup = table[table.get("cup")]
    assert cup.shape == (50,) and torch.equal(cup, HashedWordVectors(50)["cup"])
    assert not torch.equal(cup, table["dog"])
    torch.manual_seed(0)  # independent of the global generator
    assert torch.equal(cup, table["cup"])


# ---------------------------------------------------------------------------------------------
# with the real host


@pytest.fixture(scope="module")
def host():
    from sgg_plugins.hosts.sgb import install

    root = install(os.environ["SGB_ROOT"])
    from maskrcnn_benchmark.data.datasets import visual_genome
    from maskrcnn_benchmark.modeling.roi_heads.relation_head import utils_motifs

    return root, visual_genome, utils_motifs


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("synvg"))
    summary = write_synthetic_vg(out, num_images=30, image_size=128, seed=5, num_val_images=NUM_VAL, overwrite=True)
    return out, summary


def host_cfg(root, out, output_dir, *opts):
    """The host's config as its tools build it: stock YAML, then the overlay and dataset opts."""
    from maskrcnn_benchmark.config import cfg

    with open(os.path.join(out, "dataset.opts")) as f:
        dataset_opts = f.read().split()
    cfg = cfg.clone()
    cfg.merge_from_file(os.path.join(root, STOCK_CONFIG))
    cfg.merge_from_list(overlay_opts(OVERLAY_OPTS) + dataset_opts + ["OUTPUT_DIR", str(output_dir), *opts])
    return cfg


def build(cfg, split):
    from maskrcnn_benchmark.data import datasets as D
    from maskrcnn_benchmark.utils.imports import import_file

    catalog = import_file("maskrcnn_benchmark.config.paths_catalog", cfg.PATHS_CATALOG, True).DatasetCatalog
    data = catalog.get(f"VG_stanford_filtered_with_attribute_{split}", cfg)
    return getattr(D, data["factory"])(**data["args"])


def read_h5(out):
    with h5py.File(os.path.join(out, "VG-SGG-with-attri.h5"), "r") as f:
        return {key: f[key][:] for key in f.keys()}


def pixel_corners(h5, images, row):
    """The boxes of image ``row`` in pixels, computed from the h5 as the format defines them."""
    first, last = h5["img_to_first_box"][row], h5["img_to_last_box"][row]
    cx, cy, w, h = h5["boxes_1024"][first:last + 1].T.astype(np.float64)
    scale = max(images[row]["width"], images[row]["height"]) / 1024
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1) * scale


@needs_sgb
def test_overlay_merges_into_the_stock_config(host, synthetic, tmp_path):
    root, _, _ = host
    out, _ = synthetic
    cfg = host_cfg(root, out, tmp_path)
    assert cfg.INPUT.MIN_SIZE_TRAIN == (256,) and cfg.MODEL.WEIGHT == "" and cfg.MODEL.DEVICE == "cpu"
    assert list(cfg.INPUT.PIXEL_STD) == [57.375, 57.12, 58.395]
    assert cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES == 16 and cfg.MODEL.ROI_RELATION_HEAD.NUM_CLASSES == 11
    assert cfg.PATHS_CATALOG == os.path.join(out, "paths_catalog.py")


@needs_sgb
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_host_vgdataset_reads_every_split(host, synthetic, tmp_path, split):
    root, _, _ = host
    out, summary = synthetic
    dataset = build(host_cfg(root, out, tmp_path), split)
    assert len(dataset) == summary[f"num_{split}"]

    h5 = read_h5(out)
    with open(os.path.join(out, "image_data.json")) as f:
        images = json.load(f)
    rows = np.where(h5["split"] == (2 if split == "test" else 0))[0]
    rows = {"train": rows[NUM_VAL:], "val": rows[:NUM_VAL], "test": rows}[split]
    for index in (0, len(dataset) - 1):
        row = rows[index]
        target = dataset.get_groundtruth(index, evaluation=True)
        assert target.size == (images[row]["width"], images[row]["height"])
        np.testing.assert_allclose(target.bbox.numpy(), pixel_corners(h5, images, row), atol=1e-4)
        first_box, first_rel, last_rel = h5["img_to_first_box"][row], h5["img_to_first_rel"][row], h5["img_to_last_rel"][row]
        np.testing.assert_array_equal(target.get_field("labels").numpy(), h5["labels"][first_box:first_box + len(target), 0])
        expected = np.column_stack([h5["relationships"][first_rel:last_rel + 1] - first_box,
                                    h5["predicates"][first_rel:last_rel + 1, 0]])
        np.testing.assert_array_equal(target.get_field("relation_tuple").numpy(), expected)
        image, _, _ = dataset[index]
        assert image.size == (images[row]["width"], images[row]["height"])


@needs_sgb
def test_overlap_filter_keeps_every_training_image(host, synthetic, tmp_path):
    root, _, _ = host
    out, summary = synthetic
    cfg = host_cfg(root, out, tmp_path, "MODEL.ROI_RELATION_HEAD.USE_GT_BOX", "False",
                   "MODEL.ROI_RELATION_HEAD.REQUIRE_BOX_OVERLAP", "True")
    dataset = build(cfg, "train")
    assert dataset.filter_non_overlap and len(dataset) == summary["num_train"]


@needs_sgb
def test_statistics_count_the_training_split_with_the_dataset_val_size(host, synthetic, tmp_path, caplog):
    from maskrcnn_benchmark.data.build import get_dataset_statistics

    root, _, _ = host
    out, _ = synthetic
    caplog.set_level(logging.INFO, logger="sgg_plugins")
    statistics = get_dataset_statistics(host_cfg(root, out, tmp_path))
    assert "num_val_im=4" in caplog.text

    # By hand: SGB's statistics count the training relations (after the validation images) whose
    # boxes overlap, with its +1 pixel convention.
    h5 = read_h5(out)
    expected = np.zeros(statistics["fg_matrix"].shape, dtype=np.int64)
    for row in np.where(h5["split"] == 0)[0][NUM_VAL:]:
        for rel in range(h5["img_to_first_rel"][row], h5["img_to_last_rel"][row] + 1):
            (s, o), predicate = h5["relationships"][rel], h5["predicates"][rel, 0]
            cs, co = h5["boxes_1024"][s].astype(float), h5["boxes_1024"][o].astype(float)
            gap = (cs[2:] + co[2:]) / 2 - np.abs(cs[:2] - co[:2]) + 1
            if (gap > 0).all():
                expected[h5["labels"][s, 0], h5["labels"][o, 0], predicate] += 1
    assert expected.sum() > 0
    np.testing.assert_array_equal(statistics["fg_matrix"].numpy()[:, :, 1:], expected[:, :, 1:])
    assert torch.isfinite(statistics["pred_dist"]).all()


@needs_sgb
def test_full_visual_genome_list_keeps_the_host_check(host, tmp_path, caplog):
    _, visual_genome, _ = host
    image_file = tmp_path / "image_data.json"
    image_file.write_text(json.dumps([{"image_id": i, "width": 1, "height": 1} for i in range(1, 108078)]))
    caplog.set_level(logging.INFO, logger="sgg_plugins")
    with pytest.raises(AssertionError):  # the host's own 108,073 check: none of these images exist
        visual_genome.load_image_filenames(str(tmp_path), str(image_file))
    assert "skipped" not in caplog.text


@needs_sgb
def test_missing_image_is_a_clear_error(host, synthetic, tmp_path):
    _, visual_genome, _ = host
    out, _ = synthetic
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    with open(copy / "image_data.json") as f:
        last_id = json.load(f)[-1]["image_id"]
    os.remove(copy / "VG_100K" / f"{last_id}.jpg")
    with pytest.raises(FileNotFoundError, match=rf"1 of the 30 images .* missing .*{last_id}\.jpg"):
        visual_genome.load_image_filenames(str(copy / "VG_100K"), str(copy / "image_data.json"))


@needs_sgb
def test_glove_text_file_is_read_by_the_host(host, tmp_path):
    _, _, utils_motifs = host
    cup = np.linspace(-1, 1, 50)
    (tmp_path / "glove.6B.50d.txt").write_text("cup " + " ".join(f"{v:.6f}" for v in cup) + "\n")
    vectors = utils_motifs.obj_edge_vectors(["cup"], wv_dir=str(tmp_path), wv_dim=50)
    np.testing.assert_allclose(vectors[0].numpy(), cup, atol=1e-6)
    assert (tmp_path / "glove.6B.50d.pt").exists()  # the host caches its parse, as before


@needs_sgb
def test_glove_fallback_is_logged_deterministic_and_never_downloads(host, tmp_path, monkeypatch, caplog):
    _, _, utils_motifs = host

    def no_download(*args, **kwargs):
        raise AssertionError("tried to download word vectors")

    monkeypatch.setattr(utils_motifs, "urlretrieve", no_download)
    caplog.set_level(logging.INFO, logger="sgg_plugins")
    first = utils_motifs.obj_edge_vectors(["cup", "dog"], wv_dir=str(tmp_path), wv_dim=200)
    second = utils_motifs.obj_edge_vectors(["dog", "cup"], wv_dir=str(tmp_path), wv_dim=200)
    assert torch.equal(first, second.flip(0))
    assert not torch.equal(first[0], first[1])
    assert "not downloading" in caplog.text and "glove.6B.200d" in caplog.text
    assert os.listdir(tmp_path) == []


@needs_sgb
def test_uninstall_restores_the_host_functions(host):
    from sgg_plugins.hosts.sgb.data import install_data_shims, uninstall_data_shims

    _, visual_genome, utils_motifs = host
    wrapped = (visual_genome.load_image_filenames, utils_motifs.load_word_vectors,
               visual_genome.VGDataset.get_statistics, visual_genome.VGDataset.__init__)
    uninstall_data_shims()
    try:
        restored = (visual_genome.load_image_filenames, utils_motifs.load_word_vectors,
                    visual_genome.VGDataset.get_statistics, visual_genome.VGDataset.__init__)
        assert all(r is w.sgg_plugins_original for r, w in zip(restored, wrapped))
        assert visual_genome.load_image_filenames.__module__ == visual_genome.__name__
    finally:
        install_data_shims()
    assert visual_genome.load_image_filenames.sgg_plugins_original is wrapped[0].sgg_plugins_original
