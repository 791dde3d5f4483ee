//! Hand-computed and analytic checks of every score.

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Int, Tensor, TensorData};
use burn_sparse_mask::prelude::*;
use burn_sparse_mask::to_host;
use burn_sparse_saliency::*;
use burn_sparse_test_support::{Mlp, device};

#[derive(Module, Debug)]
struct W2 {
    w: Param<Tensor<2>>,
}

/// ALGORITHMS.md's SNIP check: W0 = [[.5,-.3],[.1,.8]], x = (1,1), y* = (0,1),
/// L = ||W x - y*||^2. dL/dW = 2 (Wx - y*) x^T = [[.4,.4],[-.2,-.2]], so |g * w| =
/// [[.20,.12],[.02,.16]] (sum .5; normalised [[.4,.24],[.04,.32]]); W21 goes first.
#[test]
fn snip_two_by_two_worked_example() {
    let d = device();
    let m = W2 {
        w: Param::from_data([[0.5f32, -0.3], [0.1, 0.8]], &d),
    };
    let x = Tensor::<2>::from_data([[1.0f32], [1.0]], &d);
    let y = Tensor::<2>::from_data([[0.0f32], [1.0]], &d);
    let loss: LossFn<W2> = Box::new(move |m: &W2| {
        let r = m.w.val().matmul(x.clone()) - y.clone();
        (r.clone() * r).sum()
    });
    let mut snip = Snip::from_losses(vec![loss]).unwrap();
    let masks = MaskSet::dense(&m, &ParamFilter::new()).unwrap();
    let s = snip.scores(&m, &masks).unwrap();
    for (got, want) in s[0].iter().zip([0.20f32, 0.12, 0.02, 0.16]) {
        assert!((got - want / 0.5).abs() < 1e-5, "{:?}", s[0]);
    }
    // Pruning one of four (sparsity .25) removes W21 (flat index 2).
    let (m, masks) = prune_at_init(
        m,
        &ParamFilter::new(),
        &PruneConfig::new(Sparsity::new(0.25).unwrap()),
        &mut snip,
    )
    .unwrap();
    assert_eq!(masks.layers()[0].bits(), &[true, true, false, true]);
    assert_eq!(to_host(m.w.val()).unwrap(), vec![0.5, -0.3, 0.0, 0.8]);
}

#[derive(Module, Debug)]
struct Vec3 {
    w: Param<Tensor<2>>,
}

const A: [[f32; 3]; 3] = [[2.0, 0.5, 0.0], [0.5, 1.0, -0.3], [0.0, -0.3, 3.0]];

fn quad(d: &burn::tensor::Device) -> LossFn<Vec3> {
    // L = 0.5 w^T A w: g = A w, H = A.
    let a = Tensor::<2>::from_data(A, d);
    Box::new(move |m: &Vec3| {
        let w = m.w.val();
        (w.clone().transpose().matmul(a.clone().matmul(w)) * 0.5).reshape([1])
    })
}

fn matvec(v: &[f32]) -> Vec<f32> {
    A.iter()
        .map(|r| r.iter().zip(v).map(|(a, b)| a * b).sum())
        .collect()
}

#[test]
fn finite_difference_hvp_matches_known_hessian() {
    let d = device();
    let m = Vec3 {
        w: Param::from_data([[1.0f32], [-2.0], [0.5]], &d),
    };
    let masks = MaskSet::dense(&m, &ParamFilter::new().with_min_rank(2)).unwrap();
    let v = vec![vec![0.3f32, -1.0, 2.0]];
    let loss = quad(&d);
    let hv = hessian_vector_product(&m, &masks, &*loss, &v, 1e-2).unwrap();
    let want = matvec(&v[0]);
    for (g, w) in hv[0].iter().zip(&want) {
        assert!((g - w).abs() < 1e-3, "{:?} vs {want:?}", hv[0]);
    }
}

