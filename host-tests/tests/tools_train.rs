//! The `flowmote` tool's trainer, sampler and command functions
//! (`flowmote_tools::{train, cli, data, metrics}`).

use flowmote::{ActNorm, Activation, AffineCoupling, Flow, Maf, Mlp, Reverse};
use flowmote_tools::cli;
use flowmote_tools::data;
use flowmote_tools::model::{Act, DynFlow, DynMixture, Layer, ModelFile, Net, Workspace};
use flowmote_tools::train::{self, init_params, FlowKind, Gaussian, TrainConfig, ValSplit};
use rand_core::{Rng, SeedableRng};
use rand_xoshiro::{Xoshiro128PlusPlus, Xoshiro256PlusPlus};
use std::path::PathBuf;

/// An empty directory for one test, under Cargo's scratch directory for
/// integration tests (`target/tmp`): the same path on every run, emptied
/// first, so runs never accumulate directories.
fn tmpdir(name: &str) -> PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("tools-train-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn normal(r: &mut Xoshiro256PlusPlus) -> f32 {
    let mut z = [0.0f32; 1];
    flowmote::normal::fill_standard_normal(r, &mut z);
    z[0]
}

/// A 2-D banana: x0 ~ N(0, 1), x1 = 0.5·x0² + 0.3·N(0, 1) (shifted and scaled
/// so that standardisation matters).
fn banana(n: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut r = Xoshiro256PlusPlus::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let a = normal(&mut r);
            let b = normal(&mut r);
            vec![10.0 + 3.0 * a, -5.0 + 2.0 * (0.5 * a * a + 0.3 * b)]
        })
        .collect()
}

/// Three 2-D Gaussian blobs of different shapes (weights ½, 0.3, 0.2): a
/// density single small flows find hard and mixtures of them less so.
fn blobs(n: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut r = Xoshiro256PlusPlus::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let k = r.next_u32() as f64 / 2f64.powi(32);
            let (a, b) = (normal(&mut r), normal(&mut r));
            if k < 0.5 {
                vec![-4.0 + 0.5 * a, 0.5 * b]
            } else if k < 0.8 {
                vec![3.0 + a, 2.0 + 0.3 * b]
            } else {
                vec![1.0 + 0.2 * a, -3.0 + 1.5 * b]
            }
        })
        .collect()
}

/// The error `train` stops with on `ds` with `cfg` (it must stop).
fn training_error(ds: &data::Dataset, cfg: TrainConfig) -> String {
    train::train(ds, &cfg, false).unwrap_err().to_string()
}

/// `rows` written to `<tmpdir(name)>/train.csv` (columns u, v) and loaded as
/// `flowmote train` loads it; returns the file's path too.
fn training_set(name: &str, rows: &[Vec<f32>]) -> (PathBuf, data::Dataset) {
    let p = tmpdir(name).join("train.csv");
    write_csv(&p, "u,v", rows);
    let ds = data::load_training(&p, None).unwrap();
    (p, ds)
}

fn write_csv(path: &std::path::Path, header: &str, rows: &[Vec<f32>]) {
    let mut s = format!("{header}\n");
    for r in rows {
        s.push_str(&r.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(","));
        s.push('\n');
    }
    std::fs::write(path, s).unwrap();
}

fn random_flow(kind: FlowKind, d: usize, seed: u64) -> DynFlow {
    let mut r = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mean: Vec<f32> = (0..d).map(|i| 0.3 * i as f32 - 0.2).collect();
    let std: Vec<f32> = (0..d).map(|i| 0.7 + 0.2 * i as f32).collect();
    let cfg = TrainConfig {
        init_scale: 1.0,
        folds: Some(1),
        ..TrainConfig::default()
    };
    let net = Net {
        hidden: 6,
        depth: 2,
        act: Act::Tanh,
    };
    train::build_flow(kind, &mean, &std, 3, net, &cfg, &mut r).unwrap()
}

/// `nll_backward` against central finite differences of `−log_prob`
/// (f64 accumulation of an f32 model: step 1e-2, loose tolerance).
// The loop perturbs `flow` in place, so it cannot iterate over `grads`.
#[allow(clippy::needless_range_loop)]
fn check_gradient(kind: FlowKind) {
    let d = 4;
    let mut flow = random_flow(kind, d, 7);
    let x = [0.4f32, -0.9, 1.3, 0.2];
    let mut ws = Workspace::new(&flow);
    let mut grads: Vec<Vec<f32>> = flow.layers.iter().map(|l| vec![0.0; l.params().len()]).collect();
    let nll = flow.nll_backward(&x, &mut grads, &mut ws).unwrap();
    assert!((nll + flow.log_prob(&x, &mut ws).unwrap()).abs() < 1e-4);
    let mut checked = 0;
    for li in 0..flow.layers.len() {
        let n = flow.layers[li].params().len();
        for k in (0..n).step_by(5) {
            let orig = *get(&mut flow, li, k);
            let h = 1e-2f32;
            *get(&mut flow, li, k) = orig + h;
            let up = -flow.log_prob(&x, &mut ws).unwrap() as f64;
            *get(&mut flow, li, k) = orig - h;
            let dn = -flow.log_prob(&x, &mut ws).unwrap() as f64;
            *get(&mut flow, li, k) = orig;
            let fd = (up - dn) / (2.0 * h as f64);
            let g = grads[li][k] as f64;
            assert!(
                (g - fd).abs() <= 2e-2 * fd.abs().max(1.0),
                "{kind:?} layer {li} param {k}: backward {g} vs finite difference {fd}"
            );
            checked += 1;
        }
    }
    assert!(checked > 30, "checked {checked} parameters");
}

fn get(f: &mut DynFlow, li: usize, k: usize) -> &mut f32 {
    match &mut f.layers[li] {
        Layer::Maf { params, .. }
        | Layer::AffineCoupling { params, .. }
        | Layer::SplineCoupling { params, .. }
        | Layer::SplineAutoregressive { params, .. } => &mut params[k],
        _ => unreachable!(),
    }
}

#[test]
fn nll_backward_matches_finite_differences_maf() {
    check_gradient(FlowKind::Maf);
}

#[test]
fn nll_backward_matches_finite_differences_coupling() {
    check_gradient(FlowKind::Coupling);
}

#[test]
fn nll_backward_matches_finite_differences_nsf() {
    check_gradient(FlowKind::Nsf);
}

#[test]
fn nll_backward_matches_finite_differences_nsf_ar() {
    check_gradient(FlowKind::NsfAr);
}

#[test]
fn nsf_ar_layers_stay_made_masked() {
    let flow = random_flow(FlowKind::NsfAr, 4, 3);
    let mut n = 0;
    for l in &flow.layers {
        if let Layer::SplineAutoregressive { bins, params, .. } = l {
            let mut q = params.clone();
            let heads = flowmote::spline::spline_params(*bins);
            flowmote::spline::made_mask_heads(l.mlp_shape(4).unwrap(), heads, &mut q).unwrap();
            assert_eq!(&q, params, "initial parameters are MADE-masked");
            n += 1;
        }
    }
    assert_eq!(n, 3);
}

#[test]
fn tiny_nsf_training_improves_validation_nll() {
    let (_, ds) = training_set("nsf", &banana(400, 11));
    for flow in [FlowKind::Nsf, FlowKind::NsfAr] {
        let cfg = TrainConfig {
            flow,
            layers: Some(2),
            hidden: Some(8),
            epochs: Some(15),
            lr: 5e-3,
            noise: Some(0.0),
            folds: Some(1),
            ..TrainConfig::default()
        };
        let (m, s) = train::train(&ds, &cfg, false).unwrap();
        let first = m.provenance.history[0].val_nll;
        let untrained = {
            // The epoch-0 model is near the identity: standard normal on standardised data.
            let mut r = Xoshiro256PlusPlus::seed_from_u64(0);
            let f = train::build_flow(flow, &m.mean, &m.std, 2, net8(), &cfg, &mut r).unwrap();
            train::mean_nll(&f, &s.validation).0
        };
        eprintln!(
            "{flow:?}: untrained {untrained:.3}, epoch 1 {first:.3}, best {:.3}",
            s.best_val_nll
        );
        assert!(
            s.best_val_nll < untrained - 0.1,
            "{flow:?}: {} vs untrained {untrained}",
            s.best_val_nll
        );
        assert!(s.best_val_nll.is_finite());
        m.validate().unwrap();
    }
}

#[test]
fn search_keeps_the_candidate_with_the_best_validation_nll() {
    let (_, ds) = training_set("auto", &banana(300, 12));
    let cfg = TrainConfig {
        epochs: Some(5),
        folds: Some(1),
        target: Some("host".into()),
        ..TrainConfig::default()
    };
    assert_eq!(
        (cfg.flow, cfg.noise, cfg.mixture),
        (FlowKind::Auto, None, true),
        "the tool's defaults search, then stack"
    );
    // The single best candidate (the stacking step is tested below).
    let cfg = TrainConfig { mixture: false, ..cfg };
    let (m, s) = train::train(&ds, &cfg, false).unwrap();
    let tried = serde_json::to_value(&m.provenance.settings).unwrap()["search"]
        .as_array()
        .unwrap()
        .clone();
    let val = |t: &serde_json::Value| t["val_nll"].as_f64().unwrap();
    // 1. noise levels in order, stopping after the first that did worse.
    let noise: Vec<f64> = tried
        .iter()
        .take_while(|t| t["flow"] == "maf" && t["layers"] == tried[0]["layers"])
        .map(|t| t["noise"].as_f64().unwrap())
        .collect();
    assert!(noise.len() >= 2);
    for (k, v) in noise.iter().enumerate() {
        assert!((v - train::NOISE_LEVELS[k] as f64).abs() < 1e-6);
    }
    if noise.len() < train::NOISE_LEVELS.len() {
        let k = noise.len() - 1;
        assert!(
            val(&tried[k]) >= val(&tried[k - 1]),
            "stopped at a level that did worse"
        );
    }
    // 2. nsf at the chosen noise, 3. a bigger model: two more candidates.
    assert_eq!(tried.len(), noise.len() + 2);
    assert_eq!(tried[noise.len()]["flow"], "nsf");
    let best = tried.iter().min_by(|a, b| val(a).total_cmp(&val(b))).unwrap();
    assert_eq!(m.kind, best["flow"].as_str().unwrap());
    assert_eq!(s.best_val_nll, val(best));
    // Same model as asking for the winner's settings directly.
    let kind = if m.kind == "maf" { FlowKind::Maf } else { FlowKind::Nsf };
    let direct = TrainConfig {
        flow: kind,
        noise: Some(best["noise"].as_f64().unwrap() as f32),
        layers: Some(best["layers"].as_u64().unwrap() as usize),
        hidden: Some(best["hidden"].as_u64().unwrap() as usize),
        ..cfg
    };
    let (direct, _) = train::train(&ds, &direct, false).unwrap();
    assert_eq!(direct.model, m.model);
    assert!(m.model.as_single().is_some());
}

