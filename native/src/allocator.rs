//! The system allocator, tuned for a training loop that frees and re-allocates the same large
//! tensors every step.
//!
//! glibc serves blocks above a (dynamic) threshold with `mmap` and returns them on `free`, so
//! every step's activations come back as fresh pages the kernel must fault in and zero: a fifth
//! of a SmolLM2 LoRA step's time went to `clear_page_erms`. Serving blocks up to 32 MiB from the
//! heap and keeping freed memory lets the next step reuse it. (mimalloc, measured, made training
//! slower: BENCHMARKS.md.)

/// Sets glibc's malloc to keep large freed blocks for reuse. A no-op on other C libraries, and
/// with `SOFT_KEEP_FREED_MEMORY=0`: the peak RSS then follows the memory in use (for memory
/// measurements: kept, freed memory counts in the RSS for good).
pub fn keep_freed_memory() {
    if std::env::var_os("SOFT_KEEP_FREED_MEMORY").is_some_and(|v| v == "0") {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // glibc's largest allowed mmap threshold on 64-bit targets (HEAP_MAX_SIZE / 2).
        const MMAP_THRESHOLD: libc::c_int = 32 << 20;
        const TOP_PAD: libc::c_int = 256 << 20;
        // SAFETY: mallopt only changes allocator parameters; it is called before any thread starts.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
            libc::mallopt(libc::M_TOP_PAD, TOP_PAD);
        }
    }
}
