//! Gradual magnitude pruning: hand-computed prune steps and schedules, the optimizer's pruning
//! contract (subset masks, cleared state, exact counts), plan validation and resume.

use burn::module::{Module, Param};
use burn::tensor::Tensor;
use burn_sparse_dynamic::*;
use burn_sparse_mask::prelude::*;
use burn_sparse_mask::{
    GradualPruning, LayerView, MaskError, ParamInfo, Scope, Structure, TopologyChange,
    has_structure, to_host,
};
use burn_sparse_test_support::{Mlp, device, mlp_grads, view};

#[derive(Module, Debug)]
struct TwoLayers {
    a: Param<Tensor<2>>,
    b: Param<Tensor<2>>,
}

fn ones(m: &[bool]) -> Vec<usize> {
    (0..m.len()).filter(|&i| m[i]).collect()
}

fn two_layers() -> (TwoLayers, Vec<ParamInfo>) {
    let d = device();
    let model = TwoLayers {
        a: Param::from_data([[0.5f32, -0.1, 0.3, 0.3], [-0.9, 0.0, 0.2, 0.7]], &d),
        b: Param::from_data([[0.05f32, 0.8], [-0.6, 0.01]], &d),
    };
    let params = ParamFilter::new().select(&model).unwrap();
    (model, params)
}

fn gmp(scope: Scope) -> GradualMagnitude {
    let s = GradualPruning::new(Sparsity::DENSE, Sparsity::new(0.75).unwrap(), 0, 1, 1).unwrap();
    GradualMagnitude::new(GmpConfig {
        schedule: s,
        scope,
        allow_empty_layers: false,
        structure: Default::default(),
    })
}

#[test]
fn hand_computed_layerwise_prune_with_ties_and_no_revival() {
    // A = [.5, -.1, .3, .3, -.9, 0, .2, .7] (8 weights), B = [.05, .8, -.6, .01] (4).
    // At 50%, per layer: A keeps round(.5 * 8) = 4 of |w| = .9 (4), .7 (7), .5 (0), then the
    // tie .3 (2) / .3 (3) goes to the lower index 2; B keeps 2: .8 (1), .6 (2).
    let (_, params) = two_layers();
    let g = gmp(Scope::Layerwise(SparsityDistribution::Uniform));
    let wa = [0.5f32, -0.1, 0.3, 0.3, -0.9, 0.0, 0.2, 0.7];
    let wb = [0.05f32, 0.8, -0.6, 0.01];
    let (all_a, all_b) = ([true; 8], [true; 4]);
    let (masks, removed) = g
        .prune(
            &[view(&params[0], &all_a, &wa), view(&params[1], &all_b, &wb)],
            Sparsity::new(0.5).unwrap(),
        )
        .unwrap();
    assert_eq!(ones(&masks[0]), vec![0, 2, 4, 7]);
    assert_eq!(ones(&masks[1]), vec![1, 2]);
    assert_eq!(removed, vec![4, 2]);
    // Next step, 75%: A keeps 2, B keeps 1. A pruned weight that has since grown large (index 1
    // of A at -5, as a stale value would be) must not come back: only survivors compete.
    let wa2 = [0.5f32, -5.0, 0.3, 0.3, -0.9, 0.0, 0.2, 0.7];
    let (m2, removed) = g
        .prune(
            &[
                view(&params[0], &masks[0], &wa2),
                view(&params[1], &masks[1], &wb),
            ],
            Sparsity::new(0.75).unwrap(),
        )
        .unwrap();
    assert_eq!(ones(&m2[0]), vec![4, 7]);
    assert_eq!(ones(&m2[1]), vec![1]);
    assert_eq!(removed, vec![2, 1]);
}

#[test]
fn hand_computed_global_prune() {
    // One ranking over A and B (12 weights) at 75%: round(.25 * 12) = 3 survive: .9 (A4),
    // .8 (B1), .7 (A7). B keeps a single weight, A two.
    let (_, params) = two_layers();
    let g = gmp(Scope::Global);
    let wa = [0.5f32, -0.1, 0.3, 0.3, -0.9, 0.0, 0.2, 0.7];
    let wb = [0.05f32, 0.8, -0.6, 0.01];
    let (masks, removed) = g
        .prune(
            &[
                view(&params[0], &[true; 8], &wa),
                view(&params[1], &[true; 4], &wb),
            ],
            Sparsity::new(0.75).unwrap(),
        )
        .unwrap();
    assert_eq!(ones(&masks[0]), vec![4, 7]);
    assert_eq!(ones(&masks[1]), vec![1]);
    assert_eq!(removed, vec![6, 3]);
    // At 95% global, round(.05 * 12) = 1 survives (A4): B would be empty, a typed error.
    let e = g
        .prune(
            &[
                view(&params[0], &[true; 8], &wa),
                view(&params[1], &[true; 4], &wb),
            ],
            Sparsity::new(0.95).unwrap(),
        )
        .unwrap_err();
    assert!(
        matches!(e, MaskError::EmptyLayer { ref param, .. } if param == "b"),
        "{e}"
    );
}

