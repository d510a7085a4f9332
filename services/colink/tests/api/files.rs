//! Files: the upload flow through signed URLs, the virus scan against a
//! real clamd (`COLINK_TEST_CLAMD`, started by `.ci/start-clamd`),
//! thumbnails, who may see and download what, quotas, and every refusal
//! changing nothing; on the local store and on an S3 server (s3s-fs,
//! `COLINK_TEST_S3S`, installed by `.ci/install-s3s`).

use std::sync::Arc;
use std::time::Duration;

use colink_proto::admin::v1::ListAuditLogsRequest;
use colink_proto::channels::v1::ChannelKind;
use colink_proto::files::v1::{
    ConfirmUploadRequest, CreateUploadUrlRequest, CreateUploadUrlResponse, DeleteFileRequest, File, FileAccess,
    FileState, FileType, GetDownloadUrlRequest, GetFileRequest, GetQuotaRequest, ListFileRetentionPoliciesRequest,
    ListFileSharesRequest, ListFilesRequest, ListRetentionRunsRequest, RevokeFileShareRequest, RunFileRetentionRequest,
    ScanStatus, SetFileRetentionPolicyRequest, SetQuotaRequest, ShareFileRequest, SharePermission, ThumbnailSize,
    UpdateFileRequest, UpdateFileRetentionRequest,
};
use colink_proto::messaging::v1::channel_event::Kind;
use colink_proto::messaging::v1::{
    AttachmentChanged, GetMessageRequest, ListMessagesRequest, Message, SendMessageRequest,
};
use colink_proto::realtime::v1::SubscribeRequest;
use colink_proto::realtime::v1::server_frame::Frame;
use colink_runtime::clock::ManualClock;
use tonic::Code;

use crate::helpers::{TestApp, TestUser, assert_code, assert_invalid, event, frame, http};
use crate::servers::{S3_ACCESS_KEY, S3_SECRET_KEY, Server, eventually, free_port};
use colink_files::testing::{SERIAL, photo};

/// The 68-byte EICAR test file: harmless, and reported by every scanner.
pub(crate) const EICAR: &str = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

fn clamd_url() -> String {
    std::env::var("COLINK_TEST_CLAMD").expect("COLINK_TEST_CLAMD names a clamd (see .ci/start-clamd)")
}

pub(crate) async fn scanned_app() -> TestApp {
    let clamd = clamd_url();
    TestApp::spawn_with(move |c| c.files.scanner.clamd = clamd).await
}

pub(crate) fn upload_request(name: &str, mime: &str, bytes: &[u8], channel_id: &str) -> CreateUploadUrlRequest {
    CreateUploadUrlRequest {
        filename: name.into(),
        size_bytes: bytes.len() as i64,
        mime_type: mime.into(),
        channel_id: channel_id.into(),
        ..Default::default()
    }
}

async fn start_upload(app: &TestApp, user: &TestUser, request: CreateUploadUrlRequest) -> CreateUploadUrlResponse {
    app.files().create_upload_url(user.req(request)).await.unwrap().into_inner()
}

/// PUTs the bytes to the upload URL with the headers it asks for.
async fn put(upload: &CreateUploadUrlResponse, bytes: &[u8]) -> u16 {
    let headers: Vec<(&str, &str)> = upload.upload_headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    http("PUT", &upload.upload_url, &headers, bytes).await.status
}

async fn confirm(app: &TestApp, user: &TestUser, file_id: &str) -> Result<File, tonic::Status> {
    let request = ConfirmUploadRequest { file_id: file_id.into() };
    app.files().confirm_upload(user.req(request)).await.map(|r| r.into_inner().file.unwrap())
}

/// Uploads and confirms a file.
pub(crate) async fn upload(app: &TestApp, user: &TestUser, request: CreateUploadUrlRequest, bytes: &[u8]) -> File {
    let started = start_upload(app, user, request).await;
    assert_eq!(put(&started, bytes).await, 200);
    confirm(app, user, &started.file.unwrap().file_id).await.unwrap()
}

async fn get_file(app: &TestApp, user: &TestUser, file_id: &str) -> Result<File, tonic::Status> {
    let request = GetFileRequest { file_id: file_id.into() };
    app.files().get_file(user.req(request)).await.map(|r| r.into_inner().file.unwrap())
}

async fn download_url(app: &TestApp, user: &TestUser, file_id: &str) -> Result<String, tonic::Status> {
    let request = GetDownloadUrlRequest { file_id: file_id.into(), ..Default::default() };
    app.files().get_download_url(user.req(request)).await.map(|r| r.into_inner().url)
}

pub(crate) async fn scan_result(app: &TestApp, user: &TestUser, file_id: &str) -> File {
    eventually(Duration::from_secs(20), "the scan", || async {
        let file = get_file(app, user, file_id).await.unwrap();
        (file.scan_status != ScanStatus::Pending as i32).then_some(file)
    })
    .await
}

#[tokio::test]
#[ignore = "needs clamd: COLINK_TEST_CLAMD"]
async fn a_clean_upload_is_scanned_then_served_to_the_channel_and_no_one_else() {
    let app = scanned_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let room = app.create_channel(&alice, "files", ChannelKind::Private, &[&bob]).await;
    let mut stream = app
        .realtime()
        .subscribe(alice.req(SubscribeRequest { cursors: vec![], all_channels: true }))
        .await
        .unwrap()
        .into_inner();
    let bytes = "the minutes of Monday's meeting\n".repeat(100);
    let file = upload(
        &app,
        &alice,
        upload_request("minutes.txt", "text/plain", bytes.as_bytes(), &room.channel_id),
        bytes.as_bytes(),
    )
    .await;
    assert_eq!(file.state, FileState::Ready as i32);
    assert_eq!(file.access, FileAccess::Channel as i32);
    assert_eq!(file.sha256.len(), 64);
    // The owner's stream hears when it is clean.
    let told = loop {
        if let Frame::File(told) = frame(&mut stream).await {
            break told;
        }
    };
    assert_eq!((told.file_id.as_str(), told.scan_status), (file.file_id.as_str(), ScanStatus::Clean as i32));
    // A member of the channel downloads the very bytes.
    let url = download_url(&app, &bob, &file.file_id).await.unwrap();
    let answer = http("GET", &url, &[], b"").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, bytes.as_bytes());
    assert_eq!(answer.header("content-type"), Some("text/plain"));
    assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
    // An outsider gets nothing: no metadata, no URL, no thumbnail, no listing.
    assert_code(get_file(&app, &carol, &file.file_id).await, Code::PermissionDenied);
    assert_code(download_url(&app, &carol, &file.file_id).await, Code::PermissionDenied);
    let thumbnail = GetDownloadUrlRequest {
        file_id: file.file_id.clone(),
        thumbnail_size: ThumbnailSize::Small as i32,
        ..Default::default()
    };
    assert_code(app.files().get_download_url(carol.req(thumbnail)).await, Code::PermissionDenied);
    let listing = ListFilesRequest { channel_id: room.channel_id.clone(), ..Default::default() };
    assert_code(app.files().list_files(carol.req(listing.clone())).await, Code::PermissionDenied);
    let listed = app.files().list_files(bob.req(listing)).await.unwrap().into_inner().files;
    assert_eq!(listed.iter().map(|f| f.file_id.as_str()).collect::<Vec<_>>(), [file.file_id.as_str()]);
}

