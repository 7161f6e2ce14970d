//! E-Divisive means: change-point detection on a series of runs, as in MongoDB's performance CI
//! and Apache Otava (formerly Hunter).
//!
//! Method (Matteson & James, "A Nonparametric Approach for Multiple Change Point Analysis of
//! Multivariate Data", JASA 2014, with α = 1, i.e. on the means): for a segment Z of n points
//! and a split τ into X = Z[..τ] and Y = Z[τ..], the energy statistic
//!
//! ```text
//! Q(τ) = τ(n−τ)/n · ( 2/(τ(n−τ)) Σ|Xi−Yj| − 1/C(τ,2) Σ|Xi−Xk| − 1/C(n−τ,2) Σ|Yj−Yk| )
//! ```
//!
//! is large when the two sides differ in location. The best split of a segment is its largest
//! Q over τ with both sides at least [`Params::min_segment`] long. The search is divisive:
//! the best split over all current segments is tested with a permutation test — the points of
//! that segment are shuffled [`Params::permutations`] times, the largest Q of each shuffle
//! recorded, and p = (1 + #{shuffles ≥ observed}) / (1 + permutations). If p ≤
//! [`Params::alpha`] the split is a change point and both halves are searched again; otherwise
//! the search stops. Two rules keep one noisy run from being a shift: the statistic is computed
//! on the segment's ranks ([`ranks`]: one outlier moves a rank sum by at most the segment's
//! length), and a change point needs `min_segment` runs on each side. Shuffles come from a seeded
//! generator, so the same inputs always give the same change points.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

/// Parameters of the detection.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Params {
    /// Significance level of the permutation test.
    pub alpha: f64,
    /// Shuffles per test.
    pub permutations: usize,
    /// Fewest points on each side of a change point.
    pub min_segment: usize,
    /// Seed of the shuffles.
    pub seed: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params { alpha: 0.01, permutations: 199, min_segment: 3, seed: 1 }
    }
}

/// One change point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ChangePoint {
    /// Index of the first point after the change.
    pub index: usize,
    /// Permutation p-value.
    pub p_value: f64,
    /// Energy statistic of the split.
    pub q: f64,
}

/// The best split of `z` with both sides at least `min` long: (τ, Q). As in Matteson & James's
/// E-Divisive, the right side *Y* = Z[τ..κ] may end before the segment does (κ ≤ n), so a shift
/// that later returns (up, then back down) is seen as the block it is.
pub fn best_split(z: &[f64], min: usize) -> Option<(usize, f64)> {
    let n = z.len();
    let min = min.max(1);
    if n < 2 * min || n < 3 {
        return None;
    }
    // s[a][b] = Σ_{i<a, j<b} |z_i − z_j|: any block sum of the distance matrix in O(1).
    let w = n + 1;
    let mut s = vec![0.0f64; w * w];
    for a in 1..=n {
        for b in 1..=n {
            s[a * w + b] = (z[a - 1] - z[b - 1]).abs() + s[(a - 1) * w + b] + s[a * w + b - 1] - s[(a - 1) * w + b - 1];
        }
    }
    let block =
        |i0: usize, i1: usize, j0: usize, j1: usize| s[i1 * w + j1] - s[i0 * w + j1] - s[i1 * w + j0] + s[i0 * w + j0];
    // Pairs within [u, v): half the square block (the diagonal is zero).
    let within = |u: usize, v: usize| block(u, v, u, v) / 2.0;
    let pairs = |k: f64| if k > 1.0 { k * (k - 1.0) / 2.0 } else { 1.0 };
    let mut best: Option<(usize, f64)> = None;
    for tau in min..=n - min {
        let a = tau as f64;
        let wx = within(0, tau) / pairs(a);
        for kappa in tau + min..=n {
            let b = (kappa - tau) as f64;
            let e = 2.0 * block(0, tau, tau, kappa) / (a * b) - wx - within(tau, kappa) / pairs(b);
            let q = a * b / (a + b) * e;
            if best.is_none_or(|(_, bq)| q > bq) {
                best = Some((tau, q));
            }
        }
    }
    best
}

/// The ranks of `z` (1 = smallest; ties share their mean rank). The detection runs on the
/// segment's ranks, so one run however slow moves a rank sum by at most the segment's length:
/// a lone outlier cannot outweigh the runs around it, while a real shift separates the ranks
/// as cleanly as it separates the values. The permutation test shuffles the same ranks, so it
/// stays exact.
pub fn ranks(z: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..z.len()).collect();
    idx.sort_by(|&a, &b| z[a].total_cmp(&z[b]));
    let mut r = vec![0.0; z.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && z[idx[j + 1]] == z[idx[i]] {
            j += 1;
        }
        let mean = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = mean;
        }
        i = j + 1;
    }
    r
}

