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
    /// `base` for every layer but the pinned ones, which get their own sparsity (RigL's
    /// `first_layer_sparsity` / `last_layer_sparsity`, its `custom_sparsity_map`). Pinned layers
    /// leave both sums, as in the reference: the other layers reach the global sparsity among
    /// themselves, so the network's total differs from it by what the pins change. Build it
    /// with [`SparsityDistribution::pin_first`], [`SparsityDistribution::pin_last`] and
    /// [`SparsityDistribution::pin`].
    Pinned {
        /// The distribution of the layers not pinned.
        base: Box<SparsityDistribution>,
        /// The pins, applied in order (a later pin of the same layer wins).
        pins: Vec<(LayerPin, f64)>,
    },
}

/// Which layer a [`SparsityDistribution::Pinned`] pin names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerPin {
    /// The first prunable layer (in the module's parameter order).
    First,
    /// The last prunable layer.
    Last,
    /// The prunable layer with this path.
    Path(String),
}

impl SparsityDistribution {
    /// This distribution with the first prunable layer at `sparsity` (RigL's
    /// `first_layer_sparsity`; 0 keeps it dense but still masked, unlike
    /// `ParamFilter::keep_first_dense`, which leaves it out of the prunable set).
    pub fn pin_first(self, sparsity: f64) -> Self {
        self.with_pin(LayerPin::First, sparsity)
    }

    /// This distribution with the last prunable layer at `sparsity`.
    pub fn pin_last(self, sparsity: f64) -> Self {
        self.with_pin(LayerPin::Last, sparsity)
    }

    /// This distribution with the layer at `path` at `sparsity`.
    pub fn pin(self, path: impl Into<String>, sparsity: f64) -> Self {
        self.with_pin(LayerPin::Path(path.into()), sparsity)
    }

    fn with_pin(self, pin: LayerPin, sparsity: f64) -> Self {
        match self {
            SparsityDistribution::Pinned { base, mut pins } => {
                pins.push((pin, sparsity));
                SparsityDistribution::Pinned { base, pins }
            }
            base => SparsityDistribution::Pinned {
                base: Box::new(base),
                pins: vec![(pin, sparsity)],
            },
        }
    }

    /// The distribution the unpinned layers follow (itself unless pinned).
    pub fn base(&self) -> &SparsityDistribution {
        match self {
            SparsityDistribution::Pinned { base, .. } => base.base(),
            d => d,
        }
    }

    /// The same distribution with every pinned sparsity multiplied by `factor` (in [0, 1]): a
    /// pruning schedule at `s_t` of a final `s` scales its pins by `s_t / s`, so pinned layers
    /// reach their sparsity on the same schedule as the others.
    pub fn scale_pins(&self, factor: f64) -> Self {
        match self {
            SparsityDistribution::Pinned { base, pins } => SparsityDistribution::Pinned {
                base: Box::new(base.scale_pins(factor)),
                pins: pins
                    .iter()
                    .map(|(p, s)| (p.clone(), s * factor.clamp(0.0, 1.0)))
                    .collect(),
            },
            d => d.clone(),
        }
    }

    /// The pins resolved against `layers`: path -> sparsity.
    fn resolve_pins(
        &self,
        layers: &[ParamInfo],
        into: &mut BTreeMap<String, Sparsity>,
    ) -> Result<()> {
        if let SparsityDistribution::Pinned { base, pins } = self {
            base.resolve_pins(layers, into)?;
            for (pin, s) in pins {
                let path = match pin {
                    LayerPin::First => layers.first().map(|l| l.path.clone()),
                    LayerPin::Last => layers.last().map(|l| l.path.clone()),
                    LayerPin::Path(p) => Some(p.clone()),
                };
                if let Some(path) = path {
                    into.insert(path, Sparsity::new(*s)?);
                }
            }
        }
        Ok(())
    }

