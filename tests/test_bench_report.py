"""``sgg-plugins report`` on recorded host outputs: aggregation, paired tests, head/body/tail, plots.

The run folders are written by ``fixtures/bench/bench_host_outputs.py`` with the keys and layout
Scene-Graph-Benchmark writes; the numbers are chosen so that every expected value below is a hand
computation.
"""

import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "bench"))
import bench_host_outputs as host  # noqa: E402

from sgg_plugins.bench.head_body_tail import read_split_file, split_by_counts, split_by_rank  # noqa: E402
from sgg_plugins.bench.report_inputs import ReportError  # noqa: E402
from sgg_plugins.bench.report_statistics import (  # noqa: E402
    detectable_difference,
    f_at_k,
    mean_recall_std_with_each_held,
    mean_recall_variance_shares,
    paired_test,
)
from sgg_plugins.bench.results import (  # noqa: E402
    ResultError,
    count_predicates_in_h5,
    read_metrics,
    read_predicate_statistics,
    read_schedule,
    read_training_losses,
)
from sgg_plugins.cli import main  # noqa: E402

# Per-predicate R@100 = run's mR@100 + these offsets (predicates 1..6; they sum to 0).
# With TRAIN_COUNTS the thirds are head = {on, has} (+0.10, +0.05), body = {wearing, riding} (0, 0),
# tail = {above, attached to} (-0.05, -0.10): head = mR + 0.075, body = mR, tail = mR - 0.075.
OFFSETS = [-0.05, 0.10, -0.10, 0.05, 0.0, 0.0]
MR100 = {"baseline": [0.10, 0.12, 0.14], "align": [0.13, 0.14, 0.18], "probe": [0.11, None, 0.16]}
R100 = {"baseline": [0.60, 0.62, 0.64], "align": [0.61, 0.63, 0.66], "probe": [0.60, None, 0.65]}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def losses(variant):
    extra = {"loss_align": 0.2} if variant == "align" else {}
    return {200: {"loss": 1.2, "loss_rel": 0.8, **extra}, 400: {"loss": 0.9, "loss_rel": 0.6, **extra}}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """A bench folder with three variants x three seeds; probe/seed1 failed in training."""
    bench_dir = tmp_path_factory.mktemp("bench")
    host.write_bench_plan(bench_dir, list(MR100), [0, 1, 2])
    for variant in MR100:
        for seed in range(3):
            run_dir = bench_dir / variant / f"seed{seed}"
            if MR100[variant][seed] is None:
                host.write_failed_run(run_dir, variant, seed, stage="train", returncode=1)
                continue
            per_image = [R100[variant][seed] - 0.1, R100[variant][seed] + 0.1]
            per_predicate = [MR100[variant][seed] + o for o in OFFSETS]
            # baseline/seed2 had no zero-shot triplet: the host leaves the zR lists empty.
            zeroshot = [] if (variant, seed) == ("baseline", 2) else [0.2, 0.4]
            host.write_run(run_dir, variant, seed, per_image, per_predicate, zeroshot, losses(variant))
    out = bench_dir / "report"
    assert main(["report", str(bench_dir), "--out", str(out)]) == 0
    return bench_dir, out, json.loads((out / "report.json").read_text())


def test_metrics_are_read_as_the_host_computed_them():
    result = host.result_dict([0.5, 0.7], [0.1 + o for o in OFFSETS], [0.2, 0.4])
    result["predcls_mean_recall"][100] = 0.987  # a stored mR must be taken as is, never recomputed
    read = read_metrics(result)
    assert read["mode"] == "predcls"
    m = read["metrics"]
    assert m["R@100"] == pytest.approx(0.6)  # mean of the per-image recalls, as the host prints it
    assert m["R@20"] == pytest.approx(0.5)
    assert m["ng-R@100"] == pytest.approx(0.7)
    assert m["mR@100"] == 0.987
    # the stored mR@50: per-predicate recalls at 50 are (0.0, 0.15, 0.0, 0.10, 0.05, 0.05)
    assert m["mR@50"] == pytest.approx(0.35 / 6)
    assert m["zR@100"] == pytest.approx(0.3)
    assert m["A@100"] == pytest.approx(0.5)
    assert read["per_predicate_recall"][100] == pytest.approx([0.1 + o for o in OFFSETS])

    empty_zeroshot = read_metrics(host.result_dict([0.5], [0.1] * 6, []))["metrics"]
    assert empty_zeroshot["zR@100"] is None and empty_zeroshot["ng-zR@20"] is None


def test_a_dict_that_is_not_an_sgb_result_is_rejected():
    with pytest.raises(ResultError, match="'<mode>_recall'"):
        read_metrics({"bbox_mAP": 0.3}, source="x.pytorch")


