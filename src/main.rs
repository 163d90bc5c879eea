//! ringway's command line: parse arguments, set up logging, run a command.

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ringway::accesslog::{self, AccessLog};
use std::sync::Arc;

use ringway::cli::{ConfigArgs, FleetRunArgs, check, demo, fleet};
use ringway::dataplane::Settings;
use ringway::dataplane::http::HttpLimits;
use ringway::dataplane::ring::RecvMode;
use ringway::metrics::Identity;
use ringway::source::ConfigSource;
use ringway::supervisor::{self, RunOptions};

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

// Parsed once at start: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
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
        /// The files are part of a configuration: Gateways that open no
        /// listener are not an error.
        #[arg(long)]
        partial: bool,
    },
    /// Serve: forward every connection of every listener of the compiled
    /// table until SIGTERM or SIGINT.
    Run {
        #[command(flatten)]
        config: ConfigArgs,
        #[command(flatten)]
        data: DataArgs,
        #[command(flatten)]
        control: ControlArgs,
        #[command(flatten)]
        fleet: FleetRunArgs,
    },
    /// Istio's tcp-echo tutorial on this machine: two built-in echo backends
    /// ("one" for v1, "two" for v2), the gateway on the bundled example
    /// (80/20), 20 connections and their split; then serves
    /// `nc 127.0.0.1 31400` until Ctrl-C.
    Demo {
        /// Worker threads (one keeps the 80/20 split exact).
        #[arg(long, value_name = "N", default_value_t = 1)]
        workers: usize,
    },

    // The fleet commands (issue 14): a fleet's configuration in etcd.
    // Each runs in src/cli/fleet/ through its helper below `main`.
    /// Write the resources of manifest files into the fleet's etcd store,
    /// after validating the whole resulting set for every label set the
    /// fleet registered; one transaction, or nothing.
    #[command(after_help = fleet::EXIT_HELP)]
    Apply(fleet::apply::ApplyArgs),
    /// Delete resources from the fleet's etcd store, after validating the
    /// set that remains; one transaction, or nothing.
    #[command(after_help = fleet::EXIT_HELP)]
    Delete(fleet::delete::DeleteArgs),
    /// Print the resources stored in the fleet's etcd store, as applied.
    #[command(after_help = fleet::EXIT_HELP)]
    Get(fleet::get::GetArgs),
    /// Print each registered instance of the fleet and whether it serves
    /// the store's latest configuration; exit 0 only when all do.
    #[command(after_help = fleet::EXIT_HELP)]
    Status(fleet::status::StatusArgs),
}

/// SPEC §2 options of `run` that belong to the control plane.
#[derive(Debug, Clone, clap::Args)]
struct ControlArgs {
    /// Admin HTTP endpoint (/ready, /healthz, /metrics, /config_dump, POST /reload), or "off".
    #[arg(long, value_name = "ADDR|off", default_value = "127.0.0.1:15000", value_parser = parse_admin)]
    admin: Admin,
    /// Allow --admin on an address reachable from the network (not
    /// loopback): it serves POST /reload, /config_dump and /metrics to
    /// anyone who can connect, without authentication.
    #[arg(long)]
    admin_expose: bool,
    /// How long SIGTERM waits for open connections before closing them (e.g. 30s, 500ms).
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = ringway::config::manifest::parse_duration)]
    drain_timeout: std::time::Duration,
    /// How often endpoint host names (ServiceEntry resolution DNS) are
    /// resolved again; "0s" resolves only at load and reload.
    #[arg(long, value_name = "DUR", default_value = "60s", value_parser = ringway::config::manifest::parse_duration)]
    dns_refresh: std::time::Duration,
    /// Accept a reload that reads an empty file or would close every
    /// listener (refused by default: that is what a half-written file looks like).
    #[arg(long)]
    allow_empty_reload: bool,
    /// One line per connection at close: a file, "-" for stdout, or "off".
    #[arg(long, value_name = "PATH|-|off", default_value = "off")]
    access_log: String,
    /// Access-log lines queued for the writer; when the queue is full (a
    /// stalled disk or stdout reader) lines are dropped and counted in
    /// ringway_access_log_dropped_total.
    #[arg(long, value_name = "LINES", default_value_t = accesslog::DEFAULT_QUEUE_LINES, value_parser = parse_queue_lines)]
    access_log_queue: usize,
    /// Log line format (also of the access log).
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// This gateway's workload name in Istio's metrics (source_workload).
    #[arg(long, value_name = "NAME", default_value = Identity::WORKLOAD)]
    workload_name: String,
    /// The cluster this gateway runs in, for Istio's metrics (source_cluster).
    #[arg(long, value_name = "ID", default_value = Identity::CLUSTER)]
    cluster_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Knobs of the data plane (`run`).
