//! `echo --listen 127.0.0.1:PORT [--duration SECONDS]`: the echo backend
//! (see src/backend.rs). Runs until killed, or for --duration if given.

use ringway_bench::backend::{serve_main, Backend};
use std::process::ExitCode;

fn main() -> ExitCode {
    serve_main("echo", Backend::echo)
}
