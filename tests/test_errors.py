"""Bad input stops before training with the one line a user sees (``sgg_plugins.hosts.sgb.preflight``).

Host-free tests drive the checks on a yacs config shaped like the host's; the host tests run the
real launcher and assert its last line of output, and that the host never started (it prints its
configuration first thing).
"""

import os
import subprocess

import h5py
import pytest
import torch
from yacs.config import CfgNode

from conftest import host_command, needs_sgb
from sgg_plugins.config import add_sgg_plugins_config
from sgg_plugins.data.synthetic_vg import write_synthetic_vg
from sgg_plugins.data.vg_check import VGFiles, check_vg_dataset, first_failure
from sgg_plugins.hosts.sgb.preflight import (PreflightError, check_batch_sizes, check_checkpoint,
                                             check_test_output_dir, merge_config)


def host_like_config():
    cfg = CfgNode({"OUTPUT_DIR": "", "MODEL": {"WEIGHT": "", "PRETRAINED_DETECTOR_CKPT": "",
                                                "ROI_RELATION_HEAD": {"PREDICTOR": "MotifPredictor"}},
                   "SOLVER": {"IMS_PER_BATCH": 12}, "TEST": {"IMS_PER_BATCH": 1}})
    return add_sgg_plugins_config(cfg)


def error_line(check, *args):
    with pytest.raises(PreflightError) as caught:
        check(*args)
    return str(caught.value)


def test_typo_in_a_key_suggests_the_key():
    line = error_line(merge_config, host_like_config(), "", ["MODEL.ALIGN.ENABLD", "True"])
    assert line == "MODEL.ALIGN.ENABLD is not a config key; did you mean MODEL.ALIGN.ENABLED?"


def test_typo_in_a_config_file_key_suggests_the_key(tmp_path):
    (tmp_path / "config.yaml").write_text("MODEL:\n  PROBE:\n    RANKK: 64\n")
    line = error_line(merge_config, host_like_config(), str(tmp_path / "config.yaml"), [])
    assert line == "MODEL.PROBE.RANKK is not a config key; did you mean MODEL.PROBE.RANK?"


def test_plugin_key_without_the_plugin_names_the_flag():
    cfg = CfgNode({"MODEL": {"WEIGHT": ""}})
    line = error_line(merge_config, cfg, "", ["MODEL.ALIGN.ENABLED", "True"], False)
    assert line == ("MODEL.ALIGN.ENABLED is a key of the plug-in, which --without-plugin leaves out: "
                    "drop the key or the flag")


def test_wrongly_typed_value_names_key_value_and_type():
    line = error_line(merge_config, host_like_config(), "", ["MODEL.ALIGN.MASK_PROB", "high"])
    assert line == ("MODEL.ALIGN.MASK_PROB = high is a str, but MODEL.ALIGN.MASK_PROB takes a float "
                    "(its value before this was 0.1)")


def test_odd_number_of_opts():
    line = error_line(merge_config, host_like_config(), "", ["MODEL.ALIGN.ENABLED"])
    assert line.startswith("in the command-line opts: Override list has odd length")
    assert line.endswith("opts are KEY VALUE pairs")


def test_missing_config_file(tmp_path):
    line = error_line(merge_config, host_like_config(), str(tmp_path / "nope.yaml"), [])
    assert line == f"--config-file {tmp_path / 'nope.yaml'} does not exist"


def test_batch_sizes_must_divide_among_processes():
    cfg = host_like_config()
    assert error_line(check_batch_sizes, cfg, "relation_train_net", 2) == (
        "TEST.IMS_PER_BATCH = 1 does not divide among the 2 processes: set it to a multiple of 2")
    check_batch_sizes(cfg, "relation_train_net", 1)


def test_missing_checkpoint_named_in_last_checkpoint(tmp_path):
    cfg = host_like_config()
    cfg.OUTPUT_DIR = str(tmp_path)
    (tmp_path / "last_checkpoint").write_text(str(tmp_path / "model_0000010.pth"))
    pointer = tmp_path / "last_checkpoint"
    assert error_line(check_checkpoint, cfg, "relation_train_net") == (
        f"{pointer} names '{tmp_path / 'model_0000010.pth'}', which does not exist: restore that file, write the "
        f"path of a good checkpoint into {pointer}, or delete {pointer} to start from MODEL.PRETRAINED_DETECTOR_CKPT")


