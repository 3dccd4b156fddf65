//! The row-blocked passes (`flowmote::block`, `SliceBijector::forward_block`,
//! `SliceBackward::backward_block`) against the single-row code, bit for
//! bit: every layer kind with a blocked path (MAF, affine coupling, spline
//! coupling and autoregressive spline, with `f32` and `i8` weights, and
//! `Frozen` around them), every activation, depths 1–3, input widths not
//! multiples of four, and row counts that fill no, one or several blocks
//! (1–37 rows; `BLOCK` = 16). The backward
//! passes must add the gradients row after row as the single-row loop does,
//! so the parameter gradient (accumulated over the rows, starting from a
//! non-zero value) and every row's input gradient are compared bit for bit.

use flowmote::block::BLOCK;
use flowmote::maf::made_mask_params;
use flowmote::mlp::MlpRef;
use flowmote::{AffineCouplingRef, Frozen, MafRef, MlpShape, SliceBackward, SliceBijector};
use flowmote_host_tests::*;

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Row counts to try: partial blocks, one block, several blocks.
const ROWS: [usize; 7] = [1, 3, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK, 2 * BLOCK + 5];

/// `forward_block` against `forward_flat` on `n` random rows of dimension `d`.
fn check_forward(what: &str, l: &dyn SliceBijector, d: usize, seed: u64) {
    let mut r = rng(seed);
    for n in ROWS {
        // Wide inputs: the soft clamp and `exp` see large arguments too.
        let x = random_vec(&mut r, n * d, -4.0, 4.0);
        let mut want = x.clone();
        let mut want_ld = vec![0.0f32; n];
        let mut s = vec![0.0; l.scratch_len()];
        for (row, ld) in want.chunks_exact_mut(d).zip(&mut want_ld) {
            *ld = l.forward_flat(row, &mut s);
        }
        let mut got = x.clone();
        let mut got_ld = vec![f32::NAN; n];
        let mut s = vec![[f32::NAN; BLOCK]; l.block_scratch_len()];
        l.forward_block(&mut got, &mut got_ld, &mut s);
        assert_eq!(bits(&got), bits(&want), "{what}: forward_block rows, n = {n}");
        assert_eq!(bits(&got_ld), bits(&want_ld), "{what}: forward_block log-dets, n = {n}");
    }
}

/// `backward_block` against `backward_flat` called on the rows in order.
fn check_backward(what: &str, l: &dyn SliceBackward, d: usize, seed: u64) {
    let mut r = rng(seed);
    for n in ROWS {
        let x = random_vec(&mut r, n * d, -3.0, 3.0);
        let g0 = random_vec(&mut r, n * d, -2.0, 2.0);
        let g_ld = random_vec(&mut r, n, -1.5, 1.5);
        let grad0 = random_vec(&mut r, l.param_len(), -0.5, 0.5);
        let (mut want_g, mut want_grad) = (g0.clone(), grad0.clone());
        let mut s = vec![0.0; l.train_scratch_len()];
        for ((xr, gr), gl) in x.chunks_exact(d).zip(want_g.chunks_exact_mut(d)).zip(&g_ld) {
            l.backward_flat(xr, gr, *gl, &mut want_grad, &mut s);
        }
        let (mut got_g, mut got_grad) = (g0.clone(), grad0.clone());
        let mut s = vec![[f32::NAN; BLOCK]; l.block_train_scratch_len()];
        l.backward_block(&x, &mut got_g, &g_ld, &mut got_grad, &mut s);
        assert_eq!(
            bits(&got_g),
            bits(&want_g),
            "{what}: backward_block input gradient, n = {n}"
        );
        assert_eq!(
            bits(&got_grad),
            bits(&want_grad),
            "{what}: backward_block parameters, n = {n}"
        );
        if n > BLOCK {
            continue;
        }
        // The training pair: forward_block_saved, then backward_block_saved
        // from what it kept (one block).
        let mut y = x.clone();
        let mut ld = vec![0.0; n];
        let mut s = vec![[f32::NAN; BLOCK]; l.as_bijector().block_scratch_len()];
        let mut saved = vec![[f32::NAN; BLOCK]; l.block_saved_len()];
        l.forward_block_saved(&mut y, &mut ld, &mut s, &mut saved);
        let (mut want_y, mut want_ld) = (x.clone(), vec![0.0; n]);
        l.as_bijector().forward_block(&mut want_y, &mut want_ld, &mut s);
        assert_eq!(bits(&y), bits(&want_y), "{what}: forward_block_saved rows, n = {n}");
        assert_eq!(
            bits(&ld),
            bits(&want_ld),
            "{what}: forward_block_saved log-dets, n = {n}"
        );
        let (mut got_g, mut got_grad) = (g0.clone(), grad0.clone());
        let mut s = vec![[f32::NAN; BLOCK]; l.block_train_scratch_len()];
        l.backward_block_saved(&x, &mut got_g, &g_ld, &mut got_grad, &mut s, &saved);
        assert_eq!(
            bits(&got_g),
            bits(&want_g),
            "{what}: backward_block_saved input gradient, n = {n}"
        );
        assert_eq!(
            bits(&got_grad),
            bits(&want_grad),
            "{what}: backward_block_saved parameters, n = {n}"
        );
    }
}

