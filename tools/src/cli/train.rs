//! `flowmote train`: fit a flow to a CSV file and write the model file.

use super::{describe_model, rows_csv};
use crate::data::{self, Dataset};
use crate::features::FeatureSpec;
use crate::model::ModelFile;
use crate::output;
use crate::say;
use crate::target::ModelCost;
use crate::train::{self, TrainConfig};
use anyhow::{bail, ensure, Result};
use clap::Args;
use std::path::PathBuf;

/// Arguments of `flowmote train`: the files, and the training settings
/// ([`TrainConfig`], written once there).
#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// Training CSV: a header row naming the columns, then one row per
    /// observation; every column (except --label-column) numeric and finite.
    #[arg(long)]
    pub data: PathBuf,
    /// Model file to write (JSON; written atomically).
    #[arg(long)]
    pub out: PathBuf,
    /// Training settings.
    #[command(flatten)]
    pub config: TrainConfig,
    /// Column holding labels (0 = normal, anything else = anomaly); rows
    /// labelled anomalous are left out of training.
    #[arg(long)]
    pub label_column: Option<String>,
    /// Field delimiter of the CSV: `,`, `;` or `tab` (default: detected from
    /// the header line, whichever of the three occurs most).
    #[arg(long, value_parser = crate::data::parse_delimiter)]
    pub delimiter: Option<u8>,
    /// The feature columns, exactly (comma-separated names, in this order).
    /// Without it every column but the label is a feature, less those that
    /// are constant, not numeric, or increase on every row (time or index
    /// columns): each is named in a note and recorded in the model.
    #[arg(long, value_delimiter = ',', conflicts_with = "exclude")]
    pub columns: Option<Vec<String>>,
    /// Columns that are not features (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    pub exclude: Vec<String>,
    /// Also write the held-out validation rows, which no flow trained on, as
    /// CSV: calibrate the threshold on them (`flowmote calibrate --data`).
    /// Implies one validation split (`--folds 1`) unless --folds is given.
    /// With --window the file holds the *raw* readings of the held-out
    /// windows (the channels, and the label column if any), from the first
    /// reading of the first held-out window to the last reading of the last:
    /// `calibrate` re-applies the model's feature pipeline to them and gets
    /// exactly the held-out windows back (with a label column, pass it to
    /// `calibrate --label-column` too). With --hop below --window the first
    /// held-out windows share readings with the last training windows.
    #[arg(long, value_name = "FILE")]
    pub val_out: Option<PathBuf>,
    /// Also write the teacher to FILE when the kept model is a student
    /// distilled for the target's budget (the teacher is over the budget:
    /// it is for comparison on the host, e.g. `flowmote eval`, not for the
    /// device). Nothing is written when no distillation was needed.
    #[arg(long, value_name = "FILE")]
    pub teacher_out: Option<PathBuf>,
    /// Train on windows of N raw readings instead of single rows: the
    /// feature columns (or --columns) are the sensor's channels, and each
    /// window of N readings (in file order) becomes one row of --features
    /// per channel (a window is labelled anomalous when any of its readings
    /// is). The pipeline is stored in the model; eval, calibrate, score, plot
    /// and export apply it.
    #[arg(long, value_name = "N", requires = "features")]
    pub window: Option<usize>,
    /// Readings between windows (1..=N) [default: N, windows that do not overlap].
    #[arg(long, value_name = "M", requires = "window")]
    pub hop: Option<usize>,
    /// Statistics per channel and window, comma-separated: mean, std, rms,
    /// min, max, ptp (peak-to-peak), `band<k>` (energy of DFT bin k,
    /// frequency k·fs/N) or `band<lo>-<hi>` (bins lo to hi; bins up to N/2).
    /// Feature columns are named `<channel>_<stat>`, e.g. x_mean, x_band1-4.
    #[arg(long, value_name = "LIST", requires = "window")]
    pub features: Option<String>,
    /// Print one JSON object describing the kept model instead of text.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Run `flowmote train`; returns the trained model (also written to `--out`).
