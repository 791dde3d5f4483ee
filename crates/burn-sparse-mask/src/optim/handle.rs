//! A [`SparseOptimizer`] shared with a model, for burn-train's `TrainStep::optimize` seam.

use std::sync::{Arc, Mutex, PoisonError};

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLearningRate;
use burn::tensor::Device;

use super::SparseOptimizer;
use crate::error::MaskError;

/// A cloneable handle to a [`SparseOptimizer`], to keep in a `#[module(skip)]` field of a model
/// so that burn-train's `Learner` (whose `TrainStep::optimize` only hands over burn's own
/// `ModuleOptimizer`) runs sparse steps, DST topology updates included:
///
/// ```ignore
/// #[derive(Module, Debug)]
/// struct Net { fc1: Linear, fc2: Linear, #[module(skip)] sparse: SparseHandle }
///
/// impl TrainStep for Net {
///     // ... step() as usual ...
///     fn optimize(self, _burn_optim: &mut ModuleOptimizer, lr: ModuleLearningRate,
///                 grads: GradientsParams) -> Self {
///         let sparse = self.sparse.clone();
///         sparse.step(self, &lr, grads)
///     }
/// }
/// ```
///
/// **One optimizer per replica.** Clones of a model share the handle, and burn's DDP strategy
/// forks one model per device; every replica must step its own optimizer state (momentum, step
/// counter, its own copy of the mask). So the handle keeps one [`SparseOptimizer`] per device,
/// keyed by the device of the model it steps. [`SparseHandle::per_device`] builds each device's
/// replica with a function of yours on its first step (the same masks and seed give identical
/// replicas, which the same reduced gradients keep identical: docs/SCALING.md).
/// [`SparseHandle::new`] holds one optimizer for one device: a step from a second device is
/// refused (an error in [`SparseHandle::take_error`], the model unchanged) rather than sharing
/// the state silently.
///
/// `optimize` cannot return an error, so a failed step (a NaN loss reaching an update, a bad
/// updater) leaves the model unchanged and is kept in [`SparseHandle::take_error`].
#[derive(Clone)]
pub struct SparseHandle {
    inner: Arc<Mutex<Replicas<Option<Device>>>>,
    error: Arc<Mutex<Option<MaskError>>>,
}

/// Builds a replica's optimizer.
type MakeOptimizer = Box<dyn Fn() -> Result<SparseOptimizer, MaskError> + Send + Sync>;

/// The replicas of one optimizer, by key (a device).
struct Replicas<K> {
    /// The optimizer the first key to step takes.
    first: Option<SparseOptimizer>,
    /// Builds the optimizer of every further key (None: one key only).
    make: Option<MakeOptimizer>,
    /// One optimizer per key that stepped, in the order they first did.
    per_key: Vec<(K, SparseOptimizer)>,
}

impl<K: PartialEq> Replicas<K> {
    /// The replica of `key`: the first key takes the optimizer given, later ones get one of
    /// their own from `make`.
    fn get(&mut self, key: K) -> Result<&mut SparseOptimizer, MaskError> {
        let i = match self.per_key.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                let opt = match (self.first.take(), &self.make) {
                    (Some(o), _) => o,
                    (None, Some(make)) => make()?,
                    (None, None) => {
                        return Err(MaskError::InvalidConfig {
                            field: "replicas",
                            message: "a model on a second device stepped a SparseHandle built \
                                      with one optimizer; build it with \
                                      SparseHandle::per_device for data-parallel training"
                                .into(),
                        });
                    }
                };
                self.per_key.push((key, opt));
                self.per_key.len() - 1
            }
        };
        Ok(&mut self.per_key[i].1)
    }

    /// The first replica (the main device's), or the optimizer it will take before any step.
    fn main(&mut self) -> &mut SparseOptimizer {
        match (&mut self.first, self.per_key.first_mut()) {
            (_, Some((_, o))) => o,
            (Some(o), None) => o,
            // `first` is only taken by the push of the first replica.
            (None, None) => unreachable!("a handle always holds an optimizer"),
        }
    }
}

impl std::fmt::Debug for SparseHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut r = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let n = r.per_key.len();
        write!(f, "SparseHandle({n} replicas, {:?})", r.main())
    }
}

impl SparseHandle {
    /// A handle holding `optim` for one device (see [`SparseHandle::per_device`] for several).
    pub fn new(optim: SparseOptimizer) -> Self {
        Self::with_replicas(Replicas {
            first: Some(optim),
            make: None,
            per_key: Vec::new(),
        })
    }

    /// A handle with one optimizer per device, each built by `make` (called now for the first
    /// device's, and on the first step of every further device).
    ///
    /// # Errors
    /// The error of the first `make()`.
    pub fn per_device(
        make: impl Fn() -> Result<SparseOptimizer, MaskError> + Send + Sync + 'static,
    ) -> Result<Self, MaskError> {
        Ok(Self::with_replicas(Replicas {
            first: Some(make()?),
            make: Some(Box::new(make)),
            per_key: Vec::new(),
        }))
    }

    fn with_replicas(r: Replicas<Option<Device>>) -> Self {
        Self {
            inner: Arc::new(Mutex::new(r)),
            error: Arc::new(Mutex::new(None)),
        }
    }