#[test]
fn grasp_keeps_lowest_reference_score() {
    // g = A w, Hg = A A w; keep-score w * Hg; the reference removes the highest -w*Hg.
    let d = device();
    let w0 = [1.0f32, -2.0, 0.5];
    let m = Vec3 {
        w: Param::from_data([[w0[0]], [w0[1]], [w0[2]]], &d),
    };
    let g = matvec(&w0);
    let hg = matvec(&g);
    let keep: Vec<f32> = w0.iter().zip(&hg).map(|(w, h)| w * h).collect();
    let mut grasp = Grasp::from_loss(quad(&d));
    let masks = MaskSet::dense(&m, &ParamFilter::new()).unwrap();
    let s = grasp.scores(&m, &masks).unwrap();
    for (got, want) in s[0].iter().zip(&keep) {
        assert!(
            (got - want).abs() < 1e-2 * want.abs().max(1.0),
            "{:?} vs {keep:?}",
            s[0]
        );
    }
    // Remove one: the position with the highest -w*Hg, i.e. the lowest keep-score.
    let worst = (0..3).min_by(|&a, &b| keep[a].total_cmp(&keep[b])).unwrap();
    let (_, masks) = prune_at_init(
        m,
        &ParamFilter::new(),
        &PruneConfig::new(Sparsity::new(0.3).unwrap()),
        &mut grasp,
    )
    .unwrap();
    let bits = masks.layers()[0].bits();
    assert!(
        !bits[worst] && bits.iter().filter(|b| **b).count() == 2,
        "{bits:?} {keep:?}"
    );
}

#[derive(Module, Debug)]
struct NoBias {
    a: Linear,
    b: Linear,
    c: Linear,
}

fn nobias_forward(m: &NoBias, x: Tensor<4>) -> Tensor<2> {
    let [n, c, h, w] = x.dims();
    let x = x.reshape([n, c * h * w]);
    m.c.forward(relu(m.b.forward(relu(m.a.forward(x)))))
}

#[test]
fn synflow_conserves_per_layer_score_sums() {
    // For a bias-free ReLU net on |w| and an all-ones input, sum(w * dR/dw) = R in every layer.
    let d = device();
    let m = NoBias {
        a: LinearConfig::new(6, 5).with_bias(false).init(&d),
        b: LinearConfig::new(5, 4).with_bias(false).init(&d),
        c: LinearConfig::new(4, 3).with_bias(false).init(&d),
    };
    let masks = MaskSet::dense(&m, &ParamFilter::new()).unwrap();
    let mut sf = SynFlow::new(nobias_forward, [1, 1, 6]);
    let s = sf.scores(&m, &masks).unwrap();
    let sums: Vec<f64> = s
        .iter()
        .map(|l| l.iter().map(|&x| x as f64).sum())
        .collect();
    for x in &sums {
        assert!((x - sums[0]).abs() <= 1e-4 * sums[0].abs(), "{sums:?}");
    }
    assert!(sums[0] > 0.0);
    // 100 rounds: exact count, nested masks, original signs restored.
    let w_before = to_host(m.a.weight.val()).unwrap();
    let (m2, masks) = prune_at_init(
        m,
        &ParamFilter::new(),
        &PruneConfig::new(Sparsity::new(0.8).unwrap()).with_rounds(100),
        &mut sf,
    )
    .unwrap();
    assert_eq!(masks.nnz(), Sparsity::new(0.8).unwrap().kept(30 + 20 + 12));
    let w_after = to_host(m2.a.weight.val()).unwrap();
    for ((a, b), k) in w_before.iter().zip(&w_after).zip(masks.layers()[0].bits()) {
        assert_eq!(*b, if *k { *a } else { 0.0 });
    }
}

fn random_batch(d: &burn::tensor::Device, n: usize) -> Batch {
    let mut r = SparseRng::new(3);
    let x: Vec<f32> = (0..n * 12).map(|_| r.next_f32()).collect();
    let y: Vec<i64> = (0..n).map(|i| (i % 3) as i64).collect();
    (
        Tensor::<4>::from_data(TensorData::new(x, [n, 1, 1, 12]), d),
        Tensor::<1, Int>::from_data(TensorData::new(y, [n]), d),
    )
}

fn mlp_forward(m: &Mlp, x: Tensor<4>) -> Tensor<2> {
    let [n, c, h, w] = x.dims();
    m.forward(x.reshape([n, c * h * w]))
}

