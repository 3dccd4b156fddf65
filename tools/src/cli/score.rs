//! `flowmote score`: per-row log p and anomaly flag (and why a row could
//! not be scored).

use super::{load_scoring, score_rows};
use crate::metrics;
use crate::model::ModelFile;
use crate::output;
use anyhow::Result;
use clap::Args;
use std::fmt::Write as _;
use std::path::PathBuf;

/// Arguments of `flowmote score`.
#[derive(Args, Debug, Clone)]
pub struct ScoreArgs {
    /// Trained model file.
    #[arg(long)]
    pub model: PathBuf,
    /// CSV to score (the model's feature columns by name; other columns ignored). With a model trained with --window: the raw
    /// sensor CSV (its channel columns by name), windowed by the model's pipeline.
    /// A window's line is its last reading's.
    #[arg(long)]
    pub data: PathBuf,
    /// Output CSV (`line,log_prob,score,anomaly,error`); standard output if omitted.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Label column to skip when matching columns by position.
    #[arg(long)]
    pub label_column: Option<String>,
    /// Field delimiter of the CSV: `,`, `;` or `tab` (default: detected from
    /// the header line, whichever of the three occurs most).
    #[arg(long, value_parser = crate::data::parse_delimiter)]
    pub delimiter: Option<u8>,
}

/// Run `flowmote score`; returns the CSV text written.
pub fn run_score(a: &ScoreArgs) -> Result<String> {
    let _delimiter = crate::data::force_delimiter(a.delimiter);
    if let Some(out) = &a.out {
        output::refuse_inputs(out, &[&a.model, &a.data])?;
    }
    let model = ModelFile::load(&a.model)?;
    let ds = load_scoring(&a.data, &model, a.label_column.as_deref())?;
    let r = score_rows(&model, &ds);
    let th = model.threshold.as_ref().map(|t| t.score as f64);
    let mut s = String::from("line,log_prob,score,anomaly,error\n");
    let (mut flagged, mut bad) = (0, 0);
    for (i, res) in r.iter().enumerate() {
        match res {
            Ok(v) => {
                let f = th.map(|t| metrics::is_flagged(Some(*v), t));
                if f == Some(true) {
                    flagged += 1;
                }
                writeln!(
                    s,
                    "{},{},{},{},",
                    ds.lines[i],
                    -v,
                    v,
                    match f {
                        Some(true) => "1",
                        Some(false) => "0",
                        None => "",
                    }
                )?;
            }
            Err(e) => {
                bad += 1;
                writeln!(
                    s,
                    "{},,,{},\"{}\"",
                    ds.lines[i],
                    if th.is_some() { "1" } else { "" },
                    e.replace('"', "\"\"")
                )?;
            }
        }
    }
    match &a.out {
        Some(p) => {
            output::write(p, s.as_bytes())?;
            eprintln!(
                "scored {} rows ({} flagged, {} could not be scored{}) → {}",
                r.len(),
                flagged + if th.is_some() { bad } else { 0 },
                bad,
                if th.is_none() {
                    "; no threshold in the model, so the anomaly column is empty — run `flowmote calibrate`"
                } else {
                    ""
                },
                p.display()
            );
        }
        None => output::to_stdout(s.as_bytes())?,
    }
    Ok(s)
}
