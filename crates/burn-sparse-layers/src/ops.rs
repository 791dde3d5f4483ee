//! The sparse product `y = x W` as a burn operation with its own backward pass, on the
//! Flex CPU backend (burn's `extension` feature).
//!
//! Activations cross the op **feature-major**: the output `y: [B, N]` is a transposed view of
//! `yᵀ: [N, B]` storage (strides `[1, B]`), and an input that already has that layout (the
//! output of a previous sparse layer, through bias and ReLU, which Flex computes in the same
//! layout) is read without a copy. Only the network's first input and anything a dense layer
//! produced are transposed, once, by the op.

use std::borrow::Cow;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Flex, backend_extension};
use burn::tensor::TensorData;
use burn_sparse_kernels::{Kernels, SparsePattern};

use crate::scratch::Buf;

/// The sparse linear product, routed to the backends that implement it (Flex, with or without
/// autodiff). Call it through [`crate::SparseLinear`], which checks the backend first and falls
/// back to a masked-dense product everywhere else.
#[backend_extension(Flex, Autodiff)]
pub trait SparseLinearBackend: burn::backend::Backend {
    /// `y[B, N] = x[B, K] · W`, with `W` the `[K, N]` weight that holds `values` (slot order)
    /// at `pattern`'s coordinates and zeros elsewhere.
    fn sparse_matmul(
        x: FloatTensor<Self>,
        values: FloatTensor<Self>,
        pattern: Arc<SparsePattern>,
    ) -> FloatTensor<Self>;

    /// `y = x · (W + probe)` for a dense `probe: [K, N]`, whose gradient is the dense
    /// `dL/dW = xᵀ dY` (RigL's grow score). A zero probe (the intended use) costs no dense
    /// product forward and one backward (`xᵀ dY`); a non-zero one is added exactly, densely.
    fn sparse_matmul_probe(
        x: FloatTensor<Self>,
        values: FloatTensor<Self>,
        probe: FloatTensor<Self>,
        pattern: Arc<SparsePattern>,
    ) -> FloatTensor<Self>;

    /// `y + b` for the `[B, N]` output `y` of [`SparseLinearBackend::sparse_matmul`] and a
    /// bias `b: [N]`, keeping `y`'s feature-major layout (in place when `y` is not shared).
    /// Its backward pass sums the output gradient over the batch in one pass over contiguous
    /// memory, in either layout and in the same order (so the same bits); burn's broadcast
    /// `y + b` would reduce a transposed view, which cost more than the products on a very
    /// sparse layer (docs/PERFORMANCE.md).
    fn sparse_bias_add(y: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self>;

    /// `relu(y + b)`: [`SparseLinearBackend::sparse_bias_add`] and ReLU in one pass, in `y`'s
    /// feature-major layout (in place when `y` is not shared). ReLU as burn computes it (a NaN
    /// stays NaN), and its backward pass keeps the output gradient where the output is positive
    /// or NaN and zeroes it elsewhere, in place when it can, before summing the bias gradient:
    /// the same bits as burn's `relu(y + b)`, without its two new activation-sized buffers.
    fn sparse_bias_relu(y: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self>;

    /// `relu(y)` in `y`'s layout (in place when `y` is not shared), with the backward pass of
    /// [`SparseLinearBackend::sparse_bias_relu`].
    fn sparse_relu(y: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// burn's ReLU (Flex's `relu`): NaN propagates.
#[inline]
fn relu1(x: f32) -> f32 {
    if x.is_nan() || x > 0.0 { x } else { 0.0 }
}

/// burn's ReLU backward (Flex's `relu_backward`): the gradient where the output is positive or
/// NaN, else 0.
#[inline]
fn relu_grad1(out: f32, g: f32) -> f32 {
    if out.is_nan() || out > 0.0 { g } else { 0.0 }
}

/// How many activations or gradients the op has transposed since the process started (see
/// [`transposes`]).
static TRANSPOSES: AtomicU64 = AtomicU64::new(0);

/// How many activations or output gradients the sparse op had to transpose into feature-major
/// order since the process started (one relaxed counter; reading it costs nothing). Through a
/// chain of sparse layers only the network's input and row-major gradients from a dense
/// consumer should be; a higher count means a layout copy crept in between layers. A dense
/// layer's gradient that reaches a sparse layer through [`SparseLinearBackend::sparse_relu`]
/// or [`SparseLinearBackend::sparse_bias_relu`] changes layout inside ReLU's backward pass (as
/// it did inside Flex's ReLU backward before) and is not counted.
pub fn transposes() -> u64 {
    TRANSPOSES.load(Ordering::Relaxed)
}

/// Feature-major data: borrowed from a tensor that has that layout, or a transposed copy in a
/// pooled buffer ([`crate::scratch`]).
enum FeatureMajor<'a> {
    Borrowed(&'a [f32]),
    Owned(Buf),
}

impl Deref for FeatureMajor<'_> {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match self {
            FeatureMajor::Borrowed(s) => s,
            FeatureMajor::Owned(b) => b,
        }
    }
}

/// A `[rows, cols]` f32 tensor as feature-major `[cols, rows]` data: borrowed when its layout
/// already is (a transposed view of contiguous storage), else transposed into a pooled buffer
/// (every value of which the transpose writes).
fn as_feature_major(t: &FlexTensor) -> FeatureMajor<'_> {
    if let Some(s) = feature_major_slice(t) {
        return FeatureMajor::Borrowed(s);
    }
    TRANSPOSES.fetch_add(1, Ordering::Relaxed);
    FeatureMajor::Owned(transposed(t))
}

