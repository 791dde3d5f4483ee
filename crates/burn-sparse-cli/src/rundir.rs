//! The run directory: its lock, its verified checkpoint commit, and the outputs derived from
//! the committed state.
//!
//! A checkpoint is one commit: the model and optimizer files are written under new names, then
//! `checkpoint/state.json` names them with their sha256 and carries a sha256 of itself. That
//! rename is the commit point; the old files go after it. On resume every checksum is checked
//! before anything is trusted, and a mismatch is an error naming the file, never a silent
//! resume. Every output (`metrics.*`, `updates.*`) is re-derived from the committed state, on
//! resume and on finish, so a kill between the commit and the outputs leaves nothing stale. A
//! finished run writes `result.json` first and removes its checkpoint after, so a kill during
//! the clean-up leaves a finished run (the next start finishes the clean-up).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

use burn_sparse::data::DataFile;
use burn_sparse::data::fetch::sha256_hex;
use burn_sparse::mask::checkpoint::commit_point;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, read, write_atomic};
use crate::run::{EpochMetrics, LevelRow, RunResult, UpdateRow};

/// The committed state of an unfinished run (`checkpoint/state.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct State {
    pub epochs_done: u64,
    pub model_file: String,
    pub optim_file: String,
    pub seconds: f64,
    pub metrics: Vec<EpochMetrics>,
    pub updates: Vec<UpdateRow>,
    /// Training multiply-adds so far (absent in checkpoints of older versions).
    #[serde(default)]
    pub flops: burn_sparse::mask::FlopCount,
    /// sha256 of every file the state names.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// sha256 of this file's bytes with this value replaced by 64 zeros.
    #[serde(default)]
    pub checksum: String,
}

/// Pretty JSON bytes (every JSON file of a run directory).
pub(crate) fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_string_pretty(v)
        .unwrap_or_default()
        .into_bytes()
}

/// A JSON file of the run directory, or None when it is absent.
///
/// # Errors
/// [`Error::RunDir`] for an unreadable file, saying how to redo that part.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    if !path.exists() {
        return Ok(None);
    }
    let bytes = read(path)?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::RunDir {
            path: path.to_path_buf(),
            message: format!("unreadable ({e}); delete it to start this part again"),
        })
}

/// A finished run's `result.json`, or None while it is unfinished.
///
/// # Errors
/// As [`read_json`].
pub(crate) fn read_result(dir: &Path) -> Result<Option<RunResult>> {
    read_json(&dir.join("result.json"))
}

/// Commit a finished run: `result.json` (the checkpoint goes after it).
///
/// # Errors
/// I/O.
pub(crate) fn write_result(dir: &Path, result: &RunResult) -> Result<()> {
    write_atomic(&dir.join("result.json"), &json(result))
}

/// A run's topology updates (`updates.json`; empty when it has none).
///
/// # Errors
/// As [`read_json`].
pub(crate) fn read_updates(dir: &Path) -> Result<Vec<UpdateRow>> {
    Ok(read_json(&dir.join("updates.json"))?.unwrap_or_default())
}

/// A lottery run's level table, `levels.json` and `levels.csv`.
///
/// # Errors
/// I/O.
pub(crate) fn write_levels(dir: &Path, rows: &[LevelRow]) -> Result<()> {
    write_atomic(&dir.join("levels.json"), &json(&rows))?;
    write_atomic(&dir.join("levels.csv"), levels_csv(rows).as_bytes())
}

fn metrics_csv(rows: &[EpochMetrics]) -> String {
    let layers: Vec<String> = rows
        .first()
        .map(|r| r.layer_density.keys().cloned().collect())
        .unwrap_or_default();
    let mut s = String::from("epoch,step,train_loss,test_accuracy,density,updates,churn,seconds");
    for l in &layers {
        let _ = write!(s, ",density:{l}");
    }
    s.push('\n');
    for r in rows {
        let _ = write!(
            s,
            "{},{},{},{},{},{},{},{:.3}",
            r.epoch,
            r.step,
            r.train_loss,
            r.test_accuracy,
            r.density,
            r.updates,
            r.churn,
            r.seconds
        );
        for l in &layers {
            let _ = write!(
                s,
                ",{}",
                r.layer_density.get(l).copied().unwrap_or(f64::NAN)
            );
        }
        s.push('\n');
    }
    s
}

