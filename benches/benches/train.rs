//! One training epoch through the tools library, on the Daphnet gait training
//! split (5632 × 9; the bundled `examples/data` copy, else `../shared/data`,
//! else 5632 × 9 standard-normal rows).
//!
//! * `train_epoch_tool/…`: `flowmote_tools::train::train` with one epoch
//!   (what `flowmote train --epochs 1 --patience 0 --no-dequantize` does:
//!   split, standardise, build, one epoch of its parallel mini-batch AdamW,
//!   validation pass) — 4 layers, hidden 64 × depth 2; CNF 1 field, hidden 64.
//! * `train_epoch_loop/…`: the minimal loop of `flowmote_benches::train`
//!   (mean-NLL gradients by `DynFlow::nll_backward` over mini-batches of 64
//!   rows on 1 or 2 threads, an Adam step per batch; CNF: flow matching), on
//!   pre-standardised rows: the floor the trainer's overhead is measured
//!   against.
//!
//! `cargo bench -p flowmote-benches --bench train`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use flowmote_benches::train::{dyn_flow, read_csv, standardise, FmTrainer, Kind, NllTrainer};
use flowmote_benches::{normal_rows, rng};
use flowmote_tools::data::load_training;
use flowmote_tools::train::{train, FlowKind, TrainConfig};
use std::path::PathBuf;
use std::time::Duration;

/// Mini-batch size and learning rate of the timed epochs.
const BATCH: usize = 64;
const LR: f32 = 1e-3;
/// Hidden width of the timed conditioners and fields.
const HIDDEN: usize = 64;

/// The Daphnet gait training file, if present.
fn daphnet() -> Option<PathBuf> {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    [
        "../examples/data/daphnet_gait.train.csv",
        "../../shared/data/daphnet_gait.train.csv",
    ]
    .into_iter()
    .map(|p| here.join(p))
    .find(|p| p.exists())
}

/// Daphnet gait training rows (standardised), or a normal stand-in.
fn rows() -> (Vec<f32>, usize, &'static str) {
    match daphnet().ok_or(()).and_then(|p| read_csv(&p).map_err(|_| ())) {
        Ok((mut v, d)) => {
            standardise(&mut v, d);
            (v, d, "daphnet")
        }
        Err(_) => (normal_rows(5, 5632, 9), 9, "normal"),
    }
}

fn tool_epochs(c: &mut Criterion) {
    let ds = match daphnet() {
        Some(p) => load_training(&p, None).expect("daphnet training file"),
        None => return,
    };
    let n = ds.len();
    let mut g = c.benchmark_group(format!("train_epoch_tool/daphnet{n}x{}", ds.dim()));
    g.throughput(Throughput::Elements(n as u64));
    for (flow, label, layers) in [
        (FlowKind::Maf, "maf", 4),
        (FlowKind::Coupling, "coupling", 4),
        (FlowKind::Cnf, "cnf", 1),
    ] {
        let cfg = TrainConfig {
            flow,
            layers: Some(layers),
            hidden: Some(HIDDEN),
            depth: if flow == FlowKind::Cnf { 1 } else { 2 },
            epochs: Some(1),
            patience: Some(0),
            dequantize: false,
            noise: Some(0.0),
            ..TrainConfig::default()
        };
        g.bench_function(BenchmarkId::new(label, format!("L{layers}_H64")), |b| {
            b.iter(|| train(&ds, &cfg, false).expect("one epoch"))
        });
    }
    g.finish();
}

fn epochs(c: &mut Criterion) {
    let (data, d, name) = rows();
    let n = data.len() / d;
    let mut g = c.benchmark_group(format!("train_epoch_loop/{name}{n}x{d}"));
    g.throughput(Throughput::Elements(n as u64));
    for (kind, label) in [(Kind::Maf, "maf"), (Kind::Coupling, "coupling")] {
        for threads in [1, 2] {
            let mut flow = dyn_flow(kind, d, 4, HIDDEN, 2, 9);
            let mut t = NllTrainer::new(&flow, BATCH, LR, threads);
            g.bench_function(BenchmarkId::new(label, format!("L4_H{HIDDEN}x2_{threads}thr")), |b| {
                b.iter(|| t.epoch(&mut flow, &data))
            });
        }
    }
    let mut t = FmTrainer::new(d, HIDDEN, BATCH, LR, 9);
    let mut r = rng(13);
    g.bench_function(BenchmarkId::new("cnf_flow_matching", format!("H{HIDDEN}x1")), |b| {
        b.iter(|| t.epoch(&data, &mut r))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = tool_epochs, epochs
}
criterion_main!(benches);
