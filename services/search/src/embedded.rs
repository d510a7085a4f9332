//! The embedded index: Tantivy on disk under the data directory. Nothing to
//! install. The text is indexed but not stored (the messaging service keeps
//! it); a hit's id is read back from two fast fields holding its UUID.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::Column;
use tantivy::directory::MmapDirectory;
use tantivy::query::{
    AllQuery, Bm25StatisticsProvider, BooleanQuery, BoostQuery, ConstScoreQuery, Occur, PhrasePrefixQuery, PhraseQuery,
    Query, RangeQuery, RegexQuery, TermQuery, TermSetQuery,
};
use tantivy::schema::{FAST, Field, INDEXED, IndexRecordOption, STRING, Schema, TextFieldIndexing, TextOptions};
use tantivy::{
    DocId, Index, IndexReader, IndexWriter, ReloadPolicy, Score, SegmentOrdinal, SegmentReader, TantivyDocument, Term,
};

use crate::analysis::{ANALYZER, index_analyzer};
use crate::index::{
    Change, FileDoc, FileSearch, Found, Hit, IndexError, MessageDoc, MessageSearch, Order, PinnedStats, SearchIndex,
    SortKey, UserDoc, UserSearch, id_bits, ms_bound,
};
use crate::query::Clause;

/// The version of the schemas below. An index of another schema cannot be
/// opened: a new version starts in new directories beside the old ones.
const SCHEMA_VERSION: u32 = 1;

/// Memory the writer may use before it writes a segment.
const WRITER_BUDGET: usize = 24 * 1024 * 1024;

/// The fields of the messages index.
#[derive(Clone, Copy)]
struct MessageFields {
    /// The id as a term, to replace and remove by.
    id: Field,
    /// The id's upper and lower 64 bits; the upper half starts with the
    /// time (UUIDv7), so it also bounds dates.
    key_hi: Field,
    key_lo: Field,
    channel: Field,
    /// The channel id folded to 64 bits, read per hit to keep only the
    /// caller's conversations (cheaper than a term set of 500 ids).
    channel_key: Field,
    sender: Field,
    thread: Field,
    /// "file", "link", "reply".
    flags: Field,
    text: Field,
}

fn analyzed() -> TextOptions {
    TextOptions::default().set_indexing_options(
        TextFieldIndexing::default().set_tokenizer(ANALYZER).set_index_option(IndexRecordOption::WithFreqsAndPositions),
    )
}

fn message_schema() -> (Schema, MessageFields) {
    let mut b = Schema::builder();
    let fields = MessageFields {
        id: b.add_text_field("id", STRING),
        key_hi: b.add_u64_field("key_hi", INDEXED | FAST),
        key_lo: b.add_u64_field("key_lo", FAST),
        channel: b.add_text_field("channel", STRING),
        channel_key: b.add_u64_field("channel_key", FAST),
        sender: b.add_text_field("sender", STRING),
        thread: b.add_text_field("thread", STRING),
        flags: b.add_text_field("flags", STRING),
        text: b.add_text_field("text", analyzed()),
    };
    (b.build(), fields)
}

/// The fields of the people index.
#[derive(Clone, Copy)]
struct UserFields {
    id: Field,
    key_hi: Field,
    key_lo: Field,
    username: Field,
    display_name: Field,
}

fn user_schema() -> (Schema, UserFields) {
    let mut b = Schema::builder();
    let fields = UserFields {
        id: b.add_text_field("id", STRING),
        key_hi: b.add_u64_field("key_hi", FAST),
        key_lo: b.add_u64_field("key_lo", FAST),
        username: b.add_text_field("username", analyzed()),
        display_name: b.add_text_field("display_name", analyzed()),
    };
    (b.build(), fields)
}

/// The fields of the files index.
#[derive(Clone, Copy)]
struct FileFields {
    id: Field,
    key_hi: Field,
    key_lo: Field,
    owner: Field,
    kind: Field,
    scope: Field,
    channel: Field,
    filename: Field,
    description: Field,
}

