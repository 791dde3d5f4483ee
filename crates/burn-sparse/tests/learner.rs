//! A DST run inside burn-train's `Learner`: the model keeps a `SparseHandle` in a
//! `#[module(skip)]` field and overrides `TrainStep::optimize`, burn-train's documented seam for
//! post-step edits. RigL updates happen inside the step; masked weights stay exactly 0.

use std::sync::Arc;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::data::dataset::InMemDataset;
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig};
use burn::optim::lr_scheduler::constant::ConstantLr;
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLearningRate;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn::train::logger::InMemoryMetricLogger;
use burn::train::metric::LossMetric;
use burn::train::{
    ClassificationOutput, InferenceStep, Learner, LearnerModel, SupervisedTraining, TrainOutput,
    TrainStep,
};
use burn_sparse::dynamic::{DropGrowConfig, GrowInit, RiglUpdater};
use burn_sparse::mask::{SparseHandle, to_host};
use burn_sparse::prelude::*;

#[derive(Module, Debug)]
struct Net {
    l1: Linear,
    l2: Linear,
    #[module(skip)]
    sparse: Option<SparseHandle>,
}

impl Net {
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.l2.forward(relu(self.l1.forward(x)))
    }
    fn output(&self, b: &Item) -> ClassificationOutput {
        classify(self.forward(b.x.clone()), b.y.clone())
    }
}

/// Cross-entropy of `logits` against `y`, as burn-train's classification output.
fn classify(logits: Tensor<2>, y: Tensor<1, Int>) -> ClassificationOutput {
    let loss = CrossEntropyLossConfig::new()
        .init(&logits.device())
        .forward(logits.clone(), y.clone());
    ClassificationOutput {
        loss,
        output: logits,
        targets: y,
    }
}

#[derive(Clone, Debug)]
struct Item {
    x: Tensor<2>,
    y: Tensor<1, Int>,
}

struct Points;

impl Batcher<(Vec<f32>, i64), Item> for Points {
    fn batch(&self, items: Vec<(Vec<f32>, i64)>, device: &Device) -> Item {
        let n = items.len();
        let x: Vec<f32> = items.iter().flat_map(|i| i.0.clone()).collect();
        let y: Vec<i64> = items.iter().map(|i| i.1).collect();
        Item {
            x: Tensor::<2>::from_data(TensorData::new(x, [n, 8]), device),
            y: Tensor::<1, Int>::from_data(TensorData::new(y, [n]), device),
        }
    }
}

impl TrainStep for Net {
    type Input = Item;
    type Output = ClassificationOutput;
    fn step(&self, item: Item) -> TrainOutput<ClassificationOutput> {
        let out = self.output(&item);
        TrainOutput::new(self, out.loss.backward(), out)
    }
    fn optimize(
        self,
        _burn: &mut ModuleOptimizer,
        lr: ModuleLearningRate,
        grads: GradientsParams,
    ) -> Self {
        let handle = self.sparse.clone().expect("the sparse optimizer");
        handle.step(self, &lr, grads)
    }
}

impl InferenceStep for Net {
    type Input = Item;
    type Output = ClassificationOutput;
    fn step(&self, item: Item) -> ClassificationOutput {
        self.output(&item)
    }
}

/// Two epochs of burn-train's `Learner` over [`data`] in batches of 8 (in order), burn's SGD
/// at a constant 0.1 (which the models' own `optimize` replaces): the trained model.
fn fit<M>(net: M) -> M
where
    M: LearnerModel
        + TrainStep<Input = Item, Output = ClassificationOutput>
        + InferenceStep<Input = Item, Output = ClassificationOutput>,
{
    let loader = || -> Arc<dyn DataLoader<Item>> {
        DataLoaderBuilder::new(Points)
            .batch_size(8)
            .build(InMemDataset::new(data()))
    };
    let dir = tempfile::tempdir().unwrap();
    SupervisedTraining::new(dir.path(), loader(), loader())
        .num_epochs(2)
        .with_metric_logger(InMemoryMetricLogger::new())
        .metric_train_numeric(LossMetric::new())
        .metric_valid_numeric(LossMetric::new())
        .with_application_logger(None)
        .launch(Learner::new(
            net,
            burn::optim::SgdConfig::new().init(),
            ConstantLr::new(0.1),
        ))
        .model
}

fn data() -> Vec<(Vec<f32>, i64)> {
    let mut r = SparseRng::new(5);
    (0..64)
        .map(|_| {
            let x: Vec<f32> = (0..8).map(|_| r.next_f32() * 2.0 - 1.0).collect();
            let y = i64::from(x[0] + x[1] > 0.0);
            (x, y)
        })
        .collect()
}

