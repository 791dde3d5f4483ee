//! Activations stay feature-major through a chain of sparse layers: a training step transposes
//! the network's input and, when the last layer runs on the kernels, the loss gradient, and
//! nothing between layers (Flex would copy a transposed view into row-major at a bias add, a
//! ReLU backward or a reshape, and the next kernel would transpose it back). Its own test
//! binary: the counter is process-wide.

use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_sparse::layers::ops::transposes;
use burn_sparse::mask::prelude::*;
use burn_sparse::models::{SparseMlp, SparseMlpConfig};

fn step(net: &SparseMlp, probed: bool, device: &Device) -> u64 {
    let mut rng = SparseRng::new(1);
    let x: Vec<f32> = (0..32 * 784).map(|_| rng.next_f32()).collect();
    let y: Vec<i64> = (0..32).map(|_| rng.below(10) as i64).collect();
    let x = Tensor::<2>::from_data(TensorData::new(x, [32, 784]), device);
    let y = Tensor::<1, Int>::from_data(TensorData::new(y, [32]), device);
    let before = transposes();
    let logits = if probed {
        net.forward_probed(x, &net.probes())
    } else {
        net.forward(x)
    };
    let loss = CrossEntropyLossConfig::new()
        .init(device)
        .forward(logits, y);
    let grads = loss.backward();
    assert!(net.layers[0].values.grad(&grads).is_some());
    transposes() - before
}

#[test]
fn a_training_step_transposes_only_at_the_network_boundary() {
    let device = Device::flex().autodiff();
    let s = Sparsity::new(0.95).unwrap();
    for (widths, dist) in [
        // ERK keeps LeNet-300-100's last layer dense (masked-dense): only the input.
        (vec![784, 300, 100, 10], SparsityDistribution::Erk),
        // Every layer on the kernels: the input and the loss gradient.
        (vec![784, 256, 256, 256, 10], SparsityDistribution::Uniform),
    ] {
        let net = SparseMlpConfig::distributed(widths.clone(), s, &dist)
            .unwrap()
            .init(&device)
            .unwrap();
        let kernel_layers = net.layers.iter().filter(|l| l.uses_kernels()).count();
        assert!(kernel_layers >= 2, "{widths:?}: a chain to test");
        let last_on_kernels = net.layers.last().unwrap().uses_kernels();
        let want = 1 + u64::from(last_on_kernels);
        for probed in [false, true] {
            assert_eq!(
                step(&net, probed, &device),
                want,
                "{widths:?} probed {probed}"
            );
        }
    }
}
