//! A global allocator that counts, for the tests that bound memory by what
//! was actually allocated rather than by time. Include it with
//! `#[path = "support/counting.rs"] mod counting;` in one test binary only.
//! [`measure`] counts process-wide: every test of the binary takes [`serial`]
//! first so that no other test allocates during a measurement, but the test
//! harness's own threads still may. [`measure_thread`] counts only the
//! calling thread, for work that stays on it (the sans-IO core).

#![allow(dead_code)] // each test binary uses a part of it

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};

pub struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static ALLOCATED: AtomicUsize = AtomicUsize::new(0);
static CALLS: AtomicUsize = AtomicUsize::new(0);
static LOCK: Mutex<()> = Mutex::new(());

/// This thread's counts while [`measure_thread`] runs: live bytes (may go
/// below zero when older memory is freed), peak, allocated, calls.
#[derive(Clone, Copy)]
struct Local {
    on: bool,
    current: isize,
    peak: isize,
    allocated: usize,
    calls: usize,
}

thread_local! {
    // const-initialized and without Drop: safe to touch from the allocator.
    static LOCAL: Cell<Local> =
        const { Cell::new(Local { on: false, current: 0, peak: 0, allocated: 0, calls: 0 }) };
}

fn local(f: impl FnOnce(&mut Local)) {
    let _ = LOCAL.try_with(|cell| {
        let mut l = cell.get();
        if l.on {
            f(&mut l);
            cell.set(l);
        }
    });
}

fn add(size: usize) {
    let now = CURRENT.fetch_add(size, Relaxed) + size;
    PEAK.fetch_max(now, Relaxed);
    ALLOCATED.fetch_add(size, Relaxed);
    CALLS.fetch_add(1, Relaxed);
    local(|l| {
        l.current += size as isize;
        l.peak = l.peak.max(l.current);
        l.allocated += size;
        l.calls += 1;
    });
}

fn sub(size: usize) {
    CURRENT.fetch_sub(size, Relaxed);
    local(|l| l.current -= size as isize);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        sub(layout.size());
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        add(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        sub(layout.size());
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

/// Like [`measure`], counting only what this thread allocates and frees.
pub fn measure_thread<T>(f: impl FnOnce() -> T) -> (T, Usage) {
    let start = Local { on: true, current: 0, peak: 0, allocated: 0, calls: 0 };
    LOCAL.with(|cell| cell.set(start));
    let out = f();
    let l = LOCAL.with(|cell| cell.replace(Local { on: false, ..start }));
    (out, Usage { peak: l.peak.max(0) as usize, allocated: l.allocated, calls: l.calls })
}

/// Heap bytes allocated and not yet freed, process-wide.
pub fn current() -> usize {
    CURRENT.load(Relaxed)
}
