use colink_proto::channels::v1::{ArchiveChannelRequest, ChannelKind};
use colink_proto::messaging::v1::channel_event::Kind;
use colink_proto::messaging::v1::{
    DeleteMessageRequest, GetMessageRequest, ListChannelEventsRequest, ListMessagesRequest, ReactionChanged,
};
use colink_proto::reactions::v1::{
    AddReactionRequest, AddReactionResponse, BatchGetReactionsRequest, ListReactionUsersRequest, ListReactionsRequest,
    ReactionGroup, RemoveReactionRequest,
};
use tonic::{Code, Status};

use crate::helpers::{TestApp, TestUser, assert_code, assert_invalid, events};
use crate::realtime::{connect, cursor, subscribe, subscribed};

fn add_request(message_id: &str, emoji: &str) -> AddReactionRequest {
    AddReactionRequest { message_id: message_id.into(), emoji: emoji.into(), idempotency_key: String::new() }
}

async fn add(app: &TestApp, user: &TestUser, message_id: &str, emoji: &str) -> Result<AddReactionResponse, Status> {
    app.reactions().add_reaction(user.req(add_request(message_id, emoji))).await.map(|r| r.into_inner())
}

async fn remove(app: &TestApp, user: &TestUser, message_id: &str, emoji: &str) -> Result<bool, Status> {
    let request = RemoveReactionRequest { message_id: message_id.into(), emoji: emoji.into(), ..Default::default() };
    app.reactions().remove_reaction(user.req(request)).await.map(|r| r.into_inner().removed)
}

async fn groups(app: &TestApp, user: &TestUser, message_id: &str) -> Vec<ReactionGroup> {
    let request = ListReactionsRequest { message_id: message_id.into() };
    app.reactions().list_reactions(user.req(request)).await.unwrap().into_inner().reactions.unwrap().groups
}

fn summary(groups: &[ReactionGroup]) -> Vec<(String, i32, bool)> {
    groups.iter().map(|g| (g.emoji.clone(), g.count, g.reacted_by_viewer)).collect()
}

