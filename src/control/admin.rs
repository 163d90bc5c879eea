//! The admin endpoint (`--admin`, default 127.0.0.1:15000): which request
//! gets which answer, and how the typed answers of `state.rs` are rendered.
//! The transport (connections, limits, the runtime) is `server.rs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use serde::Serialize;

use super::server::MAX_URL_BYTES;
use super::state::{Admin, Readiness, ReloadOutcome};

/// `POST /reload`s running or queued at once. Reloads run one at a time;
/// each queued one holds an admin connection, so the queue is kept short.
/// Above it: 503 (retry once the running reload has answered).
pub const MAX_QUEUED_RELOADS: usize = 4;

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Ready,
    Healthz,
    Metrics,
    ConfigDump,
    Reload,
    /// A known path with the wrong method.
    NotAllowed,
    NotFound,
    /// The request target is longer than [`MAX_URL_BYTES`].
    UriTooLong,
}

/// `target_len` is the length of the request target as sent.
pub fn route(method: &Method, path: &str, target_len: usize) -> Route {
    if target_len > MAX_URL_BYTES {
        return Route::UriTooLong;
    }
    let read = *method == Method::GET || *method == Method::HEAD;
    match (read, *method == Method::POST, path) {
        (true, _, "/ready") => Route::Ready,
        (true, _, "/healthz") => Route::Healthz,
        (true, _, "/metrics" | "/stats/prometheus") => Route::Metrics,
        (true, _, "/config_dump") => Route::ConfigDump,
        (_, true, "/reload") => Route::Reload,
        (
            _,
            _,
            "/ready" | "/healthz" | "/metrics" | "/stats/prometheus" | "/config_dump" | "/reload",
        ) => Route::NotAllowed,
        _ => Route::NotFound,
    }
}

/// An answer ready to be written.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: Bytes,
}

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";
const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Reply {
    fn text(status: StatusCode, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: TEXT,
            body: Bytes::from(body.into()),
        }
    }

    fn json<T: Serialize>(status: StatusCode, value: &T) -> Reply {
        let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
        body.push(b'\n');
        Reply {
            status,
            content_type: JSON,
            body: Bytes::from(body),
        }
    }
}

/// The reloads asked for through the admin endpoint: one at a time, at
/// most [`MAX_QUEUED_RELOADS`] waiting.
#[derive(Debug, Default)]
pub struct Reloads {
    one_at_a_time: tokio::sync::Mutex<()>,
    queued: AtomicUsize,
}

/// Answer one request. `/ready`, `/healthz` and `/metrics` are answered
/// here and now; `/config_dump` and reloads run on the blocking pool.
pub async fn answer(
    method: &Method,
    path: &str,
    target_len: usize,
    admin: &Arc<dyn Admin>,
    reloads: &Reloads,
) -> Reply {
    match route(method, path, target_len) {
        Route::Ready => readiness(admin.readiness()),
        Route::Healthz => Reply::text(StatusCode::OK, "ok\n"),
        Route::Metrics => Reply {
            status: StatusCode::OK,
            content_type: PROMETHEUS,
            body: Bytes::from(admin.metrics()),
        },
        Route::ConfigDump => {
            let admin = Arc::clone(admin);
            blocking(move || Reply::json(StatusCode::OK, &admin.config_dump())).await
        }
        Route::Reload => reload(admin, reloads).await,
        Route::NotAllowed => Reply::text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {path}\n"),
        ),
        Route::NotFound => Reply::text(
            StatusCode::NOT_FOUND,
            "not found; try /ready, /healthz, /metrics, /stats/prometheus, /config_dump, POST /reload\n",
        ),
        Route::UriTooLong => Reply::text(
            StatusCode::URI_TOO_LONG,
            format!("the request target is longer than {MAX_URL_BYTES} bytes\n"),
        ),
    }
}

fn readiness(readiness: Readiness) -> Reply {
    match readiness {
        Readiness::Ready => Reply::text(StatusCode::OK, "ready\n"),
        Readiness::NotServing => Reply::text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        Readiness::Applying => Reply::text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: workers are taking a new configuration\n",
        ),
        Readiness::Unbound { listeners } => Reply::text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {listeners} listener sockets could not be bound (see the log)\n"),
        ),
    }
}

#[derive(Serialize)]
struct Reloaded {
    generation: u64,
}

#[derive(Serialize)]
struct StillApplying {
    generation: u64,
    workers: usize,
    workers_applied: usize,
    message: &'static str,
}

#[derive(Serialize)]
struct ReloadFailed {
    errors: Vec<String>,
}

async fn reload(admin: &Arc<dyn Admin>, reloads: &Reloads) -> Reply {
    let queued = Queued::join(&reloads.queued);
    if queued.ahead >= MAX_QUEUED_RELOADS {
        return Reply::text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{MAX_QUEUED_RELOADS} reloads are already running or queued; retry once they have answered\n"
            ),
        );
    }
    let _turn = reloads.one_at_a_time.lock().await;
    let admin = Arc::clone(admin);
    blocking(move || reload_reply(admin.reload())).await
}

/// A place in the reload queue, left on drop (also when the connection
/// goes away while waiting).
struct Queued<'a> {
    queue: &'a AtomicUsize,
    /// Reloads running or queued before this one.
    ahead: usize,
}

impl Queued<'_> {
    fn join(queue: &AtomicUsize) -> Queued<'_> {
        let ahead = queue.fetch_add(1, Ordering::AcqRel);
        Queued { queue, ahead }
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.queue.fetch_sub(1, Ordering::AcqRel);
    }
}