#[tokio::test]
#[ignore = "needs clamd: COLINK_TEST_CLAMD"]
async fn an_infected_upload_is_quarantined_audited_and_never_served() {
    let app = scanned_app().await;
    let admin = app.register("root").await; // the first account is the admin
    let mallory = app.register("mallory").await;
    let file =
        upload(&app, &mallory, upload_request("notes.txt", "text/plain", EICAR.as_bytes(), ""), EICAR.as_bytes()).await;
    let scanned = scan_result(&app, &mallory, &file.file_id).await;
    assert_eq!(scanned.scan_status, ScanStatus::Infected as i32);
    // Not for the owner, not for an admin.
    let refused = assert_code(download_url(&app, &mallory, &file.file_id).await, Code::FailedPrecondition);
    assert!(refused.message().contains("infected"), "{refused:?}");
    assert_code(download_url(&app, &admin, &file.file_id).await, Code::FailedPrecondition);
    let audit = eventually(Duration::from_secs(10), "the audit entry", || async {
        let request = ListAuditLogsRequest { target_id: file.file_id.clone(), ..Default::default() };
        let entries = app.admin().list_audit_logs(admin.req(request)).await.unwrap().into_inner().audit_logs;
        entries.into_iter().find(|e| e.action == "file.scanned")
    })
    .await;
    assert_eq!(audit.metadata.get("signature").map(String::as_str), Some("Eicar-Test-Signature.UNOFFICIAL"));
}

/// Forwards connections from a port to clamd, once started.
async fn forward(listener: tokio::net::TcpListener, to: String) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else { return };
        let to = to.clone();
        tokio::spawn(async move {
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(&to).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

#[tokio::test]
#[ignore = "needs clamd: COLINK_TEST_CLAMD"]
async fn while_clamd_is_down_files_wait_unserved_and_are_scanned_when_it_returns() {
    let clamd = clamd_url();
    let port = free_port();
    let app = TestApp::spawn_with(move |c| c.files.scanner.clamd = format!("tcp://127.0.0.1:{port}")).await;
    let alice = app.register("alice").await;
    let file = upload(&app, &alice, upload_request("a.txt", "text/plain", b"plain words", ""), b"plain words").await;
    assert_eq!(file.scan_status, ScanStatus::Pending as i32);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(get_file(&app, &alice, &file.file_id).await.unwrap().scan_status, ScanStatus::Pending as i32);
    assert_code(download_url(&app, &alice, &file.file_id).await, Code::FailedPrecondition);
    // The scanner comes back on the configured port.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let to = clamd.trim_start_matches("tcp://").to_string();
    tokio::spawn(forward(listener, to));
    let scanned = scan_result(&app, &alice, &file.file_id).await;
    assert_eq!(scanned.scan_status, ScanStatus::Clean as i32);
    assert!(download_url(&app, &alice, &file.file_id).await.is_ok());
}

#[tokio::test]
async fn without_a_scanner_files_are_unscanned_unless_the_node_requires_a_scan() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let file = upload(&app, &alice, upload_request("a.txt", "text/plain", b"words", ""), b"words").await;
    assert_eq!(file.scan_status, ScanStatus::Unscanned as i32);
    let request = GetDownloadUrlRequest { file_id: file.file_id.clone(), as_attachment: true, ..Default::default() };
    let answer = app.files().get_download_url(alice.req(request)).await.unwrap().into_inner();
    assert_eq!(answer.scan_status, ScanStatus::Unscanned as i32);
    let got = http("GET", &answer.url, &[], b"").await;
    assert_eq!((got.status, got.body.as_slice()), (200, &b"words"[..]));
    assert!(got.header("content-disposition").unwrap().starts_with("attachment;"));

    let strict = TestApp::spawn_with(|c| c.files.require_scan = true).await;
    let bob = strict.register("bob").await;
    let file = upload(&strict, &bob, upload_request("b.txt", "text/plain", b"words", ""), b"words").await;
    assert_eq!(file.scan_status, ScanStatus::Unscanned as i32);
    assert_code(download_url(&strict, &bob, &file.file_id).await, Code::FailedPrecondition);
}

/// The URL with the first hex digit after `marker` changed.
fn flip_after(url: &str, marker: &str) -> String {
    let at = url.find(marker).unwrap() + marker.len();
    let mut url = url.to_string();
    let digit = if &url[at..at + 1] == "0" { "1" } else { "0" };
    url.replace_range(at..at + 1, digit);
    url
}

#[tokio::test]
async fn signed_urls_refuse_tampering_other_objects_and_other_purposes() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bytes = b"0123456789";
    let started = start_upload(&app, &alice, upload_request("n.txt", "text/plain", bytes, "")).await;
    let file_id = started.file.clone().unwrap().file_id;
    let headers = [("Content-Type", "text/plain")];
    let flipped = flip_after(&started.upload_url, "signature=");
    assert_eq!(http("PUT", &flipped, &headers, bytes).await.status, 403);
    let other = started.upload_url.replace(&file_id, "0190aaaa-0000-7000-8000-000000000000");
    assert_eq!(http("PUT", &other, &headers, bytes).await.status, 403);
    let longer = started.upload_url.replace("length=10", "length=11");
    assert_eq!(http("PUT", &longer, &headers, b"01234567890").await.status, 403);
    // Wrong type, too many bytes, too few: refused and nothing stored.
    assert_eq!(http("PUT", &started.upload_url, &headers, b"012345678").await.status, 400);
    assert_eq!(http("PUT", &started.upload_url, &[("Content-Type", "text/html")], bytes).await.status, 400);
    assert_eq!(
        http("PUT", &started.upload_url, &[("Content-Type", "text/plain"), ("Content-Length", "11")], b"01234567890")
            .await
            .status,
        400
    );
    assert_code(confirm(&app, &alice, &file_id).await, Code::NotFound);
    // The upload URL reads nothing.
    assert_eq!(http("GET", &started.upload_url, &[], b"").await.status, 400);
    assert_eq!(put(&started, bytes).await, 200);
    let file = confirm(&app, &alice, &file_id).await.unwrap();
    // Once confirmed, the upload URL can no longer change the bytes.
    assert_eq!(put(&started, b"abcdefghij").await, 409);
    let url = download_url(&app, &alice, &file.file_id).await.unwrap();
    assert_eq!(http("GET", &url, &[], b"").await.body, bytes);
    // A download URL stores nothing, and a changed name breaks it.
    assert_ne!(http("PUT", &url, &headers, bytes).await.status, 200);
    assert_eq!(http("GET", &url.replace("name=n.txt", "name=m.txt"), &[], b"").await.status, 403);
}

#[tokio::test]
async fn confirm_refuses_lying_types_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0";
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
    for (declared, bytes, why) in [
        ("image/png", &elf[..], "executable"),
        ("image/png", &b"just some text, honestly"[..], "plain text"),
        ("text/plain", &png[..], "image/png"),
        ("application/pdf", &b"PK\x03\x04 a zip"[..], "ZIP"),
    ] {
        let started = start_upload(&app, &alice, upload_request("x", declared, bytes, "")).await;
        let file_id = started.file.clone().unwrap().file_id;
        assert_eq!(put(&started, bytes).await, 200);
        let refused = assert_code(confirm(&app, &alice, &file_id).await, Code::FailedPrecondition);
        assert!(refused.message().contains(why), "{declared}: {refused:?}");
        let file = get_file(&app, &alice, &file_id).await.unwrap();
        assert_eq!(file.state, FileState::PendingUpload as i32, "{declared}");
    }
    // The right bytes under the same URL are then accepted.
    let started = start_upload(&app, &alice, upload_request("p.png", "image/png", png, "")).await;
    let wrong_size = http("PUT", &started.upload_url, &[("Content-Type", "image/png")], b"hello there, world!");
    assert_eq!(wrong_size.await.status, 400);
    assert_eq!(put(&started, png).await, 200);
    let file = confirm(&app, &alice, &started.file.unwrap().file_id).await.unwrap();
    assert_eq!(file.mime_type, "image/png");
    // Someone else cannot confirm it, nor see it.
    let bob = app.register("bob").await;
    assert_code(confirm(&app, &bob, &file.file_id).await, Code::PermissionDenied);
}

