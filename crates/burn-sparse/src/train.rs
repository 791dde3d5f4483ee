//! A hand-written training loop: cross-entropy, a [`SparseOptimizer`] step per batch, and an
//! exact accuracy on a test set. Deterministic for a seed on the CPU backend.

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor};
use burn_sparse_mask::{MaskError, SparseOptimizer, finite_loss};

use crate::models::Classifier;

/// Batch size and learning-rate schedule of a run.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    /// Batch size.
    pub batch_size: usize,
    /// Base learning rate.
    pub lr: f64,
    /// Decay the learning rate by a cosine from `lr` at step 0 to 0 at this step (None: constant).
    pub cosine_total_steps: Option<u64>,
}

impl TrainConfig {
    /// The learning rate at optimizer step `t` (0-based).
    pub fn lr_at(&self, t: u64) -> f64 {
        match self.cosine_total_steps {
            Some(total) if total > 0 => {
                let x = (t.min(total) as f64) / total as f64;
                self.lr * 0.5 * (1.0 + (std::f64::consts::PI * x).cos())
            }
            _ => self.lr,
        }
    }

    /// This config at the constant learning rate `lr`, or (None) at the rate its schedule has
    /// at step `last` (IMP's fine-tuning).
    pub fn constant_at(self, lr: Option<f64>, last: u64) -> Self {
        Self {
            lr: lr.unwrap_or_else(|| self.lr_at(last)),
            cosine_total_steps: None,
            ..self
        }
    }
}

/// What an epoch did.
#[derive(Debug, Clone, Default)]
pub struct EpochReport {
    /// Mean training loss.
    pub loss: f64,
    /// The topology updates that happened (step and connections changed per layer).
    pub updates: Vec<burn_sparse_mask::StepReport>,
}

impl EpochReport {
    /// Connections changed by all of the epoch's topology updates, over every layer.
    pub fn connections_changed(&self) -> usize {
        self.updates
            .iter()
            .flat_map(|u| u.changed.iter().map(|(_, c)| c))
            .sum()
    }
}

/// A [`BatchSource`]'s error, kept typed: a [`burn_sparse_data::DataError`] for the datasets of
/// this workspace (downcast it with `err.downcast_ref::<DataError>()`), a user source's own
/// otherwise.
pub type BatchError = Box<dyn std::error::Error + Send + Sync>;

/// Errors of the loop: the optimizer's, a dataset's, or a sparse topology update's.
#[derive(Debug)]
#[non_exhaustive]
pub enum TrainError {
    /// From the optimizer (NaN loss, bad update ...).
    Mask(MaskError),
    /// From the data: the batch source's error.
    Data(BatchError),
    /// A probe of a truly sparse layer had no gradient at a topology update.
    MissingProbeGradient {
        /// The probe's position (the layer index).
        layer: usize,
    },
    /// A tensor could not be read back to the host.
    ReadBack(String),
    /// From a topology update of truly sparse layers.
    Sparse(crate::sparse_dst::SparseDstError),
}

impl std::fmt::Display for TrainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrainError::Mask(e) => write!(f, "{e}"),
            TrainError::Data(e) => write!(f, "{e}"),
            TrainError::MissingProbeGradient { layer } => {
                write!(f, "the probe of sparse layer {layer} has no gradient")
            }
            TrainError::ReadBack(e) => write!(f, "cannot read a tensor back: {e}"),
            TrainError::Sparse(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for TrainError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TrainError::Mask(e) => Some(e),
            TrainError::Data(e) => Some(e.as_ref()),
            TrainError::Sparse(e) => Some(e),
            _ => None,
        }
    }
}

impl From<MaskError> for TrainError {
    fn from(e: MaskError) -> Self {
        TrainError::Mask(e)
    }
}

impl From<crate::sparse_dst::SparseDstError> for TrainError {
    fn from(e: crate::sparse_dst::SparseDstError) -> Self {
        TrainError::Sparse(e)
    }
}

