//! A fleet of ringway instances on one etcd: where the configuration is
//! (`--config-source etcd://...`), its key layout, the members with
//! fail-over, and the store read at one revision. Used by `run` (a
//! watching [`crate::source::ConfigSource`]) and by the fleet commands
//! (`apply`, `delete`, `get`, `status`). The etcd client is async (tokio);
//! it runs on control-plane threads only, never on a worker.
#![forbid(unsafe_code)]

pub mod cache;
mod driver;
pub mod keys;
pub mod members;
mod registration;
pub mod source;
pub mod status;
pub mod store;
pub mod target;
pub mod watch;

pub use keys::{Keys, ResourceKey};
pub use members::{EtcdError, Members};
pub use source::{EtcdSource, SourceConfig};
pub use status::InstanceStatus;
pub use store::{Commit, StoreSet, Stored};
pub use target::{EtcdArgs, Target};

/// A current-thread runtime for one command or one control-plane thread.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
}

/// The store's whole configuration at its current revision, read once on a
/// runtime of its own (`check`, the fleet commands' first read).
pub fn read_once(target: &Target, args: &EtcdArgs) -> Result<StoreSet, EtcdError> {
    let mut members = Members::new(target, args)?;
    let keys = Keys::new(&target.prefix);
    let runtime =
        runtime().map_err(|e| EtcdError::Setup(format!("cannot start a runtime: {e}")))?;
    runtime.block_on(store::read(&mut members, &keys, None))
}

/// This host's name as the kernel has it: the default `--instance-id`, and
/// the `host` of status keys and commit records.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}
