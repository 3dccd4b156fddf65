//! Instruction counts on the emulated Cortex-M4F.
//!
//! Each benchmark runs its work once between two `#[inline(never)]` marker
//! functions with different bodies (so LTO cannot merge them).
//! `benches/firmware-bench.sh` runs this image under
//! `qemu-system-arm -singlestep -d exec,nochain` and counts the instructions
//! executed between each `bench_start` and the following `bench_end`; this
//! image logs, in the same order, each benchmark's name and its
//! multiply–accumulate count (`MlpShape::macs()` summed over the model's
//! conditioner passes).
//!
//! Built for thumbv6m-none-eabi (`benches/firmware-bench.sh --m0`, QEMU
//! `microbit`, 16 KiB of RAM), the rows whose weights do not fit on the stack
//! there are left out (`#[cfg(target_abi = "eabihf")]`: Cortex-M4F only).
//! Built for riscv32imc-unknown-none-elf (`--rv32`, QEMU `virt`: the
//! ESP32-C3's instruction set, soft float), the same rows as the Cortex-M0's;
//! [`platform`] holds what differs (entry, exit, the defmt transport).
//!
//! Weights are filled at run time with a cheap deterministic generator (the
//! instruction count of these maps does not depend on their values except
//! through `tanhf`/`expf`, which see typical arguments).
#![no_std]
#![no_main]

use core::hint::black_box;
use core::ptr::{addr_of_mut, write_volatile};

use flowmote::{
    ActNorm, Activation, AffineCoupling, Density, Flow, LuLinear, Maf, Mixture, Mlp, MlpStore, SplineAutoregressive,
    SplineCoupling, TriLinear,
};
#[cfg(target_abi = "eabihf")]
use flowmote::{Weight, F16};
#[path = "../platform.rs"]
mod platform;
use platform::{entry, exit_failure, exit_success};

use flowmote_fixtures::model;

static mut MARK: u32 = 0;

/// Start of a measured region.
#[inline(never)]
#[no_mangle]
pub extern "C" fn bench_start() {
    unsafe { write_volatile(addr_of_mut!(MARK), 1) };
}

/// End of a measured region (a different body from `bench_start`).
#[inline(never)]
#[no_mangle]
pub extern "C" fn bench_end() {
    unsafe { write_volatile(addr_of_mut!(MARK), 0xE0D) };
}

/// Deterministic pseudo-random fill in `[-s, s)` (an LCG: few instructions per
/// weight, to keep the instruction trace short).
fn fill(v: &mut [f32], state: &mut u32, s: f32) {
    for w in v {
        *state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        *w = ((*state >> 8) as f32 * (1.0 / 8_388_608.0) - 1.0) * s;
    }
}

fn random_mlp<const IN: usize, const H: usize, const L: usize, const OUT: usize, const HEADS: usize>(
    act: Activation,
    seed: u32,
) -> Mlp<IN, H, L, OUT, HEADS> {
    let mut m = Mlp::<IN, H, L, OUT, HEADS>::zeroed(act);
    let mut st = seed;
    fill(m.w_in.as_flattened_mut(), &mut st, inv_sqrt_times(IN, 1.0));
    fill(&mut m.b_in, &mut st, 0.1);
    fill(
        m.w_hid.as_flattened_mut().as_flattened_mut(),
        &mut st,
        inv_sqrt_times(H, 1.0),
    );
    fill(m.b_hid.as_flattened_mut(), &mut st, 0.1);
    fill(
        m.w_out.as_flattened_mut().as_flattened_mut(),
        &mut st,
        inv_sqrt_times(H, 0.3),
    );
    fill(m.b_out.as_flattened_mut(), &mut st, 0.1);
    m
}

/// `c / √n` by Newton's iteration (no `libm` dependency in this binary).
fn inv_sqrt_times(n: usize, c: f32) -> f32 {
    let n = n as f32;
    let mut y = 0.1f32;
    for _ in 0..40 {
        y *= 1.5 - 0.5 * n * y * y;
    }
    c * y
}