/// The defaults stack the candidates when that wins on validation: every
/// member is exactly a searched candidate, the weights are the search's
/// record, and the validation NLL is the mixture's (checked against an f64
/// log-sum-exp of the members' own densities).
#[test]
fn search_stacks_the_candidates_into_a_mixture() {
    let (p, ds) = training_set("stack", &blobs(1000, 2));
    let dir = p.parent().unwrap();
    let cfg = TrainConfig {
        epochs: Some(20),
        folds: Some(1),
        target: Some("host".into()),
        ..TrainConfig::default()
    };
    let (m, s) = train::train(&ds, &cfg, false).unwrap();
    let tried = serde_json::to_value(&m.provenance.settings).unwrap()["search"]
        .as_array()
        .unwrap()
        .clone();
    let best_single = tried
        .iter()
        .filter_map(|t| t["val_nll"].as_f64())
        .fold(f64::INFINITY, f64::min);
    let settings = serde_json::to_value(&m.provenance.settings).unwrap();
    let Some(members) = settings["members"].as_array() else {
        panic!("no mixture kept (best single {best_single}): {tried:?}");
    };
    assert_eq!(m.kind, "mixture");
    let k = members.len();
    assert!(k >= 2 && k == m.model.flows.len());
    let w: Vec<f64> = m.model.log_weights.iter().map(|v| (*v as f64).exp()).collect();
    assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-5);
    assert!(w.iter().all(|&v| v >= train::MIN_MIXTURE_WEIGHT));
    // Validation NLL of the mixture, from the members' own densities in f64.
    let val = &s.validation;
    let mut nll = 0.0;
    for x in val {
        let terms: Vec<f64> = m
            .model
            .flows
            .iter()
            .zip(&w)
            .map(|(f, w)| {
                let mut ws = Workspace::new(f);
                w.ln() + f.log_prob(x, &mut ws).unwrap() as f64
            })
            .collect();
        let top = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        nll -= top + terms.iter().map(|t| (t - top).exp()).sum::<f64>().ln();
    }
    nll /= val.len() as f64;
    assert!((nll - s.best_val_nll).abs() < 1e-4, "{nll} vs {}", s.best_val_nll);
    assert!(
        s.best_val_nll + ((k - 1) as f64 / val.len() as f64) < best_single,
        "kept only when it beats the best single candidate"
    );
    // Each member is the candidate it names, trained alone with its settings.
    let first = &members[0];
    let kind = if first["flow"] == "maf" {
        FlowKind::Maf
    } else {
        FlowKind::Nsf
    };
    let alone = TrainConfig {
        flow: kind,
        noise: Some(first["noise"].as_f64().unwrap() as f32),
        layers: Some(first["layers"].as_u64().unwrap() as usize),
        hidden: Some(first["hidden"].as_u64().unwrap() as usize),
        ..cfg.clone()
    };
    let (alone, _) = train::train(&ds, &alone, false).unwrap();
    assert_eq!(alone.model.as_single(), Some(&m.model.flows[0]));
    // The mixture survives the model file and scores like before.
    let path = dir.join("mix.json");
    m.save(&path).unwrap();
    let back = ModelFile::load(&path).unwrap();
    assert_eq!(back.model, m.model);

    // Every command takes the mixture: calibrate, eval, score, sample, export.
    let th = cli::run_calibrate(&cli::CalibrateArgs {
        delimiter: None,
        weights: None,
        model: path.clone(),
        data: p.clone(),
        false_alarm_rate: 0.05,
        label_column: None,
        out: None,
        json: false,
    })
    .unwrap();
    assert!(th.score.is_finite());
    let ev = cli::run_eval(&cli::EvalArgs {
        delimiter: None,
        weights: None,
        model: path.clone(),
        data: p.clone(),
        label_column: None,
        json: true,
        gaussian_baseline: None,
    })
    .unwrap();
    let ev = serde_json::to_value(&ev).unwrap();
    let mut ws = m.model.workspace();
    let want = -ds
        .rows
        .iter()
        .map(|x| m.model.log_prob(x, &mut ws).unwrap() as f64)
        .sum::<f64>()
        / ds.len() as f64;
    assert!((ev["nll"].as_f64().unwrap() - want).abs() < 1e-9 * want.abs().max(1.0));
    let sc = cli::run_score(&cli::ScoreArgs {
        delimiter: None,
        model: path.clone(),
        data: p.clone(),
        out: Some(dir.join("scores.csv")),
        label_column: None,
    })
    .unwrap();
    assert_eq!(sc.lines().count(), ds.len() + 1);
    let draws = cli::draw_samples(&ModelFile::load(&path).unwrap(), 20, 3).unwrap();
    let mut r = Xoshiro128PlusPlus::seed_from_u64(3);
    for (x, lp) in &draws {
        assert_eq!(
            x,
            &m.model.sample(&mut r, &mut ws).unwrap(),
            "same draws as the mixture's sample"
        );
        assert_eq!(*lp, m.model.log_prob(x, &mut ws).unwrap());
    }
    let rs = dir.join("model.rs");
    flowmote_tools::export::run(&flowmote_tools::export::ExportArgs {
        weights: None,
        model: path,
        out: rs.clone(),
        name: None,
        no_threshold: true,
        json: false,
    })
    .unwrap();
    let src = std::fs::read_to_string(rs).unwrap();
    assert!(
        src.contains("pub type Members = (Member0, ")
            && src.contains(&format!("pub type Model = Mixture<DIM, {k}, Members>")),
        "{}",
        &src[..2000]
    );
    assert!(src.contains(&format!("pub const MACS: usize = {};", m.model.macs())));
}

/// A flow that is the Gaussian `N(mean, 1)` in 1-D.
fn gauss1(mean: f32) -> DynFlow {
    DynFlow {
        weights: Default::default(),
        dim: 1,
        layers: vec![Layer::ActNorm {
            log_scale: vec![0.0],
            shift: vec![-mean],
            frozen: true,
        }],
    }
}

fn one_flow_file(flow: DynFlow) -> ModelFile {
    ModelFile {
        format: flowmote_tools::model::FORMAT.into(),
        version: flowmote_tools::model::VERSION,
        tool_version: "test".into(),
        kind: "test".into(),
        features: vec!["x".into()],
        features_pipeline: None,
        mean: vec![0.0],
        std: vec![1.0],
        model: DynMixture::single(flow),
        threshold: None,
        provenance: Default::default(),
    }
}

/// Stacking on known densities: rows from 0.3·N(−2, 1) + 0.7·N(2, 1); the
/// candidates are those two Gaussians and a useless one far away. EM finds
/// the weights, the useless member is dropped, and `max_params` drops the
/// smallest member first.
#[test]
fn stacking_recovers_known_mixture_weights() {
    let mut r = Xoshiro256PlusPlus::seed_from_u64(21);
    let rows: Vec<Vec<f32>> = (0..4000)
        .map(|_| {
            let c = if (r.next_u32() as f64 / 2f64.powi(32)) < 0.3 {
                -2.0
            } else {
                2.0
            };
            vec![c + normal(&mut r)]
        })
        .collect();
    let cands: Vec<(usize, ModelFile)> = [-2.0, 2.0, 40.0]
        .iter()
        .enumerate()
        .map(|(i, &m)| (i, one_flow_file(gauss1(m))))
        .collect();
    let st = train::stack(&cands, &rows, f64::MAX, 8).unwrap();
    let idx: Vec<usize> = st.members.iter().map(|m| m.0).collect();
    assert_eq!(idx, [0, 1], "the far-away member is dropped");
    let w0 = st.members[0].1;
    // Binomial sd of the fraction: √(0.21/4000) ≈ 0.007.
    assert!((w0 - 0.3).abs() < 0.03, "weight {w0}");
    assert!((st.model.log_weights[0].exp() as f64 - w0).abs() < 1e-6);
    // Exact mixture NLL with the true weights is close to what stacking found.
    let exact = -rows
        .iter()
        .map(|x| {
            let n = |m: f64| (-0.5 * (x[0] as f64 - m).powi(2)).exp() / (2.0 * std::f64::consts::PI).sqrt();
            (0.3 * n(-2.0) + 0.7 * n(2.0)).ln()
        })
        .sum::<f64>()
        / rows.len() as f64;
    assert!((st.val_nll - exact).abs() < 0.01, "{} vs {exact}", st.val_nll);
    // Not kept unless it beats the best single candidate by the penalty.
    assert!(train::stack(&cands, &rows, st.val_nll, 8).is_none());
    // A cap of one member leaves no mixture.
    assert!(train::stack(&cands, &rows, f64::MAX, 1).is_none());
    // Rows a member cannot score leave that member out.
    let mut bad = rows.clone();
    bad.push(vec![1e30]);
    assert!(train::stack(&cands, &bad, f64::MAX, 8).is_none_or(|s| s.members.len() >= 2));
}

