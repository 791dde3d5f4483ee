//! `SparseLinear`: a linear layer that stores and computes only its non-zeros.

use std::sync::{Arc, Mutex};

use burn::backend::DispatchDevice;
use burn::config::Config;
use burn::module::{Initializer, Module, Param, ParamId};
use burn::nn::Linear;
use burn::tensor::{DType, Device, Int, IntDType, Tensor, TensorData};
use burn_sparse_kernels::SparsePattern;
use burn_sparse_mask::SparseRng;

use crate::error::LayerError;

type LResult<T> = std::result::Result<T, LayerError>;
use crate::ops::SparseLinearBackend;

/// Which product a [`SparseLinear`] computes.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum Compute {
    /// The sparse kernels where they run (Flex, f32) and the layer is sparse enough to gain
    /// (density at most [`SPARSE_MAX_DENSITY`]); masked-dense otherwise.
    Auto,
    /// The sparse kernels where they run; masked-dense on every other backend or dtype.
    Sparse,
    /// Always masked-dense: the values are scattered into a dense zero weight and burn's own
    /// matmul (and its autodiff) does the rest. Same parameters, same results within float
    /// rounding.
    Masked,
}

/// Above this density [`Compute::Auto`] computes masked-dense. The kernels' break-even against
/// burn-flex's dense matmul is about 35% density on this kind of machine (they reach ~0.35x of
/// dense GEMM's FLOP rate per non-zero, docs/PERFORMANCE.md); 30% keeps a margin, as
/// SparseProp swaps in only layers that are sparse enough to gain.
pub const SPARSE_MAX_DENSITY: f64 = 0.3;

/// Configuration of a [`SparseLinear`], mirroring burn's [`LinearConfig`](burn::nn::LinearConfig) plus the density of
/// the random initial pattern.
#[derive(Config, Debug)]
pub struct SparseLinearConfig {
    /// Input features (`d_in`, rows of the weight).
    pub d_input: usize,
    /// Output features (`d_out`, columns of the weight).
    pub d_output: usize,
    /// Density of the initial pattern: exactly `round(density * d_input * d_output)` non-zeros
    /// at uniformly random positions, drawn from `seed`.
    #[config(default = 0.1)]
    pub density: f64,
    /// The exact number of non-zeros, overriding `density` (e.g. a distribution's exact
    /// per-layer count, [`SparsityDistribution::layer_counts`](burn_sparse_mask::SparsityDistribution::layer_counts)).
    #[config(default = "None")]
    pub nnz: Option<usize>,
    /// Seed of the initial pattern.
    #[config(default = 0)]
    pub seed: u64,
    /// Whether the layer has a bias.
    #[config(default = true)]
    pub bias: bool,
    /// Initialiser of the values and the bias, with the dense layer's fan-in and fan-out
    /// (burn's `Linear` default), so a sparse layer starts as the masked dense one would.
    #[config(default = "Initializer::KaimingUniform{gain:1.0/f64::sqrt(3.0), fan_out_only:false}")]
    pub initializer: Initializer,
    /// Which product to compute.
    #[config(default = "Compute::Auto")]
    pub compute: Compute,
    /// The sparse fan-in initialisation (Evci et al., arXiv:2010.03533; the masked path's
    /// [`MaskSet::sparse_fan_in`](burn_sparse_mask::MaskSet::sparse_fan_in)): the values of
    /// output unit `j` are multiplied by `sqrt(d_input / f_j)`, `f_j` its number of active
    /// inputs, so each unit starts as the dense initialisation with fan-in `f_j` would (with
    /// burn's default Kaiming-uniform: bound `1 / sqrt(f_j)`). Very sparse wide layers do not
    /// train from the dense fan-in's tiny values. Default false.
    #[config(default = false)]
    pub sparse_fan_in: bool,
}

