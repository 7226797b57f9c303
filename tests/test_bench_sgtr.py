"""``sgg-plugins bench --host sgtr`` and ``sgg-plugins report`` on SGTR's outputs, without SGTR.

The runner is driven with ``fixtures/bench/fake_sgtr_launcher.py`` in place of the launchers and a
folder shaped like an SGTR checkout; the report reads run folders written by
``fixtures/bench/sgtr_run_outputs.py`` in the layout a real SGTR run leaves.
"""

import json
import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "bench"))
import sgtr_run_outputs as sgtr  # noqa: E402

from sgg_plugins.bench.results_sgtr import (  # noqa: E402
    SgtrOutputs,
    read_ng_mean_recall,
    read_result,
    read_schedule,
    read_training_losses,
)
from sgg_plugins.cli import main  # noqa: E402

FAKE = Path(__file__).parent / "fixtures" / "bench" / "fake_sgtr_launcher.py"
EXPERIMENT = "playground/sgg/detr.res101.c5.one_stage_rel_tfmer"


# ---------------------------------------------------------------- reading one run

def test_metrics_are_the_hosts_with_ng_mean_recall_from_its_printed_summary(tmp_path):
    sgtr.write_run(tmp_path, "baseline", 0, [0.5, 0.7], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0.2, 0.4],
                   {20: 0.123456, 50: 0.2, 100: 0.35}, {400: {"loss_ce": 1.0}}, {})
    result = read_result(tmp_path / "result_dict.pytorch")
    assert result["mode"] == "sgdet"
    m = result["metrics"]
    assert m["R@100"] == pytest.approx(0.6) and m["R@20"] == pytest.approx(0.5)
    assert m["ng-R@100"] == pytest.approx(0.7) and m["zR@100"] == pytest.approx(0.3)
    assert m["mR@100"] == pytest.approx(0.35) and m["mR@50"] == pytest.approx(0.30)
    # Not in result_dict.pytorch: read from evaluation_res.txt, to the 4 decimals the host prints.
    assert m["ng-mR@100"] == 0.35 and m["ng-mR@20"] == 0.1235
    assert "A@100" not in m  # the host fills the pair accuracy only with ground-truth boxes
    assert result["per_predicate_recall"][100] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])


def test_a_nan_the_host_printed_is_a_missing_number(tmp_path):
    text = tmp_path / "evaluation_res.txt"
    text.write_text("SGG eval: ng-mR @ 20: nan; ng-mR @ 50: 0.0000; ng-mR @ 100: 0.0100;  for mode=sgdet, "
                    "type=No Graph Constraint Mean Recall.\n  mR @ 20: 0.5000;   mR @ 50: 0.5000;  for mode=sgdet, "
                    "type=Recall(det).\n")
    assert read_ng_mean_recall(text) == {20: None, 50: 0.0, 100: 0.01}


def test_losses_come_from_metrics_json_without_the_per_level_auxiliaries(tmp_path):
    losses = {100: {"loss_ce": 3.0, "loss_rel_focal": 90.0, "loss_align_predicate": 0.4},
              200: {"loss_ce": 2.5, "loss_rel_focal": 40.0, "loss_align_predicate": 0.3}}
    path = tmp_path / "metrics.json"
    path.write_text(sgtr.metrics_lines(losses, {200: 0.1}))
    curves = read_training_losses(path)
    assert set(curves) == {"total_loss", "loss_ce", "loss_rel_focal", "loss_align_predicate"}
    # Iterations as the host's log counts them (metrics.json's "iteration" is 0-based).
    assert curves["loss_ce"] == [(100, 3.0), (200, 2.5)]
    assert curves["total_loss"] == [(100, pytest.approx(93.4)), (200, pytest.approx(42.8))]
    # A resumed run appends: the latest line of an iteration wins; a line cut off by a kill is skipped.
    with open(path, "a") as f:
        f.write(sgtr.metrics_lines({200: {"loss_ce": 2.0}}, {}) + '{"iteration": 29')
    assert read_training_losses(path)["loss_ce"] == [(100, 3.0), (200, 2.0)]


