//! IMP: rewinding, exact counts, baselines, resume after a kill, interpolation.

use std::path::Path;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_sparse_lottery::*;
use burn_sparse_mask::prelude::*;
use burn_sparse_mask::to_host;

/// What a trainer returns.
type TrainResult<T> = std::result::Result<T, TrainerError>;
use burn_sparse_test_support::{Mlp, device};

/// Synthetic task: 96 points in 12-d, labels from a random linear teacher (3 classes).
struct Synthetic {
    x: Vec<f32>,
    y: Vec<i64>,
    steps: u64,
    device: Device,
    /// The model each training started from (to check rewinding).
    starts: Vec<Mlp>,
    /// A pause after every step (so a kill lands inside a level).
    pause: Option<std::time::Duration>,
    /// Per training, the learning rate of every step (in order of the calls).
    lrs: Vec<Vec<f64>>,
}

impl Synthetic {
    fn new(steps: u64, device: Device) -> Self {
        let mut r = SparseRng::new(42);
        let n = 96;
        let x: Vec<f32> = (0..n * 12).map(|_| r.next_f32() * 2.0 - 1.0).collect();
        let t: Vec<f32> = (0..12 * 3).map(|_| r.next_f32() * 2.0 - 1.0).collect();
        let y = (0..n)
            .map(|i| {
                let s: Vec<f32> = (0..3)
                    .map(|c| (0..12).map(|k| x[i * 12 + k] * t[k * 3 + c]).sum())
                    .collect();
                (0..3).max_by(|&a, &b| s[a].total_cmp(&s[b])).unwrap() as i64
            })
            .collect();
        Self {
            x,
            y,
            steps,
            device,
            starts: Vec::new(),
            pause: None,
            lrs: Vec::new(),
        }
    }
    fn batch(&self, idx: &[usize]) -> (Tensor<2>, Tensor<1, Int>) {
        let x: Vec<f32> = idx
            .iter()
            .flat_map(|&i| self.x[i * 12..(i + 1) * 12].to_vec())
            .collect();
        let y: Vec<i64> = idx.iter().map(|&i| self.y[i]).collect();
        (
            Tensor::<2>::from_data(TensorData::new(x, [idx.len(), 12]), &self.device),
            Tensor::<1, Int>::from_data(TensorData::new(y, [idx.len()]), &self.device),
        )
    }
}

/// The synthetic trainer's schedule: 0.1 decayed linearly to 0.01 over the budget.
fn schedule_lr(j: u64, steps: u64) -> f64 {
    0.1 - 0.09 * j as f64 / (steps - 1) as f64
}

impl Synthetic {
    fn steps_from(
        &mut self,
        mut model: Mlp,
        optim: &mut SparseOptimizer,
        start: u64,
        seed: u64,
        lr: impl Fn(u64) -> f64,
        mut capture: Option<Capture<'_, Mlp>>,
    ) -> TrainResult<Mlp> {
        self.starts.push(model.clone());
        self.lrs.push(Vec::new());
        for j in start..self.steps {
            let mut idx: Vec<usize> = (0..96).collect();
            SparseRng::derive(seed, &[j / 6]).shuffle(&mut idx);
            let b = (j % 6) as usize * 16;
            let (x, y) = self.batch(&idx[b..b + 16]);
            let loss = CrossEntropyLossConfig::new()
                .init(&self.device)
                .forward(model.forward(x), y);
            let g = GradientsParams::from_grads(loss.backward(), &model);
            self.lrs.last_mut().unwrap().push(lr(j));
            model = optim.step(lr(j), model, g)?;
            if let Some(c) = capture.as_mut() {
                c.offer(j + 1, || model.clone());
            }
            if let Some(p) = self.pause {
                std::thread::sleep(p);
            }
        }
        Ok(model)
    }
}

