"""``sgg-plugins bench`` with a fake launcher in place of the host scripts.

``fixtures/bench/fake_launcher.py`` takes the host scripts' arguments, logs each call to
``$FAKE_CALLS`` and writes the files the host would (or fails when told to), so the runner's
planning, recording, resuming, GPU hand-out and failure handling are tested without a host.
"""

import json
import sys
import time
from pathlib import Path

import pytest

from sgg_plugins.bench.plan import BenchError, parse_variant
from sgg_plugins.cli import main

FAKE = Path(__file__).parent / "fixtures" / "bench" / "fake_launcher.py"
TEST_SET = "VG_stanford_filtered_with_attribute_test"


@pytest.fixture
def host(tmp_path, monkeypatch):
    """A host folder with a config file, and the file the fake launcher logs its calls to."""
    cwd = tmp_path / "sgb"
    (cwd / "configs").mkdir(parents=True)
    (cwd / "configs" / "relation.yaml").write_text("MODEL: {}\n")
    calls = tmp_path / "calls.jsonl"
    calls.touch()
    monkeypatch.setenv("FAKE_CALLS", str(calls))
    monkeypatch.delenv("FAKE_FAIL_STAGE", raising=False)
    return cwd, calls


def bench(cwd, out, *extra, opts=("MODEL.ROI_RELATION_HEAD.USE_GT_BOX", "True")):
    argv = ["bench", "--config-file", "configs/relation.yaml", "--out", str(out), "--cwd", str(cwd),
            "--python", sys.executable, "--train-script", str(FAKE), "--test-script", str(FAKE), "--gpus", "none",
            *extra]
    return main(argv + ["--", *opts])


def read_calls(calls):
    return [json.loads(line) for line in calls.read_text().splitlines()]


def test_variant_syntax():
    assert parse_variant("baseline") == ("baseline", [])
    assert parse_variant("all")[1] == ["MODEL.ALIGN.ENABLED", "True", "MODEL.RCL.ENABLED", "True",
                                       "MODEL.PROBE.ENABLED", "True", "MODEL.CLIPMATCH.ENABLED", "True",
                                       "MODEL.MRC.ENABLED", "True"]
    assert parse_variant("lr_low=SOLVER.BASE_LR 0.001 MODEL.ALIGN.WEIGHT 5") == (
        "lr_low", ["SOLVER.BASE_LR", "0.001", "MODEL.ALIGN.WEIGHT", "5"])
    assert parse_variant("quoted=DATASETS.TRAIN \"('a', 'b')\"")[1] == ["DATASETS.TRAIN", "('a', 'b')"]
    with pytest.raises(BenchError, match="KEY VALUE pairs"):
        parse_variant("odd=SOLVER.BASE_LR")
    with pytest.raises(BenchError, match="unknown variant 'algin'"):
        parse_variant("algin")
    with pytest.raises(BenchError, match="names a folder"):
        parse_variant("a/b=X 1")


def test_every_variant_and_seed_is_trained_then_tested_and_recorded(host, tmp_path):
    cwd, calls = host
    out = tmp_path / "out"
    assert bench(cwd, out, "--variants", "baseline", "align", "--variant", "lr_low=SOLVER.BASE_LR 0.001",
                 "--seeds", "0", "1") == 0
    made = read_calls(calls)
    assert len(made) == 3 * 2 * 2
    # Each run: train (with --skip-test) then test, same OUTPUT_DIR, the seed in the environment.
    for variant, variant_opts in (("baseline", []), ("align", ["MODEL.ALIGN.ENABLED", "True"]),
                                  ("lr_low", ["SOLVER.BASE_LR", "0.001"])):
        for seed in (0, 1):
            folder = out / variant / f"seed{seed}"
            # The host's evaluation cache is always off, after the user's opts so that it wins.
            expected_opts = ["MODEL.ROI_RELATION_HEAD.USE_GT_BOX", "True", *variant_opts,
                             "TEST.ALLOW_LOAD_FROM_CACHE", "False", "OUTPUT_DIR", str(folder)]
            runs = [c for c in made if c["opts"][-1] == str(folder)]
            assert [c["stage"] for c in runs] == ["train", "test"]
            assert all(c["opts"] == expected_opts and c["seed"] == str(seed) and c["hash_seed"] == str(seed)
                       and c["cwd"] == str(cwd) and c["config_file"] == "configs/relation.yaml" for c in runs)
            assert (folder / "inference" / TEST_SET / "result_dict.pytorch").exists()

            record = json.loads((folder / "run.json").read_text())
            assert record["status"] == "done"
            train, test = record["stages"]["train"], record["stages"]["test"]
            assert train["command"] == [sys.executable, str(FAKE), "--config-file", "configs/relation.yaml",
                                        "--skip-test", *expected_opts]
            assert test["command"] == [sys.executable, str(FAKE), "--config-file", "configs/relation.yaml",
                                       *expected_opts]
            assert train["env"]["SGG_PLUGINS_SEED"] == str(seed)
            assert f"SGG_PLUGINS_SEED={seed}" in train["shell"] and train["shell"].startswith(f"cd {cwd} && ")
            assert train["returncode"] == 0 and train["seconds"] >= 0 and train["started"] and train["finished"]
            assert record["machine"]["python"] and "torch" in record["machine"]["packages"]
    plan = json.loads((out / "bench.json").read_text())
    assert list(plan["variants"]) == ["baseline", "align", "lr_low"] and plan["seeds"] == [0, 1]
    assert plan["baseline"] == "baseline"


