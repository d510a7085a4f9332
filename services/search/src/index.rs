//! The search index: one trait, with the embedded implementation (Tantivy,
//! `embedded.rs`) and the distributed one side by side. An index only finds
//! candidates; what the caller may see, and whether a hit still matches the
//! text as it is now, is decided above it, the same for both.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::query::Parsed;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("search index unavailable: {0}")]
    Unavailable(String),
    #[error("search index: {0}")]
    Failed(String),
}

/// A message as the index keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageDoc {
    pub message_id: String,
    pub channel_id: String,
    pub sender_id: String,
    /// Empty for a top-level message.
    pub thread_id: String,
    pub text: String,
    pub has_file: bool,
}

impl MessageDoc {
    pub fn has_link(&self) -> bool {
        has_link(&self.text)
    }
}

/// Whether a text holds a link, as `has:link` means it.
pub fn has_link(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.contains("http://") || lower.contains("https://") || lower.contains("www.")
}

/// A person as the index keeps them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDoc {
    pub user_id: String,
    pub username: String,
    pub display_name: String,
}

/// A change to the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// Adds the message, or replaces what the index had of it.
    Message(MessageDoc),
    /// Removes the message; nothing when it is not there.
    RemoveMessage(String),
    /// Adds the person, or replaces what the index had of them.
    User(UserDoc),
}

/// How hits are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Order {
    /// Best match first, ties newest first.
    Relevance,
    Newest,
    Oldest,
}

/// Where a hit sorts. Ids are UUIDv7: ordering them orders by time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SortKey {
    pub score: f32,
    pub id: u128,
}

impl Order {
    /// Less: `a` comes before `b`.
    pub fn compare(self, a: &SortKey, b: &SortKey) -> Ordering {
        match self {
            Order::Relevance => b.score.total_cmp(&a.score).then(b.id.cmp(&a.id)),
            Order::Newest => b.id.cmp(&a.id),
            Order::Oldest => a.id.cmp(&b.id),
        }
    }
}

/// Scoring statistics of the first page, kept for the following ones so
/// that a hit's relevance score, and so its place, does not move between
/// pages while messages come and go.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedStats {
    pub docs: u64,
    pub tokens: u64,
    pub doc_freqs: Vec<(String, u64)>,
}

/// What to look for among messages.
#[derive(Debug, Clone)]
pub struct MessageSearch {
    pub query: Parsed,
    /// Only these conversations (the caller's); never empty.
    pub channel_ids: Vec<String>,
    /// Every one must be the sender: two different ones find nothing.
    pub sender_ids: Vec<String>,
    pub thread_id: Option<String>,
    pub has_file: bool,
    pub has_link: bool,
    pub is_thread: bool,
    /// Sent at or after, in milliseconds since the epoch.
    pub after_ms: Option<u64>,
    /// Sent before, in milliseconds since the epoch.
    pub before_ms: Option<u64>,
    pub order: Order,
    /// Only hits after this one, in `order`.
    pub after_key: Option<SortKey>,
    pub limit: usize,
    /// Statistics to score with (Relevance); None scores with the index's
    /// own and returns them in `Found::stats`.
    pub stats: Option<PinnedStats>,
}

/// A candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub id: String,
    pub key: SortKey,
}

/// What to look for among people.
#[derive(Debug, Clone)]
pub struct UserSearch {
    /// Every clause matches the username or the display name; a word
    /// matches as a prefix too (people are searched as they are typed).
    pub query: Parsed,
    /// Only these people; None for everyone.
    pub user_ids: Option<Vec<String>>,
    pub after_key: Option<SortKey>,
    pub limit: usize,
}

/// Candidates in order, and how many documents match in all.
#[derive(Debug, Clone, Default)]
pub struct Found {
    pub hits: Vec<Hit>,
    pub total: u64,
    /// The statistics scored with, when none were given.
    pub stats: Option<PinnedStats>,
}

/// A full-text index of messages and people.
///
/// An index can be rebuilt while it serves: a new generation is filled
/// beside the live one, then takes its place in one step.
#[async_trait::async_trait]
pub trait SearchIndex: Send + Sync + 'static {
    /// Applies changes in order and makes them durable and searchable.
    /// Applying the same changes again changes nothing.
    async fn apply(&self, changes: Vec<Change>) -> Result<(), IndexError>;
    /// Starts a new, empty generation beside the live one; an unfinished
    /// one is dropped first.
    async fn begin_rebuild(&self) -> Result<(), IndexError>;
    /// Applies changes to the generation being built, as `apply` does.
    async fn apply_rebuilt(&self, changes: Vec<Change>) -> Result<(), IndexError>;
    /// Makes the generation being built the live one, atomically for
    /// searches, and removes the old one.
    async fn finish_rebuild(&self) -> Result<(), IndexError>;
    /// Drops the generation being built; the live one stays.
    async fn abandon_rebuild(&self) -> Result<(), IndexError>;
    /// Candidates for a message search.
    async fn search_messages(&self, search: MessageSearch) -> Result<Found, IndexError>;
    /// Candidates for a search of people, best first.
    async fn search_users(&self, search: UserSearch) -> Result<Found, IndexError>;
}

/// The 128 bits of a UUID, 0 for anything else.
pub fn id_bits(id: &str) -> u128 {
    uuid::Uuid::try_parse(id).map(|u| u.as_u128()).unwrap_or(0)
}

/// The milliseconds since the epoch a UUIDv7 starts with, as the upper
/// half of the id: the bound `key_hi` is compared with.
pub fn ms_bound(ms: u64) -> u64 {
    ms << 16
}