def test_schedule_from_config_json_and_metrics_json(tmp_path):
    losses = {done: {"loss_ce": 1.0} for done in (100, 200, 300, 400)}
    sgtr.write_run(tmp_path, "baseline", 3, [0.5], [0.1] * 6, [], {20: 0.1, 50: 0.1, 100: 0.1},
                   losses, {200: 0.21, 400: 0.32}, max_iter=400, steps=(300,), eval_period=200)
    schedule = read_schedule(tmp_path)
    assert schedule["type"] == "WarmupMultiStepLR" and schedule["max_iter"] == 400 and schedule["val_period"] == 200
    assert schedule["stopped_at"] == 400 and schedule["stop_reason"] == "MAX_ITER"
    assert schedule["decays"] == [300]
    assert schedule["validations"] == [(200, 0.21), (400, 0.32)]
    # A run that stopped early says so.
    sgtr.write_run(tmp_path, "baseline", 3, [0.5], [0.1] * 6, [], {20: 0.1, 50: 0.1, 100: 0.1},
                   {100: {"loss_ce": 1.0}}, {}, max_iter=400)
    stopped = read_schedule(tmp_path)
    assert stopped["stopped_at"] == 100 and stopped["stop_reason"].startswith("unknown") and stopped["decays"] == []


def test_schedule_of_an_epoch_based_run_claims_no_iteration_counts(tmp_path):
    # train_net.py saves config.json before the trainer turns MAX_EPOCH into MAX_ITER / EVAL_PERIOD.
    sgtr.write_run(tmp_path, "baseline", 3, [0.5], [0.1] * 6, [], {20: 0.1, 50: 0.1, 100: 0.1},
                   {100: {"loss_ce": 1.0}}, {}, max_iter=400, eval_period=200)
    config_path = tmp_path / "config.json"
    config = json.loads(config_path.read_text())
    config["SOLVER"]["LR_SCHEDULER"]["MAX_EPOCH"] = 12
    config_path.write_text(json.dumps(config))
    schedule = read_schedule(tmp_path)
    assert schedule["max_iter"] is None and schedule["val_period"] is None and schedule["validations"] == []
    assert schedule["steps"] is None and schedule["decays"] is None  # the saved STEPS are not the ones it used


def test_the_host_split_is_used_only_when_it_fits_the_dataset(tmp_path):
    sgtr.write_run(tmp_path, "baseline", 0, [0.5], [0.1] * 6, [], {20: 0.1, 50: 0.1, 100: 0.1}, {}, {})
    groups, note = SgtrOutputs().host_split(tmp_path, 6)
    assert groups == ["tail", "head", "tail", "head", "body", "body"] and "LONGTAIL_PART_DICT" in note
    groups, note = SgtrOutputs().host_split(tmp_path, 10)
    assert groups is None and "splits 6 predicates, this dataset has 10" in note


# ---------------------------------------------------------------- the report on an SGTR bench

MR100 = {"baseline": [0.10, 0.12, 0.14], "align": [0.13, 0.14, 0.18]}
# Per-predicate R@100 = the run's mR@100 + these; the host's split is tail, head, tail, head, body, body.
OFFSETS = [-0.05, 0.10, -0.10, 0.05, 0.0, 0.0]
TRAIN_COUNTS = [100, 5000, 10, 3000, 500, 1000]


@pytest.fixture(scope="module")
def sgtr_bench(tmp_path_factory):
    bench_dir = tmp_path_factory.mktemp("sgtr_bench")
    vg_dir = sgtr.write_vg_dataset(bench_dir.parent / "vg", TRAIN_COUNTS)
    sgtr.write_bench_plan(bench_dir, list(MR100), [0, 1, 2], vg_dir)
    for variant, values in MR100.items():
        for seed, mr in enumerate(values):
            losses = {100: {"loss_ce": 3.0}, 200: {"loss_ce": 2.0}}
            if variant == "align":
                losses = {done: {**values, "loss_align_predicate": 0.5} for done, values in losses.items()}
            sgtr.write_run(bench_dir / variant / f"seed{seed}", variant, seed, [0.6], [mr + o for o in OFFSETS], [0.2],
                           {20: mr, 50: mr + 0.01, 100: mr + 0.02}, losses, {200: 0.6}, max_iter=200,
                           steps=(150,), eval_period=200)
    out = bench_dir / "report"
    assert main(["report", str(bench_dir), "--out", str(out)]) == 0
    return bench_dir, out, json.loads((out / "report.json").read_text())


