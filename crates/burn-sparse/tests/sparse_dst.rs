//! SET and RigL on truly sparse layers: the same topology as the masked path from the same
//! start, exact nnz after every update, grown slots at 0 with 0 state, SNFS refused.

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::GradientsParams;
use burn::tensor::{Int, Tensor};
use burn_sparse::dynamic::{DropGrowConfig, RiglUpdater, SetUpdater, Snfs, SnfsConfig};
use burn_sparse::layers::Compute;
use burn_sparse::mask::prelude::*;
use burn_sparse::models::{Classifier, LeNet300, SparseMlp};
use burn_sparse::sparse_dst::{SparseDst, SparseDstError};
use burn_sparse_test_support::Mlp;

mod common;
use common::{cfg, data, device, host};

fn updater(rigl: bool, c: DropGrowConfig) -> Box<dyn TopologyUpdater> {
    if rigl {
        Box::new(RiglUpdater::rigl(c).unwrap())
    } else {
        Box::new(SetUpdater::set(c).unwrap())
    }
}

/// One training step of the sparse network: probes on update steps only.
fn sparse_step(
    t: u64,
    net: SparseMlp,
    dst: &mut SparseDst,
    optim: &mut SparseOptimizer,
    x: Tensor<2>,
    y: Tensor<1, Int>,
) -> (SparseMlp, f32, Option<Vec<usize>>) {
    let ce = CrossEntropyLossConfig::new().init(&device());
    if dst.is_update_step(t) && dst.is_streamed() {
        let taps = net.taps(x.dims()[0]);
        let (logits, inputs) = net.forward_tapped(x, &taps);
        let loss = ce.forward(logits, y);
        let l = finite_loss(&loss).unwrap();
        let raw = loss.backward();
        let tapped = burn_sparse::sparse_dst::read_taps(&inputs, &taps, &raw).unwrap();
        let mut grads = GradientsParams::from_grads(raw, &net);
        let (net, changed) = dst
            .update_streamed(t, net, &tapped, optim, &mut grads)
            .unwrap();
        (optim.step(0.05, net, grads).unwrap(), l, Some(changed))
    } else if dst.is_update_step(t) {
        let probes = net.probes();
        let loss = ce.forward(net.forward_probed(x, &probes), y);
        let l = finite_loss(&loss).unwrap();
        let raw = loss.backward();
        let dense: Vec<Vec<f32>> = probes.iter().map(|p| host(p.grad(&raw).unwrap())).collect();
        let mut grads = GradientsParams::from_grads(raw, &net);
        let (net, changed) = dst.update(t, net, &dense, optim, &mut grads).unwrap();
        (optim.step(0.05, net, grads).unwrap(), l, Some(changed))
    } else {
        let loss = ce.forward(net.forward(x), y);
        let l = finite_loss(&loss).unwrap();
        let grads = GradientsParams::from_grads(loss.backward(), &net);
        (optim.step(0.05, net, grads).unwrap(), l, None)
    }
}

/// Sparse layers against the masked path from the same start: the losses agree within 1e-3
/// (relative) at every step, and every update keeps each layer's nnz. The dense-view driver
/// (`streamed = false`) reads the same dense gradient as the masked path and must choose the
/// same masks bit for bit; streamed RigL scores positions with its own summation order, so a
/// position whose score ties another's to the last bits may fall on either side of the cut: it
/// must choose all but at most 0.5% of each layer's positions alike.
fn same_topology_as_masked_path(rigl: bool) {
    masked_and_sparse_paths_agree(rigl, false);
}