#[tokio::test]
async fn reactions_are_counted_per_emoji_with_the_readers_own() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.create_channel(&alice, "room", ChannelKind::Private, &[&bob]).await;
    let m = app.send(&alice, &room.channel_id, "ship it?").await;

    add(&app, &bob, &m.message_id, "👍").await.unwrap();
    add(&app, &alice, &m.message_id, "👍").await.unwrap();
    let added = add(&app, &alice, &m.message_id, ":tada:").await.unwrap();
    assert_eq!(added.reaction.unwrap().emoji, "tada", "short names are stored without colons");
    assert_eq!(
        summary(&added.reactions.unwrap().groups),
        [("👍".to_string(), 2, true), ("tada".to_string(), 1, true)],
        "in the order each emoji was first used"
    );
    assert_eq!(summary(&groups(&app, &bob, &m.message_id).await), [("👍".into(), 2, true), ("tada".into(), 1, false)]);
    assert_eq!(
        groups(&app, &bob, &m.message_id).await[0].sample_user_ids,
        [bob.user_id.clone(), alice.user_id.clone()]
    );

    // Reading messages shows the same counts.
    let read = GetMessageRequest { message_id: m.message_id.clone() };
    let shown = app.messaging().get_message(bob.req(read)).await.unwrap().into_inner().message.unwrap();
    assert_eq!(summary(&shown.reactions), [("👍".into(), 2, true), ("tada".into(), 1, false)]);
    let list = ListMessagesRequest { channel_id: room.channel_id.clone(), ..Default::default() };
    let page = app.messaging().list_messages(alice.req(list)).await.unwrap().into_inner().messages;
    assert_eq!(summary(&page[0].reactions), [("👍".into(), 2, true), ("tada".into(), 1, true)]);

    // The same triple twice is refused; a retry with its key is not.
    assert_code(add(&app, &bob, &m.message_id, "👍").await, Code::AlreadyExists);
    let keyed = AddReactionRequest { idempotency_key: "react-1".into(), ..add_request(&m.message_id, "🎉") };
    let first = app.reactions().add_reaction(bob.req(keyed.clone())).await.unwrap().into_inner();
    let retry = app.reactions().add_reaction(bob.req(keyed.clone())).await.unwrap().into_inner();
    assert_eq!(first.reaction, retry.reaction);
    assert_eq!(groups(&app, &bob, &m.message_id).await.len(), 3);
    let other = AddReactionRequest { emoji: "🚀".into(), ..keyed };
    assert_invalid(app.reactions().add_reaction(bob.req(other)).await, "idempotency_key");

    // Who reacted, earliest first, page by page.
    let users = |token: String| ListReactionUsersRequest {
        message_id: m.message_id.clone(),
        emoji: "👍".into(),
        page_size: 1,
        page_token: token,
    };
    let p1 = app.reactions().list_reaction_users(alice.req(users(String::new()))).await.unwrap().into_inner();
    assert_eq!((p1.reactions[0].user_id.as_str(), p1.total_count), (bob.user_id.as_str(), 2));
    let p2 = app.reactions().list_reaction_users(alice.req(users(p1.next_page_token))).await.unwrap().into_inner();
    assert_eq!(p2.reactions[0].user_id, alice.user_id);
    assert!(p2.next_page_token.is_empty());

    // Removing is one's own, and removing nothing is fine.
    assert!(remove(&app, &bob, &m.message_id, "👍").await.unwrap());
    assert!(!remove(&app, &bob, &m.message_id, "👍").await.unwrap());
    assert!(!remove(&app, &bob, &m.message_id, "tada").await.unwrap(), "alice's tada is hers");
    assert_eq!(summary(&groups(&app, &alice, &m.message_id).await)[0], ("👍".into(), 1, true));
    assert!(remove(&app, &alice, &m.message_id, "👍").await.unwrap());
    let left: Vec<String> = groups(&app, &alice, &m.message_id).await.into_iter().map(|g| g.emoji).collect();
    assert_eq!(left, ["tada", "🎉"], "an emoji nobody uses any more is gone");

    // Many messages at once; unknown ones are left out.
    let second = app.send(&bob, &room.channel_id, "second").await;
    let unknown = uuid::Uuid::now_v7().to_string();
    let batch =
        BatchGetReactionsRequest { message_ids: vec![second.message_id.clone(), unknown, m.message_id.clone()] };
    let got = app.reactions().batch_get_reactions(alice.req(batch)).await.unwrap().into_inner().reactions;
    assert_eq!(got.iter().map(|r| r.message_id.clone()).collect::<Vec<_>>(), [second.message_id, m.message_id.clone()]);
    assert!(got[0].groups.is_empty());

    // A deleted message takes no reactions and shows none.
    app.messaging()
        .delete_message(alice.req(DeleteMessageRequest { message_id: m.message_id.clone(), ..Default::default() }))
        .await
        .unwrap();
    assert_code(add(&app, &bob, &m.message_id, "👀").await, Code::FailedPrecondition);
    assert!(groups(&app, &alice, &m.message_id).await.is_empty());
}

