//! `flowmote monitor`: watch a running device from its log — scores,
//! threshold, anomaly rate and alarm state as the firmware's monitor logs
//! them (`flowmote_firmware::monitor`: `score S threshold T normal|ANOMALOUS
//! alarm true|false`, `invalid features (…) alarm …`, sensor errors).
//!
//! On a terminal the view is redrawn in place as lines arrive (at most ten
//! times a second); otherwise (a pipe, a file, CI) it prints a line when the
//! alarm goes on or off or the threshold changes, a one-line summary every
//! `--interval` seconds while the log goes on, and the summary at the end.
//! `--json` prints only the final summary, as one JSON object. The log is
//! read line by line, from a file or from standard input (`probe-rs run … |
//! flowmote monitor --log -`); Ctrl-C ends it with the summary.

use crate::devlog::{self, Level, LogReader, Next};
use crate::output::{self, count};
use anyhow::{bail, Result};
use clap::Args;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Windows the sparkline of recent scores shows.
pub const RECENT: usize = 60;

/// Arguments of `flowmote monitor`.
#[derive(Args, Debug, Clone)]
pub struct MonitorArgs {
    /// The device's decoded log: a file, or `-` for standard input (pipe
    /// `probe-rs run …` or `defmt-print …` into it).
    #[arg(long)]
    pub log: PathBuf,
    /// Print only the final summary, as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Plain lines even on a terminal (alarm changes, periodic and final
    /// summaries) instead of the refreshed view.
    #[arg(long)]
    pub plain: bool,
    /// Seconds between the plain output's one-line summaries while the log
    /// goes on (0: none).
    #[arg(long, default_value_t = 60.0)]
    pub interval: f64,
}

/// One monitor line of the firmware's log.
#[derive(Clone, Debug, PartialEq)]
pub enum MonitorLine {
    /// `score S threshold T normal|ANOMALOUS alarm B`: a scored window.
    Score {
        /// −log p of the window (nats).
        score: f64,
        /// The threshold it was compared with.
        threshold: f64,
        /// Whether it was over the threshold.
        anomalous: bool,
        /// The debounced alarm after it.
        alarm: bool,
    },
    /// `invalid features (…) alarm B`: a window the model could not score.
    Invalid {
        /// The debounced alarm (unchanged by such a window).
        alarm: bool,
    },
    /// `i2c: …` or `sensor: unexpected WHO_AM_I`: the sensor failed.
    SensorError,
    /// `sensor: implausible frame (garbage)`.
    Garbage,
    /// `sensor initialised`.
    SensorInit,
    /// `Stats { scored: …, … }`: the device's own counters.
    Stats(BTreeMap<String, u64>),
}

fn parse_bool(w: Option<&str>) -> Option<bool> {
    match w? {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// Recognise a monitor line in the text of a cleaned log line.
pub fn parse_monitor(text: &str) -> Option<MonitorLine> {
    let w: Vec<&str> = text.split_whitespace().collect();
    for i in 0..w.len() {
        match w[i] {
            "score" if w.len() >= i + 7 => {
                let (Ok(score), "threshold", Ok(threshold), verdict, "alarm", Some(alarm)) = (
                    w[i + 1].parse::<f64>(),
                    w[i + 2],
                    w[i + 3].parse::<f64>(),
                    w[i + 4],
                    w[i + 5],
                    parse_bool(w.get(i + 6).copied()),
                ) else {
                    continue;
                };
                let anomalous = match verdict {
                    "normal" => false,
                    "ANOMALOUS" => true,
                    _ => continue,
                };
                return Some(MonitorLine::Score {
                    score,
                    threshold,
                    anomalous,
                    alarm,
                });
            }
            "invalid" if w.get(i + 1).is_some_and(|n| n.starts_with("features")) => {
                let at = w.iter().rposition(|x| *x == "alarm")?;
                return parse_bool(w.get(at + 1).copied()).map(|alarm| MonitorLine::Invalid { alarm });
            }
            "i2c:" => return Some(MonitorLine::SensorError),
            "sensor:" => match w.get(i + 1).copied() {
                Some("implausible") => return Some(MonitorLine::Garbage),
                Some("unexpected") => return Some(MonitorLine::SensorError),
                _ => {}
            },
            "sensor" if w.get(i + 1) == Some(&"initialised") => return Some(MonitorLine::SensorInit),
            "Stats" if w.get(i + 1) == Some(&"{") => {
                let mut m = BTreeMap::new();
                for pair in w[i + 2..].windows(2) {
                    if let (Some(k), Ok(v)) = (
                        pair[0].strip_suffix(':'),
                        pair[1].trim_end_matches([',', '}']).parse::<u64>(),
                    ) {
                        m.insert(k.to_string(), v);
                    }
                }
                return Some(MonitorLine::Stats(m));
            }
            _ => {}
        }
    }
    None
}

/// Something the plain output announces as it happens.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// The debounced alarm went on.
    AlarmOn,
    /// It went off.
    AlarmOff,
    /// The threshold changed (commissioning, a saved threshold), from the
    /// old value.
    Threshold(f64),
}

/// A log line worth showing (its number and text).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Noted {
    /// Line number in the log.
    pub line: usize,
    /// The line's text.
    pub text: String,
}

