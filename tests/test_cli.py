import subprocess
import sys

import pytest

from sgg_plugins import cli


HELP_AND_IMPORTS = """
import sys
from sgg_plugins import cli
try:
    cli.main(["--help"])
except SystemExit:
    pass
heavy = ("open_clip", "h5py", "matplotlib", "maskrcnn_benchmark")
print("IMPORTED", sorted(m for m in sys.modules if m.split(".")[0] in heavy))
"""


def test_help_lists_every_subcommand_without_optional_imports():
    out = subprocess.run([sys.executable, "-c", HELP_AND_IMPORTS], capture_output=True, text=True).stdout
    for name in cli.SUBCOMMANDS:
        assert name in out
    assert "IMPORTED []" in out


def test_unknown_subcommand_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train-everything"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_subcommand_arguments_come_from_its_module(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["make-synthetic-vg", "--help"])
    assert "--num-images" in capsys.readouterr().out


EMBED_HELP = """
import sys
from sgg_plugins import cli
try:
    cli.main(["embed", "--help"])
except SystemExit:
    pass
print("IMPORTED", sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "open_clip", "h5py")))
"""


def test_embed_help_documents_every_option_without_importing_torch():
    out = subprocess.run([sys.executable, "-c", EMBED_HELP], capture_output=True, text=True).stdout
    assert "IMPORTED []" in out
    import argparse

    from sgg_plugins.embed_cli import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    undocumented = [a.option_strings[0] for a in parser._actions if not a.help]
    assert undocumented == []
