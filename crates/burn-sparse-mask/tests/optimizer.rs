//! Sparse-aware optimizers: hand-computed updates, masked invariants, state edits, save/load.

use burn::module::{Module, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};
use burn_sparse_mask::checkpoint::{load_module, save_module_atomic};
use burn_sparse_mask::prelude::*;
use burn_sparse_mask::{LayerView, MaskError, SparseHandle, TopologyChange, to_host};
use burn_sparse_test_support::{Mlp, device, mlp_grads};
use proptest::prelude::*;

#[derive(Module, Debug)]
struct One {
    w: Param<Tensor<2>>,
}

const C: [[f32; 2]; 2] = [[0.5, 1.0], [-1.0, 2.0]];

fn one() -> (One, MaskSet) {
    let d = device();
    let m = One {
        w: Param::from_data([[1.0f32, 2.0], [3.0, 4.0]], &d),
    };
    let params = ParamFilter::new().select(&m).unwrap();
    let masks = MaskSet::from_bits(&m, params, vec![vec![true, false, true, true]]).unwrap();
    let m = masks.apply(m);
    (m, masks)
}

/// L = sum(w * C), so dL/dw = C exactly, also at the masked position.
fn linear_grads(m: &One) -> GradientsParams {
    grads_of(m, C)
}

/// L = sum(w * K): dL/dw = K.
fn grads_of(m: &One, k: [[f32; 2]; 2]) -> GradientsParams {
    let c = Tensor::<2>::from_data(k, &m.w.device());
    let loss = (m.w.val() * c).sum();
    GradientsParams::from_grads(loss.backward(), m)
}

/// A second gradient, different from C, for two-step hand computations.
const D: [[f32; 2]; 2] = [[1.0, 0.5], [0.5, -1.0]];

/// Adam by its definition (Kingma & Ba; Loshchilov & Hutter for the decoupled decay), in f64,
/// on the 2x2 case of `one()`: w0 = [1, 2, 3, 4] with position 1 masked.
fn adam_by_hand(grads: &[[[f32; 2]; 2]], lr: f64, wd: f64, decoupled: bool) -> [f64; 4] {
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
    let keep = [true, false, true, true];
    let mut w = [1.0f64, 0.0, 3.0, 4.0];
    let (mut m, mut v) = ([0.0f64; 4], [0.0f64; 4]);
    for (t, g) in grads.iter().enumerate() {
        let t = (t + 1) as i32;
        for i in 0..4 {
            if !keep[i] {
                continue;
            }
            let mut gi = f64::from(g[i / 2][i % 2]);
            if decoupled {
                w[i] *= 1.0 - lr * wd;
            } else {
                gi += wd * w[i];
            }
            m[i] = b1 * m[i] + (1.0 - b1) * gi;
            v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
            let mh = m[i] / (1.0 - b1.powi(t));
            let vh = v[i] / (1.0 - b2.powi(t));
            w[i] -= lr * mh / (vh.sqrt() + eps);
        }
    }
    w
}

#[test]
fn adam_two_steps_by_hand() {
    // Two different gradients, so the second step's bias correction and moments matter:
    // Adam, Adam with L2 weight decay (added to the gradient) and AdamW (decoupled).
    for (cfg, wd, decoupled) in [
        (AdamRule::default(), 0.0, false),
        (
            AdamRule {
                weight_decay: 0.5,
                ..AdamRule::default()
            },
            0.5,
            false,
        ),
        (AdamRule::adamw(0.5), 0.5, true),
    ] {
        let (m, masks) = one();
        let mut opt = SparseOptimizer::new(cfg, masks).unwrap();
        let g = grads_of(&m, C);
        let m = opt.step(0.1, m, g).unwrap();
        let g = grads_of(&m, D);
        let m = opt.step(0.1, m, g).unwrap();
        let want = adam_by_hand(&[C, D], 0.1, wd, decoupled);
        let want: Vec<f32> = want.iter().map(|&x| x as f32).collect();
        close(&values(&m), &want, 2e-6);
        assert_eq!(values(&m)[1], 0.0);
        assert_eq!(opt.state(m.w.id).unwrap().time, 2);
    }
    // L2 and decoupled decay give different weights: the test tells them apart.
    let l2 = adam_by_hand(&[C, D], 0.1, 0.5, false);
    let dec = adam_by_hand(&[C, D], 0.1, 0.5, true);
    assert!((l2[0] - dec[0]).abs() > 1e-3);
}

