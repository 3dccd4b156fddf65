//! The firmware's log as text: what `probe-rs run` and `defmt-print` print,
//! live on a pipe or saved to a file, read line by line for `flowmote
//! record` and `flowmote monitor`.
//!
//! Decoders dress a log line up in many ways — a timestamp, a level
//! (`INFO`, `[INFO ]`), ANSI colour codes, a second line with the source
//! location (`└─ module @ file:line`), carriage-return progress output
//! from the flashing step, or one JSON object per line (`defmt-print
//! --json`). [`clean`] takes all that off and returns the level and the text;
//! the commands then look for their own words in the text, never at fixed
//! positions, so any of those layouts reads the same.
//!
//! [`LogReader`] reads standard input (`-`) or a file on a thread of its own,
//! so a command can redraw while it waits and stop cleanly on Ctrl-C
//! ([`catch_interrupts`]): the first Ctrl-C ends the log as if it had ended
//! there, a second one exits at once (status 130).

use anyhow::{Context, Result};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Once;
use std::time::Duration;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Make Ctrl-C (SIGINT) end the log being read instead of the process: the
/// first one sets a flag that [`LogReader::next`] turns into the end of the
/// log (the command then writes what it has and its summary), a second one
/// exits with status 130. Installed once per process; later calls do nothing.
pub fn catch_interrupts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
        });
    });
}

/// Whether Ctrl-C was pressed since [`catch_interrupts`].
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// What [`LogReader::next`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// A line (1-based line number, text without the line ending; invalid
    /// UTF-8 replaced).
    Line(usize, String),
    /// No line within the wait: the log goes on (a live device is quiet).
    Idle,
    /// The log ended (end of file, or Ctrl-C: see [`LogReader::interrupted`]).
    End,
}

/// A log read line by line on a thread of its own (see the module docs).
pub struct LogReader {
    rx: Receiver<std::io::Result<Vec<u8>>>,
    name: String,
    line: usize,
    interrupted: bool,
}

impl LogReader {
    /// Read `path`, or standard input for `-`. A file that cannot be opened
    /// is an error naming it.
    pub fn open(path: &Path) -> Result<LogReader> {
        let name = if path.as_os_str() == "-" {
            "standard input".to_string()
        } else {
            path.display().to_string()
        };
        let input: Box<dyn Read + Send> = if path.as_os_str() == "-" {
            Box::new(std::io::stdin())
        } else {
            Box::new(std::fs::File::open(path).with_context(|| format!("cannot open the log {name}"))?)
        };
        // Bounded: a fast file is read no further ahead than the command
        // keeps up with.
        let (tx, rx) = mpsc::sync_channel(4096);
        std::thread::spawn(move || {
            let mut r = BufReader::new(input);
            loop {
                let mut buf = Vec::new();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) => break,
                    Ok(_) => {
                        if tx.send(Ok(buf)).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        break;
                    }
                }
            }
        });
        Ok(LogReader {
            rx,
            name,
            line: 0,
            interrupted: false,
        })
    }

    /// The log's name for messages: the path, or `standard input`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Lines read so far.
    pub fn lines(&self) -> usize {
        self.line
    }

    /// Whether the log was ended by Ctrl-C rather than by its end.
    pub fn interrupted(&self) -> bool {
        self.interrupted
    }

    /// The next line, waiting at most `wait` for it. A read error is an
    /// error naming the log and the line.
    pub fn next(&mut self, wait: Duration) -> Result<Next> {
        if interrupted() {
            self.interrupted = true;
            return Ok(Next::End);
        }
        match self.rx.recv_timeout(wait) {
            Ok(Ok(bytes)) => {
                self.line += 1;
                let mut s = String::from_utf8_lossy(&bytes).into_owned();
                while s.ends_with(['\n', '\r']) {
                    s.pop();
                }
                Ok(Next::Line(self.line, s))
            }
            Ok(Err(e)) => Err(anyhow::Error::new(e).context(format!(
                "cannot read the log {} at line {}",
                self.name,
                self.line + 1
            ))),
            Err(RecvTimeoutError::Timeout) => Ok(Next::Idle),
            Err(RecvTimeoutError::Disconnected) => Ok(Next::End),
        }
    }
}

