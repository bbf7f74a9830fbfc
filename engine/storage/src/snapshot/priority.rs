//! Scheduling priority for snapshot builders.
//!
//! A snapshot build is background work that competes for the same cores as
//! the apply thread and the WAL. Run at a lower priority, the scheduler
//! hands the builder whatever CPU the foreground leaves, so applies are not
//! delayed by it; on an idle machine the build runs at full speed.

/// The nice value builder threads run at (0 is normal, 19 the lowest). 10
/// gives a builder about a tenth of the CPU share of a normal thread when
/// both want the same core, so a saturated node still finishes its build.
pub const BUILDER_NICE: i32 = 10;

/// Lowers the calling thread's scheduling priority to [`BUILDER_NICE`]
/// (a thread already at that nice value or lower priority is left as it
/// is). Affects only this thread (Linux keeps a nice value per thread). Call it
/// at the start of a dedicated builder thread, never on a pooled thread
/// that will run other work afterwards. On other systems it does nothing.
pub fn lower_this_thread_priority() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let tid = this_tid();
        // -1 is also a valid nice value; either way it is below the target.
        if nice_of(tid) >= BUILDER_NICE {
            return Ok(());
        }
        // SAFETY: setpriority reads only its integer arguments.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, BUILDER_NICE) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The calling thread's kernel id.
#[cfg(target_os = "linux")]
fn this_tid() -> libc::id_t {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as libc::id_t }
}

/// Thread `tid`'s nice value (-1 is a valid value, not only an error).
#[cfg(target_os = "linux")]
fn nice_of(tid: libc::id_t) -> i32 {
    // SAFETY: getpriority reads only its integer arguments.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn only_the_calling_thread_is_lowered() {
        let main_tid = this_tid();
        let before = nice_of(main_tid);
        let lowered = std::thread::spawn(|| {
            lower_this_thread_priority().expect("setpriority");
            nice_of(this_tid())
        })
        .join()
        .unwrap();
        assert_eq!(lowered, BUILDER_NICE.max(before));
        assert_eq!(nice_of(main_tid), before, "the caller's thread only");
    }
}