fn input<const D: usize>() -> [f32; D] {
    let mut x = [0.0; D];
    let mut st = 7;
    fill(&mut x, &mut st, 1.0);
    x
}

/// Count one `log_prob` of `flow` (a flow or a mixture; the result goes
/// through `black_box`).
#[inline(never)]
fn bench_log_prob<const D: usize, M: Density<D>>(name: &str, macs: usize, flow: &M) {
    count_log_prob(flow, &input::<D>());
    defmt::info!("bench {=str} macs {=usize}", name, macs);
}

/// Count one `log_prob` of `flow` at `x` (the caller logs the row's name).
#[inline(never)]
fn count_log_prob<const D: usize, M: Density<D>>(flow: &M, x: &[f32; D]) {
    let flow = black_box(flow);
    let x = black_box(x);
    bench_start();
    let r = flow.log_prob(x);
    bench_end();
    let _ = black_box(r);
}

/// The bundled model at each of its golden inputs (held-out rows of its
/// training file, in data units): a spline flow's count depends on where
/// its input falls (inside the splines' interval or on their identity
/// tails), so the model is counted on the data it scores.
#[inline(never)]
fn bundled_model() {
    for (k, x) in model::GOLDEN_INPUTS.iter().enumerate() {
        count_log_prob(&model::MODEL, x);
        defmt::info!(
            "bench bundled model (model.rs), golden input {=usize} macs {=usize}",
            k,
            model::MACS
        );
    }
}

#[inline(never)]
fn maf<const D: usize, const H: usize, const L: usize>(name: &str) {
    let flow = Flow::<D, _>::new((Maf::<D, H, L> {
        clamp: 3.0,
        net: random_mlp::<D, H, L, D, 2>(Activation::Tanh, 11),
    },));
    bench_log_prob(name, Mlp::<D, H, L, D, 2>::shape().macs(), &flow);
}

/// [`maf`] with the conditioner's weights compressed to `W` (`F16`, or `i8`
/// with row scales) from the same `f32` weights.
#[cfg(target_abi = "eabihf")]
#[inline(never)]
fn maf_stored<const D: usize, const H: usize, const L: usize, W: Weight>(
    name: &str,
    net: impl Fn(&Mlp<D, H, L, D, 2>) -> W::Mlp<D, H, L, D, 2>,
) {
    let flow = Flow::<D, _>::new((Maf::<D, H, L, W> {
        clamp: 3.0,
        net: net(&random_mlp::<D, H, L, D, 2>(Activation::Tanh, 11)),
    },));
    bench_log_prob(name, Mlp::<D, H, L, D, 2>::shape().macs(), &flow);
}

/// One forward pass of an MLP through the core view with its weights
/// stored as `N` (the `f32` row is `view_vs_fixed`'s core view).
#[inline(never)]
fn view_stored<const IN: usize, const H: usize, const OUT: usize, N: MlpStore>(
    act: Activation,
    name: &str,
    store: impl Fn(&Mlp<IN, H, 1, OUT, 2>) -> N,
) {
    let m = store(&random_mlp::<IN, H, 1, OUT, 2>(act, 17));
    let x = input::<IN>();
    let macs = Mlp::<IN, H, 1, OUT, 2>::shape().macs();
    let (mut h0, mut h1, mut out) = ([0.0f32; H], [0.0f32; H], [[0.0f32; OUT]; 2]);
    let (mb, xb) = (black_box(&m), black_box(&x));
    bench_start();
    mb.view().forward(xb, 0.0, &mut h0, &mut h1, out.as_flattened_mut());
    bench_end();
    black_box(&out);
    defmt::info!("bench {=str} macs {=usize}", name, macs);
}

