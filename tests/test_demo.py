"""``sgg-plugins demo``: how to get a host, cloning one (a local git repository stands in for the
upstream URL), and the bench/report commands it drives."""

import subprocess

import pytest

from sgg_plugins import cli, demo


def make_fake_upstream(folder):
    """A git repository with an SGB checkout's shape; returns its commit."""
    (folder / "maskrcnn_benchmark").mkdir(parents=True)
    (folder / "maskrcnn_benchmark" / "__init__.py").write_text("")
    (folder / "tools").mkdir()
    (folder / "tools" / "relation_train_net.py").write_text("# stand-in\n")
    git = ["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(folder)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "stand-in"], check=True)
    (folder / "tools" / "later.py").write_text("")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "a later commit the demo must not use"], check=True)
    return subprocess.run([*git, "rev-parse", "HEAD~1"], capture_output=True, text=True, check=True).stdout.strip()


def test_without_a_host_it_says_how_to_clone_one(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SGB_ROOT", "")
    monkeypatch.setattr(demo, "locate_host", lambda root=None: (_ for _ in ()).throw(
        demo.HostNotFoundError("No SGB host given.")))
    assert cli.main(["demo", "--out", str(tmp_path / "demo")]) == 2
    err = capsys.readouterr().err
    assert (f"    git clone {demo.SGB_UPSTREAM} Scene-Graph-Benchmark.pytorch && git -C Scene-Graph-Benchmark.pytorch "
            f"checkout --quiet {demo.SGB_COMMIT}\n") in err
    assert "sgg-plugins demo --get-host Scene-Graph-Benchmark.pytorch" in err
    assert not (tmp_path / "demo").exists()  # nothing written before a host is there


def test_get_host_clones_the_pinned_commit(tmp_path, monkeypatch):
    commit = make_fake_upstream(tmp_path / "upstream")
    monkeypatch.setattr(demo, "SGB_UPSTREAM", str(tmp_path / "upstream"))
    monkeypatch.setattr(demo, "SGB_COMMIT", commit)
    root = demo.get_host(tmp_path / "sgb")
    assert root == (tmp_path / "sgb").resolve()
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert head == commit and not (root / "tools" / "later.py").exists()
    assert demo.get_host(tmp_path / "sgb") == root  # a second call uses the clone as it is


def test_get_host_refuses_a_folder_that_is_something_else(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(demo.DemoError, match="exists and is not an SGB checkout: choose a new folder"):
        demo.get_host(tmp_path / "busy")


def test_demo_benches_baseline_and_align_on_synthetic_data_and_prints_the_table(tmp_path, monkeypatch, capsys):
    host = tmp_path / "upstream"
    make_fake_upstream(host)
    calls = []

    def fake_main(argv):
        calls.append(argv)
        if argv[0] == "report":
            (tmp_path / "demo" / "bench" / "report").mkdir(parents=True)
            (tmp_path / "demo" / "bench" / "report" / "report.md").write_text(
                "# Benchmark report\n\n## Results\n\n| Variant | n |\n|---|---|\n| baseline | 1 |\n| align | 1 |\n\n## Other\n| x |\n")
        return 0

    monkeypatch.setattr(cli, "main", fake_main)
    assert demo.run(cli_args(["--out", str(tmp_path / "demo"), "--host-root", str(host), "--images", "12",
                              "--iterations", "3"])) == 0
    bench, report = calls
    assert bench[:9] == ["bench", "--config-file", str(host.resolve() / demo.STOCK_CONFIG), "--out",
                         str(tmp_path / "demo" / "bench"), "--variants", "baseline", "align", "--seeds"]
    opts = bench[bench.index("--") + 1:]
    settings = dict(zip(opts[::2], opts[1::2]))
    assert settings["MODEL.ROI_RELATION_HEAD.PREDICTOR"] == "MotifPredictor"
    assert settings["SOLVER.MAX_ITER"] == "3" and settings["MODEL.DEVICE"] == "cpu"  # overlay, then ours
    assert settings["PATHS_CATALOG"] == str(tmp_path / "demo" / "data" / "paths_catalog.py")
    assert report == ["report", str(tmp_path / "demo" / "bench")]
    out = capsys.readouterr().out
    assert out.rstrip().endswith("| Variant | n |\n|---|---|\n| baseline | 1 |\n| align | 1 |")


def cli_args(argv):
    import argparse

    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    return parser.parse_args(argv)