fn values(m: &One) -> Vec<f32> {
    to_host(m.w.val()).unwrap()
}

fn close(a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tol, "{a:?} vs {b:?}");
    }
}

#[test]
fn sgd_momentum_by_hand() {
    // v1 = g*m = [.5, 0, -1, 2]; w1 = w0 - .1 v1 = [.95, 0, 3.1, 3.8]
    // v2 = .9 v1 + g*m = [.95, 0, -1.9, 3.8]; w2 = [.855, 0, 3.29, 3.42]
    let (m, masks) = one();
    let mut opt = SparseOptimizer::new(SgdRule::default(), masks).unwrap();
    let g = linear_grads(&m);
    let m = opt.step(0.1, m, g).unwrap();
    close(&values(&m), &[0.95, 0.0, 3.1, 3.8], 1e-6);
    let g = linear_grads(&m);
    let m = opt.step(0.1, m, g).unwrap();
    close(&values(&m), &[0.855, 0.0, 3.29, 3.42], 1e-6);
    let v = to_host(opt.state(m.w.id).unwrap().slots[0].clone()).unwrap();
    close(&v, &[0.95, 0.0, -1.9, 3.8], 1e-6);
    assert_eq!(values(&m)[1], 0.0);
}

#[test]
fn sgd_nesterov_weight_decay_by_hand() {
    // g = C*m + .01 w0 = [.51, 0, -.97, 2.04]; v = g; step = g + .9 v = 1.9 g
    // w1 = w0 - .1 * 1.9 g = [.9031, 0, 3.1843, 3.6124]
    let (m, masks) = one();
    let cfg = SgdRule::default()
        .with_nesterov(true)
        .with_weight_decay(0.01);
    let mut opt = SparseOptimizer::new(cfg, masks).unwrap();
    let g = linear_grads(&m);
    let m = opt.step(0.1, m, g).unwrap();
    close(&values(&m), &[0.9031, 0.0, 3.1843, 3.6124], 1e-5);
}

#[test]
fn adam_first_step_by_hand() {
    // After bias correction m_hat = g and v_hat = g^2, so w -= lr * g / (|g| + eps) = lr*sign(g).
    let (m, masks) = one();
    let mut opt = SparseOptimizer::new(AdamRule::default(), masks).unwrap();
    let g = linear_grads(&m);
    let m = opt.step(0.1, m, g).unwrap();
    close(&values(&m), &[0.9, 0.0, 3.1, 3.9], 1e-5);
    let st = opt.state(m.w.id).unwrap();
    assert_eq!(st.time, 1);
    close(
        &to_host(st.slots[0].clone()).unwrap(),
        &[0.05, 0.0, -0.1, 0.2],
        1e-6,
    );
    // AdamW decays decoupled: w0 * (1 - lr*wd) first.
    let (m, masks) = one();
    let mut opt = SparseOptimizer::new(AdamRule::adamw(0.5), masks).unwrap();
    let g = linear_grads(&m);
    let m = opt.step(0.1, m, g).unwrap();
    close(
        &values(&m),
        &[0.95 - 0.1, 0.0, 3.0 * 0.95 + 0.1, 4.0 * 0.95 - 0.1],
        1e-5,
    );
}

