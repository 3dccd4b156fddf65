//! `flowmote plot`: PNG figures of a trained model.
//!
//! * `training.png` — training and validation NLL per epoch (from the model
//!   file's provenance), best epoch marked;
//! * `density.png` — for 2-D models: a heat map of `log p(x)` on a grid, model
//!   samples and (with `--data`) data points;
//! * `scores.png` — with `--data`: histogram of the score `−log p(x)` with the
//!   calibrated threshold, split into normal / anomalous rows with
//!   `--label-column` (label `0` = normal, anything else = anomaly);
//! * `roc.png` — with a label column holding both classes: the ROC curve of the
//!   score, AUROC in the title;
//! * `budget.png` — for a model trained for a device: every student, the
//!   teacher and the kept model by flash and validation NLL, with the
//!   budget (the Pareto view of `train --target`).
//!
//! Rows the model cannot score (NaN, overflow) are counted in the captions and
//! ranked as anomalous (score `+∞`) for the ROC curve, as the device's
//! detector flags them.
use crate::data::Dataset;
use crate::metrics::{auroc, quantile_sorted};
use crate::model::{DynMixture, ModelFile};
use anyhow::{anyhow, bail, ensure, Context, Result};
use clap::Args;
use plotters::prelude::*;
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro128PlusPlus;
use std::path::{Path, PathBuf};

/// Arguments of `flowmote plot`.
#[derive(Args, Debug)]
pub struct PlotArgs {
    /// Trained model file.
    #[arg(long)]
    pub model: PathBuf,
    /// CSV file to score (columns named as the model's features; extra columns are ignored).
    /// With a model trained with --window: the raw sensor CSV, windowed by the model's pipeline.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Column of `--data` holding labels: 0 = normal, anything else = anomaly.
    #[arg(long)]
    pub label_column: Option<String>,
    /// Field delimiter of the CSV: `,`, `;` or `tab` (default: detected from
    /// the header line, whichever of the three occurs most).
    #[arg(long, value_parser = crate::data::parse_delimiter)]
    pub delimiter: Option<u8>,
    /// Directory for the PNG files.
    #[arg(long, default_value = "plots")]
    pub out_dir: PathBuf,
    /// Model samples drawn on the density plot.
    #[arg(long, default_value_t = 1000)]
    pub samples: usize,
    /// Grid points per axis of the density heat map.
    #[arg(long, default_value_t = 200)]
    pub grid: usize,
}

/// Run `flowmote plot`: write the figures and print each PNG path.
pub fn run(args: &PlotArgs) -> Result<()> {
    let _delimiter = crate::data::force_delimiter(args.delimiter);
    let model = ModelFile::load(&args.model)?;
    let data = match &args.data {
        Some(p) => Some(crate::cli::load_scoring(p, &model, args.label_column.as_deref())?),
        None => {
            ensure!(
                args.label_column.is_none(),
                "--label-column needs --data (the file holding the labels)"
            );
            None
        }
    };
    let opts = PlotOptions {
        samples: args.samples,
        grid: args.grid.max(2),
    };
    for p in plot_all(&model, data.as_ref(), &args.out_dir, &opts)? {
        crate::say!("{}", p.display());
    }
    Ok(())
}

/// Settings of [`plot_all`].
#[derive(Clone, Debug)]
pub struct PlotOptions {
    /// Model samples on the density plot.
    pub samples: usize,
    /// Grid points per axis of the density heat map.
    pub grid: usize,
}

impl Default for PlotOptions {
    fn default() -> Self {
        PlotOptions {
            samples: 1000,
            grid: 200,
        }
    }
}

