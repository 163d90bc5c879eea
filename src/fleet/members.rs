//! The etcd members, one client each, with fail-over.
//!
//! The `etcd-client` crate balances over every endpoint of one channel and
//! keeps sending calls to a member that is gone (etcd-client#12, #39; the
//! design note measured 84 failed applies of 200 in the 8 s after a member
//! was killed). So each member gets a client of its own, connected when
//! first needed; a call that fails for a reason another member would not
//! share (the member is unreachable, has no leader, or is shutting down)
//! is tried on the next member, and the member that failed is parked for a
//! while. Errors the store itself gives (permission, a bad request) end the
//! call at once: every member would say the same.

use std::future::Future;
use std::time::{Duration, Instant};

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

use super::target::{EtcdArgs, Target};

/// How long one unary call may take before the next member is tried. An
/// apply's transaction waits for the leader's WAL fsync (4 ms p50 here); a
/// member that takes this long is as good as gone.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long connecting to one member may take (loopback or one LAN hop).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 keep-alive pings on idle connections, so that a member that
/// vanished without a reset is noticed. Not below etcd's
/// `--grpc-keepalive-min-time` (5 s), which answers faster pings with
/// GOAWAY "too many pings".
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// A member that failed is not tried again for this long, unless every
/// member is parked.
pub const PARK: Duration = Duration::from_secs(2);

/// What went wrong talking to etcd.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EtcdError {
    /// The flags or files needed to connect are wrong: nothing was sent.
    #[error("{0}")]
    Setup(String),
    /// No member answered.
    #[error("etcd unreachable: {what} failed on every member ({endpoints}); last error: {last}")]
    Unreachable {
        what: &'static str,
        endpoints: String,
        last: String,
    },
    /// A member answered with an error every member would give
    /// (permission denied, a bad request, compacted revision).
    #[error("etcd refused {what}: {message}")]
    Refused { what: &'static str, message: String },
}

impl EtcdError {
    /// Whether the store answered (a refusal), as opposed to not being
    /// reached at all.
    pub fn reached(&self) -> bool {
        matches!(self, EtcdError::Refused { .. })
    }
}

/// One client per member, tried in turn.
pub struct Members {
    endpoints: Vec<String>,
    options: ConnectOptions,
    clients: Vec<Option<Client>>,
    parked_until: Vec<Option<Instant>>,
    /// The member tried first: the last one that answered.
    current: usize,
}

impl std::fmt::Debug for Members {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Members")
            .field("endpoints", &self.endpoints)
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

impl Members {
    /// Reads the certificates and the password the flags name; connects
    /// to nothing yet.
    pub fn new(target: &Target, args: &EtcdArgs) -> Result<Members, EtcdError> {
        let options = connect_options(target, args)?;
        let n = target.endpoints.len();
        Ok(Members {
            endpoints: target.endpoints.clone(),
            options,
            clients: vec![None; n],
            parked_until: vec![None; n],
            current: 0,
        })
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The endpoint calls go to first (the last that answered).
    pub fn current_endpoint(&self) -> &str {
        &self.endpoints[self.current]
    }

    /// Runs `call` on a member's client, then on the next ones while the
    /// failure is one another member may not share. `what` names the call
    /// in errors (`"get"`, `"txn"`).
    pub async fn call<T, F, Fut>(&mut self, what: &'static str, mut call: F) -> Result<T, EtcdError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut last = String::from("no member tried");
        for index in self.order() {
            let client = match self.client(index).await {
                Ok(client) => client,
                // A wrong password or a refused certificate: every member
                // would say the same.
                Err(Some(e)) if !fails_over(&e) => {
                    return Err(EtcdError::Refused {
                        what,
                        message: describe(&e),
                    });
                }
                Err(e) => {
                    last = match e {
                        Some(e) => format!("{}: {}", self.endpoints[index], describe(&e)),
                        None => format!(
                            "{}: no answer within {:?}",
                            self.endpoints[index],
                            CONNECT_TIMEOUT + CALL_TIMEOUT
                        ),
                    };
                    self.park(index);
                    continue;
                }
            };
            match tokio::time::timeout(CALL_TIMEOUT, call(client)).await {
                Ok(Ok(answer)) => {
                    self.current = index;
                    self.parked_until[index] = None;
                    return Ok(answer);
                }
                Ok(Err(e)) if !fails_over(&e) => {
                    return Err(EtcdError::Refused {
                        what,
                        message: describe(&e),
                    });
                }
                Ok(Err(e)) => last = format!("{}: {}", self.endpoints[index], describe(&e)),
                Err(_) => {
                    last = format!(
                        "{}: no answer within {CALL_TIMEOUT:?}",
                        self.endpoints[index]
                    )
                }
            }
            self.park(index);
        }
        Err(EtcdError::Unreachable {
            what,
            endpoints: self.endpoints.join(","),
            last,
        })
    }

    /// A connected client of the member tried first, for a stream (a watch,
    /// a lease keep-alive) that the caller re-creates through
    /// [`Members::call`]'s order when it breaks: see [`Members::failed`].
    pub async fn stream_client(&mut self) -> Result<(usize, Client), EtcdError> {
        self.call("connect", |client| async move { Ok(client) })
            .await
            .map(|client| (self.current, client))
    }

    /// A stream on member `index` broke: try another one first next time.
    pub fn failed(&mut self, index: usize) {
        self.park(index);
    }

    /// Members in the order to try them: from the current one on, parked
    /// members last (still tried: when all are parked, trying beats
    /// waiting).
    fn order(&self) -> Vec<usize> {
        let now = Instant::now();
        let n = self.endpoints.len();
        let mut ready = Vec::with_capacity(n);
        let mut parked = Vec::new();
        for i in (0..n).map(|k| (self.current + k) % n) {
            match self.parked_until[i] {
                Some(until) if until > now => parked.push(i),
                _ => ready.push(i),
            }
        }
        ready.extend(parked);
        ready
    }

    fn park(&mut self, index: usize) {
        self.parked_until[index] = Some(Instant::now() + PARK);
        // A fresh connection next time: the old one may be half-dead.
        self.clients[index] = None;
        if index == self.current {
            self.current = (index + 1) % self.endpoints.len();
        }
    }

    /// Member `index`'s client, connected now if it was not; `None` as
    /// the error when connecting took too long.
    async fn client(&mut self, index: usize) -> Result<Client, Option<etcd_client::Error>> {
        if let Some(client) = &self.clients[index] {
            return Ok(client.clone());
        }
        let endpoint = [self.endpoints[index].as_str()];
        let connect = Client::connect(endpoint, Some(self.options.clone()));
        let client = match tokio::time::timeout(CONNECT_TIMEOUT + CALL_TIMEOUT, connect).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(Some(e)),
            Err(_) => return Err(None),
        };
        self.clients[index] = Some(client.clone());
        Ok(client)
    }
}

/// Whether another member might answer where this one failed.
pub fn fails_over(error: &etcd_client::Error) -> bool {
    use tonic::Code;
    match error {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(status) => match status.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Aborted => true,
            // etcd says these in plain words with Unknown on some paths.
            Code::Unknown => {
                let m = status.message();
                m.contains("leader changed")
                    || m.contains("no leader")
                    || m.contains("stopped")
                    || m.contains("transport")
            }
            _ => false,
        },
        _ => false,
    }
}

