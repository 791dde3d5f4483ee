//! The scores: magnitude, random, SNIP, GraSP, SynFlow. Each is a small [`Saliency`] impl.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, Param};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::GradientsParams;
use burn::tensor::{Int, Tensor, TensorData};
use burn_sparse_mask::{MaskError, MaskSet, SparseRng, WriteWeights, flat_grads, read_grads};

use crate::Saliency;
use crate::error::{Result, SaliencyError};

/// A labelled batch: images `[B, C, H, W]` and class targets `[B]`.
pub type Batch = (Tensor<4>, Tensor<1, Int>);

fn check_batch(method: &'static str, b: &Batch) -> Result<()> {
    if b.0.dims()[0] == 0 || b.1.dims()[0] == 0 {
        return Err(SaliencyError::EmptyBatch { method });
    }
    Ok(())
}

/// [`burn_sparse_mask::finite_loss`], said as this method's scoring loss.
fn finite(method: &'static str, loss: &Tensor<1>) -> Result<()> {
    match burn_sparse_mask::finite_loss(loss) {
        Ok(_) => Ok(()),
        Err(MaskError::NonFinite { value, .. }) => Err(SaliencyError::NonFiniteLoss {
            method,
            value: value as f32,
        }),
        Err(e) => Err(e.into()),
    }
}

/// Gradient of `loss(model)` with respect to every masked parameter, on the host.
fn grads_of<M: Module>(
    method: &'static str,
    model: &M,
    masks: &MaskSet,
    loss: Tensor<1>,
) -> Result<Vec<Vec<f32>>> {
    finite(method, &loss)?;
    let g = GradientsParams::from_grads(loss.backward(), model);
    Ok(read_grads(masks, model, &g)?)
}

/// `|w|`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Magnitude;

impl<M: Module> Saliency<M> for Magnitude {
    fn name(&self) -> &'static str {
        "magnitude"
    }
    fn scores(&mut self, model: &M, masks: &MaskSet) -> Result<Vec<Vec<f32>>> {
        Ok(masks
            .read_weights(model)?
            .into_iter()
            .map(|w| w.into_iter().map(f32::abs).collect())
            .collect())
    }
}

/// Uniform random scores from `SparseRng::derive(seed, [round, layer])`.
#[derive(Debug, Clone, Copy)]
pub struct RandomScore {
    /// The seed.
    pub seed: u64,
    round: u64,
}

impl RandomScore {
    /// Random scores with this seed.
    pub fn new(seed: u64) -> Self {
        Self { seed, round: 0 }
    }
}

impl<M: Module> Saliency<M> for RandomScore {
    fn name(&self) -> &'static str {
        "random"
    }
    fn scores(&mut self, _model: &M, masks: &MaskSet) -> Result<Vec<Vec<f32>>> {
        self.round += 1;
        Ok(masks
            .layers()
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let mut r = SparseRng::derive(self.seed, &[self.round, i as u64]);
                (0..l.numel()).map(|_| r.next_f32()).collect()
            })
            .collect())
    }
}

/// The sum of every score in `f64`, with eight independent accumulators (a sequential `f64` sum
/// is one long dependency chain: a third of a millisecond for LeNet-300-100's 266k scores).
fn sum_f64<L: AsRef<[f32]>>(layers: &[L]) -> f64 {
    let mut acc = [0f64; 8];
    let mut rest = 0f64;
    for l in layers {
        let mut c = l.as_ref().chunks_exact(8);
        for x in &mut c {
            for (a, &v) in acc.iter_mut().zip(x) {
                *a += v as f64;
            }
        }
        rest += c.remainder().iter().map(|&v| v as f64).sum::<f64>();
    }
    acc.iter().sum::<f64>() + rest
}

/// A loss of a model (on a fixed batch).
pub type LossFn<M> = Box<dyn Fn(&M) -> Tensor<1>>;

/// Cross-entropy of `forward(model, x) / temperature` against `y`.
pub fn cross_entropy_loss<M: 'static>(
    forward: impl Fn(&M, Tensor<4>) -> Tensor<2> + 'static,
    batch: Batch,
    temperature: f32,
) -> LossFn<M> {
    Box::new(move |m: &M| {
        let device = batch.0.device();
        let logits = forward(m, batch.0.clone());
        let logits = if temperature == 1.0 {
            logits
        } else {
            logits / temperature
        };
        CrossEntropyLossConfig::new()
            .init(&device)
            .forward(logits, batch.1.clone())
    })
}

/// SNIP (Lee et al. 2019, arXiv:1810.02340): `|dL/dw * w|` on one batch (or averaged over
/// several), normalised by its global sum.
pub struct Snip<M> {
    losses: Vec<LossFn<M>>,
}

