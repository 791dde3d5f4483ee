//! Dynamic sparse training invariants and hand-built cases.

use burn::module::{Module, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use burn_sparse_dynamic::*;
use burn_sparse_mask::prelude::*;
use burn_sparse_mask::{LayerView, MaskError, Structure, has_structure, to_host};
use burn_sparse_test_support::{Mlp, device, mlp_grads, view};
use proptest::prelude::*;

fn per_layer_nnz(o: &SparseOptimizer) -> Vec<usize> {
    o.masks().layers().iter().map(|l| l.nnz()).collect()
}

fn cfg(begin: u64, end: u64, dt: u64, f: DropFraction, seed: u64) -> DropGrowConfig {
    DropGrowConfig {
        schedule: UpdateSchedule::new(begin, end, dt).unwrap(),
        drop_fraction: f,
        init: GrowInit::Zero,
        seed,
        skip_weight_update: false,
        grad_accumulation: 1,
        structure: Default::default(),
    }
}

#[test]
fn nnz_constant_over_1000_updates_rigl_and_set() {
    let d = device();
    for rigl in [true, false] {
        let m = Mlp::seeded([9, 8, 7, 4], 21, &d);
        let masks = random_masks(
            &m,
            &ParamFilter::new(),
            Sparsity::new(0.7).unwrap(),
            &SparsityDistribution::Erk,
            1,
        )
        .unwrap();
        let mut m = masks.apply(m);
        let c = cfg(0, 1000, 1, DropFraction::Constant { alpha: 0.3 }, 5);
        let up: Box<dyn TopologyUpdater> = if rigl {
            Box::new(RiglUpdater::rigl(c).unwrap())
        } else {
            Box::new(SetUpdater::set(c).unwrap())
        };
        let mut opt = SparseOptimizer::new(SgdRule::default(), masks)
            .unwrap()
            .with_updater(up)
            .unwrap();
        let want = per_layer_nnz(&opt);
        let mut changed_total = 0;
        for s in 0..1000u64 {
            let (_, g) = mlp_grads(&m, 4, s, &d);
            m = opt.step(0.05, m, g).unwrap();
            assert_eq!(per_layer_nnz(&opt), want, "step {s}");
            changed_total += opt
                .last_report()
                .unwrap()
                .changed
                .iter()
                .map(|c| c.1)
                .sum::<usize>();
            if s % 100 == 0 {
                assert!(opt.masks().violations(&m).unwrap().iter().all(|v| v.1 == 0));
            }
        }
        assert!(opt.masks().violations(&m).unwrap().iter().all(|v| v.1 == 0));
        // The topology must actually change: SET regrows at random, RigL where gradients are.
        let floor = if rigl { 100 } else { 1000 };
        assert!(
            changed_total > floor,
            "the topology must actually change ({changed_total})"
        );
    }
}

#[test]
fn snfs_conserves_total_over_updates() {
    let d = device();
    let m = Mlp::new([12, 10, 8, 4], &d);
    let masks = random_masks(
        &m,
        &ParamFilter::new(),
        Sparsity::new(0.8).unwrap(),
        &SparsityDistribution::Erk,
        2,
    )
    .unwrap();
    let total = masks.nnz();
    let mut m = masks.apply(m);
    let c = SnfsConfig::reference(400, 10, 3).unwrap();
    let mut opt = SparseOptimizer::new(SgdRule::default(), masks)
        .unwrap()
        .with_updater(Box::new(Snfs::new(c).unwrap()))
        .unwrap();
    let start = per_layer_nnz(&opt);
    let mut moved = false;
    for s in 0..400u64 {
        let (_, g) = mlp_grads(&m, 8, s, &d);
        m = opt.step(0.05, m, g).unwrap();
        assert_eq!(opt.masks().nnz(), total, "step {s}");
        moved |= per_layer_nnz(&opt) != start;
    }
    assert!(moved, "SNFS should move weights between layers");
    assert!(opt.masks().violations(&m).unwrap().iter().all(|v| v.1 == 0));
}

#[derive(Module, Debug)]
struct One {
    w: Param<Tensor<2>>,
}

#[test]
fn rigl_grows_at_largest_dense_gradient_with_zero_weight_and_momentum() {
    // L = sum(w * C): the dense gradient is C, also at inactive positions.
    let d = device();
    let c = [[0.1f32, -5.0, 0.2], [3.0, 0.3, -0.4]];
    let m = One {
        w: Param::from_data([[1.0f32, 0.0, 2.0], [0.0, 0.5, 0.0]], &d),
    };
    let params = ParamFilter::new().select(&m).unwrap();
    // Active: 0 (|1|), 2 (|2|), 4 (|.5|). Inactive: 1 (|g| 5), 3 (3), 5 (.4).
    let masks = MaskSet::from_bits(
        &m,
        params,
        vec![vec![true, false, true, false, true, false]],
    )
    .unwrap();
    let mut m = masks.apply(m);
    let mut conf = cfg(0, 10, 2, DropFraction::Constant { alpha: 0.67 }, 0);
    conf.skip_weight_update = true;
    let mut opt = SparseOptimizer::new(SgdRule::default(), masks)
        .unwrap()
        .with_updater(Box::new(RiglUpdater::rigl(conf).unwrap()))
        .unwrap();
    let grads = |m: &One| {
        let ct = Tensor::<2>::from_data(c, &d);
        GradientsParams::from_grads((m.w.val() * ct).sum().backward(), m)
    };
    {
        let g = grads(&m);
        m = opt.step(0.1, m, g).unwrap();
    } // step 1: plain SGD, builds momentum
    let w1 = to_host(m.w.val()).unwrap();
    {
        let g = grads(&m);
        m = opt.step(0.1, m, g).unwrap();
    } // step 2: update, n_drop = floor(.67*3) = 2
    // Dropped: the two smallest |w| among {0, 2, 4}: 4 (.5-0.1*.3=.47) and 0 (1-0.1*.1=.99).
    // Grown: the two largest |g| among inactive-after-drop {0, 1, 3, 4, 5}: 1 (5) and 3 (3).
    let l = &opt.masks().layers()[0];
    assert_eq!(l.bits(), &[false, true, true, true, false, false]);
    let w = to_host(m.w.val()).unwrap();
    assert_eq!(w[1], 0.0);
    assert_eq!(w[3], 0.0);
    assert_eq!(w[0], 0.0);
    assert_eq!(w[4], 0.0);
    assert_eq!(w[2], w1[2], "skip_weight_update leaves the survivors alone");
    let v = to_host(opt.state(m.w.id).unwrap().slots[0].clone()).unwrap();
    assert_eq!((v[0], v[1], v[3], v[4]), (0.0, 0.0, 0.0, 0.0));
    assert!(v[2] != 0.0);
    assert_eq!(
        opt.last_report().unwrap().changed,
        vec![("w".to_string(), 2)]
    );
    // The next step trains the grown weights from 0.
    {
        let g = grads(&m);
        m = opt.step(0.1, m, g).unwrap();
    }
    let w = to_host(m.w.val()).unwrap();
    assert!(
        (w[1] - 0.5).abs() < 1e-6 && (w[3] + 0.3).abs() < 1e-6,
        "{w:?}"
    );
}

#[test]
fn cosine_reaches_zero_at_end_and_mask_freezes() {
    let d = device();
    let m = Mlp::new([8, 8, 6, 3], &d);
    let masks = random_masks(
        &m,
        &ParamFilter::new(),
        Sparsity::new(0.5).unwrap(),
        &SparsityDistribution::Erk,
        4,
    )
    .unwrap();
    let mut m = masks.apply(m);
    let c = cfg(0, 60, 10, DropFraction::Cosine { alpha: 0.3 }, 9);
    assert_eq!(c.drop_fraction.at(60, &c.schedule), 0.0);
    let mut opt = SparseOptimizer::new(SgdRule::default(), masks)
        .unwrap()
        .with_updater(Box::new(RiglUpdater::rigl(c).unwrap()))
        .unwrap();
    let mut frozen: Option<Vec<Vec<bool>>> = None;
    for s in 1..=120u64 {
        let (_, g) = mlp_grads(&m, 4, s, &d);
        m = opt.step(0.05, m, g).unwrap();
        let bits: Vec<Vec<bool>> = opt
            .masks()
            .layers()
            .iter()
            .map(|l| l.bits().to_vec())
            .collect();
        if s == 60 {
            // The update at `end` drops floor(0 * n) = 0: nothing changes.
            assert!(opt.last_report().unwrap().changed.iter().all(|c| c.1 == 0));
        }
        if s >= 60 {
            match &frozen {
                None => frozen = Some(bits),
                Some(f) => assert_eq!(f, &bits, "mask changed after end at step {s}"),
            }
        }
    }
}

#[test]
fn same_seed_same_masks_bit_for_bit() {
    let run = |seed: u64| {
        let d = device();
        let m = Mlp::seeded([10, 9, 8, 3], 11, &d);
        let plan = DstPlan::new(DstMethod::Rigl, Sparsity::new(0.8).unwrap(), 400, 50, seed);
        let mut plan = plan;
        plan.delta_t = 20;
        let (mut m, mut opt) = plan
            .build(m, &ParamFilter::new(), SgdRule::default())
            .unwrap();
        for s in 0..200u64 {
            let (_, g) = mlp_grads(&m, 4, s, &d);
            m = opt.step(0.05, m, g).unwrap();
        }
        let bits: Vec<Vec<bool>> = opt
            .masks()
            .layers()
            .iter()
            .map(|l| l.bits().to_vec())
            .collect();
        let w: Vec<u32> = to_host(m.l1.weight.val())
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect();
        (bits, w)
    };
    let a = run(1);
    assert_eq!(a, run(1));
    assert_ne!(a.0, run(2).0);
}

struct NanGrow;
impl GrowScore for NanGrow {
    fn name(&self) -> &'static str {
        "nan"
    }
    fn needs_grads(&self) -> bool {
        false
    }
    fn scores(&self, view: &LayerView<'_>, _: &mut SparseRng) -> Vec<f32> {
        vec![f32::NAN; view.mask.len()]
    }
}

