//! The retention scenario: a corpus sent through the API, made two days
//! old in the database (as if it had been sent then), and a retention run
//! that deletes all of it while other channels go on sending at a steady
//! rate. It reports how long the run took and the sends' acknowledgement
//! times during it, against the same sends with no run going.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use colink_proto::retention::v1::retention_service_client::RetentionServiceClient;
use colink_proto::retention::v1::{
    GetMessageRetentionRunRequest, MessageRetentionRun, RetentionRunState, RunMessageRetentionRequest,
    SetMessageRetentionPolicyRequest,
};
use colink_runtime::clients::with_token;
use colink_runtime::config::DatabaseConfig;
use sea_orm::ConnectionTrait;

use super::load::{Pool, SendPlan, User};
use super::search::{Vocabulary, admin_among, send_texts};
use super::{BenchError, Percentiles, Progress, Report, Shape};

/// Channels that keep sending while the run goes.
const LIVE_CHANNELS: usize = 10;
const TWO_DAYS_MICROS: i64 = 2 * 86_400_000_000;

pub(super) async fn run_over_corpus(
    pool: &Pool,
    users: &[User],
    shape: &Shape,
    progress: &Progress,
    report: &mut Report,
    data_dir: &Path,
    database_url: Option<&str>,
) -> Result<(), BenchError> {
    let owners: Vec<User> = (0..shape.channels + LIVE_CHANNELS).map(|c| users[c % users.len()].clone()).collect();
    let channel_ids = {
        let _line = progress.show("creating channels", owners.len() as u64);
        super::conversation::shared_channels(pool, users, &owners, progress).await?
    };
    let (corpus_owners, live_owners) = owners.split_at(shape.channels);
    let (corpus_channels, live_channels) = channel_ids.split_at(shape.channels);
    let vocabulary = Arc::new(Vocabulary::new(20_000));
    let sent = {
        let _line = progress.show("sending the corpus", shape.messages);
        let deadline = Instant::now() + Duration::from_secs(shape.max_secs);
        let plan = SendPlan { senders: shape.senders, rate: 0, first_id: 0, total: shape.messages, deadline };
        send_texts(pool, corpus_owners, corpus_channels, plan, progress, vocabulary.clone(), None).await
    };
    let corpus: u64 = sent.ids_by_channel.iter().map(|ids| ids.lock().map(|i| i.len() as u64).unwrap_or(0)).sum();
    age_corpus(data_dir, database_url).await?;

    let steady = |secs: u64| SendPlan {
        senders: 8,
        rate: shape.rate,
        first_id: 0,
        total: u64::from(shape.rate) * secs,
        deadline: Instant::now() + Duration::from_secs(secs + 1),
    };
    let baseline = {
        let _line = progress.show("sending with no run going", u64::from(shape.rate) * 10);
        send_texts(pool, live_owners, live_channels, steady(10), progress, vocabulary.clone(), None).await
    };
    report.ack_baseline_ms =
        Some(Percentiles::of_micros(baseline.ack_latencies_us.lock().map(|a| a.clone()).unwrap_or_default()));

    let admin = admin_among(pool, users).await?;
    let mut retention = RetentionServiceClient::new(pool.pick());
    let policy = SetMessageRetentionPolicyRequest {
        channel_id: String::new(),
        retention_days: 1,
        idempotency_key: String::new(),
    };
    retention.set_message_retention_policy(with_token(&admin.token, policy)).await?;
    let started = Instant::now();
    let run = retention.run_message_retention(with_token(&admin.token, RunMessageRetentionRequest::default())).await?;
    let run_id = run.into_inner().run.map(|r| r.run_id).unwrap_or_default();
    let mut acks = Vec::new();
    let mut failed = 0;
    let ended = {
        let _line = progress.show("sending while the run deletes", 0);
        loop {
            // A few seconds at a time, until the run has ended.
            let during =
                send_texts(pool, live_owners, live_channels, steady(3), progress, vocabulary.clone(), None).await;
            acks.extend(during.ack_latencies_us.lock().map(|a| a.clone()).unwrap_or_default());
            failed += during.failed.load(std::sync::atomic::Ordering::Relaxed);
            if let Some(ended) = ended_run(&mut retention, &admin, &run_id).await? {
                break ended;
            }
            if started.elapsed() > Duration::from_secs(shape.max_secs) {
                return Err(BenchError::Server("the retention run did not end in time".into()));
            }
        }
    };
    if ended.state != RetentionRunState::Succeeded as i32 {
        return Err(BenchError::Server(format!("the retention run failed: {}", ended.error)));
    }
    // Every message of the corpus, and only those, went.
    if ended.message_count != corpus as i64 {
        return Err(BenchError::Server(format!(
            "the run deleted {} messages of a corpus of {corpus}",
            ended.message_count
        )));
    }
    report.sends = corpus;
    report.send_failures = failed;
    report.ack_ms = Percentiles::of_micros(acks);
    report.retention = Some((ended.message_count as u64, ended.elapsed_ms as f64 / 1000.0));
    Ok(())
}

/// The run, once it has ended.
async fn ended_run(
    retention: &mut RetentionServiceClient<tonic::transport::Channel>,
    admin: &User,
    run_id: &str,
) -> Result<Option<MessageRetentionRun>, BenchError> {
    let request = GetMessageRetentionRunRequest { run_id: run_id.to_string() };
    let run = retention.get_message_retention_run(with_token(&admin.token, request)).await?.into_inner().run;
    Ok(run.filter(|r| r.state != RetentionRunState::Running as i32))
}

/// Moves every message two days into the past, in the node's own messaging
/// database.
async fn age_corpus(data_dir: &Path, database_url: Option<&str>) -> Result<(), BenchError> {
    let config = DatabaseConfig { url: database_url.unwrap_or_default().to_string(), max_connections: 2 };
    let db = colink_runtime::db::connect(&config, data_dir, "messaging")
        .await
        .map_err(|e| BenchError::Database(e.to_string()))?;
    let statement = format!("UPDATE messages SET created_at = created_at - {TWO_DAYS_MICROS}");
    db.writer.execute_unprepared(&statement).await.map_err(|e| BenchError::Database(e.to_string()))?;
    Ok(())
}
