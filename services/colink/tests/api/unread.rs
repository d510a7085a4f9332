//! Mentions, read state, receipts and unread counts, by request and pushed
//! live on the user's own stream.

use colink_proto::channels::v1::{
    ChannelKind, ChannelPreferences, JoinChannelRequest, LeaveChannelRequest, UpdateChannelPreferencesRequest,
};
use colink_proto::messaging::v1::{
    ChannelUnread, DeleteMessageRequest, EditMessageRequest, GetUnreadCountsRequest, ListMentionsRequest,
    ListReadReceiptsRequest, MarkDeliveredRequest, MarkReadRequest, Message, SendMessageRequest, UnreadCounts,
};
use colink_proto::presence::v1::HeartbeatRequest;
use colink_proto::realtime::v1::connect_request::Frame as ClientFrame;
use colink_proto::realtime::v1::server_frame::Frame;
use colink_proto::realtime::v1::{AckFrame, ConnectRequest, SubscribeRequest, UnreadCountsFrame};
use colink_proto::threads::v1::{CreateThreadRequest, ListFollowedThreadsRequest};
use colink_proto::users::v1::{BlockUserRequest, Settings, UpdateSettingsRequest};
use prost_types::FieldMask;
use tonic::Code;

use crate::helpers::{FrameSource, TestApp, TestUser, WAIT, assert_code, assert_invalid, frame};
use crate::realtime::{connect, cursor, subscribe, subscribed};

async fn send(app: &TestApp, user: &TestUser, channel_id: &str, text: &str) -> Message {
    app.send(user, channel_id, text).await
}

async fn counts(app: &TestApp, user: &TestUser) -> UnreadCounts {
    let request = GetUnreadCountsRequest::default();
    app.messaging().get_unread_counts(user.req(request)).await.expect("counts").into_inner().counts.expect("counts")
}

fn channel(counts: &UnreadCounts, channel_id: &str) -> Option<ChannelUnread> {
    counts.channels.iter().find(|c| c.channel_id == channel_id).cloned()
}

/// (unread, mentions) in one conversation, once the counts say `until`.
async fn settled(
    app: &TestApp,
    user: &TestUser,
    channel_id: &str,
    until: impl Fn(&Option<ChannelUnread>) -> bool,
) -> Option<ChannelUnread> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = channel(&counts(app, user).await, channel_id);
        if until(&now) {
            return now;
        }
        assert!(tokio::time::Instant::now() < deadline, "counts never settled: {now:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn pair(c: &Option<ChannelUnread>) -> (i64, i64) {
    c.as_ref().map_or((-1, -1), |c| (c.unread_count, c.mention_count))
}

async fn mentions_of(app: &TestApp, user: &TestUser) -> Vec<String> {
    let request = ListMentionsRequest::default();
    let messages = app.messaging().list_mentions(user.req(request)).await.unwrap().into_inner().messages;
    messages.into_iter().map(|m| m.text).collect()
}

/// Alice and Bob in a private room, once Bob's membership counts.
async fn private_pair() -> (TestApp, TestUser, TestUser, String) {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.create_channel(&alice, "room", ChannelKind::Private, &[&bob]).await;
    settled(&app, &bob, &room.channel_id, |c| c.is_some()).await;
    (app, alice, bob, room.channel_id)
}

async fn mark_read(app: &TestApp, user: &TestUser, channel_id: &str, seq: i64) {
    let request = MarkReadRequest { channel_id: channel_id.into(), seq, ..Default::default() };
    app.messaging().mark_read(user.req(request)).await.unwrap();
}