/// The host pattern of a layer, rebuilt from `coords` when they change (a record load, a
/// topology update) and shared by clones until then.
#[derive(Clone, Debug, Default)]
pub struct PatternCache(Arc<Mutex<Option<CachedPattern>>>);

/// The coordinates a pattern was built from, and the pattern.
type CachedPattern = (Tensor<2, Int>, Arc<SparsePattern>);

/// One slot of a [`SparseLinear`] moved to a new position ([`SparseLinear::with_moves`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SlotMove {
    /// The slot (index into `values`).
    pub slot: u32,
    /// Its new row (input feature).
    pub row: u32,
    /// Its new column (output feature).
    pub col: u32,
    /// Its value at the new position (0 for RigL's and SET's grown weights).
    pub value: f32,
}

/// A linear layer `y = x W + b` whose weight `W: [d_input, d_output]` (burn's `Linear` layout)
/// holds only its non-zeros.
///
/// - `values`: a float `Param` of `nnz` entries, in slot order: optimizers, `ParamId`s,
///   records and gradient clipping work as for any parameter, and optimizer state is
///   nnz-sized.
/// - `coords`: an integer `Param` `[2, nnz]` (row 0: input index, row 1: output index),
///   saved in records and never touched by optimizers (they only visit floats).
/// - the host [`SparsePattern`] is a cache rebuilt from `coords`.
///
/// On Flex (burn-sparse's CPU default) the product runs on the sparse kernels of
/// `burn-sparse-kernels`, with its own backward pass; elsewhere it falls back to masked-dense
/// compute on the same parameters (see [`Compute`]).
#[derive(Module, Debug)]
pub struct SparseLinear {
    /// The non-zero values, slot order.
    pub values: Param<Tensor<1>>,
    /// `[2, nnz]`: input (row) and output (column) index of every slot.
    pub coords: Param<Tensor<2, Int>>,
    /// Bias `[d_output]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// Input features.
    pub d_input: usize,
    /// Output features.
    pub d_output: usize,
    /// Which product to compute.
    #[module(skip)]
    pub compute: Compute,
    #[module(skip)]
    cache: PatternCache,
}

fn is_flex(device: &Device) -> bool {
    matches!(
        device.clone().without_autodiff().as_dispatch(),
        DispatchDevice::Flex(_)
    )
}

/// `n` distinct positions of `0..numel`, uniformly at random (Floyd's algorithm: O(n)
/// expected time and memory whatever `numel` is), ascending.
fn sample_positions(numel: u64, n: u64, seed: u64) -> Vec<u64> {
    let mut rng = SparseRng::new(seed);
    let mut chosen = std::collections::HashSet::with_capacity(n as usize);
    for j in numel - n..numel {
        let t = rng.below(j + 1);
        if !chosen.insert(t) {
            chosen.insert(j);
        }
    }
    let mut v: Vec<u64> = chosen.into_iter().collect();
    v.sort_unstable();
    v
}