/// The final summary (`--json` prints it).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MonitorSummary {
    /// The log read (`-` = standard input).
    pub log: String,
    /// Lines read.
    pub lines: usize,
    /// Windows the device assessed (score lines and invalid ones).
    pub windows: u64,
    /// Of those, normal.
    pub normal: u64,
    /// Anomalous (over the threshold).
    pub anomalous: u64,
    /// Not scorable (invalid features).
    pub invalid: u64,
    /// anomalous / (normal + anomalous); `null` before the first score.
    pub anomaly_rate: Option<f64>,
    /// The last threshold logged (nats).
    pub threshold: Option<f64>,
    /// How often the threshold changed.
    pub threshold_changes: u64,
    /// The last score.
    pub last_score: Option<f64>,
    /// Mean of the finite scores.
    pub mean_score: Option<f64>,
    /// Smallest score.
    pub min_score: Option<f64>,
    /// Largest score.
    pub max_score: Option<f64>,
    /// The debounced alarm at the end; `null` before the first window.
    pub alarm: Option<bool>,
    /// Times the alarm went on.
    pub alarms_raised: u64,
    /// Line where the alarm last went on.
    pub alarm_since_line: Option<usize>,
    /// Sensor bus errors (and wrong `WHO_AM_I`).
    pub sensor_errors: u64,
    /// Garbage frames.
    pub garbage_frames: u64,
    /// Sensor initialisations.
    pub sensor_inits: u64,
    /// Other warning lines.
    pub warnings: u64,
    /// Other error lines.
    pub errors: u64,
    /// The last of those warning or error lines.
    pub last_problem: Option<Noted>,
    /// The device's last `Stats { … }` line (its own counters).
    pub device_stats: Option<BTreeMap<String, u64>>,
    /// Whether Ctrl-C ended the log.
    pub interrupted: bool,
}

/// What the log has said so far.
#[derive(Debug, Default)]
pub struct Watch {
    /// The summary so far.
    pub s: MonitorSummary,
    sum: f64,
    finite: u64,
    /// Recent windows: the score and whether it was anomalous; `None` for
    /// an invalid window.
    pub recent: VecDeque<Option<(f64, bool)>>,
    /// The last monitor line.
    pub last: Option<Noted>,
}

impl Watch {
    /// Take in log line `line` (raw); returns what changed that is worth
    /// announcing (in order).
    pub fn push(&mut self, line: usize, raw: &str) -> Vec<Change> {
        self.s.lines = self.s.lines.max(line);
        let l = devlog::clean(raw);
        if l.is_location() {
            return Vec::new();
        }
        let Some(m) = parse_monitor(&l.text) else {
            match l.level {
                Some(Level::Warn) => self.s.warnings += 1,
                Some(Level::Error) => self.s.errors += 1,
                _ => return Vec::new(),
            }
            self.s.last_problem = Some(Noted { line, text: l.text });
            return Vec::new();
        };
        let s = &mut self.s;
        let mut change = Vec::new();
        let alarm = match m {
            MonitorLine::Score {
                score,
                threshold,
                anomalous,
                alarm,
            } => {
                s.windows += 1;
                if anomalous {
                    s.anomalous += 1;
                } else {
                    s.normal += 1;
                }
                s.anomaly_rate = Some(s.anomalous as f64 / (s.normal + s.anomalous) as f64);
                if let Some(old) = s.threshold.filter(|t| *t != threshold) {
                    s.threshold_changes += 1;
                    change.push(Change::Threshold(old));
                }
                s.threshold = Some(threshold);
                s.last_score = Some(score);
                if score.is_finite() {
                    self.sum += score;
                    self.finite += 1;
                    s.mean_score = Some(self.sum / self.finite as f64);
                    s.min_score = Some(s.min_score.map_or(score, |m| m.min(score)));
                    s.max_score = Some(s.max_score.map_or(score, |m| m.max(score)));
                }
                self.recent.push_back(Some((score, anomalous)));
                Some(alarm)
            }
            MonitorLine::Invalid { alarm } => {
                s.windows += 1;
                s.invalid += 1;
                self.recent.push_back(None);
                Some(alarm)
            }
            MonitorLine::SensorError => {
                s.sensor_errors += 1;
                None
            }
            MonitorLine::Garbage => {
                s.garbage_frames += 1;
                None
            }
            MonitorLine::SensorInit => {
                s.sensor_inits += 1;
                None
            }
            MonitorLine::Stats(m) => {
                s.device_stats = Some(m);
                None
            }
        };
        while self.recent.len() > RECENT {
            self.recent.pop_front();
        }
        if let Some(on) = alarm {
            if on && s.alarm != Some(true) {
                s.alarms_raised += 1;
                s.alarm_since_line = Some(line);
                change.push(Change::AlarmOn);
            } else if !on && s.alarm == Some(true) {
                change.push(Change::AlarmOff);
            }
            s.alarm = Some(on);
            self.last = Some(Noted { line, text: l.text });
        }
        change
    }

