//! Host side of flowmote: model files, training, evaluation and export.
//! The `flowmote` binary (`src/main.rs`) is a thin CLI over this library, which
//! host tests also use.
#![deny(missing_docs)]

pub mod cli;
pub mod data;
pub mod devlog;
pub mod eval;
pub mod export;
pub mod features;
pub mod metrics;
pub mod model;
pub mod output;
pub mod plot;
pub mod provenance;
pub mod target;
pub mod train;

// The demo and sample commands live in `cli` with the others; their old
// paths (`flowmote_tools::demo`, `flowmote_tools::sample`) still resolve.
pub use cli::{demo, sample};
