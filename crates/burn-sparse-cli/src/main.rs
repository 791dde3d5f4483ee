//! `burn-sparse`: run, resume and compare sparse-training experiments.

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;

use burn_sparse_cli::cli::{Cli, Command, CompareArgs, RunArgs};
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

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help and --version print to stdout and succeed; a bad command line is status 2.
            use std::io::IsTerminal;
            let code = if e.use_stderr() { 2 } else { 0 };
            // Colours only on a terminal: piped or captured output stays plain text.
            let tty = if e.use_stderr() {
                std::io::stderr().is_terminal()
            } else {
                std::io::stdout().is_terminal()
            };
            let text = if tty {
                e.render().ansi().to_string()
            } else {
                e.render().to_string()
            };
            if e.use_stderr() {
                errln!("{}", text.trim_end());
            } else {
                outtext(&text);
            }
            return ExitCode::from(code);
        }
    };
    let status = match &cli.command {
        Command::Config { json } => {
            outtext(&if *json {
                ExperimentConfig::default().to_json() + "\n"
            } else {
                ExperimentConfig::annotated_default_toml()
            });
            Ok(())
        }
        Command::Run(args) => run(args),
        Command::Compare(args) => sweep(args),
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

fn run(args: &RunArgs) -> Result<(), Error> {
    let cfg = ExperimentConfig::load(&args.config, &args.overrides.for_run()?)?;
    let mut runner = Runner::new(&args.common.runs);
    runner.progress = !args.common.no_progress;
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

fn sweep(args: &CompareArgs) -> Result<(), Error> {
    let overrides = args.overrides.for_sweep();
    let path = &args.sweep;
    let s = SweepConfig::load(path, &overrides)?;
    let mut runner = Runner::new(&args.common.runs);
    runner.progress = !args.common.no_progress;
    let mut command = format!("burn-sparse compare {}", path.display());
    if args.common.runs != Path::new("runs") {
        command += &format!(" --runs {}", args.common.runs.display());
    }
    for (k, v) in &overrides {
        command += &format!(" --set {k}={v}");
    }
    if let Some(report) = compare_shard(&mut runner, &s, &command, args.shard)? {
        for f in &report.files {
            outln!("wrote {}", f.display());
        }
    }
    Ok(())
}
