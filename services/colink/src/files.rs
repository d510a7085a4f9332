//! The files service's backends, as the configuration chooses them: where
//! the bytes live, who signs their URLs, and which scanner sees them.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use colink_files::blobs::Blobs;
use colink_files::clamd::{Address, Clamd};
use colink_files::objects::{LocalStore, ObjectStore};
use colink_files::s3::{S3Settings, S3Store};
use colink_files::signed::Signer;
use colink_runtime::config::Config;

use crate::NodeError;

pub struct Storage {
    pub objects: Arc<dyn ObjectStore>,
    /// The node's own answer to its signed URLs (the local store only).
    pub blobs: Option<Blobs>,
    pub scanner: Option<Arc<Clamd>>,
}

fn start_error(message: String) -> NodeError {
    NodeError::Start { service: "files", message }
}

pub async fn open(config: &Config, addr: SocketAddr) -> Result<Storage, NodeError> {
    let files = &config.files;
    let (objects, blobs) = match files.s3_bucket() {
        Some(bucket) => {
            let settings = S3Settings {
                endpoint: files.s3.endpoint.clone(),
                public_endpoint: files.s3.public_endpoint.clone(),
                region: files.s3.region.clone(),
                bucket: bucket.to_string(),
                access_key: files.s3.access_key.clone(),
                secret_key: files.s3.secret_key.clone(),
            };
            let store = S3Store::open(&settings)
                .await
                .map_err(|e| start_error(format!("S3 bucket {bucket:?} at {}: {e}", files.s3.endpoint)))?;
            (Arc::new(store) as Arc<dyn ObjectStore>, None)
        }
        None => {
            let store = Arc::new(local_store(config, addr)?);
            (store.clone() as Arc<dyn ObjectStore>, Some(Blobs::new(store)))
        }
    };
    let scanner = scanner(config);
    Ok(Storage { objects, blobs, scanner })
}

/// Files under the data directory, behind URLs this node signs and serves.
fn local_store(config: &Config, addr: SocketAddr) -> Result<LocalStore, NodeError> {
    let files = &config.files;
    let root = config.data_dir.join("files");
    let key = match files.signing_key.as_str() {
        "" => kept_key(&root).map_err(|e| start_error(format!("signing key under {}: {e}", root.display())))?,
        key => key.as_bytes().to_vec(),
    };
    let base = match files.public_url.as_str() {
        "" if addr.ip().is_unspecified() => format!("http://127.0.0.1:{}", addr.port()),
        "" => format!("http://{addr}"),
        url => url.to_string(),
    };
    LocalStore::open(root.join("objects"), Signer::new(key, &base))
        .map_err(|e| start_error(format!("object folder: {e}")))
}

/// The virus scanner, when one is configured; warns about settings that
/// leave uploads unscanned or waiting.
fn scanner(config: &Config) -> Option<Arc<Clamd>> {
    let files = &config.files;
    let scanner = match Address::parse(&files.scanner.clamd) {
        Some(address) => Some(Arc::new(Clamd::new(address, Duration::from_millis(files.scanner.timeout_ms)))),
        None if files.require_scan => {
            tracing::warn!("files.require_scan is on without a scanner: no upload will ever be downloadable");
            None
        }
        None => {
            tracing::warn!("no virus scanner configured (files.scanner.clamd): uploads are served UNSCANNED");
            None
        }
    };
    if scanner.is_some() && files.scanner.concurrency == 0 && config.events.url.is_empty() {
        tracing::warn!(
            "files.scanner.concurrency is 0 without Kafka: no node scans this node's uploads, which stay PENDING"
        );
    }
    if let Some(clamd) = scanner.clone().filter(|_| files.scanner.concurrency > 0) {
        tokio::spawn(async move {
            if let Err(err) = clamd.ping().await {
                tracing::warn!(error = %err, "clamd does not answer: uploads wait in PENDING until it does");
            }
        });
    }
    scanner
}

/// The node's own signing key: made once, kept readable by its owner only.
fn kept_key(root: &Path) -> std::io::Result<Vec<u8>> {
    let path = root.join("signing.key");
    match std::fs::read_to_string(&path) {
        Ok(text) if text.trim().len() >= 64 => return Ok(text.trim().as_bytes().to_vec()),
        Ok(_) => return Err(std::io::Error::other("the kept key is too short; delete it to make a new one")),
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
        Err(_) => {}
    }
    std::fs::create_dir_all(root)?;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    let text = bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    std::io::Write::write_all(&mut options.open(&path)?, text.as_bytes())?;
    Ok(text.into_bytes())
}