#[test]
fn invalid_hyperparameters_are_typed_errors() {
    let (_, masks) = one();
    for cfg in [
        SgdRule::default().with_momentum(1.0),
        SgdRule::default().with_momentum(f64::NAN),
        SgdRule::default().with_weight_decay(-1.0),
        SgdRule::plain().with_nesterov(true),
    ] {
        assert!(matches!(
            SparseOptimizer::new(cfg, masks.clone()),
            Err(MaskError::InvalidConfig { .. })
        ));
    }
    let bad = AdamRule {
        beta_2: 1.0,
        ..AdamRule::default()
    };
    let err = SparseOptimizer::new(bad, masks).unwrap_err();
    assert!(err.to_string().contains("beta_2"), "{err}");
}

#[test]
fn burn_optimizer_wrapper_keeps_fixed_mask() {
    // Against burn's own optimizer stepped on hand-masked gradients and re-masked, bit for bit:
    // SGD with momentum, weight decay and per-tensor gradient-norm clipping. The clipping makes
    // the gradient masking visible in the kept weights (an unmasked gradient has a larger norm,
    // so its kept entries would be scaled down more), and the kept weights must all move (a
    // no-op inner step leaves them in place).
    let d = device();
    let m = Mlp::new([12, 10, 8, 4], &d);
    let masks = magnitude_masks(
        &m,
        &ParamFilter::new(),
        Sparsity::new(0.7).unwrap(),
        &Scope::Global,
    )
    .unwrap();
    let m = masks.apply(m);
    let sgd = || {
        burn::optim::SgdConfig::new()
            .with_momentum(Some(burn::optim::momentum::MomentumConfig::new()))
            .with_weight_decay(Some(burn::optim::decay::WeightDecayConfig::new(1e-3)))
            .with_gradient_clipping(Some(burn::grad_clipping::GradientClippingConfig::Norm(
                0.01,
            )))
            .init()
    };
    let mut opt = MaskedOptimizer::new(sgd(), masks.clone());
    let mut reference: burn::optim::ModuleOptimizer = sgd();
    let start = masks.read_weights(&m).unwrap();
    let (mut a, mut b) = (m.clone(), m);
    for s in 0..20 {
        let (_, g) = mlp_grads(&a, 8, s, &d);
        a = opt.step(0.05, a, g);
        let (_, mut g) = mlp_grads(&b, 8, s, &d);
        for l in masks.layers() {
            let grad = g.remove::<2>(l.param().id).unwrap();
            let keep: Vec<f32> = l.bits().iter().map(|&k| f32::from(u8::from(k))).collect();
            let keep = Tensor::<2>::from_data(TensorData::new(keep, grad.dims()), &d);
            g.register::<2>(l.param().id, grad * keep);
        }
        b = masks.apply(reference.step(0.05, b, g));
    }
    assert_eq!(
        a.bits(),
        b.bits(),
        "the wrapper is burn's step on masked gradients"
    );
    let end = opt.masks().read_weights(&a).unwrap();
    for ((l, w0), w1) in opt.masks().layers().iter().zip(&start).zip(&end) {
        for ((k, x0), x1) in l.bits().iter().zip(w0).zip(w1) {
            if *k {
                assert_ne!(x0, x1, "{}: a kept weight did not move", l.param().path);
            } else {
                assert_eq!(*x1, 0.0);
            }
        }
    }
}

