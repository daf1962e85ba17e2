//! The whole conformance suite (every check of every family, the cross-backend check against
//! the CPU reference, the golden parity tests) on CUDA device `GPSTOKEN_CUDA_DEVICE` (default 0).
//! Without a driver each test prints one `SKIPPED: no CUDA driver found ...` line and passes;
//! with `GPSTOKEN_REQUIRE_CUDA=1` it fails instead.

use gpstoken_backend_cuda::CudaBackend;
use gpstoken_tests::conformance::Tolerances;

gpstoken_tests::conformance_suite!(cuda, fallible CudaBackend::for_tests(), Tolerances::GPU);
