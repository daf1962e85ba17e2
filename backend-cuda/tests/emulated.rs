//! The conformance suite on the CPU emulator of the kernels (`backend-cuda/emulator/build.sh`),
//! when `GPSTOKEN_CUDA_EMULATOR` names its library: the kernels' logic checked on a machine
//! without a GPU (GEMMs on the built-in kernel, the host's libm for exp/log). Without it, each
//! test prints one `SKIPPED` line.

use gpstoken_backend_cuda::CudaBackend;
use gpstoken_tests::conformance::Tolerances;

gpstoken_tests::conformance_suite!(emulated, fallible CudaBackend::emulated_for_tests(), Tolerances::GPU);
