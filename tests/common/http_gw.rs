//! HTTP routing through ringway for tests: Istio resources for a Gateway
//! `protocol: HTTP` server in YAML flow style (one line per route, no
//! indentation to get wrong), named origins behind the subsets of service
//! `svc`, and a raw client that writes bytes and reads every response.
//!
//! Service `svc` is `svc.default.svc.cluster.local`, port 9000 named
//! `http`; each origin is one endpoint labelled `version: <its name>`, and
//! DestinationRule `svc` declares one subset per origin of that name.

use std::io::{BufReader, ErrorKind, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::origin::{Origin, Received, Request, Response, read_response};
use super::{ConfigDir, Ports, Ringway};

/// Gateway `gw` with one HTTP server on `port` for `hosts`.
pub fn gateway(port: u16, hosts: &[&str]) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: gw\nspec:\n  selector:\n    istio: ingressgateway\n  servers:\n  - port: {{number: {port}, name: http-{port}, protocol: HTTP}}\n    hosts: [{}]\n",
        quoted(hosts)
    )
}

/// VirtualService `name` bound to `gw` for `hosts`; `http` is its `http:`
/// list in flow style: `[{route: [{destination: {host: svc, subset: a}}]}]`.
pub fn virtual_service(name: &str, hosts: &[&str], http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\nspec:\n  hosts: [{}]\n  gateways: [gw]\n  http: {http}\n",
        quoted(hosts)
    )
}

/// ServiceEntry `svc`: one endpoint per (127.0.0.1 port, version).
pub fn service_entry(endpoints: &[(u16, &str)]) -> String {
    let endpoints: Vec<String> = endpoints
        .iter()
        .map(|(port, version)| {
            format!(
                "{{address: 127.0.0.1, ports: {{http: {port}}}, labels: {{version: {version}}}}}"
            )
        })
        .collect();
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: svc\nspec:\n  hosts: [svc.default.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{number: 9000, name: http, protocol: HTTP}}]\n  endpoints: [{}]\n",
        endpoints.join(", ")
    )
}

/// DestinationRule `svc`: `policy` is its `trafficPolicy` in flow style
/// (or empty), one subset per name.
pub fn destination_rule(policy: &str, subsets: &[&str]) -> String {
    let policy = match policy {
        "" => String::new(),
        p => format!("  trafficPolicy: {p}\n"),
    };
    let subsets: Vec<String> = subsets
        .iter()
        .map(|s| format!("{{name: {s}, labels: {{version: {s}}}}}"))
        .collect();
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: svc\nspec:\n  host: svc\n{policy}  subsets: [{}]\n",
        subsets.join(", ")
    )
}

fn quoted(hosts: &[&str]) -> String {
    let hosts: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
    hosts.join(", ")
}

/// An origin that answers every request 200 with its `name` as the body.
pub fn named(name: &'static str) -> Origin {
    Origin::start(move |_| Response::ok(name))
}

/// ringway on one worker serving one HTTP listener, with origins behind
/// subsets of `svc`. Fields drop in order: ringway before the ports it
/// binds are released.
pub struct Site {
    pub gw: Ringway,
    /// The HTTP listener's port.
    pub port: u16,
    /// The admin endpoint's port (`/metrics`).
    pub admin: u16,
    pub origins: Vec<(&'static str, Origin)>,
    pub config: ConfigDir,
    pub ports: Ports,
}

impl Site {
    /// Origins `a` and `b` (answering their names), Gateway `gw` on a
    /// reserved port for `*`, DestinationRule `svc` with `policy`, and
    /// `documents` (VirtualServices). `None` without io_uring (see
    /// [`Ringway::start`]).
    pub fn start(policy: &str, documents: &[String]) -> Option<Site> {
        Site::with_origins(
            vec![("a", named("a")), ("b", named("b"))],
            policy,
            documents,
            &[],
        )
    }

    /// [`Site::start`] with the caller's origins and extra `ringway run`
    /// arguments.
    pub fn with_origins(
        origins: Vec<(&'static str, Origin)>,
        policy: &str,
        documents: &[String],
        args: &[&str],
    ) -> Option<Site> {
        let ports = Ports::new();
        let (port, admin) = (ports.listener(), ports.admin());
        let endpoints: Vec<(u16, &str)> = origins.iter().map(|(n, o)| (o.port, *n)).collect();
        let names: Vec<&str> = origins.iter().map(|(n, _)| *n).collect();
        let mut all = vec![
            gateway(port, &["*"]),
            service_entry(&endpoints),
            destination_rule(policy, &names),
        ];
        all.extend_from_slice(documents);
        let config = ConfigDir::new().file("site.yaml", &all.join("---\n"));
        let admin_addr = format!("127.0.0.1:{admin}");
        let mut run = vec!["--workers", "1", "--admin", &admin_addr];
        run.extend_from_slice(args);
        let gw = Ringway::start(&config, &run)?;
        Some(Site {
            gw,
            port,
            admin,
            origins,
            config,
            ports,
        })
    }

    /// The origin called `name`.
    pub fn origin(&self, name: &str) -> &Origin {
        self.origins
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, o)| o)
            .unwrap_or_else(|| panic!("no origin {name}"))
    }

