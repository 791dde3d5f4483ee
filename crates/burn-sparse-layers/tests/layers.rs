//! SparseLinear: the kernel path against the masked-dense path (forward and every gradient),
//! conversions with burn's Linear, records, and bad input.

use burn::module::{Module, Param};
use burn::nn::LinearConfig;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_sparse_kernels::SparsePattern;
use burn_sparse_layers::{Compute, LayerError, SparseLinear, SparseLinearConfig};
use burn_sparse_mask::SparseRng;
use proptest::prelude::*;

fn device() -> Device {
    Device::flex().autodiff()
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

fn tensor2(v: Vec<f32>, shape: [usize; 2], device: &Device) -> Tensor<2> {
    Tensor::<2>::from_data(TensorData::new(v, shape), device)
}

/// A layer with a random pattern and values from `seed` (burn's global RNG is not used).
fn layer(
    k: usize,
    n: usize,
    density: f64,
    bias: bool,
    seed: u64,
    compute: Compute,
) -> SparseLinear {
    let device = device();
    let mut rng = SparseRng::new(seed);
    let mask: Vec<bool> = (0..k * n).map(|_| rng.next_f64() < density).collect();
    let p = SparsePattern::from_mask(k, n, &mask).unwrap();
    let vals: Vec<f32> = (0..p.nnz()).map(|_| rng.next_f32() * 2.0 - 1.0).collect();
    let values = Tensor::<1>::from_data(TensorData::new(vals, [p.nnz()]), &device).require_grad();
    let b = bias.then(|| {
        let bv: Vec<f32> = (0..n).map(|_| rng.next_f32() - 0.5).collect();
        Param::from_tensor(Tensor::<1>::from_data(TensorData::new(bv, [n]), &device).require_grad())
    });
    SparseLinear::from_parts(p, Param::from_tensor(values), b, compute).unwrap()
}

fn with_compute(l: &SparseLinear, compute: Compute) -> SparseLinear {
    let mut c = l.clone();
    c.compute = compute;
    c
}

fn close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * (1.0 + y.abs()),
            "{what}[{i}]: {x} vs {y}"
        );
    }
}

/// Forward and all gradients of `loss = sum(y * g)` with a random `g`, for one layer.
fn one_layer(
    l: &SparseLinear,
    x: &[f32],
    b: usize,
    g: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Option<Vec<f32>>) {
    let device = device();
    let x = tensor2(x.to_vec(), [b, l.d_input], &device).require_grad();
    let y = l.forward(x.clone());
    let loss = (y.clone() * tensor2(g.to_vec(), [b, l.d_output], &device)).sum();
    let grads = loss.backward();
    (
        host(y),
        host(l.values.grad(&grads).unwrap()),
        host(x.grad(&grads).unwrap()),
        l.bias.as_ref().map(|bb| host(bb.grad(&grads).unwrap())),
    )
}

/// [`one_layer`] through `forward_probe` with the dense `probe`: also the probe's gradient.
fn one_layer_probed(
    l: &SparseLinear,
    x: &[f32],
    b: usize,
    g: &[f32],
    probe: &[f32],
) -> [Vec<f32>; 5] {
    let device = device();
    let x = tensor2(x.to_vec(), [b, l.d_input], &device).require_grad();
    let probe = tensor2(probe.to_vec(), [l.d_input, l.d_output], &device).require_grad();
    let y = l.forward_probe(x.clone(), probe.clone());
    let loss = (y.clone() * tensor2(g.to_vec(), [b, l.d_output], &device)).sum();
    let grads = loss.backward();
    [
        host(y),
        host(l.values.grad(&grads).unwrap()),
        host(x.grad(&grads).unwrap()),
        host(probe.grad(&grads).unwrap()),
        l.bias
            .as_ref()
            .map(|bb| host(bb.grad(&grads).unwrap()))
            .unwrap_or_default(),
    ]
}

