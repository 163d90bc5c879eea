//! When io_uring cannot be set up (a seccomp profile, as in Docker's
//! default, or a kernel without it), `ringway run` says so in one clear line
//! with the remedy and exits non-zero.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::os::unix::process::CommandExt;
use std::process::Command;

use common::{EchoBackend, Ports, tcp_service};

/// io_uring_setup(2) is syscall 425 on every architecture Linux has.
const NR_IO_URING_SETUP: u32 = 425;

/// Run `ringway run` under a seccomp filter that fails io_uring_setup with
/// `errno`; returns (success, stderr).
fn run_denied(errno: i32) -> (bool, String) {
    let ports = Ports::new();
    let backend = EchoBackend::lines("one");
    let listen = ports.listener();
    let config = tcp_service(listen, &[backend.port], "");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringway"));
    cmd.args(["run", "-c"]).arg(config.path());
    // SAFETY: prctl with a filter program that lives on this stack frame for
    // the duration of the call; both calls are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            let ret_errno = libc::SECCOMP_RET_ERRNO | (errno as u32 & libc::SECCOMP_RET_DATA);
            let filter = [
                // A = seccomp_data.nr
                libc::sock_filter {
                    code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
                    jt: 0,
                    jf: 0,
                    k: 0,
                },
                libc::sock_filter {
                    code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
                    jt: 0,
                    jf: 1,
                    k: NR_IO_URING_SETUP,
                },
                libc::sock_filter {
                    code: (libc::BPF_RET | libc::BPF_K) as u16,
                    jt: 0,
                    jf: 0,
                    k: ret_errno,
                },
                libc::sock_filter {
                    code: (libc::BPF_RET | libc::BPF_K) as u16,
                    jt: 0,
                    jf: 0,
                    k: libc::SECCOMP_RET_ALLOW,
                },
            ];
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr().cast_mut(),
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &prog as *const _ as usize,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.success(), stderr)
}

fn error_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains("ERROR")).collect()
}

#[test]
fn io_uring_blocked_by_seccomp_gives_one_line_with_the_remedy() {
    let (ok, stderr) = run_denied(libc::EPERM);
    assert!(!ok);
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("io_uring is not permitted"), "{stderr}");
    assert!(errors[0].contains("remedy"), "{stderr}");
    assert!(errors[0].contains("seccomp"), "{stderr}");
}

#[test]
fn io_uring_missing_from_the_kernel_gives_one_line_with_the_remedy() {
    let (ok, stderr) = run_denied(libc::ENOSYS);
    assert!(!ok);
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("io_uring is not available"), "{stderr}");
    assert!(errors[0].contains("remedy"), "{stderr}");
}
