//! Helpers shared by the sparse-DST test files (`mod common;`).
#![allow(dead_code)]

use burn::tensor::{Device, Int, Tensor};
use burn_sparse::dynamic::DropGrowConfig;
use burn_sparse::mask::{DropFraction, UpdateSchedule};

/// Flex with autodiff: the sparse kernels run there.
pub fn device() -> Device {
    Device::flex().autodiff()
}

pub fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

pub fn data(n: usize, width: usize, classes: usize, seed: u64) -> (Tensor<2>, Tensor<1, Int>) {
    burn_sparse_test_support::banded_batch(n, width, classes, seed, &device())
}

/// RigL's config (seed 7) updating every `delta_t` steps until `end`; SET's constant drop
/// fraction 0.3 when `!rigl`.
pub fn cfg(rigl: bool, delta_t: u64, end: u64) -> DropGrowConfig {
    let mut c = DropGrowConfig::rigl(end, 7).unwrap();
    c.schedule = UpdateSchedule::new(0, end, delta_t).unwrap();
    if !rigl {
        c.drop_fraction = DropFraction::Constant { alpha: 0.3 };
    }
    c
}
