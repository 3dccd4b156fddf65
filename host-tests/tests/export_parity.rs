//! `flowmote export` parity: models built here (random weights, a frozen
//! standardisation first) are exported by the library function into
//! `fixtures/src/*.rs` (the `flowmote-fixtures` crate, which the firmware
//! images read too), checked into git and compiled into this test. The tests check that
//! * the checked-in files are exactly what the exporter writes today (same
//!   model ⇒ same bytes; regenerate with `FLOWMOTE_BLESS=1 cargo test -p
//!   flowmote-host-tests --test export_parity`);
//! * the compiled const-generic `MODEL` scores and samples like the host's
//!   `DynFlow` (`log_prob` within 1e-6 relative on many rows, `sample` with
//!   `GOLDEN_SEED` equal to `GOLDEN_SAMPLES`), and the golden vectors hold;
//! * the files are rustfmt-clean, their floats round-trip, they compile in a
//!   `#![no_std]` crate with warnings (and clippy's) denied.

use flowmote::maf::made_mask_params;
use flowmote::MlpShape;
use flowmote_host_tests::{flat_params, random_params, rng, uniform, SeedableRng, Xoshiro128PlusPlus};
use flowmote_tools::export::{self, f32_lit, ExportOptions};
use flowmote_tools::model::{
    Act, DynFlow, DynMixture, Epoch, Layer, ModelFile, Net, Provenance, Threshold, FORMAT, VERSION,
};
use flowmote_tools::train::standardize_layer;
use std::path::{Path, PathBuf};

use flowmote_fixtures::{
    committee as committee_model, coupling as coupling_model, extended as extended_model,
    gaussians as gaussians_fixture, maf as maf_model, quant_f16 as f16_model, quant_i8 as i8_model,
};
use flowmote_tools::model::Storage;

/// Relative tolerance of the parity checks (with an absolute floor of 1e-6
/// below |value| = 1, as the firmware's golden checks).
const RTOL: f64 = 1e-6;

/// Where the exported files live: the fixtures crate, which the firmware
/// images read too (`fixtures/src/`).
fn generated_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/src")
}

fn net(hidden: usize, depth: usize, act: Act) -> Net {
    Net { hidden, depth, act }
}

fn maf(r: &mut Xoshiro128PlusPlus, d: usize, n: Net) -> Layer {
    let shape = MlpShape {
        input: d,
        cond: 0,
        hidden: n.hidden,
        depth: n.depth,
        output: 2 * d,
    };
    let mut params = random_params(r, shape, 0.5);
    made_mask_params(shape, &mut params).unwrap();
    Layer::Maf {
        net: n,
        clamp: 3.0,
        params,
    }
}

fn coupling(r: &mut Xoshiro128PlusPlus, a: usize, b: usize, n: Net) -> Layer {
    let shape = MlpShape {
        input: a,
        cond: 0,
        hidden: n.hidden,
        depth: n.depth,
        output: 2 * b,
    };
    Layer::AffineCoupling {
        a,
        b,
        net: n,
        clamp: 2.5,
        params: random_params(r, shape, 0.5),
    }
}

fn model_file(kind: &str, features: &[&str], mean: Vec<f32>, std: Vec<f32>, layers: Vec<Layer>) -> ModelFile {
    let dim = mean.len();
    ModelFile {
        format: FORMAT.into(),
        version: VERSION,
        tool_version: "0.1.0".into(),
        kind: kind.into(),
        features: features.iter().map(|s| s.to_string()).collect(),
        features_pipeline: None,
        mean,
        std,
        model: DynMixture::single(DynFlow::new(dim, layers)),
        threshold: None,
        provenance: Provenance {
            data_file: format!("/somewhere/{kind}.train.csv"),
            data_sha256: "0".repeat(64),
            train_rows: 900,
            val_rows: 100,
            val_nll: 4.25,
            settings: Default::default(),
            history: vec![Epoch {
                epoch: 1,
                train_nll: 4.5,
                val_nll: 4.25,
                lr: 1e-3,
            }],
        },
    }
}