proptest! {
    #![proptest_config(burn_sparse_test_support::proptest_config(24))]
    #[test]
    fn probed_kernel_path_equals_masked_path(
        k in 1usize..40, n in 1usize..40, density in 0.0f64..1.0, batch in 1usize..80,
        bias in any::<bool>(), zero_probe in any::<bool>(), seed in any::<u64>(),
    ) {
        let sparse = layer(k, n, density, bias, seed, Compute::Sparse);
        prop_assume!(sparse.nnz() > 0);
        let masked = with_compute(&sparse, Compute::Masked);
        let mut rng = SparseRng::new(seed ^ 2);
        let x: Vec<f32> = (0..batch * k).map(|_| rng.next_f32() * 2.0 - 1.0).collect();
        let g: Vec<f32> = (0..batch * n).map(|_| rng.next_f32() * 2.0 - 1.0).collect();
        // RigL's probe is zero; a non-zero one must still be added exactly.
        let probe: Vec<f32> = (0..k * n)
            .map(|_| if zero_probe { 0.0 } else { rng.next_f32() - 0.5 })
            .collect();
        let a = one_layer_probed(&sparse, &x, batch, &g, &probe);
        let b = one_layer_probed(&masked, &x, batch, &g, &probe);
        for (i, what) in ["y", "d values", "dx", "d probe", "d bias"].into_iter().enumerate() {
            close(&a[i], &b[i], 1e-5, what);
        }
        // The probe's gradient is the dense dL/dW: at each slot's position, the slot's gradient.
        let at_slots = sparse.pattern().unwrap().gather(&a[3]).unwrap();
        close(&at_slots, &a[1], 1e-5, "probe grad at the slots");
    }
}

proptest! {
    #![proptest_config(burn_sparse_test_support::proptest_config(24))]
    #[test]
    fn kernel_path_equals_masked_path(
        k in 1usize..40, n in 1usize..40, density in 0.0f64..1.0, batch in 1usize..80,
        bias in any::<bool>(), seed in any::<u64>(),
    ) {
        let sparse = layer(k, n, density, bias, seed, Compute::Sparse);
        prop_assume!(sparse.nnz() > 0);
        let masked = with_compute(&sparse, Compute::Masked);
        assert!(sparse.uses_kernels());
        assert!(!masked.uses_kernels());
        let mut rng = SparseRng::new(seed ^ 1);
        let x: Vec<f32> = (0..batch * k).map(|_| rng.next_f32() * 2.0 - 1.0).collect();
        let g: Vec<f32> = (0..batch * n).map(|_| rng.next_f32() * 2.0 - 1.0).collect();
        let a = one_layer(&sparse, &x, batch, &g);
        let b = one_layer(&masked, &x, batch, &g);
        // f32 sums of at most 80 products of numbers in [-1, 1], in different orders.
        close(&a.0, &b.0, 1e-5, "y");
        close(&a.1, &b.1, 1e-5, "d values");
        close(&a.2, &b.2, 1e-5, "dx");
        if let (Some(x), Some(y)) = (&a.3, &b.3) { close(x, y, 1e-5, "d bias"); }
    }
}

#[test]
fn edge_layers() {
    // A fully dense layer, a one-weight layer, and empty rows and columns.
    for (k, n, density) in [(6, 5, 1.01), (7, 3, 0.05), (1, 1, 1.01), (30, 2, 0.1)] {
        let sparse = layer(k, n, density, true, 3, Compute::Sparse);
        if sparse.nnz() == 0 {
            continue;
        }
        let masked = with_compute(&sparse, Compute::Masked);
        for batch in [1, 16, 65] {
            let x: Vec<f32> = (0..batch * k).map(|i| (i % 7) as f32 - 3.0).collect();
            let g: Vec<f32> = (0..batch * n).map(|i| (i % 5) as f32 - 2.0).collect();
            let a = one_layer(&sparse, &x, batch, &g);
            let b = one_layer(&masked, &x, batch, &g);
            close(&a.0, &b.0, 1e-5, "y");
            close(&a.1, &b.1, 1e-5, "dv");
            close(&a.2, &b.2, 1e-5, "dx");
        }
    }
    let one = SparsePattern::new(4, 3, vec![2], vec![1]).unwrap();
    let d = device();
    let l = SparseLinear::from_parts(
        one,
        Param::from_tensor(Tensor::<1>::from_floats([2.0], &d).require_grad()),
        None,
        Compute::Sparse,
    )
    .unwrap();
    let x = tensor2(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], [2, 4], &d);
    // y[:, 1] = 2 * x[:, 2]; other columns 0.
    assert_eq!(host(l.forward(x)), vec![0.0, 6.0, 0.0, 0.0, 14.0, 0.0]);
}

