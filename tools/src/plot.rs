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
//!   score, AUROC in the title.
//!
//! Rows the model cannot score (NaN, overflow) are counted in the captions and
//! ranked as anomalous (score `+∞`) for the ROC curve, as the device's
//! detector flags them.
use crate::data::{load_for_model, Dataset};
use crate::metrics::{auroc, quantile_sorted};
use crate::model::{DynMixture, ModelFile};
use anyhow::{anyhow, bail, ensure, Context, Result};
use clap::Args;
use plotters::prelude::*;
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro128PlusPlus;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// Arguments of `flowmote plot`.
#[derive(Args, Debug)]
pub struct PlotArgs {
    /// Trained model file.
    #[arg(long)]
    pub model: PathBuf,
    /// CSV file to score (columns named as the model's features; extra columns are ignored).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Column of `--data` holding labels: 0 = normal, anything else = anomaly.
    #[arg(long)]
    pub label_column: Option<String>,
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
    let model = ModelFile::load(&args.model)?;
    let data = match &args.data {
        Some(p) => Some(load_for_model(p, &model.features, args.label_column.as_deref())?),
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
    rows.par_iter()
        .map_init(|| model.workspace(), |ws, x| model.log_prob(x, ws).ok().map(|lp| -lp))
        .collect()
}

/// ROC curve `(false-positive rate, true-positive rate)` of `scores` (higher
/// = more anomalous; `None` ranks as `+∞`) against `labels` (`true` =
/// anomaly), and the area under it (ties count one half).
pub fn roc(scores: &[Option<f32>], labels: &[bool]) -> (Vec<(f64, f64)>, f64) {
    let key = |s: Option<f32>| s.map_or(f64::INFINITY, |v| v as f64);
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| key(scores[b]).total_cmp(&key(scores[a])));
    let pos = labels.iter().filter(|&&l| l).count() as f64;
    let neg = labels.len() as f64 - pos;
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut pts = vec![(0.0, 0.0)];
    let mut auc = 0.0;
    let mut i = 0;
    while i < idx.len() {
        // One step per group of tied scores.
        let k = key(scores[idx[i]]);
        let (tp0, fp0) = (tp, fp);
        while i < idx.len() && key(scores[idx[i]]) == k {
            if labels[idx[i]] {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            i += 1;
        }
        auc += (fp - fp0) * (tp + tp0) / 2.0;
        pts.push((fp / neg.max(1.0), tp / pos.max(1.0)));
    }
    (pts, auc / (pos * neg).max(1.0))
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

// ---------------------------------------------------------------------------
// Figures.

/// Training and validation NLL per epoch.
pub fn plot_training(model: &ModelFile, path: &Path) -> Result<()> {
    let h = &model.provenance.history;
    ensure!(!h.is_empty(), "no training history");
    let vals: Vec<f64> = h
        .iter()
        .flat_map(|e| [e.train_nll, e.val_nll])
        .filter(|v| v.is_finite())
        .collect();
    ensure!(!vals.is_empty(), "training history holds no finite NLL");
    // A kept mixture: its validation NLL, drawn as a line.
    let mixture_val =
        (model.model.flows.len() > 1 && model.provenance.val_nll.is_finite()).then_some(model.provenance.val_nll);
    let mut sorted = vals.clone();
    sorted.extend(mixture_val);
    sorted.sort_by(f64::total_cmp);
    // The first epochs can be far above the rest: keep the y range readable.
    let lo = sorted[0];
    let hi = quantile_sorted(&sorted, 0.95).max(lo + 1e-9);
    let hi = if sorted[sorted.len() - 1] > hi + 2.0 * (hi - lo) {
        hi + 0.5 * (hi - lo)
    } else {
        sorted[sorted.len() - 1]
    };
    let (y0, y1) = pad(lo, hi, 0.05);
    let last = h.last().unwrap().epoch as f64;
    let first = h[0].epoch as f64;
    let (x0, x1) = if last > first {
        (first, last)
    } else {
        pad(first, last, 0.5)
    };

    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).fail()?;
    let best = h
        .iter()
        .filter(|e| e.val_nll.is_finite())
        .min_by(|a, b| a.val_nll.total_cmp(&b.val_nll));
    // A mixture's history is its best single candidate's (the members are
    // trained one by one; the weights are fitted afterwards); a k-fold
    // committee's is the first fold's.
    let st = &model.provenance.settings;
    let flow = st["flow"].as_str().unwrap_or("?");
    let folds = st["folds"].as_u64().filter(|k| *k > 1);
    let who = match (model.model.flows.len(), folds) {
        (1, _) => format!("Training of the {} flow", model.kind),
        (_, Some(k)) => format!("Fold 1 of {k}, its best flow ({flow})"),
        (k, None) => format!("Best of {k} mixed flows ({flow})"),
    };
    let title = match best {
        Some(b) => format!("{who}: validation NLL {:.3} nats/row (epoch {})", b.val_nll, b.epoch),
        None => who,
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 26))
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(85)
        .build_cartesian_2d(x0..x1, y0..y1)
        .fail()?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("negative log-likelihood (nats/row, data units)")
        .axis_desc_style((FONT, 20))
        .label_style((FONT, 16))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()
        .fail()?;
    let clip = |v: f64| v.clamp(y0, y1);
    let series = |f: fn(&crate::model::Epoch) -> f64| -> Vec<(f64, f64)> {
        h.iter()
            .filter(|e| f(e).is_finite())
            .map(|e| (e.epoch as f64, clip(f(e))))
            .collect()
    };
    for (name, color, pts) in [
        ("train", BLUE_, series(|e| e.train_nll)),
        ("validation", ORANGE_, series(|e| e.val_nll)),
    ] {
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .fail()?
            .label(name)
            .legend(legend_line(color.stroke_width(3)));
        if pts.len() <= 60 {
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .fail()?;
        }
    }
    if let Some(b) = best {
        chart
            .draw_series(std::iter::once(Circle::new(
                (b.epoch as f64, clip(b.val_nll)),
                7,
                RED_.stroke_width(2),
            )))
            .fail()?
            .label(if mixture_val.is_some() {
                "best epoch (kept as a member)"
            } else {
                "best (kept) model"
            })
            .legend(|(x, y)| Circle::new((x + 12, y), 6, RED_.stroke_width(2)));
    }
    if let Some(v) = mixture_val {
        let style = GREY_.stroke_width(2);
        chart
            .draw_series(DashedLineSeries::new([(x0, v), (x1, v)], 8, 6, style))
            .fail()?
            .label(match folds {
                Some(k) => format!(
                    "kept {k}-fold committee of {} flows: cross-validated {v:.3}",
                    model.model.flows.len()
                ),
                None => format!("kept mixture of {} flows: validation {v:.3}", model.model.flows.len()),
            })
            .legend(legend_line(GREY_.stroke_width(3)));
    }
    draw_legend(&mut chart, SeriesLabelPosition::UpperRight, 18)?;
    root.present().fail()?;
    Ok(())
}

