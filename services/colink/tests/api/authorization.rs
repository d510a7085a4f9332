//! Who may call what: without a token nothing but sign-up, sign-in and key
//! discovery works; outsiders can neither read, post to nor stream a
//! private channel or a DM, on any path.

use colink_proto::auth::v1::{ChangePasswordRequest, ListSessionsRequest, LogoutRequest, RevokeSessionRequest};
use colink_proto::channels::v1::*;
use colink_proto::messaging::v1::*;
use colink_proto::realtime::v1::server_frame::Frame;
use colink_proto::realtime::v1::{ChannelCursor, SubscribeRequest};
use colink_proto::users::v1::*;
use tonic::Code;

use crate::helpers::{TestApp, TestUser, assert_code, frame};

macro_rules! expect_code {
    ($code:expr, $client:expr; $($method:ident($req:expr)),* $(,)?) => {{
        $(
            let result = $client.$method($req).await;
            match result {
                Err(status) => assert_eq!(status.code(), $code, "{}: {status:?}", stringify!($method)),
                Ok(_) => panic!("{} succeeded; expected {:?}", stringify!($method), $code),
            }
        )*
    }};
}

#[tokio::test]
async fn without_a_token_every_protected_rpc_is_refused() {
    let app = TestApp::spawn().await;
    let id = || uuid::Uuid::now_v7().to_string();
    expect_code!(Code::Unauthenticated, app.auth();
        logout(LogoutRequest::default()),
        change_password(ChangePasswordRequest::default()),
        list_sessions(ListSessionsRequest::default()),
        revoke_session(RevokeSessionRequest { session_id: id() }),
    );
    expect_code!(Code::Unauthenticated, app.users();
        get_me(GetMeRequest::default()),
        update_me(UpdateMeRequest::default()),
        get_user(GetUserRequest { user_id: id() }),
        batch_get_users(BatchGetUsersRequest { user_ids: vec![id()], ..Default::default() }),
        list_users(ListUsersRequest::default()),
        get_settings(GetSettingsRequest::default()),
        update_settings(UpdateSettingsRequest::default()),
        list_contacts(ListContactsRequest::default()),
        add_contact(AddContactRequest::default()),
        remove_contact(RemoveContactRequest::default()),
        block_user(BlockUserRequest::default()),
        unblock_user(UnblockUserRequest::default()),
        list_blocked_users(ListBlockedUsersRequest::default()),
        check_blocked(CheckBlockedRequest::default()),
    );
    expect_code!(Code::Unauthenticated, app.channels();
        create_channel(CreateChannelRequest::default()),
        get_channel(GetChannelRequest { channel_id: id() }),
        update_channel(UpdateChannelRequest::default()),
        list_my_channels(ListMyChannelsRequest::default()),
        browse_channels(BrowseChannelsRequest::default()),
        join_channel(JoinChannelRequest::default()),
        leave_channel(LeaveChannelRequest::default()),
        add_members(AddMembersRequest::default()),
        remove_member(RemoveMemberRequest::default()),
        list_members(ListMembersRequest::default()),
        update_member_role(UpdateMemberRoleRequest::default()),
        archive_channel(ArchiveChannelRequest::default()),
        unarchive_channel(UnarchiveChannelRequest::default()),
        open_direct_message(OpenDirectMessageRequest::default()),
        create_invitation(CreateInvitationRequest::default()),
        list_my_invitations(ListMyInvitationsRequest::default()),
        respond_to_invitation(RespondToInvitationRequest::default()),
        update_channel_preferences(UpdateChannelPreferencesRequest::default()),
    );
    expect_code!(Code::Unauthenticated, app.messaging();
        send_message(SendMessageRequest::default()),
        get_message(GetMessageRequest::default()),
        list_messages(ListMessagesRequest::default()),
        edit_message(EditMessageRequest::default()),
        delete_message(DeleteMessageRequest::default()),
        recall_message(RecallMessageRequest::default()),
        list_message_edits(ListMessageEditsRequest::default()),
        pin_message(PinMessageRequest::default()),
        unpin_message(UnpinMessageRequest::default()),
        list_pinned_messages(ListPinnedMessagesRequest::default()),
        mark_read(MarkReadRequest::default()),
        get_read_state(GetReadStateRequest::default()),
        list_read_receipts(ListReadReceiptsRequest::default()),
        list_channel_events(ListChannelEventsRequest::default()),
    );
    expect_code!(Code::Unauthenticated, app.realtime();
        subscribe(SubscribeRequest::default()),
        connect(tokio_stream::iter(Vec::new())),
    );
}

