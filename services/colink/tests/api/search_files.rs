//! SearchFiles through the real gRPC client: names and descriptions are
//! found, and only by people who may see the file as it is now.

use std::time::Duration;

use colink_proto::channels::v1::ChannelKind;
use colink_proto::files::v1::{
    DeleteFileRequest, File, FileAccess, FileType, RevokeFileShareRequest, ShareFileRequest, SharePermission,
    UpdateFileRequest,
};
use colink_proto::messaging::v1::{DeleteMessageRequest, SendMessageRequest};
use colink_proto::search::v1::{SearchFilesRequest, SearchFilesResponse, SearchOrder};
use tonic::Code;

use crate::files::{upload, upload_request};
use crate::helpers::{TestApp, TestUser, assert_code, assert_invalid};

fn query(text: &str) -> SearchFilesRequest {
    SearchFilesRequest { query: text.into(), ..Default::default() }
}

async fn search(app: &TestApp, user: &TestUser, request: SearchFilesRequest) -> SearchFilesResponse {
    app.search().search_files(user.req(request)).await.unwrap().into_inner()
}

/// The names found, once the index shows `expected` hits (indexing follows
/// the files service's events).
async fn found(app: &TestApp, user: &TestUser, request: SearchFilesRequest, expected: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let response = search(app, user, request.clone()).await;
        if response.hits.len() == expected || tokio::time::Instant::now() > deadline {
            let mut names: Vec<String> = response.hits.iter().map(|h| h.filename.clone()).collect();
            assert_eq!(names.len(), expected, "{:?} found {names:?}", request.query);
            names.sort();
            return names;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn text_file(app: &TestApp, owner: &TestUser, name: &str, channel_id: &str) -> File {
    let bytes = format!("the file {name}\n").into_bytes();
    upload(app, owner, upload_request(name, "text/plain", &bytes, channel_id), &bytes).await
}

#[tokio::test]
async fn files_are_found_by_name_and_description_by_those_who_may_see_them() {
    let app = TestApp::spawn().await;
    app.register("root").await; // the first account is the admin, who may see every file
    let ann = app.register("ann").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let open = app.create_channel(&ann, "open", ChannelKind::Public, &[&bob]).await;
    let secret = app.create_channel(&ann, "secret", ChannelKind::Private, &[]).await;
    let budget = text_file(&app, &ann, "budget-2026.txt", &open.channel_id).await;
    text_file(&app, &ann, "roadmap-2026.txt", &secret.channel_id).await;
    let notes = text_file(&app, &ann, "notes-2026.txt", "").await;

    // Members of the channel a file was shared with find it; no one else.
    assert_eq!(found(&app, &ann, query("2026"), 3).await, ["budget-2026.txt", "notes-2026.txt", "roadmap-2026.txt"]);
    assert_eq!(found(&app, &bob, query("2026"), 1).await, ["budget-2026.txt"]);
    assert!(search(&app, &carol, query("budget")).await.hits.is_empty());
    let hit = &search(&app, &bob, query("budget")).await.hits[0];
    assert_eq!((hit.file_id.as_str(), hit.owner_id.as_str()), (budget.file_id.as_str(), ann.user_id.as_str()));
    assert_eq!(hit.file_type, FileType::Document as i32);
    assert_eq!(hit.highlights[0].field, "filename");
    assert_eq!(hit.highlights[0].fragments, ["<em>budget</em>-2026.txt"]);

    // A share reaches its recipient; revoking it takes the file away at once.
    let share = ShareFileRequest {
        file_id: notes.file_id.clone(),
        user_id: carol.user_id.clone(),
        permission: SharePermission::View as i32,
        ..Default::default()
    };
    app.files().share_file(ann.req(share)).await.unwrap();
    assert_eq!(found(&app, &carol, query("notes"), 1).await, ["notes-2026.txt"]);
    let revoke = RevokeFileShareRequest { file_id: notes.file_id.clone(), user_id: carol.user_id.clone() };
    app.files().revoke_file_share(ann.req(revoke)).await.unwrap();
    assert!(search(&app, &carol, query("notes")).await.hits.is_empty());

    // Attached to a message, a file reaches the conversation's members, and
    // leaves with the message (once the files service hears of it).
    assert!(search(&app, &bob, query("notes")).await.hits.is_empty());
    let send = SendMessageRequest {
        channel_id: open.channel_id.clone(),
        text: "my notes".into(),
        file_ids: vec![notes.file_id.clone()],
        ..Default::default()
    };
    let message = app.messaging().send_message(ann.req(send)).await.unwrap().into_inner().message.unwrap();
    assert_eq!(found(&app, &bob, query("notes"), 1).await, ["notes-2026.txt"]);
    let delete = DeleteMessageRequest { message_id: message.message_id, ..Default::default() };
    app.messaging().delete_message(ann.req(delete)).await.unwrap();
    found(&app, &bob, query("notes"), 0).await;

    // Renamed and described: found by the name and words it has now.
    let update = UpdateFileRequest {
        file_id: budget.file_id.clone(),
        file: Some(File { filename: "forecast.txt".into(), description: "Café budget".into(), ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["filename".into(), "description".into()] }),
    };
    app.files().update_file(ann.req(update)).await.unwrap();
    assert_eq!(found(&app, &bob, query("forecast"), 1).await, ["forecast.txt"]);
    assert!(search(&app, &bob, query("2026")).await.hits.is_empty());
    let hit = &search(&app, &bob, query("cafe")).await.hits[0];
    assert_eq!(hit.highlights[0].field, "description");
    assert_eq!(hit.highlights[0].fragments, ["<em>Café</em> budget"]);

    // Opened to the workspace: everyone finds it.
    let open_up = UpdateFileRequest {
        file_id: budget.file_id.clone(),
        file: Some(File { access: FileAccess::Workspace as i32, ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["access".into()] }),
    };
    app.files().update_file(ann.req(open_up)).await.unwrap();
    assert_eq!(found(&app, &carol, query("forecast"), 1).await, ["forecast.txt"]);

    // Deleted: gone for everyone at once.
    let delete = DeleteFileRequest { file_id: budget.file_id.clone() };
    app.files().delete_file(ann.req(delete)).await.unwrap();
    assert!(search(&app, &carol, query("forecast")).await.hits.is_empty());
    assert!(search(&app, &ann, query("forecast")).await.hits.is_empty());
}

#[tokio::test]
async fn file_filters_work_as_operators_and_as_fields() {
    let app = TestApp::spawn().await;
    app.register("root").await;
    let ann = app.register("ann").await;
    let bob = app.register("bob").await;
    let open = app.create_channel(&ann, "open", ChannelKind::Public, &[&bob]).await;
    let other = app.create_channel(&ann, "other", ChannelKind::Public, &[&bob]).await;
    text_file(&app, &ann, "plan-a.txt", &open.channel_id).await;
    text_file(&app, &bob, "plan-b.txt", &open.channel_id).await;
    text_file(&app, &ann, "plan-c.txt", &other.channel_id).await;
    found(&app, &bob, query("plan"), 3).await;
    assert_eq!(found(&app, &bob, query("plan from:@ann"), 2).await, ["plan-a.txt", "plan-c.txt"]);
    assert_eq!(found(&app, &bob, query("plan in:#open"), 2).await, ["plan-a.txt", "plan-b.txt"]);
    assert_eq!(found(&app, &bob, query("plan in:#open from:@ann"), 1).await, ["plan-a.txt"]);
    let fields =
        SearchFilesRequest { channel_id: other.channel_id.clone(), owner_id: ann.user_id.clone(), ..query("plan") };
    assert_eq!(found(&app, &bob, fields, 1).await, ["plan-c.txt"]);
    // A filter alone finds everything it passes.
    assert_eq!(found(&app, &bob, query("from:@bob"), 1).await, ["plan-b.txt"]);
    let images = SearchFilesRequest { file_type: FileType::Image as i32, ..query("plan") };
    assert!(search(&app, &bob, images).await.hits.is_empty());
    let documents = SearchFilesRequest { file_type: FileType::Document as i32, ..query("plan") };
    assert_eq!(found(&app, &bob, documents, 3).await.len(), 3);
    let tomorrow = SearchFilesRequest { query: "plan after:2099-01-01".into(), ..Default::default() };
    assert!(search(&app, &bob, tomorrow).await.hits.is_empty());
    // Date order, and pages that continue where the last ended.
    let newest = SearchFilesRequest { order: SearchOrder::Newest as i32, page_size: 2, ..query("plan") };
    let first = search(&app, &bob, newest.clone()).await;
    assert_eq!(first.hits.iter().map(|h| h.filename.as_str()).collect::<Vec<_>>(), ["plan-c.txt", "plan-b.txt"]);
    let next = SearchFilesRequest { page_token: first.next_page_token, ..newest };
    let next = search(&app, &bob, next).await;
    assert_eq!(next.hits.iter().map(|h| h.filename.as_str()).collect::<Vec<_>>(), ["plan-a.txt"]);
    assert!(next.next_page_token.is_empty());
    // The seed's names.
    let seed = SearchFilesRequest { q: "plan".into(), limit: 1, ..Default::default() };
    assert_eq!(search(&app, &bob, seed).await.hits.len(), 1);
}

#[tokio::test]
async fn bad_file_searches_name_their_field_and_outsiders_learn_nothing() {
    let app = TestApp::spawn().await;
    app.register("root").await;
    let ann = app.register("ann").await;
    let bob = app.register("bob").await;
    let secret = app.create_channel(&ann, "secret", ChannelKind::Private, &[]).await;
    let public = app.create_channel(&ann, "public", ChannelKind::Public, &[]).await;
    let bad = |request: SearchFilesRequest| {
        let mut client = app.search();
        let request = bob.req(request);
        async move { client.search_files(request).await }
    };
    assert_invalid(bad(query("")).await, "query");
    assert_invalid(bad(query("plan has:file")).await, "query");
    assert_invalid(bad(query("plan in:#nowhere")).await, "query");
    assert_invalid(bad(query("plan from:@nobody")).await, "query");
    assert_invalid(bad(SearchFilesRequest { page_size: 101, ..query("plan") }).await, "page_size");
    assert_invalid(bad(SearchFilesRequest { file_type: 99, ..query("plan") }).await, "file_type");
    assert_invalid(bad(SearchFilesRequest { owner_id: "x".into(), ..query("plan") }).await, "owner_id");
    assert_invalid(bad(SearchFilesRequest { page_token: "%%".into(), ..query("plan") }).await, "page_token");
    assert_invalid(bad(SearchFilesRequest { q: "other".into(), ..query("plan") }).await, "q");
    // A private conversation is NOT_FOUND to an outsider, like no conversation.
    let hidden = SearchFilesRequest { channel_id: secret.channel_id.clone(), ..query("plan") };
    assert_code(bad(hidden).await, Code::NotFound);
    let unjoined = SearchFilesRequest { channel_id: public.channel_id.clone(), ..query("plan") };
    assert_code(bad(unjoined).await, Code::PermissionDenied);
}

#[tokio::test]
#[ignore = "needs clamd: COLINK_TEST_CLAMD"]
async fn an_infected_file_is_never_found() {
    let app = crate::files::scanned_app().await;
    app.register("root").await;
    let mallory = app.register("mallory").await;
    let eicar = crate::files::EICAR.as_bytes();
    let infected = upload(&app, &mallory, upload_request("invoice.txt", "text/plain", eicar, ""), eicar).await;
    let clean = text_file(&app, &mallory, "invoice-clean.txt", "").await;
    crate::files::scan_result(&app, &mallory, &infected.file_id).await;
    crate::files::scan_result(&app, &mallory, &clean.file_id).await;
    assert_eq!(found(&app, &mallory, query("invoice"), 1).await, ["invoice-clean.txt"]);
}

#[tokio::test]
async fn the_files_service_shows_search_only_what_the_caller_may_see() {
    use colink_proto::files::v1::{BatchGetFilesRequest, ExportFilesRequest};
    let app = TestApp::spawn().await;
    let root = app.register("root").await;
    let ann = app.register("ann").await;
    let bob = app.register("bob").await;
    let open = app.create_channel(&ann, "open", ChannelKind::Public, &[&bob]).await;
    let shown = text_file(&app, &ann, "shown.txt", &open.channel_id).await;
    let private = text_file(&app, &ann, "private.txt", "").await;
    let unknown = "0190aaaa-0000-7000-8000-000000000000".to_string();
    let asked = BatchGetFilesRequest { file_ids: vec![private.file_id.clone(), unknown, shown.file_id.clone()] };
    let seen = app.files().batch_get_files(bob.req(asked.clone())).await.unwrap().into_inner().files;
    assert_eq!(seen.iter().map(|f| f.file_id.as_str()).collect::<Vec<_>>(), [shown.file_id.as_str()]);
    let seen = app.files().batch_get_files(ann.req(asked)).await.unwrap().into_inner().files;
    assert_eq!(seen.iter().map(|f| f.filename.as_str()).collect::<Vec<_>>(), ["private.txt", "shown.txt"]);
    let bad = |request: BatchGetFilesRequest| {
        let mut client = app.files();
        let request = bob.req(request);
        async move { client.batch_get_files(request).await }
    };
    assert_invalid(bad(BatchGetFilesRequest::default()).await, "file_ids");
    assert_invalid(bad(BatchGetFilesRequest { file_ids: vec!["x".into()] }).await, "file_ids[0]");
    assert_invalid(bad(BatchGetFilesRequest { file_ids: vec![shown.file_id.clone(); 101] }).await, "file_ids");

    // The export is the admins': every confirmed file, with who may see it.
    assert_code(app.files().export_files(ann.req(ExportFilesRequest::default())).await, Code::PermissionDenied);
    let first = ExportFilesRequest { page_size: 1, ..Default::default() };
    let first = app.files().export_files(root.req(first)).await.unwrap().into_inner();
    assert_eq!(first.files.len(), 1);
    let next = ExportFilesRequest { page_size: 1, page_token: first.next_page_token };
    let next = app.files().export_files(root.req(next)).await.unwrap().into_inner();
    assert!(next.next_page_token.is_empty());
    let exported: Vec<_> = first.files.iter().chain(&next.files).collect();
    let names: Vec<&str> = exported.iter().filter_map(|e| e.file.as_ref()).map(|f| f.filename.as_str()).collect();
    assert_eq!(names, ["shown.txt", "private.txt"]);
    let export = |request: ExportFilesRequest| {
        let mut client = app.files();
        let request = root.req(request);
        async move { client.export_files(request).await }
    };
    assert_invalid(export(ExportFilesRequest { page_size: 1001, ..Default::default() }).await, "page_size");
    let not_an_id = colink_runtime::ids::encode_page_token("not-an-id");
    assert_invalid(export(ExportFilesRequest { page_token: not_an_id, ..Default::default() }).await, "page_token");
}

#[tokio::test]
async fn guests_find_no_file_shared_only_with_the_workspace() {
    use colink_proto::admin::v1::{SetUserRoleRequest, UserRole};
    use colink_proto::auth::v1::RefreshRequest;
    let app = TestApp::spawn().await;
    let root = app.register("root").await;
    let ann = app.register("ann").await;
    let gus = app.register("gus").await;
    let open = app.create_channel(&ann, "open", ChannelKind::Public, &[&gus]).await;
    let everyone = text_file(&app, &ann, "handbook.txt", "").await;
    let update = UpdateFileRequest {
        file_id: everyone.file_id.clone(),
        file: Some(File { access: FileAccess::Workspace as i32, ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["access".into()] }),
    };
    app.files().update_file(ann.req(update)).await.unwrap();
    text_file(&app, &ann, "handbook-team.txt", &open.channel_id).await;
    assert_eq!(found(&app, &gus, query("handbook"), 2).await.len(), 2);
    let guest = SetUserRoleRequest { user_id: gus.user_id.clone(), role: UserRole::Guest as i32, ..Default::default() };
    app.admin().set_user_role(root.req(guest)).await.unwrap();
    let refresh = RefreshRequest { refresh_token: gus.tokens.refresh_token.clone() };
    let tokens = app.auth().refresh(refresh).await.unwrap().into_inner().tokens.unwrap();
    let gus = TestUser { user_id: gus.user_id.clone(), tokens };
    // The channel's file, yes; the workspace's, no.
    assert_eq!(found(&app, &gus, query("handbook"), 1).await, ["handbook-team.txt"]);
}
