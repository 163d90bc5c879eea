//! Issue 14's acceptance: a fleet of two `ringway run` instances on one
//! real 3-member etcd cluster (Debian's etcd 3.4 on 127.0.0.1, started and
//! killed by PID), configured with `ringway apply`, watched with
//! `ringway status`, and every claim checked on traffic: each instance has
//! its own Gateway (selected by its `--labels`) on its own port, both route
//! to the same two tcp-echo backends (v1 answers `one <line>`, v2
//! `two <line>`), and a long-lived connection through each instance
//! carries its bytes intact across every step.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::etcd::Etcd;
use common::{ConfigDir, EchoBackend, Ports, Ringway};

/// The two instances' names and the label that selects each one's Gateway.
const INSTANCES: [&str; 2] = ["a", "b"];

/// The fleet's configuration: one Gateway per instance (selector
/// `fleet: <instance>`), one VirtualService bound to both with `weights`
/// (v1, v2), the DestinationRule and the ServiceEntry of the backends.
fn fleet_config(
    listen: [u16; 2],
    v1: &EchoBackend,
    v2: &EchoBackend,
    weights: (u32, u32),
) -> ConfigDir {
    let gateways: Vec<String> = INSTANCES
        .iter()
        .zip(listen)
        .map(|(name, port)| {
            format!(
                "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: gw-{name}\nspec:\n  selector:\n    fleet: {name}\n  servers:\n  - port:\n      number: {port}\n      name: tcp\n      protocol: TCP\n    hosts:\n    - \"*\"\n"
            )
        })
        .collect();
    let route = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: svc\nspec:\n  hosts:\n  - \"*\"\n  gateways:\n  - gw-a\n  - gw-b\n  tcp:\n  - route:\n    - destination:\n        host: svc\n        port:\n          number: 9000\n        subset: v1\n      weight: {}\n    - destination:\n        host: svc\n        port:\n          number: 9000\n        subset: v2\n      weight: {}\n",
        weights.0, weights.1
    );
    ConfigDir::new()
        .file("gateways.yaml", &gateways.join("---\n"))
        .file("route.yaml", &route)
        .file(
            "backends.yaml",
            &common::yaml::join(&[
                common::yaml::destination_rule("", &["v1", "v2"]),
                common::yaml::service_entry(&[(v1.port, "v1"), (v2.port, "v2")]),
            ]),
        )
}

/// A cluster, its URL for ringway, the backends and the instances.
struct Fleet {
    /// Holds the port reservations until the fleet is dropped.
    _ports: Ports,
    etcd: Etcd,
    prefix: String,
    v1: EchoBackend,
    v2: EchoBackend,
    listen: [u16; 2],
    admin: [u16; 2],
    instances: [Option<Ringway>; 2],
    cache: tempfile::TempDir,
    /// `etcds` when the members serve TLS.
    scheme: &'static str,
    /// Flags every ringway command gets (TLS, credentials).
    extra: Vec<String>,
}

impl Fleet {
    fn new(test: &str) -> Fleet {
        let ports = Ports::new();
        let etcd = Etcd::start(&ports, 3);
        Fleet::on(test, ports, etcd)
    }

    fn on(test: &str, ports: Ports, etcd: Etcd) -> Fleet {
        let listen = [ports.listener(), ports.listener()];
        let admin = [ports.admin(), ports.admin()];
        Fleet {
            etcd,
            prefix: format!("/ringway/{test}"),
            v1: EchoBackend::lines("one"),
            v2: EchoBackend::lines("two"),
            listen,
            admin,
            instances: [None, None],
            cache: tempfile::tempdir().expect("cache dir"),
            _ports: ports,
            scheme: "etcd",
            extra: Vec::new(),
        }
    }

    /// `etcd://<every member>/<prefix>`: the instances and the commands
    /// know every member, dead or alive.
    fn url(&self) -> String {
        let members: Vec<String> = (0..3)
            .map(|i| format!("127.0.0.1:{}", self.etcd.client_port(i)))
            .collect();
        format!("{}://{}{}", self.scheme, members.join(","), self.prefix)
    }

    fn config(&self, weights: (u32, u32)) -> ConfigDir {
        fleet_config(self.listen, &self.v1, &self.v2, weights)
    }

