//! Linear mode connectivity and instability (Frankle et al. 2020, arXiv:1912.05671).

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use burn_sparse_mask::Result;

struct Collect {
    out: HashMap<ParamId, Tensor<1>>,
}

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val().inner();
        let n = t.shape().num_elements();
        self.out.insert(param.id, t.reshape([n]));
    }
}

struct Lerp {
    other: HashMap<ParamId, Tensor<1>>,
    alpha: f64,
}

impl ModuleMapper for Lerp {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(b) = self.other.get(&param.id).cloned() else {
            return param;
        };
        let (id, a, mapper) = param.consume();
        let ad = a.is_autodiff();
        let dims: [usize; D] = a.dims();
        let mixed = a.inner() * (1.0 - self.alpha) + b.reshape(dims) * self.alpha;
        let mixed = if ad { Tensor::from_inner(mixed) } else { mixed };
        Param::from_mapped_value(id, mixed, mapper)
    }
}

/// `(1 - alpha) * a + alpha * b` for every float parameter. `a` and `b` must be copies of one
/// model (same parameter ids), as two trainings from the same rewind point are.
pub fn interpolate<M: Module>(a: &M, b: &M, alpha: f64) -> M {
    let mut c = Collect {
        out: HashMap::new(),
    };
    b.visit(&mut c);
    a.clone().map(&mut Lerp {
        other: c.out,
        alpha,
    })
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
            interpolate(a, b, al)
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
