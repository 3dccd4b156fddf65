//! `flowmote-timing`: the flowmote side of the peer comparison's speed
//! columns (`benches/peers/run.sh`), printed as one JSON object.
//!
//! ```text
//! flowmote-timing --flow maf|coupling --dim 9|30 [--rows FILE.csv] [--model model.json]
//!                 [--layers 4 --hidden 64 --depth 2]
//! ```
//!
//! * `static`: the const-generic type firmware runs (4 layers, conditioner
//!   `hidden 64 × depth 2`, a reversal between layers — the peer
//!   comparison's default architecture; `null` if `--layers/--hidden/--depth`
//!   ask for another), seeded random weights: single-sample
//!   `log_prob` latency and batch throughput on 1 and 2 threads.
//! * `dyn` (with `--model`, a `flowmote train` model file — one flow or a
//!   mixture): the same for the trained
//!   run-time-sized model that `flowmote eval` scores with: a loop of
//!   `log_prob` on one thread, and the tool's `DynMixture::log_probs` (what
//!   `eval`, `score`, `calibrate` and `plot` run) on 1 and 2 threads.
//!
//! Rows to score come from `--rows` (a CSV; a `label` column is dropped) or
//! are 1024 standard-normal rows. Latency is the median over 31 blocks of
//! calls (each block ≥ 20 ms); throughput the best of 7 passes over all
//! rows, each pass repeating the call for ≥ 20 ms.

use flowmote::{Bijector, Flow};
use flowmote_benches::{coupling_flow, maf_flow, normal_rows, read_rows, score_rows, score_rows_par, standardise};
use flowmote_tools::model::{DynMixture, Layer, ModelFile};
use flowmote_tools::train::with_threads;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Hidden width of the compiled-in architecture.
const HIDDEN: usize = 64;
/// Flow layers of the compiled-in architecture.
const LAYERS: usize = 4;
/// Conditioner depth (hidden layers) of the compiled-in architecture.
const DEPTH: usize = 2;

/// Median nanoseconds per call of `f`.
fn latency_ns(mut f: impl FnMut()) -> f64 {
    // Calibrate a block to ≥ 20 ms.
    let mut n = 1usize;
    loop {
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        if t.elapsed() >= Duration::from_millis(20) {
            break;
        }
        n *= 2;
    }
    let mut v: Vec<f64> = (0..31)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                f();
            }
            t.elapsed().as_secs_f64() * 1e9 / n as f64
        })
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Timed passes of [`throughput`]; the best counts (`peer_flowjax.py`
/// times its batch call the same way).
const PASSES: usize = 7;

/// Rows per second of `f` scoring `n` rows, sustained: each pass repeats
/// `f` for at least 20 ms (a sleeping core of this VM takes milliseconds to
/// join a parallel call, which one call of a thousand rows never gives it);
/// best of [`PASSES`] passes after one warm-up pass.
fn throughput(n: usize, mut f: impl FnMut()) -> f64 {
    let mut reps = 1usize;
    loop {
        let t = Instant::now();
        for _ in 0..reps {
            f();
        }
        if t.elapsed() >= Duration::from_millis(20) {
            break;
        }
        reps *= 2;
    }
    let best = (0..PASSES)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..reps {
                f();
            }
            t.elapsed().as_secs_f64() / reps as f64
        })
        .fold(f64::INFINITY, f64::min);
    n as f64 / best
}

fn time_static<const D: usize, L: Bijector<D> + Sync>(flow: &Flow<D, L>, rows: &[f32]) -> serde_json::Value {
    let n = rows.len() / D;
    let x: [f32; D] = rows[..D].try_into().expect("a row");
    let single = latency_ns(|| {
        black_box(flow.log_prob(black_box(&x)).ok());
    });
    let t1 = throughput(n, || {
        black_box(score_rows(flow, black_box(rows)));
    });
    let t2 = throughput(n, || {
        black_box(score_rows_par(flow, black_box(rows), 2));
    });
    serde_json::json!({
        "single_ns": single,
        "batch_rows_per_s_1thread": t1,
        "batch_rows_per_s_2threads": t2,
        "rows": n,
    })
}

