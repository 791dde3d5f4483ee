//! The `burn-sparse` command line, parsed with clap (derive): unknown or malformed flags are
//! errors with a suggestion, `--help` is generated, and every flag either changes the config or
//! is refused.
//!
//! Flags become config overrides ([`Overrides::for_run`], [`Overrides::for_sweep`]): the shortcuts first, then every
//! `--set PATH=VALUE` in command-line order, so a `--set` wins over a shortcut of the same field.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{ComputeName, DatasetName, DistributionName, MethodName, ModelName, spelling};
use crate::error::{Error, Result};

/// `burn-sparse`: run, resume and compare sparse-training experiments.
#[derive(Debug, Parser)]
#[command(name = "burn-sparse", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// One run per seed into `RUNS/LABEL-HASH/`. A finished run is skipped; a killed
    /// one resumes from its last epoch (or IMP level).
    Run(RunArgs),
    /// Every point of the grid (methods x sparsities x seeds) as a run, then a Markdown table
    /// of mean ± std, CSV/JSON and plots in output.dir (and output.markdown).
    Compare(CompareArgs),
    /// Print the default experiment config, a starting point for your own.
    Config {
        /// JSON instead of TOML.
        #[arg(long)]
        json: bool,
    },
}

/// `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The experiment config (`.toml` or `.json`).
    #[arg(value_name = "CONFIG")]
    pub config: PathBuf,
    /// Where the runs go and how.
    #[command(flatten)]
    pub common: Common,
    /// Config overrides.
    #[command(flatten)]
    pub overrides: Overrides,
}

/// `compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The sweep config (`.toml` or `.json`).
    #[arg(value_name = "SWEEP")]
    pub sweep: PathBuf,
    /// Run only the grid points i with i % N == K (one process per core) and write no
    /// summary; then run without --shard to summarise.
    #[arg(long, value_name = "K/N", value_parser = parse_shard)]
    pub shard: Option<(usize, usize)>,
    /// Where the runs go and how.
    #[command(flatten)]
    pub common: Common,
    /// Config overrides (for the grid: --method, --sparsity and --seeds replace
    /// grid.methods, grid.sparsities and grid.seeds).
    #[command(flatten)]
    pub overrides: Overrides,
}

/// Flags of both `run` and `compare`.
#[derive(Debug, Args)]
pub struct Common {
    /// The runs directory.
    #[arg(long, value_name = "DIR", default_value = "runs")]
    pub runs: PathBuf,
    /// Never draw progress bars (they are hidden anyway when stderr is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
}

/// Config overrides. `compare` applies them to `base.` unless the path starts with `base.`,
/// `grid.` or `output.`; its --method, --sparsity and --seeds set the grid.
#[derive(Debug, Args, Default)]
#[command(next_help_heading = "Overrides")]
pub struct Overrides {
    /// Any config field, e.g. `--set optimizer.lr=0.05 --set lottery.baselines=true`; applied
    /// after the shortcuts, in order.
    #[arg(long = "set", value_name = "PATH=VALUE", value_parser = parse_set)]
    pub set: Vec<(String, String)>,
    /// The model.
    #[arg(long, value_enum)]
    pub model: Option<ModelName>,
    /// The method (compare: a comma-separated list, the grid's methods).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "METHOD")]
    pub method: Vec<MethodName>,
    /// The target sparsity (compare: a comma-separated list, the grid's sparsities).
    #[arg(long, value_delimiter = ',', value_name = "S", value_parser = parse_sparsity)]
    pub sparsity: Vec<f64>,
    /// Training epochs.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub epochs: Option<u64>,
    /// One seed.
    #[arg(long, value_name = "SEED", conflicts_with = "seeds")]
    pub seed: Option<u64>,
    /// Seeds, comma-separated (each one run; duplicates are refused).
    #[arg(long, value_delimiter = ',', value_name = "S,..")]
    pub seeds: Vec<u64>,
    /// The device (`cpu`/`flex`, `ndarray`, `wgpu`, `cuda`: those compiled in).
    #[arg(long, value_name = "D")]
    pub device: Option<String>,
    /// The dataset.
    #[arg(long, value_enum, value_name = "NAME")]
    pub dataset: Option<DatasetName>,
    /// The data directory.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The learning rate.
    #[arg(long, value_name = "LR")]
    pub lr: Option<f64>,
    /// The batch size.
    #[arg(long, value_name = "B", value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: Option<u64>,
    /// The sparsity distribution over layers.
    #[arg(long, value_enum, value_name = "D")]
    pub distribution: Option<DistributionName>,
    /// `masked` (masks on dense weights) or `sparse` (truly sparse layers: LeNet-300-100 with
    /// static, set, rigl or a mask at initialisation).
    #[arg(long, value_enum, value_name = "C")]
    pub compute: Option<ComputeName>,
}

