//! Internal test support: the models every burn-sparse test uses, and `device()`, the device
//! they run on: flex (CPU) with autodiff, or wgpu with the `wgpu` feature (`cargo test-wgpu`).
#![allow(missing_docs)]

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};

/// The configuration of every property test: `cases` cases (`PROPTEST_CASES` overrides it),
/// and each failure's seed persisted next to its test file (`tests/NAME.proptest-regressions`,
/// meant to be committed), so the failing case is replayed first on the next run, on any
/// machine.
pub fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..proptest::test_runner::Config::with_cases(cases)
    }
}

/// The device the tests run on: flex (CPU) with autodiff by default; wgpu with the `wgpu`
/// feature (set `BURN_SPARSE_TEST_BACKEND=flex` to force the CPU in such a build).
pub fn device() -> Device {
    #[cfg(feature = "wgpu")]
    if std::env::var("BURN_SPARSE_TEST_BACKEND").as_deref() != Ok("flex") {
        return Device::wgpu(Default::default()).autodiff();
    }
    Device::flex().autodiff()
}

#[derive(Module, Debug)]
pub struct Mlp {
    pub l1: Linear,
    pub l2: Linear,
    pub l3: Linear,
}

impl Mlp {
    pub fn new(dims: [usize; 4], device: &Device) -> Self {
        Self {
            l1: LinearConfig::new(dims[0], dims[1]).init(device),
            l2: LinearConfig::new(dims[1], dims[2]).init(device),
            l3: LinearConfig::new(dims[2], dims[3]).init(device),
        }
    }
    /// An MLP whose weights and biases come from `SparseRng::new(seed)` (uniform in
    /// `+-1/sqrt(fan_in)`), independent of burn's global RNG, so parallel tests stay
    /// deterministic.
    pub fn seeded(dims: [usize; 4], seed: u64, device: &Device) -> Self {
        let mut rng = burn_sparse_mask::SparseRng::new(seed);
        let mut lin = |i: usize, o: usize| {
            let b = 1.0 / (i as f32).sqrt();
            let mut draw = |n: usize| -> Vec<f32> {
                (0..n).map(|_| (rng.next_f32() * 2.0 - 1.0) * b).collect()
            };
            let w = draw(i * o);
            let bias = draw(o);
            let mut l = LinearConfig::new(i, o).init(device);
            l.weight = l.weight.map(|t| {
                let t2 = Tensor::<2>::from_data(TensorData::new(w, [i, o]), &t.device());
                if t.is_autodiff() && t.is_require_grad() {
                    t2.require_grad()
                } else {
                    t2
                }
            });
            l.bias = l.bias.map(|p| {
                p.map(|t| {
                    let t2 = Tensor::<1>::from_data(TensorData::new(bias, [o]), &t.device());
                    if t.is_autodiff() && t.is_require_grad() {
                        t2.require_grad()
                    } else {
                        t2
                    }
                })
            });
            l
        };
        Self {
            l1: lin(dims[0], dims[1]),
            l2: lin(dims[1], dims[2]),
            l3: lin(dims[2], dims[3]),
        }
    }

    /// Every weight and bias, flattened, as bit patterns in layer order: what "bit for bit the
    /// same model" compares.
    pub fn bits(&self) -> Vec<Vec<u32>> {
        [&self.l1, &self.l2, &self.l3]
            .iter()
            .flat_map(|l| {
                let mut v = vec![burn_sparse_mask::to_host(l.weight.val()).expect("host")];
                if let Some(b) = &l.bias {
                    v.push(burn_sparse_mask::to_host(b.val()).expect("host"));
                }
                v
            })
            .map(|v| v.iter().map(|x| x.to_bits()).collect())
            .collect()
    }

    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.l3
            .forward(relu(self.l2.forward(relu(self.l1.forward(x)))))
    }
}

/// Conv (rank-4 weight) and Linear (rank-2) in one model, with a Vec of layers for `features.N`.
#[derive(Module, Debug)]
pub struct ConvNet {
    pub features: Vec<Conv2d>,
    pub head: Linear,
}

impl ConvNet {
    pub fn new(device: &Device) -> Self {
        Self {
            features: vec![
                Conv2dConfig::new([1, 4], [3, 3]).init(device),
                Conv2dConfig::new([4, 6], [3, 3]).init(device),
            ],
            head: LinearConfig::new(6 * 4 * 4, 3).init(device),
        }
    }
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut h = x;
        for c in &self.features {
            h = relu(c.forward(h));
        }
        let [b, c, hh, ww] = h.dims();
        self.head.forward(h.reshape([b, c * hh * ww]))
    }
}

/// Cross-entropy gradients of the MLP on a random batch.
pub fn mlp_grads(model: &Mlp, batch: usize, seed: u64, device: &Device) -> (f32, GradientsParams) {
    let d_in = model.l1.weight.dims()[0];
    let d_out = model.l3.weight.dims()[1];
    let mut rng = burn_sparse_mask::SparseRng::new(seed);
    let x: Vec<f32> = (0..batch * d_in)
        .map(|_| rng.next_f32() * 2.0 - 1.0)
        .collect();
    let y: Vec<i64> = (0..batch).map(|_| rng.below(d_out as u64) as i64).collect();
    let x = Tensor::<2>::from_data(TensorData::new(x, [batch, d_in]), device);
    let y = Tensor::<1, Int>::from_data(TensorData::new(y, [batch]), device);
    let loss = CrossEntropyLossConfig::new()
        .init(device)
        .forward(model.forward(x), y);
    let l = burn_sparse_mask::finite_loss(&loss).unwrap();
    (l, GradientsParams::from_grads(loss.backward(), model))
}

pub fn conv_grads(model: &ConvNet, device: &Device) -> GradientsParams {
    let x = Tensor::<4>::random([2, 1, 8, 8], Distribution::Normal(0.0, 1.0), device);
    let y = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 2], [2]), device);
    let loss = CrossEntropyLossConfig::new()
        .init(device)
        .forward(model.forward(x), y);
    GradientsParams::from_grads(loss.backward(), model)
}

/// A [`LayerView`](burn_sparse_mask::LayerView) of one layer without gradients or momentum,
/// for calling a topology updater by hand.
pub fn view<'a>(
    param: &'a burn_sparse_mask::ParamInfo,
    mask: &'a [bool],
    weights: &'a [f32],
) -> burn_sparse_mask::LayerView<'a> {
    burn_sparse_mask::LayerView {
        param,
        mask,
        weights,
        grads: None,
        momentum: None,
    }
}

/// `n` synthetic samples of `width` features in `classes` classes, from `SparseRng::new(seed)`:
/// class `c` lights the `c`-th band of `width / classes` features (0.5 plus uniform noise in
/// `[0, 0.5)`), the other features are noise only. Learnable in a few steps.
pub fn banded_batch(
    n: usize,
    width: usize,
    classes: usize,
    seed: u64,
    device: &Device,
) -> (Tensor<2>, Tensor<1, Int>) {
    let mut rng = burn_sparse_mask::SparseRng::new(seed);
    let mut x = vec![0.0f32; n * width];
    let mut y = vec![0i64; n];
    let band = (width / classes.max(1)).max(1);
    for i in 0..n {
        let c = rng.below(classes as u64) as usize;
        y[i] = c as i64;
        for p in 0..width {
            x[i * width + p] = rng.next_f32() * 0.5 + if p / band == c { 0.5 } else { 0.0 };
        }
    }
    (
        Tensor::<2>::from_data(TensorData::new(x, [n, width]), device),
        Tensor::<1, Int>::from_data(TensorData::new(y, [n]), device),
    )
}
