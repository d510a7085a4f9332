//! The audit log and message moderation.

use std::time::Duration;

use colink_proto::admin::v1::{
    AuditLog, DeactivateUserRequest, GetAuditLogRequest, ListAuditLogsRequest, ModerateMessageRequest,
    ModerationAction, ReactivateUserRequest, SetUserRoleRequest, UserRole,
};
use colink_proto::auth::v1::{LoginRequest, RefreshRequest, login_response};
use colink_proto::channels::v1::{ChannelKind, CreateChannelRequest, JoinChannelRequest};
use colink_proto::messaging::v1::{DeleteMessageRequest, EditMessageRequest, GetMessageRequest};
use colink_proto::presence::v1::{GetPresenceRequest, HeartbeatRequest, PresenceStatus};
use colink_proto::search::v1::SearchUsersRequest;
use colink_proto::users::v1::{GetMeRequest, GetUserRequest};
use tonic::Code;

use crate::helpers::{TestApp, TestUser, assert_code, assert_invalid};
use crate::servers::eventually;

/// The audit entries matching `filter` once there are at least `count`.
pub async fn audit_entries(
    app: &TestApp,
    admin: &TestUser,
    filter: ListAuditLogsRequest,
    count: usize,
) -> Vec<AuditLog> {
    eventually(Duration::from_secs(60), &format!("{count} audit entries for {filter:?}"), || {
        let filter = ListAuditLogsRequest { page_size: 100, ..filter.clone() };
        async move {
            let entries = app.admin().list_audit_logs(admin.req(filter)).await.unwrap().into_inner().audit_logs;
            (entries.len() >= count).then_some(entries)
        }
    })
    .await
}

fn actions(entries: &[AuditLog]) -> Vec<&str> {
    entries.iter().map(|e| e.action.as_str()).collect()
}

#[tokio::test]
async fn membership_changes_and_message_edits_and_deletes_are_audited() {
    let app = TestApp::spawn().await;
    let admin = app.register("root").await; // the first account is the admin
    let bob = app.register("bob").await;
    let room = app.create_channel(&bob, "audited", ChannelKind::Public, &[]).await;
    let carol = app.register("carol").await;
    app.channels()
        .join_channel(carol.req(JoinChannelRequest { channel_id: room.channel_id.clone(), ..Default::default() }))
        .await
        .unwrap();
    let edited = app.send(&bob, &room.channel_id, "first draft").await;
    let request =
        EditMessageRequest { message_id: edited.message_id.clone(), text: "final".into(), ..Default::default() };
    app.messaging().edit_message(bob.req(request)).await.unwrap();
    let deleted = app.send(&carol, &room.channel_id, "oops").await;
    let request = DeleteMessageRequest { message_id: deleted.message_id.clone(), ..Default::default() };
    app.messaging().delete_message(carol.req(request)).await.unwrap();

    let about_room = ListAuditLogsRequest { target_id: room.channel_id.clone(), ..Default::default() };
    let entries = audit_entries(&app, &admin, about_room, 3).await;
    // Newest first: carol joined after the channel was made with its owner.
    let mut kinds = actions(&entries);
    kinds.sort_unstable();
    assert_eq!(kinds, ["channel.created", "channel.member_joined", "channel.member_joined"]);
    assert_eq!(entries[0].action, "channel.member_joined");
    assert_eq!(entries[0].actor_id, carol.user_id);
    assert_eq!(entries[0].metadata["user_id"], carol.user_id);
    assert_eq!(entries[0].target_type, "channel");

    let messages = ListAuditLogsRequest { action: "message.*".into(), ..Default::default() };
    let entries = audit_entries(&app, &admin, messages, 2).await;
    assert_eq!(actions(&entries), ["message.deleted", "message.updated"]);
    assert_eq!(entries[0].target_id, deleted.message_id);
    assert_eq!(entries[1].actor_id, bob.user_id);
    assert_eq!(entries[1].metadata["channel_id"], room.channel_id);
    assert!(entries.iter().all(|e| !e.metadata.values().any(|v| v.contains("draft"))), "no content in the log");

    // New messages are content, not changes: none is audited.
    let created = ListAuditLogsRequest { action: "message.created".into(), ..Default::default() };
    assert!(app.admin().list_audit_logs(admin.req(created)).await.unwrap().into_inner().audit_logs.is_empty());

    // One entry by id, and the actor filter.
    let one = app
        .admin()
        .get_audit_log(admin.req(GetAuditLogRequest { audit_log_id: entries[1].audit_log_id.clone() }))
        .await
        .unwrap()
        .into_inner()
        .audit_log
        .unwrap();
    assert_eq!(one, entries[1]);
    let by_carol = ListAuditLogsRequest { actor_id: carol.user_id.clone(), ..Default::default() };
    assert_eq!(
        actions(&audit_entries(&app, &admin, by_carol, 3).await),
        ["message.deleted", "channel.member_joined", "user.created"]
    );
}

