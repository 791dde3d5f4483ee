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
use burn_sparse_kernels::SparsePattern;
use burn_sparse_layers::ops::feature_major_host;
use burn_sparse_layers::scratch::Buf;
use burn_sparse_layers::{LayerError, SlotMove, SparseLinear};
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
    /// From the method's plan (its settings, its updater).
    #[cfg(feature = "dynamic")]
    #[error(transparent)]
    Dst(#[from] burn_sparse_dynamic::DstError),
}

/// Drives a topology update over a [`SparseMlp`]: a [`TopologyUpdater`] (SET, RigL,
/// static ...) on dense views of each layer ([`SparseDst::new`]), or SET and RigL streamed in
/// O(nnz) memory ([`SparseDst::streamed`]) for layers too large to have dense views.
pub struct SparseDst {
    engine: Engine,
}

enum Engine {
    Views(Box<dyn TopologyUpdater>),
    #[cfg(feature = "dynamic")]
    Streamed(Streamed),
}

impl std::fmt::Debug for SparseDst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SparseDst")
            .field("method", &self.name())
            .field("streamed", &self.is_streamed())
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
        Ok(Self {
            engine: Engine::Views(updater),
        })
    }

    /// SET (`grow = Random`) or RigL (`Gradient`) with `cfg`, streamed: every update costs
    /// O(nnz + rows + cols) memory per layer plus one tile of scores per thread
    /// ([`GROW_BLOCK_COLS`]), never a dense mask, weight or gradient, so it trains layers whose
    /// dense twin does not fit in memory. Update steps run [`SparseMlp::forward_tapped`]
    /// (the layers' inputs and output gradients, `batch x width` each) instead of the probes.
    ///
    /// It makes the choices of the dense-view path ([`SparseDst::new`] with
    /// `SetUpdater`/`RiglUpdater`): the same drop count and drop order (smallest `|w|`, ties:
    /// higher flat index first), grown weights at `cfg.init` with the same per-step values,
    /// state reset and this step's gradient at their new position. RigL grows exactly the
    /// positions the dense path grows given the same gradients (tested bit for bit); SET draws
    /// from the same distribution (uniform over the positions inactive after the drop) but
    /// by rejection sampling of flat indices, so not the dense path's random stream. A NaN
    /// value or grow score skips the whole update, as on the dense path.
    ///
    /// # Errors
    /// [`SparseDstError::Unsupported`] for a structured sparsity type, accumulated grow scores
    /// or `skip_weight_update` (train those on dense views); the config's own validation
    /// errors.
    #[cfg(feature = "dynamic")]
    pub fn streamed(
        cfg: burn_sparse_dynamic::DropGrowConfig,
        grow: StreamedGrow,
    ) -> Result<Self, SparseDstError> {
        cfg.validate().map_err(|e| match e {
            burn_sparse_dynamic::DstError::Mask(m) => SparseDstError::Mask(m),
            other => SparseDstError::Unsupported(other.to_string()),
        })?;
        if let Some(what) = unstreamable(&cfg) {
            return Err(SparseDstError::Unsupported(format!(
                "streamed SET/RigL does not support {what}; use the dense-view updater \
                 (SparseDst::new)"
            )));
        }
        Ok(Self {
            engine: Engine::Streamed(Streamed {
                cfg,
                grow,
                kernels: burn_sparse_kernels::Kernels::default(),
                block_cols: GROW_BLOCK_COLS,
                history: Vec::new(),
                skipped: Vec::new(),
            }),
        })
    }

    /// The driver a training run of `plan` gets on sparse layers (`None` for static): RigL
    /// streamed ([`SparseDst::streamed`]) whenever its settings allow it (unstructured,
    /// `grad_accumulation = 1`, no `skip_weight_update`), every other case on dense views
    /// ([`SparseDst::new`] with the plan's updater).
    ///
    /// Streamed RigL makes the dense-view driver's choices given the same gradients (tested bit
    /// for bit), but it scores the inactive positions itself, block by block, instead of
    /// reading the probes' dense gradient (burn's matmul): the scores, and a grown weight's
    /// first gradient, can differ from the dense-view driver's in the last bits, and so can a
    /// run. It costs O(nnz) memory and, on LeNet-300-100 at 95%, about half the dense-view
    /// update's time (paired against static steps, 1.044-1.069 against 1.079-1.091:
    /// docs/PERFORMANCE.md). SET stays on dense views: its streamed twin draws the same
    /// distribution from another random stream, so it would not pick the masked path's
    /// positions from the same seed.
    ///
    /// # Errors
    /// The plan's own errors; [`SparseDst::new`]'s refusals (SNFS, GMP, accumulated scores).
    #[cfg(feature = "dynamic")]
    pub fn from_plan(plan: &burn_sparse_dynamic::DstPlan) -> Result<Option<Self>, SparseDstError> {
        if plan.method == burn_sparse_dynamic::DstMethod::Rigl
            && let Some(c) = plan.drop_grow_config()?
            && unstreamable(&c).is_none()
        {
            return Self::streamed(c, StreamedGrow::Gradient).map(Some);
        }
        plan.updater()?.map(Self::new).transpose()
    }

    /// The method's name (`set`, `rigl`, `static` ...).
    pub fn name(&self) -> &str {
        match &self.engine {
            Engine::Views(u) => u.name(),
            #[cfg(feature = "dynamic")]
            Engine::Streamed(s) => match s.grow {
                StreamedGrow::Random => "set",
                StreamedGrow::Gradient => "rigl",
            },
        }
    }

    /// The updater of the dense-view path (`None` when streamed).
    pub fn updater(&self) -> Option<&dyn TopologyUpdater> {
        match &self.engine {
            Engine::Views(u) => Some(u.as_ref()),
            #[cfg(feature = "dynamic")]
            Engine::Streamed(_) => None,
        }
    }

    /// Whether updates are streamed ([`SparseDst::streamed`]): update steps then run
    /// [`SparseMlp::forward_tapped`] and [`SparseDst::update_streamed`] instead of the probes.
    pub fn is_streamed(&self) -> bool {
        !matches!(self.engine, Engine::Views(_))
    }

    /// The streamed updates so far (step, drop fraction, connections changed per layer), and
    /// the skipped ones with the reason; empty on the dense-view path (see its updater).
    #[cfg(feature = "dynamic")]
    pub fn streamed_history(&self) -> (&[burn_sparse_dynamic::UpdateRecord], &[(u64, String)]) {
        match &self.engine {
            Engine::Streamed(s) => (&s.history, &s.skipped),
            Engine::Views(_) => (&[], &[]),
        }
    }

    /// Whether optimizer step `t` (1-based) updates the topology: run the forward pass with
    /// [`SparseMlp::forward_probed`] (or [`SparseMlp::forward_tapped`] when streamed) on such
    /// steps.
    pub fn is_update_step(&self, t: u64) -> bool {
        match &self.engine {
            Engine::Views(u) => u.is_update_step(t),
            #[cfg(feature = "dynamic")]
            Engine::Streamed(s) => s.cfg.schedule.is_update_step(t),
        }
    }

    /// One streamed topology update at step `t`, before the optimizer step: `taps[i]` is layer
    /// `i`'s input and output gradient ([`read_taps`]). Moves the dropped slots to the grown
    /// positions ([`SparseLinear::with_moves`]), resets their state in `optim` and sets their
    /// gradient in `grads` to this step's `dL/dW` at their new position. Returns the new
    /// network and the connections changed per layer (all zero for a skipped update).
    ///
    /// # Errors
    /// [`SparseDstError::Unsupported`] on the dense-view path or for a wrong number of taps;
    /// layer, kernel (tap sizes) and optimizer errors.
    pub fn update_streamed(
        &mut self,
        t: u64,
        net: SparseMlp,
        taps: &[LayerTap],
        optim: &mut SparseOptimizer,
        grads: &mut GradientsParams,
    ) -> Result<(SparseMlp, Vec<usize>), SparseDstError> {
        let n = net.layers.len();
        #[cfg(feature = "dynamic")]
        if let Engine::Streamed(st) = &mut self.engine {
            if taps.len() != n {
                return Err(SparseDstError::Unsupported(format!(
                    "{} taps for {n} layers",
                    taps.len()
                )));
            }
            let f = st.cfg.drop_fraction.at(t, &st.cfg.schedule);
            let mut planned = Vec::with_capacity(n);
            for (i, plan) in st.plan(t, &net.layers, taps, f).into_iter().enumerate() {
                match plan? {
                    Some(m) => planned.push(m),
                    None => {
                        let msg = format!(
                            "step {t}: update skipped: a NaN weight or grow score in layer {i}"
                        );
                        burn_sparse_mask::stderr_line!("warning: streamed {:?} {msg}", st.grow);
                        st.skipped.push((t, msg));
                        return Ok((net, vec![0; n]));
                    }
                }
            }
            let mut layers = Vec::with_capacity(n);
            let mut changed = Vec::with_capacity(n);
            for (l, (moves, keep)) in net.layers.into_iter().zip(planned) {
                let only: Vec<SlotMove> = moves.iter().map(|&(m, _)| m).collect();
                let nl = if only.is_empty() {
                    l
                } else {
                    l.with_moves(&only)?
                };
                optim.reset_state_where(nl.values.id, &keep)?;
                if let Some(g) = grads.remove::<1>(nl.values.id) {
                    let mut host = burn_sparse_mask::to_host(g.clone())?;
                    for &(m, grad) in &moves {
                        host[m.slot as usize] = grad;
                    }
                    let len = host.len();
                    grads.register::<1>(
                        nl.values.id,
                        Tensor::<1>::from_data(TensorData::new(host, [len]), &g.device()),
                    );
                }
                changed.push(moves.len());
                layers.push(nl);
            }
            st.history.push(burn_sparse_dynamic::UpdateRecord {
                step: t,
                drop_fraction: f,
                changed: changed.clone(),
            });
            return Ok((SparseMlp { layers }, changed));
        }
        let _ = (t, net, taps, optim, grads, n);
        Err(SparseDstError::Unsupported(
            "update_streamed needs a streamed driver (SparseDst::streamed); this one updates \
             on dense views (SparseDst::update)"
                .into(),
        ))
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
        let Engine::Views(updater) = &mut self.engine else {
            return Err(SparseDstError::Unsupported(
                "a streamed driver updates through update_streamed, with the layers' taps".into(),
            ));
        };
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
        let Some(change) = updater.update(t, &views)? else {
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

/// The taps of an update step after `loss.backward()`: each layer's input (`inputs`, from
/// [`SparseMlp::forward_tapped`]) and its tap's gradient, feature-major.
///
/// # Errors
/// [`crate::train::TrainError::MissingProbeGradient`] if a tap has no gradient (it was not part
/// of the loss), a read-back error otherwise.
pub fn read_taps(
    inputs: &[Tensor<2>],
    taps: &[Tensor<2>],
    grads: &burn::tensor::Gradients,
) -> Result<Vec<LayerTap>, crate::train::TrainError> {
    inputs
        .iter()
        .zip(taps)
        .enumerate()
        .map(|(layer, (x, tap))| {
            let batch = x.dims()[0];
            let dy = tap
                .grad(grads)
                .ok_or(crate::train::TrainError::MissingProbeGradient { layer })?;
            let host = |t: Tensor<2>| {
                feature_major_host(t)
                    .map_err(|e| crate::train::TrainError::Sparse(SparseDstError::Layer(e)))
            };
            Ok(LayerTap {
                xt: host(x.clone())?,
                dyt: host(dy.transpose())?,
                batch,
            })
        })
        .collect()
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

/// What of `cfg` a streamed driver cannot serve, if anything (the dense-view driver serves it).
#[cfg(feature = "dynamic")]
fn unstreamable(cfg: &burn_sparse_dynamic::DropGrowConfig) -> Option<&'static str> {
    if !matches!(cfg.structure, burn_sparse_mask::Structure::Unstructured) {
        Some("a structured sparsity type (N:M, blocks)")
    } else if cfg.grad_accumulation > 1 {
        Some("accumulated grow scores (grad_accumulation > 1)")
    } else if cfg.skip_weight_update {
        Some("skip_weight_update")
    } else {
        None
    }
}

/// The grow criterion of a streamed update ([`SparseDst::streamed`]).
#[cfg(feature = "dynamic")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamedGrow {
    /// SET: uniformly random positions among those inactive after the drop.
    Random,
    /// RigL: the largest `|dL/dW|`, computed tile by tile
    /// ([`Kernels::grow_topk`](burn_sparse_kernels::Kernels::grow_topk)).
    Gradient,
}

/// One layer's input and output gradient at a topology-update step, feature-major: all a
/// streamed update needs to score any position (`dL/dW[r, c] = <xt[r, :], dyt[c, :]>`). The
/// buffers come from, and go back to, the layers' buffer pool ([`Buf`]), so the reads of every
/// update step reuse memory already mapped.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerTap {
    /// The layer's input, `[d_input, batch]`.
    pub xt: Buf,
    /// `dL/dy`, `[d_output, batch]`.
    pub dyt: Buf,
    /// The batch size.
    pub batch: usize,
}