/// Heat map of `log p(x)` of a 2-D model, model samples and data points.
pub fn plot_density(model: &ModelFile, data: Option<&Dataset>, path: &Path, opts: &PlotOptions) -> Result<()> {
    let flow = &model.model;
    ensure!(flow.dim() == 2, "the density plot needs a 2-D model");
    let mut ws = flow.workspace();
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(42);
    let samples: Vec<(f64, f64)> = (0..opts.samples)
        .filter_map(|_| flow.sample_with_log_prob(&mut rng, &mut ws).ok())
        .map(|(x, _)| (x[0] as f64, x[1] as f64))
        .collect();
    let points: Vec<(f64, f64)> = data
        .map(|t| {
            t.rows
                .iter()
                .filter(|r| r[0].is_finite() && r[1].is_finite())
                .map(|r| (r[0] as f64, r[1] as f64))
                .collect()
        })
        .unwrap_or_default();
    // Axes: the data's range (1st–99th percentile), else the samples', else
    // mean ± 4 std.
    let basis = if points.len() >= 10 { &points } else { &samples };
    let range = |f: fn(&(f64, f64)) -> f64, i: usize| -> (f64, f64) {
        let mut v: Vec<f64> = basis.iter().map(f).collect();
        if v.len() < 10 {
            let (m, s) = (model.mean[i] as f64, model.std[i] as f64);
            return (m - 4.0 * s, m + 4.0 * s);
        }
        v.sort_by(f64::total_cmp);
        let (lo, hi) = (quantile_sorted(&v, 0.005), quantile_sorted(&v, 0.995));
        pad(lo, hi, 0.15)
    };
    let (x0, x1) = range(|p| p.0, 0);
    let (y0, y1) = range(|p| p.1, 1);

    let n = opts.grid;
    let (dx, dy) = ((x1 - x0) / n as f64, (y1 - y0) / n as f64);
    let grid: Vec<Option<f64>> = (0..n * n)
        .into_par_iter()
        .map_init(
            || flow.workspace(),
            |ws, k| {
                let (i, j) = (k % n, k / n);
                let x = [(x0 + (i as f64 + 0.5) * dx) as f32, (y0 + (j as f64 + 0.5) * dy) as f32];
                flow.log_prob(&x, ws).ok().map(f64::from)
            },
        )
        .collect();
    let mut finite: Vec<f64> = grid.iter().flatten().copied().collect();
    ensure!(!finite.is_empty(), "log p is not finite anywhere on the plot's grid");
    finite.sort_by(f64::total_cmp);
    let top = finite[finite.len() - 1];
    // Colour range: the top 12 nats (e^-12 ≈ 6e-6 of the peak density), or
    // less if the grid holds less.
    let bottom = quantile_sorted(&finite, 0.02).max(top - 12.0);
    let bottom = if bottom < top { bottom } else { top - 1.0 };

    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).fail()?;
    let (main, bar) = root.split_horizontally(SIZE.0 - 130);
    let what = match model.model.flows.len() {
        1 => format!("{} flow", model.kind),
        k => format!("mixture of {k} flows"),
    };
    let title = match data {
        Some(t) => format!("Learned density log p(x) — {what}, data: {}", file_name(t)),
        None => format!("Learned density log p(x) — {what}"),
    };
    let mut chart = ChartBuilder::on(&main)
        .caption(title, (FONT, 24))
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(80)
        .build_cartesian_2d(x0..x1, y0..y1)
        .fail()?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc(model.features[0].as_str())
        .y_desc(model.features[1].as_str())
        .axis_desc_style((FONT, 20))
        .label_style((FONT, 16))
        .draw()
        .fail()?;
    let below = RGBColor(40, 0, 50);
    chart
        .draw_series(grid.iter().enumerate().map(|(k, v)| {
            let (i, j) = ((k % n) as f64, (k / n) as f64);
            let c = match v {
                Some(v) => viridis((v - bottom) / (top - bottom)),
                None => below,
            };
            Rectangle::new(
                [(x0 + i * dx, y0 + j * dy), (x0 + (i + 1.0) * dx, y0 + (j + 1.0) * dy)],
                c.filled(),
            )
        }))
        .fail()?;
    let inside = |p: &&(f64, f64)| p.0 >= x0 && p.0 <= x1 && p.1 >= y0 && p.1 <= y1;
    if !points.is_empty() {
        // At most 3000 data points, evenly strided.
        let step = points.len().div_ceil(3000);
        chart
            .draw_series(
                points
                    .iter()
                    .step_by(step)
                    .filter(inside)
                    .map(|&p| Circle::new(p, 2, WHITE.mix(0.9).filled())),
            )
            .fail()?
            .label(format!("data ({} rows)", points.len()))
            .legend(|(x, y)| Circle::new((x + 10, y), 4, WHITE.filled().stroke_width(1)));
    }
    chart
        .draw_series(
            samples
                .iter()
                .filter(inside)
                .map(|&p| Cross::new(p, 3, RED_.stroke_width(1))),
        )
        .fail()?
        .label(format!("model samples ({})", samples.len()))
        .legend(|(x, y)| Cross::new((x + 10, y), 4, RED_.stroke_width(2)));
    draw_legend(&mut chart, SeriesLabelPosition::UpperRight, 16)?;

    // Colour bar.
    let mut cb = ChartBuilder::on(&bar)
        .margin_top(60)
        .margin_bottom(75)
        .margin_right(10)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..1.0, bottom..top)
        .fail()?;
    cb.configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_desc("log p(x)")
        .axis_desc_style((FONT, 18))
        .label_style((FONT, 14))
        .y_label_formatter(&|v| format!("{v:.1}"))
        .draw()
        .fail()?;
    let steps = 200;
    cb.draw_series((0..steps).map(|s| {
        let (a, b) = (s as f64 / steps as f64, (s + 1) as f64 / steps as f64);
        let (ya, yb) = (bottom + a * (top - bottom), bottom + b * (top - bottom));
        Rectangle::new([(0.0, ya), (1.0, yb)], viridis((a + b) / 2.0).filled())
    }))
    .fail()?;
    root.present().fail()?;
    Ok(())
}