#[tokio::test]
async fn the_audit_log_pages_newest_first_and_only_admins_read_it() {
    let app = TestApp::spawn().await;
    let admin = app.register("root").await;
    let bob = app.register("bob").await;
    for name in ["one", "two", "three", "four", "five"] {
        app.create_channel(&bob, name, ChannelKind::Public, &[]).await;
    }
    let created = ListAuditLogsRequest { action: "channel.created".into(), ..Default::default() };
    audit_entries(&app, &admin, created.clone(), 5).await;
    let mut names = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = ListAuditLogsRequest { page_size: 2, page_token: page_token.clone(), ..created.clone() };
        let page = app.admin().list_audit_logs(admin.req(request)).await.unwrap().into_inner();
        assert!(page.audit_logs.len() <= 2);
        names.extend(page.audit_logs.into_iter().map(|e| e.metadata["name"].clone()));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(names, ["five", "four", "three", "two", "one"]);

    assert_code(app.admin().list_audit_logs(bob.req(ListAuditLogsRequest::default())).await, Code::PermissionDenied);
    let status = assert_code(
        app.admin()
            .list_audit_logs(admin.req(ListAuditLogsRequest { action: "user*".into(), ..Default::default() }))
            .await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("action"), "{status:?}");
    let request = GetAuditLogRequest { audit_log_id: colink_runtime::ids::new_id() };
    assert_code(app.admin().get_audit_log(admin.req(request)).await, Code::NotFound);
}

