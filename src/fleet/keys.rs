//! The key layout under a prefix (`/ringway/prod` below):
//!
//! - `/ringway/prod/v1/config/<Kind>/<namespace>/<name>`: one resource, the
//!   YAML document as applied; its create revision is Istio's creation
//!   order (a later apply of the same key keeps its place).
//! - `/ringway/prod/v1/commit`: written by every `apply` and `delete` in
//!   the same transaction; its mod revision fences concurrent writers.
//! - `/ringway/prod/v1/status/<instance>`: each running instance's status,
//!   under its lease. Outside `config/`, so status writes never wake the
//!   instances' watches.

/// The keys of one fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

/// A resource's place in the store.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceKey {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

impl Keys {
    /// `prefix` as [`super::Target::prefix`] holds it: `/word[/word...]`.
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.trim_end_matches('/').to_owned(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Every resource's key starts with this (it ends in `/`).
    pub fn config(&self) -> String {
        format!("{}/v1/config/", self.prefix)
    }

    pub fn resource(&self, key: &ResourceKey) -> String {
        format!(
            "{}/v1/config/{}/{}/{}",
            self.prefix, key.kind, key.namespace, key.name
        )
    }

    pub fn commit(&self) -> String {
        format!("{}/v1/commit", self.prefix)
    }

    /// Every instance's status key starts with this (it ends in `/`).
    pub fn statuses(&self) -> String {
        format!("{}/v1/status/", self.prefix)
    }

    pub fn status(&self, instance: &str) -> String {
        format!("{}{instance}", self.statuses())
    }

    /// The resource a config key names, or `None` for a key that is not
    /// `<config>/<Kind>/<namespace>/<name>` (three non-empty parts).
    pub fn parse_resource(&self, key: &[u8]) -> Option<ResourceKey> {
        let key = std::str::from_utf8(key).ok()?;
        let rest = key.strip_prefix(&self.config())?;
        let mut parts = rest.split('/');
        let (kind, namespace, name) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || [kind, namespace, name].iter().any(|p| p.is_empty()) {
            return None;
        }
        Some(ResourceKey {
            kind: kind.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }
}

/// The end of the range of every key starting with `prefix` (etcd's
/// `--prefix`): the prefix with its last byte incremented.
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resource_key_round_trips_and_strays_are_not_resources() {
        let keys = Keys::new("/ringway/prod");
        let id = ResourceKey {
            kind: "VirtualService".into(),
            namespace: "default".into(),
            name: "tcp-echo".into(),
        };
        let key = keys.resource(&id);
        assert_eq!(
            key,
            "/ringway/prod/v1/config/VirtualService/default/tcp-echo"
        );
        assert_eq!(keys.parse_resource(key.as_bytes()), Some(id));
        for stray in [
            "/ringway/prod/v1/config/VirtualService/default",
            "/ringway/prod/v1/config/VirtualService/default/a/b",
            "/ringway/prod/v1/config/VirtualService//a",
            "/ringway/prod/v1/commit",
            "/ringway/other/v1/config/Gateway/default/g",
        ] {
            assert_eq!(keys.parse_resource(stray.as_bytes()), None, "{stray}");
        }
        assert_eq!(keys.status("gw-a"), "/ringway/prod/v1/status/gw-a");
        assert_eq!(prefix_end("/a/"), b"/a0");
    }
}
