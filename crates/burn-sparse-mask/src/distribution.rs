//! Sparsity distributions: how a global budget is split over layers.
//!
//! Uniform, ER (Erdős–Rényi, SET: Mocanu et al. 2018, arXiv:1707.04780) and ERK
//! (Erdős–Rényi-Kernel, RigL: Evci et al. 2020, arXiv:1911.11134), with the dense-layer
//! overflow loop of the RigL reference: if the solved scale makes any layer's density exceed 1,
//! every layer with the current maximal score becomes dense, leaves the budget, and the scale is
//! solved again. Without this loop the total misses its target (a known bug in sparse_learning).
//!
//! Counts are exact: the total kept is `sparsity.kept(total)` (see [`Sparsity::kept`]), and the
//! per-layer real-valued shares are rounded by largest remainder (Hamilton's method; ties to
//! the earlier layer), so every layer is within one weight of its share.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{MaskError, Result};
use crate::fraction::Sparsity;
use crate::params::ParamInfo;

/// How a global sparsity is distributed over the prunable layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SparsityDistribution {
    /// Every layer gets the same sparsity.
    Uniform,
    /// Erdős–Rényi: density proportional to `(n_in + n_out) / (n_in * n_out)`.
    ///
    /// `n_in`, `n_out` are the channel dimensions: the two dims of a rank-2 weight, and dims
    /// 1 and 0 of a burn `Conv` weight `[out, in, k..]` of any rank (`Conv1d` rank 3, `Conv2d`
    /// rank 4, `Conv3d` rank 5; the reference's TF layout `[k.., in, out]` has them last, burn
    /// puts them first). A transposed convolution's `[in, out, k..]` gives the same score: it is
    /// symmetric in the two.
    Er,
    /// Erdős–Rényi-Kernel: density proportional to `sum(shape) / prod(shape)` over all dims,
    /// whatever the rank or layout.
    Erk,
    /// A per-layer sparsity for every prunable layer, by path.
    Custom(BTreeMap<String, f64>),
}

impl SparsityDistribution {
    /// The raw (unscaled) score of a layer under this distribution.
    fn raw_score(&self, p: &ParamInfo) -> f64 {
        let s = &p.shape;
        match self {
            SparsityDistribution::Uniform | SparsityDistribution::Custom(_) => 1.0,
            SparsityDistribution::Er => {
                let (a, b) = match s.len() {
                    0 => (1, 1),
                    1 => (s[0], 1),
                    2 => (s[0], s[1]),
                    _ => (s[1], s[0]),
                };
                (a + b) as f64 / (a * b) as f64
            }
            SparsityDistribution::Erk => {
                s.iter().sum::<usize>() as f64 / s.iter().product::<usize>() as f64
            }
        }
    }

    /// Per-layer densities for a global `sparsity`. Layers named in `fixed` get that sparsity
    /// and leave both sums, as in the reference.
    ///
    /// # Errors
    /// Unknown paths in `fixed` or a custom map, an invalid custom sparsity, or a budget that
    /// cannot be met.
    pub fn layer_densities(
        &self,
        layers: &[ParamInfo],
        sparsity: Sparsity,
        fixed: &BTreeMap<String, Sparsity>,
    ) -> Result<Vec<f64>> {
        Ok(self.allocate(layers, sparsity, fixed)?.0)
    }

    /// Per-layer kept counts for a global `sparsity`, exact in total (see the module docs).
    ///
    /// # Errors
    /// As [`SparsityDistribution::layer_densities`].
    pub fn layer_counts(
        &self,
        layers: &[ParamInfo],
        sparsity: Sparsity,
        fixed: &BTreeMap<String, Sparsity>,
    ) -> Result<Vec<usize>> {
        Ok(self.allocate(layers, sparsity, fixed)?.1)
    }

