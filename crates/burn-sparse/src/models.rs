//! Reference models: LeNet-300-100, LeNet-5 (Caffe variant, as in the SNIP paper) and the
//! LTH paper's Conv-2, Conv-4 and Conv-6 (VGG-like, for CIFAR-10).

use burn::config::Config;
use burn::module::{Initializer, Module};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use burn_sparse_layers::{Compute, LayerError, SparseLinear, SparseLinearConfig};
use burn_sparse_mask::MaskSet;

/// A classifier of image batches `[B, C, H, W]` into logits `[B, classes]`.
pub trait Classifier: Module {
    /// Logits.
    fn logits(&self, images: Tensor<4>) -> Tensor<2>;
}

/// LeNet-300-100 (LeCun et al. 1998): 784-300-100-10 fully connected with ReLU.
#[derive(Module, Debug)]
pub struct LeNet300 {
    /// 784 -> 300.
    pub fc1: Linear,
    /// 300 -> 100.
    pub fc2: Linear,
    /// 100 -> classes.
    pub fc3: Linear,
}

/// Configuration of [`LeNet300`].
#[derive(Config, Debug)]
pub struct LeNet300Config {
    /// Input features.
    #[config(default = 784)]
    pub inputs: usize,
    /// Classes.
    #[config(default = 10)]
    pub classes: usize,
    /// Weight initialiser (None: burn's default, Kaiming-uniform `+-1/sqrt(fan_in)`; the LTH
    /// paper used `XavierNormal { gain: 1.0 }`).
    #[config(default = "None")]
    pub initializer: Option<Initializer>,
}

fn linear(i: usize, o: usize, init: &Option<Initializer>, device: &Device) -> Linear {
    let c = LinearConfig::new(i, o);
    match init {
        Some(x) => c.with_initializer(x.clone()),
        None => c,
    }
    .init(device)
}

/// Images a model cannot take: the model and why (the data's `[channels, height, width]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputShapeError {
    /// The model (`LeNet-5`, `Conv-4`).
    pub model: String,
    /// What it needs and what the data has.
    pub message: String,
}

impl std::fmt::Display for InputShapeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.model, self.message)
    }
}

impl std::error::Error for InputShapeError {}

impl LeNet300Config {
    /// LeNet-300-100 for images of `shape` (`[c, h, w]`, flattened) and `classes` classes.
    pub fn for_data(shape: [usize; 3], classes: usize) -> Self {
        Self::new()
            .with_inputs(shape.iter().product())
            .with_classes(classes)
    }

    /// Initialise on `device`.
    pub fn init(&self, device: &Device) -> LeNet300 {
        LeNet300 {
            fc1: linear(self.inputs, 300, &self.initializer, device),
            fc2: linear(300, 100, &self.initializer, device),
            fc3: linear(100, self.classes, &self.initializer, device),
        }
    }
}

impl Classifier for LeNet300 {
    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        let [b, c, h, w] = images.dims();
        let x = images.reshape([b, c * h * w]);
        self.fc3
            .forward(relu(self.fc2.forward(relu(self.fc1.forward(x)))))
    }
}

/// LeNet-5 (Caffe variant): conv 20@5x5, pool, conv 50@5x5, pool, fc 500, fc classes.
#[derive(Module, Debug)]
pub struct LeNet5 {
    /// 1 -> 20, 5x5.
    pub conv1: Conv2d,
    /// 20 -> 50, 5x5.
    pub conv2: Conv2d,
    /// 800 -> 500.
    pub fc1: Linear,
    /// 500 -> classes.
    pub fc2: Linear,
    pool: MaxPool2d,
}

/// Configuration of [`LeNet5`].
#[derive(Config, Debug)]
pub struct LeNet5Config {
    /// Classes.
    #[config(default = 10)]
    pub classes: usize,
    /// Input channels (1 for MNIST, 3 for CIFAR-10).
    #[config(default = 1)]
    pub in_channels: usize,
    /// Input height and width (28 for MNIST, 32 for CIFAR-10).
    #[config(default = 28)]
    pub image_size: usize,
}

/// The side of square images of `shape` (`[c, h, w]`) at least `min` pixels wide.
///
/// # Errors
/// [`InputShapeError`] for `model` otherwise.
pub(crate) fn square_side(
    shape: [usize; 3],
    min: usize,
    model: &str,
) -> Result<usize, InputShapeError> {
    let [_, h, w] = shape;
    if h != w || h < min {
        return Err(InputShapeError {
            model: model.into(),
            message: format!("needs square images of at least {min} pixels, the data has {h}x{w}"),
        });
    }
    Ok(h)
}

