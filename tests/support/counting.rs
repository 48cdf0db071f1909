//! A global allocator that counts, for the tests that bound memory by what
//! was actually allocated rather than by time. Include it with
//! `#[path = "support/counting.rs"] mod counting;` in one test binary only.
//! Counts are process-wide: every test of the binary takes [`serial`] first
//! so that no other test allocates during a measurement.

#![allow(dead_code)] // each test binary uses a part of it

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};

pub struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static ALLOCATED: AtomicUsize = AtomicUsize::new(0);
static CALLS: AtomicUsize = AtomicUsize::new(0);
static LOCK: Mutex<()> = Mutex::new(());

fn add(size: usize) {
    let now = CURRENT.fetch_add(size, Relaxed) + size;
    PEAK.fetch_max(now, Relaxed);
    ALLOCATED.fetch_add(size, Relaxed);
    CALLS.fetch_add(1, Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        add(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        CURRENT.fetch_sub(layout.size(), Relaxed);
        add(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// What a closure allocated: the peak of live bytes above the level at its
/// start, the total bytes it asked for, and the number of calls.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub peak: usize,
    pub allocated: usize,
    pub calls: usize,
}

/// Runs the tests of a binary one at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Call with [`serial`] held.
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, Usage) {
    let base = CURRENT.load(Relaxed);
    PEAK.store(base, Relaxed);
    let (allocated, calls) = (ALLOCATED.load(Relaxed), CALLS.load(Relaxed));
    let out = f();
    let usage = Usage {
        peak: PEAK.load(Relaxed).saturating_sub(base),
        allocated: ALLOCATED.load(Relaxed) - allocated,
        calls: CALLS.load(Relaxed) - calls,
    };
    (out, usage)
}

/// Heap bytes allocated and not yet freed, process-wide.
pub fn current() -> usize {
    CURRENT.load(Relaxed)
}