/// A `[rows, cols]` f32 tensor that is not feature-major, transposed into a pooled buffer:
/// straight from its storage when it is row-major, else from a contiguous copy.
fn transposed(t: &FlexTensor) -> Buf {
    let (rows, cols) = dims2(t);
    let strides = t.layout().strides();
    let off = t.layout().start_offset();
    let n = rows * cols;
    let storage: &[f32] = t.storage();
    let row_major = (rows <= 1 || strides[0] == cols as isize) && (cols <= 1 || strides[1] == 1);
    let mut out = Buf::for_overwrite(n);
    if row_major && off + n <= storage.len() {
        Kernels::default()
            .transpose(&storage[off..off + n], rows, cols, &mut out)
            .expect("lengths match the layout");
    } else {
        let c = t.to_contiguous();
        let s: &[f32] = c.storage();
        Kernels::default()
            .transpose(&s[c.layout().start_offset()..][..n], rows, cols, &mut out)
            .expect("lengths match the layout");
    }
    out
}

/// A `[rows, cols]` f32 tensor's values feature-major (`[cols, rows]`, contiguous) in a pooled
/// buffer ([`Buf`], every value written): on Flex straight from the tensor's storage (one copy,
/// or one transpose of a row-major tensor; not counted in [`transposes`], which counts the op's
/// own layout copies), elsewhere through `into_data`. For the host reads of every
/// topology-update step (the streamed RigL taps): a fresh buffer of a few hundred KiB costs a
/// page fault per 4 KiB page on every step, more than the copy.
///
/// # Errors
/// [`crate::LayerError::Data`] if the values cannot be read as `f32`.
pub fn feature_major_host(t: burn::tensor::Tensor<2>) -> crate::Result<Buf> {
    let [rows, cols] = t.dims();
    let inner = t.inner();
    if let Ok(flex) = inner.clone().try_into_primitive::<Flex>()
        && flex.dtype() == burn::tensor::DType::F32
    {
        return Ok(match feature_major_slice(&flex) {
            Some(s) => {
                let mut out = Buf::for_overwrite(s.len());
                out.copy_from_slice(s);
                out
            }
            None => transposed(&flex),
        });
    }
    let host = inner
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| crate::LayerError::Data(format!("{e:?}")))?;
    let mut out = Buf::for_overwrite(rows * cols);
    Kernels::default()
        .transpose(&host, rows, cols, &mut out)
        .map_err(crate::LayerError::from)?;
    Ok(out)
}