impl LeNet5Config {
    /// LeNet-5 for images of `shape` (`[c, h, w]`) and `classes` classes.
    ///
    /// # Errors
    /// [`InputShapeError`] unless the images are square and at least 16 pixels wide (two valid
    /// 5x5 convolutions, each followed by a 2x2 pool, must leave a pixel).
    pub fn for_data(shape: [usize; 3], classes: usize) -> Result<Self, InputShapeError> {
        let side = square_side(shape, 16, "LeNet-5")?;
        Ok(Self::new()
            .with_in_channels(shape[0])
            .with_image_size(side)
            .with_classes(classes))
    }

    /// How many times each weight of a convolution is used per image (its output positions:
    /// 24x24 and 8x8 on 28x28 MNIST), by parameter path; the fully connected layers use each
    /// weight once. For [`FlopCount`](burn_sparse_mask::FlopCount).
    pub fn weight_uses(&self) -> Vec<(String, u64)> {
        let c1 = self.image_size.saturating_sub(4);
        let c2 = (c1 / 2).saturating_sub(4);
        vec![
            ("conv1.weight".into(), (c1 * c1) as u64),
            ("conv2.weight".into(), (c2 * c2) as u64),
        ]
    }

    /// Initialise on `device`.
    pub fn init(&self, device: &Device) -> LeNet5 {
        // Two valid 5x5 convolutions, each followed by a 2x2 pool.
        let side = ((self.image_size.saturating_sub(4)) / 2).saturating_sub(4) / 2;
        LeNet5 {
            conv1: Conv2dConfig::new([self.in_channels, 20], [5, 5]).init(device),
            conv2: Conv2dConfig::new([20, 50], [5, 5]).init(device),
            fc1: LinearConfig::new(50 * side * side, 500).init(device),
            fc2: LinearConfig::new(500, self.classes).init(device),
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
        }
    }
}

impl Classifier for LeNet5 {
    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        let x = self.pool.forward(self.conv1.forward(images));
        let x = self.pool.forward(self.conv2.forward(x));
        let [b, c, h, w] = x.dims();
        self.fc2
            .forward(relu(self.fc1.forward(x.reshape([b, c * h * w]))))
    }
}

/// Conv-2, Conv-4 and Conv-6 of the LTH paper (Frankle & Carbin 2019, Figure 2): pairs of 3x3
/// convolutions (same padding, ReLU) with 64, 128 and 256 channels, each pair followed by a 2x2
/// max-pool, then fully connected 256, 256, classes.
#[derive(Module, Debug)]
pub struct ConvNet {
    /// The convolutions, in order (`convs.0.weight`, ...).
    pub convs: Vec<Conv2d>,
    /// The fully connected layers, in order; the last is the output layer.
    pub fcs: Vec<Linear>,
    pool: MaxPool2d,
}

/// Configuration of [`ConvNet`]: `depth` 2, 4 or 6 convolutions.
#[derive(Config, Debug)]
pub struct ConvNetConfig {
    /// Number of convolutions: 2 (Conv-2), 4 (Conv-4) or 6 (Conv-6).
    #[config(default = 2)]
    pub depth: usize,
    /// Input channels.
    #[config(default = 3)]
    pub in_channels: usize,
    /// Input height and width.
    #[config(default = 32)]
    pub image_size: usize,
    /// Classes.
    #[config(default = 10)]
    pub classes: usize,
    /// Weight initialiser (None: burn's default; the LTH paper used Glorot normal).
    #[config(default = "None")]
    pub initializer: Option<Initializer>,
}

impl ConvNetConfig {
    /// Conv-2: 64, 64, pool; fc 256, 256, 10 (4.3M weights on CIFAR-10).
    pub fn conv2() -> Self {
        Self::new().with_depth(2)
    }
    /// Conv-4: 64, 64, pool, 128, 128, pool; fc 256, 256, 10 (2.4M weights).
    pub fn conv4() -> Self {
        Self::new().with_depth(4)
    }
    /// Conv-6: 64, 64, pool, 128, 128, pool, 256, 256, pool; fc 256, 256, 10 (2.26M weights
    /// for this architecture; the paper's table prints 1.7M).
    pub fn conv6() -> Self {
        Self::new().with_depth(6)
    }

