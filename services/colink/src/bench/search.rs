//! The search scenarios. `search-index` drives the embedded index alone,
//! in this process: how fast it takes messages, how fast it answers, how
//! big it grows. `search` drives a node: a reader in 500 channels, a corpus
//! sent through the API, then how long a sent message takes to become
//! searchable at a steady rate, and how long searches take.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use colink_proto::messaging::v1::SendMessageRequest;
use colink_proto::messaging::v1::messaging_service_client::MessagingServiceClient;
use colink_proto::search::v1::search_service_client::SearchServiceClient;
use colink_proto::search::v1::{GetReindexRequest, Reindex, ReindexState, SearchMessagesRequest, StartReindexRequest};
use colink_runtime::clients::with_token;
use colink_runtime::ids::now_micros;
use colink_search::embedded::EmbeddedIndex;
use colink_search::index::{Change, MessageDoc, MessageSearch, Order, SearchIndex};
use colink_search::query;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::load::{self, Pool, SendPlan, User};
use super::{BenchError, Percentiles, Progress, Report, Shape, Size};

/// Channels the reader is in.
pub(super) const CHANNELS: usize = 500;
/// Changes per index commit, as the node's indexer applies them.
const BATCH: usize = 4096;

/// Deterministic numbers (splitmix64): the same corpus every run.
struct Numbers(u64);

impl Numbers {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Words with the frequencies of a natural language: the r-th most common
/// is used about 1/r as often (Zipf).
pub(super) struct Vocabulary {
    words: Vec<String>,
    /// Cumulative weights, for sampling by rank.
    cumulative: Vec<f64>,
}

impl Vocabulary {
    pub(super) fn new(size: usize) -> Self {
        const SYLLABLES: &[&str] = &[
            "ka", "lo", "mi", "ren", "tas", "vo", "pe", "dri", "sun", "ga", "tol", "bre", "nu", "sha", "ki", "mor",
            "al", "ze", "fin", "qua", "ro", "lit", "ve", "pan", "ost", "del", "ju", "wen", "cor", "ti",
        ];
        let mut words = Vec::with_capacity(size);
        let mut seen = HashSet::new();
        let mut numbers = Numbers(7);
        while words.len() < size {
            let parts = 1 + numbers.below(3);
            let word: String = (0..parts).map(|_| SYLLABLES[numbers.below(SYLLABLES.len())]).collect();
            if seen.insert(word.clone()) {
                words.push(word);
            }
        }
        let mut total = 0.0;
        let cumulative = (0..size)
            .map(|r| {
                total += 1.0 / (r as f64 + 1.0);
                total
            })
            .collect();
        Self { words, cumulative }
    }

    fn word(&self, numbers: &mut Numbers) -> &str {
        let total = self.cumulative.last().copied().unwrap_or(1.0);
        let x = (numbers.next() >> 11) as f64 / (1u64 << 53) as f64 * total;
        let rank = self.cumulative.partition_point(|c| *c < x).min(self.words.len() - 1);
        &self.words[rank]
    }

    /// A message of 6 to 16 words.
    fn sentence(&self, numbers: &mut Numbers) -> String {
        let n = 6 + numbers.below(11);
        (0..n).map(|_| self.word(numbers)).collect::<Vec<_>>().join(" ")
    }

