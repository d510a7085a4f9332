use colink_proto::channels::v1::{ChannelKind, LeaveChannelRequest};
use colink_proto::messaging::v1::channel_event::Kind;
use colink_proto::messaging::v1::{
    DeleteMessageRequest, EditMessageRequest, GetMessageRequest, ListMessagesRequest, RecallMessageRequest,
    SendMessageRequest,
};
use colink_proto::threads::v1::{
    CreateThreadRequest, FollowThreadRequest, GetThreadRequest, ListChannelThreadsRequest, ListFollowedThreadsRequest,
    ListThreadRepliesRequest, ListThreadRepliesResponse, MarkThreadReadRequest, PageDirection, Reply,
    ReplyToThreadRequest, Thread, UnfollowThreadRequest,
};
use tonic::Code;

use crate::helpers::{TestApp, TestUser, assert_code, assert_invalid, events};
use crate::realtime::{connect, cursor, subscribe, subscribed};

async fn create(app: &TestApp, user: &TestUser, root: &str, text: &str) -> (Thread, Reply, bool) {
    let request = CreateThreadRequest { parent_message_id: root.into(), text: text.into(), ..Default::default() };
    let r = app.threads().create_thread(user.req(request)).await.expect("create thread").into_inner();
    (r.thread.expect("thread"), r.reply.expect("reply"), r.thread_created)
}

async fn reply(app: &TestApp, user: &TestUser, thread_id: &str, text: &str) -> (Thread, Reply) {
    let request = ReplyToThreadRequest { thread_id: thread_id.into(), text: text.into(), ..Default::default() };
    let r = app.threads().reply_to_thread(user.req(request)).await.expect("reply").into_inner();
    (r.thread.expect("thread"), r.reply.expect("reply"))
}

async fn thread(app: &TestApp, user: &TestUser, thread_id: &str) -> Thread {
    let request = GetThreadRequest { thread_id: thread_id.into() };
    app.threads().get_thread(user.req(request)).await.expect("get thread").into_inner().thread.expect("thread")
}

async fn followed(app: &TestApp, user: &TestUser, unread_only: bool) -> Vec<Thread> {
    let request = ListFollowedThreadsRequest { unread_only, ..Default::default() };
    app.threads().list_followed_threads(user.req(request)).await.expect("followed").into_inner().threads
}

fn texts(page: &ListThreadRepliesResponse) -> Vec<String> {
    page.replies.iter().map(|r| r.text.clone()).collect()
}