/// Histogram of the score `−log p(x)`, by label if there are labels, with the
/// threshold.
pub fn plot_scores(model: &ModelFile, t: &Dataset, scores: &[Option<f32>], path: &Path) -> Result<()> {
    let thr = model
        .threshold
        .as_ref()
        .map(|t| t.score as f64)
        .filter(|v| v.is_finite());
    let mut all: Vec<f64> = scores.iter().flatten().map(|&v| v as f64).collect();
    let invalid = scores.len() - all.len();
    if all.is_empty() {
        bail!("{}: the model could not score any row", file_name(t));
    }
    all.sort_by(f64::total_cmp);
    // Axis: 0.5th–99.5th percentile (anomalies can score thousands of nats),
    // widened to show the threshold; rows outside go to the edge bins.
    let (mut lo, mut hi) = (quantile_sorted(&all, 0.005), quantile_sorted(&all, 0.995));
    if let Some(th) = thr {
        lo = lo.min(th);
        hi = hi.max(th);
    }
    let (lo, hi) = pad(lo, hi, 0.03);
    let beyond = all.iter().filter(|&&v| v < lo || v > hi).count();
    let bins = 60usize;
    let w = (hi - lo) / bins as f64;

    let groups: Vec<(String, RGBColor, Vec<f64>)> = match &t.labels {
        Some(labels) => {
            let pick = |want: bool| -> Vec<f64> {
                scores
                    .iter()
                    .zip(labels)
                    .filter(|(_, &l)| l == want)
                    .filter_map(|(s, _)| s.map(|v| v as f64))
                    .collect()
            };
            let (n, a) = (pick(false), pick(true));
            let (nn, na) = (
                labels.iter().filter(|&&l| !l).count(),
                labels.iter().filter(|&&l| l).count(),
            );
            vec![
                (format!("normal ({nn} rows)"), BLUE_, n),
                (format!("anomalous ({na} rows)"), RED_, a),
            ]
        }
        None => vec![(format!("{} rows", scores.len()), BLUE_, all.clone())],
    };
    let labelled = t.labels.is_some();
    // Per group: fraction of the group's rows per bin (so a small anomalous
    // class stays visible next to a large normal one); counts without labels.
    let hist: Vec<Vec<f64>> = groups
        .iter()
        .map(|(_, _, v)| {
            let mut c = vec![0.0; bins];
            for &s in v {
                let b = (((s - lo) / w).floor().max(0.0) as usize).min(bins - 1);
                c[b] += 1.0;
            }
            if labelled {
                let total = v.len().max(1) as f64;
                c.iter_mut().for_each(|x| *x /= total);
            }
            c
        })
        .collect();
    let ymax = hist.iter().flatten().fold(0.0f64, |a, &b| a.max(b)) * 1.12;
    let ymax = if ymax > 0.0 { ymax } else { 1.0 };

    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).fail()?;
    let mut title = format!("Anomaly scores −log p(x) on {}", file_name(t));
    if invalid > 0 {
        let s = if invalid == 1 { "" } else { "s" };
        title.push_str(&format!(" ({invalid} row{s} unscorable)"));
    }
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 24))
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(85)
        .build_cartesian_2d(lo..hi, 0.0..ymax)
        .fail()?;
    let xdesc = if beyond > 0 {
        format!("score −log p(x) (nats); {beyond} rows beyond the axis are counted in the edge bins")
    } else {
        "score −log p(x) (nats)".to_string()
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc(xdesc)
        .y_desc(if labelled {
            "fraction of the class's rows"
        } else {
            "rows"
        })
        .axis_desc_style((FONT, 19))
        .label_style((FONT, 16))
        .y_label_formatter(&|v| if labelled { format!("{v:.3}") } else { format!("{v:.0}") })
        .draw()
        .fail()?;
    for ((name, color, _), c) in groups.iter().zip(&hist) {
        let color = *color;
        chart
            .draw_series(c.iter().enumerate().filter(|(_, &h)| h > 0.0).map(|(b, &h)| {
                let x = lo + b as f64 * w;
                Rectangle::new([(x, 0.0), (x + w, h)], color.mix(0.45).filled())
            }))
            .fail()?
            .label(name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 20, y + 6)], color.mix(0.45).filled()));
        chart
            .draw_series(c.iter().enumerate().filter(|(_, &h)| h > 0.0).map(|(b, &h)| {
                let x = lo + b as f64 * w;
                Rectangle::new([(x, 0.0), (x + w, h)], color.stroke_width(1))
            }))
            .fail()?;
    }
    match thr {
        Some(th) => {
            let fa = model.threshold.as_ref().map_or(0.0, |t| t.false_alarm_rate);
            chart
                .draw_series(LineSeries::new([(th, 0.0), (th, ymax)], BLACK.stroke_width(3)))
                .fail()?
                .label(format!("threshold {th:.2} (false-alarm rate {fa})"))
                .legend(legend_line(BLACK.stroke_width(3)));
        }
        None => {
            chart
                .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
                .fail()?
                .label("no threshold (model not calibrated)")
                .legend(legend_line(GREY_.stroke_width(1)));
        }
    }
    draw_legend(&mut chart, SeriesLabelPosition::UpperRight, 17)?;
    root.present().fail()?;
    Ok(())
}

