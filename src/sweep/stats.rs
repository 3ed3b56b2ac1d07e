//! The statistics of a comparison across seeds: means, t intervals, the paired t-test and the
//! exact Wilcoxon signed-rank test.

use statrs::distribution::{ContinuousCDF, StudentsT};

/// Mean, sample standard deviation and the half-width of a 95% t interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    pub n: usize,
    pub mean: f64,
    pub sd: f64,
    pub half_width: f64,
}

pub fn estimate(xs: &[f64]) -> Estimate {
    let n = xs.len();
    let mean = xs.iter().sum::<f64>() / n.max(1) as f64;
    if n < 2 {
        return Estimate {
            n,
            mean,
            sd: 0.0,
            half_width: f64::NAN,
        };
    }
    let sd = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
    let t = StudentsT::new(0.0, 1.0, (n - 1) as f64)
        .map(|d| d.inverse_cdf(0.975))
        .unwrap_or(f64::NAN);
    Estimate {
        n,
        mean,
        sd,
        half_width: t * sd / (n as f64).sqrt(),
    }
}

/// Two-sided p-value of the paired t-test that the mean difference is zero.
pub fn paired_t(diffs: &[f64]) -> f64 {
    let e = estimate(diffs);
    if e.n < 2 {
        return f64::NAN;
    }
    if e.sd == 0.0 {
        return if e.mean == 0.0 { 1.0 } else { 0.0 };
    }
    let t = e.mean / (e.sd / (e.n as f64).sqrt());
    StudentsT::new(0.0, 1.0, (e.n - 1) as f64)
        .map(|d| 2.0 * (1.0 - d.cdf(t.abs())))
        .unwrap_or(f64::NAN)
}

/// Two-sided exact p-value of the Wilcoxon signed-rank test (zero differences dropped, ties
/// given average ranks), by counting all 2ⁿ sign assignments with a dynamic programme.
pub fn wilcoxon(diffs: &[f64]) -> f64 {
    let mut d: Vec<f64> = diffs.iter().copied().filter(|x| *x != 0.0).collect();
    let n = d.len();
    if n == 0 {
        return 1.0;
    }
    d.sort_by(|a, b| a.abs().total_cmp(&b.abs()));
    // doubled ranks stay integers with ties
    let mut ranks2 = vec![0usize; n];
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && d[j + 1].abs() == d[i].abs() {
            j += 1;
        }
        for r in ranks2.iter_mut().take(j + 1).skip(i) {
            *r = i + j + 2; // 2 × the average of ranks i+1 ..= j+1
        }
        i = j + 1;
    }
    let total: usize = ranks2.iter().sum();
    let w_plus: usize = ranks2
        .iter()
        .zip(&d)
        .filter(|(_, x)| **x > 0.0)
        .map(|(r, _)| *r)
        .sum();
    // counts[s] = number of sign patterns whose positive ranks sum to s
    let mut counts = vec![0f64; total + 1];
    counts[0] = 1.0;
    for &r in &ranks2 {
        for s in (r..=total).rev() {
            counts[s] += counts[s - r];
        }
    }
    let all = 2f64.powi(n as i32);
    let lo = w_plus.min(total - w_plus);
    let tail: f64 = counts[..=lo].iter().sum::<f64>() / all;
    (2.0 * tail).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference values computed with scipy 1.17.1:
    /// `scipy.stats.ttest_1samp([1.2, 0.4, 2.2, 1.0, 0.8], 0).pvalue` = 0.020384322292655226;
    /// `scipy.stats.wilcoxon([1.2, 0.4, 2.2, 1.0, 0.8]).pvalue` = 0.0625 (exact: 2/32);
    /// `scipy.stats.wilcoxon([1.0, -2.0, 3.0, 4.0, -5.0, 6.0]).pvalue` = 0.5625;
    /// `scipy.stats.t.ppf(0.975, 4)` = 2.7764451051977934.
    #[test]
    fn matches_scipy() {
        let d = [1.2, 0.4, 2.2, 1.0, 0.8];
        assert!(
            (paired_t(&d) - 0.020_384_322_292_655_226).abs() < 1e-9,
            "{}",
            paired_t(&d)
        );
        assert!((wilcoxon(&d) - 0.0625).abs() < 1e-12);
        assert!((wilcoxon(&[1.0, -2.0, 3.0, 4.0, -5.0, 6.0]) - 0.5625).abs() < 1e-12);
        let e = estimate(&d);
        let sd = (d.iter().map(|x| (x - 1.12f64).powi(2)).sum::<f64>() / 4.0).sqrt();
        assert!((e.half_width - 2.776_445_105_197_793_4 * sd / 5f64.sqrt()).abs() < 1e-9);
    }
}
