//! `flowmote eval`: the mean NLL of a CSV under a model; with labels,
//! AUROC and the alarm rates.

use super::{load_scoring, score_rows};
use crate::data;
use crate::eval::{self, EvalReport};
use crate::metrics;
use crate::model::ModelFile;
use crate::output;
use crate::train::Gaussian;
use anyhow::{ensure, Result};
use clap::Args;
use std::path::PathBuf;

/// Arguments of `flowmote eval`.
#[derive(Args, Debug, Clone)]
pub struct EvalArgs {
    /// Trained model file.
    #[arg(long)]
    pub model: PathBuf,
    /// CSV to evaluate (the model's feature columns by name; other columns ignored). With a model trained with --window: the raw
    /// sensor CSV (its channel columns by name), windowed by the model's pipeline.
    #[arg(long)]
    pub data: PathBuf,
    /// Column holding labels (0 = normal, anything else = anomaly): adds the
    /// NLL of normal rows, AUROC and the rates at the calibrated threshold.
    #[arg(long)]
    pub label_column: Option<String>,
    /// Field delimiter of the CSV: `,`, `;` or `tab` (default: detected from
    /// the header line, whichever of the three occurs most).
    #[arg(long, value_parser = crate::data::parse_delimiter)]
    pub delimiter: Option<u8>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also fit a full-covariance Gaussian on this CSV (its normal rows) and
    /// report its NLL / AUROC on the same rows, as a baseline.
    #[arg(long)]
    pub gaussian_baseline: Option<PathBuf>,
    /// Evaluate the model with its conditioner weights compressed to this
    /// storage, exactly as `export --weights` would ship it (f32 = as trained).
    #[arg(long, value_enum)]
    pub weights: Option<crate::model::Storage>,
}

/// Run `flowmote eval`; returns the report (printed as JSON with `--json`,
/// else as text).
pub fn run_eval(a: &EvalArgs) -> Result<EvalReport> {
    let _delimiter = crate::data::force_delimiter(a.delimiter);
    let mut model = ModelFile::load(&a.model)?;
    if let Some(w) = a.weights {
        model.compress(w)?;
    }
    let ds = load_scoring(&a.data, &model, a.label_column.as_deref())?;
    let r = score_rows(&model, &ds);
    let scores: Vec<Option<f64>> = r.iter().map(|s| s.as_ref().ok().copied()).collect();
    let bad: Vec<usize> = (0..r.len()).filter(|&i| scores[i].is_none()).collect();
    let finite: Vec<f64> = scores.iter().flatten().copied().collect();
    let gauss = match &a.gaussian_baseline {
        Some(p) => {
            let lab = a
                .label_column
                .as_deref()
                .filter(|l| data::header(p).map(|h| h.iter().any(|c| c == l)).unwrap_or(false));
            let tr = load_scoring(p, &model, lab)?;
            ensure!(
                tr.row_errors.iter().all(|e| e.is_none()),
                "{}: baseline training rows must all be finite numbers",
                p.display()
            );
            Some(Gaussian::fit(&tr.normal_rows())?)
        }
        None => None,
    };
    let gscores: Option<Vec<Option<f64>>> = gauss.as_ref().map(|g| {
        ds.rows
            .iter()
            .zip(&ds.row_errors)
            .map(|(x, e)| {
                if e.is_some() {
                    None
                } else {
                    Some(-g.log_prob(x)).filter(|v| v.is_finite())
                }
            })
            .collect()
    });
    let threshold = model.threshold.as_ref().map(|t| (t.score, t.false_alarm_rate));
    let report = EvalReport {
        model: a.model.display().to_string(),
        data: a.data.display().to_string(),
        rows: ds.len(),
        n: finite.len(),
        nll: eval::mean(&finite),
        unscorable: bad.len(),
        unscorable_lines: bad.iter().take(20).map(|&i| ds.lines[i]).collect(),
        score_quantiles: metrics::summarize(&finite),
        gaussian_nll: gscores
            .as_ref()
            .map(|gs| eval::mean(&gs.iter().flatten().copied().collect::<Vec<_>>())),
        labelled: ds
            .labels
            .as_ref()
            .map(|labels| eval::Labelled::new(&scores, gscores.as_deref(), labels, threshold)),
        flagged: match (&ds.labels, threshold) {
            (None, Some((t, _))) => Some(eval::Flagged {
                threshold: t,
                flag_rate: metrics::flag_rate(&scores, t as f64),
            }),
            _ => None,
        },
        first_unscorable: bad.first().map(|&i| (ds.lines[i], r[i].as_ref().unwrap_err().clone())),
    };
    if a.json {
        // Through a JSON value, so the keys print sorted as they always have.
        let json = serde_json::to_string(&serde_json::to_value(&report)?)?;
        output::to_stdout(format!("{json}\n").as_bytes())?;
    } else {
        output::to_stdout(report.to_string().as_bytes())?;
    }
    Ok(report)
}
