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
    /// The type of the module that holds it (`Linear`, `Conv2d`, `Embedding`, `LayerNorm`,
    /// or the user's struct for a bare `Param` field): the container type burn's
    /// `ModuleVisitor::enter_module` reports, without its `Struct:`/`Enum:` prefix.
    pub module: String,
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
    types: Vec<String>,
    out: Vec<ParamInfo>,
}

impl ModuleVisitor for Lister {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.push(name.to_string());
        let t = container_type
            .strip_prefix("Struct:")
            .or_else(|| container_type.strip_prefix("Enum:"))
            .unwrap_or(container_type);
        self.types.push(t.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
        self.types.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.out.push(ParamInfo {
            path: self.path.join("."),
            id: param.id,
            shape: param.lazy_shape().to_vec(),
            // Without autodiff no tensor tracks gradients, so every parameter counts as
            // trainable there; with autodiff, running statistics (BatchNorm) do not.
            trainable: !param.lazy_device().is_autodiff() || param.is_require_grad(),
            module: self.types.last().cloned().unwrap_or_default(),
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
/// The default keeps every trainable weight of rank >= 2 (the weights of `Linear`, the
/// convolutions and the ones nested in burn's attention, feed-forward and recurrent modules)
/// and leaves dense: biases and anything of rank < 2, running statistics, and by module type
/// [`DENSE_MODULE_TYPES`] (embedding tables and every norm), which the references do not prune
/// unless asked. Options narrow it by module type, name or regex, include embeddings, or keep
/// the first and/or last prunable layer dense (as RigL's `first_layer_sparsity = 0`);
/// [`ParamFilter::explain`] says why each parameter is or is not prunable.
#[derive(Debug, Clone)]
pub struct ParamFilter {
    min_rank: usize,
    names: Option<Vec<String>>,
    include: Option<Regex>,
    exclude: Option<Regex>,
    keep_first_dense: bool,
    keep_last_dense: bool,
    dense_types: BTreeSet<String>,
    only_types: Option<BTreeSet<String>>,
}

/// The module types whose weights the default filter keeps dense: embeddings and norms.
pub const DENSE_MODULE_TYPES: [&str; 6] = [
    "Embedding",
    "LayerNorm",
    "BatchNorm",
    "GroupNorm",
    "InstanceNorm",
    "RmsNorm",
];

impl Default for ParamFilter {
    fn default() -> Self {
        Self {
            min_rank: 2,
            names: None,
            include: None,
            exclude: None,
            keep_first_dense: false,
            keep_last_dense: false,
            dense_types: DENSE_MODULE_TYPES.iter().map(|t| t.to_string()).collect(),
            only_types: None,
        }
    }
}

/// Why a parameter is, or is not, prunable under a [`ParamFilter`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Selected.
    Prunable,
    /// Not trainable (running statistics).
    NotTrainable,
    /// Its rank is below the filter's minimum (biases, norm scales).
    RankBelow(usize),
    /// Empty.
    Empty,
    /// Its module type is kept dense (embeddings, norms, or a type the filter names).
    DenseModuleType(String),
    /// Its module type is not among the filter's only types.
    OtherModuleType(String),
    /// Not among the filter's names.
    NotNamed,
    /// Its path does not match the filter's regex.
    NotMatched,
    /// Its path matches the filter's exclusion regex.
    Excluded,
    /// The first prunable layer, kept dense.
    FirstKeptDense,
    /// The last prunable layer, kept dense.
    LastKeptDense,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Prunable => write!(f, "prunable"),
            Verdict::NotTrainable => write!(f, "dense: not trainable"),
            Verdict::RankBelow(r) => write!(f, "dense: rank below {r}"),
            Verdict::Empty => write!(f, "dense: empty"),
            Verdict::DenseModuleType(t) => write!(f, "dense: {t} weights are kept dense"),
            Verdict::OtherModuleType(t) => write!(f, "dense: {t} is not a selected module type"),
            Verdict::NotNamed => write!(f, "dense: not among the filter's names"),
            Verdict::NotMatched => write!(f, "dense: path does not match the filter's regex"),
            Verdict::Excluded => write!(f, "dense: path matches the exclusion regex"),
            Verdict::FirstKeptDense => write!(f, "dense: the first prunable layer, kept dense"),
            Verdict::LastKeptDense => write!(f, "dense: the last prunable layer, kept dense"),
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

    /// Prune embedding tables too (kept dense by default).
    pub fn with_embeddings(mut self, yes: bool) -> Self {
        if yes {
            self.dense_types.remove("Embedding");
        } else {
            self.dense_types.insert("Embedding".into());
        }
        self
    }

    /// Also keep the weights of these module types dense (`"Conv2d"`, a struct of yours ...).
    pub fn excluding_types<S: Into<String>>(mut self, types: impl IntoIterator<Item = S>) -> Self {
        self.dense_types.extend(types.into_iter().map(Into::into));
        self
    }

    /// Only the weights of these module types (`"Linear"`, `"Conv2d"` ...).
    pub fn with_types<S: Into<String>>(mut self, types: impl IntoIterator<Item = S>) -> Self {
        self.only_types = Some(types.into_iter().map(Into::into).collect());
        self
    }

    /// Every float parameter of `model` with the reason it is or is not prunable, in visiting
    /// order (the per-layer report).
    pub fn explain<M: Module>(&self, model: &M) -> Vec<(ParamInfo, Verdict)> {
        self.verdicts(&param_infos(model))
    }

    fn verdict(&self, p: &ParamInfo) -> Verdict {
        if !p.trainable {
            Verdict::NotTrainable
        } else if p.rank() < self.min_rank {
            Verdict::RankBelow(self.min_rank)
        } else if p.numel() == 0 {
            Verdict::Empty
        } else if self
            .names
            .as_ref()
            .is_some_and(|n| !n.iter().any(|n| n == &p.path))
        {
            Verdict::NotNamed
        } else if self
            .only_types
            .as_ref()
            .is_some_and(|t| !t.contains(&p.module))
        {
            Verdict::OtherModuleType(p.module.clone())
        } else if self.names.is_none() && self.dense_types.contains(&p.module) {
            // Named parameters are taken whatever their type.
            Verdict::DenseModuleType(p.module.clone())
        } else if self.include.as_ref().is_some_and(|r| !r.is_match(&p.path)) {
            Verdict::NotMatched
        } else if self.exclude.as_ref().is_some_and(|r| r.is_match(&p.path)) {
            Verdict::Excluded
        } else {
            Verdict::Prunable
        }
    }

    fn verdicts(&self, params: &[ParamInfo]) -> Vec<(ParamInfo, Verdict)> {
        let mut out: Vec<(ParamInfo, Verdict)> = params
            .iter()
            .map(|p| (p.clone(), self.verdict(p)))
            .collect();
        let prunable: Vec<usize> = (0..out.len())
            .filter(|&i| out[i].1 == Verdict::Prunable)
            .collect();
        if self.keep_last_dense
            && let Some(&i) = prunable.last()
        {
            out[i].1 = Verdict::LastKeptDense;
        }
        if self.keep_first_dense
            && let Some(&i) = prunable.first()
            && out[i].1 == Verdict::Prunable
        {
            out[i].1 = Verdict::FirstKeptDense;
        }
        out
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
        let out: Vec<ParamInfo> = self
            .verdicts(params)
            .into_iter()
            .filter(|(_, v)| *v == Verdict::Prunable)
            .map(|(p, _)| p)
            .collect();
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