/// The change points of `series`, in index order (on each segment's [`ranks`]).
pub fn change_points(series: &[f64], p: &Params) -> Vec<ChangePoint> {
    let mut rng = StdRng::seed_from_u64(p.seed);
    let mut cuts: Vec<usize> = vec![0, series.len()];
    let mut found = Vec::new();
    loop {
        // The best split over every current segment.
        let mut best: Option<(usize, usize, usize, f64)> = None;
        for w in cuts.windows(2) {
            let (a, b) = (w[0], w[1]);
            if let Some((tau, q)) = best_split(&ranks(&series[a..b]), p.min_segment)
                && best.is_none_or(|(_, _, _, bq)| q > bq)
            {
                best = Some((a, b, a + tau, q));
            }
        }
        let Some((a, b, at, q)) = best else { break };
        let mut shuffled = ranks(&series[a..b]);
        let mut exceed = 0usize;
        for _ in 0..p.permutations {
            shuffled.shuffle(&mut rng);
            if best_split(&shuffled, p.min_segment).is_some_and(|(_, sq)| sq >= q) {
                exceed += 1;
            }
        }
        let p_value = (1 + exceed) as f64 / (1 + p.permutations) as f64;
        if p_value > p.alpha {
            break;
        }
        found.push(ChangePoint { index: at, p_value, q });
        cuts.push(at);
        cuts.sort_unstable();
    }
    found.sort_by_key(|c| c.index);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic noise in [-1, 1].
    fn noise(n: usize, seed: u64) -> Vec<f64> {
        use rand::Rng;
        let mut r = StdRng::seed_from_u64(seed);
        (0..n).map(|_| r.random_range(-1.0..=1.0)).collect()
    }

    #[test]
    fn a_step_change_is_found_at_the_first_point_after_it() {
        let z: Vec<f64> = noise(20, 7).iter().enumerate().map(|(i, e)| if i < 12 { 10.0 } else { 15.0 } + e).collect();
        let cps = change_points(&z, &Params::default());
        assert_eq!(cps.len(), 1, "{cps:?}");
        assert_eq!(cps[0].index, 12);
        assert!(cps[0].p_value <= 0.01);
    }

    #[test]
    fn noise_without_a_step_has_no_change_point() {
        let z: Vec<f64> = noise(20, 5).iter().map(|e| 10.0 + 2.0 * e).collect();
        assert!(change_points(&z, &Params::default()).is_empty());
    }

    #[test]
    fn noise_without_a_step_is_flagged_no_more_often_than_alpha_says() {
        // The permutation test controls false alarms: at α = 0.01, about 1 noise series in 100
        // gets a change point. 300 series: allow up to 3 %.
        let flagged = (0..300u64)
            .filter(|seed| {
                let z: Vec<f64> = noise(20, 1000 + seed).iter().map(|e| 10.0 + 2.0 * e).collect();
                !change_points(&z, &Params { seed: *seed, ..Params::default() }).is_empty()
            })
            .count();
        assert!(flagged <= 9, "{flagged} of 300 noise series flagged");
    }

    #[test]
    fn one_noisy_run_is_not_a_shift() {
        let mut z: Vec<f64> = noise(16, 3).iter().map(|e| 10.0 + 0.5 * e).collect();
        z[8] = 40.0;
        assert!(change_points(&z, &Params::default()).is_empty());
        // Even at the end of the history, where it could only be a segment of one.
        let mut z: Vec<f64> = noise(16, 4).iter().map(|e| 10.0 + 0.5 * e).collect();
        z[15] = 40.0;
        assert!(change_points(&z, &Params::default()).is_empty());
    }

    #[test]
    fn ranks_are_one_based_and_ties_share_their_mean() {
        assert_eq!(ranks(&[10.0, 40.0, 20.0]), vec![1.0, 3.0, 2.0]);
        assert_eq!(ranks(&[5.0, 5.0, 1.0]), vec![2.5, 2.5, 1.0]);
    }

    #[test]
    fn two_steps_are_both_found() {
        let z: Vec<f64> = noise(30, 11)
            .iter()
            .enumerate()
            .map(|(i, e)| match i {
                0..10 => 10.0,
                10..20 => 20.0,
                _ => 12.0,
            } + e)
            .collect();
        let idx: Vec<usize> = change_points(&z, &Params::default()).iter().map(|c| c.index).collect();
        assert_eq!(idx, vec![10, 20]);
    }

    #[test]
    fn a_series_too_short_for_two_segments_has_none() {
        assert!(change_points(&[1.0, 1.0, 5.0, 5.0, 5.0], &Params::default()).is_empty());
        assert!(best_split(&[1.0], 1).is_none());
    }

    #[test]
    fn the_incremental_statistic_matches_the_definition() {
        let z: [f64; 7] = [1.0, 2.0, 4.0, 8.0, 3.0, 9.0, 7.0];
        let q_direct = |z: &[f64], tau: usize| {
            let (x, y) = z.split_at(tau);
            let (a, b) = (x.len() as f64, y.len() as f64);
            let between: f64 = x.iter().flat_map(|xi: &f64| y.iter().map(move |yj: &f64| (xi - yj).abs())).sum();
            let within = |v: &[f64]| -> f64 {
                let s: f64 =
                    v.iter().enumerate().flat_map(|(i, a)| v[i + 1..].iter().map(move |b| (a - b).abs())).sum();
                let n = v.len() as f64;
                s / (n * (n - 1.0) / 2.0)
            };
            a * b / (a + b) * (2.0 * between / (a * b) - within(x) - within(y))
        };
        let (tau, q) = best_split(&z, 2).unwrap();
        let want = (2..=5)
            .flat_map(|t| (t + 2..=z.len()).map(move |k| (t, k)))
            .map(|(t, k)| (t, q_direct(&z[..k], t)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap();
        assert_eq!(tau, want.0);
        assert!((q - want.1).abs() < 1e-9);
    }
}