#[tokio::test]
async fn a_thread_keeps_its_counts_through_replies_edits_deletions_and_recalls() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let room = app.create_channel(&alice, "room", ChannelKind::Private, &[&bob, &carol]).await;
    let root = app.send(&alice, &room.channel_id, "lunch?").await;

    let (first, r1, created) = create(&app, &bob, &root.message_id, "r1").await;
    assert!(created);
    assert_eq!(first.thread_id, root.message_id, "a thread is named by its root message");
    assert_eq!(first.parent_message_id, root.message_id);
    assert_eq!((first.reply_count, first.participant_count), (1, 1));
    assert_eq!(r1.thread_id, root.message_id);
    let (again, _, created) = create(&app, &carol, &root.message_id, "r2").await;
    assert!(!created, "a second CreateThread adds to the same thread");
    assert_eq!(again.reply_count, 2);
    reply(&app, &bob, &root.message_id, "r3").await;
    reply(&app, &carol, &root.message_id, "r4").await;
    let (latest, r5) = reply(&app, &bob, &root.message_id, "r5").await;
    assert_eq!((latest.reply_count, latest.participant_count), (5, 2));
    assert_eq!(latest.recent_participant_ids, [bob.user_id.clone(), carol.user_id.clone()]);
    assert_eq!(latest.last_reply_message_id, r5.message_id);
    assert_eq!(latest.creator_id, bob.user_id);

    // The root carries its summary; the channel's main flow shows no replies.
    let get = GetMessageRequest { message_id: root.message_id.clone() };
    let shown = app.messaging().get_message(carol.req(get.clone())).await.unwrap().into_inner().message.unwrap();
    let summary = shown.thread.expect("the root shows its thread");
    assert_eq!((summary.reply_count, summary.last_reply_message_id.as_str()), (5, r5.message_id.as_str()));
    let flow = ListMessagesRequest { channel_id: room.channel_id.clone(), ..Default::default() };
    let main = app.messaging().list_messages(alice.req(flow.clone())).await.unwrap().into_inner().messages;
    assert_eq!(main.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["lunch?"]);

    // A reply also sent to the channel shows in both places.
    let both = SendMessageRequest {
        channel_id: room.channel_id.clone(),
        thread_id: root.message_id.clone(),
        text: "r6, for everyone".into(),
        also_send_to_channel: true,
        ..Default::default()
    };
    let r6 = app.messaging().send_message(alice.req(both)).await.unwrap().into_inner().message.unwrap();
    assert!(r6.also_sent_to_channel);
    let main = app.messaging().list_messages(alice.req(flow)).await.unwrap().into_inner().messages;
    assert_eq!(main.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["r6, for everyone", "lunch?"]);

    // Edits change no count; deleting and recalling the newest replies do.
    let edit = EditMessageRequest {
        message_id: r1.message_id.clone(),
        text: "r1!".into(),
        expected_version: 0,
        ..Default::default()
    };
    app.messaging().edit_message(bob.req(edit)).await.unwrap();
    assert_eq!(thread(&app, &bob, &root.message_id).await.reply_count, 6);
    app.messaging()
        .delete_message(alice.req(DeleteMessageRequest { message_id: r6.message_id.clone(), ..Default::default() }))
        .await
        .unwrap();
    app.messaging()
        .recall_message(bob.req(RecallMessageRequest { message_id: r5.message_id.clone(), ..Default::default() }))
        .await
        .unwrap();
    // Deleting what is already recalled counts nothing twice.
    app.messaging()
        .delete_message(bob.req(DeleteMessageRequest { message_id: r5.message_id.clone(), ..Default::default() }))
        .await
        .unwrap();
    let now = thread(&app, &carol, &root.message_id).await;
    assert_eq!((now.reply_count, now.participant_count), (4, 2));
    let r4 = app
        .threads()
        .list_thread_replies(carol.req(ListThreadRepliesRequest {
            thread_id: root.message_id.clone(),
            direction: PageDirection::Backward as i32,
            page_size: 3,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(texts(&r4), ["", "", "r4"], "removed replies keep their place without their text");
    assert!(r4.replies[0].deleted && r4.replies[1].deleted);
    assert_eq!(now.last_reply_message_id, r4.replies[2].message_id);
    // Alice's only reply is gone, so she no longer counts as a participant.
    assert_eq!(now.recent_participant_ids, [carol.user_id.clone(), bob.user_id.clone()]);
}

#[tokio::test]
async fn replies_page_in_both_directions() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let room = app.create_channel(&alice, "room", ChannelKind::Public, &[]).await;
    let root = app.send(&alice, &room.channel_id, "root").await;
    let mut ids = Vec::new();
    for i in 1..=7 {
        let request =
            ReplyToThreadRequest { thread_id: root.message_id.clone(), text: format!("r{i}"), ..Default::default() };
        let result = if i == 1 {
            let (_, reply, _) = create(&app, &alice, &root.message_id, "r1").await;
            reply
        } else {
            app.threads().reply_to_thread(alice.req(request)).await.unwrap().into_inner().reply.unwrap()
        };
        ids.push(result.message_id);
    }
    let list = |token: String, direction: PageDirection, anchor: String| ListThreadRepliesRequest {
        thread_id: root.message_id.clone(),
        page_size: 3,
        page_token: token,
        direction: direction as i32,
        anchor_message_id: anchor,
    };
    let page = |r: ListThreadRepliesRequest| {
        let mut client = app.threads();
        let alice = alice.clone();
        async move { client.list_thread_replies(alice.req(r)).await.unwrap().into_inner() }
    };
    let first = page(list(String::new(), PageDirection::Unspecified, String::new())).await;
    assert_eq!(texts(&first), ["r1", "r2", "r3"], "oldest first by default");
    assert!(first.prev_page_token.is_empty());
    let second = page(list(first.next_page_token.clone(), PageDirection::Unspecified, String::new())).await;
    assert_eq!(texts(&second), ["r4", "r5", "r6"]);
    let back = page(list(second.prev_page_token.clone(), PageDirection::Unspecified, String::new())).await;
    assert_eq!(texts(&back), ["r3", "r2", "r1"]);
    let last = page(list(second.next_page_token.clone(), PageDirection::Unspecified, String::new())).await;
    assert_eq!(texts(&last), ["r7"]);
    assert!(last.next_page_token.is_empty());
    let newest = page(list(String::new(), PageDirection::Backward, String::new())).await;
    assert_eq!(texts(&newest), ["r7", "r6", "r5"]);
    let around = page(list(String::new(), PageDirection::Forward, ids[3].clone())).await;
    assert_eq!(texts(&around), ["r5", "r6", "r7"], "an anchor starts just past that reply");

    // A token belongs to its thread.
    let other_root = app.send(&alice, &room.channel_id, "other").await;
    create(&app, &alice, &other_root.message_id, "x").await;
    let stolen = ListThreadRepliesRequest {
        thread_id: other_root.message_id.clone(),
        page_token: first.next_page_token,
        ..Default::default()
    };
    assert_invalid(app.threads().list_thread_replies(alice.req(stolen)).await, "page_token");
    let foreign_anchor = ListThreadRepliesRequest {
        thread_id: other_root.message_id.clone(),
        anchor_message_id: ids[0].clone(),
        ..Default::default()
    };
    assert_invalid(app.threads().list_thread_replies(alice.req(foreign_anchor)).await, "anchor_message_id");
}

#[tokio::test]
async fn followers_and_unread_replies() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let room = app.create_channel(&alice, "room", ChannelKind::Private, &[&bob, &carol]).await;
    let root = app.send(&alice, &room.channel_id, "plan").await;
    let (_, r1, _) = create(&app, &bob, &root.message_id, "r1").await;
    reply(&app, &bob, &root.message_id, "r2").await;
    let (_, r3) = reply(&app, &carol, &root.message_id, "r3").await;

    // The root's author and every replier follow; a bystander does not.
    let alices = followed(&app, &alice, false).await;
    assert_eq!(alices.len(), 1);
    let state = alices[0].viewer_state.clone().unwrap();
    assert!(state.following);
    assert_eq!(state.unread_count, 3);
    let bobs = followed(&app, &bob, false).await[0].viewer_state.clone().unwrap();
    assert_eq!(bobs.unread_count, 1, "his own replies count as read");
    let dave = app.register("dave").await;
    assert!(followed(&app, &dave, false).await.is_empty());

    // Reading moves forward only.
    let mark = |id: &str| MarkThreadReadRequest {
        thread_id: root.message_id.clone(),
        last_read_message_id: id.into(),
        ..Default::default()
    };
    let read = app.threads().mark_thread_read(alice.req(mark(&r3.message_id))).await.unwrap().into_inner();
    assert_eq!(read.viewer_state.unwrap().unread_count, 0);
    let back = app.threads().mark_thread_read(alice.req(mark(&r1.message_id))).await.unwrap().into_inner();
    let back = back.viewer_state.unwrap();
    assert_eq!((back.unread_count, back.last_read_message_id.as_str()), (0, r3.message_id.as_str()));
    assert!(followed(&app, &alice, true).await.is_empty(), "nothing unread");
    reply(&app, &bob, &root.message_id, "r4").await;
    assert_eq!(followed(&app, &alice, true).await.len(), 1);
    assert_invalid(app.threads().mark_thread_read(alice.req(mark(&root.message_id))).await, "last_read_message_id");

    // Unfollowing holds against others' replies; one's own reply follows again.
    let unfollow = UnfollowThreadRequest { thread_id: root.message_id.clone(), ..Default::default() };
    let after = app.threads().unfollow_thread(alice.req(unfollow)).await.unwrap().into_inner().thread.unwrap();
    assert!(!after.viewer_state.unwrap().following);
    reply(&app, &carol, &root.message_id, "r5").await;
    assert!(followed(&app, &alice, false).await.is_empty());
    reply(&app, &alice, &root.message_id, "r6").await;
    let again = followed(&app, &alice, false).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].viewer_state.as_ref().unwrap().unread_count, 0);

    // Anyone who can read the thread may follow it.
    let follow = FollowThreadRequest { thread_id: root.message_id.clone(), ..Default::default() };
    app.threads().follow_thread(carol.req(follow.clone())).await.unwrap();
    app.threads().follow_thread(carol.req(follow)).await.unwrap();
    assert_eq!(followed(&app, &carol, false).await.len(), 1, "following twice changes nothing");

    // Leaving the conversation drops its threads from the list.
    app.channels()
        .leave_channel(bob.req(LeaveChannelRequest { channel_id: room.channel_id.clone(), ..Default::default() }))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + crate::helpers::WAIT;
    while !followed(&app, &bob, false).await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "threads of a left conversation are still listed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // The channel's threads, most recent reply first.
    let second = app.send(&alice, &room.channel_id, "second").await;
    create(&app, &carol, &second.message_id, "s1").await;
    let list = ListChannelThreadsRequest { channel_id: room.channel_id.clone(), page_size: 1, ..Default::default() };
    let page = app.threads().list_channel_threads(carol.req(list.clone())).await.unwrap().into_inner();
    assert_eq!(page.threads[0].thread_id, second.message_id);
    let next = ListChannelThreadsRequest { page_token: page.next_page_token, ..list };
    let page = app.threads().list_channel_threads(carol.req(next)).await.unwrap().into_inner();
    assert_eq!(page.threads[0].thread_id, root.message_id);
    assert!(page.next_page_token.is_empty());
}

