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

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

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

/// What is known of an HTTP request when its response ends (or when it
/// was refused: `method` and `path` empty when the head could not be read).
#[derive(Debug, Clone)]
pub struct HttpRecord<'a> {
    pub start_time: SystemTime,
    /// From the first byte of the request to the last byte of the response.
    pub duration: Duration,
    pub method: &'a str,
    /// As the client sent it (before any rewrite), query included.
    pub path: &'a str,
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub protocol: &'a str,
    /// The status sent downstream; 0 when none was.
    pub response_code: u16,
    /// `-`, `NR`, `UF`, `UO`, `UH`, `UC`, `UT`, `URX`, `DC`, `DPE`, `UPE`.
    pub response_flags: &'static str,
    /// Envoy's `%RESPONSE_CODE_DETAILS%`: `via_upstream`, `route_not_found`...
    pub response_code_details: &'a str,
    /// Request body bytes (Envoy's `%BYTES_RECEIVED%` for HTTP).
    pub bytes_received: u64,
    /// Response body bytes.
    pub bytes_sent: u64,
    /// From the request's last byte sent upstream to the response head's
    /// first byte (what Envoy puts in `x-envoy-upstream-service-time`).
    pub upstream_service_time: Option<Duration>,
    pub x_forwarded_for: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub authority: Option<&'a str>,
    pub upstream_host: Option<SocketAddr>,
    /// `outbound|port|subset|host`.
    pub upstream_cluster: Option<&'a str>,
    pub upstream_local_address: Option<SocketAddr>,
    pub downstream_local_address: SocketAddr,
    pub downstream_remote_address: SocketAddr,
    /// The VirtualService `http[].name` of the route taken.
    pub route_name: Option<&'a str>,
    pub generation: u64,
}

impl HttpRecord<'_> {
    pub fn format(&self, format: Format) -> String {
        match format {
            Format::Json => serde_json::to_string(&HttpJson::of(self)).unwrap_or_default(),
            Format::Text => self.text(),
        }
    }

    /// Istio's `EnvoyTextLogFormat`, field by field:
    /// `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%"
    /// %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS%
    /// "%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION%
    /// %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%"
    /// "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW%
    /// %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS%
    /// %REQUESTED_SERVER_NAME% %ROUTE_NAME%`. ringway terminates no TLS on
    /// HTTP listeners and has no connection-termination or transport-failure
    /// text to give: those three are `-`.
    fn text(&self) -> String {
        let mut line = format!("[{}] \"", rfc3339(self.start_time));
        bare(&mut line, self.method);
        line.push(' ');
        bare(&mut line, self.path);
        line.push(' ');
        bare(&mut line, self.protocol);
        let _ = write!(line, "\" {} {} ", self.response_code, self.response_flags);
        bare(&mut line, self.response_code_details);
        let _ = write!(
            line,
            " - \"-\" {} {} {} {} ",
            self.bytes_received,
            self.bytes_sent,
            self.duration.as_millis(),
            dash(self.upstream_service_time.map(|t| t.as_millis())),
        );
        for value in [
            self.x_forwarded_for,
            self.user_agent,
            self.request_id,
            self.authority,
        ] {
            quoted(&mut line, value.unwrap_or(""));
            line.push(' ');
        }
        let _ = write!(line, "\"{}\" ", dash(self.upstream_host));
        bare(&mut line, self.upstream_cluster.unwrap_or(""));
        let _ = write!(
            line,
            " {} {} {} - ",
            dash(self.upstream_local_address),
            self.downstream_local_address,
            self.downstream_remote_address,
        );
        bare(&mut line, self.route_name.unwrap_or(""));
        line
    }
}

/// A value, or `-`.
fn dash<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// Writes a value a client or a configuration chose as a bare (unquoted)
/// field of the text line: `-` when empty, escaped as [`escape_into`] does,
/// and a space as `\x20` so that fields stay split by spaces.
fn bare(line: &mut String, value: &str) {
    if value.is_empty() {
        line.push('-');
    } else {
        escape_into(line, value, true);
    }
}

/// Writes a value between double quotes (`"-"` when empty).
fn quoted(line: &mut String, value: &str) {
    line.push('"');
    if value.is_empty() {
        line.push('-');
    } else {
        escape_into(line, value, false);
    }
    line.push('"');
}

/// `"` and `\` backslash-escaped, control characters as `\t`, `\n`, `\r`
/// or `\xHH` (each byte), so that no value can end the line or a quoted
/// field: Envoy writes values raw (envoyproxy/envoy#4191, open); these are
/// the escapes of Apache's `mod_log_config`.
fn escape_into(line: &mut String, value: &str, bare: bool) {
    for c in value.chars() {
        match c {
            '"' => line.push_str("\\\""),
            '\\' => line.push_str("\\\\"),
            '\t' => line.push_str("\\t"),
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            ' ' if bare => line.push_str("\\x20"),
            c if c.is_control() => {
                let mut bytes = [0; 4];
                for b in c.encode_utf8(&mut bytes).bytes() {
                    let _ = write!(line, "\\x{b:02x}");
                }
            }
            c => line.push(c),
        }
    }
}