/// Two sparse layers with bias and ReLU between them: the hidden activation stays
/// feature-major from one op to the next, and every gradient still matches masked-dense.
#[test]
fn stacked_layers_match_masked_path() {
    let l1 = layer(50, 40, 0.2, true, 1, Compute::Sparse);
    let l2 = layer(40, 30, 0.2, true, 2, Compute::Sparse);
    let l3 = LinearConfig::new(30, 10).init(&device());
    // `layer_relu`: the layers' own `SparseLinear::relu` (ReLU on the transpose when on the
    // kernels) instead of burn's `relu`; both must give the masked-dense values and gradients.
    let run = |c: Compute, layer_relu: bool| {
        let (a, b) = (with_compute(&l1, c), with_compute(&l2, c));
        let act = |l: &SparseLinear, y: Tensor<2>| if layer_relu { l.relu(y) } else { relu(y) };
        let device = device();
        let mut rng = SparseRng::new(9);
        let x: Vec<f32> = (0..70 * 50).map(|_| rng.next_f32()).collect();
        let x = tensor2(x, [70, 50], &device).require_grad();
        let y = l3.forward(act(&b, b.forward(act(&a, a.forward(x.clone())))));
        let loss = (y.clone() * y.clone()).sum();
        let grads = loss.backward();
        (
            host(y),
            host(a.values.grad(&grads).unwrap()),
            host(b.values.grad(&grads).unwrap()),
            host(a.bias.as_ref().unwrap().grad(&grads).unwrap()),
            host(x.grad(&grads).unwrap()),
            host(l3.weight.grad(&grads).unwrap()),
        )
    };
    let m = run(Compute::Masked, false);
    assert_eq!(
        run(Compute::Masked, true),
        m,
        "masked-dense: SparseLinear::relu is relu"
    );
    for layer_relu in [false, true] {
        let s = run(Compute::Sparse, layer_relu);
        close(&s.0, &m.0, 1e-4, "y");
        close(&s.1, &m.1, 1e-4, "dv1");
        close(&s.2, &m.2, 1e-4, "dv2");
        close(&s.3, &m.3, 1e-4, "db1");
        close(&s.4, &m.4, 1e-4, "dx");
        close(&s.5, &m.5, 1e-4, "dW3");
    }
}

/// `forward_relu` (bias and ReLU in one in-place pass, and one backward pass) and the layer's
/// `relu` (in place) give exactly burn's `relu(forward(x))`: the same bits of the output and
/// of every gradient, with and without bias, for a ReLU whose output gradient arrives
/// feature-major (from the next sparse layer) and row-major (from a dense `Linear`), on the
/// kernels and on the masked-dense path; a NaN stays NaN, as in burn's ReLU.
#[test]
fn fused_bias_relu_is_burns_relu_bit_for_bit() {
    let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
    for bias in [true, false] {
        for compute in [Compute::Sparse, Compute::Masked] {
            let l1 = layer(50, 40, 0.2, bias, 11, compute);
            let l2 = layer(40, 30, 0.2, bias, 12, compute);
            let l3 = LinearConfig::new(30, 10).init(&device());
            // 0: burn's relu; 1: the layer's relu; 2: forward_relu.
            let run = |how: u8, nan: bool| {
                let act = |l: &SparseLinear, x: Tensor<2>| match how {
                    0 => relu(l.forward(x)),
                    1 => l.relu(l.forward(x)),
                    _ => l.forward_relu(x),
                };
                let device = device();
                let mut rng = SparseRng::new(21);
                let mut x: Vec<f32> = (0..70 * 50).map(|_| rng.next_f32() * 2.0 - 1.0).collect();
                if nan {
                    x[3 * 50 + 7] = f32::NAN;
                }
                let x = tensor2(x, [70, 50], &device).require_grad();
                let y = l3.forward(act(&l2, act(&l1, x.clone())));
                let loss = (y.clone() * y.clone()).sum();
                let grads = loss.backward();
                let b =
                    |l: &SparseLinear| l.bias.as_ref().map(|b| bits(host(b.grad(&grads).unwrap())));
                (
                    bits(host(y)),
                    bits(host(l1.values.grad(&grads).unwrap())),
                    bits(host(l2.values.grad(&grads).unwrap())),
                    b(&l1),
                    b(&l2),
                    bits(host(x.grad(&grads).unwrap())),
                    bits(host(l3.weight.grad(&grads).unwrap())),
                )
            };
            for nan in [false, true] {
                let want = run(0, nan);
                assert_eq!(
                    run(1, nan),
                    want,
                    "relu, bias {bias}, {compute:?}, NaN {nan}"
                );
                assert_eq!(
                    run(2, nan),
                    want,
                    "forward_relu, bias {bias}, {compute:?}, NaN {nan}"
                );
            }
        }
    }
}