#[tokio::test]
async fn thread_rules_bad_input_and_outsiders() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let eve = app.register("eve").await;
    let room = app.create_channel(&alice, "room", ChannelKind::Private, &[&bob]).await;
    let lobby = app.create_channel(&alice, "lobby", ChannelKind::Public, &[]).await;
    let root = app.send(&alice, &room.channel_id, "root").await;
    let (_, r1, _) = create(&app, &bob, &root.message_id, "r1").await;

    // Replies to replies and to removed roots are refused.
    let nested =
        CreateThreadRequest { parent_message_id: r1.message_id.clone(), text: "x".into(), ..Default::default() };
    assert_code(app.threads().create_thread(alice.req(nested)).await, Code::FailedPrecondition);
    let gone = app.send(&alice, &room.channel_id, "soon gone").await;
    create(&app, &bob, &gone.message_id, "before").await;
    app.messaging()
        .delete_message(alice.req(DeleteMessageRequest { message_id: gone.message_id.clone(), ..Default::default() }))
        .await
        .unwrap();
    let late = ReplyToThreadRequest { thread_id: gone.message_id.clone(), text: "after".into(), ..Default::default() };
    assert_code(app.threads().reply_to_thread(bob.req(late)).await, Code::FailedPrecondition);
    let get = GetThreadRequest { thread_id: gone.message_id.clone() };
    let kept = app.threads().get_thread(bob.req(get)).await.unwrap().into_inner();
    assert!(kept.parent.unwrap().deleted, "the thread stays readable");

    // Bad input names the field and changes nothing.
    let bad = |parent: &str, text: &str| CreateThreadRequest {
        parent_message_id: parent.into(),
        text: text.into(),
        ..Default::default()
    };
    assert_invalid(app.threads().create_thread(alice.req(bad("nope", "x"))).await, "parent_message_id");
    assert_invalid(app.threads().create_thread(alice.req(bad(&root.message_id, "  "))).await, "text");
    assert_invalid(app.threads().create_thread(alice.req(bad(&root.message_id, &"x".repeat(40_001)))).await, "text");
    let key = CreateThreadRequest { idempotency_key: "bad key".into(), ..bad(&root.message_id, "x") };
    assert_invalid(app.threads().create_thread(alice.req(key)).await, "idempotency_key");
    let unknown = bad(&uuid::Uuid::now_v7().to_string(), "x");
    assert_code(app.threads().create_thread(alice.req(unknown)).await, Code::NotFound);
    let elsewhere = app.send(&alice, &lobby.channel_id, "in the lobby").await;
    let mismatched = SendMessageRequest {
        channel_id: room.channel_id.clone(),
        thread_id: elsewhere.message_id.clone(),
        text: "x".into(),
        ..Default::default()
    };
    assert_invalid(app.messaging().send_message(alice.req(mismatched)).await, "thread_id");
    let flat = SendMessageRequest {
        channel_id: room.channel_id.clone(),
        text: "x".into(),
        also_send_to_channel: true,
        ..Default::default()
    };
    assert_invalid(app.messaging().send_message(alice.req(flat)).await, "also_send_to_channel");
    assert_eq!(thread(&app, &alice, &root.message_id).await.reply_count, 1);

    // A retry with the same key returns the original; a different request with it is refused.
    let keyed = CreateThreadRequest { idempotency_key: "reply-1".into(), ..bad(&root.message_id, "once") };
    let a = app.threads().create_thread(alice.req(keyed.clone())).await.unwrap().into_inner();
    let b = app.threads().create_thread(alice.req(keyed.clone())).await.unwrap().into_inner();
    assert_eq!(a.reply.unwrap().message_id, b.reply.unwrap().message_id);
    assert_eq!(b.thread.unwrap().reply_count, 2);
    let changed = CreateThreadRequest { text: "twice?".into(), ..keyed };
    assert_invalid(app.threads().create_thread(alice.req(changed)).await, "idempotency_key");
    let keyed_reply = ReplyToThreadRequest {
        thread_id: root.message_id.clone(),
        text: "keyed reply".into(),
        idempotency_key: "reply-2".into(),
        ..Default::default()
    };
    let c = app.threads().reply_to_thread(bob.req(keyed_reply.clone())).await.unwrap().into_inner();
    let d = app.threads().reply_to_thread(bob.req(keyed_reply)).await.unwrap().into_inner();
    assert_eq!(c.reply.unwrap().message_id, d.reply.unwrap().message_id);
    assert_eq!(thread(&app, &alice, &root.message_id).await.reply_count, 3);

    // An outsider cannot tell a private thread exists.
    let id = root.message_id.clone();
    assert_code(app.threads().create_thread(eve.req(bad(&id, "hi"))).await, Code::NotFound);
    let eve_reply = ReplyToThreadRequest { thread_id: id.clone(), text: "hi".into(), ..Default::default() };
    assert_code(app.threads().reply_to_thread(eve.req(eve_reply)).await, Code::NotFound);
    assert_code(app.threads().get_thread(eve.req(GetThreadRequest { thread_id: id.clone() })).await, Code::NotFound);
    let replies = ListThreadRepliesRequest { thread_id: id.clone(), ..Default::default() };
    assert_code(app.threads().list_thread_replies(eve.req(replies)).await, Code::NotFound);
    let follow = FollowThreadRequest { thread_id: id.clone(), ..Default::default() };
    assert_code(app.threads().follow_thread(eve.req(follow)).await, Code::NotFound);
    let mark = MarkThreadReadRequest {
        thread_id: id.clone(),
        last_read_message_id: r1.message_id.clone(),
        ..Default::default()
    };
    assert_code(app.threads().mark_thread_read(eve.req(mark)).await, Code::NotFound);
    let threads = ListChannelThreadsRequest { channel_id: room.channel_id.clone(), ..Default::default() };
    assert_code(app.threads().list_channel_threads(eve.req(threads)).await, Code::NotFound);
    let sneaky = SendMessageRequest {
        channel_id: room.channel_id.clone(),
        thread_id: id.clone(),
        text: "hi".into(),
        ..Default::default()
    };
    assert_code(app.messaging().send_message(eve.req(sneaky)).await, Code::NotFound);
    assert!(followed(&app, &eve, false).await.is_empty());

    // In a public channel a non-member may read threads but not reply.
    let (_, _, _) = create(&app, &alice, &elsewhere.message_id, "lobby reply").await;
    assert_eq!(thread(&app, &eve, &elsewhere.message_id).await.reply_count, 1);
    assert_code(
        app.threads().create_thread(eve.req(bad(&elsewhere.message_id, "me too"))).await,
        Code::PermissionDenied,
    );
}

