use colink_proto::channels::v1::ChannelKind;
use colink_proto::messaging::v1::{
    DeleteMessageRequest, Direction, EditMessageRequest, GetMessageRequest, GetReadStateRequest,
    ListChannelEventsRequest, ListMessageEditsRequest, ListMessagesRequest, ListPinnedMessagesRequest,
    ListReadReceiptsRequest, MarkReadRequest, PinMessageRequest, RecallMessageRequest, SendMessageRequest,
};
use tonic::Code;

use crate::helpers::{TestApp, assert_code};

#[tokio::test]
async fn a_retried_send_returns_the_original_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let room = app.create_channel(&alice, "room", ChannelKind::Public, &[]).await;
    let send = SendMessageRequest {
        channel_id: room.channel_id.clone(),
        text: "exactly once".into(),
        idempotency_key: "7c9e6679-7425-40de-944b-e07fc1f90ae7".into(),
        ..Default::default()
    };
    let first = app.messaging().send_message(alice.req(send.clone())).await.unwrap().into_inner().message.unwrap();
    let retry = app.messaging().send_message(alice.req(send.clone())).await.unwrap().into_inner().message.unwrap();
    assert_eq!(first, retry);
    // The key belongs to its sender: the same key from someone else is a new message.
    let bob = app.register("bob").await;
    app.channels()
        .join_channel(bob.req(colink_proto::channels::v1::JoinChannelRequest {
            channel_id: room.channel_id.clone(),
            ..Default::default()
        }))
        .await
        .unwrap();
    let theirs = app.messaging().send_message(bob.req(send)).await.unwrap().into_inner().message.unwrap();
    assert_ne!(theirs.message_id, first.message_id);
    let list = ListMessagesRequest { channel_id: room.channel_id.clone(), ..Default::default() };
    assert_eq!(app.messaging().list_messages(alice.req(list)).await.unwrap().into_inner().messages.len(), 2);
}

#[tokio::test]
async fn history_pages_in_both_directions() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let room = app.create_channel(&alice, "room", ChannelKind::Public, &[]).await;
    for i in 1..=7 {
        app.send(&alice, &room.channel_id, &format!("m{i}")).await;
    }
    let texts = |r: &colink_proto::messaging::v1::ListMessagesResponse| {
        r.messages.iter().map(|m| m.text.clone()).collect::<Vec<_>>()
    };
    let page = |token: String| ListMessagesRequest {
        channel_id: room.channel_id.clone(),
        page_size: 3,
        page_token: token,
        ..Default::default()
    };
    let newest = app.messaging().list_messages(alice.req(page(String::new()))).await.unwrap().into_inner();
    assert_eq!(texts(&newest), ["m7", "m6", "m5"]);
    assert!(newest.prev_page_token.is_empty());
    let older = app.messaging().list_messages(alice.req(page(newest.next_page_token))).await.unwrap().into_inner();
    assert_eq!(texts(&older), ["m4", "m3", "m2"]);
    let back =
        app.messaging().list_messages(alice.req(page(older.prev_page_token.clone()))).await.unwrap().into_inner();
    assert_eq!(texts(&back), ["m5", "m6", "m7"]);
    let oldest = app.messaging().list_messages(alice.req(page(older.next_page_token))).await.unwrap().into_inner();
    assert_eq!(texts(&oldest), ["m1"]);
    assert!(oldest.next_page_token.is_empty());

    let forward = ListMessagesRequest {
        channel_id: room.channel_id.clone(),
        page_size: 4,
        direction: Direction::Forward as i32,
        ..Default::default()
    };
    let from_start = app.messaging().list_messages(alice.req(forward)).await.unwrap().into_inner();
    assert_eq!(texts(&from_start), ["m1", "m2", "m3", "m4"]);
}

