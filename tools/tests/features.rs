//! The feature spec travels with the model: `--window/--hop/--features`
//! parsed with errors naming the flag, windows computed by the core's
//! `window_features` (bit for bit), the spec stored in the model file
//! (format version 3) and applied by calibrate/score/eval, and exported as
//! typed Rust that compiles with the core — and does not compile against a
//! sensor with another channel count.

use flowmote::features::{window_features, Stat};
use flowmote_tools::data::{load_for_model, Dataset};
use flowmote_tools::features::FeatureSpec;
use flowmote_tools::model::ModelFile;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::flowmote;

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "flowmote failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    assert!(!o.status.success(), "flowmote should have failed");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A raw 3-channel sensor recording with a time column, `n` readings.
fn raw_csv(n: usize) -> String {
    let mut t = String::from("t,x,y,z\n");
    for i in 0..n {
        let f = i as f32;
        t.push_str(&format!(
            "{i},{:.4},{:.4},{:.4}\n",
            (0.3 * f).sin() + 0.05 * (1.7 * f).cos(),
            2.0 * (0.2 * f).cos() + 0.07 * (2.3 * f).sin(),
            5.0 + (0.9 * f).sin() * (0.05 * f).cos()
        ));
    }
    t
}

#[test]
fn spec_errors_name_the_flag() {
    let ch = || vec!["x".to_string(), "y".to_string()];
    let e = |w: usize, h: Option<usize>, f: &str| format!("{:#}", FeatureSpec::from_flags(ch(), w, h, f).unwrap_err());
    assert!(e(0, None, "mean").contains("--window 0"), "{}", e(0, None, "mean"));
    assert!(e(5000, None, "mean").contains("--window 5000"));
    assert!(e(8, Some(9), "mean").contains("--hop 9"));
    assert!(e(8, Some(0), "mean").contains("--hop 0"));
    let m = e(8, None, "mean,median");
    assert!(
        m.contains("--features") && m.contains("\"median\"") && m.contains("ptp"),
        "{m}"
    );
    let m = e(8, None, "mean,,std");
    assert!(m.contains("--features") && m.contains("empty"), "{m}");
    let m = e(8, None, "band5");
    assert!(m.contains("--features band5") && m.contains("0..=4"), "{m}");
    let m = e(8, None, "band3-1");
    assert!(m.contains("--features") && m.contains("above"), "{m}");
    let m = e(8, None, "bandx");
    assert!(m.contains("--features") && m.contains("bin number"), "{m}");
    let m = e(8, None, "std,std");
    assert!(m.contains("twice"), "{m}");
    let spec = FeatureSpec::from_flags(ch(), 8, None, "mean, band1-3,band4,ptp").unwrap();
    assert_eq!(spec.hop, 8);
    assert_eq!(
        spec.stats,
        [
            Stat::Mean,
            Stat::Band { lo: 1, hi: 3 },
            Stat::Band { lo: 4, hi: 4 },
            Stat::Ptp
        ]
    );
    assert_eq!(
        spec.feature_names(),
        [
            "x_mean",
            "x_band1-3",
            "x_band4",
            "x_ptp",
            "y_mean",
            "y_band1-3",
            "y_band4",
            "y_ptp"
        ]
    );
    // Through the binary: clap refuses --features without --window, and the
    // tool names the flag.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("raw.csv");
    fs::write(&data, raw_csv(64)).unwrap();
    let out = dir.path().join("m.json");
    let o = flowmote(&["train", "--data", s(&data), "--out", s(&out), "--features", "mean"]);
    assert!(err(&o).contains("--window"));
    let o = flowmote(&[
        "train",
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--window",
        "8",
        "--features",
        "mean,kurtosis",
    ]);
    assert!(err(&o).contains("--features: \"kurtosis\""));
    let o = flowmote(&[
        "train",
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--window",
        "100",
        "--features",
        "mean",
    ]);
    assert!(err(&o).contains("fewer than one window of 100"));
    assert!(!out.exists());
}

