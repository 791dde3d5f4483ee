//! The sparse-aware optimizer with editable, `ParamId`-keyed state.

use std::collections::HashMap;
use std::path::Path;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::rule::Rule;
use super::topology::{LayerView, TopologyChange, TopologyUpdater};
use crate::checkpoint::{Archive, Blob};
use crate::error::{MaskError, Result};
use crate::mask::{MaskSet, TensorContext, reshape_mask, to_host};
use crate::params::{ParamInfo, param_devices, param_infos};

/// The optimizer state of one parameter: its slots (flattened) and its step count.
#[derive(Debug, Clone)]
pub struct ParamState {
    /// State tensors in [`Rule::slot_names`] order, flattened, on the parameter's device.
    pub slots: Vec<Tensor<1>>,
    /// Number of steps this parameter has taken (Adam's bias correction).
    pub time: u64,
}

/// What the last [`SparseOptimizer::step`] did to the topology.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// The step (1-based).
    pub step: u64,
    /// Per layer path, connections dropped and regrown, or removed by a pruning updater (0 for
    /// steps without an update).
    pub changed: Vec<(String, usize)>,
}

/// SGD or Adam whose state is keyed by [`ParamId`], editable, and masked, with an optional
/// [`TopologyUpdater`] that changes the masks inside `step` (dynamic sparse training).
///
/// ```no_run
/// # use burn::module::Module;
/// # use burn::optim::GradientsParams;
/// # use burn_sparse_mask::prelude::*;
/// # fn demo<M: Module>(model: M, grads: GradientsParams) -> burn_sparse_mask::Result<M> {
/// let masks = MaskSet::dense(&model, &ParamFilter::new())?;
/// let mut optim = SparseOptimizer::new(SgdRule::default(), masks)?;
/// let model = optim.step(0.1, model, grads)?; // masked weights stay exactly 0
/// # Ok(model) }
/// ```
pub struct SparseOptimizer {
    rule: Rule,
    masks: MaskSet,
    state: HashMap<ParamId, ParamState>,
    step: u64,
    updater: Option<Box<dyn TopologyUpdater>>,
    pending_updater_state: Option<serde_json::Value>,
    last_report: Option<StepReport>,
}

impl std::fmt::Debug for SparseOptimizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SparseOptimizer")
            .field("rule", &self.rule)
            .field("step", &self.step)
            .field("density", &self.masks.density())
            .field(
                "updater",
                &self.updater.as_ref().map(|u| u.name().to_string()),
            )
            .finish()
    }
}

impl SparseOptimizer {
    /// An optimizer with `rule` over the masks `masks`.
    ///
    /// # Errors
    /// [`MaskError::InvalidConfig`] for an out-of-range hyperparameter.
    pub fn new(rule: impl Into<Rule>, masks: MaskSet) -> Result<Self> {
        let rule = rule.into();
        rule.validate()?;
        Ok(Self {
            rule,
            masks,
            state: HashMap::new(),
            step: 0,
            updater: None,
            pending_updater_state: None,
            last_report: None,
        })
    }

    /// Attach a topology updater (RigL, SET, SNFS ...). If this optimizer was loaded from a
    /// checkpoint, the updater's saved state is restored into it.
    ///
    /// # Errors
    /// When the saved updater state does not fit this updater.
    pub fn with_updater(mut self, mut updater: Box<dyn TopologyUpdater>) -> Result<Self> {
        if let Some(s) = self.pending_updater_state.take() {
            updater.load_state(&s)?;
        }
        self.updater = Some(updater);
        Ok(self)
    }