impl SparseLinearConfig {
    /// A layer with a random pattern of the configured density.
    ///
    /// # Errors
    /// [`LayerError::InvalidDensity`] for a density outside `(0, 1]` or NaN, or an `nnz` of 0
    /// or above `d_input * d_output`; [`LayerError::Kernel`] for dimensions beyond 32-bit
    /// indices.
    pub fn init(&self, device: &Device) -> LResult<SparseLinear> {
        if !(self.density > 0.0 && self.density <= 1.0) {
            return Err(LayerError::InvalidDensity(self.density));
        }
        let numel = self.d_input as u64 * self.d_output as u64;
        let nnz = match self.nnz {
            Some(n) if n as u64 > numel || n == 0 => {
                return Err(LayerError::InvalidDensity(n as f64 / numel.max(1) as f64));
            }
            Some(n) => n as u64,
            None => ((self.density * numel as f64).round() as u64).clamp(1.min(numel), numel),
        };
        let cols = self.d_output.max(1) as u64;
        let positions = sample_positions(numel, nnz, self.seed);
        let rows: Vec<u32> = positions.iter().map(|&p| (p / cols) as u32).collect();
        let colv: Vec<u32> = positions.iter().map(|&p| (p % cols) as u32).collect();
        let pattern = SparsePattern::new(self.d_input, self.d_output, rows, colv)?;
        let mut values = self.initializer.init_with(
            [pattern.nnz()],
            Some(self.d_input),
            Some(self.d_output),
            device,
        );
        if self.sparse_fan_in && pattern.nnz() > 0 {
            let ptr = pattern.col_ptr();
            let n = self.d_input as f64;
            let drawn = read_host(values.val())?;
            let scaled: Vec<f32> = pattern
                .slot_cols()
                .iter()
                .zip(drawn)
                .map(|(&c, v)| {
                    let f = (ptr[c as usize + 1] - ptr[c as usize]) as f64;
                    (f64::from(v) * (n / f).sqrt()) as f32
                })
                .collect();
            let nnz = pattern.nnz();
            values = values.map(|v| {
                let t = Tensor::<1>::from_data(TensorData::new(scaled, [nnz]), device);
                require_grad_like(t, v.is_require_grad())
            });
        }
        let bias = self.bias.then(|| {
            self.initializer.init_with(
                [self.d_output],
                Some(self.d_input),
                Some(self.d_output),
                device,
            )
        });
        SparseLinear::from_parts(pattern, values, bias, self.compute)
    }
}

/// A float tensor on the host, through the mask crate's one reader.
fn read_host<const D: usize>(t: Tensor<D>) -> LResult<Vec<f32>> {
    burn_sparse_mask::to_host(t).map_err(|e| LayerError::Data(e.to_string()))
}

fn require_grad_like<const D: usize>(t: Tensor<D>, like_autodiff: bool) -> Tensor<D> {
    if like_autodiff { t.require_grad() } else { t }
}

impl SparseLinear {
    /// A layer from a pattern, its values (`[nnz]`, slot order) and an optional bias.
    ///
    /// # Errors
    /// [`LayerError::Shape`] if the values or the bias do not match the pattern.
    pub fn from_parts(
        pattern: SparsePattern,
        values: Param<Tensor<1>>,
        bias: Option<Param<Tensor<1>>>,
        compute: Compute,
    ) -> LResult<Self> {
        let [n] = values.dims();
        if n != pattern.nnz() {
            return Err(LayerError::Shape {
                what: "values",
                expected: vec![pattern.nnz()],
                got: vec![n],
            });
        }
        if let Some(b) = &bias {
            let [n] = b.dims();
            if n != pattern.cols() {
                return Err(LayerError::Shape {
                    what: "bias",
                    expected: vec![pattern.cols()],
                    got: vec![n],
                });
            }
        }
        let device = values.device();
        let coords = coords_tensor(&pattern, &device);
        let cache = PatternCache(Arc::new(Mutex::new(Some((
            coords.clone(),
            Arc::new(pattern.clone()),
        )))));
        Ok(Self {
            values,
            coords: Param::initialized(ParamId::new(), coords),
            bias,
            d_input: pattern.rows(),
            d_output: pattern.cols(),
            compute,
            cache,
        })
    }

    /// The sparse twin of a dense layer under a row-major mask `[d_input, d_output]`: the
    /// kept weights become the values (row-major order), the bias is shared. The `weight`'s
    /// masked entries are dropped whatever they hold.
    ///
    /// # Errors
    /// [`LayerError::Shape`] if the mask does not match the weight; [`LayerError::Data`] if the
    /// weight cannot be read.
    pub fn from_linear(linear: &Linear, mask: &[bool], compute: Compute) -> LResult<Self> {
        let [k, n] = linear.weight.dims();
        if mask.len() != k * n {
            return Err(LayerError::Shape {
                what: "mask",
                expected: vec![k, n],
                got: vec![mask.len()],
            });
        }
        let w = linear.weight.val();
        let device = w.device();
        let autodiff = w.is_require_grad();
        let host = read_host(w)?;
        let pattern = SparsePattern::from_mask(k, n, mask)?;
        let vals = pattern.gather(&host)?;
        let values = Tensor::<1>::from_data(TensorData::new(vals, [pattern.nnz()]), &device);
        // The values keep the weight's id, so the dense twin (`to_linear`) has it again and a
        // mask or record keyed by that id still names it.
        Self::from_parts(
            pattern,
            Param::initialized(linear.weight.id, require_grad_like(values, autodiff)),
            linear.bias.clone(),
            compute,
        )
    }

