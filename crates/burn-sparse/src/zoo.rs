//! The model zoo's residual network and transformer: ResNet-20 (He et al. 2016, the CIFAR-10
//! workhorse of the RigL and SNIP papers) and a small transformer classifier that reads an
//! image's rows as tokens (MNIST: 28 tokens of 28 pixels).

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::transformer::{
    TransformerEncoder, TransformerEncoderConfig, TransformerEncoderInput,
};
use burn::nn::{
    BatchNorm, BatchNormConfig, Embedding, EmbeddingConfig, Linear, LinearConfig, PaddingConfig2d,
};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Int, Tensor};

use crate::models::{Classifier, InputShapeError, square_side};

/// A basic residual block: two 3x3 convolutions with batch norm, and a 1x1 projection
/// shortcut (with its batch norm) when the stride or the width changes.
#[derive(Module, Debug)]
pub struct BasicBlock {
    /// First 3x3 convolution (carries the stride).
    pub conv1: Conv2d,
    /// Its batch norm.
    pub bn1: BatchNorm,
    /// Second 3x3 convolution.
    pub conv2: Conv2d,
    /// Its batch norm.
    pub bn2: BatchNorm,
    /// The projection shortcut, when the shape changes.
    pub shortcut: Option<Conv2d>,
    /// The shortcut's batch norm.
    pub shortcut_bn: Option<BatchNorm>,
}

impl BasicBlock {
    fn new(c_in: usize, c_out: usize, stride: usize, d: &Device) -> Self {
        let conv3 = |i, o, s| {
            Conv2dConfig::new([i, o], [3, 3])
                .with_stride([s, s])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_bias(false)
                .init(d)
        };
        let project = stride != 1 || c_in != c_out;
        Self {
            conv1: conv3(c_in, c_out, stride),
            bn1: BatchNormConfig::new(c_out).init(d),
            conv2: conv3(c_out, c_out, 1),
            bn2: BatchNormConfig::new(c_out).init(d),
            shortcut: project.then(|| {
                Conv2dConfig::new([c_in, c_out], [1, 1])
                    .with_stride([stride, stride])
                    .with_bias(false)
                    .init(d)
            }),
            shortcut_bn: project.then(|| BatchNormConfig::new(c_out).init(d)),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = relu(self.bn1.forward(self.conv1.forward(x.clone())));
        let y = self.bn2.forward(self.conv2.forward(y));
        let skip = match (&self.shortcut, &self.shortcut_bn) {
            (Some(c), Some(bn)) => bn.forward(c.forward(x)),
            _ => x,
        };
        relu(y + skip)
    }
}

/// ResNet-20 for small images: a 3x3 stem of 16 channels, three stages of `blocks` basic blocks
/// at 16, 32 and 64 channels (the second and third start with stride 2), global average pooling
/// and a linear head. `blocks = 3` is ResNet-20 (6n + 2 layers).
#[derive(Module, Debug)]
pub struct ResNet {
    /// The 3x3 stem convolution.
    pub stem: Conv2d,
    /// Its batch norm.
    pub stem_bn: BatchNorm,
    /// The residual blocks, stage after stage.
    pub blocks: Vec<BasicBlock>,
    /// The classifier.
    pub head: Linear,
}

/// Configuration of [`ResNet`].
#[derive(Config, Debug)]
pub struct ResNetConfig {
    /// Blocks per stage (3: ResNet-20).
    #[config(default = 3)]
    pub blocks: usize,
    /// Input channels.
    #[config(default = 3)]
    pub in_channels: usize,
    /// Input height and width.
    #[config(default = 32)]
    pub image_size: usize,
    /// Classes.
    #[config(default = 10)]
    pub classes: usize,
}

impl ResNetConfig {
    /// ResNet-20 for images of `shape` (`[c, h, w]`, square, at least 4 pixels: two stride-2
    /// stages).
    ///
    /// # Errors
    /// [`InputShapeError`] for non-square or too small images.
    pub fn resnet20_for(shape: [usize; 3], classes: usize) -> Result<Self, InputShapeError> {
        let side = square_side(shape, 4, "ResNet-20")?;
        Ok(Self::new()
            .with_in_channels(shape[0])
            .with_image_size(side)
            .with_classes(classes))
    }

    /// The output side of stage `s` (0, 1, 2): the 3x3 stride-2 convolution with padding 1
    /// gives `ceil(side / 2)`.
    fn side(&self, stage: usize) -> usize {
        (0..stage).fold(self.image_size, |s, _| s.div_ceil(2))
    }

    /// How many times each convolution weight is used per image (its output positions), by
    /// parameter path; the head uses each weight once. For
    /// [`FlopCount`](burn_sparse_mask::FlopCount).
    pub fn weight_uses(&self) -> Vec<(String, u64)> {
        let sq = |s: usize| (s * s) as u64;
        let mut out = vec![("stem.weight".to_string(), sq(self.image_size))];
        for stage in 0..3 {
            for b in 0..self.blocks {
                let i = stage * self.blocks + b;
                let s = sq(self.side(stage));
                out.push((format!("blocks.{i}.conv1.weight"), s));
                out.push((format!("blocks.{i}.conv2.weight"), s));
                if b == 0 && stage > 0 {
                    out.push((format!("blocks.{i}.shortcut.weight"), s));
                }
            }
        }
        out
    }