fn reload_reply(outcome: ReloadOutcome) -> Reply {
    match outcome {
        ReloadOutcome::Applied { generation } => {
            Reply::json(StatusCode::OK, &Reloaded { generation })
        }
        ReloadOutcome::Applying {
            generation,
            applied,
            workers,
        } => Reply::json(
            StatusCode::ACCEPTED,
            &StillApplying {
                generation,
                workers,
                workers_applied: applied,
                message: "published, but not every worker has taken it yet; see /ready",
            },
        ),
        ReloadOutcome::Refused { errors } => {
            Reply::json(StatusCode::BAD_REQUEST, &ReloadFailed { errors })
        }
    }
}

/// Run `f` on the runtime's blocking pool.
async fn blocking(f: impl FnOnce() -> Reply + Send + 'static) -> Reply {
    match tokio::task::spawn_blocking(f).await {
        Ok(reply) => reply,
        Err(e) => {
            tracing::error!(error = %e, "admin endpoint: an answer failed");
            Reply::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error; see the log\n",
            )
        }
    }
}

/// Who can reach an admin address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    /// Loopback only: this host.
    Local,
    /// Reachable from the network; allowed by `--admin-expose`.
    Network,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "--admin {0} is reachable from the network, which would expose unauthenticated POST /reload, /config_dump (every upstream address) and /metrics; use a loopback address (127.0.0.1:PORT, [::1]:PORT), or pass --admin-expose to accept that"
)]
pub struct Exposed(pub SocketAddr);

/// Whether `address` may serve the admin endpoint: loopback always, any
/// other address (0.0.0.0 and :: included) only with `allow_network`.
pub fn exposure(address: SocketAddr, allow_network: bool) -> Result<Exposure, Exposed> {
    let loopback = match address {
        SocketAddr::V4(a) => a.ip().is_loopback(),
        SocketAddr::V6(a) => a
            .ip()
            .to_ipv4_mapped()
            .map_or(a.ip().is_loopback(), |v4| v4.is_loopback()),
    };
    match (loopback, allow_network) {
        (true, _) => Ok(Exposure::Local),
        (false, true) => Ok(Exposure::Network),
        (false, false) => Err(Exposed(address)),
    }
}

/// The warning logged at start for an address reachable from the network.
pub const EXPOSED_WARNING: &str = "the admin endpoint is reachable from the network (--admin-expose): anyone who can connect may POST /reload, read /config_dump (every upstream address) and /metrics, without authentication; restrict it with a firewall";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_routed_by_method_path_and_length() {
        struct Case {
            method: Method,
            path: &'static str,
            len: usize,
            want: Route,
        }
        let case = |method: Method, path, len, want| Case {
            method,
            path,
            len,
            want,
        };
        let cases = [
            case(Method::GET, "/ready", 6, Route::Ready),
            case(Method::HEAD, "/ready", 6, Route::Ready),
            case(Method::GET, "/healthz", 8, Route::Healthz),
            case(Method::GET, "/metrics", 8, Route::Metrics),
            case(Method::GET, "/stats/prometheus", 17, Route::Metrics),
            case(Method::GET, "/config_dump", 12, Route::ConfigDump),
            case(Method::POST, "/reload", 7, Route::Reload),
            case(Method::GET, "/reload", 7, Route::NotAllowed),
            case(Method::POST, "/ready", 6, Route::NotAllowed),
            case(Method::DELETE, "/config_dump", 12, Route::NotAllowed),
            case(Method::GET, "/nope", 5, Route::NotFound),
            case(Method::GET, "/ready", MAX_URL_BYTES, Route::Ready),
            case(Method::GET, "/ready", MAX_URL_BYTES + 1, Route::UriTooLong),
            case(Method::GET, "/x", 1 << 20, Route::UriTooLong),
        ];
        for c in cases {
            assert_eq!(
                route(&c.method, c.path, c.len),
                c.want,
                "{} {} ({} bytes)",
                c.method,
                c.path,
                c.len
            );
        }
    }

    #[test]
    fn only_loopback_admin_addresses_are_allowed_without_the_flag() {
        struct Case {
            address: &'static str,
            allow: bool,
            want: Option<Exposure>,
        }
        let cases = [
            Case {
                address: "127.0.0.1:15000",
                allow: false,
                want: Some(Exposure::Local),
            },
            Case {
                address: "127.3.4.5:15000",
                allow: false,
                want: Some(Exposure::Local),
            },
            Case {
                address: "[::1]:15000",
                allow: false,
                want: Some(Exposure::Local),
            },
            Case {
                address: "[::ffff:127.0.0.1]:15000",
                allow: false,
                want: Some(Exposure::Local),
            },
            Case {
                address: "0.0.0.0:15000",
                allow: false,
                want: None,
            },
            Case {
                address: "[::]:15000",
                allow: false,
                want: None,
            },
            Case {
                address: "10.1.2.3:15000",
                allow: false,
                want: None,
            },
            Case {
                address: "[::ffff:10.1.2.3]:15000",
                allow: false,
                want: None,
            },
            Case {
                address: "0.0.0.0:15000",
                allow: true,
                want: Some(Exposure::Network),
            },
            Case {
                address: "127.0.0.1:15000",
                allow: true,
                want: Some(Exposure::Local),
            },
        ];
        for c in cases {
            let address: SocketAddr = c.address.parse().expect("address");
            let got = exposure(address, c.allow);
            assert_eq!(got.clone().ok(), c.want, "{} allow={}", c.address, c.allow);
            if let Err(e) = got {
                assert!(e.to_string().contains("--admin-expose"), "{e}");
            }
        }
    }
}