/// A source of labelled image batches by index.
pub trait BatchSource {
    /// Number of items.
    fn len(&self) -> usize;
    /// Whether empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Images `[B, C, H, W]` and targets `[B]` for these indices.
    ///
    /// # Errors
    /// The source's error for bad indices (any `std::error::Error`; a `String` converts).
    fn batch(
        &self,
        indices: &[usize],
        device: &Device,
    ) -> Result<(Tensor<4>, Tensor<1, Int>), BatchError>;
}

#[cfg(feature = "data")]
impl BatchSource for burn_sparse_data::VisionDataset {
    fn len(&self) -> usize {
        burn_sparse_data::VisionDataset::len(self)
    }
    fn batch(
        &self,
        indices: &[usize],
        device: &Device,
    ) -> Result<(Tensor<4>, Tensor<1, Int>), BatchError> {
        let b = burn_sparse_data::VisionDataset::batch(self, indices, device)?;
        Ok((b.images, b.targets))
    }
}

/// A dataset whose batches are augmented, with a seed that should change every epoch (e.g. the
/// epoch's shuffle seed). Item `i`'s augmentation depends only on `(seed, i)`, so training stays
/// deterministic and a resumed run draws the same images.
#[cfg(feature = "data")]
#[derive(Debug, Clone, Copy)]
pub struct Augmented<'a> {
    /// The images.
    pub data: &'a burn_sparse_data::VisionDataset,
    /// What to do to them.
    pub aug: burn_sparse_data::Augmentation,
    /// This epoch's seed.
    pub seed: u64,
}

#[cfg(feature = "data")]
impl<'a> Augmented<'a> {
    /// The augmented view of `data` for the epoch whose shuffle seed is `epoch_seed` (the
    /// augmentation draws from a seed derived from it). With [`Augmentation::none`] its batches
    /// are exactly `data`'s.
    ///
    /// [`Augmentation::none`]: burn_sparse_data::Augmentation::none
    pub fn for_epoch(
        data: &'a burn_sparse_data::VisionDataset,
        aug: burn_sparse_data::Augmentation,
        epoch_seed: u64,
    ) -> Self {
        Self {
            data,
            aug,
            seed: epoch_seed ^ 0xa06_5eed,
        }
    }
}

#[cfg(feature = "data")]
impl BatchSource for Augmented<'_> {
    fn len(&self) -> usize {
        self.data.len()
    }
    fn batch(
        &self,
        indices: &[usize],
        device: &Device,
    ) -> Result<(Tensor<4>, Tensor<1, Int>), BatchError> {
        let b = self
            .data
            .batch_augmented(indices, &self.aug, self.seed, device)?;
        Ok((b.images, b.targets))
    }
}

/// The seed of epoch `epoch` (0-based) of a run seeded `seed`: the data order and the
/// augmentation of that epoch draw from it. Every loop of the workspace (the CLI, the
/// examples, [`train_steps`]) uses this one formula, so a run's epochs are the same whichever
/// loop trains them.
pub fn epoch_seed(seed: u64, epoch: u64) -> u64 {
    seed.wrapping_mul(7919).wrapping_add(epoch)
}

/// A seeded permutation of `0..n`.
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    burn_sparse_mask::SparseRng::new(seed).shuffle(&mut idx);
    idx
}

/// One epoch over `data` in a seeded order. Returns the model and an [`EpochReport`]. Stops with
/// [`MaskError::NonFinite`] on a NaN or infinite loss, before it reaches the weights.
///
/// # Errors
/// [`TrainError`].
pub fn train_epoch<M: Classifier, D: BatchSource + ?Sized>(
    model: M,
    optim: &mut SparseOptimizer,
    data: &D,
    cfg: TrainConfig,
    seed: u64,
    device: &Device,
) -> Result<(M, EpochReport), TrainError> {
    train_epoch_with(model, optim, data, cfg, seed, device, &mut |_, _| {})
}

