//! Every mask method on burn's own building blocks: a `TransformerEncoder` (attention and the
//! position-wise feed-forward inside), a residual CNN block with `BatchNorm`, and an `Lstm`. The
//! default filter must pick their weights (and never a norm, an embedding or a running
//! statistic); every method keeps exact counts and exact zeros through training steps, and IMP
//! with rewinding and linear mode connectivity run on each.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::transformer::{
    TransformerEncoder, TransformerEncoderConfig, TransformerEncoderInput,
};
use burn::nn::{
    BatchNorm, BatchNormConfig, Linear, LinearConfig, Lstm, LstmConfig, PaddingConfig2d,
};
use burn::optim::GradientsParams;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_sparse::dynamic::{DstMethod, DstPlan};
use burn_sparse::mask::prelude::*;
use burn_sparse::mask::{SparseRng, to_host};
use burn_sparse::models::Classifier;
use burn_sparse::saliency::{
    Batch, Grasp, Magnitude, PruneConfig, RandomScore, Snip, SynFlow, prune_at_init,
};

const CLASSES: usize = 3;

/// Sequence models read `[B, 1, T, F]` images as `T` tokens of `F` features.
#[derive(Module, Debug)]
struct TinyTransformer {
    embed: Linear,
    encoder: TransformerEncoder,
    head: Linear,
}

impl TinyTransformer {
    fn new(d: &Device) -> Self {
        Self {
            embed: LinearConfig::new(8, 16).init(d),
            encoder: TransformerEncoderConfig::new(16, 32, 4, 2)
                .with_dropout(0.0)
                .init(d),
            head: LinearConfig::new(16, CLASSES).init(d),
        }
    }
    fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        let [b, _, t, f] = x.dims();
        let h = self.embed.forward(x.reshape([b, t, f]));
        let h = self.encoder.forward(TransformerEncoderInput::new(h));
        self.head.forward(h.mean_dim(1).reshape([b, 16]))
    }
}

#[derive(Module, Debug)]
struct ResBlockNet {
    stem: Conv2d,
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    head: Linear,
}

impl ResBlockNet {
    fn new(d: &Device) -> Self {
        let conv = |i, o| {
            Conv2dConfig::new([i, o], [3, 3])
                .with_padding(PaddingConfig2d::Same)
                .init(d)
        };
        Self {
            stem: conv(1, 4),
            conv1: conv(4, 4),
            bn1: BatchNormConfig::new(4).init(d),
            conv2: conv(4, 4),
            bn2: BatchNormConfig::new(4).init(d),
            head: LinearConfig::new(4 * 6 * 8, CLASSES).init(d),
        }
    }
    fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        let [b, ..] = x.dims();
        let x = relu(self.stem.forward(x));
        let y = relu(self.bn1.forward(self.conv1.forward(x.clone())));
        let y = self.bn2.forward(self.conv2.forward(y));
        let y = relu(y + x);
        self.head.forward(y.reshape([b, 4 * 6 * 8]))
    }
}

#[derive(Module, Debug)]
struct LstmNet {
    lstm: Lstm,
    head: Linear,
}

impl LstmNet {
    fn new(d: &Device) -> Self {
        Self {
            lstm: LstmConfig::new(8, 12, true).init(d),
            head: LinearConfig::new(12, CLASSES).init(d),
        }
    }
    fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        let [b, _, t, f] = x.dims();
        let (out, _) = self.lstm.forward(x.reshape([b, t, f]), None);
        self.head.forward(out.narrow(1, t - 1, 1).reshape([b, 12]))
    }
}

fn device() -> Device {
    Device::flex().autodiff()
}

impl Classifier for TinyTransformer {
    fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        TinyTransformer::logits(self, x)
    }
}
impl Classifier for ResBlockNet {
    fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        ResBlockNet::logits(self, x)
    }
}
impl Classifier for LstmNet {
    fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        LstmNet::logits(self, x)
    }
}