/// Mixture sampling draws each member as often as its weight says, with
/// exactly the core's generator use (one word for the member, then the
/// member's own draw).
#[test]
fn mixture_sampling_follows_the_weights_and_the_core() {
    let model = DynMixture {
        log_weights: vec![0.25f32.ln(), 0.75f32.ln()],
        flows: vec![gauss1(-10.0), gauss1(10.0)],
    };
    model.validate().unwrap();
    let core = flowmote::Mixture::<1, 2, _>::new(
        [0.25f32.ln(), 0.75f32.ln()],
        (
            Flow::new((ActNorm::<1>::new([0.0], [10.0]),)),
            Flow::new((ActNorm::<1>::new([0.0], [-10.0]),)),
        ),
    );
    let mut ws = model.workspace();
    let (mut a, mut b) = (
        Xoshiro128PlusPlus::seed_from_u64(3),
        Xoshiro128PlusPlus::seed_from_u64(3),
    );
    let n = 4000;
    let mut left = 0;
    for _ in 0..n {
        let x = model.sample(&mut a, &mut ws).unwrap();
        assert_eq!(x[0].to_bits(), core.sample(&mut b).unwrap()[0].to_bits());
        assert_eq!(
            model.log_prob(&x, &mut ws).unwrap().to_bits(),
            core.log_prob(&[x[0]]).unwrap().to_bits()
        );
        left += usize::from(x[0] < 0.0);
    }
    // Binomial(4000, 0.25): sd ≈ 27.
    assert!(
        (left as f64 - 1000.0).abs() < 120.0,
        "{left} of {n} from the 0.25 member"
    );
}

fn net8() -> Net {
    Net {
        hidden: 8,
        depth: 2,
        act: Act::Tanh,
    }
}

fn mlp_from_flat<const IN: usize, const H: usize, const L: usize, const OUT: usize, const HEADS: usize>(
    p: &[f32],
) -> Mlp<IN, H, L, OUT, HEADS> {
    let mut m = Mlp::<IN, H, L, OUT, HEADS>::zeroed(Activation::Tanh);
    let mut it = p.iter().copied();
    for k in 0..H {
        for i in 0..IN {
            m.w_in[k][i] = it.next().unwrap();
        }
    }
    for k in 0..H {
        m.b_in[k] = it.next().unwrap();
    }
    for l in 0..L {
        for k in 0..H {
            for j in 0..H {
                m.w_hid[l][k][j] = it.next().unwrap();
            }
        }
    }
    for l in 0..L {
        for k in 0..H {
            m.b_hid[l][k] = it.next().unwrap();
        }
    }
    for h in 0..HEADS {
        for o in 0..OUT {
            for k in 0..H {
                m.w_out[h][o][k] = it.next().unwrap();
            }
        }
    }
    for h in 0..HEADS {
        for o in 0..OUT {
            m.b_out[h][o] = it.next().unwrap();
        }
    }
    assert!(it.next().is_none());
    m
}

#[test]
fn sampling_equals_core_flow_sample() {
    // DynFlow [standardise, MAF (H 4, depth 2), Reverse, coupling 1+1 (H 4, depth 1)].
    let mut r = Xoshiro256PlusPlus::seed_from_u64(3);
    let mean = [1.5f32, -2.0];
    let std = [0.5f32, 3.0];
    let stdl = train::standardize_layer(&mean, &std);
    let net_maf = Net {
        hidden: 4,
        depth: 2,
        act: Act::Tanh,
    };
    let net_c = Net {
        hidden: 4,
        depth: 1,
        act: Act::Tanh,
    };
    let mut maf = Layer::Maf {
        net: net_maf,
        clamp: 3.0,
        params: vec![],
    };
    let pm = init_params(&mut r, maf.mlp_shape(2).unwrap(), 2, 1.0);
    if let Layer::Maf { params, .. } = &mut maf {
        *params = pm.clone();
    }
    let mut cpl = Layer::AffineCoupling {
        a: 1,
        b: 1,
        net: net_c,
        clamp: 3.0,
        params: vec![],
    };
    let pc = init_params(&mut r, cpl.mlp_shape(2).unwrap(), 0, 1.0);
    if let Layer::AffineCoupling { params, .. } = &mut cpl {
        *params = pc.clone();
    }
    let (ls, sh) = match &stdl {
        Layer::ActNorm { log_scale, shift, .. } => ([log_scale[0], log_scale[1]], [shift[0], shift[1]]),
        _ => unreachable!(),
    };
    let dynf = DynFlow {
        weights: Default::default(),
        dim: 2,
        layers: vec![stdl, maf, Layer::Reverse, cpl],
    };
    dynf.validate().unwrap();
    let core = Flow::<2, _>::new((
        ActNorm::<2>::new(ls, sh),
        Maf::<2, 4, 1> {
            clamp: 3.0,
            net: mlp_from_flat(&pm),
        },
        Reverse,
        AffineCoupling::<1, 1, 4, 0> {
            clamp: 3.0,
            net: mlp_from_flat(&pc),
        },
    ));
    let model = ModelFile {
        format: flowmote_tools::model::FORMAT.into(),
        version: flowmote_tools::model::VERSION,
        tool_version: "test".into(),
        kind: "maf".into(),
        features: vec!["a".into(), "b".into()],
        features_pipeline: None,
        mean: mean.to_vec(),
        std: std.to_vec(),
        model: DynMixture::single(dynf.clone()),
        threshold: None,
        provenance: Default::default(),
    };
    let draws = cli::draw_samples(&model, 50, 42).unwrap();
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(42);
    let mut ws = Workspace::new(&dynf);
    for (x, lp) in &draws {
        let c = core.sample(&mut rng).unwrap();
        assert_eq!(&c[..], &x[..], "same draws as the core's Flow::sample");
        let clp = core.log_prob(&c).unwrap();
        assert!((clp - lp).abs() < 1e-3 * clp.abs().max(1.0), "{clp} vs {lp}");
        assert_eq!(dynf.log_prob(x, &mut ws).unwrap(), clp, "log_prob equals the core's");
    }
}

fn small_cfg(seed: u64) -> TrainConfig {
    TrainConfig {
        layers: Some(4),
        hidden: Some(16),
        epochs: Some(if cfg!(debug_assertions) { 40 } else { 150 }),
        batch: 64,
        lr: 5e-3,
        seed,
        flow: FlowKind::Maf,
        noise: Some(0.0),
        folds: Some(1),
        // The search and committee as they are, without a device budget.
        target: Some("host".into()),
        ..TrainConfig::default()
    }
}

#[test]
fn flow_beats_full_covariance_gaussian_on_banana() {
    let (tr, te) = (banana(1500, 1), banana(1000, 2));
    let (_, ds) = training_set("banana", &tr);
    let (m, s) = train::train(&ds, &small_cfg(0), false).unwrap();
    let (flow_nll, bad) = train::mean_nll(m.model.as_single().unwrap(), &te);
    assert_eq!(bad, 0);
    let g = Gaussian::fit(&tr).unwrap();
    let g_nll = te.iter().map(|x| -g.log_prob(x)).sum::<f64>() / te.len() as f64;
    eprintln!(
        "banana: flow {flow_nll:.3} vs Gaussian {g_nll:.3} nats (best epoch {})",
        s.best_epoch
    );
    assert!(flow_nll < g_nll - 0.2, "flow {flow_nll} vs Gaussian {g_nll}");
}

/// A column constant in the training rows but not in the file (the loader
/// leaves out only columns constant in the file): its rare other value is
/// held out. Training dequantises it with the file's smallest gap between
/// its values, so the density is finite and the rare value scores as an
/// outlier (it was an error before: "column is constant").
#[test]
fn a_column_constant_in_the_training_rows_is_dequantised_with_the_files_gap() {
    let mut r = Xoshiro256PlusPlus::seed_from_u64(3);
    let mut rows: Vec<Vec<f32>> = (0..60).map(|_| vec![1.5, normal(&mut r)]).collect();
    rows.push(vec![2.25, 0.0]); // the last row: in the validation split
    let (_, ds) = training_set("nearly_constant", &rows);
    assert!(ds.dropped.is_empty(), "{:?}", ds.dropped);
    let cfg = TrainConfig {
        epochs: Some(5),
        val_fraction: 0.1,
        ..small_cfg(0)
    };
    let (m, s) = train::train(&ds, &cfg, false).unwrap();
    assert_eq!(s.dequantized, vec![("u".to_string(), 0.75)]);
    assert!(s.best_val_nll.is_finite());
    let (usual, _) = train::mean_nll(m.model.as_single().unwrap(), &[vec![1.5, 0.0]]);
    let (rare, _) = train::mean_nll(m.model.as_single().unwrap(), &[vec![2.25, 0.0]]);
    assert!(usual.is_finite() && rare > usual + 5.0, "usual {usual}, rare {rare}");
}