#[test]
fn bad_inputs() {
    assert!(matches!(
        DropGrow::new(
            cfg(0, 10, 1, DropFraction::Cosine { alpha: 1.5 }, 0),
            RandomGrow
        ),
        Err(DstError::Mask(MaskError::InvalidFraction { .. }))
    ));
    assert!(matches!(
        UpdateSchedule::new(0, 10, 0),
        Err(MaskError::InvalidConfig {
            field: "delta_t",
            ..
        })
    ));
    assert!(matches!(
        UpdateSchedule::new(5, 5, 1),
        Err(MaskError::InvalidConfig { field: "end", .. })
    ));
    let mut plan = DstPlan::new(DstMethod::Rigl, Sparsity::new(0.9).unwrap(), 1000, 100, 0);
    plan.delta_t = 0;
    assert!(matches!(
        plan.updater(),
        Err(DstError::InvalidConfig {
            field: "delta_t",
            ..
        })
    ));
    assert!(matches!(
        "bogus".parse::<DstMethod>(),
        Err(DstError::InvalidConfig {
            field: "method",
            ..
        })
    ));
    // A run too short for any update names the plan's own field (it used to be the
    // schedule's `end`): one step ends RigL's window, the first 75%, at step 0.
    for (m, total) in [
        (DstMethod::Rigl, 1),
        (DstMethod::Set, 0),
        (DstMethod::Snfs, 0),
    ] {
        let plan = DstPlan::new(m, Sparsity::new(0.9).unwrap(), total, 100, 0);
        match plan.updater() {
            Err(DstError::InvalidConfig {
                field: "total_steps",
                message,
            }) => assert!(message.contains("no topology update"), "{message}"),
            other => panic!("{m:?} with {total} steps: {:?}", other.map(|_| ())),
        }
    }
    // Two steps leave RigL one (integer 3/4 of 2 is 1); static never updates.
    assert!(
        DstPlan::new(DstMethod::Rigl, Sparsity::new(0.9).unwrap(), 2, 100, 0)
            .updater()
            .is_ok()
    );
    assert!(
        DstPlan::new(DstMethod::Static, Sparsity::new(0.9).unwrap(), 0, 1, 0)
            .updater()
            .unwrap()
            .is_none()
    );
    // A NaN grow score skips the update and leaves the mask alone.
    let d = device();
    let m = Mlp::new([6, 5, 4, 3], &d);
    let masks = random_masks(
        &m,
        &ParamFilter::new(),
        Sparsity::new(0.5).unwrap(),
        &SparsityDistribution::Erk,
        1,
    )
    .unwrap();
    let before: Vec<Vec<bool>> = masks.layers().iter().map(|l| l.bits().to_vec()).collect();
    let mut m = masks.apply(m);
    let up = DropGrow::new(
        cfg(0, 10, 1, DropFraction::Constant { alpha: 0.5 }, 0),
        NanGrow,
    )
    .unwrap();
    let mut opt = SparseOptimizer::new(SgdRule::default(), masks)
        .unwrap()
        .with_updater(Box::new(up))
        .unwrap();
    for s in 0..3 {
        let (_, g) = mlp_grads(&m, 4, s, &d);
        m = opt.step(0.05, m, g).unwrap();
    }
    let after: Vec<Vec<bool>> = opt
        .masks()
        .layers()
        .iter()
        .map(|l| l.bits().to_vec())
        .collect();
    assert_eq!(before, after);
}