#[tokio::test]
async fn mentions_reach_members_only_and_are_listed() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let dave = app.register("dave").await;
    let room = app.create_channel(&alice, "room", ChannelKind::Private, &[&bob, &carol]).await;

    let first = send(&app, &alice, &room.channel_id, "@Bob and @dave, see ann@example.com; @carol. @nobody").await;
    let mentions = first.mentions.clone().unwrap();
    let mut named = mentions.user_ids.clone();
    named.sort();
    let mut expected = vec![bob.user_id.clone(), carol.user_id.clone()];
    expected.sort();
    assert_eq!(named, expected, "dave is not a member; nobody does not exist");
    assert!(!mentions.channel && !mentions.here);
    let own = send(&app, &alice, &room.channel_id, "note to @alice").await;
    assert!(own.mentions.unwrap().user_ids.is_empty(), "one does not mention oneself");
    let all = send(&app, &alice, &room.channel_id, "@channel standup in 5").await;
    assert!(all.mentions.unwrap().channel);
    assert_eq!(mentions_of(&app, &bob).await, ["@channel standup in 5", first.text.as_str()]);
    assert!(mentions_of(&app, &dave).await.is_empty());

    // Edited text is read again.
    let edit = EditMessageRequest {
        message_id: first.message_id.clone(),
        text: "only @carol now".into(),
        expected_version: 0,
        ..Default::default()
    };
    let edited = app.messaging().edit_message(alice.req(edit)).await.unwrap().into_inner().message.unwrap();
    assert_eq!(edited.mentions.unwrap().user_ids, std::slice::from_ref(&carol.user_id));
    assert_eq!(mentions_of(&app, &bob).await, ["@channel standup in 5"]);
    let bobs = settled(&app, &bob, &room.channel_id, |c| pair(c).1 == 1).await;
    assert_eq!(pair(&bobs), (3, 1));

    // A block keeps the blocked person out of the blocker's mentions, at
    // once, though the list of whom carol blocked was read just before.
    assert!(mentions_of(&app, &carol).await.contains(&"@channel standup in 5".to_string()));
    app.users().block_user(carol.req(BlockUserRequest { user_id: alice.user_id.clone() })).await.unwrap();
    let blocked = send(&app, &alice, &room.channel_id, "@carol?").await;
    assert!(blocked.mentions.unwrap().user_ids.is_empty());
    assert_eq!(mentions_of(&app, &carol).await, ["only @carol now"], "alice's @channel is left out too");
    assert_eq!(pair(&channel(&counts(&app, &carol).await, &room.channel_id)), (4, 1));

    // A mention in a thread makes one follow it.
    let thread = CreateThreadRequest {
        parent_message_id: own.message_id.clone(),
        text: "@bob thoughts?".into(),
        ..Default::default()
    };
    app.threads().create_thread(alice.req(thread)).await.unwrap();
    let followed = app.threads().list_followed_threads(bob.req(ListFollowedThreadsRequest::default())).await.unwrap();
    let followed = followed.into_inner().threads;
    assert_eq!(followed.len(), 1);
    let state = followed[0].viewer_state.clone().unwrap();
    assert_eq!((state.following, state.unread_count), (true, 1));
    let threads = counts(&app, &bob).await.threads;
    assert_eq!((threads[0].unread_count, threads[0].mention_count), (1, 1));

    // @here mentions those online now.
    app.presence().heartbeat(bob.req(HeartbeatRequest::default())).await.unwrap();
    let here = send(&app, &alice, &room.channel_id, "@here quick one").await;
    let here = here.mentions.unwrap();
    assert!(here.here);
    assert_eq!(here.user_ids, std::slice::from_ref(&bob.user_id), "carol is offline");

    assert_invalid(
        app.messaging().list_mentions(bob.req(ListMentionsRequest { page_size: 101, ..Default::default() })).await,
        "page_size",
    );
    let page = ListMentionsRequest { page_size: 1, ..Default::default() };
    let first_page = app.messaging().list_mentions(bob.req(page)).await.unwrap().into_inner();
    assert_eq!(first_page.messages[0].text, "@here quick one");
    let next = ListMentionsRequest { page_size: 1, page_token: first_page.next_page_token };
    let second = app.messaging().list_mentions(bob.req(next)).await.unwrap().into_inner();
    assert_eq!(second.messages[0].text, "@bob thoughts?");
}

