//! The node's own answer to the local store's signed URLs: `PUT` stores an
//! upload's bytes, `GET` and `HEAD` serve a confirmed file. Refusals answer
//! with a status and a short plain-text reason, and store nothing.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

use crate::objects::{LocalStore, StoreError};
use crate::signed::{BLOB_PREFIX, Grant, Refused, Signed};

/// Bytes read from disk per frame of a download.
const READ_CHUNK: usize = 256 * 1024;
/// Bytes of an upload gathered before each write to disk.
const WRITE_CHUNK: usize = 256 * 1024;

/// The HTTP side of a [`LocalStore`].
#[derive(Clone)]
pub struct Blobs {
    store: Arc<LocalStore>,
}

/// Whether a request is for a stored object.
pub fn is_blob_path(path: &str) -> bool {
    path.starts_with(BLOB_PREFIX)
}

impl Blobs {
    pub fn new(store: Arc<LocalStore>) -> Self {
        Self { store }
    }

    /// Answers one request for a signed URL.
    pub async fn serve<B>(&self, request: Request<B>) -> Response<BlobBody>
    where
        B: Body + Unpin,
        B::Data: Into<Bytes>,
        B::Error: std::fmt::Display,
    {
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or_default().to_string();
        if !matches!(method, Method::GET | Method::HEAD | Method::PUT) {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "only GET, HEAD and PUT");
        }
        let signed = match self.store.signer().check(&method, &path, &query, now_secs()) {
            Ok(signed) => signed,
            Err(Refused::Malformed(what)) => return plain(StatusCode::BAD_REQUEST, &format!("malformed URL: {what}")),
            Err(refused) => return plain(StatusCode::FORBIDDEN, &refused.to_string()),
        };
        match signed {
            Signed { key, grant: Grant::Put { length, content_type, sha256 } } => {
                self.put(request, &key, length, &content_type, &sha256).await
            }
            Signed { key, grant: Grant::Get { content_type, filename, attachment } } => {
                self.get(&method, &key, &content_type, &filename, attachment).await
            }
        }
    }

    async fn put<B>(
        &self,
        request: Request<B>,
        key: &str,
        length: u64,
        content_type: &str,
        sha256: &str,
    ) -> Response<BlobBody>
    where
        B: Body + Unpin,
        B::Data: Into<Bytes>,
        B::Error: std::fmt::Display,
    {
        // Only uploads are writable: a confirmed file's key never is.
        let Some(file_id) = key.strip_prefix("uploads/") else {
            return plain(StatusCode::FORBIDDEN, "this URL cannot store bytes");
        };
        // After confirmation the bytes are the confirmed file's, and the
        // upload URL has nothing left to write to.
        if self.store.path(&format!("files/{file_id}")).is_ok_and(|kept| kept.exists()) {
            return plain(StatusCode::CONFLICT, "this upload is already confirmed");
        }
        let headers = request.headers();
        let sent_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
        if sent_type != content_type {
            return plain(StatusCode::BAD_REQUEST, &format!("Content-Type must be {content_type}"));
        }
        let sent_length = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok());
        if sent_length.is_some_and(|l| l.parse::<u64>().ok() != Some(length)) {
            return plain(StatusCode::BAD_REQUEST, &format!("Content-Length must be {length}"));
        }
        let (mut file, partial) = match self.store.incoming(key).await {
            Ok(opened) => opened,
            Err(err) => return store_failure(err),
        };
        let outcome = receive(request.into_body(), &mut file, length, sha256).await;
        let outcome = match outcome {
            Ok(()) => finish(&mut file).await.map_err(|e| plain(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())),
            Err(refusal) => Err(refusal),
        };
        drop(file);
        let stored = match outcome {
            Ok(()) => match self.store.path(key) {
                Ok(path) => tokio::fs::rename(&partial, path).await.map_err(|e| store_failure(e.into())),
                Err(err) => Err(store_failure(err)),
            },
            Err(refusal) => Err(refusal),
        };
        match stored {
            Ok(()) => plain(StatusCode::OK, ""),
            Err(refusal) => {
                let _ = tokio::fs::remove_file(&partial).await;
                refusal
            }
        }
    }

    async fn get(
        &self,
        method: &Method,
        key: &str,
        content_type: &str,
        filename: &str,
        attachment: bool,
    ) -> Response<BlobBody> {
        if !(key.starts_with("files/") || key.starts_with("thumbnails/")) {
            return plain(StatusCode::FORBIDDEN, "this URL cannot read bytes");
        }
        let path = match self.store.path(key) {
            Ok(path) => path,
            Err(err) => return store_failure(err),
        };
        let file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return plain(StatusCode::NOT_FOUND, "gone"),
            Err(err) => return store_failure(err.into()),
        };
        let length = match file.metadata().await {
            Ok(meta) => meta.len(),
            Err(err) => return store_failure(err.into()),
        };
        let body = if method == Method::HEAD { BlobBody::empty() } else { BlobBody::file(file, length) };
        let mut response = Response::new(body);
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(content_type) {
            headers.insert(header::CONTENT_TYPE, value);
        }
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        if let Ok(value) = HeaderValue::from_str(&content_disposition(filename, attachment)) {
            headers.insert(header::CONTENT_DISPOSITION, value);
        }
        // Served bytes are content, never a page of this origin.
        headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox; default-src 'none'"));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=3600"));
        response
    }
}

