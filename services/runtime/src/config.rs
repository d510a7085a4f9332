//! Configuration: one TOML file, then `COLINK_*` environment overrides, with
//! the embedded defaults for everything left unset.
//!
//! An override names a key path with `__` between levels:
//! `COLINK_DATABASE__URL=postgres://...` sets `database.url`. Its value is
//! read as a TOML value when it parses as one (numbers, booleans, arrays) and
//! as a plain string otherwise.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Every service this binary can host, in start-up order.
pub const SERVICES: &[&str] =
    &["auth", "users", "channels", "messaging", "files", "realtime", "presence", "admin", "search"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid TOML: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the gRPC (and gRPC-Web) listener; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Where embedded backends keep their files.
    pub data_dir: PathBuf,
    /// Which services this node hosts: "all" or a list of names.
    #[serde(deserialize_with = "service_list")]
    pub services: Vec<String>,
    pub log: LogConfig,
    pub server: ServerConfig,
    pub metrics: MetricsConfig,
    pub tracing: TracingConfig,
    pub database: DatabaseConfig,
    pub pubsub: PubSubConfig,
    pub events: EventsConfig,
    pub ephemeral: EphemeralConfig,
    pub auth: AuthConfig,
    pub realtime: RealtimeConfig,
    pub messaging: MessagingConfig,
    pub files: FilesConfig,
    pub search: SearchConfig,
    /// Where to reach services this node does not host, e.g.
    /// `channels = "http://10.0.0.5:7700"`. Unlisted services are this
    /// node's own, called in process through its server stack.
    pub peers: BTreeMap<String, String>,
    /// Deadline of every call between services, in milliseconds.
    pub call_timeout_ms: u64,
    /// How long shutdown waits for streams and the outbox to drain.
    pub shutdown_grace_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Filter such as "info" or "info,colink_messaging=debug".
    pub level: String,
    /// "auto" (text on a terminal, JSON otherwise), "text" or "json". Text
    /// is coloured only on a terminal (and not with `NO_COLOR` set).
    pub format: String,
}

/// What the node holds every call to, and who may call it from a browser.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Calls handled at once; beyond, a call is answered UNAVAILABLE at once
    /// (load shedding) rather than queued. Health checks are never refused.
    pub max_in_flight: usize,
    /// The longest a call's handler may run before the call ends with
    /// DEADLINE_EXCEEDED; a shorter `grpc-timeout` from the client wins.
    /// Streams only need to start within it.
    pub request_timeout_ms: u64,
    /// Browser origins (such as "https://chat.example.com", or "*") allowed
    /// to call the node's gRPC-Web directly. Empty: same origin only.
    pub cors_origins: Vec<String>,
}

/// The Prometheus endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    pub enabled: bool,
    /// Empty: `/metrics` on the node's own listener. An address such as
    /// "0.0.0.0:9464": a listener of its own (an admin port that a proxy in
    /// front of the node never exposes), and none on the main one.
    pub listen: String,
}

