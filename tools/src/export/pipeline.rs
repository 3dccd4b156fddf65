//! The feature pipeline's items of an export and its golden raw windows.

use super::*;

/// The feature pipeline's items (only for a model that has one):
/// `CHANNELS`, `CHANNEL_NAMES`, `WINDOW`, `HOP`, `STATS`, the compile-time
/// checks, `Pipeline` and `pipeline()`.
pub(super) fn pipeline_items(s: &mut String, spec: &crate::features::FeatureSpec) {
    let stat = |st: &flowmote::features::Stat| match *st {
        flowmote::features::Stat::Band { lo, hi } => format!("flowmote::features::Stat::Band {{ lo: {lo}, hi: {hi} }}"),
        other => format!("flowmote::features::Stat::{other:?}"),
    };
    let k = spec.stats.len();
    s.push_str("/// Sensor channels the feature pipeline reads per reading (`[f32; CHANNELS]`).\n");
    let _ = writeln!(s, "pub const CHANNELS: usize = {};", spec.channels.len());
    item(
        s,
        "Channel names, as in the raw CSV header the model was trained on.",
        "static",
        "CHANNEL_NAMES",
        "[&str; CHANNELS]",
        &list("[", "]", spec.channels.iter().map(|c| atom(format!("{c:?}"))).collect()),
    );
    s.push_str("/// Readings per window.\n");
    let _ = writeln!(s, "pub const WINDOW: usize = {};", spec.window);
    s.push_str("/// Readings between windows (a window of features every `HOP` readings once `WINDOW` are in).\n");
    let _ = writeln!(s, "pub const HOP: usize = {};", spec.hop);
    item(
        s,
        "Statistics per channel, in feature order: `FEATURES` are channel by channel, each\n\
         channel's `STATS` in this order.",
        "const",
        "STATS",
        &format!("[flowmote::features::Stat; {k}]"),
        &list("[", "]", spec.stats.iter().map(|st| atom(stat(st))).collect()),
    );
    s.push_str(
        "const _: () = assert!(flowmote::features::all_fit(&STATS, WINDOW), \"a band does not fit the window\");\n",
    );
    s.push_str(
        "const _: () = assert!(CHANNELS * STATS.len() == DIM, \"the model's input is channels × statistics\");\n",
    );
    s.push_str(
        "/// The sensor's feature pipeline: push `[f32; CHANNELS]` readings, score the `[f32; DIM]`\n\
         /// features it returns. A sensor with another channel count, or a model of another `DIM`,\n\
         /// does not compile.\n",
    );
    let _ = writeln!(
        s,
        "pub type Pipeline = flowmote::features::Pipeline<CHANNELS, WINDOW, {k}, DIM>;"
    );
    s.push_str("/// A new, empty pipeline computing exactly the features the model was trained on.\n");
    s.push_str("pub const fn pipeline() -> Pipeline {\n    Pipeline::new(STATS, HOP)\n}\n");
}

/// `GOLDEN_RAW`, `GOLDEN_RAW_FEATURES` and `GOLDEN_RAW_LOG_PROBS` (only for
/// a model with a feature pipeline): the device pushes the raw readings
/// through `pipeline()` and must get the host's features bit for bit.
pub(super) fn golden_raw_items(s: &mut String, g: &GoldenRaw, name: &str) {
    let lit = |v: f32| if v.is_nan() { "f32::NAN".to_string() } else { f32_lit(v) };
    item(
        s,
        "Raw readings (`WINDOW + 3 · HOP` of them, four windows) for the on-device check of the\n\
         feature pipeline: pushed one by one through `pipeline()`, they give `GOLDEN_RAW_FEATURES`.",
        "static",
        "GOLDEN_RAW",
        &format!("[[f32; CHANNELS]; {}]", g.readings.len()),
        &list("[", "]", g.readings.iter().map(|r| floats(r)).collect()),
    );
    item(
        s,
        "The features of `GOLDEN_RAW`'s windows as the host computed them (equal bit for bit on\n\
         the device: the same `flowmote::features::window_features`).",
        "static",
        "GOLDEN_RAW_FEATURES",
        &format!("[[f32; DIM]; {}]", g.features.len()),
        &list("[", "]", g.features.iter().map(|r| floats(r)).collect()),
    );
    item(
        s,
        &format!(
            "`{name}.log_prob` of `GOLDEN_RAW_FEATURES` as computed by the host (`f32::NAN`: the model\n\
             cannot score that window, nor may the device)."
        ),
        "static",
        "GOLDEN_RAW_LOG_PROBS",
        &format!("[f32; {}]", g.log_probs.len()),
        &list("[", "]", g.log_probs.iter().map(|&v| atom(lit(v))).collect()),
    );
}
