//! Scenarios of conversation depth: a storm of reactions on one message in
//! a big channel, and the unread counts of one user in many busy channels.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use colink_proto::channels::v1::channels_service_client::ChannelsServiceClient;
use colink_proto::channels::v1::{AddMembersRequest, ChannelKind, CreateChannelRequest};
use colink_proto::messaging::v1::GetUnreadCountsRequest;
use colink_proto::messaging::v1::messaging_service_client::MessagingServiceClient;
use colink_proto::reactions::v1::AddReactionRequest;
use colink_proto::reactions::v1::reactions_service_client::ReactionsServiceClient;
use colink_runtime::clients::with_token;
use colink_runtime::ids::now_micros;
use futures_util::StreamExt;
use futures_util::stream;

use super::load::{self, Pool, Receiver, SendPlan, Speakers, User, Watch};
use super::server::CpuSample;
use super::{BenchError, Percentiles, Progress, Report, Shape, open_receivers, tally};

/// The emoji of the storm.
const STORM_EMOJI: &str = "+1";
/// Latency samples kept at most (stream × reaction pairs beyond are sampled).
const MAX_SAMPLES: usize = 20_000_000;

/// Reaction storm: every member streams the channel; members react to one
/// message at a fixed rate, each once. Every stream must come to show every
/// acknowledged reaction, whether it arrives alone or counted with others.
pub async fn reaction_storm(
    pool: &Pool,
    users: &[User],
    owners: &[User],
    channel_ids: &[String],
    shape: &Shape,
    progress: &Progress,
    report: &mut Report,
) -> Result<(), BenchError> {
    let target = load::send_one(pool, &owners[0], &channel_ids[0], "react to me").await?;
    let total = shape.messages.min(users.len() as u64);
    // Per reaction: when it was asked for, and the count its answer showed,
    // which a stream has reached once the reaction is in what it shows.
    let sent_at: Arc<Vec<AtomicI64>> = Arc::new((0..total).map(|_| AtomicI64::new(0)).collect());
    let needed: Arc<Vec<AtomicU32>> = Arc::new((0..total).map(|_| AtomicU32::new(0)).collect());
    let receivers =
        open_receivers(pool, users, channel_ids, shape, None, &Watch::Reactions(STORM_EMOJI), progress).await?;
    let cpu = CpuSample::take(pool.node_pid);
    let send_started = Instant::now();
    let sent = {
        let _line = progress.show("reacting", total);
        let deadline = Instant::now() + Duration::from_secs(shape.max_secs);
        let plan = SendPlan { senders: shape.senders, rate: shape.rate, first_id: 0, total, deadline };
        let users = Arc::new(users.to_vec());
        load::paced(plan, 1, progress, || {
            let reactions = ReactionsServiceClient::new(pool.pick());
            let (users, sent_at, needed, target) = (users.clone(), sent_at.clone(), needed.clone(), target.clone());
            move |n: u64| {
                let i = n as usize;
                sent_at[i].store(now_micros(), Ordering::Relaxed);
                let request = AddReactionRequest {
                    message_id: target.clone(),
                    emoji: STORM_EMOJI.into(),
                    idempotency_key: format!("storm-{n}"),
                };
                let request = with_token(&users[i].token, request);
                let (mut reactions, needed) = (reactions.clone(), needed.clone());
                async move {
                    let answer = reactions.add_reaction(request).await?.into_inner();
                    let count = answer
                        .reactions
                        .iter()
                        .flat_map(|r| &r.groups)
                        .find(|g| g.emoji == STORM_EMOJI)
                        .map_or(0, |g| u32::try_from(g.count).unwrap_or(0));
                    needed[i].store(count, Ordering::Relaxed);
                    Ok((0, n))
                }
            }
        })
        .await
    };
    let send_secs = send_started.elapsed().as_secs_f64();
    let acked: Vec<u64> = sent.ids_by_channel[0].lock().map(|ids| ids.clone()).unwrap_or_default();
    let delivered_until = drain_counts(&receivers, acked.len() as u32).await;
    tally(report, &[], &sent, send_secs, send_secs);
    report.streams = receivers.len();
    let step = (receivers.len() * acked.len()).div_ceil(MAX_SAMPLES).max(1);
    let mut latencies = Vec::new();
    for receiver in &receivers {
        let Ok(seen) = receiver.seen.lock() else { continue };
        let top = seen.rises.last().map_or(0, |(count, _)| *count);
        report.lost += (acked.len() as u64).saturating_sub(u64::from(top));
        report.duplicated += seen.duplicates + u64::from(top).saturating_sub(acked.len() as u64);
        report.deliveries += seen.rises.len() as u64;
        for &n in acked.iter().step_by(step) {
            let (want, asked) =
                (needed[n as usize].load(Ordering::Relaxed), sent_at[n as usize].load(Ordering::Relaxed));
            let first = seen.rises.partition_point(|(count, _)| *count < want);
            if let Some((_, at)) = seen.rises.get(first) {
                latencies.push(u32::try_from((at - asked).max(0)).unwrap_or(u32::MAX));
            }
        }
    }
    let deliver_secs = delivered_until.duration_since(send_started).as_secs_f64();
    report.deliveries_per_s = report.deliveries as f64 / deliver_secs.max(1e-9);
    report.latency_ms = Percentiles::of_micros(latencies);
    report.cpu_per_delivery_us = cpu.per_delivery(pool.node_pid, report.deliveries);
    Ok(())
}

