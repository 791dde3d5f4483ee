//! Helpers shared by the CLI's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use burn_sparse_cli::config::{DatasetName, ExperimentConfig, MethodName};
use burn_sparse_cli::run::EpochMetrics;

pub const BIN: &str = env!("CARGO_BIN_EXE_burn-sparse");

pub fn synthetic(method: MethodName, sparsity: f64, epochs: u64) -> ExperimentConfig {
    let mut c = ExperimentConfig {
        method,
        sparsity,
        epochs,
        ..ExperimentConfig::default()
    };
    c.dataset.name = DatasetName::Synthetic;
    c.optimizer.batch_size = 50;
    c.schedule.delta_t = 4;
    c
}

pub fn write_config(dir: &Path, c: &ExperimentConfig) -> PathBuf {
    let p = dir.join("exp.toml");
    std::fs::write(&p, c.to_toml()).unwrap();
    p
}

pub fn run_bin(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().unwrap()
}

pub fn metrics_without_time(dir: &Path) -> Vec<EpochMetrics> {
    let mut rows: Vec<EpochMetrics> =
        serde_json::from_slice(&std::fs::read(dir.join("metrics.json")).unwrap()).unwrap();
    for r in &mut rows {
        r.seconds = 0.0;
    }
    rows
}