#[derive(Debug, Clone, clap::Args)]
struct DataArgs {
    /// Worker threads, each pinned to a CPU [default: the CPUs this process may use].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    workers: Option<u32>,
    /// Endpoints tried per connection before giving up.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    connect_attempts: u32,
    /// Open connections allowed per process [default: no limit].
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Bytes a direction moves before it switches to splice (0: splice from
    /// the start; "never": copy only). For tests and measurements.
    #[arg(long, value_name = "BYTES|never", hide = true, value_parser = parse_splice_after)]
    splice_after: Option<u64>,
    /// HTTP: a body of known length, or a chunk, with at least this many
    /// bytes left splices from its first byte; a close-delimited response
    /// after this many bytes (0: always; "never": copy only). For tests
    /// and measurements.
    #[arg(long, value_name = "BYTES|never", hide = true, value_parser = parse_splice_after)]
    http_splice_threshold: Option<u64>,
    /// Force how the copy path receives: "multishot" (byte-limited multishot
    /// recv) or "single" (one buffer per recv). For tests.
    #[arg(long, value_name = "multishot|single", hide = true, value_parser = parse_recv_mode)]
    recv: Option<RecvMode>,
    /// Size of each copy-path buffer (512 per worker). For measurements.
    #[arg(long, value_name = "BYTES", hide = true, value_parser = clap::value_parser!(u32).range(4096..=262_144))]
    buffer_size: Option<u32>,
    /// Requested splice pipe size (capped by fs.pipe-max-size). For measurements.
    #[arg(long, value_name = "BYTES", hide = true, value_parser = clap::value_parser!(u64).range(4096..=67_108_864))]
    pipe_size: Option<u64>,
    /// HTTP: a request head must arrive whole within this from its first
    /// byte, else 408 and close (Envoy's request_headers_timeout, nginx's
    /// client_header_timeout).
    #[arg(long, value_name = "DUR", default_value = "60s", value_parser = parse_positive_duration)]
    http_head_timeout: std::time::Duration,
    /// HTTP: no byte either way while a request is open, for this long:
    /// 408 before the response, a reset after (Envoy's stream_idle_timeout).
    #[arg(long, value_name = "DUR", default_value = "300s", value_parser = parse_positive_duration)]
    http_stream_idle_timeout: std::time::Duration,
    /// HTTP: a keep-alive client connection with no request open closes
    /// after this (Envoy's idle_timeout, nginx's keepalive_timeout).
    #[arg(long, value_name = "DUR", default_value = "1h", value_parser = parse_positive_duration)]
    http_idle_timeout: std::time::Duration,
}

impl DataArgs {
    fn options(&self, config: &ConfigArgs, source: Arc<dyn ConfigSource>) -> RunOptions {
        RunOptions {
            source,
            pipeline: config.pipeline(),
            workers: self.workers.map(|w| w as usize),
            settings: {
                let defaults = Settings::default();
                Settings {
                    connect_attempts: self.connect_attempts,
                    max_connections: self.max_connections,
                    splice_after: self.splice_after.unwrap_or(defaults.splice_after),
                    http_splice_threshold: self
                        .http_splice_threshold
                        .unwrap_or(defaults.http_splice_threshold),
                    recv_mode: self.recv,
                    buffer_size: self.buffer_size.unwrap_or(defaults.buffer_size),
                    pipe_size: self
                        .pipe_size
                        .and_then(|p| usize::try_from(p).ok())
                        .unwrap_or(defaults.pipe_size),
                    http: HttpLimits {
                        head_timeout: self.http_head_timeout,
                        stream_idle: self.http_stream_idle_timeout,
                        idle_timeout: self.http_idle_timeout,
                    },
                }
            },
            access_log: AccessLog::off(),
            admin: None,
            admin_expose: false,
            drain_timeout: std::time::Duration::ZERO,
            dns_refresh: std::time::Duration::ZERO,
            allow_empty_reload: false,
            identity: Identity::default(),
        }
    }
}

/// `--admin`: an address, or `None` for "off".
#[derive(Debug, Clone, Copy)]
struct Admin(Option<std::net::SocketAddr>);

fn parse_admin(text: &str) -> Result<Admin, String> {
    if text == "off" {
        return Ok(Admin(None));
    }
    text.parse()
        .map(|a| Admin(Some(a)))
        .map_err(|_| format!("{text:?} is not an address (IP:PORT) or \"off\""))
}

fn parse_queue_lines(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=1 << 24).contains(&n) => Ok(n),
        _ => Err(format!("{text:?} is not a line count from 1 to 16777216")),
    }
}

fn parse_recv_mode(text: &str) -> Result<RecvMode, String> {
    match text {
        "multishot" => Ok(RecvMode::MultishotLimited),
        "single" => Ok(RecvMode::Single),
        _ => Err(format!("{text:?} is not \"multishot\" or \"single\"")),
    }
}

/// A duration above zero (`250ms`, `30s`, `1h`).
fn parse_positive_duration(text: &str) -> Result<std::time::Duration, String> {
    let d = ringway::config::manifest::parse_duration(text)?;
    if d.is_zero() {
        return Err("must be above zero".to_owned());
    }
    Ok(d)
}