#[tokio::test]
async fn unread_counts_follow_reads_sends_deletions_mutes_and_leaving() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.create_channel(&alice, "room", ChannelKind::Public, &[&bob]).await;
    let id = room.channel_id.clone();
    assert_eq!(pair(&settled(&app, &bob, &id, |c| c.is_some()).await), (0, 0), "history before joining is read");

    let m1 = send(&app, &alice, &id, "one").await;
    let m2 = send(&app, &alice, &id, "two @bob").await;
    let m3 = send(&app, &alice, &id, "three").await;
    let now = counts(&app, &bob).await;
    assert_eq!(pair(&channel(&now, &id)), (3, 1));
    assert_eq!((now.total_unread_count, now.total_mention_count), (3, 1));
    mark_read(&app, &bob, &id, m1.seq).await;
    assert_eq!(pair(&channel(&counts(&app, &bob).await, &id)), (2, 1));
    mark_read(&app, &bob, &id, 0).await;
    assert_eq!(pair(&channel(&counts(&app, &bob).await, &id)), (2, 1), "read positions only move forward");
    app.messaging()
        .delete_message(alice.req(DeleteMessageRequest { message_id: m2.message_id.clone(), ..Default::default() }))
        .await
        .unwrap();
    assert_eq!(pair(&channel(&counts(&app, &bob).await, &id)), (1, 0));
    app.messaging()
        .delete_message(alice.req(DeleteMessageRequest { message_id: m1.message_id.clone(), ..Default::default() }))
        .await
        .unwrap();
    assert_eq!(pair(&channel(&counts(&app, &bob).await, &id)), (1, 0), "a read message uncounts nothing");
    let _ = m3;
    send(&app, &bob, &id, "catching up").await;
    assert_eq!(pair(&channel(&counts(&app, &bob).await, &id)), (0, 0), "sending reads the conversation");

    // A muted conversation counts mentions only.
    let mute = UpdateChannelPreferencesRequest {
        channel_id: id.clone(),
        preferences: Some(ChannelPreferences { muted: true, ..Default::default() }),
        update_mask: Some(FieldMask { paths: vec!["muted".into()] }),
        ..Default::default()
    };
    app.channels().update_channel_preferences(bob.req(mute)).await.unwrap();
    settled(&app, &bob, &id, |c| c.as_ref().is_some_and(|c| c.muted)).await;
    send(&app, &alice, &id, "chatter").await;
    send(&app, &alice, &id, "@bob look").await;
    let now = counts(&app, &bob).await;
    assert_eq!(pair(&channel(&now, &id)), (0, 1));
    assert_eq!((now.total_unread_count, now.total_mention_count), (0, 1));

    // Leaving drops the conversation; joining again starts read.
    app.channels()
        .leave_channel(bob.req(LeaveChannelRequest { channel_id: id.clone(), ..Default::default() }))
        .await
        .unwrap();
    settled(&app, &bob, &id, Option::is_none).await;
    app.channels()
        .join_channel(bob.req(JoinChannelRequest { channel_id: id.clone(), ..Default::default() }))
        .await
        .unwrap();
    assert_eq!(pair(&settled(&app, &bob, &id, |c| c.is_some()).await), (0, 0));

    // Only members have a read position; bad input names the field.
    let eve = app.register("eve").await;
    let read = MarkReadRequest { channel_id: id.clone(), seq: 1, ..Default::default() };
    assert_code(app.messaging().mark_read(eve.req(read)).await, Code::PermissionDenied);
    let bad = GetUnreadCountsRequest { channel_ids: vec!["nope".into()], thread_ids: vec![] };
    assert_invalid(app.messaging().get_unread_counts(bob.req(bad)).await, "channel_ids[0]");
    let secret = app.create_channel(&alice, "secret", ChannelKind::Private, &[]).await;
    let only = GetUnreadCountsRequest { channel_ids: vec![secret.channel_id.clone()], thread_ids: vec![] };
    let answer = app.messaging().get_unread_counts(eve.req(only)).await.unwrap().into_inner().counts.unwrap();
    assert!(answer.channels.is_empty(), "an outsider learns nothing of a private conversation");
}