def test_mean_and_sample_std_over_seeds(bench):
    _, out, report = bench
    mr = report["summary"]["baseline"]["mR@100"]
    assert mr["n"] == 3
    assert mr["mean"] == pytest.approx(0.12)
    # sample std (ddof=1): sqrt(((-0.02)^2 + 0 + 0.02^2) / 2) = 0.02; the population std would be 0.0163
    assert mr["std"] == pytest.approx(0.02)
    r100 = report["summary"]["align"]["R@100"]
    assert r100["mean"] == pytest.approx((0.61 + 0.63 + 0.66) / 3)
    assert r100["std"] == pytest.approx(math.sqrt(((0.61 - 0.6333333) ** 2 + (0.63 - 0.6333333) ** 2 + (0.66 - 0.6333333) ** 2) / 2), rel=1e-5)
    # zR where available: baseline/seed2 had none, so two seeds remain.
    zr = report["summary"]["baseline"]["zR@100"]
    assert zr["n"] == 2 and zr["mean"] == pytest.approx(0.3) and zr["std"] == pytest.approx(0.0)
    md = (out / "report.md").read_text()
    assert "| baseline | 3 | " in md and "12.00 ± 2.00" in md
    assert "30.00 ± 0.00 (n=2)" in md


def test_paired_tests_against_a_hand_computation_and_scipy():
    test = paired_test({0: 0.13, 1: 0.14, 2: 0.18}, {0: 0.10, 1: 0.12, 2: 0.14})
    # d = (0.03, 0.02, 0.04): mean 0.03, sd sqrt((0 + 0.01^2 + 0.01^2) / 2) = 0.01,
    # t = mean / (sd / sqrt(n)) = 0.03 / (0.01 / sqrt(3)) = 3 sqrt(3); df = 2.
    assert test["diffs"] == pytest.approx([0.03, 0.02, 0.04])
    assert test["mean_diff"] == pytest.approx(0.03)
    assert test["std_diff"] == pytest.approx(0.01)
    t = 3 * math.sqrt(3)
    assert test["t"] == pytest.approx(t) and test["df"] == 2
    # Student t with 2 df has P(|T| > t) = 1 - t / sqrt(t^2 + 2).
    assert test["p"] == pytest.approx(1 - t / math.sqrt(t * t + 2))
    # 95 % CI: mean ± t_{0.975, 2} * sd / sqrt(3); t_{0.975, 2} = 4.302652729911275.
    half = 4.302652729911275 * 0.01 / math.sqrt(3)
    assert (test["ci_low"], test["ci_high"]) == pytest.approx((0.03 - half, 0.03 + half))
    # Wilcoxon signed-rank, exact: all three differences positive, W = 0 (sum of negative ranks);
    # under H0 each of the 2^3 sign patterns is equally likely, so two-sided p = 2 * 1/8.
    assert test["wilcoxon_statistic"] == 0 and test["wilcoxon_p"] == pytest.approx(0.25)


def test_paired_tests_match_scipy_on_recorded_outputs():
    """The recorded mR@50 of five seeds (fractions as the host stores them), against scipy directly."""
    from scipy import stats

    baseline = {0: 0.5462, 1: 0.5511, 2: 0.5398, 3: 0.5570, 4: 0.5447}
    variant = {0: 0.5490, 1: 0.5942, 2: 0.5430, 3: 0.5601, 4: 0.5402}
    test = paired_test(variant, baseline)
    v, b = list(variant.values()), list(baseline.values())
    reference = stats.ttest_rel(v, b)
    assert test["t"] == pytest.approx(reference.statistic) and test["p"] == pytest.approx(reference.pvalue)
    assert test["wilcoxon_p"] == pytest.approx(stats.wilcoxon(v, b).pvalue)
    # d = (+0.28, +4.31, +0.32, +0.31, -0.45) points; |d| ranks 1, 5, 3, 2, 4; the one negative has
    # rank 4, so W = min(4, 11) = 4. Rank subsets with sum <= 4: {}, 1, 2, 3, 4, 1+2, 1+3 -> 7 of the
    # 32 sign patterns, so the exact two-sided p is 2 * 7 / 32.
    assert test["wilcoxon_statistic"] == 4 and test["wilcoxon_p"] == pytest.approx(14 / 32)
    diffs = [a - c for a, c in zip(v, b)]
    half = stats.t.ppf(0.975, 4) * statistics.stdev(diffs) / math.sqrt(5)
    assert test["ci_low"] == pytest.approx(statistics.fmean(diffs) - half)
    assert test["ci_high"] == pytest.approx(statistics.fmean(diffs) + half)


def test_paired_tests_are_not_available_without_two_paired_seeds():
    one_seed = paired_test({0: 0.2, 1: None}, {0: 0.1, 1: 0.1})
    assert one_seed["n"] == 1 and one_seed["p"] is None and one_seed["note"].startswith("n/a")
    assert one_seed["mean_diff"] == pytest.approx(0.1) and one_seed["wilcoxon_p"] is None
    constant = paired_test({0: 0.2, 1: 0.3}, {0: 0.1, 1: 0.2})
    assert constant["t"] is None and constant["ci_low"] is None and "same on every seed" in constant["note"]
    # The signed-rank test still applies: both signs positive, p = 2 * 1/4.
    assert constant["wilcoxon_p"] == pytest.approx(0.5)
    nothing = paired_test({0: 0.2, 1: 0.3}, {0: 0.2, 1: 0.3})
    assert nothing["wilcoxon_p"] is None and nothing["t"] is None