/// 3-D MAF, 17 layers (nested tuples in the export), mixed depths and
/// activations, calibrated threshold.
fn maf_model() -> ModelFile {
    let mut r = rng(101);
    let (mean, std) = (vec![12.0, -35.0, 981.0], vec![140.0, 95.0, 0.5]);
    let mut layers = vec![standardize_layer(&mean, &std)];
    let acts = [Act::Tanh, Act::Relu, Act::LeakyRelu, Act::Elu];
    for i in 0..8 {
        layers.push(maf(&mut r, 3, net(6, 1 + i % 2, acts[i % 4])));
        layers.push(if i % 3 == 2 {
            Layer::Permutation { perm: vec![2, 0, 1] }
        } else {
            Layer::Reverse
        });
    }
    let mut m = model_file("maf", &["ax", "ay", "az"], mean, std, layers);
    m.threshold = Some(Threshold {
        score: 21.5,
        false_alarm_rate: 0.01,
        rows: 100,
        data_sha256: "1".repeat(64),
    });
    m
}

/// 4-D couplings with a trainable ActNorm, a permutation and an LU layer;
/// uncalibrated.
fn coupling_model() -> ModelFile {
    let mut r = rng(202);
    let (mean, std) = (vec![0.5, -1.25, 3.0, 1e-3], vec![2.0, 0.25, 1.5, 1e-4]);
    let d = 4;
    let lu: Vec<f32> = (0..d * d + d).map(|_| uniform(&mut r, -0.4, 0.4)).collect();
    let layers = vec![
        standardize_layer(&mean, &std),
        coupling(&mut r, 2, 2, net(8, 1, Act::Tanh)),
        Layer::Reverse,
        coupling(&mut r, 1, 3, net(5, 2, Act::LeakyRelu)),
        Layer::ActNorm {
            log_scale: (0..d).map(|_| uniform(&mut r, -0.3, 0.3)).collect(),
            shift: (0..d).map(|_| uniform(&mut r, -0.3, 0.3)).collect(),
            frozen: false,
        },
        Layer::Permutation { perm: vec![1, 3, 0, 2] },
        Layer::LuLinear {
            perm: vec![2, 0, 3, 1],
            sign: vec![1.0, -1.0, 1.0, 1.0],
            params: lu,
        },
        coupling(&mut r, 3, 1, net(4, 1, Act::Elu)),
    ];
    model_file("coupling", &["temp \"C\"", "hum", "p\\x", "lux"], mean, std, layers)
}

