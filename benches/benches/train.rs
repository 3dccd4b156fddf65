//! One training epoch through the tools library.
//!
//! Until the tools trainer (`tools/src/train.rs`) lands, this times the
//! fallback epoch of `flowmote_benches::train`: mean-NLL gradients by
//! `DynFlow::nll_backward` over mini-batches of 64 rows (split over 1 or 2
//! threads) and an Adam step per batch (MAF gradients masked), on the standardised Daphnet gait training
//! split (5632 × 9) when `../shared/data` is present, else on 5632 × 9
//! standard-normal rows. Continuous flows: one flow-matching epoch.
//!
//! `cargo bench -p flowmote-benches --bench train`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use flowmote_benches::train::{dyn_flow, read_csv, standardise, FmTrainer, Kind, NllTrainer};
use flowmote_benches::{normal_rows, rng};
use std::path::PathBuf;
use std::time::Duration;

/// Mini-batch size and learning rate of the timed epochs.
const BATCH: usize = 64;
const LR: f32 = 1e-3;

/// Daphnet gait training rows (standardised), or a normal stand-in.
fn rows() -> (Vec<f32>, usize, &'static str) {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/daphnet_gait.train.csv");
    match read_csv(&p) {
        Ok((mut v, d)) => {
            standardise(&mut v, d);
            (v, d, "daphnet")
        }
        Err(_) => (normal_rows(5, 5632, 9), 9, "normal"),
    }
}

fn epochs(c: &mut Criterion) {
    let (data, d, name) = rows();
    let n = data.len() / d;
    let mut g = c.benchmark_group(format!("train_epoch/{name}{n}x{d}"));
    g.throughput(Throughput::Elements(n as u64));
    for (kind, label) in [(Kind::Maf, "maf"), (Kind::Coupling, "coupling")] {
        for hidden in [32, 64] {
            for threads in [1, 2] {
                let mut flow = dyn_flow(kind, d, 4, hidden, 2, 9);
                let mut t = NllTrainer::new(&flow, BATCH, LR, threads);
                g.bench_function(BenchmarkId::new(label, format!("L4_H{hidden}x2_{threads}thr")), |b| {
                    b.iter(|| t.epoch(&mut flow, &data))
                });
            }
        }
    }
    for hidden in [32, 64] {
        let mut t = FmTrainer::new(d, hidden, BATCH, LR, 9);
        let mut r = rng(13);
        g.bench_function(BenchmarkId::new("cnf_flow_matching", format!("H{hidden}x1")), |b| {
            b.iter(|| t.epoch(&data, &mut r))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = epochs
}
criterion_main!(benches);
