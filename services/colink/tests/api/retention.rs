//! Message retention through the real gRPC client: policies, runs and
//! their reports, and deleted messages gone from history, replays, search,
//! unread counts and live streams. A manual clock stands in for the days
//! that pass.

use std::sync::Arc;
use std::time::Duration;

use colink_proto::admin::v1::ListAuditLogsRequest;
use colink_proto::channels::v1::ChannelKind;
use colink_proto::messaging::v1::channel_event::Kind;
use colink_proto::messaging::v1::{
    EditMessageRequest, GetMessageRequest, GetUnreadCountsRequest, ListChannelEventsRequest, ListMessagesRequest,
};
use colink_proto::reactions::v1::AddReactionRequest;
use colink_proto::realtime::v1::server_frame::Frame;
use colink_proto::retention::v1::{
    DeleteMessageRetentionPolicyRequest, GetMessageRetentionPolicyRequest, GetMessageRetentionRunRequest,
    ListMessageRetentionPoliciesRequest, ListMessageRetentionRunsRequest, MessageRetentionRun, RetentionRunState,
    RetentionTrigger, RunMessageRetentionRequest, SetMessageRetentionPolicyRequest,
};
use colink_proto::search::v1::SearchMessagesRequest;
use colink_proto::threads::v1::CreateThreadRequest;
use colink_runtime::clock::{Clock, ManualClock};
use colink_runtime::ids::now_micros;
use tonic::Code;

use crate::helpers::{TestApp, TestUser, assert_code, assert_invalid, frame};

const DAY_MICROS: i64 = 86_400_000_000;

fn set(channel_id: &str, days: i32) -> SetMessageRetentionPolicyRequest {
    SetMessageRetentionPolicyRequest {
        channel_id: channel_id.into(),
        retention_days: days,
        idempotency_key: String::new(),
    }
}

/// Moves the clock to one day after `mid`, so a one-day policy cuts there.
fn one_day_after(clock: &ManualClock, mid: i64) {
    let by = mid + DAY_MICROS - clock.now_micros();
    clock.advance(Duration::from_micros(u64::try_from(by).unwrap()));
}

async fn run(app: &TestApp, admin: &TestUser, dry_run: bool, key: &str) -> MessageRetentionRun {
    let request = RunMessageRetentionRequest { dry_run, idempotency_key: key.into() };
    app.retention().run_message_retention(admin.req(request)).await.unwrap().into_inner().run.unwrap()
}

