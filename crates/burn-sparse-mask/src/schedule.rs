//! Schedules: when a mask update happens, what fraction it drops, and the gradual magnitude
//! pruning sparsity curve.

use serde::{Deserialize, Serialize};

use crate::error::{MaskError, Result};
use crate::fraction::Sparsity;

/// The steps at which a topology update happens.
///
/// An update happens at step `t` when `begin < t <= end` and `(t - begin)` is a multiple of
/// `delta_t`: this is ALGORITHMS.md's `t - last_update >= delta_t` rule with the last update
/// starting at `begin`, written without state so that a resumed run needs no extra counter.
/// So with RigL's defaults (`begin = 0`, `delta_t = 100`) updates happen at 100, 200, ... and
/// none after `end`, where the mask is frozen.
///
/// Deserialising checks what [`UpdateSchedule::new`] checks (one validation convention: a
/// config is valid when built and when read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "UpdateScheduleFields")]
pub struct UpdateSchedule {
    begin: u64,
    end: u64,
    delta_t: u64,
}

/// [`UpdateSchedule`]'s serialised fields, checked on the way in.
#[derive(Deserialize)]
struct UpdateScheduleFields {
    begin: u64,
    end: u64,
    delta_t: u64,
}

impl TryFrom<UpdateScheduleFields> for UpdateSchedule {
    type Error = MaskError;
    fn try_from(f: UpdateScheduleFields) -> Result<Self> {
        Self::new(f.begin, f.end, f.delta_t)
    }
}

impl UpdateSchedule {
    /// A schedule from `begin` to `end` (inclusive) every `delta_t` steps.
    ///
    /// # Errors
    /// [`MaskError::InvalidConfig`] for `delta_t == 0` or `end <= begin`.
    pub fn new(begin: u64, end: u64, delta_t: u64) -> Result<Self> {
        if delta_t == 0 {
            return Err(MaskError::InvalidConfig {
                field: "delta_t",
                message: "must be at least 1".into(),
            });
        }
        if end <= begin {
            return Err(MaskError::InvalidConfig {
                field: "end",
                message: format!("end ({end}) must be greater than begin ({begin})"),
            });
        }
        Ok(Self {
            begin,
            end,
            delta_t,
        })
    }

    /// RigL's default for a run of `total_steps`: begin 0, end at 75% of the steps, delta_t 100.
    ///
    /// # Errors
    /// When `total_steps` is too short to leave any update step.
    pub fn rigl_default(total_steps: u64) -> Result<Self> {
        // In u128: exact for every u64 (3/4 of it fits).
        Self::new(0, (u128::from(total_steps) * 3 / 4) as u64, 100)
    }

    /// The first step that may update.
    pub fn begin(&self) -> u64 {
        self.begin
    }
    /// The last step that may update.
    pub fn end(&self) -> u64 {
        self.end
    }
    /// Steps between updates.
    pub fn delta_t(&self) -> u64 {
        self.delta_t
    }

    /// Whether step `t` updates the topology.
    pub fn is_update_step(&self, t: u64) -> bool {
        t > self.begin && t <= self.end && (t - self.begin).is_multiple_of(self.delta_t)
    }
}

/// The fraction of active weights dropped at an update.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum DropFraction {
    /// `alpha` at every update.
    Constant {
        /// The fraction, in `[0, 1]`.
        alpha: f64,
    },
    /// RigL's cosine decay, `alpha/2 * (1 + cos(pi * min(t', T) / T))`, with
    /// `t' = t - begin` and `T = end - begin`. (The TF reference uses the global `t`; the two
    /// agree when `begin = 0`, the default.)
    Cosine {
        /// The initial fraction, in `[0, 1]` (RigL: 0.3).
        alpha: f64,
    },
    /// `alpha * (1 - min(t', T)/T)`.
    Linear {
        /// The initial fraction, in `[0, 1]`.
        alpha: f64,
    },
    /// `alpha * decay^(t' / delta_t)`: multiplied by `decay` at every update.
    Exponential {
        /// The initial fraction, in `[0, 1]`.
        alpha: f64,
        /// The factor per update, in `(0, 1]`.
        decay: f64,
    },
}

impl Default for DropFraction {
    fn default() -> Self {
        DropFraction::Cosine { alpha: 0.3 }
    }
}

