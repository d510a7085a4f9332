//! Presence, typing and the send rate limit, in memory and in Redis, and
//! what happens to them while Redis is down.

use std::sync::Arc;
use std::time::Duration;

use colink_proto::channels::v1::ChannelKind;
use colink_proto::messaging::v1::{ListMessagesRequest, SendMessageRequest};
use colink_proto::presence::v1::{
    BatchGetPresenceRequest, GetPresenceRequest, HeartbeatRequest, ListTypingUsersRequest, PresenceStatus,
    SetPresenceRequest, StartTypingRequest, StopTypingRequest,
};
use colink_proto::realtime::v1::server_frame::Frame;
use colink_runtime::clock::ManualClock;
use prost_types::FieldMask;
use tonic::Code;

use crate::helpers::{TestApp, TestUser, assert_code, assert_invalid, frame};
use crate::servers::{Server, eventually};

async fn status_of(app: &TestApp, viewer: &TestUser, user: &TestUser) -> Result<i32, tonic::Status> {
    let request = GetPresenceRequest { user_id: user.user_id.clone() };
    Ok(app.presence().get_presence(viewer.req(request)).await?.into_inner().presence.unwrap().status)
}

async fn heartbeat(app: &TestApp, user: &TestUser, idle: bool) -> Result<i32, tonic::Status> {
    let request = HeartbeatRequest { idle, device_id: "laptop".into() };
    Ok(app.presence().heartbeat(user.req(request)).await?.into_inner().presence.unwrap().status)
}

#[tokio::test]
async fn heartbeats_and_chosen_statuses() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    // Never seen: offline, with no last-seen time.
    let request = GetPresenceRequest { user_id: alice.user_id.clone() };
    let unseen = app.presence().get_presence(bob.req(request)).await.unwrap().into_inner().presence.unwrap();
    assert_eq!(unseen.status, PresenceStatus::Offline as i32);
    assert!(unseen.last_seen_time.is_none());

    assert_eq!(heartbeat(&app, &alice, false).await.unwrap(), PresenceStatus::Online as i32);
    assert_eq!(status_of(&app, &bob, &alice).await.unwrap(), PresenceStatus::Online as i32);
    assert_eq!(heartbeat(&app, &alice, true).await.unwrap(), PresenceStatus::Away as i32);

    // Do-not-disturb with a custom status holds through heartbeats.
    let request = SetPresenceRequest {
        status: PresenceStatus::Dnd as i32,
        custom_status: "Focus time".into(),
        custom_status_emoji: ":headphones:".into(),
        ..Default::default()
    };
    let set = app.presence().set_presence(alice.req(request)).await.unwrap().into_inner().presence.unwrap();
    assert_eq!(set.custom_status, "Focus time");
    assert_eq!(heartbeat(&app, &alice, false).await.unwrap(), PresenceStatus::Dnd as i32);
    // A field mask changes only what it names.
    let request = SetPresenceRequest {
        status: PresenceStatus::Online as i32,
        update_mask: Some(FieldMask { paths: vec!["status".into()] }),
        ..Default::default()
    };
    let set = app.presence().set_presence(alice.req(request)).await.unwrap().into_inner().presence.unwrap();
    assert_eq!((set.status, set.custom_status.as_str()), (PresenceStatus::Online as i32, "Focus time"));

    let request = BatchGetPresenceRequest { user_ids: vec![alice.user_id.clone(), bob.user_id.clone()] };
    let both = app.presence().batch_get_presence(bob.req(request)).await.unwrap().into_inner().presences;
    let statuses: Vec<(String, i32)> = both.into_iter().map(|p| (p.user_id, p.status)).collect();
    assert_eq!(
        statuses,
        [(alice.user_id.clone(), PresenceStatus::Online as i32), (bob.user_id.clone(), PresenceStatus::Offline as i32)]
    );

    // Bad input names its field.
    assert_invalid(app.presence().set_presence(alice.req(SetPresenceRequest::default())).await, "status");
    let request = SetPresenceRequest {
        status: PresenceStatus::Online as i32,
        custom_status: "x".repeat(101),
        ..Default::default()
    };
    assert_invalid(app.presence().set_presence(alice.req(request)).await, "custom_status");
    let request = BatchGetPresenceRequest { user_ids: vec!["nope".into()] };
    assert_invalid(app.presence().batch_get_presence(alice.req(request)).await, "user_ids[0]");
    assert_code(app.presence().heartbeat(HeartbeatRequest::default()).await, Code::Unauthenticated);
}