#[test]
fn linear_round_trip_is_exact() {
    let d = device();
    let lin = LinearConfig::new(20, 12).init(&d);
    let mut rng = SparseRng::new(4);
    let mask: Vec<bool> = (0..240).map(|_| rng.next_f64() < 0.25).collect();
    let sparse = SparseLinear::from_linear(&lin, &mask, Compute::Auto).unwrap();
    assert_eq!(sparse.nnz(), mask.iter().filter(|&&m| m).count());
    let back = sparse.to_linear().unwrap();
    // The ids survive the round trip: a mask or optimizer keyed by them still names the layer.
    assert_eq!(sparse.values.id, lin.weight.id);
    assert_eq!(back.weight.id, lin.weight.id);
    let w = host(lin.weight.val());
    let w2 = host(back.weight.val());
    for i in 0..240 {
        assert_eq!(w2[i], if mask[i] { w[i] } else { 0.0 }, "weight {i}");
    }
    assert_eq!(
        host(back.bias.unwrap().val()),
        host(lin.bias.clone().unwrap().val())
    );
    // And the sparse layer computes what the masked dense one does.
    let x = Tensor::<2>::ones([3, 20], &d);
    close(
        &host(sparse.forward(x.clone())),
        &host(sparse.to_linear().unwrap().forward(x)),
        1e-5,
        "y",
    );
    let bad = SparseLinear::from_linear(&lin, &mask[..10], Compute::Auto);
    assert!(matches!(bad, Err(LayerError::Shape { what: "mask", .. })));
}

#[test]
fn record_round_trip_rebuilds_the_pattern() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("layer.bpk");
    let d = device();
    let cfg = SparseLinearConfig::new(30, 20).with_density(0.2);
    let a = cfg.clone().with_seed(5).init(&d).unwrap();
    burn_sparse_mask::checkpoint::save_module_atomic(a.clone(), &path).unwrap();
    // A fresh layer with another pattern of the same size takes the saved one (as a dense
    // record loads into a layer of the same shape).
    let fresh = cfg.clone().with_seed(6).init(&d).unwrap();
    let fresh_pattern = fresh.pattern().unwrap();
    let loaded = burn_sparse_mask::checkpoint::load_module(fresh, &path).unwrap();
    assert_eq!(loaded.nnz(), a.nnz());
    assert_eq!(*loaded.pattern().unwrap(), *a.pattern().unwrap());
    assert_ne!(*loaded.pattern().unwrap(), *fresh_pattern);
    let x = Tensor::<2>::ones([4, 30], &device());
    assert_eq!(host(loaded.forward(x.clone())), host(a.forward(x)));
    // A record of another size is a typed error, not a silent resize.
    let other = cfg.with_density(0.5).init(&d).unwrap();
    assert!(burn_sparse_mask::checkpoint::load_module(other, &path).is_err());
}

