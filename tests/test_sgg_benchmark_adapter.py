"""The Maelic/SGG-Benchmark adapter without the host: the objectives' nodes converted to lowercase
structured configs, validation in the host's spelling, the launcher's override handling, locating
the checkout, and the COCO-JSON layout of the synthetic data."""

import dataclasses
import json
import os

import h5py
import numpy as np
import pytest

from sgg_plugins.config import ALIGN_DEFAULTS, NODES, ConfigError
from sgg_plugins.hosts.structured_config import (
    UpperCaseView,
    extended_dataclass,
    lowercase_key_names,
    objective_dataclasses,
    validate_lowercase_nodes,
)


@dataclasses.dataclass
class HostModelConfig:  # the shape of the host's ModelConfig: its own keys, lowercase
    device: str = "cuda"
    relation_on: bool = True


def omegaconf():
    """OmegaConf, the host's config library (the sgg-benchmark extra), or a skip."""
    return pytest.importorskip("omegaconf", reason="needs omegaconf: pip install -e '.[sgg-benchmark]'")


def objective_schema():
    return omegaconf().OmegaConf.structured(extended_dataclass(HostModelConfig, objective_dataclasses()))


def test_every_node_and_default_comes_from_the_one_defaults_place():
    schema = objective_schema()
    for name, defaults in NODES.items():
        node = schema[name.lower()]
        assert dict(node) == {key.lower(): value for key, value in defaults.items()}
    assert schema.device == "cuda" and schema.relation_on is True  # the host's own keys kept
    assert extended_dataclass(HostModelConfig, {}).__name__ == "HostModelConfig"


def test_overrides_merge_with_the_schema_types():
    OmegaConf, ValidationError = omegaconf().OmegaConf, omegaconf().errors.ValidationError
    merged = OmegaConf.merge(objective_schema(), {"align": {"enabled": "true", "mask_prob": 0, "head": "tied"}})
    assert merged.align.enabled is True and merged.align.mask_prob == 0.0 and isinstance(merged.align.mask_prob, float)
    assert merged.align.weight == ALIGN_DEFAULTS["WEIGHT"]
    with pytest.raises(ValidationError):
        OmegaConf.merge(objective_schema(), {"align": {"mask_prob": "often"}})
    with pytest.raises(Exception, match="maskprob"):
        OmegaConf.merge(objective_schema(), {"align": {"maskprob": 0.2}})  # a typo is not a new key


def test_validators_read_lowercase_nodes_and_name_keys_as_the_host_spells_them():
    OmegaConf = omegaconf().OmegaConf
    validate_lowercase_nodes(objective_schema())
    with pytest.raises(ConfigError, match=r"^model\.align\.mask_prob = 1\.5 is not allowed; expected a number in \[0\.0, 1\.0\)"):
        validate_lowercase_nodes(OmegaConf.merge(objective_schema(), {"align": {"mask_prob": 1.5}}))
    with pytest.raises(ConfigError, match=r"^model\.align\.head = 'mlp' is not allowed"):
        validate_lowercase_nodes(OmegaConf.merge(objective_schema(), {"align": {"head": "mlp"}}))
    with pytest.raises(ConfigError, match=r"model\.rcl\.min_similarity .* model\.rcl\.synonym_threshold"):
        validate_lowercase_nodes(OmegaConf.merge(objective_schema(), {"rcl": {"min_similarity": 0.9}}))


def test_upper_case_view_reads_without_writing():
    view = UpperCaseView(omegaconf().OmegaConf.create({"align": {"mask_prob": 0.2}}))
    assert view.ALIGN.MASK_PROB == 0.2 and view["ALIGN"]["MASK_PROB"] == 0.2
    assert "ALIGN" in view and "RCL" not in view and view.ALIGN.keys() == ["MASK_PROB"]
    with pytest.raises(AttributeError):
        view.RCL
    with pytest.raises(TypeError):
        view.ALIGN.MASK_PROB = 0.3
    assert lowercase_key_names("MODEL.ALIGN.HEAD = 'X' (see MODEL.RCL.PROMPT)") == "model.align.head = 'X' (see model.rcl.prompt)"


