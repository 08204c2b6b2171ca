//! The gateway's own background threads (the control runtime, SQLite's worker
//! threads, the ledger's sync thread) run at a lower CPU priority than the
//! proxy's worker threads.
//!
//! Why: they share the proxy's cores. A usage batch into SQLite takes
//! milliseconds of CPU; at the same priority the scheduler lets it finish its
//! slice before a proxy worker that just became runnable gets the core back,
//! and every request on that worker waits. With a lower weight the worker
//! preempts them at once, and they still get the rest of the core (unlike
//! `SCHED_IDLE`, which would starve the usage writer under sustained load).
//! Measured in benches/README.md ("The tail").

/// The nice value of background threads: weight 110 against a worker's 1024.
pub const BACKGROUND_NICE: i32 = 10;

/// Lowers the calling thread's priority (on Linux the nice value is per
/// thread; threads it starts later inherit it, which is how SQLite's worker
/// threads, started by the control runtime, get it too, and Pingora's timer
/// thread, first started by a health check: it only fires timeouts). Raising a nice value
/// needs no privilege; a failure only leaves the thread as it was.
pub fn lower_this_thread() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain syscalls on the calling thread's own id.
        let tid = unsafe { libc::gettid() } as libc::id_t;
        // Never raised: a gateway started with `nice -n 15` keeps 15.
        let now = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) };
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, now.max(BACKGROUND_NICE)) };
        if rc != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "cannot lower a background thread's priority");
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn lowers_only_the_calling_thread() {
        let before = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let lowered = std::thread::spawn(|| {
            lower_this_thread();
            let tid = unsafe { libc::gettid() };
            let own = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t) };
            // A thread it starts inherits the lower priority.
            let child = std::thread::spawn(|| {
                let tid = unsafe { libc::gettid() };
                unsafe { libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t) }
            })
            .join()
            .unwrap();
            (own, child)
        })
        .join()
        .unwrap();
        assert_eq!(
            lowered,
            (BACKGROUND_NICE.max(before), BACKGROUND_NICE.max(before))
        );
        let after = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        assert_eq!(after, before, "the test thread itself keeps its priority");
    }
}