/// Fewer rows than columns (a short recording of many features; ODDS
/// arrhythmia has 231 rows × 258 columns): training used to refuse below
/// two rows per column. The whitening layer's covariance carries a ridge,
/// so the model trains, and it learns the columns' low-rank structure:
/// rows that keep it score far better than rows of the same spread that
/// break it.
#[test]
fn fewer_rows_than_columns_train_and_learn_the_structure() {
    let d = 40;
    let mut r = Xoshiro256PlusPlus::seed_from_u64(5);
    let (a, b): (Vec<f32>, Vec<f32>) = (0..d).map(|_| (normal(&mut r), normal(&mut r))).unzip();
    let mut factor_rows = |n: usize| -> Vec<Vec<f32>> {
        (0..n)
            .map(|_| {
                let (f, g) = (normal(&mut r), normal(&mut r));
                (0..d)
                    .map(|j| 3.0 + a[j] * f + b[j] * g + 0.1 * normal(&mut r))
                    .collect()
            })
            .collect()
    };
    let train_rows = factor_rows(30);
    let normal_rows = factor_rows(20);
    // Each column's spread as in the normal rows, the columns independent.
    let broken: Vec<Vec<f32>> = (0..20)
        .map(|_| (0..d).map(|j| 3.0 + (a[j].hypot(b[j])) * normal(&mut r)).collect())
        .collect();
    let p = tmpdir("short_wide").join("train.csv");
    let header = (0..d).map(|j| format!("c{j}")).collect::<Vec<_>>().join(",");
    write_csv(&p, &header, &train_rows);
    let ds = data::load_training(&p, None).unwrap();
    let cfg = TrainConfig {
        layers: Some(1),
        hidden: Some(8),
        epochs: Some(30),
        noise: None,
        ..small_cfg(0)
    };
    let (m, s) = train::train(&ds, &cfg, false).unwrap();
    assert!(s.best_val_nll.is_finite(), "{}", s.best_val_nll);
    let nll = |rows: &[Vec<f32>]| -> f64 {
        let lps = m.model.log_probs(rows);
        assert!(lps.iter().all(|lp| lp.as_ref().is_ok_and(|v| v.is_finite())));
        -lps.iter().map(|lp| *lp.as_ref().unwrap() as f64).sum::<f64>() / rows.len() as f64
    };
    let (keep, break_) = (nll(&normal_rows), nll(&broken));
    assert!(
        break_ > keep + 20.0,
        "rows keeping the structure {keep}, breaking it {break_}"
    );
}

#[test]
fn training_is_deterministic_for_a_seed() {
    // Integer columns: exercises dequantisation noise too.
    let rows: Vec<Vec<f32>> = banana(300, 5)
        .iter()
        .map(|r| r.iter().map(|v| (v * 10.0).round()).collect())
        .collect();
    let (_, ds) = training_set("det", &rows);
    let cfg = TrainConfig {
        epochs: Some(5),
        ..small_cfg(9)
    };
    let (a, sa) = train::train(&ds, &cfg, false).unwrap();
    let (b, _) = train::train(&ds, &cfg, false).unwrap();
    assert_eq!(sa.dequantized.len(), 2, "both integer columns dequantised");
    assert_eq!(a.model, b.model);
    assert_eq!(a.provenance.history, b.provenance.history);
    // One thread vs the default pool: same bits.
    let one = rayon_one_thread(|| train::train(&ds, &cfg, false).unwrap().0);
    assert_eq!(a.model, one.model, "independent of the thread count");
    let (c, _) = train::train(&ds, &TrainConfig { seed: 10, ..cfg }, false).unwrap();
    assert_ne!(a.model, c.model);
}

/// The parts that train side by side — a committee's folds and a device
/// target's students — give the same model on one thread as on the pool.
#[test]
fn committee_and_students_are_independent_of_the_thread_count() {
    let (_, ds) = training_set("parallel", &banana(120, 21));
    let short = |target: &str, max_flash: Option<u64>| TrainConfig {
        epochs: Some(4),
        seed: 5,
        target: Some(target.into()),
        max_flash,
        ..TrainConfig::default()
    };
    // A committee (120 rows: 5 folds), and the same data distilled into a
    // student under a budget the committee is over.
    for cfg in [short("host", None), short("nrf52840", Some(4096))] {
        let (a, _) = train::train(&ds, &cfg, false).unwrap();
        let st = &a.provenance.settings;
        match &st.distillation {
            Some(d) => assert!(d.students.len() >= 2, "students trained: {}", d.students.len()),
            None => assert_eq!(st.folds(), 5, "a committee"),
        }
        let one = rayon_one_thread(|| train::train(&ds, &cfg, false).unwrap().0);
        assert_eq!(a.model, one.model, "{:?}", cfg.target);
    }
}

/// On a device budget, Gaussians fitted beside the student are kept when
/// they fit the validation rows better: three Gaussian blobs are exactly a
/// 3-component mixture, which a briefly trained student is not. The kept
/// model is the student plus that mixture, within the budget, and its
/// validation NLL is the one recorded; `--no-gaussians` keeps the student
/// alone.
#[test]
fn gaussians_beside_the_student_are_kept_when_they_fit_better() {
    let (_, ds) = training_set("gaussians", &blobs(1500, 31));
    let cfg = TrainConfig {
        epochs: Some(6),
        seed: 3,
        target: Some("nrf52840".into()),
        max_flash: Some(16 * 1024),
        ..TrainConfig::default()
    };
    let (m, s) = train::train(&ds, &cfg, false).unwrap();
    let d = m.provenance.settings.distillation.as_ref().expect("distilled");
    let g = d.gaussians.as_ref().expect("Gaussians tried");
    assert!(g.kept, "{g:?}");
    assert_eq!(g.components, 3, "{g:?}");
    assert_eq!(m.provenance.settings.broad_weight, 0.001);
    assert_eq!(m.model.flows.len(), 5, "student, 3 Gaussians, the broad one");
    assert!(g.val_nll + 0.05 < g.student_val_nll, "{g:?}");
    assert!(
        g.val_nll < g.alone_val_nll,
        "beats the full budget's student too: {g:?}"
    );
    // The record holds the figures the choice compared, as each would be
    // kept: the mixture with the broad Gaussian, within −ln(1 − 0.001) of
    // its raw figure, ahead of the full budget's student.
    let (judged, against) = (g.judged_val_nll.unwrap(), g.judged_alone_val_nll.unwrap());
    assert!((judged - g.val_nll).abs() <= 0.0011, "{judged} vs {}", g.val_nll);
    assert!(judged < against, "{g:?}");
    // The broad Gaussian costs a row at most −ln(1 − 0.001).
    assert!(
        s.best_val_nll <= g.val_nll + 0.0011,
        "{} vs {}",
        s.best_val_nll,
        g.val_nll
    );
    assert!(m.model.weight_bytes() as u64 <= 16 * 1024);
    m.model.validate().unwrap();
    assert!(flowmote_tools::cli::describe_model(&m).contains("3 Gaussian(s)"));
    // The mixture is a density: a grid sum over the blobs' support.
    let h = 0.1f32;
    let grid: Vec<Vec<f32>> = (0..160)
        .flat_map(|i| (0..140).map(move |j| vec![-8.0 + h * i as f32, -8.0 + h * j as f32]))
        .collect();
    let mass: f64 = m
        .model
        .log_probs(&grid)
        .iter()
        .map(|lp| lp.as_ref().map_or(0.0, |v| (*v as f64).exp()))
        .sum::<f64>()
        * (h * h) as f64;
    assert!((mass - 1.0).abs() < 0.02, "mass {mass}");
    let (alone, _) = train::train(
        &ds,
        &TrainConfig {
            gaussians: false,
            ..cfg
        },
        false,
    )
    .unwrap();
    // The student and the broad Gaussian (`--defensive-weight`).
    assert_eq!(alone.model.flows.len(), 2);
    let d = alone.provenance.settings.distillation.as_ref().unwrap();
    assert!(d.gaussians.is_none() && d.gaussians_alone.is_none());
}

fn rayon_one_thread<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    flowmote_tools::train::with_threads(1, f)
}

#[test]
fn cli_round_trip_train_calibrate_eval_score_sample() {
    let dir = tmpdir("cli");
    let (tr, te) = (banana(400, 11), banana(200, 12));
    let ptr = dir.join("train.csv");
    write_csv(&ptr, "u,v", &tr);
    // Test file with labels: anomalies far off the banana, a NaN row.
    let mut s = String::from("v,u,label\n");
    for r in &te {
        s.push_str(&format!("{},{},0\n", r[1], r[0]));
    }
    for k in 0..20 {
        s.push_str(&format!("{},{},1\n", 20.0 + k as f32, 10.0));
    }
    s.push_str("NaN,1,0\n");
    let pte = dir.join("test.csv");
    std::fs::write(&pte, s).unwrap();
    let model = dir.join("model.json");
    let targs = cli::TrainArgs {
        delimiter: None,
        data: ptr.clone(),
        out: model.clone(),
        label_column: None,
        columns: None,
        exclude: vec![],
        val_out: None,
        teacher_out: None,
        window: None,
        hop: None,
        features: None,
        json: false,
        quiet: true,
        config: TrainConfig {
            flow: FlowKind::Maf,
            layers: Some(2),
            hidden: Some(8),
            depth: 1,
            epochs: Some(5),
            batch: 64,
            lr: 5e-3,
            weight_decay: 1e-4,
            patience: None,
            seed: 0,
            val_fraction: 0.2,
            dequantize: true,
            noise: Some(0.0),
            val_split: ValSplit::Last,
            folds: Some(1),
            whiten: true,
            mixture: true,
            max_params: None,
            max_macs: None,
            clamp: 3.0,
            cnf_steps: 4,
            bins: 8,
            tail_bound: 3.0,
            ..TrainConfig::default()
        },
    };
    cli::run_train(&targs).unwrap();
    let th = cli::run_calibrate(&cli::CalibrateArgs {
        delimiter: None,
        weights: None,
        model: model.clone(),
        data: ptr.clone(),
        false_alarm_rate: 0.05,
        label_column: None,
        out: None,
        json: false,
    })
    .unwrap();
    assert_eq!(ModelFile::load(&model).unwrap().threshold.unwrap(), th);
    let ev = cli::run_eval(&cli::EvalArgs {
        delimiter: None,
        weights: None,
        model: model.clone(),
        data: pte.clone(),
        label_column: Some("label".into()),
        json: true,
        gaussian_baseline: None,
    })
    .unwrap();
    let ev = serde_json::to_value(&ev).unwrap();
    assert_eq!(ev["rows"], 221);
    assert_eq!(ev["n"], 220);
    assert_eq!(ev["unscorable"], 1);
    assert!(ev["nll"].as_f64().unwrap().is_finite());
    assert!(ev["auroc"].as_f64().unwrap() > 0.9, "{ev}");
    assert!(ev["detection_rate"].as_f64().unwrap() > 0.9);
    let sc = cli::run_score(&cli::ScoreArgs {
        delimiter: None,
        model: model.clone(),
        data: pte.clone(),
        out: Some(dir.join("scores.csv")),
        label_column: Some("label".into()),
    })
    .unwrap();
    let last = sc.lines().last().unwrap();
    assert!(last.starts_with("222,,,1,") && last.contains("NaN"), "{last}");
    let smp = cli::run_sample(&cli::SampleArgs {
        model: model.clone(),
        n: 5,
        seed: 1,
        out: Some(dir.join("s.csv")),
        log_prob: true,
    })
    .unwrap();
    assert_eq!(smp.lines().next().unwrap(), "u,v,log_prob");
    assert_eq!(smp.lines().count(), 6);
}

