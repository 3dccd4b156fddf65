//! Compressed weights: the core's `f16` conversions against an independent
//! reference (the `half` crate) over every bit pattern, `i8` row
//! quantisation error bounds, compressing a host model, its bytes and its
//! model file.

use flowmote::maf::made_mask_params;
use flowmote::weights::{f16_to_f32, f32_to_f16, quantize_row_i8};
use flowmote::{Activation, Bijector, Flow, Maf, Mlp, MlpShape};
use flowmote_host_tests::{random_params, rng, uniform};
use flowmote_tools::model::{
    Act, DynFlow, DynMixture, Layer, ModelFile, Net, Provenance, Storage, Weights, FORMAT, VERSION,
    VERSION_WITH_WEIGHTS,
};
use flowmote_tools::train::standardize_layer;
use half::f16;

/// Every one of the 65 536 `f16` bit patterns widens exactly as `half`
/// does: the same bits for every number and infinity, NaN for NaN with the
/// same sign and payload (the core keeps a signalling NaN's bits).
#[test]
fn f16_to_f32_matches_reference_on_every_pattern() {
    for h in 0..=u16::MAX {
        let got = f16_to_f32(h);
        let want = f16::from_bits(h).to_f32();
        if want.is_nan() {
            assert!(got.is_nan(), "{h:#06x}");
            assert_eq!(got.to_bits() >> 31, want.to_bits() >> 31, "{h:#06x} sign");
            assert_eq!(
                got.to_bits() & 0x003f_ffff,
                want.to_bits() & 0x003f_ffff,
                "{h:#06x} payload"
            );
        } else {
            assert_eq!(got.to_bits(), want.to_bits(), "{h:#06x}");
        }
    }
}

/// `f32 → f16` (round to nearest even) matches `half` on every `f16` value,
/// every midpoint between neighbours (the ties), their neighbouring `f32`s
/// and a million random `f32` bit patterns.
#[test]
fn f32_to_f16_matches_reference() {
    let check = |x: f32| {
        let want = f16::from_f32(x).to_bits();
        let got = f32_to_f16(x);
        if x.is_nan() {
            assert!(got & 0x7c00 == 0x7c00 && got & 0x03ff != 0, "{x:e}");
        } else {
            assert_eq!(got, want, "{x:e} ({:#010x})", x.to_bits());
        }
    };
    for h in 0..0x7c00u16 {
        for sign in [0u16, 0x8000] {
            let a = f16::from_bits(h | sign).to_f32() as f64;
            let b = f16::from_bits((h + 1) | sign).to_f32() as f64;
            let mid = ((a + b) / 2.0) as f32; // exact: a, b are f16
            for x in [a as f32, mid] {
                check(x);
                check(f32::from_bits(x.to_bits() + 1));
                check(f32::from_bits(x.to_bits().wrapping_sub(1)));
            }
        }
    }
    let mut r = rng(16);
    for _ in 0..1_000_000 {
        check(f32::from_bits(rand_core::Rng::next_u32(&mut r)));
    }
    for x in [
        0.0f32,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        65504.0,
        65519.99,
        65520.0,
        1e-8,
        6e-8,
    ] {
        check(x);
    }
}

/// `quantize_row_i8`: the largest weight maps to ±127, every weight is
/// within half a step (and a rounding) of `q·scale`, zeros stay zeros.
#[test]
fn i8_rows_round_trip_within_half_a_step() {
    let mut r = rng(8);
    for n in [1usize, 2, 7, 64, 300] {
        for scale_in in [1e-6f32, 0.05, 1.0, 300.0] {
            let mut row: Vec<f32> = (0..n).map(|_| uniform(&mut r, -scale_in, scale_in)).collect();
            if n > 2 {
                row[1] = 0.0;
            }
            let mut q = vec![0i8; n];
            let s = quantize_row_i8(&row, &mut q);
            let max = row.iter().fold(0.0f32, |m, w| m.max(w.abs()));
            assert_eq!(s, max / 127.0);
            assert!(q.iter().any(|v| v.unsigned_abs() == 127));
            assert!(q.iter().all(|v| *v != -128));
            for (w, v) in row.iter().zip(&q) {
                let err = (*w as f64 - *v as f64 * s as f64).abs();
                assert!(err <= 0.5 * s as f64 * (1.0 + 1e-5), "{w} → {v}·{s}: {err}");
                if *w == 0.0 {
                    assert_eq!(*v, 0);
                }
            }
        }
    }
    let mut q = [5i8; 3];
    assert_eq!(quantize_row_i8(&[0.0; 3], &mut q), 0.0);
    assert_eq!(q, [0; 3]);
}

