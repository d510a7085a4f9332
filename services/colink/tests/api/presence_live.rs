//! Presence and typing on the streams: who hears of changes, how typing
//! ends, what a block hides, and the privacy settings that shape them.

use colink_proto::channels::v1::{ChannelKind, OpenDirectMessageRequest};
use colink_proto::presence::v1::{
    GetPresenceRequest, ListTypingUsersRequest, Presence, PresenceStatus, SetPresenceRequest, StartTypingRequest,
};
use colink_proto::realtime::v1::connect_request::Frame as ClientFrame;
use colink_proto::realtime::v1::server_frame::Frame;
use colink_proto::realtime::v1::{ConnectRequest, PingFrame, TypingEvent, TypingFrame};
use colink_proto::users::v1::{AddContactRequest, BlockUserRequest, Settings, UpdateSettingsRequest};
use prost_types::FieldMask;
use tonic::Code;

use crate::helpers::{FrameSource, TestApp, TestUser, assert_code, frame};
use crate::realtime::{connect, cursor, subscribe, subscribed};

/// The next presence frame about `user`, skipping everything else.
async fn presence_of(stream: &mut impl FrameSource, user: &TestUser) -> Presence {
    loop {
        if let Frame::Presence(p) = frame(stream).await
            && p.user_id == user.user_id
        {
            return p;
        }
    }
}

/// Typing and presence notices that arrive within a short while.
async fn notices(stream: &mut impl FrameSource) -> Vec<Frame> {
    let mut seen = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_millis(500), async {
        loop {
            let f = frame(stream).await;
            if matches!(f, Frame::Typing(_) | Frame::Presence(_)) {
                seen.push(f);
            }
        }
    })
    .await;
    seen
}

async fn set_status(app: &TestApp, user: &TestUser, status: PresenceStatus) {
    let request = SetPresenceRequest {
        status: status as i32,
        update_mask: Some(FieldMask { paths: vec!["status".into()] }),
        ..Default::default()
    };
    app.presence().set_presence(user.req(request)).await.unwrap();
}

#[tokio::test]
async fn presence_changes_reach_those_who_share_a_conversation() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let room = app.create_channel(&alice, "room", ChannelKind::Private, &[&bob]).await;
    let alone = app.create_channel(&carol, "alone", ChannelKind::Private, &[]).await;
    let mut bobs = app.subscribe(&bob, &room.channel_id, None).await;
    let mut carols = app.subscribe(&carol, &alone.channel_id, None).await;
    let (tx, mut bobs_native) = connect(&app, &bob).await;
    tx.send(subscribe(vec![cursor(&room.channel_id, None)], false)).await.unwrap();
    subscribed(&mut bobs_native).await;

    set_status(&app, &alice, PresenceStatus::Dnd).await;
    assert_eq!(presence_of(&mut bobs, &alice).await.status, PresenceStatus::Dnd as i32);
    assert_eq!(presence_of(&mut bobs_native, &alice).await.status, PresenceStatus::Dnd as i32, "on Connect too");
    // Changes within the debounce window arrive as their final state.
    set_status(&app, &alice, PresenceStatus::Away).await;
    set_status(&app, &alice, PresenceStatus::Online).await;
    assert_eq!(presence_of(&mut bobs, &alice).await.status, PresenceStatus::Online as i32);
    // Invisible shows as offline.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    set_status(&app, &alice, PresenceStatus::Offline).await;
    assert_eq!(presence_of(&mut bobs, &alice).await.status, PresenceStatus::Offline as i32);
    let request = GetPresenceRequest { user_id: alice.user_id.clone() };
    let seen = app.presence().get_presence(bob.req(request)).await.unwrap().into_inner().presence.unwrap();
    assert_eq!(seen.status, PresenceStatus::Offline as i32);
    assert!(notices(&mut carols).await.is_empty(), "carol shares no conversation with alice");
}