/// Where a `[rows, cols]` f32 tensor's data lies feature-major (`[cols, rows]`, contiguous) in
/// its storage, if it does: the start offset.
fn feature_major_offset(t: &FlexTensor) -> Option<usize> {
    let (rows, cols) = dims2(t);
    let strides = t.layout().strides();
    let off = t.layout().start_offset();
    let feature_major =
        (rows <= 1 || strides[0] == 1) && (cols <= 1 || strides[1] == rows as isize);
    let len = t.storage::<f32>().len();
    (feature_major && off + rows * cols <= len).then_some(off)
}

/// A `[rows, cols]` f32 tensor's feature-major data, when it has that layout (no copy).
fn feature_major_slice(t: &FlexTensor) -> Option<&[f32]> {
    let off = feature_major_offset(t)?;
    let (rows, cols) = dims2(t);
    Some(&t.storage::<f32>()[off..off + rows * cols])
}

/// `y + b` (see [`SparseLinearBackend::sparse_bias_add`]): on `y`'s own storage when it is
/// feature-major and not shared, else into a new feature-major tensor. Each element is one
/// `f32` addition, as burn's broadcast addition computes it.
fn bias_add(y: FlexTensor, bias: &FlexTensor) -> FlexTensor {
    elementwise(y, Some(bias), false)
}

/// `y + b` (when `bias`), then burn's ReLU (when `relu`), element by element in one pass: on
/// `y`'s own storage when it is feature-major and not shared, else into a new feature-major
/// tensor.
fn elementwise(mut y: FlexTensor, bias: Option<&FlexTensor>, relu: bool) -> FlexTensor {
    let (b, n) = dims2(&y);
    let bias = bias.map(contiguous_values);
    if b == 0 || n == 0 {
        return y;
    }
    // One feature's row of `b` values: `src` to `dst` (the same row when in place).
    let row = |dst: &mut [f32], src: Option<&[f32]>, j: usize| {
        let bv = bias.as_ref().map(|v| v[j]);
        let f = |v: f32| {
            let v = match bv {
                Some(bv) => v + bv,
                None => v,
            };
            if relu { relu1(v) } else { v }
        };
        match src {
            Some(src) => dst.iter_mut().zip(src).for_each(|(d, &s)| *d = f(s)),
            None => dst.iter_mut().for_each(|d| *d = f(*d)),
        }
    };
    if let Some(off) = feature_major_offset(&y)
        && let Some(storage) = y.try_storage_mut::<f32>()
    {
        let data = &mut storage[off..off + b * n];
        for (j, r) in data.chunks_exact_mut(b).enumerate() {
            row(r, None, j);
        }
        return y;
    }
    let src = as_feature_major(&y);
    let mut out = vec![0.0f32; b * n];
    for (j, (d, s)) in out.chunks_exact_mut(b).zip(src.chunks_exact(b)).enumerate() {
        row(d, Some(s), j);
    }
    from_feature_major(out, b, n)
}

/// ReLU's backward pass (see [`SparseLinearBackend::sparse_bias_relu`]): `dy` kept where the
/// output `out` is positive or NaN, else 0. On `dy`'s own storage when it and `out` are
/// feature-major and `dy` is not shared, else into a new feature-major tensor.
fn relu_backward(mut dy: FlexTensor, out: &FlexTensor) -> FlexTensor {
    let (b, n) = dims2(&dy);
    let o = as_feature_major(out);
    if let Some(off) = feature_major_offset(&dy)
        && let Some(storage) = dy.try_storage_mut::<f32>()
    {
        for (g, &o) in storage[off..off + b * n].iter_mut().zip(o.iter()) {
            *g = relu_grad1(o, *g);
        }
        return dy;
    }
    // A row-major gradient (from a dense layer after this one) changes layout here, in the
    // pass that masks it, as Flex's own ReLU backward did in its binary op: not one of the
    // op's counted transposes ([`transposes`]).
    let mut g = vec![0.0f32; b * n];
    match row_major_slice(&dy) {
        Some(rm) => Kernels::default()
            .transpose(rm, b, n, &mut g)
            .expect("lengths match the layout"),
        None => g.copy_from_slice(&as_feature_major(&dy)),
    }
    for (g, &o) in g.iter_mut().zip(o.iter()) {
        *g = relu_grad1(o, *g);
    }
    from_feature_major(g, b, n)
}

