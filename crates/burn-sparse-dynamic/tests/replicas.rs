//! Data-parallel consistency of the topology updates. Two replicas, each with its own model and
//! its own `SparseOptimizer`, see different halves of every global batch; their gradients are
//! averaged (what burn's DDP all-reduce with `ReduceOperation::Mean` does before the optimizer
//! step) and each replica steps on the averaged gradients. The replicas' masks and weights must
//! stay identical bit for bit through many RigL / SET / SNFS updates, and must match one replica
//! trained on the whole global batch up to float rounding.
//!
//! burn 0.22.1 implements the all-reduce only for CUDA (NCCL): flex and ndarray have no
//! collective operations and a single device id, so burn's `ExecutionStrategy::ddp` cannot run
//! on this machine's CPU (docs/SCALING.md). The average below stands in for that collective so
//! the property the library is responsible for (same gradients and weights + seed derived from
//! step and layer => same mask everywhere) is tested on the CPU.

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::GradientsParams;
use burn::tensor::{Int, Tensor, TensorData};
use burn_sparse_dynamic::{DstMethod, DstPlan};
use burn_sparse_mask::param_infos;
use burn_sparse_mask::prelude::*;
use burn_sparse_test_support::{Mlp, device};

const DIMS: [usize; 4] = [12, 16, 10, 4];
const GLOBAL_BATCH: usize = 16;

fn batch(
    step: u64,
    rows: std::ops::Range<usize>,
    d: &burn::tensor::Device,
) -> (Tensor<2>, Tensor<1, Int>) {
    let mut rng = SparseRng::derive(99, &[step]);
    let x: Vec<f32> = (0..GLOBAL_BATCH * DIMS[0])
        .map(|_| rng.next_f32() * 2.0 - 1.0)
        .collect();
    let y: Vec<i64> = (0..GLOBAL_BATCH)
        .map(|i| ((i + step as usize) % DIMS[3]) as i64)
        .collect();
    let n = rows.len();
    let x = x[rows.start * DIMS[0]..rows.end * DIMS[0]].to_vec();
    let y = y[rows.clone()].to_vec();
    (
        Tensor::<2>::from_data(TensorData::new(x, [n, DIMS[0]]), d),
        Tensor::<1, Int>::from_data(TensorData::new(y, [n]), d),
    )
}

fn grads(
    m: &Mlp,
    step: u64,
    rows: std::ops::Range<usize>,
    d: &burn::tensor::Device,
) -> GradientsParams {
    let (x, y) = batch(step, rows, d);
    let loss = CrossEntropyLossConfig::new()
        .init(d)
        .forward(m.forward(x), y);
    GradientsParams::from_grads(loss.backward(), m)
}

/// The mean of the replicas' gradients, registered under each replica's own parameter ids.
fn all_reduce_mean(models: &[&Mlp], mut gs: Vec<GradientsParams>) -> Vec<GradientsParams> {
    let infos: Vec<_> = models.iter().map(|m| param_infos(*m)).collect();
    let mut out: Vec<GradientsParams> = models.iter().map(|_| GradientsParams::new()).collect();
    for k in 0..infos[0].len() {
        let rank = infos[0][k].shape.len();
        macro_rules! reduce {
            ($d:literal) => {{
                let parts: Vec<Tensor<$d>> = gs
                    .iter_mut()
                    .zip(&infos)
                    .map(|(g, inf)| {
                        g.remove::<$d>(inf[k].id)
                            .expect("every replica has the grad")
                    })
                    .collect();
                let n = parts.len() as f32;
                let mean = parts
                    .into_iter()
                    .reduce(|a, b| a + b)
                    .expect("two replicas")
                    / n;
                for (o, inf) in out.iter_mut().zip(&infos) {
                    o.register::<$d>(inf[k].id, mean.clone());
                }
            }};
        }
        match rank {
            1 => reduce!(1),
            2 => reduce!(2),
            r => panic!("rank {r}"),
        }
    }
    out
}

fn host(masks: &MaskSet, m: &Mlp) -> (Vec<Vec<bool>>, Vec<Vec<f32>>) {
    (
        masks.layers().iter().map(|l| l.bits().to_vec()).collect(),
        masks.read_weights(m).unwrap(),
    )
}

#[test]
fn replicas_on_all_reduced_gradients_keep_identical_masks() {
    let d = device();
    let steps = 240u64;
    let spe = 40; // SET and SNFS update once per "epoch" of 40 steps
    for method in [DstMethod::Rigl, DstMethod::Set, DstMethod::Snfs] {
        let mut plan = DstPlan::new(method, Sparsity::new(0.8).unwrap(), steps, spe, 7);
        plan.delta_t = 10;
        let rule = SgdRule::default().with_weight_decay(1e-4);
        let filter = ParamFilter::new();
        let build = || plan.build(Mlp::seeded(DIMS, 3, &d), &filter, rule).unwrap();
        let (mut a, mut oa) = build();
        let (mut b, mut ob) = build();
        let (mut single, mut os) = build();
        let mut updates = 0;
        let mut swapped = 0usize;
        let mask_bits = |m: &MaskSet| -> Vec<bool> {
            m.layers().iter().flat_map(|l| l.bits().to_vec()).collect()
        };
        let initial = mask_bits(oa.masks());
        let mut prev = initial.clone();
        for t in 0..steps {
            let g = vec![grads(&a, t, 0..8, &d), grads(&b, t, 8..16, &d)];
            let mut g = all_reduce_mean(&[&a, &b], g);
            let gb = g.pop().unwrap();
            let ga = g.pop().unwrap();
            a = oa.step(0.05, a, ga).unwrap();
            b = ob.step(0.05, b, gb).unwrap();
            let gs = grads(&single, t, 0..16, &d);
            single = os.step(0.05, single, gs).unwrap();
            let now = mask_bits(oa.masks());
            let flips = now.iter().zip(&prev).filter(|(x, y)| x != y).count();
            if flips > 0 {
                updates += 1;
                // A drop of k and a grow of k flip 2k positions.
                assert_eq!(flips % 2, 0, "{method:?} step {t}: {flips} flips");
                swapped += flips / 2;
            }
            prev = now;
            // Replicas: identical bit for bit, every step.
            assert_eq!(
                host(oa.masks(), &a),
                host(ob.masks(), &b),
                "{method:?} step {t}"
            );
        }
        // Updates that really moved connections, not update steps. RigL updates every 10 steps
        // up to step 180; SET and SNFS at the end of each 40-step epoch. SNFS's cosine-decayed
        // rate is 0.5/2 (1 + cos(pi 200/240)) = 0.034 at step 200, which drops
        // floor(0.034 n) = 0 of these small layers, so it moves connections 4 times (40..160).
        assert!(
            updates >= 4,
            "{method:?}: only {updates} steps moved connections"
        );
        assert!(
            swapped >= 20,
            "{method:?}: only {swapped} connections moved"
        );
        assert_ne!(
            mask_bits(oa.masks()),
            initial,
            "{method:?}: the mask never moved"
        );
        eprintln!("{method:?}: {updates} steps moved {swapped} connections");
        // Against one device with the whole batch: the same masks, weights within 1e-5 (the two
        // sums of eight rows are added in a different order than one sum of sixteen).
        let (ma, wa) = host(oa.masks(), &a);
        let (ms, ws) = host(os.masks(), &single);
        assert_eq!(
            ma, ms,
            "{method:?}: masks differ from single-device training"
        );
        let max = wa
            .iter()
            .flatten()
            .zip(ws.iter().flatten())
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(max < 1e-5, "{method:?}: max weight difference {max}");
    }
}