/// One layer's streamed update: the moves with the gradient of each moved slot's new position
/// this step, and per slot whether it kept its position and state.
#[cfg(feature = "dynamic")]
type LayerMoves = (Vec<(SlotMove, f32)>, Vec<bool>);

/// The state of a streamed SET or RigL driver.
#[cfg(feature = "dynamic")]
struct Streamed {
    cfg: burn_sparse_dynamic::DropGrowConfig,
    grow: StreamedGrow,
    kernels: burn_sparse_kernels::Kernels,
    block_cols: usize,
    history: Vec<burn_sparse_dynamic::UpdateRecord>,
    skipped: Vec<(u64, String)>,
}

/// Columns of `dW` per tile of the streamed grow step: 64 rows x 1024 columns x 4 bytes =
/// 256 KiB of scores per thread at a time.
pub const GROW_BLOCK_COLS: usize = 1024;

/// The `k` distinct positions among the `candidates` of a `[rows, cols]` layer, uniformly at
/// random, ascending: rejection sampling of flat indices when at least half the layer is a
/// candidate (expected draws < 2k, no enumeration), else an enumeration of the candidates
/// (then the layer is more than half active, so O(rows x cols) is O(nnz)).
#[cfg(feature = "dynamic")]
fn sample_candidates(
    rows: usize,
    cols: usize,
    n_candidates: u64,
    k: usize,
    is_candidate: impl Fn(usize, usize) -> bool,
    rng: &mut burn_sparse_mask::SparseRng,
) -> Vec<u64> {
    let numel = rows as u64 * cols as u64;
    let mut chosen: Vec<u64> = if 2 * n_candidates >= numel {
        let mut seen = std::collections::HashSet::with_capacity(k);
        while seen.len() < k {
            let f = rng.below(numel);
            if is_candidate((f / cols as u64) as usize, (f % cols as u64) as usize) {
                seen.insert(f);
            }
        }
        seen.into_iter().collect()
    } else {
        let all: Vec<u64> = (0..numel)
            .filter(|&f| is_candidate((f / cols as u64) as usize, (f % cols as u64) as usize))
            .collect();
        // A partial Fisher-Yates shuffle: the first k are a uniform k-subset.
        let mut all = all;
        for i in 0..k.min(all.len()) {
            let j = i + rng.below((all.len() - i) as u64) as usize;
            all.swap(i, j);
        }
        all.truncate(k);
        all
    };
    chosen.sort_unstable();
    chosen
}

