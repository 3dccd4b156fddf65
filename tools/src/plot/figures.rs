//! The figures: training history, density, score histogram, ROC curve.

use super::*;

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
    let flow = st.config.flow.name();
    let folds = Some(st.folds()).filter(|k| *k > 1);
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
    let cells: Vec<Vec<f32>> = (0..n * n)
        .map(|k| {
            let (i, j) = (k % n, k / n);
            vec![(x0 + (i as f64 + 0.5) * dx) as f32, (y0 + (j as f64 + 0.5) * dy) as f32]
        })
        .collect();
    let grid: Vec<Option<f64>> = flow
        .log_probs(&cells)
        .into_iter()
        .map(|lp| lp.ok().map(f64::from))
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
    let pts = roc(scores, labels);
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
