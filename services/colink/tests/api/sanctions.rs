//! Sanctions through the real gRPC client: mutes in a channel or the
//! workspace (no posts, reactions, uploads or typing), channel bans,
//! workspace bans (suspension), who may impose them, and that they end
//! when lifted.

use std::time::Duration;

use colink_proto::admin::v1::{
    CreateSanctionRequest, LiftSanctionRequest, ListAuditLogsRequest, ListSanctionsRequest, Sanction, SanctionKind,
    SetUserRoleRequest, UserRole,
};
use colink_proto::auth::v1::{LoginRequest, RefreshRequest};
use colink_proto::channels::v1::{
    AddMembersRequest, ChannelKind, CreateInvitationRequest, GetChannelRequest, JoinChannelRequest,
    ListMyChannelsRequest, OpenDirectMessageRequest, RestrictionKind, SetMemberRestrictionRequest,
};
use colink_proto::messaging::v1::SendMessageRequest;
use colink_proto::presence::v1::StartTypingRequest;
use colink_proto::reactions::v1::AddReactionRequest;
use colink_proto::realtime::v1::connect_request::Frame as ClientFrame;
use colink_proto::realtime::v1::server_frame::Frame;
use colink_proto::realtime::v1::{ConnectRequest, TypingFrame};
use colink_proto::users::v1::GetMeRequest;
use colink_runtime::ids::{now_micros, timestamp};
use tonic::Code;

use crate::admin::audit_entries;
use crate::files::upload_request;
use crate::helpers::{TestApp, TestUser, assert_code, assert_invalid, frame};
use crate::realtime::{connect, cursor, subscribe, subscribed};
use crate::servers::eventually;

const HOUR_MICROS: i64 = 3_600_000_000;

fn sanction(user: &TestUser, kind: SanctionKind, channel_id: &str, hours: Option<i64>) -> CreateSanctionRequest {
    CreateSanctionRequest {
        user_id: user.user_id.clone(),
        kind: kind as i32,
        channel_id: channel_id.into(),
        reason: "cool off".into(),
        expire_time: hours.map(|h| timestamp(now_micros() + h * HOUR_MICROS)),
        idempotency_key: String::new(),
    }
}

async fn moderator(app: &TestApp, root: &TestUser, name: &str) -> TestUser {
    let user = app.register(name).await;
    let promote =
        SetUserRoleRequest { user_id: user.user_id.clone(), role: UserRole::Moderator as i32, reason: "mods".into() };
    app.admin().set_user_role(root.req(promote)).await.unwrap();
    let refresh = RefreshRequest { refresh_token: user.tokens.refresh_token.clone() };
    let tokens = app.auth().refresh(refresh).await.unwrap().into_inner().tokens.unwrap();
    TestUser { user_id: user.user_id, tokens }
}

/// Whether a send by `user` to `channel_id` goes through, once it settles
/// on `allowed` (mutes reach every node shortly after they are imposed).
async fn sends(app: &TestApp, user: &TestUser, channel_id: &str, allowed: bool) {
    eventually(Duration::from_secs(10), &format!("sending allowed: {allowed}"), || async {
        let request = SendMessageRequest { channel_id: channel_id.into(), text: "hello".into(), ..Default::default() };
        match app.messaging().send_message(user.req(request)).await {
            Ok(_) if allowed => Some(()),
            Err(status) if !allowed => {
                assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
                assert!(status.message().contains("muted until"), "{status:?}");
                Some(())
            }
            _ => None,
        }
    })
    .await;
}