/// IMP with rewinding to step 2 (global 30% per level, 2 levels of 12 steps each) and linear
/// mode connectivity of the last ticket, on a 48-image generated dataset of `[1, 6, 8]`
/// inputs: exact counts per level, nested masks, masked final weights, a finite barrier.
fn imp_and_lmc<M: Classifier + 'static>(name: &str, make: fn(&Device) -> M) {
    use burn_sparse::data::VisionDataset;
    use burn_sparse::lottery::{Imp, ImpConfig, PruneRate, Retrain, Rewind};
    use burn_sparse::train::{StepTrainer, TrainConfig};
    let d = device();
    let mut r = SparseRng::new(5);
    let pixels: Vec<u8> = (0..48 * 48).map(|_| (r.next_u64() % 256) as u8).collect();
    let labels: Vec<u8> = (0..48)
        .map(|_| (r.next_u64() % CLASSES as u64) as u8)
        .collect();
    let ds = VisionDataset::new(
        "gen",
        [1, 6, 8],
        pixels,
        labels,
        CLASSES,
        vec![0.5],
        vec![0.25],
    )
    .unwrap();
    let mut trainer = StepTrainer {
        train: &ds,
        test: &ds,
        cfg: TrainConfig {
            batch_size: 12,
            lr: 0.05,
            cosine_total_steps: Some(12),
        },
        total_steps: 12,
        device: d.clone(),
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = ImpConfig {
        rate: PruneRate::Global(0.3),
        levels: 2,
        min_density: None,
        rewind: Rewind::Step(2),
        retrain: Retrain::WeightRewinding,
        structure: Default::default(),
        baselines: Vec::new(),
        seed: 4,
    };
    let init_d = d.clone();
    let init = move |s: u64| {
        init_d.seed(s);
        make(&init_d)
    };
    let imp = Imp::new(
        cfg,
        dir.path(),
        ParamFilter::new(),
        SgdRule::default(),
        init,
    );
    let levels = imp
        .run(&mut trainer, |_| {})
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let n = levels[0].nnz;
    let l1 = n - (0.3 * n as f64).round() as usize;
    let l2 = l1 - (0.3 * l1 as f64).round() as usize;
    assert_eq!(
        levels.iter().map(|l| l.nnz).collect::<Vec<_>>(),
        vec![n, l1, l2],
        "{name}: IMP counts"
    );
    let (m1, m2) = (imp.level_masks(1).unwrap(), imp.level_masks(2).unwrap());
    for (a, b) in m1.layers().iter().zip(m2.layers()) {
        assert!(
            b.bits().iter().zip(a.bits()).all(|(&n, &o)| !n || o),
            "{name}: nested"
        );
    }
    let fin =
        burn_sparse::mask::checkpoint::load_module(make(&d), &imp.final_model_path(2)).unwrap();
    m2.rebind(&fin).unwrap().ensure_masked(&fin).unwrap();
    let lmc = imp.instability(2, &mut trainer, (1, 2), 3).unwrap();
    assert_eq!(lmc.errors.len(), 3);
    assert!(lmc.instability.is_finite(), "{name}: {lmc:?}");
}

/// A fixed random batch of 12 inputs `[1, 6, 8]` with labels.
fn batch(seed: u64, d: &Device) -> Batch {
    let mut r = SparseRng::new(seed);
    let x: Vec<f32> = (0..12 * 48).map(|_| r.next_f32() * 2.0 - 1.0).collect();
    let y: Vec<i64> = (0..12)
        .map(|_| (r.next_u64() % CLASSES as u64) as i64)
        .collect();
    (
        Tensor::<4>::from_data(TensorData::new(x, [12, 1, 6, 8]), d),
        Tensor::<1, Int>::from_data(TensorData::new(y, [12]), d),
    )
}

fn grads<M: Module>(m: &M, f: fn(&M, Tensor<4>) -> Tensor<2>, seed: u64) -> GradientsParams {
    let d = device();
    let (x, y) = batch(seed, &d);
    let loss = CrossEntropyLossConfig::new().init(&d).forward(f(m, x), y);
    GradientsParams::from_grads(loss.backward(), m)
}

