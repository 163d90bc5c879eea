//! Files an operator did not mean to hand over (issue 9): a device, a FIFO,
//! a huge file, a dangling symlink, and a file caught while it is being
//! rewritten. Each gets one clear message, and a reload of any of them
//! keeps every listener of the running table.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{ConfigDir, EchoBackend, Ports, Ringway, http, say, yaml};

/// `ringway check ARGS`, killed if it takes longer than `limit`.
fn check_within(args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringway"))
        .arg("check")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "ringway check {args:?} still running after {limit:?}:\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_device_or_a_fifo_is_refused_at_once_with_what_it_is() {
    let out = check_within(&["-c", "/dev/zero"], Duration::from_secs(5));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("/dev/zero is a character device, not a regular file"),
        "{}",
        text(&out)
    );

    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("gateway.yaml");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    // Named directly: refused without waiting for a writer.
    let out = check_within(&["-c", fifo.to_str().unwrap()], Duration::from_secs(5));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("is a FIFO (named pipe)"),
        "{}",
        text(&out)
    );
    // In a directory: skipped with a warning.
    let out = check_within(
        &["-c", dir.path().to_str().unwrap()],
        Duration::from_secs(5),
    );
    assert!(
        text(&out).contains("gateway.yaml is a FIFO (named pipe), not a regular file; skipped"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_file_past_the_limit_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.yaml");
    // Sparse: 1 GiB that costs no disk; reading it would cost 1 GiB of memory.
    let file = std::fs::File::create(&big).unwrap();
    file.set_len(1 << 30).unwrap();
    let out = check_within(&["-c", big.to_str().unwrap()], Duration::from_secs(5));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("is 1073741824 bytes, more than the limit of 16777216 bytes"),
        "{}",
        text(&out)
    );
}

#[test]
fn dangling_and_looping_symlinks_in_a_directory_are_named() {
    let config = ConfigDir::new().example("kafka-rcmd.yaml", "kafka.yaml", &[]);
    let dir = config.path();
    std::os::unix::fs::symlink(dir.join("gone.yaml"), dir.join("next.yaml")).unwrap();
    std::os::unix::fs::symlink(dir.join("b.yaml"), dir.join("a.yaml")).unwrap();
    std::os::unix::fs::symlink(dir.join("a.yaml"), dir.join("b.yaml")).unwrap();
    let out = check_within(&["-c", dir.to_str().unwrap()], Duration::from_secs(5));
    let report = text(&out);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(
        report.contains("next.yaml is a dangling symlink"),
        "{report}"
    );
    assert!(
        report.contains("a.yaml is a symlink that loops"),
        "{report}"
    );
    assert!(
        report.contains("b.yaml is a symlink that loops"),
        "{report}"
    );
}

/// TCP listeners on `ports` to a line echo.
fn listeners(ports: &[u16], backend: u16) -> String {
    yaml::join(&[
        yaml::gateway(ports, &[]),
        yaml::virtual_service("tcp", &yaml::tcp_route(&[("v1", 100)])),
        yaml::destination_rule("", &["v1"]),
        yaml::service_entry(&[(backend, "v1")]),
    ])
}

fn reload(admin: u16) -> (u16, String) {
    http(admin, "POST", "/reload")
}

#[test]
fn a_reload_of_a_half_written_file_never_closes_every_listener() {
    let ports = Ports::new();
    let echo = EchoBackend::lines("one");
    let (a, b, admin) = (ports.listener(), ports.listener(), ports.admin());
    let whole = listeners(&[a, b], echo.port);
    let config = ConfigDir::new().file("svc.yaml", &whole);
    let file = config.path().join("svc.yaml");
    let address = format!("127.0.0.1:{admin}");
    let Some(gw) = Ringway::start(&config, &["--workers", "2", "--admin", &address]) else {
        return;
    };
    // What a reader sees while a tool rewrites the file in place: the empty
    // file open(O_TRUNC) leaves, then every prefix that ends at a line.
    let mut cuts: Vec<usize> = vec![0];
    cuts.extend(whole.match_indices('\n').map(|(i, _)| i));
    let (mut refused, mut accepted) = (0, 0);
    for cut in &cuts {
        std::fs::write(&file, &whole[..*cut]).unwrap();
        let (status, body) = reload(admin);
        match status {
            200 => accepted += 1,
            400 => refused += 1,
            _ => panic!("reload of {cut} bytes: {status} {body}"),
        }
        if *cut == 0 {
            assert_eq!(status, 400, "the empty file was accepted: {body}");
            assert!(body.contains("svc.yaml is empty"), "{body}");
            assert!(body.contains("rename it over the old one"), "{body}");
        }
        // Whatever the prefix did, at least one listener still serves.
        let served = [a, b]
            .iter()
            .filter(|p| std::net::TcpStream::connect(("127.0.0.1", **p)).is_ok())
            .count();
        assert!(
            served > 0,
            "the reload of {cut} bytes closed every listener ({status} {body})"
        );
        std::fs::write(&file, &whole).unwrap();
        let (status, body) = reload(admin);
        assert_eq!(status, 200, "{body}");
    }
    assert!(
        cuts.len() > 20 && refused > 0,
        "{refused} refused of {}",
        cuts.len()
    );
    eprintln!(
        "{} prefixes: {refused} refused, {accepted} accepted",
        cuts.len()
    );
    assert_eq!(say(a, "x"), "one x");
    assert_eq!(say(b, "y"), "one y");
    // A reload that closes one listener says which.
    std::fs::write(&file, listeners(&[a], echo.port)).unwrap();
    assert_eq!(reload(admin).0, 200);
    assert!(gw.logged("reload closed a listener"), "{}", gw.log_text());
    assert!(gw.logged(&format!("0.0.0.0:{b}")), "{}", gw.log_text());
}

#[test]
fn allow_empty_reload_accepts_an_empty_file() {
    let ports = Ports::new();
    let echo = EchoBackend::lines("one");
    let (a, admin) = (ports.listener(), ports.admin());
    let config = ConfigDir::new().file("svc.yaml", &listeners(&[a], echo.port));
    let address = format!("127.0.0.1:{admin}");
    let Some(_gw) = Ringway::start(&config, &["--admin", &address, "--allow-empty-reload"]) else {
        return;
    };
    std::fs::write(config.path().join("svc.yaml"), "").unwrap();
    let (status, body) = reload(admin);
    assert_eq!(status, 200, "{body}");
    common::until("the listener to close", || {
        std::net::TcpStream::connect(("127.0.0.1", a)).is_err()
    });
}

#[test]
fn a_reload_of_a_huge_file_is_refused_without_reading_it() {
    let ports = Ports::new();
    let echo = EchoBackend::lines("one");
    let (a, admin) = (ports.listener(), ports.admin());
    let config = ConfigDir::new().file("svc.yaml", &listeners(&[a], echo.port));
    let address = format!("127.0.0.1:{admin}");
    let Some(gw) = Ringway::start(&config, &["--admin", &address]) else {
        return;
    };
    let rss = || {
        let status = std::fs::read_to_string(format!("/proc/{}/status", gw.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
            .unwrap()
    };
    let before = rss();
    let big = std::fs::File::create(config.path().join("zz-huge.yaml")).unwrap();
    big.set_len(1 << 30).unwrap();
    let (status, body) = reload(admin);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("zz-huge.yaml is 1073741824 bytes"), "{body}");
    // The peak resident size did not grow by anything like the file.
    let after = rss();
    assert!(
        after < before + 64 * 1024,
        "VmHWM {before} kB -> {after} kB"
    );
    assert_eq!(say(a, "still"), "one still");
}
