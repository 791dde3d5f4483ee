//! Atomic files and a small self-checking archive for masks, optimizer state and counters.
//!
//! Every file is written to a temporary sibling, flushed to disk, and renamed over the target,
//! so a run killed at any moment leaves either the old file or the new one, never half a file.
//!
//! The archive format is: the magic `BSPARSE1`, a little-endian `u64` header length, a JSON
//! header (user metadata plus an index of named blobs), the blobs, and a trailing FNV-1a 64
//! checksum of everything before it. Loading checks the magic, every length against the file
//! size (so a corrupt header cannot make it allocate more than the file holds) and the checksum.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::Module;
use serde::{Deserialize, Serialize};

use crate::error::{MaskError, Result};

const MAGIC: &[u8; 8] = b"BSPARSE1";

/// The environment variable of the crash-consistency tests' kill switch (see [`commit_point`]).
pub const ABORT_AT_COMMIT_ENV: &str = "BURN_SPARSE_ABORT_AT_COMMIT";

/// Mark the point just before a rename or a removal that changes what a run directory holds.
///
/// With `BURN_SPARSE_ABORT_AT_COMMIT=N` in the environment, the process aborts at its `N`-th
/// commit point (1-based): no destructor, no flush, which is what `SIGKILL` leaves behind. The
/// crash-consistency tests kill a run at every such point in turn and check that the resumed run
/// ends where an uninterrupted one does. Without the variable this is one cached lookup.
pub fn commit_point() {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static LIMIT: OnceLock<Option<u64>> = OnceLock::new();
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let limit = LIMIT.get_or_init(|| {
        std::env::var(ABORT_AT_COMMIT_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
    });
    if let Some(n) = *limit
        && COUNT.fetch_add(1, Ordering::Relaxed) + 1 == n
    {
        std::process::abort();
    }
}

/// Read a regular file of at most `max_bytes`: a FIFO, a device (`/dev/zero`) or a directory
/// is refused at once, and no read goes past `max_bytes + 1` bytes, so a wrong path neither
/// hangs nor fills the memory. A symlink loop is the OS's "too many levels of symbolic links".
///
/// # Errors
/// The I/O error; `InvalidInput` for a file that is not regular, `InvalidData` for one larger
/// than `max_bytes`. Callers add the path.
pub fn read_bounded(path: &Path, max_bytes: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind, Read};
    let meta = fs::metadata(path)?;
    if !meta.is_file() {
        let kind = if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file (a FIFO, socket or device)"
        };
        return Err(Error::new(ErrorKind::InvalidInput, format!("is {kind}")));
    }
    let too_big = || {
        Error::new(
            ErrorKind::InvalidData,
            format!("is larger than the {max_bytes} bytes such a file can have"),
        )
    };
    if meta.len() > max_bytes {
        return Err(too_big());
    }
    let mut out = Vec::with_capacity(meta.len() as usize);
    fs::File::open(path)?
        .take(max_bytes.saturating_add(1))
        .read_to_end(&mut out)?;
    if out.len() as u64 > max_bytes {
        return Err(too_big());
    }
    Ok(out)
}

/// Write `bytes` to `path` atomically: temporary file, fsync, rename, fsync of the folder.
///
/// # Errors
/// [`MaskError::Io`] naming the file.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(d) = dir {
        fs::create_dir_all(d).map_err(|e| MaskError::io(d, e))?;
    }
    let tmp = tmp_path(path);
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        commit_point();
        fs::rename(&tmp, path)?;
        if let Some(d) = dir
            && let Ok(dirf) = fs::File::open(d)
        {
            let _ = dirf.sync_all();
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        MaskError::io(path, e)
    })
}