/// [`train_epoch`] that calls `on_batch(batches_done, batches_in_epoch)` after every step
/// (for a progress bar).
///
/// # Errors
/// [`TrainError`].
pub fn train_epoch_with<M: Classifier, D: BatchSource + ?Sized>(
    mut model: M,
    optim: &mut SparseOptimizer,
    data: &D,
    cfg: TrainConfig,
    seed: u64,
    device: &Device,
    on_batch: &mut dyn FnMut(usize, usize),
) -> Result<(M, EpochReport), TrainError> {
    let order = permutation(data.len(), seed);
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let mut total = 0.0;
    let mut batches = 0usize;
    let mut updates = Vec::new();
    let n_batches = order.len().div_ceil(cfg.batch_size.max(1));
    for idx in order.chunks(cfg.batch_size.max(1)) {
        let (x, y) = data.batch(idx, device).map_err(TrainError::Data)?;
        let loss = loss_fn.forward(model.logits(x), y);
        total += finite_loss(&loss)? as f64;
        batches += 1;
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let lr = cfg.lr_at(optim.steps());
        model = optim.step(lr, model, grads)?;
        if let Some(r) = optim.last_report().filter(|r| !r.changed.is_empty()) {
            updates.push(r.clone());
        }
        on_batch(batches, n_batches);
    }
    Ok((
        model,
        EpochReport {
            loss: total / batches.max(1) as f64,
            updates,
        },
    ))
}

/// Top-1 accuracy of `model` on `data`, in percent (exact count over every item).
///
/// # Errors
/// [`TrainError`].
pub fn accuracy<M: Classifier, D: BatchSource>(
    model: &M,
    data: &D,
    device: &Device,
) -> Result<f64, TrainError> {
    let model = model.valid();
    let idx: Vec<usize> = (0..data.len()).collect();
    let mut correct = 0usize;
    for chunk in idx.chunks(1000) {
        let (x, y) = data.batch(chunk, device).map_err(TrainError::Data)?;
        let x = x.inner();
        let pred = model.logits(x).argmax(1).reshape([chunk.len()]);
        let eq = pred.equal(y.inner()).int().sum();
        let c = eq
            .into_data()
            .convert::<i64>()
            .try_to_vec::<i64>()
            .map_err(|e| TrainError::ReadBack(format!("{e:?}")))?;
        correct += c[0] as usize;
    }
    Ok(100.0 * correct as f64 / data.len().max(1) as f64)
}

/// The batches of a step-indexed run: step `j` (0-based) takes batch `j % steps_per_epoch` of
/// the permutation of epoch `j / steps_per_epoch`, seeded by [`epoch_seed`] and drawn once per
/// epoch.
struct StepOrder {
    len: usize,
    batch: usize,
    per_epoch: u64,
    seed: u64,
    order: Option<(u64, Vec<usize>)>,
}

impl StepOrder {
    fn new(len: usize, batch: usize, seed: u64) -> Self {
        let batch = batch.max(1);
        Self {
            len,
            batch,
            per_epoch: len.div_ceil(batch).max(1) as u64,
            seed,
            order: None,
        }
    }

    fn indices(&mut self, j: u64) -> &[usize] {
        let epoch = j / self.per_epoch;
        if self.order.as_ref().is_none_or(|(e, _)| *e != epoch) {
            self.order = Some((epoch, permutation(self.len, epoch_seed(self.seed, epoch))));
        }
        let perm = match &self.order {
            Some((_, p)) => p.as_slice(),
            None => &[],
        };
        let pos = ((j % self.per_epoch) as usize * self.batch).min(perm.len());
        &perm[pos..(pos + self.batch).min(perm.len())]
    }
}

