//! The process allocator: the system allocator, except that requests of at
//! least 1 GiB are reserved with `mmap(MAP_NORESERVE)`.
//!
//! Why: kafka-protocol 0.18 sizes a decoded array from the count on the
//! wire (`Vec::with_capacity(n)` before reading the n elements), so a
//! malformed request of a few bytes can ask for hundreds of GiB. The system
//! allocator refuses that and Rust aborts the process: one bad frame would
//! kill the broker. Reserved without commitment, those pages are never
//! touched (decoding fails at the end of the frame, well before) and are
//! unmapped at once. Real memory use stays bounded by the frame limit; the
//! fuzz test in `tests/` checks resident memory, not reservations. Under
//! `vm.overcommit_memory=2` the kernel ignores MAP_NORESERVE and the abort
//! remains possible: the proper fix is in the codec (cap the pre-size by
//! the bytes left), to be upstreamed or patched.

use std::alloc::{GlobalAlloc, Layout, System};

/// From this size on, memory is reserved rather than committed.
pub const RESERVE_FROM_BYTES: usize = 1 << 30;
const PAGE_BYTES: usize = 4096;

pub struct ReservingAllocator;

fn reserved(layout: &Layout) -> bool {
    layout.size() >= RESERVE_FROM_BYTES && layout.align() <= PAGE_BYTES
}

unsafe fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping has no preconditions; the
    // result is checked against MAP_FAILED.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p.cast()
    }
}

// SAFETY: every block is freed by the allocator that made it: the size in
// the layout decides, and it is the same at allocation and release.
unsafe impl GlobalAlloc for ReservingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if reserved(&layout) {
            // SAFETY: see `map`.
            unsafe { map(layout.size()) }
        } else {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if reserved(&layout) {
            // Anonymous mappings are zero-filled.
            // SAFETY: see `map`.
            unsafe { map(layout.size()) }
        } else {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if reserved(&layout) {
            // SAFETY: `ptr` came from `map` with this size.
            unsafe {
                libc::munmap(ptr.cast(), layout.size());
            }
        } else {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` forms a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !reserved(&layout) && !reserved(&new_layout) {
            // SAFETY: forwarded with the caller's guarantees.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: allocate, copy what both hold, free the old block.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_requests_are_reserved_and_released() {
        let a = ReservingAllocator;
        let layout = Layout::from_size_align(512 << 30, 8).expect("layout");
        // SAFETY: the layout is non-zero; the block is freed with it.
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null(), "512 GiB reserved without commitment");
            *p = 7;
            assert_eq!(*p, 7);
            a.dealloc(p, layout);
        }
        let small = Layout::from_size_align(100, 8).expect("layout");
        // SAFETY: as above.
        unsafe {
            let p = a.alloc(small);
            let p = a.realloc(p, small, RESERVE_FROM_BYTES);
            assert!(!p.is_null());
            a.dealloc(
                p,
                Layout::from_size_align(RESERVE_FROM_BYTES, 8).expect("layout"),
            );
        }
    }
}
