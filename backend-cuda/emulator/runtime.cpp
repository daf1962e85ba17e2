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
//
// Built with SANITIZE=thread (build.sh), every thread of a block is a ThreadSanitizer fiber and
// the only happens-before edges between them are the ones CUDA gives: a barrier (each thread
// releases at it and acquires once past it) and the end of the block (blocks run one after the
// other, so the next block's threads may reuse the same __shared__ statics). Two threads of a
// block touching one address in the same barrier phase, one of them writing and not with an
// atomic, is then a reported data race: the lost updates that fibers, which never interleave,
// cannot show in either order (a CPU stand-in for compute-sanitizer's racecheck).
#include "cuda_shim.hpp"
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <ucontext.h>
#include <vector>
#ifdef GPSTOKEN_EMU_TSAN
#include <sanitizer/tsan_interface.h>
extern "C" void AnnotateIgnoreWritesBegin(const char* file, int line);
extern "C" void AnnotateIgnoreWritesEnd(const char* file, int line);
#endif

Dim3 threadIdx, blockIdx, blockDim, gridDim;

#ifndef GPSTOKEN_EMU_ASAN
// The kernels' __shared__ variables (cuda_shim.hpp), between these two linker-made symbols.
extern "C" char __start_emu_shared[], __stop_emu_shared[];
static void poison_shared_memory() {
    std::memset(__start_emu_shared, 0xFF, size_t(__stop_emu_shared - __start_emu_shared));
}
#else
static void poison_shared_memory() {}
#endif

namespace {
constexpr size_t STACK_BYTES = 256 * 1024;
ucontext_t scheduler;
std::vector<ucontext_t> fibers;
std::vector<char> finished;
unsigned current = 0;
const std::function<void()>* kernel_body = nullptr;

#ifdef GPSTOKEN_EMU_TSAN
// The happens-before edges a GPU guarantees, told to ThreadSanitizer. The scheduler switches to a
// thread with an edge (what the host wrote before the launch, and the previous blocks, come
// first) and back without one, so the threads of a block see each other only through these.
struct RaceModel {
    void* host = nullptr;
    std::vector<void*> threads;
    std::vector<unsigned> phase;
    char phase_sync[2] = {0, 0};  // alternate: a phase's releases never reach the same phase
    char block_sync = 0;

    // The scheduler's writes of the built-in variables (threadIdx...) are the emulator's, not
    // the kernel's: a GPU thread's threadIdx is its own register.
    void scheduler_begin() { AnnotateIgnoreWritesBegin(__FILE__, __LINE__); }
    void scheduler_end() { AnnotateIgnoreWritesEnd(__FILE__, __LINE__); }
    void block_begin(unsigned block) {
        host = __tsan_get_current_fiber();
        phase.assign(block, 0);
        // One fiber per thread slot for the whole process (creating one maps its state anew):
        // the blocks run one after the other, ordered by block_sync, so reusing them hides no race.
        while (threads.size() < block) threads.push_back(__tsan_create_fiber(0));
    }
    // Inlined: TSan wants the switch right before swapcontext, with no function return between
    // (a return would pop the other fiber's shadow call stack).
    [[gnu::always_inline]] inline void to_thread(unsigned t) { __tsan_switch_to_fiber(threads[t], 0); }
    [[gnu::always_inline]] inline void to_host() { __tsan_switch_to_fiber(host, __tsan_switch_to_fiber_no_sync); }
    void thread_begin() { __tsan_acquire(&block_sync); }
    void barrier_arrive(unsigned t) { __tsan_release(&phase_sync[phase[t] % 2]); }
    void barrier_pass(unsigned t) { __tsan_acquire(&phase_sync[phase[t]++ % 2]); }
    // A finished thread counts as arrived at the barriers the others still pass.
    void thread_end(unsigned t) {
        barrier_arrive(t);
        __tsan_release(&block_sync);
    }
    void block_end() { __tsan_acquire(&block_sync); }
};
#else
struct RaceModel {
    void scheduler_begin() {}
    void scheduler_end() {}
    void block_begin(unsigned) {}
    void to_thread(unsigned) {}
    void to_host() {}
    void thread_begin() {}
    void barrier_arrive(unsigned) {}
    void barrier_pass(unsigned) {}
    void thread_end(unsigned) {}
    void block_end() {}
};
#endif
RaceModel race;

// Not instrumented: it switches to the scheduler's fiber before it returns.
__attribute__((no_sanitize_thread)) void fiber_main() {
    race.thread_begin();
    (*kernel_body)();
    race.thread_end(current);
    // Atomic: the scheduler reads it with no happens-before edge from this thread. Nothing
    // instrumented may touch this thread's stack after thread_end: the same slot's thread of
    // the next block reuses it.
    __atomic_store_n(&finished[current], 1, __ATOMIC_RELAXED);
    race.to_host();
    // Returning resumes uc_link, the scheduler.
}
}  // namespace

void emu_syncthreads() {
    const unsigned t = current;
    race.barrier_arrive(t);
    race.to_host();
    swapcontext(&fibers[t], &scheduler);
    race.barrier_pass(t);
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
    race.scheduler_begin();
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
        poison_shared_memory();
        race.block_begin(block);
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
                if (std::atomic_ref<char>(finished[t]).load(std::memory_order_relaxed)) continue;
                current = t;
                threadIdx = {t, 0, 0};
                race.to_thread(t);
                swapcontext(&scheduler, &fibers[t]);
                any = any || !std::atomic_ref<char>(finished[t]).load(std::memory_order_relaxed);
            }
        }
        race.block_end();
    }
    race.scheduler_end();
}