#[test]
fn corrupt_coordinates_are_an_error() {
    let d = device();
    let mut l = layer(6, 5, 0.5, false, 7, Compute::Sparse);
    let nnz = l.nnz();
    let mut c = vec![0i64; 2 * nnz];
    c[0] = 99; // row 99 of a 6-row weight
    l.coords = Param::initialized(
        burn::module::ParamId::new(),
        Tensor::<2, Int>::from_data(TensorData::new(c, [2, nnz]), &d),
    );
    let err = l.try_forward(Tensor::<2>::ones([2, 6], &d)).unwrap_err();
    assert!(matches!(err, LayerError::Kernel(_)), "{err}");
    assert!(matches!(
        l.try_forward(Tensor::<2>::ones([2, 7], &d)),
        Err(LayerError::Shape { what: "input", .. })
    ));
    assert!(matches!(
        SparseLinearConfig::new(4, 4).with_density(0.0).init(&d),
        Err(LayerError::InvalidDensity(_))
    ));
    assert!(matches!(
        SparseLinearConfig::new(4, 4)
            .with_density(f64::NAN)
            .init(&d),
        Err(LayerError::InvalidDensity(_))
    ));
}

#[test]
fn config_draws_exact_counts_and_is_deterministic() {
    let d = device();
    let a = SparseLinearConfig::new(784, 300)
        .with_density(0.05)
        .with_seed(3)
        .init(&d)
        .unwrap();
    let b = SparseLinearConfig::new(784, 300)
        .with_density(0.05)
        .with_seed(3)
        .init(&d)
        .unwrap();
    let c = SparseLinearConfig::new(784, 300)
        .with_density(0.05)
        .with_seed(4)
        .init(&d)
        .unwrap();
    assert_eq!(a.nnz(), 11_760); // round(0.05 * 235200)
    assert_eq!(*a.pattern().unwrap(), *b.pattern().unwrap());
    assert_ne!(*a.pattern().unwrap(), *c.pattern().unwrap());
    assert!(a.uses_kernels());
    // Auto keeps a dense-ish layer masked-dense.
    let dense = SparseLinearConfig::new(100, 10)
        .with_density(0.9)
        .init(&d)
        .unwrap();
    assert!(!dense.uses_kernels());
    // Higher-rank inputs: [2, 3, 784] -> [2, 3, 300].
    let y = a.forward(Tensor::<3>::ones([2, 3, 784], &d));
    assert_eq!(y.dims(), [2, 3, 300]);
}

#[test]
fn inference_without_autodiff() {
    let l = layer(16, 8, 0.3, true, 8, Compute::Sparse);
    let v = l.valid();
    assert!(v.uses_kernels());
    let x = Tensor::<2>::ones([5, 16], &Device::flex());
    let masked = with_compute(&v, Compute::Masked);
    close(
        &host(v.forward(x.clone())),
        &host(masked.forward(x)),
        1e-5,
        "y",
    );
}

#[test]
fn pattern_cache_is_reused_until_coords_change() {
    let l = layer(12, 9, 0.3, true, 10, Compute::Sparse);
    let a = l.pattern().unwrap();
    // Clones and steps keep the coords tensor: the host pattern is not rebuilt.
    assert!(std::sync::Arc::ptr_eq(&a, &l.pattern().unwrap()));
    assert!(std::sync::Arc::ptr_eq(&a, &l.clone().pattern().unwrap()));
    // New coords (a topology change) give a new pattern, equal to one built from scratch.
    let mut bits = l.active_mask().unwrap();
    let on = bits.iter().position(|&b| b).unwrap();
    let off = bits.iter().position(|&b| !b).unwrap();
    bits.swap(on, off);
    let (m, keep) = l.with_active(&bits, &[]).unwrap();
    let b = m.pattern().unwrap();
    assert!(!std::sync::Arc::ptr_eq(&a, &b));
    assert_eq!(m.active_mask().unwrap(), bits);
    assert_eq!(keep.iter().filter(|&&k| !k).count(), 1);
    // The moved slot starts at 0; every other slot keeps its value; ids are kept.
    let (va, vb) = (l.host_values().unwrap(), m.host_values().unwrap());
    for s in 0..l.nnz() {
        assert_eq!(vb[s], if keep[s] { va[s] } else { 0.0 });
    }
    assert_eq!(m.values.id, l.values.id);
    assert_eq!(m.coords.id, l.coords.id);
    // A mask with another number of non-zeros is refused.
    let mut more = bits.clone();
    more[bits.iter().position(|&b| !b).unwrap()] = true;
    assert!(matches!(
        l.with_active(&more, &[]),
        Err(LayerError::Shape { .. })
    ));
}

