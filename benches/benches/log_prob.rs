//! `log_prob` latency (one sample) and batch throughput (1024 rows), and
//! sampling, of the const-generic flows: MAF, affine coupling and continuous
//! flow at D = 2, 8, 16 with hidden 32 and 128. Seeded random weights; see
//! `benches/src/lib.rs` for the architectures.
//!
//! `cargo bench -p flowmote-benches --bench log_prob` (filter with a trailing
//! substring, e.g. `-- maf/`).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use flowmote::{Bijector, Flow};
use flowmote_benches::*;
use std::hint::black_box;
use std::time::Duration;

/// Rows of the batch benchmarks.
const BATCH: usize = 1024;

/// Time one flow: single `log_prob`, batch of [`BATCH`] rows on one thread
/// and on two, and one `sample`.
fn bench_flow<const D: usize, L: Bijector<D> + Sync>(c: &mut Criterion, family: &str, h: usize, flow: &Flow<D, L>) {
    let rows = normal_rows(7, BATCH, D);
    let id = format!("D{D}_H{h}");
    let x: [f32; D] = rows[..D].try_into().unwrap();
    assert!(
        flow.log_prob(&x).is_ok(),
        "{family} {id}: log_prob fails on a normal row"
    );

    let mut g = c.benchmark_group(format!("{family}/log_prob_single"));
    g.throughput(Throughput::Elements(1));
    g.bench_function(BenchmarkId::from_parameter(&id), |b| {
        b.iter(|| flow.log_prob(black_box(&x)))
    });
    g.finish();

    let mut g = c.benchmark_group(format!("{family}/log_prob_batch{BATCH}"));
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function(BenchmarkId::new("1thread", &id), |b| {
        b.iter(|| score_rows(flow, black_box(&rows)))
    });
    g.bench_function(BenchmarkId::new("2threads", &id), |b| {
        b.iter(|| score_rows_par(flow, black_box(&rows), 2))
    });
    g.finish();

    let mut g = c.benchmark_group(format!("{family}/sample"));
    g.throughput(Throughput::Elements(1));
    let mut r = rng(11);
    g.bench_function(BenchmarkId::from_parameter(&id), |b| b.iter(|| flow.sample(&mut r)));
    g.finish();
}

fn maf(c: &mut Criterion) {
    bench_flow(c, "maf", 32, &*maf_flow::<2, 32>(1));
    bench_flow(c, "maf", 128, &*maf_flow::<2, 128>(1));
    bench_flow(c, "maf", 32, &*maf_flow::<8, 32>(1));
    bench_flow(c, "maf", 128, &*maf_flow::<8, 128>(1));
    bench_flow(c, "maf", 32, &*maf_flow::<16, 32>(1));
    bench_flow(c, "maf", 128, &*maf_flow::<16, 128>(1));
}

fn coupling(c: &mut Criterion) {
    bench_flow(c, "coupling", 32, &*coupling_flow::<2, 1, 1, 32>(2));
    bench_flow(c, "coupling", 128, &*coupling_flow::<2, 1, 1, 128>(2));
    bench_flow(c, "coupling", 32, &*coupling_flow::<8, 4, 4, 32>(2));
    bench_flow(c, "coupling", 128, &*coupling_flow::<8, 4, 4, 128>(2));
    bench_flow(c, "coupling", 32, &*coupling_flow::<16, 8, 8, 32>(2));
    bench_flow(c, "coupling", 128, &*coupling_flow::<16, 8, 8, 128>(2));
}

fn cnf(c: &mut Criterion) {
    bench_flow(c, "cnf", 32, &*cnf_flow::<2, 32>(3));
    bench_flow(c, "cnf", 128, &*cnf_flow::<2, 128>(3));
    bench_flow(c, "cnf", 32, &*cnf_flow::<8, 32>(3));
    bench_flow(c, "cnf", 128, &*cnf_flow::<8, 128>(3));
    bench_flow(c, "cnf", 32, &*cnf_flow::<16, 32>(3));
    bench_flow(c, "cnf", 128, &*cnf_flow::<16, 128>(3));
}

fn criterion() -> Criterion {
    // Small budgets: the whole file runs in a few minutes; ratios within one
    // run are what the numbers are for.
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(800))
        .noise_threshold(0.05)
}

criterion_group! {
    name = benches;
    config = criterion();
    targets = maf, coupling, cnf
}
criterion_main!(benches);
