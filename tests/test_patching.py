"""`sgg-plugins patch`: the one import line in a fake SGB checkout, applied, checked and reverted."""

from pathlib import Path

import pytest

from sgg_plugins.cli import main as cli_main
from sgg_plugins.hosts.sgb import patching

# Minimal stand-ins for the host's two scripts: a docstring, comments, the anchor import, code.
FAKE_SCRIPT = (
    '"""A fake {name} script."""\n'
    "\n"
    "# the environment import must come first\n"
    "from maskrcnn_benchmark.utils.env import setup_environment  # noqa F401\n"
    "\n"
    "import argparse\n"
)


@pytest.fixture
def fake_host(tmp_path):
    (tmp_path / "maskrcnn_benchmark").mkdir()
    (tmp_path / "tools").mkdir()
    for name in patching.PATCHED_SCRIPTS:
        (tmp_path / name).write_text(FAKE_SCRIPT.format(name=name))
    return tmp_path


def contents(root):
    return {name: (root / name).read_bytes() for name in patching.PATCHED_SCRIPTS}


def test_apply_check_revert_round_trip(fake_host, capsys):
    original = contents(fake_host)
    assert cli_main(["patch", "--check", str(fake_host)]) == 1
    assert capsys.readouterr().out.count(": not applied") == 2

    assert cli_main(["patch", "--apply", str(fake_host)]) == 0
    for name in patching.PATCHED_SCRIPTS:
        lines = (fake_host / name).read_text().splitlines()
        assert lines[3] == patching.PATCH_LINE  # right before the anchor, nothing else changed
        assert lines[4].startswith(patching.ANCHOR)
        assert lines[:3] + lines[4:] == FAKE_SCRIPT.format(name=name).splitlines()
    assert cli_main(["patch", "--check", str(fake_host)]) == 0

    patched = contents(fake_host)
    capsys.readouterr()
    assert cli_main(["patch", "--apply", str(fake_host)]) == 0
    assert capsys.readouterr().out.count(": already applied") == 2
    assert contents(fake_host) == patched

    assert cli_main(["patch", "--revert", str(fake_host)]) == 0
    assert contents(fake_host) == original
    capsys.readouterr()
    assert cli_main(["patch", "--revert", str(fake_host)]) == 0
    assert capsys.readouterr().out.count(": not applied") == 2
    assert contents(fake_host) == original


def test_windows_line_endings_are_kept(fake_host):
    for name in patching.PATCHED_SCRIPTS:
        (fake_host / name).write_bytes(FAKE_SCRIPT.format(name=name).replace("\n", "\r\n").encode())
    original = contents(fake_host)
    patching.apply_patch(fake_host)
    assert (patching.PATCH_LINE + "\r\n").encode() in (fake_host / patching.PATCHED_SCRIPTS[0]).read_bytes()
    assert b"\n" not in (fake_host / patching.PATCHED_SCRIPTS[0]).read_bytes().replace(b"\r\n", b"")
    patching.revert_patch(fake_host)
    assert contents(fake_host) == original


def test_script_without_anchor_leaves_the_checkout_unchanged(fake_host, capsys):
    (fake_host / patching.PATCHED_SCRIPTS[1]).write_text("import argparse\n")
    original = contents(fake_host)
    assert cli_main(["patch", "--apply", str(fake_host)]) == 2
    err = capsys.readouterr().err
    assert "relation_test_net.py has no line starting with" in err and "by hand" in err
    assert contents(fake_host) == original


def test_not_a_host_is_a_clear_error(tmp_path, capsys):
    assert cli_main(["patch", "--check", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err == (
        f"error: HOST {tmp_path / 'missing'} is not an SGB checkout: {tmp_path / 'missing'} is not a directory; give "
        "the directory holding maskrcnn_benchmark/ and tools/, or omit HOST to use $SGB_ROOT\n")
    (tmp_path / "empty").mkdir()
    assert cli_main(["patch", "--apply", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "--host-root" not in err and "is not an SGB checkout" in err  # the positional is what was given


def test_shipped_patch_file_adds_exactly_the_patch_line():
    patch_file = Path(__file__).resolve().parent.parent / "patches" / "sgb-import-sgg-plugins.patch"
    lines = patch_file.read_text().splitlines()
    added = [line[1:] for line in lines if line.startswith("+") and not line.startswith("+++")]
    removed = [line for line in lines if line.startswith("-") and not line.startswith("---")]
    assert added == [patching.PATCH_LINE] * 2 and removed == []
    assert [line[4:] for line in lines if line.startswith("+++")] == ["b/" + name for name in patching.PATCHED_SCRIPTS]
    context = [line for line in lines if line.startswith(" ")]
    assert len(context) <= 6 and sum(line[1:].startswith(patching.ANCHOR) for line in context) == 2
