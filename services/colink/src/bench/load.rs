//! Users, channels, senders and streaming receivers, all through the
//! generated gRPC clients, the way real clients use a node.
//!
//! Every message carries its bench id and its send time (`"<id> <micros>"`),
//! so that a receiver can tell latency, loss and duplicates on its own.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use colink_proto::auth::v1::RegisterRequest;
use colink_proto::auth::v1::auth_service_client::AuthServiceClient;
use colink_proto::channels::v1::channels_service_client::ChannelsServiceClient;
use colink_proto::channels::v1::{AddMembersRequest, ChannelKind, CreateChannelRequest};
use colink_proto::messaging::v1::messaging_service_client::MessagingServiceClient;
use colink_proto::messaging::v1::{ListMessagesRequest, SendMessageRequest};
use colink_proto::realtime::v1::{ChannelCursor, SubscribeRequest};
use colink_runtime::clients::with_token;
use colink_runtime::ids::now_micros;
use futures_util::StreamExt;
use futures_util::stream::{self, FuturesUnordered};
use tokio::task::JoinHandle;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic_prost::ProstCodec;

use super::BenchError;
use super::frames::{EventHead, FrameHead, ResponseHead};

/// Calls in flight while setting up users and channels.
const SETUP_CONCURRENCY: usize = 32;

#[derive(Clone)]
pub struct User {
    pub user_id: String,
    pub token: String,
}

/// Connections to the node, used round-robin so that no single HTTP/2
/// connection carries every stream.
#[derive(Clone)]
pub struct Pool {
    channels: Arc<Vec<Channel>>,
    next: Arc<AtomicUsize>,
    /// The node's process, for its CPU time.
    pub node_pid: u32,
}

impl Pool {
    pub fn new(channels: Vec<Channel>, node_pid: u32) -> Self {
        Self { channels: Arc::new(channels), next: Arc::default(), node_pid }
    }

    pub fn pick(&self) -> Channel {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        self.channels[i].clone()
    }
}

pub async fn register_users(pool: &Pool, count: usize, progress: &super::Progress) -> Result<Vec<User>, BenchError> {
    let run = format!("{:x}", now_micros());
    let users: Vec<Result<User, BenchError>> = stream::iter(0..count)
        .map(|i| {
            let mut auth = AuthServiceClient::new(pool.pick());
            let username = format!("b{run}{i}");
            async move {
                let request = RegisterRequest {
                    email: format!("{username}@bench.invalid"),
                    username,
                    password: "bench password 1234".into(),
                    display_name: String::new(),
                };
                let response = auth.register(request).await?.into_inner();
                let user_id = response.account.map(|a| a.user_id).unwrap_or_default();
                let token = response.tokens.map(|t| t.access_token).unwrap_or_default();
                progress.tick();
                Ok(User { user_id, token })
            }
        })
        .buffered(SETUP_CONCURRENCY)
        .collect()
        .await;
    users.into_iter().collect()
}

/// Creates `count` public channels of `members` users each: channel `c` is
/// owned by user `c * members` and has the next `members - 1` users.
pub async fn create_channels(
    pool: &Pool,
    users: &[User],
    count: usize,
    members: usize,
    progress: &super::Progress,
) -> Result<Vec<String>, BenchError> {
    let created: Vec<Result<String, BenchError>> = stream::iter(0..count)
        .map(|c| {
            let mut channels = ChannelsServiceClient::new(pool.pick());
            let group = &users[c * members..(c + 1) * members];
            async move {
                let owner = &group[0];
                let first: Vec<String> = group[1..].iter().take(100).map(|u| u.user_id.clone()).collect();
                let request = CreateChannelRequest {
                    name: format!("bench-{c}-{:x}", now_micros()),
                    kind: ChannelKind::Public as i32,
                    member_ids: first,
                    ..Default::default()
                };
                let channel = channels.create_channel(with_token(&owner.token, request)).await?.into_inner().channel;
                let channel_id = channel.map(|c| c.channel_id).unwrap_or_default();
                for chunk in group[1..].chunks(100).skip(1) {
                    let request = AddMembersRequest {
                        channel_id: channel_id.clone(),
                        user_ids: chunk.iter().map(|u| u.user_id.clone()).collect(),
                        ..Default::default()
                    };
                    channels.add_members(with_token(&owner.token, request)).await?;
                }
                progress.tick();
                Ok(channel_id)
            }
        })
        .buffered(SETUP_CONCURRENCY.min(8))
        .collect()
        .await;
    created.into_iter().collect()
}

/// What one receiver saw.
#[derive(Default)]
pub struct Received {
    pub ids: HashSet<u64>,
    pub duplicates: u64,
    pub latencies_us: Vec<u32>,
    /// Highest sequence seen, the cursor to resume from.
    pub last_seq: i64,
    /// For reactions: each time the watched count rose, the new count and
    /// when it arrived.
    pub rises: Vec<(u32, i64)>,
}