    /// The recent scores as a bar per window: the threshold at mid-height,
    /// the lowest score at the bottom; `×` for an invalid window. With
    /// `color`, anomalous windows are red.
    pub fn sparkline(&self, color: bool) -> String {
        const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
        let scores: Vec<f64> = self
            .recent
            .iter()
            .flatten()
            .map(|x| x.0)
            .filter(|v| v.is_finite())
            .collect();
        let lo = scores.iter().copied().fold(f64::INFINITY, f64::min);
        let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let hi = match self.s.threshold {
            Some(t) if t > lo => lo + 2.0 * (t - lo),
            _ => max,
        };
        let mut out = String::new();
        for w in &self.recent {
            match w {
                None => out.push('×'),
                Some((v, anomalous)) => {
                    let f = if hi > lo && v.is_finite() {
                        ((v - lo) / (hi - lo)).clamp(0.0, 1.0)
                    } else if v.is_finite() {
                        0.0
                    } else {
                        1.0
                    };
                    let bar = BARS[((f * 7.0).round() as usize).min(7)];
                    if color && *anomalous {
                        let _ = write!(out, "\u{1b}[31m{bar}\u{1b}[0m");
                    } else {
                        out.push(bar);
                    }
                }
            }
        }
        out
    }

    /// The summary as lines of text (the terminal view, and the plain
    /// output's final summary).
    pub fn render(&self, name: &str, color: bool, rate: Option<f64>) -> Vec<String> {
        let s = &self.s;
        let paint = |code: &str, t: String| {
            if color {
                format!("\u{1b}[{code}m{t}\u{1b}[0m")
            } else {
                t
            }
        };
        let num = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.4}"));
        let mut lines = Vec::new();
        lines.push(format!(
            "flowmote monitor · {name} · {} lines{}",
            s.lines,
            rate.map_or(String::new(), |r| format!(" · {r:.1} windows/s"))
        ));
        lines.push(match s.alarm {
            Some(true) => paint(
                "1;31",
                format!("ALARM ON since line {}", s.alarm_since_line.unwrap_or_default()),
            ),
            Some(false) => paint("32", "alarm off".to_string()),
            None => "alarm –  (no window yet)".to_string(),
        });
        lines.push(format!(
            "windows   {}: {} normal, {} anomalous ({}), {} invalid",
            s.windows,
            s.normal,
            s.anomalous,
            s.anomaly_rate
                .map_or("–".to_string(), |r| format!("{:.1} %", 100.0 * r)),
            s.invalid
        ));
        lines.push(format!(
            "score     last {} · mean {} · min {} · max {} · threshold {}{}",
            num(s.last_score),
            num(s.mean_score),
            num(s.min_score),
            num(s.max_score),
            num(s.threshold),
            if s.threshold_changes > 0 {
                format!(" ({} changes)", s.threshold_changes)
            } else {
                String::new()
            }
        ));
        lines.push(format!(
            "alarms    {} raised · sensor: {}, {}, {}",
            s.alarms_raised,
            count(s.sensor_errors, "bus error"),
            count(s.garbage_frames, "garbage frame"),
            count(s.sensor_inits, "initialisation")
        ));
        if let Some(d) = &s.device_stats {
            let list: Vec<String> = d.iter().map(|(k, v)| format!("{k} {v}")).collect();
            lines.push(format!("device    its own counters: {}", list.join(", ")));
        }
        if !self.recent.is_empty() {
            lines.push(format!(
                "recent    {}  (last {} windows; threshold at mid-height)",
                self.sparkline(color),
                self.recent.len()
            ));
        }
        if let Some(n) = &self.last {
            lines.push(format!("last      line {}: {}", n.line, n.text));
        }
        if s.warnings + s.errors > 0 {
            let last = s
                .last_problem
                .as_ref()
                .map_or(String::new(), |p| format!(" — last, line {}: {}", p.line, p.text));
            lines.push(format!(
                "other     {}, {}{last}",
                count(s.warnings, "warning"),
                count(s.errors, "error")
            ));
        }
        lines
    }

    /// One line for the plain output's periodic summary.
    pub fn one_line(&self) -> String {
        let s = &self.s;
        format!(
            "line {}: {} windows ({} anomalous{}), last score {}, threshold {}, alarm {}",
            s.lines,
            s.windows,
            s.anomalous,
            s.anomaly_rate
                .map_or(String::new(), |r| format!(", {:.1} %", 100.0 * r)),
            s.last_score.map_or("–".into(), |v| format!("{v:.4}")),
            s.threshold.map_or("–".into(), |v| format!("{v:.4}")),
            match s.alarm {
                Some(true) => "ON",
                Some(false) => "off",
                None => "–",
            }
        )
    }
}