    /// Conv-`depth` (2, 4 or 6) for images of `shape` (`[c, h, w]`) and `classes` classes.
    ///
    /// # Errors
    /// [`InputShapeError`] unless the images are square with a side divisible by
    /// `2^(depth / 2)` (a 2x2 pool after every pair of convolutions).
    pub fn for_data(
        depth: usize,
        shape: [usize; 3],
        classes: usize,
    ) -> Result<Self, InputShapeError> {
        let [c, h, w] = shape;
        let pools = depth / 2;
        if h != w || h % (1 << pools) != 0 || h == 0 {
            return Err(InputShapeError {
                model: format!("Conv-{depth}"),
                message: format!(
                    "needs square images whose side divides by {}, the data has {h}x{w}",
                    1 << pools
                ),
            });
        }
        Ok(Self::new()
            .with_depth(depth)
            .with_in_channels(c)
            .with_image_size(h)
            .with_classes(classes))
    }

    /// The channel widths of the convolutions.
    pub fn widths(&self) -> Vec<usize> {
        (0..self.depth).map(|i| 64 << (i / 2)).collect()
    }

    /// Initialise on `device`. A depth that is not 2, 4 or 6 still builds (pairs of
    /// How many times each convolution weight is used per image (its output positions: same
    /// padding, the side halved after every pair), by parameter path (`convs.N.weight`); the
    /// fully connected layers use each weight once. For
    /// [`FlopCount`](burn_sparse_mask::FlopCount).
    pub fn weight_uses(&self) -> Vec<(String, u64)> {
        (0..self.depth)
            .map(|i| {
                let side = self.image_size >> (i / 2);
                (format!("convs.{i}.weight"), (side * side) as u64)
            })
            .collect()
    }

    /// convolutions, a pool after each pair), as long as the image survives the pools.
    pub fn init(&self, device: &Device) -> ConvNet {
        let widths = self.widths();
        let mut convs = Vec::with_capacity(self.depth);
        let mut c = self.in_channels;
        for &w in &widths {
            let mut cfg =
                Conv2dConfig::new([c, w], [3, 3]).with_padding(burn::nn::PaddingConfig2d::Same);
            if let Some(init) = &self.initializer {
                cfg = cfg.with_initializer(init.clone());
            }
            convs.push(cfg.init(device));
            c = w;
        }
        let side = self.image_size >> self.depth.div_ceil(2);
        let flat = c * side * side;
        let fcs = vec![
            linear(flat, 256, &self.initializer, device),
            linear(256, 256, &self.initializer, device),
            linear(256, self.classes, &self.initializer, device),
        ];
        ConvNet {
            convs,
            fcs,
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
        }
    }
}

impl Classifier for ConvNet {
    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x = images;
        for (i, conv) in self.convs.iter().enumerate() {
            x = relu(conv.forward(x));
            if i % 2 == 1 || i + 1 == self.convs.len() {
                x = self.pool.forward(x);
            }
        }
        let [b, c, h, w] = x.dims();
        let mut x = x.reshape([b, c * h * w]);
        let last = self.fcs.len().saturating_sub(1);
        for (i, fc) in self.fcs.iter().enumerate() {
            x = fc.forward(x);
            if i < last {
                x = relu(x);
            }
        }
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_sparse_mask::{ParamFilter, param_infos};

    fn weights<M: Module>(m: &M) -> usize {
        ParamFilter::new()
            .select(m)
            .unwrap()
            .iter()
            .map(|p| p.numel())
            .sum()
    }

