//! The runner end to end on the generated `synthetic` dataset: configs, every method, resume
//! after a kill of the real binary, and the `compare` sweep's files.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use burn_sparse_cli::config::{ExperimentConfig, Format, MethodName};
use burn_sparse_cli::run::{EpochMetrics, RunResult, Runner};
use burn_sparse_cli::{Error, SweepConfig};

mod common;
use common::{BIN, metrics_without_time, run_bin, synthetic, write_config};

fn field_of(e: &Error) -> String {
    match e {
        Error::Config { field, .. } => field.clone(),
        other => panic!("expected a config error, got {other}"),
    }
}

#[test]
fn config_round_trips_through_toml_and_json() {
    let mut c = synthetic(MethodName::Snip, 0.95, 7);
    c.seeds = vec![3, 4];
    c.optimizer.lr = 0.05;
    c.distribution = Some(burn_sparse_cli::config::DistributionName::Erk);
    c.lottery.levels = Some(5);
    c.schedule.drop_fraction = Some(0.4);
    c.dataset.train_limit = Some(1000);
    for original in [ExperimentConfig::default(), c] {
        let t = ExperimentConfig::from_text(&original.to_toml(), Format::Toml, "t", &[]).unwrap();
        assert_eq!(t, original);
        let j = ExperimentConfig::from_text(&original.to_json(), Format::Json, "j", &[]).unwrap();
        assert_eq!(j, original);
        assert_eq!(t.hash(), original.hash());
    }
    // A partial file takes the defaults; overrides win over the file.
    let c = ExperimentConfig::from_text(
        "method = \"set\"\n[optimizer]\nlr = 0.2\n",
        Format::Toml,
        "partial",
        &[
            ("optimizer.lr".into(), "0.3".into()),
            ("epochs".into(), "4".into()),
        ],
    )
    .unwrap();
    assert_eq!(c.method, MethodName::Set);
    assert_eq!(c.optimizer.lr, 0.3);
    assert_eq!(c.epochs, 4);
    assert_eq!(c.optimizer.batch_size, 100);
}

#[test]
fn the_shipped_configs_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        let f = Format::of(&p).unwrap();
        if text.contains("[grid]") || text.contains("\"grid\"") {
            SweepConfig::from_text(&text, f, &p.display().to_string(), &[])
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        } else {
            ExperimentConfig::from_text(&text, f, &p.display().to_string(), &[])
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
        n += 1;
    }
    assert!(n >= 2, "configs/ holds {n} files");
}