/// A mixture (as `flowmote train` keeps when stacking wins) of two 3-D
/// flows: (1) a whitening LU layer (as `flowmote train` starts every default
/// model), spline coupling, autoregressive spline and continuous flow; (2) the
/// triangular whitening layer (as a student on a tight budget starts) and a
/// small MAF. Weights 0.7 and 0.3.
fn extended_model() -> ModelFile {
    let mut r = rng(303);
    let (mean, std) = (vec![1.0, 2.0, -3.0], vec![0.8, 1.7, 2.5]);
    let shape = |input, cond, n: Net, output| MlpShape {
        input,
        cond,
        hidden: n.hidden,
        depth: n.depth,
        output,
    };
    let (n1, n2, n3) = (net(6, 1, Act::Tanh), net(5, 2, Act::Elu), net(4, 1, Act::Tanh));
    let (k1, k2) = (4usize, 3usize);
    let mut ar = random_params(&mut r, shape(3, 0, n2, 3 * (3 * k2 - 1)), 0.4);
    flowmote::spline::made_mask_heads(shape(3, 0, n2, 3 * (3 * k2 - 1)), 3 * k2 - 1, &mut ar).unwrap();
    // Correlated rows for the trainer's whitening layer.
    let rows: Vec<Vec<f32>> = (0..40)
        .map(|_| {
            let (u, v, w) = (
                uniform(&mut r, -1.0, 1.0),
                uniform(&mut r, -1.0, 1.0),
                uniform(&mut r, -1.0, 1.0),
            );
            vec![
                1.0 + 0.8 * u,
                2.0 + 1.7 * (0.6 * u + 0.4 * v),
                -3.0 + 2.5 * (v - 0.7 * w),
            ]
        })
        .collect();
    let layers = vec![
        standardize_layer(&mean, &std),
        flowmote_tools::train::whitening_layer(&rows, &mean, &std, 1e-3).unwrap(),
        Layer::SplineCoupling {
            a: 1,
            b: 2,
            bins: k1,
            tail_bound: 3.0,
            net: n1,
            params: random_params(&mut r, shape(1, 0, n1, 2 * (3 * k1 - 1)), 0.4),
        },
        Layer::Reverse,
        Layer::SplineAutoregressive {
            bins: k2,
            tail_bound: 4.0,
            net: n2,
            params: ar,
        },
        Layer::Cnf {
            net: n3,
            solver: flowmote_tools::model::SolverKind::Rk4,
            steps: 6,
            params: random_params(&mut r, shape(3, 1, n3, 3), 0.4),
        },
    ];
    let second = vec![
        standardize_layer(&mean, &std),
        flowmote_tools::train::triangular_whitening_layer(&rows, &mean, &std, 1e-3).unwrap(),
        maf(&mut r, 3, net(5, 1, Act::Tanh)),
        Layer::Permutation { perm: vec![1, 2, 0] },
        maf(&mut r, 3, net(4, 1, Act::Tanh)),
    ];
    let mut m = model_file("mixture", &["a", "b", "c"], mean, std, layers);
    m.model = DynMixture {
        log_weights: vec![0.7f32.ln(), 0.3f32.ln()],
        flows: vec![m.model.flows.remove(0), DynFlow::new(3, second)],
    };
    m
}

/// A mixture of 12 small 2-D MAF flows with unequal weights: more members
/// than a hand-written mixture would have, as `flowmote train --folds`
/// makes (5 folds × up to 6 candidates).
fn committee_model() -> ModelFile {
    let mut r = rng(404);
    let (mean, std) = (vec![-4.0, 250.0], vec![0.5, 40.0]);
    let flows: Vec<DynFlow> = (0..12)
        .map(|k| DynFlow {
            weights: Default::default(),
            dim: 2,
            layers: vec![
                standardize_layer(&mean, &std),
                maf(&mut r, 2, net(3 + k % 3, 1, Act::Tanh)),
                Layer::Reverse,
                maf(&mut r, 2, net(3, 1, Act::Elu)),
            ],
        })
        .collect();
    let raw: Vec<f64> = (1..=12).map(|k| k as f64).collect();
    let total: f64 = raw.iter().sum();
    let mut m = model_file("mixture", &["t", "p"], mean, std, flows[0].layers.clone());
    m.model = DynMixture {
        log_weights: raw.iter().map(|w| (w / total).ln() as f32).collect(),
        flows,
    };
    m
}