def test_report_reads_every_sgtr_metric(sgtr_bench):
    _, out, report = sgtr_bench
    assert report["host"] == "sgtr" and report["mode"] == "sgdet" and report["test_set"] == sgtr.TEST_SET
    summary = report["summary"]
    assert summary["baseline"]["mR@100"]["mean"] == pytest.approx(0.12)
    assert summary["align"]["ng-mR@100"]["mean"] == pytest.approx(statistics.fmean([0.15, 0.16, 0.20]))
    assert summary["baseline"]["R@100"]["mean"] == pytest.approx(0.6)
    assert summary["baseline"]["zR@100"]["mean"] == pytest.approx(0.2)
    assert summary["baseline"]["F@100"]["mean"] == pytest.approx(statistics.fmean(
        2 * 0.6 * m / (0.6 + m) for m in MR100["baseline"]))
    md = (out / "report.md").read_text()
    assert "(`result_dict.pytorch` and, for ng-mR@K, `evaluation_res.txt` of each run)" in md
    assert "ng-mR@100" in md and "| baseline | 3 |" in md


def test_report_uses_the_hosts_split_and_counts_from_vg_dir(sgtr_bench):
    _, out, report = sgtr_bench
    assert "LONGTAIL_PART_DICT" in report["split"]["rule"]
    assert [p["group"] for p in report["predicates"]] == ["tail", "head", "tail", "head", "body", "body"]
    # Counted from --vg-dir's h5 with the host's validation size for a small dataset (the first 10).
    assert [p["train_count"] for p in report["predicates"]] == TRAIN_COUNTS
    assert report["split"]["counts_from"].startswith("training-split relations in the dataset h5 (the first 10")
    # head = mR + mean(0.10, 0.05), as SGTR's own longtail part recall averages its group's predicates.
    assert report["summary"]["align"]["head mR@100"]["mean"] == pytest.approx(statistics.fmean(MR100["align"]) + 0.075)
    assert report["summary"]["align"]["tail mR@100"]["mean"] == pytest.approx(statistics.fmean(MR100["align"]) - 0.075)
    # An explicit rule still wins over the host's split.
    bench_dir, _, _ = sgtr_bench
    assert main(["report", str(bench_dir), "--out", str(bench_dir / "by_rank"), "--head-frac", "0.5",
                 "--tail-frac", "0.5"]) == 0
    ranked = json.loads((bench_dir / "by_rank" / "report.json").read_text())
    assert [p["group"] for p in ranked["predicates"]] == ["tail", "head", "tail", "head", "tail", "head"]


def test_report_plots_losses_and_lists_each_runs_schedule(sgtr_bench):
    _, out, report = sgtr_bench
    assert set(report["losses"]["align"]["0"]) == {"total_loss", "loss_ce", "loss_align_predicate"}
    assert report["losses"]["baseline"]["0"]["loss_ce"] == [[100, 3.0], [200, 2.0]]
    assert (out / "training_losses.png").stat().st_size > 0 and (out / "per_predicate_recall.png").stat().st_size > 0
    run = next(r for r in report["runs"] if (r["variant"], r["seed"]) == ("align", 0))
    assert run["schedule"]["type"] == "WarmupMultiStepLR" and run["schedule"]["decays"] == [150]
    assert run["schedule"]["validations"] == [[200, 0.6]] and run["flag"] == ""
    md = (out / "report.md").read_text()
    assert run["schedule"]["final_lr"] == 8e-5 and run["lr_decayed_before_test"] is True
    assert "| align | 0 | done | WarmupMultiStepLR, 1 LR decay(s) at 150 | 8e-05 | 200 of 200 (MAX_ITER) |" in md
    assert "starting LR" not in md
    assert "metrics.json every GLOBAL.LOG_INTERVAL iterations" in md


def test_a_result_older_than_the_test_is_refused(tmp_path):
    bench_dir = tmp_path / "bench"
    bench_dir.mkdir()
    sgtr.write_bench_plan(bench_dir, ["baseline"], [0, 1], sgtr.write_vg_dataset(tmp_path / "vg", TRAIN_COUNTS))
    for seed in (0, 1):
        sgtr.write_run(bench_dir / "baseline" / f"seed{seed}", "baseline", seed, [0.6], [0.1] * 6, [],
                       {20: 0.1, 50: 0.1, 100: 0.1}, {}, {})
    record_path = bench_dir / "baseline" / "seed1" / "run.json"
    record = json.loads(record_path.read_text())
    record["stages"]["test"]["started_unix"] += 3600  # the file predates the test: an earlier evaluation
    record_path.write_text(json.dumps(record))
    assert main(["report", str(bench_dir)]) == 0
    report = json.loads((bench_dir / "report" / "report.json").read_text())
    assert [r["status"] for r in report["runs"]] == ["done", "stale"]


# ---------------------------------------------------------------- the runner