    /// The dense twin: a [`Linear`] whose weight holds the values at their coordinates and
    /// exact zeros elsewhere, with the same bias; the weight's [`ParamId`] is the values' (so
    /// `from_linear` then `to_linear` gives the original ids back).
    ///
    /// # Errors
    /// [`LayerError::Data`] or [`LayerError::Kernel`] if the parameters cannot be read or the
    /// coordinates are invalid.
    pub fn to_linear(&self) -> LResult<Linear> {
        let p = self.pattern()?;
        let v = self.values.val();
        let device = v.device();
        let autodiff = v.is_require_grad();
        let host = read_host(v)?;
        let dense = p.to_dense(&host)?;
        let w = Tensor::<2>::from_data(
            TensorData::new(dense, [self.d_input, self.d_output]),
            &device,
        );
        // Built directly: `LinearConfig::init` would draw a weight only to replace it (and
        // advance the device's random stream).
        Ok(Linear {
            weight: Param::initialized(self.values.id, require_grad_like(w, autodiff)),
            bias: self.bias.clone(),
        })
    }

    /// Number of non-zeros.
    pub fn nnz(&self) -> usize {
        self.values.dims()[0]
    }

    /// `nnz / (d_input * d_output)`.
    pub fn density(&self) -> f64 {
        self.nnz() as f64 / (self.d_input as f64 * self.d_output as f64).max(1.0)
    }