fn time_dyn(model: &DynMixture, rows: &[f32]) -> serde_json::Value {
    let d = model.dim();
    let n = rows.len() / d;
    let mut ws = model.workspace();
    let x = rows[..d].to_vec();
    let single = latency_ns(|| {
        black_box(model.log_prob(black_box(&x), &mut ws).ok());
    });
    let t1 = throughput(n, || {
        let mut s = 0.0;
        for r in rows.chunks_exact(d) {
            s += model.log_prob(r, &mut ws).unwrap_or(0.0);
        }
        black_box(s);
    });
    // What `flowmote eval/score/calibrate/plot` run: `DynMixture::log_probs`
    // over all rows, on 1 and 2 threads.
    let owned: Vec<Vec<f32>> = rows.chunks_exact(d).map(<[f32]>::to_vec).collect();
    let tool = |threads| {
        with_threads(threads, || {
            throughput(n, || {
                black_box(model.log_probs(black_box(&owned)));
            })
        })
    };
    let (p1, p2) = (tool(1), tool(2));
    serde_json::json!({
        "single_ns": single,
        "batch_rows_per_s_1thread": t1,
        "log_probs_rows_per_s_1thread": p1,
        "log_probs_rows_per_s_2threads": p2,
        "rows": n,
    })
}

fn main() {
    if let Err(e) = run() {
        eprintln!("flowmote-timing: {e}");
        std::process::exit(1);
    }
}

/// Load `--model`: a model file of `flowmote train`.
fn load_model(p: &str) -> Result<(DynMixture, Vec<f32>, Vec<f32>), String> {
    let m = ModelFile::load(p.as_ref()).map_err(|e| format!("loading {p}: {e:#}"))?;
    Ok((m.model, m.mean, m.std))
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let get = |k: &str| args.iter().position(|a| a == k).and_then(|i| args.get(i + 1)).cloned();
    let flow = get("--flow").unwrap_or_else(|| "maf".into());
    let dim: usize = get("--dim").and_then(|s| s.parse().ok()).unwrap_or(9);
    let (rows, d) = match get("--rows") {
        Some(p) => read_rows(p.as_ref())?,
        None => (normal_rows(3, 1024, dim), dim),
    };
    if d != dim {
        return Err(format!("--rows has {d} columns, --dim says {dim}"));
    }
    // The static model is standardised-space; feed it standardised-looking rows.
    let mut srows = rows.clone();
    standardise(&mut srows, d);
    // The static types are compiled for one architecture: time them only if
    // the caller asks for that one (`--layers/--hidden/--depth`, defaults match).
    let arch = |k: &str, v: usize| get(k).and_then(|s| s.parse().ok()).unwrap_or(v) == v;
    let same_arch = arch("--layers", LAYERS) && arch("--hidden", HIDDEN) && arch("--depth", DEPTH);
    let stat = match (flow.as_str(), dim) {
        _ if !same_arch => serde_json::Value::Null,
        ("maf", 9) => time_static(&*maf_flow::<9, HIDDEN>(1), &srows),
        ("maf", 30) => time_static(&*maf_flow::<30, HIDDEN>(1), &srows),
        ("coupling", 9) => time_static(&*coupling_flow::<9, 4, 5, HIDDEN>(2), &srows),
        ("coupling", 30) => time_static(&*coupling_flow::<30, 15, 15, HIDDEN>(2), &srows),
        _ => serde_json::Value::Null,
    };
    let dynamic = match get("--model") {
        None => None,
        Some(p) => {
            let (model, mean, std) = load_model(&p)?;
            if model.dim() != d {
                return Err(format!(
                    "{p} is a {}-dimensional model, the rows have {d} columns",
                    model.dim()
                ));
            }
            Some((model, mean, std))
        }
    };
    let dynamic = dynamic.map(|(model, mean, std)| {
        // Rows go in as `flowmote eval` would pass them: raw if the flows
        // standardise themselves (a frozen ActNorm first), else standardised
        // with the file's mean and std.
        let own_std = model
            .flows
            .iter()
            .all(|f| matches!(f.layers.first(), Some(Layer::ActNorm { frozen: true, .. })));
        let mut x = rows.clone();
        if !own_std && mean.len() == d && std.len() == d {
            for r in x.chunks_exact_mut(d) {
                for j in 0..d {
                    r[j] = (r[j] - mean[j]) / if std[j] > 0.0 { std[j] } else { 1.0 };
                }
            }
        }
        time_dyn(&model, &x)
    });
    let out = serde_json::json!({
        "flow": flow,
        "dim": dim,
        "static_arch": { "layers": LAYERS, "hidden": HIDDEN, "depth": DEPTH },
        "static": stat,
        "dyn": dynamic,
    });
    println!("{out}");
    Ok(())
}
