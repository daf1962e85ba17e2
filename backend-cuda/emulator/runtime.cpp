// The emulator's grid runner: blocks one after the other; a block's threads are fibers
// (ucontext) run in thread order, each until it finishes or reaches __syncthreads; a barrier
// is passed when every unfinished thread has reached it (CUDA requires all threads to reach
// the same barriers, so one round over the threads is one barrier phase).
//
// GPSTOKEN_CUDA_EMULATOR_ORDER=reverse runs the blocks and, in every phase, the threads in the
// opposite order. A kernel whose threads (or blocks) communicate without a barrier between
// them gives results that depend on which runs first; on a GPU either may. Within one phase
// the two orders run every pair of threads both ways round, so a suite that passes in both
// orders has no read of a value another thread of the same phase writes (missing
// __syncthreads), nor a block reading what another block of the same launch writes.
#include "cuda_shim.hpp"
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <ucontext.h>
#include <vector>

Dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace {
constexpr size_t STACK_BYTES = 256 * 1024;
ucontext_t scheduler;
std::vector<ucontext_t> fibers;
std::vector<char> finished;
unsigned current = 0;
const std::function<void()>* kernel_body = nullptr;

void fiber_main() {
    (*kernel_body)();
    finished[current] = 1;
    // Returning resumes uc_link, the scheduler.
}
}  // namespace

void emu_syncthreads() {
    swapcontext(&fibers[current], &scheduler);
}

static bool reverse_order() {
    static const bool reverse = [] {
        const char* order = std::getenv("GPSTOKEN_CUDA_EMULATOR_ORDER");
        return order != nullptr && std::strcmp(order, "reverse") == 0;
    }();
    return reverse;
}

void emu_run_grid(unsigned grid, unsigned block, const std::function<void()>& body) {
    // One launch at a time in the process: the built-in variables, the fibers and the kernels'
    // __shared__ statics are global.
    static std::mutex one_launch;
    std::lock_guard<std::mutex> lock(one_launch);
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
    kernel_body = &body;
    std::vector<std::vector<char>> stacks(block, std::vector<char>(STACK_BYTES));
    fibers.assign(block, ucontext_t{});
    finished.assign(block, 0);
    const bool reverse = reverse_order();
    for (unsigned i = 0; i < grid; ++i) {
        const unsigned b = reverse ? grid - 1 - i : i;
        blockIdx = {b, 0, 0};
        for (unsigned t = 0; t < block; ++t) {
            getcontext(&fibers[t]);
            fibers[t].uc_stack.ss_sp = stacks[t].data();
            fibers[t].uc_stack.ss_size = STACK_BYTES;
            fibers[t].uc_link = &scheduler;
            makecontext(&fibers[t], fiber_main, 0);
            finished[t] = 0;
        }
        bool any = true;
        while (any) {
            any = false;
            for (unsigned i = 0; i < block; ++i) {
                const unsigned t = reverse ? block - 1 - i : i;
                if (finished[t]) continue;
                current = t;
                threadIdx = {t, 0, 0};
                swapcontext(&scheduler, &fibers[t]);
                any = any || !finished[t];
            }
        }
    }
}
