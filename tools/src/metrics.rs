//! Anomaly-detection metrics on scores `s = −log p(x)` (higher = more
//! anomalous).
//!
//! Rows the model cannot score (non-finite input or overflow) are passed as
//! `None`. The conventions, used everywhere in the tool: such a row is
//! *flagged* (a detector treats invalid input as an alarm, never as
//! normal), it ranks above every finite score in [`auroc`], and it is
//! excluded from quantiles and mean NLLs — and always counted and reported
//! by the caller.

use serde::Serialize;

fn key(s: Option<f64>) -> f64 {
    match s {
        Some(v) if !v.is_nan() => v,
        _ => f64::INFINITY,
    }
}

/// Area under the ROC curve of `scores` against `labels` (`true` =
/// anomaly): the probability that a random anomaly scores above a random
/// normal row, ties counting one half. `None` scores rank as `+∞`. Returns
/// `None` when either class is empty.
pub fn auroc(scores: &[Option<f64>], labels: &[bool]) -> Option<f64> {
    assert_eq!(scores.len(), labels.len(), "one label per score");
    let pos = labels.iter().filter(|&&l| l).count();
    let neg = labels.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    // Mann–Whitney U with mid-ranks for ties.
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| key(scores[a]).total_cmp(&key(scores[b])));
    let mut rank_sum_pos = 0.0f64;
    let mut i = 0;
    while i < idx.len() {
        let k = key(scores[idx[i]]);
        let mut j = i;
        while j < idx.len() && key(scores[idx[j]]) == k {
            j += 1;
        }
        let mid = (i + 1 + j) as f64 / 2.0; // mean of 1-based ranks i+1..=j
        rank_sum_pos += mid * idx[i..j].iter().filter(|&&t| labels[t]).count() as f64;
        i = j;
    }
    let (p, n) = (pos as f64, neg as f64);
    Some((rank_sum_pos - p * (p + 1.0) / 2.0) / (p * n))
}

/// Is a row with this score flagged at `threshold`? (`score > threshold`;
/// unscorable rows are always flagged.)
pub fn is_flagged(score: Option<f64>, threshold: f64) -> bool {
    match score {
        Some(s) if !s.is_nan() => s > threshold,
        _ => true,
    }
}

/// Detection quality at a threshold.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Rates {
    /// The threshold on `−log p` (nats).
    pub threshold: f64,
    /// Normal rows flagged / normal rows (`NaN` without normal rows).
    pub false_alarm_rate: f64,
    /// Anomalous rows flagged / anomalous rows (`NaN` without anomalies).
    pub detection_rate: f64,
    /// Normal rows.
    pub normal: usize,
    /// Anomalous rows.
    pub anomalies: usize,
    /// Normal rows flagged.
    pub false_alarms: usize,
    /// Anomalous rows flagged.
    pub detections: usize,
}

/// False-alarm and detection rates of flagging `score > threshold`
/// (`labels`: `true` = anomaly; unscorable rows are flagged).
pub fn rates(scores: &[Option<f64>], labels: &[bool], threshold: f64) -> Rates {
    assert_eq!(scores.len(), labels.len(), "one label per score");
    let (mut normal, mut anomalies, mut fa, mut det) = (0, 0, 0, 0);
    for (&s, &l) in scores.iter().zip(labels) {
        let f = is_flagged(s, threshold);
        if l {
            anomalies += 1;
            det += f as usize;
        } else {
            normal += 1;
            fa += f as usize;
        }
    }
    let ratio = |a: usize, b: usize| if b == 0 { f64::NAN } else { a as f64 / b as f64 };
    Rates {
        threshold,
        false_alarm_rate: ratio(fa, normal),
        detection_rate: ratio(det, anomalies),
        normal,
        anomalies,
        false_alarms: fa,
        detections: det,
    }
}

/// Fraction of rows flagged at `threshold` (unscorable rows are flagged).
pub fn flag_rate(scores: &[Option<f64>], threshold: f64) -> f64 {
    if scores.is_empty() {
        return f64::NAN;
    }
    scores.iter().filter(|&&s| is_flagged(s, threshold)).count() as f64 / scores.len() as f64
}

/// The `q`-quantile (`0 ≤ q ≤ 1`) of finite values, linearly interpolated
/// between order statistics (NumPy's default). `None` if there are no
/// finite values.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(quantile_sorted(&v, q))
}

/// [`quantile`] of already sorted, finite, non-empty values.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    assert!(!sorted.is_empty(), "quantile of no values");
    let q = q.clamp(0.0, 1.0);
    let h = q * (sorted.len() - 1) as f64;
    let lo = h.floor() as usize;
    let hi = h.ceil() as usize;
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// Threshold on `−log p` for a target false-alarm rate on normal data: the
/// `(1 − rate)`-quantile of the finite scores (rows scoring above it are
/// flagged). `None` without any finite score.
pub fn threshold_for_false_alarm_rate(normal_scores: &[f64], rate: f64) -> Option<f64> {
    quantile(normal_scores, 1.0 - rate)
}

/// Summary of a set of scores.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ScoreSummary {
    /// Finite scores summarised.
    pub n: usize,
    /// Mean.
    pub mean: f64,
    /// Minimum.
    pub min: f64,
    /// 1 % quantile.
    pub p01: f64,
    /// 5 % quantile.
    pub p05: f64,
    /// Median.
    pub p50: f64,
    /// 95 % quantile.
    pub p95: f64,
    /// 99 % quantile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

/// Mean and quantiles of the finite `scores`; `None` if there are none.
pub fn summarize(scores: &[f64]) -> Option<ScoreSummary> {
    let mut v: Vec<f64> = scores.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let q = |p| quantile_sorted(&v, p);
    Some(ScoreSummary {
        n: v.len(),
        mean: v.iter().sum::<f64>() / v.len() as f64,
        min: v[0],
        p01: q(0.01),
        p05: q(0.05),
        p50: q(0.5),
        p95: q(0.95),
        p99: q(0.99),
        max: v[v.len() - 1],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auroc_basics() {
        let l = [false, false, true, true];
        assert_eq!(auroc(&[Some(0.), Some(1.), Some(2.), Some(3.)], &l), Some(1.0));
        assert_eq!(auroc(&[Some(3.), Some(2.), Some(1.), Some(0.)], &l), Some(0.0));
        assert_eq!(auroc(&[Some(1.); 4], &l), Some(0.5));
        assert_eq!(auroc(&[Some(0.), None, Some(2.), Some(3.)], &l), Some(0.5));
        assert_eq!(auroc(&[Some(0.)], &[true]), None);
    }

    #[test]
    fn rates_and_quantiles() {
        let s = [Some(0.), Some(5.), None, Some(1.)];
        let r = rates(&s, &[false, false, false, true], 2.0);
        assert_eq!((r.false_alarms, r.detections), (2, 0));
        assert!((r.false_alarm_rate - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(quantile(&[1., 2., 3., 4., f64::NAN], 0.5), Some(2.5));
        let v: Vec<f64> = (0..=100).map(|i| i as f64).collect();
        assert_eq!(threshold_for_false_alarm_rate(&v, 0.01), Some(99.0));
        assert_eq!(summarize(&v).unwrap().p50, 50.0);
    }
}
