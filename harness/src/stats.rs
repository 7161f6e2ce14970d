//! Paired-comparison statistics for A/B rounds: the Wilcoxon signed-rank test and a bootstrap
//! confidence interval of the median, both over per-round differences (log ratios B/A).
//!
//! The unit of comparison is a round (one A trial and one B trial run back to back in random
//! order), so the samples are paired and independent of each other, unlike the per-second
//! windows of one run.

/// Result of a two-sided Wilcoxon signed-rank test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SignedRank {
    /// Non-zero differences used.
    pub n: usize,
    /// Sum of the ranks of the positive differences.
    pub w_plus: f64,
    /// Two-sided p-value (exact for n ≤ 25 without ties, normal approximation with tie and
    /// continuity correction otherwise).
    pub p_value: f64,
}

/// Wilcoxon signed-rank test of `diffs` against a median of zero (zeros dropped, ties get
/// average ranks).
pub fn signed_rank(diffs: &[f64]) -> SignedRank {
    let mut d: Vec<f64> = diffs.iter().copied().filter(|x| x.is_finite() && *x != 0.0).collect();
    let n = d.len();
    if n == 0 {
        return SignedRank { n, w_plus: 0.0, p_value: 1.0 };
    }
    d.sort_by(|a, b| a.abs().total_cmp(&b.abs()));
    let mut ranks = vec![0.0; n];
    let mut ties = false;
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && d[j + 1].abs() == d[i].abs() {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for r in &mut ranks[i..=j] {
            *r = avg;
        }
        let t = (j - i + 1) as f64;
        if t > 1.0 {
            ties = true;
            tie_term += t * t * t - t;
        }
        i = j + 1;
    }
    let w_plus: f64 = d.iter().zip(&ranks).filter(|(x, _)| **x > 0.0).map(|(_, r)| r).sum();
    let total = (n * (n + 1)) as f64 / 2.0;
    let p_value = if n <= 25 && !ties {
        exact_p(n, w_plus.min(total - w_plus).round() as usize)
    } else {
        let mean = total / 2.0;
        let var = (n * (n + 1) * (2 * n + 1)) as f64 / 24.0 - tie_term / 48.0;
        let z = ((w_plus - mean).abs() - 0.5).max(0.0) / var.sqrt();
        (2.0 * (1.0 - normal_cdf(z))).min(1.0)
    };
    SignedRank { n, w_plus, p_value }
}

/// Exact two-sided p-value: 2 · P(W ≤ w) under H0, by counting rank subsets.
fn exact_p(n: usize, w: usize) -> f64 {
    let max = n * (n + 1) / 2;
    let mut counts = vec![0f64; max + 1];
    counts[0] = 1.0;
    for k in 1..=n {
        for s in (k..=max).rev() {
            counts[s] += counts[s - k];
        }
    }
    let all = 2f64.powi(n as i32);
    let tail: f64 = counts[..=w.min(max)].iter().sum();
    (2.0 * tail / all).min(1.0)
}