@pytest.fixture
def sgtr_host(tmp_path, monkeypatch):
    """A folder shaped like an SGTR checkout in SGTR_ROOT, a VG-format folder, and the fake's call log."""
    root = tmp_path / "SGTR"
    for name in ("cvpods/__init__.py", "tools/train_net.py", f"{EXPERIMENT}/net.py", f"{EXPERIMENT}/config_vg_sgtr.py"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("")
    vg_dir = sgtr.write_vg_dataset(tmp_path / "vg", TRAIN_COUNTS)
    calls = tmp_path / "calls.jsonl"
    calls.touch()
    monkeypatch.setenv("SGTR_ROOT", str(root))
    monkeypatch.setenv("FAKE_CALLS", str(calls))
    monkeypatch.delenv("FAKE_FAIL_STAGE", raising=False)
    return root, vg_dir, calls


def bench(vg_dir, out, *extra, opts=("MODEL.WEIGHTS", "")):
    argv = ["bench", "--host", "sgtr", "--vg-dir", str(vg_dir), "--out", str(out), "--python", sys.executable,
            "--train-script", str(FAKE), "--test-script", str(FAKE), "--gpus", "none", *extra]
    return main(argv + ["--", *opts])


def read_calls(calls):
    return [json.loads(line) for line in calls.read_text().splitlines()]


def test_sgtr_runs_train_then_test_in_their_folders_with_the_seed_as_an_opt(sgtr_host, tmp_path):
    root, vg_dir, calls = sgtr_host
    out = tmp_path / "out"
    assert bench(vg_dir, out, "--seeds", "0", "1", opts=("MODEL.WEIGHTS", "", "SOLVER.IMS_PER_BATCH", "2")) == 0
    made = read_calls(calls)
    assert len(made) == 2 * 2 * 2  # baseline and align by default
    for variant, variant_opts in (("baseline", []), ("align", ["MODEL.ALIGN.ENABLED", "True"])):
        for seed in (0, 1):
            folder = out / variant / f"seed{seed}"
            train, test = [c for c in made if c["cwd"] == str(folder)]
            assert train["stage"] == "train" and train["launcher"] == {"--vg-dir": str(vg_dir)} and train["flags"] == []
            assert train["opts"] == ["MODEL.WEIGHTS", "", "SOLVER.IMS_PER_BATCH", "2", *variant_opts,
                                     "SEED", str(seed), "OUTPUT_DIR", str(folder)]
            # The test evaluates the run's final checkpoint: MODEL.WEIGHTS would make test_net.py load that instead.
            assert test["opts"] == ["SOLVER.IMS_PER_BATCH", "2", *variant_opts,
                                    "MODEL.TEST_WEIGHTS", str(folder / "model_final.pth"),
                                    "SEED", str(seed), "OUTPUT_DIR", str(folder)]
            assert train["hash_seed"] == test["hash_seed"] == str(seed) and train["sgtr_root"] == str(root)
            record = json.loads((folder / "run.json").read_text())
            assert record["status"] == "done" and record["plan"]["host"] == "sgtr"
            # What training's own final evaluation wrote is gone before the test, and recorded as such.
            assert record["stages"]["test"]["cleared"] == ["result_dict.pytorch", "evaluation_res.txt"]
            assert (folder / "result_dict.pytorch").read_bytes() == b"fake test result"
            assert record["stages"]["train"]["shell"].startswith(f"cd {folder} && SGTR_ROOT={root} PYTHONHASHSEED={seed}")
    plan = json.loads((out / "bench.json").read_text())
    assert plan["host"] == "sgtr" and plan["launcher_args"] == ["--vg-dir", str(vg_dir)]
    assert list(plan["variants"]) == ["baseline", "align"] and plan["host_root"] == str(root)
    assert bench(vg_dir, out, "--seeds", "0", "1", opts=("MODEL.WEIGHTS", "", "SOLVER.IMS_PER_BATCH", "2")) == 0
    assert len(read_calls(calls)) == 8  # resumed: nothing runs again


def test_an_interrupted_training_resumes_from_its_checkpoint(sgtr_host, tmp_path, monkeypatch):
    _, vg_dir, calls = sgtr_host
    out = tmp_path / "out"
    monkeypatch.setenv("FAKE_FAIL_STAGE", "train")  # fails after its first checkpoint
    assert bench(vg_dir, out, "--variants", "baseline") == 1
    monkeypatch.delenv("FAKE_FAIL_STAGE")
    assert bench(vg_dir, out, "--variants", "baseline") == 0
    assert [(c["stage"], c["flags"]) for c in read_calls(calls)] == [
        ("train", []), ("train", ["--resume"]), ("test", [])]


def test_dry_run_prints_the_sgtr_commands(sgtr_host, tmp_path, capsys):
    root, vg_dir, calls = sgtr_host
    out = tmp_path / "out"
    assert bench(vg_dir, out, "--variants", "align", "--seeds", "4", "--experiment", EXPERIMENT, "--config-file",
                 "config_vg_sgtr.py", "--dry-run", opts=("MODEL.WEIGHTS", "/abs/vg_detr.pth")) == 2
    assert "MODEL.WEIGHTS /abs/vg_detr.pth does not exist" in capsys.readouterr().err
    assert bench(vg_dir, out, "--variants", "align", "--seeds", "4", "--experiment", EXPERIMENT, "--config-file",
                 "config_vg_sgtr.py", "--dry-run") == 0
    train, test = capsys.readouterr().out.splitlines()
    folder = out / "align" / "seed4"
    launcher = f"--experiment {EXPERIMENT} --config config_vg_sgtr.py --vg-dir {vg_dir}"
    assert train == (f"cd {folder} && SGTR_ROOT={root} PYTHONHASHSEED=4 CUDA_VISIBLE_DEVICES='' {sys.executable} "
                     f"{FAKE} {launcher} MODEL.WEIGHTS '' MODEL.ALIGN.ENABLED True SEED 4 OUTPUT_DIR {folder}")
    assert test.endswith(f"{FAKE} {launcher} MODEL.ALIGN.ENABLED True MODEL.TEST_WEIGHTS {folder}/model_final.pth "
                         f"SEED 4 OUTPUT_DIR {folder}")
    assert read_calls(calls) == [] and not out.exists()


@pytest.mark.parametrize("extra, opts, message", [
    (("--variants", "baseline", "rcl"), (), "variant 'rcl' is not available on SGTR: only MODEL.ALIGN exists there"),
    (("--variants", "all"), (), "variant 'all' is not available on SGTR"),
    ((), ("SEED", "3"), "do not pass SEED: bench sets SEED from --seeds"),
    ((), ("MODEL.TEST_WEIGHTS", "/x.pth"), "do not pass MODEL.TEST_WEIGHTS"),
    ((), ("DATASETS.TEST", "('vgs_val', 'vgs_test')"), "give one test set"),
    ((), ("MODEL.WEIGHTS", "weights/vg_detr.pth"), "MODEL.WEIGHTS weights/vg_detr.pth: give an absolute path"),
    (("--cwd", "/tmp"), (), "--cwd is for SGB"),
    (("--experiment", "playground/none"), (), "has no net.py"),
])
def test_sgtr_plans_that_cannot_work_are_refused_in_one_line(sgtr_host, tmp_path, capsys, extra, opts, message):
    _, vg_dir, calls = sgtr_host
    assert bench(vg_dir, tmp_path / "out", *extra, opts=opts) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert read_calls(calls) == []


def test_sgtr_needs_its_checkout_and_run_folders_outside_it(sgtr_host, tmp_path, monkeypatch, capsys):
    root, vg_dir, _ = sgtr_host
    assert bench(vg_dir, root / "bench") == 2
    assert "inside the SGTR checkout" in capsys.readouterr().err
    monkeypatch.delenv("SGTR_ROOT")
    assert bench(vg_dir, tmp_path / "out") == 2
    assert "SGTR_ROOT is unset" in capsys.readouterr().err


def test_sgtr_options_on_an_sgb_bench_and_another_host_in_one_folder_are_refused(sgtr_host, tmp_path, capsys):
    _, vg_dir, _ = sgtr_host
    out = tmp_path / "out"
    assert main(["bench", "--vg-dir", str(vg_dir), "--config-file", "x.yaml", "--out", str(out)]) == 2
    assert "options of SGTR's launchers: add --host sgtr" in capsys.readouterr().err
    assert main(["bench", "--out", str(out)]) == 2
    assert "--config-file is required with --host sgb" in capsys.readouterr().err
    assert bench(vg_dir, out, "--variants", "baseline") == 0
    (tmp_path / "relation.yaml").write_text("MODEL: {}\n")
    assert main(["bench", "--config-file", "relation.yaml", "--cwd", str(tmp_path), "--out", str(out),
                 "--variants", "baseline", "--gpus", "none"]) == 2
    err = capsys.readouterr().err
    assert "was made by another plan (" in err and "host: 'sgtr' -> None" in err
    assert json.loads((out / "bench.json").read_text())["host"] == "sgtr"