    /// The masks.
    pub fn masks(&self) -> &MaskSet {
        &self.masks
    }
    /// The update rule.
    pub fn rule(&self) -> &Rule {
        &self.rule
    }
    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }
    /// The state of a parameter, if it has taken a step.
    pub fn state(&self, id: ParamId) -> Option<&ParamState> {
        self.state.get(&id)
    }
    /// What the last step did to the topology.
    pub fn last_report(&self) -> Option<&StepReport> {
        self.last_report.as_ref()
    }
    /// The attached updater.
    pub fn updater(&self) -> Option<&dyn TopologyUpdater> {
        self.updater.as_deref()
    }

    /// Forget all optimizer state (for example between IMP levels). Masks and the step count
    /// stay.
    pub fn reset_state(&mut self) {
        self.state.clear();
    }

    /// Zero the state of parameter `id` where `keep` is false.
    ///
    /// # Errors
    /// [`MaskError::ShapeMismatch`] if `keep` has the wrong length.
    pub fn reset_state_where(&mut self, id: ParamId, keep: &[bool]) -> Result<()> {
        if let Some(st) = self.state.get_mut(&id) {
            for s in &mut st.slots {
                let n = s.dims()[0];
                if n != keep.len() {
                    return Err(MaskError::ShapeMismatch {
                        param: id.to_string(),
                        mask: vec![keep.len()],
                        weight: vec![n],
                    });
                }
                let m: Vec<f32> = keep.iter().map(|&b| f32::from(u8::from(b))).collect();
                let m = Tensor::<1>::from_data(TensorData::new(m, [n]), &s.device()).inner();
                *s = s.clone() * m;
            }
        }
        Ok(())
    }

    /// Replace the masks (for example after an IMP pruning level), write them into `model`,
    /// and mask the optimizer state accordingly.
    ///
    /// # Errors
    /// [`MaskError::ModelMismatch`]/[`MaskError::ShapeMismatch`] if `masks` do not fit `model`.
    pub fn set_masks<M: Module>(&mut self, masks: MaskSet, model: M) -> Result<M> {
        masks.check_model(&model)?;
        self.masks = masks;
        self.mask_state();
        Ok(self.masks.apply(model))
    }

    fn mask_state(&mut self) {
        for l in self.masks.layers() {
            if let Some(st) = self.state.get_mut(&l.param().id) {
                for s in &mut st.slots {
                    *s = s.clone() * l.device_mask().clone().to_device(&s.device());
                }
            }
        }
    }

    /// One optimizer step. On an update step of the attached [`TopologyUpdater`], the topology
    /// is updated first from this step's dense gradients.
    ///
    /// # Errors
    /// An updater error, or an update that changed the number of kept weights (or, for a
    /// pruning updater, revived a pruned one). Masks and state
    /// are then unchanged, but `model` has been consumed: clone it first (a cheap handle copy)
    /// to continue after an error, as [`SparseHandle`](super::SparseHandle) does.
    pub fn step<M: Module>(&mut self, lr: f64, model: M, mut grads: GradientsParams) -> Result<M> {
        let t = self.step + 1;
        let mut model = model;
        let mut report = StepReport {
            step: t,
            changed: Vec::new(),
        };
        if self.updater.as_ref().is_some_and(|u| u.observes(t)) {
            let flat = flat_grads(&self.masks, &model, &grads);
            if let Some(u) = self.updater.as_mut() {
                u.observe(t, &flat)?;
            }
        }
        let update_now = self.updater.as_ref().is_some_and(|u| u.is_update_step(t));
        if update_now {
            let (new_model, changed) = self.update_topology(t, model, &grads)?;
            model = new_model;
            report.changed = changed;
            if self
                .updater
                .as_ref()
                .is_some_and(|u| u.skip_weight_update())
            {
                self.step = t;
                self.last_report = Some(report);
                return Ok(model);
            }
        }
        let model = model.map(&mut StepMapper {
            rule: &self.rule,
            lr,
            masks: &self.masks,
            state: &mut self.state,
            grads: &mut grads,
        });
        self.step = t;
        self.last_report = Some(report);
        Ok(model)
    }

    fn update_topology<M: Module>(
        &mut self,
        t: u64,
        model: M,
        grads: &GradientsParams,
    ) -> Result<(M, Vec<(String, usize)>)> {
        let updater = self.updater.as_mut().expect("checked by the caller");
        let weights = self.masks.read_weights(&model)?;
        let grads_host = if updater.needs_grads() {
            Some(read_grads(&self.masks, &model, grads)?)
        } else {
            None
        };
        let momentum = if updater.needs_momentum() {
            let mut out = Vec::new();
            for l in self.masks.layers() {
                out.push(
                    match self.state.get(&l.param().id).and_then(|s| s.slots.first()) {
                        Some(s) => Some(to_host(s.clone())?),
                        None => None,
                    },
                );
            }
            Some(out)
        } else {
            None
        };
        let views: Vec<LayerView<'_>> = self
            .masks
            .layers()
            .iter()
            .enumerate()
            .map(|(i, l)| LayerView {
                param: l.param(),
                mask: l.bits(),
                weights: &weights[i],
                grads: grads_host.as_ref().map(|g| g[i].as_slice()),
                momentum: momentum.as_ref().and_then(|m| m[i].as_deref()),
            })
            .collect();
        let Some(change) = updater.update(t, &views)? else {
            return Ok((model, Vec::new()));
        };
        drop(views);
        self.validate_change(&change)?;
        let changed = self
            .masks
            .layers()
            .iter()
            .zip(&change.changed)
            .map(|(l, &c)| (l.param().path.clone(), c))
            .collect();
        let TopologyChange {
            masks,
            grown_values,
            ..
        } = change;
        let mut overrides: HashMap<ParamId, Vec<f32>> = HashMap::new();
        for (i, bits) in masks.into_iter().enumerate() {
            let values = grown_values.get(i).filter(|v| !v.is_empty());
            if let Some(values) = values {
                let mut w: Vec<f32> = weights[i]
                    .iter()
                    .zip(&bits)
                    .map(|(&w, &b)| if b { w } else { 0.0 })
                    .collect();
                for &(j, v) in values {
                    w[j] = v;
                }
                overrides.insert(self.masks.layers()[i].param().id, w);
            }
            self.masks.set_bits(i, bits)?;
        }
        self.mask_state();
        let model = self.masks.apply(model);
        let model = if overrides.is_empty() {
            model
        } else {
            model.map(&mut WriteWeights { values: overrides })
        };
        Ok((model, changed))
    }

    fn validate_change(&self, change: &TopologyChange) -> Result<()> {
        let layers = self.masks.layers();
        let bad = |m: String| MaskError::InvalidConfig {
            field: "topology update",
            message: m,
        };
        if change.masks.len() != layers.len() || change.changed.len() != layers.len() {
            return Err(bad(format!(
                "{} masks for {} layers",
                change.masks.len(),
                layers.len()
            )));
        }
        let prunes = self.updater.as_ref().is_some_and(|u| u.prunes());
        let mut total = 0usize;
        for (l, m) in layers.iter().zip(&change.masks) {
            if m.len() != l.numel() {
                return Err(MaskError::ShapeMismatch {
                    param: l.param().path.clone(),
                    mask: vec![m.len()],
                    weight: l.param().shape.clone(),
                });
            }
            if prunes && m.iter().zip(l.bits()).any(|(&new, &old)| new && !old) {
                return Err(bad(format!(
                    "a pruning update revived a pruned weight of {}",
                    l.param().path
                )));
            }
            total += m.iter().filter(|&&b| b).count();
        }
        if prunes {
            if change.grown_values.iter().any(|v| !v.is_empty()) {
                return Err(bad("a pruning update set values of grown weights".into()));
            }
        } else if total != self.masks.nnz() {
            return Err(bad(format!(
                "the update changed the number of kept weights from {} to {total}",
                self.masks.nnz()
            )));
        }
        for (i, v) in change.grown_values.iter().enumerate() {
            if v.iter()
                .any(|&(j, _)| j >= layers.get(i).map_or(0, |l| l.numel()))
            {
                return Err(bad(format!("grown value index out of range in layer {i}")));
            }
        }
        Ok(())
    }

    /// Save masks, optimizer state, the step counter and the updater's state atomically.
    /// Save the model itself with [`save_module_atomic`](crate::checkpoint::save_module_atomic)
    /// (burn records keep the parameter ids that this state is keyed by).
    ///
    /// # Errors
    /// [`MaskError::Io`] or [`MaskError::Data`].
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut archive = Archive::default();
        let mut layers = Vec::new();
        for l in self.masks.layers() {
            let p = l.param();
            layers.push(serde_json::json!({
                "path": p.path, "id": p.id.val(), "shape": p.shape,
            }));
            archive.blobs.insert(
                format!("mask/{}", p.id.val()),
                Blob::U8(l.bits().iter().map(|&b| u8::from(b)).collect()),
            );
        }
        let mut states = Vec::new();
        let mut ids: Vec<&ParamId> = self.state.keys().collect();
        ids.sort_by_key(|id| id.val());
        for id in ids {
            let st = &self.state[id];
            states.push(
                serde_json::json!({"id": id.val(), "time": st.time, "slots": st.slots.len()}),
            );
            for (k, s) in st.slots.iter().enumerate() {
                archive.blobs.insert(
                    format!("state/{}/{k}", id.val()),
                    Blob::F32(to_host(s.clone())?),
                );
            }
        }
        archive.meta = serde_json::json!({
            "format": "burn-sparse optimizer v1",
            "rule": self.rule,
            "step": self.step,
            "layers": layers,
            "states": states,
            "updater": self.updater.as_ref().map(|u| u.name().to_string()),
            "updater_state": self.updater.as_ref().map(|u| u.state()),
        });
        archive.save(path)
    }

    /// Load what [`SparseOptimizer::save`] wrote, for `model` (whose parameter ids and shapes
    /// must match, as they do after loading its record). Re-attach the updater with
    /// [`SparseOptimizer::with_updater`]; its saved state is restored then.
    ///
    /// # Errors
    /// [`MaskError::Io`], [`MaskError::CorruptCheckpoint`], or a model that does not match.
    pub fn load<M: Module>(path: &Path, model: &M) -> Result<Self> {
        let archive = Archive::load(path)?;
        let corrupt = |m: &str| MaskError::CorruptCheckpoint {
            path: path.to_path_buf(),
            message: m.to_string(),
        };
        #[derive(Deserialize)]
        struct LayerMeta {
            path: String,
            id: u64,
            shape: Vec<usize>,
        }
        #[derive(Deserialize)]
        struct StateMeta {
            id: u64,
            time: u64,
            slots: usize,
        }
        #[derive(Deserialize)]
        struct Meta {
            rule: Rule,
            step: u64,
            layers: Vec<LayerMeta>,
            states: Vec<StateMeta>,
            updater_state: Option<serde_json::Value>,
        }
        let meta: Meta = serde_json::from_value(archive.meta.clone())
            .map_err(|e| corrupt(&format!("bad metadata: {e}")))?;
        let all = param_infos(model);
        let mut params: Vec<ParamInfo> = Vec::new();
        let mut bits = Vec::new();
        for l in &meta.layers {
            let p = all
                .iter()
                .find(|q| q.id.val() == l.id)
                .or_else(|| all.iter().find(|q| q.path == l.path))
                .ok_or_else(|| {
                    MaskError::ModelMismatch(format!("the model has no parameter `{}`", l.path))
                })?;
            if p.shape != l.shape {
                return Err(MaskError::ShapeMismatch {
                    param: l.path.clone(),
                    mask: l.shape.clone(),
                    weight: p.shape.clone(),
                });
            }
            let b = archive.u8(&format!("mask/{}", l.id), path)?;
            if b.len() != p.numel() {
                return Err(corrupt(&format!(
                    "mask of `{}` has the wrong length",
                    l.path
                )));
            }
            bits.push(b.iter().map(|&x| x != 0).collect());
            params.push(p.clone());
        }
        // An optimizer over truly sparse layers masks nothing (`MaskSet::empty`).
        let masks = if params.is_empty() {
            MaskSet::empty()
        } else {
            MaskSet::from_bits(model, params, bits)?
        };
        let devices = param_devices(model);
        let mut state = HashMap::new();
        for s in &meta.states {
            let id = ParamId::from(s.id);
            let Some(device) = devices.get(&id) else {
                return Err(MaskError::ModelMismatch(format!(
                    "optimizer state for parameter id {id} that the model lacks"
                )));
            };
            let numel = all.iter().find(|p| p.id == id).map_or(0, ParamInfo::numel);
            let mut slots = Vec::new();
            for k in 0..s.slots {
                let v = archive.f32(&format!("state/{}/{k}", s.id), path)?;
                if v.len() != numel {
                    return Err(corrupt(&format!("state of {id} has the wrong length")));
                }
                slots.push(
                    Tensor::<1>::from_data(TensorData::new(v.to_vec(), [numel]), device).inner(),
                );
            }
            state.insert(
                id,
                ParamState {
                    slots,
                    time: s.time,
                },
            );
        }
        meta.rule.validate()?;
        Ok(Self {
            rule: meta.rule,
            masks,
            state,
            step: meta.step,
            updater: None,
            pending_updater_state: meta.updater_state.filter(|v| !v.is_null()),
            last_report: None,
        })
    }
}