#[tokio::test]
async fn moderators_delete_messages_with_a_reason_on_record() {
    let app = TestApp::spawn().await;
    let admin = app.register("root").await;
    let bob = app.register("bob").await;
    let room = app.create_channel(&bob, "moderated", ChannelKind::Public, &[]).await;
    let spam = app.send(&bob, &room.channel_id, "buy now").await;

    let request = |action: ModerationAction, reason: &str| ModerateMessageRequest {
        message_id: spam.message_id.clone(),
        action: action as i32,
        reason: reason.into(),
        idempotency_key: "mod-1".into(),
        ..Default::default()
    };
    // Members cannot moderate; bad input names its field and changes nothing.
    assert_code(
        app.admin().moderate_message(bob.req(request(ModerationAction::Delete, "spam"))).await,
        Code::PermissionDenied,
    );
    let status = assert_code(
        app.admin().moderate_message(admin.req(request(ModerationAction::Delete, " "))).await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("reason"), "{status:?}");
    let fetched = GetMessageRequest { message_id: spam.message_id.clone() };
    assert!(
        !app.messaging().get_message(bob.req(fetched.clone())).await.unwrap().into_inner().message.unwrap().deleted
    );

    let record = app
        .admin()
        .moderate_message(admin.req(request(ModerationAction::Delete, "spam")))
        .await
        .unwrap()
        .into_inner()
        .moderation
        .unwrap();
    assert_eq!(
        (record.sender_id.as_str(), record.channel_id.as_str()),
        (bob.user_id.as_str(), room.channel_id.as_str())
    );
    assert!(app.messaging().get_message(bob.req(fetched)).await.unwrap().into_inner().message.unwrap().deleted);
    // A retry returns the same record and writes nothing new.
    let again = app.admin().moderate_message(admin.req(request(ModerationAction::Delete, "spam"))).await.unwrap();
    assert_eq!(again.into_inner().moderation.unwrap(), record);
    // The same key for a different moderation is refused, not answered with the first.
    let reworded = app.admin().moderate_message(admin.req(request(ModerationAction::Delete, "abuse"))).await;
    crate::helpers::assert_invalid(reworded, "idempotency_key");
    let warned = app.admin().moderate_message(admin.req(request(ModerationAction::Warn, "spam"))).await;
    crate::helpers::assert_invalid(warned, "idempotency_key");

    let about_message = ListAuditLogsRequest { target_id: spam.message_id.clone(), ..Default::default() };
    let entries = audit_entries(&app, &admin, about_message, 2).await;
    let moderated: Vec<&AuditLog> = entries.iter().filter(|e| e.action == "message.moderated").collect();
    assert_eq!(moderated.len(), 1, "{entries:?}");
    assert_eq!(moderated[0].reason, "spam");
    assert_eq!(moderated[0].actor_id, admin.user_id);
    assert_eq!(moderated[0].metadata["moderation_id"], record.moderation_id);
    assert!(entries.iter().any(|e| e.action == "message.deleted" && e.actor_id == admin.user_id));
}

/// The user with a fresh access token, which carries their role as it is now.
async fn refreshed(app: &TestApp, user: &TestUser) -> TestUser {
    let request = RefreshRequest { refresh_token: user.tokens.refresh_token.clone() };
    let tokens = app.auth().refresh(request).await.unwrap().into_inner().tokens.unwrap();
    TestUser { user_id: user.user_id.clone(), tokens }
}

