//! The feature spec: which raw sensor columns, windows of how many readings
//! every how many readings, and which statistics per channel — the
//! pipeline the device runs before scoring.
//!
//! `flowmote train --window N --hop M --features mean,std,…` turns a raw
//! sensor CSV into windowed feature rows ([`FeatureSpec::apply`]) and
//! stores the spec in the model file (`features_pipeline`); `eval`,
//! `calibrate`, `score` and `plot` apply a model's stored spec to raw CSVs
//! automatically, and `export` emits it as the typed
//! `flowmote::features::Pipeline` the firmware runs.
//!
//! Windows slide over the rows in file order: the first covers rows
//! `0..N`, the next `M..M+N`, and so on while a whole window fits (the
//! order of `flowmote::features::Pipeline::push`). Every window's features
//! come from `flowmote::features::window_features`, the function the device
//! calls, so host and device features are equal bit for bit. A windowed
//! row's line (in messages and `score` output) is the line of the window's
//! last reading; its label is "anomalous" when any of its readings is.

use crate::data::Dataset;
use anyhow::{bail, ensure, Result};
use flowmote::features::{all_fit, window_features, Stat, MAX_WINDOW};
use serde::{Deserialize, Serialize};

/// What the device computes from its sensor before scoring (see the module
/// docs). Stored in the model file as `features_pipeline`:
/// `{"channels": ["x", …], "window": 25, "hop": 25, "stats": ["mean", …]}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "SpecFile", into = "SpecFile")]
pub struct FeatureSpec {
    /// The raw CSV columns read as sensor channels, in order.
    pub channels: Vec<String>,
    /// Readings per window (`N`).
    pub window: usize,
    /// Readings between windows (`M`, `1..=N`).
    pub hop: usize,
    /// Statistics per channel, in feature order.
    pub stats: Vec<Stat>,
}

/// The JSON form: statistics by name.
#[derive(Serialize, Deserialize)]
struct SpecFile {
    channels: Vec<String>,
    window: usize,
    hop: usize,
    stats: Vec<String>,
}