fn maf_layer(r: &mut flowmote_host_tests::Xoshiro128PlusPlus, d: usize, hidden: usize, depth: usize) -> Layer {
    let shape = MlpShape {
        input: d,
        cond: 0,
        hidden,
        depth,
        output: 2 * d,
    };
    let mut params = random_params(r, shape, 0.5);
    made_mask_params(shape, &mut params).unwrap();
    Layer::Maf {
        net: Net {
            hidden,
            depth,
            act: Act::Tanh,
        },
        clamp: 3.0,
        params,
    }
}

fn flow() -> DynFlow {
    let mut r = rng(77);
    let (mean, std) = ([0.5f32, -1.0, 2.0], [1.5f32, 0.5, 2.0]);
    DynFlow::new(
        3,
        vec![
            standardize_layer(&mean, &std),
            maf_layer(&mut r, 3, 8, 2),
            Layer::Reverse,
            maf_layer(&mut r, 3, 6, 1),
        ],
    )
}

/// Compressing a flow: the bytes it reports, masks kept, scores close to the
/// f32 flow, and the compressed host flow scores exactly as the core's
/// const-generic layer built from the same `f32` weights by `Mlp::to_i8` /
/// `Mlp::to_f16` (one definition of the compression).
#[test]
fn compressed_flows_bytes_masks_and_scores() {
    let f = flow();
    // Matrices: 8·3 + 8·8 + 6·8 = 136 and 6·3 + 6·6 = 54 weights; rows 8+8+6
    // and 6+6; biases 8 + 8 + 6 and 6 + 6; ActNorm 6 floats.
    let (w, rows, other) = (136 + 54, 22 + 12, 22 + 12 + 6);
    assert_eq!(f.weight_bytes(), 4 * (w + other));
    let h = f.compressed(Storage::F16).unwrap();
    assert_eq!(h.weight_bytes(), 2 * w + 4 * other);
    let q = f.compressed(Storage::I8).unwrap();
    assert_eq!(q.weight_bytes(), w + 4 * rows + 4 * other);
    assert!(q.compressed(Storage::F16).is_err(), "compressing twice is refused");
    assert_eq!(q.compressed(Storage::I8).unwrap(), q);
    for g in [&h, &q] {
        let Layer::Maf { params, .. } = &g.layers[1] else {
            unreachable!()
        };
        let view = flowmote::MlpRef::from_flat(g.layers[1].mlp_shape(3).unwrap(), Activation::Tanh, params).unwrap();
        assert!(flowmote::maf::is_made_masked(&view, 2));
    }
    let (mut wf, mut wh, mut wq) = (
        flowmote_tools::model::Workspace::new(&f),
        flowmote_tools::model::Workspace::new(&h),
        flowmote_tools::model::Workspace::new(&q),
    );
    let mut r = rng(3);
    for _ in 0..200 {
        let x: Vec<f32> = (0..3).map(|_| uniform(&mut r, -3.0, 3.0)).collect();
        let a = f.log_prob(&x, &mut wf).unwrap();
        let b = h.log_prob(&x, &mut wh).unwrap();
        let c = q.log_prob(&x, &mut wq).unwrap();
        assert!((a - b).abs() < 2e-2 * a.abs().max(1.0), "f16 {a} vs {b}");
        assert!((a - c).abs() < 2e-1 * a.abs().max(1.0), "i8 {a} vs {c}");
    }

    // One MAF layer: host compression == the core's `Mlp::to_i8`/`to_f16`.
    let one = DynFlow::new(3, vec![flow().layers[3].clone()]);
    let Layer::Maf { params, .. } = &one.layers[0] else {
        unreachable!()
    };
    let mut mlp = Mlp::<3, 6, 0, 3, 2>::zeroed(Activation::Tanh);
    let sh = Mlp::<3, 6, 0, 3, 2>::shape();
    let v = flowmote::MlpRef::from_flat(sh, Activation::Tanh, params).unwrap();
    mlp.w_in.as_flattened_mut().copy_from_slice(v.w_in);
    mlp.b_in.copy_from_slice(v.b_in);
    mlp.w_out.as_flattened_mut().as_flattened_mut().copy_from_slice(v.w_out);
    mlp.b_out.as_flattened_mut().copy_from_slice(v.b_out);
    let core_i8 = Flow::<3, _>::new((Maf::<3, 6, 0, i8> {
        clamp: 3.0,
        net: mlp.to_i8(),
    },));
    let core_f16 = Flow::<3, _>::new((Maf::<3, 6, 0, u16> {
        clamp: 3.0,
        net: mlp.to_f16(),
    },));
    let (oq, oh) = (
        one.compressed(Storage::I8).unwrap(),
        one.compressed(Storage::F16).unwrap(),
    );
    let (mut w1, mut w2) = (
        flowmote_tools::model::Workspace::new(&oq),
        flowmote_tools::model::Workspace::new(&oh),
    );
    for _ in 0..200 {
        let x: [f32; 3] = core::array::from_fn(|_| uniform(&mut r, -3.0, 3.0));
        assert_eq!(
            oq.log_prob(&x, &mut w1).unwrap().to_bits(),
            core_i8.log_prob(&x).unwrap().to_bits()
        );
        assert_eq!(
            oh.log_prob(&x, &mut w2).unwrap().to_bits(),
            core_f16.log_prob(&x).unwrap().to_bits()
        );
        let mut y = x;
        let mut z = x.to_vec();
        let ld = core_i8.layers.0.forward(&mut y).unwrap();
        let ld_host = oq.forward(&mut z, &mut w1, false).unwrap();
        assert_eq!(ld.to_bits(), ld_host.to_bits());
    }
    // A compressed flow is evaluated, not trained.
    let mut grads = vec![vec![0.0; one.layers[0].params().len()]];
    assert!(oq.nll_backward(&[0.1, 0.2, 0.3], &mut grads, &mut w1).is_err());
}

