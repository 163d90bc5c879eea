//! What `apply` and `delete` share: the set that would result from a
//! change, its validation for every label set of the fleet, the limits of
//! one etcd transaction, and the transaction itself, fenced by the commit
//! key.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use etcd_client::{Compare, CompareOp, Txn, TxnOp};

use super::fleet_state::{self, Registered};
use super::split::Change;
use super::{CompileArgs, Exit, Failure, Store, say, say_err};
use crate::config::manifest::Labels;
use crate::diag::Severity;
use crate::fleet::{Commit, EtcdError, ResourceKey, StoreSet, Stored};
use crate::source::Snapshot;

/// etcd's default `--max-txn-ops`.
pub const DEFAULT_MAX_TXN_OPS: usize = 128;
/// etcd's default `--max-request-bytes` (1.5 MiB).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1536 * 1024;
/// What one operation adds to a transaction beyond its key and value
/// (protobuf framing), counted generously so that a set accepted here is
/// never refused by etcd.
const OP_OVERHEAD: usize = 32;

/// The flags of a write (`apply`, `delete`).
#[derive(Debug, Clone, Args)]
pub struct WriteArgs {
    /// Validate and print what would change; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// After writing, wait until every live instance has converged on the
    /// new revision (exit 5 when the wait ends first).
    #[arg(long, value_name = "DUR", value_parser = super::parse_wait)]
    pub wait: Option<Duration>,
    /// Recorded in the commit key with who wrote and when.
    #[arg(long, value_name = "TEXT")]
    pub message: Option<String>,
    /// The members' --max-txn-ops: one write holds the changes and the
    /// commit key.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_TXN_OPS)]
    pub max_txn_ops: usize,
    /// The members' --max-request-bytes.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_REQUEST_BYTES)]
    pub max_request_bytes: usize,
    #[command(flatten)]
    pub compile: CompileArgs,
}

/// A change to the store, read at one revision.
#[derive(Debug)]
pub struct Plan {
    pub base: StoreSet,
    /// New or changed resources, in file order.
    pub puts: Vec<Change>,
    /// Stored keys to delete.
    pub deletes: Vec<Stored>,
    /// Resources given whose text the store already holds.
    pub unchanged: usize,
}

