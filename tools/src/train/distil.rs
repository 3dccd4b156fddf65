//! Training for a device: the search's best model as a *teacher*, distilled
//! into one *student* flow (or committee of them) within the target's budget.
//!
//! 1. The student's validation rows (one split of `--val-fraction`, by
//!    `--val-split`) are held out first: neither the teacher nor any
//!    student trains on them, so they judge the students and the teacher
//!    alike.
//! 2. The teacher is what `--target host` would train on the other rows
//!    (the search, stacking, a committee on small data). If it fits the
//!    budget it is kept as it is.
//! 3. Otherwise a pool of teacher samples (with the teacher's `log p`) is
//!    drawn once, and every student candidate — per family, a shallow and
//!    a deep flow, each as wide as the budget allows — trains on the real
//!    rows plus the next `--teacher-samples` × rows of the pool in every
//!    epoch (optionally with the regression term `--distil-weight`).
//! 4. On a small file, committees of students compete too
//!    ([`committee_students`]): the teacher's committee of folds, each
//!    fold's flow the size of a student within 1/k of the budget.
//! 5. The student with the best validation NLL is kept.

use super::build::{candidate_cost, weight_bound};
use super::config::{auto_candidates, default_folds, Budget, FlowKind, Select, TrainConfig, MAX_WEIGHTS};
use super::defence::{mean_of, per_row_nll, Defence};
use super::epochs::TeacherPool;
use super::fit::{column_moments, hold_out, standardisation, train_split, unscorable_rows, Split, Standardisation};
use super::gaussians::{self, Covariance, Gmm};
use super::{train_committee, TrainSummary};
use crate::data::Dataset;
use crate::model::{Act, DynMixture, ModelFile, Net, Storage, FORMAT, GAUSSIANS_KIND, VERSION};
use crate::provenance::{
    Candidate, Distillation, GaussiansAloneRecord, GaussiansRecord, Provenance, Settings, TeacherRecord,
};
use crate::target::ModelCost;
use anyhow::{bail, Result};
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;
use std::time::Instant;

/// Hidden widths a student may have, narrowest first.
const STUDENT_WIDTHS: [usize; 10] = [4, 8, 12, 16, 24, 32, 48, 64, 96, 128];
/// Flow layers of the shallow and the deep student of each family.
const STUDENT_LAYERS: [usize; 2] = [2, 4];
/// Most teacher samples in one epoch of a student's training.
const MAX_SAMPLES_PER_EPOCH: usize = 8192;
/// The pool holds this many epochs' worth of teacher samples.
const POOL_EPOCHS: usize = 4;

/// A student to train: its settings and what it costs.
struct Student {
    cfg: TrainConfig,
    cost: ModelCost,
}

/// The student candidates within `budget`: for every family the search
/// would try (or the one given) and each of [`STUDENT_LAYERS`] (or the
/// `--layers` given), the widest of [`STUDENT_WIDTHS`] (or the `--hidden`
/// given) that fits. None fitting is an error that names the smallest
/// model tried.
fn students(ds: &Dataset, cfg: &TrainConfig, budget: &Budget) -> Result<Vec<Student>> {
    let families = match cfg.flow {
        FlowKind::Auto => auto_candidates(ds.dim()),
        k => vec![k],
    };
    let layers: Vec<usize> = match cfg.layers {
        Some(l) => vec![l],
        None if cfg.flow == FlowKind::Cnf => vec![1],
        None => STUDENT_LAYERS.to_vec(),
    };
    let widths: Vec<usize> = match cfg.hidden {
        Some(h) => vec![h],
        None => STUDENT_WIDTHS.to_vec(),
    };
    let mut out = Vec::new();
    let mut smallest: Option<(TrainConfig, ModelCost)> = None;
    // The whitening layer costs D² + D weights and about D² multiply-adds
    // whatever the student's size: on wide data it takes most of the flash
    // (120 columns: 57 of 64 KB), on a soft-float part most of the time (30
    // columns: 1.2 of the RP2040's 2 ms). When it takes more than half the
    // flash or the time budget, or no student fits with it, the students are
    // offered with the triangular whitening layer (half its cost) and
    // without any too, and the validation rows choose.
    let (lu_heavy, storage) = {
        let probe = TrainConfig {
            flow: families[0],
            layers: Some(2),
            hidden: Some(STUDENT_WIDTHS[0]),
            folds: Some(1),
            fold: None,
            whiten: true,
            whiten_triangular: false,
            ..cfg.clone()
        };
        let with = candidate_cost(ds, &probe, Storage::F32)?;
        let without = candidate_cost(ds, &TrainConfig { whiten: false, ..probe }, Storage::F32)?;
        let bytes = with.weight_bytes.saturating_sub(without.weight_bytes);
        let ms = budget.target.estimated_ms_of(&with).unwrap_or(0.0)
            - budget.target.estimated_ms_of(&without).unwrap_or(0.0);
        // Where the layer alone takes over a quarter of the flash (wide
        // data: from 64 columns at 64 KB) the f32 students are far
        // smaller than their teachers; stored as i8 they can be about 3×
        // larger, and they fit better on six of seven wide files measured
        // (BENCHMARKS.md, "i8 students on wide data").
        let storage = cfg
            .student_weights
            .unwrap_or(if budget.weight_bytes.is_some_and(|max| 4 * bytes > max) {
                Storage::I8
            } else {
                Storage::F32
            });
        let flash_heavy = budget.weight_bytes.is_some_and(|max| 2 * bytes > max);
        (flash_heavy || budget.ms.is_some_and(|max| 2.0 * ms > max), storage)
    };
    // Pass 0: the students as the flags ask; pass 1: with the triangular
    // whitening layer; pass 2: without one (above); pass 3, when still none
    // fits: one flow layer without it, the cheapest flow there is (a
    // soft-float part's budget on wide data).
    for pass in 0..4 {
        let (whiten, triangular, ls): (bool, bool, &[usize]) = match pass {
            0 => (cfg.whiten, cfg.whiten_triangular, &layers),
            1 if cfg.whiten && !cfg.whiten_triangular && (lu_heavy || out.is_empty()) => (true, true, &layers),
            2 if cfg.whiten && (lu_heavy || out.is_empty()) => (false, false, &layers),
            3 if out.is_empty() && cfg.layers.is_none() => (false, false, &[1]),
            _ => continue,
        };
        for &flow in &families {
            if pass > 0 && flow == FlowKind::Cnf {
                continue;
            }
            for &l in ls {
                for &h in widths.iter().rev() {
                    let c = TrainConfig {
                        flow,
                        layers: Some(l),
                        hidden: Some(h),
                        folds: Some(1),
                        fold: None,
                        whiten,
                        whiten_triangular: triangular,
                        student_weights: Some(storage),
                        ..cfg.clone()
                    };
                    // On very wide data most of the widths tried are far
                    // over the budget: skip those without building them.
                    // Every flow layer's network ends in a matrix of `h` ×
                    // (at least one output per column) weights, a lower
                    // bound on its bytes; and a width the tool could not
                    // build at all is over any device budget. (A width
                    // given with --hidden is built, so that a wrong one is
                    // the build's own error.)
                    let at_least = (storage.bytes_per_weight() * l * h * ds.dim()) as u64;
                    let net = Net {
                        hidden: h,
                        depth: c.depth,
                        act: Act::Tanh,
                    };
                    if cfg.hidden.is_none()
                        && (budget.weight_bytes.is_some_and(|max| at_least > max)
                            || weight_bound(ds.dim(), l, net, c.bins) > MAX_WEIGHTS)
                    {
                        continue;
                    }
                    let cost = candidate_cost(ds, &c, storage)?;
                    if budget.exceeded(&cost).is_none() {
                        out.push(Student { cfg: c, cost });
                        break;
                    }
                    if smallest
                        .as_ref()
                        .is_none_or(|(_, s)| cost.weight_bytes < s.weight_bytes)
                    {
                        smallest = Some((c, cost));
                    }
                }
            }
        }
    }
    if out.is_empty() {
        let Some((c, cost)) = smallest else {
            bail!(
                "no student can be built for {} columns: even the narrowest would need more weights than the \
                 {MAX_WEIGHTS} this tool allocates",
                ds.dim()
            );
        };
        bail!(
            "no model fits the budget ({}): the smallest tried, {} ({} parameters, {:.1} KB of weights{}), \
             is over it — {}; raise the budget (--max-flash, --max-ms, --max-params, --max-macs) or train for \
             --target host",
            budget.describe(),
            student_name(&c),
            cost.parameters,
            cost.weight_bytes as f64 / 1024.0,
            budget
                .target
                .estimated_ms_of(&cost)
                .map_or(String::new(), |ms| format!(", {ms:.2} ms on {}", budget.target.name)),
            budget.exceeded(&cost).unwrap_or_default()
        );
    }
    Ok(out)
}