#[tokio::test]
async fn admins_set_roles_on_record_and_new_tokens_carry_them() {
    let app = TestApp::spawn().await;
    let root = app.register("root").await; // the first account: the admin
    let ann = app.register("ann").await;
    let gus = app.register("gus").await;
    let set = |user: &TestUser, role: UserRole, reason: &str| SetUserRoleRequest {
        user_id: user.user_id.clone(),
        role: role as i32,
        reason: reason.into(),
    };
    let admin = app.admin();
    let call = |caller: &TestUser, request: SetUserRoleRequest| {
        let (mut admin, request) = (admin.clone(), caller.req(request));
        async move { admin.set_user_role(request).await }
    };
    // Bad input names its field; members may not; nothing changes.
    assert_invalid(call(&root, SetUserRoleRequest { role: 99, ..set(&gus, UserRole::Guest, "") }).await, "role");
    assert_invalid(call(&root, set(&gus, UserRole::Unspecified, "")).await, "role");
    assert_invalid(
        call(&root, SetUserRoleRequest { user_id: "x".into(), ..set(&gus, UserRole::Guest, "") }).await,
        "user_id",
    );
    assert_invalid(call(&root, set(&gus, UserRole::Guest, &"why".repeat(400))).await, "reason");
    assert_code(call(&ann, set(&gus, UserRole::Guest, "")).await, Code::PermissionDenied);
    let nobody =
        SetUserRoleRequest { user_id: "0190aaaa-0000-7000-8000-000000000000".into(), ..set(&gus, UserRole::Guest, "") };
    assert_code(call(&root, nobody).await, Code::NotFound);
    assert_code(call(&root, set(&root, UserRole::Member, "")).await, Code::FailedPrecondition);
    let gus_before = refreshed(&app, &gus).await;
    assert!(app.channels().create_channel(gus_before.req(channel_named("before"))).await.is_ok());

    // Gus becomes a guest: tokens issued from now on say so.
    let state = call(&root, set(&gus, UserRole::Guest, "a contractor")).await.unwrap().into_inner().state.unwrap();
    assert_eq!((state.user_id.as_str(), state.role), (gus.user_id.as_str(), UserRole::Guest as i32));
    // Asking again changes nothing and records nothing more.
    call(&root, set(&gus, UserRole::Guest, "again")).await.unwrap();
    let gus = refreshed(&app, &gus_before).await;
    assert_code(app.channels().create_channel(gus.req(channel_named("after"))).await, Code::PermissionDenied);
    // A guest finds only the people they share a conversation with.
    let people = |user: &TestUser, text: &str| {
        let (mut search, request) =
            (app.search(), user.req(SearchUsersRequest { query: text.into(), ..Default::default() }));
        async move { search.search_users(request).await.unwrap().into_inner().hits.len() }
    };
    eventually(Duration::from_secs(10), "ann findable by members", || async {
        (people(&root, "ann").await == 1).then_some(())
    })
    .await;
    assert_eq!(people(&gus, "ann").await, 0);
    app.create_channel(&root, "shared", ChannelKind::Private, &[&ann, &gus]).await;
    assert_eq!(people(&gus, "ann").await, 1);

    let filter = ListAuditLogsRequest { action: "user.role_changed".into(), ..Default::default() };
    let entries = audit_entries(&app, &root, filter, 1).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    assert_eq!((entry.actor_id.as_str(), entry.target_id.as_str()), (root.user_id.as_str(), gus.user_id.as_str()));
    assert_eq!(entry.reason, "a contractor");
    assert_eq!(entry.metadata.get("role").map(String::as_str), Some("guest"));
    assert_eq!(entry.metadata.get("previous_role").map(String::as_str), Some("member"));

    // The workspace keeps an admin: a token issued before its holder was
    // demoted cannot take the role from the last one.
    call(&root, set(&ann, UserRole::Admin, "a second admin")).await.unwrap();
    let ann = refreshed(&app, &ann).await;
    call(&ann, set(&root, UserRole::Member, "handing over")).await.unwrap();
    assert_code(call(&root, set(&ann, UserRole::Member, "")).await, Code::FailedPrecondition);
    let root = refreshed(&app, &root).await;
    assert_code(call(&root, set(&ann, UserRole::Member, "")).await, Code::PermissionDenied);
}