impl Plan {
    /// `changes` over `base`; with `prune`, every stored key they do not
    /// name is deleted.
    pub fn apply(base: StoreSet, changes: Vec<Change>, prune: bool) -> Plan {
        let stored: HashMap<&ResourceKey, &Stored> = base
            .resources
            .iter()
            .filter_map(|s| s.id.as_ref().map(|id| (id, s)))
            .collect();
        let given: HashSet<&ResourceKey> = changes.iter().map(|c| &c.id).collect();
        let deletes = if prune {
            base.resources
                .iter()
                .filter(|s| s.id.as_ref().is_none_or(|id| !given.contains(id)))
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        let mut unchanged = 0;
        let mut puts = Vec::new();
        for change in changes {
            match stored.get(&change.id) {
                Some(s) if s.text == change.text => unchanged += 1,
                _ => puts.push(change),
            }
        }
        Plan {
            base,
            puts,
            deletes,
            unchanged,
        }
    }

    /// Deletes of `ids`, each of which must be stored.
    pub fn delete(
        base: StoreSet,
        ids: &[ResourceKey],
        keys: &crate::fleet::Keys,
    ) -> Result<Plan, Failure> {
        let mut deletes: Vec<Stored> = Vec::new();
        let mut missing = Vec::new();
        for id in ids {
            match base.resources.iter().find(|s| s.id.as_ref() == Some(id)) {
                Some(s) if !deletes.iter().any(|d| d.key == s.key) => deletes.push(s.clone()),
                Some(_) => {}
                None => missing.push(format!("{id} (key {})", keys.resource(id))),
            }
        }
        if !missing.is_empty() {
            return Err(Failure::invalid(format!(
                "not in the store at revision {}: {}; nothing deleted (`ringway get` lists what is stored)",
                base.revision,
                missing.join(", ")
            )));
        }
        Ok(Plan {
            base,
            puts: Vec::new(),
            deletes,
            unchanged: 0,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.deletes.is_empty()
    }

    /// The whole configuration after the change, in creation order: stored
    /// resources in create-revision order (a replaced one keeps its place,
    /// read from the operator's file), then the new ones in file order.
    pub fn result(&self) -> Snapshot {
        let deleted: HashSet<&str> = self.deletes.iter().map(|d| d.key.as_str()).collect();
        let mut replacing: HashMap<&ResourceKey, &Change> =
            self.puts.iter().map(|c| (&c.id, c)).collect();
        let mut documents = Vec::new();
        for stored in &self.base.resources {
            if deleted.contains(stored.key.as_str()) {
                continue;
            }
            match stored.id.as_ref().and_then(|id| replacing.remove(id)) {
                Some(change) => documents.push(change.document()),
                None => documents.push(stored.document()),
            }
        }
        for change in &self.puts {
            if replacing.contains_key(&change.id) {
                documents.push(change.document());
            }
        }
        Snapshot {
            revision: self.base.revision,
            documents,
        }
    }

    fn is_new(&self, change: &Change) -> bool {
        !self
            .base
            .resources
            .iter()
            .any(|s| s.id.as_ref() == Some(&change.id))
    }

    /// One line per change, for `--dry-run`.
    pub fn describe(&self, keys: &crate::fleet::Keys) -> String {
        let mut out = String::new();
        for change in &self.puts {
            let verb = if self.is_new(change) {
                "create"
            } else {
                "change"
            };
            let _ = writeln!(
                out,
                "would {verb} {} (from {})",
                keys.resource(&change.id),
                change.place()
            );
        }
        for stored in &self.deletes {
            let _ = writeln!(out, "would delete {}", stored.key);
        }
        out
    }
}

/// Validates `plan`'s result, prints it if asked, writes it in one fenced
/// transaction and waits for the fleet if asked.
pub async fn commit_plan(store: &mut Store, plan: Plan, args: &WriteArgs) -> Result<Exit, Failure> {
    if plan.is_empty() {
        say(&format!("unchanged (revision {})", plan.base.revision));
        return match args.wait {
            Some(wait) => wait_for_fleet(store, None, wait).await,
            None => Ok(Exit::Ok),
        };
    }
    let registered = fleet_state::registered(&mut store.members, &store.keys).await?;
    for warning in fleet_state::version_warnings(&registered) {
        say_err(&format!("warning: {warning}"));
    }
    validate(&plan, &registered, &args.compile)?;
    let commit = commit_record(&plan, &store.keys, args.message.as_deref());
    check_limits(&plan, &store.keys, &commit, args)?;
    if args.dry_run {
        say(&plan.describe(&store.keys));
        say(&format!(
            "dry run: valid; {} changed, {} deleted, {} unchanged; nothing written (revision {})",
            plan.puts.len(),
            plan.deletes.len(),
            plan.unchanged,
            plan.base.revision
        ));
        return Ok(Exit::Ok);
    }
    hold_for_test().await;
    let revision = write(store, &plan, &commit).await?;
    say(&format!(
        "applied at revision {revision} ({} changed, {} deleted)",
        plan.puts.len(),
        plan.deletes.len()
    ));
    match args.wait {
        Some(wait) => wait_for_fleet(store, Some(revision), wait).await,
        None => Ok(Exit::Ok),
    }
}

/// `--wait`: the fleet's lines once converged (exit 0) or when the wait
/// ends (exit 5).
async fn wait_for_fleet(
    store: &mut Store,
    target: Option<u64>,
    wait: Duration,
) -> Result<Exit, Failure> {
    let (registered, target, done) = fleet_state::wait_converged(store, target, wait).await?;
    say(&super::status::render_text(&registered, target));
    if done {
        return Ok(Exit::Ok);
    }
    say_err(&format!(
        "error: written, but the fleet had not converged on revision {target} within {wait:?}"
    ));
    Ok(Exit::NotConverged)
}

/// Compiles the result once per label set of the fleet. Diagnostics go to
/// stderr, each once: with several label sets, those that only some sets
/// give are preceded by the labels and instances they concern.
fn validate(plan: &Plan, registered: &Registered, compile: &CompileArgs) -> Result<(), Failure> {
    let sets: BTreeMap<String, (Labels, Vec<String>)> = fleet_state::label_sets(registered)?;
    let snapshot = plan.result();
    let mut shown: HashSet<String> = HashSet::new();
    let mut errors = 0;
    for (name, (labels, instances)) in &sets {
        let build = compile.pipeline(labels).build(&snapshot);
        let mut header = sets.len() > 1;
        for d in build.diagnostics.iter() {
            let line = format!("{}: {d}", d.severity);
            if !shown.insert(line.clone()) {
                continue;
            }
            if header {
                say_err(&format!(
                    "for labels {name} (instances {}):",
                    instances.join(", ")
                ));
                header = false;
            }
            errors += usize::from(d.severity == Severity::Error);
            say_err(&line);
        }
        if build.table.is_none() && build.diagnostics.count(Severity::Error) == 0 {
            errors += 1;
        }
    }
    if errors > 0 {
        return Err(Failure::invalid(format!(
            "invalid: {errors} error(s) in the configuration that would result; nothing written \
             (the store stays at revision {})",
            plan.base.revision
        )));
    }
    Ok(())
}

/// The fence's new value: unique per write, so that a writer that lost the
/// answer can tell its own commit from another's.
fn commit_record(plan: &Plan, keys: &crate::fleet::Keys, message: Option<&str>) -> Commit {
    let host = crate::fleet::host_name();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    Commit {
        id: format!("{host}-{}-{nanos}", std::process::id()),
        by: user_name(),
        host,
        at: crate::accesslog::rfc3339(SystemTime::now()),
        message: message.unwrap_or_default().to_owned(),
        base_revision: plan.base.revision,
        put: plan.puts.iter().map(|c| keys.resource(&c.id)).collect(),
        delete: plan.deletes.iter().map(|s| s.key.clone()).collect(),
    }
}

/// Who writes: `$USER` (or `$LOGNAME`), else the uid this runs as.
fn user_name() -> String {
    use std::os::unix::fs::MetadataExt as _;
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            std::fs::metadata("/proc/self")
                .ok()
                .map(|m| format!("uid {}", m.uid()))
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// One transaction or none: a change larger than etcd takes in one is
/// refused with the numbers, never split (a split write would let the
/// instances serve half of it).
fn check_limits(
    plan: &Plan,
    keys: &crate::fleet::Keys,
    commit: &Commit,
    args: &WriteArgs,
) -> Result<(), Failure> {
    let changes = plan.puts.len() + plan.deletes.len();
    if changes + 1 > args.max_txn_ops {
        return Err(Failure::invalid(format!(
            "this write changes {changes} resources; with the commit key that is {} operations in \
             one etcd transaction, and the members take at most {} (etcd's --max-txn-ops): raise \
             --max-txn-ops on every member (and pass the same --max-txn-ops here), or write fewer \
             resources at a time; nothing written",
            changes + 1,
            args.max_txn_ops
        )));
    }
    let bytes = request_bytes(plan, keys, commit);
    if bytes > args.max_request_bytes {
        return Err(Failure::invalid(format!(
            "this write is about {bytes} bytes in one etcd transaction, and the members take at \
             most {} (etcd's --max-request-bytes): raise --max-request-bytes on every member \
             (and pass the same --max-request-bytes here), or write fewer resources at a time; \
             nothing written",
            args.max_request_bytes
        )));
    }
    Ok(())
}

fn request_bytes(plan: &Plan, keys: &crate::fleet::Keys, commit: &Commit) -> usize {
    let commit_bytes = serde_json::to_vec(commit).map_or(0, |v| v.len());
    let puts: usize = plan
        .puts
        .iter()
        .map(|c| keys.resource(&c.id).len() + c.text.len() + OP_OVERHEAD)
        .sum();
    let deletes: usize = plan.deletes.iter().map(|s| s.key.len() + OP_OVERHEAD).sum();
    keys.commit().len() * 2 + commit_bytes + OP_OVERHEAD * 2 + puts + deletes
}

/// The transaction: when the fence is where it was read, move it and
/// write every change. Returns the revision written.
async fn write(store: &mut Store, plan: &Plan, commit: &Commit) -> Result<u64, Failure> {
    let fence = store.keys.commit();
    let value = serde_json::to_vec(commit)
        .map_err(|e| Failure::invalid(format!("cannot encode the commit record: {e}")))?;
    let mut ops = vec![TxnOp::put(fence.clone(), value, None)];
    for change in &plan.puts {
        ops.push(TxnOp::put(
            store.keys.resource(&change.id),
            change.text.to_vec(),
            None,
        ));
    }
    for stored in &plan.deletes {
        ops.push(TxnOp::delete(stored.key.clone(), None));
    }
    let seen = i64::try_from(plan.base.commit_revision).unwrap_or(i64::MAX);
    let txn = Txn::new()
        .when([Compare::mod_revision(fence, CompareOp::Equal, seen)])
        .and_then(ops);
    let answer = store
        .members
        .call("txn", |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await;
    match answer {
        Ok(r) if r.succeeded() => Ok(r
            .header()
            .map_or(0, |h| u64::try_from(h.revision()).unwrap_or(0))),
        // Not succeeded: another writer, or our own first attempt whose
        // answer was lost (a member timed out after the leader wrote it).
        Ok(_) => settle(store, plan, commit, None).await,
        Err(e @ EtcdError::Unreachable { .. }) => settle(store, plan, commit, Some(e)).await,
        Err(e) => Err(Failure::from(e)),
    }
}

/// Reads the fence back after a write that did not say it succeeded: our
/// own commit id there means it did.
async fn settle(
    store: &mut Store,
    plan: &Plan,
    commit: &Commit,
    lost: Option<EtcdError>,
) -> Result<u64, Failure> {
    let now = match crate::fleet::store::read(&mut store.members, &store.keys, None).await {
        Ok(now) => now,
        Err(e) => {
            let first = lost.map_or_else(String::new, |l| format!("{l}; "));
            return Err(Failure {
                exit: Exit::Unreachable,
                message: format!(
                    "{first}then reading the commit key back: {e}; whether commit {} was written \
                     is unknown: `ringway get` shows the store once etcd answers",
                    commit.id
                ),
            });
        }
    };
    match &now.commit {
        Some(c) if c.id == commit.id => Ok(now.commit_revision),
        Some(c) => Err(Failure {
            exit: Exit::Conflict,
            message: format!(
                "conflict: the configuration changed since revision {} (by {} on {} at {}); \
                 nothing written; re-run",
                plan.base.revision, c.by, c.host, c.at
            ),
        }),
        None => Err(Failure {
            exit: Exit::Conflict,
            message: format!(
                "conflict: the configuration changed since revision {} (the commit key is gone); \
                 nothing written; re-run",
                plan.base.revision
            ),
        }),
    }
}

/// Tests only: with `RINGWAY_TEST_HOLD_TXN=DIR`, a write creates
/// `DIR/held` once it has read and validated, then waits for `DIR/go`
/// (at most a minute) before its transaction, so that a test can make two
/// writers race deterministically.
async fn hold_for_test() {
    let Some(dir) = std::env::var_os("RINGWAY_TEST_HOLD_TXN") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let _ = std::fs::write(dir.join("held"), b"");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !dir.join("go").exists() && std::time::Instant::now() < deadline {
        // Asleep on the runtime, so that the client's connection tasks run.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::fleet::Keys;
    use crate::source::Origin;

    fn id(kind: &str, name: &str) -> ResourceKey {
        ResourceKey {
            kind: kind.into(),
            namespace: "default".into(),
            name: name.into(),
        }
    }

    fn stored(keys: &Keys, kind: &str, name: &str, create: u64) -> Stored {
        let id = id(kind, name);
        Stored {
            key: keys.resource(&id),
            id: Some(id),
            text: format!("{name} stored\n").as_bytes().into(),
            create_revision: create,
            mod_revision: create,
        }
    }

    fn change(kind: &str, name: &str, text: &str) -> Change {
        Change {
            id: id(kind, name),
            text: text.as_bytes().into(),
            file: PathBuf::from(format!("{name}.yaml")),
            line: 1,
            document: 1,
        }
    }

    fn shown(snapshot: &Snapshot) -> Vec<String> {
        snapshot
            .documents
            .iter()
            .map(|d| d.origin.to_string())
            .collect()
    }

    /// Stored resources in creation order, a replaced one in its place and
    /// read from the operator's file, new ones last; unchanged texts are
    /// not written; --prune deletes what the files do not name.
    #[test]
    fn the_result_keeps_creation_order() {
        let keys = Keys::new("/p");
        let base = StoreSet {
            revision: 9,
            commit_revision: 5,
            commit: None,
            resources: vec![
                stored(&keys, "Gateway", "a", 2),
                stored(&keys, "VirtualService", "b", 3),
                stored(&keys, "ServiceEntry", "c", 4),
            ],
        };
        let plan = Plan::apply(
            base.clone(),
            vec![
                change("ServiceEntry", "d", "d new\n"),
                change("VirtualService", "b", "b new\n"),
                change("ServiceEntry", "c", "c stored\n"),
            ],
            false,
        );
        assert_eq!((plan.puts.len(), plan.unchanged), (2, 1));
        assert_eq!(
            shown(&plan.result()),
            [
                "etcd:/p/v1/config/Gateway/default/a@2",
                "b.yaml",
                "etcd:/p/v1/config/ServiceEntry/default/c@4",
                "d.yaml"
            ]
        );
        let pruned = Plan::apply(base, vec![change("ServiceEntry", "c", "c stored\n")], true);
        let deleted: Vec<&str> = pruned.deletes.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(
            deleted,
            [
                "/p/v1/config/Gateway/default/a",
                "/p/v1/config/VirtualService/default/b"
            ]
        );
        assert!(matches!(
            &pruned.result().documents[0].origin,
            Origin::Etcd { revision: 4, .. }
        ));
    }

    #[test]
    fn a_write_larger_than_one_transaction_is_refused_with_the_numbers() {
        let keys = Keys::new("/p");
        let big = "x".repeat(DEFAULT_MAX_REQUEST_BYTES);
        let plan = Plan::apply(
            StoreSet::default(),
            vec![change("Gateway", "g", &big)],
            false,
        );
        let commit = commit_record(&plan, &keys, None);
        let args = WriteArgs {
            dry_run: false,
            wait: None,
            message: None,
            max_txn_ops: DEFAULT_MAX_TXN_OPS,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            compile: CompileArgs {
                namespace: "default".into(),
                domain: "cluster.local".into(),
                workload_namespace: "istio-system".into(),
            },
        };
        let e = check_limits(&plan, &keys, &commit, &args).expect_err("too large");
        assert!(
            e.message
                .contains("most 1572864 (etcd's --max-request-bytes)"),
            "{}",
            e.message
        );
        let many: Vec<Change> = (0..DEFAULT_MAX_TXN_OPS)
            .map(|i| change("Gateway", &format!("g{i}"), "x"))
            .collect();
        let plan = Plan::apply(StoreSet::default(), many, false);
        let e = check_limits(&plan, &keys, &commit, &args).expect_err("too many");
        assert!(
            e.message
                .contains("changes 128 resources; with the commit key that is 129 operations"),
            "{}",
            e.message
        );
    }
}
