//! Streamed SET and RigL (`SparseDst::streamed`): O(nnz) topology updates from the layers'
//! inputs and output gradients. RigL grows exactly what the dense-view driver grows from the
//! same gradients; nnz stays exact, grown slots start at 0 with 0 state, the same seed gives
//! the same topology, and a 16384-wide network trains and checkpoints without a dense matrix.

use burn::module::Param;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_sparse::dynamic::{GrowInit, RiglUpdater};
use burn_sparse::kernels::{Kernels, SparsePattern, reference};
use burn_sparse::layers::{Compute, SparseLinear};
use burn_sparse::mask::prelude::*;
use burn_sparse::models::{SparseMlp, SparseMlpConfig};
use burn_sparse::sparse_dst::{LayerTap, SparseDst, SparseDstError, StreamedGrow, read_taps};

mod common;
use common::{cfg, data, device, host};

/// A small network whose values sit on 7 levels, so drops meet ties.
fn tied_net(seed: u64) -> SparseMlp {
    let d = device();
    let net = SparseMlpConfig::new(vec![24, 20, 16, 4], vec![0.2, 0.25, 0.5])
        .with_seed(seed)
        .with_compute(Compute::Sparse)
        .init(&d)
        .unwrap();
    let mut rng = SparseRng::new(seed ^ 0xabc);
    let layers = net
        .layers
        .into_iter()
        .map(|l| {
            let p = (*l.pattern().unwrap()).clone();
            let v: Vec<f32> = (0..p.nnz())
                .map(|_| (rng.below(7) as f32 - 3.0) * 0.05)
                .collect();
            let values = Tensor::<1>::from_data(TensorData::new(v, [p.nnz()]), &d).require_grad();
            // The bias from the test's own stream too (burn's initialiser draws from the
            // device's shared one).
            let b: Vec<f32> = (0..p.cols()).map(|_| rng.next_f32() * 0.1 - 0.05).collect();
            let bias = Tensor::<1>::from_data(TensorData::new(b, [p.cols()]), &d).require_grad();
            SparseLinear::from_parts(
                p,
                Param::from_tensor(values),
                Some(Param::from_tensor(bias)),
                Compute::Sparse,
            )
            .unwrap()
        })
        .collect();
    SparseMlp { layers }
}

/// The forward and backward pass of an update step through the taps.
fn tapped_step(
    net: &SparseMlp,
    x: Tensor<2>,
    y: Tensor<1, Int>,
) -> (f32, Vec<LayerTap>, GradientsParams) {
    let ce = CrossEntropyLossConfig::new().init(&device());
    let taps = net.taps(x.dims()[0]);
    let (logits, inputs) = net.forward_tapped(x, &taps);
    let loss = ce.forward(logits, y);
    let l = finite_loss(&loss).unwrap();
    let raw = loss.backward();
    let tapped = read_taps(&inputs, &taps, &raw).unwrap();
    (l, tapped, GradientsParams::from_grads(raw, net))
}

/// The dense `dL/dW` of every layer from its tap, summed as the streamed grow step scores it
/// (`reference::dense_dw`: each entry a plain sum over the batch), row-major.
fn dense_grads(net: &SparseMlp, taps: &[LayerTap]) -> Vec<Vec<f32>> {
    net.layers
        .iter()
        .zip(taps)
        .map(|(l, t)| reference::dense_dw(&t.xt, &t.dyt, l.d_input, l.d_output, t.batch))
        .collect()
}

/// The dense `dL/dW` of every layer with the sampled product's dot product (a fully dense
/// pattern's sampled gradient, slots in flat order): what streamed SET gives a grown slot.
fn sampled_grads(net: &SparseMlp, taps: &[LayerTap]) -> Vec<Vec<f32>> {
    net.layers
        .iter()
        .zip(taps)
        .map(|(l, t)| {
            let full = SparsePattern::from_mask(
                l.d_input,
                l.d_output,
                &vec![true; l.d_input * l.d_output],
            )
            .unwrap();
            let mut g = vec![0.0; full.nnz()];
            Kernels::default()
                .backward_values(&full, &t.xt, &t.dyt, t.batch, &mut g)
                .unwrap();
            g
        })
        .collect()
}

fn slots(l: &SparseLinear) -> Vec<usize> {
    let p = l.pattern().unwrap();
    (0..p.nnz()).map(|s| p.flat_index(s)).collect()
}