#[test]
fn windows_are_window_features_of_hand_sliced_windows_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("raw.csv");
    fs::write(&data, raw_csv(50)).unwrap();
    let ch = vec!["x".to_string(), "z".to_string(), "y".to_string()];
    let raw = load_for_model(&data, &ch, None).unwrap();
    let spec = FeatureSpec::from_flags(ch, 8, Some(3), "mean,std,rms,min,max,ptp,band1-2,band4").unwrap();
    let ds = spec.apply(&raw).unwrap();
    // Windows start at 0, 3, 6, … while 8 readings fit: (50 − 8) / 3 + 1 = 15.
    assert_eq!(ds.len(), 15);
    for (k, row) in ds.rows.iter().enumerate() {
        let start = 3 * k;
        let window: Vec<f32> = raw.rows[start..start + 8].iter().flatten().copied().collect();
        let mut want = vec![0.0f32; 3 * 8];
        window_features(&window, 3, &spec.stats, &mut want).unwrap();
        assert_eq!(
            row.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "window {k}"
        );
        // The line of a window is its last reading's (header = line 1).
        assert_eq!(ds.lines[k], start + 8 + 1);
        assert!(ds.row_errors[k].is_none());
    }
    // The device's fixed-size pipeline gives the same features.
    let mut p: flowmote::features::Pipeline<3, 8, 8, 24> = flowmote::features::Pipeline::new(
        [
            Stat::Mean,
            Stat::Std,
            Stat::Rms,
            Stat::Min,
            Stat::Max,
            Stat::Ptp,
            Stat::Band { lo: 1, hi: 2 },
            Stat::Band { lo: 4, hi: 4 },
        ],
        3,
    );
    let device: Vec<[f32; 24]> = raw
        .rows
        .iter()
        .filter_map(|r| p.push([r[0], r[1], r[2]]).map(|f| f.unwrap()))
        .collect();
    assert_eq!(device.len(), ds.len());
    for (d, h) in device.iter().zip(&ds.rows) {
        assert_eq!(
            d.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            h.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }
}

#[test]
fn an_unreadable_reading_makes_its_windows_unscorable() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = raw_csv(40);
    // Line 12 holds reading 10 (header on line 1).
    let lines: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 11 {
                "10,0.5,nan,5".to_string()
            } else {
                l.to_string()
            }
        })
        .collect();
    text = lines.join("\n") + "\n";
    let data = dir.path().join("bad.csv");
    fs::write(&data, &text).unwrap();
    let ch = vec!["x".to_string(), "y".to_string()];
    let raw: Dataset = load_for_model(&data, &ch, None).unwrap();
    let spec = FeatureSpec::from_flags(ch, 8, Some(4), "mean,std").unwrap();
    let ds = spec.apply(&raw).unwrap();
    // Windows 0..8, 4..12, 8..16, 12..20: reading 10 is in the 2nd and 3rd.
    let bad: Vec<usize> = (0..ds.len()).filter(|&i| ds.row_errors[i].is_some()).collect();
    assert_eq!(bad, [1, 2]);
    let e = ds.row_errors[1].as_deref().unwrap();
    assert!(
        e.contains("lines 6–13") && e.contains("line 12") && e.contains("NaN"),
        "{e}"
    );
    // Training on it is an error naming the line.
    let out = dir.path().join("m.json");
    let o = flowmote(&[
        "train",
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--window",
        "8",
        "--features",
        "mean",
    ]);
    let m = err(&o);
    assert!(m.contains("line 12"), "{m}");
}