#[test]
fn checkpoint_resumes_topology_and_counters() {
    // SET with SGD, SNFS (whose momentum EMA must come back from the checkpoint) with SGD,
    // RigL with AdamW (both Adam moments), and GMP (prune steps 10, 20, ..., 70 of 100, so the
    // budget shrinks on both sides of the checkpoint at 35) with momentum: each resumed run ends
    // bit for bit where the uninterrupted one does.
    let cases: [(DstMethod, Rule); 4] = [
        (DstMethod::Set, SgdRule::default().into()),
        (DstMethod::Snfs, SgdRule::default().into()),
        (DstMethod::Rigl, AdamRule::adamw(1e-2).into()),
        (DstMethod::Gmp, SgdRule::default().with_momentum(0.9).into()),
    ];
    for (method, rule) in cases {
        resumes_bit_identically(method, rule, 1);
    }
    // RigL accumulating 8 batches per update: the checkpoint at 35 falls inside the window
    // 33..=40 of the update at 40, so the partial sum must come back too.
    resumes_bit_identically(DstMethod::Rigl, SgdRule::default().into(), 8);
}

fn resumes_bit_identically(method: DstMethod, rule: Rule, grad_accumulation: u64) {
    let d = device();
    let dir = tempfile::tempdir().unwrap();
    let m = Mlp::seeded([10, 9, 8, 3], 5, &d);
    let mut plan = DstPlan::new(method, Sparsity::new(0.8).unwrap(), 100, 10, 3);
    plan.delta_t = 10;
    plan.grad_accumulation = grad_accumulation;
    let (mut m, mut opt) = plan.build(m, &ParamFilter::new(), rule).unwrap();
    for s in 0..35u64 {
        let (_, g) = mlp_grads(&m, 4, s, &d);
        m = opt.step(0.05, m, g).unwrap();
    }
    burn_sparse_mask::checkpoint::save_module_atomic(m.clone(), &dir.path().join("m.bpk")).unwrap();
    opt.save(&dir.path().join("o.bsp")).unwrap();
    let start_bits: Vec<Vec<bool>> = opt
        .masks()
        .layers()
        .iter()
        .map(|l| l.bits().to_vec())
        .collect();
    let mut a = m;
    for s in 35..70u64 {
        let (_, g) = mlp_grads(&a, 4, s, &d);
        a = opt.step(0.05, a, g).unwrap();
    }
    let mut b = burn_sparse_mask::checkpoint::load_module(
        Mlp::new([10, 9, 8, 3], &d),
        &dir.path().join("m.bpk"),
    )
    .unwrap();
    let mut opt2 = SparseOptimizer::load(&dir.path().join("o.bsp"), &b)
        .unwrap()
        .with_updater(plan.updater().unwrap().unwrap())
        .unwrap();
    for s in 35..70u64 {
        let (_, g) = mlp_grads(&b, 4, s, &d);
        b = opt2.step(0.05, b, g).unwrap();
    }
    let bits = |o: &SparseOptimizer| -> Vec<Vec<bool>> {
        o.masks()
            .layers()
            .iter()
            .map(|l| l.bits().to_vec())
            .collect()
    };
    assert_eq!(bits(&opt), bits(&opt2), "{method:?}");
    assert_ne!(
        bits(&opt),
        start_bits,
        "{method:?}: no update after the checkpoint"
    );
    assert_eq!(a.bits(), b.bits(), "{method:?}");
}