/// A `[rows, cols]` f32 tensor's row-major data, when it has that layout (no copy).
fn row_major_slice(t: &FlexTensor) -> Option<&[f32]> {
    let (rows, cols) = dims2(t);
    let strides = t.layout().strides();
    let off = t.layout().start_offset();
    let storage: &[f32] = t.storage();
    let row_major = (rows <= 1 || strides[0] == cols as isize) && (cols <= 1 || strides[1] == 1);
    (row_major && off + rows * cols <= storage.len()).then(|| &storage[off..off + rows * cols])
}

/// `db[n] = Σ_b dy[b, n]` for `dy: [B, N]`, summed in batch order (`((dy[0, n] + dy[1, n]) +
/// dy[2, n]) + …`) in one pass over contiguous memory whichever the layout, so a feature-major
/// and a row-major gradient give the same bits and neither is transposed.
fn batch_sums(dy: &FlexTensor) -> Vec<f32> {
    let (b, n) = dims2(dy);
    let mut db = vec![0.0f32; n];
    if b == 0 || n == 0 {
        return db;
    }
    if let Some(dyt) = feature_major_slice(dy) {
        // Eight features at a time: eight independent sums in registers, each along its own
        // contiguous row (a single running sum would wait on every addition).
        let mut groups = dyt.chunks_exact(8 * b);
        let mut outs = db.chunks_exact_mut(8);
        for (group, out) in (&mut groups).zip(&mut outs) {
            let rows: [&[f32]; 8] = std::array::from_fn(|k| &group[k * b..(k + 1) * b]);
            let mut acc = [0.0f32; 8];
            for i in 0..b {
                for (a, row) in acc.iter_mut().zip(&rows) {
                    *a += row[i];
                }
            }
            out.copy_from_slice(&acc);
        }
        for (row, o) in groups
            .remainder()
            .chunks_exact(b)
            .zip(outs.into_remainder())
        {
            *o = row.iter().fold(0.0f32, |s, &v| s + v);
        }
        return db;
    }
    let strides = dy.layout().strides();
    let off = dy.layout().start_offset();
    let row_major = (b <= 1 || strides[0] == n as isize) && (n <= 1 || strides[1] == 1);
    let storage: &[f32] = dy.storage();
    let sum_rows = |data: &[f32], db: &mut [f32]| {
        for row in data.chunks_exact(n) {
            for (o, &v) in db.iter_mut().zip(row) {
                *o += v;
            }
        }
    };
    if row_major && off + b * n <= storage.len() {
        sum_rows(&storage[off..off + b * n], &mut db);
    } else {
        let c = dy.to_contiguous();
        let s: &[f32] = c.storage();
        sum_rows(&s[c.layout().start_offset()..][..b * n], &mut db);
    }
    db
}

/// Feature-major data `[cols, rows]` as a `[rows, cols]` tensor (a transposed view, no copy).
fn from_feature_major(data: Vec<f32>, rows: usize, cols: usize) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(data, [cols, rows])).transpose(0, 1)
}

fn dims2(t: &FlexTensor) -> (usize, usize) {
    let d = t.layout().shape();
    (d[0], d[1])
}

/// `xᵀ` as the backward pass keeps it: the input itself when it is feature-major (no copy),
/// else the transposed copy the forward pass made.
#[derive(Debug, Clone)]
enum SavedXt {
    View(FlexTensor),
    Owned(Arc<Buf>),
}

impl SavedXt {
    fn new(x: &FlexTensor) -> Self {
        match as_feature_major(x) {
            FeatureMajor::Borrowed(_) => SavedXt::View(x.clone()),
            FeatureMajor::Owned(v) => SavedXt::Owned(Arc::new(v)),
        }
    }
    fn data(&self) -> FeatureMajor<'_> {
        match self {
            SavedXt::View(x) => as_feature_major(x),
            SavedXt::Owned(v) => FeatureMajor::Borrowed(v),
        }
    }
}

