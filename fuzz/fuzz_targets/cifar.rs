//! Fuzz the CIFAR-10 binary batch parser.
#![no_main]

use std::path::Path;

use burn_sparse_data::formats::parse_cifar_batch;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_cifar_batch(data, Path::new("fuzz.bin"));
});