fn train_err(csv: &str, label: Option<&str>, flow: FlowKind) -> String {
    let dir = tmpdir("bad");
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(csv, &mut h);
    let p = dir.join(format!("{}.csv", std::hash::Hasher::finish(&h)));
    std::fs::write(&p, csv).unwrap();
    let a = cli::TrainArgs {
        delimiter: None,
        data: p,
        out: dir.join("never.json"),
        label_column: label.map(String::from),
        columns: None,
        exclude: vec![],
        val_out: None,
        teacher_out: None,
        window: None,
        hop: None,
        features: None,
        json: false,
        quiet: true,
        config: TrainConfig {
            flow,
            layers: Some(1),
            hidden: Some(4),
            depth: 1,
            epochs: Some(1),
            batch: 8,
            lr: 1e-3,
            weight_decay: 0.0,
            patience: None,
            seed: 0,
            val_fraction: 0.1,
            dequantize: true,
            noise: Some(0.0),
            val_split: ValSplit::Last,
            folds: Some(1),
            whiten: true,
            mixture: true,
            max_params: None,
            max_macs: None,
            clamp: 3.0,
            cnf_steps: 2,
            bins: 8,
            tail_bound: 3.0,
            ..TrainConfig::default()
        },
    };
    let e = format!("{:#}", cli::run_train(&a).unwrap_err());
    assert!(!dir.join("never.json").exists(), "no output on error");
    e
}

fn rows_text(n: usize, d: usize) -> String {
    let mut r = Xoshiro256PlusPlus::seed_from_u64(1);
    let mut s = (0..d).map(|j| format!("c{j}")).collect::<Vec<_>>().join(",") + "\n";
    for _ in 0..n {
        s += &(0..d)
            .map(|_| format!("{}", (r.next_u32() % 1000) as f32 / 7.0))
            .collect::<Vec<_>>()
            .join(",");
        s.push('\n');
    }
    s
}

#[test]
fn bad_input_is_a_clear_error() {
    let base = rows_text(30, 2);
    let e = train_err(&format!("{base}1,abc\n"), None, FlowKind::Maf);
    assert!(
        e.contains("line 32, column 2 \"c1\"") && e.contains("not a number"),
        "{e}"
    );
    let e = train_err(&format!("{base}1,inf\n"), None, FlowKind::Maf);
    assert!(e.contains("line 32") && e.contains("infinite"), "{e}");
    let e = train_err(&format!("{base}1,NaN\n"), None, FlowKind::Maf);
    assert!(e.contains("line 32") && e.contains("NaN"), "{e}");
    let e = train_err(&format!("{base}1,2,3\n"), None, FlowKind::Maf);
    assert!(e.contains("line 32") && e.contains("malformed CSV"), "{e}");
    let e = train_err(&format!("{base}1,\n"), None, FlowKind::Maf);
    assert!(e.contains("line 32") && e.contains("empty cell"), "{e}");
    let e = train_err("1,2\n3,4\n", None, FlowKind::Maf);
    assert!(e.contains("header"), "{e}");
    let e = train_err(&rows_text(3, 2), None, FlowKind::Maf);
    assert!(e.contains("at least 10"), "{e}");
    let e = train_err(&rows_text(30, 1), None, FlowKind::Coupling);
    assert!(e.contains("coupling flow needs at least 2 columns"), "{e}");
    let e = train_err(&base, Some("label"), FlowKind::Maf);
    assert!(e.contains("no label column \"label\""), "{e}");

    // Model-side errors.
    let dir = tmpdir("badmodel");
    let p = dir.join("t.csv");
    std::fs::write(&p, rows_text(40, 2)).unwrap();
    let model = dir.join("m.json");
    let ds = data::load_training(&p, None).unwrap();
    let (m, _) = train::train(
        &ds,
        &TrainConfig {
            epochs: Some(1),
            ..small_cfg(0)
        },
        false,
    )
    .unwrap();
    m.save(&model).unwrap();
    let wrong = dir.join("w.csv");
    std::fs::write(&wrong, rows_text(5, 3).replacen("c", "x", 3)).unwrap();
    let e = cli::run_eval(&cli::EvalArgs {
        delimiter: None,
        weights: None,
        model: model.clone(),
        data: wrong,
        label_column: None,
        json: true,
        gaussian_baseline: None,
    })
    .unwrap_err();
    assert!(format!("{e:#}").contains("the model has 2 features"), "{e:#}");
    let text = std::fs::read_to_string(&model).unwrap();
    let v3 = dir.join("v3.json");
    std::fs::write(&v3, text.replacen("\"version\": 2", "\"version\": 3", 1)).unwrap();
    let e = ModelFile::load(&v3).unwrap_err();
    assert!(format!("{e:#}").contains("version 3"), "{e:#}");
    // A version-1 file (one `flow`, before mixtures) still loads, as that flow.
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let flow = v["model"]["flows"][0].take();
    let o = v.as_object_mut().unwrap();
    o.remove("model");
    o.insert("flow".into(), flow);
    o.insert("version".into(), 1.into());
    let v1 = dir.join("v1.json");
    std::fs::write(&v1, serde_json::to_string(&v).unwrap()).unwrap();
    assert_eq!(ModelFile::load(&v1).unwrap(), ModelFile::load(&model).unwrap());
    let nan = dir.join("nan.json");
    let js = serde_json_to_string(&m, &dir);
    std::fs::write(&nan, js).unwrap();
    let e = ModelFile::load(&nan).unwrap_err();
    assert!(format!("{e:#}").contains("non-finite"), "{e:#}");
    // Calibrate with a bad rate leaves the model untouched.
    let before = std::fs::read(&model).unwrap();
    assert!(cli::run_calibrate(&cli::CalibrateArgs {
        delimiter: None,
        weights: None,
        model: model.clone(),
        data: p,
        false_alarm_rate: 1.5,
        label_column: None,
        out: None,
        json: false,
    })
    .is_err());
    assert_eq!(before, std::fs::read(&model).unwrap());
}

/// The saved model's JSON with the first conditioner weight replaced by
/// `1e39` (infinite as an f32).
fn serde_json_to_string(m: &ModelFile, dir: &std::path::Path) -> String {
    let p = dir.join("ok.json");
    m.save(&p).unwrap();
    let t = std::fs::read_to_string(&p).unwrap();
    let i = t.find("\"params\": [").unwrap() + "\"params\": [".len();
    let j = i + t[i..].find(',').unwrap();
    format!("{}1e39{}", &t[..i], &t[j..])
}

#[test]
fn untrained_whitened_flow_is_the_full_covariance_gaussian() {
    // [standardise, whitening LU or triangular layer] with no ridge is
    // exactly the maximum-likelihood Gaussian of the rows: the flow starts
    // from that fit.
    let lu: Whitening = |r, m, s, ridge| train::whitening_layer(r, m, s, ridge).unwrap();
    let tri: Whitening = |r, m, s, ridge| train::triangular_whitening_layer(r, m, s, ridge).unwrap();
    for whitening in [lu, tri] {
        untrained_flow_is_the_gaussian(whitening);
    }
}

/// A whitening layer's builder: rows, mean, std, ridge.
type Whitening = fn(&[Vec<f32>], &[f32], &[f32], f64) -> Layer;

fn untrained_flow_is_the_gaussian(whitening: Whitening) {
    let rows = banana(500, 21);
    let d = 2;
    let n = rows.len() as f64;
    let mean: Vec<f32> = (0..d)
        .map(|j| (rows.iter().map(|r| r[j] as f64).sum::<f64>() / n) as f32)
        .collect();
    let std: Vec<f32> = (0..d)
        .map(|j| {
            let m = mean[j] as f64;
            ((rows.iter().map(|r| (r[j] as f64 - m).powi(2)).sum::<f64>() / n).sqrt()) as f32
        })
        .collect();
    let flow = DynFlow {
        weights: Default::default(),
        dim: d,
        layers: vec![
            train::standardize_layer(&mean, &std),
            whitening(&rows, &mean, &std, 0.0),
        ],
    };
    flow.validate().unwrap();
    let g = Gaussian::fit(&rows).unwrap();
    let mut ws = Workspace::new(&flow);
    for x in banana(50, 22) {
        let lp = flow.log_prob(&x, &mut ws).unwrap() as f64;
        let want = g.log_prob(&x);
        assert!((lp - want).abs() <= 1e-4 * want.abs().max(1.0), "{lp} vs {want}");
    }
    // A duplicated column: the training ridge (≥ 1e-3) keeps the layer well
    // conditioned, so the flow stays valid and finite.
    let dup: Vec<Vec<f32>> = rows.iter().map(|r| vec![r[0], r[0]]).collect();
    let (m2, s2) = ([mean[0], mean[0]], [std[0], std[0]]);
    let flow = DynFlow {
        weights: Default::default(),
        dim: d,
        layers: vec![train::standardize_layer(&m2, &s2), whitening(&dup, &m2, &s2, 1e-3)],
    };
    flow.validate().unwrap();
    let mut ws = Workspace::new(&flow);
    assert!(dup.iter().all(|x| flow.log_prob(x, &mut ws).unwrap().is_finite()));
    // A model file's layer with a weight short or not finite is refused.
    let mut bad = flow.clone();
    if let Some(p) = bad.layers[1].params_mut() {
        p.pop();
    }
    assert!(bad.validate().is_err());
    let mut bad = flow.clone();
    if let Some(p) = bad.layers[1].params_mut() {
        p[0] = f32::NAN;
    }
    assert!(bad.validate().is_err());
}

