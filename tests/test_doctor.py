"""``sgg-plugins doctor``: one table, a verdict a line, exit 1 on failure; datasets good and broken."""

import shutil

import h5py
import pytest
import torch

from conftest import SGB_ROOT, needs_sgb
from sgg_plugins import cli
from sgg_plugins.data.synthetic_vg import write_synthetic_vg

REGENERATE = "regenerate the file, or point PATHS_CATALOG at a good copy"


@pytest.fixture(scope="module")
def good_vg(tmp_path_factory):
    out = tmp_path_factory.mktemp("doctor") / "good"
    write_synthetic_vg(str(out), num_images=12, seed=3, image_size=64)
    return out


@pytest.fixture
def broken(good_vg, tmp_path):
    folder = tmp_path / "broken"
    shutil.copytree(good_vg, folder)
    return folder


def doctor(capsys, *argv):
    code = cli.main(["doctor", *argv])
    return code, capsys.readouterr().out.splitlines()


def verdict_lines(lines, verdict):
    """The lines of ``verdict``, with the table's column padding collapsed to single spaces."""
    return [" ".join(line.split()) for line in lines if line.startswith(verdict + " ")]


def test_good_dataset_passes_every_check(good_vg, capsys):
    code, lines = doctor(capsys, "--no-host", "--data", str(good_vg))
    assert code == 0 and lines[-1] == "all checks passed"
    assert not verdict_lines(lines, "fail") and not verdict_lines(lines, "warn")
    checked = " ".join(lines)
    for aspect in ("opens, 10 fields read to the end", "shapes", "index ranges", "VG-SGG-dicts-with-attri.json",
                   "boxes", "all 12 present and readable at their listed sizes", "GPUs"):
        assert aspect in checked


def test_truncated_h5(broken, capsys):
    h5_file = broken / "VG-SGG-with-attri.h5"
    data = h5_file.read_bytes()
    h5_file.write_bytes(data[: len(data) // 2])
    code, lines = doctor(capsys, "--no-host", "--data", str(broken))
    assert code == 1 and lines[-1] == "1 check(s) failed"
    (failure,) = verdict_lines(lines, "fail")
    assert failure.startswith(f"fail {broken}: VG-SGG-with-attri.h5 cannot be read")
    assert "cannot be read (truncated file: eof = " in failure
    assert failure.endswith(f"truncated or not HDF5; {REGENERATE}")


def test_image_box_range_past_the_box_array(broken, capsys):
    with h5py.File(broken / "VG-SGG-with-attri.h5", "r+") as h5:
        num_boxes = h5["labels"].shape[0]
        h5["img_to_last_box"][-1] = num_boxes + 3  # the last image claims boxes that do not exist
        last_image = h5["split"].shape[0] - 1
    code, lines = doctor(capsys, "--no-host", "--data", str(broken))
    (failure,) = verdict_lines(lines, "fail")
    assert code == 1
    assert failure.endswith(f"VG-SGG-with-attri.h5 img_to_first_box/img_to_last_box image rows {last_image} (1 in "
                            f"all) index outside the {num_boxes} box rows (or last < first); {REGENERATE}")


def test_missing_image(broken, capsys):
    (broken / "VG_100K" / "7.jpg").unlink()
    code, lines = doctor(capsys, "--no-host", "--data", str(broken))
    (failure,) = verdict_lines(lines, "fail")
    assert code == 1
    assert failure.endswith(f"images 1 of 12 listed images are missing (first: {broken / 'VG_100K' / '7.jpg'}): "
                            "fix img_dir in PATHS_CATALOG or restore the files")


def test_unreadable_image(broken, capsys):
    (broken / "VG_100K" / "7.jpg").write_bytes(b"not a jpeg")
    code, lines = doctor(capsys, "--no-host", "--data", str(broken))
    (failure,) = verdict_lines(lines, "fail")
    assert code == 1 and f"{broken / 'VG_100K' / '7.jpg'} cannot be read (UnidentifiedImageError" in failure


def test_label_outside_the_dictionary(broken, capsys):
    with h5py.File(broken / "VG-SGG-with-attri.h5", "r+") as h5:
        h5["labels"][2, 0] = 99
    code, lines = doctor(capsys, "--no-host", "--data", str(broken))
    (failure,) = verdict_lines(lines, "fail")
    assert code == 1 and failure.endswith(
        "VG-SGG-with-attri.h5 labels rows 2 (1 in all) hold values outside 1..15, the range "
        "VG-SGG-dicts-with-attri.json defines; the h5 and the dicts do not match")


def test_without_a_host_the_host_line_fails_and_says_how(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("SGB_ROOT", str(tmp_path / "nowhere"))
    code, lines = doctor(capsys)
    (failure,) = verdict_lines(lines, "fail")
    assert code == 1 and failure.startswith("fail host") and "--host-root PATH or by setting SGB_ROOT" in failure


@needs_sgb
def test_config_datasets_class_counts_and_glove(good_vg, capsys):
    from sgg_plugins.hosts.sgb.overlay import overlay_opts

    opts = [*overlay_opts(str(good_vg / "dataset.opts")), "MODEL.ROI_RELATION_HEAD.PREDICTOR", "MotifPredictor",
            "GLOVE_DIR", str(good_vg / "no_glove_here")]
    code, lines = doctor(capsys, "--host-root", SGB_ROOT, "--config-file",
                         f"{SGB_ROOT}/configs/e2e_relation_X_101_32_8_FPN_1x.yaml", *opts)
    assert code == 0, "\n".join(lines)
    assert verdict_lines(lines, "ok")[0].startswith("ok host SGB checkout at")
    assert any(line.startswith("ok config ") for line in verdict_lines(lines, "ok"))
    assert any("VG_stanford_filtered_with_attribute_train: VG-SGG-dicts-with-attri.json" in line
               and "matches the config's class counts" in line for line in lines)
    warnings = verdict_lines(lines, "warn")
    assert any(line.startswith("warn GloVe no ") and "fixed random vectors" in line for line in warnings)
    if not torch.cuda.is_available():  # the stock config asks for cuda
        assert "warn GPUs none; MODEL.DEVICE cuda falls back to cpu (training is slow)" in warnings

    wrong_count = [*opts, "MODEL.ROI_RELATION_HEAD.NUM_CLASSES", "12"]
    code, lines = doctor(capsys, "--host-root", SGB_ROOT, "--config-file",
                         f"{SGB_ROOT}/configs/e2e_relation_X_101_32_8_FPN_1x.yaml", *wrong_count)
    (failure,) = verdict_lines(lines, "fail")
    assert code == 1 and failure.endswith(
        "MODEL.ROI_RELATION_HEAD.NUM_CLASSES is 12 but VG-SGG-dicts-with-attri.json defines 10 predicates + "
        "background = 11: set MODEL.ROI_RELATION_HEAD.NUM_CLASSES 11")
