//! `flowmote export`: the model as Rust source for the firmware.
//!
//! The output follows `docs/export-format.md` (the firmware relies on its item
//! names): `DIM`, `FEATURES`, `MEAN`, `STD`, `Model`, `MODEL` (renamable with
//! `--name`), `MACS`, `THRESHOLD`, `GOLDEN_INPUTS`, `GOLDEN_LOG_PROBS`, `GOLDEN_SEED`
//! and `GOLDEN_SAMPLES`, as `static`/`const` items of the core's const-generic
//! types, so the weights live in flash.
//!
//! How the text is made:
//! 1. every layer becomes a type string and a value [`Node`] (one match arm per
//!    [`Layer`] variant in [`layer_item`]);
//! 2. the items are laid out by a small pretty printer (valid Rust, close to
//!    rustfmt's layout);
//! 3. the result is piped through `rustfmt --edition 2021` (the `RUSTFMT`
//!    environment variable overrides the binary), run in the output file's
//!    directory so that the `rustfmt.toml` that `cargo fmt` would use there
//!    applies. Without rustfmt the step-2 layout is kept and a warning says so.
//!
//! Everything is a pure function of the model file (no time stamps, no paths
//! beyond the data file's name, no hash-map order), and rustfmt's formatting
//! is stable for a given configuration, so the same model gives the same
//! bytes. Floats are printed with `{:?}`, Rust's shortest round-trip form,
//! which is always a valid `f32` literal (`1.0`, `-0.0`, `1e-7`, `3.4028235e38`).

mod adapt;
mod golden;
mod layer;
mod node;
mod pipeline;
use pipeline::{golden_raw_items, pipeline_items};

pub use golden::{golden_inputs, golden_raw, golden_samples, GoldenRaw};
use layer::nest;
pub use layer::{layer_item, Item, Stored};
use node::{atom, floats, list, tuple};
pub use node::{f32_lit, looks_like_known_constant, Node};