/// Trace export over OTLP (gRPC); off while `otlp_endpoint` is empty.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TracingConfig {
    /// The collector, such as "http://otel-collector:4317".
    pub otlp_endpoint: String,
    /// The share of new traces kept, from 0 to 1; a caller's sampled trace
    /// is always continued.
    pub sample_ratio: f64,
    /// The `service.name` the spans carry.
    pub service_name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Database URL template; `{service}` and `{data_dir}` are substituted.
    /// Empty means one SQLite file per service under the data directory.
    pub url: String,
    /// Pool size per service (readers, for SQLite; writers are serialised).
    pub max_connections: u32,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PubSubConfig {
    /// Empty: in-process (one node). `redis://host:6379`: live fan-out
    /// between nodes through Redis.
    pub url: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// Empty: in-process, so a service that publishes an event must share a
    /// node with the services that consume it. `kafka://host:9092[,host:9092]`:
    /// Kafka, with any placement of services.
    pub url: String,
    /// Prepended to every topic and consumer-group name, so that several
    /// deployments can share one cluster.
    pub topic_prefix: String,
    /// Partitions of each topic this node creates when it is missing.
    pub partitions: i32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EphemeralConfig {
    /// Where presence, typing and rate-limit counters live. Empty: in this
    /// process (one node). `redis://host:6379`: shared by every node.
    pub url: String,
    /// Sends one user may make per minute; 0 turns the limit off.
    pub sends_per_minute: u32,
    /// Other calls that change something one user may make per minute; 0
    /// turns the limit off.
    pub mutations_per_minute: u32,
    /// Calls without a valid token (signing up and in, refreshing) one
    /// client address may make per minute; 0 turns the limit off.
    pub anonymous_per_address_per_minute: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// How people sign in: "builtin" (passwords kept here) or "oidc" (an
    /// OpenID provider such as Keycloak, configured under `[auth.oidc]`).
    pub mode: AuthMode,
    /// `iss` of issued tokens, checked on every token.
    pub issuer: String,
    pub access_token_ttl_secs: u64,
    pub refresh_token_ttl_secs: u64,
    /// Argon2id cost. The defaults follow OWASP's recommendation
    /// (19 MiB, 2 passes, 1 lane).
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
    /// Behind a proxy that appends the client's address to
    /// `X-Forwarded-For` (Envoy with `use_remote_address`), take that
    /// address as the client's (for login and registration limits, domain
    /// events and the audit log) instead of the proxy's. Never set it on a
    /// node that clients reach directly: they could claim any address.
    /// The header is always believed from this host itself (the node's own
    /// calls between services, a proxy beside it), so on a multi-node
    /// deployment set it on every node behind the proxy.
    pub trust_forwarded_for: bool,
    /// Accounts one client address may register per hour; 0 turns the
    /// limit off.
    pub registrations_per_address_per_hour: u32,
    /// Mail for password resets and email verification.
    pub mail: MailConfig,
    /// The OpenID provider of `mode = "oidc"`.
    pub oidc: OidcConfig,
    /// Passkeys (WebAuthn) of the built-in accounts.
    pub passkeys: PasskeyConfig,
}

/// A passkey belongs to one site, the WebAuthn relying party: a domain
/// (`rp_id`), and the origins on it that pages asking for passkeys are
/// served from. Browsers refuse any other page.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PasskeyConfig {
    /// The site's domain, e.g. `chat.example.com`, without scheme or port.
    /// The default, `localhost`, suits a node tried out on this machine.
    pub rp_id: String,
    /// What authenticators show the site as.
    pub rp_name: String,
    /// The exact origins (`https://chat.example.com`) the web client is
    /// served from, each on `rp_id` or a subdomain of it. Empty:
    /// `https://<rp_id>`, or, for `localhost`, `http://localhost` on any
    /// port.
    pub origins: Vec<String>,
}

impl Default for PasskeyConfig {
    fn default() -> Self {
        Self { rp_id: "localhost".into(), rp_name: "Colink".into(), origins: Vec::new() }
    }
}

impl PasskeyConfig {
    /// The origins passkey pages may be on, and whether any port of them
    /// will do.
    pub fn allowed_origins(&self) -> (Vec<String>, bool) {
        match (self.origins.is_empty(), self.rp_id == "localhost") {
            (false, _) => (self.origins.clone(), false),
            (true, true) => (vec!["http://localhost".into()], true),
            (true, false) => (vec![format!("https://{}", self.rp_id)], false),
        }
    }

    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let id = &self.rp_id;
        if id.is_empty() || id.contains(['/', ':', ' ']) || id.starts_with('.') || id.ends_with('.') {
            problems.push(format!("auth.passkeys.rp_id: {id:?} is not a domain name (no scheme, port or path)"));
        }
        if self.rp_name.trim().is_empty() {
            problems.push("auth.passkeys.rp_name: is required".into());
        }
        for origin in &self.origins {
            let host = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"))
                .map(|rest| rest.split([':', '/']).next().unwrap_or_default());
            match host {
                Some(host) if host == id || host.ends_with(&format!(".{id}")) => {}
                Some(_) => problems.push(format!("auth.passkeys.origins: {origin:?} is not on {id:?}")),
                None => problems.push(format!("auth.passkeys.origins: {origin:?} is not an http(s) URL")),
            }
        }
        problems
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    Builtin,
    Oidc,
}

/// Single sign-on with an OpenID provider (Keycloak, or any other): people
/// sign in there with the authorization-code flow and PKCE, Colink makes
/// their account on first sign-in, and the provider's own access tokens are
/// accepted on every call.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer URL, e.g.
    /// `https://sso.example.com/realms/acme`; its
    /// `.well-known/openid-configuration` is read from there.
    pub issuer: String,
    /// The client Colink is registered as at the provider.
    pub client_id: String,
    /// The client's secret; empty for a public client (PKCE only).
    pub client_secret: String,
    /// Where the provider may send people back after signing in (the web
    /// client's `/sso/callback`, or a native app's); each must be
    /// registered at the provider. The first is the default.
    pub redirect_urls: Vec<String>,
    /// The `aud` a provider access token must carry to be accepted.
    /// Empty: the client id.
    pub audience: String,
    /// Scopes asked for at sign-in.
    pub scopes: String,
    /// Claims that give an account its username, display name and email.
    pub username_claim: String,
    pub name_claim: String,
    pub email_claim: String,
    /// The claim holding the person's roles at the provider, as a dotted
    /// path (Keycloak's realm roles: `realm_access.roles`); empty: roles
    /// are not taken from the provider.
    pub role_claim: String,
    /// Provider roles that make a workspace admin, moderator or guest;
    /// anyone else is a member.
    pub admin_roles: Vec<String>,
    pub moderator_roles: Vec<String>,
    pub guest_roles: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// What the sign-in button calls the provider.
    pub display_name: String,
}

