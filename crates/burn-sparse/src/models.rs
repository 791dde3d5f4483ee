//! Reference models: LeNet-300-100 and LeNet-5 (Caffe variant, as in the SNIP paper).

use burn::config::Config;
use burn::module::{Initializer, Module};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

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

impl LeNet300Config {
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
}

impl LeNet5Config {
    /// Initialise on `device`.
    pub fn init(&self, device: &Device) -> LeNet5 {
        LeNet5 {
            conv1: Conv2dConfig::new([1, 20], [5, 5]).init(device),
            conv2: Conv2dConfig::new([20, 50], [5, 5]).init(device),
            fc1: LinearConfig::new(800, 500).init(device),
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