#[test]
fn streamed_rigl_makes_the_dense_view_choices_bit_for_bit() {
    let c = cfg(true, 1, 40);
    let mut views = SparseDst::new(Box::new(RiglUpdater::rigl(c).unwrap())).unwrap();
    let mut streamed = SparseDst::streamed(c, StreamedGrow::Gradient).unwrap();
    assert!(streamed.is_streamed() && !views.is_streamed());
    assert_eq!(streamed.name(), "rigl");
    let rule = SgdRule {
        momentum: 0.9,
        ..SgdRule::default()
    };
    let mut oa = SparseOptimizer::new(rule, MaskSet::empty()).unwrap();
    let mut ob = SparseOptimizer::new(rule, MaskSet::empty()).unwrap();
    let (mut a, mut b) = (tied_net(3), tied_net(3));
    let mut moved = 0;
    for step in 0..30u64 {
        let t = step + 1;
        let (x, y) = data(8, 24, 4, step);
        let (la, ta, mut ga) = tapped_step(&a, x.clone(), y.clone());
        let (lb, tb, mut gb) = tapped_step(&b, x, y);
        assert_eq!(la.to_bits(), lb.to_bits(), "step {t}: loss");
        assert_eq!(ta, tb, "step {t}: taps");
        let dense = dense_grads(&a, &ta);
        let (na, ca) = views.update(t, a, &dense, &mut oa, &mut ga).unwrap();
        let (nb, cb) = streamed
            .update_streamed(t, b, &tb, &mut ob, &mut gb)
            .unwrap();
        assert_eq!(ca, cb, "step {t}: connections changed");
        moved += cb.iter().sum::<usize>();
        for (i, (la, lb)) in na.layers.iter().zip(&nb.layers).enumerate() {
            assert_eq!(slots(la), slots(lb), "step {t} layer {i}: slot positions");
            assert_eq!(
                la.host_values().unwrap(),
                lb.host_values().unwrap(),
                "step {t} layer {i}"
            );
            assert_eq!(
                host(ga.get::<1>(la.values.id).unwrap()),
                host(gb.get::<1>(lb.values.id).unwrap()),
                "step {t} layer {i}: this step's gradient"
            );
        }
        a = oa.step(0.05, na, ga).unwrap();
        b = ob.step(0.05, nb, gb).unwrap();
        for (la, lb) in a.layers.iter().zip(&b.layers) {
            assert_eq!(
                la.host_values().unwrap(),
                lb.host_values().unwrap(),
                "step {t}: after the step"
            );
        }
    }
    assert!(moved > 30, "only {moved} connections moved");
    assert_eq!(streamed.streamed_history().0.len(), 30);
}

/// Layers large enough to share an update's work (the 512 x 256 layer's grow step, 16.8M
/// multiply-adds at batch 128, with a helper thread; the two smaller layers planned on
/// another): pools of 1, 2 and 3 threads make the same moves, values and gradients.
#[test]
fn streamed_updates_do_not_depend_on_the_threads() {
    type Layers = Vec<(Vec<usize>, Vec<f32>, Vec<f32>)>;
    // One network for every run (burn's initialiser draws the values from the device's
    // shared stream).
    let start = SparseMlpConfig::new(vec![512, 256, 128, 10], vec![0.05, 0.05, 0.3])
        .with_seed(5)
        .with_compute(Compute::Sparse)
        .init(&device())
        .unwrap();
    let run = |threads: usize| -> Vec<(Vec<usize>, Layers)> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut net = start.clone();
            let mut dst = SparseDst::streamed(cfg(true, 1, 40), StreamedGrow::Gradient).unwrap();
            let rule = SgdRule {
                momentum: 0.9,
                ..SgdRule::default()
            };
            let mut optim = SparseOptimizer::new(rule, MaskSet::empty()).unwrap();
            let mut out = Vec::new();
            for step in 0..3u64 {
                let (x, y) = data(128, 512, 10, step);
                let (_, taps, mut g) = tapped_step(&net, x, y);
                let (n, changed) = dst
                    .update_streamed(step + 1, net, &taps, &mut optim, &mut g)
                    .unwrap();
                let layers = n
                    .layers
                    .iter()
                    .map(|l| {
                        let grad = host(g.get::<1>(l.values.id).unwrap());
                        (slots(l), l.host_values().unwrap(), grad)
                    })
                    .collect();
                out.push((changed, layers));
                net = optim.step(0.05, n, g).unwrap();
            }
            out
        })
    };
    let one = run(1);
    assert!(
        one.iter().all(|(c, _)| c.iter().all(|&n| n > 0)),
        "{:?}",
        one[0].0
    );
    assert!(run(2) == one, "2 threads");
    assert!(run(3) == one, "3 threads");
}

