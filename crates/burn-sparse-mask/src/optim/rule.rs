//! Update rules of the sparse optimizers: SGD (momentum, Nesterov, weight decay) and
//! Adam/AdamW, written once over burn tensors so they run on every backend.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{MaskError, Result};

/// SGD with momentum, following PyTorch's `torch.optim.SGD`:
/// `g += wd*w; v = mu*v + (1 - dampening)*g` (the first step sets `v = g`);
/// `step = g + mu*v` with Nesterov, else `v`; `w -= lr*step`.
///
/// The default dampening is **0**, as in PyTorch and the papers. burn's own `MomentumConfig`
/// defaults to 0.1; set `dampening` to match it if you compare against burn's optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SgdRule {
    /// Momentum factor `mu` (0 disables momentum and its state).
    pub momentum: f64,
    /// Dampening of the gradient in the momentum buffer.
    pub dampening: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// L2 weight decay added to the gradient.
    pub weight_decay: f64,
}

impl Default for SgdRule {
    fn default() -> Self {
        Self {
            momentum: 0.9,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }
    }
}

impl SgdRule {
    /// Plain SGD without momentum.
    pub fn plain() -> Self {
        Self {
            momentum: 0.0,
            ..Self::default()
        }
    }
    /// Set the momentum.
    pub fn with_momentum(mut self, m: f64) -> Self {
        self.momentum = m;
        self
    }
    /// Set the weight decay.
    pub fn with_weight_decay(mut self, wd: f64) -> Self {
        self.weight_decay = wd;
        self
    }
    /// Enable Nesterov momentum.
    pub fn with_nesterov(mut self, yes: bool) -> Self {
        self.nesterov = yes;
        self
    }
    /// Set the dampening.
    pub fn with_dampening(mut self, d: f64) -> Self {
        self.dampening = d;
        self
    }
}

/// Adam (Kingma & Ba, arXiv:1412.6980) and AdamW (Loshchilov & Hutter, arXiv:1711.05101),
/// following PyTorch's update with bias correction.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamRule {
    /// First-moment decay.
    pub beta_1: f64,
    /// Second-moment decay.
    pub beta_2: f64,
    /// Denominator epsilon.
    pub epsilon: f64,
    /// Weight decay: L2 added to the gradient (Adam), or decoupled (AdamW).
    pub weight_decay: f64,
    /// Decoupled weight decay (AdamW): `w *= 1 - lr*wd` before the update.
    pub decoupled: bool,
}

impl Default for AdamRule {
    fn default() -> Self {
        Self {
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
        }
    }
}

impl AdamRule {
    /// AdamW with the given decoupled weight decay.
    pub fn adamw(weight_decay: f64) -> Self {
        Self {
            weight_decay,
            decoupled: true,
            ..Self::default()
        }
    }
}

/// The update rule of a [`SparseOptimizer`](super::SparseOptimizer).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Rule {
    /// SGD with momentum.
    Sgd(SgdRule),
    /// Adam or AdamW.
    Adam(AdamRule),
}

impl From<SgdRule> for Rule {
    fn from(c: SgdRule) -> Self {
        Rule::Sgd(c)
    }
}

impl From<AdamRule> for Rule {
    fn from(c: AdamRule) -> Self {
        Rule::Adam(c)
    }
}

fn check(field: &'static str, v: f64, lo: f64, hi: f64, hi_incl: bool) -> Result<()> {
    let ok = v >= lo && if hi_incl { v <= hi } else { v < hi };
    if v.is_nan() || !ok {
        return Err(MaskError::InvalidConfig {
            field,
            message: format!(
                "{v} is outside [{lo}, {hi}{}",
                if hi_incl { "]" } else { ")" }
            ),
        });
    }
    Ok(())
}

impl Rule {
    /// Check every field.
    ///
    /// # Errors
    /// [`MaskError::InvalidConfig`] naming the field.
    pub fn validate(&self) -> Result<()> {
        match self {
            Rule::Sgd(c) => {
                check("momentum", c.momentum, 0.0, 1.0, false)?;
                check("dampening", c.dampening, 0.0, 1.0, true)?;
                check("weight_decay", c.weight_decay, 0.0, f64::MAX, true)?;
                if c.nesterov && (c.momentum <= 0.0 || c.dampening != 0.0) {
                    return Err(MaskError::InvalidConfig {
                        field: "nesterov",
                        message: "Nesterov needs momentum > 0 and dampening 0".into(),
                    });
                }
            }
            Rule::Adam(c) => {
                check("beta_1", c.beta_1, 0.0, 1.0, false)?;
                check("beta_2", c.beta_2, 0.0, 1.0, false)?;
                check("epsilon", c.epsilon, f64::MIN_POSITIVE, f64::MAX, true)?;
                check("weight_decay", c.weight_decay, 0.0, f64::MAX, true)?;
            }
        }
        Ok(())
    }

    /// Names of the per-parameter state slots.
    pub fn slot_names(&self) -> &'static [&'static str] {
        match self {
            Rule::Sgd(c) if c.momentum > 0.0 => &["velocity"],
            Rule::Sgd(_) => &[],
            Rule::Adam(_) => &["moment_1", "moment_2"],
        }
    }

    /// One update of a parameter. `w` and `g` are on the inner (non-autodiff) backend and `g`
    /// is already masked. `slots` are the state tensors in [`Rule::slot_names`] order, `time`
    /// the number of previous steps of this parameter. Returns the new weight and slots.
    pub(crate) fn update<const D: usize>(
        &self,
        lr: f64,
        w: Tensor<D>,
        mut g: Tensor<D>,
        slots: Option<Vec<Tensor<D>>>,
        time: u64,
    ) -> (Tensor<D>, Vec<Tensor<D>>) {
        match *self {
            Rule::Sgd(c) => {
                if c.weight_decay > 0.0 {
                    g = g + w.clone() * c.weight_decay;
                }
                if c.momentum <= 0.0 {
                    return (w - g * lr, Vec::new());
                }
                let v = match slots.and_then(|mut s| s.pop()) {
                    Some(v) => v * c.momentum + g.clone() * (1.0 - c.dampening),
                    None => g.clone(),
                };
                let step = if c.nesterov {
                    g + v.clone() * c.momentum
                } else {
                    v.clone()
                };
                (w - step * lr, vec![v])
            }
            Rule::Adam(c) => {
                let mut w = w;
                if c.weight_decay > 0.0 {
                    if c.decoupled {
                        w = w * (1.0 - lr * c.weight_decay);
                    } else {
                        g = g + w.clone() * c.weight_decay;
                    }
                }
                let (m, v) = match slots {
                    Some(mut s) if s.len() == 2 => {
                        let v = s.pop().expect("two slots");
                        let m = s.pop().expect("two slots");
                        (
                            m * c.beta_1 + g.clone() * (1.0 - c.beta_1),
                            v * c.beta_2 + g.clone().powi_scalar(2) * (1.0 - c.beta_2),
                        )
                    }
                    _ => (
                        g.clone() * (1.0 - c.beta_1),
                        g.powi_scalar(2) * (1.0 - c.beta_2),
                    ),
                };
                let t = (time + 1) as i32;
                let bc1 = 1.0 - c.beta_1.powi(t);
                let bc2 = 1.0 - c.beta_2.powi(t);
                let denom = (v.clone() / bc2).sqrt() + c.epsilon;
                let w = w - (m.clone() / bc1) / denom * lr;
                (w, vec![m, v])
            }
        }
    }
}
