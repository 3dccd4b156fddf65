//! `flowmote sample`: draws from a model, the same numbers as the core's
//! `Flow::sample` (and the exported firmware model) with the same generator.

use crate::model::ModelFile;
use crate::output;
use anyhow::Result;
use clap::Args;
use rand_core::SeedableRng;
use std::fmt::Write as _;
use std::path::PathBuf;

/// Arguments of `flowmote sample`.
#[derive(Args, Debug, Clone)]
pub struct SampleArgs {
    /// Trained model file.
    #[arg(long)]
    pub model: PathBuf,
    /// Number of samples.
    #[arg(short = 'n', long = "n", default_value_t = 1000)]
    pub n: usize,
    /// Seed of `Xoshiro128PlusPlus::seed_from_u64`: the same draws as the
    /// core's `Flow::sample` with that generator (and the exported model).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output CSV (header = the model's features); standard output if omitted.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Add a `log_prob` column (the model's log-density of each sample).
    #[arg(long)]
    pub log_prob: bool,
}

/// Draw `n` samples with `Xoshiro128PlusPlus::seed_from_u64(seed)`, in order.
pub fn draw_samples(model: &ModelFile, n: usize, seed: u64) -> Result<Vec<(Vec<f32>, f32)>> {
    let mut rng = rand_xoshiro::Xoshiro128PlusPlus::seed_from_u64(seed);
    let mut ws = model.model.workspace();
    let view = model
        .model
        .view()
        .map_err(|e| anyhow::anyhow!("the model does not compile into its layers ({e:?})"))?;
    (0..n)
        .map(|i| {
            view.sample_with_log_prob(&mut rng, &mut ws)
                .map_err(|e| anyhow::anyhow!("sample {i} overflowed ({e:?}); the model is unstable there"))
        })
        .collect()
}

/// Run `flowmote sample`; returns the CSV text.
pub fn run_sample(a: &SampleArgs) -> Result<String> {
    if let Some(out) = &a.out {
        output::refuse_inputs(out, &[&a.model])?;
    }
    let model = ModelFile::load(&a.model)?;
    let draws = draw_samples(&model, a.n, a.seed)?;
    let mut s = model.features.join(",");
    if a.log_prob {
        s.push_str(",log_prob");
    }
    s.push('\n');
    for (x, lp) in &draws {
        let mut first = true;
        for v in x {
            if !first {
                s.push(',');
            }
            first = false;
            write!(s, "{v}")?;
        }
        if a.log_prob {
            write!(s, ",{lp}")?;
        }
        s.push('\n');
    }
    match &a.out {
        Some(p) => {
            output::write(p, s.as_bytes())?;
            eprintln!("wrote {} samples (seed {}) to {}", a.n, a.seed, p.display());
        }
        None => output::to_stdout(s.as_bytes())?,
    }
    Ok(s)
}