/// A JSON list of values as an override value.
fn list<T: ToString>(xs: &[T]) -> String {
    let parts: Vec<String> = xs.iter().map(ToString::to_string).collect();
    format!("[{}]", parts.join(","))
}

impl Overrides {
    /// The overrides as `(path, value)` pairs for an experiment config (`run`): shortcuts
    /// first, then `--set` in order.
    ///
    /// # Errors
    /// [`Error::Config`] for more than one method or sparsity (a run has one; `compare` takes
    /// lists).
    pub fn for_run(&self) -> Result<Vec<(String, String)>> {
        let one = |n: usize, flag: &str| {
            if n > 1 {
                Err(Error::Config {
                    field: flag.into(),
                    message: "a run takes one value; `compare` takes a list".into(),
                })
            } else {
                Ok(())
            }
        };
        one(self.method.len(), "--method")?;
        one(self.sparsity.len(), "--sparsity")?;
        let mut out = self.shortcuts("");
        if let Some(m) = self.method.first() {
            out.push(("method".into(), spelling(m)));
        }
        if let Some(s) = self.sparsity.first() {
            out.push(("sparsity".into(), s.to_string()));
        }
        if let Some(s) = self.seed {
            out.push(("seeds".into(), list(&[s])));
        }
        if !self.seeds.is_empty() {
            out.push(("seeds".into(), list(&self.seeds)));
        }
        out.extend(self.set.iter().cloned());
        Ok(out)
    }

    /// The overrides for a sweep config (`compare`): --method, --sparsity and --seeds (--seed)
    /// replace the grid's lists, the other shortcuts and the `--set` paths that do not start
    /// with `base.`, `grid.` or `output.` apply to `base.`.
    pub fn for_sweep(&self) -> Vec<(String, String)> {
        let mut out = self.shortcuts("base.");
        if !self.method.is_empty() {
            let names: Vec<String> = self
                .method
                .iter()
                .map(|m| format!("\"{}\"", spelling(m)))
                .collect();
            out.push(("grid.methods".into(), list(&names)));
        }
        if !self.sparsity.is_empty() {
            out.push(("grid.sparsities".into(), list(&self.sparsity)));
        }
        if let Some(s) = self.seed {
            out.push(("grid.seeds".into(), list(&[s])));
        }
        if !self.seeds.is_empty() {
            out.push(("grid.seeds".into(), list(&self.seeds)));
        }
        for (k, v) in &self.set {
            let scoped = ["base.", "grid.", "output."]
                .iter()
                .any(|p| k.starts_with(p));
            let k = if scoped {
                k.clone()
            } else {
                format!("base.{k}")
            };
            out.push((k, v.clone()));
        }
        out
    }

    /// The single-valued shortcuts, each under `prefix`.
    fn shortcuts(&self, prefix: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        let mut push = |path: &str, v: Option<String>| {
            if let Some(v) = v {
                out.push((format!("{prefix}{path}"), v));
            }
        };
        push("model", self.model.as_ref().map(spelling));
        push("epochs", self.epochs.map(|e| e.to_string()));
        push(
            "device",
            self.device
                .as_ref()
                .map(|d| serde_json::Value::String(d.clone()).to_string()),
        );
        push("dataset.name", self.dataset.as_ref().map(spelling));
        push(
            "dataset.dir",
            self.data_dir
                .as_ref()
                .map(|d| serde_json::Value::String(d.display().to_string()).to_string()),
        );
        push("optimizer.lr", self.lr.map(|x| x.to_string()));
        push(
            "optimizer.batch_size",
            self.batch_size.map(|b| b.to_string()),
        );
        push("distribution", self.distribution.as_ref().map(spelling));
        push("compute", self.compute.as_ref().map(spelling));
        out
    }
}

fn parse_set(s: &str) -> std::result::Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| "expected PATH=VALUE (e.g. optimizer.lr=0.05)".to_string())?;
    let k = k.trim();
    if k.is_empty() {
        return Err("the PATH before `=` is empty".into());
    }
    Ok((k.to_string(), v.trim().to_string()))
}