/// SET, streamed, every step: exact nnz, moved slots at fresh positions with value 0 and state
/// 0 (before the step), and the same topology from the same seed.
fn set_run(seed: u64, init: GrowInit) -> (Vec<Vec<usize>>, usize) {
    let mut c = cfg(false, 1, 300);
    c.seed = seed;
    c.init = init;
    let mut dst = SparseDst::streamed(c, StreamedGrow::Random).unwrap();
    let rule = SgdRule {
        momentum: 0.9,
        ..SgdRule::default()
    };
    let mut optim = SparseOptimizer::new(rule, MaskSet::empty()).unwrap();
    let mut net = tied_net(5);
    let nnz: Vec<usize> = net.layers.iter().map(SparseLinear::nnz).collect();
    let mut moved = 0;
    for step in 0..300u64 {
        let t = step + 1;
        let (x, y) = data(8, 24, 4, step % 5);
        let (_, taps, mut grads) = tapped_step(&net, x, y);
        let before: Vec<Vec<usize>> = net.layers.iter().map(slots).collect();
        let (n, changed) = dst
            .update_streamed(t, net, &taps, &mut optim, &mut grads)
            .unwrap();
        for (i, l) in n.layers.iter().enumerate() {
            assert_eq!(l.nnz(), nnz[i], "step {t} layer {i}");
            let now = slots(l);
            let was: std::collections::HashSet<usize> = before[i].iter().copied().collect();
            let values = l.host_values().unwrap();
            let state = optim.state(l.values.id).map(|s| host(s.slots[0].clone()));
            let dense = sampled_grads(&n, &taps);
            let g = host(grads.get::<1>(l.values.id).unwrap());
            let mut here = 0;
            for s in 0..l.nnz() {
                if now[s] != before[i][s] {
                    here += 1;
                    assert!(
                        !was.contains(&now[s]),
                        "slot {s} moved onto an active position"
                    );
                    if init == GrowInit::Zero {
                        assert_eq!(values[s], 0.0, "grown slot {s} of layer {i} at step {t}");
                    }
                    if let Some(st) = &state {
                        assert_eq!(st[s], 0.0, "state of grown slot {s} of layer {i}");
                    }
                    assert_eq!(g[s], dense[i][now[s]], "gradient of grown slot {s}");
                }
            }
            assert_eq!(here, changed[i], "step {t} layer {i}: changed");
            moved += here;
        }
        net = optim.step(0.05, n, grads).unwrap();
    }
    (net.layers.iter().map(slots).collect(), moved)
}

#[test]
fn streamed_set_keeps_nnz_exact_grown_slots_clean_and_is_deterministic() {
    let (a, moved) = set_run(1, GrowInit::Zero);
    assert!(moved > 300, "only {moved} connections moved");
    assert_eq!(a, set_run(1, GrowInit::Zero).0, "same seed, same topology");
    assert_ne!(
        a,
        set_run(2, GrowInit::Zero).0,
        "another seed, another topology"
    );
    set_run(1, GrowInit::Normal { std: 0.01 });
}

#[test]
fn streamed_refuses_what_it_cannot_stream_with_a_reason() {
    let mut c = cfg(true, 10, 100);
    c.grad_accumulation = 4;
    let e = SparseDst::streamed(c, StreamedGrow::Gradient).unwrap_err();
    assert!(
        matches!(e, SparseDstError::Unsupported(ref m) if m.contains("accumulated")),
        "{e}"
    );
    let mut c = cfg(true, 10, 100);
    c.skip_weight_update = true;
    assert!(SparseDst::streamed(c, StreamedGrow::Gradient).is_err());
    let mut c = cfg(true, 10, 100);
    c.structure = burn_sparse::mask::Structure::NByM { n: 2, m: 4 };
    assert!(SparseDst::streamed(c, StreamedGrow::Random).is_err());
    let mut c = cfg(true, 10, 100);
    c.drop_fraction = DropFraction::Constant { alpha: 1.5 };
    assert!(SparseDst::streamed(c, StreamedGrow::Random).is_err());
    // The two drivers do not take each other's inputs.
    let mut s = SparseDst::streamed(cfg(true, 1, 10), StreamedGrow::Gradient).unwrap();
    let net = tied_net(1);
    let mut o = SparseOptimizer::new(SgdRule::default(), MaskSet::empty()).unwrap();
    let mut g = GradientsParams::new();
    assert!(matches!(
        s.update(1, net.clone(), &[], &mut o, &mut g),
        Err(SparseDstError::Unsupported(_))
    ));
    assert!(matches!(
        s.update_streamed(1, net, &[], &mut o, &mut g),
        Err(SparseDstError::Unsupported(_))
    ));
}