#[tokio::test]
async fn edits_keep_history_and_respect_versions() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.create_channel(&alice, "room", ChannelKind::Public, &[&bob]).await;
    let sent = app.send(&alice, &room.channel_id, "helo").await;
    let edit = |text: &str, expected: i32| EditMessageRequest {
        message_id: sent.message_id.clone(),
        text: text.into(),
        expected_version: expected,
        ..Default::default()
    };
    let edited = app.messaging().edit_message(alice.req(edit("hello", 1))).await.unwrap().into_inner().message.unwrap();
    assert_eq!((edited.text.as_str(), edited.version), ("hello", 2));
    assert!(edited.edit_time.is_some());
    assert_code(app.messaging().edit_message(alice.req(edit("hullo", 1))).await, Code::FailedPrecondition);
    assert_code(app.messaging().edit_message(bob.req(edit("bob was here", 0))).await, Code::PermissionDenied);
    let history = app
        .messaging()
        .list_message_edits(bob.req(ListMessageEditsRequest { message_id: sent.message_id.clone() }))
        .await
        .unwrap()
        .into_inner()
        .edits;
    assert_eq!(history.len(), 1);
    assert_eq!((history[0].version, history[0].text.as_str()), (1, "helo"));
}

#[tokio::test]
async fn deletion_is_for_senders_and_channel_admins() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let room = app.create_channel(&alice, "room", ChannelKind::Public, &[&bob, &carol]).await;
    let by_bob = app.send(&bob, &room.channel_id, "bob's").await;
    let delete = |id: &str| DeleteMessageRequest { message_id: id.to_string(), ..Default::default() };
    assert_code(app.messaging().delete_message(carol.req(delete(&by_bob.message_id))).await, Code::PermissionDenied);
    // The channel owner moderates.
    let deleted = app
        .messaging()
        .delete_message(alice.req(delete(&by_bob.message_id)))
        .await
        .unwrap()
        .into_inner()
        .message
        .unwrap();
    assert!(deleted.deleted && deleted.text.is_empty());
    // Deleting twice changes nothing; editing a deleted message is refused.
    app.messaging().delete_message(bob.req(delete(&by_bob.message_id))).await.unwrap();
    let edit = EditMessageRequest {
        message_id: by_bob.message_id.clone(),
        text: "back".into(),
        expected_version: 0,
        ..Default::default()
    };
    assert_code(app.messaging().edit_message(bob.req(edit)).await, Code::FailedPrecondition);
    let got = app.messaging().get_message(carol.req(GetMessageRequest { message_id: by_bob.message_id.clone() })).await;
    assert!(got.unwrap().into_inner().message.unwrap().deleted);
}

#[tokio::test]
async fn direct_messages_by_recipient_recall_pins_and_read_state() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let send = SendMessageRequest { recipient_id: bob.user_id.clone(), text: "psst".into(), ..Default::default() };
    let first = app.messaging().send_message(alice.req(send.clone())).await.unwrap().into_inner().message.unwrap();
    let second = app.messaging().send_message(alice.req(send)).await.unwrap().into_inner().message.unwrap();
    assert_eq!(first.channel_id, second.channel_id, "both go to the one DM");
    let dm = first.channel_id.clone();

    let read = app.messaging().get_read_state(bob.req(GetReadStateRequest { channel_id: dm.clone() })).await.unwrap();
    assert_eq!(read.into_inner().read_state.unwrap().unread_count, 2);
    let marked = app
        .messaging()
        .mark_read(bob.req(MarkReadRequest { channel_id: dm.clone(), seq: first.seq, ..Default::default() }))
        .await
        .unwrap();
    assert_eq!(marked.into_inner().read_state.unwrap().unread_count, 1);
    // Read positions never move back.
    let back = app
        .messaging()
        .mark_read(bob.req(MarkReadRequest { channel_id: dm.clone(), seq: 1, ..Default::default() }))
        .await
        .unwrap();
    assert_eq!(back.into_inner().read_state.unwrap().last_read_seq, first.seq);
    let receipts = app
        .messaging()
        .list_read_receipts(alice.req(ListReadReceiptsRequest { message_id: first.message_id.clone() }))
        .await;
    assert_eq!(receipts.unwrap().into_inner().reader_ids, vec![bob.user_id.clone()]);

    app.messaging()
        .pin_message(bob.req(PinMessageRequest { message_id: first.message_id.clone(), ..Default::default() }))
        .await
        .unwrap();
    let pins =
        app.messaging().list_pinned_messages(alice.req(ListPinnedMessagesRequest { channel_id: dm.clone() })).await;
    assert_eq!(pins.unwrap().into_inner().messages[0].message_id, first.message_id);

    assert_code(
        app.messaging()
            .recall_message(
                bob.req(RecallMessageRequest { message_id: second.message_id.clone(), ..Default::default() }),
            )
            .await,
        Code::PermissionDenied,
    );
    let recalled = app
        .messaging()
        .recall_message(alice.req(RecallMessageRequest { message_id: second.message_id.clone(), ..Default::default() }))
        .await
        .unwrap()
        .into_inner()
        .message
        .unwrap();
    assert!(recalled.recalled && recalled.text.is_empty());
}