/// ROC curve of the score with AUROC in the title.
pub fn plot_roc(t: &Dataset, scores: &[Option<f32>], labels: &[bool], path: &Path) -> Result<()> {
    let (pts, _) = roc(scores, labels);
    // The number `flowmote eval` reports.
    let wide: Vec<Option<f64>> = scores.iter().map(|s| s.map(f64::from)).collect();
    let auc = auroc(&wide, labels).context("the ROC curve needs both classes")?;
    let root = BitMapBackend::new(path, (800, 760)).into_drawing_area();
    root.fill(&WHITE).fail()?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("ROC of −log p(x) on {}: AUROC = {auc:.4}", file_name(t)),
            (FONT, 24),
        )
        .margin(25)
        .x_label_area_size(55)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..1.0, 0.0..1.0)
        .fail()?;
    let col = t.label_column.as_deref().unwrap_or("label");
    chart
        .configure_mesh()
        .x_desc(format!("false-positive rate (normal rows flagged; {col} = 0)"))
        .y_desc(format!("true-positive rate (anomalies flagged; {col} ≠ 0)"))
        .axis_desc_style((FONT, 18))
        .label_style((FONT, 16))
        .draw()
        .fail()?;
    chart
        .draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], GREY_.stroke_width(1)))
        .fail()?
        .label("chance (AUROC 0.5)")
        .legend(legend_line(GREY_.stroke_width(1)));
    chart
        .draw_series(LineSeries::new(pts, BLUE_.stroke_width(3)))
        .fail()?
        .label(format!(
            "flow ({} anomalous, {} normal rows)",
            labels.iter().filter(|&&l| l).count(),
            labels.iter().filter(|&&l| !l).count()
        ))
        .legend(legend_line(BLUE_.stroke_width(3)));
    draw_legend(&mut chart, SeriesLabelPosition::LowerRight, 17)?;
    root.present().fail()?;
    Ok(())
}

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
            mean,
            std,
            model: DynMixture::single(crate::model::DynFlow { dim: 2, layers }),
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
        // Perfect ranking.
        let (pts, auc) = roc(&s(&[5.0, 4.0, 1.0, 0.0]), &[true, true, false, false]);
        assert_eq!(auc, 1.0);
        assert_eq!(pts.last(), Some(&(1.0, 1.0)));
        // Reversed, and all tied (one diagonal step: AUC ½).
        assert_eq!(roc(&s(&[0.0, 1.0, 4.0, 5.0]), &[true, true, false, false]).1, 0.0);
        assert_eq!(roc(&s(&[1.0; 4]), &[true, false, true, false]).1, 0.5);
        // One inversion out of four pairs; unscorable rows rank highest.
        assert_eq!(roc(&s(&[3.0, 1.0, 2.0, 0.0]), &[true, true, false, false]).1, 0.75);
        assert_eq!(roc(&[None, Some(0.0)], &[true, false]).1, 1.0);
        // The area under the drawn curve is the AUROC `eval` reports.
        let mut r = Xoshiro128PlusPlus::seed_from_u64(8);
        let sc: Vec<Option<f32>> = (0..300)
            .map(|i| (i % 7 != 0).then(|| (uniform(&mut r, 0.0, 4.0) * 4.0).round()))
            .collect();
        let lab: Vec<bool> = (0..300).map(|i| i % 3 == 0).collect();
        let wide: Vec<Option<f64>> = sc.iter().map(|s| s.map(f64::from)).collect();
        let want = auroc(&wide, &lab).unwrap();
        assert!(
            (roc(&sc, &lab).1 - want).abs() < 1e-12,
            "{} vs {want}",
            roc(&sc, &lab).1
        );
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
        let t = load_for_model(&p, &["speed".into(), "tilt".into()], Some("label")).unwrap();
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
