//! `EtcdSource` against a real three-member etcd (Debian's etcd 3.4, from
//! `tests/common/etcd.rs`): the first read, pushes, rejections reported in
//! the status key, compaction, fail-over, an outage, and a restart from the
//! cache. Resources are written with etcdctl or the etcd-client crate
//! directly (not with `ringway apply`). Every wait polls a condition with a
//! deadline.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Ports;
use common::etcd::Etcd;
use ringway::fleet::status::InstanceStatus;
use ringway::fleet::{EtcdArgs, EtcdSource, SourceConfig, Target};
use ringway::pipeline::Pipeline;
use ringway::source::{Applied, ConfigSource, Content, Snapshot};

const PREFIX: &str = "/ringway/test";

/// Polls `ok` until it holds, for at most `within`.
fn within(within: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn key(name: &str) -> String {
    format!("{PREFIX}/v1/config/ServiceEntry/default/{name}")
}

/// A valid ServiceEntry named `name` whose port is `port`.
fn entry(name: &str, port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: {name}\n  \
         namespace: default\nspec:\n  hosts:\n  - {name}.example.com\n  location: MESH_EXTERNAL\n  \
         resolution: STATIC\n  ports:\n  - number: {port}\n    name: tcp\n    protocol: TCP\n  \
         endpoints:\n  - address: 127.0.0.1\n"
    )
}

