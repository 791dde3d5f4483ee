//! `burn-sparse`: run, resume and compare sparse-training experiments.

use std::path::PathBuf;
use std::process::ExitCode;

use burn_sparse_cli::config::ExperimentConfig;
use burn_sparse_cli::sweep::compare_shard;
use burn_sparse_cli::{Error, Runner, SweepConfig};

/// A line to stdout; a closed or full stdout loses it, never the work (no panic).
macro_rules! outln {
    ($($t:tt)*) => { burn_sparse_cli::progress::out(&format!($($t)*)) };
}

/// A line to stderr, as [`outln`].
macro_rules! errln {
    ($($t:tt)*) => { burn_sparse::mask::stderr_line!($($t)*) };
}

/// Text as is to stdout, ignoring output errors.
fn outtext(s: &str) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(s.as_bytes());
    let _ = o.flush();
}

const USAGE: &str = "\
burn-sparse: run, resume and compare sparse-training experiments

USAGE:
  burn-sparse run CONFIG.toml|json [OPTIONS] [OVERRIDES]
      One run per seed into RUNS/<label>-<config hash>/. A finished run is skipped; a killed
      one resumes from its last epoch (or IMP level).
  burn-sparse compare SWEEP.toml|json [OPTIONS] [OVERRIDES]
      Every point of the grid (methods x sparsities x seeds) as a run, then a Markdown table
      of mean ± std, CSV/JSON and plots in output.dir (and output.markdown).
  burn-sparse config [--json]
      Print the default experiment config, a starting point for your own.

OPTIONS:
  --runs DIR          runs directory (default: runs)
  --shard K/N         compare: run only grid points i with i % N == K (one process per core),
                      no summary; then run without --shard to summarise
  --no-progress       never draw progress bars (they are hidden anyway when stderr is not a
                      terminal)

OVERRIDES (any config field; for compare they apply to `base.` unless the path starts with
base., grid. or output.):
  --set PATH=VALUE    e.g. --set optimizer.lr=0.05 --set lottery.baselines=true
  --model M  --method M  --sparsity S  --epochs N  --seed S  --seeds 0,1,2  --device D
  --dataset NAME  --data-dir DIR  --lr LR  --batch-size B  --distribution D
";

fn shortcut(flag: &str) -> Option<&'static str> {
    Some(match flag {
        "model" => "model",
        "method" => "method",
        "sparsity" => "sparsity",
        "epochs" => "epochs",
        "seeds" => "seeds",
        "device" => "device",
        "dataset" => "dataset.name",
        "data-dir" => "dataset.dir",
        "lr" => "optimizer.lr",
        "batch-size" => "optimizer.batch_size",
        "distribution" => "distribution",
        _ => return None,
    })
}

struct Cli {
    command: String,
    file: Option<PathBuf>,
    runs: PathBuf,
    progress: bool,
    json: bool,
    shard: Option<(usize, usize)>,
    overrides: Vec<(String, String)>,
}

fn parse(args: Vec<String>) -> Result<Cli, String> {
    let mut it = args.into_iter();
    let command = it.next().ok_or("missing command")?;
    let mut cli = Cli {
        command,
        file: None,
        runs: PathBuf::from("runs"),
        progress: true,
        json: false,
        shard: None,
        overrides: Vec::new(),
    };
    while let Some(a) = it.next() {
        let Some(flag) = a.strip_prefix("--") else {
            if cli.file.is_none() {
                cli.file = Some(PathBuf::from(a));
                continue;
            }
            return Err(format!("unexpected argument `{a}`"));
        };
        let (flag, inline) = match flag.split_once('=') {
            Some((f, v)) if f != "set" => (f.to_string(), Some(v.to_string())),
            _ => (flag.to_string(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or(format!("--{flag} needs a value"))
        };
        match flag.as_str() {
            "no-progress" => cli.progress = false,
            "json" => cli.json = true,
            "runs" => cli.runs = PathBuf::from(value()?),
            "shard" => {
                let v = value()?;
                let bad = || format!("--shard needs K/N, got `{v}`");
                let (k, n) = v.split_once('/').ok_or_else(bad)?;
                cli.shard = Some((
                    k.trim().parse().map_err(|_| bad())?,
                    n.trim().parse().map_err(|_| bad())?,
                ));
            }
            "set" => {
                let v = value()?;
                let (k, x) = v
                    .split_once('=')
                    .ok_or(format!("--set needs PATH=VALUE, got `{v}`"))?;
                cli.overrides
                    .push((k.trim().to_string(), x.trim().to_string()));
            }
            "seed" => cli
                .overrides
                .push(("seeds".into(), format!("[{}]", value()?))),
            "seeds" => cli
                .overrides
                .push(("seeds".into(), format!("[{}]", value()?))),
            f => match shortcut(f) {
                Some(path) => cli.overrides.push((path.into(), value()?)),
                None => return Err(format!("unknown option --{f}")),
            },
        }
    }
    Ok(cli)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args.iter().any(|a| a == "--help" || a == "-h") {
        outtext(USAGE);
        return if args.is_empty() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    let cli = match parse(args) {
        Ok(c) => c,
        Err(e) => {
            errln!("error: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let status = match cli.command.as_str() {
        "config" => {
            let c = ExperimentConfig::default();
            outtext(&if cli.json {
                c.to_json() + "\n"
            } else {
                c.to_toml()
            });
            Ok(())
        }
        "run" => run(&cli),
        "compare" => sweep(&cli),
        other => {
            errln!("error: unknown command `{other}`\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match status {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ (Error::Config { .. } | Error::Parse { .. })) => {
            errln!("error: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            errln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn file(cli: &Cli) -> Result<&PathBuf, Error> {
    cli.file.as_ref().ok_or(Error::Config {
        field: "<file>".into(),
        message: format!("`{}` needs a config file", cli.command),
    })
}

fn run(cli: &Cli) -> Result<(), Error> {
    let cfg = ExperimentConfig::load(file(cli)?, &cli.overrides)?;
    let mut runner = Runner::new(&cli.runs);
    runner.progress = cli.progress;
    for o in runner.run(&cfg)? {
        if o.already_done {
            outln!("{}: already finished, nothing to do", o.dir.display());
        }
        outln!(
            "{}: test accuracy {:.2}%, density {:.4} ({} of {} weights)",
            o.dir.display(),
            o.result.test_accuracy,
            o.result.density,
            o.result.nnz,
            o.result.prunable
        );
    }
    Ok(())
}

fn sweep(cli: &Cli) -> Result<(), Error> {
    let overrides: Vec<(String, String)> = cli
        .overrides
        .iter()
        .map(|(k, v)| {
            let scoped = ["base.", "grid.", "output."]
                .iter()
                .any(|p| k.starts_with(p));
            (
                if scoped {
                    k.clone()
                } else {
                    format!("base.{k}")
                },
                v.clone(),
            )
        })
        .collect();
    let path = file(cli)?;
    let s = SweepConfig::load(path, &overrides)?;
    let mut runner = Runner::new(&cli.runs);
    runner.progress = cli.progress;
    let mut command = format!("burn-sparse compare {}", path.display());
    if cli.runs != PathBuf::from("runs") {
        command += &format!(" --runs {}", cli.runs.display());
    }
    for (k, v) in &cli.overrides {
        command += &format!(" --set {k}={v}");
    }
    if let Some(report) = compare_shard(&mut runner, &s, &command, cli.shard)? {
        for f in &report.files {
            outln!("wrote {}", f.display());
        }
    }
    Ok(())
}
