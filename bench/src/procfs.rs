//! CPU and memory of the proxy under test, read from /proc.
//!
//! CPU: utime+stime (fields 14 and 15) of `/proc/PID/stat` for the process
//! and every descendant process (nginx's workers are children of its
//! master). A process's `stat` covers all its threads, including threads
//! that already exited, io_uring io-wq workers (`iou-wrk-*`) and SQPOLL
//! threads, which are threads of the process that owns the ring. As a cross
//! check we also sum `/proc/PID/task/*/stat` (live threads only).
//!
//! Memory: VmRSS from `/proc/PID/status` and Private_Dirty from
//! `/proc/PID/smaps_rollup`, summed over the same processes. Both are user
//! memory; socket buffers live in the kernel and are not counted.

use serde_json::{json, Value};
use std::fs;

pub fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime+stime in clock ticks from a `stat` file.
fn stat_ticks(path: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    // comm may contain spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// `pid` and all its descendants.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        if let Ok(tasks) = fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                if let Ok(text) = fs::read_to_string(t.path().join("children")) {
                    for c in text.split_whitespace().filter_map(|c| c.parse().ok()) {
                        if !out.contains(&c) {
                            out.push(c);
                        }
                    }
                }
            }
        }
        i += 1;
    }
    out
}

#[derive(Debug, Clone, Default)]
pub struct CpuSample {
    pub pids: Vec<u32>,
    /// Sum over processes of /proc/PID/stat utime+stime, in ticks.
    pub proc_ticks: u64,
    /// Sum over live threads of /proc/PID/task/TID/stat, in ticks.
    pub task_ticks: u64,
    pub threads: usize,
    pub iou_wrk: usize,
}

pub fn cpu(pid: u32) -> CpuSample {
    let pids = tree(pid);
    let mut s = CpuSample::default();
    for &p in &pids {
        s.proc_ticks += stat_ticks(&format!("/proc/{p}/stat")).unwrap_or(0);
        if let Ok(tasks) = fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                let tp = t.path();
                s.task_ticks += stat_ticks(&tp.join("stat").to_string_lossy()).unwrap_or(0);
                s.threads += 1;
                if fs::read_to_string(tp.join("comm")).is_ok_and(|c| c.starts_with("iou-wrk")) {
                    s.iou_wrk += 1;
                }
            }
        }
    }
    s.pids = pids;
    s
}

/// CPU seconds between two samples, as JSON.
pub fn cpu_delta(before: &CpuSample, after: &CpuSample) -> Value {
    let tck = clk_tck();
    json!({
        "pids": after.pids,
        "cpu_s": after.proc_ticks.saturating_sub(before.proc_ticks) as f64 / tck,
        "cpu_s_live_threads": after.task_ticks as f64 / tck - before.task_ticks as f64 / tck,
        "threads": after.threads,
        "iou_wrk_threads": after.iou_wrk,
    })
}

#[derive(Debug, Clone, Copy, Default)]
pub struct MemSample {
    pub rss_kib: u64,
    pub private_dirty_kib: u64,
}

fn kib_field(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub fn mem(pid: u32) -> MemSample {
    let mut m = MemSample::default();
    for p in tree(pid) {
        if let Ok(t) = fs::read_to_string(format!("/proc/{p}/status")) {
            m.rss_kib += kib_field(&t, "VmRSS:");
        }
        if let Ok(t) = fs::read_to_string(format!("/proc/{p}/smaps_rollup")) {
            m.private_dirty_kib += kib_field(&t, "Private_Dirty:");
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_self() {
        let me = std::process::id();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let s = cpu(me);
        assert!(s.threads >= 1);
        assert!(s.proc_ticks >= s.task_ticks / 2);
        let m = mem(me);
        assert!(m.rss_kib > 0);
    }
}