fn updates_csv(rows: &[UpdateRow]) -> String {
    let mut s = String::from("step,layer,changed,nnz,churn\n");
    for r in rows {
        let _ = writeln!(
            s,
            "{},{},{},{},{}",
            r.step, r.layer, r.changed, r.nnz, r.churn
        );
    }
    s
}

fn levels_csv(rows: &[LevelRow]) -> String {
    let f = |x: Option<f64>| x.map_or(String::new(), |x| x.to_string());
    let mut s = String::from("level,density,ticket,random_reinit,random_pruning\n");
    for r in rows {
        let _ = writeln!(
            s,
            "{},{},{},{},{}",
            r.level,
            r.density,
            r.ticket,
            f(r.random_reinit),
            f(r.random_pruning)
        );
    }
    s
}

/// The placeholder the checksum replaces: the state's sha256 covers its file's exact bytes with
/// this in place of the checksum, so verifying never depends on re-serialising anything.
const PLACEHOLDER: &str = "0000000000000000000000000000000000000000000000000000000000000000";

impl State {
    /// The bytes of `state.json`, checksummed.
    fn to_committed_bytes(&self) -> Vec<u8> {
        let mut st = self.clone();
        st.checksum = PLACEHOLDER.into();
        let text = String::from_utf8(json(&st)).unwrap_or_default();
        let sum = sha256_hex(text.as_bytes());
        text.replacen(PLACEHOLDER, &sum, 1).into_bytes()
    }

    /// Whether `raw` (the bytes `self` was parsed from) carries its own correct checksum.
    fn verifies(&self, raw: &[u8]) -> bool {
        let Ok(text) = std::str::from_utf8(raw) else {
            return false;
        };
        if self.checksum.len() != 64 || text.matches(self.checksum.as_str()).count() != 1 {
            return false;
        }
        sha256_hex(
            text.replacen(self.checksum.as_str(), PLACEHOLDER, 1)
                .as_bytes(),
        ) == self.checksum
    }
}

const RECOVER: &str = "the checkpoint cannot be trusted; delete the run's `checkpoint` folder \
                       to start this run over (its finished epochs are lost)";

/// The exclusive lock of a run directory, held while a process works in it (`.lock`, with
/// the holder's PID inside). Released when dropped or when the process dies.
#[derive(Debug)]
pub(crate) struct RunLock {
    _file: File,
}