/// An etcd error in one line: the gRPC message without the crate's
/// wrapping.
pub fn describe(error: &etcd_client::Error) -> String {
    match error {
        etcd_client::Error::GRpcStatus(status) => {
            format!("{} ({:?})", status.message(), status.code())
        }
        etcd_client::Error::TransportError(e) => {
            // tonic's Display says only "transport error"; the source says why.
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
        other => other.to_string(),
    }
}

fn connect_options(target: &Target, args: &EtcdArgs) -> Result<ConnectOptions, EtcdError> {
    let read = |flag: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| {
            EtcdError::Setup(format!("{flag} {}: cannot read it: {e}", path.display()))
        })
    };
    let mut options = ConnectOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_keep_alive(KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT)
        .with_keep_alive_while_idle(true)
        .with_require_leader(true)
        .with_auto_token_refresh(true);
    let tls_flags = args.etcd_ca.is_some() || args.etcd_cert.is_some();
    if tls_flags && !target.tls {
        return Err(EtcdError::Setup(
            "--etcd-ca/--etcd-cert need TLS: write the source as etcds://...".into(),
        ));
    }
    if target.tls {
        let Some(ca) = &args.etcd_ca else {
            return Err(EtcdError::Setup(
                "etcds:// needs --etcd-ca FILE: the CA that signed the members' certificates"
                    .into(),
            ));
        };
        let mut tls =
            TlsOptions::new().ca_certificate(Certificate::from_pem(read("--etcd-ca", ca)?));
        if let (Some(cert), Some(key)) = (&args.etcd_cert, &args.etcd_key) {
            tls = tls.identity(Identity::from_pem(
                read("--etcd-cert", cert)?,
                read("--etcd-key", key)?,
            ));
        }
        options = options.with_tls(tls);
    }
    if let (Some(user), Some(file)) = (&args.etcd_user, &args.etcd_password_file) {
        let bytes = read("--etcd-password-file", file)?;
        let text = String::from_utf8(bytes).map_err(|_| {
            EtcdError::Setup(format!(
                "--etcd-password-file {}: not UTF-8",
                file.display()
            ))
        })?;
        let password = text.trim_end_matches(['\r', '\n']);
        if password.is_empty() {
            return Err(EtcdError::Setup(format!(
                "--etcd-password-file {}: the file is empty",
                file.display()
            )));
        }
        options = options.with_user(user.clone(), password.to_owned());
    }
    Ok(options)
}