def test_truncated_checkpoint_named_in_last_checkpoint(tmp_path):
    cfg = host_like_config()
    cfg.OUTPUT_DIR = str(tmp_path)
    checkpoint = tmp_path / "model_final.pth"
    torch.save({"model": {"w": torch.zeros(1000)}}, checkpoint)
    (tmp_path / "last_checkpoint").write_text(str(checkpoint))
    check_checkpoint(cfg, "relation_test_net")  # complete: no error
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[: len(data) // 2])  # an interrupted copy
    pointer = tmp_path / "last_checkpoint"
    assert error_line(check_checkpoint, cfg, "relation_test_net") == (
        f"{pointer} names '{checkpoint}', which is truncated or not a PyTorch file (no zip directory, no pickle "
        f"header): restore that file, write the path of a good checkpoint into {pointer}, or delete {pointer} "
        "to start from MODEL.WEIGHT")


def test_corrupt_checkpoint_member_fails_its_checksum(tmp_path):
    cfg = host_like_config()
    checkpoint = tmp_path / "weights.pth"
    torch.save({"w": torch.zeros(1000)}, checkpoint)
    data = bytearray(checkpoint.read_bytes())
    data[data.index(bytes(64)) + 10] = 1  # one flipped byte inside the tensor data
    checkpoint.write_bytes(bytes(data))
    cfg.MODEL.WEIGHT = str(checkpoint)
    line = error_line(check_checkpoint, cfg, "relation_test_net")
    assert line.startswith(f"MODEL.WEIGHT = '{checkpoint}' is corrupt (member ") and line.endswith(
        "fails its checksum): fix the path or give MODEL.WEIGHT ''")


def test_test_output_dir_that_does_not_exist(tmp_path):
    cfg = host_like_config()
    cfg.OUTPUT_DIR = str(tmp_path / "motifs_typo")
    check_test_output_dir(cfg, "relation_train_net")  # training creates it
    assert error_line(check_test_output_dir, cfg, "relation_test_net") == (
        f"OUTPUT_DIR {tmp_path / 'motifs_typo'} does not exist: the test script evaluates the checkpoint named in "
        "OUTPUT_DIR/last_checkpoint (else MODEL.WEIGHT) and writes its results there; point OUTPUT_DIR at the "
        "training run's folder, or create it to evaluate MODEL.WEIGHT")


@pytest.fixture(scope="module")
def small_vg(tmp_path_factory):
    out = tmp_path_factory.mktemp("vg") / "data"
    write_synthetic_vg(str(out), num_images=12, seed=1, image_size=64)
    return out


def vg_files(folder):
    return VGFiles(str(folder / "VG-SGG-with-attri.h5"), str(folder / "VG-SGG-dicts-with-attri.json"),
                   str(folder / "image_data.json"), str(folder / "VG_100K"))


def test_relation_pointing_past_the_boxes(small_vg, tmp_path):
    import shutil

    folder = tmp_path / "data"
    shutil.copytree(small_vg, folder)
    with h5py.File(folder / "VG-SGG-with-attri.h5", "r+") as h5:
        num_boxes = h5["labels"].shape[0]
        h5["relationships"][3, 1] = num_boxes + 5
        first_box, last_box = h5["img_to_first_box"][()], h5["img_to_last_box"][()]
        first_rel = h5["img_to_first_rel"][()]
        subject = h5["relationships"][3, 0]
    image = max(i for i in range(len(first_rel)) if 0 <= first_rel[i] <= 3)
    failure = first_failure(check_vg_dataset(vg_files(folder)))
    assert failure.line() == (
        f"VG-SGG-with-attri.h5 relationships: relation row 3 (image row {image}) points at box rows "
        f"[{subject}, {num_boxes + 5}], outside that image's boxes {first_box[image]}..{last_box[image]} (1 such "
        "relations): relations point past the box arrays; regenerate the file, or point PATHS_CATALOG at a good copy")


# ---------------------------------------------------------------------------------------------
# through the real launcher


def launcher_error(synthetic_vg, tmp_path, script, opts):
    cmd = host_command(synthetic_vg, script, "MotifPredictor", "predcls", opts, tmp_path / "out")
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "Running with config" not in result.stdout + result.stderr
    return result.stderr.strip().splitlines()[-1]


@needs_sgb
def test_launcher_typo_stops_before_the_host_prints_its_config(synthetic_vg, tmp_path):
    assert launcher_error(synthetic_vg, tmp_path, "relation_train_net", ["MODEL.ALIGN.ENABLD", "True"]) == (
        "error: MODEL.ALIGN.ENABLD is not a config key; did you mean MODEL.ALIGN.ENABLED?")


@needs_sgb
def test_launcher_unknown_predictor(synthetic_vg, tmp_path):
    line = launcher_error(synthetic_vg, tmp_path, "relation_train_net",
                          ["MODEL.ROI_RELATION_HEAD.PREDICTOR", "AlignFooPredictor"])
    assert line.startswith("error: MODEL.ROI_RELATION_HEAD.PREDICTOR = 'AlignFooPredictor' is not a registered "
                           "predictor; did you mean AlignMotifPredictor? registered: ")
    assert "MotifPredictor" in line and line.endswith("(Align<Name> switches MODEL.ALIGN on)")


@needs_sgb
def test_launcher_checks_the_dataset_before_building(synthetic_vg, tmp_path):
    import shutil

    folder = tmp_path / "data"
    shutil.copytree(synthetic_vg, folder)
    (folder / "VG_100K" / "5.jpg").unlink()
    # The catalog serves the files next to it: the copy, with one image gone.
    line = launcher_error(synthetic_vg, tmp_path, "relation_train_net",
                          ["PATHS_CATALOG", str(folder / "paths_catalog.py")])
    assert line.startswith("error: dataset VG_stanford_filtered_with_attribute_train: images: 1 of ")
    assert line.endswith(f"listed images are missing (first: {folder / 'VG_100K' / '5.jpg'}): fix img_dir in "
                         "PATHS_CATALOG or restore the files")


def test_test_script_with_nothing_to_test(tmp_path):
    cfg = host_like_config()
    cfg.OUTPUT_DIR = str(tmp_path)
    check_checkpoint(cfg, "relation_train_net")  # training starts from scratch
    assert error_line(check_checkpoint, cfg, "relation_test_net") == (
        f"nothing to test: OUTPUT_DIR '{tmp_path}' has no last_checkpoint and MODEL.WEIGHT is '', so the host "
        "would evaluate a randomly initialised model; point OUTPUT_DIR at the training run's folder, or give "
        "MODEL.WEIGHT the checkpoint to evaluate")


def launcher_result(synthetic_vg, tmp_path, script, opts, out):
    """(exit status, last line of stderr) of a launcher run that must stop before the host starts."""
    cmd = host_command(synthetic_vg, script, "MotifPredictor", "predcls", opts, out)
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert "Traceback" not in result.stderr and "Running with config" not in result.stdout + result.stderr
    return result.returncode, result.stderr.strip().splitlines()[-1]


@needs_sgb
def test_launcher_refuses_to_test_a_random_model(synthetic_vg, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    assert launcher_result(synthetic_vg, tmp_path, "relation_test_net", [], out) == (1, (
        f"error: nothing to test: OUTPUT_DIR '{out}' has no last_checkpoint and MODEL.WEIGHT is '', so the host "
        "would evaluate a randomly initialised model; point OUTPUT_DIR at the training run's folder, or give "
        "MODEL.WEIGHT the checkpoint to evaluate"))


@needs_sgb
def test_launcher_decodes_the_images_before_training(synthetic_vg, tmp_path):
    import shutil

    folder = tmp_path / "data"
    shutil.copytree(synthetic_vg, folder)
    (folder / "VG_100K" / "5.jpg").write_bytes(b"not a jpeg")
    status, line = launcher_result(synthetic_vg, tmp_path, "relation_train_net",
                                   ["PATHS_CATALOG", str(folder / "paths_catalog.py")], tmp_path / "out")
    assert (status, line) == (1, (
        f"error: dataset VG_stanford_filtered_with_attribute_train: images: {folder / 'VG_100K' / '5.jpg'} cannot "
        "be read (UnidentifiedImageError: cannot identify image file): restore it"))