    /// The raw (unscaled) score of a layer under this distribution.
    fn raw_score(&self, p: &ParamInfo) -> f64 {
        let s = &p.shape;
        match self {
            SparsityDistribution::Pinned { base, .. } => base.raw_score(p),
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

    /// Per-layer densities for a global `sparsity`. Layers named in `fixed` (or pinned) get
    /// that sparsity and leave both sums, as in the reference: the others reach `sparsity` among
    /// themselves.
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
        if let SparsityDistribution::Pinned { base, .. } = self {
            let mut all = fixed.clone();
            self.resolve_pins(layers, &mut all)?;
            return base.base().allocate(layers, sparsity, &all);
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

        let is_fixed: Vec<Option<Sparsity>> =
            layers.iter().map(|l| fixed.get(&l.path).copied()).collect();
        // The layers not fixed share `sparsity` among themselves (fixed ones leave both sums).
        let total: usize = layers
            .iter()
            .zip(&is_fixed)
            .filter(|(_, f)| f.is_none())
            .map(|(l, _)| l.numel())
            .sum();
        let fixed_kept: usize = layers
            .iter()
            .zip(&is_fixed)
            .filter_map(|(l, f)| f.map(|s| s.kept(l.numel())))
            .sum();
        let target_kept = sparsity.kept(total) + fixed_kept;
        let score: Vec<f64> = layers.iter().map(|l| self.raw_score(l)).collect();
        let mut dense = vec![false; layers.len()];
        let eps = loop {
            let dense_real: f64 = dense
                .iter()
                .zip(&n)
                .filter(|(d, _)| **d)
                .map(|(_, n)| n)
                .sum();
            let budget = (1.0 - sparsity.value()) * total as f64 - dense_real;
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
                    "the dense layers already keep more weights than {sparsity} allows"
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
    fn fixed_layers_leave_both_sums() {
        // a fixed dense (200 kept); b and c (500) share 50% among themselves: 250, uniformly
        // 200 and 50. The network keeps 450 of 700, not 350: the pin leaves both sums.
        let mut fixed = BTreeMap::new();
        fixed.insert("a".to_string(), Sparsity::DENSE);
        let c = SparsityDistribution::Uniform
            .layer_counts(&net(), Sparsity::new(0.5).unwrap(), &fixed)
            .unwrap();
        assert_eq!(c, vec![200, 200, 50]);
    }

    #[test]
    fn pinned_first_and_last_by_hand() {
        // ERK at 50% over b alone (a first, c last are pinned): b keeps round(0.5 * 400) = 200.
        // a at 80% sparsity: round(0.2 * 200) = 40; c at 0: all 100.
        let d = SparsityDistribution::Erk.pin_first(0.8).pin_last(0.0);
        let s = Sparsity::new(0.5).unwrap();
        assert_eq!(
            d.layer_counts(&net(), s, &BTreeMap::new()).unwrap(),
            vec![40, 200, 100]
        );
        let dens = d.layer_densities(&net(), s, &BTreeMap::new()).unwrap();
        assert!((dens[0] - 0.2).abs() < 1e-12 && (dens[2] - 1.0).abs() < 1e-12);
        // Pinning only the first: b and c share ERK at 50% (keep 250 of 500). Scores b = 0.10,
        // c = 0.25: eps = 250 / (40 + 25) = 3.846, so c would be 0.96 dense (96.15) and b
        // 0.3846 (153.85): floors 153 + 96 = 249, the leftover to the larger remainder (b).
        let d = SparsityDistribution::Erk.pin_first(0.8);
        assert_eq!(
            d.layer_counts(&net(), s, &BTreeMap::new()).unwrap(),
            vec![40, 154, 96]
        );
        // By path, and a later pin of the same layer wins.
        let d = SparsityDistribution::Uniform.pin("b", 0.9).pin("b", 0.75);
        assert_eq!(
            d.layer_counts(&net(), s, &BTreeMap::new()).unwrap(),
            vec![100, 100, 50]
        );
        assert_eq!(d.base(), &SparsityDistribution::Uniform);
        // Scaled pins (a schedule half-way to its target).
        let half = SparsityDistribution::Uniform.pin_first(0.8).scale_pins(0.5);
        assert_eq!(
            half.layer_counts(&net(), s, &BTreeMap::new()).unwrap(),
            vec![120, 200, 50]
        );
    }

    #[test]
    fn bad_pins_are_typed_errors() {
        let s = Sparsity::new(0.5).unwrap();
        assert!(matches!(
            SparsityDistribution::Erk
                .pin("nope", 0.5)
                .layer_counts(&net(), s, &BTreeMap::new()),
            Err(MaskError::UnknownParam { .. })
        ));
        for bad in [1.0, -0.1, f64::NAN] {
            assert!(matches!(
                SparsityDistribution::Erk
                    .pin_first(bad)
                    .layer_counts(&net(), s, &BTreeMap::new()),
                Err(MaskError::InvalidFraction { .. })
            ));
        }
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
    fn dense_target_makes_every_layer_dense() {
        // The overflow loop turns layers dense until the budget fits: at sparsity 0 all are.
        let c = SparsityDistribution::Erk
            .layer_counts(&net(), Sparsity::DENSE, &BTreeMap::new())
            .unwrap();
        assert_eq!(c, vec![200, 400, 100]);
    }
}
