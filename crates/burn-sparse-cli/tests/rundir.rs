//! Runs you can trust: a kill at every commit point of a run resumes to the uninterrupted
//! result, a corrupt or edited checkpoint is an error naming the file, one process per run
//! directory, and a closed stdout never stops a run. All on the real binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use burn_sparse::mask::checkpoint::ABORT_AT_COMMIT_ENV;
use burn_sparse_cli::config::{ExperimentConfig, MethodName};
use burn_sparse_cli::run::RunResult;

mod common;
use common::{BIN, metrics_without_time, run_bin, synthetic, write_config};

fn result_without_time(dir: &Path) -> RunResult {
    let mut r: RunResult =
        serde_json::from_slice(&std::fs::read(dir.join("result.json")).unwrap()).unwrap();
    r.seconds = 0.0;
    r
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The files a finished run of each kind leaves that must equal the uninterrupted run's byte
/// for byte (`result.json` and `metrics.json` are compared without wall time).
/// (`model.bpk` records its parameter ids, which are new in every process: its weights are
/// compared instead.)
const DST_FILES: &[&str] = &["updates.json", "updates.csv", "masks.bsp"];
const LOTTERY_FILES: &[&str] = &["levels.json", "levels.csv", "masks.bsp"];

/// Every float parameter of the run's final LeNet-300-100 (the synthetic data: 64 inputs, 4
/// classes), bit patterns in visit order.
fn final_weights(dir: &Path) -> Vec<Vec<u32>> {
    use burn::module::{Module, ModuleVisitor, Param};
    use burn::tensor::Tensor;
    struct Collect(Vec<Vec<u32>>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            let v = burn_sparse::mask::to_host(p.val()).unwrap();
            self.0.push(v.iter().map(|x| x.to_bits()).collect());
        }
    }
    let d = burn::tensor::Device::default();
    let template = burn_sparse::models::LeNet300Config::new()
        .with_inputs(64)
        .with_classes(4)
        .init(&d);
    let m = burn_sparse::mask::checkpoint::load_module(template, &dir.join("model.bpk")).unwrap();
    let mut c = Collect(Vec::new());
    m.visit(&mut c);
    c.0
}

/// Everything a finished run leaves, compared with the uninterrupted run: the files above,
/// metrics without wall time, the result; no checkpoint and no temporary file left.
fn assert_same_finished_run(got: &Path, want: &Path, same: &[&str], what: &str) {
    if want.join("metrics.json").exists() {
        assert_eq!(
            metrics_without_time(got),
            metrics_without_time(want),
            "{what}: metrics"
        );
        let n = |d: &Path| {
            std::fs::read_to_string(d.join("metrics.csv"))
                .unwrap()
                .lines()
                .count()
        };
        assert_eq!(n(got), n(want), "{what}: metrics.csv rows");
    }
    for f in same {
        assert!(
            std::fs::read(got.join(f)).unwrap() == std::fs::read(want.join(f)).unwrap(),
            "{what}: {f} differs"
        );
    }
    assert!(
        final_weights(got) == final_weights(want),
        "{what}: the final weights differ"
    );
    assert_eq!(
        result_without_time(got),
        result_without_time(want),
        "{what}: result.json"
    );
    assert!(!got.join("checkpoint").exists(), "{what}: checkpoint left");
    let names: Vec<String> = files(got)
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().to_string()))
        .collect();
    assert!(
        !names.iter().any(|n| n.contains(".tmp")),
        "{what}: temporary files left: {names:?}"
    );
}

fn run_in(cfg: &str, runs: &Path) -> std::process::Output {
    run_bin(&["run", cfg, "--runs", runs.to_str().unwrap()])
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Flip one bit in the middle of `path`.
fn flip_bit(path: &Path) {
    let mut b = std::fs::read(path).unwrap();
    let i = b.len() / 2;
    b[i] ^= 0x10;
    std::fs::write(path, b).unwrap();
}

/// Copy a run directory tree.
fn copy_tree(from: &Path, to: &Path) {
    for f in files(from) {
        let rel = f.strip_prefix(from).unwrap();
        let dest = to.join(rel);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&f, &dest).unwrap();
    }
}

