//! The web client, served by the node on its own port next to gRPC and
//! gRPC-Web. gRPC calls are POSTs; every GET or HEAD is for the app. Files
//! with a content hash in their name (under `/assets/`) are cached for a
//! year; everything else is revalidated. A path that names no file gets the
//! app's page, so that the app's own routes survive a reload. Paths under
//! `/blobs/` are the local file store's signed URLs. `/healthz` and
//! `/readyz` answer plain HTTP probes (load balancers, kubelets) that do not
//! speak gRPC health, and `/metrics` is the Prometheus exposition, unless
//! it has a listener of its own (the admin listener, which serves only the
//! probes and the metrics). `/.well-known/jwks.json` publishes the keys
//! that verify access tokens, as JSON Web Keys, for a proxy that checks
//! tokens before they reach a node.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use colink_files::blobs::{Blobs, is_blob_path};
use colink_proto::auth::v1::GetJwksRequest;
use colink_proto::auth::v1::auth_service_client::AuthServiceClient;
use colink_runtime::clients::PeerChannel;
use colink_runtime::metrics::Metrics;
use futures_util::future::BoxFuture;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));
}

const INDEX: &str = "/index.html";
const JWKS_PATH: &str = "/.well-known/jwks.json";
const HASHED: &str = "/assets/";

/// A built file by its path from the site root.
pub fn asset(path: &str) -> Option<&'static [u8]> {
    embedded::ASSETS.binary_search_by(|(p, _)| (*p).cmp(path)).ok().map(|i| embedded::ASSETS[i].1)
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// The answer to a GET or HEAD for `path`.
pub fn respond(method: &Method, path: &str) -> Response<Full<Bytes>> {
    let (path, body) = match asset(path) {
        Some(body) if path != "/" => (path, body),
        // Hashed files are never the page: a missing one is an old build's.
        None if path.starts_with(HASHED) => return status(StatusCode::NOT_FOUND),
        _ => match asset(INDEX) {
            Some(body) => (INDEX, body),
            None => return status(StatusCode::NOT_FOUND),
        },
    };
    let cache = if path.starts_with(HASHED) { "public, max-age=31536000, immutable" } else { "no-cache" };
    let body = if method == Method::HEAD { Bytes::new() } else { Bytes::from_static(body) };
    let mut response = Response::new(Full::new(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(path)));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// `/healthz`: the process answers. `/readyz`: it also serves calls (it
/// has started and is not shutting down).
fn probe(path: &str, ready: &AtomicBool) -> Option<Response<Full<Bytes>>> {
    let up = match path {
        "/healthz" => true,
        "/readyz" => ready.load(Ordering::Relaxed),
        _ => return None,
    };
    let (code, body) = if up { (StatusCode::OK, "ok\n") } else { (StatusCode::SERVICE_UNAVAILABLE, "not ready\n") };
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = code;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Some(response)
}

/// The verifying keys, from the auth service, as a JWK Set.
async fn jwks(mut auth: AuthServiceClient<PeerChannel>) -> Response<Full<Bytes>> {
    let keys = match auth.get_jwks(GetJwksRequest::default()).await {
        Ok(answer) => answer.into_inner().keys,
        Err(refused) => {
            tracing::warn!(error = %refused, "cannot publish the token keys");
            return status(StatusCode::SERVICE_UNAVAILABLE);
        }
    };
    let keys: Vec<serde_json::Value> = keys
        .into_iter()
        .map(
            |k| serde_json::json!({ "kty": k.kty, "crv": k.crv, "x": k.x, "kid": k.kid, "alg": k.alg, "use": k.r#use }),
        )
        .collect();
    let body = serde_json::json!({ "keys": keys }).to_string();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/jwk-set+json"));
    // Keys rotate: a proxy may keep them a few minutes.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
    response
}

async fn exposition(metrics: &Metrics) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(metrics.render().await)));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(METRICS_TYPE));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = code;
    response
}

