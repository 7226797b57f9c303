"""What the SGB launcher prints around the host: under torchrun a stopping line comes from rank 0 alone,
bad input prints that line and nothing before it, and the set-up lines at INFO are only those that
change what runs, with the registration line naming every objective (``config.NODES``)."""

import logging
import os
import re
import subprocess
import sys

import pytest

from conftest import host_command, needs_sgb
from sgg_plugins.config import NODES
from sgg_plugins.hosts.common import stop_with
from sgg_plugins.logs import held_back

TYPO = ["MODEL.ALIGN.ENABLD", "True"]
TYPO_LINE = "error: MODEL.ALIGN.ENABLD is not a config key; did you mean MODEL.ALIGN.ENABLED?"


@pytest.mark.parametrize("environ, code", [
    ({}, "error: bad input"),                                      # one process
    ({"RANK": "0", "LOCAL_RANK": "0"}, "error: bad input"),
    ({"RANK": "1", "LOCAL_RANK": "1"}, 1),
    ({"RANK": "2", "LOCAL_RANK": "0"}, 1),                        # rank 0 of the second node: not rank 0
    ({"LOCAL_RANK": "1"}, 1),                                     # a launcher that sets only the local rank
])
def test_only_rank_0_prints_the_line_every_process_exits_1(monkeypatch, environ, code):
    for name in ("RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert stop_with("bad input").code == code  # SystemExit prints a string code and exits 1


def test_held_back_lines_are_dropped_when_the_run_stops_and_printed_otherwise(caplog):
    logger = logging.getLogger("sgg_plugins.test_held_back")
    caplog.set_level(logging.INFO, logger="sgg_plugins")
    with pytest.raises(SystemExit):
        with held_back("sgg_plugins"):
            logger.info("set-up line before bad input")
            raise stop_with("bad input")
    assert caplog.messages == []
    with held_back("sgg_plugins"):
        logger.info("set-up line")
        assert caplog.messages == []  # held until the block ends
    assert caplog.messages == ["set-up line"]
    with pytest.raises(KeyError):  # an unexpected failure: what was logged may explain it
        with held_back("sgg_plugins"):
            logger.info("set-up line before a bug")
            raise KeyError("bug")
    assert caplog.messages == ["set-up line", "set-up line before a bug"]


def run_launcher(synthetic_vg, tmp_path, opts, environ=(), launcher_args=(), torchrun=False):
    cmd = host_command(synthetic_vg, "relation_train_net", "MotifPredictor", "predcls", opts, tmp_path / "out",
                       launcher_args)
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *cmd[1:]]
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), **dict(environ)}
    return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)


@needs_sgb
@pytest.mark.parametrize("rank", ["0", "1"])
def test_bad_input_prints_its_line_alone_and_on_rank_0_only(synthetic_vg, tmp_path, rank):
    result = run_launcher(synthetic_vg, tmp_path, TYPO, {"RANK": rank, "LOCAL_RANK": rank, "WORLD_SIZE": "2"})
    expected = TYPO_LINE + "\n" if rank == "0" else ""
    assert (result.returncode, result.stdout, result.stderr) == (1, "", expected)


@needs_sgb
def test_under_torchrun_the_line_once_then_only_torchrun_s_summary(synthetic_vg, tmp_path):
    result = run_launcher(synthetic_vg, tmp_path, TYPO, torchrun=True)
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == TYPO_LINE and TYPO_LINE not in lines[1:]
    # The rest is torchrun's own: its agent's lines, its traceback and the box listing each process's
    # exit status, rank 0 the root cause (rank 1 exits 1 too, or shows SIGTERM when torchrun stopped
    # it first).
    assert not [line for line in lines[1:] if "sgg-plugins" in line or "sgg_plugins" in line]
    assert "ChildFailedError" in result.stderr
    root_cause = result.stderr.partition("Root Cause (first observed failure):")[2]
    assert "rank      : 0 (local_rank: 0)\n  exitcode  : 1 " in root_cause


@needs_sgb
def test_set_up_lines_at_info_are_the_ones_that_change_what_runs(synthetic_vg, tmp_path):
    result = run_launcher(synthetic_vg, tmp_path, [], launcher_args=["--help"])  # sets up, then the host's help
    assert result.returncode == 0, result.stderr[-2000:]
    info = [line.partition(" sgg_plugins INFO: ")[2] for line in result.stdout.splitlines()
            if " sgg_plugins INFO: " in line]
    objectives = " / ".join(f"MODEL.{name}" for name in NODES)
    assert objectives == "MODEL.ALIGN / MODEL.RCL / MODEL.PROBE / MODEL.CLIPMATCH / MODEL.MRC"
    assert info[-1] == f"sgg-plugins: registered {objectives} for every relation predictor with a stock SGB layout"
    # The shims keep the host's behaviour: DEBUG. The stand-in for an unbuilt extension is the one
    # replacement of the host's computation at set-up.
    assert not [line for line in info if re.match(r"sgg-plugins (compat|speed):", line)]
    assert all("is not built; using torchvision" in line or "lacks" in line for line in info[:-1]), info


@pytest.mark.skipif(not os.environ.get("SGTR_ROOT"), reason="needs an SGTR checkout: set SGTR_ROOT")
def test_sgtr_bad_input_prints_no_set_up_line_before_its_line(tmp_path):
    script = os.path.join(os.path.dirname(os.path.dirname(__file__)), "tools", "sgtr_train_net.py")
    result = subprocess.run([sys.executable, script, *TYPO], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert (result.returncode, result.stdout) == (1, "")
    lines = result.stderr.splitlines()
    assert lines[-1] == ("error: MODEL.ALIGN.ENABLD is not a key of this experiment's config: check its spelling "
                         "against the experiment's config file")
    # What may come before it is the host's own import-time warnings (torch.jit.script's deprecation), never ours.
    assert not [line for line in lines if "sgg_plugins" in line or "sgg-plugins" in line]