def test_launcher_upserts_the_objectives_overrides_only():
    from sgg_plugins.hosts.sgg_benchmark.launch import host_arguments

    argv = ["--config-name", "MotifPredictor", "--task", "predcls", "model.align.enabled=true",
            "++model.align.weight=5", "+model.rcl.enabled=false", "solver.max_iter=2", "model.alignment=1"]
    assert host_arguments(argv) == ["--config-name", "MotifPredictor", "--task", "predcls",
                                    "++model.align.enabled=true", "++model.align.weight=5", "+model.rcl.enabled=false",
                                    "solver.max_iter=2", "model.alignment=1"]
    assert host_arguments(argv, plugin=False) == argv  # the vanilla host gets the command line as typed


@dataclasses.dataclass
class HostRootConfig:  # the host's root schema: its model node and a top-level key
    model: HostModelConfig = dataclasses.field(default_factory=HostModelConfig)
    output_dir: str = ""


def test_saved_run_configs_load_into_the_vanilla_schema_and_record_the_objectives(tmp_path):
    from sgg_plugins.hosts.sgg_benchmark.run_files import OBJECTIVES_FILE, _saving_in_the_vanilla_schema

    OmegaConf = omegaconf().OmegaConf
    plugged = OmegaConf.structured(extended_dataclass(
        HostRootConfig, {"model": extended_dataclass(HostModelConfig, objective_dataclasses())}))
    plugged = OmegaConf.merge(plugged, {"model": {"device": "cpu", "align": {"enabled": True}}})
    save = _saving_in_the_vanilla_schema(OmegaConf.save)
    save(plugged, tmp_path / "hydra_config.yaml")
    with open(tmp_path / "config.yml", "w") as f:  # the host's save_config passes a file object
        save(plugged, f)
    vanilla = OmegaConf.structured(HostRootConfig)
    for name in ("hydra_config.yaml", "config.yml"):
        loaded = OmegaConf.merge(vanilla, OmegaConf.load(tmp_path / name))  # what the vanilla host does
        assert loaded.model.device == "cpu" and "align" not in loaded.model
    recorded = OmegaConf.load(tmp_path / OBJECTIVES_FILE)
    assert recorded.model.align.enabled is True and set(recorded.model) == {n.lower() for n in NODES}
    assert plugged.model.align.enabled  # the run's own config keeps its nodes
    save(vanilla, tmp_path / "plain.yaml")  # a config without the nodes is saved as it is
    assert OmegaConf.load(tmp_path / "plain.yaml") == vanilla


def make_fake_checkout(root):
    for path in ("sgg_benchmark/config/hydra_config.py", "tools/relation_train_net_hydra.py"):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text("")
    (root / "sgg_benchmark" / "__init__.py").write_text("")
    return root


def test_locating_the_checkout(tmp_path, monkeypatch):
    from sgg_plugins.hosts.locate import HostNotFoundError
    from sgg_plugins.hosts.sgg_benchmark import locate_host

    checkout = make_fake_checkout(tmp_path / "SGG-Benchmark")
    monkeypatch.setenv("SGGB_ROOT", str(checkout))
    assert locate_host() == checkout.resolve()
    (tmp_path / "other").mkdir()
    with pytest.raises(HostNotFoundError, match=r"SGG-Benchmark host from --host-root is unusable: .* has no "
                                                r"sgg_benchmark/config/hydra_config.py .*SGGB_ROOT=PATH"):
        locate_host(tmp_path / "other")
    monkeypatch.delenv("SGGB_ROOT")
    monkeypatch.syspath_prepend(str(checkout))
    assert locate_host() == checkout.resolve()  # the importable sgg_benchmark, found without importing it


@pytest.fixture(scope="module")
def coco_dataset(tmp_path_factory):
    from sgg_plugins.data.synthetic_vg import write_synthetic_vg

    out = tmp_path_factory.mktemp("coco") / "data"
    summary = write_synthetic_vg(str(out), num_images=30, image_size=96, seed=1, coco_layout=True)
    return out, summary


