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

/// A file as the index keeps it: its names, and who may see it, to narrow
/// a search before each hit is checked with the files service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDoc {
    pub file_id: String,
    pub owner_id: String,
    pub filename: String,
    pub description: String,
    /// "image", "video", "audio", "document" or "other".
    pub file_type: String,
    /// Who may see it: `u:<user>` for its owner and the users it is shared
    /// with, `c:<conversation>` for the members of its channel (when shared
    /// with the channel) and of conversations where it is attached, `w`
    /// for every non-guest (when shared with the workspace).
    pub scopes: Vec<String>,
    /// The conversations it belongs to: the one it was uploaded to and
    /// those where it is attached.
    pub channels: Vec<String>,
}

/// What the files service says of a file, in the words its events use.
pub struct FileFacts<'a> {
    pub file_id: &'a str,
    pub owner_id: &'a str,
    /// Empty for none.
    pub channel_id: &'a str,
    /// "private", "channel" or "workspace".
    pub access: &'a str,
    pub filename: &'a str,
    pub description: &'a str,
    pub file_type: &'a str,
    pub attached_channel_ids: &'a [String],
    pub shared_with_user_ids: &'a [String],
}

impl FileDoc {
    pub fn from_facts(f: FileFacts<'_>) -> Self {
        let mut scopes = vec![format!("u:{}", f.owner_id)];
        scopes.extend(f.shared_with_user_ids.iter().map(|u| format!("u:{u}")));
        if f.access == "channel" && !f.channel_id.is_empty() {
            scopes.push(format!("c:{}", f.channel_id));
        }
        scopes.extend(f.attached_channel_ids.iter().map(|c| format!("c:{c}")));
        if f.access == "workspace" {
            scopes.push("w".into());
        }
        scopes.sort();
        scopes.dedup();
        let mut channels: Vec<String> = f.attached_channel_ids.to_vec();
        if !f.channel_id.is_empty() {
            channels.push(f.channel_id.to_string());
        }
        channels.sort();
        channels.dedup();
        Self {
            file_id: f.file_id.to_string(),
            owner_id: f.owner_id.to_string(),
            filename: f.filename.to_string(),
            description: f.description.to_string(),
            file_type: f.file_type.to_string(),
            scopes,
            channels,
        }
    }

    /// The scope terms a caller's search covers: their own, their
    /// conversations', and the workspace's unless they are a guest.
    pub fn scopes_of(user_id: &str, channel_ids: &[String], guest: bool) -> Vec<String> {
        let mut scopes = vec![format!("u:{user_id}")];
        scopes.extend(channel_ids.iter().map(|c| format!("c:{c}")));
        if !guest {
            scopes.push("w".into());
        }
        scopes
    }
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
    /// Adds the file, or replaces what the index had of it.
    File(FileDoc),
    /// Removes the file; nothing when it is not there.
    RemoveFile(String),
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

/// What to look for among files.
#[derive(Debug, Clone)]
pub struct FileSearch {
    /// Every clause matches the name or the description.
    pub query: Parsed,
    /// Files with any of these scopes (the caller's); never empty.
    pub scopes: Vec<String>,
    /// Each group must have one of the file's conversations.
    pub channel_groups: Vec<Vec<String>>,
    /// Every one must be the owner: two different ones find nothing.
    pub owner_ids: Vec<String>,
    pub file_type: Option<String>,
    /// Uploaded at or after, in milliseconds since the epoch.
    pub after_ms: Option<u64>,
    /// Uploaded before, in milliseconds since the epoch.
    pub before_ms: Option<u64>,
    pub order: Order,
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

/// A full-text index of messages, files and people.
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
    /// Candidates for a file search.
    async fn search_files(&self, search: FileSearch) -> Result<Found, IndexError>;
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