/// Streams the body into the file: exactly `length` bytes, and the right
/// checksum when one was promised. Frames are gathered into large writes:
/// each write is a hop to a blocking thread.
async fn receive<B>(
    mut body: B,
    file: &mut tokio::fs::File,
    length: u64,
    sha256: &str,
) -> Result<(), Response<BlobBody>>
where
    B: Body + Unpin,
    B::Data: Into<Bytes>,
    B::Error: std::fmt::Display,
{
    let failed = |e: std::io::Error| plain(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
    let mut received = 0u64;
    let mut hasher = (!sha256.is_empty()).then(Sha256::new);
    let mut gathered = BytesMut::with_capacity(WRITE_CHUNK);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| plain(StatusCode::BAD_REQUEST, &format!("the upload broke off: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        let data: Bytes = data.into();
        received += data.len() as u64;
        if received > length {
            return Err(plain(StatusCode::PAYLOAD_TOO_LARGE, &format!("more than the {length} bytes declared")));
        }
        if let Some(hasher) = hasher.as_mut() {
            hasher.update(&data);
        }
        gathered.extend_from_slice(&data);
        if gathered.len() >= WRITE_CHUNK {
            file.write_all(&gathered).await.map_err(failed)?;
            gathered.clear();
        }
    }
    file.write_all(&gathered).await.map_err(failed)?;
    if received != length {
        return Err(plain(StatusCode::BAD_REQUEST, &format!("{received} bytes arrived but {length} were declared")));
    }
    if hasher.is_some_and(|h| hex::encode(h.finalize()) != sha256) {
        return Err(plain(StatusCode::BAD_REQUEST, "the bytes do not match the declared sha256"));
    }
    Ok(())
}

/// The bytes are on disk before the upload is answered.
async fn finish(file: &mut tokio::fs::File) -> std::io::Result<()> {
    file.flush().await?;
    file.sync_all().await
}

pub(crate) fn content_disposition(filename: &str, attachment: bool) -> String {
    let kind = if attachment { "attachment" } else { "inline" };
    // An ASCII fallback, and the exact name percent-encoded (RFC 6266).
    let fallback: String = filename
        .chars()
        .map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' })
        .collect();
    let encoded: String = filename
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("{kind}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

fn now_secs() -> i64 {
    colink_runtime::ids::now_micros() / 1_000_000
}

fn store_failure(err: StoreError) -> Response<BlobBody> {
    match err {
        StoreError::InvalidKey(_) => plain(StatusCode::BAD_REQUEST, &err.to_string()),
        StoreError::Io(_) | StoreError::Settings(_) => {
            tracing::warn!(error = %err, "local object store failed");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "the object store failed")
        }
    }
}

fn plain(status: StatusCode, text: &str) -> Response<BlobBody> {
    let mut response = Response::new(BlobBody::bytes(Bytes::from(text.to_string())));
    *response.status_mut() = status;
    if !text.is_empty() {
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    }
    response
}

/// A response body: a short text, or a file read in chunks.
pub struct BlobBody {
    inner: Inner,
}

enum Inner {
    Bytes(Option<Bytes>),
    File { file: Pin<Box<tokio::fs::File>>, left: u64 },
}

impl BlobBody {
    fn empty() -> Self {
        Self { inner: Inner::Bytes(None) }
    }

    fn bytes(bytes: Bytes) -> Self {
        Self { inner: Inner::Bytes((!bytes.is_empty()).then_some(bytes)) }
    }

    fn file(file: tokio::fs::File, length: u64) -> Self {
        Self { inner: Inner::File { file: Box::pin(file), left: length } }
    }
}

impl Body for BlobBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match &mut self.inner {
            Inner::Bytes(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Inner::File { file, left } => {
                if *left == 0 {
                    return Poll::Ready(None);
                }
                let want = (*left).min(READ_CHUNK as u64) as usize;
                let mut chunk = BytesMut::zeroed(want);
                let mut buf = ReadBuf::new(&mut chunk);
                match file.as_mut().poll_read(cx, &mut buf) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Err(err)) => Poll::Ready(Some(Err(err))),
                    Poll::Ready(Ok(())) => {
                        let n = buf.filled().len();
                        if n == 0 {
                            // The file shrank under us: end short rather than hang.
                            *left = 0;
                            return Poll::Ready(Some(Err(std::io::Error::other("file ended early"))));
                        }
                        *left -= n as u64;
                        chunk.truncate(n);
                        Poll::Ready(Some(Ok(Frame::data(chunk.freeze()))))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Bytes(bytes) => bytes.is_none(),
            Inner::File { left, .. } => *left == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Bytes(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Inner::File { left, .. } => SizeHint::with_exact(*left),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_survive_the_disposition_header() {
        assert_eq!(
            content_disposition("r\u{e9}sum\u{e9} \"v2\".pdf", true),
            "attachment; filename=\"r_sum_ _v2_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22v2%22.pdf"
        );
        assert!(content_disposition("a.png", false).starts_with("inline; "));
    }
}
