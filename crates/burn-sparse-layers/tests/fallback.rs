//! The masked-dense fallback on the tests' device (`burn_sparse_test_support::device()`: wgpu
//! under `cargo test-wgpu`, flex otherwise) against the sparse kernels on flex: the same
//! parameters give the same outputs and gradients within float tolerance, for a layer on its
//! own and for two stacked layers.

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor, TensorData};
use burn_sparse_layers::{Compute, SparseLinear};
use burn_sparse_mask::SparseRng;
use burn_sparse_test_support::device;

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

/// A `k x n` layer at `density`, its weights and mask drawn from `seed`, on `device`.
fn layer(
    k: usize,
    n: usize,
    density: f64,
    seed: u64,
    compute: Compute,
    d: &Device,
) -> SparseLinear {
    let mut r = SparseRng::new(seed);
    let w: Vec<f32> = (0..k * n).map(|_| r.next_f32() - 0.5).collect();
    let b: Vec<f32> = (0..n).map(|_| r.next_f32() - 0.5).collect();
    let mask: Vec<bool> = (0..k * n).map(|_| r.next_f64() < density).collect();
    let lin = Linear {
        weight: Param::from_tensor(
            Tensor::<2>::from_data(TensorData::new(w, [k, n]), d).require_grad(),
        ),
        bias: Some(Param::from_tensor(
            Tensor::<1>::from_data(TensorData::new(b, [n]), d).require_grad(),
        )),
    };
    SparseLinear::from_linear(&lin, &mask, compute).unwrap()
}

/// Outputs and gradients of `relu(x l1) l2` against fixed output weights: y, dv1, db1, dv2,
/// db2, dx.
fn run(l1: &SparseLinear, l2: &SparseLinear, x: &[f32], batch: usize, d: &Device) -> Vec<Vec<f32>> {
    let k = l1.d_input;
    let x = Tensor::<2>::from_data(TensorData::new(x.to_vec(), [batch, k]), d).require_grad();
    let y = l2.forward(relu(l1.forward(x.clone())));
    let n = l2.d_output;
    let mut r = SparseRng::new(77);
    let c: Vec<f32> = (0..batch * n).map(|_| r.next_f32()).collect();
    let c = Tensor::<2>::from_data(TensorData::new(c, [batch, n]), d);
    let g = (y.clone() * c).sum().backward();
    // A layer without non-zeros has no values to differentiate: an empty gradient.
    let values = |l: &SparseLinear| l.values.grad(&g).map_or_else(Vec::new, host);
    vec![
        host(y),
        values(l1),
        host(l1.bias.as_ref().unwrap().grad(&g).unwrap()),
        values(l2),
        host(l2.bias.as_ref().unwrap().grad(&g).unwrap()),
        host(x.grad(&g).unwrap()),
    ]
}

fn close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let tol = 1e-4 * (1.0 + x.abs().max(y.abs()));
        assert!((x - y).abs() <= tol, "{what}[{i}]: {x} vs {y}");
    }
}

#[test]
fn fallback_on_the_test_device_equals_the_kernels_on_flex() {
    let flex = Device::flex().autodiff();
    let test = device();
    let mut r = SparseRng::new(5);
    for (k, h, n, batch, d1, d2) in [
        (40, 24, 6, 16, 0.1, 0.5),
        (33, 17, 5, 7, 0.05, 1.0),
        // A fully dense first layer and an output layer with no non-zeros at all.
        (8, 8, 3, 1, 1.0, 0.0),
    ] {
        let x: Vec<f32> = (0..batch * k).map(|_| r.next_f32() * 2.0 - 1.0).collect();
        let kernels = (
            layer(k, h, d1, 1, Compute::Sparse, &flex),
            layer(h, n, d2, 2, Compute::Sparse, &flex),
        );
        let want = run(&kernels.0, &kernels.1, &x, batch, &flex);
        // Forced masked-dense on the test device (on flex too: the fallback itself).
        let masked = (
            layer(k, h, d1, 1, Compute::Masked, &test),
            layer(h, n, d2, 2, Compute::Masked, &test),
        );
        assert!(!masked.0.uses_kernels() && !masked.1.uses_kernels());
        let got = run(&masked.0, &masked.1, &x, batch, &test);
        for (what, (a, b)) in ["y", "dv1", "db1", "dv2", "db2", "dx"]
            .iter()
            .zip(want.iter().zip(&got))
        {
            close(a, b, &format!("{k}x{h}x{n} batch {batch}: {what}"));
        }
        // `Auto` and `Sparse` on the test device: the kernels on flex, the fallback elsewhere.
        let auto = (
            layer(k, h, d1, 1, Compute::Sparse, &test),
            layer(h, n, d2, 2, Compute::Auto, &test),
        );
        let got = run(&auto.0, &auto.1, &x, batch, &test);
        for (what, (a, b)) in ["y", "dv1", "db1", "dv2", "db2", "dx"]
            .iter()
            .zip(want.iter().zip(&got))
        {
            close(a, b, &format!("{k}x{h}x{n} batch {batch} (auto): {what}"));
        }
    }
}
