"""`sgg-plugins bench --host sgtr` then `sgg-plugins report` on the real SGTR host and synthetic data
(needs SGTR_ROOT): baseline and align, one seed, the CPU overlay's 4 iterations."""

import json
import os
import re

import pytest

from conftest import REPO
from sgg_plugins.cli import main
from sgg_plugins.hosts.sgb.overlay import overlay_opts

pytestmark = pytest.mark.skipif(not os.environ.get("SGTR_ROOT"), reason="needs an SGTR checkout: set SGTR_ROOT")


def copypaste_numbers(log_text):
    """The ``sgg_vg_metrics`` numbers of the host's ``copypaste:`` lines, by name."""
    lines = [line.split("copypaste: ", 1)[1] for line in log_text.splitlines() if "copypaste: " in line]
    task = lines.index("Task: sgg_vg_metrics")
    return dict(zip(lines[task + 1].split(","), (float(v) for v in lines[task + 2].split(","))))


def test_bench_then_report_end_to_end(synthetic_vg, tmp_path, monkeypatch):
    # One thread: torch's default pool spins against other jobs on a shared CPU (docs/sgtr.md).
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    out = tmp_path / "bench"
    bench = ["bench", "--host", "sgtr", "--vg-dir", str(synthetic_vg), "--out", str(out), "--variants", "baseline",
             "align", "--seeds", "0", "--gpus", "none", "--",
             *overlay_opts(os.path.join(REPO, "configs", "sgtr", "synthetic_cpu.opts")), "MODEL.WEIGHTS", ""]
    assert main(bench) == 0
    for variant in ("baseline", "align"):
        run_dir = out / variant / "seed0"
        record = json.loads((run_dir / "run.json").read_text())
        assert all(stage["status"] == "done" for stage in record["stages"].values()), record
        # Training evaluated after its last iteration; the test removed that before writing its own.
        assert record["stages"]["test"]["cleared"] == ["result_dict.pytorch", "evaluation_res.txt"]
        assert json.loads((run_dir / "config.json").read_text())["SEED"] == 0
        assert (run_dir / "log").is_symlink()  # the host's link lands in the run folder, not in a shared one
    assert main(bench) == 0  # resumed: everything is done, nothing runs again

    report_dir = tmp_path / "report"
    assert main(["report", str(out), "--out", str(report_dir)]) == 0
    report = json.loads((report_dir / "report.json").read_text())
    assert report["host"] == "sgtr" and report["mode"] == "sgdet" and report["test_set"] == "vgs_val"
    assert all(run["status"] == "done" and not run["flag"] for run in report["runs"])
    # The synthetic dataset's 10 predicates, counted from --vg-dir; SGTR's VG-150 split does not fit them.
    assert len(report["predicates"]) == 10 and "splits 50 predicates" in report["split"]["rule"]
    # The report's numbers are the ones the test printed (4 decimals in copypaste lines).
    test_log = next((out / "align" / "seed0").glob("eval.*/log.txt")).read_text()
    printed = copypaste_numbers(test_log)
    align = next(run for run in report["runs"] if run["variant"] == "align")["metrics"]
    for name, key in (("mR@100", "sgdet_mean_recall/top100"), ("ng-mR@100", "sgdet_ng_mean_recall/top100"),
                      ("R@100", "sgdet_recall/top100")):
        if align[name] is None:  # the host prints nan when no image had a relation prediction
            assert printed[key] != printed[key]
        else:
            assert align[name] == pytest.approx(printed[key], abs=5e-5)
    losses = report["losses"]
    assert {"total_loss", "loss_rel_focal"} <= set(losses["baseline"]["0"])
    assert {"loss_align_predicate", "loss_align_subject", "loss_align_object"} <= set(losses["align"]["0"])
    assert not any(re.search(r"(_\d|/layer\d)$", name) for name in losses["align"]["0"])
    assert [point[0] for point in losses["align"]["0"]["total_loss"]] == [1, 2, 3, 4]
    for name in ("report.md", "report.csv", "per_predicate_recall.png", "training_losses.png"):
        assert (report_dir / name).stat().st_size > 0, name