/// The layer config draws its positions without enumerating the layer (Floyd's algorithm);
/// its counts are the enumerating masked path's (`random_masks`, an exact top-k over every
/// position), on small layers where that path runs.
#[test]
fn counts_without_enumeration_equal_the_enumerating_path() {
    use burn_sparse_mask::{ParamFilter, Sparsity, SparsityDistribution, random_masks};
    let d = device();
    for (k, n) in [(1, 1), (3, 7), (30, 20), (784, 300), (100, 10)] {
        for density in [1e-3, 0.01, 0.05, 0.2, 0.5, 0.99, 1.0] {
            let layer = SparseLinearConfig::new(k, n)
                .with_density(density)
                .with_seed(11)
                .init(&d)
                .unwrap();
            let lin = LinearConfig::new(k, n).init(&d);
            let masks = random_masks(
                &lin,
                &ParamFilter::new(),
                Sparsity::new(1.0 - density).unwrap(),
                &SparsityDistribution::Uniform,
                11,
            );
            match masks {
                Ok(m) => assert_eq!(
                    layer.nnz(),
                    m.layer("weight").unwrap().nnz(),
                    "{k}x{n} at density {density}"
                ),
                // The masked path refuses to empty a layer; a sparse layer keeps one weight.
                Err(burn_sparse_mask::MaskError::EmptyLayer { .. }) => assert_eq!(layer.nnz(), 1),
                Err(e) => panic!("{e}"),
            }
            assert_eq!(
                layer.active_mask().unwrap().iter().filter(|&&b| b).count(),
                layer.nnz()
            );
        }
    }
}

/// A 65536 x 65536 layer (4.3e9 positions, 17 GB as a dense f32 weight) with 2^18 non-zeros is
/// built from its non-zeros alone: exact count, same seed same pattern, positions spread over
/// the whole layer.
#[test]
fn a_layer_of_four_billion_positions_is_built_from_its_non_zeros() {
    let d = Device::flex();
    let w = 65536usize;
    let density = 1.0 / 16384.0;
    let make = |seed| {
        SparseLinearConfig::new(w, w)
            .with_density(density)
            .with_seed(seed)
            .with_sparse_fan_in(true)
            .init(&d)
            .unwrap()
    };
    let a = make(5);
    assert_eq!(a.nnz(), 262_144);
    let p = a.pattern().unwrap();
    assert_eq!(*p, *make(5).pattern().unwrap());
    assert_ne!(*p, *make(6).pattern().unwrap());
    // Uniform positions: the mean row and column are near the middle (std of the mean of
    // 262144 uniform draws on [0, 65536) is 37).
    let mean = |v: &[u32]| v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
    for m in [mean(p.slot_rows()), mean(p.slot_cols())] {
        assert!((m - 32767.5).abs() < 400.0, "mean {m}");
    }
    // The host memory of the layer follows the non-zeros.
    assert!(
        p.heap_bytes() < 64 * a.nnz() + 32 * w,
        "{} bytes",
        p.heap_bytes()
    );
}

/// Sparse fan-in: with a constant initialiser of 1, slot values are exactly
/// `sqrt(d_input / f_col)` for their column's number of active inputs `f_col`; off, they are 1.
#[test]
fn sparse_fan_in_scales_each_unit_by_its_active_inputs() {
    use burn::module::Initializer;
    let d = device();
    let cfg = SparseLinearConfig::new(40, 6)
        .with_density(0.3)
        .with_seed(2)
        .with_initializer(Initializer::Constant { value: 1.0 });
    let plain = cfg.init(&d).unwrap();
    assert!(plain.host_values().unwrap().iter().all(|&v| v == 1.0));
    let l = cfg.clone().with_sparse_fan_in(true).init(&d).unwrap();
    assert_eq!(*l.pattern().unwrap(), *plain.pattern().unwrap());
    let p = l.pattern().unwrap();
    let mut fan = [0usize; 6];
    for &c in p.slot_cols() {
        fan[c as usize] += 1;
    }
    let values = l.host_values().unwrap();
    for (s, &c) in p.slot_cols().iter().enumerate() {
        let want = (40.0f64 / fan[c as usize] as f64).sqrt() as f32;
        assert_eq!(
            values[s], want,
            "slot {s}, column {c} with {} inputs",
            fan[c as usize]
        );
    }
    // A bias is not rescaled.
    assert_eq!(host(l.bias.as_ref().unwrap().val()), vec![1.0; 6]);
}