fn file_schema() -> (Schema, FileFields) {
    let mut b = Schema::builder();
    let fields = FileFields {
        id: b.add_text_field("id", STRING),
        key_hi: b.add_u64_field("key_hi", INDEXED | FAST),
        key_lo: b.add_u64_field("key_lo", FAST),
        owner: b.add_text_field("owner", STRING),
        kind: b.add_text_field("kind", STRING),
        scope: b.add_text_field("scope", STRING),
        channel: b.add_text_field("channel", STRING),
        filename: b.add_text_field("filename", analyzed()),
        description: b.add_text_field("description", analyzed()),
    };
    (b.build(), fields)
}

/// Tantivy under a directory: one index for messages, one for files, one for people, in
/// generations. The file `CURRENT` names the live generation (none means
/// generation 0, whose indices lie in the directory itself); a rebuild
/// fills the next generation in `g<N>` beside it, then writes `CURRENT`
/// and removes the old one.
pub struct EmbeddedIndex {
    root: PathBuf,
    live: RwLock<Generation>,
    building: Mutex<Option<Generation>>,
}

#[derive(Clone)]
struct Generation {
    number: u64,
    inner: Arc<Inner>,
}

struct Inner {
    messages: Part,
    message_fields: MessageFields,
    users: Part,
    user_fields: UserFields,
    files: Part,
    file_fields: FileFields,
}

/// One Tantivy index, its writer and its reader.
struct Part {
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
}

impl Part {
    fn open(dir: &Path, schema: Schema) -> Result<Self, IndexError> {
        std::fs::create_dir_all(dir).map_err(|e| failed(format!("cannot create {}: {e}", dir.display())))?;
        let directory = MmapDirectory::open(dir).map_err(failed)?;
        let index = Index::open_or_create(directory, schema).map_err(failed)?;
        index.tokenizers().register(ANALYZER, index_analyzer());
        let writer = index.writer_with_num_threads(1, WRITER_BUDGET).map_err(failed)?;
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into().map_err(failed)?;
        Ok(Self { reader, writer: Mutex::new(writer) })
    }

    /// Runs `write` with the writer, then commits and reloads the reader.
    fn write(&self, write: impl FnOnce(&mut IndexWriter) -> Result<(), IndexError>) -> Result<(), IndexError> {
        let mut writer = self.writer.lock().map_err(|_| failed("index writer poisoned"))?;
        write(&mut writer)?;
        writer.commit().map_err(failed)?;
        drop(writer);
        self.reader.reload().map_err(failed)
    }
}

fn failed(err: impl std::fmt::Display) -> IndexError {
    IndexError::Failed(err.to_string())
}

/// The file naming the live generation.
const CURRENT: &str = "CURRENT";

fn part_names() -> [String; 3] {
    [format!("messages-v{SCHEMA_VERSION}"), format!("users-v{SCHEMA_VERSION}"), format!("files-v{SCHEMA_VERSION}")]
}

fn generation_dir(root: &Path, number: u64) -> PathBuf {
    if number == 0 { root.to_path_buf() } else { root.join(format!("g{number}")) }
}

