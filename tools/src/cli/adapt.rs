//! `flowmote adapt`: the device's commissioning adaptation
//! ([`flowmote::adapt`]) on recorded normal data, folded into the model's
//! standardisation, and the threshold re-calibrated.

use super::{load_scoring, score_rows};
use crate::metrics;
use crate::model::{DynFlow, DynMixture, FlowView, Layer, ModelFile, Threshold, View};
use crate::output;
use crate::say;
use anyhow::{bail, ensure, Result};
use clap::Args;
use flowmote::adapt::{AdaptConfig, AdaptMeta, AdaptView, MixtureViews, Views};
use flowmote::{AdaptTarget, SliceBackward};
use std::path::PathBuf;

/// Held-back windows of the host's adapter (as the firmware's).
pub const HELD: usize = 8;

/// Arguments of `flowmote adapt`.
#[derive(Args, Debug, Clone)]
pub struct AdaptArgs {
    /// Model file to adapt (a flow, or a mixture of flows, whose first
    /// layer is its standardisation; not continuous, not i8).
    #[arg(long)]
    pub model: PathBuf,
    /// CSV of data declared normal, recorded on the new installation (raw
    /// sensor CSV for a windowed model, as `calibrate`), in time order:
    /// every valid row updates, in file order.
    #[arg(long)]
    pub data: PathBuf,
    /// Where to write the adapted model (nothing is written on error).
    #[arg(long)]
    pub out: PathBuf,
    /// Re-calibrate the threshold at this false-alarm rate (default: the
    /// model's calibrated rate, else 0.01).
    #[arg(long)]
    pub false_alarm_rate: Option<f64>,
    /// Label column: only rows labelled 0 (normal) are used.
    #[arg(long)]
    pub label_column: Option<String>,
    /// Field delimiter of the CSV: `,`, `;` or `tab` (default: detected).
    #[arg(long, value_parser = crate::data::parse_delimiter)]
    pub delimiter: Option<u8>,
    /// Passes over the data: a short recording stands in for a device's
    /// longer commissioning period by being repeated (default: enough
    /// passes for 2 000 updates, at most 20).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub passes: Option<u32>,
    /// Share of the rows, taken from the end of the file, kept out of
    /// adaptation to re-calibrate the threshold on (as a device calibrates
    /// on the windows after its commissioning); 0 calibrates on the rows
    /// adaptation used.
    #[arg(long, default_value_t = 0.2)]
    pub calibration_share: f64,
    /// Print one JSON object (NLL and false-alarm rate before and after)
    /// instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What `flowmote adapt` measured.
#[derive(Clone, Debug, PartialEq)]
pub struct AdaptReport {
    /// Rows that updated the correction (each once per pass).
    pub used: usize,
    /// Rows that could not be used (unscorable or not finite).
    pub skipped: usize,
    /// The correction: shift `u` (standard deviations) per feature.
    pub shift: Vec<f32>,
    /// The correction: log-scale `ℓ` per feature.
    pub log_scale: Vec<f32>,
    /// Mean NLL before adaptation (of the calibration rows: the held-out tail, or every row).
    pub nll_before: f64,
    /// Mean NLL after adaptation (same rows).
    pub nll_after: f64,
    /// Fraction flagged at the model's threshold before adaptation (None
    /// without one).
    pub false_alarms_before: Option<f64>,
    /// Fraction flagged by the adapted model at the old threshold.
    pub false_alarms_old_threshold: Option<f64>,
    /// Fraction flagged by the adapted model at its re-calibrated threshold.
    pub false_alarms_after: f64,
    /// The re-calibrated threshold.
    pub threshold: Threshold,
}

/// Updates the default number of passes aims for.
const DEFAULT_UPDATES: usize = 2000;
/// Most passes by default.
const MAX_DEFAULT_PASSES: usize = 20;

/// Run the device's commissioning over `rows` (in order, `passes` times) on
/// `model` (a flow, or a mixture through its members as the device does)
/// and fold the correction into every flow's first layer (and
/// `mean`/`std`). Returns (shift, log-scale, updates, rows skipped per pass).
pub fn adapt_model(
    model: &mut ModelFile,
    rows: &[Vec<f32>],
    config: &AdaptConfig,
    passes: usize,
) -> Result<(Vec<f32>, Vec<f32>, usize, usize)> {
    let d = model.model.dim();
    ensure!(
        model
            .model
            .flows
            .iter()
            .all(|f| matches!(f.layers.first(), Some(Layer::ActNorm { frozen: true, .. }))),
        "adapt needs every flow's first layer to be its frozen standardisation"
    );
    ensure!(
        model.mean.len() == d && model.std.len() == d,
        "model mean/std do not match its dimension"
    );
    let (u, ls, used, skipped) = with_target(&model.model, |target| {
        let mut a = HostAdapter::new(config, &model.mean, &model.std);
        let (mut used, mut skipped) = (0, 0);
        for pass in 0..passes.max(1) {
            for r in rows {
                match a.view().commission(target, r) {
                    Ok(_) => used += 1,
                    Err(_) if pass == 0 => skipped += 1,
                    Err(_) => {}
                }
            }
        }
        let (u, ls) = a.params.split_at(d);
        (u.to_vec(), ls.to_vec(), used, skipped)
    })?;
    // Fold into every flow: the first layer e^{s}·x' + b with
    // x' = μ + (x − μ − σu)e^{−ℓ} becomes e^{s−ℓ}·x + b + e^{s}(μ − (μ + σu)e^{−ℓ}).
    let (mean, std) = (model.mean.clone(), model.std.clone());
    for flow in &mut model.model.flows {
        if let Some(Layer::ActNorm { log_scale, shift, .. }) = flow.layers.first_mut() {
            for i in 0..d {
                let (s, b) = (log_scale[i] as f64, shift[i] as f64);
                let (m, u, l) = (mean[i] as f64, u[i] as f64, ls[i] as f64);
                log_scale[i] = (s - l) as f32;
                shift[i] = (b + s.exp() * (m - (m + std[i] as f64 * u) * (-l).exp())) as f32;
            }
        }
    }
    for i in 0..d {
        let (m, sd) = (mean[i] as f64, std[i] as f64);
        model.mean[i] = (m + sd * u[i] as f64) as f32;
        model.std[i] = (sd * (ls[i] as f64).exp()) as f32;
    }
    Ok((u, ls, used, skipped))
}

/// `flow`'s layer views (an error that says so if they cannot be built).
pub(crate) fn flow_view(flow: &DynFlow) -> Result<FlowView<'_>> {
    flow.view()
        .map_err(|e| anyhow::anyhow!("cannot build the model's views: {e}"))
}