/// A mixture of two one-layer MAF flows (weights ½, ½): the members' cost
/// plus one `expf` each and a `logf`.
#[inline(never)]
fn mixture_of_mafs<const D: usize, const H: usize>(name: &str) {
    let member = |seed| {
        Flow::<D, _>::new((Maf::<D, H, 0> {
            clamp: 3.0,
            net: random_mlp::<D, H, 0, D, 2>(Activation::Tanh, seed),
        },))
    };
    let half = -core::f32::consts::LN_2;
    let mix = Mixture::<D, 2, _>::new([half, half], (member(11), member(12)));
    bench_log_prob(name, 2 * Mlp::<D, H, 0, D, 2>::shape().macs(), &mix);
}

#[inline(never)]
fn coupling<const D: usize, const A: usize, const B: usize, const H: usize>(name: &str) {
    let flow = Flow::<D, _>::new((AffineCoupling::<A, B, H, 0> {
        clamp: 3.0,
        net: random_mlp::<A, H, 0, B, 2>(Activation::Tanh, 13),
    },));
    bench_log_prob(name, Mlp::<A, H, 0, B, 2>::shape().macs(), &flow);
}

/// Spline coupling (K bins, P = 3K − 1 raw parameters per coordinate).
#[inline(never)]
fn spline_coupling<const D: usize, const A: usize, const B: usize, const H: usize, const K: usize, const P: usize>(
    name: &str,
) {
    let flow = Flow::<D, _>::new((SplineCoupling::<A, B, H, 0, K, P>::new(
        3.0,
        random_mlp::<A, H, 0, B, P>(Activation::Tanh, 19),
    ),));
    bench_log_prob(name, Mlp::<A, H, 0, B, P>::shape().macs(), &flow);
}

/// Autoregressive spline; the weights are not MADE-masked (the instruction
/// count of one density pass does not depend on which weights are zero).
#[inline(never)]
fn spline_ar<const D: usize, const H: usize, const K: usize, const P: usize>(name: &str) {
    let flow = Flow::<D, _>::new((SplineAutoregressive::<D, H, 0, K, P>::new(
        3.0,
        random_mlp::<D, H, 0, D, P>(Activation::Tanh, 23),
    ),));
    bench_log_prob(name, Mlp::<D, H, 0, D, P>::shape().macs(), &flow);
}

/// LU linear layer (the trainer's whitening layer): `D²` multiply–adds.
#[inline(never)]
fn lu_linear<const D: usize>(name: &str) {
    let mut state = 29u32;
    let mut lu = [[0.0f32; D]; D];
    for row in lu.iter_mut() {
        fill(row, &mut state, 0.3);
    }
    let mut perm = [0usize; D];
    for (i, p) in perm.iter_mut().enumerate() {
        *p = (i + 1) % D;
    }
    let flow = Flow::<D, _>::new((LuLinear::<D>::new(perm, [1.0; D], lu, [0.1; D]),));
    bench_log_prob(name, D * D, &flow);
}

/// Lower-triangular linear layer (the students' cheaper whitening layer):
/// `D(D+1)/2` multiply–adds.
#[inline(never)]
fn tri_linear<const D: usize, const N: usize>(name: &str) {
    let mut state = 31u32;
    let mut tri = [0.0f32; N];
    fill(&mut tri, &mut state, 0.3);
    let flow = Flow::<D, _>::new((TriLinear::<D, N>::new(tri, [0.1; D]),));
    bench_log_prob(name, N, &flow);
}

/// The standardisation alone (a frozen ActNorm: one `expf` per coordinate)
/// and the base density: what every flow pays besides its layers.
#[inline(never)]
fn actnorm<const D: usize>(name: &str) {
    let mut state = 37u32;
    let (mut s, mut b) = ([0.0f32; D], [0.0f32; D]);
    fill(&mut s, &mut state, 0.5);
    fill(&mut b, &mut state, 0.5);
    let flow = Flow::<D, _>::new((ActNorm::<D>::new(s, b),));
    bench_log_prob(name, 0, &flow);
}

