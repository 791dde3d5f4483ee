//! Dynamic sparse training on truly sparse layers: SET, RigL and static through the same
//! [`TopologyUpdater`]s as the masked path, with the topology stored as [`SparseLinear`]
//! patterns instead of dense masks.
//!
//! At an update step the updater sees exactly what it sees on the masked path (the active
//! mask, the weights with exact zeros, the dense gradient `dL/dW`) and returns new masks; each
//! layer then moves only the slots of its dropped positions to the grown ones
//! ([`SparseLinear::with_active`]), resets those slots' optimizer state, and gives them the
//! dense gradient of their new position for this step's update, as a grown weight receives on
//! the masked path. So given the same weights and gradients both paths choose the same
//! topology (tested).
//!
//! The dense gradient comes from a zero probe added to each layer on update steps only
//! ([`SparseMlp::forward_probed`]): one dense product per layer per update, none on other steps.
//!
//! SNFS grows by the momentum of *inactive* weights, which a sparse layer does not store (its
//! optimizer state is nnz-sized). It is refused here with a typed error; train SNFS on the
//! masked path (`Compute::Masked` or a dense model with `SparseOptimizer`).
//!
//! [`SparseTrainHandle`] runs the same steps inside burn-train's `Learner` (the optimizer and
//! updater behind `TrainStep::optimize`, the probes through the handle's forward and backward);
//! tested bit for bit against the hand-written loop.

use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};
use burn_sparse_layers::{LayerError, SparseLinear};
use burn_sparse_mask::{
    LayerView, MaskError, ParamInfo, SparseOptimizer, TopologyChange, TopologyUpdater,
};

use crate::models::SparseMlp;

/// What can go wrong in a sparse topology update.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SparseDstError {
    /// From the updater or the optimizer.
    #[error(transparent)]
    Mask(#[from] MaskError),
    /// From a layer (bad mask, unreadable tensor).
    #[error(transparent)]
    Layer(#[from] LayerError),
    /// An updater this storage cannot serve.
    #[error("{0}")]
    Unsupported(String),
}

/// Drives a [`TopologyUpdater`] (SET, RigL, static ...) over a [`SparseMlp`].
pub struct SparseDst {
    updater: Box<dyn TopologyUpdater>,
}

impl std::fmt::Debug for SparseDst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SparseDst")
            .field("updater", &self.updater.name())
            .finish()
    }
}

impl SparseDst {
    /// Drive `updater`.
    ///
    /// # Errors
    /// [`SparseDstError::Unsupported`] for an updater that reads the momentum of inactive
    /// weights (SNFS), that reads dense gradients between updates (RigL with accumulated grow
    /// scores) or that prunes (GMP).
    pub fn new(updater: Box<dyn TopologyUpdater>) -> Result<Self, SparseDstError> {
        if updater.observes_every_step() && updater.needs_grads() {
            return Err(SparseDstError::Unsupported(format!(
                "`{}` reads dense gradients on steps other than its updates (accumulated grow \
                 scores), which sparse layers compute on update steps only; train it on the \
                 masked path",
                updater.name()
            )));
        }
        if updater.needs_momentum() || updater.observes_every_step() {
            return Err(SparseDstError::Unsupported(format!(
                "`{}` grows by the momentum of inactive weights, which sparse layers do not \
                 store; train it on the masked path (Compute::Masked, or a dense model with \
                 SparseOptimizer)",
                updater.name()
            )));
        }
        if updater.prunes() {
            return Err(SparseDstError::Unsupported(format!(
                "`{}` removes weights during training, and a sparse layer keeps its number of \
                 non-zeros fixed; train it on the masked path (a dense model with \
                 SparseOptimizer), then convert the final masked layers",
                updater.name()
            )));
        }
        Ok(Self { updater })
    }

    /// The updater.
    pub fn updater(&self) -> &dyn TopologyUpdater {
        self.updater.as_ref()
    }

    /// Whether optimizer step `t` (1-based) updates the topology: run the forward pass with
    /// [`SparseMlp::forward_probed`] on such steps.
    pub fn is_update_step(&self, t: u64) -> bool {
        self.updater.is_update_step(t)
    }