#[tokio::test]
async fn bad_requests_name_their_field() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let good = upload_request("a.txt", "text/plain", b"abc", "");
    let cases: Vec<(&str, CreateUploadUrlRequest)> = vec![
        ("filename", CreateUploadUrlRequest { filename: String::new(), ..good.clone() }),
        ("filename", CreateUploadUrlRequest { filename: "../etc/passwd".into(), ..good.clone() }),
        ("size_bytes", CreateUploadUrlRequest { size_bytes: 0, ..good.clone() }),
        ("size_bytes", CreateUploadUrlRequest { size_bytes: 100 * 1024 * 1024 + 1, ..good.clone() }),
        ("mime_type", CreateUploadUrlRequest { mime_type: "application/x-msdownload".into(), ..good.clone() }),
        ("mime_type", CreateUploadUrlRequest { mime_type: "image/svg+xml".into(), ..good.clone() }),
        ("mime_type", CreateUploadUrlRequest { mime_type: "nonsense".into(), ..good.clone() }),
        ("sha256", CreateUploadUrlRequest { sha256: "ABC".into(), ..good.clone() }),
        ("channel_id", CreateUploadUrlRequest { channel_id: "nope".into(), ..good.clone() }),
        ("access", CreateUploadUrlRequest { access: FileAccess::Channel as i32, ..good.clone() }),
        ("access", CreateUploadUrlRequest { access: 99, ..good.clone() }),
    ];
    for (field, request) in cases {
        assert_invalid(app.files().create_upload_url(alice.req(request)).await, field);
    }
    let listed = app.files().list_files(alice.req(ListFilesRequest::default())).await.unwrap().into_inner();
    assert!(listed.files.is_empty(), "a refused request stored a file");
    assert_invalid(
        app.files().confirm_upload(alice.req(ConfirmUploadRequest { file_id: "x".into() })).await,
        "file_id",
    );
    let page = ListFilesRequest { page_size: 101, ..Default::default() };
    assert_invalid(app.files().list_files(alice.req(page)).await, "page_size");
    let unknown = GetFileRequest { file_id: "0190aaaa-0000-7000-8000-000000000000".into() };
    assert_code(app.files().get_file(alice.req(unknown)).await, Code::NotFound);
    // Someone else's channel is not a place to upload to.
    let bob = app.register("bob").await;
    let theirs = app.create_channel(&bob, "theirs", ChannelKind::Private, &[]).await;
    let request = upload_request("a.txt", "text/plain", b"abc", &theirs.channel_id);
    assert_code(app.files().create_upload_url(alice.req(request)).await, Code::PermissionDenied);
}

#[tokio::test]
async fn quotas_reserve_on_request_count_on_confirm_and_free_on_delete() {
    let app = TestApp::spawn().await;
    let admin = app.register("root").await;
    let alice = app.register("alice").await;
    let set = SetQuotaRequest { user_id: alice.user_id.clone(), quota_bytes: 100 };
    assert_code(app.files().set_quota(alice.req(set.clone())).await, Code::PermissionDenied);
    assert_invalid(
        app.files().set_quota(admin.req(SetQuotaRequest { quota_bytes: -1, ..set.clone() })).await,
        "quota_bytes",
    );
    app.files().set_quota(admin.req(set)).await.unwrap();
    let bytes = [b'x'; 60];
    let first = start_upload(&app, &alice, upload_request("a.txt", "text/plain", &bytes, "")).await;
    let refused = assert_code(
        app.files().create_upload_url(alice.req(upload_request("b.txt", "text/plain", &bytes, ""))).await,
        Code::ResourceExhausted,
    );
    assert!(refused.message().contains("60 reserved of 100"), "{refused:?}");
    let quota = |user: &TestUser, of: &TestUser| {
        let request = GetQuotaRequest { user_id: of.user_id.clone() };
        let mut files = app.files();
        let request = user.req(request);
        async move { files.get_quota(request).await.map(|r| r.into_inner().quota.unwrap()) }
    };
    let before = quota(&alice, &alice).await.unwrap();
    assert_eq!((before.quota_bytes, before.used_bytes, before.reserved_bytes), (100, 0, 60));
    assert_eq!(put(&first, &bytes).await, 200);
    let file = confirm(&app, &alice, &first.file.unwrap().file_id).await.unwrap();
    let after = quota(&admin, &alice).await.unwrap();
    assert_eq!((after.used_bytes, after.reserved_bytes, after.file_count), (60, 0, 1));
    assert_code(quota(&alice, &admin).await, Code::PermissionDenied);
    let deleted =
        app.files().delete_file(alice.req(DeleteFileRequest { file_id: file.file_id.clone() })).await.unwrap();
    assert_eq!(deleted.into_inner().file.unwrap().state, FileState::Deleted as i32);
    // Deleting twice changes nothing; the file is gone for its owner.
    app.files().delete_file(alice.req(DeleteFileRequest { file_id: file.file_id.clone() })).await.unwrap();
    assert_code(get_file(&app, &alice, &file.file_id).await, Code::NotFound);
    let freed = quota(&alice, &alice).await.unwrap();
    assert_eq!((freed.used_bytes, freed.reserved_bytes, freed.file_count), (0, 0, 0));
}

#[tokio::test]
async fn a_retried_request_gets_its_original_answer() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let request = CreateUploadUrlRequest {
        idempotency_key: "upload-1".into(),
        ..upload_request("a.txt", "text/plain", b"abc", "")
    };
    let first = start_upload(&app, &alice, request.clone()).await;
    let again = start_upload(&app, &alice, request.clone()).await;
    assert_eq!(
        (first.file.as_ref().unwrap().file_id.as_str(), first.upload_url.as_str()),
        (again.file.as_ref().unwrap().file_id.as_str(), again.upload_url.as_str())
    );
    let changed = CreateUploadUrlRequest { filename: "b.txt".into(), ..request };
    assert!(app.files().create_upload_url(alice.req(changed)).await.is_err());
    let quota = app.files().get_quota(alice.req(GetQuotaRequest::default())).await.unwrap().into_inner().quota.unwrap();
    assert_eq!(quota.reserved_bytes, 3, "the retry reserved again");
    assert_eq!(put(&first, b"abc").await, 200);
    let file_id = first.file.unwrap().file_id;
    let confirmed = confirm(&app, &alice, &file_id).await.unwrap();
    assert_eq!(confirm(&app, &alice, &file_id).await.unwrap(), confirmed);
}