#[test]
fn nan_weight_is_a_typed_error() {
    let (_, params) = two_layers();
    let g = gmp(Scope::Layerwise(SparsityDistribution::Uniform));
    let wa = [0.5f32, f32::NAN, 0.3, 0.3, -0.9, 0.0, 0.2, 0.7];
    let wb = [0.05f32, 0.8, -0.6, 0.01];
    let e = g
        .prune(
            &[
                view(&params[0], &[true; 8], &wa),
                view(&params[1], &[true; 4], &wb),
            ],
            Sparsity::new(0.5).unwrap(),
        )
        .unwrap_err();
    assert!(matches!(e, MaskError::NanScore { index: 1, .. }), "{e}");
}

#[test]
fn cubic_schedule_by_hand() {
    // s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3 with s_i = 0, s_f = .875, t0 = 10, n = 3,
    // dt = 10: prune steps 10, 20, 30, 40 at 0, .875 * 19/27, .875 * 26/27, .875.
    let s = GradualPruning::new(Sparsity::DENSE, Sparsity::new(0.875).unwrap(), 10, 3, 10).unwrap();
    let steps: Vec<u64> = (0..=100).filter(|&t| s.is_prune_step(t)).collect();
    assert_eq!(steps, vec![10, 20, 30, 40]);
    let want = [0.0, 0.875 * 19.0 / 27.0, 0.875 * 26.0 / 27.0, 0.875];
    for (t, w) in steps.iter().zip(want) {
        assert!((s.sparsity_at(*t).value() - w).abs() < 1e-12, "step {t}");
    }
    assert_eq!(s.sparsity_at(1000).value(), 0.875);
}

