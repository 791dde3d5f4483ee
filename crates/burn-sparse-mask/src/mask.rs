//! `MaskSet`: one boolean mask per prunable parameter, stored as exact zeros in the weights.

use std::collections::HashMap;
use std::fmt;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::{Device, GradientCheckpointingStrategy, Tensor, TensorData};

use crate::error::{MaskError, Result};
use crate::params::{ParamFilter, ParamInfo, param_devices, param_infos};

/// The mask of one prunable parameter.
#[derive(Debug, Clone)]
pub struct LayerMask {
    info: ParamInfo,
    bits: Vec<bool>,
    nnz: usize,
    /// The mask as 0/1 floats on the parameter's device (without autodiff), flattened.
    device_mask: Tensor<1>,
}

impl LayerMask {
    /// The parameter this mask covers.
    pub fn param(&self) -> &ParamInfo {
        &self.info
    }
    /// The mask, flattened row-major: `true` keeps the weight.
    pub fn bits(&self) -> &[bool] {
        &self.bits
    }
    /// Number of kept weights.
    pub fn nnz(&self) -> usize {
        self.nnz
    }
    /// Number of weights.
    pub fn numel(&self) -> usize {
        self.bits.len()
    }
    /// Kept / total.
    pub fn density(&self) -> f64 {
        if self.bits.is_empty() {
            1.0
        } else {
            self.nnz as f64 / self.bits.len() as f64
        }
    }
    /// Zeros / total.
    pub fn sparsity(&self) -> f64 {
        1.0 - self.density()
    }
    /// The mask as a flat float tensor of 0 and 1 on the parameter's device (no autodiff).
    pub fn device_mask(&self) -> &Tensor<1> {
        &self.device_mask
    }
}

/// Per-layer figures of a [`MaskSet`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LayerStats {
    /// Parameter path.
    pub path: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Kept weights.
    pub nnz: usize,
    /// All weights.
    pub numel: usize,
    /// `nnz / numel`.
    pub density: f64,
}

/// One boolean mask per prunable parameter of a model, keyed by [`ParamId`] and path.
///
/// Masks are applied as exact zeros in the weights ([`MaskSet::apply`]): the forward pass runs
/// the unmodified layers, and the gradient burn returns for a masked weight is the dense
/// gradient `dL/dW`, which RigL grows by. The sparse optimizers keep those zeros exact.
#[derive(Debug, Clone)]
pub struct MaskSet {
    layers: Vec<LayerMask>,
    index: HashMap<ParamId, usize>,
}

/// The 0/1 float mask of `bits` on `device`, and how many bits are set (one pass over them).
fn device_mask(bits: &[bool], device: &Device) -> (Tensor<1>, usize) {
    // Counted in 32-bit blocks so that the sum vectorises.
    let nnz: usize = bits
        .chunks(1 << 20)
        .map(|c| c.iter().map(|&b| u32::from(b)).sum::<u32>() as usize)
        .sum();
    if nnz == bits.len() {
        // All ones (every dense mask): filled on the device, nothing converted on the host.
        return (Tensor::<1>::ones([bits.len()], device).inner(), nnz);
    }
    let data: Vec<f32> = bits.iter().map(|&b| f32::from(u8::from(b))).collect();
    (
        Tensor::<1>::from_data(TensorData::new(data, [bits.len()]), device).inner(),
        nnz,
    )
}