/// A node whose clamd is not there yet; the returned call brings it.
async fn app_with_late_clamd() -> (TestApp, impl FnOnce()) {
    let clamd = clamd_url();
    let port = free_port();
    let app = TestApp::spawn_with(move |c| c.files.scanner.clamd = format!("tcp://127.0.0.1:{port}")).await;
    let bring = move || {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        tokio::spawn(forward(listener, clamd.trim_start_matches("tcp://").to_string()));
    };
    (app, bring)
}

async fn send_with_files(
    app: &TestApp,
    user: &TestUser,
    channel_id: &str,
    file_ids: &[&str],
) -> Result<Message, tonic::Status> {
    let request = SendMessageRequest {
        channel_id: channel_id.into(),
        text: "see attached".into(),
        file_ids: file_ids.iter().map(|id| id.to_string()).collect(),
        ..Default::default()
    };
    app.messaging().send_message(user.req(request)).await.map(|r| r.into_inner().message.unwrap())
}

async fn attachment_event(stream: &mut (impl crate::helpers::FrameSource + Send)) -> AttachmentChanged {
    loop {
        if let Some(Kind::AttachmentChanged(changed)) = event(stream).await.kind {
            return changed;
        }
    }
}

#[tokio::test]
#[ignore = "needs clamd: COLINK_TEST_CLAMD"]
async fn an_attachment_is_pending_until_its_scan_then_clean_live_for_the_conversation() {
    let (app, bring_clamd) = app_with_late_clamd().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let room = app.create_channel(&alice, "room", ChannelKind::Private, &[&bob]).await;
    let file = upload(&app, &alice, upload_request("plan.txt", "text/plain", b"the plan", ""), b"the plan").await;
    assert_eq!(file.scan_status, ScanStatus::Pending as i32);
    let mut stream = app.subscribe(&bob, &room.channel_id, None).await;
    let sent = send_with_files(&app, &alice, &room.channel_id, &[&file.file_id]).await.unwrap();
    assert_eq!(sent.file_ids, std::slice::from_ref(&file.file_id));
    // The conversation's members see it, pending; nobody can download it yet.
    let seen = eventually(Duration::from_secs(10), "the attachment to be recorded", || async {
        get_file(&app, &bob, &file.file_id).await.ok()
    })
    .await;
    assert_eq!(seen.scan_status, ScanStatus::Pending as i32);
    assert_code(download_url(&app, &bob, &file.file_id).await, Code::FailedPrecondition);
    assert_code(get_file(&app, &carol, &file.file_id).await, Code::PermissionDenied);
    bring_clamd();
    let changed = attachment_event(&mut stream).await;
    assert_eq!(
        (changed.message_id.as_str(), changed.file_id.as_str()),
        (sent.message_id.as_str(), file.file_id.as_str())
    );
    assert_eq!((changed.scan_status, changed.removed), (ScanStatus::Clean as i32, false));
    let url = download_url(&app, &bob, &file.file_id).await.unwrap();
    assert_eq!(http("GET", &url, &[], b"").await.body, b"the plan");
    let listing = ListFilesRequest { channel_id: room.channel_id.clone(), ..Default::default() };
    let listed = app.files().list_files(bob.req(listing)).await.unwrap().into_inner().files;
    assert_eq!(listed.iter().map(|f| f.file_id.as_str()).collect::<Vec<_>>(), [file.file_id.as_str()]);
}

#[tokio::test]
#[ignore = "needs clamd: COLINK_TEST_CLAMD"]
async fn an_infected_attachment_leaves_the_message_with_an_event() {
    let (app, bring_clamd) = app_with_late_clamd().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.create_channel(&alice, "room", ChannelKind::Private, &[&bob]).await;
    let file =
        upload(&app, &alice, upload_request("x.txt", "text/plain", EICAR.as_bytes(), ""), EICAR.as_bytes()).await;
    let mut stream = app.subscribe(&bob, &room.channel_id, None).await;
    let sent = send_with_files(&app, &alice, &room.channel_id, &[&file.file_id]).await.unwrap();
    bring_clamd();
    let changed = attachment_event(&mut stream).await;
    assert_eq!((changed.scan_status, changed.removed), (ScanStatus::Infected as i32, true));
    let request = GetMessageRequest { message_id: sent.message_id.clone() };
    let now = app.messaging().get_message(bob.req(request)).await.unwrap().into_inner().message.unwrap();
    assert!(now.file_ids.is_empty(), "{now:?}");
    // It can no longer be attached anywhere.
    let refused =
        assert_code(send_with_files(&app, &alice, &room.channel_id, &[&file.file_id]).await, Code::FailedPrecondition);
    assert!(refused.message().contains("virus scan"), "{refused:?}");
}

#[tokio::test]
async fn only_ones_own_confirmed_files_can_be_attached() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.create_channel(&alice, "room", ChannelKind::Public, &[&bob]).await;
    let bobs = upload(&app, &bob, upload_request("b.txt", "text/plain", b"bob's", ""), b"bob's").await;
    assert_code(send_with_files(&app, &alice, &room.channel_id, &[&bobs.file_id]).await, Code::PermissionDenied);
    let started = start_upload(&app, &alice, upload_request("a.txt", "text/plain", b"alice's", "")).await;
    let pending = started.file.clone().unwrap().file_id;
    assert_code(send_with_files(&app, &alice, &room.channel_id, &[&pending]).await, Code::FailedPrecondition);
    let unknown = "0190aaaa-0000-7000-8000-000000000000";
    assert_code(send_with_files(&app, &alice, &room.channel_id, &[unknown]).await, Code::NotFound);
    assert_invalid(send_with_files(&app, &alice, &room.channel_id, &["nope"]).await, "file_ids[0]");
    let history = ListMessagesRequest { channel_id: room.channel_id.clone(), ..Default::default() };
    let listed = app.messaging().list_messages(alice.req(history.clone())).await.unwrap().into_inner();
    assert!(listed.messages.is_empty(), "a refused send stored a message");
    // One's own confirmed file goes, and a retry of the send gets the original.
    assert_eq!(put(&started, b"alice's").await, 200);
    confirm(&app, &alice, &pending).await.unwrap();
    let request = SendMessageRequest {
        channel_id: room.channel_id.clone(),
        text: "mine".into(),
        file_ids: vec![pending.clone()],
        idempotency_key: "send-1".into(),
        ..Default::default()
    };
    let first = app.messaging().send_message(alice.req(request.clone())).await.unwrap().into_inner().message.unwrap();
    let again = app.messaging().send_message(alice.req(request)).await.unwrap().into_inner().message.unwrap();
    assert_eq!(first, again);
    // Members of the conversation may now see it.
    eventually(Duration::from_secs(10), "bob to see the attachment", || async {
        get_file(&app, &bob, &pending).await.ok()
    })
    .await;
    // A file may go without words; without a file, words are required.
    let bare =
        SendMessageRequest { channel_id: room.channel_id.clone(), file_ids: vec![pending], ..Default::default() };
    let sent = app.messaging().send_message(alice.req(bare.clone())).await.unwrap().into_inner().message.unwrap();
    assert_eq!((sent.text.as_str(), sent.file_ids.len()), ("", 1));
    let nothing = SendMessageRequest { file_ids: vec![], ..bare };
    assert_invalid(app.messaging().send_message(alice.req(nothing)).await, "text");
}