#[tokio::test]
async fn typing_reaches_streams_and_the_typing_list_and_expires() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let eve = app.register("eve").await;
    let room = app.create_channel(&alice, "typing", ChannelKind::Private, &[&bob]).await;
    let mut bob_stream = app.subscribe(&bob, &room.channel_id, None).await;

    let start = StartTypingRequest { channel_id: room.channel_id.clone(), ..Default::default() };
    app.presence().start_typing(alice.req(start.clone())).await.unwrap();
    match frame(&mut bob_stream).await {
        Frame::Typing(t) => assert_eq!(t.user_id, alice.user_id),
        other => panic!("expected a typing notice, got {other:?}"),
    }
    let list = ListTypingUsersRequest { channel_id: room.channel_id.clone() };
    let typing = app.presence().list_typing_users(bob.req(list.clone())).await.unwrap().into_inner().typing_users;
    assert_eq!(typing.iter().map(|t| t.user_id.as_str()).collect::<Vec<_>>(), [alice.user_id.as_str()]);

    // Outsiders can neither type nor look.
    assert_code(app.presence().start_typing(eve.req(start.clone())).await, Code::NotFound);
    assert_code(app.presence().list_typing_users(eve.req(list.clone())).await, Code::NotFound);
    assert_invalid(app.presence().start_typing(alice.req(StartTypingRequest::default())).await, "channel_id");

    let stop = StopTypingRequest { channel_id: room.channel_id.clone() };
    app.presence().stop_typing(alice.req(stop)).await.unwrap();
    assert!(
        app.presence().list_typing_users(bob.req(list.clone())).await.unwrap().into_inner().typing_users.is_empty()
    );

    // Without renewal a notice is gone after five seconds.
    app.presence().start_typing(bob.req(start)).await.unwrap();
    eventually(Duration::from_secs(8), "the typing notice to expire", || async {
        let left = app.presence().list_typing_users(alice.req(list.clone())).await.unwrap().into_inner().typing_users;
        left.is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn sending_is_rate_limited_per_user() {
    // Time stands still at the start of a minute, so the window cannot end mid-test.
    let minute = colink_runtime::ids::now_micros().div_euclid(60_000_000) * 60_000_000;
    let clock = Arc::new(ManualClock::at(minute));
    let app = TestApp::spawn_with_clock(clock.clone(), |c| c.ephemeral.sends_per_minute = 3).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.create_channel(&alice, "limited", ChannelKind::Public, &[&bob]).await;
    for n in 0..3 {
        app.send(&alice, &room.channel_id, &format!("message {n}")).await;
    }
    let request =
        SendMessageRequest { channel_id: room.channel_id.clone(), text: "one too many".into(), ..Default::default() };
    let status = assert_code(app.messaging().send_message(alice.req(request)).await, Code::ResourceExhausted);
    assert!(status.message().contains("minute"), "{status:?}");
    // Bob has a budget of his own.
    app.send(&bob, &room.channel_id, "hello").await;
    // A new minute, a new budget.
    clock.advance(Duration::from_secs(60));
    app.send(&alice, &room.channel_id, "next minute").await;
}

#[tokio::test]
async fn presence_and_typing_expire() {
    let clock = Arc::new(ManualClock::starting_now());
    let app = TestApp::spawn_with_clock(clock.clone(), |_| {}).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.create_channel(&alice, "room", ChannelKind::Private, &[&bob]).await;
    assert_eq!(heartbeat(&app, &alice, false).await.unwrap(), PresenceStatus::Online as i32);
    let typing = StartTypingRequest { channel_id: room.channel_id.clone(), thread_id: String::new() };
    app.presence().start_typing(alice.req(typing)).await.unwrap();
    let list = ListTypingUsersRequest { channel_id: room.channel_id.clone() };
    assert_eq!(
        app.presence().list_typing_users(bob.req(list.clone())).await.unwrap().into_inner().typing_users.len(),
        1
    );

    clock.advance(Duration::from_secs(5));
    assert!(app.presence().list_typing_users(bob.req(list)).await.unwrap().into_inner().typing_users.is_empty());
    assert_eq!(status_of(&app, &bob, &alice).await.unwrap(), PresenceStatus::Online as i32, "not yet");
    clock.advance(Duration::from_secs(55));
    assert_eq!(status_of(&app, &bob, &alice).await.unwrap(), PresenceStatus::Offline as i32);
}

#[tokio::test]
#[ignore = "needs redis-server on the PATH and COLINK_TEST_REDIS set (the full suite does)"]
async fn presence_degrades_while_redis_is_down_and_recovers_by_itself_and_messaging_never_stops() {
    std::env::var("COLINK_TEST_REDIS").expect("COLINK_TEST_REDIS");
    let mut redis = Server::redis().await;
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let app = TestApp::spawn_with(|c| {
        c.ephemeral.url = url.clone();
        c.ephemeral.sends_per_minute = 100;
    })
    .await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.create_channel(&alice, "outage", ChannelKind::Private, &[&bob]).await;
    assert_eq!(heartbeat(&app, &alice, false).await.unwrap(), PresenceStatus::Online as i32);
    assert_eq!(status_of(&app, &bob, &alice).await.unwrap(), PresenceStatus::Online as i32);
    let mut bob_stream = app.subscribe(&bob, &room.channel_id, None).await;

    redis.kill();
    // Presence says plainly that it cannot answer, and answers quickly.
    let started = std::time::Instant::now();
    assert_code(status_of(&app, &bob, &alice).await, Code::Unavailable);
    assert_code(heartbeat(&app, &alice, false).await, Code::Unavailable);
    assert!(started.elapsed() < Duration::from_secs(3), "degraded calls took {:?}", started.elapsed());
    // Messages are sent, delivered live and read back as usual; typing
    // notices still reach the stream.
    let sent = app.send(&alice, &room.channel_id, "redis is down").await;
    match frame(&mut bob_stream).await {
        Frame::Event(e) => assert_eq!(e.seq, sent.seq),
        other => panic!("expected the message, got {other:?}"),
    }
    let start = StartTypingRequest { channel_id: room.channel_id.clone(), ..Default::default() };
    app.presence().start_typing(alice.req(start)).await.unwrap();
    assert!(matches!(frame(&mut bob_stream).await, Frame::Typing(_)));
    let request = ListMessagesRequest { channel_id: room.channel_id.clone(), ..Default::default() };
    let listed = app.messaging().list_messages(bob.req(request)).await.unwrap().into_inner().messages;
    assert!(listed.iter().any(|m| m.message_id == sent.message_id));

    // Redis comes back empty; presence recovers with no restart of Colink.
    redis.restart().await;
    eventually(Duration::from_secs(20), "presence to recover", || async {
        heartbeat(&app, &alice, false).await.ok().filter(|s| *s == PresenceStatus::Online as i32)
    })
    .await;
    assert_eq!(status_of(&app, &bob, &alice).await.unwrap(), PresenceStatus::Online as i32);
}
