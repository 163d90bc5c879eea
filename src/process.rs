//! Process-wide settings the supervisor makes before it starts workers:
//! descriptor limit, SIGPIPE, and the stop signals (blocked in every thread
//! and taken synchronously by the supervisor).

use std::io;

/// Raise the soft RLIMIT_NOFILE to the hard limit; returns (old, new).
pub fn raise_nofile_limit() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let old = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((old, lim.rlim_cur))
}

/// splice(2) into a socket whose peer is gone raises SIGPIPE; ringway
/// handles EPIPE instead.
pub fn ignore_sigpipe() {
    // SAFETY: setting a signal disposition to SIG_IGN has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

fn stop_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        set
    }
}

/// Block SIGTERM, SIGINT, SIGHUP and SIGUSR1 in the calling thread and every thread it
/// spawns afterwards, so that only [`wait_stop_signal`] takes them.
pub fn block_stop_signals() {
    let set = stop_set();
    // SAFETY: pthread_sigmask with a valid set and no old-set output.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// What a signal asks the supervisor to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// SIGTERM (systemd, Kubernetes, `kill`) or SIGINT (Ctrl-C): drain and exit.
    Stop(i32),
    /// SIGHUP (an operator or a config-management tool): reload the configuration.
    Reload,
    /// SIGUSR1 (logrotate's postrotate): reopen the access log.
    ReopenLog,
}

/// Wait for the next signal ringway acts on.
pub fn wait_intent() -> Intent {
    match wait_stop_signal() {
        libc::SIGHUP => Intent::Reload,
        libc::SIGUSR1 => Intent::ReopenLog,
        sig => Intent::Stop(sig),
    }
}

/// Like [`wait_intent`], but gives up after `timeout`.
pub fn wait_intent_for(timeout: std::time::Duration) -> Option<Intent> {
    let set = stop_set();
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().try_into().unwrap_or(libc::time_t::MAX),
        tv_nsec: timeout.subsec_nanos().into(),
    };
    // SAFETY: sigtimedwait with a valid set, no siginfo output and a timespec we own.
    let sig = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
    match sig {
        libc::SIGHUP => Some(Intent::Reload),
        libc::SIGUSR1 => Some(Intent::ReopenLog),
        libc::SIGTERM | libc::SIGINT => Some(Intent::Stop(sig)),
        _ => None,
    }
}

/// Wait for SIGTERM, SIGINT, SIGHUP or SIGUSR1; returns the signal number.
pub fn wait_stop_signal() -> i32 {
    let set = stop_set();
    let mut sig: libc::c_int = 0;
    loop {
        // SAFETY: sigwait with a valid set and an output int.
        if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
            return sig;
        }
    }
}

/// Ask the supervisor to stop (a worker failed).
pub fn request_stop() {
    // SAFETY: sending SIGTERM to our own process.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGTERM);
    }
}
