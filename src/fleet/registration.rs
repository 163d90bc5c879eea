//! The instance's status key, `status/<instance>`, under a lease of its
//! own: granted when first needed, kept alive every third of its TTL,
//! granted again when etcd says it expired (a long outage, a partition),
//! revoked on stop so that `ringway status` drops the instance at once.
//! The key is put again whenever something in it changed.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use etcd_client::PutOptions;

use super::keys::Keys;
use super::members::{EtcdError, Members};
use super::source::Shared;

/// The shortest lease: a keep-alive every third of it must be possible.
const MIN_TTL: Duration = Duration::from_secs(2);
/// How long revoking the lease may hold up a stop.
const REVOKE_TIMEOUT: Duration = Duration::from_secs(1);

pub(super) struct Registration {
    key: String,
    ttl: Duration,
    lease: Option<i64>,
    kept_alive: Instant,
    /// Something in the status changed since it was last put.
    pub dirty: bool,
}

impl Registration {
    pub fn new(keys: &Keys, instance: &str, ttl: Duration) -> Registration {
        Registration {
            key: keys.status(instance),
            ttl: ttl.max(MIN_TTL),
            lease: None,
            kept_alive: Instant::now(),
            dirty: true,
        }
    }

    /// Keeps the lease alive when a third of its TTL has passed; a lease
    /// lost is granted again with the next put.
    pub async fn tick(&mut self, members: &mut Members, shared: &Shared) {
        match self.lease {
            None => self.dirty = true,
            Some(id) if self.kept_alive.elapsed() >= self.ttl / 3 => {
                self.kept_alive = Instant::now();
                self.keep_alive(id, members, shared).await;
            }
            Some(_) => {}
        }
    }

    async fn keep_alive(&mut self, id: i64, members: &mut Members, shared: &Shared) {
        let answer = members
            .call("lease keep-alive", |mut c| async move {
                let (mut keeper, mut stream) = c.lease_keep_alive(id).await?;
                keeper.keep_alive().await?;
                stream.message().await
            })
            .await;
        match answer {
            Ok(Some(kept)) if kept.ttl() > 0 => {}
            Ok(_) | Err(EtcdError::Refused { .. }) => {
                tracing::warn!(
                    source = %shared.report().location,
                    "the status lease expired: granting a new one"
                );
                self.lease = None;
                self.dirty = true;
            }
            Err(e) => tracing::debug!("lease keep-alive: {e}"),
        }
    }

    /// Puts the status key (under the lease, granted first if needed)
    /// when something in it changed. The caller knows etcd is reachable.
    pub async fn flush(&mut self, members: &mut Members, shared: &Shared) {
        if !self.dirty {
            return;
        }
        let lease = match self.lease {
            Some(id) => id,
            None => {
                let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(10);
                match members
                    .call("lease grant", |mut c| async move {
                        c.lease_grant(ttl, None).await
                    })
                    .await
                {
                    Ok(granted) => {
                        self.lease = Some(granted.id());
                        self.kept_alive = Instant::now();
                        granted.id()
                    }
                    Err(e) => return tracing::debug!("status lease: {e}"),
                }
            }
        };
        let value = status_json(shared);
        let key = self.key.clone();
        let put = members
            .call("put", |mut c| {
                let (key, value) = (key.clone(), value.clone());
                async move {
                    c.put(key, value, Some(PutOptions::new().with_lease(lease)))
                        .await
                }
            })
            .await;
        match put {
            Ok(_) => self.dirty = false,
            Err(e) => {
                tracing::debug!("status put: {e}");
                if e.reached() {
                    self.lease = None; // "requested lease not found"
                }
            }
        }
    }

    /// Revokes the lease (bounded by [`REVOKE_TIMEOUT`]): the status key
    /// goes with it.
    pub async fn revoke(&mut self, members: &mut Members) {
        if let Some(id) = self.lease.take() {
            let revoke = members.call(
                "lease revoke",
                |mut c| async move { c.lease_revoke(id).await },
            );
            let _ = tokio::time::timeout(REVOKE_TIMEOUT, revoke).await;
        }
    }
}

/// The status as JSON, with what changes without telling (the unbound
/// listeners, the last sync) read now.
fn status_json(shared: &Shared) -> Vec<u8> {
    let unbound = shared
        .probe
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .as_ref()
        .map(|probe| probe())
        .unwrap_or_default();
    let mut report = shared.report();
    report.status.listeners_unbound = unbound;
    report.status.last_sync = report
        .last_sync
        .map(crate::accesslog::rfc3339)
        .unwrap_or_default();
    serde_json::to_vec(&report.status).unwrap_or_default()
}