#[tokio::test]
async fn a_share_lets_one_user_view_or_download_until_it_is_revoked() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let file = upload(&app, &alice, upload_request("s.txt", "text/plain", b"secret", ""), b"secret").await;
    assert_code(get_file(&app, &bob, &file.file_id).await, Code::PermissionDenied);
    let share = |user: &TestUser, permission: SharePermission, key: &str| ShareFileRequest {
        file_id: file.file_id.clone(),
        user_id: user.user_id.clone(),
        permission: permission as i32,
        idempotency_key: key.into(),
        ..Default::default()
    };
    let first = app.files().share_file(alice.req(share(&bob, SharePermission::View, "share-1"))).await.unwrap();
    let again = app.files().share_file(alice.req(share(&bob, SharePermission::View, "share-1"))).await.unwrap();
    assert_eq!(first.into_inner(), again.into_inner());
    // To view: the metadata, not the bytes.
    assert!(get_file(&app, &bob, &file.file_id).await.is_ok());
    assert_code(download_url(&app, &bob, &file.file_id).await, Code::PermissionDenied);
    let mine = ListFilesRequest { shared_with_me: true, ..Default::default() };
    let listed = app.files().list_files(bob.req(mine.clone())).await.unwrap().into_inner().files;
    assert_eq!(listed.len(), 1);
    app.files().share_file(alice.req(share(&bob, SharePermission::Download, ""))).await.unwrap();
    let url = download_url(&app, &bob, &file.file_id).await.unwrap();
    assert_eq!(http("GET", &url, &[], b"").await.body, b"secret");
    // Only the owner shares and lists shares; bad requests name their field.
    assert_code(
        app.files().share_file(bob.req(share(&carol, SharePermission::View, ""))).await,
        Code::PermissionDenied,
    );
    assert_invalid(
        app.files().share_file(alice.req(share(&bob, SharePermission::Unspecified, ""))).await,
        "permission",
    );
    assert_invalid(app.files().share_file(alice.req(share(&alice, SharePermission::View, ""))).await, "user_id");
    let stranger = ShareFileRequest {
        user_id: "0190aaaa-0000-7000-8000-000000000000".into(),
        ..share(&bob, SharePermission::View, "")
    };
    assert_invalid(app.files().share_file(alice.req(stranger)).await, "user_id");
    let past = ShareFileRequest {
        expire_time: Some(prost_types::Timestamp { seconds: 1, nanos: 0 }),
        ..share(&carol, SharePermission::View, "")
    };
    assert_invalid(app.files().share_file(alice.req(past)).await, "expire_time");
    let listing = ListFileSharesRequest { file_id: file.file_id.clone(), ..Default::default() };
    let shares = app.files().list_file_shares(alice.req(listing.clone())).await.unwrap().into_inner().shares;
    assert_eq!(
        shares.iter().map(|s| (s.user_id.as_str(), s.permission)).collect::<Vec<_>>(),
        [(bob.user_id.as_str(), SharePermission::Download as i32)]
    );
    assert_code(app.files().list_file_shares(bob.req(listing)).await, Code::PermissionDenied);
    // The recipient may drop it; dropping it twice changes nothing.
    let revoke = RevokeFileShareRequest { file_id: file.file_id.clone(), user_id: bob.user_id.clone() };
    assert!(app.files().revoke_file_share(bob.req(revoke.clone())).await.unwrap().into_inner().revoked);
    assert!(!app.files().revoke_file_share(alice.req(revoke)).await.unwrap().into_inner().revoked);
    assert_code(get_file(&app, &bob, &file.file_id).await, Code::PermissionDenied);
    assert!(app.files().list_files(bob.req(mine)).await.unwrap().into_inner().files.is_empty());
}

#[tokio::test]
async fn the_owner_renames_describes_and_opens_a_file() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let file = upload(&app, &alice, upload_request("a.txt", "text/plain", b"words", ""), b"words").await;
    let update = |paths: &[&str], changed: File| UpdateFileRequest {
        file_id: file.file_id.clone(),
        file: Some(changed),
        update_mask: Some(prost_types::FieldMask { paths: paths.iter().map(|p| p.to_string()).collect() }),
    };
    let renamed = File {
        filename: "b.txt".into(),
        description: "the b file".into(),
        access: FileAccess::Workspace as i32,
        ..Default::default()
    };
    let updated = app
        .files()
        .update_file(alice.req(update(&["filename", "description", "access"], renamed.clone())))
        .await
        .unwrap();
    let updated = updated.into_inner().file.unwrap();
    assert_eq!((updated.filename.as_str(), updated.description.as_str()), ("b.txt", "the b file"));
    // Open to the workspace: bob sees it, but may not change it.
    assert!(get_file(&app, &bob, &file.file_id).await.is_ok());
    assert_code(app.files().update_file(bob.req(update(&["filename"], renamed.clone()))).await, Code::PermissionDenied);
    assert_invalid(app.files().update_file(alice.req(update(&[], renamed.clone()))).await, "update_mask");
    assert_invalid(app.files().update_file(alice.req(update(&["size_bytes"], renamed.clone()))).await, "update_mask");
    let bad_name = File { filename: "a/b".into(), ..renamed.clone() };
    assert_invalid(app.files().update_file(alice.req(update(&["filename"], bad_name))).await, "file.filename");
    let channel_only = File { access: FileAccess::Channel as i32, ..renamed };
    assert_invalid(app.files().update_file(alice.req(update(&["access"], channel_only))).await, "file.access");
}

#[tokio::test]
#[ignore = "needs clamd: COLINK_TEST_CLAMD"]
async fn a_file_left_waiting_by_a_node_that_does_not_scan_is_scanned_by_one_that_does() {
    // With a scanner configured but no workers, this node leaves scans to
    // others: its uploads wait, unserved.
    let clamd = clamd_url();
    let app = TestApp::spawn_with(move |c| {
        c.files.scanner.clamd = clamd;
        c.files.scanner.concurrency = 0;
    })
    .await;
    let alice = app.register("alice").await;
    let file = upload(&app, &alice, upload_request("a.txt", "text/plain", b"waiting", ""), b"waiting").await;
    assert_eq!(file.scan_status, ScanStatus::Pending as i32);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(get_file(&app, &alice, &file.file_id).await.unwrap().scan_status, ScanStatus::Pending as i32);
    assert_code(download_url(&app, &alice, &file.file_id).await, Code::FailedPrecondition);
    // A node that scans, on the same data, finds it at start.
    let app = app.restart(|c| c.files.scanner.concurrency = 2).await;
    let scanned = scan_result(&app, &alice, &file.file_id).await;
    assert_eq!(scanned.scan_status, ScanStatus::Clean as i32);
}