fn masked_and_sparse_paths_agree(rigl: bool, streamed: bool) {
    let m = Mlp::seeded([784, 300, 100, 10], 11, &device());
    let net = LeNet300 {
        fc1: m.l1,
        fc2: m.l2,
        fc3: m.l3,
    };
    let masks = magnitude_masks(
        &net,
        &ParamFilter::new(),
        Sparsity::new(0.95).unwrap(),
        &Scope::Layerwise(SparsityDistribution::Erk),
    )
    .unwrap();
    let net = masks.apply(net);
    let c = cfg(rigl, 10, 40);
    // Masked path: dense LeNet-300-100 with the updater inside SparseOptimizer.
    let mut om = SparseOptimizer::new(SgdRule::default(), masks.clone())
        .unwrap()
        .with_updater(updater(rigl, c))
        .unwrap();
    // Sparse path: SparseMlp on the kernels, the same updater through SparseDst.
    let mut snet = SparseMlp::from_lenet300(&net, &masks, Compute::Auto).unwrap();
    let mut os = SparseOptimizer::new(SgdRule::default(), MaskSet::empty()).unwrap();
    let mut dst = if streamed {
        SparseDst::streamed(c, burn_sparse::sparse_dst::StreamedGrow::Gradient).unwrap()
    } else {
        SparseDst::new(updater(rigl, c)).unwrap()
    };
    let ce = CrossEntropyLossConfig::new().init(&device());
    let mut mnet = net;
    let mut updates = 0;
    for step in 0..30u64 {
        let t = step + 1;
        let (x, y) = data(64, 784, 10, step);
        let lm = {
            let loss = ce.forward(mnet.logits(x.clone().reshape([64, 1, 28, 28])), y.clone());
            let l = finite_loss(&loss).unwrap();
            let grads = GradientsParams::from_grads(loss.backward(), &mnet);
            mnet = om.step(0.05, mnet, grads).unwrap();
            l
        };
        let (n, ls, changed) = sparse_step(t, snet, &mut dst, &mut os, x, y);
        snet = n;
        assert!(
            (ls - lm).abs() <= 1e-3 * lm.abs().max(1.0),
            "step {t}: {ls} vs {lm}"
        );
        if let Some(changed) = changed {
            updates += 1;
            assert!(changed.iter().sum::<usize>() > 0, "step {t}: nothing moved");
            let report = om.last_report().unwrap();
            let masked_changed: Vec<usize> = report.changed.iter().map(|(_, c)| *c).collect();
            if !streamed {
                assert_eq!(changed, masked_changed, "step {t}: connections changed");
            }
            for (i, name) in ["fc1.weight", "fc2.weight", "fc3.weight"]
                .iter()
                .enumerate()
            {
                let bits = om.masks().layer(name).unwrap().bits().to_vec();
                let ours = snet.layers[i].active_mask().unwrap();
                assert_eq!(snet.layers[i].nnz(), masks.layer(name).unwrap().nnz());
                if streamed {
                    let differ = ours.iter().zip(&bits).filter(|(a, b)| a != b).count();
                    assert!(
                        200 * differ <= snet.layers[i].nnz(),
                        "step {t}: {name}: {differ} positions differ"
                    );
                } else {
                    assert_eq!(ours, bits, "step {t}: {name}");
                }
            }
        }
    }
    assert_eq!(updates, 3);
    // The trained weights agree too (float rounding of two summation orders).
    let dense = snet.to_lenet300().unwrap();
    let (a, b) = (host(dense.fc1.weight.val()), host(mnet.fc1.weight.val()));
    let max = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(max < 1e-4, "fc1 differs by {max}");
}

#[test]
fn rigl_on_sparse_layers_chooses_the_masked_topology() {
    same_topology_as_masked_path(true);
}

#[test]
fn streamed_rigl_on_sparse_layers_follows_the_masked_path() {
    masked_and_sparse_paths_agree(true, true);
}

#[test]
fn set_on_sparse_layers_chooses_the_masked_topology() {
    same_topology_as_masked_path(false);
}