    /// `ringway <args> --config-source <url>`.
    fn ringway(&self, args: &[&str]) -> Output {
        Command::new(common::ringway_bin())
            .args(args)
            .args(["--config-source", &self.url()])
            .args(&self.extra)
            .output()
            .expect("run ringway")
    }

    /// `ringway apply -f <dir>`; its output when it succeeded.
    fn apply(&self, config: &ConfigDir) -> String {
        let out = self.ringway(&["apply", "-f", &config.path().display().to_string()]);
        assert!(out.status.success(), "apply failed: {}", shown(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts instance `i` (`--instance-id a|b`, `--labels fleet=a|b`,
    /// its cache file, one worker) and waits until it serves.
    fn start(&mut self, i: usize) {
        let admin = format!("127.0.0.1:{}", self.admin[i]);
        let cache = self.cache.path().join(format!("{}.json", INSTANCES[i]));
        let mut cmd = Command::new(common::ringway_bin());
        cmd.arg("run")
            .args(["--config-source", &self.url()])
            .args(["--instance-id", INSTANCES[i]])
            .args(["--labels", &format!("fleet={}", INSTANCES[i])])
            .args(["--admin", &admin, "--workers", "1", "--status-ttl", "3s"])
            .arg("--config-cache")
            .arg(&cache)
            .args(&self.extra);
        self.instances[i] = Ringway::spawn(cmd);
        assert!(self.instances[i].is_some() || !common::require_uring());
    }

    /// A new fleet with `weights` applied and both instances serving it;
    /// `None` where io_uring is unavailable (and not required).
    fn serving(test: &str, weights: (u32, u32)) -> Option<Fleet> {
        let mut fleet = Fleet::new(test);
        fleet.apply(&fleet.config(weights));
        fleet.start(0);
        fleet.start(1);
        fleet.instances.iter().all(Option::is_some).then_some(fleet)
    }

    fn instance(&self, i: usize) -> &Ringway {
        self.instances[i].as_ref().expect("instance started")
    }

    /// Applies `weights`, waits for `ringway status` to say every instance
    /// serves them, and checks that each one routes `split` (v1, v2) over
    /// 5 new connections at once: converged means serving.
    fn converge_on(&self, weights: (u32, u32), split: (usize, usize)) {
        let applied = self.apply(&self.config(weights));
        assert!(applied.contains("applied at revision"), "{applied}");
        let status = self.status("10s");
        assert!(status.status.success(), "{}", shown(&status));
        assert_eq!(self.split(0, 5), split);
        assert_eq!(self.split(1, 5), split);
    }

    /// `ringway status --wait <dur>`.
    fn status(&self, wait: &str) -> Output {
        self.ringway(&["status", "--wait", wait])
    }

    fn metrics(&self, i: usize) -> String {
        let (code, body) = common::http(self.admin[i], "GET", "/metrics");
        assert_eq!(code, 200, "{body}");
        body
    }

    /// `ringway_config_source_<name>` of instance `i`.
    fn gauge(&self, i: usize, name: &str) -> u64 {
        common::sample(
            &self.metrics(i),
            &format!("ringway_config_source_{name}"),
            &[],
        )
    }

    /// The replies of `n` new connections through instance `i`, one line
    /// each: (answered by v1, answered by v2).
    fn split(&self, i: usize, n: usize) -> (usize, usize) {
        let replies: Vec<String> = (0..n)
            .map(|k| common::say(self.listen[i], &format!("hello {k}")))
            .collect();
        let one = replies.iter().filter(|r| r.starts_with("one ")).count();
        let two = replies.iter().filter(|r| r.starts_with("two ")).count();
        assert_eq!(one + two, n, "{replies:?}");
        (one, two)
    }

    /// Until both instances route (v1, v2) exactly so over 5 connections.
    fn until_split(&self, split: (usize, usize)) {
        for (i, name) in INSTANCES.iter().enumerate() {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let seen = self.split(i, 5);
                if seen == split {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "instance {name}: {seen:?}, expected {split:?}\n{}",
                    self.instance(i).log_text()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn shown(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A connection that stays open through every step: each `check` sends a
/// line and expects it back from the backend it was routed to; the bytes
/// sent and received are hashed and compared at the end.
struct LongLived {
    stream: BufReader<TcpStream>,
    backend: String,
    sent: Vec<u8>,
    received: Vec<u8>,
    lines: usize,
}

impl LongLived {
    fn open(port: u16) -> LongLived {
        let mut long = LongLived {
            stream: BufReader::new(common::connect(port)),
            backend: String::new(),
            sent: Vec::new(),
            received: Vec::new(),
            lines: 0,
        };
        let first = long.exchange();
        long.backend = first.split(' ').next().unwrap_or_default().to_owned();
        long
    }

    fn exchange(&mut self) -> String {
        self.lines += 1;
        let line = format!(
            "long-lived line {} {}\n",
            self.lines,
            "x".repeat(self.lines % 97)
        );
        self.stream
            .get_mut()
            .write_all(line.as_bytes())
            .expect("send on the long-lived connection");
        self.sent.extend_from_slice(line.as_bytes());
        let mut reply = String::new();
        self.stream
            .read_line(&mut reply)
            .expect("read on the long-lived connection");
        self.received.extend_from_slice(reply.as_bytes());
        reply
    }

    /// The connection still carries bytes both ways, intact.
    fn check(&mut self) {
        let reply = self.exchange();
        assert!(
            reply.starts_with(&format!("{} long-lived line {}", self.backend, self.lines)),
            "{reply:?}"
        );
    }

    /// What came back is exactly what was sent, each line prefixed by the
    /// backend's word (sha256 of both sides).
    fn verify(&self) {
        use sha2::{Digest, Sha256};
        let expected: Vec<u8> = self
            .sent
            .split_inclusive(|b| *b == b'\n')
            .flat_map(|line| [format!("{} ", self.backend).as_bytes(), line].concat())
            .collect();
        assert_eq!(
            Sha256::digest(&self.received),
            Sha256::digest(&expected),
            "the long-lived connection's bytes differ"
        );
    }
}

fn path_of(dir: &ConfigDir) -> String {
    dir.path().display().to_string()
}

/// apply → both instances serve the new table; `ringway status --wait`
/// exits 0; each instance routes 80/20 exactly over 5 connections; an
/// invalid apply writes nothing and changes no traffic; a bad document
/// written behind apply's back is refused by both instances, reported by
/// `status` (exit 1) until a good apply.
#[test]
fn an_apply_reaches_every_instance_and_a_bad_one_reaches_none() {
    let Some(fleet) = Fleet::serving("apply", (100, 0)) else {
        return;
    };
    fleet.until_split((5, 0));
    let mut long: Vec<LongLived> = fleet.listen.iter().map(|p| LongLived::open(*p)).collect();

    fleet.converge_on((80, 20), (4, 1));
    long.iter_mut().for_each(LongLived::check);

    // An undeclared subset: refused before anything is written.
    let before = fleet.etcd.etcdctl(&["get", "--write-out", "json", "/"]);
    let bad = fleet.config((80, 20));
    let text = std::fs::read_to_string(bad.path().join("route.yaml")).expect("route");
    std::fs::write(
        bad.path().join("route.yaml"),
        text.replace("subset: v2", "subset: v3"),
    )
    .expect("write");
    let out = fleet.ringway(&["apply", "-f", &path_of(&bad)]);
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("v3")
            || String::from_utf8_lossy(&out.stderr).contains("v3"),
        "{}",
        shown(&out)
    );
    let after = fleet.etcd.etcdctl(&["get", "--write-out", "json", "/"]);
    assert_eq!(
        revision_of(&before),
        revision_of(&after),
        "an invalid apply moved the store"
    );
    assert_eq!(fleet.split(0, 5), (4, 1));

    // Behind apply's back: a VirtualService routing to a subset nobody
    // declares, written with etcdctl.
    let key = format!("{}/v1/config/VirtualService/default/svc", fleet.prefix);
    let raw = text.replace("subset: v2", "subset: v3");
    let put = fleet.etcd.etcdctl(&["put", &key, &raw]);
    assert!(put.status.success(), "{}", shown(&put));
    for i in 0..2 {
        common::until("the raw write to be refused", || {
            fleet.gauge(i, "rejected_total") >= 1
        });
    }
    let status = fleet.status("1s");
    assert_eq!(status.status.code(), Some(1), "{}", shown(&status));
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("rejected"),
        "{}",
        shown(&status)
    );
    assert_eq!(fleet.split(0, 5), (4, 1), "the last good table stays");
    assert_eq!(fleet.split(1, 5), (4, 1), "the last good table stays");

    // A good apply of the same key fixes it.
    fleet.converge_on((20, 80), (1, 4));
    for l in &mut long {
        l.check();
        l.verify();
    }
}

/// The store's revision in `etcdctl get -w json` output.
fn revision_of(out: &Output) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("etcdctl json");
    v["header"]["revision"].as_u64().expect("revision")
}

/// Kill the leader: applies keep succeeding, both instances converge.
/// Kill every member: both instances keep forwarding established and new
/// connections and say they are stale; restart: they resync and converge,
/// and an apply made then reaches both.
#[test]
fn the_fleet_rides_out_member_failures_and_a_whole_outage() {
    let Some(mut fleet) = Fleet::serving("outage", (100, 0)) else {
        return;
    };
    let mut long: Vec<LongLived> = fleet.listen.iter().map(|p| LongLived::open(*p)).collect();

    let leader = fleet.etcd.leader().expect("a leader");
    fleet.etcd.kill(leader);
    let started = Instant::now();
    // The two members left elect a new leader first (up to a second with
    // the harness's fast elections); an apply during the election gets
    // etcd's "no leader" on every member and exits 4, as it should.
    common::until("the two members left to elect a leader", || {
        fleet.etcd.leader().is_some_and(|l| l != leader)
    });
    fleet.converge_on((80, 20), (4, 1));
    eprintln!("leader killed → apply converged in {:?}", started.elapsed());
    fleet.etcd.restart(leader);
    long.iter_mut().for_each(LongLived::check);

    for i in 0..3 {
        fleet.etcd.kill(i);
    }
    for i in 0..2 {
        common::until("the instance to notice etcd is gone", || {
            fleet.gauge(i, "connected") == 0 && fleet.gauge(i, "stale") == 1
        });
        let (code, _) = common::http(fleet.admin[i], "GET", "/ready");
        assert_eq!(
            code, 200,
            "readiness is about this host's listeners, not etcd"
        );
    }
    assert_eq!(
        fleet.split(0, 5),
        (4, 1),
        "new connections during the outage"
    );
    assert_eq!(
        fleet.split(1, 5),
        (4, 1),
        "new connections during the outage"
    );
    long.iter_mut().for_each(LongLived::check);

    fleet.etcd.restart_all();
    for i in 0..2 {
        common::until("the instance to reconnect", || {
            fleet.gauge(i, "connected") == 1 && fleet.gauge(i, "stale") == 0
        });
    }
    fleet.converge_on((20, 80), (1, 4));
    for l in &mut long {
        l.check();
        l.verify();
    }
}

/// Restart an instance while etcd is down: it serves the last applied set
/// from its cache, marked stale, and converges when etcd returns. Without
/// etcd and without a cache, `run` exits non-zero.
#[test]
fn a_restart_during_an_outage_serves_the_cache() {
    let Some(mut fleet) = Fleet::serving("cache", (80, 20)) else {
        return;
    };
    assert!(fleet.status("10s").status.success());
    for i in 0..3 {
        fleet.etcd.kill(i);
    }
    // Instance b goes down and comes back while etcd is away.
    let b = fleet.instances[1].take().expect("b");
    b.terminate();
    fleet.start(1);
    assert_eq!(fleet.split(1, 5), (4, 1), "served from the cache");
    assert_eq!(fleet.gauge(1, "stale"), 1);
    let (_, dump) = common::http(fleet.admin[1], "GET", "/config_dump");
    let dump: serde_json::Value = serde_json::from_str(&dump).expect("config_dump JSON");
    assert_eq!(dump["source"]["stale"], true, "{dump}");
    assert_eq!(dump["source"]["kind"], "etcd", "{dump}");

    // No etcd, no cache: nothing to serve.
    let out = Command::new(common::ringway_bin())
        .arg("run")
        .args(["--config-source", &fleet.url(), "--admin", "off"])
        .args(["--etcd-startup-timeout", "1s"])
        .output()
        .expect("run");
    assert!(!out.status.success(), "{}", shown(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("etcd"),
        "{}",
        shown(&out)
    );

    fleet.etcd.restart_all();
    common::until("b to resync", || fleet.gauge(1, "stale") == 0);
    assert!(fleet.status("10s").status.success());
}

/// Compaction past an instance's revision: when its member comes back, its
/// watch is cancelled as compacted and it re-reads everything (counted),
/// then serves what was applied meanwhile.
#[test]
fn compaction_past_an_instance_forces_a_counted_resync() {
    let mut fleet = Fleet::new("compact");
    fleet.apply(&fleet.config((100, 0)));
    // Instance a knows only member 2; the commands use all three.
    let only = format!(
        "etcd://127.0.0.1:{}{}",
        fleet.etcd.client_port(2),
        fleet.prefix
    );
    let mut cmd = Command::new(common::ringway_bin());
    cmd.arg("run")
        .args([
            "--config-source",
            &only,
            "--instance-id",
            "a",
            "--labels",
            "fleet=a",
        ])
        .args([
            "--admin",
            &format!("127.0.0.1:{}", fleet.admin[0]),
            "--workers",
            "1",
        ]);
    fleet.instances[0] = Ringway::spawn(cmd);
    if fleet.instances[0].is_none() {
        return;
    }
    fleet.until_split_one((5, 0));
    fleet.etcd.kill(2);
    for weights in [(60, 40), (40, 60), (80, 20)] {
        fleet.apply(&fleet.config(weights));
    }
    let out = fleet.etcd.etcdctl(&["get", "--write-out", "json", "/"]);
    let revision = revision_of(&out).to_string();
    let compact = fleet.etcd.etcdctl(&["compact", &revision, "--physical"]);
    assert!(compact.status.success(), "{}", shown(&compact));
    fleet.etcd.restart(2);
    let body = common::wait_metrics(fleet.admin[0], |m| {
        m.contains("ringway_config_source_resyncs_total{reason=\"compacted\"} 1")
    });
    assert!(body.contains("ringway_config_source_connected 1"), "{body}");
    fleet.until_split_one((4, 1));
}

impl Fleet {
    /// [`Fleet::until_split`] for instance a alone.
    fn until_split_one(&self, split: (usize, usize)) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let seen = self.split(0, 5);
            if seen == split {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{seen:?}, expected {split:?}\n{}",
                self.instance(0).log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// etcd with its own CA (clients over TLS) and role-based access: with the
/// CA and the user's password file, apply, run and status work; with a
/// wrong password, the command says so and exits 4, writing nothing.
#[test]
fn a_fleet_over_tls_with_a_user_and_password() {
    let ports = Ports::new();
    let pki = tempfile::tempdir().expect("pki dir");
    let ca = common::tls::TestCa::new("etcd test CA");
    let files = ca
        .leaf(&["127.0.0.1", "localhost"])
        .write(&ca, pki.path(), "etcd");
    let ca_file = files.ca.clone();
    let mut etcd = Etcd::start_with(&ports, 3, Some(files));
    etcd.enable_auth("gateway", "gateway-secret", "/ringway/tls");
    let password = pki.path().join("password");
    std::fs::write(&password, "gateway-secret\n").expect("password file");
    let mut fleet = Fleet::on("tls", ports, etcd);
    fleet.scheme = "etcds";
    fleet.extra = vec![
        "--etcd-ca".into(),
        ca_file.display().to_string(),
        "--etcd-user".into(),
        "gateway".into(),
        "--etcd-password-file".into(),
        password.display().to_string(),
    ];
    fleet.apply(&fleet.config((80, 20)));
    fleet.start(0);
    if fleet.instances[0].is_none() {
        return;
    }
    fleet.until_split_one((4, 1));

    std::fs::write(&password, "wrong\n").expect("password file");
    let out = fleet.ringway(&["apply", "-f", &path_of(&fleet.config((20, 80)))]);
    assert_eq!(out.status.code(), Some(4), "{}", shown(&out));
    let said = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        said.contains("authentication") || said.contains("password"),
        "{}",
        shown(&out)
    );
    assert_eq!(fleet.split(0, 5), (4, 1), "nothing was written");

    // With another CA, the members' certificates are not trusted: the
    // command says so and exits 4.
    let stranger = common::tls::TestCa::new("another CA");
    let other_ca = pki.path().join("other-ca.pem");
    std::fs::write(&other_ca, stranger.pem()).expect("other CA");
    std::fs::write(&password, "gateway-secret\n").expect("password file");
    let mut untrusting = fleet.extra.clone();
    untrusting[1] = other_ca.display().to_string();
    let out = Command::new(common::ringway_bin())
        .args(["get", "--config-source", &fleet.url()])
        .args(&untrusting)
        .output()
        .expect("get");
    assert_eq!(out.status.code(), Some(4), "{}", shown(&out));
    let said = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        said.contains("certificate") || said.contains("tls"),
        "{}",
        shown(&out)
    );
}