impl Default for OidcConfig {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            client_id: String::new(),
            client_secret: String::new(),
            redirect_urls: Vec::new(),
            audience: String::new(),
            scopes: "openid email profile".into(),
            username_claim: "preferred_username".into(),
            name_claim: "name".into(),
            email_claim: "email".into(),
            role_claim: String::new(),
            admin_roles: Vec::new(),
            moderator_roles: Vec::new(),
            guest_roles: Vec::new(),
            leeway_secs: 30,
            display_name: "Single sign-on".into(),
        }
    }
}

impl OidcConfig {
    /// The audience provider access tokens must name.
    pub fn audience(&self) -> &str {
        if self.audience.is_empty() { &self.client_id } else { &self.audience }
    }

    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let is_url = |url: &str| url.starts_with("https://") || url.starts_with("http://");
        if !is_url(&self.issuer) {
            problems.push(format!("auth.oidc.issuer: {:?} is not an http(s) URL", self.issuer));
        }
        if self.client_id.is_empty() {
            problems.push("auth.oidc.client_id: is required".into());
        }
        if self.redirect_urls.is_empty() {
            problems.push("auth.oidc.redirect_urls: name at least one".into());
        }
        for url in self.redirect_urls.iter().filter(|url| !is_url(url)) {
            problems.push(format!("auth.oidc.redirect_urls: {url:?} is not an http(s) URL"));
        }
        if !self.scopes.split_whitespace().any(|scope| scope == "openid") {
            problems.push("auth.oidc.scopes: must include openid".into());
        }
        if self.username_claim.is_empty() {
            problems.push("auth.oidc.username_claim: is required".into());
        }
        if self.leeway_secs > 300 {
            problems.push("auth.oidc.leeway_secs: must be at most 300".into());
        }
        problems
    }
}

/// How the auth service sends mail. Without `url`, password reset and email
/// verification are off (FAILED_PRECONDITION).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailConfig {
    /// The SMTP server: `smtp://host:25` (plain), `smtp://host:587?tls=required`
    /// (STARTTLS) or `smtps://host:465`; credentials as
    /// `smtp://user:password@host:587?tls=required`.
    pub url: String,
    /// The sender, e.g. `Colink <colink@example.com>`.
    pub from: String,
    /// Mails asked for from one client address per hour (resets and
    /// verifications together); 0 turns the limit off.
    pub requests_per_address_per_hour: u32,
}

