//! `flowmote record`: the raw readings a device logs in record mode
//! (`flowmote_firmware::record`, `rec` lines) → a CSV to train on.
//!
//! The log is read line by line (standard input for a live device: `probe-rs
//! run … | flowmote record --log - --out readings.csv`); only the lines
//! whose words include `rec` count, whatever the decoder put around them
//! ([`crate::devlog`]):
//!
//! * `rec header a,b,c` names the channels: the CSV's header;
//! * `rec <seq> <v1> <v2> …` is one reading: one CSV row. The sequence
//!   numbers count up from 0; a jump is a gap (lines lost between the
//!   device and the file), a step back a restart of the device;
//! * `rec error <what>` is a reading the sensor could not give.
//!
//! A `rec` line that is none of these (cut short, a value that is not a
//! number, the wrong number of values) is malformed: counted and reported
//! with its line number. The file is written as it comes, to a temporary
//! file renamed into place at the end, so a failure leaves no half-written
//! CSV.

use crate::devlog::{self, LogReader, Next};
use crate::output::{self, count};
use anyhow::{bail, Result};
use clap::Args;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

/// The word that marks record-mode lines (`flowmote_firmware::record::MARKER`).
pub const MARKER: &str = "rec";

/// At most this many gaps, restarts and malformed lines are listed in the
/// report (all are counted).
pub const LISTED: usize = 100;

/// Arguments of `flowmote record`.
#[derive(Args, Debug, Clone)]
pub struct RecordArgs {
    /// The device's decoded log: a file, or `-` for standard input (pipe
    /// `probe-rs run …` or `defmt-print …` into it).
    #[arg(long)]
    pub log: PathBuf,
    /// The CSV to write (`-` = standard output, row by row). A file appears
    /// whole when the log ends (or on Ctrl-C); a failure leaves nothing.
    #[arg(long)]
    pub out: PathBuf,
    /// Column names for the values, comma-separated, instead of the ones the
    /// device's `rec header` line gives (needed when the log has none).
    #[arg(long, value_delimiter = ',')]
    pub channels: Option<Vec<String>>,
    /// Write the device's sequence number as a first column `seq`.
    #[arg(long)]
    pub seq: bool,
    /// Stop after this many readings (then the file is written and the
    /// command exits; the program piping the log in stops at its next line).
    #[arg(long, short = 'n', value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Fail (status 1, no file written) when a reading was lost: a gap in the
    /// sequence numbers, a malformed `rec` line, or a restart of the device.
    #[arg(long)]
    pub strict: bool,
    /// Print the report as one JSON object on standard output (needs a file
    /// for --out).
    #[arg(long)]
    pub json: bool,
}

/// A jump in the sequence numbers: readings the device logged that did not
/// reach the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Gap {
    /// Line of the reading after the gap.
    pub line: usize,
    /// Sequence number before the gap.
    pub after: u32,
    /// Sequence number after it.
    pub seq: u32,
    /// Readings missing (`seq − after − 1`).
    pub missing: u64,
}

/// A step back in the sequence numbers: the device restarted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Restart {
    /// Line of the first reading after the restart.
    pub line: usize,
    /// Sequence number before it.
    pub after: u32,
    /// Sequence number after it (0 after a reset).
    pub seq: u32,
}

/// A `rec` line that could not be read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Malformed {
    /// Its line number in the log.
    pub line: usize,
    /// Why.
    pub why: String,
    /// The line (cleaned of colour codes).
    pub text: String,
}

/// What `flowmote record` found and wrote (`--json` prints it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RecordReport {
    /// The log read (`-` = standard input).
    pub log: String,
    /// The CSV written.
    pub out: String,
    /// The CSV's value columns.
    pub channels: Vec<String>,
    /// Lines read.
    pub lines: usize,
    /// Readings written (CSV rows).
    pub readings: u64,
    /// Sequence number of the first reading.
    pub first_seq: Option<u32>,
    /// Sequence number of the last reading.
    pub last_seq: Option<u32>,
    /// Readings missing in all gaps.
    pub missing: u64,
    /// Number of gaps.
    pub gap_count: usize,
    /// The first [`LISTED`] gaps.
    pub gaps: Vec<Gap>,
    /// Number of restarts.
    pub restart_count: usize,
    /// The first [`LISTED`] restarts.
    pub restarts: Vec<Restart>,
    /// Number of malformed `rec` lines.
    pub malformed_count: usize,
    /// The first [`LISTED`] malformed lines.
    pub malformed: Vec<Malformed>,
    /// `rec error` lines: readings the sensor could not give (not lost in
    /// transit; the sequence numbers do not count them).
    pub sensor_errors: usize,
    /// `rec header` lines seen.
    pub headers: usize,
    /// Whether Ctrl-C ended the recording.
    pub interrupted: bool,
}