#[test]
fn nnz_exact_and_grown_slots_clean_over_1000_updates() {
    use burn_sparse::models::SparseMlpConfig;
    let d = device();
    let mut net = SparseMlpConfig::new(vec![24, 20, 16, 4], vec![0.2, 0.25, 0.5])
        .with_compute(Compute::Sparse)
        .init(&d)
        .unwrap();
    let nnz: Vec<usize> = net.layers.iter().map(|l| l.nnz()).collect();
    let mut optim = SparseOptimizer::new(SgdRule::default(), MaskSet::empty()).unwrap();
    let mut dst = SparseDst::new(updater(false, cfg(false, 1, 1000))).unwrap();
    let ce = CrossEntropyLossConfig::new().init(&d);
    let mut moved_total = 0usize;
    for step in 0..1000u64 {
        let t = step + 1;
        let (x, y) = data(16, 24, 4, step % 7);
        let probes = net.probes();
        let loss = ce.forward(net.forward_probed(x, &probes), y);
        let raw = loss.backward();
        let dense: Vec<Vec<f32>> = probes.iter().map(|p| host(p.grad(&raw).unwrap())).collect();
        let mut grads = GradientsParams::from_grads(raw, &net);
        let before: Vec<Vec<u32>> = net
            .layers
            .iter()
            .map(|l| {
                let p = l.pattern().unwrap();
                (0..p.nnz()).map(|s| p.flat_index(s) as u32).collect()
            })
            .collect();
        let (n, _) = dst.update(t, net, &dense, &mut optim, &mut grads).unwrap();
        for (i, l) in n.layers.iter().enumerate() {
            assert_eq!(l.nnz(), nnz[i], "step {t} layer {i}");
            assert_eq!(
                l.active_mask().unwrap().iter().filter(|&&b| b).count(),
                nnz[i]
            );
            let p = l.pattern().unwrap();
            let values = l.host_values().unwrap();
            let state = optim.state(l.values.id).map(|s| host(s.slots[0].clone()));
            for s in 0..p.nnz() {
                if p.flat_index(s) as u32 != before[i][s] {
                    moved_total += 1;
                    assert_eq!(values[s], 0.0, "grown slot {s} of layer {i} at step {t}");
                    if let Some(st) = &state {
                        assert_eq!(st[s], 0.0, "state of grown slot {s} of layer {i}");
                    }
                }
            }
        }
        net = optim.step(0.05, n, grads).unwrap();
    }
    assert!(moved_total > 1000, "only {moved_total} slots moved");
}

#[test]
fn snfs_is_refused_with_a_reason() {
    let snfs = Snfs::new(SnfsConfig::reference(100, 10, 0).unwrap()).unwrap();
    let err = SparseDst::new(Box::new(snfs)).unwrap_err();
    assert!(
        matches!(err, SparseDstError::Unsupported(ref m) if m.contains("momentum")),
        "{err}"
    );
}

#[test]
fn accumulated_grow_scores_are_refused_with_a_reason() {
    let mut c = cfg(true, 10, 100);
    c.grad_accumulation = 4;
    let err = SparseDst::new(updater(true, c)).unwrap_err();
    assert!(
        matches!(err, SparseDstError::Unsupported(ref m) if m.contains("accumulated")),
        "{err}"
    );
}

#[test]
fn gmp_is_refused_with_a_reason() {
    use burn_sparse::dynamic::{DstMethod, DstPlan};
    let plan = DstPlan::new(DstMethod::Gmp, Sparsity::new(0.9).unwrap(), 1000, 100, 0);
    let err = SparseDst::new(plan.updater().unwrap().unwrap()).unwrap_err();
    assert!(
        matches!(err, SparseDstError::Unsupported(ref m) if m.contains("removes weights")),
        "{err}"
    );
}