    /// One sparse step of the replica of `model`'s device, with the learning rate burn-train
    /// gives (the rate of the first masked parameter; per-group rates are not split).
    pub fn step<M: Module>(&self, model: M, lr: &ModuleLearningRate, grads: GradientsParams) -> M {
        let device = model.devices().first().cloned();
        let mut replicas = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let backup = model.clone();
        let stepped = replicas.get(device).and_then(|opt| {
            let lr = opt
                .masks()
                .layers()
                .first()
                .map(|l| lr.lr_from_param(l.param().id, Some(&l.param().path)))
                .unwrap_or(0.0);
            opt.step(lr, model, grads)
        });
        match stepped {
            Ok(m) => m,
            Err(e) => {
                *self.error.lock().unwrap_or_else(PoisonError::into_inner) = Some(e);
                backup
            }
        }
    }

    /// Run `f` on the optimizer (to save it, read its masks or reports): the first replica's
    /// (the replicas of a data-parallel run are identical), or before any step the one it
    /// will take.
    pub fn with<R>(&self, f: impl FnOnce(&mut SparseOptimizer) -> R) -> R {
        f(self
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .main())
    }

    /// How many replicas have stepped (one per device).
    pub fn replicas(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .per_key
            .len()
    }

    /// The error of the last failed step, if any.
    pub fn take_error(&self) -> Option<MaskError> {
        self.error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ParamFilter, Scope, SgdRule, Sparsity, magnitude_masks, to_host};
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::Tensor;

    fn model() -> Linear {
        let device = Device::default().autodiff();
        device.seed(3);
        LinearConfig::new(6, 4).init(&device)
    }

    fn optimizer(model: &Linear) -> Result<SparseOptimizer, MaskError> {
        let masks = magnitude_masks(
            model,
            &ParamFilter::new(),
            Sparsity::new(0.5).unwrap(),
            &Scope::Global,
        )?;
        SparseOptimizer::new(SgdRule::default(), masks)
    }

    fn grads(model: &Linear, scale: f32) -> GradientsParams {
        let x = Tensor::<2>::ones([2, 6], &model.weight.device()) * scale;
        GradientsParams::from_grads(model.forward(x).sum().backward(), model)
    }

    fn bits(m: &Linear) -> Vec<u32> {
        to_host(m.weight.val().flatten::<1>(0, 1))
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect()
    }

    /// Two replicas (keys standing in for two devices, which the CPU backends cannot make)
    /// each step their own state: a replica that starts late starts from a fresh optimizer,
    /// not from the other's momentum, and each equals an optimizer stepped alone, bit for bit.
    #[test]
    fn every_replica_steps_its_own_state() {
        let m0 = model();
        let template = m0.clone();
        let mut replicas: Replicas<u8> = Replicas {
            first: Some(optimizer(&m0).unwrap()),
            make: Some(Box::new(move || optimizer(&template))),
            per_key: Vec::new(),
        };
        let m0 = replicas.main().masks().apply(m0);
        let (mut a, mut b, mut ra, mut rb) = (m0.clone(), m0.clone(), m0.clone(), m0.clone());
        let (mut alone_a, mut alone_b) = (optimizer(&m0).unwrap(), optimizer(&m0).unwrap());
        for t in 0..3 {
            let s = 1.0 + t as f32;
            a = replicas
                .get(0)
                .unwrap()
                .step(0.1, a.clone(), grads(&a, s))
                .unwrap();
            ra = alone_a.step(0.1, ra.clone(), grads(&ra, s)).unwrap();
        }
        b = replicas
            .get(1)
            .unwrap()
            .step(0.1, b.clone(), grads(&b, 5.0))
            .unwrap();
        rb = alone_b.step(0.1, rb.clone(), grads(&rb, 5.0)).unwrap();
        assert_eq!(bits(&a), bits(&ra));
        assert_eq!(bits(&b), bits(&rb));
        assert_ne!(bits(&a), bits(&b));
        assert_eq!(replicas.per_key.len(), 2);
        assert_eq!(replicas.get(0).unwrap().steps(), 3);
        assert_eq!(replicas.get(1).unwrap().steps(), 1);
        // A one-optimizer set refuses a second key instead of sharing its state.
        let mut one: Replicas<u8> = Replicas {
            first: Some(optimizer(&m0).unwrap()),
            make: None,
            per_key: Vec::new(),
        };
        assert!(one.get(0).is_ok());
        let e = one.get(1).unwrap_err();
        assert!(e.to_string().contains("per_device"), "{e}");
    }

    /// On one device the handle is one optimizer: clones of the model share it.
    #[test]
    fn one_device_is_one_replica() {
        let m = model();
        let handle = SparseHandle::new(optimizer(&m).unwrap());
        let m = handle.with(|o| o.masks().apply(m));
        let lr = ModuleLearningRate::from(0.1);
        let clone = handle.clone();
        let g = grads(&m, 1.0);
        let m = handle.step(m, &lr, g);
        let g = grads(&m, 1.0);
        let _ = clone.step(m, &lr, g);
        assert!(handle.take_error().is_none());
        assert_eq!(handle.replicas(), 1);
        assert_eq!(handle.with(|o| o.steps()), 2);
        let m = model();
        let per = SparseHandle::per_device(move || optimizer(&m)).unwrap();
        assert_eq!(per.replicas(), 0);
        assert_eq!(per.with(|o| o.steps()), 0);
    }
}
