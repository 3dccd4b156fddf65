//! Tests of the export: names, escaping, items and golden vectors.

use super::*;
use crate::model::{Act, DynMixture, Net};
use crate::model::{DynFlow, Provenance, FORMAT, VERSION};
use flowmote::MlpShape;

/// A daphnet-sized model: 9 features, 8 MAF layers of 64 hidden units.
fn big_model() -> ModelFile {
    let d = 9;
    let net = Net {
        hidden: 64,
        depth: 1,
        act: Act::Tanh,
    };
    let shape = MlpShape {
        input: d,
        cond: 0,
        hidden: 64,
        depth: 1,
        output: 2 * d,
    };
    let mut layers = vec![Layer::ActNorm {
        log_scale: vec![-3.0; d],
        shift: vec![0.5; d],
        frozen: true,
    }];
    let mut seed = 1u32;
    for _ in 0..8 {
        let mut params: Vec<f32> = (0..shape.n_params())
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (seed >> 8) as f32 / (1u32 << 24) as f32 * 0.2 - 0.1
            })
            .collect();
        flowmote::maf::made_mask_params(shape, &mut params).unwrap();
        layers.push(Layer::Maf {
            net,
            clamp: 3.0,
            params,
        });
        layers.push(Layer::Reverse);
    }
    ModelFile {
        format: FORMAT.into(),
        version: VERSION,
        tool_version: "0.1.0".into(),
        kind: "maf".into(),
        features: (0..d).map(|i| format!("f{i}")).collect(),
        features_pipeline: None,
        mean: vec![100.0; d],
        std: vec![20.0; d],
        model: DynMixture::single(DynFlow::new(d, layers)),
        threshold: None,
        provenance: Provenance::default(),
    }
}

#[test]
fn big_model_exports_quickly_and_deterministically() {
    let m = big_model();
    let t = std::time::Instant::now();
    let a = export(
        &m,
        &ExportOptions {
            name: None,
            rustfmt_dir: Some(std::env::temp_dir()),
        },
    )
    .unwrap();
    let took = t.elapsed();
    eprintln!(
        "{} bytes, {} lines, rustfmt {}, {took:?}",
        a.source.len(),
        a.source.lines().count(),
        a.rustfmt
    );
    let b = export(
        &m,
        &ExportOptions {
            name: None,
            rustfmt_dir: Some(std::env::temp_dir()),
        },
    )
    .unwrap();
    assert_eq!(a.source, b.source);
    assert!(a.source.contains("pub type Model = Flow<"));
    assert!(a.source.contains("data: unknown"));
    assert!(a.source.contains("validation NLL: n/a"));
}

#[test]
fn names() {
    assert!(check_name("MODEL").is_ok());
    assert!(check_name("GAIT_MODEL_2").is_ok());
    for bad in ["", "model", "Model", "_X", "2X", "A B", "DIM", "MEAN", "N"] {
        assert!(check_name(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn layout_without_rustfmt_is_deterministic_and_bounded() {
    let m = big_model();
    let a = export(&m, &ExportOptions::default()).unwrap();
    assert!(!a.rustfmt && a.rustfmt_error.is_none());
    assert_eq!(a.source, export(&m, &ExportOptions::default()).unwrap().source);
    assert!(
        a.source.lines().all(|l| l.starts_with("//") || l.len() <= WIDTH),
        "long line"
    );
}