proptest! {
    #![proptest_config(burn_sparse_test_support::proptest_config(64))]
    /// Redistribution conserves the total (up to capacity) and respects every cap.
    #[test]
    fn redistribution_conserves_and_caps(
        total in 0usize..5000,
        w in proptest::collection::vec(0.0f64..10.0, 1..6),
        caps in proptest::collection::vec(0usize..3000, 6),
    ) {
        let caps = &caps[..w.len()];
        let g = redistribute(total, &w, caps);
        prop_assert_eq!(g.iter().sum::<usize>(), total.min(caps.iter().sum()));
        for (x, c) in g.iter().zip(caps) {
            prop_assert!(x <= c);
        }
    }
}

#[derive(Module, Debug)]
struct TwoLayers {
    a: Param<Tensor<2>>,
    b: Param<Tensor<2>>,
}

#[test]
fn snfs_hand_built_update() {
    // Two 2x3 layers, prune rate 0.5 (constant), beta 0.9. Gradients observed over two steps:
    //   A: g1 = [1, 0, 0, 0, 2, -1], g2 = [0, 1, 0, 0, 1, 3]  -> m = .9 g1 + g2
    //      = [.9, 1, 0, 0, 2.8, 2.1]
    //   B: g1 = [0, 0, 1, -2, 0, 0], g2 = [1, .05, -1, 0, 0, .5]
    //      -> m = [1, .05, -.1, -1.8, 0, .5]
    // Masks A = {0,1,2,3} with w = [.1, -.5, .3, -.05], B = {0,1} with w = [.4, .2].
    // 1. prune floor(.5 * 4) = 2 of A by |w| (indices 3 and 0), floor(.5 * 2) = 1 of B (1).
    // 2. mean |m| over the active weights: A (.9 + 1 + 0 + 0) / 4 = .475, B (1 + .05) / 2 =
    //    .525; 3 to regrow, capacities A 4, B 5: shares 1.425 and 1.575 floor to 1 and 1, the
    //    last one goes to the larger share (B): growth A 1, B 2.
    // 3. grow by the largest |m| among the inactive: A index 4 (2.8); B indices 3 (1.8) and
    //    5 (.5). A ends {1, 2, 4}, B {0, 3, 5}: one weight moved from A to B, 6 in total.
    let d = device();
    let model = TwoLayers {
        a: Param::from_data([[0.1f32, -0.5, 0.3], [-0.05, 0.0, 0.0]], &d),
        b: Param::from_data([[0.4f32, 0.2, 0.0], [0.0, 0.0, 0.0]], &d),
    };
    let params = ParamFilter::new().select(&model).unwrap();
    let cfg = SnfsConfig {
        schedule: UpdateSchedule::new(0, 100, 2).unwrap(),
        prune_rate: DropFraction::Constant { alpha: 0.5 },
        beta: 0.9,
        init: GrowInit::Zero,
        seed: 0,
    };
    let mut snfs = Snfs::new(cfg).unwrap();
    let t1 = |v: Vec<f32>| Tensor::<1>::from_data(burn::tensor::TensorData::new(v, [6]), &d);
    snfs.observe(
        1,
        &[
            t1(vec![1.0, 0.0, 0.0, 0.0, 2.0, -1.0]),
            t1(vec![0.0, 0.0, 1.0, -2.0, 0.0, 0.0]),
        ],
    )
    .unwrap();
    snfs.observe(
        2,
        &[
            t1(vec![0.0, 1.0, 0.0, 0.0, 1.0, 3.0]),
            t1(vec![1.0, 0.05, -1.0, 0.0, 0.0, 0.5]),
        ],
    )
    .unwrap();
    let ema = snfs.state()["ema"].clone();
    let ema: Vec<Vec<f32>> = serde_json::from_value(ema).unwrap();
    let want_a = [0.9f32, 1.0, 0.0, 0.0, 2.8, 2.1];
    let want_b = [1.0f32, 0.05, -0.1, -1.8, 0.0, 0.5];
    for (got, want) in ema.iter().zip([&want_a, &want_b]) {
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{ema:?}");
        }
    }
    let (ma, mb) = (
        [true, true, true, true, false, false],
        [true, true, false, false, false, false],
    );
    let (wa, wb) = (
        [0.1f32, -0.5, 0.3, -0.05, 0.0, 0.0],
        [0.4f32, 0.2, 0.0, 0.0, 0.0, 0.0],
    );
    let change = snfs
        .update(2, &[view(&params[0], &ma, &wa), view(&params[1], &mb, &wb)])
        .unwrap()
        .unwrap();
    let ones = |m: &[bool]| -> Vec<usize> { (0..m.len()).filter(|&i| m[i]).collect() };
    assert_eq!(ones(&change.masks[0]), vec![1, 2, 4]);
    assert_eq!(ones(&change.masks[1]), vec![0, 3, 5]);
    assert_eq!(change.changed, vec![1, 2], "grown per layer");
    assert!(
        change.grown_values.iter().all(|v| v.is_empty()),
        "zero init"
    );
}

