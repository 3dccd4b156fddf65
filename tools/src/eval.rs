//! The report of `flowmote eval`: one typed value that serialises to the
//! JSON `--json` prints and displays as the text it prints otherwise.

use crate::metrics::{self, Rates, ScoreSummary};
use serde::Serialize;
use std::fmt;

/// What `flowmote eval` found.
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    /// The model file, as given.
    pub model: String,
    /// The evaluated CSV, as given.
    pub data: String,
    /// Rows in the CSV.
    pub rows: usize,
    /// Scorable rows.
    pub n: usize,
    /// Mean NLL of the scorable rows (nats/row).
    pub nll: f64,
    /// Rows that could not be scored.
    pub unscorable: usize,
    /// Their CSV lines (the first 20).
    pub unscorable_lines: Vec<usize>,
    /// Quantiles of the finite scores.
    pub score_quantiles: Option<ScoreSummary>,
    /// Mean NLL of the Gaussian baseline, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gaussian_nll: Option<f64>,
    /// The figures that need labels.
    #[serde(flatten)]
    pub labelled: Option<Labelled>,
    /// Without labels: the share of rows flagged at the calibrated threshold.
    #[serde(flatten)]
    pub flagged: Option<Flagged>,
    /// The first unscorable row's line and why (text only).
    #[serde(skip)]
    pub first_unscorable: Option<(usize, String)>,
}

/// Figures of a labelled CSV.
#[derive(Clone, Debug, Serialize)]
pub struct Labelled {
    /// Scorable normal rows.
    pub n_normal: usize,
    /// Anomalous rows.
    pub n_anomalies: usize,
    /// Mean NLL of the scorable normal rows.
    pub nll_normal: f64,
    /// AUROC of the score `−log p` (unscorable rows rank highest); `None`
    /// without both classes.
    pub auroc: Option<f64>,
    /// The Gaussian baseline's, when asked for.
    #[serde(flatten)]
    pub gaussian: Option<GaussianLabelled>,
    /// The rates at the calibrated threshold, when the model has one.
    #[serde(flatten)]
    pub at_threshold: Option<AtThreshold>,
}

/// The Gaussian baseline on a labelled CSV.
#[derive(Clone, Debug, Serialize)]
pub struct GaussianLabelled {
    /// Its AUROC.
    pub gaussian_auroc: Option<f64>,
    /// Its mean NLL of the normal rows.
    pub gaussian_nll_normal: f64,
}

/// Detection at the model's calibrated threshold.
#[derive(Clone, Debug, Serialize)]
pub struct AtThreshold {
    /// The threshold on `−log p`.
    pub threshold: f32,
    /// Normal rows flagged / normal rows.
    pub false_alarm_rate: f64,
    /// Anomalies flagged / anomalies.
    pub detection_rate: f64,
    /// All the counts.
    pub rates: Rates,
    /// The false-alarm rate it was calibrated for (text only).
    #[serde(skip)]
    pub target: f64,
}

/// Rows flagged at the calibrated threshold (unlabelled CSV).
#[derive(Clone, Debug, Serialize)]
pub struct Flagged {
    /// The threshold on `−log p`.
    pub threshold: f32,
    /// Share of rows flagged (unscorable rows count as flagged).
    pub flag_rate: f64,
}

/// Mean, `NaN` for no values.
pub fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// The finite scores of the rows `labels` marks normal (`false`).
pub fn normal_scores(scores: &[Option<f64>], labels: &[bool]) -> Vec<f64> {
    scores
        .iter()
        .zip(labels)
        .filter(|(_, &l)| !l)
        .filter_map(|(s, _)| *s)
        .collect()
}

impl Labelled {
    /// The figures of `scores` (and the baseline's `gaussian`) against
    /// `labels`, with the rates at `threshold` `(score, target rate)`.
    pub fn new(
        scores: &[Option<f64>],
        gaussian: Option<&[Option<f64>]>,
        labels: &[bool],
        threshold: Option<(f32, f64)>,
    ) -> Self {
        let normal = normal_scores(scores, labels);
        Labelled {
            n_normal: normal.len(),
            n_anomalies: labels.iter().filter(|&&l| l).count(),
            nll_normal: mean(&normal),
            auroc: metrics::auroc(scores, labels),
            gaussian: gaussian.map(|gs| GaussianLabelled {
                gaussian_auroc: metrics::auroc(gs, labels),
                gaussian_nll_normal: mean(&normal_scores(gs, labels)),
            }),
            at_threshold: threshold.map(|(t, target)| {
                let rt = metrics::rates(scores, labels, t as f64);
                AtThreshold {
                    threshold: t,
                    false_alarm_rate: rt.false_alarm_rate,
                    detection_rate: rt.detection_rate,
                    rates: rt,
                    target,
                }
            }),
        }
    }
}

impl fmt::Display for EvalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} rows, mean NLL {:.4} nats/row over {} scorable rows",
            self.data, self.rows, self.nll, self.n
        )?;
        if let Some((line, e)) = &self.first_unscorable {
            writeln!(
                f,
                "warning: {} row(s) could not be scored (e.g. line {line}: {e}) — excluded from the NLL, flagged as anomalous in rates and AUROC",
                self.unscorable
            )?;
        }
        if let Some(g) = self.gaussian_nll {
            writeln!(f, "full-covariance Gaussian baseline: mean NLL {g:.4} nats/row")?;
        }
        if let Some(l) = &self.labelled {
            writeln!(
                f,
                "normal rows: mean NLL {:.4} nats/row ({} rows); anomalies: {} rows",
                l.nll_normal, l.n_normal, l.n_anomalies
            )?;
            match l.auroc {
                Some(v) => writeln!(f, "AUROC (score = −log p): {v:.4}")?,
                None => writeln!(f, "AUROC: undefined (needs both normal and anomalous rows)")?,
            }
            if let Some(g) = &l.gaussian {
                writeln!(
                    f,
                    "Gaussian baseline: AUROC {}, normal-row NLL {:.4}",
                    g.gaussian_auroc.map_or("undefined".into(), |v| format!("{v:.4}")),
                    g.gaussian_nll_normal
                )?;
            }
            match &l.at_threshold {
                Some(t) => {
                    let rt = &t.rates;
                    writeln!(
                        f,
                        "at the calibrated threshold {:.4} (for {:.2} % false alarms): false-alarm rate {:.2} % ({}/{}), detection rate {:.2} % ({}/{})",
                        t.threshold,
                        100.0 * t.target,
                        100.0 * rt.false_alarm_rate,
                        rt.false_alarms,
                        rt.normal,
                        100.0 * rt.detection_rate,
                        rt.detections,
                        rt.anomalies
                    )?;
                }
                None => writeln!(f, "no threshold in the model: run `flowmote calibrate` for alarm rates")?,
            }
        } else if let Some(fl) = &self.flagged {
            writeln!(
                f,
                "flagged at the calibrated threshold {:.4}: {:.2} % of rows",
                fl.threshold,
                100.0 * fl.flag_rate
            )?;
        }
        Ok(())
    }
}