    #[test]
    fn models_for_data_check_the_image_shape() {
        let l = LeNet300Config::for_data([3, 32, 32], 7);
        assert_eq!((l.inputs, l.classes), (3072, 7));
        let l5 = LeNet5Config::for_data([1, 28, 28], 10).unwrap();
        assert_eq!((l5.in_channels, l5.image_size), (1, 28));
        // 8x8 synthetic images leave no pixel after LeNet-5's convolutions and pools.
        let e = LeNet5Config::for_data([1, 8, 8], 4).unwrap_err();
        assert_eq!(
            e.to_string(),
            "LeNet-5 needs square images of at least 16 pixels, the data has 8x8"
        );
        assert!(LeNet5Config::for_data([1, 28, 32], 10).is_err());
        let c = ConvNetConfig::for_data(6, [3, 32, 32], 10).unwrap();
        assert_eq!((c.depth, c.in_channels, c.image_size), (6, 3, 32));
        // Conv-6 pools three times: 28 = 4 * 7 does not divide by 8.
        let e = ConvNetConfig::for_data(6, [1, 28, 28], 10).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("Conv-6 needs square images whose side divides by 8"),
            "{e}"
        );
        assert!(ConvNetConfig::for_data(4, [1, 28, 28], 10).is_ok());
    }

    #[test]
    fn conv_nets_have_the_lth_paper_sizes() {
        let device = Device::default();
        // LTH paper, Figure 2: Conv-2 4.3M and Conv-4 2.4M weights. For Conv-6 the table prints
        // 1.7M, but its own layer list (3x3 convs 64,64,128,128,256,256; fc 4096-256-256-10)
        // counts 1,144,512 conv + 1,116,672 fc = 2,261,184 weights.
        for (cfg, expected, convs) in [
            (ConvNetConfig::conv2(), 4_300_992, 2),
            (ConvNetConfig::conv4(), 2_425_024, 4),
            (ConvNetConfig::conv6(), 2_261_184, 6),
        ] {
            let m = cfg.init(&device);
            assert_eq!(m.convs.len(), convs);
            assert_eq!(weights(&m), expected, "depth {}", cfg.depth);
            let y = m.logits(Tensor::zeros([2, 3, 32, 32], &device));
            assert_eq!(y.dims(), [2, 10]);
        }
        let paths: Vec<String> = param_infos(&ConvNetConfig::conv4().init(&device))
            .into_iter()
            .map(|p| p.path)
            .collect();
        assert!(paths.contains(&"convs.3.weight".to_string()), "{paths:?}");
        assert!(paths.contains(&"fcs.2.weight".to_string()), "{paths:?}");
    }

    #[test]
    fn lenet5_adapts_to_cifar_inputs() {
        let device = Device::default();
        let m = LeNet5Config::new()
            .with_in_channels(3)
            .with_image_size(32)
            .init(&device);
        assert_eq!(m.fc1.weight.dims(), [1250, 500]);
        let y = m.logits(Tensor::zeros([1, 3, 32, 32], &device));
        assert_eq!(y.dims(), [1, 10]);
        assert_eq!(weights(&LeNet5Config::new().init(&device)), 430_500);
    }
}

/// A fully connected ReLU classifier whose layers are [`SparseLinear`]: only the non-zeros are
/// stored, and on the CPU (Flex) only they are computed (layers too dense to gain compute
/// masked-dense, see [`Compute::Auto`]). `inputs -> dims[0] -> ... -> classes`.
///
/// Build it sparse from the start with [`SparseMlpConfig`] (LeNet-300-100, the SET paper's
/// 3072-4000-1000-4000-10, 784-4096-4096-10), or from a masked dense [`LeNet300`] with
/// [`SparseMlp::from_lenet300`] (masks from SNIP, GraSP, SynFlow, magnitude, random, an IMP
/// level) and back with [`SparseMlp::to_lenet300`].
#[derive(Module, Debug)]
pub struct SparseMlp {
    /// The layers, input first.
    pub layers: Vec<SparseLinear>,
}

/// Configuration of a [`SparseMlp`].
#[derive(Config, Debug)]
pub struct SparseMlpConfig {
    /// Widths: input, hidden..., classes (LeNet-300-100: `[784, 300, 100, 10]`).
    pub widths: Vec<usize>,
    /// Density of each layer (one per layer, `widths.len() - 1`), e.g. from
    /// [`burn_sparse_mask::SparsityDistribution::layer_densities`].
    pub densities: Vec<f64>,
    /// Exact non-zeros of each layer, overriding `densities` (set by
    /// [`SparseMlpConfig::distributed`]).
    #[config(default = "None")]
    pub counts: Option<Vec<usize>>,
    /// Seed of the layers' random patterns (layer `i` uses `seed + i`).
    #[config(default = 0)]
    pub seed: u64,
    /// Which product the layers compute.
    #[config(default = "Compute::Auto")]
    pub compute: Compute,
    /// Initialise every unit from its own number of active inputs
    /// ([`SparseLinearConfig::sparse_fan_in`]); default false.
    #[config(default = false)]
    pub sparse_fan_in: bool,
}