#[tokio::test]
async fn deactivation_ends_sessions_and_streams_at_once_and_reactivation_lets_back_in() {
    let app = TestApp::spawn().await;
    let root = app.register("root").await;
    let ann = app.register("ann").await;
    let dan = app.register("dan").await;
    let room = app.create_channel(&root, "team", ChannelKind::Private, &[&ann, &dan]).await;
    let said = app.send(&dan, &room.channel_id, "before I go").await;
    let mut dans_stream = app.subscribe(&dan, &room.channel_id, None).await;
    app.presence().heartbeat(dan.req(HeartbeatRequest::default())).await.unwrap();
    let dans_presence = || {
        let (mut presence, request) = (app.presence(), ann.req(GetPresenceRequest { user_id: dan.user_id.clone() }));
        async move { presence.get_presence(request).await.unwrap().into_inner().presence.unwrap().status }
    };
    assert_eq!(dans_presence().await, PresenceStatus::Online as i32);
    let deactivate = |user: &TestUser, reason: &str, key: &str| DeactivateUserRequest {
        user_id: user.user_id.clone(),
        reason: reason.into(),
        idempotency_key: key.into(),
    };
    let admin = app.admin();
    let call = |caller: &TestUser, request: DeactivateUserRequest| {
        let (mut admin, request) = (admin.clone(), caller.req(request));
        async move { admin.deactivate_user(request).await }
    };

    // Bad input names its field; members may not; nobody deactivates
    // themselves; nothing changes.
    assert_invalid(call(&root, deactivate(&dan, "", "")).await, "reason");
    assert_invalid(call(&root, deactivate(&dan, &"why".repeat(400), "")).await, "reason");
    assert_invalid(
        call(&root, DeactivateUserRequest { user_id: "x".into(), ..deactivate(&dan, "r", "") }).await,
        "user_id",
    );
    assert_invalid(call(&root, deactivate(&dan, "r", "bad\nkey")).await, "idempotency_key");
    assert_code(call(&ann, deactivate(&dan, "r", "")).await, Code::PermissionDenied);
    assert_code(call(&root, deactivate(&root, "r", "")).await, Code::FailedPrecondition);
    let nobody =
        DeactivateUserRequest { user_id: "0190aaaa-0000-7000-8000-000000000000".into(), ..deactivate(&dan, "r", "") };
    assert_code(call(&root, nobody).await, Code::NotFound);
    app.users().get_me(dan.req(GetMeRequest {})).await.unwrap();

    let state = call(&root, deactivate(&dan, "left the company", "off-1")).await.unwrap().into_inner().state.unwrap();
    assert!(state.deactivated);
    assert_eq!(
        (state.deactivated_by_id.as_str(), state.deactivation_reason.as_str()),
        (root.user_id.as_str(), "left the company")
    );
    assert!(state.deactivate_time.is_some());
    // At once: the access token, the refresh token, the open stream and
    // signing in all stop.
    assert_code(app.users().get_me(dan.req(GetMeRequest {})).await, Code::Unauthenticated);
    crate::helpers::assert_ends_unauthenticated(&mut dans_stream).await;
    let refresh = RefreshRequest { refresh_token: dan.tokens.refresh_token.clone() };
    assert!(app.auth().refresh(refresh).await.is_err());
    let login =
        || LoginRequest { login: "dan".into(), password: "correct horse battery".into(), device_name: String::new() };
    assert_code(app.auth().login(login()).await, Code::PermissionDenied);
    // The same key again answers the same, and writes nothing new.
    let again = call(&root, deactivate(&dan, "left the company", "off-1")).await.unwrap().into_inner().state.unwrap();
    assert_eq!(again, state);
    assert_code(call(&root, deactivate(&dan, "another reason", "off-1")).await, Code::InvalidArgument);
    // Offline at once, not when the last heartbeat runs out a minute later.
    eventually(Duration::from_secs(5), "dan shows offline", || async {
        (dans_presence().await == PresenceStatus::Offline as i32).then_some(())
    })
    .await;
    // Their messages stay, and they show as deactivated.
    let kept = GetMessageRequest { message_id: said.message_id.clone() };
    assert_eq!(
        app.messaging().get_message(ann.req(kept)).await.unwrap().into_inner().message.unwrap().text,
        "before I go"
    );
    eventually(Duration::from_secs(10), "the profile shows the deactivation", || async {
        let user = app.users().get_user(ann.req(GetUserRequest { user_id: dan.user_id.clone() })).await.unwrap();
        user.into_inner().user.unwrap().deactivated.then_some(())
    })
    .await;

    // Reactivated, dan signs in again.
    let back = ReactivateUserRequest {
        user_id: dan.user_id.clone(),
        reason: "came back".into(),
        idempotency_key: String::new(),
    };
    assert_invalid(
        app.admin().reactivate_user(root.req(ReactivateUserRequest { reason: String::new(), ..back.clone() })).await,
        "reason",
    );
    assert_code(app.admin().reactivate_user(ann.req(back.clone())).await, Code::PermissionDenied);
    let state = app.admin().reactivate_user(root.req(back)).await.unwrap().into_inner().state.unwrap();
    assert!(!state.deactivated && state.deactivation_reason.is_empty() && state.deactivate_time.is_none());
    let signed_in = app.auth().login(login()).await.unwrap().into_inner();
    let Some(login_response::Result::Tokens(tokens)) = signed_in.result else { panic!("tokens") };
    let dan = TestUser { user_id: dan.user_id.clone(), tokens };
    app.users().get_me(dan.req(GetMeRequest {})).await.unwrap();
    // A retry of the first deactivation is answered from its key: it does
    // not deactivate dan again.
    call(&root, deactivate(&dan, "left the company", "off-1")).await.unwrap();
    app.users().get_me(dan.req(GetMeRequest {})).await.unwrap();

    let filter = ListAuditLogsRequest { target_id: dan.user_id.clone(), action: "user.*".into(), ..Default::default() };
    let entries = audit_entries(&app, &root, filter, 3).await;
    let on_record: Vec<(&str, &str)> = entries.iter().map(|e| (e.action.as_str(), e.reason.as_str())).collect();
    assert!(on_record.contains(&("user.deactivated", "left the company")), "{on_record:?}");
    assert!(on_record.contains(&("user.reactivated", "came back")), "{on_record:?}");
    assert_eq!(entries.iter().filter(|e| e.action == "user.deactivated").count(), 1, "one deactivation on record");
}