impl ImpTrainer<Mlp> for Synthetic {
    fn train(
        &mut self,
        model: Mlp,
        optim: &mut SparseOptimizer,
        start: u64,
        seed: u64,
        capture: Option<Capture<'_, Mlp>>,
    ) -> TrainResult<Mlp> {
        let n = self.steps;
        self.steps_from(model, optim, start, seed, |j| schedule_lr(j, n), capture)
    }
    fn fine_tune(
        &mut self,
        model: Mlp,
        optim: &mut SparseOptimizer,
        start: u64,
        lr: Option<f64>,
        seed: u64,
    ) -> TrainResult<Mlp> {
        let lr = lr.unwrap_or(schedule_lr(self.steps - 1, self.steps));
        self.steps_from(model, optim, start, seed, |_| lr, None)
    }
    fn accuracy(&mut self, model: &Mlp) -> TrainResult<f64> {
        let idx: Vec<usize> = (0..96).collect();
        let (x, y) = self.batch(&idx);
        let pred = model.valid().forward(x.inner()).argmax(1).reshape([96]);
        let c = pred
            .equal(y.inner())
            .int()
            .sum()
            .into_data()
            .convert::<i64>()
            .try_to_vec::<i64>()
            .unwrap()[0];
        Ok(100.0 * c as f64 / 96.0)
    }
}

fn init(seed: u64) -> Mlp {
    Mlp::seeded([12, 16, 10, 3], seed, &device())
}

fn config(rewind: Rewind) -> ImpConfig {
    ImpConfig {
        rate: PruneRate::lth_fc("l3.weight"),
        levels: 3,
        min_density: None,
        rewind,
        retrain: Retrain::WeightRewinding,
        structure: Default::default(),
        baselines: vec![Variant::RandomReinit, Variant::RandomPruning],
        seed: 7,
    }
}

fn run(dir: &Path, rewind: Rewind) -> (Vec<LevelMetrics>, Synthetic) {
    let mut t = Synthetic::new(36, device());
    let imp = Imp::new(
        config(rewind),
        dir,
        ParamFilter::new(),
        SgdRule::default(),
        init,
    );
    let m = imp.run(&mut t, |_| {}).unwrap();
    (m, t)
}

#[test]
fn exact_counts_rewind_and_baselines() {
    for rewind in [Rewind::Init, Rewind::Step(6)] {
        let dir = tempfile::tempdir().unwrap();
        let (levels, t) = run(dir.path(), rewind);
        assert_eq!(levels.len(), 4);
        // Per-layer exact counts: fc layers lose round(.2 n), the output layer round(.1 n).
        let mut n = vec![12 * 16, 16 * 10, 10 * 3];
        for m in &levels {
            let got: Vec<usize> = m.layer_nnz.iter().map(|x| x.1).collect();
            assert_eq!(got, n, "level {}", m.level);
            n = vec![
                n[0] - (0.2 * n[0] as f64).round() as usize,
                n[1] - (0.2 * n[1] as f64).round() as usize,
                n[2] - (0.1 * n[2] as f64).round() as usize,
            ];
            if m.level > 0 {
                assert_eq!(m.accuracy.len(), 3, "ticket + two baselines");
            }
        }
        // Rewinding: the ticket of level 1 started from the rewind weights on its survivors and
        // 0 elsewhere. Trainings: level 0, then per level: ticket, reinit, random pruning.
        let imp = Imp::new(
            config(rewind),
            dir.path(),
            ParamFilter::new(),
            SgdRule::default(),
            init,
        );
        let rw = imp.rewind_weights().unwrap();
        if rewind == Rewind::Init {
            let w0 = to_host(init(7).l1.weight.val()).unwrap();
            assert_eq!(
                to_host(rw.l1.weight.val()).unwrap(),
                w0,
                "w0 is the initialisation"
            );
        } else {
            // w_k is what 6 steps of dense training from init(7) on level 0's data order
            // (data seed = the config's seed) give, bit for bit.
            let mut six = Synthetic::new(6, device());
            let dense = MaskSet::dense(&init(7), &ParamFilter::new()).unwrap();
            let mut o = SparseOptimizer::new(SgdRule::default(), dense).unwrap();
            // The first 6 steps of the 36-step schedule.
            let wk = six
                .steps_from(init(7), &mut o, 0, 7, |j| schedule_lr(j, 36), None)
                .unwrap();
            assert_eq!(rw.bits(), wk.bits(), "w_k is 6 steps from init");
            assert_ne!(rw.bits(), init(7).bits(), "w_k differs from w0");
        }
        // Masks nest: every level's survivors are a subset of the previous level's.
        for level in 2..=3 {
            let prev = imp.level_masks(level - 1).unwrap();
            let next = imp.level_masks(level).unwrap();
            for (p, n) in prev.layers().iter().zip(next.layers()) {
                assert!(
                    p.bits().iter().zip(n.bits()).all(|(p, n)| *p || !*n),
                    "level {level} revived a pruned weight"
                );
            }
        }
        let masks = imp.level_masks(1).unwrap().rebind(&rw).unwrap();
        let start = &t.starts[1];
        for (l, (w_start, w_rw)) in masks.layers().iter().zip(
            masks
                .read_weights(start)
                .unwrap()
                .into_iter()
                .zip(masks.read_weights(&rw).unwrap()),
        ) {
            for ((k, a), b) in l.bits().iter().zip(&w_start).zip(&w_rw) {
                assert_eq!(*a, if *k { *b } else { 0.0 });
            }
        }
        // Random pruning kept the per-layer counts of the ticket.
        let random_start = &t.starts[3];
        let rp: Vec<usize> = masks
            .read_weights(random_start)
            .unwrap()
            .iter()
            .map(|w| w.iter().filter(|x| **x != 0.0).count())
            .collect();
        let want: Vec<usize> = masks.layers().iter().map(|l| l.nnz()).collect();
        assert!(rp.iter().zip(&want).all(|(a, b)| a <= b));
        let bits = random_pruning(&masks, 3);
        assert_eq!(
            bits.iter()
                .map(|b| b.iter().filter(|x| **x).count())
                .collect::<Vec<_>>(),
            want
        );
        assert_ne!(bits[0], masks.layers()[0].bits());
    }
}