/// Write every figure that the model and data allow into `out_dir`; returns
/// the paths written. Every figure is rendered to a temporary file first and
/// all are put in place together at the end, so a failed run (a full disk, a
/// figure that cannot be drawn) leaves the old figures as they were.
pub fn plot_all(model: &ModelFile, data: Option<&Dataset>, out_dir: &Path, opts: &PlotOptions) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    let mut written = Vec::new();
    let mut staged = crate::output::Staged::new();
    if model.provenance.history.is_empty() {
        eprintln!("note: the model file holds no training history; skipping training.png");
    } else {
        let p = out_dir.join("training.png");
        staged.add(&p, |t| plot_training(model, t))?;
        written.push(p);
    }
    if let Some(d) = &model.provenance.settings.distillation {
        let p = out_dir.join("budget.png");
        staged.add(&p, |t| budget::plot_budget(model, d, t))?;
        written.push(p);
    }
    if model.model.dim() == 2 {
        let p = out_dir.join("density.png");
        staged.add(&p, |t| plot_density(model, data, t, opts))?;
        written.push(p);
    }
    if let Some(t) = data {
        let scores = scores(&model.model, &t.rows);
        let p = out_dir.join("scores.png");
        staged.add(&p, |tmp| plot_scores(model, t, &scores, tmp))?;
        written.push(p);
        if let Some(labels) = &t.labels {
            if labels.iter().any(|&l| l) && labels.iter().any(|&l| !l) {
                let p = out_dir.join("roc.png");
                staged.add(&p, |tmp| plot_roc(t, &scores, labels, tmp))?;
                written.push(p);
            } else {
                eprintln!("note: the labels hold only one class; skipping roc.png");
            }
        }
    }
    staged.commit()?;
    Ok(written)
}

/// `−log p(x)` per row; `None` where the model refuses the row.
pub fn scores(model: &DynMixture, rows: &[Vec<f32>]) -> Vec<Option<f32>> {
    model
        .log_probs(rows)
        .into_iter()
        .map(|lp| lp.ok().map(|lp| -lp))
        .collect()
}

/// ROC curve `(false-positive rate, true-positive rate)` of `scores` (higher
/// = more anomalous; `None` ranks as `+∞`) against `labels` (`true` =
/// anomaly), one step per group of tied scores. The area under it is
/// [`auroc`], the number `flowmote eval` reports.
pub fn roc(scores: &[Option<f32>], labels: &[bool]) -> Vec<(f64, f64)> {
    let key = |s: Option<f32>| s.map_or(f64::INFINITY, |v| v as f64);
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| key(scores[b]).total_cmp(&key(scores[a])));
    let pos = labels.iter().filter(|&&l| l).count() as f64;
    let neg = labels.len() as f64 - pos;
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut pts = vec![(0.0, 0.0)];
    let mut i = 0;
    while i < idx.len() {
        let k = key(scores[idx[i]]);
        while i < idx.len() && key(scores[idx[i]]) == k {
            if labels[idx[i]] {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            i += 1;
        }
        pts.push((fp / neg.max(1.0), tp / pos.max(1.0)));
    }
    pts
}

// ---------------------------------------------------------------------------
// Drawing helpers.

const SIZE: (u32, u32) = (1000, 700);
const FONT: &str = "sans-serif";
const BLUE_: RGBColor = RGBColor(31, 119, 180);
const ORANGE_: RGBColor = RGBColor(255, 127, 14);
const RED_: RGBColor = RGBColor(214, 39, 40);
const GREY_: RGBColor = RGBColor(110, 110, 110);

/// Turn plotters' errors (which borrow the backend) into `anyhow` errors.
trait Draw<T> {
    fn fail(self) -> Result<T>;
}

impl<T, E: std::fmt::Debug> Draw<T> for std::result::Result<T, E> {
    fn fail(self) -> Result<T> {
        self.map_err(|e| anyhow!("drawing failed: {e:?}"))
    }
}

/// A legend marker: a 24-pixel line in `style`.
fn legend_line(style: ShapeStyle) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style)
}

/// The series legend every figure draws: white box, black border, at `pos`.
fn draw_legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    pos: SeriesLabelPosition,
    font_size: u32,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(pos)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, font_size))
        .draw()
        .fail()
}

/// The data file's name, for captions.
fn file_name(t: &Dataset) -> String {
    Path::new(&t.path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| t.path.clone())
}

/// `lo..hi` widened by `frac` of its length on each side (and made non-empty).
fn pad(lo: f64, hi: f64, frac: f64) -> (f64, f64) {
    let w = if hi > lo { hi - lo } else { lo.abs().max(1.0) };
    (lo - frac * w, hi + frac * w)
}

