"""Finding the SGB checkout: --host-root, then SGB_ROOT, then an importable maskrcnn_benchmark."""

import sys

import pytest

from sgg_plugins.hosts import locate
from sgg_plugins.hosts.locate import HostNotFoundError, locate_host


def make_fake_host(root, with_tools=True):
    (root / "maskrcnn_benchmark").mkdir(parents=True)
    (root / "maskrcnn_benchmark" / "__init__.py").write_text("")
    if with_tools:
        (root / "tools").mkdir()
        (root / "tools" / "relation_train_net.py").write_text("")
    return root


@pytest.fixture
def no_host_in_environment(monkeypatch):
    monkeypatch.delenv("SGB_ROOT", raising=False)
    monkeypatch.delitem(sys.modules, "maskrcnn_benchmark", raising=False)


def test_explicit_root_wins_over_the_environment(tmp_path, monkeypatch):
    explicit = make_fake_host(tmp_path / "explicit")
    monkeypatch.setenv("SGB_ROOT", str(make_fake_host(tmp_path / "from_env")))
    assert locate_host(explicit) == explicit.resolve()
    assert locate_host(str(tmp_path / "explicit" / ".." / "explicit")) == explicit.resolve()


def test_sgb_root_is_used_without_an_explicit_root(tmp_path, monkeypatch):
    monkeypatch.setenv("SGB_ROOT", str(make_fake_host(tmp_path / "from_env")))
    assert locate_host() == (tmp_path / "from_env").resolve()


def test_importable_package_is_the_last_resort(tmp_path, monkeypatch, no_host_in_environment):
    root = make_fake_host(tmp_path / "installed")
    monkeypatch.syspath_prepend(str(root))
    assert locate_host() == root.resolve()
    assert "maskrcnn_benchmark" not in sys.modules  # found without importing the host


def test_missing_directory_names_the_source_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("SGB_ROOT", str(tmp_path / "nowhere"))
    with pytest.raises(HostNotFoundError) as error:
        locate_host()
    message = str(error.value)
    assert "from SGB_ROOT" in message and "nowhere is not a directory" in message
    assert "--host-root PATH" in message and "SGB_ROOT=PATH" in message


def test_directory_without_the_host_layout_is_rejected(tmp_path):
    make_fake_host(tmp_path / "partial", with_tools=False)
    with pytest.raises(HostNotFoundError, match=r"from --host-root.*has no tools/relation_train_net.py"):
        locate_host(tmp_path / "partial")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HostNotFoundError, match="has no maskrcnn_benchmark and no tools/relation_train_net.py"):
        locate_host(tmp_path / "empty")


def test_installed_package_without_tools_is_rejected(tmp_path, monkeypatch, no_host_in_environment):
    monkeypatch.syspath_prepend(str(make_fake_host(tmp_path / "site", with_tools=False)))
    with pytest.raises(HostNotFoundError, match="importable maskrcnn_benchmark package is unusable"):
        locate_host()


def test_nothing_to_find(monkeypatch, no_host_in_environment):
    monkeypatch.setattr(locate.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(HostNotFoundError, match="No SGB host given.*SGB_ROOT is unset.*--host-root PATH"):
        locate_host()


def test_launcher_takes_out_host_root_and_local_rank(monkeypatch):
    from sgg_plugins.hosts.sgb.launch import split_launcher_args

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    argv = ["--host-root", "/sgb", "--config-file", "c.yaml", "MODEL.DEVICE", "cpu"]
    assert split_launcher_args(argv) == ("/sgb", None, ["--config-file", "c.yaml", "MODEL.DEVICE", "cpu"], True)
    # torch.distributed.launch spells it --local-rank=N; older ones --local_rank N
    assert split_launcher_args(["--local-rank=3", "--host-root=/x", "--skip-test"]) == ("/x", "3", ["--skip-test"], True)
    assert split_launcher_args(["--local_rank", "2"]) == (None, "2", [], True)
    assert split_launcher_args(["--without-plugin", "--skip-test"]) == (None, None, ["--skip-test"], False)
    monkeypatch.setenv("LOCAL_RANK", "1")  # torchrun
    assert split_launcher_args(["--config-file", "c.yaml"]) == (None, "1", ["--config-file", "c.yaml"], True)
    with pytest.raises(SystemExit, match="--host-root needs a value"):
        split_launcher_args(["--config-file", "c.yaml", "--host-root"])
    with pytest.raises(SystemExit, match="non-negative integer"):
        split_launcher_args(["--local_rank", "gpu0"])


def test_seed_from_environment_makes_runs_repeat(monkeypatch):
    import torch

    from sgg_plugins.hosts.sgb.launch import seed_everything_from_environment

    monkeypatch.setenv("SGG_PLUGINS_SEED", "7")
    assert seed_everything_from_environment() == 7
    first = torch.rand(3)
    seed_everything_from_environment()
    assert torch.equal(first, torch.rand(3))
    monkeypatch.setenv("SGG_PLUGINS_SEED", "seven")
    with pytest.raises(SystemExit, match="SGG_PLUGINS_SEED must be a non-negative integer"):
        seed_everything_from_environment()