#[test]
fn validation_rows_are_the_last_rows_of_the_file_by_default() {
    let rows = banana(200, 31);
    let (_, ds) = training_set("valsplit", &rows);
    let cfg = TrainConfig {
        epochs: Some(2),
        ..small_cfg(3)
    };
    let (_, s) = train::train(&ds, &cfg, false).unwrap();
    assert_eq!(s.validation, rows[180..].to_vec(), "last 10 % in file order");
    let (_, r) = train::train(
        &ds,
        &TrainConfig {
            val_split: ValSplit::Random,
            ..cfg
        },
        false,
    )
    .unwrap();
    assert_eq!(r.validation.len(), 20);
    assert_ne!(r.validation, rows[180..].to_vec(), "a random sample");
    assert!(r.validation.iter().all(|v| rows.contains(v)));
}

/// A budget bounds the kept model, not the search: the search's best model
/// (unbounded) is the teacher, and the kept student fits every limit; a
/// budget nothing meets is an error naming the smallest model tried.
#[test]
fn budgets_bound_the_kept_model() {
    let (_, ds) = training_set("budget", &banana(300, 41));
    let cfg = TrainConfig {
        epochs: Some(3),
        folds: Some(1),
        target: Some("host".into()),
        // The kept student's own validation NLL (the broad Gaussian has
        // its own test).
        defensive_weight: 0.0,
        ..TrainConfig::default()
    };
    let (free, _) = train::train(&ds, &cfg, false).unwrap();
    assert!(
        free.provenance.settings.distillation.is_none(),
        "host: no budget, no student"
    );
    let big = free.model.parameters();
    let limit = big / 2;
    let (m, s) = train::train(
        &ds,
        &TrainConfig {
            max_params: Some(limit),
            ..cfg.clone()
        },
        false,
    )
    .unwrap();
    assert!(
        s.parameters <= limit && m.model.parameters() <= limit,
        "{} > {limit}",
        s.parameters
    );
    let d = m.provenance.settings.distillation.as_ref().expect("distilled");
    assert!(d.teacher.parameters > limit, "the teacher is over the budget");
    assert!(!d.students.is_empty());
    for c in &d.students {
        assert!(c.parameters <= limit && c.val_nll.is_some(), "{c:?}");
        // As it would be kept: the broad Gaussian costs a row at most
        // −ln(1 − 0.001), and equals the raw figure where it does not fit.
        let (raw, judged) = (c.val_nll.unwrap(), c.judged_val_nll.expect("judged"));
        assert!(judged <= raw + 0.0011, "{c:?}");
    }
    // Students are trained both on the real rows alone and with teacher samples.
    assert!(d.students.iter().any(|c| c.teacher_samples == Some(0)));
    assert!(d.students.iter().any(|c| c.teacher_samples.unwrap_or(0) > 0));
    // The kept student is the best on validation (on its own, when
    // Gaussians beside it were kept).
    let best = d
        .students
        .iter()
        .filter_map(|c| c.val_nll)
        .fold(f64::INFINITY, f64::min);
    match &d.gaussians {
        Some(g) if g.kept => {
            assert_eq!(g.student_val_nll, best);
            assert_eq!(s.best_val_nll, g.val_nll);
            assert!(g.val_nll < best);
        }
        _ => assert_eq!(s.best_val_nll, best),
    }
    // Nothing fits, not even one diagonal Gaussian (2 columns: 5
    // parameters, 36 bytes): a clear error, before any training. The same
    // with the flow pinned, when only Gaussians would fit (no
    // multiply-adds).
    for (flag, c) in [
        (
            "--max-params",
            TrainConfig {
                max_params: Some(4),
                ..cfg.clone()
            },
        ),
        (
            "--max-macs",
            TrainConfig {
                max_macs: Some(10),
                flow: FlowKind::Maf,
                ..cfg.clone()
            },
        ),
        (
            "--max-flash",
            TrainConfig {
                target: None,
                max_flash: Some(30),
                ..cfg.clone()
            },
        ),
        (
            "--max-ms",
            TrainConfig {
                target: Some("rp2040".into()),
                max_ms: Some(0.001),
                ..cfg.clone()
            },
        ),
    ] {
        let e = training_error(&ds, c);
        assert!(e.contains(flag) && e.contains("smallest tried"), "{flag}: {e}");
    }
    let e = training_error(
        &ds,
        TrainConfig {
            target: Some("atmega".into()),
            ..cfg.clone()
        },
    );
    assert!(e.contains("nrf52840") && e.contains("rp2040"), "{e}");
}

/// When no flow fits the budget but Gaussians do (a soft-float part on
/// wide data), the search left to choose keeps the Gaussians alone: within
/// the budget, judged on the held-out rows, the teacher recorded beside
/// them, and a file that loads and exports.
#[test]
fn no_flow_within_the_budget_keeps_gaussians_alone() {
    let (_, ds) = training_set("gaussians-alone", &blobs(300, 43));
    let cfg = TrainConfig {
        epochs: Some(3),
        folds: Some(1),
        target: Some("host".into()),
        max_macs: Some(10),
        ..TrainConfig::default()
    };
    let (m, s) = train::train(&ds, &cfg, false).unwrap();
    assert_eq!(m.kind, flowmote_tools::model::GAUSSIANS_KIND);
    assert!(m.model.macs() <= 10);
    assert!(m.model.flows.len() >= 2, "blobs are clusters: {}", m.model.flows.len());
    let d = m
        .provenance
        .settings
        .distillation
        .as_ref()
        .expect("a distillation record");
    assert!(d.students.is_empty());
    assert!(d.kept.contains("no flow fits"), "{}", d.kept);
    assert!(d.teacher.macs > 10 && d.teacher.val_nll.is_some());
    assert!(
        cli::describe_model(&m).contains("Gaussian(s)"),
        "{}",
        cli::describe_model(&m)
    );
    // Judged as every student is: its mean NLL on the held-out rows.
    let lps = m.model.log_probs(&s.validation);
    let nll = -lps.iter().map(|l| *l.as_ref().unwrap() as f64).sum::<f64>() / lps.len() as f64;
    assert!(!s.validation.is_empty());
    assert!(
        (nll - s.best_val_nll).abs() < 1e-9 * (1.0 + nll.abs()),
        "{nll} vs {}",
        s.best_val_nll
    );
    assert_eq!(m.provenance.val_nll, s.best_val_nll);
    // A file that loads as it was saved and exports.
    let dir = tmpdir("gaussians-alone");
    let path = dir.join("m.json");
    m.save(&path).unwrap();
    let back = ModelFile::load(&path).unwrap();
    assert_eq!(back.model.log_probs(&s.validation), lps);
    let src = flowmote_tools::export::export(&back, &flowmote_tools::export::ExportOptions::default()).unwrap();
    assert!(src.source.contains("ActNorm::new"));
    // --no-gaussians: the error, as with the flow pinned.
    let e = training_error(
        &ds,
        TrainConfig {
            gaussians: false,
            ..cfg.clone()
        },
    );
    assert!(e.contains("smallest tried") && e.contains("--max-macs"), "{e}");
}

/// Gaussians alone compete with the students: on rows drawn from three
/// Gaussians, against students trained for three epochs, they fit the
/// held-out rows better and are kept, with the students and the record of
/// both in the file; with the family pinned they are not tried. (100
/// parameters: the eighth of the budget the Gaussians beside a student may
/// take holds two of the three, the whole budget all three.)
#[test]
fn gaussians_alone_compete_with_the_students() {
    let (_, ds) = training_set("gaussians-compete", &blobs(400, 47));
    let cfg = TrainConfig {
        epochs: Some(3),
        folds: Some(1),
        target: Some("host".into()),
        max_params: Some(100),
        defensive_weight: 0.0,
        ..TrainConfig::default()
    };
    let (m, s) = train::train(&ds, &cfg, false).unwrap();
    let d = m
        .provenance
        .settings
        .distillation
        .as_ref()
        .expect("a distillation record");
    let a = d.gaussians_alone.as_ref().expect("tried");
    assert!(!d.students.is_empty());
    assert_eq!(m.kind, flowmote_tools::model::GAUSSIANS_KIND, "{}", d.kept);
    assert!(a.kept && a.val_nll == s.best_val_nll, "{a:?}");
    let best = d
        .students
        .iter()
        .filter_map(|c| c.val_nll)
        .fold(f64::INFINITY, f64::min);
    let beat = a.student_val_nll.expect("a student to beat");
    assert!(
        beat <= best && a.val_nll + 1.0 / (s.val_rows as f64) < beat,
        "{a:?} {best}"
    );
    assert!(s.parameters <= 100 && m.model.parameters() <= 100);
    assert!(d.kept.contains("better on the held-out rows"), "{}", d.kept);
    let (p, _) = train::train(
        &ds,
        &TrainConfig {
            flow: FlowKind::Maf,
            ..cfg.clone()
        },
        false,
    )
    .unwrap();
    assert_eq!(p.kind, "maf");
    let d = p.provenance.settings.distillation.as_ref().unwrap();
    assert!(d.gaussians_alone.is_none());
}