impl<M: Module + 'static> Snip<M> {
    /// SNIP with cross-entropy on these batches (one is the paper's choice; several are
    /// averaged). `forward` maps a model and images to logits.
    ///
    /// # Errors
    /// [`SaliencyError::EmptyBatch`] for no batch or a batch without rows.
    pub fn cross_entropy(
        forward: impl Fn(&M, Tensor<4>) -> Tensor<2> + Clone + 'static,
        batches: Vec<Batch>,
    ) -> Result<Self> {
        if batches.is_empty() {
            return Err(SaliencyError::EmptyBatch { method: "snip" });
        }
        let mut losses = Vec::new();
        for b in batches {
            check_batch("snip", &b)?;
            losses.push(cross_entropy_loss(forward.clone(), b, 1.0));
        }
        Ok(Self { losses })
    }

    /// SNIP with arbitrary losses, one per batch.
    ///
    /// # Errors
    /// [`SaliencyError::EmptyBatch`] for no loss.
    pub fn from_losses(losses: Vec<LossFn<M>>) -> Result<Self> {
        if losses.is_empty() {
            return Err(SaliencyError::EmptyBatch { method: "snip" });
        }
        Ok(Self { losses })
    }
}

impl<M: Module> Saliency<M> for Snip<M> {
    fn name(&self) -> &'static str {
        "snip"
    }
    fn scores(&mut self, model: &M, masks: &MaskSet) -> Result<Vec<Vec<f32>>> {
        // |g * w| (summed over batches) on the device, then one read back per layer.
        let w = masks.device_weights(model)?;
        let mut acc: Option<Vec<Tensor<1>>> = None;
        for loss in &self.losses {
            let loss = loss(model);
            finite("snip", &loss)?;
            let g = GradientsParams::from_grads(loss.backward(), model);
            let s: Vec<Tensor<1>> = flat_grads(masks, model, &g)
                .into_iter()
                .zip(&w)
                .map(|(g, w)| (g * w.clone()).abs())
                .collect();
            acc = Some(match acc {
                None => s,
                Some(a) => a.into_iter().zip(s).map(|(a, s)| a + s).collect(),
            });
        }
        // The scores are read where the backend left them (no copy into a vector first: on the
        // CPU backend the tensor is handed over as is), summed, and written normalised into the
        // vectors returned.
        let data: Vec<TensorData> = acc
            .unwrap_or_default()
            .into_iter()
            .map(|t| t.inner().into_data().convert::<f32>())
            .collect();
        let slices: Vec<&[f32]> = data
            .iter()
            .map(|d| {
                d.as_slice::<f32>()
                    .map_err(|e| MaskError::Data(format!("{e:?}")).into())
            })
            .collect::<Result<_>>()?;
        let total = sum_f64(&slices);
        let norm = if total > 0.0 {
            (1.0 / total) as f32
        } else {
            1.0
        };
        Ok(slices
            .iter()
            .map(|s| s.iter().map(|&x| x * norm).collect())
            .collect())
    }
}

/// Add `scale * v` to the masked parameters of `model` (host vectors in layer order).
fn perturbed<M: Module>(
    model: &M,
    masks: &MaskSet,
    w: &[Vec<f32>],
    v: &[Vec<f32>],
    scale: f32,
) -> M {
    let values: HashMap<_, _> = masks
        .layers()
        .iter()
        .zip(w.iter().zip(v))
        .map(|(l, (w, v))| {
            (
                l.param().id,
                w.iter().zip(v).map(|(w, v)| w + scale * v).collect(),
            )
        })
        .collect();
    model.clone().map(&mut WriteWeights { values })
}

/// The Hessian-vector product `H v` of `loss` at `model`'s masked weights, by a central finite
/// difference of gradients: `(g(w + eps v) - g(w - eps v)) / (2 eps)`. burn 0.22's autodiff
/// has no double backward (no `create_graph`), so this replaces GraSP's double backprop; for a
/// quadratic loss it is exact up to rounding.
///
/// # Errors
/// A non-finite loss, or gradients that cannot be read.
pub fn hessian_vector_product<M: Module>(
    model: &M,
    masks: &MaskSet,
    loss: &dyn Fn(&M) -> Tensor<1>,
    v: &[Vec<f32>],
    eps: f32,
) -> Result<Vec<Vec<f32>>> {
    let w = masks.read_weights(model)?;
    let plus = perturbed(model, masks, &w, v, eps);
    let minus = perturbed(model, masks, &w, v, -eps);
    let gp = grads_of("hvp", &plus, masks, loss(&plus))?;
    let gm = grads_of("hvp", &minus, masks, loss(&minus))?;
    Ok(gp
        .iter()
        .zip(&gm)
        .map(|(a, b)| {
            a.iter()
                .zip(b)
                .map(|(a, b)| (a - b) / (2.0 * eps))
                .collect()
        })
        .collect())
}

/// GraSP (Wang et al. 2020, arXiv:2002.07376): score `-w * (H g)`, and the **highest** scores
/// are removed, as in the reference. The loss is cross-entropy of `logits / temperature`
/// (reference: T = 200) on a batch of a few samples per class (reference: 10). `H g` is a
/// central finite difference ([`hessian_vector_product`]) with step
/// `eps = rel_eps * ||w|| / ||g||` (default `rel_eps = 1e-2`, so the weights move by 1% of
/// their norm).
pub struct Grasp<M> {
    loss: LossFn<M>,
    /// Relative finite-difference step (1e-2).
    pub rel_eps: f32,
}