/// Viridis colour map, `t` in `[0, 1]`.
fn viridis(t: f64) -> RGBColor {
    const STOPS: [(f64, f64, f64); 9] = [
        (68.0, 1.0, 84.0),
        (71.0, 44.0, 122.0),
        (59.0, 81.0, 139.0),
        (44.0, 113.0, 142.0),
        (33.0, 144.0, 141.0),
        (39.0, 173.0, 129.0),
        (92.0, 200.0, 99.0),
        (170.0, 220.0, 50.0),
        (253.0, 231.0, 37.0),
    ];
    let t = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.0 };
    let x = t * (STOPS.len() - 1) as f64;
    let i = (x.floor() as usize).min(STOPS.len() - 2);
    let f = x - i as f64;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let m = |u: f64, v: f64| (u + (v - u) * f).round() as u8;
    RGBColor(m(a.0, b.0), m(a.1, b.1), m(a.2, b.2))
}

mod budget;
mod figures;

pub use budget::plot_budget;
pub use figures::{plot_density, plot_roc, plot_scores, plot_training};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Act, Epoch, Layer, Net, Provenance, Threshold, FORMAT, VERSION};
    use flowmote::maf::made_mask_params;
    use flowmote::MlpShape;
    use rand_core::Rng;

    fn uniform(r: &mut Xoshiro128PlusPlus, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * (r.next_u32() >> 8) as f32 / (1u32 << 24) as f32
    }

    /// A 2-D MAF with random weights, a history and a threshold.
    fn model() -> ModelFile {
        let mut r = Xoshiro128PlusPlus::seed_from_u64(3);
        let (mean, std) = (vec![10.0f32, -2.0], vec![3.0f32, 0.5]);
        let mut layers = vec![Layer::ActNorm {
            log_scale: std.iter().map(|s| -s.ln()).collect(),
            shift: mean.iter().zip(&std).map(|(m, s)| -m / s).collect(),
            frozen: true,
        }];
        for _ in 0..3 {
            let net = Net {
                hidden: 8,
                depth: 1,
                act: Act::Tanh,
            };
            let shape = MlpShape {
                input: 2,
                cond: 0,
                hidden: 8,
                depth: 1,
                output: 4,
            };
            let mut params: Vec<f32> = (0..shape.n_params()).map(|_| uniform(&mut r, -1.2, 1.2)).collect();
            made_mask_params(shape, &mut params).unwrap();
            layers.push(Layer::Maf {
                net,
                clamp: 3.0,
                params,
            });
            layers.push(Layer::Reverse);
        }
        let history = (1..=40)
            .map(|e| Epoch {
                epoch: e,
                train_nll: 3.0 + 6.0 / e as f64,
                val_nll: 3.1 + 6.0 / e as f64 + 0.002 * (e as f64 - 25.0).max(0.0).powi(2),
                lr: 1e-3,
            })
            .collect();
        ModelFile {
            format: FORMAT.into(),
            version: VERSION,
            tool_version: "0.1.0".into(),
            kind: "maf".into(),
            features: vec!["speed".into(), "tilt".into()],
            features_pipeline: None,
            mean,
            std,
            model: DynMixture::single(crate::model::DynFlow::new(2, layers)),
            threshold: Some(Threshold {
                score: 5.5,
                false_alarm_rate: 0.01,
                rows: 500,
                data_sha256: String::new(),
            }),
            provenance: Provenance {
                data_file: "train.csv".into(),
                history,
                ..Default::default()
            },
        }
    }

    /// Model samples (normal) and wide uniform rows (anomalous), labelled.
    fn table(m: &ModelFile) -> Dataset {
        let mut r = Xoshiro128PlusPlus::seed_from_u64(11);
        let mut ws = m.model.workspace();
        let mut rows = Vec::new();
        let mut labels = Vec::new();
        for _ in 0..1500 {
            rows.push(m.model.sample(&mut r, &mut ws).unwrap());
            labels.push(false);
        }
        for _ in 0..150 {
            rows.push(vec![uniform(&mut r, -5.0, 25.0), uniform(&mut r, -5.0, 1.0)]);
            labels.push(true);
        }
        rows.push(vec![f32::NAN, 0.0]);
        labels.push(true);
        Dataset {
            path: "some/dir/test.csv".into(),
            features: m.features.clone(),
            rows,
            labels: Some(labels),
            label_column: Some("label".into()),
            ..Default::default()
        }
    }

    #[test]
    fn roc_and_auc() {
        let s = |v: &[f32]| v.iter().map(|&x| Some(x)).collect::<Vec<_>>();
        // Trapezoids under the drawn curve.
        let area = |sc: &[Option<f32>], lab: &[bool]| {
            let p = roc(sc, lab);
            p.windows(2)
                .map(|w| (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0)
                .sum::<f64>()
        };
        // Perfect ranking.
        let pts = roc(&s(&[5.0, 4.0, 1.0, 0.0]), &[true, true, false, false]);
        assert_eq!(pts.last(), Some(&(1.0, 1.0)));
        assert_eq!(area(&s(&[5.0, 4.0, 1.0, 0.0]), &[true, true, false, false]), 1.0);
        // Reversed, and all tied (one diagonal step: AUC ½).
        assert_eq!(area(&s(&[0.0, 1.0, 4.0, 5.0]), &[true, true, false, false]), 0.0);
        assert_eq!(area(&s(&[1.0; 4]), &[true, false, true, false]), 0.5);
        // One inversion out of four pairs; unscorable rows rank highest.
        assert_eq!(area(&s(&[3.0, 1.0, 2.0, 0.0]), &[true, true, false, false]), 0.75);
        assert_eq!(area(&[None, Some(0.0)], &[true, false]), 1.0);
        // The area under the drawn curve is the AUROC `eval` reports.
        let mut r = Xoshiro128PlusPlus::seed_from_u64(8);
        let sc: Vec<Option<f32>> = (0..300)
            .map(|i| (i % 7 != 0).then(|| (uniform(&mut r, 0.0, 4.0) * 4.0).round()))
            .collect();
        let lab: Vec<bool> = (0..300).map(|i| i % 3 == 0).collect();
        let wide: Vec<Option<f64>> = sc.iter().map(|s| s.map(f64::from)).collect();
        let want = auroc(&wide, &lab).unwrap();
        assert!((area(&sc, &lab) - want).abs() < 1e-12, "{} vs {want}", area(&sc, &lab));
    }

    #[test]
    fn writes_every_figure() {
        let m = model();
        let t = table(&m);
        let dir = std::env::var_os("FLOWMOTE_PLOT_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join(format!("flowmote-plot-{}", std::process::id())));
        let opts = PlotOptions { samples: 500, grid: 60 };
        let written = plot_all(&m, Some(&t), &dir, &opts).unwrap();
        let names: Vec<_> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["training.png", "density.png", "scores.png", "roc.png"]);
        for p in &written {
            let bytes = std::fs::read(p).unwrap();
            assert!(bytes.starts_with(b"\x89PNG"), "{} is not a PNG", p.display());
            assert!(bytes.len() > 10_000, "{} looks empty", p.display());
        }
        // Unlabelled data: no ROC.
        let mut t = t;
        t.labels = None;
        let written = plot_all(&m, Some(&t), &dir.join("unlabelled"), &opts).unwrap();
        assert_eq!(written.len(), 3);
        if std::env::var_os("FLOWMOTE_PLOT_DIR").is_none() {
            std::fs::remove_dir_all(&dir).ok();
        }
    }

    #[test]
    fn csv_columns_by_name() {
        let dir = std::env::temp_dir().join(format!("flowmote-plot-csv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("d.csv");
        std::fs::write(&p, "label,tilt,x,speed\n0,1.5,9,2\n1,,9,3\n").unwrap();
        let t = crate::data::load_for_model(&p, &["speed".into(), "tilt".into()], Some("label")).unwrap();
        assert_eq!(t.rows[0], vec![2.0, 1.5]);
        assert!(t.rows[1][1].is_nan());
        assert_eq!(t.labels, Some(vec![false, true]));
        // An unreadable cell makes the row unscorable, not the file unplottable.
        let m = model();
        let sc = scores(&m.model, &t.rows);
        assert!(sc[0].is_some() && sc[1].is_none());
        std::fs::remove_dir_all(&dir).ok();
    }
}