#[test]
fn every_score_gives_exact_counts_global_and_layerwise() {
    let d = device();
    let s = Sparsity::new(0.9).unwrap();
    for scope in [Scope::Global, Scope::Layerwise(Distribution::Erk)] {
        for method in [
            "magnitude",
            "random",
            "snip",
            "iterative-snip",
            "grasp",
            "synflow",
        ] {
            d.seed(1);
            let m = Mlp::new([12, 20, 16, 3], &d);
            let mut cfg = PruneConfig::new(s).with_scope(scope.clone());
            cfg.allow_empty_layers = true;
            let (m, masks) = match method {
                "magnitude" => prune_at_init(m, &ParamFilter::new(), &cfg, &mut Magnitude),
                "random" => prune_at_init(m, &ParamFilter::new(), &cfg, &mut RandomScore::new(4)),
                "snip" => prune_at_init(
                    m,
                    &ParamFilter::new(),
                    &cfg,
                    &mut Snip::cross_entropy(mlp_forward, vec![random_batch(&d, 6)]).unwrap(),
                ),
                "iterative-snip" => prune_at_init(
                    m,
                    &ParamFilter::new(),
                    &cfg.clone().with_rounds(5),
                    &mut Snip::cross_entropy(mlp_forward, vec![random_batch(&d, 6)]).unwrap(),
                ),
                "grasp" => prune_at_init(
                    m,
                    &ParamFilter::new(),
                    &cfg,
                    &mut Grasp::cross_entropy(mlp_forward, random_batch(&d, 6), 200.0).unwrap(),
                ),
                _ => prune_at_init(
                    m,
                    &ParamFilter::new(),
                    &cfg.clone().with_rounds(20),
                    &mut SynFlow::new(mlp_forward, [1, 1, 12]),
                ),
            }
            .unwrap();
            assert_eq!(
                masks.nnz(),
                s.kept(12 * 20 + 20 * 16 + 16 * 3),
                "{method} {scope:?}"
            );
            assert!(masks.violations(&m).unwrap().iter().all(|v| v.1 == 0));
        }
    }
}

#[test]
fn bad_inputs_are_typed_errors() {
    let d = device();
    let m = Mlp::new([12, 20, 16, 3], &d);
    // Empty batch list and empty batch.
    assert!(matches!(
        Snip::<Mlp>::cross_entropy(mlp_forward, vec![]),
        Err(SaliencyError::EmptyBatch { .. })
    ));
    let empty = (
        Tensor::<4>::zeros([0, 1, 1, 12], &d),
        Tensor::<1, Int>::zeros([0], &d),
    );
    assert!(matches!(
        Snip::cross_entropy(mlp_forward, vec![empty.clone()]),
        Err(SaliencyError::EmptyBatch { .. })
    ));
    assert!(matches!(
        Grasp::cross_entropy(mlp_forward, empty, 200.0),
        Err(SaliencyError::EmptyBatch { .. })
    ));
    // Non-finite loss.
    let nan: LossFn<Mlp> = Box::new(|m: &Mlp| m.l1.weight.val().sum() * f32::NAN);
    let mut snip = Snip::from_losses(vec![nan]).unwrap();
    let cfg = PruneConfig::new(Sparsity::new(0.5).unwrap());
    assert!(matches!(
        prune_at_init(m.clone(), &ParamFilter::new(), &cfg, &mut snip),
        Err(SaliencyError::NonFiniteLoss { method: "snip", .. })
    ));
    // A sparsity that empties a layer: magnitude where one layer's weights are all 0.
    let zeroed = MaskSet::from_bits(
        &m,
        ParamFilter::new().select(&m).unwrap(),
        vec![vec![false; 240], vec![true; 320], vec![true; 48]],
    )
    .unwrap()
    .apply(m);
    let cfg = PruneConfig::new(Sparsity::new(0.6).unwrap());
    let e = prune_at_init(zeroed, &ParamFilter::new(), &cfg, &mut Magnitude).unwrap_err();
    assert!(e.to_string().contains("l1.weight"), "{e}");
}
