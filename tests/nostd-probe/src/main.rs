//! Runs Algorithm 1 and the splat from gpstoken-core without std, without libc, without an
//! allocator, and reports through its exit status: 0 when every check holds, otherwise the
//! number of the failed check.
#![no_std]
#![no_main]

use gpstoken_core::partition::{partition_patch, region_gaussian, PartitionParams, Region};
use gpstoken_core::render::{splat_forward, SplatDesc};

const SIDE: usize = 64;
const TOKENS: usize = 16;
const STRIDE: usize = 5 + 1;

fn exit(code: i32) -> ! {
    // SAFETY: the Linux x86-64 `exit_group` system call; it does not return.
    unsafe { core::arch::asm!("syscall", in("rax") 231, in("rdi") code, options(noreturn)) }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    exit(100)
}

// What a C library or an embedded runtime normally provides. Volatile byte loops, so the compiler
// cannot turn them back into calls to themselves.

/// # Safety
/// C `memcpy` contract.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    for i in 0..n {
        core::ptr::write_volatile(dst.add(i), core::ptr::read_volatile(src.add(i)));
    }
    dst
}

/// # Safety
/// C `memmove` contract.
#[no_mangle]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize) < (src as usize) {
        for i in 0..n {
            core::ptr::write_volatile(dst.add(i), core::ptr::read_volatile(src.add(i)));
        }
    } else {
        for i in (0..n).rev() {
            core::ptr::write_volatile(dst.add(i), core::ptr::read_volatile(src.add(i)));
        }
    }
    dst
}

/// # Safety
/// C `memset` contract.
#[no_mangle]
pub unsafe extern "C" fn memset(dst: *mut u8, value: i32, n: usize) -> *mut u8 {
    for i in 0..n {
        core::ptr::write_volatile(dst.add(i), value as u8);
    }
    dst
}

/// # Safety
/// C `memcmp` contract.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        let (x, y) = (core::ptr::read_volatile(a.add(i)), core::ptr::read_volatile(b.add(i)));
        if x != y {
            return i32::from(x) - i32::from(y);
        }
    }
    0
}

/// # Safety
/// C `bcmp` contract.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    memcmp(a, b, n)
}

/// The precompiled `core` refers to the unwinding personality even under panic = "abort"; it is
/// never called.
#[no_mangle]
pub extern "C" fn rust_eh_personality() {}

/// The process entry point. The kernel enters with the stack 16-byte aligned, while a normal
/// function expects it 8 bytes off (as after a `call`), so align it and call into Rust.
#[unsafe(naked)]
#[no_mangle]
pub extern "C" fn _start() -> ! {
    core::arch::naked_asm!("xor ebp, ebp", "and rsp, -16", "call {main}", "ud2", main = sym probe_main)
}

extern "C" fn probe_main() -> ! {
    exit(run())
}

fn run() -> i32 {
    // A grey image with detail in the top-left quadrant only.
    let mut grey = [0.0f32; SIDE * SIDE];
    for y in 0..SIDE {
        for x in 0..SIDE {
            let v = if x < SIDE / 2 && y < SIDE / 2 { ((x * 7 + y * 13) % 17) as f32 / 8.0 - 1.0 } else { 0.25 };
            grey[y * SIDE + x] = v;
        }
    }
    let params = PartitionParams::new(TOKENS);
    let mut regions = [Region { y0: 0, y1: 0, x0: 0, x1: 0, score: 0.0 }; TOKENS];
    if partition_patch(&grey, SIDE, SIDE, &params, None, &mut regions).is_err() {
        return 1;
    }
    // The regions tile the patch.
    let area: usize = regions.iter().map(|r| (r.x1 - r.x0 + 1) as usize * (r.y1 - r.y0 + 1) as usize).sum();
    if area != SIDE * SIDE {
        return 2;
    }
    // The detailed quadrant gets more than its share (a quarter) of the regions.
    let detailed = regions.iter().filter(|r| (r.x1 as usize) < SIDE / 2 && (r.y1 as usize) < SIDE / 2).count();
    if detailed <= TOKENS / 4 {
        return 3;
    }
    // Splat the initial Gaussians with feature 1: every pixel is covered, values are finite.
    let mut tokens = [0.0f32; TOKENS * STRIDE];
    for (t, r) in tokens.chunks_exact_mut(STRIDE).zip(&regions) {
        t[..5].copy_from_slice(&region_gaussian(r, SIDE, SIDE));
        t[5] = 1.0;
    }
    let desc = SplatDesc { batch: 1, gaussians: TOKENS, channels: 1, height: SIDE, width: SIDE, kappa: 3.0 };
    let mut out = [0.0f32; SIDE * SIDE];
    if splat_forward(&desc, &tokens, &mut out).is_err() {
        return 4;
    }
    if !out.iter().all(|v| v.is_finite() && *v > 0.0) {
        return 5;
    }
    0
}
