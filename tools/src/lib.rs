//! Host side of flowmote: model files, training, evaluation and export.
//! The `flowmote` binary (`src/main.rs`) is a thin CLI over this library, which
//! host tests also use.
#![deny(missing_docs)]

pub mod cli;
pub mod data;
pub mod demo;
pub mod eval;
pub mod export;
pub mod features;
pub mod metrics;
pub mod model;
pub mod output;
pub mod plot;
pub mod provenance;
pub mod sample;
pub mod target;
pub mod train;