/// A Gaussian as `flowmote train` keeps beside a student: the
/// standardisation and a triangular layer (`D(D+1)/2` multiply–adds).
#[inline(never)]
fn gaussian<const D: usize, const N: usize>(name: &str) {
    let mut state = 41u32;
    let (mut s, mut b, mut tri) = ([0.0f32; D], [0.0f32; D], [0.0f32; N]);
    fill(&mut s, &mut state, 0.5);
    fill(&mut b, &mut state, 0.5);
    fill(&mut tri, &mut state, 0.3);
    let flow = Flow::<D, _>::new((ActNorm::<D>::new(s, b), TriLinear::<D, N>::new(tri, [0.1; D])));
    bench_log_prob(name, N, &flow);
}

/// The same MLP computed by the core's slice-level view (`Mlp::view().forward`,
/// what every const-generic layer calls) and by a hand-written loop over the
/// fixed-size arrays: if the view cost anything on the device, it shows here.
#[inline(never)]
fn view_vs_fixed<const IN: usize, const H: usize, const OUT: usize>(
    act: Activation,
    view_name: &str,
    fixed_name: &str,
) {
    let m = random_mlp::<IN, H, 1, OUT, 2>(act, 17);
    let x = input::<IN>();
    let macs = Mlp::<IN, H, 1, OUT, 2>::shape().macs();

    let (mut h0, mut h1, mut out) = ([0.0f32; H], [0.0f32; H], [[0.0f32; OUT]; 2]);
    let (mb, xb) = (black_box(&m), black_box(&x));
    bench_start();
    mb.view().forward(xb, 0.0, &mut h0, &mut h1, out.as_flattened_mut());
    bench_end();
    black_box(&out);
    defmt::info!("bench {=str} macs {=usize}", view_name, macs);

    let mut out2 = [[0.0f32; OUT]; 2];
    let (mb, xb) = (black_box(&m), black_box(&x));
    bench_start();
    fixed_forward(mb, xb, &mut out2);
    bench_end();
    black_box(&out2);
    defmt::info!("bench {=str} macs {=usize}", fixed_name, macs);
    if out != out2 {
        defmt::error!("view and fixed-size loop disagree");
        exit_failure();
    }
}

/// Hand-written fixed-size dense forward pass (one extra hidden layer), indexed
/// loops over the arrays as one would write them by hand.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn fixed_forward<const IN: usize, const H: usize, const OUT: usize>(
    m: &Mlp<IN, H, 1, OUT, 2>,
    x: &[f32; IN],
    out: &mut [[f32; OUT]; 2],
) {
    let mut h0 = [0.0f32; H];
    for k in 0..H {
        let mut a = 0.0;
        for i in 0..IN {
            a += m.w_in[k][i] * x[i];
        }
        h0[k] = m.act.apply(m.b_in[k] + a);
    }
    let mut h1 = [0.0f32; H];
    for k in 0..H {
        let mut a = 0.0;
        for j in 0..H {
            a += m.w_hid[0][k][j] * h0[j];
        }
        h1[k] = m.act.apply(m.b_hid[0][k] + a);
    }
    for head in 0..2 {
        for o in 0..OUT {
            let mut a = 0.0;
            for k in 0..H {
                a += m.w_out[head][o][k] * h1[k];
            }
            out[head][o] = m.b_out[head][o] + a;
        }
    }
}

