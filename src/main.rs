//! ringway's command line: parse arguments, set up logging, run a command.

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ringway::cli::{ConfigArgs, check};

#[derive(Debug, Parser)]
#[command(
    name = "ringway",
    version,
    about = "A TCP gateway for Istio networking manifests"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load and compile the configuration, print the compiled listeners,
    /// routes, clusters and endpoints with every warning and error, and exit
    /// 0 when it is valid, 1 when it is not (2 on usage errors).
    Check {
        #[command(flatten)]
        config: ConfigArgs,
        /// Report format.
        #[arg(long, value_enum, default_value = "text")]
        output: check::Output,
        /// Fail on warnings too.
        #[arg(long)]
        strict: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Check {
            config,
            output,
            strict,
        } => {
            let build = config.source().build();
            let report = check::render(&build, output, strict);
            // A closed stdout (`ringway check | head`) is not an error worth a panic.
            let _ = std::io::stdout().write_all(report.as_bytes());
            ExitCode::from(u8::try_from(check::exit_code(&build, strict)).unwrap_or(1))
        }
    }
}