fn forward(x: &FlexTensor, values: &FlexTensor, p: &SparsePattern) -> (SavedXt, FlexTensor) {
    let (b, _) = dims2(x);
    let xt = SavedXt::new(x);
    let v = contiguous_values(values);
    let mut yt = vec![0.0f32; p.cols() * b];
    Kernels::default()
        .forward(p, &v, &xt.data(), b, &mut yt)
        .expect("shapes checked by SparseLinear");
    (xt, from_feature_major(yt, b, p.cols()))
}

fn contiguous_values(values: &FlexTensor) -> Cow<'_, [f32]> {
    match values.as_slice::<f32>() {
        Some(s) => Cow::Borrowed(s),
        None => {
            let c = values.to_contiguous();
            Cow::Owned(c.as_slice::<f32>().expect("contiguous").to_vec())
        }
    }
}

/// Whether a dense probe holds anything but zeros (then it takes part in the products).
fn is_nonzero(probe: &FlexTensor) -> bool {
    probe
        .to_contiguous()
        .as_slice::<f32>()
        .expect("contiguous f32")
        .iter()
        .any(|&v| v != 0.0)
}

/// [`forward`], plus `x · probe` when the probe is not zero.
fn forward_probe(
    x: &FlexTensor,
    values: &FlexTensor,
    probe: &FlexTensor,
    p: &SparsePattern,
) -> (SavedXt, FlexTensor, bool) {
    let (xt, y) = forward(x, values, p);
    let nonzero = is_nonzero(probe);
    let y = if nonzero {
        Flex::float_add(y, Flex::float_matmul(x.clone(), probe.clone()))
    } else {
        y
    };
    (xt, y, nonzero)
}

impl SparseLinearBackend for Flex {
    fn sparse_matmul(
        x: FloatTensor<Self>,
        values: FloatTensor<Self>,
        pattern: Arc<SparsePattern>,
    ) -> FloatTensor<Self> {
        forward(&x, &values, &pattern).1
    }

    fn sparse_matmul_probe(
        x: FloatTensor<Self>,
        values: FloatTensor<Self>,
        probe: FloatTensor<Self>,
        pattern: Arc<SparsePattern>,
    ) -> FloatTensor<Self> {
        forward_probe(&x, &values, &probe, &pattern).1
    }

    fn sparse_bias_add(y: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        bias_add(y, &bias)
    }

    fn sparse_bias_relu(y: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        elementwise(y, Some(&bias), true)
    }

    fn sparse_relu(y: FloatTensor<Self>) -> FloatTensor<Self> {
        elementwise(y, None, true)
    }
}

/// The backward pass of [`SparseLinearBackend::sparse_bias_add`]: `dy` to `y` as it is, its
/// batch sums to the bias.
#[derive(Debug)]
struct BiasAddBackward;

impl Backward<Flex, 2> for BiasAddBackward {
    type State = ();

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_y, node_b] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        if let Some(node) = node_b {
            let n = dims2(&dy).1;
            let db = batch_sums(&dy);
            grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(db, [n])));
        }
        if let Some(node) = node_y {
            grads.register::<Flex>(node.id, dy);
        }
    }
}

/// The backward pass of [`SparseLinearBackend::sparse_bias_relu`]: `dy` masked by ReLU's
/// output (the state), to `y` as it is and, summed over the batch, to the bias.
#[derive(Debug)]
struct BiasReluBackward;

impl Backward<Flex, 2> for BiasReluBackward {
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_y, node_b] = ops.parents;
        let dy = relu_backward(grads.consume::<Flex>(&ops.node), &ops.state);
        if let Some(node) = node_b {
            let n = dims2(&dy).1;
            let db = batch_sums(&dy);
            grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(db, [n])));
        }
        if let Some(node) = node_y {
            grads.register::<Flex>(node.id, dy);
        }
    }
}

/// The backward pass of [`SparseLinearBackend::sparse_relu`]: `dy` masked by ReLU's output
/// (the state).
#[derive(Debug)]
struct ReluBackward;