proptest! {
    #![proptest_config(burn_sparse_test_support::proptest_config(6))]

    /// 100 SGD-with-momentum steps (and weight decay): every masked weight stays exactly 0,
    /// the nnz is unchanged, and the momentum at masked positions is exactly 0.
    #[test]
    fn masked_weights_stay_zero_for_100_sgd_steps(
        dims in proptest::collection::vec(2usize..24, 4),
        s in 0.05f64..0.98,
        seed in any::<u64>(),
        adam in any::<bool>(),
    ) {
        let d = device();
        let m = Mlp::new([dims[0], dims[1], dims[2], dims[3]], &d);
        let masks = magnitude_masks(&m, &ParamFilter::new(), Sparsity::new(s).unwrap(), &Scope::Global).unwrap();
        let nnz = masks.nnz();
        let mut m = masks.apply(m);
        let rule: Rule = if adam { AdamRule::adamw(1e-2).into() } else { SgdRule::default().with_weight_decay(1e-3).into() };
        let mut opt = SparseOptimizer::new(rule, masks).unwrap();
        for step in 0..100 {
            let (_, g) = mlp_grads(&m, 4, seed.wrapping_add(step), &d);
            m = opt.step(0.05, m, g).unwrap();
            let v = opt.masks().violations(&m).unwrap();
            prop_assert!(v.iter().all(|(_, c)| *c == 0), "step {}: {:?}", step, v);
        }
        prop_assert_eq!(opt.masks().nnz(), nnz);
        for l in opt.masks().layers() {
            for slot in &opt.state(l.param().id).unwrap().slots {
                let s = to_host(slot.clone()).unwrap();
                prop_assert!(l.bits().iter().zip(&s).all(|(k, v)| *k || *v == 0.0));
            }
        }
    }
}

#[test]
fn save_load_resumes_bit_identically() {
    resumes_bit_identically(SgdRule::default().into());
}

#[test]
fn adam_save_load_resumes_bit_identically() {
    resumes_bit_identically(AdamRule::adamw(1e-2).into());
}

fn resumes_bit_identically(rule: Rule) {
    let d = device();
    let dir = tempfile::tempdir().unwrap();
    let m = Mlp::seeded([10, 9, 8, 3], 3, &d);
    let masks = magnitude_masks(
        &m,
        &ParamFilter::new(),
        Sparsity::new(0.6).unwrap(),
        &Scope::Global,
    )
    .unwrap();
    let mut m = masks.apply(m);
    let mut opt = SparseOptimizer::new(rule, masks).unwrap();
    for s in 0..5 {
        let (_, g) = mlp_grads(&m, 4, s, &d);
        m = opt.step(0.1, m, g).unwrap();
    }
    save_module_atomic(m.clone(), &dir.path().join("model.bpk")).unwrap();
    opt.save(&dir.path().join("optim.bsp")).unwrap();
    // Uninterrupted.
    let mut a = m;
    for s in 5..10 {
        let (_, g) = mlp_grads(&a, 4, s, &d);
        a = opt.step(0.1, a, g).unwrap();
    }
    // Resumed into a fresh model.
    let fresh = Mlp::new([10, 9, 8, 3], &d);
    let mut b = load_module(fresh, &dir.path().join("model.bpk")).unwrap();
    let mut opt2 = SparseOptimizer::load(&dir.path().join("optim.bsp"), &b).unwrap();
    assert_eq!(opt2.steps(), 5);
    for (x, y) in opt2.masks().layers().iter().zip(opt.masks().layers()) {
        assert_eq!(x.bits(), y.bits());
    }
    for s in 5..10 {
        let (_, g) = mlp_grads(&b, 4, s, &d);
        b = opt2.step(0.1, b, g).unwrap();
    }
    for (wa, wb) in [
        (a.l1.weight.val(), b.l1.weight.val()),
        (a.l2.weight.val(), b.l2.weight.val()),
        (a.l3.weight.val(), b.l3.weight.val()),
        (
            a.l1.bias.clone().unwrap().val().unsqueeze(),
            b.l1.bias.clone().unwrap().val().unsqueeze(),
        ),
    ] {
        let (wa, wb) = (to_host(wa).unwrap(), to_host(wb).unwrap());
        assert!(wa.iter().zip(&wb).all(|(x, y)| x.to_bits() == y.to_bits()));
    }
    // A corrupt optimizer file is a typed error.
    let p = dir.path().join("optim.bsp");
    let mut bytes = std::fs::read(&p).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&p, bytes).unwrap();
    assert!(matches!(
        SparseOptimizer::load(&p, &b),
        Err(MaskError::CorruptCheckpoint { .. })
    ));
}

