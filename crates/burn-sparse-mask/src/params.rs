//! Enumerating a model's parameters by module path, and choosing which ones are prunable.

use std::collections::BTreeSet;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;
use regex::Regex;

use crate::error::{MaskError, Result};

/// One float parameter of a model: its dotted module path, id and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamInfo {
    /// Dotted module path such as `l1.weight` or `features.0.weight`.
    pub path: String,
    /// burn's stable parameter id (kept across `map`, `clone` and records).
    pub id: ParamId,
    /// The shape, in burn's layout (`Linear`: `[d_in, d_out]`, `Conv2d`: `[out, in, k1, k2]`).
    pub shape: Vec<usize>,
    /// Whether the parameter is trainable. `BatchNorm` running statistics are not.
    pub trainable: bool,
}

impl ParamInfo {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Rank (number of dimensions).
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
}

#[derive(Default)]
struct Lister {
    path: Vec<String>,
    out: Vec<ParamInfo>,
}

impl ModuleVisitor for Lister {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.out.push(ParamInfo {
            path: self.path.join("."),
            id: param.id,
            shape: param.lazy_shape().to_vec(),
            // Without autodiff no tensor tracks gradients, so every parameter counts as
            // trainable there; with autodiff, running statistics (BatchNorm) do not.
            trainable: !param.lazy_device().is_autodiff() || param.is_require_grad(),
        });
    }
}

/// Every float parameter of `model`, in visiting order (declaration order of the fields).
pub fn param_infos<M: Module>(model: &M) -> Vec<ParamInfo> {
    let mut lister = Lister::default();
    model.visit(&mut lister);
    lister.out
}

/// Decides which parameters are prunable.
///
/// The default keeps every trainable weight of rank >= 2 (Linear and Conv weights) and leaves
/// biases, norm scales and running statistics dense. Options narrow it by name or regex, or keep
/// the first and/or last prunable layer dense (as RigL's `first_layer_sparsity = 0`).
#[derive(Debug, Clone)]
pub struct ParamFilter {
    min_rank: usize,
    names: Option<Vec<String>>,
    include: Option<Regex>,
    exclude: Option<Regex>,
    keep_first_dense: bool,
    keep_last_dense: bool,
}

impl Default for ParamFilter {
    fn default() -> Self {
        Self {
            min_rank: 2,
            names: None,
            include: None,
            exclude: None,
            keep_first_dense: false,
            keep_last_dense: false,
        }
    }
}

impl ParamFilter {
    /// The default filter: trainable weights of rank >= 2.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only the parameters with exactly these paths. Unknown names are an error at `select`.
    pub fn with_names<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.names = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// Only parameters whose path matches `pattern` (a regex searched anywhere in the path).
    ///
    /// # Errors
    /// [`MaskError::InvalidRegex`] if the pattern does not compile.
    pub fn with_regex(mut self, pattern: &str) -> Result<Self> {
        self.include = Some(compile(pattern)?);
        Ok(self)
    }

    /// Leave out parameters whose path matches `pattern`.
    ///
    /// # Errors
    /// [`MaskError::InvalidRegex`] if the pattern does not compile.
    pub fn excluding_regex(mut self, pattern: &str) -> Result<Self> {
        self.exclude = Some(compile(pattern)?);
        Ok(self)
    }

    /// The smallest rank that is prunable (default 2; 1 would include biases).
    pub fn with_min_rank(mut self, rank: usize) -> Self {
        self.min_rank = rank;
        self
    }

    /// Keep the first prunable layer dense.
    pub fn keep_first_dense(mut self, yes: bool) -> Self {
        self.keep_first_dense = yes;
        self
    }

    /// Keep the last prunable layer dense.
    pub fn keep_last_dense(mut self, yes: bool) -> Self {
        self.keep_last_dense = yes;
        self
    }

    /// The prunable parameters of `model`.
    ///
    /// # Errors
    /// [`MaskError::UnknownParam`] for a name the model lacks, [`MaskError::EmptyPrunableSet`]
    /// when nothing is selected.
    pub fn select<M: Module>(&self, model: &M) -> Result<Vec<ParamInfo>> {
        self.select_from(&param_infos(model))
    }

    /// The prunable parameters among `params`.
    ///
    /// # Errors
    /// As [`ParamFilter::select`].
    pub fn select_from(&self, params: &[ParamInfo]) -> Result<Vec<ParamInfo>> {
        if let Some(names) = &self.names {
            let known: BTreeSet<&str> = params.iter().map(|p| p.path.as_str()).collect();
            for n in names {
                if !known.contains(n.as_str()) {
                    return Err(MaskError::UnknownParam {
                        name: n.clone(),
                        known: known.iter().copied().collect::<Vec<_>>().join(", "),
                    });
                }
            }
        }
        let mut out: Vec<ParamInfo> = params
            .iter()
            .filter(|p| p.trainable && p.rank() >= self.min_rank && p.numel() > 0)
            .filter(|p| match &self.names {
                Some(names) => names.iter().any(|n| n == &p.path),
                None => true,
            })
            .filter(|p| self.include.as_ref().is_none_or(|r| r.is_match(&p.path)))
            .filter(|p| !self.exclude.as_ref().is_some_and(|r| r.is_match(&p.path)))
            .cloned()
            .collect();
        if self.keep_last_dense && !out.is_empty() {
            out.pop();
        }
        if self.keep_first_dense && !out.is_empty() {
            out.remove(0);
        }
        if out.is_empty() {
            return Err(MaskError::EmptyPrunableSet(format!(
                "the filter {self:?} selects none of: {}",
                params
                    .iter()
                    .map(|p| format!("{} {:?}", p.path, p.shape))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(out)
    }
}

fn compile(pattern: &str) -> Result<Regex> {
    Regex::new(pattern).map_err(|e| MaskError::InvalidRegex {
        pattern: pattern.to_string(),
        message: e.to_string(),
    })
}

struct DeviceLister {
    out: std::collections::HashMap<ParamId, burn::tensor::Device>,
}

impl ModuleVisitor for DeviceLister {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.out.insert(param.id, param.lazy_device());
    }
}

/// The device of every float parameter of `model`.
pub fn param_devices<M: Module>(
    model: &M,
) -> std::collections::HashMap<ParamId, burn::tensor::Device> {
    let mut l = DeviceLister {
        out: Default::default(),
    };
    model.visit(&mut l);
    l.out
}