use crate::model::{Layer, ModelFile};
use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Arguments of `flowmote export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Trained model file.
    #[arg(long)]
    pub model: PathBuf,
    /// Rust file to write (a module: use it as `mod model;`).
    #[arg(long)]
    pub out: PathBuf,
    /// Name of the model `static` instead of `MODEL` (SCREAMING_SNAKE_CASE,
    /// e.g. `GAIT_MODEL`). Every other item keeps its documented name.
    #[arg(long)]
    pub name: Option<String>,
    /// Export a model that was never calibrated: `THRESHOLD` is then
    /// `f32::INFINITY` and the device never raises an alarm (without this
    /// flag an uncalibrated model is refused: run `flowmote calibrate`).
    #[arg(long)]
    pub no_threshold: bool,
    /// Print one JSON object describing what was written instead of text.
    #[arg(long)]
    pub json: bool,
    /// Storage of the conditioners' weight matrices in flash: f32 (as
    /// trained), f16 (half the bytes) or i8 (a quarter, plus one f32 scale per
    /// row). Activations and sums stay f32; the golden vectors are computed
    /// with the compressed weights. Default: the model file's storage (f32
    /// unless `calibrate --weights` compressed it).
    #[arg(long, value_enum)]
    pub weights: Option<crate::model::Storage>,
}

/// Run `flowmote export`.
pub fn run(args: &ExportArgs) -> Result<()> {
    crate::output::refuse_inputs(&args.out, &[&args.model])?;
    let mut model = ModelFile::load(&args.model)?;
    if let Some(w) = args.weights {
        let before = model.model.storage();
        model.compress(w)?;
        if before != w && model.threshold.is_some() && !args.json {
            eprintln!(
                "note: the threshold was calibrated with {} weights; `flowmote calibrate --weights {}` calibrates the compressed model",
                before.name(),
                w.name()
            );
        }
    }
    ensure!(
        model.threshold.is_some() || args.no_threshold,
        "{} has no anomaly threshold: the exported detector would never raise an alarm. Run \
         `flowmote calibrate --model {} --data held_out.csv` first (or pass --no-threshold to export it anyway)",
        args.model.display(),
        args.model.display()
    );
    let opts = ExportOptions {
        name: args.name.clone(),
        rustfmt_dir: Some(existing_dir(&args.out)),
    };
    let out = export(&model, &opts)?;
    if !out.rustfmt {
        eprintln!(
            "warning: rustfmt not available ({}); {} is valid Rust but not rustfmt-formatted — run `cargo fmt`",
            out.rustfmt_error.as_deref().unwrap_or("unknown error"),
            args.out.display()
        );
    }
    crate::output::write(&args.out, out.source.as_bytes())?;
    if args.json {
        // The target the model was trained for (files from before targets,
        // and `--target host` models: the host, no estimate).
        let target = match &model.provenance.settings.config.target {
            Some(t) => crate::target::find(t)?,
            None => crate::target::find("host")?,
        };
        let cost = crate::target::ModelCost::of(&model.model);
        let j = serde_json::json!({
            "out": args.out,
            "model": args.model,
            "target": target.name,
            "estimated_ms": target.estimated_ms_of(&cost),
            "kept": crate::cli::describe_model(&model),
            "weight_bytes": model.model.weight_bytes(),
            "weights": model.model.storage().name(),
            "macs": model.model.macs(),
            "validation_nll": model.provenance.val_nll,
            "threshold": model.threshold.as_ref().map(|t| t.score),
            "golden_inputs": out.golden_inputs,
            "golden_samples": out.golden_samples,
        });
        return crate::output::to_stdout(format!("{j}\n").as_bytes());
    }
    crate::say!(
        "wrote {} ({} weights, conditioners stored as {} ≈ {:.1} KB, standardisation included; {} golden inputs, {} golden samples)",
        args.out.display(),
        model.model.stored_floats(),
        model.model.storage().name(),
        model.model.weight_bytes() as f64 / 1024.0,
        out.golden_inputs,
        out.golden_samples
    );
    Ok(())
}

/// The deepest existing directory on the way to `out` (where rustfmt looks for
/// its configuration).
fn existing_dir(out: &Path) -> PathBuf {
    let abs = std::path::absolute(out).unwrap_or_else(|_| out.to_path_buf());
    let mut dir = abs
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    while !dir.is_dir() {
        match dir.parent() {
            Some(p) => dir = p.to_path_buf(),
            None => return PathBuf::from("."),
        }
    }
    dir
}

/// Options of [`export`].
#[derive(Clone, Debug, Default)]
pub struct ExportOptions {
    /// Name of the model `static` (default `MODEL`).
    pub name: Option<String>,
    /// Format with rustfmt, run in this directory (its `rustfmt.toml` applies).
    /// `None`: keep the built-in layout.
    pub rustfmt_dir: Option<PathBuf>,
}

/// Result of [`export`].
#[derive(Clone, Debug)]
pub struct Exported {
    /// The Rust source.
    pub source: String,
    /// `true` if rustfmt formatted it.
    pub rustfmt: bool,
    /// Why rustfmt was not used, when it was asked for and failed.
    pub rustfmt_error: Option<String>,
    /// Number of `GOLDEN_INPUTS`.
    pub golden_inputs: usize,
    /// Number of `GOLDEN_SAMPLES`.
    pub golden_samples: usize,
}

/// `GOLDEN_SEED` of every export.
pub const GOLDEN_SEED: u64 = 42;
/// Number of `GOLDEN_SAMPLES` drawn (fewer if the model overflows on one).
pub const N_GOLDEN_SAMPLES: usize = 8;
/// Seed of the model samples used as golden *inputs* (distinct from `GOLDEN_SEED`).
const INPUT_SAMPLE_SEED: u64 = 7;
/// Line width of the built-in layout (rustfmt's default).
const WIDTH: usize = 100;
/// Most layers one tuple holds (the core implements `Bijector` for tuples up
/// to this size); longer flows are nested tuples of tuples.
const MAX_TUPLE: usize = 16;
/// Every other item name of the format, which `--name` must not take.
const RESERVED: [&str; 31] = [
    "CHANNELS",
    "CHANNEL_NAMES",
    "WINDOW",
    "HOP",
    "STATS",
    "DIM",
    "MACS",
    "FEATURES",
    "MEAN",
    "STD",
    "THRESHOLD",
    "GOLDEN_INPUTS",
    "GOLDEN_LOG_PROBS",
    "GOLDEN_SEED",
    "GOLDEN_SAMPLES",
    "GOLDEN_RAW",
    "GOLDEN_RAW_FEATURES",
    "GOLDEN_RAW_LOG_PROBS",
    "N",
    "Layers",
    "Model",
    "AdaptGradient",
    "ADAPT_LAYERS",
    "ADAPT_SCRATCH",
    "ADAPT_HELD",
    "GOLDEN_ADAPT_WINDOWS",
    "GOLDEN_ADAPT_COMMISSION",
    "GOLDEN_ADAPT_SCORES",
    "GOLDEN_ADAPT_OUTCOMES",
    "GOLDEN_ADAPT_SHIFT",
    "GOLDEN_ADAPT_LOG_SCALE",
];

/// The model as Rust source (see the module docs).
pub fn export(model: &ModelFile, opts: &ExportOptions) -> Result<Exported> {
    model.validate()?;
    let name = opts.name.as_deref().unwrap_or("MODEL");
    check_name(name)?;
    let (raw, golden_inputs, golden_samples) = render(model, name)?;
    let (source, rustfmt, rustfmt_error) = match &opts.rustfmt_dir {
        None => (raw, false, None),
        Some(dir) => match rustfmt(&raw, dir) {
            Ok(s) => (s, true, None),
            Err(e) => (raw, false, Some(format!("{e:#}"))),
        },
    };
    Ok(Exported {
        source,
        rustfmt,
        rustfmt_error,
        golden_inputs,
        golden_samples,
    })
}

fn check_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    ensure!(
        chars.next().is_some_and(|c| c.is_ascii_uppercase())
            && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'),
        "--name {name:?}: use an upper-case Rust identifier such as GAIT_MODEL (A–Z, 0–9, _; a letter first)"
    );
    ensure!(
        !RESERVED.contains(&name) && name != "Self",
        "--name {name:?} collides with another item of the exported file"
    );
    Ok(())
}

/// Format `src` with rustfmt (edition 2021) run in `dir`.
pub fn rustfmt(src: &str, dir: &Path) -> Result<String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let bin = std::env::var_os("RUSTFMT").unwrap_or_else(|| "rustfmt".into());
    let mut child = Command::new(&bin)
        .args(["--edition", "2021", "--emit", "stdout"])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", bin.to_string_lossy()))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = src.to_owned();
    // Write from another thread so a large file cannot dead-lock on full pipes.
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output()?;
    writer
        .join()
        .expect("writer thread")
        .context("cannot write to rustfmt")?;
    ensure!(
        out.status.success(),
        "rustfmt failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let s = String::from_utf8(out.stdout).context("rustfmt wrote non-UTF-8")?;
    ensure!(!s.trim().is_empty(), "rustfmt wrote nothing");
    Ok(s)
}
// ---------------------------------------------------------------------------
// The file.

/// `s` made safe inside a `//` comment of the generated source: control
/// characters (a newline in a file name would end the comment and turn the
/// rest into code) are written as escapes.
fn comment_safe(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let e: Vec<char> = if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            e
        })
        .collect()
}