    /// One topology update at step `t`, before the optimizer step: `dense_grads[i]` is layer
    /// `i`'s dense gradient (row-major `[d_input, d_output]`, from the probes). Moves the
    /// slots, resets their state in `optim`, and rewrites their gradient in `grads` to the
    /// dense gradient at their new position. Returns the new network and the connections
    /// changed per layer.
    ///
    /// # Errors
    /// An updater error, a change of any layer's number of non-zeros, or wrong gradient sizes;
    /// the network is returned unchanged only through the error-free path, so clone it first
    /// (a cheap handle copy) to continue after an error.
    pub fn update(
        &mut self,
        t: u64,
        net: SparseMlp,
        dense_grads: &[Vec<f32>],
        optim: &mut SparseOptimizer,
        grads: &mut GradientsParams,
    ) -> Result<(SparseMlp, Vec<usize>), SparseDstError> {
        let n = net.layers.len();
        if dense_grads.len() != n {
            return Err(SparseDstError::Unsupported(format!(
                "{} dense gradients for {n} layers",
                dense_grads.len()
            )));
        }
        let mut infos = Vec::with_capacity(n);
        let mut masks = Vec::with_capacity(n);
        let mut weights = Vec::with_capacity(n);
        for (i, l) in net.layers.iter().enumerate() {
            infos.push(ParamInfo {
                path: format!("layers.{i}.weight"),
                id: l.values.id,
                shape: vec![l.d_input, l.d_output],
                trainable: true,
                module: "SparseLinear".into(),
            });
            let p = l.pattern()?;
            masks.push(l.active_mask()?);
            weights.push(p.to_dense(&l.host_values()?).map_err(LayerError::from)?);
            if dense_grads[i].len() != l.d_input * l.d_output {
                return Err(SparseDstError::Layer(LayerError::Shape {
                    what: "dense gradient",
                    expected: vec![l.d_input, l.d_output],
                    got: vec![dense_grads[i].len()],
                }));
            }
        }
        let views: Vec<LayerView<'_>> = (0..n)
            .map(|i| LayerView {
                param: &infos[i],
                mask: &masks[i],
                weights: &weights[i],
                grads: Some(dense_grads[i].as_slice()),
                momentum: None,
            })
            .collect();
        let Some(change) = self.updater.update(t, &views)? else {
            return Ok((net, vec![0; n]));
        };
        drop(views);
        let TopologyChange {
            masks: new_masks,
            grown_values,
            changed,
        } = change;
        if new_masks.len() != n {
            return Err(SparseDstError::Unsupported(format!(
                "the updater returned {} masks for {n} layers",
                new_masks.len()
            )));
        }
        let mut layers = Vec::with_capacity(n);
        for (i, l) in net.layers.into_iter().enumerate() {
            let grown = grown_values.get(i).map(Vec::as_slice).unwrap_or(&[]);
            let (nl, keep): (SparseLinear, Vec<bool>) = l.with_active(&new_masks[i], grown)?;
            optim.reset_state_where(nl.values.id, &keep)?;
            if let Some(g) = grads.remove::<1>(nl.values.id) {
                let p = nl.pattern()?;
                let mut host = burn_sparse_mask::to_host(g.clone())?;
                for (s, &k) in keep.iter().enumerate() {
                    if !k {
                        host[s] = dense_grads[i][p.flat_index(s)];
                    }
                }
                let len = host.len();
                grads.register::<1>(
                    nl.values.id,
                    Tensor::<1>::from_data(TensorData::new(host, [len]), &g.device()),
                );
            }
            layers.push(nl);
        }
        Ok((SparseMlp { layers }, changed))
    }
}

/// A [`SparseMlp`]'s optimizer and topology updater shared with the model, for burn-train's
/// `Learner`: keep it in a `#[module(skip)]` field, run the forward and backward pass of
/// `TrainStep::step` through [`SparseTrainHandle::forward`] and [`SparseTrainHandle::backward`]
/// (on topology-update steps they add the dense probes and keep their gradients), and step in
/// `TrainStep::optimize` with [`SparseTrainHandle::step`]:
///
/// ```ignore
/// #[derive(Module, Debug)]
/// struct Net { mlp: SparseMlp, #[module(skip)] train: Option<SparseTrainHandle> }
///
/// impl TrainStep for Net {
///     fn step(&self, b: Batch) -> TrainOutput<ClassificationOutput> {
///         let h = self.train.as_ref().expect("handle");
///         let (logits, probes) = h.forward(&self.mlp, b.x);
///         let loss = cross_entropy(logits.clone(), b.y.clone());
///         let grads = h.backward(&loss, &probes);
///         TrainOutput::new(self, grads, ClassificationOutput { loss, output: logits, targets: b.y })
///     }
///     fn optimize(self, _: &mut ModuleOptimizer, lr: ModuleLearningRate, g: GradientsParams) -> Self {
///         let h = self.train.clone().expect("handle");
///         Net { mlp: h.step(self.mlp, &lr, g), ..self }
///     }
/// }
/// ```
///
/// One device, one optimizer: burn-train's gradient accumulation must stay off (each step's
/// probe gradients belong to that step). `optimize` cannot return an error, so a failed step
/// leaves the network unchanged and keeps the error in [`SparseTrainHandle::take_error`].
#[derive(Clone)]
pub struct SparseTrainHandle {
    inner: std::sync::Arc<std::sync::Mutex<TrainState>>,
}

