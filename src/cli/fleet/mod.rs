//! The fleet commands: `apply`, `delete`, `get` and `status` against the
//! etcd store that every ringway host of a fleet watches
//! (`--config-source etcd://h1:2379,h2:2379/PREFIX`).
//!
//! `apply` and `delete` read the whole configuration at one revision,
//! validate the set that would result with the same loader and compiler as
//! `check` and `run`, once for every label set the fleet has registered,
//! and write it in one transaction fenced by the commit key. Nothing is
//! ever written in parts: an invalid set, a conflict or a set too large for
//! one transaction writes nothing.
//!
//! Exit status, the same for all four commands so that scripts can tell
//! the cases apart:
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | done: written, unchanged, found, or (`status`) the fleet has converged |
//! | 1 | invalid (the diagnostics say why; nothing written), nothing found, or (`status`) not converged |
//! | 2 | usage: a flag or argument is wrong (clap) |
//! | 3 | conflict: another writer changed the store since it was read; nothing written, re-run |
//! | 4 | etcd unreachable or refusing (no member answered, TLS or credentials files unreadable, permission denied) |
//! | 5 | `apply`/`delete --wait`: written, but the fleet had not converged when the wait ended |
//!
//! 5 is apart from 1 on purpose: after 1 nothing was written, after 5 the
//! change is in the store and the instances are still catching up (or one
//! refused it: `ringway status` says which).

pub mod apply;
pub mod delete;
pub mod get;
pub mod status;

mod fleet_state;
mod split;
mod write;

use std::io::Write as _;
use std::time::Duration;

use clap::Args;

pub use super::CompileArgs;
use crate::fleet::{EtcdArgs, EtcdError, Keys, Members, Target};

/// The exit status of a fleet command (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    Invalid = 1,
    Conflict = 3,
    Unreachable = 4,
    NotConverged = 5,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// Text shown under each fleet command's help.
pub const EXIT_HELP: &str = "Exit status: 0 done (or converged), 1 invalid / nothing found / \
     not converged (status), 2 usage, 3 conflict (the store changed since it was read; \
     nothing written), 4 etcd unreachable, 5 written but not converged within --wait.";

/// Where the fleet's store is: shared by the four commands.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// The fleet's etcd members and key prefix:
    /// etcd://HOST[:PORT][,HOST[:PORT]...][/PREFIX], etcds:// for TLS.
    #[arg(long = "config-source", value_name = "etcd://HOST:PORT,.../PREFIX", value_parser = parse_target)]
    pub target: Target,
    #[command(flatten)]
    pub etcd: EtcdArgs,
}

fn parse_target(text: &str) -> Result<Target, String> {
    Target::parse(text).map_err(|e| e.reason)
}

/// `--wait`: a duration above zero.
pub fn parse_wait(text: &str) -> Result<Duration, String> {
    let d = crate::config::manifest::parse_duration(text)?;
    if d.is_zero() {
        return Err("must be above zero (for example 30s)".to_owned());
    }
    Ok(d)
}

/// The store of one command: its members and keys.
pub struct Store {
    pub members: Members,
    pub keys: Keys,
}

impl Store {
    pub fn open(args: &StoreArgs) -> Result<Store, Failure> {
        let members = Members::new(&args.target, &args.etcd).map_err(Failure::from)?;
        Ok(Store {
            members,
            keys: Keys::new(&args.target.prefix),
        })
    }
}

/// Why a command stopped, with the exit status it stops with.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
}

impl Failure {
    pub fn invalid(message: impl Into<String>) -> Failure {
        Failure {
            exit: Exit::Invalid,
            message: message.into(),
        }
    }
}

impl From<EtcdError> for Failure {
    /// Every etcd error is exit 4: unreachable members, unreadable
    /// certificate or password files, and refusals (permission denied)
    /// are all "the store cannot be used from here", never a verdict on
    /// the configuration.
    fn from(e: EtcdError) -> Failure {
        let hint = match &e {
            EtcdError::Unreachable { .. } => {
                "; check that the members in --config-source are up and reachable from this host"
            }
            EtcdError::Setup(_) | EtcdError::Refused { .. } => "",
        };
        Failure {
            exit: Exit::Unreachable,
            message: format!("{e}{hint}"),
        }
    }
}

/// Runs a command's future on a current-thread runtime and turns its
/// outcome into the exit status, the failure said on stderr.
pub fn finish<F>(command: F) -> u8
where
    F: std::future::Future<Output = Result<Exit, Failure>>,
{
    let runtime = match crate::fleet::runtime() {
        Ok(runtime) => runtime,
        Err(e) => {
            say_err(&format!(
                "error: cannot start the etcd client's runtime: {e}"
            ));
            return Exit::Unreachable.code();
        }
    };
    match runtime.block_on(command) {
        Ok(exit) => exit.code(),
        Err(failure) => {
            say_err(&format!("error: {}", failure.message));
            failure.exit.code()
        }
    }
}

/// Writes `text` to stdout; a closed stdout (`| head`) is not worth a
/// panic.
pub fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    if !text.ends_with('\n') {
        let _ = out.write_all(b"\n");
    }
}

/// Writes `text` to stderr.
pub fn say_err(text: &str) {
    let mut out = std::io::stderr().lock();
    let _ = out.write_all(text.as_bytes());
    if !text.ends_with('\n') {
        let _ = out.write_all(b"\n");
    }
}