#[test]
fn global_rate_is_exact_and_bad_rates_are_errors() {
    let m = init(1);
    let masks = MaskSet::dense(&m, &ParamFilter::new()).unwrap();
    let w = masks.read_weights(&m).unwrap();
    let bits = prune_level(&masks, &w, &PruneRate::Global(0.2)).unwrap();
    let total: usize = bits.iter().map(|b| b.iter().filter(|x| **x).count()).sum();
    assert_eq!(total, 382 - (0.2f64 * 382.0).round() as usize);
    assert!(prune_level(&masks, &w, &PruneRate::Global(1.0)).is_err());
    let mut o = std::collections::BTreeMap::new();
    o.insert("nope".to_string(), 0.1);
    assert!(matches!(
        prune_level(
            &masks,
            &w,
            &PruneRate::PerLayer {
                default: 0.2,
                overrides: o
            }
        ),
        Err(LotteryError::Mask(MaskError::UnknownParam { .. }))
    ));
}

#[test]
fn interpolation_endpoints_reproduce_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut t) = run(dir.path(), Rewind::Step(6));
    let imp = Imp::new(
        config(Rewind::Step(6)),
        dir.path(),
        ParamFilter::new(),
        SgdRule::default(),
        init,
    );
    let r = imp.instability(1, &mut t, (11, 12), 5).unwrap();
    assert_eq!(r.alphas, vec![0.0, 0.25, 0.5, 0.75, 1.0]);
    // Retrain the two ends directly: their errors equal the path's ends.
    let rw = imp.rewind_weights().unwrap();
    let masks = imp.level_masks(1).unwrap().rebind(&rw).unwrap();
    let mut errs = Vec::new();
    let mut ends = Vec::new();
    for seed in [11, 12] {
        let mut o = SparseOptimizer::new(SgdRule::default(), masks.clone()).unwrap();
        let m = t
            .train(masks.apply(rw.clone()), &mut o, 6, seed, None)
            .unwrap();
        errs.push(100.0 - t.accuracy(&m).unwrap());
        ends.push(m);
    }
    assert_eq!(r.errors[0], errs[0]);
    assert_eq!(r.errors[4], errs[1]);
    // The midpoint is the evaluation of (w_A + w_B) / 2, and the barrier is the maximum error
    // minus the mean of the ends.
    let mid = interpolate(&ends[0], &ends[1], 0.5).unwrap();
    let (wa, wb) = (
        to_host(ends[0].l1.weight.val()).unwrap(),
        to_host(ends[1].l1.weight.val()).unwrap(),
    );
    for ((m, a), b) in to_host(mid.l1.weight.val())
        .unwrap()
        .iter()
        .zip(&wa)
        .zip(&wb)
    {
        assert!((m - (0.5 * a + 0.5 * b)).abs() <= 1e-6, "{m} vs {a}, {b}");
    }
    assert_eq!(r.errors[2], 100.0 - t.accuracy(&mid).unwrap());
    let max = r.errors.iter().copied().fold(f64::MIN, f64::max);
    assert_eq!(r.instability, max - (errs[0] + errs[1]) / 2.0);
    // interpolate(a, b, 0) == a and (.., 1) == b exactly.
    let a0 = interpolate(&ends[0], &ends[1], 0.0).unwrap();
    assert_eq!(
        to_host(a0.l2.weight.val()).unwrap(),
        to_host(ends[0].l2.weight.val()).unwrap()
    );
    let a1 = interpolate(&ends[0], &ends[1], 1.0).unwrap();
    assert_eq!(
        to_host(a1.l2.weight.val()).unwrap(),
        to_host(ends[1].l2.weight.val()).unwrap()
    );
}