impl DropFraction {
    /// Check that `alpha` (and `decay`) are in range.
    ///
    /// # Errors
    /// [`MaskError::InvalidFraction`] naming the bad value.
    pub fn validate(&self) -> Result<()> {
        let (alpha, decay) = match *self {
            DropFraction::Constant { alpha }
            | DropFraction::Cosine { alpha }
            | DropFraction::Linear { alpha } => (alpha, 1.0),
            DropFraction::Exponential { alpha, decay } => (alpha, decay),
        };
        if alpha.is_nan() || !(0.0..=1.0).contains(&alpha) {
            return Err(MaskError::InvalidFraction {
                what: "drop fraction alpha",
                value: alpha,
                range: "[0, 1]",
            });
        }
        if decay.is_nan() || !(decay > 0.0 && decay <= 1.0) {
            return Err(MaskError::InvalidFraction {
                what: "drop fraction decay",
                value: decay,
                range: "(0, 1]",
            });
        }
        Ok(())
    }

    /// The drop fraction at step `t` under `schedule`. It is 0 after `end`.
    pub fn at(&self, t: u64, schedule: &UpdateSchedule) -> f64 {
        if t > schedule.end {
            return 0.0;
        }
        let tp = t.saturating_sub(schedule.begin) as f64;
        let big_t = (schedule.end - schedule.begin) as f64;
        match *self {
            DropFraction::Constant { alpha } => alpha,
            DropFraction::Cosine { alpha } => {
                alpha / 2.0 * (1.0 + (std::f64::consts::PI * tp.min(big_t) / big_t).cos())
            }
            DropFraction::Linear { alpha } => alpha * (1.0 - tp.min(big_t) / big_t),
            DropFraction::Exponential { alpha, decay } => {
                alpha * decay.powf(tp / schedule.delta_t as f64)
            }
        }
    }
}

/// Gradual magnitude pruning (Zhu & Gupta 2017, arXiv:1710.01878):
/// `s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt))^3` for `t0 <= t <= t0 + n*dt`,
/// `s_i` before and `s_f` after. Pruning happens at `t0, t0 + dt, ..., t0 + n*dt`.
///
/// Deserialising checks what [`GradualPruning::new`] checks.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "GradualPruningFields")]
pub struct GradualPruning {
    initial: Sparsity,
    target: Sparsity,
    begin: u64,
    steps: u64,
    delta_t: u64,
}

/// [`GradualPruning`]'s serialised fields, checked on the way in.
#[derive(Deserialize)]
struct GradualPruningFields {
    initial: Sparsity,
    target: Sparsity,
    begin: u64,
    steps: u64,
    delta_t: u64,
}

impl TryFrom<GradualPruningFields> for GradualPruning {
    type Error = MaskError;
    fn try_from(f: GradualPruningFields) -> Result<Self> {
        Self::new(f.initial, f.target, f.begin, f.steps, f.delta_t)
    }
}

impl GradualPruning {
    /// From `initial` to `target` sparsity over `steps` pruning steps every `delta_t`
    /// starting at `begin`.
    ///
    /// # Errors
    /// [`MaskError::InvalidConfig`] for zero `steps` or `delta_t`, or a target below the start.
    pub fn new(
        initial: Sparsity,
        target: Sparsity,
        begin: u64,
        steps: u64,
        delta_t: u64,
    ) -> Result<Self> {
        if steps == 0 {
            return Err(MaskError::InvalidConfig {
                field: "steps",
                message: "must be at least 1".into(),
            });
        }
        if delta_t == 0 {
            return Err(MaskError::InvalidConfig {
                field: "delta_t",
                message: "must be at least 1".into(),
            });
        }
        if target < initial {
            return Err(MaskError::InvalidConfig {
                field: "target",
                message: format!("{target} is below the initial {initial}"),
            });
        }
        Ok(Self {
            initial,
            target,
            begin,
            steps,
            delta_t,
        })
    }

    /// The final sparsity.
    pub fn target(&self) -> Sparsity {
        self.target
    }

    /// The sparsity at step `t`.
    pub fn sparsity_at(&self, t: u64) -> Sparsity {
        let (si, sf) = (self.initial.value(), self.target.value());
        if t <= self.begin {
            return self.initial;
        }
        let span = (self.steps * self.delta_t) as f64;
        let progress = ((t - self.begin) as f64 / span).min(1.0);
        let s = sf + (si - sf) * (1.0 - progress).powi(3);
        Sparsity::new(s.clamp(si, sf)).unwrap_or(self.target)
    }