impl Default for MailConfig {
    fn default() -> Self {
        Self { url: String::new(), from: "Colink <colink@localhost>".into(), requests_per_address_per_hour: 20 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MessagingConfig {
    /// How often message retention runs by itself; the policies (set with
    /// colink.retention.v1) say what it deletes.
    pub retention_every_secs: u64,
}

impl Default for MessagingConfig {
    fn default() -> Self {
        Self { retention_every_secs: 86_400 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RealtimeConfig {
    /// Frames buffered per stream before it counts as a slow consumer.
    pub stream_buffer: usize,
    /// Events fetched per replay call.
    pub replay_page_size: i32,
    /// Channels one stream may follow.
    pub max_channels_per_stream: usize,
    /// Streams one user may hold open on one node at once.
    pub max_streams_per_user: usize,
    /// How long a stream's full buffer may wait for the client to read:
    /// a client that takes longer is told, when it reads again, to
    /// reconnect and resume from its cursors.
    pub slow_client_grace_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilesConfig {
    /// Where the bytes live. Empty: a folder under the data directory,
    /// uploaded to and downloaded from this node through signed URLs.
    /// `s3://<bucket>`: an S3 bucket, reached as `[files.s3]` says, with
    /// presigned URLs.
    pub url: String,
    /// The address clients reach this node's file URLs at, such as
    /// `https://chat.example.com`. Empty: `http://` and the listen address.
    pub public_url: String,
    /// The key that signs this node's file URLs, at least 32 characters;
    /// every node serving the same folder needs the same one. Empty: a
    /// random key kept in the data directory.
    pub signing_key: String,
    /// The largest single upload.
    pub max_file_size_bytes: i64,
    /// MIME types that may be uploaded; `type/*` allows a whole family.
    /// Executables are refused whatever this says.
    pub allowed_types: Vec<String>,
    /// Each user's storage quota unless an admin set another.
    pub default_quota_bytes: i64,
    /// All users' files together; 0 for no limit.
    pub workspace_quota_bytes: i64,
    /// Refuse to serve files that no scanner has seen. Meant for
    /// deployments with a scanner: without one, nothing is downloadable.
    pub require_scan: bool,
    pub scanner: ScannerConfig,
    pub retention: RetentionPolicy,
    pub s3: S3Config,
}

/// The S3 server of `files.url = "s3://…"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// The S3 API as this node reaches it, such as
    /// `https://s3.eu-central-1.amazonaws.com` or `http://minio:9000`.
    pub endpoint: String,
    /// The S3 API as clients reach it, for the URLs they are given; empty
    /// when it is `endpoint`.
    pub public_endpoint: String,
    pub region: String,
    pub access_key: String,
    /// Best given as `COLINK_FILES__S3__SECRET_KEY`.
    pub secret_key: String,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            public_endpoint: String::new(),
            region: "us-east-1".into(),
            access_key: String::new(),
            secret_key: String::new(),
        }
    }
}

impl FilesConfig {
    /// The bucket of an S3 store; None for the local one.
    pub fn s3_bucket(&self) -> Option<&str> {
        self.url.strip_prefix("s3://").map(|bucket| bucket.trim_end_matches('/'))
    }
}

/// How long files are kept, by kind, unless a file says otherwise. Days
/// after upload; 0 keeps them forever.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionPolicy {
    pub image_days: u32,
    pub video_days: u32,
    pub audio_days: u32,
    pub document_days: u32,
    pub other_days: u32,
    /// Delete an expired file's bytes; otherwise it is only marked EXPIRED
    /// (no longer served) for an admin to review.
    pub auto_delete: bool,
    /// How often expired files are looked for.
    pub sweep_secs: u64,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self {
            image_days: 0,
            video_days: 0,
            audio_days: 0,
            document_days: 0,
            other_days: 0,
            auto_delete: false,
            sweep_secs: 3600,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScannerConfig {
    /// clamd's socket: `tcp://host:3310` or `unix:///path/to/clamd.ctl`.
    /// Empty: no scanner, and files are marked UNSCANNED.
    pub clamd: String,
    /// How long one scan may take before it counts as failed and is
    /// retried.
    pub timeout_ms: u64,
    /// Files scanned at once by this node. 0: this node scans nothing and
    /// leaves the scans to the nodes that do (with Kafka, any node hosting
    /// files with a concurrency above 0); its uploads still wait for them.
    pub concurrency: usize,
}

/// The seeds' allow-list: images, audio, video, documents and archives.
pub const DEFAULT_ALLOWED_TYPES: &[&str] = &[
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "audio/*",
    "video/*",
    "application/pdf",
    "text/plain",
    "text/markdown",
    "text/csv",
    "application/json",
    "application/zip",
    "application/gzip",
    "application/msword",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.ms-excel",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.ms-powerpoint",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/vnd.oasis.opendocument.text",
    "application/vnd.oasis.opendocument.spreadsheet",
    "application/vnd.oasis.opendocument.presentation",
];

const MIB: i64 = 1024 * 1024;

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            public_url: String::new(),
            signing_key: String::new(),
            max_file_size_bytes: 100 * MIB,
            allowed_types: DEFAULT_ALLOWED_TYPES.iter().map(|t| t.to_string()).collect(),
            default_quota_bytes: 100 * MIB,
            workspace_quota_bytes: 0,
            require_scan: false,
            scanner: ScannerConfig::default(),
            retention: RetentionPolicy::default(),
            s3: S3Config::default(),
        }
    }
}

impl Default for ScannerConfig {
    fn default() -> Self {
        Self { clamd: String::new(), timeout_ms: 60_000, concurrency: 4 }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
            data_dir: PathBuf::from("colink-data"),
            services: vec!["all".into()],
            log: LogConfig::default(),
            server: ServerConfig::default(),
            metrics: MetricsConfig::default(),
            tracing: TracingConfig::default(),
            database: DatabaseConfig::default(),
            pubsub: PubSubConfig::default(),
            events: EventsConfig::default(),
            ephemeral: EphemeralConfig::default(),
            auth: AuthConfig::default(),
            realtime: RealtimeConfig::default(),
            messaging: MessagingConfig::default(),
            files: FilesConfig::default(),
            search: SearchConfig::default(),
            peers: BTreeMap::new(),
            call_timeout_ms: 5_000,
            shutdown_grace_secs: 10,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".into(), format: "auto".into() }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self { max_in_flight: 2_048, request_timeout_ms: 30_000, cors_origins: Vec::new() }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { enabled: true, listen: String::new() }
    }
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self { otlp_endpoint: String::new(), sample_ratio: 1.0, service_name: "colink".into() }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { url: String::new(), max_connections: 8 }
    }
}

impl Default for EphemeralConfig {
    fn default() -> Self {
        // The seeds' per-user API budget is 1,000 requests a minute.
        Self {
            url: String::new(),
            sends_per_minute: 1_000,
            mutations_per_minute: 1_000,
            anonymous_per_address_per_minute: 100,
        }
    }
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self { url: String::new(), topic_prefix: String::new(), partitions: 6 }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::Builtin,
            issuer: "colink".into(),
            access_token_ttl_secs: 15 * 60,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            argon2_memory_kib: 19 * 1024,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            trust_forwarded_for: false,
            registrations_per_address_per_hour: 20,
            mail: MailConfig::default(),
            oidc: OidcConfig::default(),
            passkeys: PasskeyConfig::default(),
        }
    }
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        Self {
            stream_buffer: 512,
            replay_page_size: 500,
            max_channels_per_stream: 1_000,
            max_streams_per_user: 32,
            slow_client_grace_ms: 5_000,
        }
    }
}