/// Kill after step 10 of 20 (model record + optimizer archive), resume into fresh objects:
/// the resumed run ends bit-identical to the uninterrupted one, topology updates included.
#[test]
fn sparse_dst_resumes_bit_identically() {
    use burn_sparse::mask::checkpoint::{load_module, save_module_atomic};
    use burn_sparse::models::SparseMlpConfig;
    let d = device();
    let build = || {
        SparseMlpConfig::new(vec![24, 20, 16, 4], vec![0.2, 0.25, 0.5])
            .with_compute(Compute::Sparse)
            .init(&d)
            .unwrap()
    };
    let run = |mut net: SparseMlp, mut optim: SparseOptimizer, from: u64, to: u64| {
        let mut dst = SparseDst::new(updater(true, cfg(true, 3, 18))).unwrap();
        for step in from..to {
            let (x, y) = data(16, 24, 4, step);
            net = sparse_step(step + 1, net, &mut dst, &mut optim, x, y).0;
        }
        (net, optim)
    };
    let start = build();
    let fresh_optim = || SparseOptimizer::new(SgdRule::default(), MaskSet::empty()).unwrap();
    let (full, _) = run(start.clone(), fresh_optim(), 0, 20);
    let (half, optim) = run(start, fresh_optim(), 0, 10);
    let dir = tempfile::tempdir().unwrap();
    save_module_atomic(half, &dir.path().join("model.bpk")).unwrap();
    optim.save(&dir.path().join("optim.bsp")).unwrap();
    // A fresh model (another random pattern of the same size) takes the checkpoint.
    let other = SparseMlpConfig::new(vec![24, 20, 16, 4], vec![0.2, 0.25, 0.5])
        .with_seed(99)
        .with_compute(Compute::Sparse)
        .init(&d)
        .unwrap();
    let loaded = load_module(other, &dir.path().join("model.bpk")).unwrap();
    let optim = SparseOptimizer::load(&dir.path().join("optim.bsp"), &loaded).unwrap();
    assert_eq!(optim.steps(), 10);
    let (resumed, _) = run(loaded, optim, 10, 20);
    for (a, b) in full.layers.iter().zip(&resumed.layers) {
        assert_eq!(a.active_mask().unwrap(), b.active_mask().unwrap());
        let (va, vb) = (a.host_values().unwrap(), b.host_values().unwrap());
        assert_eq!(
            va.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            vb.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
    }
}

/// What a training run of a plan gets: RigL streamed when its settings allow, on dense views
/// otherwise (structured, accumulated scores, skipped weight updates) and for SET; nothing for
/// static; SNFS and GMP refused.
#[test]
fn a_plan_gets_streamed_rigl_where_it_can() {
    use burn_sparse::dynamic::{DstMethod, DstPlan};
    let s = Sparsity::new(0.9).unwrap();
    let plan = |m: DstMethod| DstPlan::new(m, s, 1000, 100, 0);
    let rigl = SparseDst::from_plan(&plan(DstMethod::Rigl))
        .unwrap()
        .unwrap();
    assert!(rigl.is_streamed() && rigl.name() == "rigl");
    let mut accumulated = plan(DstMethod::Rigl);
    accumulated.grad_accumulation = 2;
    let views = SparseDst::from_plan(&accumulated);
    // Accumulated grow scores read dense gradients between updates: refused on sparse layers.
    assert!(
        matches!(views, Err(SparseDstError::Unsupported(_))),
        "{views:?}"
    );
    let mut skip = plan(DstMethod::Rigl);
    skip.skip_weight_update = true;
    let views = SparseDst::from_plan(&skip).unwrap().unwrap();
    assert!(!views.is_streamed() && views.name() == "rigl");
    let mut nm = DstPlan::new(DstMethod::Rigl, Sparsity::new(0.5).unwrap(), 1000, 100, 0);
    nm.structure = burn_sparse::mask::Structure::NByM { n: 2, m: 4 };
    let views = SparseDst::from_plan(&nm).unwrap().unwrap();
    assert!(!views.is_streamed());
    let set = SparseDst::from_plan(&plan(DstMethod::Set))
        .unwrap()
        .unwrap();
    assert!(!set.is_streamed() && set.name() == "set");
    assert!(
        SparseDst::from_plan(&plan(DstMethod::Static))
            .unwrap()
            .is_none()
    );
    for m in [DstMethod::Snfs, DstMethod::Gmp] {
        assert!(matches!(
            SparseDst::from_plan(&plan(m)),
            Err(SparseDstError::Unsupported(_))
        ));
    }
}