/// The views' backward passes, in order; an error if a layer has none
/// (continuous flows, i8 weights).
fn backward_layers<'v>(view: &'v FlowView<'_>) -> Result<Vec<&'v dyn SliceBackward>> {
    view.layers
        .iter()
        .map(|l| match l {
            View::Likelihood(b) => Ok(b.as_ref()),
            _ => bail!("adapt needs every layer's backward pass: continuous flows and i8 weights have none"),
        })
        .collect()
}

/// Run `f` on `flow`'s layers as the host's differentiable views (what
/// `flowmote adapt` and the export's golden adaptation run); an error if
/// a layer has no backward pass (continuous flows, i8 weights).
pub fn with_views<R>(flow: &DynFlow, f: impl FnOnce(&mut Views) -> R) -> Result<R> {
    let view = flow_view(flow)?;
    let layers = backward_layers(&view)?;
    let mut work = vec![0.0; Views::work_len(&layers, flow.dim)];
    let mut target = Views {
        layers: &layers,
        work: &mut work,
    };
    Ok(f(&mut target))
}

/// Run `f` on `model` as the host's differentiable target: a single
/// flow's [`Views`] ([`with_views`]), or a mixture's [`MixtureViews`] over
/// its members' (the device's `MixtureGradient`, bit for bit); an error as
/// [`with_views`]'s if a layer has no backward pass.
pub fn with_target<R>(model: &DynMixture, f: impl FnOnce(&mut dyn AdaptTarget) -> R) -> Result<R> {
    if let [flow] = model.flows.as_slice() {
        return with_views(flow, |v| f(v));
    }
    let views = model.flows.iter().map(flow_view).collect::<Result<Vec<_>>>()?;
    let lists = views.iter().map(backward_layers).collect::<Result<Vec<_>>>()?;
    let d = model.dim();
    let mut works: Vec<Vec<f32>> = lists.iter().map(|l| vec![0.0; Views::work_len(l, d)]).collect();
    let mut members: Vec<Views> = lists
        .iter()
        .zip(works.iter_mut())
        .map(|(layers, work)| Views { layers, work })
        .collect();
    let (mut terms, mut member_g) = (vec![0.0; members.len()], vec![0.0; d]);
    let mut target = MixtureViews {
        log_weights: &model.log_weights,
        members: &mut members,
        terms: &mut terms,
        member_g: &mut member_g,
    };
    Ok(f(&mut target))
}