/// Resuming from a checkpoint that was tampered with fails, naming the file, and loses nothing.
fn assert_tampering_is_caught(cfg: &str, runs: &Path, name: &str, scratch: &Path) {
    let ck = runs.join(name).join("checkpoint");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ck.join("state.json")).unwrap()).unwrap();
    let model = state["model_file"].as_str().unwrap().to_string();
    let optim = state["optim_file"].as_str().unwrap().to_string();
    type Tamper = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Tamper, String)> = vec![
        (
            "one bit of the model",
            Box::new(move |ck: &Path| flip_bit(&ck.join(&model))),
            state["model_file"].as_str().unwrap().to_string(),
        ),
        (
            "one bit of the optimizer",
            Box::new(move |ck: &Path| flip_bit(&ck.join(&optim))),
            state["optim_file"].as_str().unwrap().to_string(),
        ),
        (
            "epochs_done edited",
            Box::new(|ck: &Path| {
                let p = ck.join("state.json");
                let s = std::fs::read_to_string(&p).unwrap();
                let done = s.find("\"epochs_done\": ").unwrap() + 15;
                let mut s = s.into_bytes();
                s[done] = if s[done] == b'1' { b'2' } else { b'1' };
                std::fs::write(&p, s).unwrap();
            }),
            "state.json".to_string(),
        ),
        (
            "the optimizer file missing",
            Box::new({
                let optim = state["optim_file"].as_str().unwrap().to_string();
                move |ck: &Path| std::fs::remove_file(ck.join(&optim)).unwrap()
            }),
            state["optim_file"].as_str().unwrap().to_string(),
        ),
    ];
    for (what, tamper, file) in cases {
        let copy = scratch.join("tampered");
        let _ = std::fs::remove_dir_all(&copy);
        copy_tree(runs, &copy);
        let ck = copy.join(name).join("checkpoint");
        tamper(&ck);
        // A killed process's temporary files are garbage the next start removes; everything
        // else must be left as it was.
        let kept = |d: &Path| -> Vec<PathBuf> {
            files(d)
                .into_iter()
                .filter(|p| !p.to_string_lossy().contains(".tmp"))
                .collect()
        };
        let before = kept(&copy);
        let out = run_in(cfg, &copy);
        let e = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{what}: resumed anyway\n{e}");
        assert!(
            e.contains(&file),
            "{what}: the error does not name {file}: {e}"
        );
        assert!(e.contains("start this run over"), "{what}: no way out: {e}");
        assert!(!copy.join(name).join("result.json").exists());
        assert_eq!(
            kept(&copy),
            before,
            "{what}: the failed resume changed files"
        );
    }
}

/// Kill the binary at its first, second, ... commit point (until a run gets past the last), each
/// time resume it, and compare the finished run with the uninterrupted one. Returns how many
/// kills there were, and whether one left a committed checkpoint to tamper with.
fn kill_at_every_commit_point(c: &ExperimentConfig, same: &[&str], tamper: bool) -> (u32, bool) {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), c);
    let cfg = cfg.to_str().unwrap();
    let name = c.run_name();
    let reference = tmp.path().join("ref");
    let out = run_in(cfg, &reference);
    assert!(out.status.success(), "{}", stderr(&out));
    let want = reference.join(&name);

    let mut tampered = false;
    let mut killed = 0;
    for n in 1u32.. {
        assert!(n < 400, "the run never got past commit point {n}");
        let runs = tmp.path().join(format!("k{n}"));
        let out = Command::new(BIN)
            .args(["run", cfg, "--runs", runs.to_str().unwrap()])
            .env(ABORT_AT_COMMIT_ENV, n.to_string())
            .output()
            .unwrap();
        if out.status.success() {
            // Past the last commit point: the run finished undisturbed.
            assert_same_finished_run(&runs.join(&name), &want, same, "undisturbed");
            break;
        }
        killed += 1;
        let ck = runs.join(&name).join("checkpoint/state.json");
        // Finished training is never left without its commit: once the final model is written,
        // a checkpoint or result.json says so (else a rerun would train everything again).
        let dir = runs.join(&name);
        if dir.join("model.bpk").exists() {
            assert!(
                dir.join("result.json").exists() || ck.exists() || dir.join("imp").exists(),
                "killed at commit {n}: the final model has neither a checkpoint nor a result"
            );
        }
        let resumable = ck
            .exists()
            .then(|| {
                let st: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&ck).unwrap()).unwrap();
                st["epochs_done"].as_u64()
            })
            .flatten()
            .filter(|_| !dir.join("result.json").exists());
        if tamper && !tampered && ck.exists() && !runs.join(&name).join("result.json").exists() {
            let st: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&ck).unwrap()).unwrap();
            if st["epochs_done"].as_u64() == Some(1) {
                assert_tampering_is_caught(cfg, &runs, &name, tmp.path());
                tampered = true;
            }
        }
        let out = run_in(cfg, &runs);
        assert!(
            out.status.success(),
            "killed at commit {n}: {}",
            stderr(&out)
        );
        if let Some(done) = resumable {
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                stdout.contains(&format!("resuming after epoch {done}")),
                "killed at commit {n}: did not resume after epoch {done}: {stdout}"
            );
        }
        let what = format!("killed at commit {n}");
        assert_same_finished_run(&runs.join(&name), &want, same, &what);
        std::fs::remove_dir_all(&runs).unwrap();
    }
    (killed, tampered)
}

#[test]
fn a_kill_at_every_commit_point_resumes_to_the_uninterrupted_result() {
    // RigL, 3 epochs: checkpoint + outputs per epoch, the finish and the clean-up.
    let (killed, tampered) =
        kill_at_every_commit_point(&synthetic(MethodName::Rigl, 0.9, 3), DST_FILES, true);
    eprintln!("RigL: killed at {killed} commit points, each resumed to the same result");
    assert!(killed >= 30, "only {killed} commit points");
    assert!(
        tampered,
        "no kill left a committed checkpoint to tamper with"
    );
}