#[tokio::test]
async fn mutes_hold_in_their_scope_until_lifted_and_only_moderators_impose_them() {
    let app = TestApp::spawn().await;
    let root = app.register("root").await;
    let mia = moderator(&app, &root, "mia").await;
    let ann = app.register("ann").await;
    let bob = app.register("bob").await;
    let general = app.create_channel(&ann, "general", ChannelKind::Public, &[&bob]).await.channel_id;
    let other = app.create_channel(&ann, "other", ChannelKind::Public, &[]).await.channel_id;
    let said = app.send(&bob, &general, "react to me").await;
    let admin = app.admin();
    let create = |caller: &TestUser, request: CreateSanctionRequest| {
        let (mut admin, request) = (admin.clone(), caller.req(request));
        async move { admin.create_sanction(request).await.map(|r| r.into_inner().sanction.unwrap()) }
    };

    // Bad input names its field.
    let mute = sanction(&ann, SanctionKind::Mute, &general, Some(1));
    assert_invalid(create(&mia, CreateSanctionRequest { kind: 0, ..mute.clone() }).await, "kind");
    assert_invalid(create(&mia, CreateSanctionRequest { reason: " ".into(), ..mute.clone() }).await, "reason");
    assert_invalid(create(&mia, CreateSanctionRequest { user_id: "x".into(), ..mute.clone() }).await, "user_id");
    let past = CreateSanctionRequest { expire_time: Some(timestamp(now_micros() - HOUR_MICROS)), ..mute.clone() };
    assert_invalid(create(&mia, past).await, "expire_time");
    // Who may do what.
    assert_code(create(&ann, sanction(&bob, SanctionKind::Mute, "", Some(1))).await, Code::PermissionDenied);
    assert_code(create(&mia, sanction(&ann, SanctionKind::Ban, "", Some(1))).await, Code::PermissionDenied);
    assert_code(create(&mia, sanction(&ann, SanctionKind::Mute, "", None)).await, Code::PermissionDenied);
    assert_code(create(&mia, sanction(&root, SanctionKind::Mute, "", Some(1))).await, Code::FailedPrecondition);
    assert_code(create(&mia, sanction(&mia, SanctionKind::Mute, "", Some(1))).await, Code::FailedPrecondition);
    let nowhere = uuid::Uuid::now_v7().to_string();
    assert_code(create(&mia, sanction(&ann, SanctionKind::Mute, &nowhere, Some(1))).await, Code::NotFound);

    // Muted in one channel: ann reads, but cannot post or react there; she
    // still posts elsewhere.
    let keyed = CreateSanctionRequest { idempotency_key: "mute-1".into(), ..mute.clone() };
    let muted: Sanction = create(&mia, keyed.clone()).await.unwrap();
    assert!(muted.active);
    assert_eq!(create(&mia, keyed).await.unwrap(), muted, "a retry answers the same sanction");
    assert_code(create(&mia, mute.clone()).await, Code::AlreadyExists);
    sends(&app, &ann, &general, false).await;
    let react = AddReactionRequest { message_id: said.message_id.clone(), emoji: "👍".into(), ..Default::default() };
    assert_code(app.reactions().add_reaction(ann.req(react.clone())).await, Code::PermissionDenied);
    sends(&app, &ann, &other, true).await;
    // Nor upload or type there, and her client is told why.
    let shown = channel(&app, &ann, &general).await;
    assert!(shown.viewer_muted && shown.viewer_muted_until.is_some(), "{shown:?}");
    assert!(!channel(&app, &ann, &other).await.viewer_muted);
    let listed = app.channels().list_my_channels(ann.req(ListMyChannelsRequest::default())).await.unwrap();
    let listed = listed.into_inner().channels;
    assert!(listed.iter().all(|c| c.viewer_muted == (c.channel_id == general)), "{listed:?}");
    let upload = app.files().create_upload_url(ann.req(upload_request("a.txt", "text/plain", b"hi", &general))).await;
    assert!(assert_code(upload, Code::PermissionDenied).message().contains("muted"));
    types(&app, &ann, &general, false).await;
    types(&app, &ann, &other, true).await;

    // Everyone may see their own sanctions; moderators see all.
    let own = app.admin().list_sanctions(ann.req(ListSanctionsRequest::default())).await.unwrap().into_inner();
    assert_eq!(own.sanctions, std::slice::from_ref(&muted));
    let others = ListSanctionsRequest { user_id: bob.user_id.clone(), ..Default::default() };
    assert_code(app.admin().list_sanctions(ann.req(others)).await, Code::PermissionDenied);
    let all = app.admin().list_sanctions(mia.req(ListSanctionsRequest::default())).await.unwrap().into_inner();
    assert_eq!(all.sanctions.len(), 1);

    // Lifted: she posts and reacts again; lifting twice is refused.
    let lift = LiftSanctionRequest { sanction_id: muted.sanction_id.clone(), reason: "apologised".into() };
    let lifted = app.admin().lift_sanction(mia.req(lift.clone())).await.unwrap().into_inner().sanction.unwrap();
    assert!(!lifted.active && lifted.lift_time.is_some());
    assert_eq!(lifted.lifted_by_id, mia.user_id);
    sends(&app, &ann, &general, true).await;
    app.reactions().add_reaction(ann.req(react)).await.unwrap();
    assert!(!channel(&app, &ann, &general).await.viewer_muted);
    types(&app, &ann, &general, true).await;
    assert_code(app.admin().lift_sanction(mia.req(lift)).await, Code::FailedPrecondition);
    let past = ListSanctionsRequest { include_inactive: true, ..Default::default() };
    assert_eq!(app.admin().list_sanctions(ann.req(past)).await.unwrap().into_inner().sanctions, [lifted]);

    // Muted everywhere.
    let everywhere = create(&mia, sanction(&bob, SanctionKind::Mute, "", Some(2))).await.unwrap();
    sends(&app, &bob, &general, false).await;
    app.admin()
        .lift_sanction(mia.req(LiftSanctionRequest { sanction_id: everywhere.sanction_id, reason: String::new() }))
        .await
        .unwrap();
    sends(&app, &bob, &general, true).await;

    let entries =
        audit_entries(&app, &root, ListAuditLogsRequest { action: "sanction.*".into(), ..Default::default() }, 4).await;
    assert!(entries.iter().all(|e| e.actor_id == mia.user_id && e.target_type == "sanction"), "{entries:?}");
}

