//! Where the bytes live: [`LocalStore`] here, `S3Store` in `s3.rs`. Clients send and fetch them straight from the
//! store through short-lived URLs; the service itself only checks, moves,
//! reads (to hash, sniff and scan) and deletes objects.
//!
//! Keys are made by the service, never by clients: `uploads/<id>` while an
//! upload URL may write to it, `files/<id>` once confirmed (no URL can write
//! there), `quarantine/<id>` for infected files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use tokio::io::AsyncRead;

use crate::signed::{Grant, Signer};

/// Bytes of an object, read in order.
pub type ObjectReader = Pin<Box<dyn AsyncRead + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object store: {0}")]
    Io(#[from] std::io::Error),
    #[error("object store: invalid key {0:?}")]
    InvalidKey(String),
    #[error("object store settings: {0}")]
    Settings(String),
}

/// A URL to send the bytes to, and the headers to send with them.
pub struct UploadUrl {
    pub url: String,
    pub headers: BTreeMap<String, String>,
}

impl UploadUrl {
    /// A URL that takes `length` bytes of `content_type` in one PUT.
    pub fn put(url: String, content_type: &str, length: u64) -> Self {
        let headers = BTreeMap::from([
            ("Content-Type".to_string(), content_type.to_string()),
            ("Content-Length".to_string(), length.to_string()),
        ]);
        Self { url, headers }
    }
}

/// One backend for the bytes: the embedded [`LocalStore`] or S3.
#[async_trait::async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// A URL that stores exactly `length` bytes of `content_type` (whose
    /// SHA-256 is `sha256`, when not empty) at `key` until `expires`
    /// (seconds since the epoch).
    async fn upload_url(
        &self,
        key: &str,
        length: u64,
        content_type: &str,
        sha256: &str,
        expires: i64,
    ) -> Result<UploadUrl, StoreError>;
    /// A URL that serves `key` as `content_type` under `filename`.
    async fn download_url(
        &self,
        key: &str,
        content_type: &str,
        filename: &str,
        attachment: bool,
        expires: i64,
    ) -> Result<String, StoreError>;
    /// The object's size, or None when there is none.
    async fn size(&self, key: &str) -> Result<Option<u64>, StoreError>;
    /// The object's bytes.
    async fn read(&self, key: &str) -> Result<ObjectReader, StoreError>;
    /// Stores bytes the service made itself (thumbnails).
    async fn put(&self, key: &str, bytes: Vec<u8>, content_type: &str) -> Result<(), StoreError>;
    /// Moves an object to another key, replacing what was there.
    async fn rename(&self, from: &str, to: &str) -> Result<(), StoreError>;
    /// Removes an object; removing a missing one succeeds.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
}

/// Objects as files in a folder, uploaded to and downloaded from the node
/// itself through URLs it signs (see `blobs.rs`).
pub struct LocalStore {
    root: PathBuf,
    signer: Signer,
}

impl LocalStore {
    /// Opens (and creates) the folder.
    pub fn open(root: PathBuf, signer: Signer) -> Result<Self, StoreError> {
        std::fs::create_dir_all(&root)?;
        Ok(Self { root, signer })
    }

    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// The file of a key. Keys are the service's own, but are checked all
    /// the same: a URL's path reaches here.
    pub fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        let valid = !key.is_empty()
            && key.split('/').all(|part| {
                !part.is_empty()
                    && part != "."
                    && part != ".."
                    && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !valid {
            return Err(StoreError::InvalidKey(key.to_string()));
        }
        Ok(self.root.join(key))
    }

    /// A fresh file next to where `key` goes, for bytes on their way in.
    pub async fn incoming(&self, key: &str) -> Result<(tokio::fs::File, PathBuf), StoreError> {
        let path = self.path(key)?;
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).map_err(|e| std::io::Error::other(e.to_string()))?;
        let partial = path.with_extension(format!("part-{}", hex::encode(suffix)));
        let file = tokio::fs::OpenOptions::new().write(true).create_new(true).open(&partial).await?;
        Ok((file, partial))
    }
}

async fn ensure_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(parent) => tokio::fs::create_dir_all(parent).await,
        None => Ok(()),
    }
}

#[async_trait::async_trait]
impl ObjectStore for LocalStore {
    async fn upload_url(
        &self,
        key: &str,
        length: u64,
        content_type: &str,
        sha256: &str,
        expires: i64,
    ) -> Result<UploadUrl, StoreError> {
        self.path(key)?;
        let grant = Grant::Put { length, content_type: content_type.to_string(), sha256: sha256.to_string() };
        Ok(UploadUrl::put(self.signer.url(key, &grant, expires), content_type, length))
    }

    async fn download_url(
        &self,
        key: &str,
        content_type: &str,
        filename: &str,
        attachment: bool,
        expires: i64,
    ) -> Result<String, StoreError> {
        self.path(key)?;
        let grant = Grant::Get { content_type: content_type.to_string(), filename: filename.to_string(), attachment };
        Ok(self.signer.url(key, &grant, expires))
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, StoreError> {
        match tokio::fs::metadata(self.path(key)?).await {
            Ok(meta) => Ok(Some(meta.len())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    async fn read(&self, key: &str) -> Result<ObjectReader, StoreError> {
        Ok(Box::pin(tokio::fs::File::open(self.path(key)?).await?))
    }

    async fn put(&self, key: &str, bytes: Vec<u8>, _content_type: &str) -> Result<(), StoreError> {
        // Written aside and moved into place: a reader never sees half.
        let (mut file, partial) = self.incoming(key).await?;
        tokio::io::AsyncWriteExt::write_all(&mut file, &bytes).await?;
        file.sync_all().await?;
        drop(file);
        tokio::fs::rename(&partial, self.path(key)?).await?;
        Ok(())
    }

    async fn rename(&self, from: &str, to: &str) -> Result<(), StoreError> {
        let (from, to) = (self.path(from)?, self.path(to)?);
        ensure_parent(&to).await?;
        tokio::fs::rename(from, to).await?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match tokio::fs::remove_file(self.path(key)?).await {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err.into()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_leave_the_folder() {
        let store =
            LocalStore::open(std::env::temp_dir().join("colink-keys-test"), Signer::new(vec![1; 32], "x")).unwrap();
        assert!(store.path("files/0190-abc").is_ok());
        for bad in ["", "../etc/passwd", "files/../../x", "/abs", "files//x", "files/a.b", "files/%2e%2e"] {
            assert!(store.path(bad).is_err(), "{bad}");
        }
    }
}