impl<M: Module + 'static> Grasp<M> {
    /// GraSP with cross-entropy at `temperature` (the reference: 200) on `batch`.
    ///
    /// # Errors
    /// [`SaliencyError::EmptyBatch`], or a non-positive temperature.
    pub fn cross_entropy(
        forward: impl Fn(&M, Tensor<4>) -> Tensor<2> + 'static,
        batch: Batch,
        temperature: f32,
    ) -> Result<Self> {
        check_batch("grasp", &batch)?;
        if temperature.is_nan() || temperature <= 0.0 {
            return Err(SaliencyError::InvalidConfig {
                field: "temperature",
                message: format!("{temperature} must be positive"),
            });
        }
        Ok(Self {
            loss: cross_entropy_loss(forward, batch, temperature),
            rel_eps: 1e-2,
        })
    }

    /// GraSP with an arbitrary loss.
    pub fn from_loss(loss: LossFn<M>) -> Self {
        Self {
            loss,
            rel_eps: 1e-2,
        }
    }
}

impl<M: Module> Saliency<M> for Grasp<M> {
    fn name(&self) -> &'static str {
        "grasp"
    }
    fn scores(&mut self, model: &M, masks: &MaskSet) -> Result<Vec<Vec<f32>>> {
        if self.rel_eps.is_nan() || self.rel_eps <= 0.0 {
            return Err(SaliencyError::InvalidConfig {
                field: "rel_eps",
                message: "must be positive".into(),
            });
        }
        let w = masks.read_weights(model)?;
        let g = grads_of("grasp", model, masks, (self.loss)(model))?;
        let norm = |v: &[Vec<f32>]| -> f64 {
            v.iter()
                .flatten()
                .map(|&x| (x as f64) * (x as f64))
                .sum::<f64>()
                .sqrt()
        };
        let (nw, ng) = (norm(&w), norm(&g));
        if ng == 0.0 || !ng.is_finite() {
            return Ok(w.iter().map(|l| vec![0.0; l.len()]).collect());
        }
        let eps = (self.rel_eps as f64 * nw.max(1e-12) / ng) as f32;
        let hg = hessian_vector_product(model, masks, &*self.loss, &g, eps)?;
        // Reference score s = -w * Hg, highest removed: keep the highest of -s = w * Hg.
        Ok(w.iter()
            .zip(&hg)
            .map(|(w, h)| w.iter().zip(h).map(|(w, h)| w * h).collect())
            .collect())
    }
}

struct Abs;
impl ModuleMapper for Abs {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, t, mapper) = param.consume();
        let rg = t.is_autodiff() && t.is_require_grad();
        let ad = t.is_autodiff();
        let a = t.inner().abs();
        let a = if ad { Tensor::from_inner(a) } else { a };
        let a = if rg { a.require_grad() } else { a };
        Param::from_mapped_value(id, a, mapper)
    }
    /// Norm layers in eval mode (running statistics, as the paper evaluates SynFlow), while
    /// autodiff still runs: with one all-ones input, batch statistics would zero every
    /// activation.
    fn map_flag(&mut self, flag: Param<burn::module::Flag>) -> Param<burn::module::Flag> {
        flag.with_value(false)
    }
}

/// SynFlow (Tanaka et al. 2020, arXiv:2006.05467): data-free. With every parameter replaced by
/// its absolute value and an all-ones input, `R = sum(f(1))`, and the score is `|w * dR/dw|`.
/// Norm layers (burn's `BatchNorm`) run in eval mode for it, on their running statistics, as in
/// the paper: their training flags are switched off on the scored copy only.
/// Run it iteratively ([`crate::PruneConfig::rounds`], default 100 for SynFlow) on the
/// exponential schedule; the original signed weights are restored at the end.
pub struct SynFlow<F> {
    forward: F,
    input: [usize; 3],
}

impl<F> SynFlow<F> {
    /// SynFlow for inputs of shape `[C, H, W]`.
    pub fn new(forward: F, input: [usize; 3]) -> Self {
        Self { forward, input }
    }
}

impl<M: Module, F: Fn(&M, Tensor<4>) -> Tensor<2>> Saliency<M> for SynFlow<F> {
    fn name(&self) -> &'static str {
        "synflow"
    }
    fn scores(&mut self, model: &M, masks: &MaskSet) -> Result<Vec<Vec<f32>>> {
        let abs = model.clone().map(&mut Abs);
        let device = masks
            .layers()
            .first()
            .map(|l| l.device_mask().device())
            .unwrap_or_default();
        let device = if model.devices().iter().any(|d| d.is_autodiff()) {
            device.autodiff()
        } else {
            device
        };
        let [c, h, w] = self.input;
        let x = Tensor::<4>::ones([1, c, h, w], &device);
        let r = (self.forward)(&abs, x).sum();
        let wa = masks.read_weights(&abs)?;
        let g = grads_of("synflow", &abs, masks, r)?;
        Ok(wa
            .iter()
            .zip(&g)
            .map(|(w, g)| w.iter().zip(g).map(|(w, g)| (w * g).abs()).collect())
            .collect())
    }
}