#[test]
fn rigl_on_conv_weights_keeps_exact_zeros_and_counts() {
    // Rank-4 conv kernels and a linear head under RigL: exact nnz per layer and exact zeros
    // after every step, and connections of the conv kernels really move.
    let d = device();
    let m = burn_sparse_test_support::ConvNet::new(&d);
    let mut plan = DstPlan::new(DstMethod::Rigl, Sparsity::new(0.7).unwrap(), 60, 10, 4);
    plan.delta_t = 5;
    let (mut m, mut opt) = plan
        .build(m, &ParamFilter::new(), SgdRule::default())
        .unwrap();
    let ranks: Vec<usize> = opt
        .masks()
        .layers()
        .iter()
        .map(|l| l.param().shape.len())
        .collect();
    assert_eq!(ranks, vec![4, 4, 2]);
    let start: Vec<Vec<bool>> = opt
        .masks()
        .layers()
        .iter()
        .map(|l| l.bits().to_vec())
        .collect();
    let counts = per_layer_nnz(&opt);
    for _ in 0..40 {
        let g = burn_sparse_test_support::conv_grads(&m, &d);
        m = opt.step(0.05, m, g).unwrap();
        assert_eq!(per_layer_nnz(&opt), counts);
        // Read back and check directly (not through the library's own violation count).
        let w = opt.masks().read_weights(&m).unwrap();
        for (l, w) in opt.masks().layers().iter().zip(&w) {
            for (k, x) in l.bits().iter().zip(w) {
                assert!(
                    *k || *x == 0.0,
                    "{}: a masked weight is {x}",
                    l.param().path
                );
            }
        }
    }
    for (l, s) in opt.masks().layers().iter().zip(&start).take(2) {
        assert_ne!(
            l.bits(),
            s.as_slice(),
            "{}: the conv mask never moved",
            l.param().path
        );
    }
}

