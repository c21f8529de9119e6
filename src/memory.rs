//! Memory: giving the allocator's free memory back to the system after work that
//! needed much of it for a moment (a compaction of the state, the first follow-up scan,
//! a retention pass that shelved tickets). Beside the flow, at the bottom: record and
//! runtime call it.
//!
//! glibc keeps freed memory in its arenas for the next allocation; an idle daemon would
//! carry the high-water mark of its busiest minute for good. `malloc_trim` returns the
//! free pages of every arena.

/// Returns the allocator's free memory to the system (glibc); nothing elsewhere.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn give_back() {
    // SAFETY: malloc_trim only returns free memory of the allocator to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn give_back() {}
