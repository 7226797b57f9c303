"""The report's statistics over seeds: mean and sample std, the paired tests of a variant against the
baseline (``scipy.stats.ttest_rel``, ``scipy.stats.wilcoxon``, the t-based confidence interval), the
noise floor of that test, each predicate's share of the seed-to-seed variance of mR@K, and F@K.

scipy and numpy are imported inside the functions that need them.
"""

import math
import statistics


def mean_std(values):
    """``(mean, sample std with ddof=1, n)`` of the values that exist; std is None below 2 values."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None, 0
    std = statistics.stdev(values) if len(values) > 1 else None
    return statistics.fmean(values), std, len(values)


def paired_test(variant_by_seed, baseline_by_seed, confidence=0.95):
    """Paired tests of a variant against the baseline over the seeds both finished.

    With d_s = variant_s - baseline_s: ``scipy.stats.ttest_rel`` (two-sided; t, df, p and the
    t-based ``confidence`` interval of mean(d)) and ``scipy.stats.wilcoxon`` (two-sided signed-rank,
    exact for small n). Below two seeds, or when d is the same on every seed (no spread, so no t),
    the t-test is not available and ``note`` says why.
    """
    seeds = sorted(s for s, v in variant_by_seed.items() if v is not None and baseline_by_seed.get(s) is not None)
    variant = [variant_by_seed[s] for s in seeds]
    baseline = [baseline_by_seed[s] for s in seeds]
    diffs = [v - b for v, b in zip(variant, baseline)]
    result = {"seeds": seeds, "diffs": diffs, "n": len(diffs), "mean_diff": None, "std_diff": None,
              "t": None, "df": None, "p": None, "ci_low": None, "ci_high": None, "confidence": confidence,
              "wilcoxon_statistic": None, "wilcoxon_p": None, "note": ""}
    if diffs:
        result["mean_diff"] = statistics.fmean(diffs)
    if len(diffs) < 2:
        result["note"] = "n/a: fewer than 2 seeds finished for both"
        return result
    from scipy import stats

    std = statistics.stdev(diffs)
    result["std_diff"] = std
    if any(abs(d) > 1e-12 for d in diffs):
        # zero_method="wilcox" drops zero differences, as the signed-rank test defines them.
        wilcoxon = stats.wilcoxon(variant, baseline, alternative="two-sided")
        result.update(wilcoxon_statistic=float(wilcoxon.statistic), wilcoxon_p=float(wilcoxon.pvalue))
    # Recalls are fractions: a spread below 1e-12 is rounding, and t would be meaninglessly huge.
    if std < 1e-12:
        result["note"] = "n/a: the difference is the same on every seed"
        return result
    ttest = stats.ttest_rel(variant, baseline, alternative="two-sided")
    interval = ttest.confidence_interval(confidence_level=confidence)
    result.update(t=float(ttest.statistic), df=int(ttest.df), p=float(ttest.pvalue),
                  ci_low=float(interval.low), ci_high=float(interval.high))
    return result


def detectable_difference(baseline_std, n, alpha=0.05, power=0.8):
    """The noise floor of a paired t-test over ``n`` seeds, from the baseline's seed-to-seed std.

    Assumes the variant's seeds scatter as the baseline's and independently of them, so the paired
    differences have sd(d) = sqrt(2) * baseline_std. Returns ``{"significant": the smallest |mean d|
    that gives p < alpha (t_{1-alpha/2, n-1} * sd(d) / sqrt(n)), "at_power": the true difference the
    test detects with probability ``power`` (from the noncentral t), "wilcoxon_min_p": the smallest
    two-sided p the signed-rank test can give with n pairs, 2 / 2**n}``; None entries below 2 seeds.
    """
    result = {"n": n, "baseline_std": baseline_std, "alpha": alpha, "power": power, "sd_diff": None,
              "significant": None, "at_power": None, "wilcoxon_min_p": 2 / 2 ** n if n else None}
    if n < 2 or baseline_std is None:
        return result
    from scipy import optimize, stats

    df = n - 1
    sd_diff = math.sqrt(2) * baseline_std
    critical = stats.t.ppf(1 - alpha / 2, df)
    result.update(sd_diff=sd_diff, significant=critical * sd_diff / math.sqrt(n))
    if sd_diff == 0:
        result["at_power"] = 0.0
        return result

    def shortfall(noncentrality):
        # The far tail is below 1e-16 once the effect is sizeable, where scipy's nct.cdf can give NaN.
        far_tail = stats.nct.cdf(-critical, df, noncentrality)
        detected = stats.nct.sf(critical, df, noncentrality) + (0.0 if math.isnan(far_tail) else far_tail)
        return detected - power

    # Power 0.8 needs a noncentrality below 30 for every df >= 1 (about 17 for two seeds).
    noncentrality = optimize.brentq(shortfall, 0.0, 30.0)
    result["at_power"] = noncentrality * sd_diff / math.sqrt(n)
    return result


def _covariance_over_seeds(recall_by_seed):
    """The P x P sample covariance (ddof=1, as the std) of the per-predicate recalls over seeds."""
    import numpy as np

    return np.atleast_2d(np.cov(np.asarray(recall_by_seed, dtype=float)))


def mean_recall_variance_shares(recall_by_seed):
    """Each predicate's share of the seed-to-seed variance of mR@K, or None where mR@K did not vary.

    mR@K is the mean of the P per-predicate recalls r_1..r_P, so over seeds
    Var(mR) = (1/P^2) * sum_i sum_j Cov(r_i, r_j), and predicate i's share is
    sum_j Cov(r_i, r_j) / sum_ij Cov(r_i, r_j). The shares sum to 1; a negative one marks a predicate
    whose recall moves against the others' (a near-synonym taking recall from another).
    ``recall_by_seed``: one sequence per predicate, its recall on the same >= 2 seeds.
    """
    covariance = _covariance_over_seeds(recall_by_seed)
    row_sums = covariance.sum(axis=1)
    total = row_sums.sum()
    return None if total <= 0 else (row_sums / total).tolist()


def mean_recall_std_with_each_held(recall_by_seed):
    """For each predicate i, the seed-to-seed std of mR@K had r_i stayed at its mean over the seeds.

    Holding r_i constant removes its row and column from the covariance sum of
    ``mean_recall_variance_shares``: Var(mR | r_i held) = (sum_jk Cov - 2 sum_j Cov(r_i, r_j) + Var r_i) / P^2.
    This says how far the noise floor would fall if that one predicate were decided the same way on
    every seed (e.g. a tail predicate one seed learns and the others do not). ``recall_by_seed`` as there.
    """
    import numpy as np

    covariance = _covariance_over_seeds(recall_by_seed)
    count = covariance.shape[0]
    held = covariance.sum() - 2 * covariance.sum(axis=1) + np.diag(covariance)
    return (np.sqrt(np.clip(held, 0.0, None)) / count).tolist()


def f_at_k(recall, mean_recall):
    """F@K: the harmonic mean of R@K and mR@K (None where either is missing; 0 where both are 0)."""
    if recall is None or mean_recall is None:
        return None
    return 0.0 if recall + mean_recall == 0 else 2 * recall * mean_recall / (recall + mean_recall)
