//! `Sparsity` and `Density`: fractions whose meaning is in the type.

use serde::{Deserialize, Serialize};

use crate::error::{MaskError, Result};

/// A sparsity `s = zeros / size`, validated to lie in `[0, 1)`.
///
/// The number of weights a mask of sparsity `s` keeps out of `n` is `round((1 - s) * n)`
/// (round half away from zero), so it has `n - round((1 - s) * n)` zeros. Every mask builder
/// in burn-sparse uses this one rule ([`Sparsity::kept`]).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Sparsity(f64);

impl Sparsity {
    /// A sparsity in `[0, 1)`.
    ///
    /// # Errors
    /// [`MaskError::InvalidFraction`] for NaN or a value outside `[0, 1)`.
    pub fn new(s: f64) -> Result<Self> {
        if s.is_nan() || !(0.0..1.0).contains(&s) {
            return Err(MaskError::InvalidFraction {
                what: "sparsity",
                value: s,
                range: "[0, 1)",
            });
        }
        Ok(Self(s))
    }

    /// No sparsity at all.
    pub const DENSE: Sparsity = Sparsity(0.0);

    /// The fraction of zeros.
    pub fn value(self) -> f64 {
        self.0
    }

    /// The matching density `1 - s`.
    pub fn density(self) -> Density {
        Density(1.0 - self.0)
    }

    /// How many of `n` weights a mask of this sparsity keeps: `round((1 - s) * n)`.
    pub fn kept(self, n: usize) -> usize {
        self.density().kept(n)
    }
}

impl TryFrom<f64> for Sparsity {
    type Error = MaskError;
    fn try_from(v: f64) -> Result<Self> {
        Sparsity::new(v)
    }
}

impl From<Sparsity> for f64 {
    fn from(s: Sparsity) -> f64 {
        s.0
    }
}

impl std::fmt::Display for Sparsity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sparsity {:.4}", self.0)
    }
}

/// A density `d = nonzeros / size` in `(0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Density(f64);

impl Density {
    /// A density in `(0, 1]`.
    ///
    /// # Errors
    /// [`MaskError::InvalidFraction`] for NaN or a value outside `(0, 1]`.
    pub fn new(d: f64) -> Result<Self> {
        if d.is_nan() || !(d > 0.0 && d <= 1.0) {
            return Err(MaskError::InvalidFraction {
                what: "density",
                value: d,
                range: "(0, 1]",
            });
        }
        Ok(Self(d))
    }

    /// The fraction of non-zeros.
    pub fn value(self) -> f64 {
        self.0
    }

    /// The matching sparsity.
    pub fn sparsity(self) -> Sparsity {
        Sparsity((1.0 - self.0).max(0.0))
    }

    /// How many of `n` weights are kept: `round(d * n)`.
    pub fn kept(self, n: usize) -> usize {
        ((self.0 * n as f64).round() as usize).min(n)
    }
}

impl TryFrom<f64> for Density {
    type Error = MaskError;
    fn try_from(v: f64) -> Result<Self> {
        Density::new(v)
    }
}

impl From<Density> for f64 {
    fn from(d: Density) -> f64 {
        d.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparsity_rejects_out_of_range_and_nan() {
        for bad in [f64::NAN, -0.1, 1.0, 1.5, f64::INFINITY] {
            assert!(matches!(
                Sparsity::new(bad),
                Err(MaskError::InvalidFraction {
                    what: "sparsity",
                    ..
                })
            ));
        }
        assert!(Density::new(0.0).is_err());
        assert!(Density::new(1.0).is_ok());
    }

    #[test]
    fn kept_rounds_half_away_from_zero() {
        let s = Sparsity::new(0.9).unwrap();
        assert_eq!(s.kept(1000), 100); // 0.09999999999999998 * 1000 rounds to 100
        assert_eq!(Sparsity::new(0.5).unwrap().kept(5), 3); // 2.5 -> 3
        assert_eq!(Sparsity::new(0.0).unwrap().kept(7), 7);
    }

    #[test]
    fn serde_validates() {
        assert!(serde_json::from_str::<Sparsity>("1.0").is_err());
        let s: Sparsity = serde_json::from_str("0.95").unwrap();
        assert_eq!(s.value(), 0.95);
    }
}