impl SparseMlpConfig {
    /// A network of `widths` whose layer densities split a global `sparsity` by `distribution`
    /// (ERK as in RigL, ER as in SET, uniform), as the masked path's distributions do: each
    /// layer keeps exactly the masked path's count (its largest-remainder split,
    /// [`burn_sparse_mask::SparsityDistribution::layer_counts`]), its positions drawn without
    /// enumerating the layer.
    ///
    /// # Errors
    /// As [`burn_sparse_mask::SparsityDistribution::layer_densities`].
    pub fn distributed(
        widths: Vec<usize>,
        sparsity: burn_sparse_mask::Sparsity,
        distribution: &burn_sparse_mask::SparsityDistribution,
    ) -> Result<Self, burn_sparse_mask::MaskError> {
        let layers = Self::layer_infos(&widths);
        let densities = distribution.layer_densities(&layers, sparsity, &Default::default())?;
        let counts = distribution.layer_counts(&layers, sparsity, &Default::default())?;
        Ok(Self::new(widths, densities).with_counts(Some(counts)))
    }

    /// The layers of a network of `widths` as the distributions see them (`layers.{i}.weight`,
    /// `[widths[i], widths[i + 1]]`), for [`burn_sparse_mask::SparsityDistribution`]'s
    /// per-layer densities and counts.
    pub fn layer_infos(widths: &[usize]) -> Vec<burn_sparse_mask::ParamInfo> {
        widths
            .windows(2)
            .enumerate()
            .map(|(i, w)| burn_sparse_mask::ParamInfo {
                path: format!("layers.{i}.weight"),
                id: burn::module::ParamId::new(),
                shape: vec![w[0], w[1]],
                trainable: true,
                module: "SparseLinear".into(),
            })
            .collect()
    }

    /// LeNet-300-100: 784-300-100-classes.
    pub fn lenet300_widths(classes: usize) -> Vec<usize> {
        vec![784, 300, 100, classes]
    }

    /// The SET paper's CIFAR-10 MLP (Mocanu et al. 2018): 3072-4000-1000-4000-10.
    pub fn set_cifar_widths() -> Vec<usize> {
        vec![3072, 4000, 1000, 4000, 10]
    }

    /// A wide MNIST MLP: 784-4096-4096-10.
    pub fn wide4096_widths() -> Vec<usize> {
        vec![784, 4096, 4096, 10]
    }
}

