//! Instruction-set selection.
//!
//! Every kernel body is plain Rust written so that the compiler vectorises it along the batch
//! (fixed-width accumulator arrays, no reassociation). The same body is compiled three times:
//! portable (whatever the build target allows, SSE2 on x86-64), with AVX2 enabled, and with
//! AVX-512F enabled; the widest one the CPU has is chosen at run time. Because the bodies
//! neither reassociate sums nor fuse multiply-adds, every copy computes **bit-identical**
//! results (tested): the instruction set changes the speed, never the numbers.

use std::sync::OnceLock;

/// An instruction set the kernels can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Isa {
    /// Whatever the build target enables (SSE2 on x86-64, NEON on aarch64).
    Portable,
    /// x86-64 AVX2.
    Avx2,
    /// x86-64 AVX-512F.
    Avx512,
}

impl Isa {
    /// Whether this CPU can run `self`.
    pub fn available(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The widest available instruction set, detected once. `BURN_SPARSE_ISA=portable|avx2|avx512`
    /// narrows the choice (an unavailable or unknown value is ignored).
    pub fn detected() -> Isa {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            let best = [Isa::Avx512, Isa::Avx2]
                .into_iter()
                .find(|i| i.available())
                .unwrap_or(Isa::Portable);
            match std::env::var("BURN_SPARSE_ISA").ok().as_deref() {
                Some("portable") => Isa::Portable,
                Some("avx2") if Isa::Avx2.available() => Isa::Avx2,
                Some("avx512") if Isa::Avx512.available() => Isa::Avx512,
                _ => best,
            }
        })
    }

    /// Every instruction set this CPU can run, narrowest first.
    pub fn all_available() -> Vec<Isa> {
        [Isa::Portable, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|i| i.available())
            .collect()
    }
}

/// Whether the CPU has FMA3 (the fused multiply-add of the `fused` kernel copies).
pub(crate) fn fma_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Defines `$name(isa, args..)` that runs `$body(args..)` compiled for `isa`.
///
/// The x86-64 copies are `#[target_feature]` functions; calling one is `unsafe` because the
/// CPU must have the feature. Each call site checks [`Isa::available`] first, which is the whole
/// safety argument; `Kernels::with_isa` refuses an unavailable `Isa`, so no other path exists.
///
/// With `fused` the AVX2 copy also enables FMA3 and runs only where the CPU has it (else the
/// portable copy runs): for a body that fuses explicitly (`f32::mul_add`, exactly rounded on
/// every instruction set, a library call where the target has no FMA), which the AVX2 copy
/// would otherwise also call out of line. AVX-512F implies FMA.
macro_rules! multiversion {
    ($vis:vis fn $name:ident => $body:path, ($($arg:ident : $ty:ty),* $(,)?)) => {
        $crate::simd::multiversion!(@copies "avx2", true, $vis fn $name => $body, ($($arg: $ty),*));
    };
    ($vis:vis fn $name:ident => $body:path, fused, ($($arg:ident : $ty:ty),* $(,)?)) => {
        $crate::simd::multiversion!(
            @copies "avx2,fma", $crate::simd::fma_available(), $vis fn $name => $body,
            ($($arg: $ty),*)
        );
    };
    (@copies $avx2:literal, $avx2_extra:expr, $vis:vis fn $name:ident => $body:path,
     ($($arg:ident : $ty:ty),*)) => {
        // A kernel takes its slices and sizes as they are; a struct per kernel would be noise.
        #[allow(clippy::too_many_arguments)]
        $vis fn $name(isa: $crate::simd::Isa, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            mod x86 {
                #[allow(unused_imports)]
                use super::*;
                #[target_feature(enable = $avx2)]
                #[allow(clippy::too_many_arguments)]
                pub(super) fn avx2($($arg: $ty),*) { $body($($arg),*) }
                #[target_feature(enable = "avx512f")]
                #[allow(clippy::too_many_arguments)]
                pub(super) fn avx512($($arg: $ty),*) { $body($($arg),*) }
            }
            match isa {
                #[cfg(target_arch = "x86_64")]
                $crate::simd::Isa::Avx2 if $crate::simd::Isa::Avx2.available() && $avx2_extra => {
                    // SAFETY: the CPU has AVX2, and FMA3 for a `fused` copy (both checked on
                    // the line above), the only requirements of the copy's `#[target_feature]`.
                    #[allow(unsafe_code)]
                    unsafe { x86::avx2($($arg),*) }
                }
                #[cfg(target_arch = "x86_64")]
                $crate::simd::Isa::Avx512 if $crate::simd::Isa::Avx512.available() => {
                    // SAFETY: the CPU has AVX-512F (checked on the line above), the only
                    // requirement of a `#[target_feature(enable = "avx512f")]` function.
                    #[allow(unsafe_code)]
                    unsafe { x86::avx512($($arg),*) }
                }
                _ => $body($($arg),*),
            }
        }
    };
}
pub(crate) use multiversion;
