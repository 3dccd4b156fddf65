//! CSV loading with errors that name the file, line and column.
//!
//! Every file needs a header row. [`load_training`] reads a training file:
//! every column except an optional label column must be numeric and finite,
//! and the first bad cell is reported (`file line L, column C "name": …`).
//! [`load_for_model`] reads a file to score against a trained model: the
//! model's feature columns are picked by name (extra columns are ignored),
//! and a cell that is empty, not a number, NaN or infinite does not fail the
//! whole file — the row gets an error message ([`Dataset::row_errors`]) and
//! the caller reports it (`score` writes it in an error column, `eval` counts
//! it). Malformed CSV (a record with the wrong number of fields, bad UTF-8)
//! is always an error with its line.

use anyhow::{anyhow, bail, ensure, Context, Result};
use sha2::{Digest, Sha256};
use std::path::Path;

/// A table of numeric rows read from a CSV file.
#[derive(Clone, Debug, Default)]
pub struct Dataset {
    /// The file, as given (for messages).
    pub path: String,
    /// Feature (column) names, in row order.
    pub features: Vec<String>,
    /// Rows (`features.len()` values each). Cells that could not be read
    /// (only with [`load_for_model`]) are NaN and the row has an error.
    pub rows: Vec<Vec<f32>>,
    /// 1-based line number of every row in the file (the header is line 1).
    pub lines: Vec<usize>,
    /// Per-row problem found while reading (`None` = row is fine).
    pub row_errors: Vec<Option<String>>,
    /// Labels (`true` = anomaly) when a label column was read.
    pub labels: Option<Vec<bool>>,
    /// Name of the label column, when one was read.
    pub label_column: Option<String>,
    /// SHA-256 of the file's bytes (hex).
    pub sha256: String,
    /// Columns of the file left out of the features, and why
    /// ([`load_training_columns`]).
    pub dropped: Vec<Dropped>,
    /// Per column, the smallest distance between two different values of
    /// the file the rows were taken from, when `rows` are a part of it
    /// (empty: the rows are the whole file; see [`Dataset::smallest_gap`]).
    pub file_gaps: Vec<Option<f32>>,
}

/// A column of a training file that is not a feature.
#[derive(Clone, Debug, PartialEq)]
pub struct Dropped {
    /// Column name.
    pub name: String,
    /// Why it was left out (`"constant (0)"`, `"not numeric"`, …).
    pub reason: String,
}

/// Which columns of a training file are features.
#[derive(Clone, Debug, Default)]
pub struct Columns {
    /// Exactly these columns, in this order (`--columns`); nothing is left
    /// out automatically.
    pub only: Option<Vec<String>>,
    /// Columns never to use (`--exclude`).
    pub exclude: Vec<String>,
}

impl Dataset {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// `true` when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Number of feature columns.
    pub fn dim(&self) -> usize {
        self.features.len()
    }

    /// How many rows [`Dataset::normal_rows`] returns, without copying them.
    pub fn n_normal(&self) -> usize {
        match &self.labels {
            Some(l) => l.iter().filter(|&&a| !a).count(),
            None => self.rows.len(),
        }
    }

    /// Rows with their label `false` (normal) — all rows without labels.
    pub fn normal_rows(&self) -> Vec<Vec<f32>> {
        match &self.labels {
            Some(l) => self
                .rows
                .iter()
                .zip(l)
                .filter(|(_, &a)| !a)
                .map(|(r, _)| r.clone())
                .collect(),
            None => self.rows.clone(),
        }
    }

    /// The smallest distance between two different finite values of column
    /// `j` in the file ([`Dataset::file_gaps`] when the rows are a part of
    /// it); `None` when the column has fewer than two values.
    pub fn smallest_gap(&self, j: usize) -> Option<f32> {
        if let Some(&g) = self.file_gaps.get(j) {
            return g;
        }
        let mut v: Vec<f32> = self.rows.iter().map(|r| r[j]).filter(|v| v.is_finite()).collect();
        v.sort_by(f32::total_cmp);
        v.windows(2)
            .map(|w| w[1] - w[0])
            .filter(|&g| g > 0.0)
            .min_by(f32::total_cmp)
    }