fn per_layer(o: &SparseOptimizer) -> Vec<usize> {
    o.masks().layers().iter().map(|l| l.nnz()).collect()
}

/// What a method keeps fixed.
#[derive(Clone, Copy, PartialEq)]
enum Keeps {
    /// Every layer's count (fixed masks, SET, RigL).
    PerLayer,
    /// The total (SNFS moves weights between layers).
    Total,
    /// Nothing: it prunes (GMP).
    Shrinks,
}

/// Train `steps` steps; after each, the masked weights are exactly 0 and the counts are what
/// the method keeps.
fn train<M: Module>(
    mut m: M,
    opt: &mut SparseOptimizer,
    f: fn(&M, Tensor<4>) -> Tensor<2>,
    steps: u64,
    keeps: Keeps,
    what: &str,
) -> M {
    let counts = per_layer(opt);
    let total = opt.masks().nnz();
    for s in 0..steps {
        let g = grads(&m, f, s);
        m = opt.step(0.05, m, g).unwrap();
        let bad: usize = opt
            .masks()
            .violations(&m)
            .unwrap()
            .iter()
            .map(|v| v.1)
            .sum();
        assert_eq!(bad, 0, "{what}: step {s}: masked weights not zero");
        match keeps {
            Keeps::PerLayer => assert_eq!(per_layer(opt), counts, "{what}: step {s}"),
            Keeps::Total => assert_eq!(opt.masks().nnz(), total, "{what}: step {s}"),
            Keeps::Shrinks => assert!(opt.masks().nnz() <= total, "{what}: step {s}"),
        }
    }
    m
}

fn every_method<M: Module + 'static>(
    name: &str,
    make: fn(&Device) -> M,
    f: fn(&M, Tensor<4>) -> Tensor<2>,
    expect_prunable: &[&str],
) {
    let d = device();
    // The default filter: exactly the expected weights; never a norm or running statistic.
    let picked: Vec<String> = ParamFilter::new()
        .select(&make(&d))
        .unwrap()
        .into_iter()
        .map(|p| p.path)
        .collect();
    assert_eq!(picked, expect_prunable, "{name}: prunable set");
    let s = Sparsity::new(0.8).unwrap();
    let layerwise = Scope::Layerwise(SparsityDistribution::Erk);
    // Saliency at initialisation (ERK counts, so no layer can be emptied), then fixed-mask steps.
    let want = SparsityDistribution::Erk
        .layer_counts(
            &ParamFilter::new().select(&make(&d)).unwrap(),
            s,
            &Default::default(),
        )
        .unwrap();
    for method in ["magnitude", "random", "snip", "grasp", "synflow"] {
        let cfg = PruneConfig::new(s)
            .with_scope(layerwise.clone())
            .with_rounds(if method == "synflow" { 3 } else { 1 });
        let m = make(&d);
        let (m, masks) = match method {
            "magnitude" => prune_at_init(m, &ParamFilter::new(), &cfg, &mut Magnitude),
            "random" => prune_at_init(m, &ParamFilter::new(), &cfg, &mut RandomScore::new(1)),
            "snip" => {
                let mut snip = Snip::cross_entropy(f, vec![batch(7, &d)]).unwrap();
                prune_at_init(m, &ParamFilter::new(), &cfg, &mut snip)
            }
            "grasp" => {
                let mut g = Grasp::cross_entropy(f, batch(8, &d), 200.0).unwrap();
                prune_at_init(m, &ParamFilter::new(), &cfg, &mut g)
            }
            _ => prune_at_init(
                m,
                &ParamFilter::new(),
                &cfg,
                &mut SynFlow::new(f, [1, 6, 8]),
            ),
        }
        .unwrap_or_else(|e| panic!("{name} {method}: {e}"));
        let what = format!("{name} {method}");
        let counts: Vec<usize> = masks.layers().iter().map(|l| l.nnz()).collect();
        assert_eq!(counts, want, "{what}: ERK counts");
        let mut opt = SparseOptimizer::new(SgdRule::default().with_momentum(0.9), masks).unwrap();
        train(m, &mut opt, f, 3, Keeps::PerLayer, &what);
    }
    // Dynamic sparse training and GMP through their plans.
    for method in [
        DstMethod::Static,
        DstMethod::Set,
        DstMethod::Rigl,
        DstMethod::Snfs,
        DstMethod::Gmp,
    ] {
        let mut plan = DstPlan::new(method, s, 40, 4, 3);
        plan.delta_t = 4;
        let (m, mut opt) = plan
            .build(
                make(&d),
                &ParamFilter::new(),
                SgdRule::default().with_momentum(0.9),
            )
            .unwrap_or_else(|e| panic!("{name} {method:?}: {e}"));
        let what = format!("{name} {method:?}");
        let before = opt.masks().layers()[0].bits().to_vec();
        let keeps = match method {
            DstMethod::Snfs => Keeps::Total,
            DstMethod::Gmp => Keeps::Shrinks,
            _ => Keeps::PerLayer,
        };
        let m = train(m, &mut opt, f, 32, keeps, &what);
        if method == DstMethod::Gmp {
            // Prunes every 4 steps from step 4 to step 30, to exactly round(0.2 N) per layer.
            let want: Vec<usize> = opt
                .masks()
                .layers()
                .iter()
                .map(|l| s.kept(l.numel()))
                .collect();
            assert_eq!(per_layer(&opt), want, "{what}: final counts");
        } else if method != DstMethod::Static {
            assert_ne!(
                opt.masks().layers()[0].bits(),
                before.as_slice(),
                "{what}: no update"
            );
        }
        drop(m);
    }
}

