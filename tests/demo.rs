//! `ringway demo` shows the tcp-echo tutorial's 80/20 split and seed 004's
//! HTTP 90/10 split, and keeps serving. (It uses the examples' fixed ports
//! 19000, 29000, 31400 and 18080-18082, below the ephemeral range the other
//! tests draw from.)

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;

use common::{PATIENCE, say};

#[test]
fn demo_prints_the_80_20_split_and_keeps_serving() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringway"))
        .arg("demo")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut split = None;
    while split.is_none() {
        let Ok(line) = rx.recv_timeout(PATIENCE) else {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            if stderr.contains("io_uring") && !common::require_uring() {
                eprintln!("SKIPPED: io_uring unavailable:\n{stderr}");
                return;
            }
            panic!("demo printed no split:\n{stderr}");
        };
        if line.starts_with("split over") {
            split = Some(line);
        }
    }
    assert_eq!(
        split.unwrap(),
        "split over 20 connections: one (v1) 16 = 80%, two (v2) 4 = 20%"
    );
    // Seed 004: the HTTP gateway's 90/10 split, and 404 for another host.
    let mut http = Vec::new();
    while http.len() < 2 {
        let line = rx.recv_timeout(PATIENCE).expect("the demo's HTTP split");
        if line.starts_with("split over 20 requests") || line.starts_with("another host") {
            http.push(line);
        }
    }
    assert_eq!(
        http,
        [
            "split over 20 requests: v1 18 = 90%, v2 2 = 10%",
            "another host (other.example.com): 404"
        ]
    );
    let reply = say(31400, "by hand");
    assert!(reply == "one by hand" || reply == "two by hand", "{reply}");
    Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}