#[test]
fn grow_init_normal_writes_exactly_the_drawn_values() {
    // GrowInit::Normal { std }: the grown weights of layer l at update step t are
    // std * SparseRng::derive(seed, [t, l, 1]).normal(), drawn in ascending flat index. With
    // skip_weight_update no SGD step follows, so they are in the model as drawn; their
    // momentum is 0.
    let d = device();
    let m = Mlp::seeded([8, 7, 6, 3], 4, &d);
    let masks = random_masks(
        &m,
        &ParamFilter::new(),
        Sparsity::new(0.6).unwrap(),
        &SparsityDistribution::Uniform,
        1,
    )
    .unwrap();
    let mut m = masks.apply(m);
    let mut c = cfg(0, 50, 3, DropFraction::Constant { alpha: 0.3 }, 9);
    c.init = GrowInit::Normal { std: 0.25 };
    c.skip_weight_update = true;
    let mut opt = SparseOptimizer::new(SgdRule::default(), masks)
        .unwrap()
        .with_updater(Box::new(RiglUpdater::rigl(c).unwrap()))
        .unwrap();
    let mut checked = 0;
    for s in 0..9u64 {
        let before: Vec<Vec<bool>> = opt
            .masks()
            .layers()
            .iter()
            .map(|l| l.bits().to_vec())
            .collect();
        let (_, g) = mlp_grads(&m, 4, s, &d);
        m = opt.step(0.05, m, g).unwrap();
        let Some(r) = opt.last_report().filter(|r| r.step == s + 1) else {
            continue;
        };
        let w = opt.masks().read_weights(&m).unwrap();
        for (l, layer) in opt.masks().layers().iter().enumerate() {
            let grown: Vec<usize> = (0..before[l].len())
                .filter(|&j| !before[l][j] && layer.bits()[j])
                .collect();
            let mut rng = SparseRng::derive(9, &[r.step, l as u64, 1]);
            let v = to_host(opt.state(layer.param().id).unwrap().slots[0].clone()).unwrap();
            for j in grown {
                let want = (rng.normal() as f32) * 0.25;
                assert_eq!(
                    w[l][j].to_bits(),
                    want.to_bits(),
                    "step {} layer {l} at {j}",
                    r.step
                );
                assert_ne!(want, 0.0);
                assert_eq!(v[j], 0.0);
                checked += 1;
            }
        }
    }
    assert!(checked >= 10, "only {checked} grown weights checked");
}

#[test]
fn sparse_init_rescales_the_plans_initial_weights() {
    // The same plan with and without `sparse_init`: the same mask, and the weights of the
    // second are the first's rescaled to each unit's sparse fan-in.
    let d = device();
    let plan = DstPlan::new(DstMethod::Rigl, Sparsity::new(0.9).unwrap(), 1000, 100, 3);
    let (plain, o1) = plan
        .build(
            Mlp::seeded([20, 16, 12, 4], 9, &d),
            &ParamFilter::new(),
            SgdRule::default(),
        )
        .unwrap();
    let mut p2 = plan.clone();
    p2.sparse_init = true;
    let (scaled, o2) = p2
        .build(
            Mlp::seeded([20, 16, 12, 4], 9, &d),
            &ParamFilter::new(),
            SgdRule::default(),
        )
        .unwrap();
    let bits = |o: &SparseOptimizer| -> Vec<Vec<bool>> {
        o.masks()
            .layers()
            .iter()
            .map(|l| l.bits().to_vec())
            .collect()
    };
    assert_eq!(bits(&o1), bits(&o2));
    let want = o1.masks().sparse_fan_in(plain).unwrap();
    assert_eq!(scaled.bits(), want.bits());
    assert_ne!(scaled.bits(), Mlp::seeded([20, 16, 12, 4], 9, &d).bits());
}