    /// Quantisation step of every column: for a column whose values are all
    /// integers, the greatest common divisor of their distances to the
    /// column minimum (1 for raw ADC counts; at least 1); `None` for a column
    /// holding any non-integer value (or only non-finite values).
    pub fn quantisation_steps(&self) -> Vec<Option<f32>> {
        (0..self.dim())
            .map(|j| {
                let vals: Vec<f64> = self
                    .rows
                    .iter()
                    .map(|r| r[j] as f64)
                    .filter(|v| v.is_finite())
                    .collect();
                if vals.is_empty() || vals.iter().any(|v| v.fract() != 0.0 || v.abs() > 1.0e9) {
                    return None;
                }
                let min = vals.iter().cloned().fold(f64::INFINITY, f64::min);
                let mut g: u64 = 0;
                for v in &vals {
                    g = gcd(g, (v - min) as u64);
                }
                Some(g.max(1) as f32)
            })
            .collect()
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// SHA-256 of a file's bytes, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(sha256_hex(&bytes))
}

/// SHA-256 of `bytes`, as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parse a label cell: `0`/`1` (any number; non-zero = anomaly),
/// `true`/`false`, `anomaly`/`normal`.
pub fn parse_label(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "anomaly" | "yes" => Some(true),
        "false" | "normal" | "no" => Some(false),
        t => t.parse::<f64>().ok().filter(|v| v.is_finite()).map(|v| v != 0.0),
    }
}

/// Parse a numeric cell; `Err` says why it is not a usable number.
pub fn parse_cell(s: &str) -> std::result::Result<f32, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty cell".into());
    }
    match t.parse::<f64>() {
        Ok(v) if v.is_finite() && (v as f32).is_finite() => Ok(v as f32),
        Ok(v) if v.is_nan() => Err(format!("{t:?} is NaN")),
        Ok(_) => Err(format!("{t:?} is infinite (or too large for f32)")),
        Err(_) => Err(format!("{t:?} is not a number")),
    }
}

struct Raw {
    header: Vec<String>,
    records: Vec<(usize, csv::StringRecord)>,
    sha256: String,
}

/// Line numbers (1-based) of byte offsets, counting `\n`, `\r\n` and a lone
/// `\r` each as one line break. The csv crate's own `Position::line` is one
/// too low after CRLF and always 1 in CR-only files.
pub struct LineIndex {
    /// Byte offset where each line starts.
    starts: Vec<u64>,
}

impl LineIndex {
    /// Index the line starts of `bytes`.
    pub fn new(bytes: &[u8]) -> Self {
        let mut starts = vec![0];
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\n' => starts.push(i as u64 + 1),
                b'\r' if bytes.get(i + 1) == Some(&b'\n') => {
                    starts.push(i as u64 + 2);
                    i += 1;
                }
                b'\r' => starts.push(i as u64 + 1),
                _ => {}
            }
            i += 1;
        }
        LineIndex { starts }
    }

    /// The line where a record that the csv reader reports at byte `offset`
    /// starts: blank lines the reader skipped before it are passed over.
    pub fn line(&self, bytes: &[u8], offset: u64) -> usize {
        let mut o = offset as usize;
        while matches!(bytes.get(o), Some(b'\r' | b'\n')) {
            o += 1;
        }
        self.starts.partition_point(|&s| s <= o as u64).max(1)
    }
}

/// The bytes of `path`; `-` is standard input.
pub fn read_input(path: &Path) -> Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut b).context("cannot read standard input")?;
        Ok(b)
    } else {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    }
}

/// Parse `--delimiter`: `,` (or `comma`), `;` (`semicolon`) or `tab` (or a
/// tab character, `\t`).
pub fn parse_delimiter(s: &str) -> std::result::Result<u8, String> {
    match s {
        "," | "comma" => Ok(b','),
        ";" | "semicolon" => Ok(b';'),
        "tab" | "\t" | "\\t" => Ok(b'\t'),
        _ => Err(format!("{s:?} is not a delimiter: use `,`, `;` or `tab`")),
    }
}

thread_local! {
    /// The delimiter `--delimiter` forces on this thread's reads (`None`: detect).
    static FORCED_DELIMITER: std::cell::Cell<Option<u8>> = const { std::cell::Cell::new(None) };
}

/// Until the guard is dropped, CSV files read on this thread use `delimiter`
/// instead of the detected one (`None`: detect, the default). The commands
/// that read CSV call it with their `--delimiter`.
pub fn force_delimiter(delimiter: Option<u8>) -> DelimiterGuard {
    DelimiterGuard(FORCED_DELIMITER.replace(delimiter))
}

