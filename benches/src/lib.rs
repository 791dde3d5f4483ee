//! Shared setup for the benches: fixed synthetic batches and model/optimizer builders.

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_sparse::mask::{SparseRng, to_host};
use burn_sparse::models::Classifier;

/// A fixed batch of `b` images of shape `[1, 28, 28]` with labels, from a seed.
pub fn batch(b: usize, seed: u64, device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
    let mut rng = SparseRng::new(seed);
    let x: Vec<f32> = (0..b * 784).map(|_| rng.next_f32()).collect();
    let y: Vec<i64> = (0..b).map(|_| rng.below(10) as i64).collect();
    (
        Tensor::<4>::from_data(TensorData::new(x, [b, 1, 28, 28]), device),
        Tensor::<1, Int>::from_data(TensorData::new(y, [b]), device),
    )
}

/// Forward, cross-entropy and backward; returns the loss (read back, which syncs) and grads.
pub fn grads<M: Classifier>(
    model: &M,
    x: &Tensor<4>,
    y: &Tensor<1, Int>,
    device: &Device,
) -> (f32, GradientsParams) {
    let loss = CrossEntropyLossConfig::new()
        .init(device)
        .forward(model.logits(x.clone()), y.clone());
    let l = to_host(loss.clone()).map(|v| v[0]).unwrap_or(f32::NAN);
    (l, GradientsParams::from_grads(loss.backward(), model))
}

/// Make sure every parameter of `model` has been computed (for lazy backends).
pub fn sync<M: Module>(model: &M) -> usize {
    model.num_params()
}
