//! # burn-sparse-cli
//!
//! The experiment runner behind the `burn-sparse` binary: a TOML/JSON experiment config
//! ([`config::ExperimentConfig`]) overridden by flags, one resumable run directory per config
//! hash ([`run::Runner`]), progress bars, plots written with `plotters` ([`plot`]), and the
//! `compare` sweep that writes a Markdown table of mean ± std with its plots ([`sweep`]).
//!
//! ```text
//! cargo run --release -p burn-sparse-cli -- run configs/rigl.toml --sparsity 0.95 --seed 1
//! cargo run --release -p burn-sparse-cli -- compare configs/results.toml
//! ```
//!
//! Every method of the workspace is reachable: dense, magnitude, random, SNIP, GraSP, SynFlow,
//! static, SET, RigL, SNFS and the lottery ticket (IMP).

pub mod cli;
pub mod config;
pub mod error;
mod method;
pub mod plot;
pub mod progress;
pub mod run;
mod rundir;
pub mod sweep;

pub use config::{ExperimentConfig, MethodName, ModelName};
pub use error::{Error, Result};
pub use run::{Outcome, RunResult, Runner};
pub use sweep::{SweepConfig, compare};