/// Restores the previous delimiter setting when dropped ([`force_delimiter`]).
#[must_use = "the delimiter is forced only while the guard lives"]
pub struct DelimiterGuard(Option<u8>);

impl Drop for DelimiterGuard {
    fn drop(&mut self) {
        FORCED_DELIMITER.set(self.0);
    }
}

/// The field delimiter of a CSV file: whichever of `,` `;` and tab occurs
/// most often (outside quotes) in its header line; `,` when none does.
pub fn detect_delimiter(bytes: &[u8]) -> u8 {
    let mut counts = [0usize; 3];
    let mut quoted = false;
    for &b in bytes.iter().take_while(|&&b| b != b'\n' && b != b'\r') {
        match b {
            b'"' => quoted = !quoted,
            b',' if !quoted => counts[0] += 1,
            b';' if !quoted => counts[1] += 1,
            b'\t' if !quoted => counts[2] += 1,
            _ => {}
        }
    }
    let best = (0..3).max_by_key(|&i| (counts[i], std::cmp::Reverse(i))).unwrap_or(0);
    if counts[best] == 0 {
        b','
    } else {
        [b',', b';', b'\t'][best]
    }
}

fn read_raw(path: &Path) -> Result<Raw> {
    let bytes = read_input(path)?;
    let sha256 = sha256_hex(&bytes);
    let lines = LineIndex::new(&bytes);
    let p = if path.as_os_str() == "-" {
        "standard input".to_string()
    } else {
        path.display().to_string()
    };
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(FORCED_DELIMITER.get().unwrap_or_else(|| detect_delimiter(&bytes)))
        .has_headers(true)
        .flexible(false)
        .trim(csv::Trim::All)
        .from_reader(&bytes[..]);
    let header: Vec<String> = rdr
        .headers()
        .map_err(|e| csv_error(&p.to_string(), &lines, &bytes, e))?
        .iter()
        .map(String::from)
        .collect();
    ensure!(
        !(header.is_empty() || header.len() == 1 && header[0].is_empty()),
        "{p}: empty file (a header row naming the columns is required)"
    );
    for (j, h) in header.iter().enumerate() {
        ensure!(
            !h.is_empty(),
            "{p} line 1: column {} has an empty name (a header row naming every column is required)",
            j + 1
        );
        if h.parse::<f64>().is_ok() {
            bail!(
                "{p} line 1: column {} is named {h:?}, a number — the first row must be a header naming the columns",
                j + 1
            );
        }
        if let Some(k) = header[..j].iter().position(|o| o == h) {
            bail!("{p} line 1: columns {} and {} are both named {h:?}", k + 1, j + 1);
        }
    }
    let mut records = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| csv_error(&p, &lines, &bytes, e))?;
        let line = rec.position().map_or(0, |q| lines.line(&bytes, q.byte()));
        // A blank line is skipped by the csv crate; a line of only commas is a record of empty cells.
        records.push((line, rec));
    }
    Ok(Raw {
        header,
        records,
        sha256,
    })
}

fn csv_error(p: &str, lines: &LineIndex, bytes: &[u8], e: csv::Error) -> anyhow::Error {
    let line = e.position().map(|q| lines.line(bytes, q.byte()));
    match (e.kind(), line) {
        (csv::ErrorKind::UnequalLengths { expected_len, len, .. }, Some(l)) => {
            anyhow!("{p} line {l}: malformed CSV: {len} fields, but the header has {expected_len} columns")
        }
        (csv::ErrorKind::Utf8 { err, .. }, Some(l)) => {
            anyhow!("{p} line {l}: malformed CSV: not UTF-8 (field {})", err.field() + 1)
        }
        (_, Some(l)) => anyhow!("{p} line {l}: malformed CSV: {e}"),
        (_, None) => anyhow!("{p}: malformed CSV: {e}"),
    }
}

fn find_label(p: &str, header: &[String], label_column: Option<&str>) -> Result<Option<usize>> {
    match label_column {
        None => Ok(None),
        Some(l) => header
            .iter()
            .position(|h| h == l)
            .map(Some)
            .ok_or_else(|| anyhow!("{p}: no label column {l:?} (columns: {})", header.join(", "))),
    }
}