impl Config {
    /// Reads the file (if any), applies `COLINK_*` overrides from `env`, and
    /// validates the result, reporting every problem at once.
    pub fn load(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let mut root = match file {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
                toml::from_str::<toml::Table>(&text)
                    .map_err(|source| ConfigError::Parse { path: path.into(), source })?
            }
            None => toml::Table::new(),
        };
        let mut problems = Vec::new();
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("COLINK_") else { continue };
            // COLINK_CONFIG names the file; COLINK_TEST_* belong to the test
            // suite; Kubernetes names the rest after a Service called colink.
            if rest == "CONFIG" || rest.starts_with("TEST_") || is_service_link(rest, &value) {
                continue;
            }
            let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            if let Err(problem) = set_path(&mut root, &path, parse_env_value(&value)) {
                problems.push(format!("{name}: {problem}"));
            }
        }
        match Config::deserialize(toml::Value::Table(root)) {
            Ok(config) => {
                problems.extend(config.problems());
                if problems.is_empty() { Ok(config) } else { Err(ConfigError::Invalid(problems.join("; "))) }
            }
            Err(err) => {
                problems.push(err.to_string());
                Err(ConfigError::Invalid(problems.join("; ")))
            }
        }
    }

    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for name in &self.services {
            if name != "all" && !SERVICES.contains(&name.as_str()) {
                problems.push(format!("services: unknown service {name:?} (known: all, {})", SERVICES.join(", ")));
            }
        }
        if !["auto", "text", "json"].contains(&self.log.format.as_str()) {
            problems.push(format!("log.format: {:?} is not \"auto\", \"text\" or \"json\"", self.log.format));
        }
        if self.log.level.parse::<tracing_subscriber::filter::Targets>().is_err() {
            problems.push(format!("log.level: {:?} is not a valid filter", self.log.level));
        }
        problems.extend(self.observability_problems());
        for (key, url) in [("pubsub.url", &self.pubsub.url), ("ephemeral.url", &self.ephemeral.url)] {
            if !(url.is_empty() || url.starts_with("redis://") || url.starts_with("rediss://")) {
                problems.push(format!("{key}: {url:?} is neither empty nor a redis:// URL"));
            }
        }
        if !(self.events.url.is_empty() || self.events.url.starts_with("kafka://")) {
            problems.push(format!("events.url: {:?} is neither empty nor a kafka:// URL", self.events.url));
        }
        if !(1..=1024).contains(&self.events.partitions) {
            problems.push("events.partitions: must be within 1..=1024".into());
        }
        if self.database.max_connections == 0 {
            problems.push("database.max_connections: must be at least 1".into());
        }
        if self.auth.access_token_ttl_secs < 30 {
            problems.push("auth.access_token_ttl_secs: must be at least 30".into());
        }
        if self.auth.refresh_token_ttl_secs < self.auth.access_token_ttl_secs {
            problems.push("auth.refresh_token_ttl_secs: must not be shorter than the access token's".into());
        }
        if self.auth.argon2_memory_kib < 8 * self.auth.argon2_parallelism.max(1)
            || self.auth.argon2_iterations == 0
            || self.auth.argon2_parallelism == 0
        {
            problems.push("auth.argon2_*: invalid Argon2 parameters".into());
        }
        if self.auth.mode == AuthMode::Oidc {
            problems.extend(self.auth.oidc.problems());
        }
        problems.extend(self.auth.passkeys.problems());
        if self.realtime.stream_buffer < 16 {
            problems.push("realtime.stream_buffer: must be at least 16".into());
        }
        if !(1..=1000).contains(&self.realtime.replay_page_size) {
            problems.push("realtime.replay_page_size: must be within 1..=1000".into());
        }
        if self.realtime.max_streams_per_user == 0 {
            problems.push("realtime.max_streams_per_user: must be at least 1".into());
        }
        if self.realtime.max_channels_per_stream == 0 {
            problems.push("realtime.max_channels_per_stream: must be at least 1".into());
        }
        if self.messaging.retention_every_secs == 0 {
            problems.push("messaging.retention_every_secs: must be at least 1".into());
        }
        problems.extend(self.files.problems());
        problems.extend(self.search.problems());
        if self.call_timeout_ms == 0 {
            problems.push("call_timeout_ms: must be at least 1".into());
        }
        problems
    }

    fn observability_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.server.max_in_flight == 0 {
            problems.push("server.max_in_flight: must be at least 1".into());
        }
        if self.server.request_timeout_ms < 100 {
            problems.push("server.request_timeout_ms: must be at least 100".into());
        }
        for origin in &self.server.cors_origins {
            let scheme = origin.starts_with("https://") || origin.starts_with("http://");
            if origin != "*" && (!scheme || origin.ends_with('/') || http::HeaderValue::from_str(origin).is_err()) {
                problems.push(format!(
                    "server.cors_origins: {origin:?} is not an origin such as \"https://chat.example.com\" (or \"*\")"
                ));
            }
        }
        if !self.metrics.listen.is_empty() && self.metrics.listen.parse::<SocketAddr>().is_err() {
            problems.push(format!(
                "metrics.listen: {:?} is neither empty nor an address such as \"0.0.0.0:9464\"",
                self.metrics.listen
            ));
        }
        let endpoint = &self.tracing.otlp_endpoint;
        if !(endpoint.is_empty() || endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            problems.push(format!("tracing.otlp_endpoint: {endpoint:?} is neither empty nor an http(s):// URL"));
        }
        if !(0.0..=1.0).contains(&self.tracing.sample_ratio) {
            problems.push("tracing.sample_ratio: must be within 0..=1".into());
        }
        if self.tracing.service_name.trim().is_empty() {
            problems.push("tracing.service_name: must not be empty".into());
        }
        problems
    }

    /// The services this node hosts, in start-up order.
    pub fn hosted_services(&self) -> Vec<&'static str> {
        if self.services.iter().any(|s| s == "all") {
            return SERVICES.to_vec();
        }
        SERVICES.iter().copied().filter(|s| self.services.iter().any(|n| n == s)).collect()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchConfig {
    /// Where the indices live. Empty: Tantivy under the data directory.
    /// `http(s)://host:port`: an Elasticsearch or OpenSearch cluster.
    pub url: String,
    /// The start of every index and alias name on the cluster.
    pub index_prefix: String,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self { url: String::new(), index_prefix: "colink".into() }
    }
}