/// Both copies of the blocked MLP passes (AVX2 where the CPU has it, and
/// the baseline): `f` once with each. The switch is process-wide, so a test
/// running beside this one may run either copy; both must be bit-identical.
fn with_both_widths(f: impl Fn()) {
    for wide in [true, false] {
        flowmote::block::set_wide_vectors(wide);
        f();
    }
    flowmote::block::set_wide_vectors(true);
}

/// `i8` rows and scales for an MLP's three matrices (rounded, per-row
/// scale = max|w| / 127).
fn quantise(net: &MlpRef<'_>) -> (Vec<i8>, Vec<f32>) {
    let s = net.shape;
    let mut q = Vec::new();
    let mut scales = Vec::new();
    for (w, n) in [(net.w_in, s.input), (net.w_hid, s.hidden), (net.w_out, s.hidden)] {
        for row in w.chunks_exact(n) {
            let mut qr = vec![0i8; n];
            scales.push(flowmote::weights::quantize_row_i8(row, &mut qr));
            q.extend(qr);
        }
    }
    (q, scales)
}

/// The same network with `i8` weights.
fn net_i8<'a>(net: &MlpRef<'a>, q: &'a [i8], sc: &'a [f32]) -> MlpRef<'a, i8> {
    let s = net.shape;
    let (w_in, rest) = q.split_at(net.w_in.len());
    let (w_hid, w_out) = rest.split_at(net.w_hid.len());
    let (s_in, rest) = sc.split_at(s.hidden);
    let (s_hid, s_out) = rest.split_at(s.hidden * (s.depth - 1));
    let v = MlpRef::<i8> {
        shape: s,
        act: net.act,
        w_in,
        w_cond: net.w_cond,
        b_in: net.b_in,
        w_hid,
        b_hid: net.b_hid,
        w_out,
        b_out: net.b_out,
        s_in,
        s_hid,
        s_out,
    };
    assert!(v.is_consistent());
    v
}

#[test]
fn maf_blocked_is_single_row_bit_for_bit() {
    with_both_widths(|| {
        let mut seed = 10;
        for act in ACTIVATIONS {
            for (d, hidden, depth) in [(9, 16, 2), (5, 7, 1), (2, 12, 3), (13, 33, 2)] {
                let shape = MlpShape {
                    input: d,
                    cond: 0,
                    hidden,
                    depth,
                    output: 2 * d,
                };
                let mut p = random_params(&mut rng(seed), shape, 0.8);
                made_mask_params(shape, &mut p).unwrap();
                let net = MlpRef::from_flat(shape, act, &p).unwrap();
                let maf = MafRef { clamp: 3.0, net };
                let what = format!("maf d {d} h {hidden} depth {depth} {act:?}");
                check_forward(&what, &maf, d, seed + 1);
                check_backward(&what, &maf, d, seed + 2);
                check_forward(&format!("frozen {what}"), &Frozen(maf), d, seed + 3);
                check_backward(&format!("frozen {what}"), &Frozen(maf), d, seed + 4);
                let (q, sc) = quantise(&net);
                let maf8 = MafRef {
                    clamp: 3.0,
                    net: net_i8(&net, &q, &sc),
                };
                check_forward(&format!("i8 {what}"), &maf8, d, seed + 5);
                seed += 10;
            }
        }
    });
}

#[test]
fn coupling_blocked_is_single_row_bit_for_bit() {
    with_both_widths(|| {
        let mut seed = 1000;
        for act in ACTIVATIONS {
            for (a, b, hidden, depth) in [(4, 5, 16, 2), (1, 1, 5, 1), (3, 8, 9, 3), (15, 15, 64, 2)] {
                let shape = MlpShape {
                    input: a,
                    cond: 0,
                    hidden,
                    depth,
                    output: 2 * b,
                };
                let p = random_params(&mut rng(seed), shape, 0.8);
                let net = MlpRef::from_flat(shape, act, &p).unwrap();
                let c = AffineCouplingRef { a, b, clamp: 2.5, net };
                let what = format!("coupling {a}+{b} h {hidden} depth {depth} {act:?}");
                check_forward(&what, &c, a + b, seed + 1);
                check_backward(&what, &c, a + b, seed + 2);
                let (q, sc) = quantise(&net);
                let c8 = AffineCouplingRef {
                    a,
                    b,
                    clamp: 2.5,
                    net: net_i8(&net, &q, &sc),
                };
                check_forward(&format!("i8 {what}"), &c8, a + b, seed + 3);
                seed += 10;
            }
        }
    });
}