/// One parsed `rec` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecLine {
    /// `rec header a,b,c`: the channel names.
    Header(Vec<String>),
    /// `rec <seq> <values…>`: a reading (values as written).
    Reading {
        /// Sequence number.
        seq: u32,
        /// The values, as written in the log.
        values: Vec<String>,
    },
    /// `rec error <what>`: the sensor could not give a reading.
    SensorError(String),
}

/// Whether `w` is a finite number.
fn is_number(w: &str) -> bool {
    w.parse::<f64>().is_ok_and(f64::is_finite)
}

/// Parse the text of a cleaned log line: `None` if it holds no `rec` word,
/// `Some(Err(why))` if it is a malformed `rec` line. Words after the values
/// (a location some log formats append) are ignored.
pub fn parse_rec(text: &str) -> Option<std::result::Result<RecLine, String>> {
    let mut words = text.split_whitespace().skip_while(|w| *w != MARKER);
    words.next()?;
    let Some(first) = words.next() else {
        return Some(Err("nothing after `rec`".into()));
    };
    Some(match first {
        "header" => match words.next() {
            Some(names) if names.split(',').all(|n| !n.is_empty()) => {
                Ok(RecLine::Header(names.split(',').map(str::to_string).collect()))
            }
            _ => Err("a header without channel names (`rec header a,b,c`)".into()),
        },
        "error" => Ok(RecLine::SensorError(words.collect::<Vec<_>>().join(" "))),
        seq => match seq.parse::<u32>() {
            Ok(seq) => {
                let values: Vec<String> = words.take_while(|w| is_number(w)).map(str::to_string).collect();
                if values.is_empty() {
                    Err("a sequence number without values".into())
                } else {
                    Ok(RecLine::Reading { seq, values })
                }
            }
            Err(_) => Err(format!(
                "`{seq}` is not a sequence number (a whole number 0…{})",
                u32::MAX
            )),
        },
    })
}

/// The record-mode state machine: lines in, CSV rows out (see the module
/// docs). IO-free, so tests drive it line by line.
#[derive(Debug, Default)]
pub struct Recording {
    forced: Option<Vec<String>>,
    header: Option<Vec<String>>,
    /// Readings seen before the channel count was known.
    held: Vec<(usize, String, u32, Vec<String>)>,
    last_seq: Option<u32>,
    /// Readings to keep at most.
    limit: Option<u64>,
    /// The report so far.
    pub report: RecordReport,
}

impl Recording {
    /// A recording whose columns are `channels`, or the device's header's.
    pub fn new(channels: Option<Vec<String>>) -> Self {
        Recording {
            forced: channels,
            ..Recording::default()
        }
    }

    /// Keep at most `limit` readings (later ones are ignored; see [`Recording::is_full`]).
    pub fn with_limit(mut self, limit: Option<u64>) -> Self {
        self.limit = limit;
        self
    }

    /// Whether the limit of readings is reached.
    pub fn is_full(&self) -> bool {
        self.limit.is_some_and(|l| self.report.readings >= l)
    }

    /// The CSV's value columns, once known.
    pub fn channels(&self) -> Option<&[String]> {
        self.forced.as_deref().or(self.header.as_deref())
    }

    fn malformed(&mut self, line: usize, why: String, text: &str) {
        self.report.malformed_count += 1;
        if self.report.malformed.len() < LISTED {
            self.report.malformed.push(Malformed {
                line,
                why,
                text: text.to_string(),
            });
        }
    }

