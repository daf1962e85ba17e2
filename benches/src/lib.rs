//! Inputs and steps shared by the criterion benches in `benches/` (the benches themselves live
//! there): random splat cases, the tokenizer's synthetic training batch, a training step generic
//! over the backend, and how to wait for a backend's queued work.

pub mod completion;
pub mod splat_cases;
pub mod tokenizer;

pub use completion::Completion;

/// The calling thread's CPU time in milliseconds (Linux: `CLOCK_THREAD_CPUTIME_ID`; elsewhere
/// wall time since the first call). The side-by-side comparisons time single-threaded work with
/// it, so that time spent preempted on a shared machine is not counted.
pub fn thread_cpu_ms() -> f64 {
    #[cfg(target_os = "linux")]
    {
        #[repr(C)]
        struct Timespec {
            tv_sec: i64,
            tv_nsec: i64,
        }
        extern "C" {
            fn clock_gettime(clock: i32, out: *mut Timespec) -> i32;
        }
        const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
        let mut t = Timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `t` is a valid `struct timespec` (64-bit Linux layout) for the call to fill.
        if unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut t) } == 0 {
            return t.tv_sec as f64 * 1e3 + t.tv_nsec as f64 * 1e-6;
        }
    }
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_secs_f64() * 1e3
}