#[test]
fn invalid_configs_name_the_field() {
    let cases: &[(&str, &str)] = &[
        ("epochs = \"ten\"", "epochs"),
        ("epochs = 0", "epochs"),
        ("sparsity = 1.5", "sparsity"),
        ("sparsity = -0.1", "sparsity"),
        ("method = \"prune-it\"", "method"),
        ("model = \"resnet\"", "model"),
        ("seeds = []", "seeds"),
        ("device = \"tpu\"", "device"),
        (
            "distribution = \"global\"\nmethod = \"rigl\"",
            "distribution",
        ),
        ("[optimizer]\nlr = -1.0", "optimizer.lr"),
        ("[optimizer]\nmomentum = 1.0", "optimizer.momentum"),
        ("[optimizer]\nkind = \"lion\"", "optimizer.kind"),
        ("[schedule]\ndelta_t = 0", "schedule.delta_t"),
        ("[schedule]\nend_fraction = 1.5", "schedule.end_fraction"),
        ("[saliency]\nrounds = 0", "saliency.rounds"),
        ("[dataset]\nname = \"imagenet\"", "dataset.name"),
        (
            "method = \"lottery\"\nepochs = 2\n[lottery]\nrewind_epoch = 2",
            "lottery.rewind_epoch",
        ),
        // A repeated seed would count as an independent sample.
        ("seeds = [0, 1, 0]", "seeds"),
        // TOML's nan and inf have no JSON spelling: they used to read as `null`.
        ("[optimizer]\nlr = nan", "optimizer.lr"),
        ("[optimizer]\nweight_decay = inf", "optimizer.weight_decay"),
        // Truly sparse layers: LeNet-300-100 and a fixed-nnz method only.
        ("compute = \"dense\"", "compute"),
        ("compute = \"sparse\"\nmodel = \"lenet5\"", "compute"),
        ("compute = \"sparse\"\nmethod = \"snfs\"", "compute"),
        ("compute = \"sparse\"\nmethod = \"dense\"", "compute"),
        // GMP: its schedule's fields, and the settings only it reads.
        ("compute = \"sparse\"\nmethod = \"gmp\"", "compute"),
        (
            "method = \"gmp\"\n[schedule]\nbegin_fraction = 0.8",
            "schedule.begin_fraction",
        ),
        (
            "method = \"gmp\"\nsparsity = 0.5\n[schedule]\ninitial_sparsity = 0.6",
            "schedule.initial_sparsity",
        ),
        (
            "method = \"gmp\"\n[schedule]\ninitial_sparsity = 1.5",
            "schedule.initial_sparsity",
        ),
        (
            "method = \"rigl\"\n[schedule]\nbegin_fraction = 0.2",
            "schedule.begin_fraction",
        ),
        (
            "method = \"set\"\n[schedule]\ninitial_sparsity = 0.2",
            "schedule.initial_sparsity",
        ),
        ("method = \"dense\"\nsparse_init = true", "sparse_init"),
        ("method = \"lottery\"\nsparse_init = true", "sparse_init"),
        (
            "method = \"set\"\n[schedule]\ngrad_accumulation = 2",
            "schedule.grad_accumulation",
        ),
        (
            "[schedule]\ndelta_t = 4\ngrad_accumulation = 5",
            "schedule.grad_accumulation",
        ),
        // Sparsity types.
        (
            "method = \"rigl\"\nsparsity = 0.6\nstructure = { kind = \"n_by_m\", n = 2, m = 4 }",
            "sparsity",
        ),
        (
            "method = \"lottery\"\nsparsity = 0.75\nstructure = { kind = \"block\", rows = 2, cols = 2 }",
            "structure",
        ),
        (
            "method = \"lottery\"\nsparsity = 0.5\nstructure = { kind = \"n_by_m\", n = 2, m = 4 }\n[lottery]\nlevels = 2\n[lottery.layer_rates]\ndefault = 0.3",
            "lottery.layer_rates",
        ),
        (
            "method = \"snfs\"\nsparsity = 0.75\nstructure = { kind = \"block\", rows = 2, cols = 2 }",
            "structure",
        ),
        (
            "structure = { kind = \"n_by_m\", n = 5, m = 4 }",
            "structure",
        ),
        ("structure = { kind = \"diagonal\" }", "structure.kind"),
        // Filters and schedule options.
        ("[filter]\nregex = \"(\"", "filter.regex"),
        ("[filter]\nmin_rank = 0", "filter.min_rank"),
        (
            "compute = \"sparse\"\n[filter]\nfirst_dense = true",
            "filter",
        ),
        (
            "[schedule]\ndrop_fraction_decay = 0.5",
            "schedule.drop_fraction_decay",
        ),
        (
            "method = \"static\"\n[schedule]\ndrop_fraction_kind = \"linear\"",
            "schedule.drop_fraction_kind",
        ),
        (
            "method = \"snfs\"\n[schedule]\nskip_weight_update = true",
            "schedule.skip_weight_update",
        ),
        ("[schedule]\ngrow_init_std = -1.0", "schedule.grow_init_std"),
        (
            "method = \"static\"\n[schedule]\ngrow_init_std = 0.1",
            "schedule.grow_init_std",
        ),
        // The custom distribution.
        (
            "distribution = \"erk\"\n[layer_sparsity]\n\"fc1.weight\" = 0.9",
            "layer_sparsity",
        ),
        (
            "method = \"gmp\"\n[layer_sparsity]\n\"fc1.weight\" = 0.9",
            "layer_sparsity",
        ),
        ("[layer_sparsity]\n\"fc1.weight\" = 1.0", "layer_sparsity"),
        // First/last layer sparsity.
        ("first_layer_sparsity = 1.0", "first_layer_sparsity"),
        (
            "method = \"snip\"\nlast_layer_sparsity = 0.5",
            "last_layer_sparsity",
        ),
        (
            "method = \"lottery\"\nfirst_layer_sparsity = 0.5",
            "first_layer_sparsity",
        ),
        (
            "distribution = \"global\"\nmethod = \"gmp\"\nfirst_layer_sparsity = 0.5",
            "first_layer_sparsity",
        ),
        (
            "first_layer_sparsity = 0.5\n[filter]\nfirst_dense = true",
            "first_layer_sparsity",
        ),
        (
            "sparsity = 0.5\nlast_layer_sparsity = 0.5\nstructure = { kind = \"n_by_m\", n = 2, m = 4 }",
            "last_layer_sparsity",
        ),
        // Per-layer IMP rates.
        (
            "method = \"lottery\"\n[lottery.layer_rates]\ndefault = 0.2",
            "lottery.levels",
        ),
        (
            "method = \"lottery\"\n[lottery]\nlevels = 2\n[lottery.layer_rates]\ndefault = 1.2",
            "lottery.layer_rates",
        ),
        // Linear mode connectivity.
        ("method = \"rigl\"\n[lottery.lmc]\nlevel = 1", "lottery.lmc"),
        (
            "method = \"lottery\"\n[lottery]\nlevels = 2\n[lottery.lmc]\nlevel = 3",
            "lottery.lmc.level",
        ),
        (
            "method = \"lottery\"\n[lottery.lmc]\npoints = 1",
            "lottery.lmc.points",
        ),
        (
            "method = \"lottery\"\n[lottery.lmc]\nseeds = [5, 5]",
            "lottery.lmc.seeds",
        ),
        // IMP's retraining choices.
        ("[lottery]\nretrain = \"rewind-it\"", "lottery.retrain"),
        ("[lottery]\nfine_tune_lr = 0.01", "lottery.fine_tune_lr"),
        (
            "[lottery]\nretrain = \"fine-tuning\"\nfine_tune_lr = -1.0",
            "lottery.fine_tune_lr",
        ),
    ];
    for (text, field) in cases {
        let e = ExperimentConfig::from_text(text, Format::Toml, "case", &[]).unwrap_err();
        assert_eq!(&field_of(&e), field, "{text}: {e}");
        assert!(e.to_string().contains(field), "{e}");
    }
    // nan is said as such, not as the `null` its JSON transcoding would be.
    let e = ExperimentConfig::from_text("[optimizer]\nlr = nan", Format::Toml, "c", &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("not a finite number") && !e.contains("null"),
        "{e}"
    );
    // An unknown field is named, with its table.
    let e =
        ExperimentConfig::from_text("[optimizer]\nlrr = 0.1", Format::Toml, "c", &[]).unwrap_err();
    assert!(field_of(&e).starts_with("optimizer"), "{e}");
    assert!(e.to_string().contains("lrr"), "{e}");
    // Bad values through overrides too.
    let e = ExperimentConfig::from_text(
        "",
        Format::Json,
        "c",
        &[("optimizer.batch_size".into(), "0".into())],
    );
    assert!(
        matches!(e, Err(Error::Parse { .. })),
        "empty JSON is not a config"
    );
    let e = ExperimentConfig::from_text(
        "{}",
        Format::Json,
        "c",
        &[("optimizer.batch_size".into(), "0".into())],
    )
    .unwrap_err();
    assert_eq!(field_of(&e), "optimizer.batch_size");
    // Syntax errors carry the position.
    let e = ExperimentConfig::from_text("epochs = = 3", Format::Toml, "bad.toml", &[]).unwrap_err();
    assert!(
        matches!(e, Error::Parse { .. }) && e.to_string().contains("bad.toml"),
        "{e}"
    );
    // The sweep names grid fields and base fields.
    let e = SweepConfig::from_text(
        "[grid]\nmethods = [\"rigl\"]\nsparsities = [1.2]\nseeds = [0]",
        Format::Toml,
        "s",
        &[],
    )
    .unwrap_err();
    assert_eq!(field_of(&e), "grid.sparsities[0]");
    let e = SweepConfig::from_text(
        "[base]\nepochs = 0\n[grid]\nmethods = [\"rigl\"]\nsparsities = [0.9]\nseeds = [0]",
        Format::Toml,
        "s",
        &[],
    )
    .unwrap_err();
    assert!(field_of(&e).starts_with("base.epochs"), "{e}");
}

#[test]
fn hostile_overrides_are_bounded_errors() {
    // A 60,000-segment path used to overflow the stack while decoding the nested tables.
    let deep = vec!["a"; 60_000].join(".");
    let e = ExperimentConfig::from_text("", Format::Toml, "c", &[(deep, "1".into())]).unwrap_err();
    assert!(
        e.to_string().contains("60000 segments"),
        "{}",
        &e.to_string()[..200]
    );
    assert!(e.to_string().len() < 1000, "the path is echoed whole");
    // A 50 MB value is named, not printed.
    let big = "x".repeat(50 << 20);
    let e =
        ExperimentConfig::from_text("", Format::Toml, "c", &[("model".into(), big)]).unwrap_err();
    assert_eq!(field_of(&e), "model");
    let msg = e.to_string();
    assert!(
        msg.len() < 1000 && msg.contains("more bytes"),
        "{} bytes",
        msg.len()
    );
    // nan through --set is a string, which no number field takes.
    let e = ExperimentConfig::from_text(
        "",
        Format::Toml,
        "c",
        &[("optimizer.lr".into(), "nan".into())],
    )
    .unwrap_err();
    assert_eq!(field_of(&e), "optimizer.lr");
    // A sweep grid lists each value once.
    for (grid, field) in [
        (
            "methods = [\"rigl\", \"rigl\"]\nsparsities = [0.9]\nseeds = [0]",
            "grid.methods",
        ),
        (
            "methods = [\"rigl\"]\nsparsities = [0.9, 0.9]\nseeds = [0]",
            "grid.sparsities",
        ),
        (
            "methods = [\"rigl\"]\nsparsities = [0.9]\nseeds = [1, 1]",
            "grid.seeds",
        ),
    ] {
        let e =
            SweepConfig::from_text(&format!("[grid]\n{grid}"), Format::Toml, "s", &[]).unwrap_err();
        assert_eq!(field_of(&e), field, "{e}");
        assert!(e.to_string().contains("twice"), "{e}");
    }
}