/// Train from optimizer step `start` to `end` (exclusive, 0-based step indices) with a
/// step-indexed data order: step `j` uses batch `j % steps_per_epoch` of the permutation of
/// epoch `j / steps_per_epoch` (seeded by [`epoch_seed`]), and learning rate
/// `cfg.lr_at(j)`. So a run rewound to step `k` continues exactly as the original would have.
/// `on_step(j + 1, &model)` is called after every step.
///
/// # Errors
/// [`TrainError`].
#[allow(clippy::too_many_arguments)]
pub fn train_steps<M: Classifier, D: BatchSource>(
    mut model: M,
    optim: &mut SparseOptimizer,
    data: &D,
    cfg: TrainConfig,
    (start, end): (u64, u64),
    seed: u64,
    device: &Device,
    on_step: &mut dyn FnMut(u64, &M),
) -> Result<M, TrainError> {
    let mut order = StepOrder::new(data.len(), cfg.batch_size, seed);
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    for j in start..end {
        let (x, y) = data
            .batch(order.indices(j), device)
            .map_err(TrainError::Data)?;
        let loss = loss_fn.forward(model.logits(x), y);
        finite_loss(&loss)?;
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(cfg.lr_at(j), model, grads)?;
        on_step(j + 1, &model);
    }
    Ok(model)
}

/// An [`ImpTrainer`](burn_sparse_lottery::ImpTrainer) for the facade's models: trains
/// `total_steps` with [`train_steps`] and evaluates on `test`.
#[cfg(feature = "lottery")]
pub struct StepTrainer<'a, D: BatchSource> {
    /// Training data.
    pub train: &'a D,
    /// Test data.
    pub test: &'a D,
    /// Batch size and learning rate.
    pub cfg: TrainConfig,
    /// The budget of every level, in steps.
    pub total_steps: u64,
    /// The device.
    pub device: Device,
}

#[cfg(feature = "lottery")]
impl<M: Classifier, D: BatchSource> burn_sparse_lottery::ImpTrainer<M> for StepTrainer<'_, D> {
    fn train(
        &mut self,
        model: M,
        optim: &mut SparseOptimizer,
        start: u64,
        data_seed: u64,
        mut capture: Option<burn_sparse_lottery::Capture<'_, M>>,
    ) -> Result<M, burn_sparse_lottery::TrainerError> {
        Ok(train_steps(
            model,
            optim,
            self.train,
            self.cfg,
            (start, self.total_steps),
            data_seed,
            &self.device,
            &mut |t, m| {
                if let Some(c) = capture.as_mut() {
                    c.offer(t, || m.clone());
                }
            },
        )?)
    }
    fn fine_tune(
        &mut self,
        model: M,
        optim: &mut SparseOptimizer,
        start: u64,
        lr: Option<f64>,
        data_seed: u64,
    ) -> Result<M, burn_sparse_lottery::TrainerError> {
        let cfg = self.cfg.constant_at(lr, self.total_steps.saturating_sub(1));
        Ok(train_steps(
            model,
            optim,
            self.train,
            cfg,
            (start, self.total_steps),
            data_seed,
            &self.device,
            &mut |_, _| {},
        )?)
    }
    fn accuracy(&mut self, model: &M) -> Result<f64, burn_sparse_lottery::TrainerError> {
        Ok(accuracy(model, self.test, &self.device)?)
    }
}

/// [`StepTrainer`] for LeNet-300-100 on truly sparse layers: every IMP level (and baseline)
/// trains as a [`SparseMlp`](crate::models::SparseMlp) built from the level's mask
/// ([`SparseMlp::from_lenet300`](crate::models::SparseMlp::from_lenet300)), with a fresh
/// nnz-sized optimizer of the level optimizer's rule, the same batches and learning rates, and
/// comes back as a dense [`LeNet300`](crate::models::LeNet300) with exact zeros. The rewind
/// point is converted once, at its step. The dense level 0 computes masked-dense (a layer that
/// dense never gains from the kernels, see [`Compute::Auto`](burn_sparse_layers::Compute)).
#[cfg(feature = "lottery")]
pub struct SparseStepTrainer<'a, D: BatchSource> {
    /// The data, budget and device, as for [`StepTrainer`].
    pub steps: StepTrainer<'a, D>,
    /// How the layers compute.
    pub compute: burn_sparse_layers::Compute,
}