/// Removes a generation's indices; what cannot be removed now is removed
/// when the index is next opened.
fn remove_generation(root: &Path, number: u64) {
    let dir = generation_dir(root, number);
    let doomed: Vec<PathBuf> = if number == 0 { part_names().iter().map(|p| dir.join(p)).collect() } else { vec![dir] };
    for path in doomed {
        // A merge may still be finishing in it: try a few times.
        let mut tries = 0;
        while path.exists() && tries < 10 {
            if std::fs::remove_dir_all(&path).is_err() {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            tries += 1;
        }
        if path.exists() {
            tracing::warn!(path = %path.display(), "an old search index generation is left for the next start");
        }
    }
}

impl Inner {
    fn open(dir: &Path) -> Result<Self, IndexError> {
        let (message_schema, message_fields) = message_schema();
        let (user_schema, user_fields) = user_schema();
        let (file_schema, file_fields) = file_schema();
        let [messages, users, files] = part_names();
        Ok(Inner {
            messages: Part::open(&dir.join(messages), message_schema)?,
            message_fields,
            users: Part::open(&dir.join(users), user_schema)?,
            user_fields,
            files: Part::open(&dir.join(files), file_schema)?,
            file_fields,
        })
    }
}

impl EmbeddedIndex {
    /// Opens the live generation under `root`, creating it when there is
    /// none, and removes any other (a rebuild a stop interrupted).
    pub fn open(root: &Path) -> Result<Self, IndexError> {
        std::fs::create_dir_all(root).map_err(|e| failed(format!("cannot create {}: {e}", root.display())))?;
        let number = match std::fs::read_to_string(root.join(CURRENT)) {
            Ok(text) => text.trim().parse::<u64>().map_err(|_| failed(format!("{CURRENT} holds {text:?}")))?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => 0,
            Err(err) => return Err(failed(format!("cannot read {CURRENT}: {err}"))),
        };
        let entries = std::fs::read_dir(root).map_err(failed)?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let other = name.to_str().and_then(|n| n.strip_prefix('g')).and_then(|n| n.parse::<u64>().ok());
            match other {
                Some(other) if other != number => remove_generation(root, other),
                _ => {}
            }
        }
        if number != 0 {
            remove_generation(root, 0);
        }
        let inner = Arc::new(Inner::open(&generation_dir(root, number))?);
        Ok(Self {
            root: root.to_path_buf(),
            live: RwLock::new(Generation { number, inner }),
            building: Mutex::new(None),
        })
    }

    fn live(&self) -> Result<Arc<Inner>, IndexError> {
        Ok(self.live.read().map_err(|_| failed("index poisoned"))?.inner.clone())
    }

    fn building(&self) -> Result<Generation, IndexError> {
        let building = self.building.lock().map_err(|_| failed("index poisoned"))?;
        building.clone().ok_or_else(|| failed("no rebuild is in progress"))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Inner) -> Result<T, IndexError> + Send + 'static,
    ) -> Result<T, IndexError> {
        on_inner(self.live()?, work).await
    }

    /// Points `CURRENT` at a generation, durably and in one step.
    fn write_current(&self, number: u64) -> Result<(), IndexError> {
        let staged = self.root.join(format!("{CURRENT}.new"));
        let mut file = std::fs::File::create(&staged).map_err(failed)?;
        file.write_all(number.to_string().as_bytes()).map_err(failed)?;
        file.sync_all().map_err(failed)?;
        std::fs::rename(&staged, self.root.join(CURRENT)).map_err(failed)?;
        std::fs::File::open(&self.root).and_then(|dir| dir.sync_all()).map_err(failed)
    }
}

async fn on_inner<T: Send + 'static>(
    inner: Arc<Inner>,
    work: impl FnOnce(&Inner) -> Result<T, IndexError> + Send + 'static,
) -> Result<T, IndexError> {
    tokio::task::spawn_blocking(move || work(&inner)).await.map_err(failed)?
}

#[async_trait::async_trait]
impl SearchIndex for EmbeddedIndex {
    async fn apply(&self, changes: Vec<Change>) -> Result<(), IndexError> {
        self.blocking(move |inner| inner.apply(changes)).await
    }

    async fn begin_rebuild(&self) -> Result<(), IndexError> {
        self.abandon_rebuild().await?;
        let number = self.live.read().map_err(|_| failed("index poisoned"))?.number + 1;
        let root = self.root.clone();
        let inner = tokio::task::spawn_blocking(move || {
            remove_generation(&root, number);
            Inner::open(&generation_dir(&root, number))
        })
        .await
        .map_err(failed)??;
        *self.building.lock().map_err(|_| failed("index poisoned"))? =
            Some(Generation { number, inner: Arc::new(inner) });
        Ok(())
    }

    async fn apply_rebuilt(&self, changes: Vec<Change>) -> Result<(), IndexError> {
        on_inner(self.building()?.inner, move |inner| inner.apply(changes)).await
    }

