//! The whole configuration as the store holds it at one revision: what an
//! instance serves, what `apply` validates against, what `get` prints.

use std::sync::Arc;

use etcd_client::{GetOptions, KeyValue};
use serde::{Deserialize, Serialize};

use super::keys::{Keys, ResourceKey};
use super::members::{EtcdError, Members};
use crate::source::{Content, Document, Origin, Snapshot};

/// The most bytes one resource's document may hold in the store: a larger
/// value (written behind `apply`'s back) is an error for that revision.
pub const MAX_VALUE_BYTES: usize = 1 << 20;

/// One resource in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The full key.
    pub key: String,
    /// What the key names; `None` for a stray key under `config/` that
    /// does not follow the layout (reported, never applied).
    pub id: Option<ResourceKey>,
    pub text: Arc<[u8]>,
    pub create_revision: u64,
    pub mod_revision: u64,
}

impl Stored {
    pub fn from_kv(keys: &Keys, kv: &KeyValue) -> Stored {
        Stored {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            id: keys.parse_resource(kv.key()),
            text: kv.value().into(),
            create_revision: u64::try_from(kv.create_revision()).unwrap_or(0),
            mod_revision: u64::try_from(kv.mod_revision()).unwrap_or(0),
        }
    }

    /// The document the loader reads: named `etcd:<key>@<mod revision>`,
    /// and bound to hold exactly the resource its key names.
    pub fn document(&self) -> Document {
        let origin = Origin::Etcd {
            key: self.key.as_str().into(),
            revision: self.mod_revision,
        };
        let content = match &self.id {
            None => Content::Unread(crate::diag::Diagnostic::error(format!(
                "etcd:{}: not a resource key; keys under config/ are <Kind>/<namespace>/<name>",
                self.key
            ))),
            Some(_) if self.text.len() > MAX_VALUE_BYTES => {
                Content::Unread(crate::diag::Diagnostic::error(format!(
                    "etcd:{}@{}: {} bytes, more than the limit of {MAX_VALUE_BYTES} for one resource",
                    self.key,
                    self.mod_revision,
                    self.text.len()
                )))
            }
            Some(_) => Content::Text(self.text.clone()),
        };
        Document {
            origin,
            content,
            holds: self.id.as_ref().map(|id| crate::source::Holds {
                kind: id.kind.clone(),
                namespace: id.namespace.clone(),
                name: id.name.clone(),
            }),
        }
    }
}

/// The fence every writer moves: who wrote last, and what.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// Unique per apply: a writer that lost its answer (a timeout after
    /// sending) reads the fence back and knows whether it won.
    pub id: String,
    pub by: String,
    pub host: String,
    /// RFC 3339, UTC.
    pub at: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The revision the writer read and validated against.
    pub base_revision: u64,
    #[serde(default)]
    pub put: Vec<String>,
    #[serde(default)]
    pub delete: Vec<String>,
}

/// The store at one revision.
#[derive(Debug, Clone, Default)]
pub struct StoreSet {
    /// The store's revision when read (moves with any write, also outside
    /// the prefix).
    pub revision: u64,
    /// The fence's mod revision; 0 when it does not exist (etcd compares a
    /// missing key's mod revision as 0).
    pub commit_revision: u64,
    pub commit: Option<Commit>,
    /// In creation order (create revision), which is Istio's order.
    pub resources: Vec<Stored>,
}

impl StoreSet {
    /// The documents as the loader reads them, in creation order.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            revision: self.revision,
            documents: self.resources.iter().map(Stored::document).collect(),
        }
    }

    /// The newest mod revision under `config/` and of the fence: the
    /// revision of the configuration, whatever else moved the store.
    pub fn config_revision(&self) -> u64 {
        self.resources
            .iter()
            .map(|r| r.mod_revision)
            .chain([self.commit_revision])
            .max()
            .unwrap_or(0)
    }
}

/// Reads the fence and every resource at one revision (`at`, or the
/// current one).
pub async fn read(
    members: &mut Members,
    keys: &Keys,
    at: Option<u64>,
) -> Result<StoreSet, EtcdError> {
    let commit_key = keys.commit();
    let at = at.and_then(|r| i64::try_from(r).ok());
    let fence = members
        .call("get", |mut c| {
            let key = commit_key.clone();
            let options = at.map(|r| GetOptions::new().with_revision(r));
            async move { c.get(key, options).await }
        })
        .await?;
    let revision = fence.header().map_or(0, |h| h.revision());
    let config_key = keys.config();
    let resources = members
        .call("get", |mut c| {
            let key = config_key.clone();
            async move {
                c.get(
                    key,
                    Some(GetOptions::new().with_prefix().with_revision(revision)),
                )
                .await
            }
        })
        .await?;
    let (commit_revision, commit) = match fence.kvs().first() {
        Some(kv) => (
            u64::try_from(kv.mod_revision()).unwrap_or(0),
            serde_json::from_slice(kv.value()).ok(),
        ),
        None => (0, None),
    };
    let mut resources: Vec<Stored> = resources
        .kvs()
        .iter()
        .map(|kv| Stored::from_kv(keys, kv))
        .collect();
    resources.sort_by_key(|r| (r.create_revision, r.key.clone()));
    Ok(StoreSet {
        revision: u64::try_from(revision).unwrap_or(0),
        commit_revision,
        commit,
        resources,
    })
}