def test_noise_floor_of_the_paired_test():
    # Baseline std 1 point over 5 seeds: sd(d) = sqrt(2) points; p < 0.05 needs
    # |mean d| >= t_{0.975, 4} * sqrt(2) / sqrt(5) = 2.7764451 * 0.6324555 = 1.7560 points.
    floor = detectable_difference(0.01, 5)
    assert floor["sd_diff"] == pytest.approx(0.01 * math.sqrt(2))
    assert floor["significant"] == pytest.approx(2.7764451052 * math.sqrt(2 / 5) * 0.01, rel=1e-6)
    assert floor["wilcoxon_min_p"] == pytest.approx(0.0625)  # never < 0.05 with 5 seeds
    # 80 % power: a little above the normal approximation (t_{0.975,4} + t_{0.8,4}) * sd(d) / sqrt(n)
    # = (2.776 + 0.941) * 0.632 = 2.351 points, and the noncentral t gives exactly 0.8 there.
    from scipy import stats

    delta = floor["at_power"] / (0.01 * math.sqrt(2) / math.sqrt(5))
    critical = stats.t.ppf(0.975, 4)
    assert stats.nct.sf(critical, 4, delta) + stats.nct.cdf(-critical, 4, delta) == pytest.approx(0.8)
    assert 0.0235 < floor["at_power"] < 0.027
    # Halving the std halves both; one seed has no test.
    assert detectable_difference(0.005, 5)["significant"] == pytest.approx(floor["significant"] / 2)
    assert detectable_difference(0.01, 1)["significant"] is None


def test_variance_shares_of_mean_recall_against_a_hand_computation():
    # Three predicates over three seeds: two near-synonyms trading recall, and one that varies alone.
    # Sample covariances (ddof=1): Var r1 = Var r2 = 0.25, Cov(r1, r2) = -0.25, Var r3 = 0.03,
    # Cov(r1, r3) = 0.075, Cov(r2, r3) = -0.075; row sums 0.075, -0.075, 0.03 of a total 0.03.
    recalls = [[0.0, 0.5, 1.0], [1.0, 0.5, 0.0], [0.2, 0.2, 0.5]]
    shares = mean_recall_variance_shares(recalls)
    assert shares == pytest.approx([2.5, -2.5, 1.0])
    # The total is P^2 times the variance of mR over the seeds (0.4, 0.4, 0.5).
    mean_recall = [statistics.fmean(column) for column in zip(*recalls)]
    assert statistics.variance(mean_recall) * 9 == pytest.approx(0.03)
    assert mean_recall_variance_shares([[0.3, 0.3], [0.5, 0.5]]) is None  # mR did not move


def test_std_with_each_predicate_held_against_a_loop_over_predicates():
    # Hold predicate i at its mean over the seeds, recompute mR on every seed, take the sample std.
    recalls = [[0.0, 0.5, 1.0, 0.0], [1.0, 0.5, 0.0, 0.25], [0.2, 0.2, 0.5, 0.9], [0.0, 0.0, 0.67, 0.0]]
    expected = []
    for i, row in enumerate(recalls):
        held = [list(r) for r in recalls]
        held[i] = [statistics.fmean(row)] * len(row)
        expected.append(statistics.stdev(statistics.fmean(column) for column in zip(*held)))
    assert mean_recall_std_with_each_held(recalls) == pytest.approx(expected)


def test_the_report_says_which_predicates_make_the_baselines_spread(bench):
    _, out, report = bench
    # Every fixture predicate is the run's mR@100 plus a constant, so each carries 1/6 of the spread.
    shares = [p["baseline_variance_share"] for p in report["predicates"]]
    assert shares == pytest.approx([1 / 6] * 6)
    assert report["variance_share"]["seeds"] == [0, 1, 2]
    md = (out / "report.md").read_text()
    assert "Where the baseline's spread of mR@100 comes from" in md
    assert "| 17 % |" in md
    csv_text = (out / "report.csv").read_text()
    assert csv_text.count(",variance_share,") == 6
    # Holding one of the six at its mean leaves 5/6 of the run-to-run movement of mR@100.
    baseline_std = report["noise_floor"]["mR@100"]["baseline_std"]
    held = [p["baseline_std_if_held"] for p in report["predicates"]]
    assert held == pytest.approx([baseline_std * 5 / 6] * 6)
    assert "mR@100 std if held" in md and csv_text.count(",mR@100_std_if_held,") == 6


def test_f_at_k_is_the_harmonic_mean_of_recall_and_mean_recall():
    assert f_at_k(0.6, 0.12) == pytest.approx(2 * 0.6 * 0.12 / 0.72)  # 0.2
    assert f_at_k(0.0, 0.0) == 0.0
    assert f_at_k(None, 0.1) is None