    async fn finish_rebuild(&self) -> Result<(), IndexError> {
        let next = self.building()?;
        self.write_current(next.number)?;
        let old = {
            let mut live = self.live.write().map_err(|_| failed("index poisoned"))?;
            std::mem::replace(&mut *live, next)
        };
        *self.building.lock().map_err(|_| failed("index poisoned"))? = None;
        let root = self.root.clone();
        let number = old.number;
        drop(old);
        tokio::task::spawn_blocking(move || remove_generation(&root, number)).await.map_err(failed)
    }

    async fn abandon_rebuild(&self) -> Result<(), IndexError> {
        let Some(dropped) = self.building.lock().map_err(|_| failed("index poisoned"))?.take() else {
            return Ok(());
        };
        let root = self.root.clone();
        let number = dropped.number;
        drop(dropped);
        tokio::task::spawn_blocking(move || remove_generation(&root, number)).await.map_err(failed)
    }

    async fn search_messages(&self, search: MessageSearch) -> Result<Found, IndexError> {
        self.blocking(move |inner| inner.search_messages(&search)).await
    }

    async fn search_users(&self, search: UserSearch) -> Result<Found, IndexError> {
        self.blocking(move |inner| inner.search_users(&search)).await
    }

    async fn search_files(&self, search: FileSearch) -> Result<Found, IndexError> {
        self.blocking(move |inner| inner.search_files(&search)).await
    }
}

