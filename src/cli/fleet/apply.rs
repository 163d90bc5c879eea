//! `ringway apply -f FILE|DIR...`: the resources of the files into the
//! store, validated as the whole set they make with what is stored, in one
//! transaction.

use std::path::PathBuf;

use clap::Args;

use super::split::read_files;
use super::write::{Plan, WriteArgs, commit_plan};
use super::{Exit, Failure, StoreArgs, say_err};

#[derive(Debug, Clone, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// A manifest file, or a directory of *.yaml/*.yml files (not
    /// recursive). Repeatable; a resource given twice: the later wins.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE|DIR",
        required = true
    )]
    pub files: Vec<PathBuf>,
    /// Delete every stored resource the files do not define (the files are
    /// the whole configuration).
    #[arg(long)]
    pub prune: bool,
    #[command(flatten)]
    pub write: WriteArgs,
}

pub fn run(args: &ApplyArgs) -> u8 {
    super::finish(apply(args))
}

async fn apply(args: &ApplyArgs) -> Result<Exit, Failure> {
    let read = read_files(&args.files, &args.write.compile.load_options());
    for d in read.diagnostics.iter() {
        say_err(&format!("{}: {d}", d.severity));
    }
    if read.diagnostics.has_errors() {
        return Err(Failure::invalid(format!(
            "invalid: {} error(s) in the files; nothing written",
            read.diagnostics.count(crate::diag::Severity::Error)
        )));
    }
    if read.changes.is_empty() {
        // With --prune this would empty the store: `ringway delete` says so
        // resource by resource.
        return Err(Failure::invalid(
            "the files define no resource ringway reads (Gateway, VirtualService, \
             DestinationRule, ServiceEntry, WorkloadEntry); nothing written",
        ));
    }
    let mut store = super::Store::open(&args.store)?;
    let base = crate::fleet::store::read(&mut store.members, &store.keys, None).await?;
    let plan = Plan::apply(base, read.changes, args.prune);
    commit_plan(&mut store, plan, &args.write).await
}