impl MaskSet {
    /// A set with no masked parameter: a [`SparseOptimizer`](crate::SparseOptimizer) over it
    /// steps every parameter densely, which is what a model of truly sparse layers needs (their
    /// values are a dense vector of non-zeros; the pattern lives in the layer).
    pub fn empty() -> Self {
        Self {
            layers: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// An all-ones mask over the parameters of `model` that `filter` selects.
    ///
    /// # Errors
    /// As [`ParamFilter::select`].
    pub fn dense<M: Module>(model: &M, filter: &ParamFilter) -> Result<Self> {
        let params = filter.select(model)?;
        let bits = params.iter().map(|p| vec![true; p.numel()]).collect();
        Self::from_bits(model, params, bits)
    }

    /// Masks from flat boolean vectors, one per parameter (row-major, burn's layout).
    ///
    /// # Errors
    /// [`MaskError::ShapeMismatch`] if a vector's length differs from its parameter's size,
    /// [`MaskError::ModelMismatch`] if a parameter is not in `model`,
    /// [`MaskError::EmptyPrunableSet`] for no parameter.
    pub fn from_bits<M: Module>(
        model: &M,
        params: Vec<ParamInfo>,
        bits: Vec<Vec<bool>>,
    ) -> Result<Self> {
        if params.is_empty() {
            return Err(MaskError::EmptyPrunableSet("no parameter given".into()));
        }
        if params.len() != bits.len() {
            return Err(MaskError::ModelMismatch(format!(
                "{} parameters but {} masks",
                params.len(),
                bits.len()
            )));
        }
        let all = param_infos(model);
        for p in &params {
            match all.iter().find(|q| q.id == p.id) {
                Some(q) if q.shape == p.shape => {}
                Some(q) => {
                    return Err(MaskError::ShapeMismatch {
                        param: p.path.clone(),
                        mask: p.shape.clone(),
                        weight: q.shape.clone(),
                    });
                }
                None => {
                    return Err(MaskError::ModelMismatch(format!(
                        "parameter `{}` ({}) is not in the model",
                        p.path, p.id
                    )));
                }
            }
        }
        let devices = param_devices(model);
        let mut layers = Vec::with_capacity(params.len());
        for (info, b) in params.into_iter().zip(bits) {
            if b.len() != info.numel() {
                return Err(MaskError::ShapeMismatch {
                    param: info.path.clone(),
                    mask: vec![b.len()],
                    weight: info.shape.clone(),
                });
            }
            let device = devices.get(&info.id).cloned().unwrap_or_default();
            let (device_mask, nnz) = device_mask(&b, &device);
            layers.push(LayerMask {
                info,
                bits: b,
                nnz,
                device_mask,
            });
        }
        let index = layers
            .iter()
            .enumerate()
            .map(|(i, l)| (l.info.id, i))
            .collect();
        Ok(Self { layers, index })
    }

    /// The same masks bound to another instance of the architecture (for example a fresh
    /// initialisation, or a model loaded from a record), matched by parameter path.
    ///
    /// # Errors
    /// [`MaskError::UnknownParam`] or [`MaskError::ShapeMismatch`] if `model` lacks a path or
    /// has another shape there.
    pub fn rebind<M: Module>(&self, model: &M) -> Result<Self> {
        Self::from_paths(
            model,
            self.layers
                .iter()
                .map(|l| (l.info.path.clone(), l.bits.clone()))
                .collect(),
        )
    }

    /// Masks for `model` given by parameter path (flat, row-major).
    ///
    /// # Errors
    /// [`MaskError::UnknownParam`] for a path `model` lacks, [`MaskError::ShapeMismatch`] for a
    /// wrong length.
    pub fn from_paths<M: Module>(model: &M, masks: Vec<(String, Vec<bool>)>) -> Result<Self> {
        let all = param_infos(model);
        let mut params = Vec::with_capacity(masks.len());
        let mut bits = Vec::with_capacity(masks.len());
        for (path, b) in masks {
            let p = all
                .iter()
                .find(|q| q.path == path)
                .ok_or_else(|| MaskError::UnknownParam {
                    name: path.clone(),
                    known: all
                        .iter()
                        .map(|q| q.path.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
            params.push(p.clone());
            bits.push(b);
        }
        Self::from_bits(model, params, bits)
    }

    /// The layer masks, in the model's parameter order.
    pub fn layers(&self) -> &[LayerMask] {
        &self.layers
    }

    /// The prunable parameters.
    pub fn params(&self) -> Vec<ParamInfo> {
        self.layers.iter().map(|l| l.info.clone()).collect()
    }

    /// The mask of the parameter with this id, if it is prunable.
    pub fn get(&self, id: ParamId) -> Option<&LayerMask> {
        self.index.get(&id).map(|&i| &self.layers[i])
    }

    /// The position of a layer by path.
    ///
    /// # Errors
    /// [`MaskError::UnknownParam`] listing the prunable paths.
    pub fn position(&self, path: &str) -> Result<usize> {
        self.layers
            .iter()
            .position(|l| l.info.path == path)
            .ok_or_else(|| MaskError::UnknownParam {
                name: path.to_string(),
                known: self
                    .layers
                    .iter()
                    .map(|l| l.info.path.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// The mask of a parameter by path.
    ///
    /// # Errors
    /// [`MaskError::UnknownParam`] listing the prunable paths.
    pub fn layer(&self, path: &str) -> Result<&LayerMask> {
        Ok(&self.layers[self.position(path)?])
    }

    /// Replace the mask of layer `i` (its position in [`MaskSet::layers`]).
    ///
    /// # Errors
    /// [`MaskError::ShapeMismatch`] for a wrong length.
    ///
    /// # Panics
    /// If `i` is out of range (a programmer error; use [`MaskSet::position`]).
    pub fn set_bits(&mut self, i: usize, bits: Vec<bool>) -> Result<()> {
        let layer = &mut self.layers[i];
        if bits.len() != layer.bits.len() {
            return Err(MaskError::ShapeMismatch {
                param: layer.info.path.clone(),
                mask: vec![bits.len()],
                weight: layer.info.shape.clone(),
            });
        }
        let device = layer.device_mask.device();
        (layer.device_mask, layer.nnz) = device_mask(&bits, &device);
        layer.bits = bits;
        Ok(())
    }

    /// Replace the mask of a parameter by path.
    ///
    /// # Errors
    /// Unknown path or wrong length.
    pub fn set_layer(&mut self, path: &str, bits: Vec<bool>) -> Result<()> {
        let i = self.position(path)?;
        self.set_bits(i, bits)
    }

    /// Kept weights over all prunable parameters.
    pub fn nnz(&self) -> usize {
        self.layers.iter().map(|l| l.nnz).sum()
    }
    /// All prunable weights.
    pub fn numel(&self) -> usize {
        self.layers.iter().map(|l| l.bits.len()).sum()
    }
    /// Total density over the prunable parameters.
    pub fn density(&self) -> f64 {
        self.nnz() as f64 / self.numel().max(1) as f64
    }
    /// Total sparsity over the prunable parameters.
    pub fn sparsity(&self) -> f64 {
        1.0 - self.density()
    }

    /// Per-layer figures.
    pub fn stats(&self) -> Vec<LayerStats> {
        self.layers
            .iter()
            .map(|l| LayerStats {
                path: l.info.path.clone(),
                shape: l.info.shape.clone(),
                nnz: l.nnz,
                numel: l.numel(),
                density: l.density(),
            })
            .collect()
    }

    /// Move the device masks to `device`.
    pub fn to_device(mut self, device: &Device) -> Self {
        for l in &mut self.layers {
            l.device_mask = l.device_mask.clone().to_device(device).inner();
        }
        self
    }

    /// Write the masks into `model` as exact zeros (one multiply per prunable weight). Other
    /// parameters, ids and autodiff settings are unchanged.
    pub fn apply<M: Module>(&self, model: M) -> M {
        model.map(&mut ApplyMasks { masks: self })
    }

    /// Check that `model` has every masked parameter, with the same shape.
    ///
    /// # Errors
    /// [`MaskError::ModelMismatch`] or [`MaskError::ShapeMismatch`].
    pub fn check_model<M: Module>(&self, model: &M) -> Result<()> {
        let all = param_infos(model);
        for l in &self.layers {
            match all.iter().find(|q| q.id == l.info.id) {
                Some(q) if q.shape == l.info.shape => {}
                Some(q) => {
                    return Err(MaskError::ShapeMismatch {
                        param: l.info.path.clone(),
                        mask: l.info.shape.clone(),
                        weight: q.shape.clone(),
                    });
                }
                None => {
                    return Err(MaskError::ModelMismatch(format!(
                        "parameter `{}` ({}) is not in the model",
                        l.info.path, l.info.id
                    )));
                }
            }
        }
        Ok(())
    }

    /// Check that every masked weight of `model` is exactly 0: the invariant every training
    /// loop of the workspace checks after training.
    ///
    /// # Errors
    /// [`MaskError::ModelMismatch`] naming how many are not and the first such layer, or
    /// [`MaskError::Data`] if a weight cannot be read back.
    pub fn ensure_masked<M: Module>(&self, model: &M) -> Result<()> {
        let v = self.violations(model)?;
        let bad: usize = v.iter().map(|(_, n)| n).sum();
        match v.iter().find(|(_, n)| *n > 0) {
            None => Ok(()),
            Some((layer, _)) => Err(MaskError::ModelMismatch(format!(
                "{bad} masked weights are non-zero (the first in `{layer}`)"
            ))),
        }
    }

    /// Count, per layer, the weights of `model` that are non-zero where the mask is false.
    /// A correctly masked model gives all zeros. Reads the weights back to the host.
    ///
    /// # Errors
    /// [`MaskError::Data`] if a weight cannot be read back.
    pub fn violations<M: Module>(&self, model: &M) -> Result<Vec<(String, usize)>> {
        let weights = self.read_weights(model)?;
        Ok(self
            .layers
            .iter()
            .zip(weights)
            .map(|(l, w)| {
                let bad = l
                    .bits
                    .iter()
                    .zip(&w)
                    .filter(|(keep, v)| !**keep && **v != 0.0)
                    .count();
                (l.info.path.clone(), bad)
            })
            .collect())
    }

    /// The masked parameters' current values, flattened, as device tensors in layer order
    /// (without autodiff), for scores computed on the device before one read back.
    ///
    /// # Errors
    /// [`MaskError::ModelMismatch`] if a masked parameter is not in `model`.
    pub fn device_weights<M: Module>(&self, model: &M) -> Result<Vec<Tensor<1>>> {
        struct Reader<'a> {
            masks: &'a MaskSet,
            out: Vec<Option<Tensor<1>>>,
        }
        impl ModuleVisitor for Reader<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                if let Some(&i) = self.masks.index.get(&param.id) {
                    let n = self.masks.layers[i].numel();
                    self.out[i] = Some(param.val().inner().reshape([n]));
                }
            }
        }
        let mut r = Reader {
            masks: self,
            out: vec![None; self.layers.len()],
        };
        model.visit(&mut r);
        r.out
            .into_iter()
            .zip(&self.layers)
            .map(|(w, l)| {
                w.ok_or_else(|| {
                    MaskError::ModelMismatch(format!("`{}` is not in the model", l.info.path))
                })
            })
            .collect()
    }

    /// The current weights of every masked parameter, flattened, in layer order.
    ///
    /// # Errors
    /// [`MaskError::Data`] if a weight cannot be read back.
    pub fn read_weights<M: Module>(&self, model: &M) -> Result<Vec<Vec<f32>>> {
        self.device_weights(model)?
            .into_iter()
            .map(to_host)
            .collect()
    }

    /// The sparse fan-in initialisation (Evci et al. 2022, arXiv:2010.03533): every unit's kept
    /// weights are multiplied by `sqrt(n / f)`, where `n` is its dense fan-in and `f` its
    /// number of kept inputs, so a unit with few inputs keeps the output scale the dense
    /// initialisation gives it. A unit is an output column of a rank-2 weight (burn's `Linear`
    /// is `[d_in, d_out]`: `n = d_in`) or an output channel of a convolution `[out, in, k..]`
    /// (`n = in * k..`). Exact for initialisations whose scale is proportional to
    /// `1 / sqrt(fan_in)` (burn's default Kaiming-uniform, He, LeCun): the weights are then
    /// those of the dense initialisation with fan-in `f`. Units with no kept input, and rank-0
    /// and rank-1 parameters, are left as they are. Deterministic (no random draw).
    ///
    /// # Errors
    /// [`MaskError::ModelMismatch`] if `model` lacks a masked parameter, [`MaskError::Data`] if
    /// a weight cannot be read back.
    pub fn sparse_fan_in<M: Module>(&self, model: M) -> Result<M> {
        let weights = self.read_weights(&model)?;
        let mut values = HashMap::new();
        for (l, mut w) in self.layers.iter().zip(weights) {
            let shape = &l.info.shape;
            if shape.len() < 2 {
                continue;
            }
            let bits = l.bits();
            // (number of units, dense fan-in per unit)
            let (units, fan_in): (usize, usize) = if shape.len() == 2 {
                (shape[1], shape[0])
            } else {
                (shape[0], shape[1..].iter().product())
            };
            let unit = |i: usize| {
                if shape.len() == 2 {
                    i % units
                } else {
                    i / fan_in
                }
            };
            let mut kept = vec![0usize; units];
            for (i, &b) in bits.iter().enumerate() {
                if b {
                    kept[unit(i)] += 1;
                }
            }
            let scale: Vec<f64> = kept
                .iter()
                .map(|&f| {
                    if f == 0 {
                        1.0
                    } else {
                        (fan_in as f64 / f as f64).sqrt()
                    }
                })
                .collect();
            for (i, x) in w.iter_mut().enumerate() {
                if bits[i] {
                    *x = (f64::from(*x) * scale[unit(i)]) as f32;
                }
            }
            values.insert(l.info.id, w);
        }
        Ok(model.map(&mut crate::optim::WriteWeights { values }))
    }
}

impl fmt::Display for MaskSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<28} {:>18} {:>10} {:>10} {:>8}",
            "layer", "shape", "nnz", "numel", "density"
        )?;
        for s in self.stats() {
            writeln!(
                f,
                "{:<28} {:>18} {:>10} {:>10} {:>7.2}%",
                s.path,
                format!("{:?}", s.shape),
                s.nnz,
                s.numel,
                100.0 * s.density
            )?;
        }
        write!(
            f,
            "{:<28} {:>18} {:>10} {:>10} {:>7.2}%",
            "total",
            "",
            self.nnz(),
            self.numel(),
            100.0 * self.density()
        )
    }
}

/// The autodiff settings of a parameter tensor, kept across an update on the inner backend.
pub(crate) struct TensorContext {
    autodiff: bool,
    require_grad: bool,
    distributed: bool,
    checkpointing: Option<GradientCheckpointingStrategy>,
}

impl TensorContext {
    pub(crate) fn capture<const D: usize>(t: &Tensor<D>) -> Self {
        if !t.is_autodiff() {
            return Self {
                autodiff: false,
                require_grad: false,
                distributed: false,
                checkpointing: None,
            };
        }
        Self {
            autodiff: t.is_autodiff(),
            require_grad: t.is_require_grad(),
            distributed: t.is_distributed(),
            checkpointing: t.gradient_checkpointing_strategy(),
        }
    }

    pub(crate) fn restore<const D: usize>(self, updated: Tensor<D>, id: ParamId) -> Tensor<D> {
        if !self.autodiff {
            return updated.inner();
        }
        let mut t = Tensor::from_inner(updated.inner());
        if let Some(s) = self.checkpointing {
            t = t.with_gradient_checkpointing_strategy(s);
        }
        if self.require_grad {
            t = t.require_grad();
        }
        if self.distributed {
            t = t.set_distributed(id);
        }
        t
    }
}

pub(crate) fn reshape_mask<const D: usize>(m: &Tensor<1>, like: &Tensor<D>) -> Tensor<D> {
    let dims: [usize; D] = like.dims();
    let m = m.clone().reshape(dims);
    if m.device() != like.device() {
        m.to_device(&like.device())
    } else {
        m
    }
}

struct ApplyMasks<'a> {
    masks: &'a MaskSet,
}

impl ModuleMapper for ApplyMasks<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(layer) = self.masks.get(param.id) else {
            return param;
        };
        let (id, tensor, mapper) = param.consume();
        let ctx = TensorContext::capture(&tensor);
        let inner = tensor.inner();
        let m = reshape_mask(layer.device_mask(), &inner);
        Param::from_mapped_value(id, ctx.restore(inner * m, id), mapper)
    }
}

/// Read a float tensor back to the host as a flat `Vec<f32>`.
///
/// # Errors
/// [`MaskError::Data`] if the read fails.
pub fn to_host<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.inner()
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| MaskError::Data(format!("{e:?}")))
}
