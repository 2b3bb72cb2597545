//! Giving memory back to the system after start-up.
//!
//! Loading the store builds the registry and the name table from a transient copy of every
//! record (the decoded records, the checker's first view, growing hash tables). glibc's
//! allocator keeps what was freed inside its heap for later use, so without a trim that
//! memory stays resident for the life of the process: tens of megabytes at 100,000
//! instances. `malloc_trim` hands the free pages back; it runs once, after the first
//! snapshot is built, and is a no-op with other C libraries.

/// Returns freed heap pages to the system (glibc only).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