    /// Whether step `t` is a pruning step.
    pub fn is_prune_step(&self, t: u64) -> bool {
        t >= self.begin
            && t <= self.begin + self.steps * self.delta_t
            && (t - self.begin).is_multiple_of(self.delta_t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_steps() {
        let s = UpdateSchedule::new(0, 750, 100).unwrap();
        let steps: Vec<u64> = (0..=1000).filter(|&t| s.is_update_step(t)).collect();
        assert_eq!(steps, vec![100, 200, 300, 400, 500, 600, 700]);
        let s = UpdateSchedule::new(50, 250, 100).unwrap();
        let steps: Vec<u64> = (0..=1000).filter(|&t| s.is_update_step(t)).collect();
        assert_eq!(steps, vec![150, 250]);
    }

    #[test]
    fn bad_schedules_are_errors() {
        assert!(matches!(
            UpdateSchedule::new(0, 10, 0),
            Err(MaskError::InvalidConfig {
                field: "delta_t",
                ..
            })
        ));
        assert!(matches!(
            UpdateSchedule::new(10, 10, 1),
            Err(MaskError::InvalidConfig { field: "end", .. })
        ));
        assert!(DropFraction::Cosine { alpha: 1.5 }.validate().is_err());
        assert!(DropFraction::Cosine { alpha: f64::NAN }.validate().is_err());
        assert!(
            DropFraction::Exponential {
                alpha: 0.3,
                decay: 0.0
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn cosine_values_by_hand() {
        // alpha = 0.3, T = 1000: f(0) = 0.3, f(250) = 0.15 * (1 + cos(pi/4)) = 0.256066,
        // f(500) = 0.15, f(750) = 0.15 * (1 - cos(pi/4)) = 0.043934, f(1000) = 0.
        let s = UpdateSchedule::new(0, 1000, 100).unwrap();
        let f = DropFraction::Cosine { alpha: 0.3 };
        let table = [
            (0, 0.3),
            (250, 0.256_066_017_177_982_1),
            (500, 0.15),
            (750, 0.043_933_982_822_017_9),
            (1000, 0.0),
            (1200, 0.0),
        ];
        for (t, want) in table {
            assert!((f.at(t, &s) - want).abs() < 1e-12, "t={t}: {}", f.at(t, &s));
        }
        // begin offset: t' = t - begin.
        let s = UpdateSchedule::new(100, 1100, 100).unwrap();
        assert!((f.at(600, &s) - 0.15).abs() < 1e-12);
        assert!((DropFraction::Linear { alpha: 0.4 }.at(350, &s) - 0.3).abs() < 1e-12);
        assert!(
            (DropFraction::Exponential {
                alpha: 0.4,
                decay: 0.5
            }
            .at(300, &s)
                - 0.1)
                .abs()
                < 1e-12
        );
    }

    #[test]
    fn deserialising_checks_what_new_checks() {
        let s: UpdateSchedule =
            serde_json::from_str(r#"{"begin":0,"end":750,"delta_t":100}"#).unwrap();
        assert_eq!(s, UpdateSchedule::new(0, 750, 100).unwrap());
        let back: UpdateSchedule =
            serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        for bad in [
            r#"{"begin":0,"end":750,"delta_t":0}"#,
            r#"{"begin":5,"end":5,"delta_t":1}"#,
        ] {
            let e = serde_json::from_str::<UpdateSchedule>(bad).unwrap_err();
            assert!(
                e.to_string().contains("delta_t") || e.to_string().contains("end"),
                "{e}"
            );
        }
        let g =
            GradualPruning::new(Sparsity::DENSE, Sparsity::new(0.9).unwrap(), 0, 10, 100).unwrap();
        let back: GradualPruning =
            serde_json::from_str(&serde_json::to_string(&g).unwrap()).unwrap();
        assert_eq!(back, g);
        let bad = r#"{"initial":0.9,"target":0.5,"begin":0,"steps":10,"delta_t":100}"#;
        assert!(
            serde_json::from_str::<GradualPruning>(bad)
                .unwrap_err()
                .to_string()
                .contains("below")
        );
        let bad = r#"{"initial":0.0,"target":0.5,"begin":0,"steps":0,"delta_t":100}"#;
        assert!(serde_json::from_str::<GradualPruning>(bad).is_err());
    }

    #[test]
    fn gradual_pruning_cubic() {
        // s_i = 0, s_f = 0.9, 10 steps of 100 from 0: at t=500, 0.9 + (0 - 0.9)*(0.5)^3 = 0.7875.
        let g =
            GradualPruning::new(Sparsity::DENSE, Sparsity::new(0.9).unwrap(), 0, 10, 100).unwrap();
        assert_eq!(g.sparsity_at(0).value(), 0.0);
        assert!((g.sparsity_at(500).value() - 0.7875).abs() < 1e-12);
        assert!((g.sparsity_at(1000).value() - 0.9).abs() < 1e-12);
        assert!((g.sparsity_at(5000).value() - 0.9).abs() < 1e-12);
        assert!(g.is_prune_step(300) && !g.is_prune_step(350) && !g.is_prune_step(1100));
    }
}