fn read_label(p: &str, line: usize, name: &str, col: usize, rec: &csv::StringRecord) -> Result<bool> {
    let s = rec.get(col).unwrap_or("");
    parse_label(s).ok_or_else(|| {
        anyhow!(
            "{p} line {line}, column {} {name:?}: label {s:?} is not 0/1 (or true/false)",
            col + 1
        )
    })
}

/// The column names of a CSV file's header row.
pub fn header(path: &Path) -> Result<Vec<String>> {
    Ok(read_raw(path)?.header)
}

/// Read a training file: header row, every column except `label_column`
/// numeric and finite. Errors name the line and column of the first bad
/// cell; an empty file, a file with no feature columns or no rows is an
/// error too.
pub fn load_training(path: &Path, label_column: Option<&str>) -> Result<Dataset> {
    load_training_columns(path, label_column, &Columns::default())
}

/// Rows a column must have before it can look like time (a column that
/// increases on every one of a few rows may just be data).
const MIN_ROWS_FOR_TIME: usize = 20;

/// Why a column should not be a feature of a model, judged from all its
/// cells: not numeric in any row (a timestamp, a name), increasing on every
/// row (a time or index column), or constant (a density over it is
/// degenerate). `None` keeps it.
fn not_a_feature(cells: &[&str]) -> Option<String> {
    let nums: Vec<Option<f64>> = cells.iter().map(|c| c.trim().parse::<f64>().ok()).collect();
    if cells.iter().any(|c| !c.trim().is_empty()) && nums.iter().all(Option::is_none) {
        return Some("not numeric (a timestamp or a name?)".into());
    }
    let vals: Vec<f64> = nums.iter().map(|v| v.unwrap_or(f64::NAN)).collect();
    if vals.iter().any(|v| !v.is_finite()) {
        return None; // the parser reports the bad cell with its line
    }
    if vals.len() >= MIN_ROWS_FOR_TIME && vals.windows(2).all(|w| w[1] > w[0]) {
        return Some("it increases on every row (a time or index column)".into());
    }
    if vals.len() >= 2 && vals.iter().all(|&v| v == vals[0]) {
        return Some(format!("constant ({})", vals[0]));
    }
    None
}