fn channel_named(name: &str) -> CreateChannelRequest {
    CreateChannelRequest { name: name.into(), kind: ChannelKind::Public as i32, ..Default::default() }
}

#[tokio::test]
async fn the_audit_chain_names_an_edited_or_removed_entry_and_exports_as_json_lines() {
    use colink_proto::admin::v1::{ExportAuditLogsRequest, VerifyAuditChainRequest};
    use sea_orm::ConnectionTrait;

    let app = TestApp::spawn().await;
    let root = app.register("root").await;
    let ann = app.register("ann").await;
    // A role change made with a request id, from an address a proxy on
    // this host vouches for: both reach the entry, two services away.
    let mut request = root.req(SetUserRoleRequest {
        user_id: ann.user_id.clone(),
        role: UserRole::Moderator as i32,
        reason: "helps".into(),
    });
    request.metadata_mut().insert("x-request-id", "req-role-1".parse().unwrap());
    request.metadata_mut().insert("x-forwarded-for", "203.0.113.5".parse().unwrap());
    app.admin().set_user_role(request).await.unwrap();
    let filter = ListAuditLogsRequest { action: "user.*".into(), ..Default::default() };
    let entries = audit_entries(&app, &root, filter, 3).await;
    let changed = entries.iter().find(|e| e.action == "user.role_changed").unwrap();
    assert_eq!((changed.request_id.as_str(), changed.client_ip.as_str()), ("req-role-1", "203.0.113.5"));
    let created = entries.iter().find(|e| e.action == "user.created").unwrap();
    assert_eq!(created.client_ip, "127.0.0.1");
    assert_eq!(created.request_id.len(), 36, "a request id made by the node");

    let verify = || {
        let (mut admin, request) = (app.admin(), root.req(VerifyAuditChainRequest {}));
        async move { admin.verify_audit_chain(request).await.unwrap().into_inner() }
    };
    let report = verify().await;
    assert!(report.intact, "{report:?}");
    assert_eq!(report.entries_checked, 3);
    assert_eq!((report.head_position, report.head_hash.len()), (3, 64));
    assert_code(app.admin().verify_audit_chain(ann.req(VerifyAuditChainRequest {})).await, Code::PermissionDenied);

    // The export: one JSON object a line, oldest first, linked by hashes.
    let export = |request: ExportAuditLogsRequest| {
        let (mut admin, request) = (app.admin(), root.req(request));
        async move {
            let mut stream = admin.export_audit_logs(request).await?.into_inner();
            let mut text = Vec::new();
            while let Some(chunk) = stream.message().await? {
                assert_eq!(chunk.content_type, "application/x-ndjson");
                text.extend(chunk.data);
            }
            Ok::<_, tonic::Status>(String::from_utf8(text).unwrap())
        }
    };
    let text = export(ExportAuditLogsRequest::default()).await.unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["previous_hash"], "");
    for pair in lines.windows(2) {
        assert_eq!(pair[1]["previous_hash"], pair[0]["hash"]);
        assert_eq!(pair[1]["chain_position"].as_i64(), pair[0]["chain_position"].as_i64().map(|p| p + 1));
    }
    assert_eq!(lines[2]["hash"], report.head_hash.as_str());
    let later = prost_types::Timestamp { seconds: 4_000_000_000, nanos: 0 };
    let none = ExportAuditLogsRequest { start_time: Some(later), end_time: None };
    assert_eq!(export(none).await.unwrap(), "");
    let backwards =
        ExportAuditLogsRequest { start_time: Some(later), end_time: Some(prost_types::Timestamp::default()) };
    assert_invalid(export(backwards).await, "end_time");
    assert_code(
        app.admin().export_audit_logs(ann.req(ExportAuditLogsRequest::default())).await,
        Code::PermissionDenied,
    );

    // Someone with the database edits the second entry: the chain names it.
    let config = app.config();
    let db = colink_runtime::db::connect(&config.database, &config.data_dir, "admin").await.unwrap();
    let second = lines[1]["audit_log_id"].as_str().unwrap().to_string();
    let edit = format!("UPDATE audit_logs SET reason = 'nothing happened' WHERE audit_log_id = '{second}'");
    db.writer.execute_unprepared(&edit).await.unwrap();
    let report = verify().await;
    assert!(!report.intact);
    assert_eq!((report.first_broken_audit_log_id.as_str(), report.first_broken_position), (second.as_str(), 2));
    assert!(report.problem.contains("changed"), "{}", report.problem);

    // Removing it instead breaks the link at the same place.
    db.writer.execute_unprepared(&format!("DELETE FROM audit_logs WHERE audit_log_id = '{second}'")).await.unwrap();
    let report = verify().await;
    assert_eq!((report.intact, report.first_broken_position), (false, 2));
    assert_eq!(report.first_broken_audit_log_id, lines[2]["audit_log_id"].as_str().unwrap());
    assert!(report.problem.contains("missing"), "{}", report.problem);
}