impl SearchConfig {
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let url = &self.url;
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            problems.push(format!("search.url: {url:?} is neither empty nor an http(s):// URL"));
        }
        let prefix_ok = !self.index_prefix.is_empty()
            && self.index_prefix.len() <= 64
            && self
                .index_prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            && !self.index_prefix.starts_with(['-', '_']);
        if !prefix_ok {
            problems.push(format!(
                "search.index_prefix: {:?} must be 1 to 64 lower-case letters, digits, - or _, not starting with - or _",
                self.index_prefix
            ));
        }
        problems
    }
}

impl FilesConfig {
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match self.s3_bucket() {
            None if !self.url.is_empty() => {
                problems.push(format!("files.url: {:?}: must be empty (local files) or s3://<bucket>", self.url));
            }
            None => {}
            Some(bucket) => {
                let valid = (3..=63).contains(&bucket.len())
                    && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
                if !valid {
                    problems.push(format!(
                        "files.url: {bucket:?} is not a bucket name (3 to 63 lower-case letters, digits, '-' and '.')"
                    ));
                }
                let s3 = &self.s3;
                for (field, url) in [("endpoint", &s3.endpoint), ("public_endpoint", &s3.public_endpoint)] {
                    let required = field == "endpoint";
                    let valid = url.starts_with("http://") || url.starts_with("https://");
                    if (required || !url.is_empty()) && !valid {
                        problems.push(format!("files.s3.{field}: {url:?} is not an http(s) URL"));
                    }
                }
                if s3.access_key.is_empty() || s3.secret_key.is_empty() {
                    problems.push("files.s3.access_key and files.s3.secret_key: both are required for S3".into());
                }
            }
        }
        if !(self.public_url.is_empty()
            || self.public_url.starts_with("http://")
            || self.public_url.starts_with("https://"))
        {
            problems.push(format!("files.public_url: {:?} is not an http(s) URL", self.public_url));
        }
        if !self.signing_key.is_empty() && self.signing_key.len() < 32 {
            problems.push("files.signing_key: must be at least 32 characters".into());
        }
        if !(1..=5 * 1024 * MIB).contains(&self.max_file_size_bytes) {
            problems.push("files.max_file_size_bytes: must be within 1 byte and 5 GiB".into());
        }
        for kind in &self.allowed_types {
            let well_formed = kind.split_once('/').is_some_and(|(family, sub)| {
                !family.is_empty() && !sub.is_empty() && !family.contains('*') && (sub == "*" || !sub.contains('*'))
            });
            if !well_formed || kind.to_ascii_lowercase() != *kind {
                problems.push(format!("files.allowed_types: {kind:?} is not a lower-case type/subtype or type/*"));
            }
        }
        if self.default_quota_bytes < 0 || self.workspace_quota_bytes < 0 {
            problems.push("files.*_quota_bytes: must not be negative".into());
        }
        let clamd = &self.scanner.clamd;
        if !(clamd.is_empty() || clamd.starts_with("tcp://") || clamd.starts_with("unix://")) {
            problems.push(format!("files.scanner.clamd: {clamd:?} is neither empty, tcp://host:port nor unix:///path"));
        }
        if self.scanner.timeout_ms == 0 {
            problems.push("files.scanner.timeout_ms: must be at least 1".into());
        }
        if self.scanner.concurrency > 64 {
            problems.push("files.scanner.concurrency: must be within 0..=64".into());
        }
        let policy = &self.retention;
        let days = [policy.image_days, policy.video_days, policy.audio_days, policy.document_days, policy.other_days];
        if days.iter().any(|d| *d > 36_500) {
            problems.push("files.retention.*_days: must be at most 36500".into());
        }
        if policy.sweep_secs == 0 {
            problems.push("files.retention.sweep_secs: must be at least 1".into());
        }
        problems
    }
}

