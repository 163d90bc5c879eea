//! `ringway delete Kind/namespace/name... | -f FILE...`: removes resources
//! from the store, after validating the set that remains, in one
//! transaction.

use std::path::PathBuf;

use clap::Args;

use super::split::read_files;
use super::write::{Plan, WriteArgs, commit_plan};
use super::{Exit, Failure, StoreArgs, say_err};
use crate::config::Kind;
use crate::fleet::ResourceKey;

#[derive(Debug, Clone, Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Resources to delete, as Kind/namespace/name (for example
    /// VirtualService/default/tcp-echo).
    #[arg(value_name = "Kind/namespace/name", required_unless_present = "files", conflicts_with = "files", value_parser = parse_resource)]
    pub resources: Vec<ResourceKey>,
    /// Delete the resources these files define (their texts need not match
    /// the stored ones).
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR")]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub write: WriteArgs,
}

pub fn run(args: &DeleteArgs) -> u8 {
    super::finish(delete(args))
}

async fn delete(args: &DeleteArgs) -> Result<Exit, Failure> {
    let ids = if args.files.is_empty() {
        args.resources.clone()
    } else {
        let read = read_files(&args.files, &args.write.compile.load_options());
        for d in read.diagnostics.iter() {
            say_err(&format!("{}: {d}", d.severity));
        }
        if read.diagnostics.has_errors() || read.changes.is_empty() {
            return Err(Failure::invalid(
                "the files do not name resources to delete (see above); nothing deleted",
            ));
        }
        read.changes.into_iter().map(|c| c.id).collect()
    };
    let mut store = super::Store::open(&args.store)?;
    let base = crate::fleet::store::read(&mut store.members, &store.keys, None).await?;
    let plan = Plan::delete(base, &ids, &store.keys)?;
    commit_plan(&mut store, plan, &args.write).await
}

/// `Kind/namespace/name`, the kind one ringway reads.
pub fn parse_resource(text: &str) -> Result<ResourceKey, String> {
    let parts: Vec<&str> = text.split('/').collect();
    let [kind, namespace, name] = parts.as_slice() else {
        return Err(format!(
            "{text:?} is not Kind/namespace/name (for example VirtualService/default/tcp-echo)"
        ));
    };
    if [kind, namespace, name].iter().any(|p| p.is_empty()) {
        return Err(format!(
            "{text:?} has an empty part; write Kind/namespace/name"
        ));
    }
    let kind = parse_kind(kind)?;
    Ok(ResourceKey {
        kind: kind.as_str().to_owned(),
        namespace: (*namespace).to_owned(),
        name: (*name).to_owned(),
    })
}

/// One of the five kinds, spelled as Istio does.
pub fn parse_kind(text: &str) -> Result<Kind, String> {
    if let Some(kind) = Kind::ALL.into_iter().find(|k| k.as_str() == text) {
        return Ok(kind);
    }
    let names: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
    let hint = crate::diag::did_you_mean(text, &names)
        .or_else(|| names.iter().copied().find(|n| n.eq_ignore_ascii_case(text)))
        .map_or_else(String::new, |m| format!(" (did you mean {m}?)"));
    Err(format!(
        "{text:?} is not a kind ringway stores{hint}; the kinds are {}",
        names.join(", ")
    ))
}
