//! Run-time choice of the vector instruction set, and the vector `expf` shared by the splat and
//! the activations.

pub(crate) mod expf;

/// Defines `fn $name(args) -> R` (or `unsafe fn`, for an unsafe `$imp` with the same contract)
/// that calls `$imp(args)` (an `#[inline(always)]` function) compiled for AVX-512 or AVX2 where
/// the CPU has them, else for the baseline. The kernels are
/// plain loops over fixed lanes without FMA, so every version computes the same f32 operations in
/// the same order: the instruction set changes the speed, never a bit.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? => $imp:path) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn wide512($($arg: $ty),*) $(-> $ret)? {
                    $imp($($arg),*)
                }
                #[target_feature(enable = "avx2")]
                unsafe fn wide256($($arg: $ty),*) $(-> $ret)? {
                    $imp($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F (checked just above).
                    return unsafe { wide512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2 (checked just above).
                    return unsafe { wide256($($arg),*) };
                }
            }
            $imp($($arg),*)
        }
    };

    ($(#[$meta:meta])* $vis:vis unsafe fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? => $imp:path) => {
        $(#[$meta])*
        $vis unsafe fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn wide512($($arg: $ty),*) $(-> $ret)? {
                    // SAFETY: the caller's contract is `$imp`'s.
                    unsafe { $imp($($arg),*) }
                }
                #[target_feature(enable = "avx2")]
                unsafe fn wide256($($arg: $ty),*) $(-> $ret)? {
                    // SAFETY: the caller's contract is `$imp`'s.
                    unsafe { $imp($($arg),*) }
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F (checked just above); the rest is the caller's.
                    return unsafe { wide512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2 (checked just above); the rest is the caller's.
                    return unsafe { wide256($($arg),*) };
                }
            }
            // SAFETY: the caller's contract is `$imp`'s.
            unsafe { $imp($($arg),*) }
        }
    };
}
pub(crate) use multiversion;
