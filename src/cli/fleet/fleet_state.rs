//! What the registered instances say about themselves (`status/`): the
//! label sets a write must compile for, and whether the fleet has caught
//! up with a revision.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use etcd_client::GetOptions;

use super::{Failure, Store};
use crate::config::manifest::Labels;
use crate::fleet::status::lagging;
use crate::fleet::{EtcdError, InstanceStatus, Keys, Members};

/// Every status key, parsed; a value that is not an [`InstanceStatus`] is
/// kept as an error naming its key (an instance of another version, or a
/// raw write).
#[derive(Debug, Default)]
pub struct Registered {
    pub instances: Vec<InstanceStatus>,
    pub unreadable: Vec<String>,
}

pub async fn registered(members: &mut Members, keys: &Keys) -> Result<Registered, EtcdError> {
    let prefix = keys.statuses();
    let answer = members
        .call("get", |mut c| {
            let key = prefix.clone();
            async move { c.get(key, Some(GetOptions::new().with_prefix())).await }
        })
        .await?;
    let mut registered = Registered::default();
    for kv in answer.kvs() {
        match serde_json::from_slice::<InstanceStatus>(kv.value()) {
            Ok(status) => registered.instances.push(status),
            Err(e) => registered.unreadable.push(format!(
                "{}: not an instance status ({e})",
                String::from_utf8_lossy(kv.key())
            )),
        }
    }
    registered
        .instances
        .sort_by(|a, b| a.instance.cmp(&b.instance));
    Ok(registered)
}

/// The label sets to compile for, each with the instances that run it:
/// every registered one, or istio=ingressgateway (the default of `run`)
/// when none is registered.
pub fn label_sets(
    registered: &Registered,
) -> Result<BTreeMap<String, (Labels, Vec<String>)>, Failure> {
    let mut sets: BTreeMap<String, (Labels, Vec<String>)> = BTreeMap::new();
    for status in &registered.instances {
        let labels = crate::cli::parse_labels(&status.labels).map_err(|e| {
            Failure::invalid(format!(
                "instance {} registered labels {:?}: {e}",
                status.instance, status.labels
            ))
        })?;
        sets.entry(shown(&labels))
            .or_insert_with(|| (labels, Vec::new()))
            .1
            .push(status.instance.clone());
    }
    if sets.is_empty() {
        let default = crate::cli::parse_labels("istio=ingressgateway").map_err(Failure::invalid)?;
        sets.insert(shown(&default), (default, Vec::new()));
    }
    Ok(sets)
}

/// `k=v,k2=v2`, sorted: the same labels always read the same.
pub fn shown(labels: &Labels) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Warnings for instances whose compiler may disagree with this one's.
pub fn version_warnings(registered: &Registered) -> Vec<String> {
    let mine = env!("CARGO_PKG_VERSION");
    let mut warnings: Vec<String> = registered
        .instances
        .iter()
        .filter(|s| s.version != mine)
        .map(|s| {
            format!(
                "instance {} runs ringway {} and this is {mine}: it may judge the configuration \
                 differently",
                s.instance, s.version
            )
        })
        .collect();
    warnings.extend(registered.unreadable.iter().cloned());
    warnings
}

/// Whether the fleet has caught up with `target`: at least one instance,
/// and every one converged.
pub fn converged(registered: &Registered, target: u64) -> bool {
    !registered.instances.is_empty()
        && registered
            .instances
            .iter()
            .all(|s| lagging(s, target).is_none())
}

/// Polls `status/` until the fleet has converged on `target` (at least
/// `target`; `None`: the store's configuration revision at each poll), or
/// `wait` has passed. Returns the last registration read and the target
/// it was judged against.
pub async fn wait_converged(
    store: &mut Store,
    target: Option<u64>,
    wait: Duration,
) -> Result<(Registered, u64, bool), Failure> {
    let deadline = Instant::now() + wait;
    loop {
        let target = match target {
            Some(t) => t,
            None => crate::fleet::store::read(&mut store.members, &store.keys, None)
                .await?
                .config_revision(),
        };
        let now = registered(&mut store.members, &store.keys).await?;
        let done = converged(&now, target);
        if done || Instant::now() >= deadline {
            return Ok((now, target, done));
        }
        tokio::time::sleep(POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

/// How often `--wait` reads `status/`: instances converge in milliseconds;
/// a human waits seconds.
const POLL: Duration = Duration::from_millis(100);