#[test]
fn rigl_inside_burn_train_learner() {
    let d = Device::flex().autodiff();
    let net = Net {
        l1: LinearConfig::new(8, 32).init(&d),
        l2: LinearConfig::new(32, 2).init(&d),
        sparse: None,
    };
    let masks = random_masks(
        &net,
        &ParamFilter::new(),
        Sparsity::new(0.7).unwrap(),
        &SparsityDistribution::Erk,
        1,
    )
    .unwrap();
    let nnz = masks.nnz();
    let net = masks.apply(net);
    let cfg = DropGrowConfig {
        schedule: UpdateSchedule::new(0, 12, 2).unwrap(),
        drop_fraction: DropFraction::Cosine { alpha: 0.3 },
        init: GrowInit::Zero,
        seed: 3,
        skip_weight_update: false,
        grad_accumulation: 1,
        structure: Default::default(),
    };
    let initial_bits: Vec<Vec<bool>> = masks.layers().iter().map(|l| l.bits().to_vec()).collect();
    let build = |masks: MaskSet| {
        SparseOptimizer::new(SgdRule::default(), masks)
            .unwrap()
            .with_updater(Box::new(RiglUpdater::rigl(cfg).unwrap()))
            .unwrap()
    };
    let opt = build(masks.clone());
    // The same model and optimizer for a hand-written loop over the same batches.
    let mut twin = net.clone();
    let mut twin_opt = build(masks);
    let handle = SparseHandle::new(opt);
    let net = Net {
        sparse: Some(handle.clone()),
        ..net
    };
    let w_before = to_host(net.l1.weight.val()).unwrap();

    let model = fit(net);

    assert!(handle.take_error().is_none());
    // 2 epochs x 8 batches = 16 sparse steps; RigL updated at steps 2, 4, ..., 12.
    assert_eq!(handle.with(|o| o.steps()), 16);
    let changed = handle.with(|o| {
        assert_eq!(o.masks().nnz(), nnz, "the budget is fixed");
        assert!(
            o.masks()
                .violations(&model)
                .unwrap()
                .iter()
                .all(|v| v.1 == 0)
        );
        o.updater().map(|u| u.name().to_string())
    });
    assert_eq!(changed.as_deref(), Some("rigl"));
    assert_ne!(
        to_host(model.l1.weight.val()).unwrap(),
        w_before,
        "the Learner trained the model"
    );
    // RigL moved connections inside the Learner: the final masks are not the initial ones.
    let final_bits: Vec<Vec<bool>> = handle.with(|o| {
        o.masks()
            .layers()
            .iter()
            .map(|l| l.bits().to_vec())
            .collect()
    });
    let moved: usize = final_bits
        .iter()
        .flatten()
        .zip(initial_bits.iter().flatten())
        .filter(|(a, b)| **a && !**b)
        .count();
    assert!(moved > 0, "no connection moved");

    // The hand-written loop: two epochs of the 8 batches in order, lr 0.1, the same optimizer.
    let items = data();
    for _epoch in 0..2 {
        for chunk in items.chunks(8) {
            let b = Points.batch(chunk.to_vec(), &d);
            let loss = twin.output(&b).loss;
            let grads = GradientsParams::from_grads(loss.backward(), &twin);
            twin = twin_opt.step(0.1, twin, grads).unwrap();
        }
    }
    let twin_bits: Vec<Vec<bool>> = twin_opt
        .masks()
        .layers()
        .iter()
        .map(|l| l.bits().to_vec())
        .collect();
    assert_eq!(final_bits, twin_bits, "same masks as the hand-written loop");
    for (a, b) in [(&model.l1, &twin.l1), (&model.l2, &twin.l2)] {
        assert_eq!(
            to_host(a.weight.val()).unwrap(),
            to_host(b.weight.val()).unwrap(),
            "same weights as the hand-written loop, bit for bit"
        );
        assert_eq!(
            to_host(a.bias.as_ref().unwrap().val()).unwrap(),
            to_host(b.bias.as_ref().unwrap().val()).unwrap()
        );
    }
}

/// A network of truly sparse layers trained by RigL inside the `Learner`.
#[derive(Module, Debug)]
struct SparseNet {
    mlp: burn_sparse::models::SparseMlp,
    #[module(skip)]
    train: Option<burn_sparse::sparse_dst::SparseTrainHandle>,
}

impl SparseNet {
    fn output(&self, b: &Item) -> ClassificationOutput {
        classify(self.mlp.forward(b.x.clone()), b.y.clone())
    }
}

impl TrainStep for SparseNet {
    type Input = Item;
    type Output = ClassificationOutput;
    fn step(&self, b: Item) -> TrainOutput<ClassificationOutput> {
        let h = self.train.as_ref().expect("the handle");
        let (logits, probes) = h.forward(&self.mlp, b.x.clone());
        let out = classify(logits, b.y);
        let grads = h.backward(&out.loss, &probes);
        TrainOutput::new(self, grads, out)
    }
    fn optimize(
        self,
        _burn: &mut ModuleOptimizer,
        lr: ModuleLearningRate,
        grads: GradientsParams,
    ) -> Self {
        let h = self.train.clone().expect("the handle");
        SparseNet {
            mlp: h.step(self.mlp, &lr, grads),
            ..self
        }
    }
}