/// The next unread-counts frame on a stream.
async fn counts_frame(stream: &mut impl FrameSource) -> UnreadCountsFrame {
    loop {
        if let Frame::UnreadCounts(f) = frame(stream).await {
            return f;
        }
    }
}

fn pushed(frame: &UnreadCountsFrame, channel_id: &str) -> (i64, i64) {
    pair(&frame.counts.as_ref().and_then(|c| channel(c, channel_id)))
}

#[tokio::test]
async fn unread_counts_are_pushed_live_on_both_kinds_of_stream() {
    let (app, alice, bob, id) = private_pair().await;

    let request = SubscribeRequest { cursors: vec![], all_channels: true };
    let mut browser = app.realtime().subscribe(bob.req(request)).await.unwrap().into_inner();
    let (tx, mut native) = connect(&app, &bob).await;
    tx.send(subscribe(vec![], true)).await.unwrap();
    let snapshot = counts_frame(&mut browser).await;
    assert!(snapshot.snapshot);
    assert_eq!(pushed(&snapshot, &id), (0, 0));
    assert!(counts_frame(&mut native).await.snapshot);

    send(&app, &alice, &id, "hello").await;
    send(&app, &alice, &id, "hi @bob").await;
    assert_eq!(pushed(&counts_frame(&mut browser).await, &id), (1, 0));
    let second = counts_frame(&mut browser).await;
    assert_eq!(pushed(&second, &id), (2, 1));
    assert_eq!(second.counts.unwrap().total_unread_count, 2);
    assert_eq!(pushed(&counts_frame(&mut native).await, &id), (1, 0));
    assert_eq!(pushed(&counts_frame(&mut native).await, &id), (2, 1));

    // Reading on another device reaches both streams.
    let head = send(&app, &alice, &id, "@channel all hands").await;
    assert_eq!(pushed(&counts_frame(&mut browser).await, &id), (3, 2));
    assert_eq!(pushed(&counts_frame(&mut native).await, &id), (3, 2));
    mark_read(&app, &bob, &id, head.seq).await;
    assert_eq!(pushed(&counts_frame(&mut browser).await, &id), (0, 0));
    assert_eq!(pushed(&counts_frame(&mut native).await, &id), (0, 0));
    let deleted = send(&app, &alice, &id, "oops").await;
    assert_eq!(pushed(&counts_frame(&mut browser).await, &id), (1, 0));
    app.messaging()
        .delete_message(alice.req(DeleteMessageRequest { message_id: deleted.message_id, ..Default::default() }))
        .await
        .unwrap();
    assert_eq!(pushed(&counts_frame(&mut browser).await, &id), (0, 0));

    // Leaving removes the conversation from the counts.
    app.channels()
        .leave_channel(bob.req(LeaveChannelRequest { channel_id: id.clone(), ..Default::default() }))
        .await
        .unwrap();
    loop {
        let f = counts_frame(&mut browser).await;
        if f.removed_channel_ids.contains(&id) {
            break;
        }
    }
}