    /// Count a reading of the right width and return its row.
    fn accept(&mut self, line: usize, seq: u32, values: Vec<String>) -> (u32, Vec<String>) {
        let r = &mut self.report;
        match self.last_seq {
            None => r.first_seq = Some(seq),
            Some(prev) if seq > prev.wrapping_add(1) && prev != u32::MAX => {
                r.gap_count += 1;
                let missing = u64::from(seq - prev - 1);
                r.missing += missing;
                if r.gaps.len() < LISTED {
                    r.gaps.push(Gap {
                        line,
                        after: prev,
                        seq,
                        missing,
                    });
                }
            }
            Some(prev) if seq <= prev => {
                r.restart_count += 1;
                if r.restarts.len() < LISTED {
                    r.restarts.push(Restart { line, after: prev, seq });
                }
            }
            Some(_) => {}
        }
        self.last_seq = Some(seq);
        r.last_seq = Some(seq);
        r.readings += 1;
        (seq, values)
    }

    /// Check a reading's width against the channels and accept it.
    fn reading(&mut self, line: usize, text: &str, seq: u32, values: Vec<String>, rows: &mut Vec<(u32, Vec<String>)>) {
        let want = self.channels().map_or(0, <[String]>::len);
        if self.is_full() {
            // Past --count: not part of the recording.
        } else if values.len() == want {
            rows.push(self.accept(line, seq, values));
        } else {
            let names = self.channels().unwrap_or_default().join(", ");
            self.malformed(
                line,
                format!(
                    "{} for the {want} channels ({names})",
                    count(values.len() as u64, "value")
                ),
                text,
            );
        }
    }

    /// Feed log line `line` (raw, as read); the rows it completes are
    /// appended to `rows` as `(seq, values)`. An error (the device's
    /// channels changed, or contradict `--channels`) ends the recording.
    pub fn push(&mut self, line: usize, raw: &str, rows: &mut Vec<(u32, Vec<String>)>) -> Result<()> {
        self.report.lines = self.report.lines.max(line);
        let l = devlog::clean(raw);
        let Some(parsed) = parse_rec(&l.text) else {
            return Ok(());
        };
        match parsed {
            Err(why) => self.malformed(line, why, &l.text),
            Ok(RecLine::SensorError(_)) => self.report.sensor_errors += 1,
            Ok(RecLine::Header(names)) => {
                self.report.headers += 1;
                if let Some(forced) = &self.forced {
                    if forced.len() != names.len() {
                        bail!(
                            "line {line}: the device names {} channels ({}) but --channels gives {} ({})",
                            names.len(),
                            names.join(", "),
                            forced.len(),
                            forced.join(", ")
                        );
                    }
                }
                match &self.header {
                    Some(h) if *h != names => bail!(
                        "line {line}: the device's channels changed from ({}) to ({}): another image started \
                         logging; record each image to its own file",
                        h.join(", "),
                        names.join(", ")
                    ),
                    Some(_) => {}
                    None => {
                        self.header = Some(names);
                        for (line, text, seq, values) in std::mem::take(&mut self.held) {
                            self.reading(line, &text, seq, values, rows);
                        }
                    }
                }
            }
            Ok(RecLine::Reading { seq, values }) => {
                if self.channels().is_some() {
                    self.reading(line, &l.text, seq, values, rows);
                } else {
                    self.held.push((line, l.text.clone(), seq, values));
                }
            }
        }
        Ok(())
    }

    /// Readings held because no header named the channels yet.
    pub fn held(&self) -> usize {
        self.held.len()
    }
}

/// Quote a CSV field if it needs it.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The report as text (stderr).
pub fn describe(r: &RecordReport) -> String {
    let mut s = String::new();
    let seqs = match (r.first_seq, r.last_seq) {
        (Some(a), Some(b)) => format!(" (seq {a}–{b})"),
        _ => String::new(),
    };
    let _ = writeln!(
        s,
        "recorded {}{seqs} of {} from {} → {}{}",
        count(r.readings, "reading"),
        r.channels.join(", "),
        if r.log == "-" { "standard input" } else { &r.log },
        if r.out == "-" { "standard output" } else { &r.out },
        if r.interrupted { " (stopped by Ctrl-C)" } else { "" }
    );
    if r.gap_count == 0 && r.malformed_count == 0 && r.restart_count == 0 {
        let _ = write!(s, "no gaps in the sequence numbers, no malformed lines");
    } else {
        let mut parts = Vec::new();
        if r.gap_count > 0 {
            let head = format!(
                "{} in the sequence numbers, {} lost",
                count(r.gap_count as u64, "gap"),
                count(r.missing, "reading")
            );
            parts.push(listed(head, &r.gaps, r.gap_count, ", ", |g| {
                format!("line {} (seq {} → {}, {} missing)", g.line, g.after, g.seq, g.missing)
            }));
        }
        if r.restart_count > 0 {
            let head = format!("{} of the device", count(r.restart_count as u64, "restart"));
            parts.push(listed(head, &r.restarts, r.restart_count, ", ", |x| {
                format!("line {} (seq {} → {})", x.line, x.after, x.seq)
            }));
        }
        if r.malformed_count > 0 {
            let head = count(r.malformed_count as u64, "malformed line");
            parts.push(listed(head, &r.malformed, r.malformed_count, "; ", |m| {
                format!("line {}: {} (`{}`)", m.line, m.why, m.text)
            }));
        }
        let _ = write!(s, "{}", parts.join("\n"));
    }
    if r.sensor_errors > 0 {
        let _ = write!(
            s,
            "\n{} on the device (`rec error` lines: readings the sensor could not give)",
            count(r.sensor_errors as u64, "sensor error")
        );
    }
    s
}

