//! What a batched scoring path would buy: the conditioner MLP of the peer
//! comparison's MAF (9 → 64 → 64 → 18, tanh) over 1024 rows, three ways:
//!
//! * `rowwise`: `MlpRef::forward` per row — what `log_prob` does today;
//! * `blocked8_core_tanh`: 8 rows at a time, weights read once per block, the
//!   inner loop over the 8 rows (vectorisable). Each row's sums are taken in
//!   the same order as `rowwise`, and `tanh` is the core's
//!   (`flowmote::activation::tanh`, what `rowwise` applies), so the outputs
//!   are **bit-identical** (checked before timing);
//! * `blocked8_fast_tanh`: the same with a vectorisable tanh approximation
//!   (`tanh(x) = 1 − 2/(e^{2x} + 1)` with a polynomial `exp2`); not
//!   bit-identical to the core's `tanh` (max abs. error checked < 1e-6
//!   against libm's `tanhf` on [−9, 9]).
//!
//! A prototype for BENCHMARKS.md ("what would close the gap"), not an API.
//! `cargo bench -p flowmote-benches --bench mlp_batch`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flowmote::mlp::MlpRef;
use flowmote::Activation;
use flowmote_benches::{normal_rows, rng};
use flowmote_tools::train::init_params;
use std::hint::black_box;
use std::time::Duration;

const N: usize = 1024;
const R: usize = 8;

/// `tanh` via `1 − 2/(e^{2x} + 1)`, `e^{2x} = 2^i · 2^f` with `i` the
/// nearest integer (magic-number rounding, plain SSE2) and a degree-6 Taylor
/// polynomial for `2^f`, `|f| ≤ ½`; branch-free, clamps |x| ≤ 9.
#[inline(always)]
fn fast_tanh(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2²³
    let x = x.clamp(-9.0, 9.0);
    let t = 2.0 * x * core::f32::consts::LOG2_E;
    let i = (t + ROUND) - ROUND;
    let l = (t - i) * core::f32::consts::LN_2; // |l| ≤ ln2 / 2
    let p = 1.0 + l * (1.0 + l * (0.5 + l * (1.0 / 6.0 + l * (1.0 / 24.0 + l * (1.0 / 120.0 + l * (1.0 / 720.0))))));
    let e = p * f32::from_bits((((i as i32) + 127) as u32) << 23);
    1.0 - 2.0 / (e + 1.0)
}

/// One dense layer for a block of `R` rows: `out[k][r] = act(b[k] + Σ_i w[k][i]·x[i][r])`,
/// summed in `i` order like `mlp::dot` (0 + w₀x₀ + w₁x₁ + …, then `b +`).
#[inline(always)]
fn dense_block<F: Fn(f32) -> f32>(w: &[f32], b: &[f32], x: &[[f32; R]], out: &mut [[f32; R]], act: Option<F>) {
    let n = x.len();
    for (k, o) in out.iter_mut().enumerate() {
        let row = &w[k * n..(k + 1) * n];
        let mut acc = [0.0f32; R];
        for (wi, xi) in row.iter().zip(x) {
            for r in 0..R {
                acc[r] += wi * xi[r];
            }
        }
        for r in 0..R {
            let a = b[k] + acc[r];
            o[r] = match &act {
                Some(f) => f(a),
                None => a,
            };
        }
    }
}

fn core_tanh(x: f32) -> f32 {
    flowmote::activation::tanh(x)
}

/// The whole MLP (depth 2) for `N` rows, `R` at a time; `out` is row-major.
fn blocked<F: Fn(f32) -> f32 + Copy>(net: &MlpRef<'_>, rows: &[f32], out: &mut [f32], tanh: F) {
    let s = net.shape;
    let (d, h, o) = (s.input, s.hidden, s.output);
    let mut xb = vec![[0.0f32; R]; d];
    let mut h0 = vec![[0.0f32; R]; h];
    let mut h1 = vec![[0.0f32; R]; h];
    let mut ob = vec![[0.0f32; R]; o];
    for (blk, oblk) in rows.chunks_exact(R * d).zip(out.chunks_exact_mut(R * o)) {
        for r in 0..R {
            for i in 0..d {
                xb[i][r] = blk[r * d + i];
            }
        }
        dense_block(net.w_in, net.b_in, &xb, &mut h0, Some(tanh));
        dense_block(&net.w_hid[..h * h], &net.b_hid[..h], &h0, &mut h1, Some(tanh));
        dense_block(net.w_out, net.b_out, &h1, &mut ob, None::<F>);
        for r in 0..R {
            for j in 0..o {
                oblk[r * o + j] = ob[j][r];
            }
        }
    }
}

fn rowwise(net: &MlpRef<'_>, rows: &[f32], out: &mut [f32]) {
    let s = net.shape;
    let (mut h0, mut h1) = (vec![0.0; s.hidden], vec![0.0; s.hidden]);
    for (x, o) in rows.chunks_exact(s.input).zip(out.chunks_exact_mut(s.output)) {
        net.forward(x, 0.0, &mut h0, &mut h1, o);
    }
}

fn bench(c: &mut Criterion) {
    let shape = flowmote::mlp::MlpShape {
        input: 9,
        cond: 0,
        hidden: 64,
        depth: 2,
        output: 18,
    };
    let params = init_params(&mut rng(4), shape, 2, 1.0); // 2 MADE heads: a MAF conditioner
    let net = MlpRef::from_flat(shape, Activation::Tanh, &params).unwrap();
    let rows = normal_rows(8, N, shape.input);
    let mut a = vec![0.0; N * shape.output];
    let mut b = a.clone();
    let mut f = a.clone();
    rowwise(&net, &rows, &mut a);
    blocked(&net, &rows, &mut b, core_tanh);
    blocked(&net, &rows, &mut f, fast_tanh);
    assert!(
        a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
        "blocked path must be bit-identical"
    );
    let err = (-9000..=9000)
        .map(|i| i as f32 * 1e-3)
        .map(|x| (fast_tanh(x) - libm::tanhf(x)).abs())
        .fold(0.0f32, f32::max);
    assert!(err < 1e-6, "fast tanh error {err}");
    let dev = a.iter().zip(&f).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    eprintln!("mlp_batch: fast tanh max |err| {err:.1e}; MLP outputs differ by at most {dev:.1e}");

    let mut g = c.benchmark_group("mlp_batch/maf_conditioner_9-64-64-18_1024rows");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("rowwise", |bch| bch.iter(|| rowwise(&net, black_box(&rows), &mut a)));
    g.bench_function("blocked8_core_tanh", |bch| {
        bch.iter(|| blocked(&net, black_box(&rows), &mut b, core_tanh))
    });
    g.bench_function("blocked8_fast_tanh", |bch| {
        bch.iter(|| blocked(&net, black_box(&rows), &mut f, fast_tanh))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
