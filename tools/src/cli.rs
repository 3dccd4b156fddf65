//! The `flowmote` commands: argument structs (clap) and their `run`
//! functions. `src/main.rs` only parses and dispatches, so tests can call
//! these directly.

use crate::data::{self, Dataset};
use crate::eval::{self, EvalReport};
use crate::features::FeatureSpec;
use crate::metrics;
use crate::model::{ModelFile, Threshold};
use crate::output;
use crate::say;
use crate::train::{self, Gaussian, TrainConfig};
use anyhow::{bail, ensure, Result};
use clap::Args;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

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
    output::refuse_inputs(&a.out, &[&a.data])?;
    if let Some(v) = &a.val_out {
        output::refuse_inputs(v, &[&a.data])?;
        ensure!(
            v != &a.out,
            "--val-out and --out are the same file; the model and the validation rows need two"
        );
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
    let (mut model, s) = train::train(&ds, &cfg, !a.quiet && !a.json)?;
    if let Some(spec) = &spec {
        model.features_pipeline = Some(spec.clone());
        model.version = crate::model::VERSION_WITH_FEATURES;
    }
    model.save(&a.out)?;
    if let Some(v) = &a.val_out {
        let text = match &spec {
            Some(spec) => held_out_readings(spec, &raw, &ds, &s.validation)?,
            None => rows_csv(&model.features, &s.validation),
        };
        output::write(v, text.as_bytes())?;
    }
    let what = describe_model(&model);
    let folds = model.provenance.settings.folds();
    if a.json {
        let j = serde_json::json!({
            "model": a.out,
            "kept": what,
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
    say!(
        "trained {what}: {} parameters ≈ {:.0} KB of flash, {} multiply-adds per score, on {} rows ({}{}) in {:.1} s",
        s.parameters,
        s.parameters as f64 * 4.0 / 1024.0,
        model.model.macs(),
        s.train_rows,
        if folds > 1 {
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
            "dequantised {} integer column(s) with U(-0.5, 0.5)·step noise each epoch",
            s.dequantized.len()
        );
    }
    if s.skipped_rows > 0 {
        say!(
            "warning: {} row-evaluations overflowed during training and were skipped",
            s.skipped_rows
        );
    }
    if folds > 1 {
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

/// Read `path` for scoring with `model`: its feature columns by name, or,
/// when the model has a feature pipeline, the raw channel columns windowed
/// by it ([`FeatureSpec::apply`]).
pub fn load_scoring(path: &Path, model: &ModelFile, label_column: Option<&str>) -> Result<Dataset> {
    match &model.features_pipeline {
        None => data::load_for_model(path, &model.features, label_column),
        Some(spec) => spec.apply(&data::load_for_model(path, &spec.channels, label_column)?),
    }
}

/// What a trained model is, from its provenance: `maf (4 layers, hidden
/// 32×2)`, `a mixture of 3 flows (maf 4×32 noise 0.1 × 0.40, …)`, or
/// `a 5-fold committee of 22 flows (maf ×18, nsf ×4)`.
pub fn describe_model(model: &ModelFile) -> String {
    let st = &model.provenance.settings;
    let k = st.folds();
    if let (true, Some(members)) = (k > 1, &st.members) {
        let kinds: Vec<&str> = members.iter().map(|m| m.flow.as_str()).collect();
        let mut names = kinds.clone();
        names.sort_unstable();
        names.dedup();
        return format!(
            "a {k}-fold committee of {} flows ({})",
            members.len(),
            names
                .iter()
                .map(|n| format!("{n} ×{}", kinds.iter().filter(|k| *k == n).count()))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let n = |v: Option<usize>| v.map_or("?".to_string(), |v| v.to_string());
    match &st.members {
        Some(members) => format!(
            "a mixture of {} flows ({})",
            members.len(),
            members
                .iter()
                .map(|m| format!(
                    "{} {}×{} noise {} × {:.2}",
                    m.flow,
                    m.layers,
                    m.hidden,
                    m.noise.map_or("?".into(), |v| format!("{:.1}", v as f64)),
                    m.weight.unwrap_or(f64::NAN)
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => format!(
            "{} ({} layers, hidden {}×{})",
            model.kind,
            n(st.config.layers),
            n(st.config.hidden),
            st.config.depth
        ),
    }
}

/// `−log p` of every row (`None` where the row cannot be scored) and the
/// reason for each failure.
pub fn score_rows(model: &ModelFile, ds: &Dataset) -> Vec<std::result::Result<f64, String>> {
    model
        .model
        .log_probs(&ds.rows)
        .into_iter()
        .zip(&ds.row_errors)
        .map(|(lp, e)| match (e, lp) {
            (Some(e), _) => Err(e.clone()),
            (None, Ok(lp)) => Ok(-(lp as f64)),
            (None, Err(e)) => Err(format!("cannot be scored: {e:?}")),
        })
        .collect()
}

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
}

/// Run `flowmote score`; returns the CSV text written.
pub fn run_score(a: &ScoreArgs) -> Result<String> {
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

/// Write rows as CSV (header = `features`).
pub fn rows_csv(features: &[String], rows: &[Vec<f32>]) -> String {
    let mut s = features.join(",");
    s.push('\n');
    for r in rows {
        let line: Vec<String> = r.iter().map(|v| v.to_string()).collect();
        s.push_str(&line.join(","));
        s.push('\n');
    }
    s
}

pub use crate::demo::{run_demo, DemoArgs, DEMO_NOISE};
pub use crate::sample::{draw_samples, run_sample, SampleArgs};