/// Below this many multiply-adds of grow scores outside a network's largest layer (about
/// 0.1 ms on one core), a streamed update plans its layers on the calling thread alone.
#[cfg(feature = "dynamic")]
const PLAN_SHARED_MIN_WORK: u128 = 1 << 21;

#[cfg(feature = "dynamic")]
impl Streamed {
    /// Every layer's update ([`Streamed::layer`]), in layer order. The layers are independent,
    /// so with more than one thread in the rayon pool and enough work outside the largest
    /// layer, the calling thread takes the layers largest first and the pool's other workers
    /// the next ones as they wake ([`burn_sparse_kernels::shared::share`]): on LeNet-300-100
    /// the 784 x 300 layer on one side (its grow step shared in turn) and the two small
    /// layers on the other. Each layer's
    /// plan is a function of its own inputs (SET's random draws are seeded per layer), so the
    /// result does not depend on the threads.
    fn plan(
        &self,
        t: u64,
        layers: &[SparseLinear],
        taps: &[LayerTap],
        fraction: f64,
    ) -> Vec<Result<Option<LayerMoves>, SparseDstError>> {
        let work = |i: usize| {
            layers[i].d_input as u128 * layers[i].d_output as u128 * taps[i].batch as u128
        };
        let mut order: Vec<usize> = (0..layers.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(work(i)));
        let rest: u128 = order.iter().skip(1).map(|&i| work(i)).sum();
        let helpers = burn_sparse_kernels::shared::helpers_for(rest, PLAN_SHARED_MIN_WORK);
        let done = burn_sparse_kernels::shared::share(helpers, order.len(), Vec::new, |out, j| {
            let i = order[j];
            out.push((i, self.layer(t, i, &layers[i], &taps[i], fraction)));
        });
        let mut plans: Vec<_> = done.into_iter().flatten().collect();
        plans.sort_by_key(|&(i, _)| i);
        plans.into_iter().map(|(_, p)| p).collect()
    }

