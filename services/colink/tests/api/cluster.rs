//! Several nodes sharing the distributed backends. These tests need real
//! servers, so a plain `cargo test` lists them as ignored; the full suite
//! (`.ci/run`) runs them and fails when a server is missing.

use colink_proto::channels::v1::ChannelKind;
use colink_proto::messaging::v1::channel_event::Kind;

use crate::helpers::{TestApp, event, fresh_postgres};

pub(crate) fn server(variable: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| panic!("{variable} must name the server this test runs against"))
}

/// Two nodes sharing a fresh PostgreSQL database and Redis.
pub(crate) async fn two_nodes() -> (TestApp, TestApp) {
    two_nodes_with(|_| {}).await
}

/// Two nodes sharing a fresh PostgreSQL database and Redis, both with
/// `adjust` applied to their configuration.
pub(crate) async fn two_nodes_with(adjust: impl Fn(&mut colink_runtime::config::Config)) -> (TestApp, TestApp) {
    let database = fresh_postgres(&server("COLINK_TEST_POSTGRES")).await;
    let redis = server("COLINK_TEST_REDIS");
    let node = |database: String, redis: String| {
        TestApp::spawn_with(|c| {
            c.database.url = database;
            c.pubsub.url = redis;
            adjust(c);
        })
    };
    (node(database.clone(), redis.clone()).await, node(database, redis).await)
}

#[tokio::test]
#[ignore = "needs PostgreSQL and Redis: set COLINK_TEST_POSTGRES and COLINK_TEST_REDIS (the full suite does)"]
async fn a_stream_on_one_node_receives_live_what_another_node_commits() {
    let (a, b) = two_nodes().await;

    // Accounts and tokens are shared: signed up on either node, valid on both.
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let room = a.create_channel(&alice, "everywhere", ChannelKind::Private, &[&bob]).await;

    // Bob streams from node A, live only; Alice posts through node B.
    let mut on_a = a.subscribe(&bob, &room.channel_id, None).await;
    b.send(&alice, &room.channel_id, "sent on b").await;
    let live = event(&mut on_a).await;
    match live.kind {
        Some(Kind::MessageCreated(m)) => assert_eq!(m.text, "sent on b"),
        other => panic!("expected the message, got {other:?}"),
    }
    // And the other way round, on a second stream.
    let mut on_b = b.subscribe(&alice, &room.channel_id, Some(live.seq - 1)).await;
    assert_eq!(event(&mut on_b).await.seq, live.seq, "replayed from the shared log");
    a.send(&bob, &room.channel_id, "sent on a").await;
    let next = event(&mut on_b).await;
    assert_eq!(next.seq, live.seq + 1);
    assert!(matches!(event(&mut on_a).await.kind, Some(Kind::MessageCreated(m)) if m.text == "sent on a"));
}

#[tokio::test]
#[ignore = "needs PostgreSQL and Redis: set COLINK_TEST_POSTGRES and COLINK_TEST_REDIS (the full suite does)"]
async fn reactions_and_unread_counts_reach_streams_on_other_nodes() {
    use colink_proto::messaging::v1::MarkReadRequest;
    use colink_proto::reactions::v1::AddReactionRequest;
    use colink_proto::realtime::v1::SubscribeRequest;

    let (a, b) = two_nodes().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let room = a.create_channel(&alice, "everywhere", ChannelKind::Private, &[&bob]).await;
    let mut on_a = a.subscribe(&bob, &room.channel_id, None).await;
    let request = SubscribeRequest { cursors: vec![], all_channels: true };
    let mut counts_on_a = a.realtime().subscribe(bob.req(request)).await.unwrap().into_inner();
    assert_eq!(total_unread(&mut counts_on_a).await, 0, "the snapshot");

    let sent = b.send(&alice, &room.channel_id, "react to this").await;
    assert_eq!(event(&mut on_a).await.seq, sent.seq);
    assert_eq!(total_unread(&mut counts_on_a).await, 1, "a message sent through node b counts on node a");
    let react = AddReactionRequest { message_id: sent.message_id.clone(), emoji: "👍".into(), ..Default::default() };
    b.reactions().add_reaction(alice.req(react)).await.unwrap();
    match event(&mut on_a).await.kind {
        Some(Kind::ReactionAdded(r)) => {
            assert_eq!((r.emoji.as_str(), r.user_id.as_str()), ("👍", alice.user_id.as_str()))
        }
        other => panic!("expected the reaction, got {other:?}"),
    }
    // Reading through node b clears the badge on node a.
    let read = MarkReadRequest { channel_id: room.channel_id.clone(), seq: sent.seq, ..Default::default() };
    b.messaging().mark_read(bob.req(read)).await.unwrap();
    assert_eq!(total_unread(&mut counts_on_a).await, 0);
}

