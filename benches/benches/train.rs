//! One training epoch through the tools library, on the Daphnet gait training
//! split (5632 × 9; the bundled `examples/data` copy, else `../shared/data`;
//! without either it times nothing).
//!
//! * `train_epoch_tool/…`: `flowmote_tools::train::train` with one epoch
//!   (what `flowmote train --epochs 1 --patience 0 --no-dequantize` does:
//!   split, standardise, build, one epoch of its parallel mini-batch AdamW,
//!   validation pass) — MAF, affine and spline (`nsf`) couplings: 4 layers,
//!   hidden 64 × depth 2; CNF 1 field, hidden 64.
//!   Each on 1 and 2 threads (`flowmote_tools::train::with_threads`; the
//!   tool itself takes `RAYON_NUM_THREADS`). Results do not depend on the
//!   thread count.
//!
//! `cargo bench -p flowmote-benches --bench train`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use flowmote_tools::data::load_training;
use flowmote_tools::train::{train, with_threads, FlowKind, TrainConfig};
use std::path::PathBuf;
use std::time::Duration;

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
        (FlowKind::Nsf, "nsf", 4),
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
        for threads in [1, 2] {
            g.bench_function(BenchmarkId::new(label, format!("L{layers}_H64_{threads}thr")), |b| {
                b.iter(|| with_threads(threads, || train(&ds, &cfg, false).expect("one epoch")))
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = tool_epochs
}
criterion_main!(benches);
