//! The process's allocator: mimalloc, called the way its own `malloc` is
//! wherever that already gives the alignment asked for.
//!
//! The `mimalloc` crate's `GlobalAlloc` passes every request to
//! `mi_malloc_aligned`, whose fast path only covers blocks of up to 1 KiB.
//! Anything larger (the request future, header and body buffers, the
//! context) took mimalloc's generic aligned path, and when the size class
//! was not a power of two it over-allocated by `align - 1` bytes and then
//! aligned a pointer that was aligned already: ~20 such calls per proxied
//! request, 3.9k instructions (callgrind, benches/README.md).
//!
//! mimalloc's blocks are whole machine words, the first block of a page is
//! 16-byte aligned, and every size class above 8 words is an even number of
//! words. So `mi_malloc` returns 8-byte aligned blocks for any size and
//! 16-byte aligned ones for sizes that are multiples of 16 (a Rust type's
//! size is a multiple of its alignment). Larger alignments (tokio's
//! cache-padded task cells) still go to `mi_malloc_aligned`. The test below
//! checks the alignment of every size class up to 256 KiB and a sample above.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The gateway's `#[global_allocator]` (see `main.rs`).
pub struct Allocator;

/// Whether plain `mi_malloc(size)` is aligned enough for `align`.
#[inline(always)]
fn plain(size: usize, align: usize) -> bool {
    align <= 8 || (align == 16 && size.is_multiple_of(16))
}

// SAFETY: every path returns memory from mimalloc for the layout asked for
// (aligned as shown above, or by mimalloc's aligned calls), and every block
// is freed with `mi_free`, which takes blocks from all of mimalloc's calls.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if plain(layout.size(), layout.align()) {
            mi::mi_malloc(layout.size()) as *mut u8
        } else {
            mi::mi_malloc_aligned(layout.size(), layout.align()) as *mut u8
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if plain(layout.size(), layout.align()) {
            mi::mi_zalloc(layout.size()) as *mut u8
        } else {
            mi::mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi::mi_free(ptr as *mut c_void);
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if plain(new_size, layout.align()) {
            mi::mi_realloc(ptr as *mut c_void, new_size) as *mut u8
        } else {
            mi::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Allocates, zero-allocates and grows one layout, checking each block's
    /// alignment and that what was written survives the growth.
    fn check(size: usize, align: usize) {
        let layout = Layout::from_size_align(size, align).unwrap();
        let ends = |p: *mut u8, n: usize| [p, p.wrapping_add(n / 2), p.wrapping_add(n - 1)];
        // SAFETY: non-zero sizes; only bytes inside each block are touched, and
        // each block is freed once.
        unsafe {
            let p = Allocator.alloc(layout);
            assert!(!p.is_null());
            assert_eq!(p as usize % align, 0, "alloc size {size} align {align}");
            for b in ends(p, size) {
                b.write(0xab);
            }
            let z = Allocator.alloc_zeroed(layout);
            assert_eq!(
                z as usize % align,
                0,
                "alloc_zeroed size {size} align {align}"
            );
            assert!(ends(z, size).iter().all(|b| b.read() == 0));
            // Grown to a multiple of the alignment, then to a size that is not.
            let g = Allocator.realloc(p, layout, size * 2);
            assert_eq!(g as usize % align, 0, "realloc size {size} align {align}");
            let h = Allocator.realloc(g, layout, size * 3 + 8);
            assert_eq!(h as usize % align, 0, "realloc size {size} align {align}");
            assert!(ends(h, size).iter().all(|b| b.read() == 0xab));
            Allocator.dealloc(h, layout);
            Allocator.dealloc(z, layout);
        }
    }

    #[test]
    fn every_block_has_the_alignment_its_layout_asks_for() {
        // Every size class (they are whole words) up to 256 KiB, then a sample.
        for size in 1..=262_144_usize {
            if size <= 4_096 || size.is_multiple_of(8) {
                for align in [1, 2, 4, 8] {
                    check(size, align);
                }
            }
            if size.is_multiple_of(16) {
                check(size, 16);
            }
        }
        for size in (262_144..8 << 20).step_by(65_521) {
            check(size - size % 16, 16);
            check(size, 8);
        }
        // Alignments mimalloc's plain blocks do not promise take the aligned calls.
        for size in [1, 8, 24, 100, 1_000, 5_000, 70_000] {
            for align in [16, 32, 64, 128, 4096, 65_536] {
                check(size, align);
            }
        }
    }

    #[test]
    fn the_plain_path_is_taken_only_where_mimalloc_aligns_by_itself() {
        assert!(plain(1, 1) && plain(24, 8) && plain(1_280, 8) && plain(48, 16));
        assert!(!plain(24, 16) && !plain(64, 32) && !plain(256, 128));
    }
}