fn tmp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Save a module's record (burnpack) atomically.
///
/// # Errors
/// [`MaskError::Io`] or [`MaskError::CorruptCheckpoint`] if burn cannot serialise it.
pub fn save_module_atomic<M: Module>(model: M, path: &Path) -> Result<()> {
    let bytes = model
        .into_record()
        .into_bytes()
        .map_err(|e| MaskError::CorruptCheckpoint {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    atomic_write(path, &bytes)
}

/// Load a module's record (burnpack) into `model`.
///
/// # Errors
/// [`MaskError::Io`] for a missing file, [`MaskError::CorruptCheckpoint`] for a bad one.
pub fn load_module<M: Module>(model: M, path: &Path) -> Result<M> {
    let bytes = fs::read(path).map_err(|e| MaskError::io(path, e))?;
    let corrupt = |e: burn::store::RecordError| MaskError::CorruptCheckpoint {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let record = burn::store::ModuleRecord::from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes))
        .map_err(corrupt)?;
    model.try_load_record(record).map_err(corrupt)
}

/// A blob in an [`Archive`].
#[derive(Debug, Clone, PartialEq)]
pub enum Blob {
    /// 32-bit floats.
    F32(Vec<f32>),
    /// Bytes (masks are stored one byte per weight).
    U8(Vec<u8>),
}

#[derive(Serialize, Deserialize)]
struct Header {
    meta: serde_json::Value,
    blobs: Vec<BlobEntry>,
}

#[derive(Serialize, Deserialize)]
struct BlobEntry {
    name: String,
    dtype: String,
    len: u64,
}

/// Named blobs plus JSON metadata, saved and loaded atomically and checked on load.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Archive {
    /// Free-form metadata.
    pub meta: serde_json::Value,
    /// Named data.
    pub blobs: BTreeMap<String, Blob>,
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Archive {
    /// Serialise to bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let header = Header {
            meta: self.meta.clone(),
            blobs: self
                .blobs
                .iter()
                .map(|(name, b)| BlobEntry {
                    name: name.clone(),
                    dtype: match b {
                        Blob::F32(_) => "f32".into(),
                        Blob::U8(_) => "u8".into(),
                    },
                    len: match b {
                        Blob::F32(v) => v.len() as u64,
                        Blob::U8(v) => v.len() as u64,
                    },
                })
                .collect(),
        };
        let h = serde_json::to_vec(&header).expect("serialising a JSON value cannot fail");
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(h.len() as u64).to_le_bytes());
        out.extend_from_slice(&h);
        for b in self.blobs.values() {
            match b {
                Blob::F32(v) => v
                    .iter()
                    .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
                Blob::U8(v) => out.extend_from_slice(v),
            }
        }
        let sum = fnv1a(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// Parse bytes; `path` only names the source in errors.
    ///
    /// # Errors
    /// [`MaskError::CorruptCheckpoint`] for a wrong magic, a truncated file, sizes that disagree
    /// with the file length, or a checksum mismatch.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let corrupt = |m: String| MaskError::CorruptCheckpoint {
            path: path.to_path_buf(),
            message: m,
        };
        if bytes.len() < 24 || &bytes[..8] != MAGIC {
            return Err(corrupt(
                "not a burn-sparse archive (bad magic or too short)".into(),
            ));
        }
        let body = &bytes[..bytes.len() - 8];
        let want = u64::from_le_bytes(bytes[bytes.len() - 8..].try_into().expect("8 bytes"));
        if fnv1a(body) != want {
            return Err(corrupt("checksum mismatch (truncated or corrupt)".into()));
        }
        let hlen = u64::from_le_bytes(body[8..16].try_into().expect("8 bytes"));
        let hend = 16u64
            .checked_add(hlen)
            .filter(|&e| e <= body.len() as u64)
            .ok_or_else(|| corrupt(format!("header length {hlen} exceeds the file")))?
            as usize;
        let header: Header = serde_json::from_slice(&body[16..hend])
            .map_err(|e| corrupt(format!("bad header: {e}")))?;
        let mut pos = hend;
        let mut blobs = BTreeMap::new();
        for e in header.blobs {
            let width = match e.dtype.as_str() {
                "f32" => 4u64,
                "u8" => 1,
                other => return Err(corrupt(format!("unknown dtype `{other}`"))),
            };
            let n = e
                .len
                .checked_mul(width)
                .filter(|&n| n <= (body.len() - pos) as u64)
                .ok_or_else(|| corrupt(format!("blob `{}` is larger than the file", e.name)))?
                as usize;
            let raw = &body[pos..pos + n];
            pos += n;
            let blob = if width == 4 {
                Blob::F32(
                    raw.chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                        .collect(),
                )
            } else {
                Blob::U8(raw.to_vec())
            };
            blobs.insert(e.name, blob);
        }
        if pos != body.len() {
            return Err(corrupt(format!("{} trailing bytes", body.len() - pos)));
        }
        Ok(Self {
            meta: header.meta,
            blobs,
        })
    }

    /// Save atomically.
    ///
    /// # Errors
    /// [`MaskError::Io`].
    pub fn save(&self, path: &Path) -> Result<()> {
        atomic_write(path, &self.to_bytes())
    }

    /// Load and check.
    ///
    /// # Errors
    /// [`MaskError::Io`] or [`MaskError::CorruptCheckpoint`].
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = fs::read(path).map_err(|e| MaskError::io(path, e))?;
        Self::from_bytes(&bytes, path)
    }

    /// A float blob by name.
    ///
    /// # Errors
    /// [`MaskError::CorruptCheckpoint`] if missing or of another type.
    pub fn f32(&self, name: &str, path: &Path) -> Result<&[f32]> {
        match self.blobs.get(name) {
            Some(Blob::F32(v)) => Ok(v),
            _ => Err(MaskError::CorruptCheckpoint {
                path: path.to_path_buf(),
                message: format!("missing f32 blob `{name}`"),
            }),
        }
    }

    /// A byte blob by name.
    ///
    /// # Errors
    /// [`MaskError::CorruptCheckpoint`] if missing or of another type.
    pub fn u8(&self, name: &str, path: &Path) -> Result<&[u8]> {
        match self.blobs.get(name) {
            Some(Blob::U8(v)) => Ok(v),
            _ => Err(MaskError::CorruptCheckpoint {
                path: path.to_path_buf(),
                message: format!("missing u8 blob `{name}`"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bsp");
        let mut a = Archive {
            meta: serde_json::json!({"step": 7}),
            ..Default::default()
        };
        a.blobs.insert("w".into(), Blob::F32(vec![1.5, -0.0, 3.0]));
        a.blobs.insert("m".into(), Blob::U8(vec![1, 0, 1]));
        a.save(&p).unwrap();
        assert_eq!(Archive::load(&p).unwrap(), a);
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        let bytes = fs::read(&p).unwrap();
        for cut in [0, 10, 30, bytes.len() - 1] {
            assert!(Archive::from_bytes(&bytes[..cut], &p).is_err(), "cut {cut}");
        }
        let mut flipped = bytes.clone();
        flipped[30] ^= 0xff;
        assert!(matches!(
            Archive::from_bytes(&flipped, &p),
            Err(MaskError::CorruptCheckpoint { .. })
        ));
        assert!(matches!(
            Archive::load(&dir.path().join("missing")),
            Err(MaskError::Io { .. })
        ));
    }
}