async fn channel(app: &TestApp, user: &TestUser, channel_id: &str) -> colink_proto::channels::v1::Channel {
    let request = GetChannelRequest { channel_id: channel_id.into() };
    app.channels().get_channel(user.req(request)).await.unwrap().into_inner().channel.unwrap()
}

/// Whether typing in `channel_id` goes through, by the RPC and on a stream.
async fn types(app: &TestApp, user: &TestUser, channel_id: &str, allowed: bool) {
    let request = StartTypingRequest { channel_id: channel_id.into(), ..Default::default() };
    let answer = app.presence().start_typing(user.req(request)).await;
    if allowed {
        answer.unwrap();
    } else {
        assert!(assert_code(answer, Code::PermissionDenied).message().contains("muted"));
    }
    let (tx, mut rx) = connect(app, user).await;
    tx.send(subscribe(vec![cursor(channel_id, None)], false)).await.unwrap();
    subscribed(&mut rx).await;
    let typing = TypingFrame { channel_id: channel_id.into(), stopped: false };
    tx.send(ConnectRequest { frame: Some(ClientFrame::Typing(typing)) }).await.unwrap();
    let refusal = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            if let Frame::Error(e) = frame(&mut rx).await {
                return e;
            }
        }
    })
    .await;
    match refusal {
        Ok(e) => {
            assert!(!allowed, "typing refused: {e:?}");
            assert_eq!((e.code.as_str(), e.channel_id.as_str()), ("PERMISSION_DENIED", channel_id), "{e:?}");
            assert!(e.message.contains("muted"), "{e:?}");
        }
        Err(_) => assert!(allowed, "typing was not refused"),
    }
}