impl SparseMlpConfig {
    /// Initialise on `device` (values drawn as burn's `Linear` draws its weights).
    ///
    /// # Errors
    /// [`LayerError::Shape`] if `densities` does not have one entry per layer, or as
    /// [`SparseLinearConfig::init`].
    pub fn init(&self, device: &Device) -> Result<SparseMlp, LayerError> {
        let n = self.widths.len().saturating_sub(1);
        if n == 0 || self.densities.len() != n {
            return Err(LayerError::Shape {
                what: "densities",
                expected: vec![n],
                got: vec![self.densities.len()],
            });
        }
        if let Some(c) = self.counts.as_ref().filter(|c| c.len() != n) {
            return Err(LayerError::Shape {
                what: "counts",
                expected: vec![n],
                got: vec![c.len()],
            });
        }
        let layers = (0..n)
            .map(|i| {
                SparseLinearConfig::new(self.widths[i], self.widths[i + 1])
                    .with_density(self.densities[i])
                    .with_nnz(self.counts.as_ref().map(|c| c[i]))
                    .with_seed(self.seed.wrapping_add(i as u64))
                    .with_compute(self.compute)
                    .with_sparse_fan_in(self.sparse_fan_in)
                    .init(device)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SparseMlp { layers })
    }
}

impl SparseMlp {
    /// The sparse twin of a masked [`LeNet300`]: each layer keeps the weights its mask in
    /// `masks` keeps (a layer without a mask stays fully dense), biases are shared.
    ///
    /// # Errors
    /// A mask that does not match its layer ([`LayerError::Shape`]) or weights that cannot be
    /// read.
    pub fn from_lenet300(
        net: &LeNet300,
        masks: &MaskSet,
        compute: Compute,
    ) -> Result<Self, LayerError> {
        let layers = [("fc1", &net.fc1), ("fc2", &net.fc2), ("fc3", &net.fc3)]
            .into_iter()
            .map(|(name, lin)| {
                let [k, n] = lin.weight.dims();
                let bits = match masks.get(lin.weight.id) {
                    Some(m) => m.bits().to_vec(),
                    None => match masks.layer(&format!("{name}.weight")) {
                        Ok(m) => m.bits().to_vec(),
                        Err(_) => vec![true; k * n],
                    },
                };
                SparseLinear::from_linear(lin, &bits, compute)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { layers })
    }

    /// The dense twin: a [`LeNet300`] with exact zeros at the inactive positions.
    ///
    /// # Errors
    /// [`LayerError::Shape`] if this network does not have LeNet-300-100's three layers, or as
    /// [`SparseLinear::to_linear`].
    pub fn to_lenet300(&self) -> Result<LeNet300, LayerError> {
        let [a, b, c] = self.layers.as_slice() else {
            return Err(LayerError::Shape {
                what: "layers",
                expected: vec![3],
                got: vec![self.layers.len()],
            });
        };
        Ok(LeNet300 {
            fc1: a.to_linear()?,
            fc2: b.to_linear()?,
            fc3: c.to_linear()?,
        })
    }

    /// Non-zeros over all layers.
    pub fn nnz(&self) -> usize {
        self.layers.iter().map(SparseLinear::nnz).sum()
    }

    /// One zero probe `[d_input, d_output]` per layer, tracked by autodiff: pass them to
    /// [`SparseMlp::forward_probed`] and read their gradients, the dense `dL/dW` of each layer
    /// (RigL's grow score, and a grown weight's first gradient).
    pub fn probes(&self) -> Vec<Tensor<2>> {
        self.layers
            .iter()
            .map(|l| Tensor::<2>::zeros([l.d_input, l.d_output], &l.values.device()).require_grad())
            .collect()
    }

    /// [`SparseMlp::forward`] with a zero probe added to each layer (see
    /// [`SparseLinear::forward_probe`]); for topology-update steps only.
    ///
    /// # Panics
    /// If `probes` does not have one `[d_input, d_output]` tensor per layer.
    pub fn forward_probed(&self, x: Tensor<2>, probes: &[Tensor<2>]) -> Tensor<2> {
        assert_eq!(probes.len(), self.layers.len(), "one probe per layer");
        let last = self.layers.len().saturating_sub(1);
        self.layers
            .iter()
            .zip(probes)
            .enumerate()
            .fold(x, |h, (i, (l, p))| {
                if i < last {
                    l.forward_probe_relu(h, p.clone())
                } else {
                    l.forward_probe(h, p.clone())
                }
            })
    }

    /// Zero taps for [`SparseMlp::forward_tapped`] on a batch of `batch`: one
    /// `[d_output, batch]` tensor per layer (require grad).
    pub fn taps(&self, batch: usize) -> Vec<Tensor<2>> {
        self.layers
            .iter()
            .map(|l| Tensor::<2>::zeros([l.d_output, batch], &l.values.device()).require_grad())
            .collect()
    }

    /// [`SparseMlp::forward`] with a zero tap added to each layer's output
    /// ([`SparseLinear::forward_tap`]); returns the logits and each layer's input. After
    /// `backward`, [`crate::sparse_dst::read_taps`] gives every layer's input and output
    /// gradient, from which the streamed SET and RigL score positions without a dense
    /// gradient: `batch x width` floats per layer instead of the probes' `d_input x d_output`.
    ///
    /// # Panics
    /// If `taps` does not have one `[d_output, batch]` tensor per layer.
    pub fn forward_tapped(&self, x: Tensor<2>, taps: &[Tensor<2>]) -> (Tensor<2>, Vec<Tensor<2>>) {
        assert_eq!(taps.len(), self.layers.len(), "one tap per layer");
        let last = self.layers.len().saturating_sub(1);
        let mut inputs = Vec::with_capacity(self.layers.len());
        let mut h = x;
        for (i, (l, tap)) in self.layers.iter().zip(taps).enumerate() {
            inputs.push(h.clone());
            let y = l.forward_tap(h, tap.clone());
            h = if i < last { l.relu(y) } else { y };
        }
        (h, inputs)
    }

    /// Logits of flat inputs `[B, widths[0]]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let last = self.layers.len().saturating_sub(1);
        self.layers.iter().enumerate().fold(x, |h, (i, l)| {
            if i < last {
                l.forward_relu(h)
            } else {
                l.forward(h)
            }
        })
    }
}

impl Classifier for SparseMlp {
    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        let [b, c, h, w] = images.dims();
        self.forward(images.reshape([b, c * h * w]))
    }
}