impl Inner {
    fn apply(&self, changes: Vec<Change>) -> Result<(), IndexError> {
        let (mut messages, mut users, mut files) = (Vec::new(), Vec::new(), Vec::new());
        for change in changes {
            match change {
                Change::Message(_) | Change::RemoveMessage(_) => messages.push(change),
                Change::User(_) => users.push(change),
                Change::File(_) | Change::RemoveFile(_) => files.push(change),
            }
        }
        let (mf, uf, ff) = (self.message_fields, self.user_fields, self.file_fields);
        for (part, batch) in [(&self.messages, messages), (&self.users, users), (&self.files, files)] {
            if batch.is_empty() {
                continue;
            }
            part.write(|writer| {
                for change in batch {
                    let (id, field, document) = match change {
                        Change::Message(doc) => (doc.message_id.clone(), mf.id, Some(message_document(&mf, &doc))),
                        Change::RemoveMessage(id) => (id, mf.id, None),
                        Change::User(doc) => (doc.user_id.clone(), uf.id, Some(user_document(&uf, &doc))),
                        Change::File(doc) => (doc.file_id.clone(), ff.id, Some(file_document(&ff, &doc))),
                        Change::RemoveFile(id) => (id, ff.id, None),
                    };
                    writer.delete_term(Term::from_field_text(field, &id));
                    if let Some(document) = document {
                        writer.add_document(document).map_err(failed)?;
                    }
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    fn search_files(&self, search: &FileSearch) -> Result<Found, IndexError> {
        let f = self.file_fields;
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for clause in &search.query.must {
            let either: Vec<(Occur, Box<dyn Query>)> = vec![
                (Occur::Should, text_query(f.filename, clause)?),
                (Occur::Should, text_query(f.description, clause)?),
            ];
            clauses.push((Occur::Must, Box::new(BooleanQuery::new(either))));
        }
        for clause in &search.query.must_not {
            for field in [f.filename, f.description] {
                clauses.push((Occur::MustNot, text_query(field, clause)?));
            }
        }
        let filter =
            |q: Box<dyn Query>| -> (Occur, Box<dyn Query>) { (Occur::Must, Box::new(ConstScoreQuery::new(q, 0.0))) };
        if search.query.must.is_empty() {
            clauses.push(filter(Box::new(AllQuery)));
        }
        let scopes = search.scopes.iter().map(|s| Term::from_field_text(f.scope, s));
        clauses.push(filter(Box::new(TermSetQuery::new(scopes))));
        let exact = |field: Field, value: &str| -> Box<dyn Query> {
            Box::new(TermQuery::new(Term::from_field_text(field, value), IndexRecordOption::Basic))
        };
        for group in &search.channel_groups {
            let any = group.iter().map(|c| Term::from_field_text(f.channel, c));
            clauses.push(filter(Box::new(TermSetQuery::new(any))));
        }
        for owner in &search.owner_ids {
            clauses.push(filter(exact(f.owner, owner)));
        }
        if let Some(kind) = &search.file_type {
            clauses.push(filter(exact(f.kind, kind)));
        }
        if let Some(range) = time_range(f.key_hi, search.after_ms, search.before_ms) {
            clauses.push(filter(range));
        }
        let searcher = self.files.reader.searcher();
        let collector = TopAfter { order: search.order, after: search.after_key, limit: search.limit, channels: None };
        let (hits, total) = searcher.search(&BooleanQuery::new(clauses), &collector).map_err(failed)?;
        Ok(Found { hits: to_hits(hits), total, stats: None })
    }

    fn search_messages(&self, search: &MessageSearch) -> Result<Found, IndexError> {
        let f = self.message_fields;
        let query = message_query(&f, search)?;
        let searcher = self.messages.reader.searcher();
        let channels: HashSet<u64> = search.channel_ids.iter().map(|c| channel_key(c)).collect();
        let collector = TopAfter {
            order: search.order,
            after: search.after_key,
            limit: search.limit,
            channels: Some(Arc::new(channels)),
        };
        let (pinned, stats) = match (&search.stats, search.order) {
            (_, Order::Newest | Order::Oldest) => (None, None),
            (Some(given), Order::Relevance) => (Some(Pinned::new(given, f.text, &searcher)), None),
            (None, Order::Relevance) => (None, Some(pin(&searcher, f.text, search)?)),
        };
        let (hits, total) = match &pinned {
            Some(p) => searcher.search_with_statistics_provider(&query, &collector, p),
            None => searcher.search(&query, &collector),
        }
        .map_err(failed)?;
        Ok(Found { hits: to_hits(hits), total, stats })
    }

    fn search_users(&self, search: &UserSearch) -> Result<Found, IndexError> {
        let f = self.user_fields;
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for clause in &search.query.must {
            let mut either: Vec<(Occur, Box<dyn Query>)> = Vec::new();
            for field in [f.username, f.display_name] {
                // A whole word ranks above a word it only starts.
                if let Clause::Term(t) = clause {
                    let exact = TermQuery::new(Term::from_field_text(field, t), IndexRecordOption::WithFreqs);
                    either.push((Occur::Should, Box::new(BoostQuery::new(Box::new(exact), 2.0))));
                }
                either.push((Occur::Should, as_you_type(field, clause)?));
            }
            clauses.push((Occur::Must, Box::new(BooleanQuery::new(either))));
        }
        for clause in &search.query.must_not {
            for field in [f.username, f.display_name] {
                clauses.push((Occur::MustNot, text_query(field, clause)?));
            }
        }
        if search.query.must.is_empty() {
            clauses.push((Occur::Must, Box::new(AllQuery)));
        }
        if let Some(ids) = &search.user_ids {
            let terms = ids.iter().map(|id| Term::from_field_text(f.id, id));
            clauses.push((Occur::Must, Box::new(ConstScoreQuery::new(Box::new(TermSetQuery::new(terms)), 0.0))));
        }
        let searcher = self.users.reader.searcher();
        let collector =
            TopAfter { order: Order::Relevance, after: search.after_key, limit: search.limit, channels: None };
        let (hits, total) = searcher.search(&BooleanQuery::new(clauses), &collector).map_err(failed)?;
        Ok(Found { hits: to_hits(hits), total, stats: None })
    }
}

fn to_hits(keys: Vec<SortKey>) -> Vec<Hit> {
    keys.into_iter().map(|key| Hit { id: uuid::Uuid::from_u128(key.id).to_string(), key }).collect()
}

/// A clause whose last word may be only the start of one.
fn as_you_type(field: Field, clause: &Clause) -> Result<Box<dyn Query>, IndexError> {
    let open = match clause {
        Clause::Term(t) => Clause::Prefix(t.clone()),
        Clause::Phrase(ts) => Clause::PhrasePrefix(ts.clone()),
        other => other.clone(),
    };
    text_query(field, &open)
}

fn user_document(f: &UserFields, doc: &UserDoc) -> TantivyDocument {
    let bits = id_bits(&doc.user_id);
    let mut d = TantivyDocument::default();
    d.add_text(f.id, &doc.user_id);
    d.add_u64(f.key_hi, (bits >> 64) as u64);
    d.add_u64(f.key_lo, bits as u64);
    d.add_text(f.username, &doc.username);
    d.add_text(f.display_name, &doc.display_name);
    d
}

fn file_document(f: &FileFields, doc: &FileDoc) -> TantivyDocument {
    let bits = id_bits(&doc.file_id);
    let mut d = TantivyDocument::default();
    d.add_text(f.id, &doc.file_id);
    d.add_u64(f.key_hi, (bits >> 64) as u64);
    d.add_u64(f.key_lo, bits as u64);
    d.add_text(f.owner, &doc.owner_id);
    d.add_text(f.kind, &doc.file_type);
    for scope in &doc.scopes {
        d.add_text(f.scope, scope);
    }
    for channel in &doc.channels {
        d.add_text(f.channel, channel);
    }
    d.add_text(f.filename, &doc.filename);
    d.add_text(f.description, &doc.description);
    d
}

fn message_document(f: &MessageFields, doc: &MessageDoc) -> TantivyDocument {
    let bits = id_bits(&doc.message_id);
    let mut d = TantivyDocument::default();
    d.add_text(f.id, &doc.message_id);
    d.add_u64(f.key_hi, (bits >> 64) as u64);
    d.add_u64(f.key_lo, bits as u64);
    d.add_text(f.channel, &doc.channel_id);
    d.add_u64(f.channel_key, channel_key(&doc.channel_id));
    d.add_text(f.sender, &doc.sender_id);
    if !doc.thread_id.is_empty() {
        d.add_text(f.thread, &doc.thread_id);
        d.add_text(f.flags, "reply");
    }
    if doc.has_file {
        d.add_text(f.flags, "file");
    }
    if doc.has_link() {
        d.add_text(f.flags, "link");
    }
    d.add_text(f.text, &doc.text);
    d
}

/// Text clauses as scoring queries, filters as queries that do not score.
fn message_query(f: &MessageFields, s: &MessageSearch) -> Result<BooleanQuery, IndexError> {
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    for clause in &s.query.must {
        clauses.push((Occur::Must, text_query(f.text, clause)?));
    }
    for clause in &s.query.must_not {
        clauses.push((Occur::MustNot, text_query(f.text, clause)?));
    }
    let filter =
        |q: Box<dyn Query>| -> (Occur, Box<dyn Query>) { (Occur::Must, Box::new(ConstScoreQuery::new(q, 0.0))) };
    if s.query.must.is_empty() {
        clauses.push(filter(Box::new(AllQuery)));
    }
    let exact = |field: Field, value: &str| -> Box<dyn Query> {
        Box::new(TermQuery::new(Term::from_field_text(field, value), IndexRecordOption::Basic))
    };
    for sender in &s.sender_ids {
        clauses.push(filter(exact(f.sender, sender)));
    }
    if let Some(thread) = &s.thread_id {
        clauses.push(filter(exact(f.thread, thread)));
    }
    for (wanted, flag) in [(s.has_file, "file"), (s.has_link, "link"), (s.is_thread, "reply")] {
        if wanted {
            clauses.push(filter(exact(f.flags, flag)));
        }
    }
    if let Some(range) = time_range(f.key_hi, s.after_ms, s.before_ms) {
        clauses.push(filter(range));
    }
    Ok(BooleanQuery::new(clauses))
}

/// Ids made from `after_ms` up to before `before_ms`, by their time half;
/// None when neither is given.
fn time_range(key_hi: Field, after_ms: Option<u64>, before_ms: Option<u64>) -> Option<Box<dyn Query>> {
    if after_ms.is_none() && before_ms.is_none() {
        return None;
    }
    let lower = after_ms.map_or(Bound::Unbounded, |ms| Bound::Included(Term::from_field_u64(key_hi, ms_bound(ms))));
    let upper = before_ms.map_or(Bound::Unbounded, |ms| Bound::Excluded(Term::from_field_u64(key_hi, ms_bound(ms))));
    Some(Box::new(RangeQuery::new(lower, upper)))
}

fn text_query(field: Field, clause: &Clause) -> Result<Box<dyn Query>, IndexError> {
    let term = |t: &String| Term::from_field_text(field, t);
    Ok(match clause {
        Clause::Term(t) => Box::new(TermQuery::new(term(t), IndexRecordOption::WithFreqs)),
        Clause::Prefix(p) => {
            Box::new(RegexQuery::from_pattern(&format!("{}.*", regex_escape(p)), field).map_err(failed)?)
        }
        Clause::Phrase(ts) => Box::new(PhraseQuery::new(ts.iter().map(term).collect())),
        Clause::PhrasePrefix(ts) => Box::new(PhrasePrefixQuery::new(ts.iter().map(term).collect())),
    })
}

/// Terms hold letters and digits only, but a pattern must never be able to
/// mean more than the prefix it was made from.
fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if !c.is_alphanumeric() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The statistics this searcher scores the query's terms with.
fn pin(searcher: &tantivy::Searcher, text: Field, search: &MessageSearch) -> Result<PinnedStats, IndexError> {
    let mut doc_freqs = Vec::new();
    for clause in search.query.must.iter() {
        let (terms, last_is_prefix) = clause.terms();
        let whole = if last_is_prefix { &terms[..terms.len().saturating_sub(1)] } else { terms };
        for t in whole {
            if !doc_freqs.iter().any(|(known, _)| known == t) {
                let freq = searcher.doc_freq(&Term::from_field_text(text, t)).map_err(failed)?;
                doc_freqs.push((t.clone(), freq));
            }
        }
    }
    Ok(PinnedStats {
        docs: searcher.total_num_docs().map_err(failed)?,
        tokens: searcher.total_num_tokens(text).map_err(failed)?,
        doc_freqs,
    })
}

/// Scores with the statistics of a search's first page.
struct Pinned<'a> {
    stats: HashMap<&'a str, u64>,
    docs: u64,
    tokens: u64,
    text: Field,
    searcher: &'a tantivy::Searcher,
}

impl<'a> Pinned<'a> {
    fn new(given: &'a PinnedStats, text: Field, searcher: &'a tantivy::Searcher) -> Self {
        let stats = given.doc_freqs.iter().map(|(t, n)| (t.as_str(), *n)).collect();
        Self { stats, docs: given.docs, tokens: given.tokens, text, searcher }
    }
}

impl Bm25StatisticsProvider for Pinned<'_> {
    fn total_num_tokens(&self, field: Field) -> tantivy::Result<u64> {
        if field == self.text { Ok(self.tokens) } else { self.searcher.total_num_tokens(field) }
    }

    fn total_num_docs(&self) -> tantivy::Result<u64> {
        Ok(self.docs)
    }

    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        let pinned = (term.field() == self.text)
            .then(|| term.value().as_str().and_then(|t| self.stats.get(t).copied()))
            .flatten();
        match pinned {
            Some(freq) => Ok(freq),
            None => self.searcher.doc_freq(term),
        }
    }
}

/// The first `limit` hits after a key, in an order, and how many match in
/// all; reads each hit's id from the fast fields, and with `channels` keeps
/// only the documents of those channels (by `channel_key`).
struct TopAfter {
    order: Order,
    after: Option<SortKey>,
    limit: usize,
    channels: Option<Arc<HashSet<u64>>>,
}

struct SegmentTop {
    order: Order,
    after: Option<SortKey>,
    limit: usize,
    channels: Option<(Arc<HashSet<u64>>, Column<u64>)>,
    hi: Column<u64>,
    lo: Column<u64>,
    keys: Vec<SortKey>,
    /// The worst key kept once `limit` are: anything not better is skipped.
    worst: Option<SortKey>,
    matched: u64,
}

impl Collector for TopAfter {
    type Fruit = (Vec<SortKey>, u64);
    type Child = SegmentTop;

    fn for_segment(&self, _: SegmentOrdinal, segment: &SegmentReader) -> tantivy::Result<SegmentTop> {
        let fast = segment.fast_fields();
        let channels = match &self.channels {
            Some(set) => Some((set.clone(), fast.u64("channel_key")?)),
            None => None,
        };
        Ok(SegmentTop {
            order: self.order,
            after: self.after,
            limit: self.limit,
            channels,
            hi: fast.u64("key_hi")?,
            lo: fast.u64("key_lo")?,
            keys: Vec::new(),
            worst: None,
            matched: 0,
        })
    }

    fn requires_scoring(&self) -> bool {
        self.order == Order::Relevance
    }

    fn merge_fruits(&self, fruits: Vec<(Vec<SortKey>, u64)>) -> tantivy::Result<(Vec<SortKey>, u64)> {
        let matched = fruits.iter().map(|(_, n)| n).sum();
        let mut all: Vec<SortKey> = fruits.into_iter().flat_map(|(keys, _)| keys).collect();
        keep_best(self.order, &mut all, self.limit);
        Ok((all, matched))
    }
}

impl SegmentCollector for SegmentTop {
    type Fruit = (Vec<SortKey>, u64);

    fn collect(&mut self, doc: DocId, score: Score) {
        if let Some((set, column)) = &self.channels
            && !column.first(doc).is_some_and(|key| set.contains(&key))
        {
            return;
        }
        self.matched += 1;
        let hi = self.hi.first(doc).unwrap_or(0);
        let lo = self.lo.first(doc).unwrap_or(0);
        let key = SortKey { score, id: (u128::from(hi) << 64) | u128::from(lo) };
        if let Some(after) = &self.after
            && self.order.compare(&key, after) != Ordering::Greater
        {
            return;
        }
        if let Some(worst) = &self.worst
            && self.order.compare(&key, worst) != Ordering::Less
        {
            return;
        }
        self.keys.push(key);
        if self.keys.len() >= self.limit.saturating_mul(2).max(64) {
            keep_best(self.order, &mut self.keys, self.limit);
            if self.keys.len() == self.limit {
                self.worst = self.keys.last().copied();
            }
        }
    }

    fn harvest(mut self) -> (Vec<SortKey>, u64) {
        keep_best(self.order, &mut self.keys, self.limit);
        (self.keys, self.matched)
    }
}

/// A channel id folded to 64 bits (its UUID's halves, exclusive-or'd).
/// Another channel folding to the same key is no leak: every hit is
/// checked against the caller's conversations again above the index.
fn channel_key(channel_id: &str) -> u64 {
    let bits = id_bits(channel_id);
    ((bits >> 64) as u64) ^ (bits as u64)
}

fn keep_best(order: Order, keys: &mut Vec<SortKey>, limit: usize) {
    keys.sort_unstable_by(|a, b| order.compare(a, b));
    keys.truncate(limit);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::parse;

    fn user(name: &str, display: &str) -> Change {
        Change::User(UserDoc {
            user_id: uuid::Uuid::now_v7().to_string(),
            username: name.into(),
            display_name: display.into(),
        })
    }

    #[tokio::test]
    async fn people_pages_continue_after_the_last_hit() {
        let dir = std::env::temp_dir().join(format!("colink-index-test-{}", uuid::Uuid::now_v7().simple()));
        let index = EmbeddedIndex::open(&dir).expect("opens");
        index
            .apply(vec![user("anna", "Anna"), user("annabel", "Annabel"), user("bob", "Bob Annandale")])
            .await
            .expect("applies");
        let search =
            |after_key| UserSearch { query: parse("ann", false).expect("parses"), user_ids: None, after_key, limit: 2 };
        let first = index.search_users(search(None)).await.expect("searches");
        assert_eq!(first.total, 3);
        let next = index.search_users(search(first.hits.last().map(|h| h.key))).await.expect("searches");
        let mut all: Vec<String> = first.hits.iter().chain(&next.hits).map(|h| h.id.clone()).collect();
        all.dedup();
        assert_eq!(all.len(), 3);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
