//! Objects in an S3 bucket (Amazon S3, MinIO or any server of the S3
//! protocol). Clients upload and download with presigned URLs (signature
//! version 4); the node itself checks, reads, moves and deletes objects
//! through the same client.
//!
//! A presigned PUT binds the method, the key and the expiry, but not the
//! length: S3 can only bound an upload's size through a POST form. An
//! upload of the wrong size is refused when it is confirmed, and an upload
//! never confirmed is deleted once it is abandoned.

use futures_util::TryStreamExt;
use http::Method;
use minio::s3::MinioClient;
use minio::s3::builders::{CopySource, ObjectContent};
use minio::s3::client::MinioClientBuilder;
use minio::s3::creds::StaticProvider;
use minio::s3::error::{Error as S3Error, S3ServerError};
use minio::s3::http::BaseUrl;
use minio::s3::multimap_ext::{Multimap, MultimapExt};
use minio::s3::types::minio_error_response::MinioErrorCode;
use minio::s3::types::{BucketName, ObjectKey, S3Api};

use crate::blobs::content_disposition;
use crate::objects::{ObjectReader, ObjectStore, StoreError, UploadUrl};

/// Where the bucket is and who may use it.
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// `http(s)://host:port` of the S3 API, as this node reaches it.
    pub endpoint: String,
    /// The same, as clients reach it; empty when it is `endpoint`.
    pub public_endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
}

pub struct S3Store {
    client: MinioClient,
    /// Signs the URLs handed to clients, for the host they reach.
    presigner: MinioClient,
    bucket: String,
}

fn store_error(err: S3Error) -> StoreError {
    StoreError::Io(std::io::Error::other(err.to_string()))
}

fn is_missing(err: &S3Error) -> bool {
    match err {
        S3Error::S3Server(S3ServerError::S3Error(response)) => {
            matches!(response.code(), MinioErrorCode::NoSuchKey | MinioErrorCode::ResourceNotFound)
        }
        S3Error::S3Server(S3ServerError::HttpError(404, _)) => true,
        _ => false,
    }
}

impl S3Store {
    /// Connects, and makes the bucket when it does not exist yet.
    pub async fn open(settings: &S3Settings) -> Result<Self, StoreError> {
        let client = client_for(&settings.endpoint, settings)?;
        let presigner = match settings.public_endpoint.as_str() {
            "" => client.clone(),
            public => client_for(public, settings)?,
        };
        let store = Self { client, presigner, bucket: settings.bucket.clone() };
        let exists = store.client.bucket_exists(&store.bucket).map_err(invalid)?.build().send().await;
        if !exists.map_err(store_error)?.exists() {
            store.client.create_bucket(&store.bucket).map_err(invalid)?.build().send().await.map_err(store_error)?;
        }
        Ok(store)
    }

    async fn presign(&self, method: Method, key: &str, query: Multimap, expires: i64) -> Result<String, StoreError> {
        let now = colink_runtime::ids::now_micros() / 1_000_000;
        let seconds = u32::try_from((expires - now).max(1)).unwrap_or(u32::MAX);
        let presigned = self
            .presigner
            .get_presigned_object_url(&self.bucket, key, method)
            .map_err(invalid)?
            .extra_query_params(Some(query))
            .expiry_seconds(Some(seconds))
            .build()
            .send()
            .await
            .map_err(store_error)?;
        Ok(presigned.url)
    }
}

fn invalid(err: impl std::fmt::Display) -> StoreError {
    StoreError::InvalidKey(err.to_string())
}

fn client_for(endpoint: &str, settings: &S3Settings) -> Result<MinioClient, StoreError> {
    let wrong = |what: String| StoreError::Settings(what);
    let mut base: BaseUrl = endpoint.parse().map_err(|e| wrong(format!("files.s3 endpoint {endpoint:?}: {e}")))?;
    if !settings.region.is_empty() {
        base.region = settings.region.parse().map_err(|e| wrong(format!("files.s3.region: {e}")))?;
    }
    let credentials = StaticProvider::new(&settings.access_key, &settings.secret_key, None);
    MinioClientBuilder::new(base).provider(Some(credentials)).skip_region_lookup(true).build().map_err(store_error)
}

#[async_trait::async_trait]
impl ObjectStore for S3Store {
    async fn upload_url(
        &self,
        key: &str,
        length: u64,
        content_type: &str,
        _sha256: &str,
        expires: i64,
    ) -> Result<UploadUrl, StoreError> {
        let url = self.presign(Method::PUT, key, Multimap::new(), expires).await?;
        Ok(UploadUrl::put(url, content_type, length))
    }

    async fn download_url(
        &self,
        key: &str,
        content_type: &str,
        filename: &str,
        attachment: bool,
        expires: i64,
    ) -> Result<String, StoreError> {
        // S3 answers with these headers instead of the object's own.
        let mut query = Multimap::new();
        query.add("response-content-type", content_type);
        query.add("response-content-disposition", content_disposition(filename, attachment));
        self.presign(Method::GET, key, query, expires).await
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, StoreError> {
        let answer = self.client.stat_object(&self.bucket, key).map_err(invalid)?.build().send().await;
        match answer {
            Ok(stat) => Ok(Some(stat.size().map_err(invalid)?)),
            Err(err) if is_missing(&err) => Ok(None),
            Err(err) => Err(store_error(err)),
        }
    }

    async fn read(&self, key: &str) -> Result<ObjectReader, StoreError> {
        let answer =
            self.client.get_object(&self.bucket, key).map_err(invalid)?.build().send().await.map_err(store_error)?;
        let (stream, _) = answer.into_boxed_stream().map_err(store_error)?;
        Ok(Box::pin(tokio_util::io::StreamReader::new(stream.map_err(std::io::Error::other))))
    }

    async fn put(&self, key: &str, bytes: Vec<u8>, content_type: &str) -> Result<(), StoreError> {
        self.client
            .put_object_content(&self.bucket, key, ObjectContent::from(bytes))
            .map_err(invalid)?
            .content_type(content_type.to_string())
            .build()
            .send()
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn rename(&self, from: &str, to: &str) -> Result<(), StoreError> {
        let source = CopySource::builder()
            .bucket(BucketName::new(self.bucket.as_str()).map_err(invalid)?)
            .object(ObjectKey::new(from).map_err(invalid)?)
            .build();
        self.client
            .copy_object(&self.bucket, to)
            .map_err(invalid)?
            .source(source)
            .build()
            .send()
            .await
            .map_err(store_error)?;
        self.delete(from).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self.client.delete_object(&self.bucket, key).map_err(invalid)?.build().send().await {
            Err(err) if !is_missing(&err) => Err(store_error(err)),
            _ => Ok(()),
        }
    }
}