/// What a receiver counts.
#[derive(Clone, Copy, Default)]
pub enum Watch {
    /// Messages, which carry their bench id and send time in their text.
    #[default]
    Messages,
    /// The count of one emoji on messages of the channel, from single
    /// reaction entries and from batched ones.
    Reactions(&'static str),
}

impl Watch {
    /// Records an event this receiver counts, arrived at `now`.
    fn record(self, seen: &mut Received, event: EventHead, now: i64) {
        match self {
            Watch::Messages => {
                let Some(message) = event.message_created else { return };
                let Some((id, sent)) = parse_text(&message.text) else { return };
                if seen.ids.insert(id) {
                    seen.latencies_us.push(u32::try_from((now - sent).max(0)).unwrap_or(u32::MAX));
                } else {
                    seen.duplicates += 1;
                }
            }
            Watch::Reactions(emoji) => {
                let single = event.reaction_added.or(event.reaction_removed).map(|r| (r.emoji, r.count));
                let batched = event.reactions_changed.into_iter().flat_map(|r| r.counts).map(|c| (c.emoji, c.count));
                let Some((_, count)) = single.into_iter().chain(batched).find(|(e, _)| e == emoji) else { return };
                let count = u32::try_from(count).unwrap_or(0);
                // Each entry changes the count: one that does not is a
                // repeat of what this stream already had.
                if event.seq <= seen.last_seq || seen.rises.last().is_some_and(|(top, _)| count <= *top) {
                    seen.duplicates += 1;
                } else {
                    seen.rises.push((count, now));
                }
            }
        }
    }
}

/// A streaming receiver of one channel.
pub struct Receiver {
    pub channel: usize,
    pub seen: Arc<Mutex<Received>>,
    task: JoinHandle<()>,
}

impl Receiver {
    /// Opens a `Subscribe` stream from `cursor` (live only when `None`) and
    /// returns once the node confirmed the subscription.
    pub async fn open(
        pool: &Pool,
        user: &User,
        channel: usize,
        channel_id: &str,
        cursor: Option<i64>,
        seen: Arc<Mutex<Received>>,
        watch: Watch,
    ) -> Result<Self, BenchError> {
        let request = SubscribeRequest {
            cursors: vec![ChannelCursor { channel_id: channel_id.to_string(), last_seq: cursor }],
            all_channels: false,
        };
        // Read with the bench's own light types (`frames.rs`).
        let mut grpc = tonic::client::Grpc::new(pool.pick());
        grpc.ready().await.map_err(|e| BenchError::Server(e.to_string()))?;
        let codec: ProstCodec<SubscribeRequest, ResponseHead> = ProstCodec::default();
        let path = PathAndQuery::from_static("/colink.realtime.v1.RealtimeService/Subscribe");
        let mut stream = grpc.server_streaming(with_token(&user.token, request), path, codec).await?.into_inner();
        loop {
            match stream.message().await?.and_then(|r| r.frame) {
                Some(FrameHead { subscribed: Some(_), .. }) => break,
                Some(_) => continue,
                None => return Err(BenchError::Protocol("stream ended before it was confirmed".into())),
            }
        }
        let record = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok(Some(response)) = stream.message().await {
                let Some(event) = response.frame.and_then(|f| f.event) else { continue };
                let now = now_micros();
                let mut seen = match record.lock() {
                    Ok(seen) => seen,
                    Err(_) => return,
                };
                let seq = event.seq;
                watch.record(&mut seen, event, now);
                seen.last_seq = seen.last_seq.max(seq);
            }
        });
        Ok(Self { channel, seen, task })
    }

    /// Drops the stream, as a client losing its connection does.
    pub fn close(self) -> Arc<Mutex<Received>> {
        self.task.abort();
        self.seen
    }
}

fn parse_text(text: &str) -> Option<(u64, i64)> {
    let (id, sent) = text.split_once(' ')?;
    Some((id.parse().ok()?, sent.parse().ok()?))
}

/// Acknowledged sends, per channel, and the acknowledgement latencies.
#[derive(Default)]
pub struct Sent {
    pub ids_by_channel: Vec<Mutex<Vec<u64>>>,
    pub ack_latencies_us: Mutex<Vec<u32>>,
    pub failed: AtomicU64,
}

/// How much to send, how fast, and until when.
pub struct SendPlan {
    /// Concurrent senders.
    pub senders: usize,
    /// Messages per second in all; 0 as fast as acknowledgements come.
    pub rate: u32,
    /// Bench id of the first message; the others follow.
    pub first_id: u64,
    pub total: u64,
    pub deadline: Instant,
}

