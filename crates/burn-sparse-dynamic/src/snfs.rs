//! SNFS, sparse momentum (Dettmers & Zettlemoyer 2019, arXiv:1907.04840).
//!
//! At every step the updater keeps an exponential moving average of the dense gradients on the
//! device, `m = beta * m + g` (the SGD momentum buffer of the reference, without its masking).
//! At each update (by default after each epoch):
//! 1. prune `floor(p * n_active)` of every layer by smallest |w|, with `p` cosine-decayed from
//!    0.5;
//! 2. redistribute the pruned total across layers in proportion to each layer's mean |m| over
//!    its active weights, each layer capped at its free capacity, leftovers redistributed;
//! 3. grow each layer's share at the inactive positions with the largest |m|.

use crate::error::Result;
use burn::tensor::Tensor;
use burn_sparse_mask::Result as MaskResult;
use burn_sparse_mask::{
    DropFraction, LayerView, MaskError, TopologyChange, TopologyUpdater, UpdateSchedule, to_host,
};
use serde::{Deserialize, Serialize};

use crate::drop_grow::{GrowInit, UpdateRecord, grown_values, record_update};
use crate::engine::{drop_and_grow, drop_count};

/// SNFS hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SnfsConfig {
    /// When updates happen (the reference: after every epoch).
    pub schedule: UpdateSchedule,
    /// The prune rate `p` and its decay (the reference: 0.5, cosine).
    pub prune_rate: DropFraction,
    /// The EMA factor of the gradient momentum (0.9).
    pub beta: f64,
    /// Initial value of grown weights.
    pub init: GrowInit,
    /// Seed (for `GrowInit::Normal`).
    pub seed: u64,
}

impl SnfsConfig {
    /// The reference's defaults for a run of `total_steps` with `steps_per_epoch`.
    ///
    /// # Errors
    /// If the run is shorter than one epoch.
    pub fn reference(total_steps: u64, steps_per_epoch: u64, seed: u64) -> Result<Self> {
        Ok(Self {
            schedule: UpdateSchedule::new(0, total_steps, steps_per_epoch)?,
            prune_rate: DropFraction::Cosine { alpha: 0.5 },
            beta: 0.9,
            init: GrowInit::Zero,
            seed,
        })
    }
}

/// Split `total` over layers in proportion to `weights`, each capped at `caps[l]`; leftovers
/// from capped layers go to the others. Exact: returns counts summing to
/// `min(total, sum(caps))`. Non-finite or non-positive weights count as 0 (if all are 0, the
/// split is even).
pub fn redistribute(total: usize, weights: &[f64], caps: &[usize]) -> Vec<usize> {
    let n = weights.len();
    let mut growth = vec![0usize; n];
    let w: Vec<f64> = weights
        .iter()
        .map(|&x| if x.is_finite() && x > 0.0 { x } else { 0.0 })
        .collect();
    let mut remaining = total.min(caps.iter().sum());
    while remaining > 0 {
        let open: Vec<usize> = (0..n).filter(|&l| growth[l] < caps[l]).collect();
        if open.is_empty() {
            break;
        }
        let sum: f64 = open.iter().map(|&l| w[l]).sum();
        let share = |l: usize| {
            if sum > 0.0 {
                remaining as f64 * w[l] / sum
            } else {
                remaining as f64 / open.len() as f64
            }
        };
        let mut placed = 0usize;
        for &l in &open {
            let add = (share(l).floor() as usize).min(caps[l] - growth[l]);
            growth[l] += add;
            placed += add;
        }
        if placed == 0 {
            // All shares are below one: one each, by largest share, ties to the lower index.
            let mut order = open.clone();
            order.sort_by(|&a, &b| share(b).total_cmp(&share(a)).then(a.cmp(&b)));
            for l in order {
                if placed == remaining {
                    break;
                }
                if growth[l] < caps[l] {
                    growth[l] += 1;
                    placed += 1;
                }
            }
        }
        remaining -= placed;
    }
    growth
}

/// The SNFS topology updater.
pub struct Snfs {
    cfg: SnfsConfig,
    ema: Option<Vec<Tensor<1>>>,
    history: Vec<UpdateRecord>,
}

impl Snfs {
    /// SNFS with this config.
    ///
    /// # Errors
    /// [`MaskError::InvalidFraction`] for a prune rate outside `[0, 1]` or `beta` outside
    /// `[0, 1)`.
    pub fn new(cfg: SnfsConfig) -> Result<Self> {
        cfg.prune_rate.validate()?;
        if cfg.beta.is_nan() || !(0.0..1.0).contains(&cfg.beta) {
            return Err(MaskError::InvalidFraction {
                what: "SNFS beta",
                value: cfg.beta,
                range: "[0, 1)",
            }
            .into());
        }
        Ok(Self {
            cfg,
            ema: None,
            history: Vec::new(),
        })
    }
    /// Every update so far.
    pub fn history(&self) -> &[UpdateRecord] {
        &self.history
    }
}