/// The broad Gaussian of `--defensive-weight` (default 0.001) mixed into a
/// device's kept model as its last member: every row pays at most
/// `−ln(1 − w)` nats against the model without it, a row far from the data
/// scores no more than `−ln w` above the broad Gaussian's own score
/// (computed here from the model's mean and std), and the validation NLL
/// reported is the mixture's.
#[test]
fn a_broad_gaussian_bounds_the_score_of_far_rows() {
    let (_, ds) = training_set("defensive", &banana(400, 53));
    let cfg = TrainConfig {
        epochs: Some(4),
        folds: Some(1),
        ..TrainConfig::default()
    };
    let (m, s) = train::train(&ds, &cfg, false).unwrap();
    let (b, _) = train::train(
        &ds,
        &TrainConfig {
            defensive_weight: 0.0,
            ..cfg.clone()
        },
        false,
    )
    .unwrap();
    let w = 0.001f64;
    assert_eq!(m.provenance.settings.broad_weight, w);
    assert_eq!(b.provenance.settings.broad_weight, 0.0);
    assert!(cli::describe_model(&m).ends_with("and a broad Gaussian at weight 0.001"));
    assert!(!cli::describe_model(&b).contains("broad"));
    // The model without it: the other members at their own weights.
    let n = m.model.flows.len() - 1;
    let without = DynMixture {
        log_weights: m.model.log_weights[..n]
            .iter()
            .map(|l| (*l as f64 - (-w).ln_1p()) as f32)
            .collect(),
        flows: m.model.flows[..n].to_vec(),
    };
    without.validate().unwrap();
    assert!((m.model.log_weights[n] as f64 - w.ln()).abs() < 1e-6);
    // The broad Gaussian's −log density, independently.
    let broad = |x: &[f32]| -> f64 {
        x.iter()
            .zip(m.mean.iter().zip(&m.std))
            .map(|(x, (mu, sd))| {
                let sd = 4.0 * *sd as f64;
                let z = (*x as f64 - *mu as f64) / sd;
                0.5 * z * z + sd.ln() + 0.5 * (2.0 * std::f64::consts::PI).ln()
            })
            .sum()
    };
    let mut rows = s.validation.clone();
    rows.extend([vec![40.0, -30.0], vec![-25.0, 60.0], vec![8.0, 8.0]]);
    let (with, without) = (m.model.log_probs(&rows), without.log_probs(&rows));
    for (x, (lw, lb)) in rows.iter().zip(with.iter().zip(&without)) {
        let (nw, nb) = (-*lw.as_ref().unwrap() as f64, -*lb.as_ref().unwrap() as f64);
        assert!(nw <= nb - (-w).ln_1p() + 1e-4, "{x:?}: {nw} vs {nb}");
        assert!(nw <= broad(x) - w.ln() + 1e-3, "{x:?}: {nw} vs broad {}", broad(x));
    }
    // Far rows: the bound is what scores them.
    let far = -*with[rows.len() - 3].as_ref().unwrap() as f64;
    assert!(
        far < -*without[rows.len() - 3].as_ref().unwrap() as f64,
        "the flow alone scores it worse"
    );
    let lps = m.model.log_probs(&s.validation);
    let nll = -lps.iter().map(|l| *l.as_ref().unwrap() as f64).sum::<f64>() / lps.len() as f64;
    assert!((nll - s.best_val_nll).abs() < 1e-9 * (1.0 + nll.abs()));
    // Out of range: a clear error.
    let e = training_error(
        &ds,
        TrainConfig {
            defensive_weight: 0.5,
            ..cfg.clone()
        },
    );
    assert!(e.contains("--defensive-weight"), "{e}");
}

/// The default target is the nRF52840: the kept model fits 64 KB of weights
/// and 2 ms per score there, and no student trained on the rows that chose it.
#[test]
fn the_default_target_keeps_a_model_within_its_budget() {
    let (_, ds) = training_set("default-target", &banana(400, 43));
    let cfg = TrainConfig {
        epochs: Some(3),
        ..TrainConfig::default()
    };
    let (m, s) = train::train(&ds, &cfg, false).unwrap();
    let cost = flowmote_tools::target::ModelCost::of(&m.model);
    let t = flowmote_tools::target::find("nrf52840").unwrap();
    assert!(cost.weight_bytes <= 64 * 1024, "{cost:?}");
    assert!(t.estimated_ms_of(&cost).unwrap() <= 2.0, "{cost:?}");
    assert_eq!(m.provenance.settings.config.target.as_deref(), Some("nrf52840"));
    let d = m
        .provenance
        .settings
        .distillation
        .as_ref()
        .expect("a device target distils or keeps its teacher");
    // The student's validation rows are held out from the teacher too.
    assert_eq!(s.val_rows, 40);
    assert!(d.teacher.val_nll.is_some_and(f64::is_finite));
    for v in &s.validation {
        assert!(ds.rows[360..].contains(v), "validation rows are the file's last 10 %");
    }
}

/// On a small file (its teacher a committee of folds), committees of
/// students compete with the single students: per shape within a fifth of
/// the budget, five flows of it, one per fold of the teacher's rows, with
/// equal weights. Every candidate is within the budget and judged on the
/// same held-out rows, and the kept one is the best of them as kept; a kept
/// committee is that mixture (and the broad Gaussian). `--no-committee-students`
/// trains none.
#[test]
fn committees_of_students_compete_on_small_files() {
    let (_, ds) = training_set("committee-students", &banana(400, 47));
    let cfg = TrainConfig {
        epochs: Some(4),
        max_flash: Some(8 * 1024),
        gaussians: false,
        ..TrainConfig::default()
    };
    let (m, s) = train::train(&ds, &cfg, false).unwrap();
    let d = m.provenance.settings.distillation.as_ref().expect("distilled");
    let committees: Vec<_> = d.students.iter().filter(|c| c.committee.is_some()).collect();
    assert!(!committees.is_empty(), "{:?}", d.students);
    for c in &committees {
        assert_eq!(c.committee, Some(train::SMALL_DATA_FOLDS), "{c:?}");
        assert!(c.weight_bytes.unwrap() <= 8 * 1024, "{c:?}");
        assert!(c.val_nll.is_some_and(f64::is_finite), "{c:?}");
        assert_eq!(c.teacher_samples, Some(0));
    }
    // Kept: the best candidate as kept, on the 40 held-out rows.
    assert_eq!(s.val_rows, 40);
    let best = d
        .students
        .iter()
        .filter_map(|c| c.judged_val_nll)
        .fold(f64::INFINITY, f64::min);
    assert!((s.best_val_nll - best).abs() < 1e-6, "{} vs {best}", s.best_val_nll);
    let kept_committee = d.kept.contains("committee");
    let flows = m.model.flows.len() - 1; // less the broad Gaussian
    assert_eq!(m.provenance.settings.broad_weight, 0.001);
    if kept_committee {
        assert_eq!(flows, train::SMALL_DATA_FOLDS);
        for lw in &m.model.log_weights[..flows] {
            assert!((f64::from(*lw).exp() - 0.999 / flows as f64).abs() < 1e-6);
        }
    } else {
        assert_eq!(flows, 1);
    }
    m.model.validate().unwrap();
    assert!(flowmote_tools::target::ModelCost::of(&m.model).weight_bytes <= 8 * 1024);
    // Without them: the single students only, the same ones.
    let (m2, _) = train::train(
        &ds,
        &TrainConfig {
            committee_students: false,
            ..cfg.clone()
        },
        false,
    )
    .unwrap();
    let d2 = m2.provenance.settings.distillation.unwrap();
    assert!(d2.students.iter().all(|c| c.committee.is_none()));
    assert_eq!(d2.students.len() + committees.len(), d.students.len());
    eprintln!("kept: {}", d.kept);
}

/// `--student-weights i8`: the kept student is stored as i8, judged as
/// stored (its validation NLL is the compressed model's), and saved as a
/// version-4 model file that loads again.
#[test]
fn compressed_students_are_judged_and_kept_as_stored() {
    let (dir, ds) = training_set("i8-students", &banana(1200, 45));
    let cfg = TrainConfig {
        epochs: Some(2),
        max_flash: Some(3 * 1024),
        student_weights: Some(flowmote_tools::model::Storage::I8),
        ..TrainConfig::default()
    };
    let (m, s) = train::train(&ds, &cfg, false).unwrap();
    // Gaussians beside the student (if kept) share its storage.
    assert_eq!(m.model.storage(), flowmote_tools::model::Storage::I8);
    m.model.validate().unwrap();
    assert!(m.model.weight_bytes() <= 3 * 1024);
    let lps = m.model.log_probs(&s.validation);
    assert!(lps.iter().all(|lp| lp.is_ok()));
    let nll = -lps.iter().map(|lp| *lp.as_ref().unwrap() as f64).sum::<f64>() / lps.len() as f64;
    assert!(
        (nll - s.best_val_nll).abs() <= 1e-9 * nll.abs().max(1.0),
        "{nll} vs {}",
        s.best_val_nll
    );
    let d = m.provenance.settings.distillation.as_ref().expect("distilled");
    assert!(d.kept.contains(" i8 "), "{}", d.kept);
    assert!(d
        .students
        .iter()
        .all(|c| c.storage == flowmote_tools::model::Storage::I8));
    let path = dir.with_file_name("i8.json");
    m.save(&path).unwrap();
    let back = ModelFile::load(&path).unwrap();
    assert_eq!(back.version, flowmote_tools::model::VERSION_WITH_WEIGHTS);
    assert_eq!(back.model, m.model);
}

/// A file large enough for one validation split: the teacher's search
/// adds no bigger candidate once its best is over the budget, and the
/// students train on the real rows alone (no teacher samples drawn).
#[test]
fn a_large_files_teacher_is_not_grown_and_its_students_take_no_samples() {
    let (_, ds) = training_set("large-file", &banana(1200, 44));
    let cfg = TrainConfig {
        epochs: Some(2),
        max_flash: Some(3 * 1024),
        ..TrainConfig::default()
    };
    let (m, s) = train::train(&ds, &cfg, false).unwrap();
    let d = m.provenance.settings.distillation.as_ref().expect("distilled");
    assert_eq!((d.samples_per_epoch, d.pool), (0, 0));
    assert!(!d.students.is_empty());
    assert!(
        d.students.iter().all(|c| c.teacher_samples == Some(0)),
        "{:?}",
        d.students
    );
    let teacher = s.teacher.as_ref().expect("the teacher");
    let search = teacher.provenance.settings.search.as_ref().expect("a search");
    // Every candidate at the first one's size: the noise and family steps
    // ran, the size step did not.
    assert!(search.len() >= 2);
    assert!(
        search
            .iter()
            .all(|c| (c.layers, c.hidden) == (search[0].layers, search[0].hidden)),
        "{search:?}"
    );
}

