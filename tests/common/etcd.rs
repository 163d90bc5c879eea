//! A real etcd cluster on 127.0.0.1 for tests (Debian's `etcd-server`,
//! 3.4): each member with its client and peer ports held for it (etcd binds
//! with SO_REUSEADDR, as the admin reservation allows), its data directory
//! in a temporary directory, started, killed and restarted by PID, all
//! killed when the value is dropped. `etcdctl` (Debian's `etcd-client`)
//! answers for the tests. Neither is ever skipped: a missing binary fails
//! the test with the package to install (`.ci/run` installs both).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::Ports;

/// How long a cluster may take to elect a leader and answer.
const STARTUP: Duration = Duration::from_secs(30);

struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

pub struct Etcd {
    members: Vec<Member>,
    dir: tempfile::TempDir,
    initial_cluster: String,
    /// Client connections over TLS with this server certificate and key,
    /// signed by the CA in `ca` (peers stay on plain HTTP: only what
    /// ringway sees is under test).
    tls: Option<super::tls::PemFiles>,
    /// `user:password` for etcdctl once auth is enabled.
    root: Option<String>,
}

fn binary(name: &str, package: &str) -> PathBuf {
    let path = Path::new("/usr/bin").join(name);
    assert!(
        path.exists(),
        "{name} is missing: install Debian's {package} (apt-get install {package}; .ci/run does)"
    );
    path
}

impl Etcd {
    /// A cluster of `n` members, started and healthy (a leader elected,
    /// every member answering).
    pub fn start(ports: &Ports, n: usize) -> Etcd {
        Self::start_with(ports, n, None)
    }

    /// [`Etcd::start`] serving clients over TLS with `tls` (a certificate
    /// for 127.0.0.1 and the CA that signed it).
    pub fn start_with(ports: &Ports, n: usize, tls: Option<super::tls::PemFiles>) -> Etcd {
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client: ports.admin(),
                peer: ports.admin(),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut etcd = Etcd {
            members,
            dir: tempfile::tempdir().expect("tempdir"),
            initial_cluster,
            tls,
            root: None,
        };
        for i in 0..n {
            etcd.spawn(i);
        }
        etcd.wait_healthy();
        etcd
    }

    fn spawn(&mut self, i: usize) {
        let m = &self.members[i];
        let data = self.dir.path().join(&m.name);
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", m.client);
        let peer = format!("http://127.0.0.1:{}", m.peer);
        let log = std::fs::File::create(self.dir.path().join(format!("{}.log", m.name)))
            .expect("etcd log file");
        let mut cmd = Command::new(binary("etcd", "etcd-server"));
        if let Some(tls) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&tls.cert)
                .arg("--key-file")
                .arg(&tls.key);
        }
        let child = cmd
            .args(["--name", &m.name, "--data-dir"])
            .arg(&data)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "ringway-test"])
            // Fast elections: the tests kill leaders.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.members[i].child = Some(child);
    }

    /// The client endpoints of the live members, `127.0.0.1:P,...`.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| format!("127.0.0.1:{}", m.client))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Member `i`'s client port.
    pub fn client_port(&self, i: usize) -> u16 {
        self.members[i].client
    }

    /// `etcdctl` against the live members (as root once auth is on).
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(binary("etcdctl", "etcd-client"));
        cmd.env("ETCDCTL_API", "3").args([
            "--endpoints",
            &self.endpoints(),
            "--command-timeout",
            "5s",
        ]);
        if let Some(tls) = &self.tls {
            cmd.arg("--cacert").arg(&tls.ca);
        }
        if let Some(root) = &self.root {
            cmd.args(["--user", root]);
        }
        cmd.args(args).output().expect("run etcdctl")
    }

    /// Turns on etcd's role-based access: a `root` user, and `user` with
    /// `password` allowed to read and write everything under `prefix`
    /// (what a gateway and an operator need). etcdctl goes on as root.
    pub fn enable_auth(&mut self, user: &str, password: &str, prefix: &str) {
        let root = "root:root-secret";
        let steps: [&[&str]; 6] = [
            &["user", "add", root],
            &["user", "grant-role", "root", "root"],
            &["role", "add", "fleet"],
            &[
                "role",
                "grant-permission",
                "--prefix=true",
                "fleet",
                "readwrite",
                prefix,
            ],
            &["user", "add", &format!("{user}:{password}")],
            &["user", "grant-role", user, "fleet"],
        ];
        for step in steps {
            let out = self.etcdctl(step);
            assert!(
                out.status.success(),
                "etcdctl {step:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let out = self.etcdctl(&["auth", "enable"]);
        assert!(
            out.status.success(),
            "auth enable: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.root = Some(root.to_owned());
    }

    /// The index of the member that is the leader now, as the members say.
    pub fn leader(&self) -> Option<usize> {
        let out = self.etcdctl(&["endpoint", "status", "-w", "json"]);
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let leader = status
            .as_array()?
            .iter()
            .find_map(|s| s["Status"]["leader"].as_u64())?;
        status.as_array()?.iter().find_map(|s| {
            (s["Status"]["header"]["member_id"].as_u64() == Some(leader))
                .then(|| s["Endpoint"].as_str())
                .flatten()
                .and_then(|e| e.rsplit(':').next()?.parse::<u16>().ok())
                .and_then(|port| self.members.iter().position(|m| m.client == port))
        })
    }

    /// Kill member `i` (SIGKILL, by PID) and reap it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start member `i` again on its data directory and ports, and wait
    /// until the cluster answers through every live member.
    pub fn restart(&mut self, i: usize) {
        if self.members[i].child.is_none() {
            self.spawn(i);
        }
        self.wait_healthy();
    }

    /// Start every member that is down, together (one alone has no
    /// quorum after a whole-cluster outage), and wait until the cluster
    /// answers.
    pub fn restart_all(&mut self) {
        for i in 0..self.members.len() {
            if self.members[i].child.is_none() {
                self.spawn(i);
            }
        }
        self.wait_healthy();
    }

    /// Until every live member answers and a leader is elected.
    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + STARTUP;
        loop {
            let out = self.etcdctl(&["endpoint", "health"]);
            if out.status.success() && self.leader().is_some() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not become healthy: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The members' logs, for a failure report.
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                let path = self.dir.path().join(format!("{}.log", m.name));
                let text = std::fs::read_to_string(path).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(20).collect();
                format!(
                    "--- {} ---\n{}",
                    m.name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
