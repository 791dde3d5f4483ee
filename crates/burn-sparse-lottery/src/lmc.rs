//! Linear mode connectivity and instability (Frankle et al. 2020, arXiv:1912.05671).

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{LotteryError, Result};

/// Every float parameter, flattened, in visit order (the module's field order).
struct Collect {
    out: Vec<Tensor<1>>,
}

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val().inner();
        let n = t.shape().num_elements();
        self.out.push(t.reshape([n]));
    }
}

struct Lerp {
    other: std::vec::IntoIter<Tensor<1>>,
    alpha: f64,
    mismatch: Option<String>,
}

impl ModuleMapper for Lerp {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(b) = self.other.next() else {
            self.mismatch
                .get_or_insert_with(|| "the second model has fewer parameters".into());
            return param;
        };
        let (id, a, mapper) = param.consume();
        let dims: [usize; D] = a.dims();
        let n: usize = dims.iter().product();
        if b.dims()[0] != n {
            self.mismatch.get_or_insert_with(|| {
                format!(
                    "a parameter of shape {dims:?} meets one of {} values",
                    b.dims()[0]
                )
            });
            return Param::from_mapped_value(id, a, mapper);
        }
        let ad = a.is_autodiff();
        let mixed = a.inner() * (1.0 - self.alpha) + b.reshape(dims) * self.alpha;
        let mixed = if ad { Tensor::from_inner(mixed) } else { mixed };
        Param::from_mapped_value(id, mixed, mapper)
    }
}

/// `(1 - alpha) * a + alpha * b` for every float parameter, matched by position (the module's
/// field order), so two copies of one architecture interpolate whatever their parameter ids:
/// two trainings from one rewind point, or checkpoints loaded into fresh models. The result
/// keeps `a`'s ids.
///
/// # Errors
/// [`LotteryError::ModelMismatch`] when the two models do not have the same
/// parameters (count and sizes).
pub fn interpolate<M: Module>(a: &M, b: &M, alpha: f64) -> Result<M> {
    let mut c = Collect { out: Vec::new() };
    b.visit(&mut c);
    let mut lerp = Lerp {
        other: c.out.into_iter(),
        alpha,
        mismatch: None,
    };
    let mixed = a.clone().map(&mut lerp);
    if lerp.other.next().is_some() {
        lerp.mismatch
            .get_or_insert_with(|| "the second model has more parameters".into());
    }
    match lerp.mismatch {
        Some(m) => Err(LotteryError::ModelMismatch(format!(
            "cannot interpolate: {m}"
        ))),
        None => Ok(mixed),
    }
}

/// The error along the linear path between two trained networks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LmcReport {
    /// The interpolation points `alpha` in `[0, 1]`.
    pub alphas: Vec<f64>,
    /// Test error (%) at each point.
    pub errors: Vec<f64>,
    /// `max(errors) - mean(errors[0], errors[last])`: the error barrier.
    pub instability: f64,
}

/// Evaluate the error of `(1-a) w_A + a w_B` at `points` evenly spaced values of `a` in
/// `[0, 1]` (the ends included), with `error` giving a model's test error in percent.
///
/// # Errors
/// Whatever `error` returns.
pub fn linear_mode_connectivity<M: Module>(
    a: &M,
    b: &M,
    points: usize,
    mut error: impl FnMut(&M) -> Result<f64>,
) -> Result<LmcReport> {
    let points = points.max(2);
    let alphas: Vec<f64> = (0..points)
        .map(|i| i as f64 / (points - 1) as f64)
        .collect();
    let mut errors = Vec::with_capacity(points);
    for &al in &alphas {
        let m = if al == 0.0 {
            a.clone()
        } else if al == 1.0 {
            b.clone()
        } else {
            interpolate(a, b, al)?
        };
        errors.push(error(&m)?);
    }
    let ends = (errors[0] + errors[points - 1]) / 2.0;
    let max = errors.iter().cloned().fold(f64::MIN, f64::max);
    Ok(LmcReport {
        alphas,
        errors,
        instability: max - ends,
    })
}