#[tokio::test]
async fn files_past_their_retention_expire_and_every_run_is_reported() {
    let clock = Arc::new(ManualClock::starting_now());
    let app = TestApp::spawn_with_clock(clock.clone(), |c| {
        c.files.retention.document_days = 30;
        c.files.retention.auto_delete = true;
        c.files.retention.sweep_secs = 1;
    })
    .await;
    let admin = app.register("root").await;
    let alice = app.register("alice").await;
    let room = app.create_channel(&alice, "room", ChannelKind::Public, &[]).await;
    let short =
        upload(&app, &alice, upload_request("short.txt", "text/plain", b"12345", &room.channel_id), b"12345").await;
    let kept = upload(&app, &alice, upload_request("kept.txt", "text/plain", b"678", ""), b"678").await;
    let policy = short.retention.unwrap();
    assert!(policy.auto_delete && policy.expire_time.is_some(), "{policy:?}");
    let retention = |file: &File, days: i32, forever: bool| UpdateFileRetentionRequest {
        file_id: file.file_id.clone(),
        retention_days: days,
        keep_forever: forever,
    };
    // The owner may shorten, not lengthen; only an admin keeps forever.
    assert_code(
        app.files().update_file_retention(alice.req(retention(&short, 60, false))).await,
        Code::PermissionDenied,
    );
    assert_code(app.files().update_file_retention(alice.req(retention(&kept, 0, true))).await, Code::PermissionDenied);
    assert_invalid(app.files().update_file_retention(admin.req(retention(&kept, 5, true))).await, "keep_forever");
    assert_invalid(app.files().update_file_retention(alice.req(retention(&short, -1, false))).await, "retention_days");
    let shortened = app.files().update_file_retention(alice.req(retention(&short, 10, false))).await.unwrap();
    let expire = shortened.into_inner().file.unwrap().retention.unwrap().expire_time.unwrap();
    assert!(expire.seconds < policy.expire_time.unwrap().seconds);
    app.files().update_file_retention(admin.req(retention(&kept, 0, true))).await.unwrap();
    let url = download_url(&app, &alice, &short.file_id).await.unwrap();
    // Eleven days later the shortened file is gone; the kept one is not.
    clock.advance(Duration::from_secs(11 * 24 * 3600));
    eventually(Duration::from_secs(10), "the file to expire", || async {
        get_file(&app, &alice, &short.file_id).await.is_err().then_some(())
    })
    .await;
    assert_code(get_file(&app, &alice, &short.file_id).await, Code::NotFound);
    assert_eq!(get_file(&app, &admin, &short.file_id).await.unwrap().state, FileState::Expired as i32);
    // The bytes go right after the expiry is committed.
    eventually(Duration::from_secs(10), "the bytes to be deleted", || async {
        (http("GET", &url, &[], b"").await.status == 404).then_some(())
    })
    .await;
    assert_eq!(get_file(&app, &alice, &kept.file_id).await.unwrap().state, FileState::Ready as i32);
    let quota = app.files().get_quota(alice.req(GetQuotaRequest::default())).await.unwrap().into_inner().quota.unwrap();
    assert_eq!((quota.used_bytes, quota.file_count), (3, 1));
    // The run's report is written once the run has looked at every file.
    let expired = eventually(Duration::from_secs(10), "the run's report", || async {
        let runs = app.files().list_retention_runs(admin.req(ListRetentionRunsRequest::default())).await.unwrap();
        let expired: Vec<_> = runs.into_inner().runs.into_iter().filter(|r| r.files_expired > 0).collect();
        (!expired.is_empty()).then_some(expired)
    })
    .await;
    assert_eq!(expired.len(), 1, "{expired:?}");
    assert_eq!((expired[0].files_expired, expired[0].bytes_deleted), (1, 5));
    assert_eq!(
        expired[0].channels.iter().map(|c| (c.channel_id.as_str(), c.bytes_deleted)).collect::<Vec<_>>(),
        [(room.channel_id.as_str(), 5)]
    );
    assert_code(
        app.files().list_retention_runs(alice.req(ListRetentionRunsRequest::default())).await,
        Code::PermissionDenied,
    );
}

#[tokio::test]
async fn admins_set_file_retention_per_type_and_run_it_on_demand_or_dry() {
    let clock = Arc::new(ManualClock::starting_now());
    let app = TestApp::spawn_with_clock(clock.clone(), |c| c.files.retention.image_days = 7).await;
    let root = app.register("root").await;
    let alice = app.register("alice").await;
    let room = app.create_channel(&alice, "room", ChannelKind::Public, &[]).await;
    let list = || ListFileRetentionPoliciesRequest {};

    // What holds before anyone sets anything is the configuration's.
    assert_code(app.files().list_file_retention_policies(alice.req(list())).await, Code::PermissionDenied);
    let policies = app.files().list_file_retention_policies(root.req(list())).await.unwrap().into_inner().policies;
    let types: Vec<i32> = policies.iter().map(|p| p.file_type).collect();
    let expected = [FileType::Image, FileType::Video, FileType::Audio, FileType::Document, FileType::Other];
    assert_eq!(types, expected.map(|t| t as i32));
    assert_eq!((policies[0].retention_days, policies[3].retention_days), (7, 0));
    assert!(policies.iter().all(|p| p.updated_by_id.is_empty() && p.update_time.is_none()));

    // Admins set one type's policy; bad input names its field.
    let documents =
        SetFileRetentionPolicyRequest { file_type: FileType::Document as i32, retention_days: 30, auto_delete: true };
    let set = |user: &TestUser, request: SetFileRetentionPolicyRequest| {
        let (mut files, request) = (app.files(), user.req(request));
        async move { files.set_file_retention_policy(request).await }
    };
    assert_code(set(&alice, documents).await, Code::PermissionDenied);
    assert_invalid(set(&root, SetFileRetentionPolicyRequest { file_type: 0, ..documents }).await, "file_type");
    let forever = SetFileRetentionPolicyRequest { retention_days: 40_000, ..documents };
    assert_invalid(set(&root, forever).await, "retention_days");
    let stored = set(&root, documents).await.unwrap().into_inner().policy.unwrap();
    assert_eq!(
        (stored.retention_days, stored.auto_delete, stored.updated_by_id.as_str()),
        (30, true, root.user_id.as_str())
    );
    let policies = app.files().list_file_retention_policies(root.req(list())).await.unwrap().into_inner().policies;
    assert_eq!(policies[3], stored);

    // A document now says when it expires.
    let notes =
        upload(&app, &alice, upload_request("notes.txt", "text/plain", b"1234", &room.channel_id), b"1234").await;
    let retention = notes.retention.unwrap();
    assert!(retention.auto_delete && retention.expire_time.is_some(), "{retention:?}");

    // A month later: a dry run counts it and changes nothing; a retry
    // answers the same run; the real run expires it.
    clock.advance(Duration::from_secs(31 * 24 * 3600));
    let run = |dry_run: bool, key: &str| RunFileRetentionRequest { dry_run, idempotency_key: key.into() };
    assert_code(app.files().run_file_retention(alice.req(run(true, ""))).await, Code::PermissionDenied);
    let dry = app.files().run_file_retention(root.req(run(true, "dry-1"))).await.unwrap().into_inner().run.unwrap();
    assert!(dry.dry_run && dry.started_by_id == root.user_id, "{dry:?}");
    assert_eq!((dry.files_expired, dry.bytes_deleted), (1, 4));
    assert_eq!(dry.channels.iter().map(|c| c.channel_id.as_str()).collect::<Vec<_>>(), [room.channel_id.as_str()]);
    let again = app.files().run_file_retention(root.req(run(true, "dry-1"))).await.unwrap().into_inner().run.unwrap();
    assert_eq!(again, dry);
    assert_eq!(get_file(&app, &alice, &notes.file_id).await.unwrap().state, FileState::Ready as i32);
    let real = app.files().run_file_retention(root.req(run(false, ""))).await.unwrap().into_inner().run.unwrap();
    assert!(!real.dry_run && real.files_expired == 1, "{real:?}");
    assert_code(get_file(&app, &alice, &notes.file_id).await, Code::NotFound);
    assert_eq!(get_file(&app, &root, &notes.file_id).await.unwrap().state, FileState::Expired as i32);
    let runs = app.files().list_retention_runs(root.req(ListRetentionRunsRequest::default())).await.unwrap();
    let runs = runs.into_inner().runs;
    assert_eq!(
        runs.iter().map(|r| (r.run_id.as_str(), r.dry_run)).take(2).collect::<Vec<_>>(),
        [(real.run_id.as_str(), false), (dry.run_id.as_str(), true)]
    );

    // The change and both runs are in the audit log.
    let changed = ListAuditLogsRequest { action: "file_retention.*".into(), ..Default::default() };
    let entries = crate::admin::audit_entries(&app, &root, changed, 1).await;
    assert_eq!((entries[0].target_type.as_str(), entries[0].target_id.as_str()), ("file_retention_policy", "document"));
    let finished = ListAuditLogsRequest { action: "retention.run_finished".into(), ..Default::default() };
    let entries = crate::admin::audit_entries(&app, &root, finished, 2).await;
    assert!(entries.iter().all(|e| e.metadata.get("subject").map(String::as_str) == Some("files")), "{entries:?}");
}