#[test]
fn a_config_file_that_is_no_file_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let zero = dir.path().join("zero.toml");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let e = ExperimentConfig::load(&zero, &[]).unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
    let big = dir.path().join("big.toml");
    std::fs::write(&big, vec![b'#'; (16 << 20) + 1]).unwrap();
    let e = ExperimentConfig::load(&big, &[]).unwrap_err();
    assert!(e.to_string().contains("larger than"), "{e}");
}

#[test]
fn runs_too_long_or_too_short_for_their_schedule_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut runner = Runner::new(dir.path());
    runner.progress = false;
    // `--epochs 3074457345618258603` wrapped the step count.
    let mut c = synthetic(MethodName::Rigl, 0.9, 3_074_457_345_618_258_603);
    let e = runner.run_one(&c).unwrap_err();
    assert_eq!(field_of(&e), "epochs", "{e}");
    assert!(e.to_string().contains("overflow"), "{e}");
    // One step (batch >= the training set): RigL's window, the first 75%, is empty. This used
    // to name a field `end` that no config has.
    c.epochs = 1;
    c.optimizer.batch_size = 600;
    let e = runner.run_one(&c).unwrap_err();
    assert_eq!(field_of(&e), "epochs", "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("1 steps leave Rigl no topology update") && msg.contains("batch size 600"),
        "{msg}"
    );
    // A schedule end fraction that leaves no step.
    c.epochs = 2;
    c.optimizer.batch_size = 300;
    c.schedule.end_fraction = 0.1;
    let e = runner.run_one(&c).unwrap_err();
    assert_eq!(field_of(&e), "epochs", "{e}");
}

