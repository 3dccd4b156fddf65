//! What every CLI test file needs: run the `flowmote` binary as a user's
//! shell would, and read what it printed.
#![allow(dead_code)] // each test file uses its own subset

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// `flowmote ARGS` with standard input closed.
pub fn flowmote(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowmote"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run flowmote")
}

/// `flowmote ARGS` with `stdin` (if any) on standard input.
pub fn flowmote_fed(args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flowmote"))
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run flowmote");
    if let Some(text) = stdin {
        // A command that fails before reading closes its end: not an error here.
        let _ = c.stdin.take().expect("piped stdin").write_all(text.as_bytes());
    }
    c.wait_with_output().expect("wait for flowmote")
}

/// What it printed on standard error.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
