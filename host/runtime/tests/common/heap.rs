//! The bytes glibc's allocator has in use, shared by the tests and the
//! benchmarks that measure what an idle activation keeps on the heap.

/// glibc's `struct mallinfo2`: ten `size_t` counters.
#[repr(C)]
struct MallInfo2 {
    arena: usize,
    ordblks: usize,
    smblks: usize,
    hblks: usize,
    hblkhd: usize,
    usmblks: usize,
    fsmblks: usize,
    uordblks: usize,
    fordblks: usize,
    keepcost: usize,
}

extern "C" {
    fn mallinfo2() -> MallInfo2;
}

/// Bytes the process's heap has in use: small blocks and mapped ones.
pub fn heap_in_use() -> u64 {
    // SAFETY: `mallinfo2` only reads the allocator's counters.
    let info = unsafe { mallinfo2() };
    (info.uordblks + info.hblkhd) as u64
}