/// On-device adaptation of the bundled model (MACs column: the model's, per
/// `log_prob`): one commissioning update (`Adaptation::observe`: the
/// corrected forward pass, the input gradient, an Adam step), the first
/// tracking update after commissioning (the window scored, the held-back
/// ring of 8 scored before and after the step), the next one (the ring's
/// scores kept from the update before: scored after the step only), and one
/// score through the corrected model.
#[cfg(target_abi = "eabihf")]
#[inline(never)]
fn adaptation() {
    use flowmote::adapt::{AdaptConfig, Corrected};
    use flowmote_firmware::Adaptation;
    let Ok(mut g) = model::AdaptGradient::new(&model::MODEL) else {
        exit_failure();
    };
    let scorer = Corrected::new(&model::MODEL, model::MEAN, model::STD);
    let mut a: Adaptation<{ model::DIM }, { model::ADAPT_HELD }> =
        Adaptation::commissioning(AdaptConfig::DEFAULT, model::MEAN, model::STD, 9, true);
    let windows = &model::GOLDEN_ADAPT_WINDOWS;
    // Eight commissioning windows fill the held-back ring; the ninth is measured.
    for x in windows.iter().take(8) {
        a.observe(&mut g, &scorer, x, model::THRESHOLD);
    }
    // One measured update: window `k` through `observe`.
    let mut measure = |k: usize, name: &str| {
        let x = black_box(windows[k]);
        bench_start();
        let step = a.observe(black_box(&mut g), &scorer, &x, model::THRESHOLD);
        bench_end();
        black_box(step);
        defmt::info!("bench {=str} macs {=usize}", name, model::MACS);
    };
    measure(8, "adaptation: one commissioning update (bundled model)");
    measure(9, "adaptation: one tracking update, 8 held back (bundled model)");
    // The next one: the ring's scores under the current correction are
    // kept from the update before, so only the step's check scores it.
    measure(
        10,
        "adaptation: the next tracking update, ring scores kept (bundled model)",
    );
    count_log_prob(&scorer, &model::GOLDEN_INPUTS[0]);
    defmt::info!(
        "bench {=str} macs {=usize}",
        "adapted score: Corrected::log_prob (bundled model, golden input 0)",
        model::MACS
    );
}

/// On-device adaptation of a mixture: the committee fixture (12 MAF flows
/// on 2 features) through its `MixtureGradient`, one commissioning update
/// after eight (MACs column: the mixture's, per `log_prob`).
#[cfg(target_abi = "eabihf")]
#[inline(never)]
fn mixture_adaptation() {
    use flowmote::adapt::{AdaptConfig, Corrected};
    use flowmote_firmware::Adaptation;
    use flowmote_fixtures::committee as c;
    let Ok(mut g) = c::AdaptGradient::new(&c::MODEL) else {
        exit_failure();
    };
    let scorer = Corrected::new(&c::MODEL, c::MEAN, c::STD);
    let mut a: Adaptation<{ c::DIM }, { c::ADAPT_HELD }> =
        Adaptation::commissioning(AdaptConfig::DEFAULT, c::MEAN, c::STD, 9, true);
    for x in c::GOLDEN_ADAPT_WINDOWS.iter().take(8) {
        a.observe(&mut g, &scorer, x, c::THRESHOLD);
    }
    let x = black_box(c::GOLDEN_ADAPT_WINDOWS[8]);
    bench_start();
    let step = a.observe(black_box(&mut g), &scorer, &x, c::THRESHOLD);
    bench_end();
    black_box(step);
    defmt::info!(
        "bench {=str} macs {=usize}",
        "adaptation: one commissioning update (committee: mixture of 12 MAF flows, D=2)",
        c::MACS
    );
    bench_log_prob("committee: mixture of 12 MAF flows, D=2", c::MACS, &c::MODEL);
}

