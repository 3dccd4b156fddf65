//! `flowmote calibrate`: store an anomaly threshold for a target
//! false-alarm rate in the model.

use super::{load_scoring, score_rows};
use crate::metrics;
use crate::model::{ModelFile, Threshold};
use crate::output;
use crate::say;
use anyhow::{ensure, Result};
use clap::Args;
use std::path::PathBuf;

/// Arguments of `flowmote calibrate`.
#[derive(Args, Debug, Clone)]
pub struct CalibrateArgs {
    /// Model file to calibrate (rewritten atomically unless --out is given).
    #[arg(long)]
    pub model: PathBuf,
    /// CSV of normal data the model was NOT trained on, ideally (held-out rows). With a model trained with --window: the raw
    /// sensor CSV (its channel columns by name), windowed by the model's pipeline.
    /// (`train --val-out` writes the held-out windows' raw readings for this).
    #[arg(long)]
    pub data: PathBuf,
    /// Target fraction of normal rows flagged: the threshold is the
    /// (1 − rate) quantile of −log p on these rows.
    #[arg(long, default_value_t = 0.01)]
    pub false_alarm_rate: f64,
    /// Label column: only rows labelled 0 (normal) are used.
    #[arg(long)]
    pub label_column: Option<String>,
    /// Field delimiter of the CSV: `,`, `;` or `tab` (default: detected from
    /// the header line, whichever of the three occurs most).
    #[arg(long, value_parser = crate::data::parse_delimiter)]
    pub delimiter: Option<u8>,
    /// Write the calibrated model here instead of overwriting --model.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print one JSON object (threshold, rates, rows) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Compress the model's conditioner weights to this storage first, and
    /// calibrate (and write) the compressed model: its threshold is then the
    /// one `export` ships with those weights.
    #[arg(long, value_enum)]
    pub weights: Option<crate::model::Storage>,
}

/// Run `flowmote calibrate`; returns the threshold stored.
pub fn run_calibrate(a: &CalibrateArgs) -> Result<Threshold> {
    let _delimiter = crate::data::force_delimiter(a.delimiter);
    ensure!(
        a.false_alarm_rate > 0.0 && a.false_alarm_rate < 1.0,
        "--false-alarm-rate must be in (0, 1), e.g. 0.01 for 1 %"
    );
    output::refuse_inputs(a.out.as_ref().unwrap_or(&a.model), &[&a.data])?;
    let mut model = ModelFile::load(&a.model)?;
    if let Some(w) = a.weights {
        model.compress(w)?;
    }
    let mut ds = load_scoring(&a.data, &model, a.label_column.as_deref())?;
    if let Some(l) = ds.labels.take() {
        let keep: Vec<usize> = (0..l.len()).filter(|&i| !l[i]).collect();
        ds.rows = keep.iter().map(|&i| ds.rows[i].clone()).collect();
        ds.row_errors = keep.iter().map(|&i| ds.row_errors[i].clone()).collect();
        ds.lines = keep.iter().map(|&i| ds.lines[i]).collect();
    }
    if !ds.sha256.is_empty() && ds.sha256 == model.provenance.data_sha256 {
        eprintln!(
            "warning: {} is the file the model was trained on (same SHA-256): a threshold calibrated on \
             training rows is too low and flags more than the target rate of new normal rows — calibrate \
             on held-out rows (`flowmote train` holds out the last rows of the file)",
            a.data.display()
        );
    }
    let r = score_rows(&model, &ds);
    let finite: Vec<f64> = r.iter().filter_map(|s| s.as_ref().ok().copied()).collect();
    let bad = r.len() - finite.len();
    ensure!(
        finite.len() >= 2,
        "{}: {} scorable normal rows; calibration needs more",
        a.data.display(),
        finite.len()
    );
    if bad > 0 {
        eprintln!(
            "warning: {bad} row(s) of {} could not be scored and were not used for the threshold",
            a.data.display()
        );
    }
    if (finite.len() as f64) * a.false_alarm_rate < 1.0 {
        eprintln!(
            "warning: {} rows are too few to estimate a {:.2} % quantile well (the threshold is near the maximum score)",
            finite.len(),
            100.0 * a.false_alarm_rate
        );
    }
    let t = metrics::threshold_for_false_alarm_rate(&finite, a.false_alarm_rate).expect("finite scores");
    let th = Threshold {
        score: t as f32,
        false_alarm_rate: a.false_alarm_rate,
        rows: finite.len(),
        data_sha256: ds.sha256.clone(),
    };
    model.threshold = Some(th.clone());
    let out = a.out.as_ref().unwrap_or(&a.model);
    model.save(out)?;
    let achieved = metrics::flag_rate(&finite.iter().map(|&v| Some(v)).collect::<Vec<_>>(), th.score as f64);
    if a.json {
        let j = serde_json::json!({
            "threshold": th.score,
            "false_alarm_rate": a.false_alarm_rate,
            "achieved_rate": achieved,
            "rows": finite.len(),
            "unscorable": bad,
            "out": out,
        });
        output::to_stdout(format!("{j}\n").as_bytes())?;
        return Ok(th);
    }
    say!(
        "threshold −log p > {:.4} nats (target {:.2} % false alarms; {:.2} % of the {} calibration rows are above it); wrote {}",
        th.score,
        100.0 * a.false_alarm_rate,
        100.0 * achieved,
        finite.len(),
        out.display()
    );
    Ok(th)
}