fn model_file(flow: DynFlow) -> ModelFile {
    ModelFile {
        format: FORMAT.into(),
        version: VERSION,
        tool_version: "0.1.0".into(),
        kind: "maf".into(),
        features: vec!["a".into(), "b".into(), "c".into()],
        features_pipeline: None,
        mean: vec![0.5, -1.0, 2.0],
        std: vec![1.5, 0.5, 2.0],
        model: DynMixture::single(flow),
        threshold: None,
        provenance: Provenance {
            val_nll: 1.0,
            ..Provenance::default()
        },
    }
}

/// The model file records the storage (format version 4, only then); `f32`
/// files are unchanged (no `weights` key, version 2) and older files load.
#[test]
fn model_files_record_the_storage() {
    let dir = std::env::temp_dir().join(format!("flowmote-weights-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plain = model_file(flow());
    let p = dir.join("f32.json");
    plain.save(&p).unwrap();
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(!text.contains("\"weights\""));
    assert_eq!(ModelFile::load(&p).unwrap(), plain);
    for s in [Storage::F16, Storage::I8] {
        let mut m = plain.clone();
        m.compress(s).unwrap();
        assert_eq!(m.version, VERSION_WITH_WEIGHTS);
        let p = dir.join(format!("{}.json", s.name()));
        m.save(&p).unwrap();
        let back = ModelFile::load(&p).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.model.storage(), s);
        // A compressed model written with an older version number is refused.
        let mut wrong = m.clone();
        wrong.version = VERSION;
        assert!(wrong.validate().is_err());
    }
    // An f32 model claiming version 4 is refused too.
    let mut wrong = plain.clone();
    wrong.version = VERSION_WITH_WEIGHTS;
    assert!(wrong.validate().is_err());
    // i8 data that does not fit the layer is refused.
    let mut m = plain.clone();
    m.compress(Storage::I8).unwrap();
    if let Weights::I8 { layers } = &mut m.model.flows[0].weights {
        layers[1].as_mut().unwrap().scales.pop();
    }
    assert!(m.validate().is_err());
    // f16 storage with a weight that is not an f16 value is refused.
    let mut m = plain.clone();
    m.compress(Storage::F16).unwrap();
    if let Layer::Maf { params, .. } = &mut m.model.flows[0].layers[1] {
        params[0] = 0.1;
    }
    assert!(m.validate().is_err());
    std::fs::remove_dir_all(&dir).ok();
}