#[test]
fn plan_schedule_and_validation() {
    // 1000 steps, prune every 100 from 10% (step 100) to 75% (step 750): n = 6, the last prune
    // step 700 reaches the target.
    let plan = DstPlan::new(DstMethod::Gmp, Sparsity::new(0.9).unwrap(), 1000, 100, 0);
    let s = plan.gmp_schedule().unwrap().unwrap();
    let steps: Vec<u64> = (0..=1000).filter(|&t| s.is_prune_step(t)).collect();
    assert_eq!(steps, vec![100, 200, 300, 400, 500, 600, 700]);
    assert_eq!(s.sparsity_at(700).value(), 0.9);
    assert_eq!(plan.update_end(), Some(750));
    assert_eq!("GMP".parse::<DstMethod>().unwrap(), DstMethod::Gmp);
    assert_eq!(
        DstMethod::Gmp.default_distribution(),
        SparsityDistribution::Uniform
    );
    let field = |p: &DstPlan| match p.validate() {
        Err(DstError::InvalidConfig { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    let mut p = plan.clone();
    p.begin_fraction = 0.75;
    assert_eq!(field(&p), "begin_fraction");
    p.begin_fraction = -0.1;
    assert_eq!(field(&p), "begin_fraction");
    let mut p = plan.clone();
    p.initial_sparsity = Sparsity::new(0.95).unwrap();
    assert_eq!(field(&p), "initial_sparsity");
    let mut p = plan.clone();
    p.total_steps = 150; // prune window 15..112, shorter than delta_t
    assert_eq!(field(&p), "total_steps");
    let mut p = DstPlan::new(DstMethod::Rigl, Sparsity::new(0.9).unwrap(), 1000, 100, 0);
    p.global = true;
    assert_eq!(field(&p), "global");
    p.global = false;
    assert_eq!(
        p.gmp_schedule().unwrap(),
        None,
        "RigL has no prune schedule"
    );
}

/// Per layer `round((1 - s) * N)`.
fn uniform_counts(o: &SparseOptimizer, s: Sparsity) -> Vec<usize> {
    o.masks()
        .layers()
        .iter()
        .map(|l| s.kept(l.numel()))
        .collect()
}

fn per_layer_nnz(o: &SparseOptimizer) -> Vec<usize> {
    o.masks().layers().iter().map(|l| l.nnz()).collect()
}

#[test]
fn training_prunes_to_the_schedule_exactly_and_clears_state() {
    // Dense to 90% over 300 steps (prune every 20 from step 30 to step 225), SGD momentum:
    // after every prune step each layer holds exactly round((1 - s_t) N); masks only shrink;
    // pruned weights and their momentum are exactly 0 after every step; after the last prune
    // step the mask no longer changes.
    let d = device();
    let m = Mlp::seeded([12, 10, 8, 4], 3, &d);
    let mut plan = DstPlan::new(DstMethod::Gmp, Sparsity::new(0.9).unwrap(), 300, 30, 1);
    plan.delta_t = 20;
    let schedule = plan.gmp_schedule().unwrap().unwrap();
    let (mut m, mut opt) = plan
        .build(
            m,
            &ParamFilter::new(),
            SgdRule::default().with_momentum(0.9),
        )
        .unwrap();
    assert_eq!(opt.masks().sparsity(), 0.0, "GMP starts dense");
    let mut prev: Vec<Vec<bool>> = opt
        .masks()
        .layers()
        .iter()
        .map(|l| l.bits().to_vec())
        .collect();
    let mut prune_steps = 0;
    let mut last_change = 0;
    for s in 0..300u64 {
        let (_, g) = mlp_grads(&m, 4, s, &d);
        m = opt.step(0.05, m, g).unwrap();
        let t = s + 1;
        let now: Vec<Vec<bool>> = opt
            .masks()
            .layers()
            .iter()
            .map(|l| l.bits().to_vec())
            .collect();
        for (a, b) in now.iter().zip(&prev) {
            assert!(a.iter().zip(b).all(|(&n, &o)| !n || o), "step {t}: revived");
        }
        if schedule.is_prune_step(t) {
            prune_steps += 1;
            assert_eq!(
                per_layer_nnz(&opt),
                uniform_counts(&opt, schedule.sparsity_at(t)),
                "step {t}"
            );
        } else {
            assert_eq!(now, prev, "step {t}: no prune step");
        }
        if now != prev {
            last_change = t;
            let removed: usize = opt.last_report().unwrap().changed.iter().map(|c| c.1).sum();
            let before: usize = prev.iter().flatten().filter(|&&b| b).count();
            assert_eq!(removed, before - opt.masks().nnz(), "step {t}");
        }
        assert!(
            opt.masks().violations(&m).unwrap().iter().all(|v| v.1 == 0),
            "step {t}"
        );
        for l in opt.masks().layers() {
            let st = opt.state(l.param().id).unwrap();
            let v = to_host(st.slots[0].clone()).unwrap();
            for (i, (&b, x)) in l.bits().iter().zip(&v).enumerate() {
                assert!(b || *x == 0.0, "step {t}: momentum {x} at pruned {i}");
            }
        }
        prev = now;
    }
    assert_eq!(prune_steps, 10, "prune steps 30, 50, ..., 210");
    // Step 190 is at 89.88%, whose rounded counts (12, 8, 3) already equal the target's.
    assert_eq!(last_change, 190);
    assert_eq!(per_layer_nnz(&opt), uniform_counts(&opt, plan.sparsity));
}

#[test]
fn initial_sparsity_and_erk_counts() {
    // An initial sparsity gives a magnitude mask at build time; with ERK the counts of every
    // prune step are the distribution's at s_t (never above a layer's survivors), and the total
    // is exact at the end.
    let d = device();
    let m = Mlp::seeded([12, 10, 8, 4], 4, &d);
    let w1 = to_host(m.l1.weight.val()).unwrap();
    let mut plan = DstPlan::new(DstMethod::Gmp, Sparsity::new(0.8).unwrap(), 200, 20, 1);
    plan.delta_t = 10;
    plan.initial_sparsity = Sparsity::new(0.5).unwrap();
    plan.distribution = SparsityDistribution::Erk;
    let (mut m, mut opt) = plan
        .build(m, &ParamFilter::new(), SgdRule::default())
        .unwrap();
    let params = opt.masks().params();
    let want = SparsityDistribution::Erk
        .layer_counts(&params, plan.initial_sparsity, &Default::default())
        .unwrap();
    assert_eq!(per_layer_nnz(&opt), want);
    // l1 keeps its largest |w| (ties to the lower index).
    let scores: Vec<f32> = w1.iter().map(|w| w.abs()).collect();
    assert_eq!(
        opt.masks().layers()[0].bits(),
        top_k(&scores, want[0]).unwrap().as_slice()
    );
    for s in 0..200u64 {
        let (_, g) = mlp_grads(&m, 4, s, &d);
        m = opt.step(0.05, m, g).unwrap();
    }
    assert_eq!(opt.masks().nnz(), plan.sparsity.kept(opt.masks().numel()));
    assert!(opt.masks().violations(&m).unwrap().iter().all(|v| v.1 == 0));
}

/// Prunes by removing weights, but revives one pruned weight at its second update.
struct Reviver {
    calls: usize,
}

impl TopologyUpdater for Reviver {
    fn name(&self) -> &str {
        "reviver"
    }
    fn is_update_step(&self, _t: u64) -> bool {
        true
    }
    fn prunes(&self) -> bool {
        true
    }
    fn update(
        &mut self,
        _t: u64,
        layers: &[LayerView<'_>],
    ) -> burn_sparse_mask::Result<Option<TopologyChange>> {
        self.calls += 1;
        let mut masks: Vec<Vec<bool>> = layers.iter().map(|l| l.mask.to_vec()).collect();
        // First call: prune weight 0; second: bring it back.
        masks[0][0] = self.calls != 1;
        Ok(Some(TopologyChange {
            grown_values: vec![Vec::new(); masks.len()],
            changed: vec![0; masks.len()],
            masks,
        }))
    }
}

#[test]
fn a_pruning_update_may_shrink_but_never_revive() {
    let d = device();
    let m = Mlp::seeded([6, 5, 4, 3], 8, &d);
    let masks = MaskSet::dense(&m, &ParamFilter::new()).unwrap();
    let mut opt = SparseOptimizer::new(SgdRule::default(), masks)
        .unwrap()
        .with_updater(Box::new(Reviver { calls: 0 }))
        .unwrap();
    let n = opt.masks().nnz();
    let (_, g) = mlp_grads(&m, 4, 0, &d);
    let m = opt.step(0.05, m, g).unwrap();
    assert_eq!(
        opt.masks().nnz(),
        n - 1,
        "a pruning update shrinks the budget"
    );
    let (_, g) = mlp_grads(&m, 4, 1, &d);
    let e = opt.step(0.05, m.clone(), g).unwrap_err();
    assert!(e.to_string().contains("revived"), "{e}");
    assert_eq!(opt.masks().nnz(), n - 1, "a refused update changes nothing");
}

#[test]
fn gmp_to_two_by_four_and_to_blocks() {
    // Dense to 2:4 over prune steps every 10 from 20 to 140 of 200: every group keeps
    // clamp(round((1 - s_t) * 4), 2, 4) of its survivors (never one it lost), ending at exactly
    // 2 per group; and to 75% in 2x2 blocks (uniform): whole blocks only, round(.25 * blocks)
    // per layer at the end.
    let d = device();
    for structure in [
        Structure::NByM { n: 2, m: 4 },
        Structure::Block { rows: 2, cols: 2 },
    ] {
        let target = structure
            .implied_sparsity()
            .unwrap_or(Sparsity::new(0.75).unwrap());
        let mut plan = DstPlan::new(DstMethod::Gmp, target, 200, 20, 1);
        plan.delta_t = 10;
        plan.structure = structure;
        let schedule = plan.gmp_schedule().unwrap().unwrap();
        let (mut m, mut opt) = plan
            .build(
                Mlp::seeded([16, 12, 8, 4], 6, &d),
                &ParamFilter::new(),
                SgdRule::default(),
            )
            .unwrap();
        for t in 1..=200u64 {
            let (_, g) = mlp_grads(&m, 4, t, &d);
            m = opt.step(0.05, m, g).unwrap();
            if !schedule.is_prune_step(t) {
                continue;
            }
            let s = schedule.sparsity_at(t);
            for l in opt.masks().layers() {
                let groups = structure.groups(l.param()).unwrap().unwrap();
                match structure {
                    Structure::NByM { n, m } => {
                        let q = ((s.density().value() * m as f64).round() as usize).clamp(n, m);
                        for g in &groups {
                            assert_eq!(g.iter().filter(|&&i| l.bits()[i]).count(), q, "step {t}");
                        }
                    }
                    _ => {
                        assert!(has_structure(structure, l.param(), l.bits()).unwrap());
                        let kept = groups.iter().filter(|g| l.bits()[g[0]]).count();
                        assert_eq!(kept, s.kept(groups.len()), "step {t}");
                    }
                }
            }
        }
        for l in opt.masks().layers() {
            assert!(
                has_structure(structure, l.param(), l.bits()).unwrap(),
                "{structure:?}"
            );
        }
        assert!(opt.masks().violations(&m).unwrap().iter().all(|v| v.1 == 0));
    }
}
