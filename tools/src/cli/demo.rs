//! `flowmote demo`: the whole pipeline (train → calibrate → export → score →
//! eval) on the bundled accelerometer recording or the user's files.

use crate::cli::{describe_model, rows_csv, run_calibrate, run_eval, run_score, CalibrateArgs, EvalArgs, ScoreArgs};
use crate::data;
use crate::output;
use crate::say;
use crate::train::{self, FlowKind, TrainConfig};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};

fn repo_file(rel: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    root.canonicalize().unwrap_or(root).join(rel)
}

/// Training noise of the demo's single model: the level `flowmote train`'s
/// search chose on the bundled recording with the default seed.
pub const DEMO_NOISE: f32 = 0.2;

/// Arguments of `flowmote demo`.
#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Training CSV [default: the bundled examples/data/daphnet_gait.train.csv].
    #[arg(long)]
    pub train: Option<PathBuf>,
    /// Test CSV [default: the bundled examples/data/daphnet_gait.test.csv].
    #[arg(long)]
    pub test: Option<PathBuf>,
    /// Directory for everything the demo writes.
    #[arg(long, default_value = "out/demo")]
    pub out_dir: PathBuf,
    /// Maximum training epochs (the demo trains maf at noise 0.2 in two
    /// sizes, keeping the better on validation, for fewer epochs than
    /// `train` may, to finish in well under a minute; `flowmote train` with
    /// no flags also searches the noise and the family).
    #[arg(long, default_value_t = 100)]
    pub epochs: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Run `flowmote demo`: train → calibrate → export → score → eval.
pub fn run_demo(a: &DemoArgs) -> Result<()> {
    let train_csv = a
        .train
        .clone()
        .unwrap_or_else(|| repo_file("examples/data/daphnet_gait.train.csv"));
    let test_csv = a
        .test
        .clone()
        .unwrap_or_else(|| repo_file("examples/data/daphnet_gait.test.csv"));
    for p in [&train_csv, &test_csv] {
        if !p.exists() {
            bail!(
                "{} not found — run from a flowmote checkout or pass --train/--test",
                p.display()
            );
        }
    }
    let dir = &a.out_dir;
    let model_json = dir.join("model.json");
    for out in ["model.json", "validation.csv", "model.rs", "scores.csv"] {
        output::refuse_inputs(&dir.join(out), &[&train_csv, &test_csv])?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    say!("1/5 train: {} → {}", train_csv.display(), model_json.display());
    let ds = data::load_training(&train_csv, None)?;
    // maf at a fixed noise (the size step only), not the whole default
    // search (4–7 trainings, minutes).
    // One validation split (no committee), whatever the file's size: the
    // demo calibrates on the rows no flow trained on.
    let cfg = TrainConfig {
        flow: FlowKind::Maf,
        noise: Some(DEMO_NOISE),
        epochs: Some(a.epochs),
        seed: a.seed,
        folds: Some(1),
        ..TrainConfig::default()
    };
    let (model, s) = train::train(&ds, &cfg, !a.quiet)?;
    model.save(&model_json)?;
    let budget = train::Budget::of(&cfg)?;
    let cost = crate::target::ModelCost::of(&model.model);
    say!(
        "    for {}: {}, {:.1} KB of weights, {} multiply-adds{} per score; {} rows (+{} validation), {:.1} s; validation NLL {:.3} nats/row",
        budget.describe(),
        describe_model(&model),
        cost.weight_bytes as f64 / 1024.0,
        cost.macs,
        budget
            .target
            .estimated_ms_of(&cost)
            .map_or(String::new(), |ms| format!(" ≈ {ms:.2} ms on {}", budget.target.name)),
        s.train_rows,
        s.val_rows,
        s.seconds,
        s.best_val_nll
    );
    if let Some(d) = &model.provenance.settings.distillation {
        say!("    kept {}", d.kept);
    }
    let val_csv = dir.join("validation.csv");
    output::write(&val_csv, rows_csv(&model.features, &s.validation).as_bytes())?;
    say!(
        "2/5 calibrate at 1 % false alarms on the held-out validation rows ({})",
        val_csv.display()
    );
    run_calibrate(&CalibrateArgs {
        delimiter: None,
        weights: None,
        model: model_json.clone(),
        data: val_csv,
        false_alarm_rate: 0.01,
        label_column: None,
        out: None,
        json: false,
    })?;
    let model_rs = dir.join("model.rs");
    say!("3/5 export → {}", model_rs.display());
    crate::export::run(&crate::export::ExportArgs {
        weights: None,
        model: model_json.clone(),
        out: model_rs,
        name: None,
        no_threshold: false,
        json: false,
    })?;
    let scores = dir.join("scores.csv");
    say!("4/5 score {} → {}", test_csv.display(), scores.display());
    run_score(&ScoreArgs {
        delimiter: None,
        model: model_json.clone(),
        data: test_csv.clone(),
        out: Some(scores),
        label_column: None,
    })?;
    say!("5/5 eval on {}", test_csv.display());
    run_eval(&EvalArgs {
        delimiter: None,
        weights: None,
        model: model_json,
        data: test_csv,
        label_column: None,
        json: false,
        gaussian_baseline: Some(train_csv),
    })?;
    Ok(())
}
