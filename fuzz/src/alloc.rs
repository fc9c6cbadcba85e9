//! The counting global allocator of every binary that links this crate (the fuzz binary and
//! its tests): it keeps the bytes live now, the most live at once since a window began, and
//! the largest single request, and refuses (returns null, which aborts the process through
//! `handle_alloc_error`) any single request above the cap of the running window. Only Rust
//! allocations are seen: RocksDB's C++ allocates with its own `malloc` calls.
//!
//! This module and `crash` are the crate's only unsafe code: a global allocator cannot be
//! written without it.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The allocator: `System`, counted.
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);
static CAP: AtomicUsize = AtomicUsize::new(usize::MAX);
static REFUSED: AtomicUsize = AtomicUsize::new(0);

fn admit(size: usize) -> bool {
    LARGEST.fetch_max(size, Relaxed);
    if size > CAP.load(Relaxed) {
        REFUSED.fetch_max(size, Relaxed);
        return false;
    }
    true
}

fn grew(bytes: usize) {
    let live = LIVE.fetch_add(bytes, Relaxed) + bytes;
    PEAK.fetch_max(live, Relaxed);
}

// SAFETY: every method hands the call to `System` unchanged (or returns null, which the
// contract allows); the counters are atomics and never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !admit(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's layout, passed on.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !admit(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's layout, passed on.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, that is from `System`, with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !admit(new_size) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's pointer, layout and size, passed on.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            let old = layout.size();
            if new_size >= old {
                grew(new_size - old);
            } else {
                LIVE.fetch_sub(old - new_size, Relaxed);
            }
        }
        p
    }
}

/// What one window saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Most bytes live at once above what was live when the window began.
    pub peak: usize,
    /// Largest single request (allocation or reallocation).
    pub largest: usize,
}

/// A measurement of the allocations between [`Window::begin`] and [`Window::end`]. Counts are
/// process-wide: run one window at a time, with nothing else allocating.
#[derive(Debug)]
pub struct Window {
    base: usize,
}

impl Window {
    /// Starts measuring; any single request above `cap` bytes is refused until `end`.
    pub fn begin(cap: usize) -> Self {
        let base = LIVE.load(Relaxed);
        PEAK.store(base, Relaxed);
        LARGEST.store(0, Relaxed);
        CAP.store(cap, Relaxed);
        Self { base }
    }

    /// Stops measuring (and lifts the cap).
    pub fn end(self) -> Usage {
        CAP.store(usize::MAX, Relaxed);
        Usage { peak: PEAK.load(Relaxed).saturating_sub(self.base), largest: LARGEST.load(Relaxed) }
    }
}

/// The largest request ever refused for being over a window's cap (0 if none).
pub fn largest_refused() -> usize {
    REFUSED.load(Relaxed)
}
