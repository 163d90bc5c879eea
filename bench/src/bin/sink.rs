//! `sink --listen 127.0.0.1:PORT [--duration SECONDS]`: the sink backend
//! (see src/backend.rs). Runs until killed, or for --duration if given.

use ringway_bench::args::Args;
use ringway_bench::backend::Backend;
use ringway_bench::loopback;
use std::process::ExitCode;

fn main() -> ExitCode {
    let r = (|| -> Result<(), String> {
        let mut a = Args::parse(std::env::args().skip(1))?;
        let listen = loopback(&a.required("listen")?)?;
        let duration = a.duration("duration")?;
        a.finish()?;
        let b = Backend::sink(listen).map_err(|e| format!("{listen}: {e}"))?;
        eprintln!("sink listening on {}", b.addr);
        match duration {
            Some(d) => std::thread::sleep(d),
            None => b.wait(),
        }
        Ok(())
    })();
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sink: {e}");
            ExitCode::from(2)
        }
    }
}