/// An [`HttpRecord`] under the keys of Istio's JSON access-log format
/// (`EnvoyJSONLogFormatIstio`): what the text line writes `-` is `null`,
/// numbers are numbers, `upstream_service_time` is the header's text as
/// Envoy logs it; `generation` is ringway's.
#[derive(Serialize)]
struct HttpJson<'a> {
    start_time: String,
    method: Option<&'a str>,
    path: Option<&'a str>,
    protocol: Option<&'a str>,
    response_code: u16,
    response_flags: &'static str,
    response_code_details: Option<&'a str>,
    connection_termination_details: Option<&'a str>,
    upstream_transport_failure_reason: Option<&'a str>,
    bytes_received: u64,
    bytes_sent: u64,
    duration: u64,
    upstream_service_time: Option<String>,
    x_forwarded_for: Option<&'a str>,
    user_agent: Option<&'a str>,
    request_id: Option<&'a str>,
    authority: Option<&'a str>,
    upstream_host: Option<SocketAddr>,
    upstream_cluster: Option<&'a str>,
    upstream_local_address: Option<SocketAddr>,
    downstream_local_address: SocketAddr,
    downstream_remote_address: SocketAddr,
    requested_server_name: Option<&'a str>,
    route_name: Option<&'a str>,
    generation: u64,
}

impl<'a> HttpJson<'a> {
    fn of(r: &HttpRecord<'a>) -> HttpJson<'a> {
        let given = |v: &'a str| Some(v).filter(|v| !v.is_empty());
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        HttpJson {
            start_time: rfc3339(r.start_time),
            method: given(r.method),
            path: given(r.path),
            protocol: given(r.protocol),
            response_code: r.response_code,
            response_flags: r.response_flags,
            response_code_details: given(r.response_code_details),
            connection_termination_details: None,
            upstream_transport_failure_reason: None,
            bytes_received: r.bytes_received,
            bytes_sent: r.bytes_sent,
            duration: millis(r.duration),
            upstream_service_time: r.upstream_service_time.map(|t| millis(t).to_string()),
            x_forwarded_for: r.x_forwarded_for,
            user_agent: r.user_agent,
            request_id: r.request_id,
            authority: r.authority,
            upstream_host: r.upstream_host,
            upstream_cluster: r.upstream_cluster,
            upstream_local_address: r.upstream_local_address,
            downstream_local_address: r.downstream_local_address,
            downstream_remote_address: r.downstream_remote_address,
            requested_server_name: None,
            route_name: r.route_name,
            generation: r.generation,
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
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
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

    /// A 200 from `front-tomcat` v1, as the data plane reports it.
    fn via_upstream() -> HttpRecord<'static> {
        HttpRecord {
            start_time: UNIX_EPOCH + Duration::from_millis(1_795_320_900_123),
            duration: Duration::from_micros(7_900),
            method: "GET",
            path: "/index.html?lang=en",
            protocol: "HTTP/1.1",
            response_code: 200,
            response_flags: "-",
            response_code_details: "via_upstream",
            bytes_received: 0,
            bytes_sent: 1240,
            upstream_service_time: Some(Duration::from_millis(5)),
            x_forwarded_for: Some("10.0.0.7"),
            user_agent: Some("curl/8.5.0"),
            request_id: Some("5f0c8f5e-2a45-4d3c-9f57-0d5b6f7c1e2a"),
            authority: Some("tomcat.istio.com"),
            upstream_host: Some("127.0.0.1:18081".parse().expect("addr")),
            upstream_cluster: Some("outbound|8080|v1|front-tomcat.default.svc.cluster.local"),
            upstream_local_address: Some("127.0.0.1:40212".parse().expect("addr")),
            downstream_local_address: "127.0.0.1:18080".parse().expect("addr"),
            downstream_remote_address: "127.0.0.1:54321".parse().expect("addr"),
            route_name: Some("tomcat-split"),
            generation: 3,
        }
    }

    /// A request for a host no virtual host serves.
    fn not_routed() -> HttpRecord<'static> {
        HttpRecord {
            duration: Duration::ZERO,
            path: "/",
            response_code: 404,
            response_flags: "NR",
            response_code_details: "route_not_found",
            bytes_sent: 0,
            upstream_service_time: None,
            x_forwarded_for: None,
            authority: Some("other.example"),
            upstream_host: None,
            upstream_cluster: None,
            upstream_local_address: None,
            route_name: None,
            ..via_upstream()
        }
    }

    /// Every endpoint of the cluster refused the connection.
    fn connect_failed() -> HttpRecord<'static> {
        HttpRecord {
            duration: Duration::from_millis(2),
            response_code: 503,
            response_flags: "UF",
            response_code_details: "upstream_reset_before_response_started{remote_connection_failure}",
            bytes_sent: 19,
            upstream_service_time: None,
            upstream_local_address: None,
            ..via_upstream()
        }
    }