/// The total unread count of the next counts frame on a stream.
async fn total_unread(stream: &mut impl crate::helpers::FrameSource) -> i64 {
    use colink_proto::realtime::v1::server_frame::Frame;
    loop {
        if let Frame::UnreadCounts(f) = crate::helpers::frame(stream).await {
            return f.counts.unwrap_or_default().total_unread_count;
        }
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL and Redis: set COLINK_TEST_POSTGRES and COLINK_TEST_REDIS (the full suite does)"]
async fn a_session_ended_on_one_node_stops_on_the_other_within_a_second() {
    use colink_proto::auth::v1::LogoutRequest;
    use colink_proto::users::v1::GetMeRequest;
    use tonic::Code;

    let (a, b) = two_nodes().await;
    let alice = a.register("alice").await;
    let room = a.create_channel(&alice, "mine", ChannelKind::Private, &[]).await;
    // Node B has checked the token and remembers it; Alice streams there.
    b.users().get_me(alice.req(GetMeRequest {})).await.unwrap();
    let mut on_b = b.subscribe(&alice, &room.channel_id, None).await;

    a.auth().logout(alice.req(LogoutRequest { all_sessions: false })).await.unwrap();
    let started = std::time::Instant::now();
    crate::helpers::assert_ends_unauthenticated(&mut on_b).await;
    loop {
        match b.users().get_me(alice.req(GetMeRequest {})).await {
            Err(status) if status.code() == Code::Unauthenticated => break,
            _ if started.elapsed() > std::time::Duration::from_secs(1) => panic!("node b still takes the token"),
            _ => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL and Redis: set COLINK_TEST_POSTGRES and COLINK_TEST_REDIS (the full suite does)"]
async fn audit_entries_recorded_on_two_nodes_at_once_form_one_intact_chain() {
    use colink_proto::admin::v1::{ListAuditLogsRequest, VerifyAuditChainRequest};

    let (a, b) = two_nodes().await;
    let root = a.register("root").await;
    // Both nodes consume events and append entries at the same time.
    async fn make(app: &TestApp, root: &crate::helpers::TestUser, prefix: &str) {
        for i in 0..8 {
            let user = app.register(&format!("{prefix}{i}")).await;
            app.create_channel(root, &format!("{prefix}-room-{i}"), ChannelKind::Private, &[&user]).await;
        }
    }
    tokio::join!(make(&a, &root, "ann"), make(&b, &root, "bob"));
    // At least 17 accounts and 16 channels, with their memberships.
    crate::admin::audit_entries(&a, &root, ListAuditLogsRequest::default(), 33).await;
    let report = b.admin().verify_audit_chain(root.req(VerifyAuditChainRequest {})).await.unwrap().into_inner();
    assert!(report.intact, "{report:?}");
    assert!(report.entries_checked >= 33, "{report:?}");
    assert_eq!(report.head_position, report.entries_checked);
}

#[tokio::test]
#[ignore = "needs PostgreSQL and Redis: set COLINK_TEST_POSTGRES and COLINK_TEST_REDIS (the full suite does)"]
async fn changes_are_budgeted_per_user_across_nodes_through_redis() {
    use colink_proto::users::v1::{GetMeRequest, UpdateMeRequest, User};

    // Counters are keyed by user id, so the shared Redis needs no cleaning.
    let database = fresh_postgres(&server("COLINK_TEST_POSTGRES")).await;
    let redis = server("COLINK_TEST_REDIS");
    let node = |database: String, redis: String| {
        TestApp::spawn_with(move |c| {
            c.database.url = database;
            c.pubsub.url = redis.clone();
            c.ephemeral.url = redis;
            c.ephemeral.mutations_per_minute = 4;
        })
    };
    let (first, second) = (node(database.clone(), redis.clone()).await, node(database, redis).await);
    let alice = first.register("alice").await;
    let bob = second.register("bob").await;
    let rename = |name: &str| UpdateMeRequest {
        user: Some(User { display_name: name.into(), ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["display_name".into()] }),
    };
    for i in 0..2 {
        first.users().update_me(alice.req(rename(&format!("a{i}")))).await.unwrap();
        second.users().update_me(alice.req(rename(&format!("b{i}")))).await.unwrap();
    }
    let held = crate::helpers::assert_code(
        second.users().update_me(alice.req(rename("over"))).await,
        tonic::Code::ResourceExhausted,
    );
    assert!(crate::hardening::retry_after(&held) > std::time::Duration::ZERO);
    crate::helpers::assert_code(
        first.users().update_me(alice.req(rename("over"))).await,
        tonic::Code::ResourceExhausted,
    );
    // Reading goes on, and other people have budgets of their own.
    first.users().get_me(alice.req(GetMeRequest {})).await.unwrap();
    first.users().update_me(bob.req(rename("bob"))).await.unwrap();
}