/// A student with Gaussians beside it, as `flowmote train` keeps on a
/// device budget when they help (`train::gaussians`): a small 3-D MAF
/// (weight 0.5) and four Gaussians, each its own flow behind the frozen
/// standardisation — two with full covariances (a lower-triangular layer,
/// weights 0.2 and 0.1) and two with diagonal ones (a trainable ActNorm,
/// 0.1 each). The trainer keeps one shape at a time; the fixture has both.
fn gaussians_model() -> ModelFile {
    let mut r = rng(505);
    let (mean, std) = (vec![-2.0, 40.0, 0.5], vec![1.5, 12.0, 0.1]);
    let student = vec![
        standardize_layer(&mean, &std),
        maf(&mut r, 3, net(6, 2, Act::Tanh)),
        Layer::Reverse,
        maf(&mut r, 3, net(6, 2, Act::Tanh)),
    ];
    let mut flows = vec![DynFlow::new(3, student)];
    for _ in 0..2 {
        // Packed rows of T (log-diagonal) then the bias.
        let params: Vec<f32> = (0..flowmote::TriLinearRef::n_params(3))
            .map(|_| uniform(&mut r, -0.8, 0.8))
            .collect();
        flows.push(DynFlow::new(
            3,
            vec![standardize_layer(&mean, &std), Layer::TriLinear { params }],
        ));
    }
    for _ in 0..2 {
        let diag = Layer::ActNorm {
            log_scale: (0..3).map(|_| uniform(&mut r, -0.5, 1.0)).collect(),
            shift: (0..3).map(|_| uniform(&mut r, -1.0, 1.0)).collect(),
            frozen: false,
        };
        flows.push(DynFlow::new(3, vec![standardize_layer(&mean, &std), diag]));
    }
    let mut m = model_file("maf", &["x", "y", "z"], mean, std, vec![]);
    m.model = DynMixture {
        log_weights: [0.5f32, 0.2, 0.1, 0.1, 0.1].iter().map(|w| w.ln()).collect(),
        flows,
    };
    m
}

/// [`extended_model`] with its conditioners' weights stored as `i8` with
/// row scales (spline coupling, autoregressive spline, both MAFs; the LU
/// layer and the continuous flow's field stay f32).
fn i8_model() -> ModelFile {
    let mut m = extended_model();
    m.compress(Storage::I8).unwrap();
    m
}

/// [`coupling_model`] with its conditioners' weights stored as `f16`.
fn f16_model() -> ModelFile {
    let mut m = coupling_model();
    m.compress(Storage::F16).unwrap();
    m
}

fn export_source(m: &ModelFile, name: Option<&str>) -> export::Exported {
    let out = export::export(
        m,
        &ExportOptions {
            name: name.map(String::from),
            rustfmt_dir: Some(generated_dir()),
        },
    )
    .unwrap();
    assert!(
        out.rustfmt,
        "rustfmt is needed for the export tests: {:?}",
        out.rustfmt_error
    );
    out
}

