//! `loadgen MODE --target 127.0.0.1:PORT [options]`: one bounded run, one
//! JSON object on stdout. See bench/README.md.

use ringway_bench::args::Args;
use ringway_bench::loopback;
use ringway_bench::modes::{self, Common, Direction};
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: loadgen MODE --target 127.0.0.1:PORT [--duration 5s] [--count N] [--watch-pid PID] [options]
modes:
  throughput  --streams 1 --direction up|down|both --buffer 262144   (target: sink)
  connrate    --concurrency 4 --size 64                              (target: echo)
  rr          --connections 1 --size 64                              (target: echo)
  idle        --count 5000 --settle 2s                               (target: echo)
  probe       (wait until a 1-byte echo comes back, up to --duration)
  exec        --output FILE [--duration 60s] [--watch-pid PID] -- CMD ARGS...
              (run another client, its stdout into FILE, killed at --duration;
               reports the watched proxy's CPU over the run; no --target)
Every run ends at --duration (default 5s) or after --count operations.";

fn main() -> ExitCode {
    let mut argv = std::env::args().skip(1);
    let Some(mode) = argv.next() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    if mode == "-h" || mode == "--help" {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    match run(&mode, argv) {
        Ok((out, ok)) => {
            println!("{out}");
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("loadgen: {e}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn run(
    mode: &str,
    argv: impl Iterator<Item = String>,
) -> Result<(serde_json::Value, bool), String> {
    if mode == "exec" {
        return exec(argv);
    }
    let mut a = Args::parse(argv)?;
    let target = loopback(&a.required("target")?)?;
    let duration = a.duration("duration")?.unwrap_or(Duration::from_secs(5));
    if duration > Duration::from_secs(600) {
        return Err("--duration is capped at 600s".into());
    }
    let count = a.opt::<u64>("count")?;
    let watch = a.opt::<u32>("watch-pid")?;
    let c = Common {
        target,
        duration,
        count,
        watch,
    };
    let out = match mode {
        "throughput" => {
            let streams = a.get("streams", 1usize)?.clamp(1, 256);
            let dir: Direction = a.get("direction", Direction::Up)?;
            let buf = a.get("buffer", 256 * 1024usize)?.clamp(1, 64 << 20);
            a.finish()?;
            modes::throughput(&c, streams, dir, buf)
        }
        "connrate" => {
            let conc = a.get("concurrency", 4usize)?.clamp(1, 1024);
            let size = a.get("size", 64usize)?.clamp(1, 1 << 20);
            a.finish()?;
            modes::connrate(&c, conc, size)
        }
        "rr" => {
            let conns = a.get("connections", 1usize)?.clamp(1, 1024);
            let size = a.get("size", 64usize)?.clamp(1, 1 << 20);
            a.finish()?;
            modes::rr(&c, conns, size)
        }
        "idle" => {
            let settle = a.duration("settle")?.unwrap_or(Duration::from_secs(2));
            a.finish()?;
            modes::idle(&c, settle)
        }
        "probe" => {
            a.finish()?;
            modes::probe(&c)
        }
        _ => return Err(format!("unknown mode {mode:?}")),
    };
    let ok = match mode {
        "probe" => out["ok"] == true,
        "idle" => out["error"].is_null(),
        "throughput" => {
            out["errors"].as_array().is_some_and(|e| e.is_empty())
                && out["bytes"].as_u64() > Some(0)
        }
        "rr" => {
            out["errors"].as_array().is_some_and(|e| e.is_empty())
                && out["requests"].as_u64() > Some(0)
        }
        _ => out["connections"].as_u64() > Some(0),
    };
    Ok((out, ok))
}

/// `exec [options] -- CMD ARGS...`
fn exec(argv: impl Iterator<Item = String>) -> Result<(serde_json::Value, bool), String> {
    let argv: Vec<String> = argv.collect();
    let split = argv
        .iter()
        .position(|a| a == "--")
        .ok_or("exec: CMD must follow --")?;
    let mut a = Args::parse(argv[..split].iter().cloned())?;
    let cmd = &argv[split + 1..];
    if cmd.is_empty() {
        return Err("exec: no command after --".into());
    }
    let output = a.required("output")?;
    let timeout = a.duration("duration")?.unwrap_or(Duration::from_secs(60));
    if timeout > Duration::from_secs(600) {
        return Err("--duration is capped at 600s".into());
    }
    let watch = a.opt::<u32>("watch-pid")?;
    a.finish()?;
    let out = modes::exec(cmd, std::path::Path::new(&output), timeout, watch);
    let ok = out["exit_code"] == 0 && out["timed_out"] == false;
    Ok((out, ok))
}
