//! DNS endpoints when the name server does not answer (issue 9): start-up
//! and reloads wait one lookup timeout at most, whatever the number of
//! names, serve every endpoint that resolved, and a later refresh picks up
//! the names that resolve by then.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;

use common::dns::SilentResolver;
use common::{ConfigDir, EchoBackend, Ports, Ringway, connect, read_to_end, say, until, yaml};

/// Port `a` routes to subset v1, port `b` to v2, of a ServiceEntry resolved
/// by DNS: `localhost` (v1, backend port `v1`), `late.ringway.test` (v2,
/// port `v2`) and two names nobody answers for (v2).
fn config(a: u16, b: u16, v1: u16, v2: u16) -> String {
    let endpoint = |address: &str, port: u16, version: &str| {
        format!(
            "  - address: {address}\n    ports:\n      tcp: {port}\n    labels:\n      version: {version}\n"
        )
    };
    let route = |port: u16, subset: &str| {
        format!(
            "  - match:\n    - port: {port}\n    route:\n    - destination:\n        host: svc\n        port:\n          number: 9000\n        subset: {subset}\n"
        )
    };
    yaml::join(&[
        yaml::gateway(&[a, b], &[]),
        yaml::virtual_service("tcp", &(route(a, "v1") + &route(b, "v2"))),
        yaml::destination_rule("", &["v1", "v2"]),
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: svc\nspec:\n  \
             hosts:\n  - svc.default.svc.cluster.local\n  resolution: DNS\n  ports:\n  - number: 9000\n    \
             name: tcp\n    protocol: TCP\n  endpoints:\n{}{}{}{}",
            endpoint("localhost", v1, "v1"),
            endpoint("late.ringway.test", v2, "v2"),
            endpoint("silent-1.ringway.test", v2, "v2"),
            endpoint("silent-2.ringway.test", v2, "v2"),
        ),
    ])
}

/// One line through `port` and the connection's whole answer.
fn exchange(port: u16, line: &str) -> Vec<u8> {
    let mut s = connect(port);
    let _ = s.write_all(format!("{line}\n").as_bytes());
    let _ = s.shutdown(std::net::Shutdown::Write);
    read_to_end(&mut s).0
}

/// `ringway run -c DIR ARGS` in a private mount namespace whose
/// /etc/resolv.conf names only `dns` and whose /etc/hosts is `hosts`.
fn ringway(dns: &SilentResolver, hosts: &Path, config: &ConfigDir, args: &[&str]) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args([
        "-m",
        "sh",
        "-c",
        "mount --bind \"$0\" /etc/resolv.conf && mount --bind \"$1\" /etc/hosts && shift && exec \"$@\"",
    ])
    .arg(dns.resolv_conf())
    .arg(hosts)
    .arg(env!("CARGO_BIN_EXE_ringway"))
    .arg("run")
    .arg("-c")
    .arg(config.path())
    .args(["--admin", "off"])
    .args(args);
    cmd
}

#[test]
fn silent_names_cost_one_timeout_at_start_and_resolve_on_a_later_refresh() {
    let ports = Ports::new();
    // Each lookup the C library sends would wait 5 s: three such names one
    // after the other are 15 s, past the tests' patience to start.
    let Some(dns) = SilentResolver::start(5) else {
        return;
    };
    let (one, two) = (EchoBackend::lines("one"), EchoBackend::lines("two"));
    let (a, b) = (ports.listener(), ports.listener());
    let config = ConfigDir::new().file("svc.yaml", &config(a, b, one.port, two.port));
    let hosts = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(hosts.path(), "127.0.0.1 localhost\n").unwrap();
    let cmd = ringway(
        &dns,
        hosts.path(),
        &config,
        &["--workers", "1", "--dns-refresh", "1s"],
    );
    let Some(gw) = Ringway::spawn(cmd) else {
        return;
    };
    assert!(dns.queries() > 0, "the silent name server was never asked");
    assert!(gw.logged("no answer within 2000 ms"), "{}", gw.log_text());
    // The endpoint that resolved serves.
    assert_eq!(say(a, "x"), "one x");
    // v2's names do not resolve yet: no endpoint, the connection is closed.
    assert_eq!(exchange(b, "y"), b"");
    // late.ringway.test appears (an /etc/hosts entry, as a DNS record
    // would): a refresh gives v2 its endpoint.
    std::fs::write(
        hosts.path(),
        "127.0.0.1 localhost\n127.0.0.1 late.ringway.test\n",
    )
    .unwrap();
    until("a refresh to resolve late.ringway.test", || {
        exchange(b, "y") == b"two y\n"
    });
    assert!(gw.logged("endpoint addresses changed"), "{}", gw.log_text());
}