impl TopologyUpdater for Snfs {
    fn name(&self) -> &str {
        "snfs"
    }
    fn is_update_step(&self, t: u64) -> bool {
        self.cfg.schedule.is_update_step(t)
    }
    fn observes_every_step(&self) -> bool {
        true
    }
    fn observe(&mut self, _t: u64, grads: &[Tensor<1>]) -> MaskResult<()> {
        self.ema = Some(match self.ema.take() {
            Some(m) if m.len() == grads.len() => m
                .into_iter()
                .zip(grads)
                .map(|(m, g)| {
                    let m = if m.device() != g.device() {
                        m.to_device(&g.device())
                    } else {
                        m
                    };
                    m * self.cfg.beta + g.clone()
                })
                .collect(),
            _ => grads.to_vec(),
        });
        Ok(())
    }
    fn update(&mut self, t: u64, layers: &[LayerView<'_>]) -> MaskResult<Option<TopologyChange>> {
        let Some(ema) = &self.ema else {
            return Ok(None);
        };
        let p = self.cfg.prune_rate.at(t, &self.cfg.schedule);
        let mom: Vec<Vec<f32>> = ema
            .iter()
            .map(|m| to_host(m.clone()).map(|v| v.iter().map(|x| x.abs()).collect()))
            .collect::<MaskResult<_>>()?;
        if let Some((l, i)) = mom
            .iter()
            .enumerate()
            .find_map(|(l, m)| m.iter().position(|x| x.is_nan()).map(|i| (l, i)))
        {
            let msg = format!("step {t}: SNFS update skipped: NaN momentum in layer {l} at {i}");
            burn_sparse_mask::stderr_line!("warning: {msg}");
            return Ok(None);
        }
        // 1. prune per layer.
        let mut after = Vec::with_capacity(layers.len());
        let mut pruned_total = 0usize;
        let mut contrib = Vec::with_capacity(layers.len());
        let mut caps = Vec::with_capacity(layers.len());
        for (view, m) in layers.iter().zip(&mom) {
            let n_active = view.mask.iter().filter(|&&b| b).count();
            let mean = if n_active == 0 {
                0.0
            } else {
                view.mask
                    .iter()
                    .zip(m)
                    .filter(|(b, _)| **b)
                    .map(|(_, x)| *x as f64)
                    .sum::<f64>()
                    / n_active as f64
            };
            contrib.push(mean);
            let n = drop_count(p, n_active);
            let u = drop_and_grow(&view.param.path, view.mask, view.weights, m, n, 0)?;
            pruned_total += n;
            caps.push(view.mask.len() - (n_active - n));
            after.push(u.mask);
        }
        // 2. redistribute, 3. grow by |momentum|.
        let growth = redistribute(pruned_total, &contrib, &caps);
        let mut masks = Vec::with_capacity(layers.len());
        let mut changed = Vec::with_capacity(layers.len());
        let mut values = Vec::with_capacity(layers.len());
        for (i, ((view, m), (a, g))) in layers
            .iter()
            .zip(&mom)
            .zip(after.iter().zip(&growth))
            .enumerate()
        {
            let u = drop_and_grow(&view.param.path, a, view.weights, m, 0, *g)?;
            let grown: Vec<usize> = (0..u.mask.len())
                .filter(|&j| u.mask[j] && !view.mask[j])
                .collect();
            values.push(grown_values(self.cfg.init, self.cfg.seed, t, i, &grown));
            changed.push(grown.len());
            masks.push(u.mask);
        }
        Ok(Some(record_update(
            &mut self.history,
            t,
            p,
            masks,
            values,
            changed,
        )))
    }
    fn state(&self) -> serde_json::Value {
        let ema: Option<Vec<Vec<f32>>> = self
            .ema
            .as_ref()
            .and_then(|e| e.iter().map(|m| to_host(m.clone()).ok()).collect());
        serde_json::json!({ "history": self.history, "ema": ema })
    }
    fn load_state(&mut self, state: &serde_json::Value) -> MaskResult<()> {
        let bad = |e: String| MaskError::InvalidConfig {
            field: "updater state",
            message: e,
        };
        self.history =
            serde_json::from_value(state["history"].clone()).map_err(|e| bad(e.to_string()))?;
        let ema: Option<Vec<Vec<f32>>> =
            serde_json::from_value(state["ema"].clone()).map_err(|e| bad(e.to_string()))?;
        // The EMA is restored on the default device; it moves with the first observed gradient.
        self.ema = ema.map(|v| {
            v.into_iter()
                .map(|x| {
                    let n = x.len();
                    Tensor::<1>::from_data(
                        burn::tensor::TensorData::new(x, [n]),
                        &Default::default(),
                    )
                })
                .collect()
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redistribution_by_hand() {
        // 100 pruned, weights 1:3:0, caps 50, 1000, 1000 -> 25 and 75, no cap hit.
        assert_eq!(
            redistribute(100, &[1.0, 3.0, 0.0], &[50, 1000, 1000]),
            vec![25, 75, 0]
        );
        // Cap on the second layer: 75 -> 40, the leftover 35 goes to the first (only positive).
        assert_eq!(
            redistribute(100, &[1.0, 3.0, 0.0], &[1000, 40, 1000]),
            vec![60, 40, 0]
        );
        // All weights zero: even split with the remainder to the lowest index.
        assert_eq!(
            redistribute(10, &[0.0, 0.0, 0.0], &[100, 100, 100]),
            vec![4, 3, 3]
        );
    }
}
