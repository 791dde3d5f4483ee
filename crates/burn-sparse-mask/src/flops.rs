//! Training and inference FLOPs counted as the RigL paper counts them (Evci et al. 2020,
//! arXiv:1911.11134, appendix H): the multiply-adds of the prunable layers' forward pass with
//! each layer's density at that step (`f_S`), twice that for the backward pass, and on a step
//! that also computes the dense weight gradient (RigL's update steps, every SNFS step) the
//! backward's weight-gradient half at full density instead: `3 f_S` per ordinary step and
//! `2 f_S + f_D` per dense-gradient step, against `3 f_D` per dense step. Per example; biases,
//! norms and activations are left out (a few percent of a LeNet's).

use serde::{Deserialize, Serialize};

/// One prunable layer's cost: each of its `numel` weights is used `uses` times per example
/// (1 for a `Linear`, the output positions `h_out * w_out` for a convolution).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerFlops {
    /// The parameter path.
    pub path: String,
    /// Its weights.
    pub numel: usize,
    /// Uses of each weight per example.
    pub uses: u64,
}

/// Forward multiply-adds per example with `nnz[l]` kept weights in layer `l`.
pub fn forward_macs(layers: &[LayerFlops], nnz: &[usize]) -> f64 {
    layers
        .iter()
        .zip(nnz)
        .map(|(l, &k)| k as f64 * l.uses as f64)
        .sum()
}

/// Forward multiply-adds per example of the dense network.
pub fn dense_forward_macs(layers: &[LayerFlops]) -> f64 {
    layers.iter().map(|l| l.numel as f64 * l.uses as f64).sum()
}

/// A run's training multiply-adds so far (per example), and dense training's for as many steps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FlopCount {
    /// Training multiply-adds.
    pub train: f64,
    /// Dense training's for the same steps.
    pub dense_train: f64,
    /// Steps counted.
    pub steps: u64,
}

impl FlopCount {
    /// One step with `nnz` kept per layer; `dense_grad`: it also computes the dense weight
    /// gradient.
    pub fn add_step(&mut self, layers: &[LayerFlops], nnz: &[usize], dense_grad: bool) {
        let (fs, fd) = (forward_macs(layers, nnz), dense_forward_macs(layers));
        self.train += if dense_grad { 2.0 * fs + fd } else { 3.0 * fs };
        self.dense_train += 3.0 * fd;
        self.steps += 1;
    }

    /// `n` ordinary steps with `nnz` kept per layer.
    pub fn add_steps(&mut self, layers: &[LayerFlops], nnz: &[usize], n: u64) {
        let (fs, fd) = (forward_macs(layers, nnz), dense_forward_macs(layers));
        self.train += 3.0 * fs * n as f64;
        self.dense_train += 3.0 * fd * n as f64;
        self.steps += n;
    }

    /// Add another count (an IMP level's training).
    pub fn add(&mut self, other: &FlopCount) {
        self.train += other.train;
        self.dense_train += other.dense_train;
        self.steps += other.steps;
    }

    /// Training multiply-adds relative to `dense` (1 when nothing was counted).
    pub fn ratio_to(&self, dense: f64) -> f64 {
        if dense > 0.0 { self.train / dense } else { 1.0 }
    }

    /// Training multiply-adds relative to dense training for the same steps.
    pub fn train_ratio(&self) -> f64 {
        self.ratio_to(self.dense_train)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rigl_papers_formula_by_hand() {
        // Two layers: 100 weights used once, 10 used 4 times: f_D = 140. At nnz (10, 5):
        // f_S = 10 + 20 = 30. RigL with delta_t = 4: 3 ordinary steps (3 * 90) and one update
        // step (2 * 30 + 140 = 200): 470 against 4 * 420 = 1680; the paper's
        // (3 f_S dT + 2 f_S + f_D) / (dT + 1) per step with dT = 3 gives the same 470 / 4.
        let layers = [
            LayerFlops {
                path: "a".into(),
                numel: 100,
                uses: 1,
            },
            LayerFlops {
                path: "b".into(),
                numel: 10,
                uses: 4,
            },
        ];
        let mut c = FlopCount::default();
        c.add_steps(&layers, &[10, 5], 3);
        c.add_step(&layers, &[10, 5], true);
        assert_eq!(c.train, 470.0);
        assert_eq!(c.dense_train, 1680.0);
        assert_eq!(c.steps, 4);
        let paper = (3.0 * 30.0 * 3.0 + 2.0 * 30.0 + 140.0) / 4.0;
        assert_eq!(c.train / 4.0, paper);
        assert!((c.train_ratio() - 470.0 / 1680.0).abs() < 1e-15);
        // Dense training is 1.
        let mut d = FlopCount::default();
        d.add_steps(&layers, &[100, 10], 7);
        assert_eq!(d.train_ratio(), 1.0);
        let mut total = c.clone();
        total.add(&d);
        assert_eq!(total.steps, 11);
        assert_eq!(total.ratio_to(1680.0), (470.0 + 7.0 * 420.0) / 1680.0);
    }
}