/// Puts `key`; returns the revision of the put.
fn put(etcd: &Etcd, key: &str, value: &str) -> u64 {
    let out = etcd.etcdctl(&["put", key, value, "-w", "json"]);
    assert!(
        out.status.success(),
        "etcdctl put: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["header"]["revision"].as_u64().unwrap()
}

/// The store's revision now.
fn revision(etcd: &Etcd) -> u64 {
    let out = etcd.etcdctl(&["get", "x", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["header"]["revision"].as_u64().unwrap()
}

/// One etcd-client call against every live member.
fn with_client<T>(
    etcd: &Etcd,
    call: impl AsyncFnOnce(etcd_client::Client) -> Result<T, etcd_client::Error>,
) -> T {
    let endpoints: Vec<String> = etcd
        .endpoints()
        .split(',')
        .map(|e| format!("http://{e}"))
        .collect();
    ringway::fleet::runtime().unwrap().block_on(async {
        let client = etcd_client::Client::connect(endpoints, None).await.unwrap();
        call(client).await.unwrap()
    })
}

/// Everything the sink was handed, answered as `run` would: built with
/// the real loader and compiler, published when valid.
#[derive(Default)]
struct Recorder {
    pushes: Mutex<Vec<Snapshot>>,
    /// The thread each push came on.
    threads: Mutex<Vec<String>>,
    /// How long each push takes (a slow compile).
    delay: Duration,
    generation: AtomicU64,
}

impl Recorder {
    fn sink(self: &Arc<Self>) -> ringway::source::Sink {
        let me = self.clone();
        Box::new(move |snapshot: Snapshot| {
            std::thread::sleep(me.delay);
            let build = Pipeline::default().build(&snapshot);
            me.pushes.lock().unwrap().push(snapshot);
            let thread = std::thread::current().name().unwrap_or("?").to_owned();
            me.threads.lock().unwrap().push(thread);
            match build.table {
                Some(_) => Applied::Published {
                    generation: me.generation.fetch_add(1, Ordering::SeqCst) + 2,
                },
                None => Applied::Rejected {
                    errors: build.diagnostics.errors().map(|d| d.to_string()).collect(),
                },
            }
        })
    }

    fn count(&self) -> usize {
        self.pushes.lock().unwrap().len()
    }

    /// The keys of push `i` (in order), each with its text.
    fn push(&self, i: usize) -> Vec<(String, String)> {
        keys_of(&self.pushes.lock().unwrap()[i])
    }
}

fn keys_of(snapshot: &Snapshot) -> Vec<(String, String)> {
    snapshot
        .documents
        .iter()
        .map(|d| {
            let text = match &d.content {
                Content::Text(t) => String::from_utf8_lossy(t).into_owned(),
                Content::Unread(diag) => format!("unread: {diag}"),
            };
            let origin = d.origin.to_string();
            let key = origin
                .trim_start_matches("etcd:")
                .rsplit_once('@')
                .map_or(origin.clone(), |(k, _)| k.to_owned());
            (key, text)
        })
        .collect()
}

fn config(etcd: &Etcd, instance: &str) -> SourceConfig {
    let target = Target::parse(&format!("etcd://{}{PREFIX}", etcd.endpoints())).unwrap();
    let mut config = SourceConfig::new(target, EtcdArgs::default(), instance.into());
    config.labels = "istio=ingressgateway".into();
    config.status_ttl = Duration::from_secs(4);
    config
}

/// RUST_LOG=ringway=debug shows what the sources did.
fn log() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A source started, its first snapshot taken and a sink set, as `run` does.
fn started(config: SourceConfig) -> (Arc<EtcdSource>, Snapshot, Arc<Recorder>) {
    started_with(config, Duration::ZERO)
}

/// As [`started`], with a sink that takes `delay` per push (a slow compile).
fn started_with(
    config: SourceConfig,
    delay: Duration,
) -> (Arc<EtcdSource>, Snapshot, Arc<Recorder>) {
    log();
    let source = EtcdSource::start(config).unwrap();
    let first = source.snapshot();
    let recorder = Arc::new(Recorder {
        delay,
        ..Recorder::default()
    });
    source.watch(recorder.sink());
    (source, first, recorder)
}

fn status(etcd: &Etcd, instance: &str) -> Option<InstanceStatus> {
    let out = etcd.etcdctl(&[
        "get",
        &format!("{PREFIX}/v1/status/{instance}"),
        "--print-value-only",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).ok()
}

/// A cluster holding the resource "a", watched by one instance.
struct Fleet {
    source: Arc<EtcdSource>,
    recorder: Arc<Recorder>,
    etcd: Etcd,
    _ports: Ports,
}

fn fleet(instance: &str) -> Fleet {
    let ports = Ports::new();
    let etcd = Etcd::start(&ports, 3);
    put(&etcd, &key("a"), &entry("a", 9001));
    let (source, _, recorder) = started(config(&etcd, instance));
    Fleet {
        source,
        recorder,
        etcd,
        _ports: ports,
    }
}

#[test]
fn the_first_read_is_the_store_in_creation_order_and_a_put_is_pushed_within_a_second() {
    let ports = Ports::new();
    let etcd = Etcd::start(&ports, 3);
    put(&etcd, &key("b"), &entry("b", 9001));
    put(&etcd, &key("a"), &entry("a", 9002));
    let (source, first, recorder) = started(config(&etcd, "first"));
    let keys: Vec<String> = keys_of(&first).into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, [key("b"), key("a")], "creation order, not key order");
    let state = source.state();
    assert!(state.connected && !state.stale, "{state:?}");
    assert_eq!(state.kind, "etcd");
    assert!(state.location.ends_with(PREFIX), "{}", state.location);

    let asked = Instant::now();
    put(&etcd, &key("c"), &entry("c", 9003));
    within(Duration::from_secs(1), "the put pushed", || {
        recorder.count() == 1
    });
    assert!(asked.elapsed() < Duration::from_secs(1));
    assert_eq!(recorder.push(0).len(), 3);
    // Never on the runtime's thread: the sink compiles and resolves names.
    assert_eq!(*recorder.threads.lock().unwrap(), ["config-sink"]);
    within(
        Duration::from_secs(5),
        "the status key says generation 2",
        || {
            status(&etcd, "first").is_some_and(|s| {
                s.generation == 2 && s.synced_revision >= s.applied_revision && !s.stale
            })
        },
    );
    let s = status(&etcd, "first").unwrap();
    assert_eq!(s.labels, "istio=ingressgateway");
    assert_eq!(s.table_hash.len(), 16);
    // Kept alive: the key outlives its lease's TTL (4 s) well past it.
    let watched = Instant::now() + Duration::from_secs(9);
    while Instant::now() < watched {
        assert!(
            status(&etcd, "first").is_some(),
            "the status key expired: its lease is not kept alive"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // A SIGHUP reads everything again and returns it; nothing new, so the
    // sink gets nothing more.
    let again = source.snapshot();
    assert_eq!(keys_of(&again).len(), 3);
    assert!(source.state().resyncs.contains(&("requested", 1)));
    assert_eq!(recorder.count(), 1);
    // Stopping revokes the lease: the instance leaves the fleet at once.
    source.stop();
    within(Duration::from_secs(3), "the status key gone", || {
        status(&etcd, "first").is_none()
    });
}

#[test]
fn one_txn_of_several_puts_is_one_push() {
    let Fleet {
        source: _source,
        recorder,
        etcd,
        _ports,
    } = fleet("txn");
    let puts: Vec<(String, String)> = (0..4)
        .map(|i| (key(&format!("t{i}")), entry(&format!("t{i}"), 9100 + i)))
        .collect();
    with_client(&etcd, async |mut c| {
        let ops: Vec<etcd_client::TxnOp> = puts
            .iter()
            .map(|(k, v)| etcd_client::TxnOp::put(k.as_str(), v.as_str(), None))
            .collect();
        c.txn(etcd_client::Txn::new().and_then(ops)).await
    });
    within(Duration::from_secs(2), "the txn pushed", || {
        recorder.count() >= 1
    });
    // A later put is pushed after whatever the txn caused: once it is
    // there, every push of the txn is too.
    let (marker, text) = (key("marker"), entry("marker", 9200));
    with_client(&etcd, async |mut c| {
        c.put(marker.as_str(), text.as_str(), None).await
    });
    within(Duration::from_secs(2), "the marker pushed", || {
        recorder
            .pushes
            .lock()
            .unwrap()
            .last()
            .is_some_and(|p| p.documents.len() == 6)
    });
    assert_eq!(recorder.count(), 2, "one txn, one push (then the marker's)");
    assert_eq!(recorder.push(0).len(), 5);
}

#[test]
fn a_bad_document_is_rejected_and_the_status_key_says_so() {
    let Fleet {
        source,
        recorder,
        etcd,
        _ports,
    } = fleet("bad");
    // The key names "b", the document defines "a": a key holds exactly the
    // resource it names.
    let bad = put(&etcd, &key("b"), &entry("a", 9002));
    within(Duration::from_secs(2), "the bad set pushed", || {
        recorder.count() == 1
    });
    within(
        Duration::from_secs(5),
        "the rejection in the status key",
        || status(&etcd, "bad").is_some_and(|s| s.rejected_revision == bad),
    );
    let s = status(&etcd, "bad").unwrap();
    assert!(s.rejected_revision > s.applied_revision, "{s:?}");
    assert!(
        !s.errors.is_empty() && s.errors.iter().any(|e| e.contains(&key("b"))),
        "{:?}",
        s.errors
    );
    assert_eq!(source.state().rejected, 1);
    // A fix is published and served.
    put(&etcd, &key("b"), &entry("b", 9002));
    within(Duration::from_secs(5), "the fix applied", || {
        status(&etcd, "bad").is_some_and(|s| s.applied_revision > bad && s.generation == 2)
    });
}

#[test]
fn compaction_past_the_instances_revision_resyncs_once_counted() {
    let ports = Ports::new();
    let mut etcd = Etcd::start(&ports, 3);
    put(&etcd, &key("a"), &entry("a", 9001));
    // This instance knows one member only: stopping it holds the instance back.
    let only = etcd.client_port(2);
    let mut config = config(&etcd, "compact");
    config.target = Target::parse(&format!("etcd://127.0.0.1:{only}{PREFIX}")).unwrap();
    let (source, _, recorder) = started(config);
    etcd.kill(2);
    common::until("a leader among the rest", || etcd.leader().is_some());
    within(Duration::from_secs(20), "the instance disconnected", || {
        !source.state().connected
    });
    for i in 0..3 {
        put(
            &etcd,
            &key(&format!("c{i}")),
            &entry(&format!("c{i}"), 9200 + i),
        );
    }
    let now = revision(&etcd);
    let out = etcd.etcdctl(&["compact", &now.to_string(), "--physical"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    etcd.restart(2);
    within(Duration::from_secs(15), "a compacted resync", || {
        source.state().resyncs.contains(&("compacted", 1))
    });
    within(Duration::from_secs(5), "the three puts in one push", || {
        recorder.count() == 1
    });
    assert_eq!(recorder.push(0).len(), 4);
    within(Duration::from_secs(5), "synced again", || {
        let s = source.state();
        s.connected && !s.stale && s.synced_revision >= now
    });
    assert_eq!(recorder.count(), 1, "no set published twice");
}

#[test]
fn killing_the_member_the_watch_is_on_moves_the_watch_to_another() {
    let Fleet {
        source: _source,
        recorder,
        mut etcd,
        _ports,
    } = fleet("failover");
    // A fresh source calls the first member first: its watch is there.
    etcd.kill(0);
    common::until("a leader among the rest", || etcd.leader().is_some());
    put(&etcd, &key("b"), &entry("b", 9002));
    within(
        Duration::from_secs(5),
        "the put pushed through another member",
        || recorder.count() == 1,
    );
    assert_eq!(recorder.push(0).len(), 2);
}

#[test]
fn without_quorum_the_source_is_stale_and_disconnected_and_catches_up_after() {
    let Fleet {
        source,
        recorder,
        mut etcd,
        _ports,
    } = fleet("outage");
    // Two of three gone: the last member has no leader and answers nothing.
    etcd.kill(1);
    etcd.kill(2);
    within(Duration::from_secs(20), "disconnected and stale", || {
        let s = source.state();
        !s.connected && s.stale
    });
    // A SIGHUP meanwhile serves the last set seen.
    let held = source.snapshot();
    assert_eq!(keys_of(&held).len(), 1);
    etcd.restart(1);
    put(&etcd, &key("b"), &entry("b", 9002));
    within(
        Duration::from_secs(15),
        "the change after the outage pushed",
        || recorder.count() >= 1,
    );
    within(Duration::from_secs(5), "connected, not stale", || {
        let s = source.state();
        s.connected && !s.stale
    });
    assert_eq!(recorder.push(recorder.count() - 1).len(), 2);
}

#[test]
fn a_restart_without_etcd_serves_the_cache_marked_stale_and_converges_after() {
    let ports = Ports::new();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache.json");
    let mut etcd = Etcd::start(&ports, 3);
    put(&etcd, &key("a"), &entry("a", 9001));
    let mut first = config(&etcd, "cached");
    first.cache = Some(cache.clone());
    let (source, _, recorder) = started(first.clone());
    // The first set is cached once it is served (the sink is set).
    within(Duration::from_secs(2), "the first set cached", || {
        std::fs::read_to_string(&cache).is_ok_and(|t| t.contains(&key("a")))
    });
    put(&etcd, &key("b"), &entry("b", 9002));
    within(Duration::from_secs(2), "pushed", || recorder.count() == 1);
    within(Duration::from_secs(2), "the push cached", || {
        std::fs::read_to_string(&cache).is_ok_and(|t| t.contains(&key("b")))
    });
    source.stop();

    // Restarted while its one member is down: the cache, stale.
    etcd.kill(2);
    let mut again = first;
    again.target =
        Target::parse(&format!("etcd://127.0.0.1:{}{PREFIX}", etcd.client_port(2))).unwrap();
    again.startup_timeout = Duration::from_millis(800);
    let (source, served, recorder) = started(again.clone());
    let keys: Vec<String> = keys_of(&served).into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, [key("a"), key("b")]);
    assert!(source.state().stale);

    // Without a cache either: a snapshot that says why, and fails to load.
    let mut bare = again.clone();
    bare.cache = Some(dir.path().join("none.json"));
    let nothing = EtcdSource::start(bare).unwrap().snapshot();
    let build = Pipeline::default().build(&nothing);
    assert!(build.table.is_none());
    let said = build
        .diagnostics
        .errors()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        said.contains("etcd did not answer") && said.contains("no cache"),
        "{said}"
    );

    // etcd back: synced, not stale, and nothing pushed (the store holds
    // what the cache did); a change after that is pushed.
    etcd.restart(2);
    within(Duration::from_secs(15), "connected and not stale", || {
        let s = source.state();
        s.connected && !s.stale
    });
    assert_eq!(recorder.count(), 0, "the cached set pushed again");
    put(&etcd, &key("c"), &entry("c", 9003));
    within(Duration::from_secs(5), "the change pushed", || {
        recorder.count() == 1
    });
    assert_eq!(recorder.push(0).len(), 3);
}

#[test]
fn an_emptied_store_without_its_commit_key_is_lost_not_served() {
    let Fleet {
        source,
        recorder,
        etcd,
        _ports,
    } = fleet("lost");
    let config_prefix = format!("{PREFIX}/v1/config/");
    let out = etcd.etcdctl(&["del", "--prefix", &config_prefix]);
    assert!(out.status.success());
    within(Duration::from_secs(5), "the loss counted", || {
        source.state().errors.contains(&("lost", 1))
    });
    assert_eq!(
        recorder.count(),
        0,
        "an emptied store without its fence was served"
    );
    // An apply that deletes everything writes the fence in the same txn:
    // the empty set is served.
    put(&etcd, &key("b"), &entry("b", 9002));
    within(Duration::from_secs(5), "written again: pushed", || {
        recorder.count() == 1
    });
    let commit = format!("{PREFIX}/v1/commit");
    let b = key("b");
    with_client(&etcd, async |mut c| {
        c.txn(etcd_client::Txn::new().and_then([
            etcd_client::TxnOp::delete(b.as_str(), None),
            etcd_client::TxnOp::put(commit.as_str(), "{}", None),
        ]))
        .await
    });
    within(Duration::from_secs(5), "the empty set pushed", || {
        recorder.count() == 2
    });
    assert!(recorder.push(1).is_empty());
}

#[test]
fn a_burst_while_the_sink_is_busy_coalesces_and_the_newest_set_wins() {
    let ports = Ports::new();
    let etcd = Etcd::start(&ports, 3);
    put(&etcd, &key("a"), &entry("a", 9001));
    let (_source, _, recorder) = started_with(config(&etcd, "burst"), Duration::from_millis(700));
    for i in 0..5 {
        put(
            &etcd,
            &key(&format!("k{i}")),
            &entry(&format!("k{i}"), 9300 + i),
        );
    }
    within(Duration::from_secs(10), "the newest set pushed", || {
        let n = recorder.count();
        n > 0 && recorder.push(n - 1).len() == 6
    });
    assert!(
        recorder.count() < 5,
        "{} pushes for a burst of 5 puts",
        recorder.count()
    );
}

#[test]
fn etcd_answering_late_within_the_startup_timeout_is_waited_for() {
    let ports = Ports::new();
    let mut etcd = Etcd::start(&ports, 3);
    put(&etcd, &key("a"), &entry("a", 9001));
    let mut late = config(&etcd, "late");
    late.target =
        Target::parse(&format!("etcd://127.0.0.1:{}{PREFIX}", etcd.client_port(2))).unwrap();
    late.startup_timeout = Duration::from_secs(30);
    etcd.kill(2);
    log();
    let source = EtcdSource::start(late).unwrap();
    let waiting = {
        let source = source.clone();
        std::thread::spawn(move || source.snapshot())
    };
    etcd.restart(2);
    let first = waiting.join().unwrap();
    let keys: Vec<String> = keys_of(&first).into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, [key("a")]);
    let state = source.state();
    assert!(state.connected && !state.stale, "{state:?}");
    source.stop();
}