#[tokio::test]
#[ignore = "needs clamd and the tansu broker: COLINK_TEST_CLAMD, COLINK_TEST_TANSU"]
async fn scanning_runs_on_nodes_of_its_own_through_kafka() {
    let broker = crate::servers::Server::kafka().await;
    let prefix = format!("t{}.", uuid::Uuid::now_v7().simple());
    let kafka = format!("kafka://127.0.0.1:{}", broker.port);
    let clamd = clamd_url();
    // The node people use scans nothing itself.
    let front = {
        let (kafka, prefix, clamd) = (kafka.clone(), prefix.clone(), clamd.clone());
        TestApp::spawn_with(move |c| {
            c.events.url = kafka;
            c.events.topic_prefix = prefix;
            c.events.partitions = 2;
            c.files.scanner.clamd = clamd;
            c.files.scanner.concurrency = 0;
        })
        .await
    };
    // A scanning node shares its files' database and folder, and consumes
    // their events from the broker.
    let (shared_dir, shared_database, front_uri) =
        (front.config().data_dir.clone(), front.config().database.url.clone(), front.uri());
    let _scanner = TestApp::spawn_with(move |c| {
        c.services = vec!["files".into()];
        c.data_dir = shared_dir;
        if !shared_database.is_empty() {
            c.database.url = shared_database;
        }
        c.events.url = kafka;
        c.events.topic_prefix = prefix;
        c.events.partitions = 2;
        c.files.scanner.clamd = clamd;
        c.files.scanner.concurrency = 2;
        for peer in ["auth", "users", "channels", "messaging"] {
            c.peers.insert(peer.into(), front_uri.clone());
        }
    })
    .await;
    let alice = front.register("alice").await;
    let file =
        upload(&front, &alice, upload_request("k.txt", "text/plain", b"through kafka", ""), b"through kafka").await;
    assert_eq!(file.scan_status, ScanStatus::Pending as i32);
    let scanned = eventually(Duration::from_secs(60), "the scan on the other node", || async {
        let file = get_file(&front, &alice, &file.file_id).await.unwrap();
        (file.scan_status != ScanStatus::Pending as i32).then_some(file)
    })
    .await;
    assert_eq!(scanned.scan_status, ScanStatus::Clean as i32);
    let url = download_url(&front, &alice, &file.file_id).await.unwrap();
    assert_eq!(http("GET", &url, &[], b"").await.body, b"through kafka");
}

/// Fetches a thumbnail as the given user.
async fn thumbnail(
    app: &TestApp,
    user: &TestUser,
    file_id: &str,
    size: ThumbnailSize,
) -> Result<String, tonic::Status> {
    let request = GetDownloadUrlRequest { file_id: file_id.into(), thumbnail_size: size as i32, ..Default::default() };
    app.files().get_download_url(user.req(request)).await.map(|r| r.into_inner().url)
}

/// Checks that a file is a phone photo stood upright, with three thumbnails
/// that decode, fit their sizes and carry none of its EXIF block.
async fn assert_thumbnailed_photo(app: &TestApp, user: &TestUser, file: &File) {
    assert_eq!((file.width, file.height), (800, 1200), "orientation 6 stands the photo up");
    let sizes: Vec<_> = file.thumbnails.iter().map(|t| (t.size, t.width, t.height, t.mime_type.as_str())).collect();
    assert_eq!(
        sizes,
        [
            (ThumbnailSize::Small as i32, 43, 64, "image/jpeg"),
            (ThumbnailSize::Medium as i32, 240, 360, "image/jpeg"),
            (ThumbnailSize::Large as i32, 683, 1024, "image/jpeg"),
        ]
    );
    for made in &file.thumbnails {
        let size = ThumbnailSize::try_from(made.size).unwrap();
        let url = thumbnail(app, user, &file.file_id, size).await.unwrap();
        let got = http("GET", &url, &[], b"").await;
        assert_eq!((got.status, got.header("content-type")), (200, Some("image/jpeg")), "{size:?}");
        assert_eq!(got.body.len() as i64, made.size_bytes);
        let image = image::load_from_memory_with_format(&got.body, image::ImageFormat::Jpeg).unwrap();
        assert_eq!((image.width() as i32, image.height() as i32), (made.width, made.height));
        assert!(!got.body.windows(4).any(|w| w == b"Exif"), "{size:?} has no EXIF block");
        assert!(!got.body.windows(SERIAL.len()).any(|w| w == SERIAL), "{size:?} has no serial number");
    }
}

#[tokio::test]
async fn images_get_upright_thumbnails_without_their_metadata_and_a_viewer_sees_only_those() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let bytes = photo(1200, 800);
    let file = upload(&app, &alice, upload_request("IMG_0001.jpg", "image/jpeg", &bytes, ""), &bytes).await;
    assert_eq!(file.scan_status, ScanStatus::Unscanned as i32);
    assert_thumbnailed_photo(&app, &alice, &file).await;
    assert_eq!(get_file(&app, &alice, &file.file_id).await.unwrap().thumbnails, file.thumbnails);
    // The original keeps its bytes, metadata and all.
    let original = http("GET", &download_url(&app, &alice, &file.file_id).await.unwrap(), &[], b"").await;
    assert_eq!(original.body, bytes);

    // Shared to view: the thumbnails, not the original.
    let outsider =
        assert_code(thumbnail(&app, &bob, &file.file_id, ThumbnailSize::Small).await, Code::PermissionDenied);
    assert!(outsider.message().contains("cannot see"), "{outsider:?}");
    let share = ShareFileRequest {
        file_id: file.file_id.clone(),
        user_id: bob.user_id.clone(),
        permission: SharePermission::View as i32,
        ..Default::default()
    };
    app.files().share_file(alice.req(share)).await.unwrap();
    assert_thumbnailed_photo(&app, &bob, &get_file(&app, &bob, &file.file_id).await.unwrap()).await;
    assert_code(download_url(&app, &bob, &file.file_id).await, Code::PermissionDenied);

    // Not an image, no thumbnails; a size that is not one is refused.
    let text = upload(&app, &alice, upload_request("a.txt", "text/plain", b"words", ""), b"words").await;
    assert!(text.thumbnails.is_empty());
    assert_code(thumbnail(&app, &alice, &text.file_id, ThumbnailSize::Small).await, Code::NotFound);
    let bad = GetDownloadUrlRequest { file_id: file.file_id.clone(), thumbnail_size: 9, ..Default::default() };
    assert_invalid(app.files().get_download_url(alice.req(bad)).await, "thumbnail_size");

    // Deleting the file deletes its thumbnails: their URLs find nothing.
    let url = thumbnail(&app, &alice, &file.file_id, ThumbnailSize::Large).await.unwrap();
    let request = DeleteFileRequest { file_id: file.file_id.clone() };
    app.files().delete_file(alice.req(request)).await.unwrap();
    assert_eq!(http("GET", &url, &[], b"").await.status, 404);
}