    fn allocate(
        &self,
        layers: &[ParamInfo],
        sparsity: Sparsity,
        fixed: &BTreeMap<String, Sparsity>,
    ) -> Result<(Vec<f64>, Vec<usize>)> {
        if layers.is_empty() {
            return Err(MaskError::EmptyPrunableSet(
                "a distribution needs at least one layer".into(),
            ));
        }
        let known = || {
            layers
                .iter()
                .map(|l| l.path.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        for name in fixed.keys() {
            if !layers.iter().any(|l| &l.path == name) {
                return Err(MaskError::UnknownParam {
                    name: name.clone(),
                    known: known(),
                });
            }
        }
        let n: Vec<f64> = layers.iter().map(|l| l.numel() as f64).collect();
        if let SparsityDistribution::Custom(map) = self {
            for name in map.keys() {
                if !layers.iter().any(|l| &l.path == name) {
                    return Err(MaskError::UnknownParam {
                        name: name.clone(),
                        known: known(),
                    });
                }
            }
            let mut dens = Vec::with_capacity(layers.len());
            let mut counts = Vec::with_capacity(layers.len());
            for l in layers {
                let s = match fixed.get(&l.path) {
                    Some(s) => *s,
                    None => {
                        let v = map.get(&l.path).ok_or_else(|| MaskError::UnknownParam {
                            name: format!("{} (missing from the custom distribution)", l.path),
                            known: map.keys().cloned().collect::<Vec<_>>().join(", "),
                        })?;
                        Sparsity::new(*v)?
                    }
                };
                dens.push(s.density().value());
                counts.push(s.kept(l.numel()));
            }
            return Ok((dens, counts));
        }

        let total: usize = layers.iter().map(ParamInfo::numel).sum();
        let target_kept = sparsity.kept(total);
        let is_fixed: Vec<Option<Sparsity>> =
            layers.iter().map(|l| fixed.get(&l.path).copied()).collect();
        let score: Vec<f64> = layers.iter().map(|l| self.raw_score(l)).collect();
        let mut dense = vec![false; layers.len()];
        let fixed_real: f64 = is_fixed
            .iter()
            .zip(&n)
            .filter_map(|(f, n)| f.map(|s| s.density().value() * n))
            .sum();
        let eps = loop {
            let dense_real: f64 = dense
                .iter()
                .zip(&n)
                .filter(|(d, _)| **d)
                .map(|(_, n)| n)
                .sum();
            let budget = (1.0 - sparsity.value()) * total as f64 - fixed_real - dense_real;
            let free: Vec<usize> = (0..layers.len())
                .filter(|&i| is_fixed[i].is_none() && !dense[i])
                .collect();
            if free.is_empty() {
                if budget > 0.5 {
                    return Err(MaskError::InfeasibleBudget(format!(
                        "{sparsity} needs {budget:.1} more weights than the non-fixed layers hold"
                    )));
                }
                break 0.0;
            }
            if budget < -0.5 {
                return Err(MaskError::InfeasibleBudget(format!(
                    "the fixed and dense layers already keep more weights than {sparsity} allows"
                )));
            }
            let divisor: f64 = free.iter().map(|&i| score[i] * n[i]).sum();
            let eps = budget.max(0.0) / divisor;
            let max_score = free.iter().map(|&i| score[i]).fold(f64::MIN, f64::max);
            if eps * max_score > 1.0 {
                for &i in &free {
                    if score[i] == max_score {
                        dense[i] = true;
                    }
                }
                continue;
            }
            break eps;
        };

        let mut dens = vec![0.0; layers.len()];
        let mut counts = vec![0usize; layers.len()];
        let mut free_idx = Vec::new();
        let mut assigned = 0usize;
        for i in 0..layers.len() {
            if let Some(s) = is_fixed[i] {
                dens[i] = s.density().value();
                counts[i] = s.kept(layers[i].numel());
                assigned += counts[i];
            } else if dense[i] {
                dens[i] = 1.0;
                counts[i] = layers[i].numel();
                assigned += counts[i];
            } else {
                dens[i] = eps * score[i];
                free_idx.push(i);
            }
        }
        // Largest-remainder rounding of the free layers' shares to the exact remaining total.
        let remaining = target_kept as i64 - assigned as i64;
        let shares: Vec<f64> = free_idx.iter().map(|&i| dens[i] * n[i]).collect();
        for (&i, share) in free_idx.iter().zip(&shares) {
            counts[i] = (share.floor() as usize).min(layers[i].numel());
        }
        let mut diff = remaining - free_idx.iter().map(|&i| counts[i] as i64).sum::<i64>();
        let mut order: Vec<usize> = (0..free_idx.len()).collect();
        let frac = |j: usize| shares[j] - shares[j].floor();
        if diff > 0 {
            order.sort_by(|&a, &b| frac(b).total_cmp(&frac(a)).then(a.cmp(&b)));
        } else {
            order.sort_by(|&a, &b| frac(a).total_cmp(&frac(b)).then(a.cmp(&b)));
        }
        // Cycle so that a cap on one layer passes the weight on to the next.
        let mut stalled = 0;
        let mut k = 0;
        while diff != 0 && !order.is_empty() && stalled < order.len() {
            let i = free_idx[order[k % order.len()]];
            if diff > 0 && counts[i] < layers[i].numel() {
                counts[i] += 1;
                diff -= 1;
                stalled = 0;
            } else if diff < 0 && counts[i] > 0 {
                counts[i] -= 1;
                diff += 1;
                stalled = 0;
            } else {
                stalled += 1;
            }
            k += 1;
        }
        if diff != 0 {
            return Err(MaskError::InfeasibleBudget(format!(
                "could not place {diff} weights for {sparsity}"
            )));
        }
        Ok((dens, counts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::ParamId;

    fn layer(path: &str, shape: &[usize]) -> ParamInfo {
        ParamInfo {
            path: path.into(),
            id: ParamId::new(),
            shape: shape.to_vec(),
            trainable: true,
            module: "Linear".into(),
        }
    }

    fn net() -> Vec<ParamInfo> {
        vec![
            layer("a", &[10, 20]),
            layer("b", &[20, 20]),
            layer("c", &[20, 5]),
        ]
    }

    #[test]
    fn erk_by_hand_no_overflow() {
        // Scores: a = 30/200 = 0.15, b = 40/400 = 0.10, c = 25/100 = 0.25.
        // Keep 350 of 700: eps = 350 / (0.15*200 + 0.10*400 + 0.25*100) = 350/95.
        // Densities 0.5526, 0.3684, 0.9211; shares 110.53, 147.37, 92.11 -> floors 110,147,92
        // (349), the one left over goes to the largest remainder (a): 111, 147, 92.
        let s = Sparsity::new(0.5).unwrap();
        let d = SparsityDistribution::Erk
            .layer_densities(&net(), s, &BTreeMap::new())
            .unwrap();
        let eps = 350.0 / 95.0;
        for (got, want) in d.iter().zip([0.15 * eps, 0.10 * eps, 0.25 * eps]) {
            assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        }
        let c = SparsityDistribution::Erk
            .layer_counts(&net(), s, &BTreeMap::new())
            .unwrap();
        assert_eq!(c, vec![111, 147, 92]);
    }

    #[test]
    fn erk_by_hand_with_overflow() {
        // Keep 560 of 700: eps = 560/95 makes c's density 1.47 > 1, so c is dense (100 kept).
        // Then eps = 460 / (30 + 40) = 6.5714: a = 0.9857 (197.14), b = 0.6571 (262.86);
        // floors 197 + 262 = 459, the leftover goes to b: 197, 263, 100 = 560.
        let s = Sparsity::new(0.2).unwrap();
        let c = SparsityDistribution::Erk
            .layer_counts(&net(), s, &BTreeMap::new())
            .unwrap();
        assert_eq!(c, vec![197, 263, 100]);
        let d = SparsityDistribution::Erk
            .layer_densities(&net(), s, &BTreeMap::new())
            .unwrap();
        assert_eq!(d[2], 1.0);
        assert!((d[0] - 0.15 * 460.0 / 70.0).abs() < 1e-12);
    }

    #[test]
    fn er_uses_channel_dims_of_conv() {
        // A conv [out=8, in=4, 3, 3] has ER score (4+8)/(4*8), not the kernel dims' 6/9.
        let conv = layer("conv", &[8, 4, 3, 3]);
        assert!((SparsityDistribution::Er.raw_score(&conv) - 12.0 / 32.0).abs() < 1e-15);
        assert!((SparsityDistribution::Erk.raw_score(&conv) - 18.0 / 288.0).abs() < 1e-15);
    }

    #[test]
    fn uniform_with_fixed_dense_first_layer() {
        // a dense (200); 350 - 200 = 150 over b and c (500): density 0.3 -> 120 and 30.
        let mut fixed = BTreeMap::new();
        fixed.insert("a".to_string(), Sparsity::DENSE);
        let c = SparsityDistribution::Uniform
            .layer_counts(&net(), Sparsity::new(0.5).unwrap(), &fixed)
            .unwrap();
        assert_eq!(c, vec![200, 120, 30]);
    }

    #[test]
    fn custom_needs_every_layer_and_known_names() {
        let mut m = BTreeMap::new();
        m.insert("a".to_string(), 0.5);
        m.insert("b".to_string(), 0.9);
        let err = SparsityDistribution::Custom(m.clone())
            .layer_counts(&net(), Sparsity::DENSE, &BTreeMap::new())
            .unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        m.insert("c".to_string(), 0.0);
        let c = SparsityDistribution::Custom(m.clone())
            .layer_counts(&net(), Sparsity::DENSE, &BTreeMap::new())
            .unwrap();
        assert_eq!(c, vec![100, 40, 100]);
        m.insert("zzz".to_string(), 0.1);
        assert!(matches!(
            SparsityDistribution::Custom(m).layer_counts(&net(), Sparsity::DENSE, &BTreeMap::new()),
            Err(MaskError::UnknownParam { .. })
        ));
    }

    #[test]
    fn infeasible_budget_is_an_error() {
        // Keep 630 of 700 while b (400) is fixed at 90% sparsity (40 kept): a + c hold only 300.
        let mut fixed = BTreeMap::new();
        fixed.insert("b".to_string(), Sparsity::new(0.9).unwrap());
        assert!(matches!(
            SparsityDistribution::Erk.layer_counts(&net(), Sparsity::new(0.1).unwrap(), &fixed),
            Err(MaskError::InfeasibleBudget(_))
        ));
    }
}