#[test]
fn accumulated_grow_scores_by_hand() {
    // Layer a (2x3) keeps {0, 1} with w = [.1, .5]; RigL drops floor(.5 * 2) = 1 (index 0) and
    // grows 1. Gradients: step 1 (observed) g1 = [0, 0, 0, 8, 0, 0], step 2 (the update)
    // g2 = [0, 0, 1, -2, 0, 3]. Alone, |g2| grows index 5 (3); accumulated over k = 2,
    // |(g1 + g2) / 2| = [0, 0, .5, 3, 0, 1.5] grows index 3. Layer b: one weight, nothing moves
    // (drop floor(.5) = 0).
    let d = device();
    let model = TwoLayers {
        a: Param::from_data([[0.1f32, 0.5, 0.0], [0.0, 0.0, 0.0]], &d),
        b: Param::from_data([[0.4f32, 0.0, 0.0], [0.0, 0.0, 0.0]], &d),
    };
    let params = ParamFilter::new().select(&model).unwrap();
    let mut c = cfg(0, 100, 2, DropFraction::Constant { alpha: 0.5 }, 0);
    let (ma, mb) = (
        [true, true, false, false, false, false],
        [true, false, false, false, false, false],
    );
    let (wa, wb) = (
        [0.1f32, 0.5, 0.0, 0.0, 0.0, 0.0],
        [0.4f32, 0.0, 0.0, 0.0, 0.0, 0.0],
    );
    let g2a = [0.0f32, 0.0, 1.0, -2.0, 0.0, 3.0];
    let g2b = [0.0f32; 6];
    let grown = |c: DropGrowConfig, observe: bool| -> Vec<usize> {
        let mut r = RiglUpdater::rigl(c).unwrap();
        if observe {
            assert!(r.observes(1) && !r.observes(2) && r.observes(3));
            let t1 =
                |v: Vec<f32>| Tensor::<1>::from_data(burn::tensor::TensorData::new(v, [6]), &d);
            r.observe(
                1,
                &[t1(vec![0.0, 0.0, 0.0, 8.0, 0.0, 0.0]), t1(vec![0.0; 6])],
            )
            .unwrap();
        } else {
            assert!(!r.observes(1) && !r.observes_every_step());
        }
        let va = LayerView {
            grads: Some(&g2a),
            ..view(&params[0], &ma, &wa)
        };
        let vb = LayerView {
            grads: Some(&g2b),
            ..view(&params[1], &mb, &wb)
        };
        let ch = r.update(2, &[va, vb]).unwrap().unwrap();
        assert_eq!(ch.masks[1], mb.to_vec(), "b keeps its one weight");
        (0..6).filter(|&i| ch.masks[0][i]).collect()
    };
    assert_eq!(grown(c, false), vec![1, 5]);
    c.grad_accumulation = 2;
    assert_eq!(grown(c, true), vec![1, 3]);
    // More batches than the update interval, or none, are errors naming the field.
    c.grad_accumulation = 3;
    assert!(matches!(
        RiglUpdater::rigl(c),
        Err(DstError::InvalidConfig {
            field: "grad_accumulation",
            ..
        })
    ));
    let mut plan = DstPlan::new(DstMethod::Set, Sparsity::new(0.9).unwrap(), 1000, 100, 0);
    plan.grad_accumulation = 4;
    assert!(matches!(
        plan.validate(),
        Err(DstError::InvalidConfig {
            field: "grad_accumulation",
            ..
        })
    ));
}

