//! The access log: one line per TCP connection at close, one per HTTP
//! request when its response ends.
//!
//! Workers format a line and hand it to the logger thread over a channel,
//! so no worker ever blocks on the disk or takes a lock. The text format is
//! Istio's default access-log line (`EnvoyTextLogFormat`; for TCP the
//! HTTP-only fields are `-`), so parsers written for Istio gateways read it
//! unchanged; `json` writes the same fields as an object. `reopen`
//! (SIGUSR1) reopens the file after logrotate moved it.
#![forbid(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::http1::date::civil_from_days;

mod http;

pub use http::HttpRecord;

/// Where lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Off,
    Stdout,
    File(PathBuf),
}

impl Target {
    /// `off`, `-` (stdout) or a path, as `--access-log` takes it.
    pub fn parse(text: &str) -> Target {
        match text {
            "off" | "" => Target::Off,
            "-" => Target::Stdout,
            path => Target::File(PathBuf::from(path)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// What is known of a connection when it closes.
#[derive(Debug, Clone, Serialize)]
pub struct Record<'a> {
    #[serde(serialize_with = "ser_time")]
    pub start_time: SystemTime,
    #[serde(rename = "duration_ms", serialize_with = "ser_ms")]
    pub duration: Duration,
    pub downstream_remote_address: SocketAddr,
    /// The address the client connected to (the connection's own local
    /// address, as Envoy logs it, not a listener's wildcard bind).
    pub downstream_local_address: SocketAddr,
    pub requested_server_name: Option<&'a str>,
    /// `outbound|port|subset|host`.
    pub upstream_cluster: Option<&'a str>,
    pub upstream_host: Option<SocketAddr>,
    /// Downstream → upstream bytes.
    pub bytes_received: u64,
    /// Upstream → downstream bytes.
    pub bytes_sent: u64,
    /// `-` normal, `UF`, `UO`, `UH`, `NR`, `IT`, `MD`, `DR`, `DC`, `UC`.
    pub response_flags: &'static str,
    pub generation: u64,
}

impl Record<'_> {
    pub fn format(&self, format: Format) -> String {
        match format {
            Format::Json => serde_json::to_string(self).unwrap_or_default(),
            Format::Text => {
                let dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
                // [%START_TIME%] "- - -" 0 %RESPONSE_FLAGS% - - "-" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% -
                // "-" "-" "-" "-" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% - %DOWNSTREAM_LOCAL_ADDRESS%
                // %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% -
                format!(
                    "[{}] \"- - -\" 0 {} - - \"-\" {} {} {} - \"-\" \"-\" \"-\" \"-\" \"{}\" {} - {} {} {} -",
                    rfc3339(self.start_time),
                    self.response_flags,
                    self.bytes_received,
                    self.bytes_sent,
                    self.duration.as_millis(),
                    dash(self.upstream_host.map(|a| a.to_string())),
                    self.upstream_cluster.unwrap_or("-"),
                    self.downstream_local_address,
                    self.downstream_remote_address,
                    self.requested_server_name.unwrap_or("-"),
                )
            }
        }
    }
}

fn ser_time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*t))
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `2026-11-22T03:55:00.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(secs / 86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

enum Message {
    Line(String),
    /// Reopen here, in order with the lines (when the queue had room).
    Reopen,
}

/// What workers, the writer and the metrics share.
#[derive(Debug, Default)]
pub struct Counters {
    /// Lines dropped because the queue was full (`ringway_access_log_dropped_total`).
    dropped: AtomicU64,
    /// SIGUSR1 asked for the file to be reopened; the writer takes it.
    reopen: AtomicBool,
}

impl Counters {
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Lines the queue between the workers and the writer holds by default:
/// about 4 MiB of 250-byte lines, and more than a second of the highest
/// connection rate measured on the bench machine (12,600 connections/s,
/// README "Performance"), so a short disk stall loses nothing while a
/// writer that is stuck for good costs bounded memory.
pub const DEFAULT_QUEUE_LINES: usize = 16_384;

/// How long a stopping process waits for the writer to write what is
/// queued before it exits without it.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// A worker's way to the logger thread. Cheap to clone; `Off` sends nothing.
/// The queue is bounded: when it is full (the disk or the reader of stdout
/// does not keep up) a line is dropped and counted, never waited for, as
/// HAProxy's log ring does.
#[derive(Debug, Clone)]
pub struct AccessLog {
    format: Format,
    tx: Option<mpsc::SyncSender<Message>>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Message::Line(_) => "Line",
            Message::Reopen => "Reopen",
        })
    }
}

/// The writer thread, for [`Writer::finish`].
#[derive(Debug)]
pub struct Writer {
    thread: thread::JoinHandle<()>,
    counters: Arc<Counters>,
}

impl AccessLog {
    /// A log that writes nothing.
    pub fn off() -> AccessLog {
        AccessLog {
            format: Format::Text,
            tx: None,
            counters: Arc::default(),
        }
    }

    /// Starts the logger thread for `target` with a queue of `queue_lines`
    /// lines; fails when the file cannot be opened.
    pub fn start(
        target: &Target,
        format: Format,
        queue_lines: usize,
    ) -> io::Result<(AccessLog, Option<Writer>)> {
        let mut sink = match target {
            Target::Off => return Ok((AccessLog::off(), None)),
            Target::Stdout => Sink::Stdout(BufWriter::new(io::stdout())),
            Target::File(path) => Sink::File {
                file: BufWriter::new(open(path)?),
                path: path.clone(),
            },
        };
        let counters = Arc::new(Counters::default());
        let (tx, rx) = mpsc::sync_channel::<Message>(queue_lines.max(1));
        let shared = Arc::clone(&counters);
        let thread = thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                let mut reported = 0;
                while let Ok(first) = rx.recv() {
                    sink.handle(first, &shared);
                    // Write whatever else is queued, then flush once.
                    while let Ok(next) = rx.try_recv() {
                        sink.handle(next, &shared);
                    }
                    // A reopen asked for while the queue was full.
                    if shared.reopen.swap(false, Ordering::AcqRel) {
                        sink.reopen();
                    }
                    sink.flush();
                    let dropped = shared.dropped();
                    if dropped != reported {
                        tracing::warn!(
                            dropped = dropped - reported,
                            total = dropped,
                            "access log lines dropped: the queue was full (the disk, or the reader of \
                             stdout, did not keep up); see ringway_access_log_dropped_total"
                        );
                        reported = dropped;
                    }
                }
                sink.flush();
            })?;
        let writer = Writer {
            thread,
            counters: Arc::clone(&counters),
        };
        Ok((
            AccessLog {
                format,
                tx: Some(tx),
                counters,
            },
            Some(writer),
        ))
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// The counters, for the metrics (holds no sender: the writer still
    /// ends when the last `AccessLog` is dropped).
    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }

    /// Queues the line of a TCP connection, or drops and counts it when
    /// the queue is full.
    pub fn log(&self, record: &Record<'_>) {
        self.send(|format| record.format(format));
    }

    /// Queues the line of an HTTP request, or drops and counts it when the
    /// queue is full.
    pub fn log_http(&self, record: &HttpRecord<'_>) {
        self.send(|format| record.format(format));
    }

    /// Formats a line (only when the log is on) and queues it.
    fn send(&self, line: impl FnOnce(Format) -> String) {
        if let Some(tx) = &self.tx {
            if let Err(mpsc::TrySendError::Full(_)) = tx.try_send(Message::Line(line(self.format)))
            {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Reopens the file (after logrotate moved it away).
    pub fn reopen(&self) {
        if let Some(tx) = &self.tx {
            self.counters.reopen.store(true, Ordering::Release);
            // A full queue means the writer is busy: it looks at the flag
            // after the batch it is writing.
            let _ = tx.try_send(Message::Reopen);
        }
    }
}

impl Writer {
    /// Waits up to `timeout` for the writer to write what is queued and end
    /// (every `AccessLog` must be dropped first); false when it is still
    /// blocked (a stalled disk or stdout reader), and the process may exit
    /// without it.
    pub fn finish(self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while !self.thread.is_finished() {
            if std::time::Instant::now() >= deadline {
                tracing::error!(
                    dropped = self.counters.dropped(),
                    "the access-log writer is blocked (a stalled disk, or a reader of stdout that does not read); \
                     exiting without the lines still queued"
                );
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.thread.join();
        true
    }
}

fn open(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

enum Sink {
    Stdout(BufWriter<io::Stdout>),
    File {
        file: BufWriter<File>,
        path: PathBuf,
    },
}

impl Sink {
    fn handle(&mut self, message: Message, counters: &Counters) {
        match message {
            Message::Line(line) => {
                let w: &mut dyn Write = match self {
                    Sink::Stdout(w) => w,
                    Sink::File { file, .. } => file,
                };
                let _ = writeln!(w, "{line}");
            }
            Message::Reopen => {
                if counters.reopen.swap(false, Ordering::AcqRel) {
                    self.reopen();
                }
            }
        }
    }

    fn reopen(&mut self) {
        if let Sink::File { file, path } = self {
            let _ = file.flush();
            match open(path) {
                Ok(f) => *file = BufWriter::new(f),
                Err(e) => {
                    tracing::error!(path = %path.display(), "cannot reopen the access log: {e}")
                }
            }
        }
    }

    fn flush(&mut self) {
        let _ = match self {
            Sink::Stdout(w) => w.flush(),
            Sink::File { file, .. } => file.flush(),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record<'static> {
        Record {
            start_time: UNIX_EPOCH + Duration::from_millis(1_795_320_900_123),
            duration: Duration::from_millis(1003),
            downstream_remote_address: "127.0.0.1:54321".parse().expect("addr"),
            downstream_local_address: "0.0.0.0:31400".parse().expect("addr"),
            requested_server_name: None,
            upstream_cluster: Some("outbound|9000|v1|tcp-echo.default.svc.cluster.local"),
            upstream_host: Some("127.0.0.1:19000".parse().expect("addr")),
            bytes_received: 12,
            bytes_sent: 16,
            response_flags: "-",
            generation: 2,
        }
    }

    #[test]
    fn text_lines_follow_istios_default_tcp_format() {
        assert_eq!(
            record().format(Format::Text),
            "[2026-11-22T04:15:00.123Z] \"- - -\" 0 - - - \"-\" 12 16 1003 - \"-\" \"-\" \"-\" \"-\" \
             \"127.0.0.1:19000\" outbound|9000|v1|tcp-echo.default.svc.cluster.local - 0.0.0.0:31400 \
             127.0.0.1:54321 - -"
        );
        let failed = Record {
            upstream_host: None,
            response_flags: "UF",
            ..record()
        };
        assert!(
            failed
                .format(Format::Text)
                .contains(" 0 UF - - \"-\" 12 16 1003 - \"-\" \"-\" \"-\" \"-\" \"-\" outbound")
        );
    }

    #[test]
    fn json_lines_name_every_field() {
        let v: serde_json::Value =
            serde_json::from_str(&record().format(Format::Json)).expect("JSON");
        assert_eq!(v["start_time"], "2026-11-22T04:15:00.123Z");
        assert_eq!(v["duration_ms"], 1003);
        assert_eq!(v["upstream_host"], "127.0.0.1:19000");
        assert_eq!(v["requested_server_name"], serde_json::Value::Null);
        assert_eq!(v["response_flags"], "-");
        assert_eq!(v["bytes_received"], 12);
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn a_file_log_survives_rotation() {
        let dir = std::env::temp_dir().join(format!("ringway-accesslog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("access.log");
        let (log, writer) =
            AccessLog::start(&Target::File(path.clone()), Format::Text, 16).expect("start");
        log.log(&record());
        std::fs::rename(&path, dir.join("access.log.1")).expect("rotate");
        log.reopen();
        log.log(&Record {
            response_flags: "UF",
            ..record()
        });
        drop(log);
        assert!(writer.expect("writer").finish(Duration::from_secs(10)));
        let old = std::fs::read_to_string(dir.join("access.log.1")).expect("old");
        let new = std::fs::read_to_string(&path).expect("new");
        assert_eq!(old.lines().count(), 1);
        assert_eq!(new.lines().count(), 1);
        assert!(new.contains(" 0 UF "));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