fn models() -> [(&'static str, ModelFile); 6] {
    [
        ("maf.rs", maf_model()),
        ("coupling.rs", coupling_model()),
        ("committee.rs", committee_model()),
        ("gaussians.rs", gaussians_model()),
        ("quant_i8.rs", i8_model()),
        ("quant_f16.rs", f16_model()),
    ]
}

#[test]
fn generated_files_are_up_to_date() {
    let bless = std::env::var_os("FLOWMOTE_BLESS").is_some();
    for (file, m) in models() {
        let path = generated_dir().join(file);
        let src = export_source(&m, None).source;
        if bless {
            std::fs::write(&path, &src).unwrap();
            continue;
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == src,
            "{} differs from a fresh export; regenerate with FLOWMOTE_BLESS=1 and review the diff",
            path.display()
        );
    }
}

#[test]
fn same_model_same_bytes() {
    let dir = std::env::temp_dir().join(format!("flowmote-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (file, m) in models() {
        let a = export_source(&m, None).source;
        let b = export_source(&m, None).source;
        assert_eq!(a, b, "{file}: two exports differ");
        // Through model.json and back (serde's f32 round trip) too.
        let json = dir.join(file.replace(".rs", ".json"));
        m.save(&json).unwrap();
        let reloaded = ModelFile::load(&json).unwrap();
        assert_eq!(
            export_source(&reloaded, None).source,
            a,
            "{file}: differs after save/load"
        );
        // Without rustfmt the built-in layout is still valid Rust that
        // rustfmt turns into the very same text.
        let raw = export::export(&m, &ExportOptions::default()).unwrap();
        assert!(!raw.rustfmt);
        assert_eq!(export::rustfmt(&raw.source, &generated_dir()).unwrap(), a);
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn generated_files_pass_rustfmt_check() {
    for (file, _) in models() {
        let path = generated_dir().join(file);
        let st = std::process::Command::new(std::env::var_os("RUSTFMT").unwrap_or_else(|| "rustfmt".into()))
            .args(["--edition", "2021", "--check"])
            .arg(&path)
            .status()
            .expect("rustfmt runs");
        assert!(st.success(), "rustfmt --check {}", path.display());
    }
}

#[test]
fn floats_round_trip() {
    let mut specials = vec![
        0.0f32,
        -0.0,
        1.0,
        -1.0,
        0.1,
        1e-7,
        -1e-7,
        1e-45,
        f32::MIN_POSITIVE,
        f32::MAX,
        f32::MIN,
        f32::EPSILON,
        16_777_216.0,
        16_777_217.0,
        1e20,
        123456.79,
        core::f32::consts::LN_2,
    ];
    let mut r = rng(5);
    for _ in 0..20_000 {
        let bits = rand_core::Rng::next_u32(&mut r);
        let v = f32::from_bits(bits);
        if v.is_finite() {
            specials.push(v);
        }
    }
    for v in specials {
        let s = f32_lit(v);
        assert!(s.contains('.') || s.contains('e'), "{s} is not a float literal");
        let back: f32 = s.parse().unwrap();
        assert_eq!(back.to_bits(), v.to_bits(), "{v:?} printed as {s}");
    }
    assert_eq!(f32_lit(f32::INFINITY), "f32::INFINITY");
    // Literals clippy would take for a mistyped constant get an `allow`.
    assert!(export::looks_like_known_constant("0.6931472"));
    assert!(export::looks_like_known_constant("-3.1415927"));
    assert!(export::looks_like_known_constant("0.6931"));
    assert!(!export::looks_like_known_constant("0.693"));
    assert!(!export::looks_like_known_constant("0.123456"));
}

#[test]
fn name_renames_the_model_static() {
    let m = coupling_model();
    let src = export_source(&m, Some("GAIT_MODEL")).source;
    assert!(src.contains("pub static GAIT_MODEL: Model = Flow::new(("));
    assert!(!src.contains("pub static MODEL"));
    assert!(src.contains("`GAIT_MODEL.sample(&mut rng)`"));
    for bad in ["model", "DIM", "GOLDEN_SEED", "1X", "A-B", ""] {
        assert!(
            export::export(
                &m,
                &ExportOptions {
                    name: Some(bad.into()),
                    rustfmt_dir: None
                }
            )
            .is_err(),
            "{bad:?} accepted"
        );
    }
}

#[test]
fn header_and_items() {
    let src = std::fs::read_to_string(generated_dir().join("maf.rs")).unwrap();
    assert!(src.starts_with("// @generated by flowmote-tools "));
    assert!(src.contains("maf.train.csv (sha256 0000"));
    assert!(
        !src.contains("/somewhere/"),
        "absolute paths must not leak into the file"
    );
    assert!(src.contains("validation NLL: 4.2500 nats/row"));
    assert!(!src.contains("#!["), "no inner attributes");
    // ln(0.5) folded into the standardisation trips clippy's approx_constant.
    assert!(src.contains("#[allow(clippy::approx_constant)]\npub static MODEL"));
    assert_eq!(maf_model::THRESHOLD, 21.5);
    assert_eq!(coupling_model::THRESHOLD, f32::INFINITY);
    assert_eq!(coupling_model::FEATURES, ["temp \"C\"", "hum", "p\\x", "lux"]);
    assert_eq!(maf_model::FEATURES, ["ax", "ay", "az"]);
    assert_eq!(extended_model::FEATURES, ["a", "b", "c"]);
    assert_eq!(extended_model::THRESHOLD, f32::INFINITY);
    // MACS by hand: an MLP with h hidden units, depth L, `in` inputs and
    // `out` outputs costs h·in + (L − 1)·h² + out·h.
    // maf: 8 MAF(3) layers, hidden 6, depth 1 (54) and 2 (90) alternating.
    assert_eq!(maf_model::MACS, 4 * (6 * 3 + 6 * 6) + 4 * (6 * 3 + 36 + 6 * 6));
    // coupling: 2→2 h8 (48), 1→3 h5×2 (60), LU 4² (16), 3→1 h4 (20).
    assert_eq!(
        coupling_model::MACS,
        (8 * 2 + 4 * 8) + (5 + 25 + 6 * 5) + 16 + (4 * 3 + 2 * 4)
    );
    // extended: LU 3², spline coupling 1→2·11 h6, AR spline 3→3·8 h5×2,
    // CNF (3+1)→3 h4 × 6 RK4 steps × 4 stages; then triangular 3·4/2, MAF
    // h5 and MAF h4.
    let member0 = 9 + (6 + 22 * 6) + (5 * 3 + 25 + 24 * 5) + 6 * 4 * (4 * 4 + 3 * 4);
    let member1 = 6 + (5 * 3 + 6 * 5) + (4 * 3 + 6 * 4);
    assert_eq!(extended_model::MACS, member0 + member1);
    // committee: 12 members, MAF(2) h(3 + k mod 3) then MAF(2) h3, depth 1.
    assert_eq!(
        committee_model::MACS,
        (0..12).map(|k| 6 * (3 + k % 3) + 6 * 3).sum::<usize>()
    );
    assert_eq!(committee_model::FEATURES, ["t", "p"]);
    assert_eq!(committee_model::THRESHOLD, f32::INFINITY);
}

/// `true` if `got` is within `RTOL` of `want` (absolute below |want| = 1).
fn close(got: f32, want: f32) -> f64 {
    let (g, w) = (got as f64, want as f64);
    (g - w).abs() / w.abs().max(1.0)
}

macro_rules! parity {
    ($(#[$attr:meta])* $test:ident, $module:ident, $model:ident) => {
        #[test]
        $(#[$attr])*
        fn $test() {
            use $module as gen;
            let m = $model();
            let flow = &m.model;
            let d = gen::DIM;
            assert_eq!(d, flow.dim());
            assert_eq!(gen::MEAN.to_vec(), m.mean);
            assert_eq!(gen::STD.to_vec(), m.std);
            let mut ws = flow.workspace();

            // Golden inputs: the host's log p, and the compiled model's.
            assert!(gen::GOLDEN_INPUTS.len() >= 4, "too few golden inputs");
            assert_eq!(gen::GOLDEN_INPUTS.len(), gen::GOLDEN_LOG_PROBS.len());
            let mut worst = 0.0f64;
            for (x, &lp) in gen::GOLDEN_INPUTS.iter().zip(&gen::GOLDEN_LOG_PROBS) {
                assert_eq!(flow.log_prob(x, &mut ws).unwrap().to_bits(), lp.to_bits());
                worst = worst.max(close(gen::MODEL.log_prob(x).unwrap(), lp));
            }
            // Many rows: model samples and wide uniform rows around the mean.
            let mut r = rng(9);
            let mut rows: Vec<Vec<f32>> = Vec::new();
            for _ in 0..400 {
                if let Ok((x, _)) = flow.sample_with_log_prob(&mut r, &mut ws) {
                    rows.push(x);
                }
            }
            for _ in 0..400 {
                rows.push(
                    (0..d)
                        .map(|i| m.mean[i] + uniform(&mut r, -5.0, 5.0) * m.std[i])
                        .collect(),
                );
            }
            rows.push(vec![0.0; d]);
            rows.push(vec![f32::NAN; d]);
            rows.push(vec![1e30; d]);
            let mut compared = 0;
            for x in &rows {
                let arr: [f32; gen::DIM] = x.as_slice().try_into().unwrap();
                match (flow.log_prob(x, &mut ws), gen::MODEL.log_prob(&arr)) {
                    (Ok(a), Ok(b)) => {
                        worst = worst.max(close(b, a));
                        compared += 1;
                    }
                    (Err(a), Err(b)) => assert_eq!(a, b),
                    (a, b) => panic!("host {a:?} vs exported {b:?} at {x:?}"),
                }
            }
            assert!(compared >= 700, "only {compared} finite rows");
            assert!(worst <= RTOL, "log_prob relative error {worst:e}");
            eprintln!(
                "{}: max relative log_prob error {worst:e} over {} rows",
                stringify!($module),
                compared + gen::GOLDEN_INPUTS.len()
            );

            // Sampling with GOLDEN_SEED reproduces GOLDEN_SAMPLES.
            assert_eq!(gen::GOLDEN_SEED, 42);
            assert_eq!(gen::GOLDEN_SAMPLES.len(), export::N_GOLDEN_SAMPLES);
            let mut dev = Xoshiro128PlusPlus::seed_from_u64(gen::GOLDEN_SEED);
            let mut host = Xoshiro128PlusPlus::seed_from_u64(gen::GOLDEN_SEED);
            let mut worst = 0.0f64;
            for want in &gen::GOLDEN_SAMPLES {
                let got = gen::MODEL.sample(&mut dev).unwrap();
                let h = flow.sample(&mut host, &mut ws).unwrap();
                for j in 0..d {
                    assert_eq!(h[j].to_bits(), want[j].to_bits(), "host sample drifted");
                    worst = worst.max(close(got[j], want[j]));
                }
            }
            assert!(worst <= RTOL, "sample relative error {worst:e}");
        }
    };
}

parity!(maf_parity, maf_model, maf_model);
parity!(coupling_parity, coupling_model, coupling_model);
parity!(extended_parity, extended_model, extended_model);
parity!(committee_parity, committee_model, committee_model);
parity!(gaussians_parity, gaussians_fixture, gaussians_model);
parity!(i8_parity, i8_model, i8_model);
parity!(f16_parity, f16_model, f16_model);

/// The compressed exports hold the compressed weights: `i8` values and
/// scales as the model file has them, `f16` bit patterns of its values; and
/// the host's compressed model scores the golden inputs bit for bit.
#[test]
fn compressed_exports_hold_the_compressed_weights() {
    let m = i8_model();
    let q = m.model.flows[1].weights.i8_net(2).expect("MAF layer stored as i8");
    let net = i8_model::MODEL.components.1.layers.2.net.view();
    let mut got: Vec<i8> = net.w_in.to_vec();
    got.extend_from_slice(net.w_hid);
    got.extend_from_slice(net.w_out);
    assert_eq!(got, q.q);
    let scales: Vec<f32> = [net.s_in, net.s_hid, net.s_out].concat();
    assert_eq!(scales, q.scales);
    assert!(i8_model::MODEL.components.1.layers.2.is_masked());
    let m = f16_model();
    let Layer::AffineCoupling { params, .. } = &m.model.flows[0].layers[1] else {
        unreachable!()
    };
    let net = f16_model::MODEL.layers.1.net.view();
    let widened: Vec<u32> = net
        .w_in
        .iter()
        .map(|h| flowmote::weights::f16_to_f32(*h).to_bits())
        .collect();
    assert_eq!(
        widened,
        params[..net.w_in.len()].iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    let src = std::fs::read_to_string(generated_dir().join("quant_i8.rs")).unwrap();
    assert!(src.contains("// weights: conditioner matrices stored as i8 with one f32 scale per row"));
    assert!(src.contains("Maf<DIM, 5, 0, i8>"));
    assert!(src.contains("MlpI8 {"));
    // Weight bytes: i8 < f16 < f32 for the same model.
    let (a, b, c) = (extended_model(), i8_model(), coupling_model());
    assert!(b.model.weight_bytes() < a.model.weight_bytes());
    assert!(f16_model().model.weight_bytes() < c.model.weight_bytes());
}

/// Spline coupling, autoregressive spline and continuous flow layers. Needs
/// `Layer::mlp_shape` (tools/src/model.rs) to cover those layers: until then
/// `DynFlow` cannot evaluate them (the file was generated with it patched).
#[test]
fn extended_generated_file_is_up_to_date() {
    let path = generated_dir().join("extended.rs");
    let src = export_source(&extended_model(), None).source;
    if std::env::var_os("FLOWMOTE_BLESS").is_some() {
        std::fs::write(&path, &src).unwrap();
    }
    assert!(
        std::fs::read_to_string(&path).unwrap_or_default() == src,
        "{} is stale",
        path.display()
    );
}

#[test]
fn exported_weights_are_the_model_weights() {
    let m = coupling_model();
    let gen = &coupling_model::MODEL.layers;
    let Layer::ActNorm { log_scale, shift, .. } = &m.model.flows[0].layers[0] else {
        unreachable!()
    };
    assert_eq!(gen.0.log_scale().as_slice(), log_scale.as_slice());
    assert_eq!(gen.0.shift.as_slice(), shift.as_slice());
    let Layer::AffineCoupling { params, clamp, .. } = &m.model.flows[0].layers[3] else {
        unreachable!()
    };
    assert_eq!(gen.3.clamp, *clamp);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&flat_params(&gen.3.net.view())), bits(params));
    let Layer::LuLinear { perm, sign, params } = &m.model.flows[0].layers[6] else {
        unreachable!()
    };
    assert_eq!(gen.6.perm().as_slice(), perm.as_slice());
    assert_eq!(gen.6.sign().as_slice(), sign.as_slice());
    assert_eq!(bits(gen.6.lu().as_flattened()), bits(&params[..16]));
    // The 17-layer MAF model is nested: ((16 layers), (1 layer)).
    let maf = maf_model();
    let Layer::Maf { params, .. } = &maf.model.flows[0].layers[1] else {
        unreachable!()
    };
    assert_eq!(
        bits(&flat_params(&maf_model::MODEL.layers.0 .1.net.view())),
        bits(params)
    );
    assert!(maf_model::MODEL.layers.0 .1.is_masked());
}

/// The exported files compile as modules of a `#![no_std]` library with
/// warnings, missing docs and clippy's default lints denied.
#[test]
fn generated_files_compile_no_std_with_warnings_denied() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let dir = std::env::temp_dir().join(format!("flowmote-export-nostd-{}", std::process::id()));
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"exported-models\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n\
             [dependencies]\nflowmote = {{ path = {:?} }}\n\n[workspace]\n",
            root.display().to_string()
        ),
    )
    .unwrap();
    std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    let mut lib = String::from(
        "//! Exported models, compiled as firmware would.\n#![no_std]\n#![deny(warnings, missing_docs)]\n",
    );
    for file in [
        "maf.rs",
        "coupling.rs",
        "extended.rs",
        "committee.rs",
        "gaussians.rs",
        "quant_i8.rs",
        "quant_f16.rs",
    ] {
        std::fs::copy(generated_dir().join(file), src.join(file)).unwrap();
        lib.push_str(&format!(
            "/// Exported model.\npub mod {};\n",
            file.trim_end_matches(".rs")
        ));
    }
    std::fs::write(src.join("lib.rs"), lib).unwrap();
    let has_clippy = std::process::Command::new(&cargo)
        .args(["clippy", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    let mut cmd = std::process::Command::new(&cargo);
    if has_clippy {
        cmd.args(["clippy", "--offline", "--quiet", "--", "-D", "warnings"]);
    } else {
        cmd.args(["check", "--offline", "--quiet"]);
    }
    let out = cmd
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .env_remove("RUSTFLAGS")
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "exported files do not compile cleanly:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).ok();
}