#[tokio::test]
async fn acknowledgements_and_reads_make_receipts_within_privacy_settings() {
    let (app, alice, bob, id) = private_pair().await;
    let (tx, mut stream) = connect(&app, &bob).await;
    tx.send(subscribe(vec![cursor(&id, None)], false)).await.unwrap();
    subscribed(&mut stream).await;
    let m = send(&app, &alice, &id, "did you get this?").await;
    crate::helpers::event(&mut stream).await;

    let receipts = |app: &TestApp| {
        let mut client = app.messaging();
        let alice = alice.clone();
        let request = ListReadReceiptsRequest { message_id: m.message_id.clone() };
        async move { client.list_read_receipts(alice.req(request)).await.unwrap().into_inner() }
    };
    assert!(receipts(&app).await.delivered_to_ids.is_empty());
    let ack = |seq: i64, channel_id: &str| ConnectRequest {
        frame: Some(ClientFrame::Ack(AckFrame { channel_id: channel_id.into(), seq })),
    };
    tx.send(ack(m.seq, &id)).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while receipts(&app).await.delivered_to_ids != [bob.user_id.clone()] {
        assert!(tokio::time::Instant::now() < deadline, "the ack was not recorded");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Acks of what was not delivered, or of channels not followed, are refused.
    tx.send(ack(m.seq + 100, &id)).await.unwrap();
    let other = uuid::Uuid::now_v7().to_string();
    tx.send(ack(1, &other)).await.unwrap();
    let mut codes = Vec::new();
    while codes.len() < 2 {
        if let Frame::Error(e) = frame(&mut stream).await {
            codes.push(e.code);
        }
    }
    assert_eq!(codes, ["OUT_OF_RANGE", "FAILED_PRECONDITION"]);

    mark_read(&app, &bob, &id, m.seq).await;
    let read = receipts(&app).await;
    assert_eq!((read.reader_ids.clone(), read.delivered_to_ids.is_empty()), (vec![bob.user_id.clone()], true));
    // With read receipts off, bob shows as having received it, not read it.
    let off = UpdateSettingsRequest {
        settings: Some(Settings { send_read_receipts: false, ..Default::default() }),
        update_mask: Some(FieldMask { paths: vec!["send_read_receipts".into()] }),
    };
    app.users().update_settings(bob.req(off)).await.unwrap();
    let read = receipts(&app).await;
    assert!(read.reader_ids.is_empty());
    assert_eq!(read.delivered_to_ids, std::slice::from_ref(&bob.user_id));

    // MarkDelivered by hand: members only, forward only.
    let eve = app.register("eve").await;
    let by_hand = MarkDeliveredRequest { channel_id: id.clone(), seq: m.seq };
    assert_code(app.messaging().mark_delivered(eve.req(by_hand.clone())).await, Code::NotFound);
    let back = MarkDeliveredRequest { channel_id: id.clone(), seq: 0 };
    let kept = app.messaging().mark_delivered(bob.req(back)).await.unwrap().into_inner();
    assert_eq!(kept.delivered_seq, m.seq);
    assert_invalid(
        app.messaging().mark_delivered(bob.req(MarkDeliveredRequest { channel_id: id, seq: -1 })).await,
        "seq",
    );
}

#[tokio::test]
async fn sending_to_a_thread_with_mentions_keeps_channel_counts_apart() {
    let (app, alice, bob, id) = private_pair().await;
    let root = send(&app, &bob, &id, "root by bob").await;
    let reply = SendMessageRequest {
        channel_id: id.clone(),
        thread_id: root.message_id.clone(),
        text: "reply for @bob".into(),
        ..Default::default()
    };
    app.messaging().send_message(alice.req(reply.clone())).await.unwrap();
    let now = counts(&app, &bob).await;
    assert_eq!(pair(&channel(&now, &id)), (0, 0), "a thread-only reply is not unread in the channel");
    assert_eq!((now.threads[0].unread_count, now.threads[0].mention_count), (1, 1));
    let both = SendMessageRequest { also_send_to_channel: true, text: "also here".into(), ..reply };
    app.messaging().send_message(alice.req(both)).await.unwrap();
    let now = counts(&app, &bob).await;
    assert_eq!(pair(&channel(&now, &id)), (1, 0));
    assert_eq!(now.threads[0].unread_count, 2);
    assert_eq!(now.total_thread_unread_count, 2);
}
