//! Integrity: 8 parallel connections each send 32 MiB through ringway to a
//! raw echo and read 32 MiB back; every byte arrives, in order, on both the
//! copy path and the splice path.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::thread;

use sha2::{Digest, Sha256};

use common::{EchoBackend, Ports, Ringway, connect, tcp_service};

const CONNECTIONS: usize = 8;
const BYTES: usize = 32 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

/// Pseudo-random bytes, different for every connection and every chunk.
fn pattern(seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..2 * CHUNK)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn transfer(port: u16, seed: u64) -> ([u8; 32], [u8; 32], usize) {
    let s = connect(port);
    let mut writer = s.try_clone().unwrap();
    let send = thread::spawn(move || {
        let data = pattern(seed);
        let mut hash = Sha256::new();
        let mut sent = 0;
        let mut round = 0usize;
        while sent < BYTES {
            let at = (round * 7919) % CHUNK;
            let chunk = &data[at..at + CHUNK.min(BYTES - sent)];
            writer.write_all(chunk).unwrap();
            hash.update(chunk);
            sent += chunk.len();
            round += 1;
        }
        writer.shutdown(Shutdown::Write).unwrap();
        <[u8; 32]>::from(hash.finalize())
    });
    let mut reader = s;
    let mut hash = Sha256::new();
    let mut got = 0;
    let mut buf = vec![0u8; CHUNK];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hash.update(&buf[..n]);
                got += n;
            }
            Err(e) => panic!("read after {got} bytes: {e}"),
        }
    }
    (send.join().unwrap(), hash.finalize().into(), got)
}

/// Which path the test expects the bytes to take.
#[derive(PartialEq)]
enum Path {
    Copy,
    Splice,
}

fn integrity(splice_after: &str, path: Path) {
    integrity_with(&["--splice-after", splice_after], path);
}

fn integrity_with(args: &[&str], path: Path) {
    let ports = Ports::new();
    let echo = EchoBackend::raw();
    let listen = ports.listener();
    let config = tcp_service(listen, &[echo.port], "");
    let args: Vec<&str> = ["--workers", "2"].iter().chain(args).copied().collect();
    let Some(gw) = Ringway::start(&config, &args) else {
        return;
    };
    let pipes_at_start = gw.pipes();
    let runs: Vec<_> = (0..CONNECTIONS as u64)
        .map(|seed| thread::spawn(move || transfer(listen, seed)))
        .collect();
    for (i, run) in runs.into_iter().enumerate() {
        let (sent, received, got) = run.join().unwrap();
        assert_eq!(got, BYTES, "connection {i} got {got} bytes");
        assert_eq!(sent, received, "connection {i}: sha256 differs");
    }
    let iou = gw
        .threads()
        .iter()
        .filter(|t| t.starts_with("iou-wrk"))
        .count();
    assert_eq!(iou, 0, "io-wq threads appeared");
    // Pipes used by the splice path stay pooled for a second after use.
    let pipes = gw.pipes();
    match path {
        Path::Copy => assert_eq!(pipes, pipes_at_start, "the copy path opened pipes"),
        Path::Splice => assert!(pipes > pipes_at_start, "the splice path used no pipe"),
    }
}

#[test]
fn eight_connections_of_32_mib_each_way_arrive_intact_on_the_copy_path() {
    integrity("never", Path::Copy);
}

#[test]
fn eight_connections_of_32_mib_each_way_arrive_intact_on_the_splice_path() {
    integrity("0", Path::Splice);
}

#[test]
fn eight_connections_of_32_mib_each_way_arrive_intact_switching_paths() {
    integrity("262144", Path::Splice);
}

#[test]
fn eight_connections_of_32_mib_each_way_arrive_intact_with_one_buffer_per_recv() {
    // The copy path on kernels without the multishot byte limit.
    integrity_with(&["--splice-after", "never", "--recv", "single"], Path::Copy);
}