    /// One layer's update: `Ok(None)` if a value or a grow score is NaN (the update is skipped).
    fn layer(
        &self,
        t: u64,
        index: usize,
        l: &SparseLinear,
        tap: &LayerTap,
        fraction: f64,
    ) -> Result<Option<LayerMoves>, SparseDstError> {
        let p = l.pattern()?;
        let nnz = p.nnz();
        let values = l.host_values()?;
        if values.iter().any(|v| v.is_nan()) {
            return Ok(None);
        }
        let n_drop = burn_sparse_dynamic::drop_count(fraction, nnz);
        if n_drop == 0 {
            return Ok(Some((Vec::new(), vec![true; nnz])));
        }
        // Drop: the n_drop smallest |v|, ties: the higher flat index first (the masked path's
        // rule). A partial selection, O(nnz), on keys that compare as integers: the bits of a
        // non-negative float order as its value (no NaN reaches here), and `!flat` puts the
        // higher index first.
        let mut order: Vec<(u32, u64, u32)> = (0..nnz)
            .map(|s| {
                let flat = p.flat_index(s) as u64;
                (values[s].abs().to_bits(), !flat, s as u32)
            })
            .collect();
        if n_drop < nnz {
            order.select_nth_unstable(n_drop - 1);
        }
        let mut keep = vec![true; nnz];
        for &(_, _, s) in &order[..n_drop] {
            keep[s as usize] = false;
        }
        drop(order);
        // The dropped positions, ascending by flat index (CSR order), with their slots.
        let dropped: Vec<(u64, u32)> = p
            .csr_slots()
            .iter()
            .filter(|&&s| !keep[s as usize])
            .map(|&s| (p.flat_index(s as usize) as u64, s))
            .collect();
        let (rows, cols) = (p.rows(), p.cols());
        // Grow n_drop among the positions inactive after the drop (the just-dropped included).
        let grown: Vec<(u64, f32)> = match self.grow {
            StreamedGrow::Gradient => {
                match self.kernels.grow_topk(
                    &p,
                    &keep,
                    &tap.xt,
                    &tap.dyt,
                    tap.batch,
                    n_drop,
                    self.block_cols,
                ) {
                    Ok(g) => g
                        .into_iter()
                        .map(|g| (g.row as u64 * cols as u64 + g.col as u64, g.grad))
                        .collect(),
                    Err(burn_sparse_kernels::KernelError::NanScore { .. }) => return Ok(None),
                    Err(e) => return Err(LayerError::from(e).into()),
                }
            }
            StreamedGrow::Random => {
                let mut rng =
                    burn_sparse_mask::SparseRng::derive(self.cfg.seed, &[t, index as u64, 2]);
                let numel = rows as u64 * cols as u64;
                let n_candidates = numel - (nnz - n_drop) as u64;
                let chosen = sample_candidates(
                    rows,
                    cols,
                    n_candidates,
                    n_drop,
                    |r, c| p.slot_at(r, c).is_none_or(|s| !keep[s]),
                    &mut rng,
                );
                // Their gradient this step: the sampled dW of a pattern at exactly those positions.
                let at = SparsePattern::new(
                    rows,
                    cols,
                    chosen.iter().map(|&f| (f / cols as u64) as u32).collect(),
                    chosen.iter().map(|&f| (f % cols as u64) as u32).collect(),
                )
                .map_err(LayerError::from)?;
                let mut g = vec![0.0f32; at.nnz()];
                self.kernels
                    .backward_values(&at, &tap.xt, &tap.dyt, tap.batch, &mut g)
                    .map_err(LayerError::from)?;
                chosen.into_iter().zip(g).collect()
            }
        };
        // A position dropped and regrown keeps its slot, value and state; the other dropped
        // slots, ascending, move to the newly grown positions, ascending. Both lists ascend by
        // flat index: one merge.
        let mut fresh = Vec::with_capacity(grown.len());
        let mut d = dropped.iter().peekable();
        for &(f, g) in &grown {
            while d.next_if(|&&(df, _)| df < f).is_some() {}
            match d.peek() {
                Some(&&(df, s)) if df == f => keep[s as usize] = true,
                _ => fresh.push((f, g)),
            }
        }
        let freed: Vec<u32> = (0..nnz as u32).filter(|&s| !keep[s as usize]).collect();
        let flats: Vec<usize> = fresh.iter().map(|&(f, _)| f as usize).collect();
        let init =
            burn_sparse_dynamic::grown_values(self.cfg.init, self.cfg.seed, t, index, &flats);
        let moves = freed
            .iter()
            .zip(&fresh)
            .enumerate()
            .map(|(i, (&slot, &(f, grad)))| {
                let value = init.get(i).map_or(0.0, |&(_, v)| v);
                let m = SlotMove {
                    slot,
                    row: (f / cols as u64) as u32,
                    col: (f % cols as u64) as u32,
                    value,
                };
                (m, grad)
            })
            .collect();
        Ok(Some((moves, keep)))
    }
}
