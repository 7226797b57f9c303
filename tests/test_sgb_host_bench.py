"""`sgg-plugins bench` then `sgg-plugins report` on the real SGB host and synthetic data (needs SGB_ROOT)."""

import json
import os

from conftest import MODES, REPO, SGB_ROOT, needs_sgb
from sgg_plugins.cli import main
from sgg_plugins.hosts.sgb.overlay import overlay_opts

pytestmark = needs_sgb


def test_bench_then_report_end_to_end(synthetic_vg, tmp_path):
    out = tmp_path / "bench"
    opts = [*overlay_opts(os.path.join(REPO, "configs", "sgb", "synthetic_cpu.opts")),
            *overlay_opts(str(synthetic_vg / "dataset.opts")), *MODES["predcls"],
            "MODEL.ROI_RELATION_HEAD.PREDICTOR", "MotifPredictor", "GLOVE_DIR", str(tmp_path / "glove"),
            "SOLVER.MAX_ITER", "3", "SOLVER.CHECKPOINT_PERIOD", "3", "SOLVER.VAL_PERIOD", "1000",
            "MODEL.SGG_PLUGINS.LOG_PERIOD", "1"]
    config = os.path.join(SGB_ROOT, "configs", "e2e_relation_X_101_32_8_FPN_1x.yaml")
    bench = ["bench", "--config-file", config, "--out", str(out), "--variants", "baseline", "align",
             "--seeds", "0", "1", "--cwd", str(tmp_path), "--", *opts]
    assert main(bench) == 0
    for variant in ("baseline", "align"):
        for seed in (0, 1):
            run = json.loads((out / variant / f"seed{seed}" / "run.json").read_text())
            assert all(stage["status"] == "done" for stage in run["stages"].values()), run

    assert main(bench) == 0  # resumed: everything is done, nothing runs again

    report_dir = tmp_path / "report"
    assert main(["report", str(out), "--out", str(report_dir)]) == 0
    table = (report_dir / "report.md").read_text()
    assert "mR@100" in table and "align" in table and "paired" in table.lower()
    for name in ("report.csv", "report.json", "per_predicate_recall.png", "training_losses.png"):
        assert (report_dir / name).stat().st_size > 0, name
    losses = json.loads((report_dir / "report.json").read_text())["losses"]
    assert any("loss_align" in str(v) for v in losses.values())
    # LOG_PERIOD 1: the host logs iteration 3 (its last) itself, the plug-in iterations 1 and 2.
    iterations = {point[0] for curves in losses["align"].values() for point in curves["loss_rel"]}
    assert iterations == {1, 2, 3}