    #[test]
    fn http_text_lines_follow_istios_default_format() {
        struct Case {
            record: HttpRecord<'static>,
            line: &'static str,
        }
        let cases = [
            Case {
                record: via_upstream(),
                line: "[2026-11-22T04:15:00.123Z] \"GET /index.html?lang=en HTTP/1.1\" 200 - via_upstream - \"-\" \
                       0 1240 7 5 \"10.0.0.7\" \"curl/8.5.0\" \"5f0c8f5e-2a45-4d3c-9f57-0d5b6f7c1e2a\" \
                       \"tomcat.istio.com\" \"127.0.0.1:18081\" outbound|8080|v1|front-tomcat.default.svc.cluster.local \
                       127.0.0.1:40212 127.0.0.1:18080 127.0.0.1:54321 - tomcat-split",
            },
            Case {
                record: not_routed(),
                line: "[2026-11-22T04:15:00.123Z] \"GET / HTTP/1.1\" 404 NR route_not_found - \"-\" \
                       0 0 0 - \"-\" \"curl/8.5.0\" \"5f0c8f5e-2a45-4d3c-9f57-0d5b6f7c1e2a\" \
                       \"other.example\" \"-\" - - 127.0.0.1:18080 127.0.0.1:54321 - -",
            },
            Case {
                record: connect_failed(),
                line: "[2026-11-22T04:15:00.123Z] \"GET /index.html?lang=en HTTP/1.1\" 503 UF \
                       upstream_reset_before_response_started{remote_connection_failure} - \"-\" \
                       0 19 2 - \"10.0.0.7\" \"curl/8.5.0\" \"5f0c8f5e-2a45-4d3c-9f57-0d5b6f7c1e2a\" \
                       \"tomcat.istio.com\" \"127.0.0.1:18081\" outbound|8080|v1|front-tomcat.default.svc.cluster.local \
                       - 127.0.0.1:18080 127.0.0.1:54321 - tomcat-split",
            },
        ];
        for c in cases {
            assert_eq!(c.record.format(Format::Text), c.line);
        }
    }

    #[test]
    fn http_json_lines_use_istios_keys() {
        let json = |r: &HttpRecord<'_>| -> serde_json::Value {
            serde_json::from_str(&r.format(Format::Json)).expect("JSON")
        };
        let ok = json(&via_upstream());
        let mut keys: Vec<&str> = ok
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "authority",
                "bytes_received",
                "bytes_sent",
                "connection_termination_details",
                "downstream_local_address",
                "downstream_remote_address",
                "duration",
                "generation",
                "method",
                "path",
                "protocol",
                "request_id",
                "requested_server_name",
                "response_code",
                "response_code_details",
                "response_flags",
                "route_name",
                "start_time",
                "upstream_cluster",
                "upstream_host",
                "upstream_local_address",
                "upstream_service_time",
                "upstream_transport_failure_reason",
                "user_agent",
                "x_forwarded_for",
            ]
        );
        assert_eq!(ok["start_time"], "2026-11-22T04:15:00.123Z");
        assert_eq!(ok["response_code"], 200);
        assert_eq!(ok["duration"], 7);
        assert_eq!(ok["upstream_service_time"], "5");
        assert_eq!(ok["upstream_host"], "127.0.0.1:18081");
        assert_eq!(ok["route_name"], "tomcat-split");
        assert_eq!(ok["generation"], 3);
        let nr = json(&not_routed());
        assert_eq!(nr["response_code"], 404);
        assert_eq!(nr["response_flags"], "NR");
        assert_eq!(nr["response_code_details"], "route_not_found");
        for missing in [
            "upstream_host",
            "upstream_cluster",
            "route_name",
            "x_forwarded_for",
        ] {
            assert_eq!(nr[missing], serde_json::Value::Null, "{missing}");
        }
        let uf = json(&connect_failed());
        assert_eq!(uf["response_flags"], "UF");
        assert_eq!(uf["bytes_sent"], 19);
        assert_eq!(uf["upstream_local_address"], serde_json::Value::Null);
    }

    #[test]
    fn hostile_values_cannot_break_a_text_line() {
        let record = HttpRecord {
            method: "",
            path: "/a b",
            user_agent: Some("x\" \"forged\"\n\u{1b}[31m\\"),
            request_id: Some(""),
            route_name: Some("two words"),
            ..via_upstream()
        };
        let line = record.format(Format::Text);
        assert!(!line.contains(['\n', '\u{1b}']), "{line}");
        assert!(
            line.starts_with("[2026-11-22T04:15:00.123Z] \"- /a\\x20b HTTP/1.1\" 200 "),
            "{line}"
        );
        assert!(
            line.contains(" \"x\\\" \\\"forged\\\"\\n\\x1b[31m\\\\\" \"-\" \"tomcat.istio.com\" "),
            "{line}"
        );
        assert!(line.ends_with(" - two\\x20words"), "{line}");
        // JSON escapes as JSON does, and reads back the same value.
        let v: serde_json::Value =
            serde_json::from_str(&record.format(Format::Json)).expect("JSON");
        assert_eq!(v["user_agent"], "x\" \"forged\"\n\u{1b}[31m\\");
        assert_eq!(v["method"], serde_json::Value::Null);
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