/// The device's [`flowmote::Adapter`] with heap buffers ([`HELD`] windows
/// held back), for any dimension.
pub struct HostAdapter<'m> {
    config: &'m AdaptConfig,
    mean: &'m [f32],
    std: &'m [f32],
    /// The correction `[u (D), ℓ (D)]`.
    pub params: Vec<f32>,
    moments: Vec<f32>,
    work: Vec<f32>,
    held: Vec<f32>,
    held_nll: Vec<f32>,
    meta: AdaptMeta,
}

impl<'m> HostAdapter<'m> {
    /// No correction yet, for a model standardised with `mean`, `std`.
    pub fn new(config: &'m AdaptConfig, mean: &'m [f32], std: &'m [f32]) -> Self {
        let d = mean.len();
        HostAdapter {
            config,
            mean,
            std,
            params: vec![0.0; 2 * d],
            moments: vec![0.0; 4 * d],
            work: vec![0.0; 10 * d],
            held: vec![0.0; HELD * d],
            held_nll: vec![0.0; 2 * HELD],
            meta: AdaptMeta::NEW,
        }
    }

    /// The borrowed view the core's methods run on.
    pub fn view(&mut self) -> AdaptView<'_> {
        AdaptView {
            config: self.config,
            mean: self.mean,
            std: self.std,
            params: &mut self.params,
            moments: &mut self.moments,
            work: &mut self.work,
            held: &mut self.held,
            held_nll: &mut self.held_nll,
            meta: &mut self.meta,
        }
    }
}