#[tokio::test]
async fn every_change_takes_the_next_sequence_without_gaps() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.create_channel(&alice, "room", ChannelKind::Public, &[&bob]).await;
    let m = app.send(&alice, &room.channel_id, "one").await;
    app.messaging()
        .edit_message(alice.req(EditMessageRequest {
            message_id: m.message_id.clone(),
            text: "two".into(),
            expected_version: 0,
            ..Default::default()
        }))
        .await
        .unwrap();
    app.messaging()
        .delete_message(alice.req(DeleteMessageRequest { message_id: m.message_id.clone(), ..Default::default() }))
        .await
        .unwrap();
    let events = app
        .messaging()
        .list_channel_events(bob.req(ListChannelEventsRequest {
            channel_id: room.channel_id.clone(),
            after_seq: 0,
            page_size: 0,
        }))
        .await
        .unwrap()
        .into_inner();
    let seqs: Vec<i64> = events.events.iter().map(|e| e.seq).collect();
    // owner joined, bob joined, created, edited, deleted.
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(events.head_seq, 5);
}

#[tokio::test]
async fn concurrent_sends_get_gap_free_sequences_and_a_repeated_key_stores_once() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let rooms = [
        app.create_channel(&alice, "one", ChannelKind::Public, &[]).await,
        app.create_channel(&alice, "two", ChannelKind::Public, &[]).await,
    ];
    // Forty sends at once, spread over two channels, four of them retries
    // of one idempotency key: they share transactions.
    let sends = (0..40).map(|i| {
        let mut client = app.messaging();
        let retry = i % 10 == 0;
        let key = if retry { "same-key".to_string() } else { String::new() };
        let request = SendMessageRequest {
            channel_id: rooms[i % 2].channel_id.clone(),
            text: if retry { "retried".to_string() } else { format!("m{i}") },
            idempotency_key: key,
            ..Default::default()
        };
        let request = alice.req(request);
        async move { client.send_message(request).await.map(|r| r.into_inner().message.unwrap_or_default()) }
    });
    let sent: Vec<_> = futures_util::future::join_all(sends).await.into_iter().map(Result::unwrap).collect();
    let repeated: Vec<_> = sent.iter().enumerate().filter(|(i, _)| i % 10 == 0).map(|(_, m)| m).collect();
    assert!(repeated.iter().all(|m| *m == repeated[0]), "one key, one message");
    for room in &rooms {
        let request = ListChannelEventsRequest { channel_id: room.channel_id.clone(), after_seq: 0, page_size: 500 };
        let log = app.messaging().list_channel_events(alice.req(request)).await.unwrap().into_inner().events;
        let seqs: Vec<i64> = log.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=log.len() as i64).collect::<Vec<_>>(), "the log of {} has a gap", room.name);
        let mut logged: Vec<i64> = log
            .iter()
            .filter_map(|e| match &e.kind {
                Some(colink_proto::messaging::v1::channel_event::Kind::MessageCreated(m)) => Some(m.seq),
                _ => None,
            })
            .collect();
        let mut acknowledged: Vec<i64> =
            sent.iter().filter(|m| m.channel_id == room.channel_id).map(|m| m.seq).collect();
        acknowledged.sort_unstable();
        acknowledged.dedup();
        logged.sort_unstable();
        assert_eq!(logged, acknowledged, "every acknowledged send is in the log of {}, once", room.name);
    }
    let stored: usize = futures_util::future::join_all(rooms.iter().map(|room| {
        let mut client = app.messaging();
        let request = alice.req(ListMessagesRequest { channel_id: room.channel_id.clone(), ..Default::default() });
        async move { client.list_messages(request).await.unwrap().into_inner().messages.len() }
    }))
    .await
    .into_iter()
    .sum();
    assert_eq!(stored, 37);
}