fn parse_splice_after(text: &str) -> Result<u64, String> {
    if text == "never" {
        return Ok(u64::MAX);
    }
    text.parse()
        .map_err(|_| format!("{text:?} is not a byte count or \"never\""))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Run { .. } | Command::Demo { .. }) {
        // Before any thread exists (the access-log writer, the workers, the
        // admin runtime): every thread inherits the mask, so a SIGHUP, SIGTERM,
        // SIGINT or SIGUSR1 can only be taken by the supervisor's sigwait,
        // never by a thread where its default action would end the process.
        ringway::process::block_stop_signals();
    }
    init_logging(&cli.command);
    match cli.command {
        Command::Check {
            config,
            output,
            strict,
            partial,
        } => check(&config, output, strict, partial),
        Command::Demo { workers } => match demo::run(workers.max(1)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Run {
            config,
            data,
            control,
            fleet,
        } => run(&config, &data, &control, &fleet),
        Command::Apply(args) => fleet_apply(&args),
        Command::Delete(args) => fleet_delete(&args),
        Command::Get(args) => fleet_get(&args),
        Command::Status(args) => fleet_status(&args),
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`); JSON lines for
/// `run --log-format json`.
fn init_logging(command: &Command) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match command {
        Command::Run { control, .. } if control.log_format == LogFormat::Json => logs.json().init(),
        Command::Check { .. } | Command::Run { .. } | Command::Demo { .. } => logs.init(),
        Command::Apply(_) | Command::Delete(_) | Command::Get(_) | Command::Status(_) => {
            logs.init();
        }
    }
}

/// `ringway check`: the report on stdout, the verdict as the exit status.
fn check(config: &ConfigArgs, output: check::Output, strict: bool, partial: bool) -> ExitCode {
    if let Err(e) = config.location() {
        eprintln!("ringway check: {e}");
        return ExitCode::from(2);
    }
    // Only a store can fail to be read: 4, as for the fleet commands.
    let snapshot = match config.read_once() {
        Ok(snapshot) => snapshot,
        Err(e) => {
            eprintln!("ringway check: {e}");
            return ExitCode::from(4);
        }
    };
    let mut build = config.pipeline().build(&snapshot);
    if !partial {
        check::require_listeners(&mut build);
    }
    let report = check::render(&build, output, strict);
    // A closed stdout (`ringway check | head`) is not an error worth a panic.
    let _ = std::io::stdout().write_all(report.as_bytes());
    ExitCode::from(u8::try_from(check::exit_code(&build, strict)).unwrap_or(1))
}

/// `ringway run`: start the access log, serve until SIGTERM or SIGINT, then
/// let the access log drain.
fn run(
    config: &ConfigArgs,
    data: &DataArgs,
    control: &ControlArgs,
    fleet: &FleetRunArgs,
) -> ExitCode {
    let format = match control.log_format {
        LogFormat::Json => accesslog::Format::Json,
        LogFormat::Text => accesslog::Format::Text,
    };
    let target = accesslog::Target::parse(&control.access_log);
    let (access_log, writer) = match accesslog::AccessLog::start(
        &target,
        format,
        control.access_log_queue,
    ) {
        Ok(started) => started,
        Err(e) => {
            tracing::error!(access_log = %control.access_log, error = %e, "cannot open the access log; check the path and its directory's permissions");
            return ExitCode::FAILURE;
        }
    };
    // An etcd source starts its thread here; its first snapshot (in
    // supervisor::run) waits for etcd, then for the cache.
    let source = match config.run_source(fleet) {
        Ok(source) => source,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let mut options = data.options(config, source);
    options.access_log = access_log;
    options.admin = control.admin.0;
    options.admin_expose = control.admin_expose;
    options.drain_timeout = control.drain_timeout;
    options.dns_refresh = control.dns_refresh;
    options.allow_empty_reload = control.allow_empty_reload;
    options.identity = Identity::new(
        &control.workload_name,
        &config.compile.workload_namespace,
        &control.cluster_id,
        &config.labels,
    );
    let result = supervisor::run(&options);
    // The workers' clones are gone: the writer drains and ends,
    // unless its disk or reader is stalled.
    drop(options);
    if let Some(writer) = writer {
        writer.finish(accesslog::FLUSH_TIMEOUT);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

// The fleet commands' helpers: each command prints its own report and
// returns its exit status (src/cli/fleet/mod.rs lists them).

/// `ringway apply`.
fn fleet_apply(args: &fleet::apply::ApplyArgs) -> ExitCode {
    ExitCode::from(fleet::apply::run(args))
}

/// `ringway delete`.
fn fleet_delete(args: &fleet::delete::DeleteArgs) -> ExitCode {
    ExitCode::from(fleet::delete::run(args))
}

/// `ringway get`.
fn fleet_get(args: &fleet::get::GetArgs) -> ExitCode {
    ExitCode::from(fleet::get::run(args))
}

/// `ringway status`.
fn fleet_status(args: &fleet::status::StatusArgs) -> ExitCode {
    ExitCode::from(fleet::status::run(args))
}