/// The child side of the kill test: runs IMP in the directory the parent names, slowly.
#[test]
#[ignore = "spawned by resume_after_kill_is_identical"]
fn imp_child() {
    let Ok(dir) = std::env::var("BURN_SPARSE_IMP_CHILD_DIR") else {
        return;
    };
    let mut t = Synthetic::new(36, device());
    let imp = Imp::new(
        config(Rewind::Step(6)),
        &dir,
        ParamFilter::new(),
        SgdRule::default(),
        init,
    );
    imp.run(&mut SlowTrainer(&mut t), |_| {}).unwrap();
}

struct SlowTrainer<'a>(&'a mut Synthetic);
impl ImpTrainer<Mlp> for SlowTrainer<'_> {
    fn train(
        &mut self,
        m: Mlp,
        o: &mut SparseOptimizer,
        s: u64,
        seed: u64,
        capture: Option<Capture<'_, Mlp>>,
    ) -> TrainResult<Mlp> {
        self.0.pause = Some(std::time::Duration::from_millis(15));
        self.0.train(m, o, s, seed, capture)
    }
    fn accuracy(&mut self, m: &Mlp) -> TrainResult<f64> {
        self.0.accuracy(m)
    }
}

#[test]
fn resume_after_kill_is_identical() {
    let reference = tempfile::tempdir().unwrap();
    let (want, _) = run(reference.path(), Rewind::Step(6));
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut child = std::process::Command::new(exe)
        .args(["--ignored", "--exact", "imp_child", "--nocapture"])
        .env("BURN_SPARSE_IMP_CHILD_DIR", dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it in the middle of level 1 (level 0 done, level 1 not).
    let done0 = dir.path().join("level_00/metrics.json");
    let t0 = std::time::Instant::now();
    while !done0.exists() {
        assert!(t0.elapsed().as_secs() < 120, "child never finished level 0");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !dir.path().join("level_01/metrics.json").exists(),
        "killed too late"
    );
    // Resume here; the result must equal the uninterrupted run exactly.
    let (got, _) = run(dir.path(), Rewind::Step(6));
    assert_eq!(got, want);
    let a = burn_sparse_mask::checkpoint::load_module(
        init(7),
        &reference.path().join("level_03/final.bpk"),
    )
    .unwrap();
    let b =
        burn_sparse_mask::checkpoint::load_module(init(7), &dir.path().join("level_03/final.bpk"))
            .unwrap();
    assert_eq!(
        to_host(a.l1.weight.val()).unwrap(),
        to_host(b.l1.weight.val()).unwrap()
    );
    // No temporary file is left behind anywhere.
    for e in walk(dir.path()) {
        assert!(!e.to_string_lossy().contains(".tmp-"), "{e:?}");
    }
}

fn walk(p: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap().path();
        if e.is_dir() {
            out.extend(walk(&e));
        } else {
            out.push(e);
        }
    }
    out
}