    /// Requests every origin has seen.
    pub fn origin_requests(&self) -> Vec<Request> {
        self.origins
            .iter()
            .flat_map(|(_, o)| o.requests())
            .collect()
    }

    /// `GET path` with `Host: host` on a new connection, and its response.
    pub fn get(&self, host: &str, path: &str) -> Received {
        self.one(&format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n"))
    }

    /// One request (`head` ends with the blank line) and its response.
    pub fn one(&self, head: &str) -> Received {
        let seen = exchange(self.port, head.as_bytes());
        assert!(
            !seen.responses.is_empty(),
            "no response to {head:?} (connection closed: {})",
            seen.closed
        );
        seen.responses[0].clone()
    }
}

/// ringway on one worker routing every request of one HTTP listener to
/// `backend` (a server the test runs itself, on 127.0.0.1), with a JSON
/// access log. Fields drop in order: ringway first.
pub struct Routed {
    pub gw: Ringway,
    pub port: u16,
    pub admin: u16,
    /// The access log (`--log-format json`).
    pub log: PathBuf,
    pub config: ConfigDir,
    pub ports: Ports,
}

impl Routed {
    /// `None` without io_uring (see [`Ringway::start`]).
    pub fn start(backend: u16) -> Option<Routed> {
        let ports = Ports::new();
        let (port, admin) = (ports.listener(), ports.admin());
        let docs = [
            gateway(port, &["*"]),
            service_entry(&[(backend, "a")]),
            destination_rule("", &["a"]),
            virtual_service(
                "vs",
                &["*"],
                "[{route: [{destination: {host: svc, subset: a}}]}]",
            ),
        ];
        let config = ConfigDir::new().file("site.yaml", &docs.join("---\n"));
        let log = config.path().join("access.log");
        let admin_addr = format!("127.0.0.1:{admin}");
        let log_arg = log.to_string_lossy().into_owned();
        let args = [
            "--workers",
            "1",
            "--admin",
            &admin_addr,
            "--access-log",
            &log_arg,
            "--log-format",
            "json",
        ];
        let gw = Ringway::start(&config, &args)?;
        Some(Routed {
            gw,
            port,
            admin,
            log,
            config,
            ports,
        })
    }
}

/// What came back for bytes written on one new connection.
#[derive(Debug)]
pub struct Exchange {
    /// Every response, in order, read until the peer closed or was quiet
    /// for [`QUIET`].
    pub responses: Vec<Received>,
    /// Whether the peer closed (or reset) the connection.
    pub closed: bool,
}

impl Exchange {
    pub fn statuses(&self) -> Vec<u16> {
        self.responses.iter().map(|r| r.status).collect()
    }
}

/// How long a connection stays silent before [`exchange`] takes it as kept
/// open.
pub const QUIET: Duration = Duration::from_millis(700);

/// Write `bytes` to `port` on a new connection and read every response
/// until the peer closes or stays quiet for [`QUIET`].
pub fn exchange(port: u16, bytes: &[u8]) -> Exchange {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to ringway");
    s.set_read_timeout(Some(QUIET)).expect("read timeout");
    // A peer that answers early and closes may reset the rest of a write.
    let _ = s.write_all(bytes);
    read_all(s)
}

/// Read responses off `s` until it closes or stays quiet for its read
/// timeout.
pub fn read_all(s: TcpStream) -> Exchange {
    let mut read = BufReader::new(s);
    let mut responses = Vec::new();
    loop {
        match read_response(&mut read) {
            Ok(Some(r)) => responses.push(r),
            Ok(None) => {
                return Exchange {
                    responses,
                    closed: true,
                };
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                let _ = read.get_ref().shutdown(Shutdown::Both);
                return Exchange {
                    responses,
                    closed: false,
                };
            }
            Err(e) if e.kind() == ErrorKind::InvalidData => panic!("bad response: {e}"),
            Err(_) => {
                return Exchange {
                    responses,
                    closed: true,
                };
            }
        }
    }
}

/// `curl -T -` of `body` (from its standard input, so of unknown length:
/// curl sends it chunked) to `path` on `port`, with `args` before the URL.
pub fn curl_upload(port: u16, path: &str, body: &[u8], args: &[&str]) -> Output {
    let mut curl = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-T", "-"])
        .args(args)
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl runs: install Debian package curl");
    let mut stdin = curl.stdin.take().expect("curl's stdin");
    stdin.write_all(body).expect("curl reads its stdin");
    drop(stdin);
    let out = curl.wait_with_output().expect("curl ends");
    assert!(out.status.success(), "curl failed: {out:?}");
    out
}
