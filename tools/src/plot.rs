//! `flowmote plot`: PNG figures (in progress).
use clap::Args;
use std::path::PathBuf;

/// Arguments of `flowmote plot`.
#[derive(Args, Debug)]
pub struct PlotArgs {
    /// Trained model file.
    #[arg(long)]
    pub model: PathBuf,
    /// Directory for the PNG files.
    #[arg(long, default_value = "plots")]
    pub out_dir: PathBuf,
}

/// Run `flowmote plot`.
pub fn run(_args: &PlotArgs) -> anyhow::Result<()> {
    anyhow::bail!("plot is not implemented yet")
}