#[tokio::test]
async fn reaction_limits_bad_input_and_outsiders() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let eve = app.register("eve").await;
    let room = app.create_channel(&alice, "room", ChannelKind::Private, &[&bob, &carol]).await;
    let m = app.send(&alice, &room.channel_id, "vote").await;

    for bad in ["", "not an emoji", "Thumbsup", "👍👍", "👍 ", ":a b:", "🇫"] {
        assert_invalid(add(&app, &alice, &m.message_id, bad).await, "emoji");
    }
    assert_invalid(add(&app, &alice, "nope", "👍").await, "message_id");
    let keyed = AddReactionRequest { idempotency_key: "\u{7f}".into(), ..add_request(&m.message_id, "👍") };
    assert_invalid(app.reactions().add_reaction(alice.req(keyed)).await, "idempotency_key");
    let batch = BatchGetReactionsRequest { message_ids: vec![] };
    assert_invalid(app.reactions().batch_get_reactions(alice.req(batch)).await, "message_ids");
    let twice = BatchGetReactionsRequest { message_ids: vec![m.message_id.clone(), m.message_id.clone()] };
    assert_invalid(app.reactions().batch_get_reactions(alice.req(twice)).await, "message_ids[1]");
    assert_code(add(&app, &alice, &uuid::Uuid::now_v7().to_string(), "👍").await, Code::NotFound);
    assert!(groups(&app, &alice, &m.message_id).await.is_empty(), "bad input changed nothing");

    // Twenty reactions per person, fifty emoji per message.
    for i in 0..20 {
        add(&app, &alice, &m.message_id, &format!("a{i}")).await.unwrap();
        add(&app, &bob, &m.message_id, &format!("b{i}")).await.unwrap();
    }
    assert_code(add(&app, &alice, &m.message_id, "a20").await, Code::FailedPrecondition);
    for i in 0..10 {
        add(&app, &carol, &m.message_id, &format!("c{i}")).await.unwrap();
    }
    let full = add(&app, &carol, &m.message_id, "c10").await;
    assert!(assert_code(full, Code::FailedPrecondition).message().contains("50"));
    add(&app, &carol, &m.message_id, "a0").await.expect("an emoji already there still takes more people");
    assert_eq!(groups(&app, &alice, &m.message_id).await.len(), 50);

    // An outsider cannot tell the message exists; a public non-member reads but cannot react.
    let id = m.message_id.clone();
    assert_code(add(&app, &eve, &id, "👍").await, Code::NotFound);
    assert_code(remove(&app, &eve, &id, "a0").await, Code::NotFound);
    let list = ListReactionsRequest { message_id: id.clone() };
    assert_code(app.reactions().list_reactions(eve.req(list)).await, Code::NotFound);
    let users = ListReactionUsersRequest { message_id: id.clone(), emoji: "a0".into(), ..Default::default() };
    assert_code(app.reactions().list_reaction_users(eve.req(users)).await, Code::NotFound);
    let batch = BatchGetReactionsRequest { message_ids: vec![id.clone()] };
    assert!(app.reactions().batch_get_reactions(eve.req(batch)).await.unwrap().into_inner().reactions.is_empty());
    let lobby = app.create_channel(&alice, "lobby", ChannelKind::Public, &[]).await;
    let open = app.send(&alice, &lobby.channel_id, "open").await;
    assert_code(add(&app, &eve, &open.message_id, "👍").await, Code::PermissionDenied);
    assert!(groups(&app, &eve, &open.message_id).await.is_empty());

    // Archived channels take no reactions.
    app.channels()
        .archive_channel(
            alice.req(ArchiveChannelRequest { channel_id: lobby.channel_id.clone(), ..Default::default() }),
        )
        .await
        .unwrap();
    assert_code(add(&app, &alice, &open.message_id, "👍").await, Code::FailedPrecondition);
}

#[tokio::test]
async fn reactions_reach_streams_live_in_sequence() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.create_channel(&alice, "room", ChannelKind::Private, &[&bob]).await;
    let m = app.send(&alice, &room.channel_id, "react here").await;
    let mut browser = app.subscribe(&alice, &room.channel_id, Some(m.seq)).await;
    let (tx, mut native) = connect(&app, &alice).await;
    tx.send(subscribe(vec![cursor(&room.channel_id, Some(m.seq))], false)).await.unwrap();
    subscribed(&mut native).await;

    add(&app, &bob, &m.message_id, "👍").await.unwrap();
    remove(&app, &bob, &m.message_id, "👍").await.unwrap();
    remove(&app, &bob, &m.message_id, "👍").await.unwrap();
    let on_browser = events(&mut browser, 2).await;
    assert_eq!(on_browser, events(&mut native, 2).await);
    assert_eq!((on_browser[0].seq, on_browser[1].seq), (m.seq + 1, m.seq + 2));
    match (&on_browser[0].kind, &on_browser[1].kind) {
        (Some(Kind::ReactionAdded(a)), Some(Kind::ReactionRemoved(r))) => {
            assert_eq!(
                (a.message_id.as_str(), a.user_id.as_str(), a.emoji.as_str(), a.count),
                (m.message_id.as_str(), bob.user_id.as_str(), "👍", 1)
            );
            assert_eq!(r, &ReactionChanged { count: 0, ..a.clone() }, "the count after the removal");
        }
        other => panic!("unexpected events {other:?}"),
    }
    crate::helpers::assert_quiet(&mut browser).await;
}