/// Run `flowmote adapt`.
pub fn run_adapt(a: &AdaptArgs) -> Result<AdaptReport> {
    let _delimiter = crate::data::force_delimiter(a.delimiter);
    if let Some(r) = a.false_alarm_rate {
        ensure!(
            r > 0.0 && r < 1.0,
            "--false-alarm-rate must be in (0, 1), e.g. 0.01 for 1 %"
        );
    }
    output::refuse_inputs(&a.out, &[&a.data])?;
    let original = ModelFile::load(&a.model)?;
    let mut ds = load_scoring(&a.data, &original, a.label_column.as_deref())?;
    if let Some(l) = ds.labels.take() {
        let keep: Vec<usize> = (0..l.len()).filter(|&i| !l[i]).collect();
        ds.rows = keep.iter().map(|&i| ds.rows[i].clone()).collect();
        ds.row_errors = keep.iter().map(|&i| ds.row_errors[i].clone()).collect();
        ds.lines = keep.iter().map(|&i| ds.lines[i]).collect();
    }
    let valid: Vec<Vec<f32>> = ds
        .rows
        .iter()
        .zip(&ds.row_errors)
        .filter(|(_, e)| e.is_none())
        .map(|(r, _)| r.clone())
        .collect();
    ensure!(
        valid.len() >= 2,
        "{}: {} valid rows; adaptation needs more",
        a.data.display(),
        valid.len()
    );
    ensure!(
        (0.0..0.9).contains(&a.calibration_share),
        "--calibration-share must be in [0, 0.9), e.g. 0.2"
    );
    // The last rows re-calibrate the threshold; the rest adapt.
    let n_cal = (a.calibration_share * valid.len() as f64).round() as usize;
    let (n_cal, calib_note) = if n_cal >= 20 {
        (n_cal, None)
    } else {
        (
            0,
            (a.calibration_share > 0.0).then(|| {
                format!(
                    "only {n_cal} rows would be held out for calibration (< 20): the threshold is calibrated on the \
                     rows adaptation used, which flags fewer of them than of new data"
                )
            }),
        )
    };
    if let Some(note) = &calib_note {
        eprintln!("warning: {note}");
    }
    let adapt_rows = &valid[..valid.len() - n_cal];
    let passes = a.passes.map_or_else(
        || {
            DEFAULT_UPDATES
                .div_ceil(adapt_rows.len().max(1))
                .clamp(1, MAX_DEFAULT_PASSES)
        },
        |p| p as usize,
    );
    let mut model = original.clone();
    let (shift, log_scale, updates, skipped) = adapt_model(&mut model, adapt_rows, &AdaptConfig::DEFAULT, passes)?;
    let used = adapt_rows.len() - skipped;
    let skipped = skipped + (ds.rows.len() - valid.len());
    // Which rows of `ds` calibrate: the held-out tail, or every row.
    let calib_from = if n_cal > 0 {
        let tail_start = valid.len() - n_cal;
        // Index in `ds.rows` of the first held-out valid row.
        ds.row_errors
            .iter()
            .enumerate()
            .filter(|(_, e)| e.is_none())
            .nth(tail_start)
            .map_or(0, |(i, _)| i)
    } else {
        0
    };

    let scores = |m: &ModelFile| -> Vec<Option<f64>> { score_rows(m, &ds).into_iter().map(|r| r.ok()).collect() };
    let mean_nll = |s: &[Option<f64>]| {
        let f: Vec<f64> = s.iter().flatten().copied().collect();
        f.iter().sum::<f64>() / f.len().max(1) as f64
    };
    // Figures over the held-out tail when there is one (what a device sees
    // after commissioning), else over every row.
    let before = scores(&original).split_off(calib_from);
    let after = scores(&model).split_off(calib_from);
    let finite: Vec<f64> = after.iter().flatten().copied().collect();
    ensure!(
        finite.len() >= 2,
        "the adapted model scores {} rows; calibration needs more",
        finite.len()
    );
    let rate = a
        .false_alarm_rate
        .or(original.threshold.as_ref().map(|t| t.false_alarm_rate))
        .unwrap_or(0.01);
    let t = metrics::threshold_for_false_alarm_rate(&finite, rate).expect("finite scores");
    let threshold = Threshold {
        score: t as f32,
        false_alarm_rate: rate,
        rows: finite.len(),
        data_sha256: ds.sha256.clone(),
    };
    let old = original.threshold.as_ref().map(|t| t.score as f64);
    let report = AdaptReport {
        used,
        skipped,
        shift,
        log_scale,
        nll_before: mean_nll(&before),
        nll_after: mean_nll(&after),
        false_alarms_before: old.map(|t| metrics::flag_rate(&before, t)),
        false_alarms_old_threshold: old.map(|t| metrics::flag_rate(&after, t)),
        false_alarms_after: metrics::flag_rate(&after, threshold.score as f64),
        threshold: threshold.clone(),
    };
    model.threshold = Some(threshold);
    model.save(&a.out)?;
    if a.json {
        let j = serde_json::json!({
            "rows_used": report.used,
            "passes": passes,
            "updates": updates,
            "calibration_rows": finite.len(),
            "rows_skipped": report.skipped,
            "shift": report.shift,
            "log_scale": report.log_scale,
            "nll_before": report.nll_before,
            "nll_after": report.nll_after,
            "false_alarm_rate_before": report.false_alarms_before,
            "false_alarm_rate_after_old_threshold": report.false_alarms_old_threshold,
            "false_alarm_rate_after": report.false_alarms_after,
            "threshold_before": old,
            "threshold": report.threshold.score,
            "target_false_alarm_rate": rate,
            "out": a.out,
        });
        output::to_stdout(format!("{j}\n").as_bytes())?;
        return Ok(report);
    }
    let pct = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{:.2} %", 100.0 * v));
    say!(
        "adapted on {} rows × {passes} passes ({updates} updates, {} rows skipped), threshold re-calibrated on {} rows: \
         NLL {:.3} → {:.3} nats/row; flagged {} at the old threshold → {} at the re-calibrated {:.4} (target \
         {:.2} %); wrote {}",
        report.used,
        report.skipped,
        finite.len(),
        report.nll_before,
        report.nll_after,
        pct(report.false_alarms_before),
        pct(Some(report.false_alarms_after)),
        report.threshold.score,
        100.0 * rate,
        a.out.display()
    );
    Ok(report)
}
