"""`sgg-plugins bench --host sgg-benchmark` then `sgg-plugins report` on the real SGG-Benchmark host
and synthetic data (needs SGGB_ROOT): baseline and align on Motifs PredCls, one seed, the CPU overlay.
The reader of its run folders alone, on a made-up folder, needs no host."""

import json
import os

import pytest

from sgg_plugins.bench.results_sgg_benchmark import SggBenchmarkOutputs, read_training_lines
from sgg_plugins.cli import main
from test_sgg_benchmark_host import REPO, SGGB_ROOT, coco_data  # noqa: F401 (coco_data: a fixture)

LOG_LINES = [
    "2026-12-05 02:48:13.443 | INFO | sgg_benchmark.engine.trainer:train_one_epoch:348 - Epoch 0 [1/14] | "
    "loss=4.5436 | loss: [ rel=2.543 | loss_align=2.000 ] | lr=5.50e-03 | elapsed=0:00:00 | ETA=0:00:06",
    "2026-12-05 02:48:19.000 | INFO | sgg_benchmark.engine.trainer:train_one_epoch:348 - Epoch 1 [1/14] | "
    "loss=3.0000 | loss: [ rel=1.500 | loss_align=1.500 ] | lr=2.00e-03 | elapsed=0:00:00 | ETA=0:00:06",
]


def test_the_reader_finds_the_test_scripts_result_and_the_trainers_losses(tmp_path):
    run = tmp_path / "seed0"
    result_dir = run / "inference" / "synthetic_vg_test_predcls_det100"
    result_dir.mkdir(parents=True)
    (result_dir / "eval_results_top_100.json").write_text(json.dumps({
        "predcls_recall": {"20": [0.5, 1.0], "50": [1.0, 1.0]}, "predcls_mean_recall": {"20": 0.25, "50": 0.5},
        "predcls_mean_recall_list": {"20": [0.0, 0.5], "50": [0.5, 0.5]}}))
    (result_dir / "predictions.pth").write_bytes(b"")
    (run / "log.txt").write_text("\n".join(["a line without losses", *LOG_LINES]) + "\n")
    (run / "config.yml").write_text("solver:\n  max_epoch: 2\n  schedule:\n    type: WarmupCosineAnnealingIterLR\n")
    outputs = SggBenchmarkOutputs()
    found = outputs.find_results(run)
    assert list(found) == ["synthetic_vg_test"]
    result = outputs.read_result(found["synthetic_vg_test"])
    assert result["mode"] == "predcls" and result["metrics"]["R@20"] == 0.75 and result["metrics"]["mR@50"] == 0.5
    assert result["per_predicate_recall"] == {20: [0.0, 0.5], 50: [0.5, 0.5]}
    assert {p.name for p in outputs.evaluation_files(run)} == {"eval_results_top_100.json", "predictions.pth"}
    assert [row[0] for row in read_training_lines(run / "log.txt")] == [1, 15]  # iterations over epochs
    curves, schedule = outputs.read_training(run)
    assert curves["loss_align"] == [(1, 2.0), (15, 1.5)] and curves["loss"] == [(1, 4.5436), (15, 3.0)]
    assert schedule["max_iter"] == 28 and schedule["stopped_at"] == 15 and schedule["final_lr"] == 2e-3
    assert not outputs.has_trained_model(run)


@pytest.mark.skipif(not SGGB_ROOT, reason="needs an SGG-Benchmark checkout: set SGGB_ROOT")
def test_bench_then_report_end_to_end(coco_data, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    overrides = (coco_data / "sgg_benchmark.overrides").read_text().split()
    overrides += (REPO / "configs" / "sgg_benchmark" / "synthetic_cpu.overrides").read_text().split()
    opts = [item for override in overrides for item in override.split("=", 1)]  # bench takes KEY VALUE pairs
    out = tmp_path / "bench"
    bench = ["bench", "--host", "sgg-benchmark", "--config-file",
             os.path.join(SGGB_ROOT, "configs", "hydra", "PSG", "MotifPredictor.yaml"), "--task", "predcls",
             "--out", str(out), "--seeds", "3", "--gpus", "none", "--", *opts]
    assert main(bench) == 0
    for variant in ("baseline", "align"):  # the default variants on this host
        run_dir = out / variant / "seed3"
        record = json.loads((run_dir / "run.json").read_text())
        assert all(stage["status"] == "done" for stage in record["stages"].values()), record
        assert "seed: 3" in (run_dir / "config.yml").read_text().splitlines()
    assert main(bench) == 0  # resumed: everything is done, nothing runs again

    report_dir = tmp_path / "report"
    assert main(["report", str(out), "--out", str(report_dir)]) == 0
    report = json.loads((report_dir / "report.json").read_text())
    assert report["host"] == "sgg-benchmark" and report["mode"] == "predcls" and report["test_set"] == "synthetic_vg_test"
    assert all(run["status"] == "done" and not run["flag"] for run in report["runs"])
    assert len(report["predicates"]) == 10  # counted from the synthetic dataset's files beside its COCO layout
    # The report's numbers are the ones the host's test script printed (4 decimals).
    printed = next(line for line in (out / "align" / "seed3" / "test.log").read_text().splitlines()
                   if "mR @ 20:" in line)
    align = next(run for run in report["runs"] if run["variant"] == "align")["metrics"]
    assert f"mR @ 100: {align['mR@100']:.4f}" in printed
    assert "loss_align" in report["losses"]["align"]["3"] and "loss_align" not in report["losses"]["baseline"]["3"]
    for name in ("report.md", "report.csv", "per_predicate_recall.png", "training_losses.png"):
        assert (report_dir / name).stat().st_size > 0, name
