//! The Colink node under load: a `colink serve` child process, so that its
//! CPU time and memory are its own and can be read from `/proc`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use super::BenchError;

/// Clock ticks per second of `/proc/<pid>/stat` times; 100 on Linux.
const CLOCK_TICKS: f64 = 100.0;

pub struct Server {
    child: Child,
    /// The S3 server holding the node's files, when there is one.
    s3: Option<Child>,
    pub addr: String,
}

impl Server {
    /// Starts every service on `addr` with its data under `data_dir` (or in
    /// PostgreSQL when `database_url` is a template), the send limit off and
    /// password hashing cheap: the load is chat, not sign-ups. With `traces`
    /// (a collector's URL and the share of traces kept) it exports traces.
    pub async fn start(
        addr: &str,
        data_dir: &Path,
        database_url: Option<&str>,
        traces: Option<&(String, f64)>,
    ) -> Result<Self, BenchError> {
        let exe = std::env::current_exe().map_err(|e| BenchError::Server(e.to_string()))?;
        let mut command = Command::new(exe);
        command
            .args(["serve", "--listen", addr, "--data-dir"])
            .arg(data_dir)
            .env("COLINK_EPHEMERAL__SENDS_PER_MINUTE", "0")
            .env("COLINK_EPHEMERAL__MUTATIONS_PER_MINUTE", "0")
            .env("COLINK_EPHEMERAL__ANONYMOUS_PER_ADDRESS_PER_MINUTE", "0")
            // The idle scenario opens up to 100 streams per user.
            .env("COLINK_REALTIME__MAX_STREAMS_PER_USER", "1000")
            .env("COLINK_AUTH__ARGON2_MEMORY_KIB", "64")
            .env("COLINK_AUTH__ARGON2_ITERATIONS", "1")
            // The load generator registers thousands of accounts from here.
            .env("COLINK_AUTH__REGISTRATIONS_PER_ADDRESS_PER_HOUR", "0")
            // The users sign in once; the longest scenarios outlast a
            // default access token.
            .env("COLINK_AUTH__ACCESS_TOKEN_TTL_SECS", "86400")
            .env("COLINK_LOG__LEVEL", "warn")
            // The files scenario uploads hundreds of MiB per user.
            .env("COLINK_FILES__DEFAULT_QUOTA_BYTES", (1_i64 << 40).to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(url) = database_url {
            command.env("COLINK_DATABASE__URL", url);
        }
        if let Some((endpoint, ratio)) = traces {
            command
                .env("COLINK_TRACING__OTLP_ENDPOINT", endpoint)
                .env("COLINK_TRACING__SAMPLE_RATIO", ratio.to_string());
        }
        if let Some(clamd) = super::files::clamd_url() {
            command.env("COLINK_FILES__SCANNER__CLAMD", clamd);
        }
        let s3 = match super::files::s3s_binary() {
            Some(program) => Some(start_s3(&program, data_dir, &mut command).await?),
            None => None,
        };
        let child = command.spawn().map_err(|e| BenchError::Server(format!("cannot start colink serve: {e}")))?;
        let server = Self { child, s3, addr: addr.to_string() };
        server.wait_ready().await?;
        Ok(server)
    }

    /// Stops the node the way an orchestrator does (SIGTERM), so that it
    /// flushes what it holds, such as its last spans; it is killed if it
    /// has not stopped within `patience`.
    pub async fn stop(mut self, patience: Duration) {
        let asked = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        if asked.is_ok_and(|status| status.success()) {
            let until = std::time::Instant::now() + patience;
            while std::time::Instant::now() < until && matches!(self.child.try_wait(), Ok(None)) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A new HTTP/2 connection to the node.
    pub fn connect(&self) -> Result<Channel, BenchError> {
        Ok(Endpoint::from_shared(format!("http://{}", self.addr))
            .map_err(|e| BenchError::Server(e.to_string()))?
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(30))
            .connect_lazy())
    }

    async fn wait_ready(&self) -> Result<(), BenchError> {
        let mut health = tonic_health::pb::health_client::HealthClient::new(self.connect()?);
        for _ in 0..300 {
            let request = tonic_health::pb::HealthCheckRequest { service: String::new() };
            if health.check(request).await.is_ok_and(|r| r.into_inner().status == 1) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(BenchError::Server(format!("node on {} did not become ready", self.addr)))
    }

    /// CPU seconds (user + system) the node has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&self.pid().to_string())
    }

    /// Memory now and at its peak, in bytes (VmRSS, VmHWM).
    pub fn memory(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or(0)
                * 1024
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

/// CPU seconds (user + system) a process (a pid, or "self") has used so far.
pub fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime, fields 14 and 15 of the line, counted from the state (field 3).
    (ticks(11) + ticks(12)) / CLOCK_TICKS
}

/// The CPU time the node and the load generator had used at one moment.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    node: f64,
    generator: f64,
}

impl CpuSample {
    pub fn take(node_pid: u32) -> Self {
        Self { node: cpu_seconds(&node_pid.to_string()), generator: cpu_seconds("self") }
    }

    /// Microseconds of CPU each side spent per delivery since `self`.
    pub fn per_delivery(&self, node_pid: u32, deliveries: u64) -> Option<(f64, f64)> {
        let now = Self::take(node_pid);
        let n = deliveries as f64;
        (deliveries > 0).then(|| ((now.node - self.node) * 1e6 / n, (now.generator - self.generator) * 1e6 / n))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        for child in std::iter::once(&mut self.child).chain(self.s3.as_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts s3s-fs over a folder next to the node's data and points the
/// node's files at a bucket there.
async fn start_s3(program: &str, data_dir: &Path, node: &mut Command) -> Result<Child, BenchError> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| BenchError::Server(e.to_string()))?
        .port();
    let root = data_dir.with_extension("s3");
    std::fs::create_dir_all(&root).map_err(|e| BenchError::Server(format!("{}: {e}", root.display())))?;
    let (access_key, secret_key) = ("colink-bench", "colink-bench-secret");
    let mut child = Command::new(program)
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--access-key", access_key])
        .args(["--secret-key", secret_key])
        .arg(&root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| BenchError::Server(format!("cannot start {program}: {e}")))?;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            node.env("COLINK_FILES__URL", "s3://colink-bench")
                .env("COLINK_FILES__S3__ENDPOINT", format!("http://127.0.0.1:{port}"))
                .env("COLINK_FILES__S3__ACCESS_KEY", access_key)
                .env("COLINK_FILES__S3__SECRET_KEY", secret_key);
            return Ok(child);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    Err(BenchError::Server(format!("{program} did not listen on {port}")))
}