#[tokio::test]
async fn a_channel_ban_takes_the_user_out_and_keeps_them_out_until_lifted() {
    let app = TestApp::spawn().await;
    let root = app.register("root").await;
    let mia = moderator(&app, &root, "mia").await;
    let ann = app.register("ann").await;
    let bob = app.register("bob").await;
    let ops = app.create_channel(&ann, "ops", ChannelKind::Private, &[&bob]).await.channel_id;
    let general = app.create_channel(&ann, "general", ChannelKind::Public, &[]).await.channel_id;
    let open = OpenDirectMessageRequest { user_ids: vec![bob.user_id.clone()], ..Default::default() };
    let dm = app.channels().open_direct_message(ann.req(open)).await.unwrap().into_inner().channel.unwrap().channel_id;
    let admin = app.admin();
    let create = |request: CreateSanctionRequest| {
        let (mut admin, request) = (admin.clone(), mia.req(request));
        async move { admin.create_sanction(request).await.map(|r| r.into_inner().sanction.unwrap()) }
    };

    // Not in a DM, and not for a channel that does not exist.
    assert_code(create(sanction(&bob, SanctionKind::Ban, &dm, Some(1))).await, Code::FailedPrecondition);
    let nowhere = uuid::Uuid::now_v7().to_string();
    assert_code(create(sanction(&bob, SanctionKind::Ban, &nowhere, Some(1))).await, Code::NotFound);

    // A moderator who is not in the private channel bans bob from it: he
    // is out at once, and nobody can bring him back while it holds.
    let ban = create(sanction(&bob, SanctionKind::Ban, &ops, Some(1))).await.unwrap();
    let mine = app.channels().list_my_channels(bob.req(ListMyChannelsRequest::default())).await.unwrap();
    assert!(mine.into_inner().channels.iter().all(|c| c.channel_id != ops));
    assert_code(
        app.channels().get_channel(bob.req(GetChannelRequest { channel_id: ops.clone() })).await,
        Code::NotFound,
    );
    let add = AddMembersRequest { channel_id: ops.clone(), user_ids: vec![bob.user_id.clone()], ..Default::default() };
    let refused = assert_code(app.channels().add_members(ann.req(add.clone())).await, Code::FailedPrecondition);
    assert!(refused.message().contains("banned"), "{refused:?}");
    let invite = CreateInvitationRequest {
        channel_id: ops.clone(),
        invitee_id: bob.user_id.clone(),
        ttl_hours: 0,
        ..Default::default()
    };
    assert_code(app.channels().create_invitation(ann.req(invite)).await, Code::FailedPrecondition);
    assert_eq!(channel(&app, &ann, &ops).await.member_count, 1);

    // From a public channel: he cannot join it again.
    let banned = create(sanction(&bob, SanctionKind::Ban, &general, Some(1))).await.unwrap();
    let join = || JoinChannelRequest { channel_id: general.clone(), idempotency_key: String::new() };
    let refused = assert_code(app.channels().join_channel(bob.req(join())).await, Code::PermissionDenied);
    assert!(refused.message().contains("banned from this channel until"), "{refused:?}");

    // Lifted: he may be added and may join.
    for sanction in [ban, banned] {
        let lift = LiftSanctionRequest { sanction_id: sanction.sanction_id, reason: "second chance".into() };
        app.admin().lift_sanction(mia.req(lift)).await.unwrap();
    }
    app.channels().add_members(ann.req(add)).await.unwrap();
    app.channels().join_channel(bob.req(join())).await.unwrap();
    sends(&app, &bob, &ops, true).await;
}

#[tokio::test]
async fn restrictions_are_set_by_moderators_only_and_bad_input_names_its_field() {
    let app = TestApp::spawn().await;
    let root = app.register("root").await;
    let ann = app.register("ann").await;
    let general = app.create_channel(&ann, "general", ChannelKind::Public, &[]).await.channel_id;
    let good = SetMemberRestrictionRequest {
        user_id: ann.user_id.clone(),
        channel_id: general.clone(),
        kind: RestrictionKind::Mute as i32,
        expire_time: Some(timestamp(now_micros() + HOUR_MICROS)),
        lift: false,
        validate_only: false,
    };
    let set = |user: &TestUser, request: SetMemberRestrictionRequest| {
        let (mut channels, request) = (app.channels(), user.req(request));
        async move { channels.set_member_restriction(request).await }
    };
    assert_code(set(&ann, good.clone()).await, Code::PermissionDenied);
    assert_invalid(set(&root, SetMemberRestrictionRequest { user_id: "x".into(), ..good.clone() }).await, "user_id");
    assert_invalid(
        set(&root, SetMemberRestrictionRequest { channel_id: "x".into(), ..good.clone() }).await,
        "channel_id",
    );
    assert_invalid(set(&root, SetMemberRestrictionRequest { kind: 0, ..good.clone() }).await, "kind");
    let past = SetMemberRestrictionRequest { expire_time: Some(timestamp(now_micros() - 1)), ..good.clone() };
    assert_invalid(set(&root, past).await, "expire_time");
    let everywhere =
        SetMemberRestrictionRequest { channel_id: String::new(), kind: RestrictionKind::Ban as i32, ..good.clone() };
    assert_code(set(&root, everywhere).await, Code::FailedPrecondition);
    // Checking changes nothing; setting twice is the same as once; lifting
    // what is not there succeeds.
    set(&root, SetMemberRestrictionRequest { validate_only: true, ..good.clone() }).await.unwrap();
    assert!(!channel(&app, &ann, &general).await.viewer_muted);
    set(&root, good.clone()).await.unwrap();
    set(&root, good.clone()).await.unwrap();
    assert!(channel(&app, &ann, &general).await.viewer_muted);
    let lift = SetMemberRestrictionRequest { lift: true, ..good };
    set(&root, lift.clone()).await.unwrap();
    set(&root, lift).await.unwrap();
    assert!(!channel(&app, &ann, &general).await.viewer_muted);
}