def test_coco_layout_has_the_hosts_splits_and_fields(coco_dataset):
    out, summary = coco_dataset
    stats = json.loads((out / "stats.json").read_text())
    for part in ("train", "val", "test"):
        coco = json.loads((out / part / "_annotations.coco.json").read_text())
        assert len(coco["images"]) == stats["images"][part] == summary["coco_images"][part]
        assert [c["id"] for c in coco["categories"]] == list(range(1, len(coco["categories"]) + 1))
        assert [c["id"] for c in coco["rel_categories"]] == list(range(1, len(coco["rel_categories"]) + 1))
        ids = {a["id"] for a in coco["annotations"]}
        for image in coco["images"]:
            assert (out / part / image["file_name"]).is_file()
        for relation in coco["rel_annotations"]:
            assert relation["subject_id"] in ids and relation["object_id"] in ids
        counted = {}
        for relation in coco["rel_annotations"]:
            name = coco["rel_categories"][relation["predicate_id"] - 1]["name"]
            counted[name] = counted.get(name, 0) + 1
        assert counted == {k: v for k, v in stats["predicates"]["count"][part].items() if v}
    overrides = (out / "sgg_benchmark.overrides").read_text().split()
    assert "++datasets.type=coco" in overrides and f"++datasets.data_dir={out}" in overrides


def test_text_sources_of_the_coco_layout_are_sgbs_classes_and_triplets(coco_dataset):
    """RCL's and CLIPMATCH's sources read from the host's COCO JSON equal what SGB's reader finds in the
    VG files: the same label numbers and, over train and val (SGB's training split), every relation."""
    import torch

    from sgg_plugins.hosts.sgg_benchmark.text_sources import read_coco_scene_graphs
    from sgg_plugins.text.vg_files import read_vg_classes, read_vg_training_triplets

    out, _ = coco_dataset
    train = read_coco_scene_graphs(out / "train" / "_annotations.coco.json")
    val = read_coco_scene_graphs(out / "val" / "_annotations.coco.json")
    assert train[:2] == val[:2] == read_vg_classes(out / "VG-SGG-dicts-with-attri.json")
    ours = torch.cat([val[2], train[2]])
    sgb = read_vg_training_triplets(str(out / "VG-SGG-with-attri.h5"))
    assert sorted(map(tuple, ours.tolist())) == sorted(map(tuple, sgb.tolist())) and len(ours) > 0


def test_coco_boxes_are_sgbs_boxes_in_pixels(coco_dataset):
    out, _ = coco_dataset
    with h5py.File(out / "VG-SGG-with-attri.h5") as h5:
        boxes_1024 = h5["boxes_1024"][()]
    images = {i["image_id"]: i for i in json.loads((out / "image_data.json").read_text())}
    coco = json.loads((out / "train" / "_annotations.coco.json").read_text())
    for annotation in coco["annotations"][:20]:
        image = images[annotation["image_id"]]
        cx, cy, w, h = boxes_1024[annotation["id"] - 1]
        scale = max(image["width"], image["height"]) / 1024
        expected = np.array([cx - w / 2, cy - h / 2, w, h]) * scale
        np.testing.assert_allclose(annotation["bbox"], expected, rtol=1e-9)
        x, y, bw, bh = annotation["bbox"]
        assert 0 <= x and 0 <= y and x + bw <= image["width"] + 1e-6 and y + bh <= image["height"] + 1e-6


def test_cli_flag_writes_the_coco_layout(tmp_path, capsys):
    from sgg_plugins.data.synthetic_vg import add_arguments, run
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert run(parser.parse_args([str(tmp_path / "d"), "--num-images", "12", "--image-size", "64", "--coco"])) == 0
    assert "SGG-Benchmark's COCO-JSON layout" in capsys.readouterr().out
    assert os.path.isfile(tmp_path / "d" / "test" / "_annotations.coco.json")
    assert run(parser.parse_args([str(tmp_path / "e"), "--num-images", "12", "--image-size", "64"])) == 0
    assert not os.path.exists(tmp_path / "e" / "train") and not os.path.exists(tmp_path / "e" / "sgg_benchmark.overrides")