def test_resume_skips_finished_runs(host, tmp_path, capsys):
    cwd, calls = host
    out = tmp_path / "out"
    assert bench(cwd, out, "--variants", "baseline", "align", "--seeds", "0", "1") == 0
    assert len(read_calls(calls)) == 8
    capsys.readouterr()
    assert bench(cwd, out, "--variants", "baseline", "align", "--seeds", "0", "1") == 0
    assert len(read_calls(calls)) == 8  # the launcher was not called again
    assert "0 done, 4 skipped" in capsys.readouterr().out
    # A new seed only runs the new runs.
    assert bench(cwd, out, "--variants", "baseline", "align", "--seeds", "0", "1", "2") == 0
    new = read_calls(calls)[8:]
    assert len(new) == 4 and {c["seed"] for c in new} == {"2"}
    assert json.loads((out / "bench.json").read_text())["seeds"] == [0, 1, 2]


def test_a_finished_run_whose_output_vanished_is_run_again(host, tmp_path):
    cwd, calls = host
    out = tmp_path / "out"
    assert bench(cwd, out, "--variants", "baseline") == 0
    (out / "baseline" / "seed0" / "inference" / TEST_SET / "result_dict.pytorch").unlink()
    assert bench(cwd, out, "--variants", "baseline") == 0
    assert [c["stage"] for c in read_calls(calls)] == ["train", "test", "test"]


def test_a_failed_run_is_reported_and_the_others_still_run(host, tmp_path, capsys):
    cwd, calls = host
    out = tmp_path / "out"
    code = bench(cwd, out, "--variants", "baseline", "--variant", "broken=FAKE.FAIL train", "--seeds", "0", "1")
    assert code == 1
    captured = capsys.readouterr()
    assert "2 done, 0 skipped (already done), 2 failed" in captured.out
    assert "broken/seed0, broken/seed1" in captured.err
    for seed in (0, 1):
        assert json.loads((out / "baseline" / f"seed{seed}" / "run.json").read_text())["status"] == "done"
        record = json.loads((out / "broken" / f"seed{seed}" / "run.json").read_text())
        assert record["status"] == "failed"
        assert record["stages"]["train"]["status"] == "failed" and record["stages"]["train"]["returncode"] == 3
        assert "RuntimeError: fake train failure" in record["stages"]["train"]["log_tail"]
        assert "test" not in record["stages"]  # no test of an untrained model
    # Rerunning retries only the failed runs.
    assert bench(cwd, out, "--variants", "baseline", "--variant", "broken=FAKE.FAIL train", "--seeds", "0", "1") == 1
    retried = read_calls(calls)[6:]
    assert [c["opts"][-1] for c in retried] == [str(out / "broken" / "seed0"), str(out / "broken" / "seed1")]


