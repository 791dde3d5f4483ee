//! A small, portable, seedable random number generator.
//!
//! Masks must be bit-identical for the same seed on every platform and every version of this
//! crate, and replicas of a data-parallel run must draw the same numbers from a seed derived
//! from `(seed, step, layer)`. `rand`'s `StdRng` promises neither, so this module implements
//! xoshiro256** (Blackman & Vigna, 2018) seeded through SplitMix64.

/// xoshiro256** seeded by SplitMix64. Deterministic across platforms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparseRng {
    s: [u64; 4],
}

/// SplitMix64's increment, the odd 64-bit golden-ratio constant.
pub const SPLITMIX64_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function (Steele, Lea & Flood, 2014): a fixed bijective mix of 64 bits,
/// the one hash of the workspace (seeds of items, sample positions, the generator's seeding).
pub fn splitmix64_mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One step of SplitMix64: advance `state` by [`SPLITMIX64_GAMMA`] and mix it.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(SPLITMIX64_GAMMA);
    splitmix64_mix(*state)
}

impl SparseRng {
    /// A generator from a 64-bit seed.
    pub fn new(seed: u64) -> Self {
        let mut sm = seed;
        let s = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        Self { s }
    }

    /// A generator for a sub-stream, derived from a seed and a path of integers such as
    /// `(step, layer)`. Every replica that derives the same path draws the same numbers.
    pub fn derive(seed: u64, path: &[u64]) -> Self {
        let mut h = seed ^ 0x5851_F42D_4C95_7F2D;
        for &p in path {
            let mut st = h ^ p.wrapping_mul(0x2545_F491_4F6C_DD1D);
            h = splitmix64(&mut st);
        }
        Self::new(h)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// A uniform float in `[0, 1)` with 24 bits of precision.
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// A uniform float in `[0, 1)` with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform integer in `[0, n)`, without modulo bias (Lemire's method). `n` must be > 0.
    ///
    /// # Panics
    /// Panics if `n == 0` (a programmer error).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "SparseRng::below(0)");
        loop {
            let x = self.next_u64();
            let m = (x as u128) * (n as u128);
            let l = m as u64;
            if l >= n.wrapping_neg() % n {
                return (m >> 64) as u64;
            }
        }
    }

    /// A standard normal sample (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// Shuffle a slice in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, xs: &mut [T]) {
        for i in (1..xs.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            xs.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_derived_streams_differ() {
        let a: Vec<u64> = (0..8)
            .map({
                let mut r = SparseRng::new(7);
                move |_| r.next_u64()
            })
            .collect();
        let mut r = SparseRng::new(7);
        let b: Vec<u64> = (0..8).map(|_| r.next_u64()).collect();
        assert_eq!(a, b);
        let mut x = SparseRng::derive(7, &[1, 0]);
        let mut y = SparseRng::derive(7, &[1, 1]);
        assert_ne!(x.next_u64(), y.next_u64());
    }

    #[test]
    fn below_is_in_range_and_roughly_uniform() {
        let mut r = SparseRng::new(1);
        let mut counts = [0usize; 5];
        for _ in 0..50_000 {
            counts[r.below(5) as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
        let f = r.next_f32();
        assert!((0.0..1.0).contains(&f));
    }
}
