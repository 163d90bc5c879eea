//! What each instance says about itself under `status/<instance>`, and
//! whether the fleet has converged: read by `ringway status`, written by
//! every running instance (under its lease, so that a dead instance's
//! status goes with it).

use serde::{Deserialize, Serialize};

/// One instance's status key, as JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub instance: String,
    pub host: String,
    pub pid: u32,
    /// ringway's version (`CARGO_PKG_VERSION`).
    pub version: String,
    /// `--labels`, as `k=v,...`: what this instance's Gateway selectors see.
    pub labels: String,
    /// When this instance started, RFC 3339 UTC.
    pub started: String,
    /// The generation of the table it serves.
    pub generation: u64,
    /// The store revision of the configuration it serves (the newest mod
    /// revision under `config/` and of the fence at the snapshot it built).
    pub applied_revision: u64,
    /// Every change up to this store revision has been seen (a watch
    /// response or a progress notification).
    pub synced_revision: u64,
    /// The newest revision whose configuration it refused, if newer than
    /// the one it serves; 0 otherwise.
    #[serde(default)]
    pub rejected_revision: u64,
    /// Why (at most [`MAX_ERRORS`], each naming its key and line).
    #[serde(default)]
    pub errors: Vec<String>,
    /// A hash of the configuration it serves (the documents, in order):
    /// instances with equal labels and equal hashes serve the same table.
    pub table_hash: String,
    /// Listeners of its table that it could not bind.
    #[serde(default)]
    pub listeners_unbound: Vec<String>,
    /// Serving a configuration that may be out of date: etcd has been
    /// unreachable since the last sync, or it started from its cache.
    pub stale: bool,
    /// When it last heard from etcd, RFC 3339 UTC.
    pub last_sync: String,
}

/// Errors kept in a status key.
pub const MAX_ERRORS: usize = 5;

/// Why an instance has not converged; `None` when it has.
pub fn lagging(status: &InstanceStatus, target: u64) -> Option<String> {
    if status.stale {
        return Some("stale: it has not reached etcd since its last sync".into());
    }
    if status.rejected_revision > status.applied_revision {
        return Some(format!(
            "rejected revision {} ({}); serving revision {}",
            status.rejected_revision,
            status
                .errors
                .first()
                .map_or("no error given", String::as_str),
            status.applied_revision
        ));
    }
    if status.synced_revision < target {
        return Some(format!(
            "synced to revision {}, the store is at {target}",
            status.synced_revision
        ));
    }
    if !status.listeners_unbound.is_empty() {
        return Some(format!(
            "cannot bind {}",
            status.listeners_unbound.join(", ")
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converged_means_synced_not_rejected_not_stale() {
        let good = InstanceStatus {
            applied_revision: 7,
            synced_revision: 9,
            ..InstanceStatus::default()
        };
        assert_eq!(lagging(&good, 9), None);
        assert!(lagging(&good, 10).is_some_and(|w| w.contains("synced to revision 9")));
        let rejected = InstanceStatus {
            rejected_revision: 8,
            errors: vec!["etcd:/p/v1/config/VirtualService/default/x@8:12: bad".into()],
            ..good.clone()
        };
        assert!(lagging(&rejected, 9).is_some_and(|w| w.contains("rejected revision 8")));
        let stale = InstanceStatus {
            stale: true,
            ..good
        };
        assert!(lagging(&stale, 9).is_some_and(|w| w.starts_with("stale")));
    }
}