def test_a_failed_test_is_resumed_without_training_again(host, tmp_path, monkeypatch):
    cwd, calls = host
    out = tmp_path / "out"
    monkeypatch.setenv("FAKE_FAIL_STAGE", "test")
    assert bench(cwd, out, "--variants", "baseline") == 1
    record = json.loads((out / "baseline" / "seed0" / "run.json").read_text())
    assert record["stages"]["train"]["status"] == "done" and record["stages"]["test"]["status"] == "failed"
    monkeypatch.delenv("FAKE_FAIL_STAGE")
    assert bench(cwd, out, "--variants", "baseline") == 0
    assert [c["stage"] for c in read_calls(calls)] == ["train", "test", "test"]
    assert json.loads((out / "baseline" / "seed0" / "run.json").read_text())["status"] == "done"


def test_each_parallel_run_gets_one_gpu(host, tmp_path):
    cwd, calls = host
    out = tmp_path / "out"
    assert bench(cwd, out, "--variants", "baseline", "align", "--seeds", "0", "1", "--jobs", "2", "--gpus", "3,5") == 0
    made = read_calls(calls)
    assert len(made) == 8 and {c["cuda"] for c in made} <= {"3", "5"}
    # train and test of one run hold the same GPU
    by_run = {}
    for c in made:
        by_run.setdefault(c["opts"][-1], set()).add(c["cuda"])
    assert all(len(gpus) == 1 for gpus in by_run.values())