#[test]
fn spline_layers_blocked_are_single_row_bit_for_bit() {
    use flowmote::spline::{made_mask_heads, spline_params, SplineAutoregressiveRef, SplineCouplingRef};
    with_both_widths(|| {
        let mut seed = 2000;
        for act in ACTIVATIONS {
            // 20 bins: more than the blocked pass caches exponentials for
            // (it computes them as the single-row pass does).
            for (a, b, hidden, depth, bins) in [
                (4, 5, 16, 2, 8),
                (1, 1, 5, 1, 1),
                (3, 8, 9, 3, 4),
                (7, 6, 24, 2, 8),
                (2, 3, 6, 1, 20),
            ] {
                // Coupling: `a` inputs condition the splines of `b`.
                let p_n = spline_params(bins);
                let shape = MlpShape {
                    input: a,
                    cond: 0,
                    hidden,
                    depth,
                    output: b * p_n,
                };
                // Wide parameters: bins of very different widths, steep knots.
                let p = random_params(&mut rng(seed), shape, 1.5);
                let net = MlpRef::from_flat(shape, act, &p).unwrap();
                let c = SplineCouplingRef::new(a, b, bins, 3.0, net).unwrap();
                let what = format!("spline coupling {a}+{b} h {hidden} depth {depth} K {bins} {act:?}");
                check_forward(&what, &c, a + b, seed + 1);
                check_backward(&what, &c, a + b, seed + 2);
                check_backward(&format!("frozen {what}"), &Frozen(c), a + b, seed + 3);
                let (q, sc) = quantise(&net);
                let c8 = SplineCouplingRef::new(a, b, bins, 3.0, net_i8(&net, &q, &sc)).unwrap();
                check_forward(&format!("i8 {what}"), &c8, a + b, seed + 4);
                // Autoregressive on all `a + b` coordinates.
                let d = a + b;
                let shape = MlpShape {
                    input: d,
                    cond: 0,
                    hidden,
                    depth,
                    output: d * p_n,
                };
                let mut p = random_params(&mut rng(seed + 5), shape, 1.5);
                made_mask_heads(shape, p_n, &mut p).unwrap();
                let net = MlpRef::from_flat(shape, act, &p).unwrap();
                let ar = SplineAutoregressiveRef::new(bins, 3.0, net).unwrap();
                let what = format!("spline AR d {d} h {hidden} depth {depth} K {bins} {act:?}");
                check_forward(&what, &ar, d, seed + 6);
                check_backward(&what, &ar, d, seed + 7);
                let (q, sc) = quantise(&net);
                let ar8 = SplineAutoregressiveRef::new(bins, 3.0, net_i8(&net, &q, &sc)).unwrap();
                check_forward(&format!("i8 {what}"), &ar8, d, seed + 8);
                seed += 10;
            }
        }
    });
}

/// Layers without a blocked path of their own use the default (the
/// single-row loop): still the same numbers.
#[test]
fn default_block_passes_are_the_single_row_loop() {
    let perm = [2usize, 0, 3, 1];
    let p = flowmote::PermutationRef { perm: &perm };
    check_forward("permutation", &p, 4, 7);
    check_backward("permutation", &p, 4, 8);
    let (ls, sh) = (
        random_vec(&mut rng(9), 4, -1.0, 1.0),
        random_vec(&mut rng(10), 4, -1.0, 1.0),
    );
    let an = flowmote::ActNormRef::new(&ls, &sh);
    check_forward("actnorm", &an, 4, 11);
    check_backward("actnorm", &an, 4, 12);
}