fn header(m: &ModelFile) -> String {
    let p = &m.provenance;
    let mut h = String::new();
    let _ = writeln!(
        h,
        "// @generated by flowmote-tools {} — do not edit; re-run `flowmote export`.",
        env!("CARGO_PKG_VERSION")
    );
    let data = if p.data_file.is_empty() {
        "unknown".to_string()
    } else {
        let name = Path::new(&p.data_file)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| p.data_file.clone());
        let sha = if p.data_sha256.is_empty() {
            String::new()
        } else {
            format!(" (sha256 {})", p.data_sha256)
        };
        format!(
            "{}{}, {} rows",
            comment_safe(&name),
            comment_safe(&sha),
            p.train_rows + p.val_rows
        )
    };
    let flows = &m.model.flows;
    if flows.len() > 1 {
        let weights: Vec<String> = m.model.log_weights.iter().map(|w| format!("{:.3}", w.exp())).collect();
        let _ = writeln!(
            h,
            "// data: {data}; a mixture of {} flows, weights {}",
            flows.len(),
            weights.join(", ")
        );
    }
    for (k, flow) in flows.iter().enumerate() {
        let hidden: BTreeSet<usize> = flow
            .layers
            .iter()
            .filter_map(|l| l.mlp_shape(flow.dim))
            .map(|s| s.hidden)
            .collect();
        let hidden = match hidden.len() {
            0 => String::new(),
            _ => format!(
                ", hidden {}",
                hidden.iter().map(|h| h.to_string()).collect::<Vec<_>>().join("/")
            ),
        };
        if flows.len() > 1 {
            let _ = writeln!(h, "// member {k}: {} layers{hidden}", flow.layers.len());
        } else {
            let _ = writeln!(
                h,
                "// data: {data}; flow: {}, {} layers{hidden}",
                comment_safe(&m.kind),
                flow.layers.len()
            );
        }
        // Layer list, wrapped.
        let mut line = String::from("// layers:");
        for (i, l) in flow.layers.iter().enumerate() {
            let part = format!("{} {}", if i == 0 { "" } else { " →" }, l.describe());
            if line.len() + part.len() > WIDTH && line.len() > 12 {
                let _ = writeln!(h, "{line}");
                line = String::from("//  ");
            }
            line.push_str(&part);
        }
        let _ = writeln!(h, "{line}");
    }
    let storage = m.model.storage();
    if storage != crate::model::Storage::F32 {
        let _ = writeln!(
            h,
            "// weights: conditioner matrices stored as {}{} (activations and sums f32; biases, scales and other layers f32)",
            storage.name(),
            if storage == crate::model::Storage::I8 { " with one f32 scale per row" } else { "" }
        );
    }
    let nll = if p.history.is_empty() && p.val_nll == 0.0 {
        "n/a".to_string()
    } else {
        format!("{:.4} nats/row (data units)", p.val_nll)
    };
    let _ = writeln!(
        h,
        "// validation NLL: {nll}; model file written by flowmote-tools {}",
        comment_safe(&m.tool_version)
    );
    match &m.threshold {
        Some(t) => {
            let _ = writeln!(
                h,
                "// threshold: {} nats, false-alarm rate {} on {} rows (sha256 {})",
                f32_lit(t.score),
                t.false_alarm_rate,
                t.rows,
                comment_safe(&t.data_sha256)
            );
        }
        None => h.push_str("// threshold: not calibrated (`flowmote calibrate`)\n"),
    }
    h
}
/// Write `pub static NAME: TY = value;` (or `const`) with its doc comment.
fn item(out: &mut String, doc: &str, kw: &str, name: &str, ty: &str, value: &Node) {
    for line in doc.lines() {
        let _ = writeln!(out, "/// {line}");
    }
    if value.has_known_constant() {
        // A weight equal to, say, ln 2 is data, not a hand-typed constant.
        out.push_str("#[allow(clippy::approx_constant)]\n");
    }
    let head = format!("pub {kw} {name}: {ty} = ");
    out.push_str(&head);
    value.write(out, 0, head.len(), 1);
    out.push_str(";\n");
}