/// Cut `s` to `width` visible characters (colour codes kept whole).
fn fit(s: &str, width: usize) -> String {
    let mut out = String::new();
    let mut shown = 0;
    let mut in_escape = false;
    for c in s.chars() {
        if c == '\u{1b}' {
            in_escape = true;
        }
        if in_escape {
            out.push(c);
            if c.is_ascii_alphabetic() {
                in_escape = false;
            }
            continue;
        }
        if shown == width {
            continue;
        }
        out.push(c);
        shown += 1;
    }
    out
}

/// The terminal view: redrawn in place.
struct View {
    drawn: usize,
    last: Option<Instant>,
}

impl View {
    fn draw(&mut self, lines: &[String]) -> Result<()> {
        let width = console::Term::stdout().size().1.max(20) as usize;
        let mut out = String::new();
        if self.drawn > 0 {
            let _ = write!(out, "\u{1b}[{}A\r\u{1b}[J", self.drawn);
        } else {
            out.push_str("\u{1b}[?25l");
        }
        for l in lines {
            out.push_str(&fit(l, width - 1));
            out.push('\n');
        }
        self.drawn = lines.len();
        self.last = Some(Instant::now());
        output::to_stdout(out.as_bytes())
    }
}

/// Run `flowmote monitor`; returns the final summary.
pub fn run_monitor(a: &MonitorArgs) -> Result<MonitorSummary> {
    if !(a.interval >= 0.0 && a.interval.is_finite()) {
        bail!("--interval must be a number of seconds ≥ 0");
    }
    devlog::catch_interrupts();
    let mut reader = LogReader::open(&a.log)?;
    let name = reader.name().to_string();
    let tty = !a.json && !a.plain && std::io::stdout().is_terminal();
    let mut w = Watch::default();
    let mut view = View { drawn: 0, last: None };
    let started = Instant::now();
    let mut first_window: Option<(Instant, u64)> = None;
    let mut last_summary = (Instant::now(), 0u64);
    let mut pending = false;
    let result = (|| -> Result<()> {
        loop {
            let next = reader.next(Duration::from_millis(100))?;
            let end = next == Next::End;
            if let Next::Line(n, raw) = next {
                let change = w.push(n, &raw);
                pending = true;
                if first_window.is_none() && w.s.windows > 0 {
                    first_window = Some((Instant::now(), w.s.windows));
                }
                if !tty && !a.json {
                    for c in change {
                        let text = match c {
                            Change::AlarmOn => format!(
                                "line {n}: ALARM ON (score {}, threshold {})",
                                w.s.last_score.map_or("–".into(), |v| format!("{v:.4}")),
                                w.s.threshold.map_or("–".into(), |v| format!("{v:.4}"))
                            ),
                            Change::AlarmOff => format!("line {n}: alarm off"),
                            Change::Threshold(old) => format!(
                                "line {n}: threshold {} (was {old:.4})",
                                w.s.threshold.map_or("–".into(), |v| format!("{v:.4}"))
                            ),
                        };
                        output::to_stdout(format!("{text}\n").as_bytes())?;
                    }
                }
            }
            if tty && pending && (end || view.last.is_none_or(|t| t.elapsed() >= Duration::from_millis(100))) {
                let rate = first_window.and_then(|(t, k)| {
                    let secs = t.elapsed().as_secs_f64();
                    (secs > 1.0).then(|| (w.s.windows - k) as f64 / secs)
                });
                view.draw(&w.render(&name, true, rate))?;
                pending = false;
            }
            if !tty
                && !a.json
                && a.interval > 0.0
                && !end
                && last_summary.0.elapsed().as_secs_f64() >= a.interval
                && w.s.windows > last_summary.1
            {
                output::to_stdout(format!("{}\n", w.one_line()).as_bytes())?;
                last_summary = (Instant::now(), w.s.windows);
            }
            if end {
                return Ok(());
            }
        }
    })();
    if tty && view.drawn > 0 {
        let _ = output::to_stdout(b"\x1b[?25h");
    }
    result?;
    w.s.log = a.log.display().to_string();
    w.s.lines = reader.lines();
    w.s.interrupted = reader.interrupted();
    let _ = started;
    if a.json {
        output::to_stdout(format!("{}\n", serde_json::to_string_pretty(&w.s)?).as_bytes())?;
    } else if tty {
        output::to_stdout(
            format!(
                "{} after {} lines\n",
                if w.s.interrupted {
                    "stopped (Ctrl-C)"
                } else {
                    "the log ended"
                },
                w.s.lines
            )
            .as_bytes(),
        )?;
    } else {
        let mut text = w.render(&name, false, None).join("\n");
        text.push('\n');
        output::to_stdout(text.as_bytes())?;
    }
    if w.s.windows == 0 && !w.s.interrupted {
        bail!(
            "no monitor lines in {name} ({} lines; none is `score … threshold … alarm …`): is it the log of \
             the monitor image?",
            w.s.lines
        );
    }
    Ok(w.s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
INFO  sensor initialised
INFO  score 19.44773 threshold 32.692963 normal alarm false
WARN  sensor: implausible frame (garbage)
WARN  i2c: no acknowledge
INFO  sensor initialised
WARN  score 1132.7031 threshold 32.692963 ANOMALOUS alarm false
WARN  score 1359.923 threshold 32.692963 ANOMALOUS alarm true
└─ flowmote_firmware::monitor::{impl#0}::decide @ app/src/log.rs:11
WARN  invalid features (NonFinite) alarm true
INFO  score 17.01691 threshold 30.5 normal alarm false
ERROR self-test: 1 golden windows differ from the host
INFO  monitor: Stats { scored: 4, anomalous: 2, invalid: 1, sensor_errors: 1, garbage: 1, pin_errors: 0 }";

    #[test]
    fn the_monitor_lines_are_counted() {
        let mut w = Watch::default();
        let changes: Vec<_> = LOG.lines().enumerate().flat_map(|(i, l)| w.push(i + 1, l)).collect();
        assert_eq!(
            changes,
            vec![Change::AlarmOn, Change::Threshold(32.692963), Change::AlarmOff]
        );
        let s = &w.s;
        assert_eq!((s.windows, s.normal, s.anomalous, s.invalid), (5, 2, 2, 1));
        assert_eq!((s.sensor_errors, s.garbage_frames, s.sensor_inits), (1, 1, 2));
        assert_eq!(
            (s.alarm, s.alarms_raised, s.alarm_since_line),
            (Some(false), 1, Some(7))
        );
        assert_eq!((s.threshold, s.threshold_changes), (Some(30.5), 1));
        assert_eq!((s.errors, s.warnings), (1, 0));
        assert_eq!(s.device_stats.as_ref().and_then(|m| m.get("garbage")), Some(&1));
        assert_eq!(s.max_score, Some(1359.923));
        assert_eq!(w.sparkline(false).chars().count(), 5);
        assert!(w.sparkline(false).contains('×'));
    }

    #[test]
    fn fit_keeps_colour_codes_whole() {
        assert_eq!(fit("\u{1b}[31mabcdef\u{1b}[0m", 3), "\u{1b}[31mabc\u{1b}[0m");
    }
}
