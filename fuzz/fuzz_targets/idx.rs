//! Fuzz the IDX parser (raw and gzip) and the MNIST builder: no input may panic or allocate
//! more than it holds.
#![no_main]

use std::path::Path;

use burn_sparse_data::formats::{maybe_gunzip, parse_idx};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let p = Path::new("fuzz.idx");
    let _ = parse_idx(data, p);
    if let Ok(bytes) = maybe_gunzip(data.to_vec(), p) {
        let _ = parse_idx(&bytes, p);
    }
    // Split the input into an image file and a label file.
    let mid = data.first().map_or(0, |&b| b as usize).min(data.len());
    let _ = burn_sparse_data::from_idx_bytes("fuzz", &data[mid..], p, &data[..mid], p, 0.1, 0.3);
});