#[tokio::test]
async fn a_workspace_ban_suspends_the_account_at_once_until_lifted() {
    let app = TestApp::spawn().await;
    let root = app.register("root").await;
    let dan = app.register("dan").await;
    let login =
        || LoginRequest { login: "dan".into(), password: "correct horse battery".into(), device_name: String::new() };
    let ban = app.admin().create_sanction(root.req(sanction(&dan, SanctionKind::Ban, "", Some(24)))).await;
    let ban = ban.unwrap().into_inner().sanction.unwrap();
    // At once: the token stops working, and signing in is refused.
    assert_code(app.users().get_me(dan.req(GetMeRequest {})).await, Code::Unauthenticated);
    let refused = assert_code(app.auth().login(login()).await, Code::PermissionDenied);
    assert!(refused.message().contains("suspended until"), "{refused:?}");
    let refresh = RefreshRequest { refresh_token: dan.tokens.refresh_token.clone() };
    assert!(app.auth().refresh(refresh).await.is_err());

    let lift = LiftSanctionRequest { sanction_id: ban.sanction_id, reason: "appeal granted".into() };
    app.admin().lift_sanction(root.req(lift)).await.unwrap();
    let back = app.auth().login(login()).await.unwrap().into_inner();
    assert!(back.account.unwrap().suspended_until.is_none());
}

#[tokio::test]
#[ignore = "needs PostgreSQL and Redis: set COLINK_TEST_POSTGRES and COLINK_TEST_REDIS (the full suite does)"]
async fn a_mute_or_ban_imposed_on_one_node_holds_on_another() {
    let database = crate::helpers::fresh_postgres(&crate::cluster::server("COLINK_TEST_POSTGRES")).await;
    let redis = crate::cluster::server("COLINK_TEST_REDIS");
    let node = |database: String, redis: String| {
        TestApp::spawn_with(move |c| {
            c.database.url = database;
            c.pubsub.url = redis;
        })
    };
    let (a, b) = (node(database.clone(), redis.clone()).await, node(database, redis).await);
    let root = a.register("root").await;
    let ann = b.register("ann").await;
    let general = b.create_channel(&ann, "general", ChannelKind::Public, &[]).await.channel_id;
    // Read once on b, so that b holds the list in memory before the mute.
    sends(&b, &ann, &general, true).await;
    let muted = a.admin().create_sanction(root.req(sanction(&ann, SanctionKind::Mute, "", Some(1)))).await.unwrap();
    sends(&b, &ann, &general, false).await;
    types(&b, &ann, &general, false).await;
    let lift =
        LiftSanctionRequest { sanction_id: muted.into_inner().sanction.unwrap().sanction_id, reason: String::new() };
    a.admin().lift_sanction(root.req(lift)).await.unwrap();
    sends(&b, &ann, &general, true).await;
    types(&b, &ann, &general, true).await;
    // A channel ban imposed on one node keeps the user out on the other.
    let banned = a.admin().create_sanction(root.req(sanction(&ann, SanctionKind::Ban, &general, Some(1)))).await;
    let banned = banned.unwrap().into_inner().sanction.unwrap();
    let join = || JoinChannelRequest { channel_id: general.clone(), idempotency_key: String::new() };
    assert_code(b.channels().join_channel(ann.req(join())).await, Code::PermissionDenied);
    let lift = LiftSanctionRequest { sanction_id: banned.sanction_id, reason: String::new() };
    a.admin().lift_sanction(root.req(lift)).await.unwrap();
    b.channels().join_channel(ann.req(join())).await.unwrap();
}