#[entry]
fn main() -> ! {
    // Baseline: the marker calls alone.
    bench_start();
    bench_end();
    defmt::info!("bench {=str} macs {=usize}", "empty (marker overhead)", 0usize);

    bundled_model();
    maf::<3, 16, 0>("MAF D=3 H=16 depth 1");
    maf::<8, 32, 0>("MAF D=8 H=32 depth 1");
    #[cfg(target_abi = "eabihf")]
    {
        maf::<8, 64, 1>("MAF D=8 H=64 depth 2");
        maf_stored::<8, 64, 1, F16>("MAF D=8 H=64 depth 2, f16 weights", Mlp::to_f16);
        maf_stored::<8, 64, 1, i8>("MAF D=8 H=64 depth 2, i8 weights + row scales", Mlp::to_i8);
    }
    mixture_of_mafs::<3, 16>("mixture of 2 × (MAF D=3 H=16 depth 1)");
    coupling::<4, 2, 2, 16>("coupling D=4 (2+2) H=16 depth 1");
    coupling::<8, 4, 4, 32>("coupling D=8 (4+4) H=32 depth 1");
    #[cfg(target_abi = "eabihf")]
    coupling::<16, 8, 8, 64>("coupling D=16 (8+8) H=64 depth 1");
    spline_coupling::<4, 2, 2, 16, 8, 23>("spline coupling D=4 (2+2) H=16 K=8 depth 1");
    #[cfg(target_abi = "eabihf")]
    spline_coupling::<8, 4, 4, 32, 8, 23>("spline coupling D=8 (4+4) H=32 K=8 depth 1");
    spline_ar::<3, 16, 8, 23>("autoregressive spline D=3 H=16 K=8 depth 1");
    #[cfg(target_abi = "eabihf")]
    spline_ar::<8, 32, 8, 23>("autoregressive spline D=8 H=32 K=8 depth 1");
    lu_linear::<3>("LU linear D=3");
    lu_linear::<9>("LU linear D=9");
    lu_linear::<30>("LU linear D=30");
    tri_linear::<9, 45>("triangular linear D=9");
    tri_linear::<30, 465>("triangular linear D=30");
    actnorm::<9>("ActNorm D=9 (standardise) and the base density");
    gaussian::<9, 45>("Gaussian D=9 (standardise + triangular)");
    #[cfg(target_abi = "eabihf")]
    {
        view_vs_fixed::<8, 64, 8>(
            Activation::Relu,
            "MLP 8-64-64-16 relu, core view",
            "MLP 8-64-64-16 relu, hand-written fixed-size loop",
        );
        view_vs_fixed::<8, 64, 8>(
            Activation::Tanh,
            "MLP 8-64-64-16 tanh, core view",
            "MLP 8-64-64-16 tanh, hand-written fixed-size loop",
        );
        view_stored::<8, 64, 8, _>(
            Activation::Tanh,
            "MLP 8-64-64-16 tanh, core view, f16 weights",
            Mlp::to_f16,
        );
        view_stored::<8, 64, 8, _>(
            Activation::Tanh,
            "MLP 8-64-64-16 tanh, core view, i8 weights + row scales",
            Mlp::to_i8,
        );
        view_stored::<8, 64, 8, _>(
            Activation::Relu,
            "MLP 8-64-64-16 relu, core view, f16 weights",
            Mlp::to_f16,
        );
        view_stored::<8, 64, 8, _>(
            Activation::Relu,
            "MLP 8-64-64-16 relu, core view, i8 weights + row scales",
            Mlp::to_i8,
        );
    }
    // Small enough for the Cortex-M0's 16 KiB: the activation's cost is the
    // difference of the two rows (64 hidden units).
    view_vs_fixed::<8, 32, 8>(
        Activation::Relu,
        "MLP 8-32-32-16 relu, core view",
        "MLP 8-32-32-16 relu, hand-written fixed-size loop",
    );
    view_vs_fixed::<8, 32, 8>(
        Activation::Tanh,
        "MLP 8-32-32-16 tanh, core view",
        "MLP 8-32-32-16 tanh, hand-written fixed-size loop",
    );
    // The compressed storages' extra cost per multiply-add on every core
    // (the target profiles' `extra_per_f16_mac` / `extra_per_i8_mac`): a
    // network small enough for the Cortex-M0's stack with both copies.
    view_vs_fixed::<8, 16, 8>(
        Activation::Relu,
        "MLP 8-16-16-16 relu, core view",
        "MLP 8-16-16-16 relu, hand-written fixed-size loop",
    );
    view_stored::<8, 16, 8, _>(
        Activation::Relu,
        "MLP 8-16-16-16 relu, core view, f16 weights",
        Mlp::to_f16,
    );
    view_stored::<8, 16, 8, _>(
        Activation::Relu,
        "MLP 8-16-16-16 relu, core view, i8 weights + row scales",
        Mlp::to_i8,
    );
    // Millions of soft-float instructions each: on the Cortex-M0 their trace
    // alone outgrows a disk (27 GB and counting), so they run on the M4F.
    #[cfg(target_abi = "eabihf")]
    {
        adaptation();
        mixture_adaptation();
    }
    defmt::info!("bench done");
    exit_success()
}