#[tokio::test]
async fn a_burst_of_reactions_reaches_streams_as_counts_in_sequence() {
    const PEOPLE: usize = 30;
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let mut people = Vec::new();
    for i in 0..PEOPLE {
        people.push(app.register(&format!("fan{i}")).await);
    }
    let room = app.create_channel(&alice, "room", ChannelKind::Private, &people.iter().collect::<Vec<_>>()).await;
    let m = app.send(&alice, &room.channel_id, "the big news").await;
    let mut browser = app.subscribe(&alice, &room.channel_id, Some(m.seq)).await;
    let (tx, mut native) = connect(&app, &alice).await;
    tx.send(subscribe(vec![cursor(&room.channel_id, Some(m.seq))], false)).await.unwrap();
    subscribed(&mut native).await;

    // Everyone at once, and the first person's call twice with one key.
    let keyed = AddReactionRequest { idempotency_key: "burst-1".into(), ..add_request(&m.message_id, "🎉") };
    let calls = people.iter().map(|p| {
        let (app, request) = (&app, add_request(&m.message_id, "🎉"));
        async move { app.reactions().add_reaction(p.req(request)).await.map(|r| r.into_inner()) }
    });
    let repeats = (0..2).map(|_| {
        let (app, request, alice) = (&app, keyed.clone(), &alice);
        async move { app.reactions().add_reaction(alice.req(request)).await.map(|r| r.into_inner()) }
    });
    let (answers, repeated) =
        tokio::join!(futures_util::future::join_all(calls), futures_util::future::join_all(repeats));
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    let repeated: Vec<_> = repeated.into_iter().map(|r| r.unwrap().reaction).collect();
    assert_eq!(repeated[0], repeated[1], "one key, one reaction");
    let total = PEOPLE as i32 + 1;
    assert_eq!(summary(&groups(&app, &alice, &m.message_id).await), [("🎉".to_string(), total, true)]);

    // Both streams get the same entries, in sequence, adding up to every change.
    let mut on_browser = Vec::new();
    let (mut changes, mut last_count) = (0, 0);
    while last_count < total {
        let event = events(&mut browser, 1).await.remove(0);
        assert_eq!(event.seq, m.seq + 1 + on_browser.len() as i64, "no gaps");
        match &event.kind {
            Some(Kind::ReactionAdded(one)) => {
                changes += 1;
                last_count = one.count;
            }
            Some(Kind::ReactionsChanged(many)) => {
                assert_eq!(many.message_id, m.message_id);
                changes += many.changes;
                last_count = many.counts.iter().find(|c| c.emoji == "🎉").map_or(0, |c| c.count);
            }
            other => panic!("unexpected event {other:?}"),
        }
        on_browser.push(event);
    }
    assert_eq!((changes, last_count), (total, total));
    assert!(on_browser.len() < total as usize, "calls that arrived together share an entry");
    assert_eq!(on_browser, events(&mut native, on_browser.len()).await);
    crate::helpers::assert_quiet(&mut browser).await;

    // The log replays the same entries.
    let replay =
        ListChannelEventsRequest { channel_id: room.channel_id.clone(), after_seq: m.seq, ..Default::default() };
    let logged = app.messaging().list_channel_events(alice.req(replay)).await.unwrap().into_inner().events;
    assert_eq!(logged, on_browser);
}