/// Standard normal CDF (Abramowitz–Stegun 7.1.26 erf approximation, absolute error < 1.5e-7;
/// relative error in the far tail is larger, which is why the test compares p-values loosely).
fn normal_cdf(z: f64) -> f64 {
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly =
        t * (0.254_829_592 + t * (-0.284_496_736 + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-x * x).exp();
    if z >= 0.0 { 0.5 * (1.0 + erf) } else { 0.5 * (1.0 - erf) }
}

/// Median (the mean of the middle two for an even count); `None` when empty.
pub fn median(v: &[f64]) -> Option<f64> {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    Some(if s.len().is_multiple_of(2) { (s[m - 1] + s[m]) / 2.0 } else { s[m] })
}

/// Percentile-bootstrap confidence interval `[lo, hi]` of the median of `v` at `level`
/// (e.g. 0.95), from `resamples` resamples drawn with the seeded generator `seed`, so the same
/// data always gives the same interval.
pub fn bootstrap_median_ci(v: &[f64], level: f64, resamples: usize, seed: u64) -> Option<(f64, f64)> {
    use rand::{Rng, SeedableRng};
    let data: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if data.is_empty() || resamples == 0 {
        return None;
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut meds: Vec<f64> = (0..resamples)
        .filter_map(|_| {
            let sample: Vec<f64> = (0..data.len()).map(|_| data[rng.random_range(0..data.len())]).collect();
            median(&sample)
        })
        .collect();
    meds.sort_by(f64::total_cmp);
    let alpha = (1.0 - level.clamp(0.0, 1.0)) / 2.0;
    let at = |q: f64| meds[((q * (meds.len() - 1) as f64).round() as usize).min(meds.len() - 1)];
    Some((at(alpha), at(1.0 - alpha)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exact_signed_rank_p_value_matches_the_tables() {
        // n = 10 all positive: W- = 0, p = 2 / 1024.
        let all_up: Vec<f64> = (1..=10).map(f64::from).collect();
        let r = signed_rank(&all_up);
        assert_eq!(r.w_plus, 55.0);
        assert!((r.p_value - 2.0 / 1024.0).abs() < 1e-12, "{}", r.p_value);
        // n = 8, ranks of the negatives 1, 2 (W- = 3): P(W ≤ 3) = 5/256, two-sided 10/256.
        let d = [-1.0, -2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        assert!((signed_rank(&d).p_value - 10.0 / 256.0).abs() < 1e-12);
        // Symmetric data: no evidence at all.
        let sym = [-1.0, 1.5, -2.0, 2.5, -3.0, 3.5];
        assert!(signed_rank(&sym).p_value > 0.5);
        // Zeros are dropped.
        assert_eq!(signed_rank(&[0.0, 0.0, 1.0]).n, 1);
    }

    #[test]
    fn the_normal_approximation_agrees_with_scipy_on_tied_data() {
        // scipy.stats.wilcoxon(d, correction=True, method="approx") (scipy 1.x) gives
        // statistic 27.5, p = 2.0226e-05 for these 30 differences with ties.
        let d: Vec<f64> = (0..30).map(|i| if i % 6 == 0 { -1.0 } else { 1.0 + (i % 3) as f64 }).collect();
        let r = signed_rank(&d);
        assert_eq!(r.n, 30);
        assert_eq!(r.w_plus, 437.5);
        assert!((r.p_value / 2.0226e-5 - 1.0).abs() < 0.01, "{}", r.p_value);
        assert!((normal_cdf(1.96) - 0.975).abs() < 1e-3);
    }

    #[test]
    fn the_bootstrap_interval_covers_the_median_and_narrows_with_less_spread() {
        let wide: Vec<f64> = (0..20).map(|i| 0.1 + (i as f64 - 10.0) * 0.02).collect();
        let (lo, hi) = bootstrap_median_ci(&wide, 0.95, 2000, 7).unwrap();
        let m = median(&wide).unwrap();
        assert!(lo <= m && m <= hi, "[{lo}, {hi}] vs {m}");
        let narrow: Vec<f64> = wide.iter().map(|x| 0.1 + (x - 0.1) / 10.0).collect();
        let (nlo, nhi) = bootstrap_median_ci(&narrow, 0.95, 2000, 7).unwrap();
        assert!(nhi - nlo < (hi - lo) / 5.0);
        // Seeded: the same data gives the same interval.
        assert_eq!(bootstrap_median_ci(&wide, 0.95, 2000, 7), Some((lo, hi)));
        assert_eq!(median(&[3.0, 1.0, 2.0, 10.0]), Some(2.5));
        assert_eq!(bootstrap_median_ci(&[], 0.95, 10, 1), None);
    }

    #[test]
    fn the_bootstrap_interval_has_the_known_answers_of_tiny_samples() {
        // Constant data: every resample's median is the constant.
        assert_eq!(bootstrap_median_ci(&[0.3; 10], 0.95, 1000, 1), Some((0.3, 0.3)));
        assert_eq!(bootstrap_median_ci(&[2.0], 0.95, 100, 1), Some((2.0, 2.0)));
        // {0, 1}: resample medians are 0, ½, 1 with probabilities ¼, ½, ¼ — the 95 % interval is
        // [0, 1], the central 40 % is [½, ½].
        assert_eq!(bootstrap_median_ci(&[0.0, 1.0], 0.95, 20_000, 3), Some((0.0, 1.0)));
        assert_eq!(bootstrap_median_ci(&[0.0, 1.0], 0.40, 20_000, 3), Some((0.5, 0.5)));
    }
}