struct TrainState {
    optim: SparseOptimizer,
    dst: Option<SparseDst>,
    /// The probes' dense gradients of the step in flight, kept by `backward` for `step`.
    pending: Option<Vec<Vec<f32>>>,
    /// Connections changed per layer by each topology update: (step, per layer).
    updates: Vec<(u64, Vec<usize>)>,
    error: Option<crate::train::TrainError>,
}

impl std::fmt::Debug for SparseTrainHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SparseTrainHandle").finish_non_exhaustive()
    }
}

impl SparseTrainHandle {
    /// Share `optim` (over [`burn_sparse_mask::MaskSet::empty`]) and `dst` (None: a fixed
    /// topology).
    pub fn new(optim: SparseOptimizer, dst: Option<SparseDst>) -> Self {
        Self {
            inner: std::sync::Arc::new(std::sync::Mutex::new(TrainState {
                optim,
                dst,
                pending: None,
                updates: Vec::new(),
                error: None,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TrainState> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the coming step updates the topology.
    pub fn next_is_update(&self) -> bool {
        let s = self.lock();
        let t = s.optim.steps() + 1;
        s.dst.as_ref().is_some_and(|d| d.is_update_step(t))
    }

    /// The logits of the coming step, with the dense probes (returned) on an update step.
    pub fn forward(&self, net: &SparseMlp, x: Tensor<2>) -> (Tensor<2>, Vec<Tensor<2>>) {
        if self.next_is_update() {
            let probes = net.probes();
            (net.forward_probed(x, &probes), probes)
        } else {
            (net.forward(x), Vec::new())
        }
    }

    /// `loss.backward()`, keeping the probes' gradients for [`SparseTrainHandle::step`].
    pub fn backward(&self, loss: &Tensor<1>, probes: &[Tensor<2>]) -> burn::tensor::Gradients {
        let raw = loss.backward();
        if !probes.is_empty() {
            let dense: Result<Vec<Vec<f32>>, crate::train::TrainError> = probes
                .iter()
                .enumerate()
                .map(|(layer, p)| match p.grad(&raw) {
                    Some(g) => burn_sparse_mask::to_host(g).map_err(crate::train::TrainError::Mask),
                    None => Err(crate::train::TrainError::MissingProbeGradient { layer }),
                })
                .collect();
            let mut s = self.lock();
            match dense {
                Ok(d) => s.pending = Some(d),
                Err(e) => s.error = Some(e),
            }
        }
        raw
    }

    /// The step: the topology update first if this is an update step (with the gradients
    /// `backward` kept), then the values' optimizer step at burn-train's learning rate.
    pub fn step(
        &self,
        net: SparseMlp,
        lr: &burn::optim::lr_scheduler::module_lr_scheduler::ModuleLearningRate,
        mut grads: GradientsParams,
    ) -> SparseMlp {
        let mut s = self.lock();
        let backup = net.clone();
        let rate = net
            .layers
            .first()
            .map_or(0.0, |l| lr.lr_from_param(l.values.id, None));
        let t = s.optim.steps() + 1;
        let pending = s.pending.take();
        let TrainState {
            optim,
            dst,
            updates,
            ..
        } = &mut *s;
        let result = (|| -> Result<SparseMlp, crate::train::TrainError> {
            let net = match (dst.as_mut().filter(|d| d.is_update_step(t)), pending) {
                (Some(d), Some(dense)) => {
                    let (net, changed) = d.update(t, net, &dense, optim, &mut grads)?;
                    updates.push((t, changed));
                    net
                }
                (Some(_), None) => {
                    return Err(SparseDstError::Unsupported(format!(
                        "step {t} updates the topology but no probe gradients were kept: run \
                         the step's forward and backward through the handle"
                    ))
                    .into());
                }
                (None, _) => net,
            };
            Ok(optim.step(rate, net, grads)?)
        })();
        match result {
            Ok(net) => net,
            Err(e) => {
                s.error = Some(e);
                backup
            }
        }
    }

    /// Run `f` on the optimizer (to save it, read its step count).
    pub fn with<R>(&self, f: impl FnOnce(&mut SparseOptimizer) -> R) -> R {
        f(&mut self.lock().optim)
    }

    /// The topology updates so far: step and connections changed per layer.
    pub fn updates(&self) -> Vec<(u64, Vec<usize>)> {
        self.lock().updates.clone()
    }

    /// The error of the last failed step, if any.
    pub fn take_error(&self) -> Option<crate::train::TrainError> {
        self.lock().error.take()
    }
}