fn parse_shard(s: &str) -> std::result::Result<(usize, usize), String> {
    let bad = || format!("expected K/N with 0 <= K < N (e.g. 0/2), got `{s}`");
    let (k, n) = s.split_once('/').ok_or_else(bad)?;
    let k: usize = k.trim().parse().map_err(|_| bad())?;
    let n: usize = n.trim().parse().map_err(|_| bad())?;
    if n == 0 || k >= n {
        return Err(bad());
    }
    Ok((k, n))
}

/// A sparsity flag's value: a number in `[0, 1)` (the examples parse theirs with it too).
///
/// # Errors
/// A message for anything else (NaN, 1, a word).
pub fn parse_sparsity(s: &str) -> std::result::Result<f64, String> {
    let x: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number"))?;
    if !(x.is_finite() && (0.0..1.0).contains(&x)) {
        return Err(format!("{s} is outside [0, 1)"));
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> std::result::Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("burn-sparse").chain(args.iter().copied()))
    }

    fn run_overrides(args: &[&str]) -> Vec<(String, String)> {
        match parse(args).unwrap().command {
            Command::Run(r) => r.overrides.for_run().unwrap(),
            c => panic!("not run: {c:?}"),
        }
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn unknown_and_malformed_flags_are_errors_with_a_suggestion() {
        let e = parse(&["run", "c.toml", "--epoch", "1"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnknownArgument);
        assert!(e.to_string().contains("--epochs"), "{e}");
        let e = parse(&["run", "c.toml", "--method", "rigel"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidValue);
        assert!(e.to_string().contains("rigl"), "{e}");
        for bad in [
            &["run", "c.toml", "--epochs", "0"][..],
            &["run", "c.toml", "--epochs", "-1"],
            &["run", "c.toml", "--epochs", "3074457345618258603000"],
            &["run", "c.toml", "--sparsity", "1.5"],
            &["run", "c.toml", "--sparsity", "NaN"],
            &["run", "c.toml", "--set", "optimizer.lr"],
            &["run", "c.toml", "--set", "=3"],
            &["compare", "s.toml", "--shard", "2/2"],
            &["compare", "s.toml", "--shard", "0/0"],
            &["run", "c.toml", "--seed", "1", "--seeds", "2,3"],
            &["run"],
            &["train", "c.toml"],
            &["run", "a.toml", "b.toml"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn flags_become_overrides_in_both_spellings() {
        let a = run_overrides(&["run", "c.toml", "--epochs=3", "--lr", "0.05"]);
        let b = run_overrides(&["run", "c.toml", "--lr=0.05", "--epochs", "3"]);
        assert_eq!(a, b);
        assert_eq!(
            a,
            vec![
                ("epochs".to_string(), "3".to_string()),
                ("optimizer.lr".into(), "0.05".into())
            ]
        );
        let o = run_overrides(&[
            "run",
            "c.toml",
            "--set",
            "epochs=2",
            "--dataset",
            "fashion-mnist",
            "--method",
            "rigl",
            "--seeds",
            "1,2",
            "--set",
            "optimizer.lr=0.5",
        ]);
        assert_eq!(
            o,
            vec![
                ("dataset.name".to_string(), "fashion-mnist".to_string()),
                ("method".into(), "rigl".into()),
                ("seeds".into(), "[1,2]".into()),
                ("epochs".into(), "2".into()),
                ("optimizer.lr".into(), "0.5".into()),
            ]
        );
        let e = match parse(&["run", "c.toml", "--method", "rigl,set"])
            .unwrap()
            .command
        {
            Command::Run(r) => r.overrides.for_run().unwrap_err(),
            _ => unreachable!(),
        };
        assert!(e.to_string().contains("--method"), "{e}");
    }

    #[test]
    fn compare_flags_set_the_grid() {
        let Command::Compare(c) = parse(&[
            "compare",
            "s.toml",
            "--method",
            "rigl,set",
            "--sparsity",
            "0.8,0.9",
            "--seeds",
            "0,1,2",
            "--epochs",
            "2",
            "--set",
            "output.dir=x",
            "--set",
            "optimizer.lr=0.5",
            "--shard",
            "1/2",
        ])
        .unwrap()
        .command
        else {
            panic!("not compare")
        };
        assert_eq!(c.shard, Some((1, 2)));
        assert_eq!(
            c.overrides.for_sweep(),
            vec![
                ("base.epochs".to_string(), "2".to_string()),
                ("grid.methods".into(), "[\"rigl\",\"set\"]".into()),
                ("grid.sparsities".into(), "[0.8,0.9]".into()),
                ("grid.seeds".into(), "[0,1,2]".into()),
                ("output.dir".into(), "x".into()),
                ("base.optimizer.lr".into(), "0.5".into()),
            ]
        );
    }
}