#[test]
fn transformer_encoder() {
    let mut want = vec!["embed.weight".to_string()];
    for l in 0..2 {
        for p in ["query", "key", "value", "output"] {
            want.push(format!("encoder.layers.{l}.mha.{p}.weight"));
        }
        want.push(format!("encoder.layers.{l}.pwff.linear_inner.weight"));
        want.push(format!("encoder.layers.{l}.pwff.linear_outer.weight"));
    }
    want.push("head.weight".into());
    let want: Vec<&str> = want.iter().map(String::as_str).collect();
    every_method(
        "transformer",
        TinyTransformer::new,
        TinyTransformer::logits,
        &want,
    );
    imp_and_lmc("transformer", TinyTransformer::new);
}

#[test]
fn residual_block_with_batch_norm() {
    every_method(
        "resblock",
        ResBlockNet::new,
        ResBlockNet::logits,
        &["stem.weight", "conv1.weight", "conv2.weight", "head.weight"],
    );
    imp_and_lmc("resblock", ResBlockNet::new);
    // Training moves the running statistics, which no mask ever touches.
    let d = device();
    let m = ResBlockNet::new(&d);
    let masks = MaskSet::dense(&m, &ParamFilter::new()).unwrap();
    assert!(masks.params().iter().all(|p| !p.path.contains("bn")));
    let before = to_host(m.bn1.running_mean.value()).unwrap();
    let mut opt = SparseOptimizer::new(SgdRule::default(), masks).unwrap();
    let m = train(
        m,
        &mut opt,
        ResBlockNet::logits,
        2,
        Keeps::PerLayer,
        "resblock bn",
    );
    assert_ne!(to_host(m.bn1.running_mean.value()).unwrap(), before);
}

#[test]
fn lstm() {
    let mut want = Vec::new();
    for g in ["input_gate", "forget_gate", "output_gate", "cell_gate"] {
        want.push(format!("lstm.{g}.input_transform.weight"));
        want.push(format!("lstm.{g}.hidden_transform.weight"));
    }
    want.push("head.weight".into());
    let want: Vec<&str> = want.iter().map(String::as_str).collect();
    every_method("lstm", LstmNet::new, LstmNet::logits, &want);
    imp_and_lmc("lstm", LstmNet::new);
}