impl Backward<Flex, 1> for ReluBackward {
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_y] = ops.parents;
        let dy = relu_backward(grads.consume::<Flex>(&ops.node), &ops.state);
        if let Some(node) = node_y {
            grads.register::<Flex>(node.id, dy);
        }
    }
}

/// The backward pass: `dv = SDDMM(xᵀ, dyᵀ)` at the active positions, `dx = (W · dyᵀ)ᵀ` (only
/// when `x` needs a gradient: never for the first layer).
#[derive(Debug)]
struct SparseMatmulBackward;

/// What the backward pass keeps: `xᵀ` (already feature-major), the values, the pattern.
#[derive(Debug, Clone)]
struct SavedForward {
    xt: SavedXt,
    batch: usize,
    values: FlexTensor,
    pattern: Arc<SparsePattern>,
}

impl SavedForward {
    /// `dv = SDDMM(xᵀ, dyᵀ)` at the active positions.
    fn grad_values(&self, dyt: &[f32]) -> FlexTensor {
        let p = &*self.pattern;
        let mut dv = vec![0.0f32; p.nnz()];
        Kernels::default()
            .backward_values(p, &self.xt.data(), dyt, self.batch, &mut dv)
            .expect("shapes fixed at forward");
        FlexTensor::from_data(TensorData::new(dv, [p.nnz()]))
    }

    /// `dx = (W · dyᵀ)ᵀ`, feature-major.
    fn grad_input(&self, dyt: &[f32]) -> FlexTensor {
        let (p, b) = (&*self.pattern, self.batch);
        let v = contiguous_values(&self.values);
        let mut dxt = vec![0.0f32; p.rows() * b];
        Kernels::default()
            .backward_input(p, &v, dyt, b, &mut dxt)
            .expect("shapes fixed at forward");
        from_feature_major(dxt, b, p.rows())
    }
}

impl Backward<Flex, 2> for SparseMatmulBackward {
    type State = SavedForward;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_v] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let s = ops.state;
        let dyt = as_feature_major(&dy);
        if let Some(node) = node_v {
            grads.register::<Flex>(node.id, s.grad_values(&dyt));
        }
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, s.grad_input(&dyt));
        }
    }
}

/// The backward pass of [`SparseLinearBackend::sparse_matmul_probe`]: the values' and the
/// input's as in [`SparseMatmulBackward`], and the probe's `xᵀ dY` as one dense product of the
/// feature-major `xᵀ: [K, B]` (read in place) and `dY: [B, N]`.
#[derive(Debug)]
struct SparseMatmulProbeBackward;

/// [`SavedForward`] and the probe, when it is not zero (then it takes part in `dx`).
#[derive(Debug, Clone)]
struct SavedProbeForward {
    saved: SavedForward,
    nonzero_probe: Option<FlexTensor>,
}

impl Backward<Flex, 3> for SparseMatmulProbeBackward {
    type State = SavedProbeForward;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_v, node_p] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let SavedProbeForward {
            saved: s,
            nonzero_probe,
        } = ops.state;
        let dyt = as_feature_major(&dy);
        if let Some(node) = node_v {
            grads.register::<Flex>(node.id, s.grad_values(&dyt));
        }
        if let Some(node) = node_p {
            let (k, b) = (s.pattern.rows(), s.batch);
            let xt = FlexTensor::from_data(TensorData::new(s.xt.data().to_vec(), [k, b]));
            grads.register::<Flex>(node.id, Flex::float_matmul(xt, dy.clone()));
        }
        if let Some(node) = node_x {
            let dx = s.grad_input(&dyt);
            let dx = match nonzero_probe {
                Some(probe) => {
                    Flex::float_add(dx, Flex::float_matmul(dy, Flex::float_transpose(probe)))
                }
                None => dx,
            };
            grads.register::<Flex>(node.id, dx);
        }
    }
}

impl<C: CheckpointStrategy> SparseLinearBackend for Autodiff<Flex, C> {
    fn sparse_bias_add(y: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        let (yp, y_node) = y.into_parts();
        BiasAddBackward
            .prepare::<C>([y_node, bias.node()])
            .compute_bound()
            .stateless(bias_add(yp, bias.primitive()))
    }