def test_f_at_k_per_run_in_the_report(bench):
    _, out, report = bench
    # baseline seed0: R@100 = mean(0.5, 0.7) = 0.6, mR@100 = 0.10 -> F = 0.12 / 0.7
    run = next(r for r in report["runs"] if (r["variant"], r["seed"]) == ("baseline", 0))
    assert run["metrics"]["F@100"] == pytest.approx(2 * 0.6 * 0.10 / 0.70)
    expected = statistics.fmean(2 * r * m / (r + m) for r, m in zip(R100["baseline"], MR100["baseline"]))
    assert report["summary"]["baseline"]["F@100"]["mean"] == pytest.approx(expected)
    assert "| F@100 |" in (out / "report.md").read_text() or " F@100 " in (out / "report.md").read_text()


def test_report_compares_each_variant_with_the_baseline_per_seed(bench):
    _, out, report = bench
    align = report["paired"]["align"]["mR@100"]
    assert align["seeds"] == [0, 1, 2]
    assert align["t"] == pytest.approx(3 * math.sqrt(3))
    assert align["wilcoxon_p"] == pytest.approx(0.25)
    # probe/seed1 failed: only seeds 0 and 2 are paired; d = (0.01, 0.02).
    probe = report["paired"]["probe"]["mR@100"]
    assert probe["seeds"] == [0, 2] and probe["diffs"] == pytest.approx([0.01, 0.02])
    md = (out / "report.md").read_text()
    assert "### align − baseline" in md
    # mean 3 ± t_{0.975,2} * 1 / sqrt(3) = 3 ± 2.48 points
    assert "| mR@100 | +3.00 | +2.00 | +4.00 | +3.00 | [+0.52, +5.48] | 5.20 | 0.0351 * | 0.25 |" in md


def test_head_body_tail_from_training_frequencies():
    # counts (above 100, on 5000, attached to 10, has 3000, riding 500, wearing 1000)
    assert split_by_rank(host.TRAIN_COUNTS) == ["tail", "head", "tail", "head", "body", "body"]
    assert split_by_rank(host.TRAIN_COUNTS, 0.5, 0.5) == ["tail", "head", "tail", "head", "tail", "head"]
    assert split_by_rank([5, 5, 5]) == ["head", "body", "tail"]  # ties keep predicate order
    assert split_by_counts(host.TRAIN_COUNTS, head_above=2000, tail_below=200) == split_by_rank(host.TRAIN_COUNTS)
    with pytest.raises(ReportError, match="must not exceed 1"):
        split_by_rank(host.TRAIN_COUNTS, 0.6, 0.6)


def test_head_body_tail_mean_recall_in_the_report(bench):
    _, _, report = bench
    summary = report["summary"]["baseline"]
    assert summary["head mR@100"]["mean"] == pytest.approx(0.12 + 0.075)
    assert summary["body mR@100"]["mean"] == pytest.approx(0.12)
    assert summary["tail mR@100"]["mean"] == pytest.approx(0.12 - 0.075)
    groups = {p["name"]: p["group"] for p in report["predicates"]}
    assert groups == {"on": "head", "has": "head", "wearing": "body", "riding": "body",
                      "above": "tail", "attached to": "tail"}
    assert [p["train_count"] for p in report["predicates"]] == host.TRAIN_COUNTS


def test_split_override_from_a_file(bench, tmp_path):
    names = host.PREDICATES[1:]
    by_name = tmp_path / "split.json"
    by_name.write_text(json.dumps({"head": ["on"], "body": ["has", 6, 5], "tail": ["above", "attached to"]}))
    assert read_split_file(by_name, names) == ["tail", "head", "tail", "body", "body", "body"]
    letters = tmp_path / "letters.json"
    letters.write_text(json.dumps([None, "t", "h", "t", "b", "b", "h"]))
    assert read_split_file(letters, names) == ["tail", "head", "tail", "body", "body", "head"]
    incomplete = tmp_path / "incomplete.json"
    incomplete.write_text(json.dumps({"head": ["on"], "tail": ["above"]}))
    with pytest.raises(ReportError, match="in no group: attached to, has, riding, wearing"):
        read_split_file(incomplete, names)

    bench_dir, _, _ = bench
    out = tmp_path / "report"
    assert main(["report", str(bench_dir), "--out", str(out), "--split-file", str(by_name), "--variants", "baseline"]) == 0
    head = json.loads((out / "report.json").read_text())["summary"]["baseline"]["head mR@100"]
    assert head["mean"] == pytest.approx(0.12 + 0.10)


def test_failed_run_is_reported_and_left_out(bench):
    _, out, report = bench
    probe1 = next(r for r in report["runs"] if (r["variant"], r["seed"]) == ("probe", 1))
    assert probe1["status"] == "failed" and probe1["note"] == "train failed (return code 1)"
    assert probe1["metrics"] is None
    assert report["summary"]["probe"]["mR@100"]["n"] == 2
    assert report["summary"]["probe"]["mR@100"]["mean"] == pytest.approx((0.11 + 0.16) / 2)
    md = (out / "report.md").read_text()
    assert "| probe | 1 | **failed** | – | – | – | – | – | train failed (return code 1) |" in md
    assert "1 run(s) without results" in md