pub fn run_train(a: &TrainArgs) -> Result<ModelFile> {
    let _delimiter = crate::data::force_delimiter(a.delimiter);
    output::refuse_inputs(&a.out, &[&a.data])?;
    if let Some(v) = &a.val_out {
        output::refuse_inputs(v, &[&a.data])?;
        ensure!(
            v != &a.out,
            "--val-out and --out are the same file; the model and the validation rows need two"
        );
    }
    if let Some(t) = &a.teacher_out {
        output::refuse_inputs(t, &[&a.data])?;
        ensure!(t != &a.out, "--teacher-out and --out are the same file");
    }
    let mut cfg = a.config.clone();
    if a.val_out.is_some() {
        match cfg.folds {
            None => cfg.folds = Some(1),
            Some(k) if k > 1 => bail!(
                "--val-out needs one validation split: in a {k}-fold committee every row trained some member \
                 (drop --folds or pass --folds 1)"
            ),
            Some(_) => {}
        }
    }
    let cols = data::Columns {
        only: a.columns.clone(),
        exclude: a.exclude.clone(),
    };
    let raw = data::load_training_columns(&a.data, a.label_column.as_deref(), &cols)?;
    let spec = match (a.window, &a.features) {
        (Some(n), Some(f)) => Some(FeatureSpec::from_flags(raw.features.clone(), n, a.hop, f)?),
        _ => None,
    };
    if spec.is_some() && a.val_out.is_some() && cfg.val_split != train::ValSplit::Last {
        bail!("--val-out with --window needs --val-split last: the held-out windows must be one run of the file");
    }
    let ds: std::borrow::Cow<Dataset> = match &spec {
        Some(spec) => {
            let ds = spec.apply(&raw)?;
            if let Some(i) = ds.row_errors.iter().position(Option::is_some) {
                bail!(
                    "{}: {} — training needs every window's features finite",
                    ds.path,
                    ds.row_errors[i].as_deref().unwrap_or("")
                );
            }
            std::borrow::Cow::Owned(ds)
        }
        None => std::borrow::Cow::Borrowed(&raw),
    };
    if !a.quiet && !a.json && ds.n_normal() < 2 * ds.dim() {
        eprintln!(
            "note: {} rows for {} columns, fewer than 2 per column: the rows cannot pin down how the columns \
             vary together, so the model leans on its noise level and a ridge; more rows would fit better",
            ds.n_normal(),
            ds.dim()
        );
    }
    let (mut model, s) = train::train(&ds, &cfg, !a.quiet && !a.json)?;
    if let Some(spec) = &spec {
        model.features_pipeline = Some(spec.clone());
        model.version = model.required_version();
    }
    model.save(&a.out)?;
    if let Some(v) = &a.val_out {
        let text = match &spec {
            Some(spec) => held_out_readings(spec, &raw, &ds, &s.validation)?,
            None => rows_csv(&model.features, &s.validation),
        };
        output::write(v, text.as_bytes())?;
    }
    if let Some(t) = &a.teacher_out {
        match &s.teacher {
            Some(teacher) => {
                let mut teacher = (**teacher).clone();
                teacher.features_pipeline = model.features_pipeline.clone();
                teacher.version = teacher.required_version();
                teacher.save(t)?;
            }
            None if !a.json => say!(
                "no teacher written to {}: the kept model is the search's best (no distillation was needed)",
                t.display()
            ),
            None => {}
        }
    }
    let what = describe_model(&model);
    let folds = model.provenance.settings.folds();
    // A committee judged on held-out rows (a device's committee student,
    // or a teacher kept within the budget) is not cross-validated.
    let cross_validated = folds > 1 && s.validation.is_empty();
    let budget = train::Budget::of(&cfg)?;
    let cost = ModelCost::of(&model.model);
    let ms = budget.target.estimated_ms_of(&cost);
    let distil = model.provenance.settings.distillation.as_ref();
    if a.json {
        let j = serde_json::json!({
            "model": a.out,
            "target": budget.target.name,
            "budget": budget.describe(),
            "kept": what,
            "why": distil.map(|d| d.kept.clone()),
            "estimated_ms": ms,
            "activations": cost.activations,
            "teacher": distil.map(|d| &d.teacher),
            "students": distil.map(|d| &d.students),
            "features": model.features,
            "features_pipeline": model.features_pipeline,
            "dropped_columns": model.provenance.settings.dropped_columns,
            "parameters": s.parameters,
            "weight_bytes": model.model.weight_bytes(),
            "macs": model.model.macs(),
            "validation_nll": s.best_val_nll,
            "folds": folds,
            "train_rows": s.train_rows,
            "val_rows": s.val_rows,
            "labelled_out": s.labelled_out,
            "seconds": s.seconds,
            "val_out": a.val_out,
        });
        output::to_stdout(format!("{j}\n").as_bytes())?;
        return Ok(model);
    }
    if let Some(d) = distil {
        say!("for {} — kept {}", d.budget, d.kept);
    }
    say!(
        "trained {what}: {} parameters, {:.1} KB of weights, {} multiply-adds per score{}, on {} rows ({}{}) in {:.1} s",
        s.parameters,
        cost.weight_bytes as f64 / 1024.0,
        model.model.macs(),
        ms.map_or(String::new(), |ms| format!(" ≈ {ms:.2} ms on {}", budget.target.name)),
        s.train_rows,
        if cross_validated {
            format!("{folds}-fold cross-validation")
        } else {
            format!("{} validation", s.val_rows)
        },
        if s.labelled_out > 0 {
            format!(", {} labelled anomalous left out", s.labelled_out)
        } else {
            String::new()
        },
        s.seconds
    );
    if let Some(spec) = &model.features_pipeline {
        say!(
            "rows are windows of {} readings every {} of the channels {}: {} per channel",
            spec.window,
            spec.hop,
            spec.channels.join(", "),
            spec.stats.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")
        );
    }
    if !s.dequantized.is_empty() {
        say!(
            "dequantised {} column(s) with U(-0.5, 0.5)·step noise each epoch (integer columns, and columns constant in the training rows but not in the file)",
            s.dequantized.len()
        );
    }
    if s.skipped_rows > 0 {
        say!(
            "warning: {} row-evaluations overflowed during training and were skipped",
            s.skipped_rows
        );
    }
    if cross_validated {
        say!(
            "cross-validated NLL {:.4} nats/row (each fold's model on the block it held out)",
            s.best_val_nll
        );
    } else if model.model.as_single().is_some() {
        say!(
            "kept epoch {} of {}: validation NLL {:.4} nats/row",
            s.best_epoch,
            s.epochs_run,
            s.best_val_nll
        );
    } else {
        say!("validation NLL of the mixture {:.4} nats/row", s.best_val_nll);
    }
    match &a.val_out {
        Some(v) if spec.is_some() => say!(
            "wrote {} and the raw readings of its {} validation windows to {} (calibrate on those{})",
            a.out.display(),
            s.validation.len(),
            v.display(),
            match &a.label_column {
                Some(l) => format!(" with --label-column {l}, which leaves out the windows labelled anomalous"),
                None => String::new(),
            }
        ),
        Some(v) => say!(
            "wrote {} and its {} validation rows to {} (calibrate on those)",
            a.out.display(),
            s.validation.len(),
            v.display()
        ),
        None => say!("wrote {}", a.out.display()),
    }
    Ok(model)
}