/// [`load_training`] with a choice of columns: `cols.only` names the
/// features exactly; otherwise every column but the label and
/// `cols.exclude`, less those that are constant, not numeric, or increase on every row, which are listed
/// in [`Dataset::dropped`] with a note on standard error.
pub fn load_training_columns(path: &Path, label_column: Option<&str>, choice: &Columns) -> Result<Dataset> {
    let raw = read_raw(path)?;
    let p = path.display().to_string();
    let lab = find_label(&p, &raw.header, label_column)?;
    let find = |name: &str, flag: &str| {
        raw.header.iter().position(|h| h == name).ok_or_else(|| {
            anyhow!(
                "{p}: {flag} names {name:?}, which is not a column (columns: {})",
                raw.header.join(", ")
            )
        })
    };
    ensure!(!raw.records.is_empty(), "{p}: no data rows after the header");
    let mut dropped = Vec::new();
    let cols: Vec<usize> = match &choice.only {
        Some(names) => {
            let cols = names.iter().map(|n| find(n, "--columns")).collect::<Result<Vec<_>>>()?;
            if let Some(&j) = cols.iter().find(|&&j| Some(j) == lab) {
                bail!(
                    "{p}: column {:?} is the label column; it cannot be a feature",
                    raw.header[j]
                );
            }
            cols
        }
        None => {
            let excluded = choice
                .exclude
                .iter()
                .map(|n| find(n, "--exclude"))
                .collect::<Result<Vec<_>>>()?;
            let mut cols = Vec::new();
            for j in (0..raw.header.len()).filter(|&j| Some(j) != lab && !excluded.contains(&j)) {
                let cells: Vec<&str> = raw.records.iter().map(|(_, r)| r.get(j).unwrap_or("")).collect();
                match not_a_feature(&cells) {
                    Some(reason) => {
                        eprintln!(
                            "note: {p}: column {:?} left out: {reason} (--columns chooses the features yourself)",
                            raw.header[j]
                        );
                        dropped.push(Dropped {
                            name: raw.header[j].clone(),
                            reason,
                        });
                    }
                    None => cols.push(j),
                }
            }
            cols
        }
    };
    ensure!(
        !cols.is_empty(),
        "{p}: no feature columns{}",
        if dropped.is_empty() {
            format!(" (only the label column {:?})", label_column.unwrap_or(""))
        } else {
            format!(
                " (left out: {})",
                dropped
                    .iter()
                    .map(|d| format!("{:?} {}", d.name, d.reason))
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        }
    );
    let mut ds = Dataset {
        path: p.clone(),
        features: cols.iter().map(|&j| raw.header[j].clone()).collect(),
        label_column: label_column.map(String::from),
        sha256: raw.sha256,
        dropped,
        ..Default::default()
    };
    let mut labels = Vec::new();
    for (line, rec) in &raw.records {
        let mut row = Vec::with_capacity(cols.len());
        for &j in &cols {
            let v = parse_cell(rec.get(j).unwrap_or("")).map_err(|why| {
                anyhow!(
                    "{p} line {line}, column {} {:?}: {why} — every column except the label must hold finite numbers",
                    j + 1,
                    raw.header[j]
                )
            })?;
            row.push(v);
        }
        if let Some(l) = lab {
            labels.push(read_label(&p, *line, &raw.header[l], l, rec)?);
        }
        ds.rows.push(row);
        ds.lines.push(*line);
        ds.row_errors.push(None);
    }
    if lab.is_some() {
        ds.labels = Some(labels);
    }
    Ok(ds)
}

/// Read a file to score with a model whose columns are `features`.
///
/// If the header names every feature, those columns are picked by name (in
/// the model's order; other columns are ignored). Otherwise, if the file has
/// exactly as many non-label columns as the model has features, they are
/// taken by position (the names are reported if they differ). Anything else
/// is a column-count error. Bad cells do not fail the file: the row's
/// values become NaN where unreadable and [`Dataset::row_errors`] says why.
pub fn load_for_model(path: &Path, features: &[String], label_column: Option<&str>) -> Result<Dataset> {
    let raw = read_raw(path)?;
    let p = path.display().to_string();
    let lab = find_label(&p, &raw.header, label_column)?;
    let by_name: Option<Vec<usize>> = features
        .iter()
        .map(|f| raw.header.iter().position(|h| h == f))
        .collect();
    let cols =
        match by_name {
            Some(c) => c,
            None => {
                let rest: Vec<usize> = (0..raw.header.len()).filter(|&j| Some(j) != lab).collect();
                if rest.len() != features.len() {
                    bail!(
                        "{p}: the model has {} features ({}) but the file has {} data columns ({}){}",
                        features.len(),
                        features.join(", "),
                        rest.len(),
                        rest.iter()
                            .map(|&j| raw.header[j].as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        if label_column.is_none() && raw.header.iter().any(|h| h == "label") {
                            " — is \"label\" a label column? pass --label-column label"
                        } else {
                            ""
                        }
                    );
                }
                eprintln!(
                "warning: {p}: column names ({}) differ from the model's features ({}); using the columns by position",
                rest.iter().map(|&j| raw.header[j].as_str()).collect::<Vec<_>>().join(", "),
                features.join(", ")
            );
                rest
            }
        };
    let mut ds = Dataset {
        path: p.clone(),
        features: features.to_vec(),
        label_column: label_column.map(String::from),
        sha256: raw.sha256,
        ..Default::default()
    };
    let mut labels = Vec::new();
    for (line, rec) in &raw.records {
        let mut row = Vec::with_capacity(cols.len());
        let mut err: Option<String> = None;
        for &j in &cols {
            match parse_cell(rec.get(j).unwrap_or("")) {
                Ok(v) => row.push(v),
                Err(why) => {
                    row.push(f32::NAN);
                    if err.is_none() {
                        err = Some(format!("column {} {:?}: {why}", j + 1, raw.header[j]));
                    }
                }
            }
        }
        if let Some(l) = lab {
            labels.push(read_label(&p, *line, &raw.header[l], l, rec)?);
        }
        ds.rows.push(row);
        ds.lines.push(*line);
        ds.row_errors.push(err);
    }
    ensure!(!ds.rows.is_empty(), "{p}: no data rows after the header");
    if lab.is_some() {
        ds.labels = Some(labels);
    }
    Ok(ds)
}

#[cfg(test)]
mod tests;