#[test]
fn lmc_barrier_of_a_hand_built_path() {
    // error = 1 - 4 (alpha - 1/2)^2 + alpha along the path, alpha read back from one weight:
    // at alpha = 0, .25, .5, .75, 1 the errors are 0, 1, 1.5, 1.5, 1; the barrier is the
    // maximum 1.5 minus the ends' mean 0.5 = 1.
    let (a, b) = (init(1), init(2));
    let a0 = f64::from(to_host(a.l1.weight.val()).unwrap()[0]);
    let b0 = f64::from(to_host(b.l1.weight.val()).unwrap()[0]);
    let r = linear_mode_connectivity(&a, &b, 5, |m: &Mlp| {
        let w = f64::from(to_host(m.l1.weight.val()).unwrap()[0]);
        let alpha = (w - a0) / (b0 - a0);
        Ok(1.0 - 4.0 * (alpha - 0.5).powi(2) + alpha)
    })
    .unwrap();
    for (got, want) in r.errors.iter().zip([0.0, 1.0, 1.5, 1.5, 1.0]) {
        assert!((got - want).abs() < 1e-5, "{:?}", r.errors);
    }
    assert!((r.instability - 1.0).abs() < 1e-5, "{}", r.instability);
    // Different architectures are an error, not a silent copy of one end.
    let other = Mlp::seeded([12, 16, 11, 3], 1, &device());
    assert!(matches!(
        interpolate(&a, &other, 0.5),
        Err(LotteryError::ModelMismatch(_))
    ));
}

proptest::proptest! {
    #![proptest_config(burn_sparse_test_support::proptest_config(24))]

    /// IMP's selection against brute force: per layer (or globally), the pruned weights are
    /// the round(p * n) smallest |w| among the n survivors, ties pruning the higher flat index
    /// first (globally: the index in the layers' concatenation); pruned weights stay pruned.
    #[test]
    fn prune_level_is_the_brute_force_selection(
        seed in proptest::prelude::any::<u64>(),
        p in 0.0f64..0.95,
        global in proptest::prelude::any::<bool>(),
    ) {
        let m = init(seed);
        let mut r = SparseRng::new(seed);
        let params = ParamFilter::new().select(&m).unwrap();
        // Survivors at random, weights from a few values so that ties happen.
        let bits: Vec<Vec<bool>> = params
            .iter()
            .map(|p| (0..p.numel()).map(|_| r.next_f32() < 0.7).collect())
            .collect();
        let masks = MaskSet::from_bits(&m, params, bits.clone()).unwrap();
        let w: Vec<Vec<f32>> = bits
            .iter()
            .map(|b| b.iter().map(|_| ((r.below(7) as f32) - 3.0) * 0.25).collect())
            .collect();
        let rate = if global {
            PruneRate::Global(p)
        } else {
            PruneRate::PerLayer { default: p, overrides: Default::default() }
        };
        let got = prune_level(&masks, &w, &rate).unwrap();
        // Brute force: survivors as (layer, index), ordered by |w| ascending, then the higher
        // flat index first; the first round(p * n) of each group are pruned.
        let groups: Vec<Vec<usize>> = if global { vec![(0..3).collect()] } else { (0..3).map(|l| vec![l]).collect() };
        let mut want = bits.clone();
        for g in groups {
            let mut surv: Vec<(usize, usize, usize)> = Vec::new(); // (layer, index, concat index)
            let mut off = 0;
            for (l, layer) in bits.iter().enumerate() {
                if g.contains(&l) {
                    for (i, b) in layer.iter().enumerate() {
                        if *b {
                            surv.push((l, i, off + i));
                        }
                    }
                    off += layer.len();
                }
            }
            surv.sort_by(|x, y| {
                w[x.0][x.1].abs().total_cmp(&w[y.0][y.1].abs()).then(y.2.cmp(&x.2))
            });
            let k = (p * surv.len() as f64).round() as usize;
            for &(l, i, _) in &surv[..k] {
                want[l][i] = false;
            }
        }
        proptest::prop_assert_eq!(got, want);
    }
}

