// Host C++ stand-ins for the CUDA built-ins the kernels use, so kernels/*.cu compile with g++
// and run on the CPU (emulator/build.sh; docs/CUDA.md). One block runs at a time, its threads
// as fibers on one OS thread that switch at __syncthreads, so __shared__ variables can be plain
// statics and a kernel without barriers runs its threads one after the other.
#pragma once
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>

#define __global__
#define __device__
// Every __shared__ variable goes into one section, which the runner fills with 0xFF bytes (NaN
// as float, 0xFFFFFFFF as uint) before each block: on a GPU shared memory starts undefined, so
// a kernel that reads it before writing it fails here instead of seeing zeros or what the
// previous block left. (Not under AddressSanitizer, which puts no redzones around variables in
// a section of their own and would lose the __shared__ arrays' bounds checks.)
#ifdef GPSTOKEN_EMU_ASAN
#define __shared__ static
#else
#define __shared__ static __attribute__((section("emu_shared")))
#endif
#define __align__(n) alignas(n)
#define __restrict__

struct Dim3 {
    unsigned x, y, z;
};
extern Dim3 threadIdx, blockIdx, blockDim, gridDim;

// Switches to the next thread of the block (runtime.cpp); returns when every thread of the
// block has reached the barrier.
void emu_syncthreads();
inline void __syncthreads() { emu_syncthreads(); }
inline void __threadfence_block() {}

inline float __int_as_float(int v) { return std::bit_cast<float>(v); }
inline float __uint_as_float(unsigned v) { return std::bit_cast<float>(v); }
inline unsigned __float_as_uint(float v) { return std::bit_cast<unsigned>(v); }
inline unsigned atomicAdd(unsigned* at, unsigned v) { return std::atomic_ref<unsigned>(*at).fetch_add(v); }

using std::ceil;
using std::exp;
using std::fabs;
using std::floor;
using std::fma;
using std::isfinite;
using std::log;
using std::sqrt;
using std::tanh;
inline float fminf(float a, float b) { return std::fmin(a, b); }
inline float fmaxf(float a, float b) { return std::fmax(a, b); }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