/// The raw readings (CSV) of the held-out windows: `validation` are the
/// last normal rows of the windowed `ds` (`--val-split last`); the readings
/// from the first one's first reading to the last window's last reading, so
/// that re-applying `spec` gives those windows again (and, with a label
/// column, anomalous windows in between, which `calibrate --label-column`
/// leaves out as training did).
fn held_out_readings(spec: &FeatureSpec, raw: &Dataset, ds: &Dataset, validation: &[Vec<f32>]) -> Result<String> {
    let normal: Vec<usize> = match &ds.labels {
        Some(l) => (0..ds.len()).filter(|&i| !l[i]).collect(),
        None => (0..ds.len()).collect(),
    };
    let k = validation.len();
    ensure!(k > 0 && k <= normal.len(), "no held-out windows to write to --val-out");
    let first = normal[normal.len() - k];
    let held: Vec<&Vec<f32>> = normal[normal.len() - k..].iter().map(|&i| &ds.rows[i]).collect();
    ensure!(
        held.iter().zip(validation).all(|(a, b)| *a == b),
        "internal error: the held-out windows are not the last windows of the file"
    );
    let starts: Vec<usize> = spec.window_starts(raw.len()).collect();
    let (lo, hi) = (starts[first], starts[starts.len() - 1] + spec.window);
    let mut header = raw.features.clone();
    if let Some(l) = &raw.label_column {
        header.push(l.clone());
    }
    let mut s = header.join(",");
    s.push('\n');
    for i in lo..hi {
        let mut cells: Vec<String> = raw.rows[i].iter().map(|v| v.to_string()).collect();
        if let Some(l) = &raw.labels {
            cells.push(if l[i] { "1" } else { "0" }.to_string());
        }
        s.push_str(&cells.join(","));
        s.push('\n');
    }
    Ok(s)
}