/// Who sends the messages of a plan.
#[derive(Clone, Copy)]
pub enum Speakers<'a> {
    /// Each message's channel's owner, one per channel.
    Owners(&'a [User]),
    /// Each sending task is one of these people, whatever the channel, as
    /// when several people talk in one room at once.
    People(&'a [User]),
}

/// Sends `plan.total` messages (or what fits before the deadline), spread
/// over the channels round-robin.
pub async fn send(
    pool: &Pool,
    speakers: Speakers<'_>,
    channel_ids: &[String],
    plan: SendPlan,
    progress: &super::Progress,
) -> Arc<Sent> {
    let first_id = plan.first_id;
    let (people, per_task) = match speakers {
        Speakers::Owners(owners) => (owners, false),
        Speakers::People(people) => (people, true),
    };
    let tokens: Arc<Vec<String>> = Arc::new(people.iter().map(|u| u.token.clone()).collect());
    let channel_ids = Arc::new(channel_ids.to_vec());
    let count = channel_ids.len();
    let tasks = AtomicUsize::new(0);
    paced(plan, count, progress, || {
        let task = tasks.fetch_add(1, Ordering::Relaxed);
        let messaging = MessagingServiceClient::new(pool.pick());
        let (tokens, channel_ids) = (tokens.clone(), channel_ids.clone());
        move |n: u64| {
            let id = first_id + n;
            let c = (n % channel_ids.len() as u64) as usize;
            let speaker = if per_task { task % tokens.len().max(1) } else { c };
            let sent_at = now_micros();
            let request = SendMessageRequest {
                channel_id: channel_ids[c].clone(),
                text: format!("{id} {sent_at}"),
                idempotency_key: format!("bench-{id}-{sent_at}"),
                ..Default::default()
            };
            let request = with_token(tokens.get(speaker).map_or("", String::as_str), request);
            let mut messaging = messaging.clone();
            async move { messaging.send_message(request).await.map(|_| (c, id)) }
        }
    })
    .await
}

/// Runs calls number 0, 1, 2, ... of a plan from `plan.senders` tasks, the
/// n-th due n / rate seconds after the start (or as fast as answers come
/// with rate 0), until `plan.total` or the deadline. `make` builds each
/// task's call; a call answers the channel (of `channels`) and bench id it
/// counts under. Acknowledged calls, their latencies and failures go in the
/// returned record.
pub async fn paced<M, C, Fut>(plan: SendPlan, channels: usize, progress: &super::Progress, make: M) -> Arc<Sent>
where
    M: Fn() -> C,
    C: FnMut(u64) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(usize, u64), tonic::Status>> + Send,
{
    let SendPlan { senders, rate, first_id: _, total, deadline } = plan;
    let sent =
        Arc::new(Sent { ids_by_channel: (0..channels).map(|_| Mutex::default()).collect(), ..Default::default() });
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = FuturesUnordered::new();
    for _ in 0..senders.max(1) {
        let mut call = make();
        let (sent, next, progress) = (sent.clone(), next.clone(), progress.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total || Instant::now() >= deadline {
                    break;
                }
                if rate > 0 {
                    let due = started + Duration::from_secs_f64(n as f64 / f64::from(rate));
                    tokio::time::sleep_until(due.into()).await;
                }
                let asked = now_micros();
                match call(n).await {
                    Ok((c, id)) => {
                        let ack = u32::try_from(now_micros() - asked).unwrap_or(u32::MAX);
                        if let Some(Ok(mut ids)) = sent.ids_by_channel.get(c).map(|ids| ids.lock()) {
                            ids.push(id);
                        }
                        if let Ok(mut acks) = sent.ack_latencies_us.lock() {
                            acks.push(ack);
                        }
                        progress.tick();
                    }
                    Err(status) => {
                        sent.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%status, "call failed");
                    }
                }
            }
        }));
    }
    while tasks.next().await.is_some() {}
    sent
}

/// Pages back through a channel from its newest message, `page_size` at a
/// time, and returns each page's latency.
pub async fn page_back(
    pool: &Pool,
    user: &User,
    channel_id: &str,
    page_size: i32,
    max_pages: usize,
) -> Result<Vec<u32>, BenchError> {
    let mut messaging = MessagingServiceClient::new(pool.pick());
    let mut latencies = Vec::new();
    let mut page_token = String::new();
    while latencies.len() < max_pages {
        let request = ListMessagesRequest {
            channel_id: channel_id.to_string(),
            page_size,
            page_token: page_token.clone(),
            ..Default::default()
        };
        let started = Instant::now();
        let page = messaging.list_messages(with_token(&user.token, request)).await?.into_inner();
        latencies.push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    Ok(latencies)
}

/// Sends one message and returns its id.
pub async fn send_one(pool: &Pool, user: &User, channel_id: &str, text: &str) -> Result<String, BenchError> {
    let mut messaging = MessagingServiceClient::new(pool.pick());
    let request =
        SendMessageRequest { channel_id: channel_id.to_string(), text: text.to_string(), ..Default::default() };
    let sent = messaging.send_message(with_token(&user.token, request)).await?.into_inner();
    Ok(sent.message.map(|m| m.message_id).unwrap_or_default())
}
