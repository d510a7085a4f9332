//! Files: the whole upload pipeline (a URL, 1 MiB sent to it, the
//! confirmation, then the scan until the owner's stream hears the file is
//! clean), download URL issuance, and beside them clamd scanning the same
//! bytes alone, which bounds what the pipeline can reach.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use colink_files::clamd::{Address, Clamd};
use colink_proto::files::v1::files_service_client::FilesServiceClient;
use colink_proto::files::v1::{ConfirmUploadRequest, CreateUploadUrlRequest, GetDownloadUrlRequest, ScanStatus};
use colink_proto::realtime::v1::SubscribeRequest;
use colink_proto::realtime::v1::realtime_service_client::RealtimeServiceClient;
use colink_proto::realtime::v1::server_frame::Frame;
use colink_runtime::clients::with_token;
use futures_util::StreamExt;

use super::load::{Pool, User};
use super::{BenchError, Percentiles, Progress, Report, Shape, http};

/// The size of every file.
const FILE_BYTES: usize = 1024 * 1024;
/// Download URLs asked for, per file.
const URLS_PER_FILE: usize = 10;

/// The clamd this run compares with, from `BENCH_CLAMD` (the node gets it
/// too); without one, files are served unscanned.
pub fn clamd_url() -> Option<String> {
    std::env::var("BENCH_CLAMD").ok().filter(|url| !url.is_empty())
}

/// The s3s-fs binary from `BENCH_S3S`: with one, the node keeps its files
/// in a bucket of an s3s-fs server the run starts, instead of its folder.
pub fn s3s_binary() -> Option<String> {
    std::env::var("BENCH_S3S").ok().filter(|path| !path.is_empty())
}

/// Text that differs from file to file, so that no scan is a repeat;
/// eight letters per step of the generator, which runs on the same cores.
fn content(n: u64) -> Vec<u8> {
    const LETTERS: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz  \n.,e";
    let mut state = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut bytes = format!("file {n}\n").into_bytes();
    bytes.reserve(FILE_BYTES);
    while bytes.len() < FILE_BYTES {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend((0..8).map(|i| LETTERS[((state >> (i * 5)) & 31) as usize]));
    }
    bytes.truncate(FILE_BYTES);
    bytes
}

fn failed(what: &str) -> impl Fn(tonic::Status) -> BenchError + '_ {
    move |status| BenchError::Protocol(format!("{what}: {status}"))
}