    /// A typical query: one or two words, neither among the most common
    /// (which people do not search for) nor among the rarest.
    fn query(&self, numbers: &mut Numbers) -> String {
        let pick = |numbers: &mut Numbers| self.words[50 + numbers.below(2_000)].clone();
        if numbers.below(2) == 0 { pick(numbers) } else { format!("{} {}", pick(numbers), pick(numbers)) }
    }
}

/// The bytes of the files under a folder.
fn size_on_disk(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => size_on_disk(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn micros_since(started: Instant) -> u32 {
    u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX)
}

/// The embedded index alone: indexing rate, query latency with a filter of
/// 500 channels, and size per message.
pub(super) async fn index_only(size: Size, report: &mut Report) -> Result<(), BenchError> {
    let total = if size == Size::Standard { 1_000_000 } else { 20_000 };
    let dir = std::env::temp_dir().join(format!("colink-bench-index-{}", uuid::Uuid::now_v7().simple()));
    let index = EmbeddedIndex::open(&dir).map_err(|e| BenchError::Server(e.to_string()))?;
    let vocabulary = Vocabulary::new(20_000);
    let channels: Vec<String> = (0..CHANNELS * 2).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    let senders: Vec<String> = (0..200).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    let mut numbers = Numbers(1);
    let started = Instant::now();
    let mut last_line = Instant::now();
    let mut done = 0;
    while done < total {
        let batch: Vec<Change> = (0..BATCH.min(total - done))
            .map(|_| {
                Change::Message(MessageDoc {
                    message_id: uuid::Uuid::now_v7().to_string(),
                    channel_id: channels[numbers.below(channels.len())].clone(),
                    sender_id: senders[numbers.below(senders.len())].clone(),
                    thread_id: String::new(),
                    text: vocabulary.sentence(&mut numbers),
                    has_file: false,
                })
            })
            .collect();
        done += batch.len();
        index.apply(batch).await.map_err(|e| BenchError::Server(e.to_string()))?;
        if last_line.elapsed() > Duration::from_secs(1) {
            eprintln!("  indexing: {done}/{total} ({:.0} s)", started.elapsed().as_secs_f64());
            last_line = Instant::now();
        }
    }
    let index_secs = started.elapsed().as_secs_f64();
    report.sends = total as u64;
    report.indexed_per_s = Some(total as f64 / index_secs);
    // The reader is in half of the channels.
    let mine: Vec<String> = channels[..CHANNELS].to_vec();
    let mut latencies = Vec::new();
    let mut hits = 0;
    let queries = if size == Size::Standard { 2_000 } else { 200 };
    for _ in 0..queries {
        let text = vocabulary.query(&mut numbers);
        let search = MessageSearch {
            query: query::parse(&text, true).map_err(|e| BenchError::Protocol(e.0))?,
            channel_ids: mine.clone(),
            sender_ids: Vec::new(),
            thread_id: None,
            has_file: false,
            has_link: false,
            is_thread: false,
            after_ms: None,
            before_ms: None,
            order: Order::Relevance,
            after_key: None,
            limit: 51,
            stats: None,
        };
        let asked = Instant::now();
        let found = index.search_messages(search).await.map_err(|e| BenchError::Server(e.to_string()))?;
        latencies.push(micros_since(asked));
        hits += found.total;
    }
    report.search_ms = Some(Percentiles::of_micros(latencies));
    report.hits_per_search = Some(hits as f64 / f64::from(queries));
    report.index_bytes_per_message = Some(size_on_disk(&dir) as f64 / total as f64);
    drop(index);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A node: a corpus through the API into 500 channels, then the time from
/// a send's acknowledgement to its message being found, at a steady rate,
/// then searches by a reader of all 500 channels.
pub(super) async fn through_node(
    pool: &Pool,
    users: &[User],
    shape: &Shape,
    progress: &Progress,
    report: &mut Report,
    data_dir: &Path,
) -> Result<(), BenchError> {
    let reader = &users[0];
    let owners: Vec<User> = (0..shape.channels).map(|c| users[1 + c % (users.len() - 1)].clone()).collect();
    let channel_ids = {
        let _line = progress.show("creating channels", shape.channels as u64);
        super::conversation::shared_channels(pool, users, &owners, progress).await?
    };
    let vocabulary = Arc::new(Vocabulary::new(20_000));
    let started = Instant::now();
    let sent = {
        let _line = progress.show("sending the corpus", shape.messages);
        let deadline = Instant::now() + Duration::from_secs(shape.max_secs);
        let plan = SendPlan { senders: shape.senders, rate: 0, first_id: 0, total: shape.messages, deadline };
        send_texts(pool, &owners, &channel_ids, plan, progress, vocabulary.clone(), None).await
    };
    super::tally(report, &[], &sent, started.elapsed().as_secs_f64(), started.elapsed().as_secs_f64());
    // Indexed once a message sent last is found.
    let marker = "zqcorpusend";
    load::send_one(pool, &owners[0], &channel_ids[0], marker).await?;
    let waited = Instant::now();
    wait_found(pool, reader, marker, Duration::from_secs(shape.max_secs)).await?;
    report.indexed_per_s = Some(report.sends as f64 / started.elapsed().as_secs_f64());
    eprintln!("  indexed {} s after the last send", waited.elapsed().as_secs());

    // Lag at a steady rate: one message in 20 carries a word of its own,
    // searched for from its acknowledgement until found.
    let lag_total = u64::from(shape.rate) * if shape.messages > 10_000 { 30 } else { 5 };
    let watch = Arc::new(LagWatch { pool: Some(pool.clone()), reader: Some(reader.clone()), ..Default::default() });
    {
        let _line = progress.show("sending at a steady rate", lag_total);
        let deadline = Instant::now() + Duration::from_secs(120);
        let plan = SendPlan { senders: shape.senders, rate: shape.rate, first_id: 0, total: lag_total, deadline };
        send_texts(pool, &owners, &channel_ids, plan, progress, vocabulary.clone(), Some(watch.clone())).await;
    }
    let waiting: Vec<_> = watch.pollers.lock().map(|mut p| p.drain(..).collect()).unwrap_or_default();
    for poller in waiting {
        let _ = poller.await;
    }
    let lags = watch.lags.lock().map(|l| l.clone()).unwrap_or_default();
    report.index_lag_ms = Some(Percentiles::of_micros(lags));

    // Searches by the reader of every channel: one at a time, then four at
    // a time (BENCH_SEARCHERS sets the second).
    let search_secs = if shape.messages > 10_000 { 30 } else { 5 };
    let concurrency = std::env::var("BENCH_SEARCHERS").ok().and_then(|n| n.parse().ok()).unwrap_or(4_u64);
    let (alone, _) = searches(pool, reader, &vocabulary, 1, search_secs).await;
    let (together, hits) = searches(pool, reader, &vocabulary, concurrency, search_secs).await;
    report.hits_per_search = Some(hits);
    report.search_ms = Some(Percentiles::of_micros(alone));
    report.search_concurrent_ms = Some((concurrency, Percentiles::of_micros(together)));
    report.index_bytes_per_message = Some(size_on_disk(&data_dir.join("search")) as f64 / report.sends.max(1) as f64);

    // A rebuild of the whole index from the services, by the admin (the
    // first account the node registered), and the corpus found after it.
    let admin = admin_among(pool, users).await?;
    let _line = progress.show("rebuilding the index", 0);
    let started = Instant::now();
    let rebuilt = reindex(pool, &admin, Duration::from_secs(shape.max_secs)).await?;
    report.reindexed_per_s = Some(rebuilt.messages as f64 / started.elapsed().as_secs_f64());
    wait_found(pool, reader, marker, Duration::from_secs(10)).await?;
    Ok(())
}

/// The user among `users` whom the node made its admin.
pub(super) async fn admin_among(pool: &Pool, users: &[User]) -> Result<User, BenchError> {
    let mut client = SearchServiceClient::new(pool.pick());
    for user in users {
        if client.get_reindex(with_token(&user.token, GetReindexRequest {})).await.is_ok() {
            return Ok(user.clone());
        }
    }
    Err(BenchError::Server("no admin among the registered users".into()))
}

/// Rebuilds the index and waits for the rebuilt one to be live.
async fn reindex(pool: &Pool, admin: &User, within: Duration) -> Result<Reindex, BenchError> {
    let mut client = SearchServiceClient::new(pool.pick());
    client.start_reindex(with_token(&admin.token, StartReindexRequest {})).await?;
    let deadline = Instant::now() + within;
    loop {
        let report = client.get_reindex(with_token(&admin.token, GetReindexRequest {})).await?.into_inner();
        let report = report.reindex.unwrap_or_default();
        match ReindexState::try_from(report.state) {
            Ok(ReindexState::Succeeded) => return Ok(report),
            Ok(ReindexState::Failed) => {
                return Err(BenchError::Server(format!("the rebuild failed: {}", report.error)));
            }
            _ if Instant::now() > deadline => return Err(BenchError::Server("the rebuild did not end in time".into())),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Typical searches by `reader` from `concurrency` clients for `secs`
/// seconds: each one's latency, and the matches per search on average.
async fn searches(
    pool: &Pool,
    reader: &User,
    vocabulary: &Arc<Vocabulary>,
    concurrency: u64,
    secs: u64,
) -> (Vec<u32>, f64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut searchers = FuturesUnordered::new();
    for s in 0..concurrency {
        let (mut client, token, vocabulary) =
            (SearchServiceClient::new(pool.pick()), reader.token.clone(), vocabulary.clone());
        searchers.push(tokio::spawn(async move {
            let mut numbers = Numbers(100 + s);
            let (mut latencies, mut hits) = (Vec::new(), 0_i64);
            while Instant::now() < deadline {
                let request = SearchMessagesRequest { query: vocabulary.query(&mut numbers), ..Default::default() };
                let asked = Instant::now();
                if let Ok(found) = client.search_messages(with_token(&token, request)).await {
                    latencies.push(micros_since(asked));
                    hits += found.into_inner().total_estimate;
                }
            }
            (latencies, hits)
        }));
    }
    let (mut latencies, mut hits) = (Vec::new(), 0);
    while let Some(Ok((l, h))) = searchers.next().await {
        latencies.extend(l);
        hits += h;
    }
    let per_search = hits as f64 / latencies.len().max(1) as f64;
    (latencies, per_search)
}

/// Polls a search for a word until a message holding it is found.
async fn wait_found(pool: &Pool, reader: &User, word: &str, within: Duration) -> Result<(), BenchError> {
    let mut client = SearchServiceClient::new(pool.pick());
    let deadline = Instant::now() + within;
    loop {
        let request = with_token(&reader.token, SearchMessagesRequest { query: word.into(), ..Default::default() });
        if !client.search_messages(request).await?.into_inner().hits.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BenchError::Protocol(format!("{word} was not found within {within:?}")));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Watches marked messages become searchable.
#[derive(Default)]
pub(super) struct LagWatch {
    pool: Option<Pool>,
    reader: Option<User>,
    lags: Mutex<Vec<u32>>,
    pollers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl LagWatch {
    /// Polls for `word` from now on, recording how long it took to be found.
    fn follow(self: &Arc<Self>, word: String) {
        let watch = self.clone();
        let poller = tokio::spawn(async move {
            let (Some(pool), Some(reader)) = (&watch.pool, &watch.reader) else { return };
            let acked = Instant::now();
            if wait_found(pool, reader, &word, Duration::from_secs(30)).await.is_ok()
                && let Ok(mut lags) = watch.lags.lock()
            {
                lags.push(micros_since(acked));
            }
        });
        if let Ok(mut pollers) = self.pollers.lock() {
            pollers.push(poller);
        }
    }
}

/// Sends sentences of the vocabulary round-robin over the channels. With a
/// watch, one message in 20 also carries a word of its own, which the watch
/// follows from the message's acknowledgement.
pub(super) async fn send_texts(
    pool: &Pool,
    owners: &[User],
    channel_ids: &[String],
    plan: SendPlan,
    progress: &Progress,
    vocabulary: Arc<Vocabulary>,
    watch: Option<Arc<LagWatch>>,
) -> Arc<load::Sent> {
    let owners = Arc::new(owners.to_vec());
    let channel_ids = Arc::new(channel_ids.to_vec());
    load::paced(plan, channel_ids.len(), progress, || {
        let messaging = MessagingServiceClient::new(pool.pick());
        let (owners, channel_ids, vocabulary, watch) =
            (owners.clone(), channel_ids.clone(), vocabulary.clone(), watch.clone());
        move |n: u64| {
            let c = (n % channel_ids.len() as u64) as usize;
            let mut numbers = Numbers(n.wrapping_mul(31).wrapping_add(now_micros() as u64));
            let mut text = vocabulary.sentence(&mut numbers);
            let marker = watch.as_ref().filter(|_| n.is_multiple_of(20)).map(|w| (w.clone(), format!("zqlag{n}")));
            if let Some((_, word)) = &marker {
                text = format!("{text} {word}");
            }
            let request = SendMessageRequest { channel_id: channel_ids[c].clone(), text, ..Default::default() };
            let request = with_token(&owners[c].token, request);
            let mut messaging = messaging.clone();
            async move {
                let sent = messaging.send_message(request).await?;
                if let Some((watch, word)) = marker {
                    watch.follow(word);
                }
                drop(sent);
                Ok((c, n))
            }
        }
    })
    .await
}