#[test]
fn train_calibrate_score_round_trip_with_a_feature_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("raw.csv");
    fs::write(&data, raw_csv(1200)).unwrap();
    let (model, val) = (dir.path().join("m.json"), dir.path().join("val.csv"));
    let mut args = vec![
        "train",
        "--data",
        s(&data),
        "--out",
        s(&model),
        "--val-out",
        s(&val),
        "--window",
        "8",
        "--hop",
        "4",
        "--features",
        "mean,std,ptp",
    ];
    args.extend([
        "--flow",
        "maf",
        "--layers",
        "2",
        "--hidden",
        "8",
        "--epochs",
        "5",
        "--noise",
        "0",
        "--no-mixture",
        "-q",
    ]);
    ok(&flowmote(&args));

    // The model file holds the spec, is version 3 and reloads.
    let text = fs::read_to_string(&model).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["version"], 3);
    assert_eq!(
        json["features_pipeline"],
        serde_json::json!({"channels": ["x", "y", "z"], "window": 8, "hop": 4, "stats": ["mean", "std", "ptp"]})
    );
    let m = ModelFile::load(&model).unwrap();
    let spec = m.features_pipeline.clone().unwrap();
    assert_eq!(m.features, spec.feature_names());
    assert_eq!(m.features[..3], ["x_mean", "x_std", "x_ptp"]);

    // --val-out holds the raw readings of the held-out windows: re-windowed
    // they are exactly the validation windows.
    let v = fs::read_to_string(&val).unwrap();
    assert!(v.starts_with("x,y,z\n"), "{}", &v[..40]);
    let windows = (1200 - 8) / 4 + 1;
    let n_val = m.provenance.val_rows;
    assert_eq!(v.lines().count() - 1, (n_val - 1) * 4 + 8);
    let all = spec
        .apply(&load_for_model(&data, &spec.channels, None).unwrap())
        .unwrap();
    let held = spec
        .apply(&load_for_model(&val, &spec.channels, None).unwrap())
        .unwrap();
    assert_eq!(all.len(), windows);
    assert_eq!(held.rows, all.rows[windows - n_val..]);

    let o = flowmote(&[
        "calibrate",
        "--model",
        s(&model),
        "--data",
        s(&val),
        "--false-alarm-rate",
        "0.05",
        "--json",
    ]);
    let c: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    assert_eq!(c["rows"], n_val);
    let m = ModelFile::load(&model).unwrap();
    assert!(m.threshold.is_some() && m.features_pipeline.is_some());

    let o = flowmote(&["score", "--model", s(&model), "--data", s(&data)]);
    let sc = ok(&o);
    let rows: Vec<&str> = sc.lines().skip(1).collect();
    assert_eq!(rows.len(), windows);
    // Line of a window = its last reading's line: 8 readings + header.
    assert!(rows[0].starts_with("9,") && rows[1].starts_with("13,"), "{}", rows[0]);
    let o = flowmote(&["eval", "--model", s(&model), "--data", s(&data), "--json"]);
    let e: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    assert_eq!(e["n"], windows);
    // plot scores the windows too.
    let plots = dir.path().join("plots");
    let o = flowmote(&[
        "plot",
        "--model",
        s(&model),
        "--data",
        s(&data),
        "--out-dir",
        s(&plots),
        "--grid",
        "10",
        "--samples",
        "20",
    ]);
    ok(&o);
    assert!(plots.join("scores.png").exists());
    // A raw file shorter than one window is an error saying so.
    let short = dir.path().join("short.csv");
    fs::write(&short, raw_csv(5)).unwrap();
    let o = flowmote(&["score", "--model", s(&model), "--data", s(&short)]);
    assert!(err(&o).contains("5 readings, fewer than one window of 8"));
}

#[test]
fn files_without_a_pipeline_stay_version_2_and_load() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("raw.csv");
    fs::write(&data, raw_csv(300)).unwrap();
    let model = dir.path().join("m.json");
    ok(&flowmote(&[
        "train",
        "--data",
        s(&data),
        "--out",
        s(&model),
        "--flow",
        "maf",
        "--layers",
        "1",
        "--hidden",
        "4",
        "--epochs",
        "2",
        "--noise",
        "0",
        "--folds",
        "1",
        "--no-mixture",
        "-q",
    ]));
    let text = fs::read_to_string(&model).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["version"], 2);
    assert!(json.get("features_pipeline").is_none());
    let m = ModelFile::load(&model).unwrap();
    assert!(m.features_pipeline.is_none() && m.version == 2);
    // Version 3 without a pipeline, or a pipeline that does not match the
    // features, or version 4: refused with a reason.
    let mut j = json.clone();
    j["version"] = 3.into();
    let p = dir.path().join("v3.json");
    fs::write(&p, j.to_string()).unwrap();
    assert!(format!("{:#}", ModelFile::load(&p).unwrap_err()).contains("needs a feature pipeline"));
    j["features_pipeline"] = serde_json::json!({"channels": ["x"], "window": 4, "hop": 2, "stats": ["mean"]});
    fs::write(&p, j.to_string()).unwrap();
    assert!(format!("{:#}", ModelFile::load(&p).unwrap_err()).contains("feature names"));
    j["features_pipeline"]["stats"] = serde_json::json!(["band3"]);
    fs::write(&p, j.to_string()).unwrap();
    let e = format!("{:#}", ModelFile::load(&p).unwrap_err());
    assert!(e.contains("features_pipeline"), "{e}");
    let mut j = json.clone();
    j["version"] = 5.into();
    fs::write(&p, j.to_string()).unwrap();
    assert!(format!("{:#}", ModelFile::load(&p).unwrap_err()).contains("reads versions 1 to 4"));
    // Version 4 is for compressed weights only.
    j["version"] = 4.into();
    fs::write(&p, j.to_string()).unwrap();
    assert!(format!("{:#}", ModelFile::load(&p).unwrap_err()).contains("compressed weights are version 4"));
}