/// Swaps one connection per layer at step 2: drops the first active position and grows the
/// first inactive one. Optionally breaks the budget.
struct Swap {
    break_budget: bool,
}

impl TopologyUpdater for Swap {
    fn name(&self) -> &str {
        "swap"
    }
    fn is_update_step(&self, t: u64) -> bool {
        t == 2
    }
    fn skip_weight_update(&self) -> bool {
        true
    }
    fn update(
        &mut self,
        _t: u64,
        layers: &[LayerView<'_>],
    ) -> burn_sparse_mask::Result<Option<TopologyChange>> {
        let mut masks = Vec::new();
        for l in layers {
            let mut m = l.mask.to_vec();
            let a = m.iter().position(|b| *b).unwrap();
            let i = m.iter().position(|b| !*b).unwrap();
            m[a] = false;
            m[i] = true;
            if self.break_budget {
                m[a] = true;
            }
            masks.push(m);
        }
        Ok(Some(TopologyChange {
            changed: vec![1; masks.len()],
            grown_values: vec![],
            masks,
        }))
    }
}

/// A 50% magnitude-masked MLP under `rule` with the `Swap` updater, and its masks before.
fn swap_setup(rule: impl Into<Rule>) -> (Mlp, SparseOptimizer, Vec<Vec<bool>>) {
    let m = Mlp::seeded([6, 5, 4, 3], 2, &device());
    let masks = magnitude_masks(
        &m,
        &ParamFilter::new(),
        Sparsity::new(0.5).unwrap(),
        &Scope::Global,
    )
    .unwrap();
    let before: Vec<Vec<bool>> = masks.layers().iter().map(|l| l.bits().to_vec()).collect();
    let m = masks.apply(m);
    let opt = SparseOptimizer::new(rule, masks)
        .unwrap()
        .with_updater(Box::new(Swap {
            break_budget: false,
        }))
        .unwrap();
    (m, opt, before)
}

#[test]
fn topology_update_zeroes_grown_weights_and_their_adam_moments() {
    // Both of Adam's moments restart at 0 at grown (and dropped) positions; the others keep
    // theirs.
    let d = device();
    let (mut m, mut opt, before) = swap_setup(AdamRule::default());
    let (_, g) = mlp_grads(&m, 4, 0, &d);
    m = opt.step(0.1, m, g).unwrap();
    let moments_1: Vec<Vec<Vec<f32>>> = opt
        .masks()
        .layers()
        .iter()
        .map(|l| {
            opt.state(l.param().id)
                .unwrap()
                .slots
                .iter()
                .map(|s| to_host(s.clone()).unwrap())
                .collect()
        })
        .collect();
    let (_, g) = mlp_grads(&m, 4, 1, &d);
    m = opt.step(0.1, m, g).unwrap();
    assert_eq!(opt.last_report().unwrap().step, 2);
    for ((l, old), m1) in opt.masks().layers().iter().zip(&before).zip(&moments_1) {
        let grown = (0..old.len()).find(|&j| !old[j] && l.bits()[j]).unwrap();
        let dropped = (0..old.len()).find(|&j| old[j] && !l.bits()[j]).unwrap();
        let st = opt.state(l.param().id).unwrap();
        assert_eq!(st.slots.len(), 2, "Adam keeps two moments");
        for (slot, s1) in st.slots.iter().zip(m1) {
            let s = to_host(slot.clone()).unwrap();
            assert_eq!(s[grown], 0.0, "{}", l.param().path);
            assert_eq!(s[dropped], 0.0, "{}", l.param().path);
            // The swap step skips the weight update, so the kept positions' moments are the
            // step-1 values, untouched by the reset.
            for j in (0..s.len()).filter(|&j| old[j] && l.bits()[j]) {
                assert_eq!(s[j], s1[j]);
            }
            assert!(s1.iter().any(|x| *x != 0.0));
        }
    }
    assert!(
        opt.masks()
            .violations(&m)
            .unwrap()
            .iter()
            .all(|(_, v)| *v == 0)
    );
}

#[test]
fn topology_update_zeroes_grown_weights_and_their_momentum() {
    let d = device();
    let (mut m, mut opt, before) = swap_setup(SgdRule::default());
    let (_, g) = mlp_grads(&m, 4, 0, &d);
    m = opt.step(0.1, m, g).unwrap();
    let (_, g) = mlp_grads(&m, 4, 1, &d);
    m = opt.step(0.1, m, g).unwrap();
    let report = opt.last_report().unwrap();
    assert_eq!(report.step, 2);
    assert_eq!(report.changed.len(), 3);
    let w = opt.masks().read_weights(&m).unwrap();
    for ((l, old), w) in opt.masks().layers().iter().zip(&before).zip(&w) {
        let grown = (0..old.len()).find(|&j| !old[j] && l.bits()[j]).unwrap();
        let dropped = (0..old.len()).find(|&j| old[j] && !l.bits()[j]).unwrap();
        assert_eq!(w[grown], 0.0);
        assert_eq!(w[dropped], 0.0);
        let v = to_host(opt.state(l.param().id).unwrap().slots[0].clone()).unwrap();
        assert_eq!(v[grown], 0.0);
        assert_eq!(v[dropped], 0.0);
    }
    assert!(
        opt.masks()
            .violations(&m)
            .unwrap()
            .iter()
            .all(|(_, v)| *v == 0)
    );

    // An updater that changes the budget is refused, and nothing changes.
    let m2 = Mlp::new([6, 5, 4, 3], &d);
    let masks = MaskSet::dense(&m2, &ParamFilter::new()).unwrap();
    let masks = {
        let mut ms = masks;
        for i in 0..3 {
            let n = ms.layers()[i].numel();
            ms.set_bits(i, (0..n).map(|j| j % 2 == 0).collect())
                .unwrap();
        }
        ms
    };
    let nnz = masks.nnz();
    let mut opt = SparseOptimizer::new(SgdRule::default(), masks)
        .unwrap()
        .with_updater(Box::new(Swap { break_budget: true }))
        .unwrap();
    let m2 = opt.masks().apply(m2);
    let (_, g) = mlp_grads(&m2, 4, 0, &d);
    let m2 = opt.step(0.1, m2, g).unwrap();
    let (_, g) = mlp_grads(&m2, 4, 1, &d);
    let err = opt.step(0.1, m2, g).unwrap_err();
    assert!(err.to_string().contains("number of kept weights"), "{err}");
    assert_eq!(opt.masks().nnz(), nnz);
}

#[test]
fn nan_loss_is_a_typed_error() {
    let d = device();
    let t = Tensor::<1>::from_data(TensorData::new(vec![f32::NAN], [1]), &d);
    assert!(matches!(finite_loss(&t), Err(MaskError::NonFinite { .. })));
}

/// The seam burn-train's `TrainStep::optimize` offers: a model holding a `SparseHandle`
/// steps through it with burn's `ModuleLearningRate`, and failures leave the model unchanged.
#[test]
fn handle_steps_with_burn_train_learning_rate() {
    use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLearningRate;
    let d = device();
    let (m, masks) = one();
    let handle = SparseHandle::new(SparseOptimizer::new(SgdRule::default(), masks).unwrap());
    let lr: ModuleLearningRate = 0.1.into();
    let g = linear_grads(&m);
    let m = handle.step(m, &lr, g);
    close(&values(&m), &[0.95, 0.0, 3.1, 3.8], 1e-6);
    assert_eq!(handle.with(|o| o.steps()), 1);
    assert!(handle.take_error().is_none());
    let _ = d;
}
