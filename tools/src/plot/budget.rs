//! `budget.png`: what a device budget cost — every student, the teacher and
//! the kept model by flash and validation NLL, with the budget line.

use super::*;
use crate::provenance::Distillation;

/// Students, teacher and kept model of a distillation: weights (KB, log
/// scale) against validation NLL on the rows none of them trained on, the
/// flash budget as a dashed line, each point's estimated time as a label,
/// and the front of models no other beats on both.
pub fn plot_budget(model: &ModelFile, d: &Distillation, path: &Path) -> Result<()> {
    let kb = |b: u64| b as f64 / 1024.0;
    // (KB, NLL, label, with teacher samples)
    let students: Vec<(f64, f64, String, bool)> = d
        .students
        .iter()
        .filter_map(|c| {
            // As the choice compared them (and the kept point is): as
            // each would be kept, with the broad Gaussian where it fits.
            let v = c.judged_val_nll.or(c.val_nll).filter(|v| v.is_finite())?;
            let b = c.weight_bytes?;
            let ms = c.estimated_ms.map_or(String::new(), |ms| format!(", {ms:.2} ms"));
            Some((
                kb(b),
                v,
                format!(
                    "{}{} {}×{}{}{}{ms}",
                    c.committee.map_or(String::new(), |k| format!("{k}× ")),
                    c.flow,
                    c.layers,
                    c.hidden,
                    if c.storage.is_f32() {
                        String::new()
                    } else {
                        format!(" {}", c.storage.name())
                    },
                    if c.no_whitening {
                        " no LU"
                    } else if c.triangular_whitening {
                        " tri"
                    } else {
                        ""
                    }
                ),
                c.teacher_samples.unwrap_or(0) > 0,
            ))
        })
        .collect();
    let judged = d.students.iter().any(|c| c.judged_val_nll.is_some());
    let teacher = d
        .teacher
        .val_nll
        .filter(|v| v.is_finite())
        .map(|v| (kb(d.teacher.weight_bytes), v));
    let kept = (
        kb(crate::target::ModelCost::of(&model.model).weight_bytes),
        model.provenance.val_nll,
    );
    let limit = d.max_weight_bytes.map(kb);
    let mut xs: Vec<f64> = students.iter().map(|s| s.0).chain(teacher.map(|t| t.0)).collect();
    xs.push(kept.0);
    xs.extend(limit);
    let mut ys: Vec<f64> = students.iter().map(|s| s.1).chain(teacher.map(|t| t.1)).collect();
    if kept.1.is_finite() {
        ys.push(kept.1);
    }
    ensure!(!ys.is_empty(), "no validation NLL to plot");
    let (xlo, xhi) = xs.iter().fold((f64::MAX, f64::MIN), |a, &x| (a.0.min(x), a.1.max(x)));
    let (ylo, yhi) = ys.iter().fold((f64::MAX, f64::MIN), |a, &y| (a.0.min(y), a.1.max(y)));
    // Room above the points for the legend (upper right), so it hides none.
    let (y0, y1) = pad(ylo, yhi.max(ylo + 1e-6), 0.12);
    let y1 = y1 + 0.5 * (y1 - y0);
    let (x0, x1) = (xlo.max(0.1) / 1.6, xhi * 1.6);

    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).fail()?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("Budget {}", d.budget), (FONT, 24))
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(85)
        .build_cartesian_2d(
            // Ticks at 1, 2, 5 × 10ᵏ KB: a budget's few-fold range would
            // otherwise show one power of ten, or none.
            (x0..x1).log_scale().with_key_points(
                (-1..5)
                    .flat_map(|e| [1.0, 2.0, 5.0].map(|m| m * 10f64.powi(e)))
                    .filter(|x| (x0..=x1).contains(x))
                    .collect(),
            ),
            y0..y1,
        )
        .fail()?;
    chart
        .configure_mesh()
        .x_desc("weights in flash (KB, log scale)")
        .y_desc(if judged {
            "validation NLL as kept (nats/row, rows no model trained on)"
        } else {
            "validation NLL (nats/row, rows no model trained on)"
        })
        .axis_desc_style((FONT, 20))
        .label_style((FONT, 16))
        .x_labels(6)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()
        .fail()?;
    if let Some(l) = limit {
        chart
            .draw_series(DashedLineSeries::new([(l, y0), (l, y1)], 8, 6, GREY_.stroke_width(2)))
            .fail()?
            .label(format!("flash budget {l:.0} KB"))
            .legend(legend_line(GREY_.stroke_width(3)));
    }
    // The front: points no other point beats in both flash and NLL.
    let mut all: Vec<(f64, f64)> = students.iter().map(|s| (s.0, s.1)).chain(teacher).collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let mut front: Vec<(f64, f64)> = Vec::new();
    for p in all {
        if front.last().is_none_or(|q| p.1 < q.1) {
            front.push(p);
        }
    }
    chart
        .draw_series(LineSeries::new(front, BLUE_.mix(0.4).stroke_width(1)))
        .fail()?;
    for (with, color, name) in [
        (false, BLUE_, "student, real rows"),
        (true, ORANGE_, "student, real rows + teacher samples"),
    ] {
        let pts: Vec<&(f64, f64, String, bool)> = students.iter().filter(|s| s.3 == with).collect();
        if pts.is_empty() {
            continue;
        }
        chart
            .draw_series(pts.iter().map(|s| Circle::new((s.0, s.1), 5, color.filled())))
            .fail()?
            .label(name)
            .legend(move |(x, y)| Circle::new((x + 12, y), 5, color.filled()));
        chart
            .draw_series(
                pts.iter()
                    .map(|s| Text::new(s.2.clone(), (s.0 * 1.06, s.1), (FONT, 13).into_font().color(&color))),
            )
            .fail()?;
    }
    if let Some(t) = teacher {
        let ms = d
            .teacher
            .estimated_ms
            .map_or(String::new(), |ms| format!(", {ms:.1} ms"));
        chart
            .draw_series(std::iter::once(TriangleMarker::new(t, 9, GREY_.filled())))
            .fail()?
            .label(format!(
                "teacher: {} flow{}{ms}{}",
                d.teacher.flows,
                if d.teacher.flows == 1 { "" } else { "s" },
                if judged { ", as trained" } else { "" }
            ))
            .legend(|(x, y)| TriangleMarker::new((x + 12, y), 7, GREY_.filled()));
    }
    if kept.1.is_finite() {
        chart
            .draw_series(std::iter::once(Circle::new(kept, 10, RED_.stroke_width(2))))
            .fail()?
            .label("kept")
            .legend(|(x, y)| Circle::new((x + 12, y), 7, RED_.stroke_width(2)));
    }
    draw_legend(&mut chart, SeriesLabelPosition::UpperRight, 15)?;
    root.present().fail()?;
    Ok(())
}