    /// Initialise on `device`.
    pub fn init(&self, device: &Device) -> ResNet {
        let mut blocks = Vec::with_capacity(3 * self.blocks);
        let mut c = 16;
        for (stage, width) in [16, 32, 64].into_iter().enumerate() {
            for b in 0..self.blocks {
                let stride = if b == 0 && stage > 0 { 2 } else { 1 };
                blocks.push(BasicBlock::new(c, width, stride, device));
                c = width;
            }
        }
        ResNet {
            stem: Conv2dConfig::new([self.in_channels, 16], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_bias(false)
                .init(device),
            stem_bn: BatchNormConfig::new(16).init(device),
            blocks,
            head: LinearConfig::new(64, self.classes).init(device),
        }
    }
}

impl Classifier for ResNet {
    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x = relu(self.stem_bn.forward(self.stem.forward(images)));
        for b in &self.blocks {
            x = b.forward(x);
        }
        let [n, c, h, w] = x.dims();
        let pooled = x.reshape([n, c, h * w]).mean_dim(2).reshape([n, c]);
        self.head.forward(pooled)
    }
}

/// A small transformer classifier over an image's rows: each of the `H` rows (`C * W` values)
/// is a token, embedded linearly, plus a learned position embedding, through a
/// `TransformerEncoder`, mean-pooled, and classified (a ViT with one-row patches).
#[derive(Module, Debug)]
pub struct RowTransformer {
    /// Row -> `d_model`.
    pub embed: Linear,
    /// Learned position embedding (an `Embedding`, so the default filter keeps it dense).
    pub position: Embedding,
    /// The encoder.
    pub encoder: TransformerEncoder,
    /// The classifier.
    pub head: Linear,
}

/// Configuration of [`RowTransformer`].
#[derive(Config, Debug)]
pub struct RowTransformerConfig {
    /// Tokens (image rows).
    #[config(default = 28)]
    pub tokens: usize,
    /// Values per token (channels times row width).
    #[config(default = 28)]
    pub token_size: usize,
    /// Model width.
    #[config(default = 64)]
    pub d_model: usize,
    /// Feed-forward width.
    #[config(default = 128)]
    pub d_ff: usize,
    /// Attention heads.
    #[config(default = 4)]
    pub heads: usize,
    /// Encoder layers.
    #[config(default = 2)]
    pub layers: usize,
    /// Classes.
    #[config(default = 10)]
    pub classes: usize,
}

impl RowTransformerConfig {
    /// The classifier for images of `shape` (`[c, h, w]`: `h` tokens of `c * w`).
    pub fn for_data(shape: [usize; 3], classes: usize) -> Self {
        let [c, h, w] = shape;
        Self::new()
            .with_tokens(h)
            .with_token_size(c * w)
            .with_classes(classes)
    }

    /// Initialise on `device`.
    pub fn init(&self, device: &Device) -> RowTransformer {
        RowTransformer {
            embed: LinearConfig::new(self.token_size, self.d_model).init(device),
            position: EmbeddingConfig::new(self.tokens, self.d_model)
                .with_initializer(burn::module::Initializer::Normal {
                    mean: 0.0,
                    std: 0.02,
                })
                .init(device),
            encoder: TransformerEncoderConfig::new(
                self.d_model,
                self.d_ff,
                self.heads,
                self.layers,
            )
            .with_dropout(0.0)
            .init(device),
            head: LinearConfig::new(self.d_model, self.classes).init(device),
        }
    }
}

impl Classifier for RowTransformer {
    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        let [b, c, h, w] = images.dims();
        let device = images.device();
        // [B, C, H, W] -> [B, H, C * W]: one token per row.
        let rows = images.swap_dims(1, 2).reshape([b, h, c * w]);
        let positions = Tensor::<1, Int>::arange(0..h as i64, &device).reshape([1, h]);
        let x = self.embed.forward(rows) + self.position.forward(positions);
        let x = self.encoder.forward(TransformerEncoderInput::new(x));
        let d = x.dims()[2];
        self.head.forward(x.mean_dim(1).reshape([b, d]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_sparse_mask::ParamFilter;

    #[test]
    fn resnet20_shapes_prunable_set_and_weight_uses() {
        let d = Device::default();
        let cfg = ResNetConfig::resnet20_for([1, 28, 28], 10).unwrap();
        let m = cfg.init(&d);
        assert_eq!(m.blocks.len(), 9);
        let y = m.logits(Tensor::zeros([2, 1, 28, 28], &d));
        assert_eq!(y.dims(), [2, 10]);
        // 19 convolutions + 2 projection shortcuts + the head; no batch norm.
        let p = ParamFilter::new().select(&m).unwrap();
        assert_eq!(p.len(), 22);
        assert!(p.iter().all(|p| !p.path.contains("bn")));
        // Stages at 28, 14 and 7 pixels: every prunable conv has its output positions.
        let uses: std::collections::BTreeMap<String, u64> = cfg.weight_uses().into_iter().collect();
        assert_eq!(uses["stem.weight"], 784);
        assert_eq!(uses["blocks.3.conv1.weight"], 196);
        assert_eq!(uses["blocks.6.shortcut.weight"], 49);
        assert_eq!(uses.len(), 21);
        assert!(ResNetConfig::resnet20_for([1, 28, 20], 10).is_err());
    }

    #[test]
    fn row_transformer_reads_rows_as_tokens() {
        let d = Device::default();
        let cfg = RowTransformerConfig::for_data([1, 28, 28], 10);
        let m = cfg.init(&d);
        assert_eq!(m.logits(Tensor::zeros([3, 1, 28, 28], &d)).dims(), [3, 10]);
        // Prunable: the row embedding, every attention and feed-forward weight, the head; the
        // position table is an `Embedding`, dense by default.
        let paths: Vec<String> = ParamFilter::new()
            .select(&m)
            .unwrap()
            .into_iter()
            .map(|p| p.path)
            .collect();
        assert_eq!(paths.len(), 1 + 2 * 6 + 1);
        assert!(!paths.iter().any(|p| p.starts_with("position")));
        assert!(
            paths
                .iter()
                .any(|p| p == "encoder.layers.1.mha.query.weight")
        );
    }
}