/// The tool's blocked scoring and training passes (`FlowView::log_prob_block`
/// through `DynFlow::log_probs`, `FlowView::nll_backward_block`) against
/// `log_prob` and `nll_backward(_weighted)` row by row, for every flow
/// family the trainer builds, with rows that cannot be scored mixed in.
#[test]
fn tool_blocked_scoring_and_gradients_are_the_single_row_ones() {
    use flowmote_tools::model::{Act, Net, Workspace};
    use flowmote_tools::train::{self, FlowKind, TrainConfig};
    use rand_core::SeedableRng;
    let d = 5;
    for (ki, kind) in [FlowKind::Maf, FlowKind::Coupling, FlowKind::Nsf, FlowKind::NsfAr]
        .into_iter()
        .enumerate()
    {
        let mut r = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(40 + ki as u64);
        let mean: Vec<f32> = (0..d).map(|i| 0.3 * i as f32 - 0.2).collect();
        let std: Vec<f32> = (0..d).map(|i| 0.7 + 0.2 * i as f32).collect();
        let cfg = TrainConfig {
            init_scale: 1.0,
            folds: Some(1),
            ..TrainConfig::default()
        };
        let net = Net {
            hidden: 10,
            depth: 2,
            act: Act::Tanh,
        };
        let flow = train::build_flow(kind, &mean, &std, 3, net, &cfg, &mut r).unwrap();
        let mut rows: Vec<Vec<f32>> = (0..37).map(|i| random_vec(&mut rng(500 + i), d, -3.0, 3.0)).collect();
        rows[5][2] = f32::NAN;
        rows[11][0] = 1e30;
        rows[20] = vec![1e6; d];
        let view = flow.view().unwrap();
        let mut ws = Workspace::new(&flow);
        let single: Vec<_> = rows.iter().map(|x| view.log_prob(x, &mut ws)).collect();
        let blocked = flow.log_probs(&rows);
        for (i, (a, b)) in single.iter().zip(&blocked).enumerate() {
            match (a, b) {
                (Ok(a), Ok(b)) => assert_eq!(a.to_bits(), b.to_bits(), "{kind:?} row {i}: {a} vs {b}"),
                (a, b) => assert_eq!(a, b, "{kind:?} row {i}"),
            }
        }
        // Gradients: rows in blocks, some of them weighted.
        let weight = |i: usize, nll: f32| (i % 3 == 1).then_some(1.0 + 0.1 * (nll - 2.0));
        let zero = || -> Vec<Vec<f32>> { flow.layers.iter().map(|l| vec![0.0; l.params().len()]).collect() };
        let (mut want, mut got) = (zero(), zero());
        let mut want_nll = Vec::new();
        for (i, x) in rows.iter().enumerate() {
            want_nll.push(if i % 3 == 1 {
                view.nll_backward_weighted(x, &mut want, &mut ws, |nll| weight(i, nll).unwrap())
            } else {
                view.nll_backward(x, &mut want, &mut ws)
            });
        }
        let mut got_nll = Vec::new();
        for (bi, blk) in rows.chunks(BLOCK).enumerate() {
            let mut nll = [Ok(0.0f32); BLOCK];
            let w = |r: usize, nll: f32| weight(bi * BLOCK + r, nll);
            view.nll_backward_block(blk, &w, &mut got, &mut ws, &mut nll);
            got_nll.extend_from_slice(&nll[..blk.len()]);
        }
        for (i, (a, b)) in want_nll.iter().zip(&got_nll).enumerate() {
            match (a, b) {
                (Ok(a), Ok(b)) => assert_eq!(a.to_bits(), b.to_bits(), "{kind:?} nll row {i}"),
                (a, b) => assert_eq!(a.is_ok(), b.is_ok(), "{kind:?} nll row {i}"),
            }
        }
        assert!(
            want_nll.iter().filter(|r| r.is_err()).count() >= 2,
            "{kind:?}: bad rows were skipped"
        );
        for (li, (a, b)) in want.iter().zip(&got).enumerate() {
            assert_eq!(bits(a), bits(b), "{kind:?} layer {li} gradient");
        }
    }
}

/// The LU layer's own blocked passes (lanes across rows) against its
/// single-row passes, bit for bit: small layers (whose single-row forward
/// sums with plain loops), larger ones (four terms per step), negative
/// signs, a shuffled permutation, and diagonals past the clamp.
#[test]
fn lu_linear_blocked_is_single_row_bit_for_bit() {
    for (d, seed) in [(1, 3000), (3, 3010), (9, 3020), (10, 3030), (37, 3040)] {
        let mut r = rng(seed);
        let mut p = random_vec(&mut r, d * d + d, -0.6, 0.6);
        if d > 1 {
            p[d + 1] = 25.0; // log_s past LOG_SCALE_LIMIT: clamped, gradient 0
        }
        let sign: Vec<f32> = (0..d).map(|i| if i % 3 == 1 { -1.0 } else { 1.0 }).collect();
        let perm: Vec<usize> = (0..d).map(|i| (i * 7 + 3) % d).collect();
        let perm = if flowmote::permutation::is_permutation(&perm) {
            perm
        } else {
            (0..d).rev().collect()
        };
        let lu = flowmote::LuLinearRef::from_flat(&perm, &sign, &p).unwrap();
        let what = format!("lu linear d {d}");
        check_forward(&what, &lu, d, seed + 1);
        check_backward(&what, &lu, d, seed + 2);
        check_backward(&format!("frozen {what}"), &Frozen(lu), d, seed + 3);
    }
}