/// The gradients of every masked parameter, flattened, as device tensors in layer order (zeros
/// where a layer has no gradient), without a read back.
pub fn flat_grads<M: Module>(
    masks: &MaskSet,
    model: &M,
    grads: &GradientsParams,
) -> Vec<Tensor<1>> {
    struct Reader<'a> {
        masks: &'a MaskSet,
        grads: &'a GradientsParams,
        out: HashMap<ParamId, Tensor<1>>,
    }
    impl ModuleVisitor for Reader<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(l) = self.masks.get(param.id)
                && let Some(g) = self.grads.get::<D>(param.id)
            {
                self.out.insert(param.id, g.inner().reshape([l.numel()]));
            }
        }
    }
    let mut r = Reader {
        masks,
        grads,
        out: HashMap::new(),
    };
    model.visit(&mut r);
    masks
        .layers()
        .iter()
        .map(|l| match r.out.remove(&l.param().id) {
            Some(g) => g,
            None => Tensor::<1>::zeros([l.numel()], &l.device_mask().device()),
        })
        .collect()
}

/// The gradients of every masked parameter, flattened, in layer order (zeros where a layer has
/// no gradient).
///
/// # Errors
/// [`MaskError::Data`] if a gradient cannot be read back.
pub fn read_grads<M: Module>(
    masks: &MaskSet,
    model: &M,
    grads: &GradientsParams,
) -> Result<Vec<Vec<f32>>> {
    flat_grads(masks, model, grads)
        .into_iter()
        .map(to_host)
        .collect()
}

