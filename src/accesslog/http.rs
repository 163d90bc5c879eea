//! The access-log line of one HTTP request: Istio's default text format,
//! with every value a client or a configuration chooses escaped, and the
//! keys of Istio's JSON format.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::{Format, rfc3339};

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

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

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
}