    /// The host pattern, rebuilt from `coords` if they changed since it was last built.
    ///
    /// # Errors
    /// [`LayerError::Kernel`] for coordinates out of range or duplicated (a corrupt record),
    /// [`LayerError::Shape`] if they disagree with the values.
    pub fn pattern(&self) -> LResult<Arc<SparsePattern>> {
        let coords = self.coords.val();
        let mut guard = self.cache.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((c, p)) = guard.as_ref()
            && same_storage(c, &coords)
        {
            return Ok(p.clone());
        }
        let [two, nnz] = coords.dims();
        if two != 2 || nnz != self.nnz() {
            return Err(LayerError::Shape {
                what: "coords",
                expected: vec![2, self.nnz()],
                got: vec![two, nnz],
            });
        }
        let host = coords
            .clone()
            .into_data()
            .convert::<i64>()
            .try_into_vec::<i64>()
            .map_err(|e| LayerError::Data(format!("{e:?}")))?;
        let to_u32 = |x: i64, what: &'static str| -> LResult<u32> {
            u32::try_from(x).map_err(|_| LayerError::Data(format!("coords: {what} index {x}")))
        };
        let rows = host[..nnz]
            .iter()
            .map(|&x| to_u32(x, "row"))
            .collect::<LResult<Vec<_>>>()?;
        let cols = host[nnz..]
            .iter()
            .map(|&x| to_u32(x, "column"))
            .collect::<LResult<Vec<_>>>()?;
        let p = Arc::new(SparsePattern::new(self.d_input, self.d_output, rows, cols)?);
        *guard = Some((coords, p.clone()));
        Ok(p)
    }

    /// The row-major `[d_input, d_output]` mask of the active positions (host memory of the
    /// dense size: for topology updates, not the training hot path).
    ///
    /// # Errors
    /// As [`SparseLinear::pattern`].
    pub fn active_mask(&self) -> LResult<Vec<bool>> {
        let p = self.pattern()?;
        let mut bits = vec![false; self.d_input * self.d_output];
        for s in 0..p.nnz() {
            bits[p.flat_index(s)] = true;
        }
        Ok(bits)
    }

    /// The values on the host, in slot order.
    ///
    /// # Errors
    /// [`LayerError::Data`] if the tensor cannot be read.
    pub fn host_values(&self) -> LResult<Vec<f32>> {
        read_host(self.values.val())
    }

    /// The same layer with the active set `bits` (row-major, the same number of non-zeros):
    /// slots whose position stays active keep their value (and, for the caller's optimizer,
    /// their state); the slots of dropped positions move, in ascending slot order, to the
    /// newly active positions in ascending order, and start at 0 unless `grown` (flat index,
    /// value) says otherwise. The pattern is rebuilt once, in O(nnz + d_input + d_output); the
    /// `ParamId`s of `values` and `coords` are kept.
    ///
    /// Returns the layer and, per slot, whether it kept its position (`false`: reset its
    /// optimizer state).
    ///
    /// # Errors
    /// [`LayerError::Shape`] if `bits` has the wrong length or another number of non-zeros.
    pub fn with_active(&self, bits: &[bool], grown: &[(usize, f32)]) -> LResult<(Self, Vec<bool>)> {
        let numel = self.d_input * self.d_output;
        let p = self.pattern()?;
        let count = bits.iter().filter(|&&b| b).count();
        if bits.len() != numel || count != p.nnz() {
            return Err(LayerError::Shape {
                what: "active mask (length, non-zeros)",
                expected: vec![numel, p.nnz()],
                got: vec![bits.len(), count],
            });
        }
        let mut was_active = vec![false; numel];
        let mut freed = Vec::new();
        for s in 0..p.nnz() {
            let f = p.flat_index(s);
            was_active[f] = true;
            if !bits[f] {
                freed.push(s);
            }
        }
        let fresh: Vec<usize> = (0..numel).filter(|&f| bits[f] && !was_active[f]).collect();
        debug_assert_eq!(fresh.len(), freed.len());
        let cols = self.d_output;
        let grown: std::collections::HashMap<usize, f32> = grown.iter().copied().collect();
        let moves: Vec<SlotMove> = freed
            .iter()
            .zip(&fresh)
            .map(|(&s, &f)| SlotMove {
                slot: s as u32,
                row: (f / cols) as u32,
                col: (f % cols) as u32,
                value: grown.get(&f).copied().unwrap_or(0.0),
            })
            .collect();
        let mut keep = vec![true; p.nnz()];
        for &s in &freed {
            keep[s] = false;
        }
        Ok((self.with_moves(&moves)?, keep))
    }

    /// The same layer with `moves` applied: each moved slot takes its new coordinate and
    /// value, every other slot keeps both. O(nnz + d_input + d_output) time and memory, whatever
    /// the layer's dense size: the topology update of layers too large to have a dense mask
    /// (burn-sparse's streamed SET and RigL). The `ParamId`s of `values` and `coords`
    /// are kept; the caller resets the moved slots' optimizer state.
    ///
    /// # Errors
    /// [`LayerError::Kernel`] for a slot `>= nnz`, a coordinate out of range or two slots at
    /// one position after the moves; [`LayerError::Data`] if the values cannot be read.
    pub fn with_moves(&self, moves: &[SlotMove]) -> LResult<Self> {
        let p = self.pattern()?;
        let coords: Vec<(u32, u32, u32)> = moves.iter().map(|m| (m.slot, m.row, m.col)).collect();
        let pattern = p.reassign(&coords)?;
        let mut values = self.host_values()?;
        for m in moves {
            values[m.slot as usize] = m.value;
        }
        let device = self.values.device();
        let nnz = pattern.nnz();
        let new_values = self.values.clone().map(|t| {
            let v = Tensor::<1>::from_data(TensorData::new(values, [nnz]), &device);
            require_grad_like(v, t.is_require_grad())
        });
        let coords = coords_tensor(&pattern, &device);
        let cache = PatternCache(Arc::new(Mutex::new(Some((
            coords.clone(),
            Arc::new(pattern),
        )))));
        Ok(Self {
            values: new_values,
            coords: Param::initialized(self.coords.id, coords),
            bias: self.bias.clone(),
            d_input: self.d_input,
            d_output: self.d_output,
            compute: self.compute,
            cache,
        })
    }

    /// `y = x W + b + tapᵀ` with a zero `tap: [d_output, batch]` (require grad): the forward
    /// pass whose output gradient `dL/dy` can be read back as the tap's gradient, transposed
    /// (`[d_output, batch]`, the feature-major layout the kernels take). Together with this
    /// layer's input it gives any entry of the dense `dL/dW = xᵀ dY` without forming it: the
    /// streamed RigL grow step ([`burn_sparse_kernels::Kernels::grow_topk`]). It adds one
    /// `[batch, d_output]` addition to the step; use it on topology-update steps only.
    ///
    /// # Panics
    /// As [`SparseLinear::forward`], and if `tap` is not `[d_output, batch]`.
    pub fn forward_tap(&self, x: Tensor<2>, tap: Tensor<2>) -> Tensor<2> {
        let batch = x.dims()[0];
        assert_eq!(tap.dims(), [self.d_output, batch], "tap shape");
        // On the transpose, so a feature-major output stays feature-major (see the bias).
        (self.forward(x).transpose() + tap).transpose()
    }

    /// `y = x W + b + x · probe`: the forward pass with a zero dense `probe: [d_input,
    /// d_output]` added, whose gradient is the dense `dL/dW = xᵀ dY` that RigL grows by (and
    /// that a grown weight receives on its first step). Use it on topology-update steps only:
    /// on the kernels a zero probe costs one dense product (`xᵀ dY`, in the backward pass); a
    /// non-zero one is added exactly, with dense products; the masked-dense fallback computes
    /// `x · probe` as written.
    ///
    /// # Panics
    /// As [`SparseLinear::forward`], and if `probe` is not `[d_input, d_output]`.
    pub fn forward_probe(&self, x: Tensor<2>, probe: Tensor<2>) -> Tensor<2> {
        assert_eq!(probe.dims(), [self.d_input, self.d_output], "probe shape");
        self.forward_with(x, Some(probe), false)
            .unwrap_or_else(|e| panic!("SparseLinear: {e}"))
    }

    /// `relu(`[`SparseLinear::forward_probe`]`)`, with the bias and ReLU fused as in
    /// [`SparseLinear::forward_relu`].
    ///
    /// # Panics
    /// As [`SparseLinear::forward_probe`].
    pub fn forward_probe_relu(&self, x: Tensor<2>, probe: Tensor<2>) -> Tensor<2> {
        assert_eq!(probe.dims(), [self.d_input, self.d_output], "probe shape");
        self.forward_with(x, Some(probe), true)
            .unwrap_or_else(|e| panic!("SparseLinear: {e}"))
    }

    /// ReLU of this layer's output `y`, keeping the layout the next sparse layer reads in
    /// place. On the kernels `y` is a feature-major view, and ReLU and its backward pass run in
    /// place in that layout ([`SparseLinearBackend::sparse_relu`]); Flex's own would write its
    /// backward (a binary op of two transposed views) into a new row-major buffer that the next
    /// kernel transposes back. On the masked-dense path it is plain ReLU. Same values and
    /// gradients either way. [`SparseLinear::forward_relu`] also folds the bias into the pass.
    pub fn relu(&self, y: Tensor<2>) -> Tensor<2> {
        if self.uses_kernels() {
            type Ops = burn::backend::Dispatch;
            Tensor::from_dispatch(<Ops as SparseLinearBackend>::sparse_relu(y.into_dispatch()))
        } else {
            burn::tensor::activation::relu(y)
        }
    }

    /// Whether the sparse kernels compute this layer on `device` (else masked-dense).
    pub fn uses_kernels(&self) -> bool {
        let v = self.values.val();
        let kernels_run = is_flex(&v.device()) && v.dtype() == DType::F32;
        match self.compute {
            Compute::Masked => false,
            Compute::Sparse => kernels_run,
            Compute::Auto => kernels_run && self.density() <= SPARSE_MAX_DENSITY,
        }
    }

    /// `y = x W + b` for `x: [..., d_input]`.
    ///
    /// # Panics
    /// If the coordinates are invalid (a corrupt record that [`SparseLinear::pattern`] would
    /// have reported) or the input's last dimension is not `d_input`; [`SparseLinear::try_forward`]
    /// returns these as errors.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self.try_forward(x)
            .unwrap_or_else(|e| panic!("SparseLinear: {e}"))
    }

    /// [`SparseLinear::forward`], with bad coordinates or input shapes as errors.
    ///
    /// # Errors
    /// As [`SparseLinear::pattern`]; [`LayerError::Shape`] for an input whose last dimension
    /// is not `d_input`.
    pub fn try_forward<const D: usize>(&self, x: Tensor<D>) -> LResult<Tensor<D>> {
        self.forward_with(x, None, false)
    }

    /// `relu(x W + b)`: [`SparseLinear::forward`] then ReLU, the hidden layer of an MLP. On the
    /// kernels the bias and ReLU are one in-place pass over the output (and their backward one
    /// pass over its gradient) instead of burn's `relu`, which writes two new activation-sized
    /// buffers per step; the values and gradients are the same bits.
    ///
    /// # Panics
    /// As [`SparseLinear::forward`]; [`SparseLinear::try_forward_relu`] returns errors instead.
    pub fn forward_relu<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self.try_forward_relu(x)
            .unwrap_or_else(|e| panic!("SparseLinear: {e}"))
    }

    /// [`SparseLinear::forward_relu`], with bad coordinates or input shapes as errors.
    ///
    /// # Errors
    /// As [`SparseLinear::try_forward`].
    pub fn try_forward_relu<const D: usize>(&self, x: Tensor<D>) -> LResult<Tensor<D>> {
        self.forward_with(x, None, true)
    }

    /// The forward pass, with the dense `probe` of [`SparseLinear::forward_probe`] if any, and
    /// ReLU after the bias if `relu`.
    fn forward_with<const D: usize>(
        &self,
        x: Tensor<D>,
        probe: Option<Tensor<2>>,
        relu: bool,
    ) -> LResult<Tensor<D>> {
        let dims = x.dims();
        if dims[D - 1] != self.d_input {
            return Err(LayerError::Shape {
                what: "input",
                expected: vec![self.d_input],
                got: dims.to_vec(),
            });
        }
        let batch: usize = dims[..D - 1].iter().product();
        // Flex copies a non-contiguous tensor on every reshape, even to its own shape, which
        // would turn a feature-major activation row-major: reshape only inputs of rank != 2.
        let x2: Tensor<2> = if D == 2 {
            Tensor::from_dispatch(x.into_dispatch())
        } else {
            x.reshape([batch, self.d_input])
        };
        let y = if self.uses_kernels() {
            let p = self.pattern()?;
            let (x2, v) = (x2.into_dispatch(), self.values.val().into_dispatch());
            type Ops = burn::backend::Dispatch;
            let y = Tensor::<2>::from_dispatch(match probe {
                None => <Ops as SparseLinearBackend>::sparse_matmul(x2, v, p),
                Some(probe) => <Ops as SparseLinearBackend>::sparse_matmul_probe(
                    x2,
                    v,
                    probe.into_dispatch(),
                    p,
                ),
            });
            // `y` is a feature-major view; the op adds the bias in that layout, in place, and
            // sums its gradient from contiguous rows (`y + b` would allocate a row-major copy
            // that the next layer transposes back, and burn's reduction of the transposed
            // gradient cost more than a very sparse layer's products).
            let y = y.into_dispatch();
            Tensor::from_dispatch(match (&self.bias, relu) {
                (Some(b), false) => {
                    <Ops as SparseLinearBackend>::sparse_bias_add(y, b.val().into_dispatch())
                }
                (Some(b), true) => {
                    <Ops as SparseLinearBackend>::sparse_bias_relu(y, b.val().into_dispatch())
                }
                (None, true) => <Ops as SparseLinearBackend>::sparse_relu(y),
                (None, false) => y,
            })
        } else {
            let y = match probe {
                None => x2.matmul(self.dense_weight()),
                Some(probe) => x2.clone().matmul(self.dense_weight()) + x2.matmul(probe),
            };
            let y = match &self.bias {
                Some(b) => y + b.val().unsqueeze::<2>(),
                None => y,
            };
            if relu {
                burn::tensor::activation::relu(y)
            } else {
                y
            }
        };
        let mut out = dims;
        out[D - 1] = self.d_output;
        Ok(if D == 2 {
            Tensor::from_dispatch(y.into_dispatch())
        } else {
            y.reshape(out)
        })
    }

    /// The masked-dense weight `[d_input, d_output]`: the values scattered into zeros,
    /// differentiable in the values (a layer without non-zeros is all zeros, and its empty
    /// values get no gradient).
    pub fn dense_weight(&self) -> Tensor<2> {
        let coords = self.coords.val();
        let device = coords.device();
        let nnz = self.nnz();
        if nnz == 0 {
            return Tensor::<2>::zeros([self.d_input, self.d_output], &device);
        }
        let rows = coords.clone().slice([0..1, 0..nnz]).reshape([nnz]);
        let cols = coords.slice([1..2, 0..nnz]).reshape([nnz]);
        // Flat indices in 64 bits: `d_input * d_output` may exceed i32 (the coordinates do not).
        let flat = rows.cast(IntDType::I64) * (self.d_output as i64) + cols.cast(IntDType::I64);
        Tensor::<1>::zeros([self.d_input * self.d_output], &device)
            .scatter(
                0,
                flat,
                self.values.val(),
                burn::tensor::IndexingUpdateOp::Add,
            )
            .reshape([self.d_input, self.d_output])
    }
}