struct StepMapper<'a> {
    rule: &'a Rule,
    lr: f64,
    masks: &'a MaskSet,
    state: &'a mut HashMap<ParamId, ParamState>,
    grads: &'a mut GradientsParams,
}

impl ModuleMapper for StepMapper<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(grad) = self.grads.remove::<D>(param.id) else {
            return param;
        };
        let (id, tensor, mapper) = param.consume();
        let ctx = TensorContext::capture(&tensor);
        let w = tensor.inner();
        let device = w.device();
        let mut g = grad.inner();
        if g.device() != device {
            g = g.to_device(&device);
        }
        let mask = self
            .masks
            .get(id)
            .map(|l| reshape_mask(l.device_mask(), &w));
        if let Some(m) = &mask {
            g = g * m.clone();
        }
        let dims: [usize; D] = w.dims();
        let n: usize = dims.iter().product();
        let prev = self.state.remove(&id);
        let time = prev.as_ref().map_or(0, |s| s.time);
        let slots = prev.map(|s| {
            s.slots
                .into_iter()
                .map(|t| t.to_device(&device).reshape(dims))
                .collect()
        });
        let (w, slots) = self.rule.update(self.lr, w, g, slots, time);
        let w = match mask {
            Some(m) => w * m,
            None => w,
        };
        if !slots.is_empty() || matches!(self.rule, Rule::Adam(_)) {
            self.state.insert(
                id,
                ParamState {
                    slots: slots.into_iter().map(|s| s.reshape([n])).collect(),
                    time: time + 1,
                },
            );
        }
        Param::from_mapped_value(id, ctx.restore(w, id), mapper)
    }
}

/// Overwrite parameters by id with host values (flattened, row-major), keeping ids and autodiff
/// settings.
pub struct WriteWeights {
    /// New values by parameter id.
    pub values: HashMap<ParamId, Vec<f32>>,
}

impl ModuleMapper for WriteWeights {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(v) = self.values.remove(&param.id) else {
            return param;
        };
        let (id, tensor, mapper) = param.consume();
        let ctx = TensorContext::capture(&tensor);
        let dims: [usize; D] = tensor.dims();
        let device = tensor.device();
        let t = Tensor::<D>::from_data(TensorData::new(v, dims), &device).inner();
        Param::from_mapped_value(id, ctx.restore(t, id), mapper)
    }
}