#[test]
fn n_by_m_drop_and_grow_by_hand() {
    // Two groups of 4 (indices 0-3, 4-7), 2:4. Active {0, 1, 4, 5}, |w| = .5, .1, .9, .3;
    // drop 2 smallest of the layer: 1 (.1) and 5 (.3): each group lost one and regrows one
    // among its inactive positions: group 0 {1, 2, 3} scores .2, .1, .7 -> 3; group 1
    // {5, 6, 7} scores .9, .8, .1 -> 5 (the just-dropped one: regrown, not "newly grown").
    let mask = [true, true, false, false, true, true, false, false];
    let w = [0.5, -0.1, 0.0, 0.0, 0.9, 0.3, 0.0, 0.0];
    let g = [0.0, 0.2, 0.1, 0.7, 0.0, 0.9, 0.8, 0.1];
    let groups = vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]];
    let u = drop_and_grow_in_groups("l", &mask, &w, &g, 2, &groups).unwrap();
    assert_eq!(
        u.mask,
        vec![true, false, false, true, true, true, false, false]
    );
    assert_eq!(u.grown, vec![3]);
    // A NaN among a group's candidates is the usual typed error.
    let g = [0.0, f32::NAN, 0.1, 0.7, 0.0, 0.9, 0.8, 0.1];
    let e = drop_and_grow_in_groups("l", &mask, &w, &g, 2, &groups).unwrap_err();
    assert!(matches!(e, MaskError::NanScore { index: 1, .. }), "{e}");
}

#[test]
fn every_n_by_m_group_keeps_exactly_n_over_1000_updates() {
    // 2:4 and 1:4 on [16, 12, 8, 4] (every d_in divides by 4), RigL and SET updating every
    // step: after every step each group of 4 consecutive inputs of each output keeps exactly
    // n, masked weights are exactly 0, and the topology really moves. 2x2 blocks at 75%: every
    // block all on or all off, and each layer keeps its count, after every step.
    let d = device();
    let cases = [
        (Structure::NByM { n: 2, m: 4 }, true),
        (Structure::NByM { n: 1, m: 4 }, true),
        (Structure::NByM { n: 2, m: 4 }, false),
        (Structure::Block { rows: 2, cols: 2 }, true),
        (Structure::Block { rows: 2, cols: 2 }, false),
    ];
    for (s, rigl) in cases {
        let sparsity = s
            .implied_sparsity()
            .unwrap_or_else(|| Sparsity::new(0.75).unwrap());
        let mut plan = DstPlan::new(
            if rigl {
                DstMethod::Rigl
            } else {
                DstMethod::Set
            },
            sparsity,
            1334,
            1,
            11,
        );
        plan.delta_t = 1;
        plan.structure = s;
        let (mut m, mut opt) = plan
            .build(
                Mlp::seeded([16, 12, 8, 4], 5, &d),
                &ParamFilter::new(),
                SgdRule::default(),
            )
            .unwrap();
        let counts0: Vec<usize> = opt.masks().layers().iter().map(|l| l.nnz()).collect();
        let check = |o: &SparseOptimizer, step: u64| {
            for (l, &c) in o.masks().layers().iter().zip(&counts0) {
                assert!(
                    has_structure(s, l.param(), l.bits()).unwrap(),
                    "{s:?} step {step} {}",
                    l.param().path
                );
                assert_eq!(l.nnz(), c, "{s:?} step {step} {}", l.param().path);
            }
        };
        check(&opt, 0);
        let mut moved = 0;
        for t in 0..1000u64 {
            let (_, g) = mlp_grads(&m, 4, t, &d);
            m = opt.step(0.05, m, g).unwrap();
            check(&opt, t + 1);
            moved += opt
                .last_report()
                .unwrap()
                .changed
                .iter()
                .map(|c| c.1)
                .sum::<usize>();
        }
        assert!(opt.masks().violations(&m).unwrap().iter().all(|v| v.1 == 0));
        assert!(moved > 100, "{s:?} rigl={rigl}: only {moved} moved");
    }
    // SNFS takes no structure, and N:M fixes the sparsity.
    let mut p = DstPlan::new(DstMethod::Rigl, Sparsity::new(0.75).unwrap(), 100, 10, 0);
    p.structure = Structure::Block { rows: 2, cols: 2 };
    assert!(p.validate().is_ok());
    p.method = DstMethod::Snfs;
    assert!(matches!(
        p.validate(),
        Err(DstError::InvalidConfig {
            field: "structure",
            ..
        })
    ));
    p.structure = Structure::NByM { n: 1, m: 4 };
    assert!(matches!(
        p.validate(),
        Err(DstError::InvalidConfig {
            field: "structure",
            ..
        })
    ));
    p.method = DstMethod::Static;
    p.sparsity = Sparsity::new(0.5).unwrap();
    assert!(matches!(
        p.validate(),
        Err(DstError::InvalidConfig {
            field: "sparsity",
            ..
        })
    ));
}