/// Everything an outsider might try against one conversation.
async fn assert_outsider_is_refused(app: &TestApp, outsider: &TestUser, channel_id: &str, message_id: &str) {
    let c = || channel_id.to_string();
    let m = || message_id.to_string();
    // An outsider cannot tell the conversation from one that does not exist.
    expect_code!(Code::NotFound, app.channels();
        get_channel(outsider.req(GetChannelRequest { channel_id: c() })),
        list_members(outsider.req(ListMembersRequest { channel_id: c(), ..Default::default() })),
        join_channel(outsider.req(JoinChannelRequest { channel_id: c(), ..Default::default() })),
        leave_channel(outsider.req(LeaveChannelRequest { channel_id: c(), ..Default::default() })),
        add_members(outsider.req(AddMembersRequest { channel_id: c(), user_ids: vec![outsider.user_id.clone()], role: 0, ..Default::default() })),
        archive_channel(outsider.req(ArchiveChannelRequest { channel_id: c(), ..Default::default() })),
        create_invitation(outsider.req(CreateInvitationRequest { channel_id: c(), invitee_id: outsider.user_id.clone(), ttl_hours: 0, ..Default::default() })),
    );
    // Preferences belong to members; the answer is the same whether or not the channel exists.
    expect_code!(Code::PermissionDenied, app.channels();
        update_channel_preferences(outsider.req(UpdateChannelPreferencesRequest {
            channel_id: c(),
            preferences: Some(ChannelPreferences::default()),
            update_mask: Some(prost_types::FieldMask { paths: vec!["muted".into()] }),
            ..Default::default()
        })),
    );
    expect_code!(Code::NotFound, app.messaging();
        send_message(outsider.req(SendMessageRequest { channel_id: c(), text: "let me in".into(), ..Default::default() })),
        get_message(outsider.req(GetMessageRequest { message_id: m() })),
        list_messages(outsider.req(ListMessagesRequest { channel_id: c(), ..Default::default() })),
        edit_message(outsider.req(EditMessageRequest { message_id: m(), text: "mine now".into(), expected_version: 0, ..Default::default() })),
        delete_message(outsider.req(DeleteMessageRequest { message_id: m(), ..Default::default() })),
        list_message_edits(outsider.req(ListMessageEditsRequest { message_id: m() })),
        pin_message(outsider.req(PinMessageRequest { message_id: m(), ..Default::default() })),
        list_pinned_messages(outsider.req(ListPinnedMessagesRequest { channel_id: c() })),
        mark_read(outsider.req(MarkReadRequest { channel_id: c(), seq: 1, ..Default::default() })),
        get_read_state(outsider.req(GetReadStateRequest { channel_id: c() })),
        list_read_receipts(outsider.req(ListReadReceiptsRequest { message_id: m() })),
        list_channel_events(outsider.req(ListChannelEventsRequest { channel_id: c(), after_seq: 0, page_size: 0 })),
    );
    // Streaming: the subscription is refused and nothing is delivered.
    let request =
        SubscribeRequest { cursors: vec![ChannelCursor { channel_id: c(), last_seq: Some(0) }], all_channels: false };
    let mut stream = app.realtime().subscribe(outsider.req(request)).await.unwrap().into_inner();
    match frame(&mut stream).await {
        Frame::Unsubscribed(u) => assert_eq!(u.reason, "not_found"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Nor does "all my channels" include it.
    let request = SubscribeRequest { cursors: vec![], all_channels: true };
    let mut stream = app.realtime().subscribe(outsider.req(request)).await.unwrap().into_inner();
    crate::helpers::assert_quiet(&mut stream).await;
}

#[tokio::test]
async fn outsiders_cannot_touch_a_private_channel_or_a_dm() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let eve = app.register("eve").await;

    let private = app.create_channel(&alice, "private", ChannelKind::Private, &[&bob]).await;
    let secret = app.send(&alice, &private.channel_id, "secret plans").await;
    assert_outsider_is_refused(&app, &eve, &private.channel_id, &secret.message_id).await;

    let dm = app
        .messaging()
        .send_message(alice.req(SendMessageRequest {
            recipient_id: bob.user_id.clone(),
            text: "just us".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .message
        .unwrap();
    assert_outsider_is_refused(&app, &eve, &dm.channel_id, &dm.message_id).await;

    // Members, by contrast, read both.
    for (channel_id, text) in [(&private.channel_id, "secret plans"), (&dm.channel_id, "just us")] {
        let list = ListMessagesRequest { channel_id: channel_id.clone(), ..Default::default() };
        let messages = app.messaging().list_messages(bob.req(list)).await.unwrap().into_inner().messages;
        assert_eq!(messages[0].text, text);
    }
    // Outsiders do not learn of them through their own listings either.
    let mine = app.channels().list_my_channels(eve.req(ListMyChannelsRequest::default())).await.unwrap();
    assert!(mine.into_inner().channels.is_empty());
    let browse = app.channels().browse_channels(eve.req(BrowseChannelsRequest::default())).await.unwrap();
    assert!(browse.into_inner().channels.is_empty());
}

#[tokio::test]
async fn public_channels_are_readable_by_all_but_writable_by_members() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let eve = app.register("eve").await;
    let general = app.create_channel(&alice, "general", ChannelKind::Public, &[]).await;
    app.send(&alice, &general.channel_id, "welcome").await;
    let list = ListMessagesRequest { channel_id: general.channel_id.clone(), ..Default::default() };
    assert_eq!(app.messaging().list_messages(eve.req(list)).await.unwrap().into_inner().messages.len(), 1);
    let post = SendMessageRequest { channel_id: general.channel_id.clone(), text: "hi".into(), ..Default::default() };
    assert_code(app.messaging().send_message(eve.req(post)).await, Code::PermissionDenied);
}

#[tokio::test]
async fn guests_reach_only_the_channels_they_were_added_to_and_the_people_in_them() {
    use colink_proto::admin::v1::{SetUserRoleRequest, UserRole};
    use colink_proto::auth::v1::RefreshRequest;
    use colink_proto::channels::v1::{
        BrowseChannelsRequest, CreateChannelRequest, GetChannelRequest, JoinChannelRequest, OpenDirectMessageRequest,
    };

    let app = TestApp::spawn().await;
    let root = app.register("root").await;
    let mia = app.register("mia").await;
    let stranger = app.register("stranger").await;
    let gus = app.register("gus").await;
    let guest =
        SetUserRoleRequest { user_id: gus.user_id.clone(), role: UserRole::Guest as i32, reason: "vendor".into() };
    app.admin().set_user_role(root.req(guest)).await.unwrap();
    let refresh = RefreshRequest { refresh_token: gus.tokens.refresh_token.clone() };
    let tokens = app.auth().refresh(refresh).await.unwrap().into_inner().tokens.unwrap();
    let gus = crate::helpers::TestUser { user_id: gus.user_id.clone(), tokens };
    let project = app.create_channel(&root, "project", ChannelKind::Private, &[&mia, &gus]).await;
    let lobby = app.create_channel(&root, "lobby", ChannelKind::Public, &[&stranger]).await;

    // Where they were added, guests take part.
    app.send(&gus, &project.channel_id, "hello from the vendor").await;
    let dm = |with: &crate::helpers::TestUser| OpenDirectMessageRequest {
        user_ids: vec![with.user_id.clone()],
        ..Default::default()
    };
    app.channels().open_direct_message(gus.req(dm(&mia))).await.unwrap();
    // Nothing else: no new channels, no browsing or joining public ones, no
    // messages to people they never met.
    let create = CreateChannelRequest { name: "side".into(), kind: ChannelKind::Public as i32, ..Default::default() };
    assert_code(app.channels().create_channel(gus.req(create)).await, Code::PermissionDenied);
    assert_code(
        app.channels().browse_channels(gus.req(BrowseChannelsRequest::default())).await,
        Code::PermissionDenied,
    );
    let join = JoinChannelRequest { channel_id: lobby.channel_id.clone(), ..Default::default() };
    assert!(app.channels().join_channel(gus.req(join)).await.is_err());
    let look = GetChannelRequest { channel_id: lobby.channel_id.clone() };
    assert!(app.channels().get_channel(gus.req(look)).await.is_err());
    assert_code(app.channels().open_direct_message(gus.req(dm(&stranger))).await, Code::PermissionDenied);
    let group = OpenDirectMessageRequest {
        user_ids: vec![mia.user_id.clone(), stranger.user_id.clone()],
        ..Default::default()
    };
    assert_code(app.channels().open_direct_message(gus.req(group)).await, Code::PermissionDenied);
    // Members still reach the guest.
    app.channels().open_direct_message(stranger.req(dm(&gus))).await.unwrap();
}
