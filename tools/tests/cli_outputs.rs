//! The `flowmote` binary's output files, run as a user or a careless script
//! would: never destroy what is at the path, never write a model that cannot
//! be loaded, never panic on I/O, right line numbers in every newline style.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

mod common;
use common::{flowmote, stderr};

/// Two correlated columns, `n` rows, deterministic.
fn csv_text(n: usize, nl: &str) -> String {
    let mut s = format!("a,b{nl}");
    for i in 0..n {
        let t = i as f32 * 0.37;
        s.push_str(&format!(
            "{:.4},{:.4}{nl}",
            t.sin(),
            0.5 * t.sin() + 0.3 * (3.1 * t).cos()
        ));
    }
    s
}

const TINY: &[&str] = &[
    "--flow",
    "maf",
    "--layers",
    "1",
    "--hidden",
    "4",
    "--epochs",
    "3",
    "--noise",
    "0",
    "--folds",
    "1",
    "--no-mixture",
    "-q",
];

/// A directory holding `train.csv` and a small trained, calibrated `model.json`.
fn fixture() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // Cargo's scratch directory for integration tests: the same path on
        // every run, emptied first, so runs never accumulate directories.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-outputs");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let data = dir.join("train.csv");
        fs::write(&data, csv_text(200, "\n")).unwrap();
        let model = dir.join("model.json");
        let mut args = vec![
            "train",
            "--data",
            data.to_str().unwrap(),
            "--out",
            model.to_str().unwrap(),
        ];
        args.extend_from_slice(TINY);
        let o = flowmote(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        let o = flowmote(&[
            "calibrate",
            "--model",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        dir
    })
}

fn tmpdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn model() -> String {
    fixture().join("model.json").to_str().unwrap().to_string()
}

fn data() -> String {
    fixture().join("train.csv").to_str().unwrap().to_string()
}