impl From<FeatureSpec> for SpecFile {
    fn from(s: FeatureSpec) -> Self {
        SpecFile {
            channels: s.channels,
            window: s.window,
            hop: s.hop,
            stats: s.stats.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl TryFrom<SpecFile> for FeatureSpec {
    type Error = String;
    fn try_from(f: SpecFile) -> std::result::Result<Self, String> {
        let stats = f
            .stats
            .iter()
            .map(|s| parse_stat(s))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let spec = FeatureSpec {
            channels: f.channels,
            window: f.window,
            hop: f.hop,
            stats,
        };
        spec.check().map_err(|e| format!("features_pipeline: {e}"))?;
        Ok(spec)
    }
}

/// The names `--features` takes, for messages.
pub const STAT_NAMES: &str = "mean, std, rms, min, max, ptp, band<k>, band<lo>-<hi>";

/// One statistic by its name (as `Stat`'s `Display` spells it): `mean`,
/// `std`, `rms`, `min`, `max`, `ptp`, `band<k>` (DFT bin `k` alone),
/// `band<lo>-<hi>` (bins `lo` to `hi`).
pub fn parse_stat(name: &str) -> std::result::Result<Stat, String> {
    let n = name.trim();
    Ok(match n {
        "mean" => Stat::Mean,
        "std" => Stat::Std,
        "rms" => Stat::Rms,
        "min" => Stat::Min,
        "max" => Stat::Max,
        "ptp" => Stat::Ptp,
        _ => {
            let bins = n
                .strip_prefix("band")
                .ok_or_else(|| format!("{n:?} is not a statistic (one of {STAT_NAMES})"))?;
            let bin = |s: &str| {
                s.parse::<u16>()
                    .map_err(|_| format!("{n:?}: {s:?} is not a bin number (band<k> or band<lo>-<hi>, e.g. band2-4)"))
            };
            let (lo, hi) = match bins.split_once('-') {
                Some((lo, hi)) => (bin(lo)?, bin(hi)?),
                None => {
                    let k = bin(bins)?;
                    (k, k)
                }
            };
            if lo > hi {
                return Err(format!("{n:?}: the first bin {lo} is above the last {hi}"));
            }
            Stat::Band { lo, hi }
        }
    })
}

/// A comma-separated list of statistics (`--features mean,std,band1-3`);
/// errors name the flag.
pub fn parse_stats(list: &str) -> Result<Vec<Stat>> {
    let mut stats = Vec::new();
    for part in list.split(',') {
        let part = part.trim();
        ensure!(
            !part.is_empty(),
            "--features {list:?}: an empty name (a comma-separated list of {STAT_NAMES})"
        );
        let s = parse_stat(part).map_err(|e| anyhow::anyhow!("--features: {e}"))?;
        ensure!(
            !stats.contains(&s),
            "--features: {s} is listed twice (each feature column must be distinct)"
        );
        stats.push(s);
    }
    Ok(stats)
}

impl FeatureSpec {
    /// The spec of `--window`, `--hop` (`None`: the window, i.e. windows that
    /// do not overlap) and `--features` over `channels`; errors name the flag.
    pub fn from_flags(channels: Vec<String>, window: usize, hop: Option<usize>, features: &str) -> Result<Self> {
        ensure!(
            (1..=MAX_WINDOW).contains(&window),
            "--window {window}: a window holds 1 to {MAX_WINDOW} readings"
        );
        let hop = hop.unwrap_or(window);
        ensure!(
            (1..=window).contains(&hop),
            "--hop {hop}: windows come every 1 to --window ({window}) readings (a hop above the window would skip readings)"
        );
        let stats = parse_stats(features)?;
        for s in &stats {
            if !s.fits(window) {
                bail!(
                    "--features {s}: a band's bins must lie in 0..=N/2 = 0..={} for --window {window}",
                    window / 2
                );
            }
        }
        let spec = FeatureSpec {
            channels,
            window,
            hop,
            stats,
        };
        spec.check()?;
        Ok(spec)
    }

    /// Consistency: channels named and distinct, `1 ≤ hop ≤ window ≤
    /// MAX_WINDOW`, statistics distinct and fitting the window
    /// (`flowmote::features::all_fit`).
    pub fn check(&self) -> Result<()> {
        ensure!(!self.channels.is_empty(), "no channels");
        for (i, c) in self.channels.iter().enumerate() {
            ensure!(!c.is_empty(), "channel {} has an empty name", i + 1);
            ensure!(!self.channels[..i].contains(c), "channel {c:?} is listed twice");
        }
        ensure!(!self.stats.is_empty(), "no statistics");
        for (i, s) in self.stats.iter().enumerate() {
            ensure!(!self.stats[..i].contains(s), "statistic {s} is listed twice");
        }
        ensure!(
            (1..=MAX_WINDOW).contains(&self.window),
            "window {} is not 1..={MAX_WINDOW} readings",
            self.window
        );
        ensure!(
            (1..=self.window).contains(&self.hop),
            "hop {} is not 1..={} (the window)",
            self.hop,
            self.window
        );
        ensure!(
            all_fit(&self.stats, self.window),
            "a band does not fit a window of {} readings (bins must lie in 0..={})",
            self.window,
            self.window / 2
        );
        Ok(())
    }

    /// The feature column names: `<channel>_<stat>`, channel by channel,
    /// each channel's statistics in order (`x_mean, x_std, y_mean, …`).
    pub fn feature_names(&self) -> Vec<String> {
        self.channels
            .iter()
            .flat_map(|c| self.stats.iter().map(move |s| format!("{c}_{s}")))
            .collect()
    }

    /// The index of the first reading of every complete window of `rows`
    /// readings: `0, hop, 2·hop, …` while a whole window fits.
    pub fn window_starts(&self, rows: usize) -> impl Iterator<Item = usize> {
        let (n, hop) = (self.window, self.hop.max(1));
        (0..).map(move |k| k * hop).take_while(move |s| s + n <= rows)
    }

    /// Windowed feature rows of `raw`, whose columns are [`Self::channels`]
    /// in order (from `data::load_for_model` or `data::load_training_columns`).
    ///
    /// A window holding an unreadable reading (its row has an error), or
    /// whose features overflow, becomes a row with that error (naming the
    /// window's lines); a window is labelled anomalous when any reading is.
    /// An error when `raw` has fewer readings than one window.
    pub fn apply(&self, raw: &Dataset) -> Result<Dataset> {
        let (c, n) = (self.channels.len(), self.window);
        ensure!(
            raw.dim() == c,
            "{}: {} columns read, but the feature pipeline has {c} channels",
            raw.path,
            raw.dim()
        );
        ensure!(
            raw.len() >= n,
            "{}: {} readings, fewer than one window of {n} readings (--window)",
            raw.path,
            raw.len()
        );
        let d = c * self.stats.len();
        let mut out = Dataset {
            path: raw.path.clone(),
            features: self.feature_names(),
            label_column: raw.label_column.clone(),
            sha256: raw.sha256.clone(),
            dropped: raw.dropped.clone(),
            ..Default::default()
        };
        let mut labels = Vec::new();
        let mut buf = Vec::with_capacity(c * n);
        for start in self.window_starts(raw.len()) {
            let span = start..start + n;
            let (first, last) = (raw.lines[start], raw.lines[start + n - 1]);
            let mut f = vec![f32::NAN; d];
            let bad = span
                .clone()
                .find_map(|i| raw.row_errors[i].as_ref().map(|e| (raw.lines[i], e)));
            let err = match bad {
                Some((line, e)) => Some(format!("window of lines {first}–{last}: line {line}, {e}")),
                None => {
                    buf.clear();
                    for r in &raw.rows[span.clone()] {
                        buf.extend_from_slice(r);
                    }
                    window_features(&buf, c, &self.stats, &mut f)
                        .err()
                        .map(|e| format!("window of lines {first}–{last}: its features cannot be computed ({e})"))
                }
            };
            if let Some(l) = &raw.labels {
                labels.push(l[span].iter().any(|&a| a));
            }
            out.rows.push(f);
            out.lines.push(last);
            out.row_errors.push(err);
        }
        if raw.labels.is_some() {
            out.labels = Some(labels);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in ["mean", "std", "rms", "min", "max", "ptp", "band3-5", "band4", "band0"] {
            assert_eq!(parse_stat(name).unwrap().to_string(), name);
        }
        assert_eq!(parse_stat("band2-2").unwrap(), Stat::Band { lo: 2, hi: 2 });
    }
}