#[test]
fn fine_tuning_and_lr_rewinding_keep_the_trained_weights() {
    // Each pruned level's ticket starts from the previous level's trained weights under the new
    // mask (bit for bit), trains the steps k..T like weight rewinding, and uses: the schedule
    // from step k (learning-rate rewinding), or a constant rate (fine-tuning: the one named, or
    // the schedule's last). Counts per level are the same as with weight rewinding.
    let k = 6;
    let last = schedule_lr(35, 36);
    for (retrain, lr_of) in [
        (Retrain::LrRewinding, None),
        (Retrain::FineTuning { lr: Some(0.05) }, Some(0.05)),
        (Retrain::FineTuning { lr: None }, Some(last)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(Rewind::Step(k));
        cfg.retrain = retrain;
        cfg.baselines.clear();
        cfg.levels = 2;
        let mut t = Synthetic::new(36, device());
        let imp = Imp::new(
            cfg,
            dir.path(),
            ParamFilter::new(),
            SgdRule::default(),
            init,
        );
        let levels = imp.run(&mut t, |_| {}).unwrap();
        let (want, _) = run(tempfile::tempdir().unwrap().path(), Rewind::Step(k));
        assert_eq!(levels.len(), 3);
        for (a, b) in levels.iter().zip(&want) {
            assert_eq!(
                a.layer_nnz, b.layer_nnz,
                "{retrain:?}: the counts of rewinding"
            );
        }
        assert_eq!(t.starts.len(), 3, "{retrain:?}: one training per level");
        for level in 1..=2 {
            let prev = burn_sparse_mask::checkpoint::load_module(
                init(7),
                &imp.final_model_path(level - 1),
            )
            .unwrap();
            let masks = imp.level_masks(level).unwrap().rebind(&prev).unwrap();
            let want_start = masks.apply(prev);
            assert_eq!(
                t.starts[level].bits(),
                want_start.bits(),
                "{retrain:?} {level}"
            );
            let lrs = &t.lrs[level];
            assert_eq!(lrs.len() as u64, 36 - k, "{retrain:?}: steps k..T");
            match lr_of {
                None => {
                    for (i, &lr) in lrs.iter().enumerate() {
                        assert_eq!(lr, schedule_lr(k + i as u64, 36), "{retrain:?}");
                    }
                }
                Some(c) => assert!(lrs.iter().all(|&lr| lr == c), "{retrain:?}"),
            }
        }
        // Level 2's mask is level 1's pruned again: a subset, at the LTH rates.
        let (m1, m2) = (imp.level_masks(1).unwrap(), imp.level_masks(2).unwrap());
        for (a, b) in m1.layers().iter().zip(m2.layers()) {
            assert!(b.bits().iter().zip(a.bits()).all(|(&n, &o)| !n || o));
            let p = if a.param().path == "l3.weight" {
                0.1
            } else {
                0.2
            };
            let lost = (p * a.nnz() as f64).round() as usize;
            assert_eq!(b.nnz(), a.nnz() - lost, "{}", a.param().path);
        }
    }
}

#[test]
fn a_trainer_without_fine_tuning_and_a_bad_rate_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(Rewind::Init);
    cfg.retrain = Retrain::FineTuning { lr: None };
    cfg.baselines.clear();
    let mut t = Synthetic::new(12, device());
    let imp = Imp::new(
        cfg.clone(),
        dir.path(),
        ParamFilter::new(),
        SgdRule::default(),
        init,
    );
    let e = imp.run(&mut SlowTrainer(&mut t), |_| {}).unwrap_err();
    assert!(
        matches!(e, LotteryError::Trainer(ref m) if m.to_string().contains("fine_tune")),
        "{e}"
    );
    cfg.retrain = Retrain::FineTuning { lr: Some(-1.0) };
    let imp = Imp::new(
        cfg,
        dir.path(),
        ParamFilter::new(),
        SgdRule::default(),
        init,
    );
    let e = imp.run(&mut t, |_| {}).unwrap_err();
    assert!(
        matches!(
            e,
            LotteryError::InvalidConfig {
                field: "retrain",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn n_by_m_levels_by_hand_and_to_exactly_two_of_four() {
    // One layer [8, 1] (two groups of 4 down the column), rate 0.5, 2:4. Level 1: each group
    // keeps round(4 * 0.5) = 2; group 0 (|w| .1 .4 .3 .2) keeps .4 (1), .3 (2); group 1
    // (.5 .5 .1 .9) keeps .9 (7) and the tie .5/.5 goes to the lower index 4. Level 2 would
    // keep round(4 * 0.25) = 1, but 2:4 floors at 2.
    use burn::module::Param;
    #[derive(Module, Debug)]
    struct One {
        w: Param<Tensor<2>>,
    }
    let d = device();
    let m = One {
        w: Param::from_data(
            [[0.1f32], [0.4], [0.3], [0.2], [0.5], [0.5], [0.1], [0.9]],
            &d,
        ),
    };
    let masks = MaskSet::dense(&m, &ParamFilter::new()).unwrap();
    let w = masks.read_weights(&m).unwrap();
    let s24 = burn_sparse_mask::Structure::NByM { n: 2, m: 4 };
    let rate = PruneRate::Global(0.5);
    let bits = prune_level_structured(&masks, &w, &rate, s24, 1).unwrap();
    let ones = |b: &[bool]| (0..b.len()).filter(|&i| b[i]).collect::<Vec<_>>();
    assert_eq!(ones(&bits[0]), vec![1, 2, 4, 7]);
    let next = MaskSet::from_bits(&m, masks.params(), bits.clone()).unwrap();
    assert_eq!(
        prune_level_structured(&next, &w, &rate, s24, 2).unwrap(),
        bits
    );
    // A small rate does not stall: p = 1 - 0.5^(1/5) over five levels, each group keeps
    // round(4 * 0.5^(l/5)) = 3, 3, 3, 2, 2 (a per-level round(p * 3) = 0 would stop at 3).
    let p5 = 1.0 - 0.5f64.powf(0.2);
    let small = PruneRate::Global(p5);
    let mut cur = masks.clone();
    let mut kept = Vec::new();
    for level in 1..=5 {
        let b = prune_level_structured(&cur, &w, &small, s24, level).unwrap();
        kept.push(b[0][..4].iter().filter(|&&x| x).count());
        cur = MaskSet::from_bits(&m, masks.params(), b).unwrap();
    }
    assert_eq!(kept, vec![3, 3, 3, 2, 2]);
    assert_eq!(ones(cur.layers()[0].bits()), vec![1, 2, 4, 7]);
    // Blocks are refused; unstructured is prune_level.
    let block = burn_sparse_mask::Structure::Block { rows: 2, cols: 1 };
    assert!(prune_level_structured(&masks, &w, &rate, block, 1).is_err());
    assert_eq!(
        prune_level_structured(&masks, &w, &rate, Default::default(), 1).unwrap(),
        prune_level(&masks, &w, &rate).unwrap()
    );
    // The driver: 3 levels at 20% on [12, 16, 10, 3] reach 2:4 where the reduction dim divides
    // (12 -> 16: round(4 * 0.8^l) = 3, 3, 2), and the padded l3 (d_in 10 = 4 + 4 + 2) keeps
    // 2 of 2.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(Rewind::Init);
    cfg.rate = PruneRate::Global(0.2);
    cfg.structure = s24;
    cfg.baselines.clear();
    let mut t = Synthetic::new(12, device());
    let imp = Imp::new(
        cfg,
        dir.path(),
        ParamFilter::new(),
        SgdRule::default(),
        init,
    );
    imp.run(&mut t, |_| {}).unwrap();
    let last = imp.level_masks(3).unwrap();
    for l in last.layers() {
        assert!(
            burn_sparse_mask::has_structure(s24, l.param(), l.bits()).unwrap(),
            "{}",
            l.param().path
        );
    }
}