def test_every_number_is_in_the_csv(bench):
    _, out, _ = bench
    rows = (out / "report.csv").read_text().splitlines()
    assert rows[0] == "section,variant,seed,metric,statistic,value"
    assert any(r.startswith("summary,baseline,,mR@100,std,0.02") for r in rows)
    assert "paired,align,1,mR@100,diff,0.020000000000000018" in rows or any(
        r.startswith("paired,align,1,mR@100,diff,0.0199999") or r.startswith("paired,align,1,mR@100,diff,0.02") for r in rows)
    assert "predicate,,,on,train_count,5000" in rows
    assert "loss,align,0,loss_align,iter 400,0.2" in rows


def test_plots_are_png_files(bench):
    _, out, _ = bench
    for name in ("per_predicate_recall.png", "training_losses.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC, name


def test_training_losses_from_the_host_log(tmp_path):
    log = tmp_path / "log.txt"
    text = host.log_lines({200: {"loss": 1.5, "loss_rel": 1.0, "loss_align": 0.3}, 400: {"loss": 1.1, "loss_rel": 0.8, "loss_align": 0.2}})
    # A resumed run appends to the log and logs iteration 400 again.
    text += host.log_lines({400: {"loss": 1.0, "loss_rel": 0.7, "loss_align": 0.2}})
    log.write_text(text)
    curves = read_training_losses(log)
    assert set(curves) == {"loss", "loss_rel", "loss_align"}  # time and data are not losses
    assert curves["loss"] == [(200, 1.5), (400, 1.0)]
    assert curves["loss_align"] == [(200, 0.3), (400, 0.2)]


def test_training_counts_from_the_statistics_cache(tmp_path):
    import torch

    torch.save(host.statistics_cache(), tmp_path / "stats.cache")
    names, counts = read_predicate_statistics(tmp_path / "stats.cache")
    assert names == host.PREDICATES[1:]
    assert counts == host.TRAIN_COUNTS  # background slot (777 per pair) left out


def test_training_counts_from_the_vg_h5(tmp_path):
    h5py = pytest.importorskip("h5py")
    import numpy as np

    # image 0: train, relations 0-1; image 1: train without relations; image 2: train, relations 2-4;
    # image 3: test. With num_val_im=1 the first train image with relations (0) is validation.
    with h5py.File(tmp_path / "vg.h5", "w") as h5:
        h5["split"] = np.array([0, 0, 0, 2])
        h5["img_to_first_box"] = np.array([0, 2, 3, 5])
        h5["img_to_first_rel"] = np.array([0, -1, 2, 5])
        h5["img_to_last_rel"] = np.array([1, -1, 4, 5])
        h5["predicates"] = np.array([[1], [2], [2], [2], [3], [4]])
    (tmp_path / "dicts.json").write_text(json.dumps({"idx_to_predicate": {"1": "a", "2": "b", "3": "c", "4": "d"}}))
    names, counts = count_predicates_in_h5(tmp_path / "vg.h5", tmp_path / "dicts.json", num_val_im=1)
    assert names == ["a", "b", "c", "d"]
    assert counts == [0, 2, 1, 0]


def test_bad_input_gives_a_clear_error(tmp_path, capsys, bench):
    assert main(["report", str(tmp_path)]) == 2
    assert "no runs in" in capsys.readouterr().err
    bench_dir, _, _ = bench
    assert main(["report", str(bench_dir), "--out", str(tmp_path / "r"), "--baseline", "nope"]) == 2
    assert "baseline 'nope' is not among the variants" in capsys.readouterr().err
    import torch

    stats = host.statistics_cache(host.TRAIN_COUNTS + [7])
    stats["rel_classes"] = host.PREDICATES + ["extra"]
    torch.save(stats, tmp_path / "other.cache")
    assert main(["report", str(bench_dir), "--out", str(tmp_path / "r"), "--statistics", str(tmp_path / "other.cache")]) == 2
    assert "has 7 predicates but the host's mR@100 list has 6" in capsys.readouterr().err


def test_no_absolute_path_in_the_report(bench):
    bench_dir, out, report = bench
    absolute = str(bench_dir.resolve())
    for name in ("report.md", "report.csv", "report.json"):
        text = (out / name).read_text()
        assert absolute not in text and str(bench_dir) not in text, name
    assert report["bench_dir"] == "."
    assert report["split"]["statistics"] == f"baseline/seed0/{host.TRAIN_SET}_statistics.cache"
    run = report["runs"][0]
    assert run["result_file"] == f"baseline/seed0/inference/{host.TEST_SET}/result_dict.pytorch"


def test_recorded_command_paths_are_made_relative(tmp_path):
    from sgg_plugins.bench.report_inputs import relative_command

    bench_dir = tmp_path / "bench"
    bench_dir.mkdir()
    command = ["/usr/local/bin/sgg-plugins", "bench", "--out", str(bench_dir), "--cwd", str(tmp_path / "sgb"),
               "PATHS_CATALOG", str(tmp_path / "data" / "paths_catalog.py"), f"--config-file={tmp_path}/c.yaml"]
    assert relative_command(command, bench_dir, environ={}) == [
        "sgg-plugins", "bench", "--out", ".", "--cwd", "../sgb", "PATHS_CATALOG", "../data/paths_catalog.py",
        "--config-file=../c.yaml"]
    # A path in the host checkout is named by the checkout's variable, not by where it is here.
    host_config = ["/usr/local/bin/sgg-plugins", "bench", "--config-file", str(tmp_path / "sgb" / "configs" / "x.yaml")]
    assert relative_command(host_config, bench_dir, environ={"SGB_ROOT": str(tmp_path / "sgb")}) == [
        "sgg-plugins", "bench", "--config-file", "$SGB_ROOT/configs/x.yaml"]
    sggb_config = ["/usr/local/bin/sgg-plugins", "bench", "--config-file", str(tmp_path / "sggb" / "configs" / "x.yaml")]
    assert relative_command(sggb_config, bench_dir, environ={"SGGB_ROOT": str(tmp_path / "sggb")}) == [
        "sgg-plugins", "bench", "--config-file", "$SGGB_ROOT/configs/x.yaml"]
    # A variant's option list is one argument: the paths inside it are made portable too.
    variant = ["/usr/local/bin/sgg-plugins", "bench", "--variant",
               f"clipmatch=MODEL.CLIPMATCH.ENABLED True MODEL.CLIPMATCH.CLIP_PRETRAINED {tmp_path}/clip.pt"]
    assert relative_command(variant, bench_dir, environ={}) == [
        "sgg-plugins", "bench", "--variant", "clipmatch=MODEL.CLIPMATCH.ENABLED True MODEL.CLIPMATCH.CLIP_PRETRAINED ../clip.pt"]


def _one_run_bench(bench_dir, record_test_started=None, test_command_cache="False", cleared=None):
    """A bench with baseline seed0 only, its run.json's test stage as given."""
    bench_dir.mkdir(parents=True)
    host.write_bench_plan(bench_dir, ["baseline"], [0])
    run_dir = bench_dir / "baseline" / "seed0"
    host.write_run(run_dir, "baseline", 0, [0.5, 0.7], [0.1 + o for o in OFFSETS], [0.2], losses("baseline"))
    record = json.loads((run_dir / "run.json").read_text())
    test = record["stages"]["test"]
    if record_test_started is not None:
        test["started_unix"] = record_test_started
    if test_command_cache is None:
        test["command"] = [a for a in test["command"] if a not in ("TEST.ALLOW_LOAD_FROM_CACHE", "False")]
    if cleared is not None:
        test["cleared"] = cleared
    (run_dir / "run.json").write_text(json.dumps(record))
    return run_dir


def test_every_bench_command_into_the_folder_is_shown_and_an_old_single_one_still_is(tmp_path):
    bench_dir = tmp_path / "bench"
    _one_run_bench(bench_dir)
    plan = json.loads((bench_dir / "bench.json").read_text())
    first = ["/usr/bin/sgg-plugins", "bench", "--out", str(bench_dir), "--variants", "baseline"]
    second = ["/usr/bin/sgg-plugins", "bench", "--out", str(bench_dir), "--variants", "align"]
    for key, value, title in (("command", first, "Command:"),
                              ("commands", [first, second], "Commands (2 bench runs into this folder, in order):")):
        (bench_dir / "bench.json").write_text(json.dumps({**plan, key: value}))
        assert main(["report", str(bench_dir), "--out", str(tmp_path / "r")]) == 0
        md = (tmp_path / "r" / "report.md").read_text()
        shown = "sgg-plugins bench --out . --variants baseline\n"
        if key == "commands":
            shown += "sgg-plugins bench --out . --variants align\n"
        assert f"{title}\n\n```\n{shown}```" in md


def test_a_result_older_than_its_test_stage_is_refused(tmp_path, capsys):
    # The test stage started after the result file was written: the file is from an earlier run.
    run_dir = _one_run_bench(tmp_path / "bench", record_test_started=time.time() + 3600)
    assert main(["report", str(tmp_path / "bench"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "baseline/seed0: stale result_dict.pytorch is older than this run's test" in err
    # Once the test has run again (a fresh file), it is read.
    result = next(run_dir.glob("inference/*/result_dict.pytorch"))
    later = time.time() + 7200
    os.utime(result, (later, later))
    assert main(["report", str(tmp_path / "bench"), "--out", str(tmp_path / "r")]) == 0


def test_a_test_that_may_have_read_the_host_cache_is_flagged(tmp_path):
    _one_run_bench(tmp_path / "bench", test_command_cache=None)
    assert main(["report", str(tmp_path / "bench"), "--out", str(tmp_path / "r")]) == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["runs"][0]["flag"] == ("test ran without TEST.ALLOW_LOAD_FROM_CACHE False: "
                                         "may have evaluated cached predictions")
    md = (tmp_path / "r" / "report.md").read_text()
    assert "⚠ 1 run(s) are included but flagged" in md
    # A test stage that started after the runner cleared the old evaluation files is not flagged.
    _one_run_bench(tmp_path / "bench2", test_command_cache=None, cleared=[])
    assert main(["report", str(tmp_path / "bench2"), "--out", str(tmp_path / "r2")]) == 0
    assert json.loads((tmp_path / "r2" / "report.json").read_text())["runs"][0]["flag"] == ""


def test_schedule_and_early_stop_from_the_host_log(tmp_path):
    (tmp_path / "config.yml").write_text(host.saved_config("WarmupReduceLROnPlateau", max_iter=2000, val_period=400))
    lines = host.log_lines({200: {"loss": 1.0}, 400: {"loss": 0.9}}).splitlines()
    lines += [
        "2024-01-01 10:02:00,000 maskrcnn_benchmark INFO: eta: 0:01:00  iter: 800  loss: 0.8 (0.9)  lr: 0.01",
        "2024-01-01 10:02:10,000 maskrcnn_benchmark INFO: Start validating",
        "2024-01-01 10:02:20,000 maskrcnn_benchmark INFO: Validation Result: 0.5000",
        "2024-01-01 10:02:21,000 maskrcnn_benchmark INFO: Trigger Schedule Decay, RL has been reduced by factor 0.1",
        "2024-01-01 10:02:21,000 maskrcnn_benchmark INFO: Trigger MAX_DECAY_STEP at iteration 800.",
    ]
    (tmp_path / "log.txt").write_text("\n".join(lines) + "\n")
    schedule = read_schedule(tmp_path)
    assert schedule["type"] == "WarmupReduceLROnPlateau" and schedule["max_iter"] == 2000
    assert schedule["val_period"] == 400
    # The fixture's first validation line follows iteration 400; the second follows 800.
    assert schedule["validations"] == [(400, 0.1234), (800, 0.5)]
    assert schedule["decays"] == [800]
    assert schedule["stopped_at"] == 800 and schedule["stop_reason"] == "MAX_DECAY_STEP (validation plateau)"

    (tmp_path / "config.yml").write_text(host.saved_config("WarmupMultiStepLR", max_iter=400))
    (tmp_path / "log.txt").write_text(host.log_lines({200: {"loss": 1.0}, 400: {"loss": 0.9}}))
    schedule = read_schedule(tmp_path)
    assert (schedule["type"], schedule["stopped_at"], schedule["stop_reason"]) == ("WarmupMultiStepLR", 400, "MAX_ITER")


def test_runs_table_states_schedule_stop_and_times(bench):
    _, out, _ = bench
    md = (out / "report.md").read_text()
    assert "| align | 2 | done | WarmupReduceLROnPlateau, 0 LR decay(s) | 0.01 | 400 of 400 (MAX_ITER) | 100 | 10 |" in md
    assert "Total recorded run time: 0.24 h (880 s)." in md  # 8 finished runs x 110 s
    assert "one point per 200 iterations" in md


def test_head_body_tail_counts_come_from_the_synthetic_dataset_h5(tmp_path):
    """With a synthetic PATHS_CATALOG in the bench's base opts, counts are read from its h5 (split 0,
    minus the catalog's validation images), not from the host's overlap-filtered cache."""
    h5py = pytest.importorskip("h5py")
    import numpy as np

    data = tmp_path / "data"
    data.mkdir()
    # Training images 0..2 (image 0 is validation: NUM_VAL_IMAGES = 1), test image 3.
    # Training relations (images 1, 2): predicates 1 x3, 2 x2, 3 x0, 4 x1, 5 x4, 6 x5.
    per_image = [[6, 6, 6, 6, 6, 6, 6], [1, 1, 1, 2, 5, 5], [2, 4, 5, 5, 6, 6, 6, 6, 6], [3, 3, 3]]
    predicates = [p for image in per_image for p in image]
    sizes = np.array([len(image) for image in per_image])
    first = np.cumsum(sizes) - sizes
    with h5py.File(data / "VG-SGG-with-attri.h5", "w") as h5:
        h5["split"] = np.array([0, 0, 0, 2])
        h5["img_to_first_box"] = np.array([0, 1, 2, 3])
        h5["img_to_first_rel"] = first
        h5["img_to_last_rel"] = first + sizes - 1
        h5["predicates"] = np.array(predicates).reshape(-1, 1)
    (data / "VG-SGG-dicts-with-attri.json").write_text(json.dumps(
        {"idx_to_predicate": {str(i): n for i, n in enumerate(host.PREDICATES) if i}}))
    (data / "paths_catalog.py").write_text("NUM_VAL_IMAGES = 1  # the first training images\n")
    bench_dir = tmp_path / "bench"
    _one_run_bench(bench_dir)
    plan = json.loads((bench_dir / "bench.json").read_text())
    plan.update(base_opts=["PATHS_CATALOG", str(data / "paths_catalog.py")], cwd=str(tmp_path))
    (bench_dir / "bench.json").write_text(json.dumps(plan))
    assert main(["report", str(bench_dir), "--out", str(tmp_path / "r")]) == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert [p["train_count"] for p in report["predicates"]] == [3, 2, 0, 1, 4, 5]
    assert report["split"]["statistics"] == "../data/VG-SGG-with-attri.h5"
    assert "the first 1 training images are validation" in report["split"]["counts_from"]
    # ranked: wearing 5, riding 4 | above 3, on 2 | has 1, attached to 0
    assert {p["name"]: p["group"] for p in report["predicates"]} == {
        "wearing": "head", "riding": "head", "above": "body", "on": "body", "has": "tail", "attached to": "tail"}


def test_the_host_cache_is_a_flagged_fallback(bench):
    _, _, report = bench
    assert report["split"]["counts_from"].startswith("the host's statistics cache, built with filter_non_overlap=True")


def test_multi_step_decays_are_the_steps_below_the_last_iteration_and_the_final_lr_is_the_last_logged(tmp_path):
    (tmp_path / "config.yml").write_text(host.saved_config("WarmupMultiStepLR", max_iter=400, steps=(240, 320, 400)))
    # The host's lines at 200 and 400 carry the LR; the plug-in's LOG_PERIOD line at 320 has none.
    lines = host.log_lines({200: {"loss": 1.0}, 400: {"loss": 0.9}}, lrs={200: 0.04, 400: 0.0004}).splitlines()
    lines.insert(2, "2024-01-01 10:00:30,000 maskrcnn_benchmark INFO: iter: 320  loss: 0.9 (1.0)  "
                    "time: 0.5 (0.5)  data: 0.01 (0.01)  (sgg-plugins LOG_PERIOD)")
    (tmp_path / "log.txt").write_text("\n".join(lines) + "\n")
    schedule = read_schedule(tmp_path)
    assert schedule["steps"] == [240, 320, 400]
    # The scheduler steps after each update: a step at the last iteration lowers no update's LR.
    assert schedule["decays"] == [240, 320]
    assert (schedule["final_lr"], schedule["final_lr_iter"]) == (0.0004, 400)
    # A log whose last line with an LR is older says where it was logged.
    (tmp_path / "log.txt").write_text("\n".join(lines[:3]) + "\n")
    schedule = read_schedule(tmp_path)
    assert (schedule["stopped_at"], schedule["final_lr"], schedule["final_lr_iter"]) == (320, 0.04, 200)
    assert schedule["decays"] == [240]


def test_runs_table_lists_each_runs_lr_decays_and_final_lr(tmp_path):
    """The evidence protocol: WarmupMultiStepLR with STEPS (240, 320), TO_VAL False, 400 iterations."""
    bench_dir = tmp_path / "bench"
    run_dir = _one_run_bench(bench_dir)
    (run_dir / "config.yml").write_text(host.saved_config("WarmupMultiStepLR", max_iter=400, steps=(240, 320)))
    (run_dir / "log.txt").write_text(host.log_lines(losses("baseline"), lrs={200: 0.04, 400: 0.0004}))
    assert main(["report", str(bench_dir), "--out", str(tmp_path / "r")]) == 0
    md = (tmp_path / "r" / "report.md").read_text()
    assert ("| Variant | Seed | Status | Schedule | Final LR | Stopped at | train s | test s | Note |" in md)
    assert "| baseline | 0 | done | WarmupMultiStepLR, 2 LR decay(s) at 240, 320 | 0.0004 | 400 of 400 (MAX_ITER) |" in md
    assert "starting LR" not in md
    run = json.loads((tmp_path / "r" / "report.json").read_text())["runs"][0]
    assert run["lr_decayed_before_test"] is True
    assert run["schedule"]["decays"] == [240, 320] and run["schedule"]["final_lr"] == 0.0004
    rows = (tmp_path / "r" / "report.csv").read_text().splitlines()
    assert "schedule,baseline,0,lr_decay,iteration,320" in rows and "schedule,baseline,0,final_lr,value,0.0004" in rows


def test_a_run_tested_at_its_starting_lr_is_warned_about(bench):
    # Every fixture run trains WarmupReduceLROnPlateau without a decay; probe/seed1 failed and has no test.
    _, out, report = bench
    assert {r["lr_decayed_before_test"] for r in report["runs"] if r["status"] == "done"} == {False}
    md = (out / "report.md").read_text()
    warning = ("⚠ 8 run(s) ended at their starting LR, with no LR decay before the test: their test scores an "
               "unsettled iterate (baseline/seed0, baseline/seed1, baseline/seed2, align/seed0, align/seed1, "
               "align/seed2, probe/seed0, probe/seed2).")
    assert warning in md
    assert md.index("| probe | 2 | done |") < md.index(warning) < md.index("Total recorded run time")