/// Fold `k` of `n` holds out a contiguous block; the blocks cover every row
/// exactly once and differ in size by at most one row.
#[test]
fn fold_blocks_partition_the_rows() {
    for total in [10, 43, 214, 1000, 5632] {
        for n in 2..=10 {
            let blocks: Vec<(usize, usize)> = (0..n).map(|k| train::fold_block(total, k, n)).collect();
            assert_eq!(blocks[0].0, 0);
            assert_eq!(blocks[n - 1].1, total);
            for w in blocks.windows(2) {
                assert_eq!(w[0].1, w[1].0, "contiguous");
            }
            let sizes: Vec<usize> = blocks.iter().map(|(lo, hi)| hi - lo).collect();
            let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(hi - lo <= 1, "{total} rows in {n} folds: {sizes:?}");
        }
    }
}

/// Cross-validation is the default exactly when one split would validate on
/// fewer than `MIN_VALIDATION_ROWS` rows.
#[test]
fn small_data_is_cross_validated_by_default() {
    assert_eq!(train::default_folds(214, 0.1), train::SMALL_DATA_FOLDS);
    assert_eq!(train::default_folds(994, 0.1), train::SMALL_DATA_FOLDS);
    assert_eq!(train::default_folds(995, 0.1), 1, "99.5 rounds to 100 validation rows");
    assert_eq!(train::default_folds(5632, 0.1), 1);
    assert_eq!(train::default_folds(400, 0.25), 1);
    assert_eq!(train::default_folds(214, 0.0), 1, "no validation asked for");
    // And `train` follows it when --folds is not given.
    let (_, ds) = training_set("auto-folds", &banana(150, 41));
    let cfg = TrainConfig {
        epochs: Some(2),
        folds: None,
        mixture: false,
        ..small_cfg(3)
    };
    let (m, s) = train::train(&ds, &cfg, false).unwrap();
    assert_eq!(
        serde_json::to_value(&m.provenance.settings).unwrap()["folds"],
        train::SMALL_DATA_FOLDS
    );
    assert_eq!(m.model.flows.len(), train::SMALL_DATA_FOLDS);
    assert_eq!((s.train_rows, s.val_rows), (150, 150), "every row validated once");
    assert!(s.validation.is_empty(), "no row is unseen by the whole committee");
}

/// `--folds 3`: the committee is the equal-weight mixture of three searches,
/// fold `k` exactly the model trained with block `k` held out; its
/// cross-validated NLL is the row-weighted mean of the folds' validation
/// NLLs; its density is the mean of the members' (f64 reference); it
/// survives save/load; and the parameter budget is split over the folds.
#[test]
fn folds_train_an_equal_weight_committee() {
    let (csv, ds) = training_set("folds", &banana(200, 42));
    let cfg = TrainConfig {
        epochs: Some(3),
        folds: Some(3),
        mixture: false,
        ..small_cfg(5)
    };
    let (m, s) = train::train(&ds, &cfg, false).unwrap();
    m.validate().unwrap();
    assert_eq!(m.kind, "mixture");
    assert_eq!(m.model.flows.len(), 3);
    for lw in &m.model.log_weights {
        assert!((lw.exp() - 1.0 / 3.0).abs() < 1e-6, "{lw}");
    }
    let results = serde_json::to_value(&m.provenance.settings).unwrap()["fold_results"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(results.len(), 3);
    let mut weighted = 0.0;
    for (k, result) in results.iter().enumerate() {
        let alone = TrainConfig {
            folds: Some(1),
            fold: Some((k, 3)),
            ..cfg.clone()
        };
        let (f, fs) = train::train(&ds, &alone, false).unwrap();
        assert_eq!(&m.model.flows[k], f.model.as_single().unwrap(), "fold {k}");
        let (lo, hi) = train::fold_block(200, k, 3);
        assert_eq!(fs.val_rows, hi - lo);
        assert_eq!(result["val_nll"].as_f64().unwrap(), fs.best_val_nll);
        weighted += fs.best_val_nll * fs.val_rows as f64;
    }
    assert!((s.best_val_nll - weighted / 200.0).abs() < 1e-9);
    assert_eq!(m.provenance.val_nll, s.best_val_nll);
    // log p of the committee = log of the members' mean density.
    let mut ws = m.model.workspace();
    let mut fws: Vec<Workspace> = m.model.flows.iter().map(Workspace::new).collect();
    for x in banana(20, 43) {
        let lp = m.model.log_prob(&x, &mut ws).unwrap() as f64;
        let mean: f64 = m
            .model
            .flows
            .iter()
            .zip(&mut fws)
            .map(|(f, w)| (f.log_prob(&x, w).unwrap() as f64).exp())
            .sum::<f64>()
            / 3.0;
        assert!(
            (lp - mean.ln()).abs() < 1e-4 * lp.abs().max(1.0),
            "{lp} vs {}",
            mean.ln()
        );
    }
    let p = csv.with_file_name("committee.json");
    m.save(&p).unwrap();
    assert_eq!(ModelFile::load(&p).unwrap().model, m.model);
    assert!(cli::describe_model(&m).starts_with("a 3-fold committee of 3 flows"));
    // --max-params bounds the kept model, its three weights included: the
    // pinned committee within the budget is trained as it is; one weight
    // less distils it into one flow.
    let one = m.model.flows[0].parameters();
    assert_eq!(m.model.parameters(), 3 * one + 3);
    let budget = TrainConfig {
        max_params: Some(3 * one + 3),
        ..cfg.clone()
    };
    let (b, _) = train::train(&ds, &budget, false).unwrap();
    assert_eq!(b.model, m.model);
    assert!(b.provenance.settings.distillation.is_none());
    assert_eq!(
        b.provenance.settings.broad_weight, 0.0,
        "no room for the broad Gaussian"
    );
    // With room for it, the same committee and the broad Gaussian.
    let (bg, _) = train::train(
        &ds,
        &TrainConfig {
            max_params: Some(3 * one + 3 + 16),
            ..cfg.clone()
        },
        false,
    )
    .unwrap();
    assert_eq!(bg.model.flows[..3], m.model.flows[..]);
    assert_eq!(bg.model.flows.len(), 4);
    assert_eq!(bg.provenance.settings.broad_weight, 0.001);
    assert!(bg.provenance.settings.distillation.is_none());
    let tight = TrainConfig {
        max_params: Some(3 * one + 2),
        ..cfg.clone()
    };
    let (t, _) = train::train(&ds, &tight, false).unwrap();
    let gaussians = match &t.provenance.settings.distillation.as_ref().unwrap().gaussians {
        Some(g) if g.kept => g.components,
        _ => 0,
    };
    let broad = usize::from(t.provenance.settings.broad_weight > 0.0);
    assert_eq!(t.model.flows.len(), 1 + gaussians + broad);
    assert!(t.model.parameters() <= 3 * one + 2);
    assert!(!t.provenance.settings.distillation.as_ref().unwrap().students.is_empty());
    // Out of range.
    let bad = TrainConfig { folds: Some(11), ..cfg };
    assert!(training_error(&ds, bad).contains("--folds"));
}

/// `--average`'s arithmetic: the rate `max(1 − β, 9/(t + 10))` per step,
/// applied to every trained layer, and nothing else.
#[test]
fn weight_average_moves_by_its_rate_and_converges() {
    let w = train::WeightAverage::new(0.999);
    assert_eq!(w.rate(1), 9.0 / 11.0);
    assert_eq!(w.rate(90), 9.0 / 100.0);
    assert!((w.rate(20_000) - 0.001).abs() < 1e-7, "{}", w.rate(20_000));
    let (a0, b) = (random_flow(FlowKind::Maf, 3, 1), random_flow(FlowKind::Maf, 3, 2));
    let mut avg = a0.clone();
    let mut w = train::WeightAverage::new(0.999);
    w.update(&mut avg, &b);
    let g = 9.0f32 / 11.0;
    for ((la, l0), lb) in avg.layers.iter().zip(&a0.layers).zip(&b.layers) {
        for ((a, p0), pb) in la.params().iter().zip(l0.params()).zip(lb.params()) {
            assert_eq!(*a, p0 + g * (pb - p0));
        }
    }
    // Held at b, the average converges to b (the rate tends to 1 − β).
    for _ in 0..20_000 {
        w.update(&mut avg, &b);
    }
    for (la, lb) in avg.layers.iter().zip(&b.layers) {
        for (a, pb) in la.params().iter().zip(lb.params()) {
            assert!((a - pb).abs() <= 1e-5 * pb.abs().max(1.0), "{a} vs {pb}");
        }
    }
}

/// With weight averaging (the default) the kept model is the average that
/// each epoch was judged on: its NLL on the validation rows is the best
/// epoch's, and it is not what training without the average keeps.
#[test]
fn the_kept_model_is_the_judged_weight_average() {
    let (_, ds) = training_set("average", &banana(300, 31));
    for average in [0.999, 0.0] {
        let cfg = TrainConfig {
            epochs: Some(12),
            average,
            ..small_cfg(4)
        };
        let (m, s) = train::train(&ds, &cfg, false).unwrap();
        let (kept, bad) = train::mean_nll(m.model.as_single().unwrap(), &s.validation);
        assert_eq!(bad, 0);
        assert_eq!(
            kept, s.best_val_nll,
            "average {average}: the kept model is the one judged"
        );
        let best = &m.provenance.history[s.best_epoch - 1];
        assert_eq!(best.val_nll, s.best_val_nll);
        assert_eq!(m.provenance.settings.config.average, average, "recorded");
    }
    let with = train::train(
        &ds,
        &TrainConfig {
            epochs: Some(12),
            ..small_cfg(4)
        },
        false,
    )
    .unwrap()
    .0;
    let without = train::train(
        &ds,
        &TrainConfig {
            epochs: Some(12),
            average: 0.0,
            ..small_cfg(4)
        },
        false,
    )
    .unwrap()
    .0;
    assert_ne!(with.model, without.model);
}