/// `true` for a file too small for one validation split of at least 100
/// rows: by default the search runs as a committee of folds there, and
/// teacher samples may help its students.
pub(super) fn is_small(ds: &Dataset, cfg: &TrainConfig) -> bool {
    default_folds(ds.n_normal(), cfg.val_fraction) > 1
}

/// A student's family and size as the summary names it (`maf 2×16`), and
/// `without the whitening layer` when it has none, `with the triangular
/// whitening layer` when it has that one.
fn student_name(c: &TrainConfig) -> String {
    format!(
        "{}{} {}×{}{}{}",
        match c.folds {
            Some(k) if k > 1 => format!("a {k}-fold committee of "),
            _ => String::new(),
        },
        c.flow.name(),
        c.layers.unwrap_or(0),
        c.hidden.unwrap_or(0),
        match c.student_weights {
            Some(s) if !s.is_f32() => format!(" {}", s.name()),
            _ => String::new(),
        },
        if without_whitening(c) {
            " without the whitening layer"
        } else if with_triangular_whitening(c) {
            " with the triangular whitening layer"
        } else {
            ""
        }
    )
}

/// The record of a student trained with `c` (`teacher_samples` per
/// epoch), of cost `cost` on `budget`'s target, summary `s`.
fn student_record(
    c: &TrainConfig,
    cost: &ModelCost,
    budget: &Budget,
    s: &TrainSummary,
    teacher_samples: usize,
) -> Candidate {
    Candidate {
        flow: c.flow.name().into(),
        noise: c.noise,
        layers: c.layers.unwrap_or(0),
        hidden: c.hidden.unwrap_or(0),
        parameters: cost.parameters,
        macs: cost.macs as usize,
        weight_bytes: Some(cost.weight_bytes),
        teacher_samples: Some(teacher_samples),
        no_whitening: without_whitening(c),
        triangular_whitening: with_triangular_whitening(c),
        storage: cost.storage,
        estimated_ms: budget.target.estimated_ms_of(cost),
        val_nll: Some(s.best_val_nll),
        seconds: Some(s.seconds),
        ..Candidate::default()
    }
}

/// A student left without the whitening layer its family would have (a
/// continuous flow never has one).
fn without_whitening(c: &TrainConfig) -> bool {
    !c.whiten && c.flow != FlowKind::Cnf
}

/// A student whose whitening layer is the triangular one.
fn with_triangular_whitening(c: &TrainConfig) -> bool {
    c.whitens() && c.whiten_triangular
}

/// `n` samples of `teacher` with its `−log p`, in parallel and
/// deterministically (chunk `i` draws from its own seeded generator).
fn sample_pool(teacher: &DynMixture, n: usize, seed: u64) -> (Vec<Vec<f32>>, Vec<f32>) {
    const CHUNK: usize = 256;
    let parts: Vec<Vec<(Vec<f32>, f32)>> = (0..n.div_ceil(CHUNK))
        .into_par_iter()
        .map(|i| {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x7ea_c4e5 ^ ((i as u64) << 32));
            let mut ws = teacher.workspace();
            let want = CHUNK.min(n - i * CHUNK);
            let mut out = Vec::with_capacity(want);
            // Samples the teacher cannot score (an overflow far out) are
            // skipped; a few tries per sample bound the loop.
            for _ in 0..4 * want {
                if out.len() == want {
                    break;
                }
                if let Ok((x, lp)) = teacher.sample_with_log_prob(&mut rng, &mut ws) {
                    if lp.is_finite() && x.iter().all(|v| v.is_finite()) {
                        out.push((x, -lp));
                    }
                }
            }
            out
        })
        .collect();
    parts.into_iter().flatten().unzip()
}