/// A node keeping its files in a bucket of `s3`. Clients are sent to
/// `localhost`, the node itself to 127.0.0.1: the two names of one server.
async fn s3_app(s3: &Server, clamd: Option<String>) -> TestApp {
    let endpoint = format!("http://127.0.0.1:{}", s3.port);
    let public = format!("http://localhost:{}", s3.port);
    TestApp::spawn_with(move |c| {
        c.files.url = format!("s3://{BUCKET}");
        c.files.s3.endpoint = endpoint;
        c.files.s3.public_endpoint = public;
        c.files.s3.access_key = S3_ACCESS_KEY.into();
        c.files.s3.secret_key = S3_SECRET_KEY.into();
        c.files.scanner.clamd = clamd.unwrap_or_default();
    })
    .await
}

const BUCKET: &str = "colink-files";

/// Whether the S3 server holds an object (s3s-fs keeps each as a file).
fn stored(s3: &Server, key: &str) -> bool {
    s3.dir.as_ref().unwrap().join(BUCKET).join(key).is_file()
}

#[tokio::test]
#[ignore = "needs s3s-fs and clamd: COLINK_TEST_S3S, COLINK_TEST_CLAMD"]
async fn on_s3_uploads_are_scanned_thumbnailed_served_and_quarantined() {
    let s3 = Server::s3().await;
    let app = s3_app(&s3, Some(clamd_url())).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let room = app.create_channel(&alice, "photos", ChannelKind::Private, &[&bob]).await;

    // Straight to the bucket through a presigned URL.
    let bytes = photo(1200, 800);
    let started =
        start_upload(&app, &alice, upload_request("IMG_0002.jpg", "image/jpeg", &bytes, &room.channel_id)).await;
    assert!(started.upload_url.starts_with(&format!("http://localhost:{}/{BUCKET}/uploads/", s3.port)));
    assert!(started.upload_url.contains("X-Amz-Signature="), "{}", started.upload_url);
    assert_eq!(put(&started, &bytes).await, 200);
    let file_id = started.file.unwrap().file_id;
    let file = confirm(&app, &alice, &file_id).await.unwrap();
    assert_eq!(file.scan_status, ScanStatus::Pending as i32);
    assert!(file.thumbnails.is_empty(), "none before the scan");
    assert_code(download_url(&app, &bob, &file_id).await, Code::FailedPrecondition);
    assert!(stored(&s3, &format!("files/{file_id}")) && !stored(&s3, &format!("uploads/{file_id}")));

    let file = scan_result(&app, &alice, &file_id).await;
    assert_eq!(file.scan_status, ScanStatus::Clean as i32);
    assert_thumbnailed_photo(&app, &bob, &file).await;
    let url = download_url(&app, &bob, &file_id).await.unwrap();
    let got = http("GET", &url, &[], b"").await;
    assert_eq!((got.status, got.header("content-type")), (200, Some("image/jpeg")));
    assert_eq!(got.body, bytes);
    let tampered = flip_after(&url, "X-Amz-Signature=");
    assert_eq!(http("GET", &tampered, &[], b"").await.status, 403);
    let other = url.replace(&file_id, "0190aaaa-0000-7000-8000-000000000000");
    assert_eq!(http("GET", &other, &[], b"").await.status, 403);
    assert_code(get_file(&app, &carol, &file_id).await, Code::PermissionDenied);
    assert_code(download_url(&app, &carol, &file_id).await, Code::PermissionDenied);
    assert_code(thumbnail(&app, &carol, &file_id, ThumbnailSize::Small).await, Code::PermissionDenied);

    // Infected: moved aside in the bucket, never served.
    let infected =
        upload(&app, &alice, upload_request("notes.txt", "text/plain", EICAR.as_bytes(), ""), EICAR.as_bytes()).await;
    let infected = scan_result(&app, &alice, &infected.file_id).await;
    assert_eq!(infected.scan_status, ScanStatus::Infected as i32);
    assert_code(download_url(&app, &alice, &infected.file_id).await, Code::FailedPrecondition);
    assert!(stored(&s3, &format!("quarantine/{}", infected.file_id)));
    assert!(!stored(&s3, &format!("files/{}", infected.file_id)));

    // More bytes than declared: S3 takes them, the confirmation does not.
    let started = start_upload(&app, &alice, upload_request("n.txt", "text/plain", b"0123456789", "")).await;
    let headers = [("Content-Type", "text/plain")];
    assert_eq!(http("PUT", &started.upload_url, &headers, b"01234567890").await.status, 200);
    let long_id = started.file.unwrap().file_id;
    let refused = assert_code(confirm(&app, &alice, &long_id).await, Code::FailedPrecondition);
    assert!(refused.message().contains("11 bytes arrived but 10 were declared"), "{refused:?}");
    assert_eq!(get_file(&app, &alice, &long_id).await.unwrap().state, FileState::PendingUpload as i32);

    // Deleting removes the bytes and the thumbnails from the bucket.
    app.files().delete_file(alice.req(DeleteFileRequest { file_id: file_id.clone() })).await.unwrap();
    assert!(!stored(&s3, &format!("files/{file_id}")));
    assert!(!stored(&s3, &format!("thumbnails/{file_id}/small")));
    let gone = http("GET", &url, &[], b"").await;
    assert_eq!(gone.status, 404, "{}", String::from_utf8_lossy(&gone.body));
}

#[tokio::test]
#[ignore = "needs s3s-fs: COLINK_TEST_S3S"]
async fn on_s3_a_node_restarts_onto_its_bucket_and_serves_what_it_held() {
    let s3 = Server::s3().await;
    let app = s3_app(&s3, None).await;
    let alice = app.register("alice").await;
    let file = upload(&app, &alice, upload_request("a.txt", "text/plain", b"kept", ""), b"kept").await;
    assert!(stored(&s3, &format!("files/{}", file.file_id)));
    let app = app.restart(|_| {}).await;
    let url = download_url(&app, &alice, &file.file_id).await.unwrap();
    let got = http("GET", &url, &[], b"").await;
    assert_eq!((got.status, got.body.as_slice()), (200, &b"kept"[..]));
    assert!(got.header("content-disposition").unwrap().starts_with("inline;"));
}

#[tokio::test]
async fn a_node_whose_bucket_cannot_be_reached_refuses_to_start_and_says_why() {
    let data = tempfile::TempDir::new().unwrap();
    let mut config = colink_runtime::config::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data.path().to_path_buf(),
        ..Default::default()
    };
    config.files.url = format!("s3://{BUCKET}");
    // Nothing listens there.
    config.files.s3.endpoint = format!("http://127.0.0.1:{}", free_port());
    config.files.s3.access_key = S3_ACCESS_KEY.into();
    config.files.s3.secret_key = S3_SECRET_KEY.into();
    let err = colink::Node::start(config).await.err().expect("refused").to_string();
    assert!(err.contains("files") && err.contains(BUCKET) && err.contains("127.0.0.1"), "{err}");
}