/// Waits until every receiver shows `total` reactions, or ten seconds
/// without progress; returns when the last one arrived.
async fn drain_counts(receivers: &[Receiver], total: u32) -> Instant {
    let behind = || {
        receivers
            .iter()
            .filter(|r| r.seen.lock().map(|s| s.rises.last().map_or(0, |(c, _)| *c) < total).unwrap_or(false))
            .count()
    };
    let mut last = behind();
    let mut last_change = Instant::now();
    while last > 0 && last_change.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = behind();
        if now != last {
            last = now;
            last_change = Instant::now();
        }
    }
    last_change
}

/// Unread at scale: one user in every channel, each channel with all the
/// users; traffic at a fixed rate while that user asks for their counts.
pub async fn unread_at_scale(
    pool: &Pool,
    users: &[User],
    shape: &Shape,
    progress: &Progress,
    report: &mut Report,
) -> Result<(), BenchError> {
    let reader = &users[0];
    let owners: Vec<User> = (0..shape.channels).map(|c| users[1 + c % (users.len() - 1)].clone()).collect();
    let channel_ids = {
        let _line = progress.show("creating shared channels", shape.channels as u64);
        shared_channels(pool, users, &owners, progress).await?
    };
    // The counts cover a channel once its membership events are recorded.
    // Each channel's events are recorded in order, and the last user joins
    // every channel last: once they see them all, every membership is in,
    // and the measurement does not share the node with the recording.
    {
        let _line = progress.show("recording memberships", shape.channels as u64);
        let mut messaging = MessagingServiceClient::new(pool.pick());
        let deadline = Instant::now() + Duration::from_secs(1200);
        let last = users.last().unwrap_or(reader);
        loop {
            let mut complete = true;
            for user in [reader, last] {
                let request = with_token(&user.token, GetUnreadCountsRequest::default());
                let counts = messaging.get_unread_counts(request).await?.into_inner().counts.unwrap_or_default();
                complete &= counts.channels.len() >= shape.channels;
            }
            if complete {
                break;
            }
            if Instant::now() > deadline {
                return Err(BenchError::Protocol("memberships were not recorded in time".into()));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let done = Arc::new(AtomicBool::new(false));
    let asking = {
        let (done, mut messaging, token) =
            (done.clone(), MessagingServiceClient::new(pool.pick()), reader.token.clone());
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            while !done.load(Ordering::Relaxed) {
                let started = Instant::now();
                let request = with_token(&token, GetUnreadCountsRequest::default());
                if messaging.get_unread_counts(request).await.is_ok() {
                    latencies.push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            latencies
        })
    };
    let send_started = Instant::now();
    let sent = {
        let _line = progress.show("sending", shape.messages);
        let deadline = Instant::now() + Duration::from_secs(shape.max_secs);
        let plan = SendPlan { senders: shape.senders, rate: shape.rate, first_id: 0, total: shape.messages, deadline };
        load::send(pool, Speakers::Owners(&owners), &channel_ids, plan, progress).await
    };
    let send_secs = send_started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let latencies = asking.await.map_err(|e| BenchError::Protocol(e.to_string()))?;
    tally(report, &[], &sent, send_secs, send_secs);
    report.counts_ms = Some(Percentiles::of_micros(latencies));
    // The counts must add up to what was sent.
    let mut messaging = MessagingServiceClient::new(pool.pick());
    let counts = messaging
        .get_unread_counts(with_token(&reader.token, GetUnreadCountsRequest::default()))
        .await?
        .into_inner()
        .counts
        .unwrap_or_default();
    report.lost = report.sends.saturating_sub(counts.total_unread_count as u64);
    report.duplicated = (counts.total_unread_count as u64).saturating_sub(report.sends);
    Ok(())
}

/// Public channels, one per owner, each holding every user.
pub(super) async fn shared_channels(
    pool: &Pool,
    users: &[User],
    owners: &[User],
    progress: &Progress,
) -> Result<Vec<String>, BenchError> {
    let created: Vec<Result<String, BenchError>> = stream::iter(owners.iter().enumerate())
        .map(|(c, owner)| {
            let mut channels = ChannelsServiceClient::new(pool.pick());
            let others: Vec<String> =
                users.iter().filter(|u| u.user_id != owner.user_id).map(|u| u.user_id.clone()).collect();
            let (owner, progress) = (owner.clone(), progress.clone());
            async move {
                let request = CreateChannelRequest {
                    name: format!("unread-{c}-{:x}", now_micros()),
                    kind: ChannelKind::Public as i32,
                    member_ids: others.iter().take(100).cloned().collect(),
                    ..Default::default()
                };
                let channel = channels.create_channel(with_token(&owner.token, request)).await?.into_inner().channel;
                let channel_id = channel.map(|c| c.channel_id).unwrap_or_default();
                for chunk in others.chunks(100).skip(1) {
                    let request = AddMembersRequest {
                        channel_id: channel_id.clone(),
                        user_ids: chunk.to_vec(),
                        ..Default::default()
                    };
                    channels.add_members(with_token(&owner.token, request)).await?;
                }
                progress.tick();
                Ok(channel_id)
            }
        })
        .buffered(8)
        .collect()
        .await;
    created.into_iter().collect()
}
