//! A hint that asks the CPU to start fetching a cache line the engine will touch a little
//! later, so that the miss overlaps other work of the same command instead of stalling it.
//! The one place tickerd issues the instruction (orders, levels and bitmap words use it, and
//! the feeds' hub for the messages a long history is about to let go of).

/// Starts fetching the cache line holding `at` into every cache level. Never reads memory
/// into the program and never faults, so any address is fine; a no-op off x86_64.
#[inline(always)]
pub fn prefetch<T: ?Sized>(at: *const T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: SSE is part of every x86_64 target, and PREFETCHT0 is a hint that neither
        // faults nor makes anything visible to the program, whatever the address (even null
        // or freed: `prefetching_any_address_is_harmless`).
        unsafe { _mm_prefetch::<_MM_HINT_T0>(at.cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

/// Starts fetching every cache line of the `len` bytes from `start`, wherever the first byte
/// falls in its line (so a value of 104 bytes may span three).
#[inline(always)]
pub fn prefetch_bytes(start: *const u8, len: usize) {
    if len == 0 {
        return;
    }
    for offset in (0..len).step_by(64).chain([len - 1]) {
        prefetch(start.wrapping_add(offset));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn prefetching_any_bytes_is_harmless() {
        for len in [0, 1, 64, 104, 4096] {
            super::prefetch_bytes(std::ptr::null(), len);
            super::prefetch_bytes(usize::MAX as *const u8, len);
        }
    }

    #[test]
    fn prefetching_any_address_is_harmless() {
        super::prefetch(std::ptr::null::<u8>());
        super::prefetch(usize::MAX as *const u64);
        let freed = Box::into_raw(Box::new(7u64));
        // SAFETY: made just above by `Box::into_raw`, freed once.
        drop(unsafe { Box::from_raw(freed) });
        super::prefetch(freed);
    }
}
