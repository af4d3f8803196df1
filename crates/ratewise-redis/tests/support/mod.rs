//! Test support: private `redis-server` processes on free loopback ports, stopped by PID.
//!
//! Shared by the integration tests and the crate's unit tests (through `#[path]`). A test that
//! needs Redis calls [`RedisServer::start`]; when `redis-server` is not installed it gets `None`
//! after a message saying the test is skipped and why, unless `CI=true`, where a missing Redis is
//! a failure.
#![allow(dead_code, unreachable_pub)]

use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep};

/// One private `redis-server`, killed (by PID) when dropped.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    cluster: bool,
}

/// Whether a missing `redis-server` must fail the test (`CI=true`).
fn required() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true")
}

/// Says the test is skipped (or fails it on CI).
pub fn skip(test: &str, why: &str) {
    assert!(!required(), "{test}: {why}, and CI=true requires Redis");
    eprintln!("SKIPPED {test}: {why}");
}

/// A loopback port that is free, together with port + 10000 (a cluster node's bus port).
fn free_port() -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().expect("local address").port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

impl RedisServer {
    /// Starts a standalone server on a free port; `None` (test skipped) without `redis-server`.
    pub async fn start(test: &str) -> Option<Self> {
        Self::start_with(test, false).await
    }

    /// Starts a `cluster-enabled` node (not yet part of a cluster).
    pub async fn start_cluster_node(test: &str) -> Option<Self> {
        Self::start_with(test, true).await
    }

    async fn start_with(test: &str, cluster: bool) -> Option<Self> {
        for _attempt in 0..5 {
            let port = free_port();
            let dir = std::env::temp_dir().join(format!("ratewise-redis-test-{port}"));
            let _ = std::fs::create_dir_all(&dir);
            let mut server = Self {
                child: None,
                port,
                dir,
                cluster,
            };
            match server.spawn() {
                Ok(()) => {}
                Err(error) if error.kind() == ErrorKind::NotFound => {
                    skip(test, "redis-server is not on the PATH");
                    return None;
                }
                Err(error) => panic!("{test}: cannot start redis-server: {error}"),
            }
            if server.wait_ready(Duration::from_secs(5)).await && server.is_ours().await {
                return Some(server);
            }
            // Someone took the port between our probe and the server's bind (another test's
            // server may even be answering there): try another.
            server.kill();
        }
        panic!("{test}: redis-server did not answer PING on any port");
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let port = self.port.to_string();
        let mut command = Command::new("redis-server");
        command
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.cluster {
            command.args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]);
        }
        self.child = Some(command.spawn()?);
        Ok(())
    }

    /// PINGs until `+PONG` or `limit`.
    pub async fn wait_ready(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self
                .command(b"PING\r\n")
                .await
                .is_some_and(|reply| reply.starts_with("+PONG"))
            {
                return true;
            }
            sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Whether the server answering on our port is the process we started (not a server
    /// of another test that took the port first).
    async fn is_ours(&self) -> bool {
        let Some(pid) = self.pid() else {
            return false;
        };
        self.command(b"INFO server\r\n").await.is_some_and(|info| {
            info.lines()
                .any(|line| line.trim() == format!("process_id:{pid}"))
        })
    }

    /// Sends one inline command and returns the first reply chunk.
    pub async fn command(&self, inline: &[u8]) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await.ok()?;
        stream.write_all(inline).await.ok()?;
        let mut buffer = vec![0; 16 * 1024];
        let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buffer))
            .await
            .ok()?
            .ok()?;
        Some(String::from_utf8_lossy(&buffer[..read]).into_owned())
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server (SIGKILL to its PID) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (after [`kill`](Self::kill)).
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().expect("restart redis-server");
        assert!(
            self.wait_ready(Duration::from_secs(5)).await,
            "redis-server restarted"
        );
    }

    /// Sends a signal to the server's PID with `kill(1)` (no libc binding needed).
    fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            let status = Command::new("kill")
                .args([signal, &pid.to_string()])
                .status()
                .expect("run kill");
            assert!(status.success(), "kill {signal} {pid}");
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open and nothing answers, the worst
    /// case for a client.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Resumes a frozen server (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.thaw();
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A 3-master Redis Cluster of private nodes (no replicas).
#[derive(Debug)]
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts 3 nodes, joins them with `redis-cli --cluster create` and waits for
    /// `cluster_state:ok` on every node. `None` (skipped) without Redis.
    pub async fn start(test: &str) -> Option<Self> {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(RedisServer::start_cluster_node(test).await?);
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port()))
            .collect();
        let output = match Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
        {
            Ok(output) => output,
            Err(error) if error.kind() == ErrorKind::NotFound => {
                skip(test, "redis-cli is not on the PATH");
                return None;
            }
            Err(error) => panic!("{test}: redis-cli: {error}"),
        };
        assert!(
            output.status.success(),
            "{test}: redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        for node in &nodes {
            loop {
                let info = node.command(b"CLUSTER INFO\r\n").await.unwrap_or_default();
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{test}: cluster never became ok: {info}"
                );
                sleep(Duration::from_millis(50)).await;
            }
        }
        Some(Self { nodes })
    }

    /// `redis://127.0.0.1:PORT/` of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}
