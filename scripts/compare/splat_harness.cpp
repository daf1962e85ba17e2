// The official splat kernels (gscuda/gs.cu) on the CPU: one loop iteration per CUDA thread,
// the kernel bodies unchanged. `splat.sh` extracts the two `__global__` functions from an
// official checkout into GS_KERNELS at build time (nothing of the official code is kept here).
//
//   splat_harness INPUT REPS   -> one JSON line: {"forward_ms": median, "backward_ms": median,
//                                 "total_ms": median of forward + backward, "reps": REPS}
// (thread CPU time, after one warm-up call)
//
// INPUT is the file the Rust side writes (GPSTOKEN_SPLAT_DUMP in benches/benches/splat.rs):
// u32 header [h, w, c, s] (little endian), then f32 tokens [s, 5 + c] (sigma_x, sigma_y, rho,
// x, y, features) and f32 grad_out [c, h, w]; kappa 3. The official layouts are made from it:
// sigmas [s, 3], coords [s, 2], colors [s, c], grads [h, w, c].
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <vector>

// The CUDA built-ins the kernels read: one block of one thread per launch index.
struct Dim {
    int x;
};
static Dim blockIdx{0}, blockDim{1}, threadIdx{0};
#define __global__ static
// CUDA's `exp(float)` is the float overload; make it the same here.
using std::exp;

#include GS_KERNELS

// The calling thread's CPU time: on a shared machine, time the process spent preempted is not
// counted (the Rust side measures the same way).
static double now_ms() {
    timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s INPUT REPS\n", argv[0]);
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", argv[1]);
        return 1;
    }
    uint32_t hdr[4];
    if (fread(hdr, 4, 4, f) != 4) return 1;
    const int h = hdr[0], w = hdr[1], c = hdr[2], s = hdr[3];
    const int stride = 5 + c;
    std::vector<float> tokens((size_t)s * stride), grad_chw((size_t)c * h * w);
    if (fread(tokens.data(), 4, tokens.size(), f) != tokens.size()) return 1;
    if (fread(grad_chw.data(), 4, grad_chw.size(), f) != grad_chw.size()) return 1;
    fclose(f);
    std::vector<float> sigmas(s * 3), coords(s * 2), colors((size_t)s * c), grads((size_t)h * w * c);
    for (int i = 0; i < s; i++) {
        for (int k = 0; k < 3; k++) sigmas[i * 3 + k] = tokens[(size_t)i * stride + k];
        for (int k = 0; k < 2; k++) coords[i * 2 + k] = tokens[(size_t)i * stride + 3 + k];
        for (int k = 0; k < c; k++) colors[(size_t)i * c + k] = tokens[(size_t)i * stride + 5 + k];
    }
    for (int ch = 0; ch < c; ch++)
        for (int p = 0; p < h * w; p++) grads[(size_t)p * c + ch] = grad_chw[(size_t)ch * h * w + p];
    const float dmax = 3.0f;
    const int reps = atoi(argv[2]);
    std::vector<float> img((size_t)h * w * c), gs(s * 3), gc(s * 2), gcol((size_t)s * c);
    std::vector<double> fwd, bwd, tot;
    double checksum = 0;
    for (int rep = 0; rep < reps + 1; rep++) {  // one warm-up call
        double t0 = now_ms();
        // torch.zeros, then one kernel call per CUDA thread (pixel).
        std::fill(img.begin(), img.end(), 0.0f);
        for (int i = 0; i < h * w; i++) {
            blockIdx.x = i;
            _gs_render_cuda(sigmas.data(), coords.data(), colors.data(), img.data(), s, h, w, c, dmax);
        }
        double t1 = now_ms();
        std::fill(gs.begin(), gs.end(), 0.0f);
        std::fill(gc.begin(), gc.end(), 0.0f);
        std::fill(gcol.begin(), gcol.end(), 0.0f);
        for (int i = 0; i < s; i++) {  // one CUDA thread per Gaussian
            blockIdx.x = i;
            _gs_render_backward_cuda(sigmas.data(), coords.data(), colors.data(), grads.data(), gs.data(),
                                     gc.data(), gcol.data(), s, h, w, c, dmax);
        }
        double t2 = now_ms();
        checksum += img[img.size() / 2] + gs[0] + gcol[0];
        if (rep > 0) {
            fwd.push_back(t1 - t0);
            bwd.push_back(t2 - t1);
            tot.push_back(t2 - t0);
        }
    }
    auto median = [](std::vector<double> v) {
        std::sort(v.begin(), v.end());
        return v[v.size() / 2];
    };
    printf("{\"forward_ms\": %.4f, \"backward_ms\": %.4f, \"total_ms\": %.4f, \"reps\": %d, \"checksum\": %g}\n",
           median(fwd), median(bwd), median(tot), reps, checksum);
    return 0;
}
