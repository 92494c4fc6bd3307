//! Real `nats-server` processes for the tests: a single server or a
//! cluster with routes, each with JetStream, its own store dir and a
//! config file, on free loopback ports. Cluster nodes run with
//! `sync_interval: always`, so that an acknowledgement follows an fsync on
//! a majority. Processes are killed when the value is dropped.

#![allow(dead_code)] // Each test file uses a part.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use segwal_conformance::Backend;
use segwal_nats::{NatsWal, NatsWalConfig, ServerSync};

/// Held by tests that run a 3-node cluster, one at a time: three of them
/// at once on a 2-core machine slow elections past the tests' patience.
pub(crate) static CLUSTER_TESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The `nats-server` binary the tests run: `$NATS_SERVER` (which
/// `cargo xtask test` sets to the pinned server it provisions), else the
/// project-local copy `cargo xtask test` leaves in `.tools/bin`. There is
/// no skipping: without a server the test fails, naming the command that
/// provides one.
pub(crate) fn nats_server_binary() -> PathBuf {
    if let Some(binary) = std::env::var_os("NATS_SERVER") {
        let binary = PathBuf::from(binary);
        assert!(
            binary.is_file(),
            "NATS_SERVER={} is not a file; unset it and run `cargo xtask test`, which provisions the pinned nats-server",
            binary.display()
        );
        return binary;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the crate is two levels below the workspace root");
    let local = root.join(".tools/bin/nats-server");
    assert!(
        local.is_file(),
        "nats-server not found (neither $NATS_SERVER nor {}): run `cargo xtask test`, which provisions the pinned nats-server and runs every test",
        local.display()
    );
    local
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// One server of a [`NatsServers`].
struct Node {
    config: PathBuf,
    port: u16,
    http_port: u16,
    log: PathBuf,
    child: Option<Child>,
}

/// Running `nats-server` processes: one, or a cluster.
pub(crate) struct NatsServers {
    binary: PathBuf,
    dir: tempfile::TempDir,
    nodes: Vec<Node>,
}

impl NatsServers {
    /// One server with JetStream (its default `sync_interval`).
    pub(crate) async fn single() -> NatsServers {
        NatsServers::start(1, "").await
    }

    /// One server with JetStream's `sync_interval` set to `interval` (such
    /// as `1s`): its periodic pass, which also compacts blocks more than
    /// half deleted, runs that often.
    pub(crate) async fn single_with_sync_interval(interval: &str) -> NatsServers {
        NatsServers::start(1, &format!("sync_interval: {interval}")).await
    }

    /// A cluster of `n` servers (routes between all of them), every one
    /// with `sync_interval: always`.
    pub(crate) async fn cluster(n: usize) -> NatsServers {
        NatsServers::start(n, "sync_interval: always").await
    }

    /// `n` servers, each with `sync` in its `jetstream` block. A cluster
    /// that does not become ready (seen once on a loaded 2-core machine:
    /// "no suitable peers for placement" for 90 s) is killed and started
    /// again, once, on fresh ports and store dirs.
    async fn start(n: usize, sync: &str) -> NatsServers {
        let first = NatsServers::spawn_all(n, sync);
        let failure = match first.wait_ready(n).await {
            Ok(()) => return first,
            Err(failure) => failure,
        };
        drop(first);
        eprintln!("nats-server did not become ready; starting it again on fresh ports: {failure}");
        let second = NatsServers::spawn_all(n, sync);
        if let Err(failure) = second.wait_ready(n).await {
            panic!("nats-server did not become ready, twice: {failure}");
        }
        second
    }

    /// Writes the config files of `n` servers on free ports and starts
    /// them.
    fn spawn_all(n: usize, sync: &str) -> NatsServers {
        let binary = nats_server_binary();
        let dir = tempfile::tempdir().expect("a temporary dir");
        let ports: Vec<(u16, u16, u16)> = (0..n)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let nodes = (0..n)
            .map(|i| {
                let (port, cluster_port, http_port) = ports[i];
                let store = dir.path().join(format!("n{i}"));
                let mut text = format!(
                    "server_name: n{i}\nlisten: \"127.0.0.1:{port}\"\nhttp: \"127.0.0.1:{http_port}\"\n\
                     jetstream {{\n  store_dir: \"{}\"\n  {sync}\n}}\n",
                    store.display()
                );
                if n > 1 {
                    let routes: Vec<String> = ports
                        .iter()
                        .enumerate()
                        .filter(|&(j, _)| j != i)
                        .map(|(_, (_, c, _))| format!("\"nats://127.0.0.1:{c}\""))
                        .collect();
                    text.push_str(&format!(
                        "cluster {{\n  name: segwal-test\n  listen: \"127.0.0.1:{cluster_port}\"\n  \
                         routes: [{}]\n}}\n",
                        routes.join(", ")
                    ));
                }
                let config = dir.path().join(format!("n{i}.conf"));
                std::fs::write(&config, text).expect("a config file");
                Node {
                    config,
                    port,
                    http_port,
                    log: dir.path().join(format!("n{i}.log")),
                    child: None,
                }
            })
            .collect();
        let mut servers = NatsServers { binary, dir, nodes };
        for i in 0..n {
            servers.spawn(i);
        }
        servers
    }

    /// Server `i`'s monitoring endpoint `path` (`/varz`, `/jsz`), as JSON.
    pub(crate) fn monitor(&self, i: usize, path: &str) -> serde_json::Value {
        use std::io::{Read, Write};
        let mut socket = std::net::TcpStream::connect(("127.0.0.1", self.nodes[i].http_port))
            .expect("the monitoring port");
        write!(socket, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        let mut response = String::new();
        socket.read_to_string(&mut response).unwrap();
        let body = response.split_once("\r\n\r\n").expect("an HTTP response").1;
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }

    /// Resident memory of server `i`'s process, in bytes (from /proc).
    pub(crate) fn resident_bytes(&self, i: usize) -> u64 {
        let pid = self.nodes[i].child.as_ref().expect("running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS");
        kib * 1024
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "node {i} is running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("a log file");
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("a log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        node.child = Some(child);
    }

    /// Every server's client URL.
    pub(crate) fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect()
    }

    /// The store dir of all servers.
    pub(crate) fn store_dir(&self) -> &Path {
        self.dir.path()
    }

    /// `kill -9` of server `i`.
    pub(crate) fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts server `i` again, on its ports and store dir, and waits
    /// until it accepts clients (not for JetStream to settle: the tests
    /// wait for their writes to go through).
    pub(crate) async fn restart(&mut self, i: usize) {
        self.spawn(i);
        let url = format!("nats://127.0.0.1:{}", self.nodes[i].port);
        let deadline = Instant::now() + Duration::from_secs(30);
        while async_nats::connect(&url).await.is_err() {
            assert!(Instant::now() < deadline, "node {i} did not restart");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until JetStream can create (and delete) a stream with
    /// `replicas` replicas: servers up, routes formed, a meta leader. On
    /// failure, says why: the last error, each server's routes, its log.
    async fn wait_ready(&self, replicas: usize) -> Result<(), String> {
        // Generous: a loaded 2-core CI machine once took over 30 s.
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut last_error = String::new();
        while Instant::now() < deadline {
            match self.probe(replicas).await {
                Ok(()) => return Ok(()),
                Err(e) => last_error = e,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut report = format!("{last_error}\n");
        for (i, node) in self.nodes.iter().enumerate() {
            let routes = std::panic::catch_unwind(|| self.monitor(i, "/routez"))
                .map(|r| r["num_routes"].to_string())
                .unwrap_or_else(|_| "unknown".into());
            let log = std::fs::read_to_string(&node.log).unwrap_or_default();
            report.push_str(&format!("--- n{i}: {routes} routes; log:\n{log}"));
        }
        Err(report)
    }

    async fn probe(&self, replicas: usize) -> Result<(), String> {
        let urls = self.urls();
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(1))
            .connect(urls.as_slice())
            .await
            .map_err(|e| e.to_string())?;
        let js = async_nats::jetstream::new(client);
        let name = format!("PROBE_{}", std::process::id());
        js.create_stream(async_nats::jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![format!("probe.{}", std::process::id())],
            num_replicas: replicas.min(self.nodes.len()),
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
        js.delete_stream(&name).await.map_err(|e| e.to_string())?;
        Ok(())
    }
}

impl Drop for NatsServers {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// The conformance suite's backend: a `NatsWal` on its own servers, with
/// a fixed owner name (every `open` is the same node restarting).
pub(crate) struct NatsBackend {
    pub(crate) servers: NatsServers,
    pub(crate) config: NatsWalConfig,
    _one_cluster_at_a_time: Option<tokio::sync::MutexGuard<'static, ()>>,
}

impl NatsBackend {
    /// On a single server, R1, with two streams (so that regions share
    /// them).
    pub(crate) async fn single() -> NatsBackend {
        let servers = NatsServers::single().await;
        let config = NatsWalConfig::new(servers.urls())
            .prefix("conformance")
            .owner("node-a")
            .streams(2);
        NatsBackend {
            servers,
            config,
            _one_cluster_at_a_time: None,
        }
    }

    /// On a 3-node cluster with `sync_interval: always`, R3, with the
    /// default stream count. Holds [`CLUSTER_TESTS`] while it lives.
    pub(crate) async fn cluster() -> NatsBackend {
        let guard = CLUSTER_TESTS.lock().await;
        let servers = NatsServers::cluster(3).await;
        let config = NatsWalConfig::new(servers.urls())
            .prefix("conformance")
            .owner("node-a")
            .replicas(3)
            .server_sync(ServerSync::Always)
            .request_timeout(Duration::from_secs(10));
        NatsBackend {
            servers,
            config,
            _one_cluster_at_a_time: Some(guard),
        }
    }
}

#[async_trait]
impl Backend for NatsBackend {
    type Wal = NatsWal;

    async fn open(&self) -> NatsWal {
        NatsWal::open(self.config.clone())
            .await
            .expect("NatsWal opens")
    }
}

/// Bytes the files under `dir` occupy on disk (allocated blocks).
pub(crate) fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => disk_usage(&e.path()),
                    Ok(m) => m.blocks() * 512,
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}
