//! The whole conformance suite (every check of every family, the cross-backend check, the golden
//! parity tests) on the CPU backend: on rayon's global pool, and on a pool of two threads, whose
//! cross-backend check against the one-thread reference demands identical bits.

use gpstoken_backend_cpu::CpuBackend;
use gpstoken_tests::conformance::Tolerances;

gpstoken_tests::conformance_suite!(cpu, CpuBackend::new(), Tolerances::CPU);
gpstoken_tests::conformance_suite!(cpu_two_threads, fallible CpuBackend::with_threads(2), Tolerances::CPU);