    fn sparse_bias_relu(y: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        let (yp, y_node) = y.into_parts();
        match BiasReluBackward
            .prepare::<C>([y_node, bias.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = elementwise(yp, Some(bias.primitive()), true);
                prep.finish(out.clone(), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(elementwise(yp, Some(bias.primitive()), true)),
        }
    }

    fn sparse_relu(y: FloatTensor<Self>) -> FloatTensor<Self> {
        let (yp, y_node) = y.into_parts();
        match ReluBackward
            .prepare::<C>([y_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = elementwise(yp, None, true);
                prep.finish(out.clone(), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(elementwise(yp, None, true)),
        }
    }

    fn sparse_matmul(
        x: FloatTensor<Self>,
        values: FloatTensor<Self>,
        pattern: Arc<SparsePattern>,
    ) -> FloatTensor<Self> {
        match SparseMatmulBackward
            .prepare::<C>([x.node(), values.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let xp = x.primitive().clone();
                let vp = values.primitive().clone();
                let (xt, y) = forward(&xp, &vp, &pattern);
                let state = SavedForward {
                    xt,
                    batch: dims2(&xp).0,
                    values: vp,
                    pattern,
                };
                prep.finish(state, y)
            }
            OpsKind::UnTracked(prep) => {
                let y = forward(x.primitive(), values.primitive(), &pattern).1;
                prep.finish(y)
            }
        }
    }

    fn sparse_matmul_probe(
        x: FloatTensor<Self>,
        values: FloatTensor<Self>,
        probe: FloatTensor<Self>,
        pattern: Arc<SparsePattern>,
    ) -> FloatTensor<Self> {
        match SparseMatmulProbeBackward
            .prepare::<C>([x.node(), values.node(), probe.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let xp = x.primitive().clone();
                let vp = values.primitive().clone();
                let pp = probe.primitive().clone();
                let (xt, y, nonzero) = forward_probe(&xp, &vp, &pp, &pattern);
                let state = SavedProbeForward {
                    saved: SavedForward {
                        xt,
                        batch: dims2(&xp).0,
                        values: vp,
                        pattern,
                    },
                    nonzero_probe: nonzero.then_some(pp),
                };
                prep.finish(state, y)
            }
            OpsKind::UnTracked(prep) => {
                let y = forward_probe(
                    x.primitive(),
                    values.primitive(),
                    probe.primitive(),
                    &pattern,
                )
                .1;
                prep.finish(y)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::ops::ActivationOps;

    /// `[rows, cols]` row-major data `v` as a row-major and as a feature-major tensor.
    fn both_layouts(v: &[f32], rows: usize, cols: usize) -> (FlexTensor, FlexTensor) {
        let row_major = FlexTensor::from_data(TensorData::new(v.to_vec(), [rows, cols]));
        let mut t = vec![0.0f32; v.len()];
        for i in 0..rows {
            for j in 0..cols {
                t[j * rows + i] = v[i * cols + j];
            }
        }
        (row_major, from_feature_major(t, rows, cols))
    }

    fn host(t: &FlexTensor) -> Vec<f32> {
        t.to_contiguous().as_slice::<f32>().unwrap().to_vec()
    }

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n as u32)
            .map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) % 1000) as f32 / 97.0 - 5.0)
            .collect()
    }

    #[test]
    fn batch_sums_are_the_same_bits_in_every_layout() {
        for (b, n) in [(1, 1), (3, 1), (1, 5), (7, 9), (128, 17), (33, 8)] {
            let v = data(b * n, 3);
            // Σ_b in batch order, as documented.
            let want: Vec<f32> = (0..n)
                .map(|j| (0..b).fold(0.0f32, |s, i| s + v[i * n + j]))
                .collect();
            let (rm, fm) = both_layouts(&v, b, n);
            assert!(feature_major_slice(&fm).is_some());
            // With one row or one column both layouts are the same memory.
            assert_eq!(feature_major_slice(&rm).is_none(), b > 1 && n > 1);
            // A strided view (neither layout): the first `n` columns of a wider tensor.
            let wide: Vec<f32> = v
                .chunks_exact(n)
                .flat_map(|row| row.iter().copied().chain([f32::NAN; 3]))
                .collect();
            let strided = FlexTensor::from_data(TensorData::new(wide, [b, n + 3])).narrow(1, 0, n);
            for (t, what) in [
                (&rm, "row-major"),
                (&fm, "feature-major"),
                (&strided, "strided"),
            ] {
                let got = batch_sums(t);
                assert_eq!(
                    got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    want.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    "{what} {b}x{n}"
                );
            }
        }
        assert!(
            batch_sums(&both_layouts(&[], 0, 4).0)
                .iter()
                .all(|&x| x == 0.0)
        );
    }

    #[test]
    fn bias_add_in_place_copied_or_row_major_is_y_plus_b() {
        let (b, n) = (19, 13);
        let v = data(b * n, 5);
        let bias_v = data(n, 9);
        let bias = FlexTensor::from_data(TensorData::new(bias_v.clone(), [n]));
        let want: Vec<f32> = (0..b * n).map(|i| v[i] + bias_v[i % n]).collect();
        let (rm, fm) = both_layouts(&v, b, n);
        let shared = fm.clone();
        // `fm` is shared with `shared`: a copy, which leaves `shared` as it was.
        let copied = bias_add(fm, &bias);
        assert_eq!(host(&shared), v);
        // Unique: in place, and still feature-major.
        let in_place = bias_add(shared, &bias);
        assert!(feature_major_slice(&in_place).is_some());
        for t in [&copied, &in_place, &bias_add(rm, &bias)] {
            assert!(feature_major_slice(t).is_some());
            assert_eq!(host(t), want);
        }
    }

    #[test]
    fn relu_and_its_backward_in_place_copied_or_row_major_are_burns() {
        let (b, n) = (19, 13);
        let mut v = data(b * n, 5);
        v[7] = f32::NAN;
        v[8] = -0.0;
        let bias_v = data(n, 9);
        let bias = FlexTensor::from_data(TensorData::new(bias_v.clone(), [n]));
        let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
        for with_bias in [false, true] {
            let want: Vec<f32> = (0..b * n)
                .map(|i| {
                    let y = if with_bias {
                        v[i] + bias_v[i % n]
                    } else {
                        v[i]
                    };
                    host(&Flex::relu(FlexTensor::from_data(TensorData::new(
                        vec![y],
                        [1],
                    ))))[0]
                })
                .collect();
            let bias = with_bias.then_some(&bias);
            let (rm, fm) = both_layouts(&v, b, n);
            let shared = fm.clone();
            let copied = elementwise(fm, bias, true);
            assert_eq!(
                bits(host(&shared)),
                bits(v.clone()),
                "a shared input is left as it was"
            );
            let in_place = elementwise(shared, bias, true);
            for t in [&copied, &in_place, &elementwise(rm, bias, true)] {
                assert!(feature_major_slice(t).is_some());
                assert_eq!(bits(host(t)), bits(want.clone()), "bias {with_bias}");
            }
            // The backward pass against Flex's `relu_backward`, for a gradient in each layout
            // and shared (copied) or not (in place).
            let g = data(b * n, 17);
            let out = in_place;
            let want_dy = host(&Flex::relu_backward(
                out.clone(),
                FlexTensor::from_data(TensorData::new(g.clone(), [b, n])),
            ));
            let (g_rm, g_fm) = both_layouts(&g, b, n);
            let g_shared = g_fm.clone();
            let copied = relu_backward(g_fm, &out);
            assert_eq!(host(&g_shared), g, "a shared gradient is left as it was");
            for t in [
                &copied,
                &relu_backward(g_shared, &out),
                &relu_backward(g_rm, &out),
            ] {
                assert!(feature_major_slice(t).is_some());
                assert_eq!(
                    bits(host(t)),
                    bits(want_dy.clone()),
                    "backward, bias {with_bias}"
                );
            }
        }
    }
}
