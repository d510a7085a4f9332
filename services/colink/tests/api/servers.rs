//! Backend servers a test starts for itself, so that it can freeze, kill and
//! restart them without disturbing the other tests: a Kafka-protocol broker
//! (tansu, from `COLINK_TEST_TANSU`), Redis (`redis-server` on the PATH) and
//! an S3-protocol server over a folder (s3s-fs, from `COLINK_TEST_S3S`)
//! and an OpenID provider (oidc-provider under Node.js, the script
//! `COLINK_TEST_OIDC` names), and Prometheus (`COLINK_TEST_PROMETHEUS`).

use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `check` until it yields a value or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A server process on its own port; killed when dropped.
pub struct Server {
    program: String,
    args: Vec<String>,
    child: Option<Child>,
    pub port: u16,
    /// Where it keeps its data, removed with it.
    pub dir: Option<PathBuf>,
}

impl Server {
    /// A tansu broker keeping its log in memory.
    pub async fn kafka() -> Self {
        let program = std::env::var("COLINK_TEST_TANSU").expect("COLINK_TEST_TANSU names the tansu binary");
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let args = ["broker", "--listener-url", &url, "--advertised-listener-url", &url, "--storage-engine"]
            .iter()
            .map(|s| s.to_string())
            .chain([format!("memory://colink-test-{port}/")])
            .collect();
        Self::start(program, args, port).await
    }

    /// A Redis that keeps nothing on disk.
    pub async fn redis() -> Self {
        let port = free_port();
        let args = ["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        Self::start("redis-server".into(), args, port).await
    }

    /// An S3 server keeping its objects in a fresh folder, one folder per
    /// bucket; its keys are [`S3_ACCESS_KEY`] and [`S3_SECRET_KEY`].
    pub async fn s3() -> Self {
        let program = std::env::var("COLINK_TEST_S3S").expect("COLINK_TEST_S3S names the s3s-fs binary");
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("colink-s3-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let args = [
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--access-key",
            S3_ACCESS_KEY,
            "--secret-key",
            S3_SECRET_KEY,
            &dir.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut server = Self::start(program, args, port).await;
        server.dir = Some(dir);
        server
    }

    /// An SMTP server (aiosmtpd) that keeps what it receives in a fresh
    /// Maildir; read it with [`Server::mails`].
    pub async fn smtp() -> Self {
        let program = std::env::var("COLINK_TEST_AIOSMTPD").expect("COLINK_TEST_AIOSMTPD names the aiosmtpd program");
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("colink-smtp-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        let args = [
            "--nosetuid",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--class",
            "aiosmtpd.handlers.Mailbox",
            &dir.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut server = Self::start(program, args, port).await;
        server.dir = Some(dir);
        server
    }

    /// An OpenID provider standing in for Keycloak (see
    /// `tests/oidc-provider/provider.mjs`), signing with keys of
    /// `generation`, that lets the `colink` client send people back to
    /// `redirect_uri`.
    pub async fn oidc(generation: u32, redirect_uri: &str) -> Self {
        let script = std::env::var("COLINK_TEST_OIDC").expect("COLINK_TEST_OIDC names the provider script");
        let port = free_port();
        let args = [
            script.as_str(),
            "--port",
            &port.to_string(),
            "--generation",
            &generation.to_string(),
            "--redirect-uri",
            redirect_uri,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        Self::start("node".into(), args, port).await
    }

    /// A Prometheus server (from `COLINK_TEST_PROMETHEUS`) scraping `target`
    /// (host:port, `/metrics`) every second, keeping its data in a fresh
    /// folder.
    pub async fn prometheus(target: &str) -> Self {
        let program =
            std::env::var("COLINK_TEST_PROMETHEUS").expect("COLINK_TEST_PROMETHEUS names the prometheus binary");
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("colink-prometheus-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        let scrape = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: colink\n    \
             static_configs:\n      - targets: ['{target}']\n"
        );
        std::fs::write(&config, scrape).unwrap();
        let args = vec![
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
        ];
        let mut server = Self::start(program, args, port).await;
        server.dir = Some(dir);
        server
    }

    /// Restarts an OpenID provider with keys of another generation: its
    /// old keys are gone, as after a rotation.
    pub async fn rotate_keys(&mut self, generation: u32) {
        if let Some(at) = self.args.iter().position(|a| a == "--generation") {
            self.args[at + 1] = generation.to_string();
        }
        self.restart().await;
    }

    /// The mails an SMTP server received, whole, oldest first.
    pub fn mails(&self) -> Vec<String> {
        let Some(dir) = &self.dir else { return vec![] };
        let mut files: Vec<(std::time::SystemTime, String)> = std::fs::read_dir(dir.join("new"))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|e| {
                        let modified = e.metadata().ok()?.modified().ok()?;
                        Some((modified, std::fs::read_to_string(e.path()).ok()?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files.into_iter().map(|(_, mail)| mail).collect()
    }

    async fn start(program: String, args: Vec<String>, port: u16) -> Self {
        let mut server = Self { program, args, child: None, port, dir: None };
        server.run().await;
        server
    }

    async fn run(&mut self) {
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program));
        self.child = Some(child);
        eventually(Duration::from_secs(20), "the server to listen", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.ok().map(|_| ())
        })
        .await;
    }

    /// SIGKILL: the server is gone, with whatever it kept in memory.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port.
    pub async fn restart(&mut self) {
        self.kill();
        self.run().await;
    }

    /// SIGSTOP: connections stay open and nothing answers, the way a hung
    /// or partitioned server looks to its clients.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status().expect("kill runs");
        assert!(status.success(), "kill {signal} {pid}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.thaw();
        }
        self.kill();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

pub const S3_ACCESS_KEY: &str = "colink-test";
pub const S3_SECRET_KEY: &str = "colink-test-secret";

/// A TCP proxy in front of a server, which a test cuts (open connections
/// dropped, new ones refused) and restores, as a network partition would.
pub struct Proxy {
    pub port: u16,
    target: String,
    cut: Option<tokio::sync::watch::Sender<bool>>,
}

impl Proxy {
    pub async fn start(target: &str) -> Self {
        let mut proxy = Self { port: free_port(), target: target.to_string(), cut: None };
        proxy.restore().await;
        proxy
    }

    pub fn cut(&mut self) {
        if let Some(cut) = self.cut.take() {
            let _ = cut.send(true);
        }
    }

    /// Listens on the same port again.
    pub async fn restore(&mut self) {
        self.cut();
        let listener = eventually(Duration::from_secs(10), "the proxy's port", || async {
            tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await.ok()
        })
        .await;
        let (cut, mut stop) = tokio::sync::watch::channel(false);
        let target = self.target.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = stop.wait_for(|cut| *cut) => return,
                };
                let Ok((mut client, _)) = accepted else { continue };
                let (target, mut stop) = (target.clone(), stop.clone());
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = stop.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        self.cut = Some(cut);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}
