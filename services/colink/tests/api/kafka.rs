//! Domain events through a real Kafka-protocol broker: producers and
//! consumers on different nodes, and a broker outage that delays events
//! without losing any or slowing sends down.

use std::time::{Duration, Instant};

use colink_proto::admin::v1::ListAuditLogsRequest;
use colink_proto::channels::v1::{
    ChannelKind, ChannelPreferences, JoinChannelRequest, UpdateChannelPreferencesRequest,
};
use colink_proto::messaging::v1::channel_event::Kind;
use colink_proto::messaging::v1::{EditMessageRequest, GetUnreadCountsRequest};
use colink_proto::users::v1::GetUserRequest;
use colink_runtime::config::Config;

use crate::admin::audit_entries;
use crate::helpers::{TestApp, event};
use crate::servers::{Server, eventually, free_port};

/// Points a node at the broker, under topic names of its own test.
fn use_kafka(config: &mut Config, broker: &Server, prefix: &str) {
    config.events.url = format!("kafka://127.0.0.1:{}", broker.port);
    config.events.topic_prefix = prefix.to_string();
    config.events.partitions = 2;
}

#[tokio::test]
#[ignore = "needs the tansu broker: set COLINK_TEST_TANSU (the full suite does)"]
async fn events_reach_consumers_on_other_nodes_and_survive_a_broker_outage() {
    let broker = Server::kafka().await;
    let prefix = format!("t{}.", uuid::Uuid::now_v7().simple());
    let (producer_port, consumer_port) = (free_port(), free_port());
    let producer_uri = format!("http://127.0.0.1:{producer_port}");
    let consumer_uri = format!("http://127.0.0.1:{consumer_port}");
    // Profiles, the channel log and the audit log are all filled from events
    // produced on the other node: a split the in-process log refuses.
    let producers = TestApp::spawn_with(|c| {
        c.listen = format!("127.0.0.1:{producer_port}").parse().unwrap();
        c.services = vec!["auth".into(), "channels".into()];
        for peer in ["users", "messaging", "admin", "realtime"] {
            c.peers.insert(peer.into(), consumer_uri.clone());
        }
        use_kafka(c, &broker, &prefix);
    })
    .await;
    let consumers = TestApp::spawn_with(|c| {
        c.listen = format!("127.0.0.1:{consumer_port}").parse().unwrap();
        c.services = vec!["users".into(), "messaging".into(), "admin".into(), "realtime".into()];
        for peer in ["auth", "channels"] {
            c.peers.insert(peer.into(), producer_uri.clone());
        }
        use_kafka(c, &broker, &prefix);
    })
    .await;

    let admin = producers.register("root").await;
    let bob = producers.register("bob").await;
    // user.events: bob's profile appears on the other node.
    eventually(Duration::from_secs(60), "bob's profile", || async {
        consumers.users().get_user(admin.req(GetUserRequest { user_id: bob.user_id.clone() })).await.ok()
    })
    .await;

    // channel.events: a join reaches the channel log on the other node.
    let room = producers.create_channel(&admin, "kafka", ChannelKind::Public, &[]).await;
    let mut stream = consumers.subscribe(&admin, &room.channel_id, Some(0)).await;
    producers
        .channels()
        .join_channel(bob.req(JoinChannelRequest { channel_id: room.channel_id.clone(), ..Default::default() }))
        .await
        .unwrap();
    loop {
        if let Some(Kind::MemberJoined(joined)) = event(&mut stream).await.kind
            && joined.user_id == bob.user_id
        {
            break;
        }
    }

    // message.events: edits land in the audit log.
    let mut sent = Vec::new();
    for n in 0..5 {
        sent.push(consumers.send(&bob, &room.channel_id, &format!("before the outage {n}")).await);
    }
    for message in &sent {
        let request =
            EditMessageRequest { message_id: message.message_id.clone(), text: "edited".into(), ..Default::default() };
        consumers.messaging().edit_message(bob.req(request)).await.unwrap();
    }
    let edits = ListAuditLogsRequest { action: "message.updated".into(), ..Default::default() };
    audit_entries(&consumers, &admin, edits.clone(), 5).await;

    // The broker hangs. Sends and edits are acknowledged as quickly as ever;
    // their events wait in the outbox.
    broker.freeze();
    let started = Instant::now();
    for n in 0..20 {
        let message = consumers.send(&bob, &room.channel_id, &format!("during the outage {n}")).await;
        let request =
            EditMessageRequest { message_id: message.message_id.clone(), text: "edited".into(), ..Default::default() };
        consumers.messaging().edit_message(bob.req(request)).await.unwrap();
    }
    let during = started.elapsed();
    assert!(during < Duration::from_secs(10), "40 writes took {during:?} with the broker down");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let request = ListAuditLogsRequest { page_size: 100, ..edits.clone() };
    let seen = consumers.admin().list_audit_logs(admin.req(request)).await.unwrap().into_inner().audit_logs.len();
    assert_eq!(seen, 5, "nothing new can arrive while the broker is frozen");

    // It recovers: every event arrives, once.
    broker.thaw();
    audit_entries(&consumers, &admin, edits.clone(), 25).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let request = ListAuditLogsRequest { page_size: 100, ..edits };
    let entries = consumers.admin().list_audit_logs(admin.req(request)).await.unwrap().into_inner().audit_logs;
    assert_eq!(entries.len(), 25, "each edit is audited exactly once");

    // Unread counts across nodes: a mute made on the channels node reaches
    // the counts kept by the messaging node through the broker.
    let mute = UpdateChannelPreferencesRequest {
        channel_id: room.channel_id.clone(),
        preferences: Some(ChannelPreferences { muted: true, ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["muted".into()] }),
        ..Default::default()
    };
    producers.channels().update_channel_preferences(admin.req(mute)).await.unwrap();
    eventually(Duration::from_secs(60), "the mute in the counts", || async {
        let request = admin.req(GetUnreadCountsRequest::default());
        let counts = consumers.messaging().get_unread_counts(request).await.ok()?.into_inner().counts?;
        counts.channels.into_iter().find(|c| c.channel_id == room.channel_id && c.muted && c.unread_count == 0)
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the tansu broker: set COLINK_TEST_TANSU (the full suite does)"]
async fn a_search_node_indexes_from_the_broker_through_an_outage_and_a_restart() {
    use colink_proto::search::v1::{
        GetReindexRequest, ReindexState, SearchFilesRequest, SearchMessagesRequest, StartReindexRequest,
    };
    let broker = Server::kafka().await;
    let prefix = format!("t{}.", uuid::Uuid::now_v7().simple());
    let (core_port, search_port) = (free_port(), free_port());
    let core_uri = format!("http://127.0.0.1:{core_port}");
    let search_uri = format!("http://127.0.0.1:{search_port}");
    let core = TestApp::spawn_with(|c| {
        c.listen = format!("127.0.0.1:{core_port}").parse().unwrap();
        c.services = ["auth", "users", "channels", "messaging", "files", "realtime", "presence", "admin"]
            .map(String::from)
            .to_vec();
        c.peers.insert("search".into(), search_uri.clone());
        use_kafka(c, &broker, &prefix);
    })
    .await;
    let searcher = TestApp::spawn_with(|c| {
        c.listen = format!("127.0.0.1:{search_port}").parse().unwrap();
        c.services = vec!["search".into()];
        for peer in ["auth", "users", "channels", "messaging", "files"] {
            c.peers.insert(peer.into(), core_uri.clone());
        }
        use_kafka(c, &broker, &prefix);
    })
    .await;
    let ann = core.register("ann").await; // the first account: the admin
    let room = core.create_channel(&ann, "room", ChannelKind::Public, &[]).await;
    let count = |app: &TestApp, text: &'static str| {
        let request = ann.req(SearchMessagesRequest { query: text.into(), page_size: 100, ..Default::default() });
        let mut client = app.search();
        async move { client.search_messages(request).await.map(|r| r.into_inner().hits.len()).unwrap_or(0) }
    };
    core.send(&ann, &room.channel_id, "quince before the outage").await;
    eventually(Duration::from_secs(60), "the first message searchable on the search node", || async {
        (count(&searcher, "quince").await == 1).then_some(())
    })
    .await;

    // The broker hangs: sends are acknowledged, their events wait.
    broker.freeze();
    for n in 0..10 {
        core.send(&ann, &room.channel_id, &format!("quince during the outage {n}")).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(count(&searcher, "during").await, 0, "nothing can be indexed while the broker is frozen");
    broker.thaw();
    eventually(Duration::from_secs(60), "every message sent during the outage", || async {
        (count(&searcher, "during").await == 10).then_some(())
    })
    .await;

    // The search node restarts on its index; what comes next is indexed too.
    let searcher = searcher.restart(|_| {}).await;
    core.send(&ann, &room.channel_id, "quince after the restart").await;
    eventually(Duration::from_secs(60), "all twelve after the restart", || async {
        (count(&searcher, "quince").await == 12).then_some(())
    })
    .await;

    // Files come through the broker too, and a rebuild on the search node
    // reads everything from the core node.
    let bytes = b"quince jam\n";
    let request = crate::files::upload_request("quince-jam.txt", "text/plain", bytes, &room.channel_id);
    crate::files::upload(&core, &ann, request, bytes).await;
    let files = |app: &TestApp| {
        let request = ann.req(SearchFilesRequest { query: "quince".into(), ..Default::default() });
        let mut client = app.search();
        async move { client.search_files(request).await.map(|r| r.into_inner().hits.len()).unwrap_or(0) }
    };
    eventually(Duration::from_secs(60), "the file searchable on the search node", || async {
        (files(&searcher).await == 1).then_some(())
    })
    .await;
    searcher.search().start_reindex(ann.req(StartReindexRequest {})).await.unwrap();
    let report = eventually(Duration::from_secs(60), "the rebuild", || async {
        let report = searcher.search().get_reindex(ann.req(GetReindexRequest {})).await.unwrap().into_inner();
        report.reindex.filter(|r| r.state != ReindexState::Running as i32)
    })
    .await;
    assert_eq!(report.state, ReindexState::Succeeded as i32, "{report:?}");
    assert_eq!((report.messages, report.files), (12, 1));
    assert_eq!(count(&searcher, "quince").await, 12);
    assert_eq!(files(&searcher).await, 1);
}
