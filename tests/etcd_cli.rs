//! `ringway apply|delete|get|status` against a real three-member etcd
//! cluster on 127.0.0.1 (tests/common/etcd.rs): what each command writes,
//! refuses and prints, and its exit status (0 ok, 1 invalid or not
//! converged, 3 conflict, 4 etcd unreachable, 5 written but not converged
//! within --wait).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::etcd::Etcd;
use common::{ConfigDir, Ports, examples};

/// A cluster and the prefix the tests write under.
struct Fleet {
    etcd: Etcd,
    _ports: Ports,
}

/// What a command did.
#[derive(Debug)]
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

const PREFIX: &str = "/ringway/test";

impl Fleet {
    fn start() -> Fleet {
        let ports = Ports::new();
        let etcd = Etcd::start(&ports, 3);
        Fleet {
            etcd,
            _ports: ports,
        }
    }

    fn source(&self) -> String {
        format!("etcd://{}{PREFIX}", self.etcd.endpoints())
    }

    /// `ringway <command> --config-source ... <args>`.
    fn command(&self, command: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringway"));
        cmd.arg(command)
            .args(["--config-source", &self.source()])
            .args(args);
        cmd
    }

    fn ringway(&self, command: &str, args: &[&str]) -> Ran {
        ran(self.command(command, args))
    }