/// The run's report once it has ended.
async fn finished(app: &TestApp, admin: &TestUser, run_id: &str) -> MessageRetentionRun {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let request = GetMessageRetentionRunRequest { run_id: run_id.into() };
        let run =
            app.retention().get_message_retention_run(admin.req(request)).await.unwrap().into_inner().run.unwrap();
        if run.state != RetentionRunState::Running as i32 {
            return run;
        }
        assert!(tokio::time::Instant::now() < deadline, "the run did not end: {run:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The ids search finds for `text`, once it finds `expected` of them.
async fn found(app: &TestApp, user: &TestUser, text: &str, expected: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let request = SearchMessagesRequest { query: text.into(), ..Default::default() };
        let hits = app.search().search_messages(user.req(request)).await.unwrap().into_inner().hits;
        if hits.len() == expected || tokio::time::Instant::now() > deadline {
            let ids: Vec<String> = hits.iter().map(|h| h.message_id.clone()).collect();
            assert_eq!(ids.len(), expected, "{text:?} found {ids:?}");
            return ids;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_run_deletes_old_messages_everywhere_and_reports_what_it_deleted() {
    let clock = Arc::new(ManualClock::starting_now());
    let app = TestApp::spawn_with_clock(clock.clone(), |_| {}).await;
    let root = app.register("root").await;
    let ann = app.register("ann").await;
    let bob = app.register("bob").await;
    let archive = app.create_channel(&ann, "archive", ChannelKind::Public, &[&bob]).await.channel_id;
    let legal = app.create_channel(&ann, "legal", ChannelKind::Public, &[&bob]).await.channel_id;

    let first = app.send(&ann, &archive, "ancient zebra one").await;
    let second = app.send(&ann, &archive, "ancient zebra two").await;
    let reaction =
        AddReactionRequest { message_id: second.message_id.clone(), emoji: "👍".into(), ..Default::default() };
    app.reactions().add_reaction(bob.req(reaction)).await.unwrap();
    let reply = CreateThreadRequest {
        parent_message_id: second.message_id.clone(),
        text: "ancient zebra reply".into(),
        ..Default::default()
    };
    app.threads().create_thread(bob.req(reply)).await.unwrap();
    app.send(&ann, &legal, "ancient zebra kept by policy").await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mid = now_micros();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let fresh = app.send(&ann, &archive, "fresh zebra").await;
    // Edited after the cut: the edit's log entry outlives the message.
    let edit = EditMessageRequest {
        message_id: first.message_id.clone(),
        text: "ancient zebra edited".into(),
        ..Default::default()
    };
    app.messaging().edit_message(ann.req(edit)).await.unwrap();
    found(&app, &ann, "zebra", 5).await;

    app.retention().set_message_retention_policy(root.req(set("", 1))).await.unwrap();
    app.retention().set_message_retention_policy(root.req(set(&legal, 0))).await.unwrap();
    one_day_after(&clock, mid);
    let head = app
        .messaging()
        .list_channel_events(bob.req(ListChannelEventsRequest {
            channel_id: archive.clone(),
            after_seq: 0,
            page_size: 0,
        }))
        .await
        .unwrap()
        .into_inner()
        .head_seq;
    let mut live = app.subscribe(&bob, &archive, Some(head)).await;

    // A dry run counts and changes nothing.
    let dry = run(&app, &root, true, "").await;
    assert!(dry.dry_run);
    let dry = finished(&app, &root, &dry.run_id).await;
    assert_eq!(dry.state, RetentionRunState::Succeeded as i32, "{dry:?}");
    assert_eq!((dry.message_count, dry.channel_count), (3, 1));
    let got = app.messaging().get_message(ann.req(GetMessageRequest { message_id: first.message_id.clone() })).await;
    assert_eq!(got.unwrap().into_inner().message.unwrap().text, "ancient zebra edited");

    // The run itself, started once however often it is asked for.
    let started = run(&app, &root, false, "sweep-1").await;
    assert_eq!(run(&app, &root, false, "sweep-1").await.run_id, started.run_id);
    assert_eq!(started.trigger, RetentionTrigger::Manual as i32);
    let report = finished(&app, &root, &started.run_id).await;
    assert_eq!(report.state, RetentionRunState::Succeeded as i32, "{report:?}");
    assert_eq!((report.message_count, report.channel_count), (3, 1));
    assert_eq!(report.started_by_id, root.user_id);
    assert_eq!(report.channels.len(), 1);
    let line = &report.channels[0];
    assert_eq!((line.channel_id.as_str(), line.retention_days, line.message_count), (archive.as_str(), 1, 3));
    assert!(line.oldest_time.unwrap().seconds <= line.newest_time.unwrap().seconds);
    assert!(report.finish_time.is_some());

    // Live: the stream hears that history up to a point is gone.
    let expired = loop {
        match frame(&mut live).await {
            Frame::Event(e) => match e.kind {
                Some(Kind::MessagesExpired(x)) => break x,
                _ => continue,
            },
            _ => continue,
        }
    };
    assert_eq!(expired.message_count, 3);
    assert!(expired.through_seq >= second.seq);

    // History: only the fresh message is left.
    let listed = app
        .messaging()
        .list_messages(bob.req(ListMessagesRequest { channel_id: archive.clone(), ..Default::default() }))
        .await
        .unwrap()
        .into_inner()
        .messages;
    let ids: Vec<&str> = listed.iter().map(|m| m.message_id.as_str()).collect();
    assert_eq!(ids, [fresh.message_id.as_str()]);
    let gone = app.messaging().get_message(ann.req(GetMessageRequest { message_id: first.message_id.clone() })).await;
    assert_code(gone, Code::NotFound);

    // Replays: nothing from before the cut, and no text of what expired.
    let replay = app
        .messaging()
        .list_channel_events(bob.req(ListChannelEventsRequest {
            channel_id: archive.clone(),
            after_seq: 0,
            page_size: 0,
        }))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert!(replay.iter().all(|e| e.seq > expired.through_seq), "{replay:?}");
    for event in &replay {
        if let Some(Kind::MessageCreated(m) | Kind::MessageEdited(m)) = &event.kind {
            assert!(!m.text.contains("ancient"), "replayed {m:?}");
        }
    }

    // Search: the expired messages are no longer found; the kept ones are.
    let left = found(&app, &ann, "zebra", 2).await;
    assert!(left.contains(&fresh.message_id));

    // Unread: bob has only the fresh message to read in the archive.
    let counts = app
        .messaging()
        .get_unread_counts(bob.req(GetUnreadCountsRequest { channel_ids: vec![archive.clone()], ..Default::default() }))
        .await
        .unwrap()
        .into_inner()
        .counts
        .unwrap();
    assert_eq!(counts.channels[0].unread_count, 1, "{counts:?}");

    // A second run finds nothing more to delete.
    let again = finished(&app, &root, &run(&app, &root, false, "").await.run_id).await;
    assert_eq!((again.message_count, again.channel_count), (0, 0));

    // The policy changes and the runs are audited.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let request = ListAuditLogsRequest { action: "retention.*".into(), ..Default::default() };
        let entries = app.admin().list_audit_logs(root.req(request)).await.unwrap().into_inner().audit_logs;
        let runs = entries.iter().filter(|e| e.action == "retention.run_finished").count();
        let policies = entries.iter().filter(|e| e.action == "retention.policy_updated").count();
        if runs == 3 && policies == 2 {
            let ours = entries.iter().find(|e| e.target_id == started.run_id).unwrap();
            assert_eq!(ours.actor_id, root.user_id);
            assert_eq!(ours.metadata["message_count"], "3");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{entries:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_schedule_runs_retention_by_itself() {
    let clock = Arc::new(ManualClock::starting_now());
    let app = TestApp::spawn_with_clock(clock.clone(), |c| c.messaging.retention_every_secs = 1).await;
    let root = app.register("root").await;
    let ann = app.register("ann").await;
    let general = app.create_channel(&ann, "general", ChannelKind::Public, &[]).await.channel_id;
    app.send(&ann, &general, "old news").await;
    let mid = now_micros();
    app.retention().set_message_retention_policy(root.req(set("", 1))).await.unwrap();
    one_day_after(&clock, mid);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let run = loop {
        let runs = app
            .retention()
            .list_message_retention_runs(root.req(ListMessageRetentionRunsRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .runs;
        if let Some(done) = runs.into_iter().find(|r| r.state == RetentionRunState::Succeeded as i32) {
            break done;
        }
        assert!(tokio::time::Instant::now() < deadline, "no scheduled run");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(run.trigger, RetentionTrigger::Schedule as i32);
    assert!(run.started_by_id.is_empty());
    assert_eq!(run.message_count, 1);
}

#[tokio::test]
async fn policies_and_runs_are_for_admins_and_bad_input_names_its_field() {
    let app = TestApp::spawn().await;
    let root = app.register("root").await;
    let ann = app.register("ann").await;
    let bob = app.register("bob").await;
    let general = app.create_channel(&ann, "general", ChannelKind::Public, &[]).await.channel_id;
    let secret = app.create_channel(&bob, "secret", ChannelKind::Private, &[]).await.channel_id;
    let retention = || app.retention();

    // Anyone reads the workspace default; members read their channels'.
    let default = retention()
        .get_message_retention_policy(ann.req(GetMessageRetentionPolicyRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((default.policy.unwrap().retention_days, default.inherited), (0, false));
    let outsider = retention()
        .get_message_retention_policy(ann.req(GetMessageRetentionPolicyRequest { channel_id: secret.clone() }))
        .await;
    assert_code(outsider, Code::NotFound);

    // Only admins change policies or run retention.
    assert_code(retention().set_message_retention_policy(ann.req(set("", 7))).await, Code::PermissionDenied);
    assert_code(
        retention().run_message_retention(ann.req(RunMessageRetentionRequest::default())).await,
        Code::PermissionDenied,
    );
    assert_code(
        retention().list_message_retention_runs(ann.req(ListMessageRetentionRunsRequest::default())).await,
        Code::PermissionDenied,
    );
    assert_code(
        retention().list_message_retention_policies(ann.req(ListMessageRetentionPoliciesRequest::default())).await,
        Code::PermissionDenied,
    );
    let delete = DeleteMessageRetentionPolicyRequest { channel_id: general.clone() };
    assert_code(retention().delete_message_retention_policy(ann.req(delete.clone())).await, Code::PermissionDenied);

    // Bad input names its field and changes nothing.
    assert_invalid(retention().set_message_retention_policy(root.req(set("", -1))).await, "retention_days");
    assert_invalid(retention().set_message_retention_policy(root.req(set("", 36_501))).await, "retention_days");
    assert_invalid(retention().set_message_retention_policy(root.req(set("general", 7))).await, "channel_id");
    let unknown = "0190aaaa-0000-7000-8000-000000000000";
    assert_code(retention().set_message_retention_policy(root.req(set(unknown, 7))).await, Code::NotFound);
    let bad_run = GetMessageRetentionRunRequest { run_id: "x".into() };
    assert_invalid(retention().get_message_retention_run(root.req(bad_run)).await, "run_id");
    let no_run = GetMessageRetentionRunRequest { run_id: unknown.into() };
    assert_code(retention().get_message_retention_run(root.req(no_run)).await, Code::NotFound);
    let bad_page = ListMessageRetentionRunsRequest { page_size: 0, page_token: "!!".into() };
    assert_invalid(retention().list_message_retention_runs(root.req(bad_page)).await, "page_token");
    let listed = retention()
        .list_message_retention_policies(root.req(ListMessageRetentionPoliciesRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.policies.is_empty());
    assert_eq!(listed.workspace_default.unwrap().retention_days, 0);

    // A channel's own policy, inherited again once removed; an admin may
    // set one on a private channel they are not in.
    let own = retention().set_message_retention_policy(root.req(set(&general, 30))).await.unwrap().into_inner();
    assert_eq!(own.policy.unwrap().updated_by_id, root.user_id);
    retention().set_message_retention_policy(root.req(set(&secret, 90))).await.unwrap();
    let read = retention()
        .get_message_retention_policy(ann.req(GetMessageRetentionPolicyRequest { channel_id: general.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((read.policy.unwrap().retention_days, read.inherited), (30, false));
    let listed = retention()
        .list_message_retention_policies(
            root.req(ListMessageRetentionPoliciesRequest { page_size: 1, page_token: String::new() }),
        )
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.policies.len(), 1);
    assert_eq!(listed.policies[0].channel_id, secret, "most recently changed first");
    let rest = ListMessageRetentionPoliciesRequest { page_size: 1, page_token: listed.next_page_token };
    let rest = retention().list_message_retention_policies(root.req(rest)).await.unwrap().into_inner();
    assert_eq!(rest.policies[0].channel_id, general);
    assert!(rest.next_page_token.is_empty());
    retention().delete_message_retention_policy(root.req(delete.clone())).await.unwrap();
    retention().delete_message_retention_policy(root.req(delete)).await.unwrap();
    let read = retention()
        .get_message_retention_policy(ann.req(GetMessageRetentionPolicyRequest { channel_id: general.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((read.policy.unwrap().retention_days, read.inherited), (0, true));

    // A retried change with the same key answers the same; the same key for
    // another change is refused.
    let keyed = |days| SetMessageRetentionPolicyRequest {
        channel_id: String::new(),
        retention_days: days,
        idempotency_key: "policy-1".into(),
    };
    let once = retention().set_message_retention_policy(root.req(keyed(365))).await.unwrap().into_inner();
    let twice = retention().set_message_retention_policy(root.req(keyed(365))).await.unwrap().into_inner();
    assert_eq!(once, twice);
    assert!(retention().set_message_retention_policy(root.req(keyed(30))).await.is_err());
    let now = retention()
        .get_message_retention_policy(ann.req(GetMessageRetentionPolicyRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now.policy.unwrap().retention_days, 365);
}

#[tokio::test]
#[ignore = "needs PostgreSQL and Redis: set COLINK_TEST_POSTGRES and COLINK_TEST_REDIS (the full suite does)"]
async fn one_run_at_a_time_across_nodes_and_streams_everywhere_hear_of_it() {
    use sea_orm::ConnectionTrait;
    let database = crate::helpers::fresh_postgres(&crate::cluster::server("COLINK_TEST_POSTGRES")).await;
    let redis = crate::cluster::server("COLINK_TEST_REDIS");
    let clock = Arc::new(ManualClock::starting_now());
    let node = |database: String, redis: String| {
        TestApp::spawn_with_clock(clock.clone(), move |c| {
            c.database.url = database;
            c.pubsub.url = redis;
        })
    };
    let (a, b) = (node(database.clone(), redis.clone()).await, node(database, redis).await);
    let root = a.register("root").await;
    let ann = b.register("ann").await;
    let general = a.create_channel(&ann, "general", ChannelKind::Public, &[]).await.channel_id;
    let old = a.send(&ann, &general, "old on a").await;
    let mid = now_micros();
    a.retention().set_message_retention_policy(root.req(set("", 1))).await.unwrap();
    one_day_after(&clock, mid);

    // Another node's run holds the workspace while its heart beats.
    let db = colink_runtime::db::connect(&a.config().database, &a.config().data_dir, "messaging").await.unwrap();
    let held = "0190aaaa-0000-7000-8000-0000000000aa";
    let hold = |beat: i64| {
        format!(
            "INSERT INTO message_retention_runs (run_id, \"trigger\", dry_run, state, started_by, running_key, started_at, \
             heartbeat_at, message_count, channel_count, error) VALUES ('{held}', 2, false, 1, '', 'running', {beat}, {beat}, 0, 0, '')"
        )
    };
    db.writer.execute_unprepared(&hold(now_micros())).await.unwrap();
    let refused = b.retention().run_message_retention(root.req(RunMessageRetentionRequest::default())).await;
    assert_code(refused, Code::FailedPrecondition);
    // Once it stops beating, the next run takes over.
    let stale = now_micros() - 3 * 60 * 1_000_000;
    db.writer.execute_unprepared(&format!("UPDATE message_retention_runs SET heartbeat_at = {stale}")).await.unwrap();
    let mut on_b = b.subscribe(&ann, &general, Some(old.seq)).await;
    let started = b.retention().run_message_retention(root.req(RunMessageRetentionRequest::default())).await.unwrap();
    let report = finished(&a, &root, &started.into_inner().run.unwrap().run_id).await;
    assert_eq!(report.message_count, 1);
    let lost = finished(&a, &root, held).await;
    assert_eq!(lost.state, RetentionRunState::Failed as i32);
    assert_eq!(lost.error, "the node running it stopped");

    // The run's event reaches a stream on the other node.
    loop {
        if let Frame::Event(e) = frame(&mut on_b).await
            && let Some(Kind::MessagesExpired(x)) = e.kind
        {
            assert_eq!(x.through_seq, old.seq);
            break;
        }
    }
    let gone = b.messaging().get_message(ann.req(GetMessageRequest { message_id: old.message_id })).await;
    assert_code(gone, Code::NotFound);
}