/// The Prometheus text format's content type.
const METRICS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Puts the app, the file store's URLs, the probes and the metrics in front
/// of the node's gRPC services.
#[derive(Clone)]
pub struct WebAppLayer {
    blobs: Option<Blobs>,
    ready: Arc<AtomicBool>,
    metrics: Option<Arc<Metrics>>,
    auth: Option<AuthServiceClient<PeerChannel>>,
    app: bool,
}

impl WebAppLayer {
    /// `ready` is what `/readyz` reports; `metrics`, when given, is served at
    /// `/metrics`.
    pub fn new(
        blobs: Option<Blobs>,
        ready: Arc<AtomicBool>,
        metrics: Option<Arc<Metrics>>,
        auth: AuthServiceClient<PeerChannel>,
    ) -> Self {
        Self { blobs, ready, metrics, auth: Some(auth), app: true }
    }

    /// The admin listener's pages: the probes and the metrics, nothing else.
    pub fn admin(ready: Arc<AtomicBool>, metrics: Arc<Metrics>) -> Self {
        Self { blobs: None, ready, metrics: Some(metrics), auth: None, app: false }
    }
}

impl<S> tower::Layer<S> for WebAppLayer {
    type Service = WebApp<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WebApp { inner, pages: self.clone() }
    }
}

#[derive(Clone)]
pub struct WebApp<S> {
    inner: S,
    pages: WebAppLayer,
}

impl<S, B> tower::Service<Request<B>> for WebApp<S>
where
    S: tower::Service<Request<B>, Response = Response<tonic::body::Body>, Error = Infallible>,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::fmt::Display + Send,
{
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let pages = &self.pages;
        if let Some(blobs) = pages.blobs.clone().filter(|_| is_blob_path(request.uri().path())) {
            return Box::pin(async move { Ok(blobs.serve(request).await.map(tonic::body::Body::new)) });
        }
        if request.method() == Method::GET || request.method() == Method::HEAD {
            let path = request.uri().path();
            if let Some(metrics) = pages.metrics.clone().filter(|_| path == "/metrics") {
                return Box::pin(async move { Ok(exposition(&metrics).await.map(tonic::body::Body::new)) });
            }
            if let Some(auth) = pages.auth.clone().filter(|_| path == JWKS_PATH) {
                return Box::pin(async move { Ok(jwks(auth).await.map(tonic::body::Body::new)) });
            }
            let response = match probe(path, &pages.ready) {
                Some(response) => response,
                None if pages.app => respond(request.method(), path),
                None => status(StatusCode::NOT_FOUND),
            };
            return Box::pin(std::future::ready(Ok(response.map(tonic::body::Body::new))));
        }
        if !pages.app {
            return Box::pin(std::future::ready(Ok(status(StatusCode::NOT_FOUND).map(tonic::body::Body::new))));
        }
        Box::pin(self.inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_paths_get_the_page_and_hashed_files_are_kept() {
        let page = respond(&Method::GET, "/some/route/of/the/app");
        assert_eq!(page.status(), StatusCode::OK);
        assert_eq!(page.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(page.headers()[header::CACHE_CONTROL], "no-cache");
        assert_eq!(respond(&Method::GET, "/").headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(respond(&Method::GET, "/assets/gone-1234.js").status(), StatusCode::NOT_FOUND);
        let script = embedded::ASSETS.iter().find(|(p, _)| p.ends_with(".js")).map(|(p, _)| *p);
        let script = respond(&Method::GET, script.expect("the build has a script"));
        assert_eq!(script.headers()[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
        assert_eq!(script.headers()[header::CACHE_CONTROL], "public, max-age=31536000, immutable");
    }

    #[test]
    fn probes_say_whether_the_node_serves() {
        let ready = AtomicBool::new(false);
        assert_eq!(probe("/healthz", &ready).map(|r| r.status()), Some(StatusCode::OK));
        assert_eq!(probe("/readyz", &ready).map(|r| r.status()), Some(StatusCode::SERVICE_UNAVAILABLE));
        ready.store(true, Ordering::Relaxed);
        assert_eq!(probe("/readyz", &ready).map(|r| r.status()), Some(StatusCode::OK));
        assert!(probe("/channels/general", &ready).is_none());
    }
}
