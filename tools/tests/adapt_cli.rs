//! `flowmote adapt` run as a user would: the JSON report, a written model
//! that loads, scores and calibrates like any other, and nothing written on
//! error.

use std::fs;
use std::path::Path;

mod common;
use common::{flowmote, stderr};

/// Two correlated columns, `n` rows, deterministic; every value mapped by
/// `gain·v + offset`.
fn csv_text(n: usize, gain: f32, offset: [f32; 2]) -> String {
    let mut s = "a,b\n".to_string();
    for i in 0..n {
        let t = i as f32 * 0.37;
        let (a, b) = (t.sin(), 0.5 * t.sin() + 0.3 * (3.1 * t).cos());
        s.push_str(&format!("{:.4},{:.4}\n", gain * a + offset[0], gain * b + offset[1]));
    }
    s
}

/// A trained, calibrated model on clean data, and the same signal drifted.
fn setup(dir: &Path) -> (String, String) {
    let train = dir.join("train.csv");
    fs::write(&train, csv_text(300, 1.0, [0.0, 0.0])).unwrap();
    let drifted = dir.join("drifted.csv");
    fs::write(&drifted, csv_text(300, 1.4, [0.3, -0.2])).unwrap();
    let model = dir.join("model.json");
    let (m, t) = (model.to_str().unwrap(), train.to_str().unwrap());
    let o = flowmote(&[
        "train",
        "--data",
        t,
        "--out",
        m,
        "--flow",
        "maf",
        "--layers",
        "2",
        "--hidden",
        "8",
        "--epochs",
        "20",
        "--noise",
        "0",
        "--folds",
        "1",
        "--no-mixture",
        "-q",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = flowmote(&["calibrate", "--model", m, "--data", t, "--false-alarm-rate", "0.05"]);
    assert!(o.status.success(), "{}", stderr(&o));
    (m.to_string(), drifted.to_str().unwrap().to_string())
}

#[test]
fn adapt_reports_json_and_writes_an_ordinary_model() {
    let dir = tempfile::tempdir().unwrap();
    let (model, drifted) = setup(dir.path());
    let out = dir.path().join("adapted.json");
    let o = flowmote(&[
        "adapt",
        "--model",
        &model,
        "--data",
        &drifted,
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for k in [
        "rows_used",
        "passes",
        "updates",
        "calibration_rows",
        "rows_skipped",
        "shift",
        "log_scale",
        "nll_before",
        "nll_after",
        "false_alarm_rate_before",
        "false_alarm_rate_after_old_threshold",
        "false_alarm_rate_after",
        "threshold_before",
        "threshold",
        "target_false_alarm_rate",
        "out",
    ] {
        assert!(j.get(k).is_some(), "no {k} in {j}");
    }
    // 300 rows: the last 60 calibrate, 240 adapt, ⌈2000 / 240⌉ = 9 passes.
    assert_eq!(j["rows_used"], 240);
    assert_eq!(j["calibration_rows"], 60);
    assert_eq!(j["passes"], 9);
    assert_eq!(j["updates"], 240 * 9);
    assert_eq!(j["target_false_alarm_rate"], 0.05);
    let (before, after) = (j["nll_before"].as_f64().unwrap(), j["nll_after"].as_f64().unwrap());
    assert!(after < before - 0.2, "NLL {before} → {after}");
    // Calibrated on those 60 rows at 5 %: 3 of them above the threshold at most.
    assert!(j["false_alarm_rate_after"].as_f64().unwrap() <= 0.06);
    // The adapted model is a model like any other: it scores the drifted
    // data better than the shipped one.
    let nll = |m: &str| {
        let o = flowmote(&["eval", "--model", m, "--data", &drifted, "--json"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        e["nll"].as_f64().unwrap()
    };
    assert!(nll(out.to_str().unwrap()) < nll(&model) - 0.2);
    let rs = dir.path().join("adapted.rs");
    let o = flowmote(&[
        "export",
        "--model",
        out.to_str().unwrap(),
        "--out",
        rs.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Same input, same bytes.
    let again = dir.path().join("again.json");
    let o = flowmote(&[
        "adapt",
        "--model",
        &model,
        "--data",
        &drifted,
        "--out",
        again.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        fs::read_to_string(&out).unwrap().replace(out.to_str().unwrap(), ""),
        fs::read_to_string(&again).unwrap().replace(again.to_str().unwrap(), "")
    );
}

#[test]
fn adapt_writes_nothing_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let (model, _) = setup(dir.path());
    let out = dir.path().join("adapted.json");
    let bad = dir.path().join("bad.csv");
    fs::write(&bad, "a\n1\n3\n").unwrap();
    let o = flowmote(&[
        "adapt",
        "--model",
        &model,
        "--data",
        bad.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(!out.exists());
    let few = dir.path().join("few.csv");
    fs::write(&few, "a,b\n1,nan\n").unwrap();
    let o = flowmote(&[
        "adapt",
        "--model",
        &model,
        "--data",
        few.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success(), "{}", stderr(&o));
    assert!(!out.exists());
    let o = flowmote(&[
        "adapt",
        "--model",
        &model,
        "--data",
        &model,
        "--out",
        out.to_str().unwrap(),
        "--false-alarm-rate",
        "2",
    ]);
    assert!(!o.status.success());
    assert!(!out.exists());
}

/// A mixture (a 3-fold committee) adapts like a flow: through its members'
/// gradients, the correction folded into every member's standardisation.
#[test]
fn adapt_folds_a_committee_too() {
    let dir = tempfile::tempdir().unwrap();
    let train = dir.path().join("train.csv");
    fs::write(&train, csv_text(300, 1.0, [0.0, 0.0])).unwrap();
    let drifted = dir.path().join("drifted.csv");
    fs::write(&drifted, csv_text(300, 1.4, [0.3, -0.2])).unwrap();
    let (model, out) = (dir.path().join("committee.json"), dir.path().join("adapted.json"));
    let (m, t, d) = (
        model.to_str().unwrap(),
        train.to_str().unwrap(),
        drifted.to_str().unwrap(),
    );
    let o = flowmote(&[
        "train", "--data", t, "--out", m, "--flow", "maf", "--layers", "2", "--hidden", "8", "--epochs", "20",
        "--noise", "0", "--folds", "3", "-q",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = flowmote(&[
        "adapt",
        "--model",
        m,
        "--data",
        d,
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let (before, after) = (j["nll_before"].as_f64().unwrap(), j["nll_after"].as_f64().unwrap());
    assert!(after < before - 0.2, "NLL {before} → {after}");
    let flows = |p: &Path| {
        let v: serde_json::Value = serde_json::from_str(&fs::read_to_string(p).unwrap()).unwrap();
        v["model"]["flows"].as_array().map_or(0, |f| f.len())
    };
    // Three folds and the broad Gaussian of every device model.
    assert_eq!(flows(&model), 4);
    assert_eq!(flows(&out), 4);
}