/// The coordinates as a `[2, nnz]` int tensor of dtype `I32` (8 bytes per non-zero; every
/// dimension fits, since patterns use 32-bit indices). Records keep the dtype.
fn coords_tensor(p: &SparsePattern, device: &Device) -> Tensor<2, Int> {
    let mut data: Vec<i32> = Vec::with_capacity(2 * p.nnz());
    data.extend(p.slot_rows().iter().map(|&r| r as i32));
    data.extend(p.slot_cols().iter().map(|&c| c as i32));
    Tensor::<2, Int>::from_data(TensorData::new(data, [2, p.nnz()]), (device, DType::I32))
}

/// Whether two int tensors are the same storage (a clone), without reading them. Other
/// backends than Flex never use the host pattern, so they answer `false` (rebuild).
fn same_storage(a: &Tensor<2, Int>, b: &Tensor<2, Int>) -> bool {
    fn flex(t: &Tensor<2, Int>) -> Option<burn::backend::flex::FlexTensor> {
        use burn::backend::{Autodiff, Flex};
        t.clone()
            .try_into_primitive::<Flex>()
            .ok()
            .or_else(|| t.clone().try_into_primitive::<Autodiff<Flex>>().ok())
    }
    match (flex(a), flex(b)) {
        (Some(x), Some(y)) => Arc::ptr_eq(&x.data_arc(), &y.data_arc()) && x.layout() == y.layout(),
        _ => false,
    }
}
