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
    // Against an independent host computation in f64: with |w| and an all-ones input the ReLUs
    // pass everything, R = 1^T |A| |B| |C| 1 (burn's weights are [in, out]), and the score of
    // a weight is |w| * dR/d|w|, a product of the forward sums before it and the backward sums
    // after it. Every layer's scores then sum to R (conservation).
    let d = device();
    let m = NoBias {
        a: LinearConfig::new(6, 5).with_bias(false).init(&d),
        b: LinearConfig::new(5, 4).with_bias(false).init(&d),
        c: LinearConfig::new(4, 3).with_bias(false).init(&d),
    };
    let masks = MaskSet::dense(&m, &ParamFilter::new()).unwrap();
    let mut sf = SynFlow::new(nobias_forward, [1, 1, 6]);
    let s = sf.scores(&m, &masks).unwrap();
    let abs = |w: &Linear| -> Vec<f64> {
        to_host(w.weight.val())
            .unwrap()
            .iter()
            .map(|x| f64::from(x.abs()))
            .collect()
    };
    let (a, b, c) = (abs(&m.a), abs(&m.b), abs(&m.c));
    // Row vector times [n_in, n_out] matrix, and matrix times column vector.
    let vm = |v: &[f64], w: &[f64], n_out: usize| -> Vec<f64> {
        (0..n_out)
            .map(|j| {
                v.iter()
                    .enumerate()
                    .map(|(i, x)| x * w[i * n_out + j])
                    .sum()
            })
            .collect()
    };
    let mv = |w: &[f64], v: &[f64], n_in: usize| -> Vec<f64> {
        (0..n_in)
            .map(|i| {
                v.iter()
                    .enumerate()
                    .map(|(j, x)| x * w[i * v.len() + j])
                    .sum()
            })
            .collect()
    };
    let f0 = vec![1.0; 6];
    let f1 = vm(&f0, &a, 5);
    let f2 = vm(&f1, &b, 4);
    let b3 = vec![1.0; 3];
    let b2 = mv(&c, &b3, 4);
    let b1 = mv(&b, &b2, 5);
    let r: f64 = vm(&f2, &c, 3).iter().sum();
    let want = [(&a, &f0, &b1, 5usize), (&b, &f1, &b2, 4), (&c, &f2, &b3, 3)].map(
        |(w, fwd, bwd, n_out)| {
            (0..w.len())
                .map(|k| w[k] * fwd[k / n_out] * bwd[k % n_out])
                .collect::<Vec<f64>>()
        },
    );
    for (layer, (got, want)) in s.iter().zip(&want).enumerate() {
        for (g, w) in got.iter().zip(want) {
            assert!(*g >= 0.0, "layer {layer}: negative score {g}");
            assert!(
                (f64::from(*g) - w).abs() <= 1e-4 * w.abs().max(1e-6),
                "layer {layer}: {g} vs {w}"
            );
        }
        let sum: f64 = got.iter().map(|&x| f64::from(x)).sum();
        assert!(
            (sum - r).abs() <= 1e-4 * r,
            "layer {layer}: sum {sum} vs R {r}"
        );
    }
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
    for scope in [Scope::Global, Scope::Layerwise(SparsityDistribution::Erk)] {
        for method in [
            "magnitude",
            "random",
            "snip",
            "iterative-snip",
            "grasp",
            "synflow",
        ] {
            // From the test's own seeded stream, not burn's global RNG, which tests running in
            // parallel would share.
            let m = Mlp::seeded([12, 20, 16, 3], 1, &d);
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

/// Records the number of kept weights of the masks each round is scored under.
struct Recording<S> {
    inner: S,
    seen: Vec<usize>,
}

impl<M: Module, S: Saliency<M>> Saliency<M> for Recording<S> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn scores(
        &mut self,
        model: &M,
        masks: &MaskSet,
    ) -> burn_sparse_saliency::Result<Vec<Vec<f32>>> {
        self.seen.push(masks.nnz());
        self.inner.scores(model, masks)
    }
}

#[test]
fn iterative_rounds_follow_the_exponential_schedule() {
    // Round k of n prunes to density d^(k/n) (Tanaka et al.'s exponential schedule), so round
    // k + 1 is scored under kept(62, 1 - d^(k/n)) weights; round 1 is dense. Hand-computed for
    // d = 0.2, n = 4 over 62 weights: 62, 62*0.2^0.25 = 41.46, 62*0.2^0.5 = 27.73,
    // 62*0.2^0.75 = 18.54, final 12.4.
    let d = device();
    let m = NoBias {
        a: LinearConfig::new(6, 5).with_bias(false).init(&d),
        b: LinearConfig::new(5, 4).with_bias(false).init(&d),
        c: LinearConfig::new(4, 3).with_bias(false).init(&d),
    };
    let mut rec = Recording {
        inner: SynFlow::new(nobias_forward, [1, 1, 6]),
        seen: Vec::new(),
    };
    let (_, masks) = prune_at_init(
        m,
        &ParamFilter::new(),
        &PruneConfig::new(Sparsity::new(0.8).unwrap()).with_rounds(4),
        &mut rec,
    )
    .unwrap();
    // kept = round(density * 62): 41.46 -> 41, 27.73 -> 28, 18.54 -> 19, 12.4 -> 12.
    assert_eq!(rec.seen, vec![62, 41, 28, 19]);
    assert_eq!(masks.nnz(), 12);
}

#[derive(Module, Debug)]
struct Quartic {
    w: Param<Tensor<2>>,
}

/// L = sum(w^4) / 4: g = w^3, H = diag(3 w^2), not quadratic. The central difference of the
/// gradients along v is ((w + eps v)^3 - (w - eps v)^3) / (2 eps) = 3 w^2 v + eps^2 v^3
/// exactly; a forward difference would be off by 3 w v^2 eps instead.
fn quartic_loss() -> LossFn<Quartic> {
    Box::new(|m: &Quartic| (m.w.val().powf_scalar(4.0).sum() * 0.25).reshape([1]))
}

#[test]
fn finite_difference_hvp_on_a_quartic_is_central() {
    let d = device();
    let w0 = [1.0f32, -2.0, 0.5];
    let m = Quartic {
        w: Param::from_data([[w0[0]], [w0[1]], [w0[2]]], &d),
    };
    let masks = MaskSet::dense(&m, &ParamFilter::new()).unwrap();
    let v = [0.3f32, -1.0, 2.0];
    let loss = quartic_loss();
    for eps in [0.5f32, 1e-2] {
        let hv = hessian_vector_product(&m, &masks, &*loss, &[v.to_vec()], eps).unwrap();
        for i in 0..3 {
            let (w, v, e) = (f64::from(w0[i]), f64::from(v[i]), f64::from(eps));
            let central = 3.0 * w * w * v + e * e * v * v * v;
            let got = f64::from(hv[0][i]);
            assert!(
                (got - central).abs() <= 2e-3 * central.abs().max(1.0),
                "eps {eps}, i {i}: {got} vs central {central}"
            );
        }
    }
}

#[test]
fn grasp_step_is_relative_to_the_weight_and_gradient_norms() {
    // GraSP's eps = rel_eps * ||w|| / ||g||. With rel_eps = 0.5, w = (1, -2, 0.5), g = w^3 =
    // (1, -8, 0.125): eps = 0.5 * 2.2913 / 8.0632 = 0.14208, and the keep-score w * Hg with the
    // central difference's eps^2 g^3 term is (3.0202, 212.68, 0.0469); the true w * H g is
    // (3, 192, 0.0469). With the default rel_eps = 1e-2 the score is within 1e-4 of the truth.
    let d = device();
    let w0 = [1.0f64, -2.0, 0.5];
    let m = Quartic {
        w: Param::from_data([[1.0f32], [-2.0], [0.5]], &d),
    };
    let masks = MaskSet::dense(&m, &ParamFilter::new()).unwrap();
    let g: Vec<f64> = w0.iter().map(|w| w * w * w).collect();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    for rel in [0.5f64, 1e-2] {
        let eps = rel * norm(&w0) / norm(&g);
        let want: Vec<f64> = (0..3)
            .map(|i| w0[i] * (3.0 * w0[i] * w0[i] * g[i] + eps * eps * g[i].powi(3)))
            .collect();
        let mut grasp = Grasp::from_loss(quartic_loss());
        grasp.rel_eps = rel as f32;
        let s = grasp.scores(&m, &masks).unwrap();
        for i in 0..3 {
            let got = f64::from(s[0][i]);
            assert!(
                (got - want[i]).abs() <= 1e-3 * want[i].abs().max(1.0),
                "rel_eps {rel}, i {i}: {got} vs {}",
                want[i]
            );
            if rel < 0.1 {
                let truth = 3.0 * w0[i].powi(2) * g[i] * w0[i];
                assert!((got - truth).abs() <= 1e-4 * truth.abs().max(1.0));
            }
        }
    }
}

#[test]
fn structured_masks_at_init() {
    // Magnitude and random at 2:4 keep exactly 2 of every group of 4 inputs of every output;
    // magnitude keeps the two largest |w| of each group; an iterative schedule with a structure
    // is a typed error naming `rounds`.
    use burn_sparse_mask::{Structure, has_structure};
    let d = device();
    let s = Structure::NByM { n: 2, m: 4 };
    let cfg = PruneConfig::new(s.implied_sparsity().unwrap()).with_structure(s);
    let m = Mlp::seeded([16, 12, 8, 4], 3, &d);
    let w1 = to_host(m.l1.weight.val()).unwrap();
    let (_, masks) = prune_at_init(m, &ParamFilter::new(), &cfg, &mut Magnitude).unwrap();
    for l in masks.layers() {
        assert!(has_structure(s, l.param(), l.bits()).unwrap());
    }
    let l1 = &masks.layers()[0];
    for g in s.groups(l1.param()).unwrap().unwrap() {
        let kept_min = g
            .iter()
            .filter(|&&i| l1.bits()[i])
            .map(|&i| w1[i].abs())
            .fold(f32::INFINITY, f32::min);
        let gone_max = g
            .iter()
            .filter(|&&i| !l1.bits()[i])
            .map(|&i| w1[i].abs())
            .fold(0.0, f32::max);
        assert!(kept_min >= gone_max);
    }
    let m = Mlp::seeded([16, 12, 8, 4], 3, &d);
    let (_, masks) = prune_at_init(m, &ParamFilter::new(), &cfg, &mut RandomScore::new(4)).unwrap();
    assert_eq!(masks.nnz(), masks.numel() / 2);
    let m = Mlp::seeded([16, 12, 8, 4], 3, &d);
    let e = prune_at_init(
        m,
        &ParamFilter::new(),
        &cfg.clone().with_rounds(10),
        &mut Magnitude,
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            SaliencyError::InvalidConfig {
                field: "rounds",
                ..
            }
        ),
        "{e}"
    );
}