def test_several_runs_share_one_gpu_after_the_first_measured_its_memory(host, tmp_path, monkeypatch, capsys):
    """--runs-per-gpu through the CLI, with a fake memory reading in place of nvidia-smi."""
    from sgg_plugins.bench import runner, schedule
    from sgg_plugins.bench.schedule import GpuMemory

    cwd, calls = host
    out = tmp_path / "out"
    read = []

    def fake_memory(gpu):
        read.append(gpu)
        return GpuMemory(used_mib=1000.0, free_mib=80000.0)

    monkeypatch.setattr(runner, "Scheduler", lambda *a, **k: schedule.Scheduler(
        *a, **k, read_memory=fake_memory, poll_seconds=0.01))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert bench(cwd, out, "--variants", "baseline", "align", "--seeds", "0", "1", "--gpus", "7",
                 "--runs-per-gpu", "2") == 0
    made = read_calls(calls)
    assert len(made) == 8 and {c["cuda"] for c in made} == {"7"} and set(read) == {"7"}
    printed = capsys.readouterr().out
    assert "bench: GPU 7, up to 2 runs on each (--runs-per-gpu), 2 at once in all" in printed
    assert "[gpu] baseline/seed0 starts alone on GPU 7, which measures a run's peak memory" in printed
    # Two runs at once split the cores between them; run.json records it.
    record = json.loads((out / "align" / "seed1" / "run.json").read_text())
    assert record["status"] == "done"
    threads = str(max(1, schedule.usable_cores() // 2))
    assert record["stages"]["train"]["env"]["OMP_NUM_THREADS"] == threads
    assert f"CUDA_VISIBLE_DEVICES=7 OMP_NUM_THREADS={threads} " in record["stages"]["train"]["shell"]
    assert json.loads((out / "bench.json").read_text())["seeds"] == [0, 1]
    # Resumed: nothing runs again.
    read.clear()
    assert bench(cwd, out, "--variants", "baseline", "align", "--seeds", "0", "1", "--gpus", "7",
                 "--runs-per-gpu", "2") == 0
    assert len(read_calls(calls)) == 8 and set(read) == {"7"}  # the one reading before the bench starts


def test_several_runs_per_gpu_without_readable_gpu_memory_is_refused_before_any_run(host, tmp_path, monkeypatch,
                                                                                   capsys):
    cwd, calls = host
    monkeypatch.setenv("PATH", str(tmp_path / "no_nvidia_smi"))
    assert bench(cwd, tmp_path / "out", "--gpus", "0", "--runs-per-gpu", "3") == 2
    assert "--runs-per-gpu 3 checks each GPU's free memory" in capsys.readouterr().err
    assert read_calls(calls) == [] and not (tmp_path / "out").exists()
    assert bench(cwd, tmp_path / "out", "--runs-per-gpu", "3") == 2  # bench() passes --gpus none
    assert "--runs-per-gpu is for GPU runs; CPU runs (--gpus none) take --jobs N" in capsys.readouterr().err


def test_cpu_runs_hide_the_gpus(host, tmp_path, monkeypatch):
    cwd, calls = host
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert bench(cwd, tmp_path / "out", "--variants", "baseline") == 0  # bench() passes --gpus none
    assert {c["cuda"] for c in read_calls(calls)} == {""}


def test_run_from_an_sgb_checkout_names_it_as_the_host(host, tmp_path, monkeypatch):
    cwd, calls = host
    monkeypatch.delenv("SGB_ROOT", raising=False)
    assert bench(cwd, tmp_path / "plain", "--variants", "baseline") == 0
    (cwd / "maskrcnn_benchmark").mkdir()
    assert bench(cwd, tmp_path / "sgb", "--variants", "baseline") == 0
    assert [c["sgb_root"] for c in read_calls(calls)] == [None, None, str(cwd), str(cwd)]


def test_dry_run_prints_commands_and_runs_nothing(host, tmp_path, capsys):
    cwd, calls = host
    out = tmp_path / "out"
    assert bench(cwd, out, "--variants", "baseline", "rcl", "--seeds", "7", "--dry-run") == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 4 and read_calls(calls) == [] and not out.exists()
    assert "SGG_PLUGINS_SEED=7" in printed[0] and "--skip-test" in printed[0]
    assert printed[2].endswith(f"MODEL.ROI_RELATION_HEAD.USE_GT_BOX True MODEL.RCL.ENABLED True "
                               f"TEST.ALLOW_LOAD_FROM_CACHE False OUTPUT_DIR {out}/rcl/seed7")


def test_runs_go_seed_by_seed_so_a_stopped_bench_has_complete_pairs(host, tmp_path, capsys):
    cwd, calls = host
    out = tmp_path / "out"
    assert bench(cwd, out, "--variants", "baseline", "align", "--seeds", "0", "1", "--dry-run") == 0
    outputs = [line.rsplit("OUTPUT_DIR ", 1)[1] for line in capsys.readouterr().out.splitlines()
               if "--skip-test" in line]
    assert outputs == [f"{out}/baseline/seed0", f"{out}/align/seed0", f"{out}/baseline/seed1", f"{out}/align/seed1"]


def test_changing_the_plan_under_an_existing_bench_is_refused(host, tmp_path, capsys):
    cwd, calls = host
    out = tmp_path / "out"
    assert bench(cwd, out, "--variants", "baseline") == 0
    capsys.readouterr()
    assert bench(cwd, out, "--variants", "baseline", opts=("SOLVER.MAX_ITER", "10")) == 2
    err = capsys.readouterr().err
    # The keys that differ, not both plans.
    assert "was made by another plan (base_opts: removed MODEL.ROI_RELATION_HEAD.USE_GT_BOX True; " \
           "base_opts: added SOLVER.MAX_ITER 10)" in err
    assert len(err) < 400
    # A new variant under another base command would mix two benches in one folder.
    assert bench(cwd, out, "--variants", "align", opts=("SOLVER.MAX_ITER", "10")) == 2
    err = capsys.readouterr().err
    assert "was made with another base command (base_opts: removed MODEL.ROI_RELATION_HEAD.USE_GT_BOX True; " \
           "base_opts: added SOLVER.MAX_ITER 10); runs with another base command need a new --out" in err
    assert len(read_calls(calls)) == 2


def test_a_key_that_only_changes_the_log_keeps_the_bench_and_its_finished_runs(host, tmp_path, capsys):
    cwd, calls = host
    out = tmp_path / "out"
    assert bench(cwd, out, "--variants", "baseline") == 0
    log_every_20 = ("MODEL.ROI_RELATION_HEAD.USE_GT_BOX", "True", "MODEL.SGG_PLUGINS.LOG_PERIOD", "20")
    assert bench(cwd, out, "--variants", "baseline", "align", opts=log_every_20) == 0
    # The baseline is not retrained; only align's two stages run.
    launched = read_calls(calls)
    assert len(launched) == 4 and all(c["opts"][-1] == str(out / "align" / "seed0") for c in launched[2:])
    # Any other key still makes another plan.
    capsys.readouterr()
    assert bench(cwd, out, "--variants", "baseline", opts=log_every_20 + ("SOLVER.MAX_ITER", "10")) == 2
    assert "base_opts: added SOLVER.MAX_ITER 10" in capsys.readouterr().err


def test_each_bench_command_into_a_folder_is_recorded_once_in_order(host, tmp_path, monkeypatch):
    cwd, _ = host
    out = tmp_path / "out"
    commands = [["sgg-plugins", "bench", "--variants", name] for name in ("baseline", "align", "baseline")]
    for command in commands:
        monkeypatch.setattr(sys, "argv", command)
        assert bench(cwd, out, *command[2:]) == 0
    assert json.loads((out / "bench.json").read_text())["commands"] == commands[:2]


def test_bad_command_lines_give_clear_errors(host, tmp_path, capsys):
    cwd, _ = host
    out = tmp_path / "out"
    assert bench(cwd, out, opts=("SOLVER.MAX_ITER",)) == 2
    assert "base opts must be KEY VALUE pairs" in capsys.readouterr().err
    assert bench(cwd, out, opts=("OUTPUT_DIR", "/x")) == 2
    assert "do not pass OUTPUT_DIR" in capsys.readouterr().err
    assert main(["bench", "--config-file", "configs/missing.yaml", "--out", str(out), "--cwd", str(cwd),
                 "--gpus", "none"]) == 2
    assert "config file configs/missing.yaml not found" in capsys.readouterr().err
    assert main(["bench", "--config-file", "configs/relation.yaml", "--out", str(out), "--cwd", str(cwd),
                 "--gpus", "none", "--train-script", str(tmp_path / "nope.py")]) == 2
    assert "nope.py not found; pass --train-script" in capsys.readouterr().err


def test_a_variant_redefined_under_the_same_name_is_refused_with_the_difference(host, tmp_path, capsys):
    cwd, _ = host
    out = tmp_path / "out"
    assert bench(cwd, out, "--variants", "--variant", "lr=SOLVER.BASE_LR 0.01") == 0
    capsys.readouterr()
    assert bench(cwd, out, "--variants", "--variant", "lr=SOLVER.BASE_LR 0.001") == 2
    assert "(variant_opts: SOLVER.BASE_LR 0.01 -> 0.001)" in capsys.readouterr().err


def test_same_settings_in_another_order_resume(host, tmp_path):
    cwd, calls = host
    out = tmp_path / "out"
    assert bench(cwd, out, "--variants", "baseline", opts=("A.B", "1", "C.D", "2")) == 0
    assert bench(cwd, out, "--variants", "baseline", opts=("C.D", "2", "A.B", "1")) == 0
    assert len(read_calls(calls)) == 2


def test_a_test_never_sees_an_earlier_evaluation(host, tmp_path, monkeypatch):
    """The test stage deletes what an earlier test left under inference/ and records it."""
    cwd, calls = host
    out = tmp_path / "out"
    monkeypatch.setenv("FAKE_FAIL_STAGE", "test")
    assert bench(cwd, out, "--variants", "baseline") == 1
    folder = out / "baseline" / "seed0" / "inference" / TEST_SET
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "eval_results.pytorch").write_bytes(b"old predictions")
    (folder / "result_dict.pytorch").write_bytes(b"old result")
    assert bench(cwd, out, "--variants", "baseline") == 1  # fails again: the stale files are gone
    assert not (folder / "eval_results.pytorch").exists() and not (folder / "result_dict.pytorch").exists()
    record = json.loads((out / "baseline" / "seed0" / "run.json").read_text())
    assert record["stages"]["test"]["cleared"] == [f"inference/{TEST_SET}/eval_results.pytorch",
                                                   f"inference/{TEST_SET}/result_dict.pytorch"]
    assert record["stages"]["test"]["started_unix"] <= time.time()
    monkeypatch.delenv("FAKE_FAIL_STAGE")
    assert bench(cwd, out, "--variants", "baseline") == 0
    assert (folder / "result_dict.pytorch").read_bytes() == b"fake result"


def test_turning_the_host_cache_on_is_refused(host, tmp_path, capsys):
    cwd, calls = host
    assert bench(cwd, tmp_path / "out", opts=("TEST.ALLOW_LOAD_FROM_CACHE", "True")) == 2
    assert ("do not pass TEST.ALLOW_LOAD_FROM_CACHE True: bench always runs with TEST.ALLOW_LOAD_FROM_CACHE "
            "False") in capsys.readouterr().err
    assert read_calls(calls) == []


def test_every_objective_has_a_builtin_variant():
    from sgg_plugins.bench.plan import BUILTIN_VARIANTS
    from sgg_plugins.config import NODES

    for node in NODES:
        assert BUILTIN_VARIANTS[node.lower()] == [f"MODEL.{node}.ENABLED", "True"]