#[cfg(feature = "lottery")]
impl<D: BatchSource> burn_sparse_lottery::ImpTrainer<crate::models::LeNet300>
    for SparseStepTrainer<'_, D>
{
    fn train(
        &mut self,
        model: crate::models::LeNet300,
        optim: &mut SparseOptimizer,
        start: u64,
        data_seed: u64,
        capture: Option<burn_sparse_lottery::Capture<'_, crate::models::LeNet300>>,
    ) -> Result<crate::models::LeNet300, burn_sparse_lottery::TrainerError> {
        let net = crate::models::SparseMlp::from_lenet300(&model, optim.masks(), self.compute)
            .map_err(crate::sparse_dst::SparseDstError::from)
            .map_err(TrainError::from)?;
        drop(model);
        let mut values = SparseOptimizer::new(*optim.rule(), burn_sparse_mask::MaskSet::empty())?;
        let k = capture.as_ref().map(|c| c.step);
        let mut kept = None;
        let s = &self.steps;
        // `SparseMlp` is a `Classifier`: the masked trainer's loop, step for step.
        let net = train_steps(
            net,
            &mut values,
            s.train,
            s.cfg,
            (start, s.total_steps),
            data_seed,
            &s.device,
            // A handle copy; converted to dense once, after training.
            &mut |t, n| {
                if Some(t) == k {
                    kept = Some(n.clone());
                }
            },
        )?;
        let dense = |n: &crate::models::SparseMlp| {
            n.to_lenet300()
                .map_err(crate::sparse_dst::SparseDstError::from)
                .map_err(TrainError::from)
        };
        if let (Some(mut c), Some(n)) = (capture, kept) {
            let m = dense(&n)?;
            c.offer(c.step, || m);
        }
        Ok(dense(&net)?)
    }
    fn fine_tune(
        &mut self,
        model: crate::models::LeNet300,
        optim: &mut SparseOptimizer,
        start: u64,
        lr: Option<f64>,
        data_seed: u64,
    ) -> Result<crate::models::LeNet300, burn_sparse_lottery::TrainerError> {
        // The same sparse training at a constant rate.
        let scheduled = self.steps.cfg;
        self.steps.cfg = scheduled.constant_at(lr, self.steps.total_steps.saturating_sub(1));
        let out = self.train(model, optim, start, data_seed, None);
        self.steps.cfg = scheduled;
        out
    }
    fn accuracy(
        &mut self,
        model: &crate::models::LeNet300,
    ) -> Result<f64, burn_sparse_lottery::TrainerError> {
        Ok(accuracy(model, self.steps.test, &self.steps.device)?)
    }
}

/// [`train_epoch`] for a network of truly sparse layers: `optim` steps the values (build it
/// over [`MaskSet::empty`](burn_sparse_mask::MaskSet::empty)), and `dst`, if any, updates the
/// topology at its update steps, where (only) the forward pass carries the dense probes.
///
/// # Errors
/// A non-finite loss, an optimizer, topology or data error.
pub fn train_epoch_sparse<D: BatchSource + ?Sized>(
    net: crate::models::SparseMlp,
    optim: &mut SparseOptimizer,
    dst: Option<&mut crate::sparse_dst::SparseDst>,
    data: &D,
    cfg: TrainConfig,
    seed: u64,
    device: &Device,
) -> Result<(crate::models::SparseMlp, EpochReport), TrainError> {
    train_epoch_sparse_with(net, optim, dst, data, cfg, seed, device, &mut |_, _| {})
}