#[tokio::test]
async fn a_removed_member_cannot_post_after_posting_before() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.create_channel(&alice, "room", ChannelKind::Private, &[&bob]).await;
    // Bob's right to post is now remembered.
    app.send(&bob, &room.channel_id, "hello").await;
    let remove = colink_proto::channels::v1::RemoveMemberRequest {
        channel_id: room.channel_id.clone(),
        user_id: bob.user_id.clone(),
        ..Default::default()
    };
    app.channels().remove_member(alice.req(remove)).await.unwrap();
    let post =
        SendMessageRequest { channel_id: room.channel_id.clone(), text: "still here?".into(), ..Default::default() };
    // The removal reaches messaging as an event; it must be honoured promptly.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match app.messaging().send_message(bob.req(post.clone())).await {
            Err(status) => {
                // The room is private: to someone outside it, it does not exist.
                assert_eq!(status.code(), Code::NotFound);
                break;
            }
            Ok(_) => assert!(tokio::time::Instant::now() < deadline, "a removed member could still post"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_batch_get_returns_only_what_the_caller_can_read_as_it_is_now() {
    use colink_proto::messaging::v1::BatchGetMessagesRequest;
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let open = app.create_channel(&alice, "open", ChannelKind::Public, &[]).await;
    let secret = app.create_channel(&alice, "secret", ChannelKind::Private, &[]).await;
    let public = app.send(&alice, &open.channel_id, "for everyone").await;
    let private = app.send(&alice, &secret.channel_id, "for alice").await;
    let gone = app.send(&alice, &open.channel_id, "soon gone").await;
    let delete = DeleteMessageRequest { message_id: gone.message_id.clone(), ..Default::default() };
    app.messaging().delete_message(alice.req(delete)).await.unwrap();
    let unknown = "0192f6a0-0000-7000-8000-000000000000".to_string();
    let ids = vec![private.message_id.clone(), unknown, gone.message_id.clone(), public.message_id.clone()];
    let get = |user: &crate::helpers::TestUser, ids: Vec<String>| {
        let mut client = app.messaging();
        let request = user.req(BatchGetMessagesRequest { message_ids: ids });
        async move { client.batch_get_messages(request).await }
    };
    let mine = get(&alice, ids.clone()).await.unwrap().into_inner().messages;
    let found: Vec<_> = mine.iter().map(|m| (m.message_id.clone(), m.deleted, m.text.clone())).collect();
    assert_eq!(
        found,
        [
            (private.message_id.clone(), false, "for alice".to_string()),
            (gone.message_id.clone(), true, String::new()),
            (public.message_id.clone(), false, "for everyone".to_string()),
        ],
        "request order; the deleted one marked and without text; the unknown one left out"
    );
    // An outsider of the private channel learns nothing of its message.
    let theirs = get(&bob, ids).await.unwrap().into_inner().messages;
    assert!(theirs.iter().all(|m| m.channel_id == open.channel_id), "{theirs:?}");
    assert_eq!(theirs.len(), 2);
    // Bad input names the field and changes nothing.
    crate::helpers::assert_invalid(get(&alice, Vec::new()).await, "message_ids");
    crate::helpers::assert_invalid(get(&alice, vec!["nope".into()]).await, "message_ids[0]");
    crate::helpers::assert_invalid(get(&alice, vec![public.message_id.clone(); 101]).await, "message_ids");
}