/// Train for a device target (see the module docs): the model kept, to
/// which `train` adds the broad Gaussian ([`Defence`]) that every choice
/// here judges the candidates with; `start` is when training began.
pub(super) fn distil(
    ds: &Dataset,
    cfg: &TrainConfig,
    budget: Budget,
    progress: bool,
    start: Instant,
) -> Result<(ModelFile, TrainSummary)> {
    // With the search left to choose the model, a Gaussian mixture within
    // the whole budget competes with the students (`keep_gaussians`); when
    // no flow fits (a soft-float part on wide data) it is kept if one fits,
    // else, or with the flow pinned, the error.
    let alone_allowed = cfg.gaussians && cfg.flow == FlowKind::Auto && cfg.layers.is_none() && cfg.hidden.is_none();
    let smallest_gaussian = gaussians::added_cost(Covariance::Diag, 1, ds.dim());
    let (candidates, no_flow) = match students(ds, cfg, &budget) {
        Ok(c) => (c, None),
        Err(e) if alone_allowed => match budget.exceeded(&smallest_gaussian) {
            None => (Vec::new(), Some(e)),
            Some(why) => bail!(
                "{e:#}\nnor does one diagonal Gaussian, the smallest model there is ({:.0} bytes of weights): {why}",
                smallest_gaussian.weight_bytes
            ),
        },
        Err(e) => return Err(e),
    };
    let one = TrainConfig {
        folds: Some(1),
        fold: None,
        ..cfg.clone()
    };
    // The student's validation rows and, in the file's (or the seeded
    // shuffle's) order, the teacher's rows.
    let (teacher_rows, val) = hold_out(ds, &one, &mut Xoshiro256PlusPlus::seed_from_u64(one.seed));
    let tds = Dataset {
        path: ds.path.clone(),
        features: ds.features.clone(),
        file_gaps: (0..ds.dim()).map(|j| ds.smallest_gap(j)).collect(),
        row_errors: vec![None; teacher_rows.len()],
        rows: teacher_rows,
        sha256: ds.sha256.clone(),
        ..Dataset::default()
    };
    let tcfg = TrainConfig {
        target: Some("host".into()),
        max_flash: None,
        max_ms: None,
        max_params: None,
        max_macs: None,
        folds: cfg.folds.or(Some(default_folds(tds.rows.len(), cfg.val_fraction))),
        ..cfg.clone()
    };
    if progress {
        eprintln!(
            "teacher: the best model the search finds on {} rows ({} held out to choose the student by)",
            tds.rows.len(),
            val.len()
        );
    }
    // The Gaussians beside the student (`gaussians`) and alone are fitted
    // while the teacher trains (they need only the rows): they share the
    // cores.
    let (teacher, (gauss, alone)) = rayon::join(
        || train_committee(&tds, &tcfg, progress, Some(&budget)),
        || {
            rayon::join(
                || {
                    if cfg.gaussians && !candidates.is_empty() {
                        fit_gaussians(&tds, cfg, &budget.scaled(GAUSSIAN_SHARE), false)
                    } else {
                        Ok(None)
                    }
                },
                || {
                    if alone_allowed {
                        fit_gaussians(&tds, cfg, &budget, true)
                    } else {
                        Ok(None)
                    }
                },
            )
        },
    );
    let (teacher, tsum) = teacher?;
    let (gauss, alone) = (gauss?, alone?);
    let tcost = ModelCost::of(&teacher.model);
    // One pass over the held-out rows: how many the teacher cannot score,
    // and its mean NLL on them.
    let lps = teacher.model.log_probs(&val);
    let bad = lps
        .iter()
        .filter(|lp| !lp.as_ref().is_ok_and(|v| v.is_finite()))
        .count();
    if bad > 0 && bad * 20 > val.len() {
        // As a single split would say it: rows even a model of the other
        // rows cannot score.
        let (mean, std): (Vec<f32>, Vec<f32>) = (0..ds.dim())
            .map(|j| {
                let (m, v) = column_moments(&tds.rows, j);
                (m as f32, v.sqrt() as f32)
            })
            .unzip();
        bail!(unscorable_rows(ds, &mean, &std, &val, bad, true));
    }
    let teacher_val = if val.is_empty() { f64::NAN } else { mean_nll_of(&lps) };
    let record = TeacherRecord {
        kept: crate::cli::describe_model(&teacher),
        flows: teacher.model.flows.len(),
        parameters: tcost.parameters,
        weight_bytes: tcost.weight_bytes,
        macs: tcost.macs,
        estimated_ms: budget.target.estimated_ms_of(&tcost),
        own_val_nll: tsum.best_val_nll.is_finite().then_some(tsum.best_val_nll),
        val_nll: teacher_val.is_finite().then_some(teacher_val),
        seconds: tsum.seconds,
    };
    if budget.exceeded(&tcost).is_none() {
        if progress {
            eprintln!("teacher fits the budget ({}): kept as it is", budget.describe());
        }
        let (mut m, mut s) = (teacher, tsum);
        // The rows no part of it trained on: what it is judged (and
        // calibrated, `--val-out`) on.
        if !val.is_empty() {
            s.val_rows = val.len();
            s.validation = val;
            m.provenance.val_rows = s.val_rows;
            if teacher_val.is_finite() {
                s.best_val_nll = teacher_val;
                m.provenance.val_nll = teacher_val;
            }
        }
        m.provenance.settings.config.target = Some(budget.target.name.into());
        m.provenance.settings.distillation = Some(Distillation {
            budget: budget.describe(),
            max_weight_bytes: budget.weight_bytes,
            teacher: record,
            students: Vec::new(),
            samples_per_epoch: 0,
            pool: 0,
            kept: "teacher (within the budget)".into(),
            gaussians: None,
            gaussians_alone: None,
        });
        return Ok((m, s));
    }
    // Every choice below judges a candidate as it would be kept, with the
    // broad Gaussian in place where it fits.
    let defence = Defence {
        w: cfg.defensive_weight,
        budget: &budget,
    };
    if let Some(e) = no_flow {
        let Some(alone) = alone.and_then(|g| Alone::judge(g, ds.dim(), &val, &defence)) else {
            return Err(e);
        };
        let teacher = Teacher {
            model: teacher,
            record,
            val_nll: teacher_val,
        };
        let why = "because no flow fits the budget".to_string();
        let (m, s) = keep_gaussians(
            ds,
            &tds,
            cfg,
            &budget,
            alone,
            teacher,
            (Vec::new(), None, None),
            why,
            &val,
            start,
        );
        m.validate()?;
        if progress {
            eprintln!("{e:#}");
        }
        return Ok((m, s));
    }
    // The students beside the Gaussians are sized for the budget the
    // Gaussians leave. Where that changes a student's size, both sizes are
    // trained: the full budget's students compete alone, the smaller ones
    // with the Gaussians, so a file the Gaussians do not help keeps the
    // student it would have had without them.
    let reduced: Vec<Student> = gauss
        .as_ref()
        .and_then(|(g, _)| budget.less(&gaussians::added_cost(g.kind, g.len(), ds.dim())))
        .and_then(|b| students(ds, cfg, &b).ok())
        .unwrap_or_default();
    let gauss = gauss.filter(|_| !reduced.is_empty());
    // Every student to train, whether it competes alone (full budget) and
    // whether beside the Gaussians.
    let mut all: Vec<(Student, bool, bool)> = candidates
        .into_iter()
        .map(|st| {
            let beside = reduced.iter().any(|r| r.cfg == st.cfg);
            (st, true, beside)
        })
        .collect();
    for r in reduced {
        if !all.iter().any(|(st, ..)| st.cfg == r.cfg) {
            all.push((r, false, true));
        }
    }
    let n = tds.rows.len();
    // Teacher samples fill the gaps of small data. On a file large enough
    // for one validation split (by default no committee, whatever --folds
    // says) the students on the real rows alone won every time it was
    // measured (BENCHMARKS.md, "Training time", change 3), so none are
    // drawn there.
    let small = is_small(&tds, cfg);
    let per_epoch = if small {
        ((cfg.teacher_samples * n as f64).round() as usize).min(MAX_SAMPLES_PER_EPOCH)
    } else {
        0
    };
    let pool = if per_epoch > 0 {
        let (rows, nll) = sample_pool(&teacher.model, POOL_EPOCHS * per_epoch, cfg.seed);
        (!rows.is_empty()).then(|| TeacherPool {
            per_epoch: per_epoch.min(rows.len()),
            rows,
            nll,
            weight: cfg.distil_weight,
        })
    } else {
        None
    };
    if progress {
        eprintln!(
            "teacher {} ({:.0} KB, validation NLL {:.3}) is over the budget ({}): distilling into {} student(s) {}",
            record.kept,
            tcost.weight_bytes as f64 / 1024.0,
            teacher_val,
            budget.describe(),
            all.len(),
            match &pool {
                Some(p) => format!("with {} teacher samples per epoch", p.per_epoch),
                None if small => "on the real rows (--teacher-samples 0)".into(),
                None => format!("on the real rows ({n} rows: teacher samples help small files only)"),
            }
        );
    }
    // The students inherit the noise the teacher's search chose.
    let noise = cfg.noise.or(teacher.provenance.settings.config.noise);
    let mut tried = Vec::new();
    // Every student both ways: on the real rows alone, and with the
    // teacher's samples (the validation rows decide which helps here).
    let runs: Vec<(&Student, Option<&TeacherPool>)> = all
        .iter()
        .flat_map(|(st, ..)| std::iter::once((st, None)).chain(pool.as_ref().map(|p| (st, Some(p)))))
        .collect();
    // Which runs compete alone and which beside the Gaussians.
    let mut role: Vec<(bool, bool)> = all
        .iter()
        .flat_map(|(_, alone, beside)| std::iter::repeat_n((*alone, *beside), if pool.is_some() { 2 } else { 1 }))
        .collect();
    // The students train side by side (each on its own seeded generator,
    // so the results do not depend on the order they finish in); their
    // lines appear as they finish, the choice is made in a fixed order.
    let bar = if progress {
        let b = indicatif::ProgressBar::new(runs.len() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("students [{bar:30}] {pos}/{len} {elapsed}")
                .unwrap()
                .progress_chars("=> "),
        );
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let trained: Vec<Result<(TrainConfig, ModelFile, TrainSummary)>> = runs
        .par_iter()
        .map(|&(st, with)| {
            let scfg = TrainConfig {
                noise: Some(noise.unwrap_or(0.0)),
                ..st.cfg.clone()
            };
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(cfg.seed);
            let mut train = tds.rows.clone();
            super::shuffle(&mut train, &mut rng);
            let split = Split {
                train,
                val: val.clone(),
                labelled_out: ds.len() - ds.n_normal(),
            };
            let (mut m, mut s) = train_split(&tds, &scfg, split, with, &mut rng, false)?;
            let storage = scfg.student_weights.unwrap_or_default();
            if !storage.is_f32() {
                // Judged as stored: the validation NLL the device computes.
                m.compress(storage)?;
                let v = if val.is_empty() {
                    f64::NAN
                } else {
                    mean_nll_of(&m.model.log_probs(&val))
                };
                s.best_val_nll = v;
                m.provenance.val_nll = v;
            }
            let cost = ModelCost::of(&m.model);
            debug_assert_eq!(cost, st.cost);
            let line = format!(
                "student {}{}: validation NLL {:.3} ({:.1} KB, {} multiply-adds{}, {:.0} s)",
                student_name(&scfg),
                if with.is_some() {
                    " + teacher samples"
                } else {
                    ", real rows"
                },
                s.best_val_nll,
                cost.weight_bytes as f64 / 1024.0,
                cost.macs,
                budget
                    .target
                    .estimated_ms_of(&cost)
                    .map_or(String::new(), |ms| format!(", {ms:.2} ms")),
                s.seconds
            );
            // A hidden bar (standard error not a terminal) prints nothing.
            if progress && bar.is_hidden() {
                eprintln!("{line}");
            } else {
                bar.println(line);
            }
            bar.inc(1);
            Ok((scfg, m, s))
        })
        .collect();
    bar.finish_and_clear();
    let mut models = Vec::with_capacity(runs.len());
    for (r, (_, with)) in trained.into_iter().zip(&runs) {
        let (scfg, m, s) = r?;
        let cost = ModelCost::of(&m.model);
        tried.push(student_record(
            &scfg,
            &cost,
            &budget,
            &s,
            with.map_or(0, |p| p.per_epoch),
        ));
        models.push((m, s, cost));
    }
    // On a small file, committees of students compete too
    // (`committee_students`): each in the role of a student alone.
    // Stored as the full budget's students are (a committee's 1/k of the
    // budget would otherwise choose i8 for a smaller width of data).
    let ccfg = TrainConfig {
        student_weights: cfg
            .student_weights
            .or(all.first().and_then(|(st, ..)| st.cfg.student_weights)),
        ..cfg.clone()
    };
    for (m, s) in committee_students(&tds, &ccfg, &tcfg, &budget, noise, &val, progress)? {
        let cost = ModelCost::of(&m.model);
        let c = &m.provenance.settings.config;
        tried.push(Candidate {
            committee: c.folds,
            ..student_record(c, &cost, &budget, &s, 0)
        });
        models.push((m, s, cost));
        role.push((true, false));
    }
    let among = |which: fn(&(bool, bool)) -> bool| -> Vec<usize> {
        role.iter()
            .enumerate()
            .filter(|(_, r)| which(r))
            .map(|(i, _)| i)
            .collect()
    };
    // Every choice below judges a model as it would be kept, with the
    // broad Gaussian in place.
    let judged = |m: &ModelFile| defence.nll(&m.model, &m.mean, &m.std, &val);
    let per_row: Vec<Option<Vec<f64>>> = models
        .iter()
        .map(|(m, ..)| defence.per_row(&m.model, &m.mean, &m.std, &val))
        .collect();
    for (c, r) in tried.iter_mut().zip(&per_row) {
        c.judged_val_nll = Some(mean_of(r.as_deref())).filter(|v| v.is_finite());
    }
    let mut pick = select(&models, &among(|r| r.0), &per_row, cfg.select);
    let (mut m, mut s, _) = models[pick].clone();
    let student_val = s.best_val_nll;
    // The Gaussians beside the student for the budget they leave that
    // fits the held-out rows best by itself, without the broad Gaussian
    // (the Gaussians cover its tails instead): kept if the mixture, as
    // kept, beats the full budget's student alone. (Trying them beside
    // every such student and keeping the best mixture was measured: on
    // files of 8–60 held-out rows the wider choice fit the test rows
    // worse, BENCHMARKS.md "Choosing with the broad Gaussian in place".)
    let gauss = gauss.map(|(g, st)| {
        let raw: Vec<Option<Vec<f64>>> = models.iter().map(|(m, ..)| per_row_nll(&m.model, &val)).collect();
        let rpick = select(&models, &among(|r| r.1), &raw, cfg.select);
        let (mut mr, mut sr, _) = models[rpick].clone();
        // The full budget's student as kept: the figure `select` chose it by.
        let against = mean_of(per_row[pick].as_deref());
        let mut rec = beside(&mut mr, &mut sr, &g, &st, &val, &defence, against);
        rec.alone_val_nll = student_val;
        if rec.kept {
            (m, s, pick) = (mr, sr, rpick);
        }
        rec
    });
    let student_val = tried[pick].val_nll.unwrap_or(student_val);
    if progress {
        if let Some(r) = &gauss {
            eprintln!(
                "{} {} Gaussian(s) ({} covariance, {:.1} KB): validation NLL {:.3} beside the best student for the budget they leave (weight {:.2}; that student alone {:.3}), the full budget's best student alone {:.3}{}",
                if r.kept { "kept" } else { "left out" },
                r.components,
                r.covariance,
                r.weight_bytes as f64 / 1024.0,
                r.val_nll,
                r.weight,
                r.student_val_nll,
                r.alone_val_nll,
                match (r.judged_val_nll, r.judged_alone_val_nll) {
                    (Some(a), Some(b)) => format!("; as each would be kept {a:.3} against {b:.3}"),
                    _ => String::new(),
                }
            );
        }
    }
    // The Gaussians alone, within the whole budget: kept if they beat the
    // kept student on the held-out rows by more than 1/rows nats.
    let alone = alone.and_then(|g| Alone::judge(g, ds.dim(), &val, &defence));
    if let (Some(a), true) = (&alone, progress) {
        eprintln!(
            "{} Gaussian(s) alone ({} covariance, {:.1} KB): validation NLL {:.3}",
            a.gmm.len(),
            a.gmm.kind.name(),
            a.cost.weight_bytes as f64 / 1024.0,
            a.val_nll
        );
    }
    // Both as they would be kept: what the record and the summary quote.
    let margin = 1.0 / val.len().max(1) as f64;
    let student_kept = judged(&m);
    let alone = match alone {
        Some(a) if !val.is_empty() && a.judged + margin < student_kept => {
            let why = format!(
                "better on the held-out rows than the best student, {}{}, as each would be kept ({:.3} against {:.3})",
                student_name(&m.provenance.settings.config),
                if gauss.as_ref().is_some_and(|g| g.kept) {
                    " with Gaussians beside it"
                } else {
                    ""
                },
                a.judged,
                student_kept
            );
            let teacher = Teacher {
                model: teacher,
                record,
                val_nll: teacher_val,
            };
            let (m, s) = keep_gaussians(
                ds,
                &tds,
                cfg,
                &budget,
                a,
                teacher,
                (tried, gauss, Some(student_kept)),
                why,
                &val,
                start,
            );
            m.validate()?;
            return Ok((m, s));
        }
        other => other.map(|a| a.record(Some(student_kept), false)),
    };
    let kcost = ModelCost::of(&m.model);
    let with_samples = tried[pick].teacher_samples.unwrap_or(0) > 0;
    let kept = format!(
        "student {}{} trained on {} ({}): validation NLL {:.3}{}; teacher, {} ({:.0} KB): {:.3} on the same rows",
        student_name(&m.provenance.settings.config),
        match &gauss {
            Some(g) if g.kept => format!(
                " with {} Gaussian(s) ({} covariance) at weight {:.2}",
                g.components, g.covariance, g.weight
            ),
            _ => String::new(),
        },
        if with_samples {
            "the real rows and teacher samples"
        } else {
            "the real rows"
        },
        budget.cost_text(&kcost),
        s.best_val_nll,
        if cfg.select == Select::OneSe && tried.iter().any(|c| c.val_nll.is_some_and(|v| v < student_val)) {
            " (the smallest within one standard error of the best student)"
        } else {
            ""
        },
        record.kept,
        record.weight_bytes as f64 / 1024.0,
        teacher_val
    );
    m.provenance.settings.distillation = Some(Distillation {
        budget: budget.describe(),
        max_weight_bytes: budget.weight_bytes,
        teacher: record,
        students: tried,
        samples_per_epoch: pool.as_ref().map_or(0, |p| p.per_epoch),
        pool: pool.as_ref().map_or(0, |p| p.rows.len()),
        kept,
        gaussians: gauss,
        gaussians_alone: alone,
    });
    m.provenance.settings.config.target = Some(budget.target.name.into());
    s.labelled_out = ds.len() - ds.n_normal();
    s.teacher = Some(Box::new(teacher));
    Ok((m, s))
}

/// The Gaussian mixture with the lowest BIC on the standardised `rows` of
/// `tds` among those within `reserve` (and a model of at most
/// [`DynMixture::MAX_MEMBERS`] flows, with a student beside them unless
/// `alone`), and the standardisation it was fitted in; `None` if none fits.
fn fit_gaussians(
    tds: &Dataset,
    cfg: &TrainConfig,
    reserve: &Budget,
    alone: bool,
) -> Result<Option<(Gmm, Standardisation)>> {
    let st = standardisation(tds, &tds.rows, cfg)?;
    let rows: Vec<Vec<f64>> = tds
        .rows
        .iter()
        .map(|r| {
            r.iter()
                .zip(st.mean.iter().zip(&st.std))
                .map(|(x, (m, s))| (*x as f64 - *m as f64) / *s as f64)
                .collect()
        })
        .collect();
    let floor = gaussians::lattice_floor(&st.std, &st.steps);
    let members = DynMixture::MAX_MEMBERS - usize::from(!alone);
    let g = gaussians::best_by_bic(&rows, &floor, members, cfg.seed, |c| reserve.exceeded(c).is_none());
    Ok(g.map(|g| (g, st)))
}

/// The teacher of a distillation: its model, record and NLL on the
/// held-out rows.
struct Teacher {
    model: ModelFile,
    record: TeacherRecord,
    val_nll: f64,
}

/// A Gaussian mixture as the whole model, judged on the held-out rows.
struct Alone {
    gmm: Gmm,
    st: Standardisation,
    model: DynMixture,
    cost: ModelCost,
    /// What the fit chose: means, variances (or factors) and weights.
    parameters: usize,
    val_nll: f64,
    /// Its NLL on the held-out rows as it would be kept, with the broad
    /// Gaussian where it fits ([`Defence::nll`]): what the choice compares.
    judged: f64,
}

impl Alone {
    /// The mixture `g` (fitted in the standardisation `st`) as flows on
    /// `d` columns and its NLL on `val`, alone and as it would be kept
    /// (`defence`); `None` if it does not build, is over the budget or
    /// cannot score the rows.
    fn judge((gmm, st): (Gmm, Standardisation), d: usize, val: &[Vec<f32>], defence: &Defence) -> Option<Self> {
        let budget = defence.budget;
        let model = gmm.flows(&st.mean, &st.std, Storage::F32)?;
        let parameters = gaussians::free_params(gmm.kind, gmm.len(), d);
        let built = ModelCost::of(&model);
        let cost = ModelCost {
            parameters: built.parameters.max(parameters),
            ..built
        };
        if model.validate().is_err() || budget.exceeded(&cost).is_some() {
            return None;
        }
        let val_nll = if val.is_empty() {
            f64::NAN
        } else {
            mean_nll_of(&model.log_probs(val))
        };
        if !(val.is_empty() || val_nll.is_finite()) {
            return None;
        }
        let judged = defence.nll(&model, &st.mean, &st.std, val);
        Some(Alone {
            gmm,
            st,
            model,
            cost,
            parameters,
            val_nll,
            judged,
        })
    }

    /// Its record, against the student's validation NLL (if any).
    fn record(&self, student_val_nll: Option<f64>, kept: bool) -> GaussiansAloneRecord {
        GaussiansAloneRecord {
            covariance: self.gmm.kind.name().into(),
            components: self.gmm.len(),
            bic: self.gmm.bic,
            weight_bytes: self.cost.weight_bytes,
            val_nll: self.judged,
            student_val_nll,
            kept,
        }
    }
}

/// The model file and summary of the Gaussians `alone` kept for `budget`
/// (`why`, e.g. "because no flow fits the budget"), fitted on the
/// teacher's rows `tds` of `ds` and judged on `val`; `students` are those
/// trained (with the Gaussians tried beside the best of them, and the best
/// one's validation NLL), the teacher recorded beside them.
#[allow(clippy::too_many_arguments)]
fn keep_gaussians(
    ds: &Dataset,
    tds: &Dataset,
    cfg: &TrainConfig,
    budget: &Budget,
    alone: Alone,
    teacher: Teacher,
    (students, beside, student_val_nll): (Vec<Candidate>, Option<GaussiansRecord>, Option<f64>),
    why: String,
    val: &[Vec<f32>],
    start: Instant,
) -> (ModelFile, TrainSummary) {
    let cost = alone.cost;
    let v = alone.val_nll;
    let kept = format!(
        "{} Gaussian(s) ({} covariance, {}): validation NLL {v:.3}, {why}; teacher, {} ({:.0} KB): {:.3} on the same \
         rows",
        alone.gmm.len(),
        alone.gmm.kind.name(),
        budget.cost_text(&cost),
        teacher.record.kept,
        teacher.record.weight_bytes as f64 / 1024.0,
        teacher.val_nll
    );
    let record = alone.record(student_val_nll, true);
    let Alone {
        st, model, parameters, ..
    } = alone;
    let dequantized = st.dequantized(&ds.features);
    let summary = TrainSummary {
        train_rows: tds.rows.len(),
        val_rows: val.len(),
        labelled_out: ds.len() - ds.n_normal(),
        epochs_run: 0,
        best_epoch: 0,
        best_val_nll: v,
        dequantized: dequantized.clone(),
        skipped_rows: 0,
        seconds: start.elapsed().as_secs_f64(),
        parameters,
        validation: val.to_vec(),
        teacher: Some(Box::new(teacher.model)),
    };
    let model = ModelFile {
        format: FORMAT.into(),
        version: VERSION,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        kind: GAUSSIANS_KIND.into(),
        features: ds.features.clone(),
        features_pipeline: None,
        mean: st.mean,
        std: st.std,
        model,
        threshold: None,
        provenance: Provenance {
            data_file: ds.path.clone(),
            data_sha256: ds.sha256.clone(),
            train_rows: tds.rows.len(),
            val_rows: val.len(),
            val_nll: v,
            settings: Settings {
                config: TrainConfig {
                    target: Some(budget.target.name.into()),
                    folds: Some(1),
                    fold: None,
                    ..cfg.clone()
                },
                dequantized,
                distillation: Some(Distillation {
                    budget: budget.describe(),
                    max_weight_bytes: budget.weight_bytes,
                    teacher: teacher.record,
                    students,
                    samples_per_epoch: 0,
                    pool: 0,
                    kept,
                    gaussians: beside,
                    gaussians_alone: Some(record),
                }),
                ..Settings::default()
            },
            history: Vec::new(),
        },
    };
    (model, summary)
}

/// Share of the budget the Gaussians beside a student may take.
const GAUSSIAN_SHARE: f64 = 0.125;

/// On a small file (the teacher a committee of `tcfg.folds` folds), the
/// committees of students: for each student shape within `1/k` of the
/// budget ([`students`]), `k` flows of that shape, fold `i` trained on the
/// teacher's rows `tds` without block `i` (which stops its training), at
/// the teacher's `noise`, averaged with equal weights — the cross-validation
/// committee the teacher is, small enough for the device. Each is judged
/// on the held-out rows `val` like a single student; those over the budget
/// as built are left out.
fn committee_students(
    tds: &Dataset,
    cfg: &TrainConfig,
    tcfg: &TrainConfig,
    budget: &Budget,
    noise: Option<f32>,
    val: &[Vec<f32>],
    progress: bool,
) -> Result<Vec<(ModelFile, TrainSummary)>> {
    let k = tcfg.folds.unwrap_or(1);
    if !cfg.committee_students || k < 2 || !is_small(tds, cfg) {
        return Ok(Vec::new());
    }
    let shapes = students(tds, cfg, &budget.scaled(1.0 / k as f64)).unwrap_or_default();
    let trained: Vec<Result<Option<(ModelFile, TrainSummary)>>> = shapes
        .par_iter()
        .map(|st| {
            let ccfg = TrainConfig {
                noise: Some(noise.unwrap_or(0.0)),
                folds: Some(k),
                fold: None,
                ..st.cfg.clone()
            };
            let (mut m, mut s) = train_committee(tds, &ccfg, false, None)?;
            let storage = ccfg.student_weights.unwrap_or_default();
            if !storage.is_f32() {
                m.compress(storage)?;
            }
            let cost = ModelCost::of(&m.model);
            if budget.exceeded(&cost).is_some() {
                return Ok(None);
            }
            // Judged on the rows every student is: none of its folds saw them.
            let v = if val.is_empty() {
                f64::NAN
            } else {
                mean_nll_of(&m.model.log_probs(val))
            };
            s.best_val_nll = v;
            s.val_rows = val.len();
            s.validation = val.to_vec();
            m.provenance.val_nll = v;
            m.provenance.val_rows = val.len();
            if progress {
                eprintln!(
                    "student {}, real rows: validation NLL {v:.3} ({})",
                    student_name(&m.provenance.settings.config),
                    budget.cost_text(&cost)
                );
            }
            Ok(Some((m, s)))
        })
        .collect();
    trained.into_iter().filter_map(Result::transpose).collect()
}

/// The student `m` (summary `s`) with the Gaussians `g` beside it: the
/// weight `w` of `w·student + (1 − w)·Gaussians` maximises the likelihood
/// of the validation rows `val` (EM), and the mixture replaces the student
/// if it fits the budget and its validation NLL (as stored, f32, and with
/// the broad Gaussian of `defence` in place) beats `against` — that of
/// the full budget's best student, as it would be kept — by more than
/// `1/rows` nats (the fitted weight), and the Gaussians' weight is at
/// least `1/rows`.
fn beside(
    m: &mut ModelFile,
    s: &mut TrainSummary,
    g: &Gmm,
    st: &Standardisation,
    val: &[Vec<f32>],
    defence: &Defence,
    against: f64,
) -> GaussiansRecord {
    let budget = defence.budget;
    let added = gaussians::added_cost(g.kind, g.len(), st.mean.len());
    let mut record = GaussiansRecord {
        covariance: g.kind.name().into(),
        components: g.len(),
        bic: g.bic,
        weight_bytes: added.weight_bytes,
        weight: 0.0,
        student_val_nll: s.best_val_nll,
        val_nll: s.best_val_nll,
        alone_val_nll: s.best_val_nll,
        judged_val_nll: None,
        judged_alone_val_nll: Some(against),
        kept: false,
    };
    let Some(gm) = g.flows(&st.mean, &st.std, m.model.storage()) else {
        return record;
    };
    // Log-densities, as the weights' fit takes them.
    let per_row = |model: &DynMixture| per_row_nll(model, val).map(|r| r.into_iter().map(|v| -v).collect::<Vec<_>>());
    let (Some(lq), Some(lg)) = (per_row(&m.model), per_row(&gm)) else {
        return record;
    };
    if val.is_empty() || !s.best_val_nll.is_finite() {
        return record;
    }
    let n = val.len() as f64;
    // The student's weight; kept off 0 and 1 so both logs stay finite.
    let w = super::stack::mixture_weights(&[&lq, &lg])
        .first()
        .map_or(0.5, |w| w.clamp(1e-6, 1.0 - 1e-6));
    record.weight = 1.0 - w;
    let model = m.model.blend(w.ln(), &gm, (1.0 - w).ln());
    if model.validate().is_err() || budget.exceeded(&ModelCost::of(&model)).is_some() {
        return record;
    }
    let v = mean_nll_of(&model.log_probs(val));
    record.val_nll = v;
    // Gaussians that carry less than one held-out row's worth of weight
    // add nothing but their cost (the student alone would be what wins).
    if !v.is_finite() || record.weight * n < 1.0 {
        return record;
    }
    let judged = defence.nll(&model, &m.mean, &m.std, val);
    record.judged_val_nll = Some(judged);
    if judged + 1.0 / n < against {
        record.kept = true;
        m.model = model;
        s.best_val_nll = v;
        m.provenance.val_nll = v;
    }
    record
}

/// The student kept among `among` (indices into `all`; its index in
/// `all`): the lowest mean of its held-out rows' NLLs `per_row` (as it
/// would be kept, [`Defence::per_row`]), or with [`Select::OneSe`]
/// [`one_se`] on them.
fn select(
    all: &[(ModelFile, TrainSummary, ModelCost)],
    among: &[usize],
    per_row: &[Option<Vec<f64>>],
    rule: Select,
) -> usize {
    // The mean held-out NLL; without held-out rows, the training's own.
    let nll = |i: usize| match mean_of(per_row[i].as_deref()) {
        v if v.is_nan() => all[i].1.best_val_nll,
        v => v,
    };
    let mut best = 0;
    for (k, &i) in among.iter().enumerate() {
        let b = nll(among[best]);
        if nll(i) < b || !b.is_finite() {
            best = k;
        }
    }
    if rule == Select::Best || per_row[among[best]].as_ref().is_none_or(|r| r.len() < 2) {
        return among[best];
    }
    let size: Vec<(u64, u64)> = among.iter().map(|&i| (all[i].2.weight_bytes, all[i].2.macs)).collect();
    let rows: Vec<Option<Vec<f64>>> = among.iter().map(|&i| per_row[i].clone()).collect();
    among[one_se(&size, &rows, best)]
}

/// The one-standard-error rule: of the candidates (sizes `size`, per-row
/// NLLs on the same held-out rows; `None` if one could not be scored), the
/// smallest (bytes of weights, then multiply-adds) whose mean NLL exceeds
/// candidate `best`'s by at most one standard error of the per-row
/// differences; `best` itself if none smaller qualifies.
fn one_se(size: &[(u64, u64)], per_row: &[Option<Vec<f64>>], best: usize) -> usize {
    let Some(Some(reference)) = per_row.get(best) else {
        return best;
    };
    let mut order: Vec<usize> = (0..size.len()).collect();
    order.sort_by_key(|&i| size[i]);
    for i in order {
        if i == best {
            return best;
        }
        let Some(own) = &per_row[i] else {
            continue;
        };
        let n = own.len() as f64;
        if own.len() != reference.len() || n < 2.0 {
            continue;
        }
        let diff: Vec<f64> = own.iter().zip(reference).map(|(a, b)| a - b).collect();
        let mean = diff.iter().sum::<f64>() / n;
        let var = diff.iter().map(|d| (d - mean) * (d - mean)).sum::<f64>() / (n - 1.0);
        if mean <= (var / n).sqrt() {
            return i;
        }
    }
    best
}

/// Mean `−log p` of per-row results (`log_probs` of the rows), summed per
/// chunk of 64 rows and then over chunks, as `optim::mean_nll` adds; a row
/// that cannot be scored makes it +∞, so a teacher that fails some is not
/// flattered.
pub(super) fn mean_nll_of(lps: &[Result<f32, flowmote::Error>]) -> f64 {
    let mut total = 0.0f64;
    for ch in lps.chunks(64) {
        let mut s = 0.0f64;
        for lp in ch {
            match lp {
                Ok(v) if v.is_finite() => s -= *v as f64,
                _ => return f64::INFINITY,
            }
        }
        total += s;
    }
    total / lps.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::{one_se, students, Budget, FlowKind, Storage, TrainConfig};
    use crate::data::Dataset;

    /// `n` rows of `d` columns (the values do not matter to the costs).
    fn wide(n: usize, d: usize) -> Dataset {
        Dataset {
            features: (0..d).map(|j| format!("c{j}")).collect(),
            rows: (0..n)
                .map(|i| (0..d).map(|j| ((i * 7 + j * 3) % 11) as f32).collect())
                .collect(),
            row_errors: vec![None; n],
            ..Dataset::default()
        }
    }

    /// A flash budget of `bytes` (and time enough: these tests are about
    /// flash), students stored as f32.
    fn with_flash(bytes: u64) -> TrainConfig {
        TrainConfig {
            max_flash: Some(bytes),
            max_ms: Some(1000.0),
            student_weights: Some(Storage::F32),
            ..TrainConfig::default()
        }
    }

    #[test]
    fn compressed_students_are_costed_and_sized_as_stored() {
        // 40 columns, 64 KB: with i8 weights the widest student that fits
        // is wider, and every student's cost is that of the stored model.
        let ds = wide(300, 40);
        let widths = |storage: Storage| -> Vec<(FlowKind, usize, bool, usize)> {
            let cfg = TrainConfig {
                student_weights: Some(storage),
                ..with_flash(64 * 1024)
            };
            let b = Budget::of(&cfg).unwrap();
            students(&ds, &cfg, &b)
                .unwrap()
                .iter()
                .map(|st| {
                    assert!(b.exceeded(&st.cost).is_none(), "a student over the budget");
                    assert_eq!(st.cost.storage, storage);
                    assert_eq!(st.cost.compressed_macs > 0, storage != Storage::F32);
                    let c = &st.cfg;
                    (c.flow, c.layers.unwrap(), c.whiten, c.hidden.unwrap())
                })
                .collect()
        };
        let (f32s, i8s) = (widths(Storage::F32), widths(Storage::I8));
        let mut wider = 0;
        for (flow, l, w, h) in &f32s {
            let Some((.., h8)) = i8s.iter().find(|(f, l8, w8, _)| (f, l8, w8) == (flow, l, w)) else {
                panic!("no i8 student {flow:?} {l} layers: {i8s:?}");
            };
            assert!(h8 >= h, "{flow:?} {l}: i8 {h8} < f32 {h}");
            wider += usize::from(h8 > h);
        }
        assert!(wider > 0, "{f32s:?} {i8s:?}");
        // By default: i8 where the LU layer (6 560 bytes here) takes over
        // a quarter of the flash budget, f32 below.
        let storages = |flash: u64| -> Vec<Storage> {
            let cfg = TrainConfig {
                student_weights: None,
                ..with_flash(flash)
            };
            let b = Budget::of(&cfg).unwrap();
            students(&ds, &cfg, &b)
                .unwrap()
                .iter()
                .map(|st| st.cost.storage)
                .collect()
        };
        let s = storages(25 * 1024);
        assert!(!s.is_empty() && s.iter().all(|&s| s == Storage::I8), "{s:?}");
        let s = storages(27 * 1024);
        assert!(!s.is_empty() && s.iter().all(|&s| s == Storage::F32), "{s:?}");
    }

    #[test]
    fn students_leave_out_the_whitening_layer_and_then_layers_when_the_budget_is_small() {
        // 40 columns: the LU layer is 4·(1 600 + 40) = 6 560 bytes, the
        // triangular one 4·(820 + 40) = 3 440.
        let ds = wide(300, 40);
        // Each student's whitening layer: "lu", "tri" or "none".
        let kinds = |cfg: &TrainConfig| -> Vec<&str> {
            let b = Budget::of(cfg).unwrap();
            let s = students(&ds, cfg, &b).unwrap();
            for st in &s {
                assert!(b.exceeded(&st.cost).is_none(), "a student over the budget");
            }
            s.iter()
                .map(|st| match (st.cfg.whiten, st.cfg.whiten_triangular) {
                    (false, _) => "none",
                    (true, false) => "lu",
                    (true, true) => "tri",
                })
                .collect()
        };
        // Ample flash: only students with the LU layer, as before.
        let w = kinds(&with_flash(64 * 1024));
        assert!(!w.is_empty() && w.iter().all(|&w| w == "lu"), "{w:?}");
        // The layer is over half the flash: all three kinds, the rows choose.
        let w = kinds(&with_flash(12 * 1024));
        for k in ["lu", "tri", "none"] {
            assert!(w.contains(&k), "{k} missing: {w:?}");
        }
        // No student fits with the LU layer: the cheaper kinds only.
        let w = kinds(&with_flash(10 * 1024));
        assert!(w.contains(&"tri") && w.contains(&"none") && !w.contains(&"lu"), "{w:?}");
        // --whiten-triangular: the triangular layer from the start.
        let w = kinds(&TrainConfig {
            whiten_triangular: true,
            ..with_flash(64 * 1024)
        });
        assert!(!w.is_empty() && w.iter().all(|&w| w == "tri"), "{w:?}");
        // --no-whiten: never with it, and nothing offered twice.
        let cfg = TrainConfig {
            whiten: false,
            ..with_flash(12 * 1024)
        };
        let w = kinds(&cfg);
        assert!(!w.is_empty() && w.iter().all(|&w| w == "none"), "{w:?}");
        let b = Budget::of(&cfg).unwrap();
        let s = students(&ds, &cfg, &b).unwrap();
        let names: std::collections::BTreeSet<_> = s.iter().map(|st| super::student_name(&st.cfg)).collect();
        assert_eq!(names.len(), s.len());
        // Not even two layers without it fit: one flow layer without it.
        let one = TrainConfig {
            flow: super::FlowKind::Maf,
            layers: Some(1),
            hidden: Some(4),
            whiten: false,
            ..TrainConfig::default()
        };
        let bytes = super::candidate_cost(&ds, &one, Storage::F32).unwrap().weight_bytes;
        let cfg = with_flash(bytes);
        let b = Budget::of(&cfg).unwrap();
        let s = students(&ds, &cfg, &b).unwrap();
        assert!(!s.is_empty());
        for st in &s {
            assert_eq!(
                (st.cfg.layers, st.cfg.whiten),
                (Some(1), false),
                "{}",
                super::student_name(&st.cfg)
            );
            assert!(b.exceeded(&st.cost).is_none());
        }
        // Pinned layers are never overridden: the budget error instead.
        let cfg = TrainConfig {
            layers: Some(2),
            ..with_flash(bytes)
        };
        let b = Budget::of(&cfg).unwrap();
        let e = students(&ds, &cfg, &b)
            .err()
            .expect("no 2-layer student fits")
            .to_string();
        assert!(e.contains("smallest tried"), "{e}");
    }

    /// 3 000 × 200 stopped the defaults with "… would need about 157 827 072
    /// weights": the widest student tried (128 units) was over the tool's
    /// allocation bound, and its cost was an error instead of "over the
    /// budget". Now such widths are skipped, and the bound counts the
    /// spline's real `--bins`, not the largest it could be.
    #[test]
    fn very_wide_data_gets_students_instead_of_an_allocation_error() {
        let ds = wide(3, 200);
        let cfg = TrainConfig::default();
        let b = Budget::of(&cfg).unwrap();
        let s = students(&ds, &cfg, &b).unwrap();
        assert!(!s.is_empty());
        for st in &s {
            assert!(b.exceeded(&st.cost).is_none());
            assert!(!st.cfg.whiten, "the 200-column LU layer alone is 157 KB");
        }
        // Wider still, with a megabyte of flash: the wide students are
        // skipped without being built (each would allocate 50 M weights),
        // the narrow ones offered.
        let ds = wide(3, 2000);
        let cfg = with_flash(1 << 20);
        let b = Budget::of(&cfg).unwrap();
        let s = students(&ds, &cfg, &b).unwrap();
        assert!(!s.is_empty());
        for st in &s {
            assert!(b.exceeded(&st.cost).is_none());
            assert!(st.cfg.hidden.unwrap() <= 48, "{}", super::student_name(&st.cfg));
        }
    }

    #[test]
    fn one_se_keeps_the_smallest_within_one_standard_error() {
        // Candidate 0 is best (mean 1.0); 1 is smaller and 0.1 worse on
        // every row but one (differences 0.1 × 3, then 0.4: mean 0.175, SE
        // 0.075): outside. 2 is the smallest, with noisy differences (±1,
        // mean 0.05, SE ≈ 0.5): inside.
        let best = vec![1.0, 1.0, 1.0, 1.0];
        let close = vec![1.1, 1.1, 1.1, 1.4];
        let noisy = vec![2.0, 0.0, 2.05, 0.15];
        let size = [(300, 30), (200, 20), (100, 10)];
        let rows = [Some(best.clone()), Some(close.clone()), Some(noisy.clone())];
        assert_eq!(one_se(&size, &rows, 0), 2);
        // Without the noisy one, the close one is outside: the best is kept.
        assert_eq!(one_se(&size[..2], &rows[..2], 0), 0);
        // A candidate that could not score a row never qualifies.
        let rows = [Some(best), Some(close), None];
        assert_eq!(one_se(&size, &rows, 0), 0);
        // The best is kept when it is the smallest.
        let size = [(100, 10), (200, 20), (300, 30)];
        let rows = [Some(vec![1.0, 2.0]), Some(vec![0.5, 3.0]), Some(vec![1.0, 2.0])];
        assert_eq!(one_se(&size, &rows, 0), 0);
    }
}