#[cfg(unix)]
#[test]
fn devices_stay_devices() {
    use std::os::unix::fs::FileTypeExt;
    let o = flowmote(&["score", "--model", &model(), "--data", &data(), "--out", "/dev/null"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(fs::metadata("/dev/null").unwrap().file_type().is_char_device());
}

#[cfg(unix)]
#[test]
fn fifos_are_written_not_replaced() {
    use std::io::Read;
    use std::os::unix::fs::FileTypeExt;
    let dir = tmpdir();
    let fifo = dir.path().join("pipe");
    let st = Command::new("mkfifo").arg(&fifo).status();
    if !st.is_ok_and(|s| s.success()) {
        return; // no mkfifo on this machine
    }
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut s = String::new();
            fs::File::open(&fifo).unwrap().read_to_string(&mut s).unwrap();
            s
        })
    };
    let o = flowmote(&[
        "sample",
        "--model",
        &model(),
        "-n",
        "5",
        "--out",
        fifo.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got = reader.join().unwrap();
    assert_eq!(got.lines().count(), 6, "{got}");
    assert!(fs::metadata(&fifo).unwrap().file_type().is_fifo());
}

#[cfg(unix)]
#[test]
fn symlinks_are_followed() {
    let dir = tmpdir();
    let real = dir.path().join("real.csv");
    fs::write(&real, "old").unwrap();
    let link = dir.path().join("link.csv");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let o = flowmote(&[
        "sample",
        "--model",
        &model(),
        "-n",
        "3",
        "--out",
        link.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(fs::read_to_string(&real).unwrap().lines().count(), 4);
}

#[test]
fn dash_is_standard_output() {
    let dir = tmpdir();
    let o = Command::new(env!("CARGO_BIN_EXE_flowmote"))
        .current_dir(dir.path())
        .args(["sample", "--model", &model(), "-n", "4", "--out", "-"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8(o.stdout).unwrap().lines().count(), 5);
    assert!(!dir.path().join("-").exists());
}

#[test]
fn an_input_is_never_overwritten() {
    let dir = tmpdir();
    let t = dir.path().join("t.csv");
    fs::write(&t, csv_text(50, "\n")).unwrap();
    let m = dir.path().join("m.json");
    fs::copy(fixture().join("model.json"), &m).unwrap();
    let (t, m) = (t.to_str().unwrap(), m.to_str().unwrap());
    let before = (fs::read(t).unwrap(), fs::read(m).unwrap());
    let mut train = vec!["train", "--data", t, "--out", t];
    train.extend_from_slice(TINY);
    for args in [
        vec!["score", "--model", m, "--data", t, "--out", t],
        vec!["score", "--model", m, "--data", t, "--out", m],
        train,
        vec!["export", "--model", m, "--out", m],
        vec!["sample", "--model", m, "--out", m],
        vec!["calibrate", "--model", m, "--data", t, "--out", t],
    ] {
        let o = flowmote(&args);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(
            stderr(&o).contains("refusing to overwrite an input"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    assert_eq!(before, (fs::read(t).unwrap(), fs::read(m).unwrap()));
}

/// Training on `text` fails naming `column`, and the model already at the
/// output path is left as it was.
fn untrainable(text: &str, column: &str, epochs: &str) {
    let dir = tmpdir();
    let d = dir.path().join("bad.csv");
    fs::write(&d, text).unwrap();
    let out = dir.path().join("m.json");
    fs::write(&out, "precious").unwrap();
    let o = flowmote(&[
        "train",
        "--data",
        d.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--flow",
        "maf",
        "--layers",
        "1",
        "--hidden",
        "4",
        "--epochs",
        epochs,
        "--folds",
        "1",
        "--no-mixture",
        "-q",
    ]);
    let e = stderr(&o);
    assert!(!o.status.success(), "trained on data that makes training impossible");
    assert!(e.contains("bad.csv") && e.contains(&format!("{column:?}")), "{e}");
    assert!(!e.contains("panicked") && !e.contains("diverged"), "{e}");
    assert_eq!(fs::read_to_string(&out).unwrap(), "precious");
}

#[test]
fn data_that_makes_training_impossible_is_named() {
    // A column of values around 1e-40: its standard deviation is below what f32 can scale.
    let mut s = String::from("a,tiny\n");
    for i in 0..100 {
        s.push_str(&format!("{},{:e}\n", i % 7, (1 + i % 5) as f64 * 1e-40));
    }
    for epochs in ["3", "50"] {
        untrainable(&s, "tiny", epochs);
    }
    // The last 10 % of the rows (the validation rows) at 1e30.
    let mut s = String::from("a,b\n");
    for i in 0..100 {
        let b = if i >= 90 { 1e30 } else { (i % 9) as f64 };
        s.push_str(&format!("{},{b:e}\n", i % 7));
    }
    for epochs in ["3", "50"] {
        untrainable(&s, "b", epochs);
    }
}

#[test]
fn absurd_sizes_are_errors() {
    let dir = tmpdir();
    let out = dir.path().join("m.json");
    let o = flowmote(&[
        "train",
        "--data",
        &data(),
        "--out",
        out.to_str().unwrap(),
        "--flow",
        "maf",
        "--hidden",
        "100000",
        "--epochs",
        "1",
        "-q",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("--hidden must be"), "{}", stderr(&o));
    assert!(!out.exists());
}

#[test]
fn a_closed_pipe_ends_quietly() {
    for args in [
        vec![
            "sample".to_string(),
            "--model".into(),
            model(),
            "-n".into(),
            "20000".into(),
        ],
        vec!["score".into(), "--model".into(), model(), "--data".into(), data()],
        vec!["eval".into(), "--model".into(), model(), "--data".into(), data()],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_flowmote"))
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // the reader goes away, like `| head -0`
        let o = child.wait_with_output().unwrap();
        let e = stderr(&o);
        assert!(!e.contains("panicked"), "{args:?}: {e}");
        assert!(
            o.status.code() == Some(141) || o.status.success(),
            "{args:?}: {:?} {e}",
            o.status
        );
    }
}

#[test]
fn score_lines_are_right_for_crlf_and_cr_files() {
    let dir = tmpdir();
    for (name, nl) in [("crlf.csv", "\r\n"), ("cr.csv", "\r")] {
        let p = dir.path().join(name);
        let mut text = csv_text(5, nl);
        text.push_str(&format!("{nl}0.1,x{nl}"));
        fs::write(&p, text).unwrap();
        let o = flowmote(&["score", "--model", &model(), "--data", p.to_str().unwrap()]);
        assert!(o.status.success(), "{}", stderr(&o));
        let out = String::from_utf8(o.stdout).unwrap();
        let lines: Vec<&str> = out.lines().skip(1).map(|l| l.split(',').next().unwrap()).collect();
        assert_eq!(lines, ["2", "3", "4", "5", "6", "8"], "{name}: {out}");
    }
}

#[test]
fn demo_works_on_small_files() {
    let dir = tmpdir();
    let train = dir.path().join("small.csv");
    fs::write(&train, csv_text(300, "\n")).unwrap();
    let out = dir.path().join("out");
    let o = flowmote(&[
        "demo",
        "--train",
        train.to_str().unwrap(),
        "--test",
        train.to_str().unwrap(),
        "--out-dir",
        out.to_str().unwrap(),
        "--epochs",
        "3",
        "-q",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for f in ["model.json", "validation.csv", "model.rs", "scores.csv"] {
        assert!(out.join(f).exists(), "{f}");
    }
    assert!(fs::read_to_string(out.join("validation.csv")).unwrap().lines().count() > 2);
}

#[test]
fn exported_source_escapes_what_it_embeds() {
    let dir = tmpdir();
    let data = dir.path().join("evil\nfn injected() {}\n.csv");
    fs::write(&data, csv_text(200, "\n")).unwrap();
    let m = dir.path().join("m.json");
    let mut args = vec!["train", "--data", data.to_str().unwrap(), "--out", m.to_str().unwrap()];
    args.extend_from_slice(TINY);
    let o = flowmote(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let rs = dir.path().join("m.rs");
    let o = flowmote(&[
        "export",
        "--model",
        m.to_str().unwrap(),
        "--out",
        rs.to_str().unwrap(),
        "--no-threshold",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let src = fs::read_to_string(&rs).unwrap();
    assert!(!src.lines().any(|l| l.trim_start().starts_with("fn injected")), "{src}");
    assert!(src.contains("evil\\nfn injected() {}\\n.csv"));
}

#[test]
fn standard_input_is_dash_and_other_delimiters_load() {
    use std::io::Write;
    let dir = tmpdir();
    let out = dir.path().join("m.json");
    let mut args = vec!["train", "--data", "-", "--out", out.to_str().unwrap()];
    args.extend_from_slice(TINY);
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowmote"))
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Semicolon-separated, with a time column the trainer leaves out.
    let mut text = String::from("time_ms;a;b\n");
    for (i, l) in csv_text(200, "\n").lines().skip(1).enumerate() {
        text.push_str(&format!("{};{}\n", 1000 + 10 * i, l.replace(',', ";")));
    }
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    assert!(e.contains("\"time_ms\" left out"), "{e}");
    let m: serde_json::Value = serde_json::from_str(&fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(m["features"], serde_json::json!(["a", "b"]));
}

#[test]
fn delimiter_overrides_detection() {
    // A tab-separated file whose column names hold commas: the header has
    // more commas than tabs, so detection picks `,`; `--delimiter tab` reads it.
    let dir = tmpdir();
    let (tsv, m) = (dir.path().join("t.tsv"), dir.path().join("m.json"));
    let mut text = String::from("speed,m/s\ttilt,deg\n");
    for l in csv_text(200, "\n").lines().skip(1) {
        text.push_str(&l.replace(',', "\t"));
        text.push('\n');
    }
    fs::write(&tsv, &text).unwrap();
    let (tsv, m) = (tsv.to_str().unwrap(), m.to_str().unwrap());
    let mut args = vec!["train", "--data", tsv, "--out", m];
    args.extend_from_slice(TINY);
    let o = flowmote(&args);
    assert!(!o.status.success(), "detected `,` splits the rows wrongly");
    args.extend_from_slice(&["--delimiter", "tab"]);
    let o = flowmote(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let trained: serde_json::Value = serde_json::from_str(&fs::read_to_string(m).unwrap()).unwrap();
    assert_eq!(trained["features"], serde_json::json!(["speed,m/s", "tilt,deg"]));
    for cmd in [
        vec!["score", "--model", m, "--data", tsv, "--delimiter", "tab"],
        vec!["eval", "--model", m, "--data", tsv, "--delimiter", "tab"],
        vec![
            "calibrate",
            "--model",
            m,
            "--data",
            tsv,
            "--delimiter",
            "\t",
            "--out",
            m,
        ],
    ] {
        let o = flowmote(&cmd);
        assert!(o.status.success(), "{cmd:?}: {}", stderr(&o));
    }
    // `;` and `,` are forced too: a comma file read with `;` is one column.
    let o = flowmote(&["score", "--model", &model(), "--data", &data(), "--delimiter", ";"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("a,b"), "{}", stderr(&o));
    let o = flowmote(&["score", "--model", &model(), "--data", &data(), "--delimiter", ","]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Anything else is a usage error.
    let o = flowmote(&["score", "--model", &model(), "--data", &data(), "--delimiter", "|"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("use `,`, `;` or `tab`"), "{}", stderr(&o));
}

#[test]
fn calibrating_on_the_training_file_warns() {
    let dir = tmpdir();
    let m = dir.path().join("m.json");
    let o = flowmote(&[
        "calibrate",
        "--model",
        &model(),
        "--data",
        &data(),
        "--out",
        m.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("is the file the model was trained on"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn export_refuses_an_uncalibrated_model() {
    let dir = tmpdir();
    let m = dir.path().join("m.json");
    let d = data();
    let mut args = vec!["train", "--data", &d, "--out", m.to_str().unwrap()];
    args.extend_from_slice(TINY);
    assert!(flowmote(&args).status.success());
    let rs = dir.path().join("m.rs");
    let o = flowmote(&["export", "--model", m.to_str().unwrap(), "--out", rs.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no anomaly threshold"), "{}", stderr(&o));
    assert!(!rs.exists());
}

#[test]
fn train_writes_validation_rows_and_json() {
    let dir = tmpdir();
    let (m, v) = (dir.path().join("m.json"), dir.path().join("val.csv"));
    let d = data();
    let mut args = vec![
        "train",
        "--data",
        &d,
        "--out",
        m.to_str().unwrap(),
        "--val-out",
        v.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(TINY);
    let o = flowmote(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for key in ["kept", "weight_bytes", "macs", "validation_nll", "parameters"] {
        assert!(!j[key].is_null(), "{key} missing: {j}");
    }
    // 200 rows, the last 10 % held out: 20 rows and the header.
    assert_eq!(fs::read_to_string(&v).unwrap().lines().count(), 21);
    let o = flowmote(&[
        "calibrate",
        "--model",
        m.to_str().unwrap(),
        "--data",
        v.to_str().unwrap(),
    ]);
    assert!(
        o.status.success() && !stderr(&o).contains("trained on"),
        "{}",
        stderr(&o)
    );
    let rs = dir.path().join("m.rs");
    let export = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec![
            "export",
            "--model",
            m.to_str().unwrap(),
            "--out",
            rs.to_str().unwrap(),
            "--json",
        ];
        args.extend_from_slice(extra);
        let o = flowmote(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let j = export(&[]);
    assert_eq!(j["weight_bytes"].as_u64().unwrap() % 4, 0);
    assert!(j["threshold"].is_number());
    for key in ["target", "estimated_ms", "kept", "macs", "validation_nll"] {
        assert!(!j[key].is_null(), "{key} missing: {j}");
    }
    assert_eq!(j["target"], "nrf52840");
    // Stored as i8: fewer bytes, a longer estimate (the widening).
    let j8 = export(&["--weights", "i8"]);
    assert!(j8["weight_bytes"].as_u64() < j["weight_bytes"].as_u64(), "{j8} {j}");
    assert!(j8["estimated_ms"].as_f64() > j["estimated_ms"].as_f64(), "{j8} {j}");
}

/// A device budget nothing meets is an error before any training, naming the
/// smallest model tried; an unknown target lists the known ones; nothing is
/// written either way.
#[test]
fn impossible_budgets_and_unknown_targets_are_errors() {
    let dir = tmpdir();
    let out = dir.path().join("m.json");
    fs::write(&out, "precious").unwrap();
    let d = data();
    for (extra, want) in [
        (
            vec!["--max-flash", "20"],
            vec!["smallest tried", "--max-flash", "one diagonal Gaussian"],
        ),
        (
            vec!["--max-flash", "20", "--target", "host"],
            vec!["smallest tried", "host"],
        ),
        (
            vec!["--target", "atmega328"],
            vec!["nrf52840", "rp2040", "esp32c3", "list-targets"],
        ),
        (vec!["--max-flash", "12Q"], vec!["unknown unit"]),
    ] {
        let mut args = vec!["train", "--data", &d, "--out", out.to_str().unwrap(), "-q"];
        args.extend(extra.iter());
        let o = flowmote(&args);
        assert!(!o.status.success(), "{args:?} succeeded");
        let e = stderr(&o);
        for w in want {
            assert!(e.contains(w), "{args:?}: {e}");
        }
        assert_eq!(fs::read_to_string(&out).unwrap(), "precious");
    }
}

/// `train --json` on the default target states the target, the flash, the
/// estimated time and what was kept; the model fits the budget; and
/// `--teacher-out` writes the teacher when a student was distilled.
#[test]
fn train_for_a_device_reports_its_budget() {
    let dir = tmpdir();
    let (m, t) = (dir.path().join("m.json"), dir.path().join("teacher.json"));
    let d = data();
    let o = flowmote(&[
        "train",
        "--data",
        &d,
        "--out",
        m.to_str().unwrap(),
        "--teacher-out",
        t.to_str().unwrap(),
        "--epochs",
        "3",
        "--max-flash",
        "4K",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["target"], "nrf52840");
    assert!(j["weight_bytes"].as_u64().unwrap() <= 4096, "{j}");
    assert!(j["estimated_ms"].as_f64().unwrap() <= 2.0, "{j}");
    assert!(j["why"].as_str().unwrap().contains("teacher"), "{j}");
    assert!(!j["students"].as_array().unwrap().is_empty(), "{j}");
    // The teacher is over the budget and scores the same columns.
    let teacher: serde_json::Value = serde_json::from_str(&fs::read_to_string(&t).unwrap()).unwrap();
    assert_eq!(teacher["features"], j["features"]);
    assert!(j["teacher"]["weight_bytes"].as_u64().unwrap() > 4096, "{j}");
    let o = flowmote(&["eval", "--model", t.to_str().unwrap(), "--data", &d, "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The Pareto view of the budget.
    let plots = dir.path().join("plots");
    let o = flowmote(&[
        "plot",
        "--model",
        m.to_str().unwrap(),
        "--out-dir",
        plots.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let png = fs::read(plots.join("budget.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{} bytes", png.len());
}
