//! `ringway status`: each registered instance, what it serves and whether
//! it has caught up with the store; exit 0 only when every live instance
//! has converged (and at least one is registered), so that CI can gate on
//! it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use super::fleet_state::{self, Registered};
use super::{Exit, Failure, StoreArgs, say, say_err};
use crate::fleet::InstanceStatus;
use crate::fleet::status::lagging;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Poll until every live instance has converged, for at most this
    /// long.
    #[arg(long, value_name = "DUR", value_parser = super::parse_wait)]
    pub wait: Option<Duration>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    pub output: Format,
}

pub fn run(args: &StatusArgs) -> u8 {
    super::finish(status(args))
}

async fn status(args: &StatusArgs) -> Result<Exit, Failure> {
    let mut store = super::Store::open(&args.store)?;
    let (registered, target, converged) = match args.wait {
        Some(wait) => fleet_state::wait_converged(&mut store, None, wait).await?,
        None => {
            let set = crate::fleet::store::read(&mut store.members, &store.keys, None).await?;
            let target = set.config_revision();
            let registered = fleet_state::registered(&mut store.members, &store.keys).await?;
            let converged = fleet_state::converged(&registered, target);
            (registered, target, converged)
        }
    };
    match args.output {
        Format::Text => say(&render_text(&registered, target)),
        Format::Json => say(&render_json(&registered, target, converged)),
    }
    for warning in divergent_tables(&registered)
        .into_iter()
        .chain(registered.unreadable.iter().cloned())
    {
        say_err(&format!("warning: {warning}"));
    }
    if registered.instances.is_empty() {
        return Err(Failure::invalid(format!(
            "no instance registered under {}: start `ringway run --config-source ...` on the \
             gateway hosts",
            store.keys.statuses()
        )));
    }
    if !converged {
        let behind = registered
            .instances
            .iter()
            .filter(|s| lagging(s, target).is_some())
            .count();
        return Err(Failure::invalid(format!(
            "not converged: {behind} of {} instance(s) not on revision {target}",
            registered.instances.len()
        )));
    }
    Ok(Exit::Ok)
}

/// The revision the instances are judged against, then one line per
/// instance: `name: converged|behind (why); host=.. version=.. labels=..
/// generation=.. applied=.. synced=.. stale=..` (key=value, for `grep` and
/// `awk` as much as for people).
pub fn render_text(registered: &Registered, target: u64) -> String {
    let mut out = format!(
        "configuration revision {target}; {} instance(s) registered\n",
        registered.instances.len()
    );
    for s in &registered.instances {
        let state = lagging(s, target)
            .map_or_else(|| "converged".to_owned(), |why| format!("behind ({why})"));
        let _ = writeln!(
            out,
            "{}: {state}; host={} version={} labels={} generation={} applied={} synced={} stale={}",
            s.instance,
            s.host,
            s.version,
            s.labels,
            s.generation,
            s.applied_revision,
            s.synced_revision,
            s.stale
        );
    }
    out
}

#[derive(Serialize)]
struct JsonInstance<'a> {
    #[serde(flatten)]
    status: &'a InstanceStatus,
    converged: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    why: Option<String>,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    revision: u64,
    converged: bool,
    instances: Vec<JsonInstance<'a>>,
    warnings: Vec<String>,
}

fn render_json(registered: &Registered, target: u64, converged: bool) -> String {
    let report = JsonReport {
        revision: target,
        converged,
        instances: registered
            .instances
            .iter()
            .map(|s| {
                let why = lagging(s, target);
                JsonInstance {
                    status: s,
                    converged: why.is_none(),
                    why,
                }
            })
            .collect(),
        warnings: divergent_tables(registered)
            .into_iter()
            .chain(registered.unreadable.iter().cloned())
            .collect(),
    };
    serde_json::to_string_pretty(&report).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// Instances with the same labels serving the same revision must serve
/// the same table: different hashes mean their compilers disagree (another
/// version, or a bug worth a report).
fn divergent_tables(registered: &Registered) -> Vec<String> {
    let mut groups: BTreeMap<(&str, u64), BTreeMap<&str, Vec<&str>>> = BTreeMap::new();
    for s in &registered.instances {
        groups
            .entry((s.labels.as_str(), s.applied_revision))
            .or_default()
            .entry(s.table_hash.as_str())
            .or_default()
            .push(s.instance.as_str());
    }
    groups
        .into_iter()
        .filter(|(_, hashes)| hashes.len() > 1)
        .map(|((labels, revision), hashes)| {
            let shown: Vec<String> = hashes
                .iter()
                .map(|(hash, instances)| format!("{} serve {hash}", instances.join(", ")))
                .collect();
            format!(
                "instances with labels {labels:?} at revision {revision} serve different tables \
                 ({}): their compilers disagree; compare their versions",
                shown.join("; ")
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_labels_at_one_revision_with_different_tables_are_flagged() {
        let status = |instance: &str, labels: &str, hash: &str| InstanceStatus {
            instance: instance.into(),
            labels: labels.into(),
            table_hash: hash.into(),
            applied_revision: 7,
            synced_revision: 7,
            ..InstanceStatus::default()
        };
        let registered = Registered {
            instances: vec![
                status("a", "istio=ingressgateway", "h1"),
                status("b", "istio=ingressgateway", "h2"),
                status("c", "istio=other", "h3"),
            ],
            unreadable: Vec::new(),
        };
        let warnings = divergent_tables(&registered);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("a serve h1; b serve h2"),
            "{warnings:?}"
        );
        let text = render_text(&registered, 8);
        assert!(
            text.contains("a: behind (synced to revision 7, the store is at 8)"),
            "{text}"
        );
    }
}
