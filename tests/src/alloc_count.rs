//! A global allocator for fuzz tests: the system allocator, recording the largest single request
//! each thread makes, so a test can assert that a parser never asks for more than a bound.
//!
//! A test binary installs it with
//! `#[global_allocator] static ALLOCATOR: CountingAllocator = CountingAllocator;`, calls
//! [`reset_largest_request`] before the code under test and [`largest_request`] after it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The system allocator, recording the largest request per thread.
pub struct CountingAllocator;

thread_local! {
    static LARGEST_REQUEST: Cell<usize> = const { Cell::new(0) };
}

fn record(size: usize) {
    // `try_with`: allocations during thread teardown, after the slot is gone, are not recorded.
    let _ = LARGEST_REQUEST.try_with(|m| m.set(m.get().max(size)));
}

/// Forgets the requests made so far on this thread.
pub fn reset_largest_request() {
    LARGEST_REQUEST.with(|m| m.set(0));
}

/// The largest request (bytes) on this thread since [`reset_largest_request`].
pub fn largest_request() -> usize {
    LARGEST_REQUEST.with(Cell::get)
}

// SAFETY: every call is forwarded unchanged to the system allocator; recording touches only a
// const-initialised thread-local `Cell`, which never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