#[test]
fn a_sparse_run_killed_at_every_commit_point_resumes_to_the_uninterrupted_result() {
    // RigL on truly sparse layers, 2 epochs: the checkpoint holds the sparse layers' values and
    // coordinates and the nnz-sized optimizer state.
    let mut c = synthetic(MethodName::Rigl, 0.9, 2);
    c.compute = burn_sparse_cli::config::ComputeName::Sparse;
    let (killed, tampered) = kill_at_every_commit_point(&c, DST_FILES, true);
    eprintln!("sparse RigL: killed at {killed} commit points, each resumed to the same result");
    assert!(killed >= 20, "only {killed} commit points");
    assert!(
        tampered,
        "no kill left a committed checkpoint to tamper with"
    );
}

#[test]
fn a_lottery_run_killed_at_every_commit_point_resumes_to_the_uninterrupted_result() {
    // IMP, 2 levels of 1 epoch each with both baselines: every level's artifacts.
    let mut c = synthetic(MethodName::Lottery, 0.6, 1);
    c.lottery.levels = Some(2);
    c.lottery.baselines = true;
    let (killed, _) = kill_at_every_commit_point(&c, LOTTERY_FILES, false);
    eprintln!("lottery: killed at {killed} commit points, each resumed to the same result");
    assert!(killed >= 15, "only {killed} commit points");
}

#[test]
fn one_process_per_run_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let c = synthetic(MethodName::Static, 0.8, 1);
    let cfg = write_config(tmp.path(), &c);
    let cfg = cfg.to_str().unwrap();
    let runs = tmp.path().join("runs");
    let dir = runs.join(c.run_name());
    std::fs::create_dir_all(&dir).unwrap();
    // This test process holds the lock, as a running `burn-sparse run` would.
    let mut lock = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join(".lock"))
        .unwrap();
    lock.lock().unwrap();
    std::io::Write::write_all(&mut lock, std::process::id().to_string().as_bytes()).unwrap();
    let out = run_in(cfg, &runs);
    assert_eq!(out.status.code(), Some(1));
    let e = stderr(&out);
    assert!(
        e.contains(&format!("in use by PID {}", std::process::id())),
        "{e}"
    );
    assert!(!dir.join("result.json").exists() && !dir.join("config.json").exists());
    drop(lock);
    let out = run_in(cfg, &runs);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[cfg(unix)]
#[test]
fn a_closed_or_full_stdout_never_stops_a_run() {
    let tmp = tempfile::tempdir().unwrap();
    let c = synthetic(MethodName::Set, 0.8, 2);
    let cfg = write_config(tmp.path(), &c);
    let cfg = cfg.to_str().unwrap();
    // `> /dev/full`: every write fails with ENOSPC.
    let full = tmp.path().join("full");
    let out = Command::new(BIN)
        .args(["run", cfg, "--runs", full.to_str().unwrap()])
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    // `| head -0`: the reading end is closed before the first line.
    let piped = tmp.path().join("piped");
    let mut child = Command::new(BIN)
        .args(["run", cfg, "--runs", piped.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let name = c.run_name();
    assert_eq!(
        result_without_time(&full.join(&name)),
        result_without_time(&piped.join(&name))
    );
    let reference = tmp.path().join("ref");
    assert!(run_in(cfg, &reference).status.success());
    assert_same_finished_run(
        &full.join(&name),
        &reference.join(&name),
        DST_FILES,
        "/dev/full",
    );
}

#[test]
fn a_half_removed_checkpoint_of_a_finished_run_is_cleared() {
    // What a kill in the middle of removing the checkpoint leaves: result.json committed, and
    // a state.json whose model file is gone. The rerun is "already finished" and clears it.
    let tmp = tempfile::tempdir().unwrap();
    let c = synthetic(MethodName::Set, 0.8, 1);
    let cfg = write_config(tmp.path(), &c);
    let cfg = cfg.to_str().unwrap();
    let runs = tmp.path().join("runs");
    assert!(run_in(cfg, &runs).status.success());
    let dir = runs.join(c.run_name());
    let ck = dir.join("checkpoint");
    std::fs::create_dir_all(&ck).unwrap();
    std::fs::write(
        ck.join("state.json"),
        br#"{"epochs_done": 1, "model_file": "model-e0001.bpk"}"#,
    )
    .unwrap();
    std::fs::write(ck.join(".optim-e0001.bsp.tmp-77"), b"half").unwrap();
    let before = std::fs::read(dir.join("result.json")).unwrap();
    let out = run_in(cfg, &runs);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("already finished"));
    assert!(!ck.exists(), "the half-removed checkpoint is still there");
    assert_eq!(std::fs::read(dir.join("result.json")).unwrap(), before);
}