pub async fn uploads(
    pool: &Pool,
    users: &[User],
    shape: &Shape,
    progress: &Progress,
    report: &mut Report,
) -> Result<(), BenchError> {
    let total = shape.messages;
    if let Some(url) = clamd_url() {
        scan_alone(&url, total, shape.senders, progress, report).await?;
    }
    // When each file was confirmed, and when its owner heard it was clean.
    let confirmed: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let scanned: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let uploaders = &users[..shape.senders.min(users.len())];
    let mut streams = Vec::new();
    for user in uploaders {
        let mut realtime = RealtimeServiceClient::new(pool.pick());
        let request = with_token(&user.token, SubscribeRequest { cursors: Vec::new(), all_channels: true });
        let mut stream = realtime.subscribe(request).await.map_err(failed("subscribe"))?.into_inner();
        let scanned = scanned.clone();
        streams.push(tokio::spawn(async move {
            while let Ok(Some(response)) = stream.message().await {
                if let Some(Frame::File(file)) = response.frame.and_then(|f| f.frame)
                    && file.scan_status != ScanStatus::Pending as i32
                    && let Ok(mut scanned) = scanned.lock()
                {
                    scanned.insert(file.file_id, Instant::now());
                }
            }
        }));
    }
    let started = Instant::now();
    let round_trips: Vec<Result<(String, usize, u32), BenchError>> = {
        let _line = progress.show("uploading", total);
        futures_util::stream::iter(0..total)
            .map(|n| {
                let user = uploaders[n as usize % uploaders.len()].clone();
                let (mut files, confirmed, progress) =
                    (FilesServiceClient::new(pool.pick()), confirmed.clone(), progress.clone());
                async move {
                    let bytes = content(n);
                    let asked = Instant::now();
                    let request = CreateUploadUrlRequest {
                        filename: format!("bench-{n}.txt"),
                        size_bytes: bytes.len() as i64,
                        mime_type: "text/plain".into(),
                        ..Default::default()
                    };
                    let upload = files
                        .create_upload_url(with_token(&user.token, request))
                        .await
                        .map_err(failed("CreateUploadUrl"))?
                        .into_inner();
                    let file_id = upload.file.map(|f| f.file_id).unwrap_or_default();
                    let headers: Vec<(&str, &str)> =
                        upload.upload_headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    let put = http::request("PUT", &upload.upload_url, &headers, &bytes, Duration::from_secs(30))
                        .await
                        .map_err(|e| BenchError::Protocol(format!("PUT: {e}")))?;
                    if put.status != 200 {
                        return Err(BenchError::Protocol(format!("PUT answered {}", put.status)));
                    }
                    let request = ConfirmUploadRequest { file_id: file_id.clone() };
                    let file = files
                        .confirm_upload(with_token(&user.token, request))
                        .await
                        .map_err(failed("ConfirmUpload"))?
                        .into_inner()
                        .file
                        .unwrap_or_default();
                    let now = Instant::now();
                    if let Ok(mut confirmed) = confirmed.lock() {
                        confirmed.insert(file_id.clone(), now);
                    }
                    progress.tick();
                    if file.file_id != file_id {
                        return Err(BenchError::Protocol("ConfirmUpload answered for another file".into()));
                    }
                    let took = u32::try_from(now.duration_since(asked).as_micros()).unwrap_or(u32::MAX);
                    Ok((file_id, n as usize % uploaders.len(), took))
                }
            })
            .buffer_unordered(shape.senders)
            .collect()
            .await
    };
    let mut uploaded = Vec::new();
    let mut upload_times = Vec::new();
    for result in round_trips {
        match result {
            Ok((file_id, user, took)) => {
                uploaded.push((file_id, user));
                upload_times.push(took);
            }
            Err(err) => {
                report.send_failures += 1;
                eprintln!("  upload failed: {err}");
            }
        }
    }
    // Every confirmed file must come out of its scan.
    let scanning = clamd_url().is_some();
    let deadline = Instant::now() + Duration::from_secs(shape.max_secs);
    while scanning && Instant::now() < deadline {
        let done = scanned.lock().map(|s| uploaded.iter().all(|(id, _)| s.contains_key(id))).unwrap_or(false);
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let finished = Instant::now();
    for stream in streams {
        stream.abort();
    }
    let (confirmed, scanned) = (
        confirmed.lock().map(|c| c.clone()).unwrap_or_default(),
        scanned.lock().map(|s| s.clone()).unwrap_or_default(),
    );
    let mut scan_times = Vec::new();
    let mut last_clean = started;
    for (file_id, _) in &uploaded {
        match (confirmed.get(file_id), scanned.get(file_id)) {
            (Some(at), Some(clean)) => {
                scan_times.push(u32::try_from(clean.duration_since(*at).as_micros()).unwrap_or(u32::MAX));
                last_clean = last_clean.max(*clean);
            }
            _ if scanning => report.lost += 1,
            _ => {}
        }
    }
    report.sends = uploaded.len() as u64;
    let end = if scanning { last_clean } else { finished };
    report.sends_per_s = uploaded.len() as f64 / end.duration_since(started).as_secs_f64().max(1e-9);
    report.ack_ms = Percentiles::of_micros(upload_times);
    report.latency_ms = Percentiles::of_micros(scan_times);
    report.deliveries = scanned.len() as u64;
    report.download_url_ms = Some(download_urls(pool, uploaders, &uploaded, shape.senders, progress).await?);
    Ok(())
}

/// Asks for download URLs of the uploaded files, several times each.
async fn download_urls(
    pool: &Pool,
    uploaders: &[User],
    uploaded: &[(String, usize)],
    concurrency: usize,
    progress: &Progress,
) -> Result<Percentiles, BenchError> {
    let asks: Vec<(String, usize)> = (0..URLS_PER_FILE).flat_map(|_| uploaded.iter().cloned()).collect();
    let _line = progress.show("asking for download URLs", asks.len() as u64);
    let times: Vec<Result<u32, BenchError>> = futures_util::stream::iter(asks)
        .map(|(file_id, user)| {
            let token = uploaders[user].token.clone();
            let (mut files, progress) = (FilesServiceClient::new(pool.pick()), progress.clone());
            async move {
                let asked = Instant::now();
                let request = GetDownloadUrlRequest { file_id, ..Default::default() };
                files.get_download_url(with_token(&token, request)).await.map_err(failed("GetDownloadUrl"))?;
                progress.tick();
                Ok(u32::try_from(asked.elapsed().as_micros()).unwrap_or(u32::MAX))
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    Ok(Percentiles::of_micros(times.into_iter().collect::<Result<_, _>>()?))
}

/// clamd scanning the same kind of bytes with no Colink in between.
async fn scan_alone(
    url: &str,
    total: u64,
    concurrency: usize,
    progress: &Progress,
    report: &mut Report,
) -> Result<(), BenchError> {
    let address =
        Address::parse(url).ok_or_else(|| BenchError::Server(format!("BENCH_CLAMD: {url:?} is not a clamd URL")))?;
    let clamd = Arc::new(Clamd::new(address, Duration::from_secs(60)));
    let _line = progress.show("clamd alone", total);
    let started = Instant::now();
    let times: Vec<Result<u32, BenchError>> = futures_util::stream::iter(0..total)
        .map(|n| {
            let (clamd, progress) = (clamd.clone(), progress.clone());
            async move {
                // Other bytes than the pipeline's, so that neither warms
                // the other's cache.
                let bytes = content(n + 1_000_000_000);
                let asked = Instant::now();
                clamd.scan(&mut bytes.as_slice()).await.map_err(|e| BenchError::Server(e.to_string()))?;
                progress.tick();
                Ok(u32::try_from(asked.elapsed().as_micros()).unwrap_or(u32::MAX))
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let times: Vec<u32> = times.into_iter().collect::<Result<_, _>>()?;
    report.scan_alone_per_s = Some(times.len() as f64 / started.elapsed().as_secs_f64().max(1e-9));
    report.scan_alone_ms = Some(Percentiles::of_micros(times));
    Ok(())
}