impl RunLock {
    /// Take the lock of `dir`, or fail with [`Error::Locked`] naming the holder's PID.
    pub fn acquire(dir: &Path) -> Result<Self> {
        let path = dir.join(".lock");
        let io = |e| Error::Io {
            path: path.clone(),
            source: e,
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut s = String::new();
                let _ = file.read_to_string(&mut s);
                return Err(Error::Locked {
                    path: dir.to_path_buf(),
                    pid: s.trim().parse().ok(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        Ok(Self { _file: file })
    }
}

/// Remove what a killed process can leave behind: temporary files (`.NAME.tmp-PID`,
/// `.NAME.tmp-PID.svg|png`) anywhere in the run directory (its `checkpoint`, `plots` and the
/// lottery's `imp` levels). Only call with the lock held.
pub(crate) fn clean_orphans(dir: &Path) {
    let mut stack = vec![(dir.to_path_buf(), 0)];
    while let Some((d, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            if is_dir && depth < 3 {
                stack.push((e.path(), depth + 1));
            } else if !is_dir && name.starts_with('.') && name.contains(".tmp") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Record the data files a run trains on in `dir/data.json` (name and sha256), or check them
/// against the record: the data directory is not part of the run's hash, so this is what keeps
/// a resume (or a skip) from mixing in other data.
///
/// # Errors
/// [`Error::RunDir`] naming the file whose content changed.
pub(crate) fn check_data(dir: &Path, files: &[DataFile]) -> Result<()> {
    let path = dir.join("data.json");
    if !path.exists() {
        return write_atomic(&path, &json(&files));
    }
    let recorded: Vec<DataFile> =
        serde_json::from_slice(&read(&path)?).map_err(|e| Error::RunDir {
            path: path.clone(),
            message: format!("unreadable ({e}); delete it to record the data again"),
        })?;
    if recorded == files {
        return Ok(());
    }
    let what = recorded
        .iter()
        .find(|r| !files.contains(r))
        .map(|r| match files.iter().find(|f| f.name == r.name) {
            Some(f) => format!(
                "the run was trained on {} with sha256 {}, the data directory now holds {}",
                r.name, r.sha256, f.sha256
            ),
            None => format!("the run was trained on {}, which is not read now", r.name),
        })
        .unwrap_or_else(|| "the data files differ from those the run was trained on".into());
    Err(Error::RunDir {
        path,
        message: format!(
            "{what}; point dataset.dir at the original files, or delete the run directory to \
             start over on the new data"
        ),
    })
}

/// Remove a finished run's checkpoint (after `result.json` is committed).
pub(crate) fn remove_checkpoint(dir: &Path) {
    let ck = dir.join("checkpoint");
    if ck.exists() {
        commit_point();
        let _ = std::fs::remove_dir_all(&ck);
    }
}

/// Commit `st` as the checkpoint in `ck`: record the sha256 of the files it names (already
/// written), checksum the state, write it atomically, then remove `old` files.
pub(crate) fn commit(ck: &Path, st: &mut State, old: &[String]) -> Result<()> {
    st.files.clear();
    for f in [&st.model_file, &st.optim_file] {
        st.files.insert(f.clone(), sha256_hex(&read(&ck.join(f))?));
    }
    write_atomic(&ck.join("state.json"), &st.to_committed_bytes())?;
    for f in old {
        if !f.is_empty() && !st.files.contains_key(f) {
            commit_point();
            let _ = std::fs::remove_file(ck.join(f));
        }
    }
    Ok(())
}

/// The committed checkpoint in `ck`, verified: the state's own checksum and every named file's.
///
/// # Errors
/// [`Error::RunDir`] naming the file that does not verify, and how to recover.
pub(crate) fn load(ck: &Path) -> Result<Option<State>> {
    let path = ck.join("state.json");
    if !path.exists() {
        return Ok(None);
    }
    let bad = |path: PathBuf, what: String| Error::RunDir {
        path,
        message: format!("{what}: {RECOVER}"),
    };
    let raw = read(&path)?;
    let st: State =
        serde_json::from_slice(&raw).map_err(|e| bad(path.clone(), format!("unreadable ({e})")))?;
    if !st.verifies(&raw) {
        return Err(bad(
            path,
            "does not match its own sha256 (corrupt or edited)".into(),
        ));
    }
    for f in [&st.model_file, &st.optim_file] {
        let p = ck.join(f);
        let Some(want) = st.files.get(f) else {
            return Err(bad(p, "is not covered by a checksum".into()));
        };
        if !p.exists() {
            return Err(bad(p, "is missing".into()));
        }
        if sha256_hex(&read(&p)?) != *want {
            return Err(bad(
                p,
                "does not match the sha256 recorded in state.json (corrupt or edited)".into(),
            ));
        }
    }
    Ok(Some(st))
}

/// Write every per-epoch output of `dir` from the committed state.
pub(crate) fn write_outputs(dir: &Path, st: &State, dynamic: bool) -> Result<()> {
    write_atomic(&dir.join("metrics.json"), &json(&st.metrics))?;
    write_atomic(
        &dir.join("metrics.csv"),
        metrics_csv(&st.metrics).as_bytes(),
    )?;
    if dynamic {
        write_atomic(&dir.join("updates.json"), &json(&st.updates))?;
        write_atomic(
            &dir.join("updates.csv"),
            updates_csv(&st.updates).as_bytes(),
        )?;
    }
    Ok(())
}