/// A log level, as the decoders print it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// `TRACE`
    Trace,
    /// `DEBUG`
    Debug,
    /// `INFO`
    Info,
    /// `WARN`
    Warn,
    /// `ERROR`
    Error,
}

impl Level {
    fn parse(word: &str) -> Option<Level> {
        match word.trim_matches(|c: char| "[]():<>".contains(c)) {
            "TRACE" => Some(Level::Trace),
            "DEBUG" => Some(Level::Debug),
            "INFO" => Some(Level::Info),
            "WARN" | "WARNING" => Some(Level::Warn),
            "ERROR" => Some(Level::Error),
            _ => None,
        }
    }
}

/// One log line, cleaned by [`clean`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// The level, if the line shows one among its first words.
    pub level: Option<Level>,
    /// The text: colour codes removed; for a JSON line, its `data`.
    pub text: String,
}

impl LogLine {
    /// The words of the text (split on white space).
    pub fn words(&self) -> std::str::SplitWhitespace<'_> {
        self.text.split_whitespace()
    }

    /// Whether this is a decoder's location line (`└─ module @ file:line`).
    pub fn is_location(&self) -> bool {
        self.text.trim_start().starts_with("└─")
    }
}

/// Remove ANSI escape sequences (colours, cursor movement, terminal titles).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        match it.next() {
            // CSI: parameters and intermediates, then one final byte @..~.
            Some('[') => {
                for c in it.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            // OSC: up to BEL or ESC \.
            Some(']') => {
                while let Some(c) = it.next() {
                    if c == '\u{7}' {
                        break;
                    }
                    if c == '\u{1b}' {
                        it.next_if_eq(&'\\');
                        break;
                    }
                }
            }
            // A two-character sequence (ESC c, ESC 7…), or a lone ESC at the end.
            _ => {}
        }
    }
    out
}

/// Take a raw log line apart: colour codes off; of a line a terminal would
/// overwrite with carriage returns, the last part; of a `defmt-print
/// --json` line, its `data` and `level`; the level among the first four
/// words otherwise.
pub fn clean(raw: &str) -> LogLine {
    let plain = strip_ansi(raw);
    let shown = plain
        .split('\r')
        .rev()
        .find(|s| !s.trim().is_empty())
        .unwrap_or_default();
    let t = shown.trim();
    if t.starts_with('{') && t.ends_with('}') {
        if let Ok(serde_json::Value::Object(o)) = serde_json::from_str::<serde_json::Value>(t) {
            let text = o.get("data").and_then(|d| d.as_str()).unwrap_or_default().to_string();
            let level = o.get("level").and_then(|l| l.as_str()).and_then(Level::parse);
            return LogLine { level, text };
        }
    }
    let level = t.split_whitespace().take(4).find_map(Level::parse);
    LogLine {
        level,
        text: t.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_and_titles_are_removed() {
        assert_eq!(
            strip_ansi("\u{1b}[2m0.001\u{1b}[0m \u{1b}[32mINFO \u{1b}[0m rec 1 2 3 4"),
            "0.001 INFO  rec 1 2 3 4"
        );
        assert_eq!(strip_ansi("\u{1b}]0;title\u{7}x\u{1b}[1;31my"), "xy");
        assert_eq!(strip_ansi("a\u{1b}"), "a");
    }

    #[test]
    fn levels_json_and_carriage_returns() {
        let l = clean("\u{1b}[33m[WARN ]\u{1b}[0m rec error i2c: no acknowledge");
        assert_eq!(l.level, Some(Level::Warn));
        assert_eq!(l.text, "[WARN ] rec error i2c: no acknowledge");
        let l = clean(r#"{"data":"rec 0 1 2 3","level":"INFO","target_timestamp":""}"#);
        assert_eq!((l.level, l.text.as_str()), (Some(Level::Info), "rec 0 1 2 3"));
        assert_eq!(clean(r#"{"schema_version":1}"#).text, "");
        assert_eq!(clean("Erasing 10%\rErasing 100%\r\n").text, "Erasing 100%");
        assert!(clean("└─ flowmote_firmware::record::step @ app/src/log.rs:6").is_location());
        assert_eq!(clean("12.5 INFO score 1").level, Some(Level::Info));
        assert_eq!(clean("information").level, None);
    }
}
