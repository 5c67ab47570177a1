//! Ctrl-C / SIGTERM / SIGHUP during `strata build`: stop the sandboxes, let the build unwind
//! (temp dirs removed, nothing more recorded), exit 128 + the signal number.
//!
//! The signals are blocked in the main thread before any other thread exists, so every thread
//! inherits the mask and only the signal thread receives them, with `sigwait` (no async
//! handler). Child processes start with an empty mask (std resets it; the sandbox helper
//! installs its own handlers).

use std::time::Duration;

use strata_engine::sandbox::{cancel, cancelled, signal_name};

/// How long the build gets to unwind after a signal before strata exits anyway (a step that
/// does not check for cancellation, e.g. a large COPY; the store tolerates that like a kill).
const GRACE: Duration = Duration::from_secs(5);

const SIGNALS: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

pub fn install() {
    // SAFETY: sigset manipulation and pthread_sigmask on the calling thread.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in SIGNALS {
            libc::sigaddset(&mut set, s);
        }
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return;
        }
        set
    };
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            let mut sig = 0;
            // SAFETY: `set` is a valid signal set; `sig` a valid out pointer.
            if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                continue;
            }
            if cancelled().is_some() {
                eprintln!("strata: {} again: exiting now", signal_name(sig));
                std::process::exit(128 + sig);
            }
            eprintln!(
                "strata: {}: stopping the running steps (send it again to exit at once)",
                signal_name(sig)
            );
            cancel(sig);
            std::thread::spawn(move || {
                std::thread::sleep(GRACE);
                eprintln!(
                    "error: interrupted by {}: the build did not stop within {}s; exiting (the store stays consistent; leftovers are swept on its next use)",
                    signal_name(sig),
                    GRACE.as_secs()
                );
                std::process::exit(128 + sig);
            });
        });
    if spawned.is_err() {
        // No signal thread: restore the default dispositions' effect.
        // SAFETY: as above.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
    }
}

/// The exit code for a build that was interrupted: 128 + the signal, as shells report it.
pub fn exit_code() -> Option<i32> {
    cancelled().map(|s| 128 + s)
}