/// [`train_epoch_sparse`] that calls `on_batch(batches_done, batches_in_epoch)` after every
/// step (for a progress bar).
///
/// # Errors
/// As [`train_epoch_sparse`].
#[allow(clippy::too_many_arguments)]
pub fn train_epoch_sparse_with<D: BatchSource + ?Sized>(
    mut net: crate::models::SparseMlp,
    optim: &mut SparseOptimizer,
    mut dst: Option<&mut crate::sparse_dst::SparseDst>,
    data: &D,
    cfg: TrainConfig,
    seed: u64,
    device: &Device,
    on_batch: &mut dyn FnMut(usize, usize),
) -> Result<(crate::models::SparseMlp, EpochReport), TrainError> {
    let order = permutation(data.len(), seed);
    let n_batches = order.len().div_ceil(cfg.batch_size.max(1));
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let mut total = 0.0;
    let mut batches = 0usize;
    let mut updates = Vec::new();
    for idx in order.chunks(cfg.batch_size.max(1)) {
        let (x, y) = data.batch(idx, device).map_err(TrainError::Data)?;
        let [b, c, h, w] = x.dims();
        let x = x.reshape([b, c * h * w]);
        let t = optim.steps() + 1;
        let lr = cfg.lr_at(optim.steps());
        let update = dst.as_ref().is_some_and(|d| d.is_update_step(t));
        let Some(d) = dst.as_deref_mut().filter(|_| update) else {
            let loss = loss_fn.forward(net.forward(x), y);
            total += finite_loss(&loss)? as f64;
            let grads = GradientsParams::from_grads(loss.backward(), &net);
            net = optim.step(lr, net, grads)?;
            batches += 1;
            on_batch(batches, n_batches);
            continue;
        };
        let ((n, changed), grads) = if d.is_streamed() {
            // O(nnz) update: the layers' inputs and output gradients, no dense product.
            let taps = net.taps(b);
            let (logits, inputs) = net.forward_tapped(x, &taps);
            let loss = loss_fn.forward(logits, y);
            total += finite_loss(&loss)? as f64;
            let raw = loss.backward();
            let tapped = crate::sparse_dst::read_taps(&inputs, &taps, &raw)?;
            drop(inputs);
            let mut grads = GradientsParams::from_grads(raw, &net);
            let out = d.update_streamed(t, net, &tapped, optim, &mut grads)?;
            (out, grads)
        } else {
            let probes = net.probes();
            let loss = loss_fn.forward(net.forward_probed(x, &probes), y);
            total += finite_loss(&loss)? as f64;
            let raw = loss.backward();
            let dense = probes
                .iter()
                .enumerate()
                .map(|(layer, p)| match p.grad(&raw) {
                    Some(g) => burn_sparse_mask::to_host(g).map_err(TrainError::Mask),
                    None => Err(TrainError::MissingProbeGradient { layer }),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let mut grads = GradientsParams::from_grads(raw, &net);
            let out = d.update(t, net, &dense, optim, &mut grads)?;
            (out, grads)
        };
        net = optim.step(lr, n, grads)?;
        updates.push(burn_sparse_mask::StepReport {
            step: t,
            changed: changed
                .into_iter()
                .enumerate()
                .map(|(i, c)| (format!("layers.{i}.weight"), c))
                .collect(),
        });
        batches += 1;
        on_batch(batches, n_batches);
    }
    Ok((
        net,
        EpochReport {
            loss: total / batches.max(1) as f64,
            updates,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::TrainConfig;

    #[test]
    fn constant_at_is_the_schedules_last_rate_or_the_named_one() {
        let cfg = TrainConfig {
            batch_size: 10,
            lr: 0.1,
            cosine_total_steps: Some(100),
        };
        // 0.1 * (1 + cos(pi * 99 / 100)) / 2 = 2.4672e-5.
        let c = cfg.constant_at(None, 99);
        assert!((c.lr - 0.05 * (1.0 + (std::f64::consts::PI * 0.99).cos())).abs() < 1e-15);
        assert!((c.lr - 2.4672e-5).abs() < 1e-8, "{}", c.lr);
        assert_eq!(c.lr_at(0), c.lr);
        assert_eq!(c.lr_at(5000), c.lr);
        assert_eq!(c.batch_size, 10);
        assert_eq!(cfg.constant_at(Some(0.01), 99).lr_at(3), 0.01);
    }
}
