//! `flowmote record` and `flowmote monitor` on device logs as the decoders
//! print them (`defmt-print`, `probe-rs run`, `defmt-print --json`), from
//! files and from standard input, without a device or an emulator (the
//! QEMU image's logs are checked by scripts/firmware-ci.sh).

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

mod common;
use common::flowmote_fed as flowmote;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o.stdout)))
}

/// A record-mode log as `probe-rs run` shows it on a terminal: timestamps,
/// coloured levels, location lines, the flashing step's progress output.
const PROBE_RS: &str = "\
      Erasing ✔ 100% [####################]\r      Finished in 0.5s
\u{1b}[2m0.000000\u{1b}[0m \u{1b}[32mINFO \u{1b}[0m flowmote record mode: a reading every 10 ms (channels [\"x\", \"y\", \"z\"])
\u{1b}[2m└─ nrf52840dk::record @ boards/nrf52840dk/src/main.rs:210\u{1b}[0m
\u{1b}[2m0.000030\u{1b}[0m \u{1b}[32mINFO \u{1b}[0m rec header x,y,z
\u{1b}[2m└─ flowmote_firmware::record::{impl#0}::header @ app/src/log.rs:6\u{1b}[0m
\u{1b}[2m0.000061\u{1b}[0m \u{1b}[32mINFO \u{1b}[0m rec 0 12 -980 33
\u{1b}[2m└─ flowmote_firmware::record::{impl#0}::step @ app/src/log.rs:6\u{1b}[0m
\u{1b}[2m0.010061\u{1b}[0m \u{1b}[32mINFO \u{1b}[0m rec 1 14 -978 31
\u{1b}[2m0.020061\u{1b}[0m \u{1b}[33mWARN \u{1b}[0m rec error i2c: no acknowledge
\u{1b}[2m0.030061\u{1b}[0m \u{1b}[32mINFO \u{1b}[0m rec 2 -2048 2047 0
";

const CSV: &str = "x,y,z\n12,-980,33\n14,-978,31\n-2048,2047,0\n";

#[test]
fn record_reads_probe_rs_output_with_colours_timestamps_and_locations() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("device.log");
    fs::write(&log, PROBE_RS).unwrap();
    let out = dir.path().join("readings.csv");
    let o = flowmote(
        &[
            "record",
            "--log",
            log.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--json",
        ],
        None,
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(fs::read_to_string(&out).unwrap(), CSV);
    let j = json(&o);
    assert_eq!(j["readings"], 3);
    assert_eq!(j["channels"], serde_json::json!(["x", "y", "z"]));
    assert_eq!((j["first_seq"].as_u64(), j["last_seq"].as_u64()), (Some(0), Some(2)));
    assert_eq!(
        (j["gap_count"].as_u64(), j["malformed_count"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(j["sensor_errors"], 1);
    assert_eq!(j["lines"], 10);
    let err = text(&o.stderr);
    assert!(err.contains("recorded 3 readings (seq 0–2) of x, y, z"), "{err}");
    assert!(err.contains("1 sensor error on the device"), "{err}");
}

#[test]
fn record_reads_defmt_print_json_and_crlf_logs_from_standard_input() {
    let log = "{\"schema_version\":1}\r\n\
{\"data\":\"rec header x,y,z\",\"level\":\"INFO\",\"target_timestamp\":\"\"}\r\n\
{\"data\":\"rec 0 12 -980 33\",\"level\":\"INFO\",\"target_timestamp\":\"\"}\r\n\
{\"data\":\"rec 1 14 -978 31\",\"level\":\"INFO\",\"target_timestamp\":\"\"}\r\n\
{\"data\":\"rec 2 -2048 2047 0\",\"level\":\"INFO\",\"target_timestamp\":\"\"}\r\n";
    let o = flowmote(&["record", "--log", "-", "--out", "-", "--seq"], Some(log));
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(
        text(&o.stdout),
        "seq,x,y,z\n0,12,-980,33\n1,14,-978,31\n2,-2048,2047,0\n"
    );
}

#[test]
fn gaps_restarts_and_malformed_lines_are_reported_with_their_lines() {
    let log = "\
INFO  rec header x,y,z
INFO  rec 0 1 2 3
INFO  rec 1 1 2 3
INFO  rec 4 1 2 3
INFO  rec 5 1 2
INFO  rec 6 1 two 3
INFO  rec 7 1 2 3
INFO  rec header x,y,z
INFO  rec 0 9 9 9
";
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.csv");
    let o = flowmote(
        &["record", "--log", "-", "--out", out.to_str().unwrap(), "--json"],
        Some(log),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let j = json(&o);
    assert_eq!(j["readings"], 5);
    // seq 1 → 4 (2 missing), then 5 and 6 are malformed: 4 → 7 (2 more).
    assert_eq!((j["gap_count"].as_u64(), j["missing"].as_u64()), (Some(2), Some(4)));
    assert_eq!(
        (j["gaps"][0]["line"].as_u64(), j["gaps"][1]["line"].as_u64()),
        (Some(4), Some(7))
    );
    assert_eq!(j["malformed_count"], 2);
    assert_eq!(j["malformed"][0]["line"], 5);
    assert_eq!(j["malformed"][1]["line"], 6);
    assert_eq!(j["restart_count"], 1);
    assert_eq!(j["restarts"][0]["line"], 9);
    let err = text(&o.stderr);
    assert!(
        err.contains("line 5: 2 values for the 3 channels (x, y, z) (`INFO  rec 5 1 2`)"),
        "{err}"
    );
    assert!(err.contains("1 restart of the device: line 9 (seq 7 → 0)"), "{err}");
    assert_eq!(fs::read_to_string(&out).unwrap().lines().count(), 6);
}

#[test]
fn strict_mode_and_failures_leave_nothing_half_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.csv");
    fs::write(&out, "old\n").unwrap();
    let o_s = out.to_str().unwrap();
    let gap = "rec header x\nrec 0 1\nrec 2 1\n";
    let o = flowmote(&["record", "--log", "-", "--out", o_s, "--strict"], Some(gap));
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(err.contains("--strict: readings were lost, nothing written"), "{err}");
    assert!(err.contains("line 3 (seq 0 → 2, 1 missing)"), "{err}");
    // No `rec` line: an error naming the log.
    let log = dir.path().join("monitor.log");
    fs::write(&log, "INFO  score 1.0 threshold 2.0 normal alarm false\n").unwrap();
    let o = flowmote(&["record", "--log", log.to_str().unwrap(), "--out", o_s], None);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(err.contains(&format!("no readings in {}", log.display())), "{err}");
    assert!(err.contains("--features record"), "{err}");
    // Readings but no header: --channels names them.
    let o = flowmote(&["record", "--log", "-", "--out", o_s], Some("rec 0 1 2\nrec 1 3 4\n"));
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("give --channels"), "{}", text(&o.stderr));
    // The device's channels change mid-log.
    let o = flowmote(
        &["record", "--log", "-", "--out", o_s],
        Some("rec header a,b\nrec 0 1 2\nrec header c,d\n"),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("line 3: the device's channels changed from (a, b) to (c, d)"),
        "{}",
        text(&o.stderr)
    );
    // The log is the output.
    let o = flowmote(&["record", "--log", o_s, "--out", o_s], None);
    assert!(
        text(&o.stderr).contains("refusing to overwrite an input"),
        "{}",
        text(&o.stderr)
    );
    // A missing log is named.
    let o = flowmote(&["record", "--log", "/nonexistent/x.log", "--out", o_s], None);
    assert!(
        text(&o.stderr).contains("cannot open the log /nonexistent/x.log"),
        "{}",
        text(&o.stderr)
    );
    // --json and --out - would share standard output.
    let o = flowmote(&["record", "--log", "-", "--out", "-", "--json"], Some(gap));
    assert_eq!(o.status.code(), Some(1));
    // Through all of it the old file stayed, and no temporary file is left.
    assert_eq!(fs::read_to_string(&out).unwrap(), "old\n");
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    // With --channels the readings are written.
    let o = flowmote(
        &["record", "--log", "-", "--out", o_s, "--channels", "u,v"],
        Some("rec 0 1 2\nrec 1 3 4\n"),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(fs::read_to_string(&out).unwrap(), "u,v\n1,2\n3,4\n");
}

#[test]
fn count_stops_after_n_readings() {
    let log: String = std::iter::once("rec header x\n".to_string())
        .chain((0..50).map(|i| format!("rec {i} {i}\n")))
        .collect();
    let o = flowmote(&["record", "--log", "-", "--out", "-", "-n", "3"], Some(&log));
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "x\n0\n1\n2\n");
}

/// A live device: rows come out on standard output while the log goes on,
/// and the command ends when the log does.
#[test]
fn record_streams_standard_input_line_by_line() {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flowmote"))
        .args(["record", "--log", "-", "--out", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = c.stdin.take().unwrap();
    let mut stdout = BufReader::new(c.stdout.take().unwrap());
    stdin.write_all(b"INFO  rec header x,y\nINFO  rec 0 5 6\n").unwrap();
    stdin.flush().unwrap();
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "x,y\n");
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "5,6\n", "the row arrives while the log is still open");
    stdin.write_all(b"INFO  rec 1 7 8\n").unwrap();
    drop(stdin);
    let rest = {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).unwrap();
        s
    };
    assert_eq!(rest, "7,8\n");
    assert!(c.wait().unwrap().success());
}

/// The monitor's lines as `defmt-print` prints the firmware's monitor.
const MONITOR: &str = "\
INFO  self-test: 8 golden log-densities match the host
INFO  sensor initialised
INFO  score 19.44773 threshold 32.692963 normal alarm false
WARN  sensor: implausible frame (garbage)
INFO  score 26.28154 threshold 32.692963 normal alarm false
WARN  i2c: no acknowledge
INFO  sensor initialised
WARN  score 1132.7031 threshold 32.692963 ANOMALOUS alarm false
WARN  score 1359.923 threshold 32.692963 ANOMALOUS alarm true
INFO  score 25.370531 threshold 32.692963 normal alarm true
INFO  score 17.01691 threshold 32.692963 normal alarm false
WARN  invalid features (NonFinite) alarm false
WARN  alarm pin write failed
INFO  Stats { scored: 5, anomalous: 2, invalid: 1, sensor_errors: 1, garbage: 1, pin_errors: 1 }
";

#[test]
fn monitor_summarises_a_saved_log_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("m.log");
    fs::write(&log, MONITOR).unwrap();
    let o = flowmote(&["monitor", "--log", log.to_str().unwrap(), "--json"], None);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let j = json(&o);
    assert_eq!(j["lines"], 14);
    assert_eq!((j["windows"].as_u64(), j["normal"].as_u64()), (Some(7), Some(4)));
    assert_eq!((j["anomalous"].as_u64(), j["invalid"].as_u64()), (Some(2), Some(1)));
    assert_eq!(j["anomaly_rate"], 2.0 / 6.0);
    assert_eq!(j["threshold"], 32.692963);
    assert_eq!(j["last_score"], 17.01691);
    assert_eq!(
        (j["alarm"].as_bool(), j["alarms_raised"].as_u64()),
        (Some(false), Some(1))
    );
    assert_eq!(j["alarm_since_line"], 9);
    assert_eq!(
        (j["sensor_errors"].as_u64(), j["garbage_frames"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(j["sensor_inits"], 2);
    assert_eq!(j["warnings"], 1);
    assert_eq!(j["last_problem"]["line"], 13);
    assert_eq!(j["device_stats"]["scored"], 5);
}

#[test]
fn monitor_prints_alarm_changes_and_a_summary_when_not_on_a_terminal() {
    let coloured = MONITOR.replace("WARN ", "\u{1b}[33mWARN \u{1b}[0m");
    let o = flowmote(&["monitor", "--log", "-"], Some(&coloured));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.starts_with(
            "line 9: ALARM ON (score 1359.9230, threshold 32.6930)\nline 11: alarm off\nflowmote monitor · standard input · 14 lines\nalarm off\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("windows   7: 4 normal, 2 anomalous (33.3 %), 1 invalid"),
        "{out}"
    );
    assert!(!out.contains('\u{1b}'), "no colour codes off a terminal: {out}");
    // A log without monitor lines is an error naming it.
    let o = flowmote(&["monitor", "--log", "-", "--json"], Some("INFO  rec 0 1 2 3\n"));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("no monitor lines in standard input"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn help_explains_both_commands() {
    for cmd in ["record", "monitor"] {
        let o = flowmote(&[cmd, "--help"], None);
        assert!(o.status.success());
        let h = text(&o.stdout);
        assert!(h.contains("probe-rs run"), "{h}");
        assert!(h.contains("--log"), "{h}");
    }
    assert!(Path::new(env!("CARGO_BIN_EXE_flowmote")).exists());
}