fn parse_env_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    match path {
        [] => Err("empty key".into()),
        [last] => {
            table.insert(last.clone(), value);
            Ok(())
        }
        [first, rest @ ..] => {
            let entry = table.entry(first.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(inner) => set_path(inner, rest, value),
                _ => Err(format!("{first} is not a section")),
            }
        }
    }
}

fn service_list<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(de)? {
        OneOrMany::One(s) => s.split(',').map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect(),
        OneOrMany::Many(v) => v,
    })
}

/// Whether `COLINK_<rest>=value` is one of the variables Kubernetes gives
/// every pod for each Service of its namespace (`enableServiceLinks`): a
/// Service `colink` or `colink-realtime` yields `COLINK_SERVICE_HOST`,
/// `COLINK_SERVICE_PORT_GRPC`, `COLINK_REALTIME_PORT_7700_TCP_ADDR` and the
/// like. Name and value must both have Kubernetes' shape, so a mistyped
/// setting is still refused.
fn is_service_link(rest: &str, value: &str) -> bool {
    let is_port = |v: &str| v.parse::<u16>().is_ok();
    let is_ip = |v: &str| v.parse::<std::net::IpAddr>().is_ok();
    let is_address = |v: &str| {
        ["tcp://", "udp://", "sctp://"]
            .iter()
            .any(|scheme| v.strip_prefix(scheme).is_some_and(|a| a.parse::<std::net::SocketAddr>().is_ok()))
    };
    // Whatever precedes the tail is the rest of the Service's name.
    let link = |tail: &[&str]| match tail {
        ["SERVICE", "HOST"] => is_ip(value),
        ["SERVICE", "PORT", ..] => is_port(value),
        ["PORT"] => is_address(value),
        ["PORT", number, protocol, rest @ ..] if is_port(number) && ["TCP", "UDP", "SCTP"].contains(protocol) => {
            match rest {
                [] => is_address(value),
                ["PROTO"] => value.eq_ignore_ascii_case(protocol),
                ["PORT"] => value == *number,
                ["ADDR"] => is_ip(value),
                _ => false,
            }
        }
        _ => false,
    };
    let words: Vec<&str> = rest.split('_').collect();
    (0..words.len()).any(|at| link(&words[at..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_are_embedded() {
        let config = Config::load(None, env(&[])).unwrap();
        assert_eq!(config.hosted_services(), SERVICES);
        assert!(config.database.url.is_empty());
    }

    #[test]
    fn environment_overrides_nested_keys_and_lists() {
        let config = Config::load(
            None,
            env(&[
                ("COLINK_DATABASE__URL", "postgres://db/colink_{service}"),
                ("COLINK_SERVICES", "auth,users"),
                ("COLINK_AUTH__ARGON2_ITERATIONS", "3"),
                ("COLINK_TEST_POSTGRES", "postgres://tests-only"),
                ("OTHER", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(config.database.url, "postgres://db/colink_{service}");
        assert_eq!(config.hosted_services(), vec!["auth", "users"]);
        assert_eq!(config.auth.argon2_iterations, 3);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = Config::load(None, env(&[("COLINK_SERVICES", "auth,nope"), ("COLINK_LOG__FORMAT", "xml")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope") && err.contains("xml"), "{err}");
    }

    #[test]
    fn an_s3_store_needs_a_bucket_an_endpoint_and_keys() {
        let err = Config::load(None, env(&[("COLINK_FILES__URL", "s3://My_Bucket")])).unwrap_err().to_string();
        assert!(
            err.contains("bucket name") && err.contains("files.s3.endpoint") && err.contains("secret_key"),
            "{err}"
        );
        let config = Config::load(
            None,
            env(&[
                ("COLINK_FILES__URL", "s3://colink-files"),
                ("COLINK_FILES__S3__ENDPOINT", "http://127.0.0.1:9000"),
                ("COLINK_FILES__S3__ACCESS_KEY", "ak"),
                ("COLINK_FILES__S3__SECRET_KEY", "sk"),
            ]),
        )
        .unwrap();
        assert_eq!(config.files.s3_bucket(), Some("colink-files"));
        assert_eq!(config.files.s3.region, "us-east-1");
        let err = Config::load(None, env(&[("COLINK_FILES__URL", "ftp://x")])).unwrap_err().to_string();
        assert!(err.contains("s3://<bucket>"), "{err}");
    }

    #[test]
    fn single_sign_on_needs_a_provider_a_client_and_a_way_back() {
        let err = Config::load(None, env(&[("COLINK_AUTH__MODE", "oidc")])).unwrap_err().to_string();
        assert!(
            err.contains("auth.oidc.issuer") && err.contains("client_id") && err.contains("redirect_urls"),
            "{err}"
        );
        let config = Config::load(
            None,
            env(&[
                ("COLINK_AUTH__MODE", "oidc"),
                ("COLINK_AUTH__OIDC__ISSUER", "https://sso.example.com/realms/acme"),
                ("COLINK_AUTH__OIDC__CLIENT_ID", "colink"),
                ("COLINK_AUTH__OIDC__REDIRECT_URLS", "[\"https://chat.example.com/sso/callback\"]"),
            ]),
        )
        .unwrap();
        assert_eq!(config.auth.mode, AuthMode::Oidc);
        assert_eq!(config.auth.oidc.audience(), "colink");
        let err = Config::load(None, env(&[("COLINK_AUTH__MODE", "ldap")])).unwrap_err().to_string();
        assert!(err.contains("ldap"), "{err}");
    }

    #[test]
    fn passkeys_belong_to_one_site_and_its_origins() {
        let config = Config::load(None, env(&[])).unwrap();
        assert_eq!(config.auth.passkeys.allowed_origins(), (vec!["http://localhost".to_string()], true));
        let config = Config::load(None, env(&[("COLINK_AUTH__PASSKEYS__RP_ID", "chat.example.com")])).unwrap();
        assert_eq!(config.auth.passkeys.allowed_origins(), (vec!["https://chat.example.com".to_string()], false));
        let err = Config::load(
            None,
            env(&[
                ("COLINK_AUTH__PASSKEYS__RP_ID", "example.com"),
                (
                    "COLINK_AUTH__PASSKEYS__ORIGINS",
                    "[\"https://chat.example.com\", \"https://evil.test\", \"ftp://example.com\"]",
                ),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("\"https://evil.test\" is not on") && err.contains("ftp://example.com"), "{err}");
        assert!(!err.contains("chat.example.com\" is not"), "{err}");
        let err = Config::load(None, env(&[("COLINK_AUTH__PASSKEYS__RP_ID", "https://chat.example.com")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("auth.passkeys.rp_id"), "{err}");
    }

    #[test]
    fn a_node_starts_among_kubernetes_service_links_yet_refuses_typos() {
        let links = [
            ("COLINK_SERVICE_HOST", "10.96.0.12"),
            ("COLINK_SERVICE_PORT", "7700"),
            ("COLINK_SERVICE_PORT_GRPC", "7700"),
            ("COLINK_PORT", "tcp://10.96.0.12:7700"),
            ("COLINK_PORT_7700_TCP", "tcp://10.96.0.12:7700"),
            ("COLINK_PORT_7700_TCP_PROTO", "tcp"),
            ("COLINK_PORT_7700_TCP_PORT", "7700"),
            ("COLINK_PORT_7700_TCP_ADDR", "10.96.0.12"),
            ("COLINK_REALTIME_SERVICE_HOST", "fd00::7"),
            ("COLINK_REALTIME_SERVICE_PORT_GRPC_WEB", "8080"),
            ("COLINK_REALTIME_PORT", "tcp://[fd00::7]:7700"),
            ("COLINK_REALTIME_PORT_7700_TCP_ADDR", "fd00::7"),
            ("COLINK_LISTEN", "0.0.0.0:7700"),
        ];
        let config = Config::load(None, env(&links)).unwrap();
        assert_eq!(config.listen.port(), 7700);
        for typo in [
            ("COLINK_LISTEN_PORT", "7700"),
            ("COLINK_SERVICE_HOST", "colink.internal"),
            ("COLINK_PORT", "7700"),
            ("COLINK_PORT_7700_TCP_ADDR", "tcp://10.96.0.12:7700"),
            ("COLINK_SERVICE_HOSTS", "10.96.0.12"),
        ] {
            let err = Config::load(None, env(&[typo])).unwrap_err().to_string();
            let key = typo.0.trim_start_matches("COLINK_").to_ascii_lowercase();
            assert!(err.contains(&key), "{typo:?}: {err}");
        }
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Config::load(None, env(&[("COLINK_DATABSE__URL", "x")])).unwrap_err();
        assert!(err.to_string().contains("databse"), "{err}");
    }
}