#[tokio::test]
async fn reports_wait_in_a_queue_until_a_moderator_acts_on_them() {
    use colink_proto::admin::v1::{
        GetReportRequest, ListReportsRequest, ReportMessageRequest, ReportReason, ReportStatus, ResolveReportRequest,
    };

    let app = TestApp::spawn().await;
    let root = app.register("root").await;
    let mia = app.register("mia").await;
    let ann = app.register("ann").await;
    let bob = app.register("bob").await;
    let carl = app.register("carl").await;
    let moderator =
        SetUserRoleRequest { user_id: mia.user_id.clone(), role: UserRole::Moderator as i32, reason: "mods".into() };
    app.admin().set_user_role(root.req(moderator)).await.unwrap();
    let mia = refreshed(&app, &mia).await;
    // Moderators act through the messaging service, which lets them reach
    // only conversations they belong to: mia is in this one.
    let room = app.create_channel(&root, "room", ChannelKind::Private, &[&ann, &bob, &mia]).await;
    let spam = app.send(&bob, &room.channel_id, "buy cheap pills").await;
    let report = |reason: ReportReason, details: &str, key: &str| ReportMessageRequest {
        message_id: spam.message_id.clone(),
        reason: reason as i32,
        details: details.into(),
        idempotency_key: key.into(),
    };
    let admin = app.admin();
    let file = |user: &TestUser, request: ReportMessageRequest| {
        let (mut admin, request) = (admin.clone(), user.req(request));
        async move { admin.report_message(request).await.map(|r| r.into_inner().report.unwrap()) }
    };

    // Bad input names its field; outsiders cannot report what they cannot
    // read; nobody reports their own message.
    assert_invalid(file(&ann, report(ReportReason::Unspecified, "", "")).await, "reason");
    assert_invalid(file(&ann, report(ReportReason::Other, "", "")).await, "details");
    assert_invalid(file(&ann, report(ReportReason::Spam, &"x".repeat(1001), "")).await, "details");
    assert_code(file(&carl, report(ReportReason::Spam, "", "")).await, Code::NotFound);
    assert_code(file(&bob, report(ReportReason::Spam, "", "")).await, Code::FailedPrecondition);

    let filed = file(&ann, report(ReportReason::Spam, "again and again", "r-1")).await.unwrap();
    assert_eq!((filed.status, filed.reported_user_id.as_str()), (ReportStatus::Open as i32, bob.user_id.as_str()));
    assert!(filed.message_text_snapshot.is_empty(), "the reporter does not get the snapshot");
    assert_eq!(file(&ann, report(ReportReason::Spam, "again and again", "r-1")).await.unwrap(), filed, "a retry");
    assert_code(file(&ann, report(ReportReason::Hate, "", "")).await, Code::AlreadyExists);

    // The queue is the moderators'.
    let queue = |user: &TestUser, status: ReportStatus| {
        let (mut admin, request) =
            (app.admin(), user.req(ListReportsRequest { status: status as i32, ..Default::default() }));
        async move { admin.list_reports(request).await.map(|r| r.into_inner().reports) }
    };
    assert_code(queue(&ann, ReportStatus::Open).await, Code::PermissionDenied);
    let open = queue(&mia, ReportStatus::Open).await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].message_text_snapshot, "buy cheap pills");
    let get = |user: &TestUser| {
        let (mut admin, request) = (app.admin(), user.req(GetReportRequest { report_id: filed.report_id.clone() }));
        async move { admin.get_report(request).await.map(|r| r.into_inner().report.unwrap()) }
    };
    assert!(get(&ann).await.unwrap().message_text_snapshot.is_empty());
    assert_code(get(&carl).await, Code::NotFound);

    // Resolving: bad input first, then acting on it deletes the message.
    let resolve = |status: ReportStatus, action: ModerationAction, note: &str| ResolveReportRequest {
        report_id: filed.report_id.clone(),
        resolution: status as i32,
        action: action as i32,
        note: note.into(),
        idempotency_key: String::new(),
    };
    let close = |user: &TestUser, request: ResolveReportRequest| {
        let (mut admin, request) = (app.admin(), user.req(request));
        async move { admin.resolve_report(request).await.map(|r| r.into_inner().report.unwrap()) }
    };
    assert_invalid(close(&mia, resolve(ReportStatus::Open, ModerationAction::Unspecified, "")).await, "resolution");
    assert_invalid(close(&mia, resolve(ReportStatus::Dismissed, ModerationAction::Delete, "x")).await, "action");
    assert_invalid(close(&mia, resolve(ReportStatus::Actioned, ModerationAction::Delete, "")).await, "note");
    assert_code(
        close(&ann, resolve(ReportStatus::Dismissed, ModerationAction::Unspecified, "")).await,
        Code::PermissionDenied,
    );
    let done = close(&mia, resolve(ReportStatus::Actioned, ModerationAction::Delete, "spam")).await.unwrap();
    assert_eq!((done.status, done.resolved_by_id.as_str()), (ReportStatus::Actioned as i32, mia.user_id.as_str()));
    let moderation = done.moderation.unwrap();
    assert_eq!((moderation.report_id.as_str(), moderation.reason.as_str()), (filed.report_id.as_str(), "spam"));
    let gone = app.messaging().get_message(ann.req(GetMessageRequest { message_id: spam.message_id.clone() })).await;
    assert!(gone.map(|m| m.into_inner().message.unwrap().deleted).unwrap_or(true), "the message is deleted");
    assert_code(
        close(&mia, resolve(ReportStatus::Dismissed, ModerationAction::Unspecified, "")).await,
        Code::FailedPrecondition,
    );
    assert!(queue(&mia, ReportStatus::Open).await.unwrap().is_empty());
    assert_eq!(queue(&root, ReportStatus::Actioned).await.unwrap().len(), 1);
    let entries =
        audit_entries(&app, &root, ListAuditLogsRequest { action: "report.*".into(), ..Default::default() }, 2).await;
    let mut kinds = actions(&entries);
    kinds.sort();
    assert_eq!(kinds, ["report.created", "report.resolved"]);
}