#[tokio::test]
async fn typing_ends_when_the_typist_says_so() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.create_channel(&alice, "room", ChannelKind::Private, &[&bob]).await;
    let mut bobs = app.subscribe(&bob, &room.channel_id, None).await;
    let (tx, mut alices) = connect(&app, &alice).await;
    tx.send(subscribe(vec![cursor(&room.channel_id, None)], false)).await.unwrap();
    subscribed(&mut alices).await;

    let typing = |stopped: bool| ConnectRequest {
        frame: Some(ClientFrame::Typing(TypingFrame { channel_id: room.channel_id.clone(), stopped })),
    };
    tx.send(typing(false)).await.unwrap();
    let started = typing_event(&mut bobs).await;
    let now = colink_runtime::ids::now_micros();
    assert!(micros(&started) > now, "shown until it expires");
    let list = ListTypingUsersRequest { channel_id: room.channel_id.clone() };
    assert_eq!(
        app.presence().list_typing_users(bob.req(list.clone())).await.unwrap().into_inner().typing_users.len(),
        1
    );
    tx.send(typing(true)).await.unwrap();
    let stopped = typing_event(&mut bobs).await;
    assert!(micros(&stopped) <= colink_runtime::ids::now_micros(), "an expired notice: typing stopped");
    assert!(app.presence().list_typing_users(bob.req(list)).await.unwrap().into_inner().typing_users.is_empty());
}

async fn typing_event(stream: &mut impl FrameSource) -> TypingEvent {
    loop {
        if let Frame::Typing(t) = frame(stream).await {
            return t;
        }
    }
}

fn micros(t: &TypingEvent) -> i64 {
    t.expire_time.as_ref().map_or(0, colink_runtime::ids::micros_of)
}

#[tokio::test]
async fn a_block_hides_typing_and_presence_between_two_people() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let room = app.create_channel(&alice, "room", ChannelKind::Private, &[&bob, &carol]).await;
    app.users().block_user(bob.req(BlockUserRequest { user_id: alice.user_id.clone() })).await.unwrap();
    let mut bobs = app.subscribe(&bob, &room.channel_id, None).await;
    let mut carols = app.subscribe(&carol, &room.channel_id, None).await;

    let typing = StartTypingRequest { channel_id: room.channel_id.clone(), thread_id: String::new() };
    app.presence().start_typing(alice.req(typing)).await.unwrap();
    set_status(&app, &alice, PresenceStatus::Dnd).await;
    let carol_saw = notices(&mut carols).await;
    assert!(carol_saw.iter().any(|f| matches!(f, Frame::Typing(t) if t.user_id == alice.user_id)));
    assert!(carol_saw.iter().any(|f| matches!(f, Frame::Presence(p) if p.user_id == alice.user_id)));
    assert!(notices(&mut bobs).await.is_empty(), "bob blocked alice: he sees neither");
}

#[tokio::test]
async fn a_ping_keeps_the_user_online() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let (tx, mut stream) = connect(&app, &bob).await;
    tx.send(ConnectRequest { frame: Some(ClientFrame::Ping(PingFrame { nonce: 1 })) }).await.unwrap();
    while !matches!(frame(&mut stream).await, Frame::Pong(_)) {}
    let request = GetPresenceRequest { user_id: bob.user_id.clone() };
    let deadline = tokio::time::Instant::now() + crate::helpers::WAIT;
    loop {
        let seen = app.presence().get_presence(alice.req(request.clone())).await.unwrap().into_inner().presence;
        if seen.is_some_and(|p| p.status == PresenceStatus::Online as i32) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the ping did not count as a heartbeat");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn privacy_settings_are_enforced() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let dave = app.register("dave").await;
    let private = UpdateSettingsRequest {
        settings: Some(Settings {
            direct_message_policy: colink_proto::users::v1::DirectMessagePolicy::Contacts as i32,
            show_last_active: false,
            ..Default::default()
        }),
        update_mask: Some(FieldMask { paths: vec!["direct_message_policy".into(), "show_last_active".into()] }),
    };
    app.users().update_settings(dave.req(private)).await.unwrap();

    // Contacts only: a stranger cannot open a conversation.
    let dm = OpenDirectMessageRequest { user_ids: vec![dave.user_id.clone()], ..Default::default() };
    let refused = assert_code(app.channels().open_direct_message(alice.req(dm.clone())).await, Code::PermissionDenied);
    assert!(refused.message().contains("contacts"), "{refused:?}");
    let contact = AddContactRequest { user_id: alice.user_id.clone(), relationship: String::new() };
    app.users().add_contact(dave.req(contact)).await.unwrap();
    app.channels().open_direct_message(alice.req(dm)).await.expect("a contact may");

    // Last seen is hidden from others, not from oneself.
    app.presence().heartbeat(dave.req(Default::default())).await.unwrap();
    let request = GetPresenceRequest { user_id: dave.user_id.clone() };
    let to_alice =
        app.presence().get_presence(alice.req(request.clone())).await.unwrap().into_inner().presence.unwrap();
    assert!(to_alice.last_seen_time.is_none());
    let to_dave = app.presence().get_presence(dave.req(request)).await.unwrap().into_inner().presence.unwrap();
    assert!(to_dave.last_seen_time.is_some());
}