/// A small crate depending on the core, holding `model.rs` and `lib.rs`;
/// `cargo check` output.
fn check_crate(model_rs: &str, lib_rs: &str) -> Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("src")).unwrap();
    fs::write(
        dir.path().join("Cargo.toml"),
        format!(
            "[package]\nname = \"featspec-check\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n\
             [dependencies]\nflowmote = {{ path = {:?} }}\n\n[workspace]\n",
            s(&root)
        ),
    )
    .unwrap();
    fs::copy(root.join("Cargo.lock"), dir.path().join("Cargo.lock")).unwrap();
    fs::write(dir.path().join("src/model.rs"), model_rs).unwrap();
    fs::write(dir.path().join("src/lib.rs"), lib_rs).unwrap();
    let target: PathBuf = root.join("target").join("featspec-check");
    Command::new(env!("CARGO"))
        .args(["check", "--offline", "--quiet", "--manifest-path"])
        .arg(dir.path().join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target)
        .env_remove("RUSTFLAGS")
        .output()
        .expect("run cargo")
}

#[test]
fn the_export_carries_the_pipeline_and_a_mismatched_sensor_does_not_compile() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("raw.csv");
    fs::write(&data, raw_csv(400)).unwrap();
    let (model, out) = (dir.path().join("m.json"), dir.path().join("model.rs"));
    ok(&flowmote(&[
        "train",
        "--data",
        s(&data),
        "--out",
        s(&model),
        "--window",
        "8",
        "--hop",
        "4",
        "--features",
        "mean,std,band1-2",
        "--flow",
        "maf",
        "--layers",
        "1",
        "--hidden",
        "4",
        "--epochs",
        "2",
        "--noise",
        "0",
        "--folds",
        "1",
        "--no-mixture",
        "-q",
    ]));
    ok(&flowmote(&[
        "export",
        "--model",
        s(&model),
        "--out",
        s(&out),
        "--no-threshold",
    ]));
    let src = fs::read_to_string(&out).unwrap();
    for item in [
        "pub const CHANNELS: usize = 3;",
        "pub static CHANNEL_NAMES: [&str; CHANNELS] = [\"x\", \"y\", \"z\"];",
        "pub const WINDOW: usize = 8;",
        "pub const HOP: usize = 4;",
        "pub const STATS: [flowmote::features::Stat; 3] = [",
        "flowmote::features::Stat::Band { lo: 1, hi: 2 },",
        "flowmote::features::all_fit(&STATS, WINDOW)",
        "pub type Pipeline = flowmote::features::Pipeline<CHANNELS, WINDOW, 3, DIM>;",
        "pub const fn pipeline() -> Pipeline {",
    ] {
        assert!(src.contains(item), "missing {item:?} in\n{src}");
    }
    // It compiles with the core (no_std, warnings denied) and scores the
    // pipeline's features …
    let good = "#![no_std]\n#![deny(warnings)]\npub mod model;\n\
        /// One reading in, a score out when it completes a window.\n\
        pub fn step(p: &mut model::Pipeline, r: [f32; 3]) -> Option<Result<f32, flowmote::Error>> {\n\
            p.push(r).map(|f| f.and_then(|x| model::MODEL.log_prob(&x)))\n}\n\
        /// The pipeline.\npub const P: model::Pipeline = model::pipeline();\n";
    let o = check_crate(&src, good);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // … and a 2-channel sensor does not.
    let bad = "#![no_std]\npub mod model;\n\
        /// A sensor with 2 channels.\n\
        pub fn step(p: &mut model::Pipeline, r: [f32; 2]) -> bool { p.push(r).is_some() }\n";
    let o = check_crate(&src, bad);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("mismatched types"), "{e}");
}