impl InferenceStep for SparseNet {
    type Input = Item;
    type Output = ClassificationOutput;
    fn step(&self, item: Item) -> ClassificationOutput {
        self.output(&item)
    }
}

/// RigL on `SparseMlp` inside burn-train's `Learner` (probes on update steps through the
/// handle): exact nnz, connections moved, and the same values and topology, bit for bit, as
/// the hand-written loop of `train_epoch_sparse`'s steps over the same batches.
#[test]
fn rigl_on_sparse_layers_inside_burn_train_learner() {
    use burn_sparse::layers::Compute;
    use burn_sparse::models::{SparseMlp, SparseMlpConfig};
    use burn_sparse::sparse_dst::{SparseDst, SparseTrainHandle};
    let d = Device::flex().autodiff();
    let mlp = SparseMlpConfig::new(vec![8, 32, 2], vec![0.25, 0.5])
        .with_compute(Compute::Sparse)
        .init(&d)
        .unwrap();
    let nnz: Vec<usize> = mlp.layers.iter().map(|l| l.nnz()).collect();
    let initial: Vec<Vec<bool>> = mlp
        .layers
        .iter()
        .map(|l| l.active_mask().unwrap())
        .collect();
    let updater = || {
        let cfg = DropGrowConfig {
            schedule: UpdateSchedule::new(0, 12, 2).unwrap(),
            drop_fraction: DropFraction::Cosine { alpha: 0.3 },
            init: GrowInit::Zero,
            seed: 3,
            skip_weight_update: false,
            grad_accumulation: 1,
            structure: Default::default(),
        };
        SparseDst::new(Box::new(RiglUpdater::rigl(cfg).unwrap())).unwrap()
    };
    let optim = || SparseOptimizer::new(SgdRule::default(), MaskSet::empty()).unwrap();
    let handle = SparseTrainHandle::new(optim(), Some(updater()));
    let net = SparseNet {
        mlp: mlp.clone(),
        train: Some(handle.clone()),
    };
    let model = fit(net).mlp;
    assert!(handle.take_error().is_none());
    assert_eq!(handle.with(|o| o.steps()), 16);
    let updates = handle.updates();
    assert_eq!(
        updates.iter().map(|u| u.0).collect::<Vec<_>>(),
        vec![2, 4, 6, 8, 10, 12],
        "RigL updates at every second step until its end (12)"
    );
    assert!(
        updates.iter().any(|u| u.1.iter().sum::<usize>() > 0),
        "nothing moved"
    );
    let final_masks: Vec<Vec<bool>> = model
        .layers
        .iter()
        .map(|l| l.active_mask().unwrap())
        .collect();
    assert_ne!(
        final_masks, initial,
        "RigL moved connections inside the Learner"
    );
    let got: Vec<usize> = model.layers.iter().map(|l| l.nnz()).collect();
    assert_eq!(got, nnz, "exact nnz per layer");

    // The hand-written loop: the same steps train_epoch_sparse takes, over the same batches.
    let ce = CrossEntropyLossConfig::new().init(&d);
    let (mut twin, mut dst, mut opt) = (mlp, updater(), optim());
    let items = data();
    for _epoch in 0..2 {
        for chunk in items.chunks(8) {
            let b = Points.batch(chunk.to_vec(), &d);
            let t = opt.steps() + 1;
            twin = if dst.is_update_step(t) {
                let probes = twin.probes();
                let raw = ce
                    .forward(twin.forward_probed(b.x, &probes), b.y)
                    .backward();
                let dense: Vec<Vec<f32>> = probes
                    .iter()
                    .map(|p| to_host(p.grad(&raw).unwrap()).unwrap())
                    .collect();
                let mut g = GradientsParams::from_grads(raw, &twin);
                let (n, _) = dst.update(t, twin, &dense, &mut opt, &mut g).unwrap();
                opt.step(0.1, n, g).unwrap()
            } else {
                let g = GradientsParams::from_grads(
                    ce.forward(twin.forward(b.x), b.y).backward(),
                    &twin,
                );
                opt.step(0.1, twin, g).unwrap()
            };
        }
    }
    let bits = |n: &SparseMlp| -> Vec<Vec<u32>> {
        n.layers
            .iter()
            .map(|l| {
                l.host_values()
                    .unwrap()
                    .iter()
                    .map(|x| x.to_bits())
                    .collect()
            })
            .collect()
    };
    let twin_masks: Vec<Vec<bool>> = twin
        .layers
        .iter()
        .map(|l| l.active_mask().unwrap())
        .collect();
    assert_eq!(
        final_masks, twin_masks,
        "same topology as the hand-written loop"
    );
    assert_eq!(bits(&model), bits(&twin), "same values, bit for bit");
}