/// `with_moves` moves exactly the named slots, in O(nnz), keeping ids and every other slot.
#[test]
fn with_moves_moves_only_the_named_slots() {
    use burn_sparse_layers::SlotMove;
    let d = device();
    let l = SparseLinearConfig::new(5, 4)
        .with_density(0.3)
        .with_seed(1)
        .init(&d)
        .unwrap();
    let p = l.pattern().unwrap();
    let before = l.host_values().unwrap();
    let free = (0..20)
        .find(|&f| p.slot_at(f / 4, f % 4).is_none())
        .unwrap();
    let m = SlotMove {
        slot: 2,
        row: (free / 4) as u32,
        col: (free % 4) as u32,
        value: 0.0,
    };
    let moved = l.with_moves(&[m]).unwrap();
    let q = moved.pattern().unwrap();
    assert_eq!(q.slot_at(free / 4, free % 4), Some(2));
    assert_eq!(q.flat_index(2), free);
    let after = moved.host_values().unwrap();
    for s in 0..l.nnz() {
        if s != 2 {
            assert_eq!(q.flat_index(s), p.flat_index(s));
            assert_eq!(after[s], before[s]);
        }
    }
    assert_eq!(after[2], 0.0);
    assert_eq!(
        (moved.values.id, moved.coords.id),
        (l.values.id, l.coords.id)
    );
    // Onto an active position: a typed error, nothing changed.
    let taken = SlotMove {
        slot: 2,
        row: p.slot_rows()[3],
        col: p.slot_cols()[3],
        value: 1.0,
    };
    assert!(matches!(l.with_moves(&[taken]), Err(LayerError::Kernel(_))));
    let far = SlotMove { slot: 99, ..m };
    assert!(matches!(l.with_moves(&[far]), Err(LayerError::Kernel(_))));
}

/// The op's transposed copies live in pooled buffers that hold the previous user's values:
/// poisoned with NaN beforehand, every output and gradient still equals the masked path's, step
/// after step (each transpose writes every value it later reads).
#[test]
fn pooled_buffers_never_leak_stale_values() {
    use burn_sparse_layers::scratch::{Buf, POOL_BUFFERS};
    let (k, n, batch) = (37, 23, 19);
    let sparse = layer(k, n, 0.3, true, 5, Compute::Sparse);
    let masked = with_compute(&sparse, Compute::Masked);
    let mut rng = SparseRng::new(9);
    for step in 0..4 {
        // Buffers of exactly the sizes the op asks for (xᵀ and dyᵀ), and some larger ones.
        let poison: Vec<Buf> = [k * batch, n * batch, k * batch + 5, 3 * n * batch]
            .into_iter()
            .cycle()
            .take(POOL_BUFFERS)
            .map(|len| {
                let mut b = Buf::for_overwrite(len);
                b.fill(f32::NAN);
                b
            })
            .collect();
        drop(poison);
        let x: Vec<f32> = (0..batch * k).map(|_| rng.next_f32() * 2.0 - 1.0).collect();
        // A row-major gradient (not the op's own layout), so dyᵀ is a transposed copy too.
        let g: Vec<f32> = (0..batch * n).map(|_| rng.next_f32() * 2.0 - 1.0).collect();
        let a = one_layer(&sparse, &x, batch, &g);
        let b = one_layer(&masked, &x, batch, &g);
        close(&a.0, &b.0, 1e-5, &format!("step {step}: y"));
        close(&a.1, &b.1, 1e-5, &format!("step {step}: d values"));
        close(&a.2, &b.2, 1e-5, &format!("step {step}: dx"));
        close(
            a.3.as_ref().unwrap(),
            b.3.as_ref().unwrap(),
            1e-5,
            &format!("step {step}: d bias"),
        );
    }
}
