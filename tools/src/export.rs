//! `flowmote export`: the model as Rust source for the firmware (in progress).
use clap::Args;
use std::path::PathBuf;

/// Arguments of `flowmote export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Trained model file.
    #[arg(long)]
    pub model: PathBuf,
    /// Rust file to write.
    #[arg(long)]
    pub out: PathBuf,
}

/// Run `flowmote export`.
pub fn run(_args: &ExportArgs) -> anyhow::Result<()> {
    anyhow::bail!("export is not implemented yet")
}