/// `head: item, item, …`: the first five of `items` (`total` in all),
/// joined by `sep`, and `sep…` when there are more.
fn listed<T>(head: String, items: &[T], total: usize, sep: &str, item: impl Fn(&T) -> String) -> String {
    let list: Vec<String> = items.iter().take(5).map(item).collect();
    let more = if total > 5 { format!("{sep}…") } else { String::new() };
    format!("{head}: {}{more}", list.join(sep))
}

/// Run `flowmote record`; returns the report (printed to standard error,
/// and as JSON on standard output with `--json`).
pub fn run_record(a: &RecordArgs) -> Result<RecordReport> {
    let to_stdout = output::is_stdout(&a.out);
    if a.json && to_stdout {
        bail!("--json and --out - would both write standard output: give --out a file");
    }
    if let Some(ch) = &a.channels {
        if ch.is_empty() || ch.iter().any(|c| c.trim().is_empty()) {
            bail!("--channels needs comma-separated names (e.g. --channels x,y,z)");
        }
    }
    output::refuse_inputs(&a.out, &[&a.log])?;
    devlog::catch_interrupts();
    let mut reader = LogReader::open(&a.log)?;
    let mut out = output::Streaming::create(&a.out)?;
    let mut rec = Recording::new(a.channels.clone()).with_limit(a.count);
    let mut rows = Vec::new();
    let mut header_written = false;
    let mut dirty = false;
    loop {
        match reader.next(Duration::from_millis(100))? {
            Next::Line(n, raw) => {
                rec.push(n, &raw, &mut rows)?;
                if rows.is_empty() {
                    continue;
                }
                let mut text = String::new();
                if !header_written {
                    let mut cols: Vec<String> = Vec::new();
                    if a.seq {
                        cols.push("seq".into());
                    }
                    cols.extend(rec.channels().unwrap_or_default().iter().map(|c| csv_field(c)));
                    text.push_str(&cols.join(","));
                    text.push('\n');
                    header_written = true;
                }
                for (seq, values) in rows.drain(..) {
                    if a.seq {
                        let _ = write!(text, "{seq},");
                    }
                    text.push_str(&values.join(","));
                    text.push('\n');
                }
                out.write_all(text.as_bytes())?;
                dirty = true;
                if rec.is_full() {
                    break;
                }
            }
            Next::Idle => {
                if dirty {
                    out.flush()?;
                    dirty = false;
                }
            }
            Next::End => break,
        }
    }
    let mut report = std::mem::take(&mut rec.report);
    report.log = a.log.display().to_string();
    report.out = a.out.display().to_string();
    report.lines = reader.lines();
    report.interrupted = reader.interrupted();
    report.channels = rec.channels().map(<[String]>::to_vec).unwrap_or_default();
    if report.readings == 0 {
        if rec.held() > 0 {
            bail!(
                "{}: {} readings but no `rec header` line naming their channels (the device logs one before \
                 the first reading and every 1000 readings): give --channels",
                reader.name(),
                rec.held()
            );
        }
        bail!(
            "no readings in {} ({} lines, {} malformed `rec` lines): record-mode lines start with `rec` — is \
             the image built with `--features record`?",
            reader.name(),
            report.lines,
            report.malformed_count
        );
    }
    if a.strict && (report.gap_count > 0 || report.malformed_count > 0 || report.restart_count > 0) {
        bail!(
            "--strict: readings were lost, nothing written to {}\n{}",
            a.out.display(),
            describe(&report)
        );
    }
    out.commit()?;
    eprintln!("{}", describe(&report));
    if a.json {
        output::to_stdout(format!("{}\n", serde_json::to_string_pretty(&report)?).as_bytes())?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(rec: &mut Recording, lines: &[&str]) -> Vec<(u32, Vec<String>)> {
        let mut rows = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            rec.push(i + 1, l, &mut rows).unwrap();
        }
        rows
    }

    #[test]
    fn rec_lines_parse_in_any_dress() {
        let r = |s: &str| parse_rec(&devlog::clean(s).text);
        let reading = |seq, v: &[&str]| {
            Some(Ok(RecLine::Reading {
                seq,
                values: v.iter().map(|s| s.to_string()).collect(),
            }))
        };
        assert_eq!(r("INFO  rec 0 303 1166 316"), reading(0, &["303", "1166", "316"]));
        assert_eq!(
            r("\u{1b}[2m12.345\u{1b}[0m \u{1b}[32m[INFO ]\u{1b}[0m rec 7 -1 2 3 (app src/record.rs:90)"),
            reading(7, &["-1", "2", "3"])
        );
        assert_eq!(
            r(r#"{"data":"rec 9 1 2 3","level":"INFO"}"#),
            reading(9, &["1", "2", "3"])
        );
        assert_eq!(
            r("INFO  rec header a,b,c"),
            Some(Ok(RecLine::Header(vec!["a".into(), "b".into(), "c".into()])))
        );
        assert_eq!(
            r("WARN  rec error i2c: no acknowledge"),
            Some(Ok(RecLine::SensorError("i2c: no acknowledge".into())))
        );
        assert_eq!(
            r("└─ flowmote_firmware::record::{impl#0}::step @ app/src/log.rs:6"),
            None
        );
        assert_eq!(r("INFO  commissioned: threshold 3.2 nats saved (record 2)"), None);
        assert!(matches!(r("INFO  rec"), Some(Err(_))));
        assert!(matches!(r("INFO  rec 12"), Some(Err(_))));
        assert!(matches!(r("INFO  rec -1 2 3 4"), Some(Err(_))));
        assert!(matches!(r("INFO  rec header"), Some(Err(_))));
        assert!(matches!(r("INFO  rec header a,,b"), Some(Err(_))));
    }

    #[test]
    fn gaps_restarts_and_held_readings() {
        let mut rec = Recording::new(None);
        let rows = feed(
            &mut rec,
            &[
                "INFO rec 5 1 2 3",
                "INFO rec header x,y,z",
                "INFO rec 6 1 2 3",
                "INFO rec 9 1 2",
                "INFO rec 10 1 2 3",
                "INFO rec header x,y,z",
                "INFO rec 0 4 5 6",
                "WARN rec error sensor: implausible frame (garbage)",
            ],
        );
        assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), vec![5, 6, 10, 0]);
        let r = &rec.report;
        assert_eq!((r.readings, r.first_seq, r.last_seq), (4, Some(5), Some(0)));
        assert_eq!(
            r.gaps,
            vec![Gap {
                line: 5,
                after: 6,
                seq: 10,
                missing: 3
            }]
        );
        assert_eq!(
            r.restarts,
            vec![Restart {
                line: 7,
                after: 10,
                seq: 0
            }]
        );
        assert_eq!(r.malformed.len(), 1);
        assert_eq!(r.malformed[0].line, 4);
        assert_eq!((r.sensor_errors, r.headers), (1, 2));
    }

    #[test]
    fn channel_changes_are_errors() {
        let mut rec = Recording::new(None);
        let mut rows = Vec::new();
        rec.push(1, "rec header a,b", &mut rows).unwrap();
        let e = rec.push(2, "rec header a,c", &mut rows).unwrap_err();
        assert!(
            e.to_string().starts_with("line 2: the device's channels changed"),
            "{e}"
        );
        let mut rec = Recording::new(Some(vec!["u".into()]));
        let e = rec.push(3, "rec header a,b", &mut rows).unwrap_err();
        assert!(e.to_string().contains("--channels gives 1"), "{e}");
    }
}
