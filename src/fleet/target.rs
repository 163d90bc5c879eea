//! Where the fleet's store is: `--config-source etcd://h1:2379,h2:2379/PREFIX`
//! (`etcds://` for TLS) and the flags that carry what must not be in a URL
//! (certificates, the user and the file that holds its password).

use std::path::PathBuf;

use clap::Args;

/// The etcd flags shared by `run`, `check`, `apply`, `delete`, `get` and
/// `status`.
#[derive(Debug, Clone, Default, Args)]
pub struct EtcdArgs {
    /// CA certificate (PEM) that signed the etcd members' certificates
    /// (`etcds://`).
    #[arg(long, value_name = "FILE")]
    pub etcd_ca: Option<PathBuf>,
    /// Client certificate (PEM) for etcd's `--client-cert-auth`.
    #[arg(long, value_name = "FILE", requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
    /// etcd user (role-based access); the password comes from
    /// --etcd-password-file, never from the command line.
    #[arg(long, value_name = "USER", requires = "etcd_password_file")]
    pub etcd_user: Option<String>,
    /// A file holding the etcd user's password (one line).
    #[arg(long, value_name = "FILE", requires = "etcd_user")]
    pub etcd_password_file: Option<PathBuf>,
}

/// A parsed `etcd://` or `etcds://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `http://host:port` or `https://host:port`, in the order given.
    pub endpoints: Vec<String>,
    pub tls: bool,
    /// The key prefix, starting with `/` and without a trailing one:
    /// `/ringway/prod`.
    pub prefix: String,
}

/// The prefix when the URL names none.
pub const DEFAULT_PREFIX: &str = "/ringway";

/// Why a `--config-source` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--config-source {given:?}: {reason}")]
pub struct TargetError {
    pub given: String,
    pub reason: String,
}

impl Target {
    /// Parses `etcd://h1:2379,h2:2379/PREFIX` or `etcds://...`. A port
    /// left out is 2379; a prefix left out is `/ringway`. Credentials in
    /// the URL are refused: a URL shows in `ps`, in logs and in shell
    /// history.
    pub fn parse(text: &str) -> Result<Target, TargetError> {
        let refuse = |reason: String| TargetError {
            given: text.to_owned(),
            reason,
        };
        let (tls, rest) = if let Some(rest) = text.strip_prefix("etcds://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("etcd://") {
            (false, rest)
        } else {
            return Err(refuse(
                "expected etcd://HOST[:PORT][,HOST[:PORT]...][/PREFIX] or etcds://... for TLS"
                    .into(),
            ));
        };
        let (hosts, prefix) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, ""),
        };
        if hosts.contains('@') {
            return Err(refuse(
                "credentials do not belong in the URL (it shows in ps and in logs): \
                 use --etcd-user and --etcd-password-file"
                    .into(),
            ));
        }
        let scheme = if tls { "https" } else { "http" };
        let mut endpoints = Vec::new();
        for host in hosts.split(',') {
            if host.is_empty() {
                return Err(refuse(
                    "an empty member address; list HOST:PORT separated by commas".into(),
                ));
            }
            if host.contains(|c: char| c.is_whitespace() || c == '?' || c == '#') {
                return Err(refuse(format!("{host:?} is not HOST[:PORT]")));
            }
            let with_port = if has_port(host) {
                host.to_owned()
            } else {
                format!("{host}:2379")
            };
            endpoints.push(format!("{scheme}://{with_port}"));
        }
        let prefix = prefix.trim_end_matches('/');
        let prefix = if prefix.is_empty() {
            DEFAULT_PREFIX
        } else {
            prefix
        };
        if prefix.contains("//") || prefix.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(refuse(format!(
                "the prefix {prefix:?} must be /word[/word...] without empty parts or spaces"
            )));
        }
        Ok(Target {
            endpoints,
            tls,
            prefix: prefix.to_owned(),
        })
    }
}

/// Whether `host` ends in `:PORT` (an IPv6 literal is `[::1]:2379`).
fn has_port(host: &str) -> bool {
    match host.rsplit_once(':') {
        Some((before, port)) => {
            !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!before.contains(':') || before.ends_with(']'))
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_prefix_and_scheme() {
        let t = Target::parse("etcd://10.0.0.1:2379,10.0.0.2,[::1]:23790/ringway/prod/")
            .expect("valid");
        assert_eq!(
            t.endpoints,
            [
                "http://10.0.0.1:2379",
                "http://10.0.0.2:2379",
                "http://[::1]:23790"
            ]
        );
        assert_eq!(t.prefix, "/ringway/prod");
        assert!(!t.tls);
        let t = Target::parse("etcds://etcd.internal").expect("valid");
        assert_eq!(t.endpoints, ["https://etcd.internal:2379"]);
        assert_eq!(t.prefix, DEFAULT_PREFIX);
        assert!(t.tls);
    }

    #[test]
    fn refuses_credentials_other_schemes_and_empty_members() {
        for (text, says) in [
            (
                "etcd://root:secret@h1:2379/p",
                "--etcd-user and --etcd-password-file",
            ),
            ("http://h1:2379", "expected etcd://"),
            ("etcd://h1,,h2/p", "empty member"),
            ("etcd://h1/a//b", "without empty parts"),
        ] {
            let e = Target::parse(text).expect_err(text);
            assert!(e.to_string().contains(says), "{text}: {e}");
        }
    }
}
