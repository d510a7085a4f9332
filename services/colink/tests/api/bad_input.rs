//! Bad input gets INVALID_ARGUMENT naming the field, and changes nothing.

use colink_proto::auth::v1::RegisterRequest;
use colink_proto::channels::v1::{ChannelKind, CreateChannelRequest, ListMyChannelsRequest};
use colink_proto::messaging::v1::{ListChannelEventsRequest, ListMessagesRequest, SendMessageRequest};
use colink_proto::realtime::v1::{ChannelCursor, SubscribeRequest};

use crate::helpers::{TestApp, assert_invalid};

#[tokio::test]
async fn bad_messages_are_refused_and_nothing_is_written() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let room = app.create_channel(&alice, "room", ChannelKind::Public, &[]).await;
    let events = ListChannelEventsRequest { channel_id: room.channel_id.clone(), after_seq: 0, page_size: 0 };
    let head_before =
        app.messaging().list_channel_events(alice.req(events.clone())).await.unwrap().into_inner().head_seq;
    let send = |f: &dyn Fn(&mut SendMessageRequest)| {
        let mut request =
            SendMessageRequest { channel_id: room.channel_id.clone(), text: "ok".into(), ..Default::default() };
        f(&mut request);
        request
    };
    let cases: Vec<(&str, SendMessageRequest)> = vec![
        ("text", send(&|r| r.text = String::new())),
        ("text", send(&|r| r.text = " \n\t ".into())),
        ("text", send(&|r| r.text = "x".repeat(40_001))),
        ("channel_id", send(&|r| r.channel_id = "not-a-uuid".into())),
        ("channel_id", send(&|r| r.channel_id = String::new())),
        ("channel_id", send(&|r| r.recipient_id = alice.user_id.clone())),
        ("recipient_id", send(&|r| r.recipient_id = "7".into())),
        ("thread_id", send(&|r| r.thread_id = "thread".into())),
        ("file_ids[1]", send(&|r| r.file_ids = vec![uuid::Uuid::now_v7().to_string(), "f".into()])),
        ("file_ids", send(&|r| r.file_ids = (0..11).map(|_| uuid::Uuid::now_v7().to_string()).collect())),
        ("idempotency_key", send(&|r| r.idempotency_key = "has spaces".into())),
        ("idempotency_key", send(&|r| r.idempotency_key = "k".repeat(129))),
    ];
    for (field, request) in cases {
        assert_invalid(app.messaging().send_message(alice.req(request)).await, field);
    }
    let head_after = app.messaging().list_channel_events(alice.req(events)).await.unwrap().into_inner().head_seq;
    assert_eq!(head_before, head_after, "nothing was written");
    let list = ListMessagesRequest { channel_id: room.channel_id.clone(), ..Default::default() };
    assert!(app.messaging().list_messages(alice.req(list)).await.unwrap().into_inner().messages.is_empty());
}

#[tokio::test]
async fn bad_ids_page_sizes_and_tokens_are_named() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let room = app.create_channel(&alice, "room", ChannelKind::Public, &[]).await;
    let list = |f: &dyn Fn(&mut ListMessagesRequest)| {
        let mut request = ListMessagesRequest { channel_id: room.channel_id.clone(), ..Default::default() };
        f(&mut request);
        request
    };
    for (field, request) in [
        ("channel_id", list(&|r| r.channel_id = "nope".into())),
        ("page_size", list(&|r| r.page_size = 101)),
        ("page_size", list(&|r| r.page_size = -1)),
        ("page_token", list(&|r| r.page_token = "!!".into())),
        ("page_token", list(&|r| r.page_token = "Zm9v".into())),
        ("anchor_seq", list(&|r| r.anchor_seq = -5)),
    ] {
        assert_invalid(app.messaging().list_messages(alice.req(request)).await, field);
    }
    let events = ListChannelEventsRequest { channel_id: room.channel_id.clone(), after_seq: -1, page_size: 1001 };
    assert_invalid(app.messaging().list_channel_events(alice.req(events.clone())).await, "after_seq");
    assert_invalid(app.messaging().list_channel_events(alice.req(events)).await, "page_size");
    let channels = ListMyChannelsRequest { page_size: 500, ..Default::default() };
    assert_invalid(app.channels().list_my_channels(alice.req(channels)).await, "page_size");
    let subscribe = SubscribeRequest {
        cursors: vec![ChannelCursor { channel_id: "x".into(), last_seq: None }],
        all_channels: false,
    };
    assert_invalid(app.realtime().subscribe(alice.req(subscribe)).await, "cursors[0].channel_id");
}

#[tokio::test]
async fn bad_registrations_and_channels_name_every_field() {
    let app = TestApp::spawn().await;
    let bad = RegisterRequest {
        username: "a b".into(),
        email: "nope".into(),
        password: "short".into(),
        display_name: String::new(),
    };
    for field in ["username", "email", "password"] {
        assert_invalid(app.auth().register(bad.clone()).await, field);
    }
    let alice = app.register("alice").await;
    let channel =
        CreateChannelRequest { name: "Not Valid!".into(), kind: ChannelKind::Direct as i32, ..Default::default() };
    for field in ["name", "kind"] {
        assert_invalid(app.channels().create_channel(alice.req(channel.clone())).await, field);
    }
    let mine = app.channels().list_my_channels(alice.req(ListMyChannelsRequest::default())).await.unwrap();
    assert!(mine.into_inner().channels.is_empty(), "nothing was created");
}