#[tokio::test]
async fn replies_and_thread_summaries_reach_streams_live() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.create_channel(&alice, "room", ChannelKind::Private, &[&bob]).await;
    let root = app.send(&alice, &room.channel_id, "root").await;
    let mut browser = app.subscribe(&alice, &room.channel_id, Some(root.seq)).await;
    let (tx, mut native) = connect(&app, &alice).await;
    tx.send(subscribe(vec![cursor(&room.channel_id, Some(root.seq))], false)).await.unwrap();
    subscribed(&mut native).await;

    let (_, r1, _) = create(&app, &bob, &root.message_id, "r1").await;
    app.messaging()
        .delete_message(bob.req(DeleteMessageRequest { message_id: r1.message_id.clone(), ..Default::default() }))
        .await
        .unwrap();
    let on_browser = events(&mut browser, 4).await;
    let on_native = events(&mut native, 4).await;
    assert_eq!(on_browser, on_native);
    let seqs: Vec<i64> = on_browser.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, ((root.seq + 1)..=(root.seq + 4)).collect::<Vec<_>>());
    match (&on_browser[0].kind, &on_browser[1].kind, &on_browser[2].kind, &on_browser[3].kind) {
        (
            Some(Kind::MessageCreated(m)),
            Some(Kind::ThreadUpdated(added)),
            Some(Kind::MessageDeleted(d)),
            Some(Kind::ThreadUpdated(removed)),
        ) => {
            assert_eq!((m.thread_id.as_str(), m.text.as_str()), (root.message_id.as_str(), "r1"));
            assert_eq!((added.thread_id.as_str(), added.reply_count), (root.message_id.as_str(), 1));
            assert_eq!(added.recent_participant_ids, std::slice::from_ref(&bob.user_id));
            assert_eq!(d.message_id, r1.message_id);
            assert_eq!((removed.reply_count, removed.participant_count), (0, 0));
            assert!(removed.last_reply_time.is_none());
        }
        other => panic!("unexpected events {other:?}"),
    }
    // A reconnecting client replays the same events from the log, the
    // deleted reply as it is now: without its text.
    let mut replay = app.subscribe(&alice, &room.channel_id, Some(root.seq)).await;
    let replayed = events(&mut replay, 4).await;
    assert_eq!(replayed[1..], on_browser[1..]);
    match &replayed[0].kind {
        Some(Kind::MessageCreated(m)) => {
            assert_eq!((m.message_id.as_str(), m.text.as_str(), m.deleted), (r1.message_id.as_str(), "", true));
        }
        other => panic!("unexpected event {other:?}"),
    }
}