/// Peak resident memory of this process (Linux `VmHWM`), in bytes.
fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A 64-16384-16384-4 network: the middle layer has 268M positions (1 GiB as a dense f32
/// weight, as much again for its dense gradient) and 262144 non-zeros. Four steps of
/// streamed RigL, every one an update, then a checkpoint round trip. Run alone (the bound is
/// on the process's peak memory):
/// `cargo test -p burn-sparse --test streamed -- --ignored wide`.
#[test]
#[ignore = "about 20 s in debug, and it bounds the process's peak memory: run it alone (.ci/run does)"]
fn wide_16384_layer_trains_and_checkpoints_without_a_dense_matrix() {
    use burn_sparse::mask::checkpoint::{load_module, save_module_atomic};
    let d = device();
    let w = 16384usize;
    let widths = vec![64, w, w, 4];
    let densities = vec![0.25, 1.0 / 1024.0, 0.5];
    let mut net = SparseMlpConfig::new(widths.clone(), densities.clone())
        .with_compute(Compute::Sparse)
        .init(&d)
        .unwrap();
    assert_eq!(net.layers[1].nnz(), w * w / 1024);
    let mut dst = SparseDst::streamed(cfg(true, 1, 100), StreamedGrow::Gradient).unwrap();
    let mut optim = SparseOptimizer::new(SgdRule::default(), MaskSet::empty()).unwrap();
    let nnz: Vec<usize> = net.layers.iter().map(SparseLinear::nnz).collect();
    for step in 0..4u64 {
        let t = step + 1;
        let (x, y) = data(32, 64, 4, step);
        let (loss, taps, mut grads) = tapped_step(&net, x, y);
        assert!(loss.is_finite());
        let (n, changed) = dst
            .update_streamed(t, net, &taps, &mut optim, &mut grads)
            .unwrap();
        assert!(changed[1] > 0, "step {t}: the wide layer did not change");
        net = optim.step(0.05, n, grads).unwrap();
        assert_eq!(
            net.layers.iter().map(SparseLinear::nnz).collect::<Vec<_>>(),
            nnz
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wide");
    save_module_atomic(net.clone(), &path).unwrap();
    let bytes: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let total_nnz: usize = nnz.iter().sum();
    // Values (4 bytes) and coordinates (8 bytes) per non-zero, and the biases.
    assert!(
        bytes < (12 * total_nnz + 4 * (2 * w + 4) + (1 << 16)) as u64,
        "checkpoint of {bytes} bytes for {total_nnz} non-zeros"
    );
    let fresh = SparseMlpConfig::new(widths, densities)
        .with_seed(99)
        .with_compute(Compute::Sparse)
        .init(&d)
        .unwrap();
    let back: SparseMlp = load_module(fresh, &path).unwrap();
    for (a, b) in net.layers.iter().zip(&back.layers) {
        assert_eq!(slots(a), slots(b));
        assert_eq!(a.host_values().unwrap(), b.host_values().unwrap());
    }
    let dense_weight = (w * w * 4) as u64;
    if let Some(peak) = peak_rss() {
        eprintln!("peak resident memory {} MiB", peak >> 20);
        // Measured: 86 MiB. The bound: a quarter of the dense weight alone.
        assert!(
            peak < dense_weight / 4,
            "peak resident memory {peak} bytes; the dense weight alone is {dense_weight}"
        );
    }
}

/// ERK and ER over a 784-65536-65536-10 network (4.4e9 positions) at 99.95% sparsity: each layer
/// gets exactly the distribution's count (the masked path's largest-remainder split), built
/// without enumerating a layer; the same seed gives the same topology.
#[test]
fn erk_and_er_at_four_billion_positions_have_exact_counts() {
    use burn_sparse::mask::{Sparsity, SparsityDistribution};
    let widths = vec![784, 65536, 65536, 10];
    let s = Sparsity::new(0.9995).unwrap();
    let infos = SparseMlpConfig::layer_infos(&widths);
    let d = Device::flex();
    for dist in [SparsityDistribution::Erk, SparsityDistribution::Er] {
        let want = dist.layer_counts(&infos, s, &Default::default()).unwrap();
        let cfg = SparseMlpConfig::distributed(widths.clone(), s, &dist)
            .unwrap()
            .with_seed(4);
        let net = cfg.init(&d).unwrap();
        let got: Vec<usize> = net.layers.iter().map(SparseLinear::nnz).collect();
        assert_eq!(got, want, "{dist:?}");
        assert_eq!(
            got.iter().sum::<usize>(),
            s.kept(784 * 65536 + 65536 * 65536 + 655_360)
        );
        let again = cfg.init(&d).unwrap();
        for (a, b) in net.layers.iter().zip(&again.layers) {
            assert_eq!(*a.pattern().unwrap(), *b.pattern().unwrap());
        }
    }
}