#[test]
fn a_run_records_its_data_files_and_refuses_other_ones() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data/cifar-10-batches-bin");
    std::fs::create_dir_all(&data).unwrap();
    let batch = |label: u8| -> Vec<u8> {
        (0..20)
            .flat_map(|i| {
                std::iter::once((label + i) % 10)
                    .chain((0..3072).map(move |k| ((k + i as usize) % 256) as u8))
            })
            .collect()
    };
    for i in 1..=5 {
        std::fs::write(data.join(format!("data_batch_{i}.bin")), batch(i)).unwrap();
    }
    std::fs::write(data.join("test_batch.bin"), batch(0)).unwrap();
    let mut c = synthetic(MethodName::Static, 0.9, 2);
    c.dataset.name = burn_sparse_cli::config::DatasetName::Cifar10;
    c.dataset.dir = dir.path().join("data").display().to_string();
    c.optimizer.batch_size = 25;
    // Kill the run after its first epoch's checkpoint, then swap a file's content.
    let runs = dir.path().join("runs");
    let cfg = write_config(dir.path(), &c);
    let out = Command::new(BIN)
        .args([
            "run",
            cfg.to_str().unwrap(),
            "--runs",
            runs.to_str().unwrap(),
            "--no-progress",
        ])
        .env(burn_sparse::mask::checkpoint::ABORT_AT_COMMIT_ENV, "5")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the run was not killed");
    let run = std::fs::read_dir(&runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let recorded: Vec<burn_sparse::data::DataFile> =
        serde_json::from_slice(&std::fs::read(run.join("data.json")).unwrap()).unwrap();
    assert_eq!(recorded.len(), 6);
    for f in &recorded {
        let bytes = std::fs::read(data.join(&f.name)).unwrap();
        assert_eq!(
            f.sha256,
            burn_sparse::data::fetch::sha256_hex(&bytes),
            "{}",
            f.name
        );
    }
    let mut changed = batch(3);
    changed[1] ^= 1;
    std::fs::write(data.join("data_batch_3.bin"), changed).unwrap();
    let out = run_bin(&[
        "run",
        cfg.to_str().unwrap(),
        "--runs",
        runs.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("data.json") && err.contains("data_batch_3.bin"),
        "{err}"
    );
    // The original files resume the run.
    std::fs::write(data.join("data_batch_3.bin"), batch(3)).unwrap();
    let out = run_bin(&[
        "run",
        cfg.to_str().unwrap(),
        "--runs",
        runs.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_command_line_refuses_what_it_would_ignore() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &synthetic(MethodName::Rigl, 0.9, 1));
    let cfg = cfg.to_str().unwrap();
    for (args, says) in [
        (&["run", cfg, "--epoch", "1"][..], "--epochs"),
        (&["run", cfg, "--method", "rigel"], "rigl"),
        (&["run", cfg, "--method", "rigl,set"], "compare"),
        (&["run", cfg, "--seeds", "1,1"], "twice"),
        (&["run", cfg, "--sparsity", "2"], "outside"),
    ] {
        let out = run_bin(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(
            !err.contains('\u{1b}'),
            "colour codes in captured output: {err:?}"
        );
        assert!(out.stdout.is_empty());
    }
    let out = run_bin(&["run", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(!help.contains('\u{1b}'), "colour codes in piped --help");
    for flag in [
        "--set",
        "--method",
        "--seeds",
        "--runs",
        "--no-progress",
        "--data-dir",
    ] {
        assert!(help.contains(flag), "{flag} not in --help:\n{help}");
    }
}

#[test]
fn a_layer_emptied_by_global_magnitude_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut runner = Runner::new(dir.path());
    runner.progress = false;
    let e = runner
        .run_one(&synthetic(MethodName::Magnitude, 0.9, 1))
        .unwrap_err();
    assert!(matches!(e, Error::Saliency(_)), "{e}");
    assert!(e.to_string().contains("fc2.weight"), "{e}");
    let mut c = synthetic(MethodName::Magnitude, 0.9, 1);
    c.saliency.allow_empty_layers = true;
    let o = runner.run_one(&c).unwrap();
    assert_eq!(o.result.layer_density["fc2.weight"], 0.0);
}

#[test]
fn every_method_runs_with_the_exact_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mut runner = Runner::new(dir.path());
    runner.progress = false;
    // 8x8x1 -> 300 -> 100 -> 4: 19200 + 30000 + 400 prunable weights.
    let prunable = 64 * 300 + 300 * 100 + 100 * 4;
    for m in MethodName::ALL {
        let mut c = synthetic(m, 0.9, 2);
        c.lottery.levels = Some(2);
        c.saliency.rounds = (m == MethodName::Synflow).then_some(5);
        if m == MethodName::Magnitude {
            // Global |w| at init would empty fc2 (its init bound is smaller than fc1's).
            c.distribution = Some(burn_sparse_cli::config::DistributionName::Erk);
        }
        let o = runner.run_one(&c).unwrap_or_else(|e| panic!("{m}: {e}"));
        let r = &o.result;
        assert_eq!(r.prunable, prunable, "{m}");
        if m == MethodName::Dense {
            assert_eq!(r.nnz, prunable);
        } else if m == MethodName::Lottery {
            // Two global levels at 1 - 0.1^(1/2) each, each rounded: within a weight per level.
            assert!((r.nnz as i64 - 4960).abs() <= 2, "{m}: {}", r.nnz);
            let levels = r.levels.as_ref().unwrap();
            assert_eq!(levels.len(), 3);
            assert_eq!(levels[0].density, 1.0);
        } else {
            assert_eq!(r.nnz, 4960, "{m}: exactly round(0.1 n) kept");
        }
        assert!(
            r.test_accuracy > 40.0,
            "{m}: {}% on a 4-class problem",
            r.test_accuracy
        );
        for f in [
            "config.json",
            "result.json",
            "masks.bsp",
            "plots/layer_density.png",
        ] {
            assert!(o.dir.join(f).exists(), "{m}: {f}");
        }
        if m != MethodName::Lottery {
            let rows: Vec<EpochMetrics> =
                serde_json::from_slice(&std::fs::read(o.dir.join("metrics.json")).unwrap())
                    .unwrap();
            assert_eq!(rows.len(), 2, "{m}");
            assert!(
                !o.dir.join("checkpoint").exists(),
                "{m}: checkpoint kept after the end"
            );
        }
        if m.is_dynamic() {
            assert!(o.dir.join("updates.csv").exists(), "{m}");
            assert!(o.dir.join("plots/churn.png").exists(), "{m}");
        }
        // A finished run is not run again.
        let again = runner.run_one(&c).unwrap();
        assert!(again.already_done, "{m}");
        assert_eq!(again.result, o.result);
    }
}

#[test]
fn n_by_m_runs_keep_their_structure_on_both_compute_paths() {
    // 2:4 with RigL (masked and on sparse layers), SNIP, GMP and the lottery (3 levels), and
    // 2x2 blocks with static, SET and RigL: exactly half (a quarter) of the 64*300 + 300*100 +
    // 100*4 weights, in the structure.
    use burn_sparse::mask::{Structure, has_structure};
    use burn_sparse_cli::config::ComputeName;
    let dir = tempfile::tempdir().unwrap();
    let mut runner = Runner::new(dir.path());
    runner.progress = false;
    let s24 = Structure::NByM { n: 2, m: 4 };
    let block = Structure::Block { rows: 2, cols: 2 };
    for (m, st, compute, sparsity) in [
        (MethodName::Rigl, s24, ComputeName::Masked, 0.5),
        (MethodName::Rigl, s24, ComputeName::Sparse, 0.5),
        (MethodName::Snip, s24, ComputeName::Masked, 0.5),
        (MethodName::Gmp, s24, ComputeName::Masked, 0.5),
        (MethodName::Lottery, s24, ComputeName::Masked, 0.5),
        (MethodName::Static, block, ComputeName::Masked, 0.75),
        (MethodName::Set, block, ComputeName::Masked, 0.75),
        (MethodName::Rigl, block, ComputeName::Masked, 0.75),
    ] {
        let mut c = synthetic(m, sparsity, 2);
        c.structure = st;
        c.compute = compute;
        if m == MethodName::Lottery {
            c.epochs = 1;
            c.lottery.levels = Some(3);
        }
        if st == block {
            c.distribution = Some(burn_sparse_cli::config::DistributionName::Uniform);
        }
        let o = runner
            .run_one(&c)
            .unwrap_or_else(|e| panic!("{m} {st:?} {compute:?}: {e}"));
        let prunable = 64 * 300 + 300 * 100 + 100 * 4;
        let want = if st == s24 {
            prunable / 2
        } else {
            prunable / 4
        };
        assert_eq!(o.result.nnz, want, "{m} {st:?} {compute:?}");
        // In the runs' turn at the device RNG, so this draw cannot land inside another run.
        let model = burn_sparse_cli::run::seeded(&burn::tensor::Device::default(), None, |d| {
            burn_sparse::models::LeNet300Config::new()
                .with_inputs(64)
                .with_classes(4)
                .init(d)
        });
        let masks = burn_sparse::lottery::load_masks(&model, &o.dir.join("masks.bsp")).unwrap();
        for l in masks.layers() {
            assert!(
                has_structure(st, l.param(), l.bits()).unwrap(),
                "{m} {st:?} {compute:?}: {}",
                l.param().path
            );
        }
    }
}

#[test]
fn lottery_retrain_choices_run_with_the_same_counts() {
    use burn_sparse_cli::config::RetrainName;
    let dir = tempfile::tempdir().unwrap();
    let mut runner = Runner::new(dir.path());
    runner.progress = false;
    let mut results = Vec::new();
    for (retrain, lr) in [
        (RetrainName::WeightRewinding, None),
        (RetrainName::LrRewinding, None),
        (RetrainName::FineTuning, Some(0.01)),
    ] {
        let mut c = synthetic(MethodName::Lottery, 0.6, 1);
        c.lottery.levels = Some(2);
        c.lottery.retrain = retrain;
        c.lottery.fine_tune_lr = lr;
        if retrain == RetrainName::WeightRewinding {
            assert!(
                !c.to_json().contains("retrain"),
                "the default stays out of the hash"
            );
        }
        let o = runner
            .run_one(&c)
            .unwrap_or_else(|e| panic!("{retrain:?}: {e}"));
        results.push((o.dir.clone(), o.result));
    }
    let levels = |r: &burn_sparse_cli::run::RunResult| {
        r.levels
            .as_ref()
            .unwrap()
            .iter()
            .map(|l| l.density)
            .collect::<Vec<f64>>()
    };
    // Per-layer rates (LTH's 0.2, 0.1 for the output), 2 levels: fc1 19200 -> 15360 -> 12288,
    // fc2 30000 -> 24000 -> 19200, fc3 400 -> 360 -> 324: 31812 of 49600 kept, sparsity
    // 0.3586, which the config must state.
    let mut c = synthetic(MethodName::Lottery, 0.5, 1);
    c.lottery.levels = Some(2);
    c.lottery.layer_rates = Some(burn_sparse_cli::config::LayerRates {
        default: 0.2,
        overrides: [("fc3.weight".to_string(), 0.1)].into_iter().collect(),
    });
    let e = runner.run_one(&c).unwrap_err();
    assert_eq!(field_of(&e), "sparsity", "{e}");
    assert!(e.to_string().contains("set sparsity = 0.3586"), "{e}");
    let mut typo = c.clone();
    typo.lottery.layer_rates.as_mut().unwrap().overrides =
        [("fc9.weight".to_string(), 0.1)].into_iter().collect();
    let e = runner.run_one(&typo).unwrap_err();
    assert_eq!(field_of(&e), "lottery.layer_rates", "{e}");
    c.sparsity = 0.3586;
    let r = runner.run_one(&c).unwrap().result;
    assert_eq!(r.nnz, 31812);
    assert_eq!(r.layer_density["fc3.weight"], 324.0 / 400.0);
    // Linear mode connectivity of the last level, on request.
    let mut c = synthetic(MethodName::Lottery, 0.6, 1);
    c.lottery.levels = Some(2);
    c.lottery.lmc = Some(burn_sparse_cli::config::LmcConfig {
        level: 2,
        points: 3,
        seeds: [1, 2],
    });
    let o = runner.run_one(&c).unwrap();
    let lmc: burn_sparse::lottery::LmcReport =
        serde_json::from_slice(&std::fs::read(o.dir.join("lmc.json")).unwrap()).unwrap();
    assert_eq!(lmc.errors.len(), 3);
    assert_eq!(o.result.instability, Some(lmc.instability));
    for (d, r) in &results[1..] {
        assert_ne!(d, &results[0].0, "a retrain choice is its own run");
        assert_eq!(r.nnz, results[0].1.nnz);
        assert_eq!(levels(r), levels(&results[0].1));
    }
}

/// `compute = "sparse"`: every fixed-nnz method trains LeNet-300-100 on truly sparse layers
/// from the masked path's initial mask, with the same exact per-layer counts and update
/// schedule; a fixed mask stays exactly the masked run's mask; the final `model.bpk` is a dense
/// LeNet-300-100 whose non-zeros lie inside `masks.bsp`; a masked config's hash is unchanged.
/// burn's device RNG is process-wide and burn draws a parameter at its first use, after the
/// model is built: two runs on two threads of one process must take turns at it, or their draws
/// interleave. (Seen once before the runs held their turn over the whole run: a full `cargo test
/// --workspace` gave `sparse_compute_trains_every_fixed_nnz_method`'s masked and sparse SNIP
/// runs, which start from the same seed, different per-layer counts.)
#[test]
fn concurrent_runs_give_what_each_gives_alone() {
    let configs: Vec<ExperimentConfig> = [(MethodName::Snip, 2), (MethodName::Rigl, 3)]
        .into_iter()
        .map(|(m, seed)| {
            let mut c = synthetic(m, 0.9, 1);
            c.seeds = vec![seed];
            c
        })
        .collect();
    let run = |c: &ExperimentConfig| {
        let dir = tempfile::tempdir().unwrap();
        let mut runner = Runner::new(dir.path());
        runner.progress = false;
        let o = runner.run_one(c).unwrap();
        let masks = std::fs::read(o.dir.join("masks.bsp")).unwrap();
        (metrics_without_time(&o.dir), masks, o.result.layer_density)
    };
    let alone: Vec<_> = configs.iter().map(run).collect();
    for _ in 0..2 {
        let start = std::sync::Barrier::new(configs.len());
        let together: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = configs
                .iter()
                .map(|c| {
                    let start = &start;
                    s.spawn(move || {
                        start.wait();
                        run(c)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for ((c, a), t) in configs.iter().zip(&alone).zip(&together) {
            assert_eq!(a.2, t.2, "{}: per-layer counts", c.method);
            assert!(a.1 == t.1, "{}: the masks differ", c.method);
            assert_eq!(a.0, t.0, "{}: the metrics differ", c.method);
        }
    }
}

#[test]
fn sparse_compute_trains_every_fixed_nnz_method() {
    use burn::module::Module;
    use burn_sparse_cli::config::ComputeName;
    let dir = tempfile::tempdir().unwrap();
    let mut runner = Runner::new(dir.path());
    runner.progress = false;
    let d = burn::tensor::Device::default();
    for m in [
        MethodName::Static,
        MethodName::Set,
        MethodName::Rigl,
        MethodName::Magnitude,
        MethodName::Random,
        MethodName::Snip,
        MethodName::Grasp,
        MethodName::Synflow,
        MethodName::Lottery,
    ] {
        let mut c = synthetic(m, 0.9, 2);
        c.saliency.rounds = (m == MethodName::Synflow).then_some(5);
        c.lottery.levels = Some(2);
        if m == MethodName::Magnitude {
            c.distribution = Some(burn_sparse_cli::config::DistributionName::Erk);
        }
        assert!(
            !c.to_json().contains("compute"),
            "masked is left out of the hash"
        );
        let masked = runner.run_one(&c).unwrap_or_else(|e| panic!("{m}: {e}"));
        c.compute = ComputeName::Sparse;
        let sparse = runner
            .run_one(&c)
            .unwrap_or_else(|e| panic!("{m} sparse: {e}"));
        assert_ne!(masked.dir, sparse.dir, "{m}: a run directory of its own");
        let (a, b) = (&masked.result, &sparse.result);
        assert!(b.test_accuracy > 40.0, "{m}: {}%", b.test_accuracy);
        if m == MethodName::Lottery {
            // IMP prunes the trained weights globally: the same count at every level (the
            // per-layer split follows weights that differ by float rounding).
            assert_eq!(a.nnz, b.nnz, "{m}");
            let (la, lb) = (a.levels.as_ref().unwrap(), b.levels.as_ref().unwrap());
            assert_eq!(la.len(), 3);
            for (x, y) in la.iter().zip(lb) {
                assert_eq!(x.density, y.density, "{m}: level {}", x.level);
                assert!(y.ticket > 40.0, "{m}: level {}: {}%", y.level, y.ticket);
            }
            continue;
        }
        assert_eq!(b.nnz, 4960, "{m}: exactly round(0.1 n) kept");
        assert_eq!(a.layer_density, b.layer_density, "{m}: per-layer counts");
        let (ma, mb) = (
            metrics_without_time(&masked.dir),
            metrics_without_time(&sparse.dir),
        );
        // Same initial weights and data order; only the float summation order differs.
        let rel = (ma[0].train_loss - mb[0].train_loss).abs() / ma[0].train_loss;
        assert!(
            rel < 1e-3,
            "{m}: epoch-1 loss {} vs {}",
            ma[0].train_loss,
            mb[0].train_loss
        );
        for (x, y) in ma.iter().zip(&mb) {
            assert_eq!(x.updates, y.updates, "{m}: updates in epoch {}", x.epoch);
            assert_eq!(x.step, y.step, "{m}");
        }
        let masks =
            |o: &burn_sparse_cli::run::Outcome| std::fs::read(o.dir.join("masks.bsp")).unwrap();
        if !m.is_dynamic() {
            assert!(
                masks(&masked) == masks(&sparse),
                "{m}: the fixed mask moved"
            );
        }
        // The sparse run's final model is a dense LeNet-300-100 with zeros off its mask.
        let template = burn_sparse_cli::run::seeded(&d, None, |d| {
            burn_sparse::models::LeNet300Config::new()
                .with_inputs(64)
                .with_classes(4)
                .init(d)
        });
        let model =
            burn_sparse::mask::checkpoint::load_module(template, &sparse.dir.join("model.bpk"))
                .unwrap();
        let set = burn_sparse::lottery::load_masks(&model, &sparse.dir.join("masks.bsp")).unwrap();
        assert_eq!(set.nnz(), 4960, "{m}");
        set.ensure_masked(&model).unwrap();
        assert_eq!(
            model.num_params(),
            64 * 300 + 300 + 300 * 100 + 100 + 100 * 4 + 4
        );
    }
}

/// Shifted training images: a run of its own (another hash), deterministic across two run
/// directories, and different from the unaugmented run.
#[test]
fn augmented_runs_are_deterministic() {
    let mut c = synthetic(MethodName::Rigl, 0.9, 2);
    c.dataset.augment = burn_sparse::data::Augmentation::shift(1);
    let plain = synthetic(MethodName::Rigl, 0.9, 2);
    assert_ne!(c.run_name(), plain.run_name());
    let mut results = Vec::new();
    for cfg in [&c, &c, &plain] {
        let dir = tempfile::tempdir().unwrap();
        let mut runner = Runner::new(dir.path());
        runner.progress = false;
        let o = runner.run_one(cfg).unwrap();
        assert_eq!(o.result.nnz, 4960);
        results.push((metrics_without_time(&o.dir), o.result.test_accuracy));
    }
    assert_eq!(results[0], results[1], "same seed, same augmented run");
    assert_ne!(results[0].0, results[2].0, "the shifts change the training");
}

#[test]
fn a_killed_run_resumes_to_the_same_result() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = synthetic(MethodName::Rigl, 0.9, 12);
    c.dataset.train_limit = Some(6000);
    c.schedule.delta_t = 25;
    let cfg = write_config(tmp.path(), &c);
    let cfg_s = cfg.to_str().unwrap();
    let name = c.run_name();

    // The reference: uninterrupted.
    let ref_runs = tmp.path().join("ref");
    let out = run_bin(&["run", cfg_s, "--runs", ref_runs.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ref_dir = ref_runs.join(&name);

    // Killed (SIGKILL) once two epochs are checkpointed, then rerun.
    let runs = tmp.path().join("killed");
    let run_dir = runs.join(&name);
    let state = run_dir.join("checkpoint/state.json");
    let mut child = Command::new(BIN)
        .args(["run", cfg_s, "--runs", runs.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    loop {
        let done = std::fs::read(&state)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["epochs_done"].as_u64())
            .unwrap_or(0);
        if done >= 2 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !run_dir.join("result.json").exists(),
        "the kill landed after the run finished; make the run longer"
    );
    let out = run_bin(&["run", cfg_s, "--runs", runs.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("resuming after epoch"), "{stdout}");

    assert_eq!(
        metrics_without_time(&run_dir),
        metrics_without_time(&ref_dir)
    );
    assert_eq!(
        std::fs::read(run_dir.join("masks.bsp")).unwrap(),
        std::fs::read(ref_dir.join("masks.bsp")).unwrap()
    );
    let r: RunResult =
        serde_json::from_slice(&std::fs::read(run_dir.join("result.json")).unwrap()).unwrap();
    let q: RunResult =
        serde_json::from_slice(&std::fs::read(ref_dir.join("result.json")).unwrap()).unwrap();
    assert_eq!(r.test_accuracy, q.test_accuracy);
    assert_eq!(r.curve, q.curve);

    // Rerunning a finished run does nothing.
    let before = std::fs::metadata(run_dir.join("result.json"))
        .unwrap()
        .modified()
        .unwrap();
    let out = run_bin(&["run", cfg_s, "--runs", runs.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("already finished"));
    let after = std::fs::metadata(run_dir.join("result.json"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after);
}

fn decode_png(path: &Path) -> (u32, u32) {
    let f = std::fs::File::open(path).unwrap();
    let mut r = png::Decoder::new(std::io::BufReader::new(f))
        .read_info()
        .unwrap();
    let mut buf = vec![0; r.output_buffer_size()];
    let info = r.next_frame(&mut buf).unwrap();
    // Not a blank image: some pixel differs from the first.
    let px = &buf[..info.buffer_size()];
    assert!(
        px.chunks(3).any(|p| p != &px[..3]),
        "{} is blank",
        path.display()
    );
    (info.width, info.height)
}

#[test]
fn compare_writes_the_table_and_plots() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("out");
    let md = tmp.path().join("docs/RESULTS.md");
    let readme = tmp.path().join("README.md");
    std::fs::write(
        &readme,
        "# Project\nbefore\n<!-- results:begin -->\nstale\n<!-- results:end -->\nafter\n",
    )
    .unwrap();
    let sweep = format!(
        "[base]\nepochs = 2\n[base.dataset]\nname = \"synthetic\"\n[base.optimizer]\nbatch_size = 50\n\
         [base.schedule]\ndelta_t = 4\n\
         [grid]\nmethods = [\"dense\", \"rigl\"]\nsparsities = [0.9]\nseeds = [0]\n\
         [output]\ndir = \"{}\"\nmarkdown = \"{}\"\ntitle = \"Toy\"\nreadme = \"{}\"\n",
        out_dir.display(),
        md.display(),
        readme.display()
    );
    let sweep_path = tmp.path().join("sweep.toml");
    std::fs::write(&sweep_path, sweep).unwrap();
    let runs = tmp.path().join("runs");
    let args = [
        "compare",
        sweep_path.to_str().unwrap(),
        "--runs",
        runs.to_str().unwrap(),
    ];
    let out = run_bin(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let table = std::fs::read_to_string(&md).unwrap();
    assert!(table.starts_with("# Toy"), "{table}");
    assert!(table.contains("| method | 90.0% sparse |"), "{table}");
    assert!(
        table.contains("| dense |") && table.contains("| rigl |"),
        "{table}"
    );
    assert!(table.contains("burn-sparse compare"), "{table}");
    assert!(
        table.contains("## FLOPs") && table.contains("| dense | 0.0% | 1.000 | 1.000 |"),
        "{table}"
    );
    // The report's image links resolve from the report's directory.
    for line in table.lines().filter(|l| l.starts_with("![")) {
        let link = &line[line.find("](").unwrap() + 2..line.len() - 1];
        assert!(md.parent().unwrap().join(link).exists(), "{link}");
    }
    let csv = std::fs::read_to_string(out_dir.join("results.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 3, "{csv}");
    let results: Vec<RunResult> =
        serde_json::from_slice(&std::fs::read(out_dir.join("results.json")).unwrap()).unwrap();
    assert_eq!(results.len(), 2);
    // Every number of the CSV and the table is the one its run directory recorded.
    for row in &rows[1..] {
        let cols: Vec<&str> = row.split(',').collect();
        assert_eq!(cols.len(), 8, "{row}");
        let run: RunResult =
            serde_json::from_slice(&std::fs::read(runs.join(cols[7]).join("result.json")).unwrap())
                .unwrap();
        assert_eq!(cols[0], run.method.to_string(), "{row}");
        assert_eq!(cols[3].parse::<f64>().unwrap(), run.test_accuracy, "{row}");
        assert_eq!(cols[4].parse::<f64>().unwrap(), run.density, "{row}");
        assert_eq!(cols[5].parse::<usize>().unwrap(), run.nnz, "{row}");
        assert!(
            results
                .iter()
                .any(|r| r.name == run.name && r.test_accuracy == run.test_accuracy)
        );
        // One seed: the cell is the run's accuracy with a zero spread.
        let cell = format!("| {} | {:.2} ± 0.00 |", run.method, run.test_accuracy);
        assert!(table.contains(&cell), "{cell} not in\n{table}");
    }
    for stem in [
        "accuracy_vs_sparsity",
        "accuracy_over_training",
        "layer_density",
        "churn",
    ] {
        let png = out_dir.join("plots").join(format!("{stem}.png"));
        assert_eq!(decode_png(&png), (900, 560), "{stem}");
        let svg = std::fs::read_to_string(png.with_extension("svg")).unwrap();
        assert!(
            svg.contains("<svg") && svg.trim_end().ends_with("</svg>"),
            "{stem}"
        );
    }
    // The README got the table between its markers, and kept the rest.
    let r = std::fs::read_to_string(&readme).unwrap();
    assert!(
        r.starts_with("# Project\nbefore\n<!-- results:begin -->"),
        "{r}"
    );
    assert!(r.ends_with("<!-- results:end -->\nafter\n"), "{r}");
    assert!(!r.contains("stale") && r.contains("| rigl |"), "{r}");
    assert!(r.contains("(docs/RESULTS.md)"), "{r}");
    // A second compare runs nothing.
    let out = run_bin(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("(already finished)").count(), 2, "{stdout}");
    // --method, --sparsity and --seeds set the grid (they used to be ignored).
    let out2 = tmp.path().join("out2");
    let dir2 = format!("output.dir={}", out2.display());
    let out = run_bin(&[
        "compare",
        sweep_path.to_str().unwrap(),
        "--runs",
        runs.to_str().unwrap(),
        "--method",
        "rigl",
        "--sparsity",
        "0.8",
        "--seeds",
        "1",
        "--set",
        &dir2,
        "--set",
        "output.markdown=null",
        "--set",
        "output.readme=null",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<RunResult> =
        serde_json::from_slice(&std::fs::read(out2.join("results.json")).unwrap()).unwrap();
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0].method, MethodName::Rigl);
    assert!(
        (results[0].sparsity - 0.8).abs() < 1e-12,
        "{}",
        results[0].sparsity
    );
    assert_eq!(results[0].seed, 1);
    // A repeated seed is refused before anything runs.
    let out = run_bin(&["compare", sweep_path.to_str().unwrap(), "--seeds", "2,2"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("grid.seeds"));
}

#[test]
fn runs_record_training_and_inference_flops() {
    // Fully connected, so each kept weight costs one multiply-add per example forward:
    // dense 1 and 1; static 90% 0.1 and 0.1; RigL pays 2 f_S + f_D on its U update steps:
    // (3 f_S (T - U) + U (2 f_S + f_D)) / (3 f_D T); GMP lies between its final density and
    // dense; the lottery sums its levels (level 0 dense, then each level's density).
    let dir = tempfile::tempdir().unwrap();
    let mut runner = Runner::new(dir.path());
    runner.progress = false;
    let run = |r: &mut Runner, m: MethodName, s: f64| {
        let mut c = synthetic(m, s, 2);
        c.lottery.levels = Some(2);
        r.run_one(&c).unwrap().result
    };
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
    let d = run(&mut runner, MethodName::Dense, 0.0);
    assert_eq!((d.train_flops, d.inference_flops), (Some(1.0), Some(1.0)));
    let st = run(&mut runner, MethodName::Static, 0.9);
    assert!(close(st.train_flops.unwrap(), 0.1) && close(st.inference_flops.unwrap(), 0.1));
    let r = run(&mut runner, MethodName::Rigl, 0.9);
    let t = 2 * 12u64; // 600 synthetic images, batch 50, 2 epochs
    let u = (1..=t).filter(|s| s % 4 == 0 && *s <= t * 3 / 4).count() as f64;
    let t = t as f64;
    let want = (3.0 * 0.1 * (t - u) + u * (2.0 * 0.1 + 1.0)) / (3.0 * t);
    assert!(
        close(r.train_flops.unwrap(), want),
        "{:?} vs {want}",
        r.train_flops
    );
    let g = run(&mut runner, MethodName::Gmp, 0.9);
    let gt = g.train_flops.unwrap();
    assert!(
        gt > 0.1 && gt < 1.0 && close(g.inference_flops.unwrap(), 0.1),
        "{gt}"
    );
    let l = run(&mut runner, MethodName::Lottery, 0.6);
    let levels = l.levels.as_ref().unwrap();
    let sum: f64 = levels.iter().map(|r| r.density).sum();
    assert!(
        close(l.train_flops.unwrap(), sum),
        "{:?} vs {sum}",
        l.train_flops
    );
    assert!(close(
        l.inference_flops.unwrap(),
        levels.last().unwrap().density
    ));
}

#[test]
fn filters_and_schedule_options_reach_the_run() {
    // fc1 kept dense (first_dense): 30400 prunable weights, round(0.1 * 30400) kept, and the
    // dense fc1 counted in the FLOPs; RigL with a linear drop schedule, Normal grow init and
    // skipped weight updates runs to the same counts.
    use burn_sparse_cli::config::DropKind;
    let dir = tempfile::tempdir().unwrap();
    let mut runner = Runner::new(dir.path());
    runner.progress = false;
    let mut c = synthetic(MethodName::Rigl, 0.9, 2);
    c.filter.first_dense = true;
    c.schedule.drop_fraction_kind = Some(DropKind::Linear);
    c.schedule.grow_init_std = Some(0.01);
    c.schedule.skip_weight_update = true;
    let o = runner.run_one(&c).unwrap();
    let report = std::fs::read_to_string(o.dir.join("params.csv")).unwrap();
    assert!(
        report.contains("fc1.weight,64x300,Linear,false,dense: the first prunable layer")
            && report.contains("fc2.weight,300x100,Linear,true,prunable")
            && report.contains("fc1.bias,300,Linear,false,dense: rank below 2"),
        "{report}"
    );
    let r = o.result;
    assert_eq!(r.prunable, 30400);
    assert_eq!(r.nnz, 3040);
    assert!(!r.layer_density.contains_key("fc1.weight"));
    let want = (19200.0 + 3040.0) / 49600.0;
    assert!(
        (r.inference_flops.unwrap() - want).abs() < 1e-12,
        "{:?}",
        r.inference_flops
    );
    // The same config with the default options is another run.
    let plain = runner
        .run_one(&synthetic(MethodName::Rigl, 0.9, 2))
        .unwrap();
    assert_ne!(plain.result.name, r.name);
}

#[test]
fn config_prints_every_field() {
    // As printed it is the default config; with every line uncommented, every commented field
    // is one the config accepts (deny_unknown_fields), and none is left out.
    let text = ExperimentConfig::annotated_default_toml();
    let parsed: ExperimentConfig = toml::from_str(&text).unwrap();
    assert_eq!(parsed, ExperimentConfig::default());
    let all: String = text
        .lines()
        .skip(1)
        .map(|l| l.strip_prefix("# ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let full: ExperimentConfig = toml::from_str(&all).unwrap_or_else(|e| panic!("{e}\n{all}"));
    for key in [
        "distribution",
        "compute",
        "sparse_init",
        "train_limit",
        "max_shift",
        "drop_fraction",
        "begin_fraction",
        "initial_sparsity",
        "grad_accumulation",
        "drop_fraction_kind",
        "drop_fraction_decay",
        "grow_init_std",
        "skip_weight_update",
        "rounds",
        "levels",
        "retrain",
        "fine_tune_lr",
        "[structure]",
        "[filter]",
        "first_dense",
        "exclude_regex",
    ] {
        assert!(text.contains(key), "{key} missing:\n{text}");
    }
    assert!(full.sparse_init && full.filter.first_dense && full.lottery.levels == Some(10));
}

#[test]
fn resnet20_and_vit_tiny_train_sparse() {
    // The zoo's residual net and transformer through the CLI on the synthetic 8x8 data: RigL
    // and GMP at 80% keep round(0.2 n) of the default prunable set (no batch norm, no
    // position embedding), with FLOPs recorded.
    use burn_sparse_cli::config::ModelName;
    let dir = tempfile::tempdir().unwrap();
    let mut runner = Runner::new(dir.path());
    runner.progress = false;
    for model in [ModelName::Resnet20, ModelName::VitTiny] {
        for m in [MethodName::Rigl, MethodName::Gmp] {
            let mut c = synthetic(m, 0.8, 1);
            c.model = model;
            c.distribution = Some(burn_sparse_cli::config::DistributionName::Uniform);
            let o = runner
                .run_one(&c)
                .unwrap_or_else(|e| panic!("{model:?} {m}: {e}"));
            let r = &o.result;
            assert!(
                r.layer_density
                    .keys()
                    .all(|p| !p.contains("bn") && !p.contains("position"))
            );
            let layers = if model == ModelName::Resnet20 { 22 } else { 14 };
            assert_eq!(r.layer_density.len(), layers, "{model:?} {m}");
            assert!(
                (r.density - 0.2).abs() < 0.01,
                "{model:?} {m}: {}",
                r.density
            );
            assert!(r.train_flops.unwrap() < 1.0 && r.inference_flops.unwrap() < 1.0);
        }
    }
}

#[test]
fn per_layer_sparsities_reach_the_run() {
    // fc1 90%, fc2 80%, fc3 50%: 1920 + 6000 + 200 = 8120 of 49600 kept, sparsity 0.8363,
    // which the config must state; then static and RigL keep exactly those counts.
    let dir = tempfile::tempdir().unwrap();
    let mut runner = Runner::new(dir.path());
    runner.progress = false;
    let mut c = synthetic(MethodName::Static, 0.5, 1);
    c.layer_sparsity = [
        ("fc1.weight", 0.9),
        ("fc2.weight", 0.8),
        ("fc3.weight", 0.5),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let e = runner.run_one(&c).unwrap_err();
    assert_eq!(field_of(&e), "sparsity", "{e}");
    assert!(e.to_string().contains("set sparsity = 0.8363"), "{e}");
    c.sparsity = 0.8363;
    for m in [MethodName::Static, MethodName::Rigl] {
        c.method = m;
        let r = runner.run_one(&c).unwrap().result;
        assert_eq!(r.nnz, 8120, "{m}");
        assert_eq!(r.layer_density["fc1.weight"], 0.1, "{m}");
        assert_eq!(r.layer_density["fc3.weight"], 0.5, "{m}");
    }
}

#[test]
fn first_and_last_layer_sparsity_pin_their_layers() {
    // RigL's first_layer_sparsity / last_layer_sparsity: the pinned layers get their own
    // sparsity and leave the distribution's sums, the others reach `sparsity` among themselves.
    // Synthetic LeNet-300-100: fc1 64x300 (19200), fc2 300x100 (30000), fc3 100x4 (400).
    use burn_sparse_cli::config::DistributionName;
    let dir = tempfile::tempdir().unwrap();
    let mut runner = Runner::new(dir.path());
    runner.progress = false;
    let counts = |r: &RunResult| -> Vec<usize> {
        ["fc1.weight", "fc2.weight", "fc3.weight"]
            .iter()
            .zip([19200.0, 30000.0, 400.0])
            .map(|(p, n)| (r.layer_density[*p] * n).round() as usize)
            .collect()
    };
    // RigL (ERK over fc2 alone: 3000 of 30000), fc1 at 50%, fc3 dense but masked.
    let mut c = synthetic(MethodName::Rigl, 0.9, 2);
    c.first_layer_sparsity = Some(0.5);
    c.last_layer_sparsity = Some(0.0);
    let r = runner.run_one(&c).unwrap().result;
    assert_eq!(counts(&r), vec![9600, 3000, 400]);
    assert_eq!(r.nnz, 13000);
    // GMP reaches the pin on the same schedule: the final step prunes fc1 to 50%, fc2 and fc3
    // uniformly to 90% of their 30400 (3000 and 40).
    let mut c = synthetic(MethodName::Gmp, 0.9, 2);
    c.first_layer_sparsity = Some(0.5);
    let r = runner.run_one(&c).unwrap().result;
    assert_eq!(counts(&r), vec![9600, 3000, 40]);
    // A saliency mask with a per-layer distribution.
    let mut c = synthetic(MethodName::Snip, 0.9, 1);
    c.distribution = Some(DistributionName::Uniform);
    c.last_layer_sparsity = Some(0.2);
    let r = runner.run_one(&c).unwrap().result;
    assert_eq!(counts(&r), vec![1920, 3000, 320]);
}