    /// The store's revision now.
    fn revision(&self) -> u64 {
        let out = self.etcdctl(&["get", "/", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["header"]["revision"].as_u64().unwrap()
    }

    /// Every key under the prefix with its mod revision.
    fn keys(&self) -> Vec<(String, u64)> {
        let out = self.etcdctl(&["get", PREFIX, "--prefix", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let Some(kvs) = v["kvs"].as_array() else {
            return Vec::new();
        };
        kvs.iter()
            .map(|kv| {
                (
                    String::from_utf8(decode64(kv["key"].as_str().unwrap())).unwrap(),
                    kv["mod_revision"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    fn etcdctl(&self, args: &[&str]) -> String {
        let out = self.etcdctl_raw(args);
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn etcdctl_raw(&self, args: &[&str]) -> std::process::Output {
        self.etcd.etcdctl(args)
    }

    /// Registers a fake instance the way `ringway run` does (a JSON
    /// InstanceStatus under status/), without a lease.
    fn register(&self, instance: &str, applied: u64, synced: u64) {
        self.register_version(instance, applied, synced, env!("CARGO_PKG_VERSION"));
    }

    fn register_version(&self, instance: &str, applied: u64, synced: u64, version: &str) {
        self.register_full(instance, applied, synced, version, "istio=ingressgateway");
    }

    fn register_full(
        &self,
        instance: &str,
        applied: u64,
        synced: u64,
        version: &str,
        labels: &str,
    ) {
        let status = serde_json::json!({
            "instance": instance, "host": "test-host", "pid": 1,
            "version": version, "labels": labels,
            "started": "2026-01-01T00:00:00Z", "generation": 2,
            "applied_revision": applied, "synced_revision": synced,
            "table_hash": "h1", "stale": false, "last_sync": "2026-01-01T00:00:00Z",
        });
        let key = format!("{PREFIX}/v1/status/{instance}");
        self.etcdctl(&["put", &key, &status.to_string()]);
    }
}

fn ran(mut cmd: Command) -> Ran {
    let out = cmd.output().unwrap();
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// etcdctl's JSON gives keys and values in base64.
fn decode64(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = ALPHABET.iter().position(|a| *a == c).unwrap();
        bits = (bits << 6) | u32::try_from(v).unwrap();
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push(u8::try_from((bits >> n) & 0xff).unwrap());
        }
    }
    out
}

fn tcp_echo() -> PathBuf {
    examples().join("tcp-echo")
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The tcp-echo example with the v2 subset's weight changed (a valid
/// change of one resource).
fn weights(dir: &ConfigDir, name: &str, v1: u32, v2: u32) -> PathBuf {
    let text = std::fs::read_to_string(tcp_echo().join("20-tcp-echo-20-v2.yaml"))
        .unwrap()
        .replace("weight: 80", &format!("weight: {v1}"))
        .replace("weight: 20", &format!("weight: {v2}"));
    let file = dir.path().join(name);
    std::fs::write(&file, text).unwrap();
    file
}

/// apply writes one key per resource and the commit key in one revision;
/// the same apply again writes nothing; `get` prints what was applied, in
/// a form `apply` reads back unchanged; a resource in two files: the later
/// wins.
#[test]
fn apply_writes_one_revision_and_a_second_apply_is_unchanged() {
    let fleet = Fleet::start();
    let dir = tcp_echo();
    let first = fleet.ringway("apply", &["-f", path(&dir)]);
    assert_eq!(first.code, 0, "{first:?}");
    let keys = fleet.keys();
    let names: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "/ringway/test/v1/commit",
            "/ringway/test/v1/config/DestinationRule/default/tcp-echo-destination",
            "/ringway/test/v1/config/Gateway/default/tcp-echo-gateway",
            "/ringway/test/v1/config/ServiceEntry/default/tcp-echo",
            "/ringway/test/v1/config/VirtualService/default/tcp-echo",
        ]
    );
    let revision = keys[0].1;
    assert!(keys.iter().all(|(_, r)| *r == revision), "{keys:?}");
    assert!(
        first.stdout.contains(&format!(
            "applied at revision {revision} (4 changed, 0 deleted)"
        )),
        "{first:?}"
    );
    // The VirtualService of the later file (80/20) won over the earlier one.
    let vs = fleet.ringway("get", &["VirtualService/default/tcp-echo", "-o", "json"]);
    assert_eq!(vs.code, 0, "{vs:?}");
    let docs: serde_json::Value = serde_json::from_str(&vs.stdout).unwrap();
    let text = docs[0]["text"].as_str().unwrap();
    assert_eq!(
        text,
        std::fs::read_to_string(dir.join("20-tcp-echo-20-v2.yaml")).unwrap()
    );
    assert_eq!(docs[0]["create_revision"], revision);

    let again = fleet.ringway("apply", &["-f", path(&dir)]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(
        again
            .stdout
            .contains(&format!("unchanged (revision {revision})")),
        "{again:?}"
    );
    assert_eq!(fleet.revision(), revision, "an unchanged apply wrote");

    // get -o yaml reads back as the same texts: applying it changes nothing.
    let yaml = fleet.ringway("get", &["-o", "yaml"]);
    assert_eq!(yaml.code, 0, "{yaml:?}");
    assert_eq!(
        yaml.stdout
            .matches("--- # /ringway/test/v1/config/")
            .count(),
        4
    );
    let saved = ConfigDir::new().file("got.yaml", &yaml.stdout);
    let back = fleet.ringway("apply", &["-f", path(&saved.path().join("got.yaml"))]);
    assert!(back.stdout.contains("unchanged"), "{back:?}");
    let json = fleet.ringway("get", &["-o", "json"]);
    let all: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 4);
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .all(|d| yaml.stdout.contains(d["text"].as_str().unwrap()))
    );

    let missing = fleet.ringway("get", &["Gateway/default/nope"]);
    assert_eq!(missing.code, 1, "{missing:?}");
    assert!(
        missing
            .stderr
            .contains("Gateway/default/nope is not in the store")
    );
}

/// An invalid result writes nothing (exit 1, the diagnostic names the
/// operator's file and line); delete and --prune validate and write in one
/// revision; a change too large for one transaction is refused.
#[test]
fn invalid_sets_write_nothing_and_deletes_are_validated() {
    let fleet = Fleet::start();
    assert_eq!(fleet.ringway("apply", &["-f", path(&tcp_echo())]).code, 0);
    let before = fleet.revision();
    let dir = ConfigDir::new();
    let text = std::fs::read_to_string(tcp_echo().join("20-tcp-echo-20-v2.yaml"))
        .unwrap()
        .replace("subset: v2", "subset: v3");
    let dir = dir.file("bad.yaml", &text);
    let bad = fleet.ringway("apply", &["-f", path(&dir.path().join("bad.yaml"))]);
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(
        bad.stderr
            .contains("bad.yaml:38: VirtualService default/tcp-echo")
            && bad.stderr.contains("(declared: v1, v2)")
            && bad.stderr.contains("nothing written"),
        "{bad:?}"
    );
    assert_eq!(fleet.revision(), before, "an invalid apply wrote");

    // A bad document written behind apply's back: every apply is refused,
    // naming the key and its revision, until one replaces it.
    let key = "/ringway/test/v1/config/VirtualService/default/tcp-echo";
    fleet.etcdctl(&["put", key, &text]);
    let raw = fleet.revision();
    let other = ConfigDir::new().example(
        "tcp-echo/00-service-entry.yaml",
        "se.yaml",
        &[("19000", "19002".to_owned())],
    );
    let refused = fleet.ringway("apply", &["-f", path(other.path())]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains(&format!(
            "etcd:{key}@{raw}:38: VirtualService default/tcp-echo"
        )),
        "{refused:?}"
    );
    let fixed = fleet.ringway("apply", &["-f", path(&tcp_echo())]);
    assert_eq!(fixed.code, 0, "{fixed:?}");
    assert!(fixed.stdout.contains("(1 changed, 0 deleted)"), "{fixed:?}");
    let before = fleet.revision();

    // Deleting the DestinationRule would leave the subsets undeclared.
    let dr = fleet.ringway("delete", &["DestinationRule/default/tcp-echo-destination"]);
    assert_eq!(dr.code, 1, "{dr:?}");
    assert!(
        dr.stderr
            .contains("etcd:/ringway/test/v1/config/VirtualService/default/tcp-echo@")
    );
    let nope = fleet.ringway("delete", &["VirtualService/default/nope"]);
    assert_eq!(nope.code, 1, "{nope:?}");
    assert!(
        nope.stderr.contains("VirtualService/default/nope"),
        "{nope:?}"
    );
    assert_eq!(fleet.revision(), before);

    // One resource per transaction op: 4 changes + the commit key > 3.
    let limits = ConfigDir::new();
    let wide = weights(&limits, "vs.yaml", 50, 50);
    let big = fleet.ringway(
        "apply",
        &[
            "-f",
            path(&tcp_echo()),
            "-f",
            path(&wide),
            "--prune",
            "--max-txn-ops",
            "1",
        ],
    );
    assert_eq!(big.code, 1, "{big:?}");
    assert!(big.stderr.contains("--max-txn-ops"), "{big:?}");

    // --prune: the files are the whole set; the Gateway, the VirtualService
    // and their DestinationRule go, the ServiceEntry stays, in one revision.
    let only_se = ConfigDir::new().example("tcp-echo/00-service-entry.yaml", "se.yaml", &[]);
    let dry = fleet.ringway(
        "apply",
        &["-f", path(only_se.path()), "--prune", "--dry-run"],
    );
    assert_eq!(dry.code, 0, "{dry:?}");
    assert_eq!(dry.stdout.matches("would delete").count(), 3, "{dry:?}");
    assert_eq!(fleet.revision(), before, "a dry run wrote");
    let pruned = fleet.ringway("apply", &["-f", path(only_se.path()), "--prune"]);
    assert_eq!(pruned.code, 0, "{pruned:?}");
    assert!(
        pruned.stdout.contains("(0 changed, 3 deleted)"),
        "{pruned:?}"
    );
    let left: Vec<String> = fleet.keys().into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        left,
        [
            "/ringway/test/v1/commit",
            "/ringway/test/v1/config/ServiceEntry/default/tcp-echo"
        ]
    );
    let gone = fleet.ringway("delete", &["ServiceEntry/default/tcp-echo"]);
    assert_eq!(gone.code, 0, "{gone:?}");
    assert_eq!(fleet.keys().len(), 1);
}

/// Two applies read the same revision; the one that writes second finds
/// the fence moved: exit 3, nothing written.
#[test]
fn two_applies_from_one_base_one_conflicts() {
    let fleet = Fleet::start();
    assert_eq!(fleet.ringway("apply", &["-f", path(&tcp_echo())]).code, 0);
    let dir = ConfigDir::new();
    let (a, b) = (
        weights(&dir, "a.yaml", 70, 30),
        weights(&dir, "b.yaml", 60, 40),
    );
    let hold = tempfile::tempdir().unwrap();
    let mut held = fleet.command("apply", &["-f", path(&a)]);
    held.env("RINGWAY_TEST_HOLD_TXN", hold.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let first = held.spawn().unwrap();
    common::until("the first apply to have read the store", || {
        hold.path().join("held").exists()
    });
    let second = fleet.ringway("apply", &["-f", path(&b), "--message", "the other one"]);
    assert_eq!(second.code, 0, "{second:?}");
    std::fs::write(hold.path().join("go"), b"").unwrap();
    let out = first.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("conflict: the configuration changed since revision")
            && stderr.contains("nothing written; re-run"),
        "{stderr}"
    );
    let vs = fleet.ringway("get", &["VirtualService/default/tcp-echo"]);
    assert!(vs.stdout.contains("weight: 60"), "{vs:?}");
}

/// `status` judges registered instances against the store's revision.
#[test]
fn status_reports_convergence_of_registered_instances() {
    let fleet = Fleet::start();
    let none = fleet.ringway("status", &[]);
    assert_eq!(none.code, 1, "{none:?}");
    assert!(none.stderr.contains("no instance registered"), "{none:?}");

    assert_eq!(fleet.ringway("apply", &["-f", path(&tcp_echo())]).code, 0);
    let revision = fleet.keys()[0].1;
    fleet.register("gw-a", revision, revision);
    let ok = fleet.ringway("status", &[]);
    assert_eq!(ok.code, 0, "{ok:?}");
    assert!(ok.stdout.contains("gw-a: converged;"), "{ok:?}");

    fleet.register("gw-b", revision - 1, revision - 1);
    let behind = fleet.ringway("status", &["-o", "json"]);
    assert_eq!(behind.code, 1, "{behind:?}");
    let report: serde_json::Value = serde_json::from_str(&behind.stdout).unwrap();
    assert_eq!(report["converged"], false);
    assert_eq!(report["instances"][0]["converged"], true);
    assert!(
        report["instances"][1]["why"]
            .as_str()
            .unwrap()
            .contains(&format!("synced to revision {}", revision - 1))
    );
    let waited = fleet.ringway("status", &["--wait", "300ms"]);
    assert_eq!(waited.code, 1, "{waited:?}");

    // An apply that waits for a fleet that does not follow: written, exit 5.
    let dir = ConfigDir::new();
    let change = weights(&dir, "w.yaml", 90, 10);
    let wait = fleet.ringway("apply", &["-f", path(&change), "--wait", "300ms"]);
    assert_eq!(wait.code, 5, "{wait:?}");
    assert!(wait.stdout.contains("applied at revision"), "{wait:?}");
    assert!(wait.stdout.contains("gw-b: behind"), "{wait:?}");

    // A fleet that keeps up: --wait returns as soon as it has converged.
    fleet.etcdctl(&["del", &format!("{PREFIX}/v1/status/"), "--prefix"]);
    fleet.register("gw-fast", u64::MAX / 2, u64::MAX / 2);
    let change = weights(&dir, "w2.yaml", 95, 5);
    let quick = fleet.ringway("apply", &["-f", path(&change), "--wait", "5s"]);
    assert_eq!(quick.code, 0, "{quick:?}");
    assert!(quick.stdout.contains("gw-fast: converged"), "{quick:?}");

    // An instance of another version may judge differently: said, not fatal.
    fleet.register_version("gw-c", 0, 0, "0.0.0-old");
    let skew = ConfigDir::new();
    let change = weights(&skew, "w.yaml", 85, 15);
    let warned = fleet.ringway("apply", &["-f", path(&change)]);
    assert_eq!(warned.code, 0, "{warned:?}");
    assert!(
        warned
            .stderr
            .contains("instance gw-c runs ringway 0.0.0-old"),
        "{warned:?}"
    );
}

/// The set is compiled for every label set the fleet registered: an
/// instance whose labels no Gateway selects is told about (it would serve
/// nothing), the others are not; and a dead member in --config-source is
/// passed over.
#[test]
fn every_registered_label_set_is_compiled_and_a_dead_member_is_passed_over() {
    let mut fleet = Fleet::start();
    fleet.register_full(
        "gw-a",
        0,
        0,
        env!("CARGO_PKG_VERSION"),
        "istio=ingressgateway",
    );
    fleet.register_full("gw-z", 0, 0, env!("CARGO_PKG_VERSION"), "istio=other");
    let all_members = fleet.source();
    let applied = fleet.ringway("apply", &["-f", path(&tcp_echo())]);
    assert_eq!(applied.code, 0, "{applied:?}");
    assert!(
        applied
            .stderr
            .contains("for labels istio=other (instances gw-z):"),
        "{applied:?}"
    );
    assert!(
        applied
            .stderr
            .contains("the configuration opens no listener"),
        "{applied:?}"
    );
    assert!(!applied.stderr.contains("gw-a"), "{applied:?}");

    // The first member listed is gone: the next one answers.
    fleet.etcd.kill(0);
    common::until("a leader among the members left", || {
        fleet.etcd.leader().is_some_and(|l| l != 0)
    });
    let dir = ConfigDir::new();
    let change = weights(&dir, "w.yaml", 50, 50);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringway"));
    cmd.args([
        "apply",
        "--config-source",
        &all_members,
        "-f",
        path(&change),
    ]);
    let after = ran(cmd);
    assert_eq!(after.code, 0, "{after:?}");
    assert!(after.stdout.contains("(1 changed, 0 deleted)"), "{after:?}");
}

/// No member answers: exit 4, saying which members were tried.
#[test]
fn etcd_down_is_exit_4() {
    let ports = Ports::new();
    let closed = ports.closed();
    for command in ["apply", "get", "status", "delete"] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringway"));
        cmd.arg(command)
            .args(["--config-source", &format!("etcd://127.0.0.1:{closed}/p")]);
        match command {
            "apply" => cmd.args(["-f", path(&tcp_echo())]),
            "delete" => cmd.arg("Gateway/default/g"),
            _ => &mut cmd,
        };
        let out = ran(cmd);
        assert_eq!(out.code, 4, "{command}: {out:?}");
        assert!(
            out.stderr.contains(&format!(
                "etcd unreachable: get failed on every member (http://127.0.0.1:{closed})"
            )),
            "{command}: {out:?}"
        );
    }
}