/// Render the file with the built-in layout; returns it and the golden counts.
fn render(m: &ModelFile, name: &str) -> Result<(String, usize, usize)> {
    let d = m.model.dim();
    let mixture = m.model.flows.len() > 1;
    let mut uses: BTreeSet<&str> = BTreeSet::from(["Flow"]);
    if mixture {
        uses.insert("Mixture");
    }
    // One (type, value) pair per member flow.
    let mut members = Vec::new();
    for (k, flow) in m.model.flows.iter().enumerate() {
        let items = flow
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                layer_item(l, d, flow.storage(), flow.weights.i8_net(i)).with_context(|| {
                    let member = if mixture {
                        format!("member {k}, ")
                    } else {
                        String::new()
                    };
                    format!("{member}layer {i} ({})", l.describe())
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if items.is_empty() {
            bail!("the model has no layers");
        }
        uses.extend(items.iter().flat_map(|i| i.uses.iter().copied()));
        let ty = nest(items.iter().map(|i| atom(i.ty.clone())).collect(), &tuple);
        let value = nest(items.iter().map(|i| i.value.clone()).collect(), &tuple);
        members.push((
            list("Flow<", ">", vec![atom("DIM"), ty]),
            list("Flow::new(", ")", vec![value]),
        ));
    }
    let standardises = m
        .model
        .flows
        .iter()
        .all(|f| matches!(f.layers.first(), Some(Layer::ActNorm { frozen: true, .. })));
    let uses: Vec<&str> = uses.into_iter().collect();

    let (gx, glp) = golden_inputs(m);
    let gs = golden_samples(&m.model, N_GOLDEN_SAMPLES);

    let mut s = header(m);
    s.push('\n');
    let _ = writeln!(s, "use flowmote::{{{}}};", uses.join(", "));
    s.push('\n');
    s.push_str("/// Number of features the model scores, in CSV column order.\n");
    let _ = writeln!(s, "pub const DIM: usize = {d};");
    item(
        &mut s,
        "Feature names, as in the CSV header.",
        "static",
        "FEATURES",
        "[&str; DIM]",
        &list("[", "]", m.features.iter().map(|f| atom(format!("{f:?}"))).collect()),
    );
    let (mean_doc, std_doc) = if standardises {
        (
            format!("Per-feature mean of the training data (already folded into `{name}`'s first layer)."),
            format!("Per-feature standard deviation of the training data (folded into `{name}`)."),
        )
    } else {
        (
            "Per-feature mean of the training data.".to_string(),
            "Per-feature standard deviation of the training data.".to_string(),
        )
    };
    if let Some(spec) = &m.features_pipeline {
        pipeline_items(&mut s, spec);
    }
    item(&mut s, &mean_doc, "static", "MEAN", "[f32; DIM]", &floats(&m.mean));
    item(&mut s, &std_doc, "static", "STD", "[f32; DIM]", &floats(&m.std));

    let n = members.len();
    let (ty, value) = if mixture {
        for (k, (ty, _)) in members.iter().enumerate() {
            let _ = writeln!(s, "/// Member {k} of the mixture `Model`.");
            let head = format!("pub type Member{k} = ");
            s.push_str(&head);
            ty.write(&mut s, 0, head.len(), 1);
            s.push_str(";\n");
        }
        // The member tuple, named once: `Model` and the adaptation
        // gradient (`AdaptGradient`) both take it as a type.
        let tys = tuple((0..n).map(|k| atom(format!("Member{k}"))).collect());
        s.push_str("/// The mixture's members, in the order of its weights.\n");
        let head = "pub type Members = ";
        s.push_str(head);
        tys.write(&mut s, 0, head.len(), 1);
        s.push_str(";\n");
        let values = members.into_iter().map(|(_, v)| v).collect();
        (
            list("Mixture<", ">", vec![atom("DIM"), atom(n.to_string()), atom("Members")]),
            list("Mixture::new(", ")", vec![floats(&m.model.log_weights), tuple(values)]),
        )
    } else {
        let (ty, value) = members.pop().ok_or_else(|| anyhow::anyhow!("the model has no flows"))?;
        // `Flow<DIM, (layers…)>`: name the layer stack, which the device's
        // adaptation gradient takes as a type.
        let layers = match ty {
            Node::List { mut items, .. } if items.len() == 2 => items.pop(),
            _ => None,
        }
        .ok_or_else(|| anyhow::anyhow!("unexpected flow type"))?;
        s.push_str("/// The flow's layers, data → latent.\n");
        let head = "pub type Layers = ";
        s.push_str(head);
        layers.write(&mut s, 0, head.len(), 1);
        s.push_str(";\n");
        (list("Flow<", ">", vec![atom("DIM"), atom("Layers")]), value)
    };
    s.push_str("/// The concrete model type.\n");
    let head = "pub type Model = ";
    s.push_str(head);
    ty.write(&mut s, 0, head.len(), 1);
    s.push_str(";\n");

    let what = if mixture {
        format!("The trained mixture of {n} flows (weights `exp(log_weights)`)")
    } else {
        "The trained flow".to_string()
    };
    let model_doc = if standardises {
        format!(
            "{what}. Its first layer standardises, so `{name}.log_prob(&x)` takes raw readings\n\
             and returns log p(x) in nats in the data's own units."
        )
    } else {
        format!("{what}: `{name}.log_prob(&x)` returns log p(x) in nats.")
    };
    item(&mut s, &model_doc, "static", name, "Model", &value);

    s.push_str(
        "/// Multiply–accumulates of the networks in one `log_prob` (conditioners, LU layers, CNF field\n\
         /// evaluations; every member of a mixture): the floor of its cost on the device.\n",
    );
    let _ = writeln!(s, "pub const MACS: usize = {};", m.model.macs());
    let thr = m.threshold.as_ref().map_or(f32::INFINITY, |t| t.score);
    item(
        &mut s,
        "Anomaly threshold on the score −log p(x) (nats): a reading is anomalous when its score\n\
         exceeds it. `f32::INFINITY` if the model was never calibrated.",
        "const",
        "THRESHOLD",
        "f32",
        &atom(f32_lit(thr)),
    );
    item(
        &mut s,
        "Inputs whose log-density the host computed (`GOLDEN_LOG_PROBS`), for on-device checks.",
        "static",
        "GOLDEN_INPUTS",
        &format!("[[f32; DIM]; {}]", gx.len()),
        &list("[", "]", gx.iter().map(|x| floats(x)).collect()),
    );
    item(
        &mut s,
        "`log p` of `GOLDEN_INPUTS` as computed by the host tool.",
        "static",
        "GOLDEN_LOG_PROBS",
        &format!("[f32; {}]", glp.len()),
        &floats(&glp),
    );
    s.push_str("/// Seed for `rand_xoshiro::Xoshiro128PlusPlus::seed_from_u64`.\n");
    let _ = writeln!(s, "pub const GOLDEN_SEED: u64 = {GOLDEN_SEED};");
    item(
        &mut s,
        &format!("The first samples of `{name}.sample(&mut rng)` with that generator, as the host drew them."),
        "static",
        "GOLDEN_SAMPLES",
        &format!("[[f32; DIM]; {}]", gs.len()),
        &list("[", "]", gs.iter().map(|x| floats(x)).collect()),
    );
    if m.features_pipeline.is_some() {
        golden_raw_items(&mut s, &golden_raw(m), name);
    }
    let adaptable = adapt::adaptable(m);
    if let Some(flows) = adaptable {
        adapt::adapt_items(&mut s, m, flows, name)?;
    }
    adapt::gradient_item(&mut s, adaptable, name);
    Ok((s, gx.len(), gs.len()))
}

#[cfg(test)]
mod tests;
