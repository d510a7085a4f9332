//! The distributed index: Elasticsearch or OpenSearch, reached with the
//! `elasticsearch` crate over HTTP. Each kind of document has a versioned
//! index (`colink-messages-1`, ...) behind an alias (`colink-messages`)
//! that reads and writes go through, so a rebuilt index can replace the
//! old one in one atomic alias change. Mappings are explicit (`dynamic:
//! strict`); changes go in bulk requests.
//!
//! The analysis mirrors the embedded index's as far as the server's
//! built-in analyzers allow: the standard tokenizer, full-width folding,
//! lower case, ASCII folding, and CJK bigrams (with unigrams when indexing,
//! without when searching). The tokenizers differ in details (the standard
//! one keeps `v2.1` as one token where the embedded index sees `v2` and
//! `1`); since every candidate is checked again against the text as it is
//! now, such a difference can only make a hit missing, never wrong.
//!
//! The request bodies and the reading of answers are plain functions,
//! tested against the documented JSON; the client only carries them.

use elasticsearch::http::request::JsonBody;
use elasticsearch::http::transport::Transport;
use elasticsearch::indices::{IndicesCreateParts, IndicesDeleteParts, IndicesExistsAliasParts, IndicesGetAliasParts};
use elasticsearch::{BulkParts, Elasticsearch, SearchParts};
use serde_json::{Value, json};

use crate::index::{
    Change, FileSearch, Found, Hit, IndexError, MessageSearch, Order, SearchIndex, SortKey, UserSearch, has_link,
    id_bits,
};
use crate::query::Clause;

/// The kinds of document, each with an alias of its own.
const MESSAGES: &str = "messages";
const USERS: &str = "users";
const FILES: &str = "files";
const KINDS: [&str; 3] = [MESSAGES, USERS, FILES];

/// The index (or alias) each kind of document is written to.
#[derive(Debug, Clone, Copy)]
pub struct Targets<'a> {
    pub messages: &'a str,
    pub users: &'a str,
    pub files: &'a str,
}

/// An Elasticsearch or OpenSearch cluster.
pub struct ElasticIndex {
    client: Elasticsearch,
    prefix: String,
    /// The indices of a rebuild in progress.
    building: tokio::sync::Mutex<Option<Vec<Swap>>>,
}

/// One alias moving from the index it names to a rebuilt one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swap {
    pub alias: String,
    pub old: String,
    pub new: String,
}

fn unavailable(err: impl std::fmt::Display) -> IndexError {
    IndexError::Unavailable(err.to_string())
}

impl ElasticIndex {
    /// Connects, and creates the indices and aliases that do not exist
    /// yet. `prefix` starts every index and alias name.
    pub async fn open(url: &str, prefix: &str) -> Result<Self, IndexError> {
        let transport = Transport::single_node(url).map_err(unavailable)?;
        let index = Self {
            client: Elasticsearch::new(transport),
            prefix: prefix.to_string(),
            building: tokio::sync::Mutex::new(None),
        };
        for kind in KINDS {
            index.ensure(kind).await?;
        }
        Ok(index)
    }

    fn alias(&self, kind: &str) -> String {
        format!("{}-{kind}", self.prefix)
    }

    /// Creates `<alias>-1` with its mapping and points the alias at it,
    /// unless the alias exists.
    async fn ensure(&self, kind: &str) -> Result<(), IndexError> {
        let alias = self.alias(kind);
        let exists = self
            .client
            .indices()
            .exists_alias(IndicesExistsAliasParts::Name(&[&alias]))
            .send()
            .await
            .map_err(unavailable)?;
        if exists.status_code().is_success() {
            return Ok(());
        }
        let name = format!("{alias}-1");
        self.create(&name, kind, true).await?;
        let actions = json!({ "actions": [ { "add": { "index": name, "alias": alias, "is_write_index": true } } ] });
        self.update_aliases(actions).await
    }

    /// Creates an index of `kind`; one that exists is an error unless
    /// `may_exist` (another node may have created it a moment before).
    async fn create(&self, name: &str, kind: &str, may_exist: bool) -> Result<(), IndexError> {
        let created = self
            .client
            .indices()
            .create(IndicesCreateParts::Index(name))
            .body(index_definition(kind))
            .send()
            .await
            .map_err(unavailable)?;
        let status = created.status_code();
        let answer: Value = created.json().await.map_err(unavailable)?;
        let taken = answer.pointer("/error/type").and_then(Value::as_str) == Some("resource_already_exists_exception");
        let created = status.is_success() || (taken && may_exist);
        if !created {
            return Err(IndexError::Failed(format!("creating {name}: {answer}")));
        }
        Ok(())
    }

    /// Deletes indices; ones that do not exist are no error.
    async fn delete(&self, names: &[&str]) -> Result<(), IndexError> {
        let response = self
            .client
            .indices()
            .delete(IndicesDeleteParts::Index(names))
            .ignore_unavailable(true)
            .send()
            .await
            .map_err(unavailable)?;
        if !response.status_code().is_success() {
            let answer = response.text().await.unwrap_or_default();
            return Err(IndexError::Failed(format!("deleting {names:?}: {answer}")));
        }
        Ok(())
    }

    async fn update_aliases(&self, actions: Value) -> Result<(), IndexError> {
        let response =
            self.client.indices().update_aliases().body(actions.clone()).send().await.map_err(unavailable)?;
        if !response.status_code().is_success() {
            let answer = response.text().await.unwrap_or_default();
            return Err(IndexError::Failed(format!("changing aliases {actions}: {answer}")));
        }
        Ok(())
    }

    /// The index an alias names now.
    async fn target(&self, alias: &str) -> Result<String, IndexError> {
        let response =
            self.client.indices().get_alias(IndicesGetAliasParts::Name(&[alias])).send().await.map_err(unavailable)?;
        let answer: Value = response.json().await.map_err(unavailable)?;
        alias_target(&answer, alias)
    }

    async fn bulk(&self, changes: &[Change], targets: Targets<'_>) -> Result<(), IndexError> {
        if changes.is_empty() {
            return Ok(());
        }
        let lines = bulk_lines(changes, targets);
        let body: Vec<JsonBody<Value>> = lines.into_iter().map(JsonBody::from).collect();
        let response = self.client.bulk(BulkParts::None).body(body).send().await.map_err(unavailable)?;
        let status = response.status_code();
        let answer: Value = response.json().await.map_err(unavailable)?;
        if !status.is_success() {
            return Err(IndexError::Failed(format!("bulk: {answer}")));
        }
        bulk_outcome(&answer)
    }

    async fn search(&self, kind: &str, body: Value) -> Result<Value, IndexError> {
        let alias = self.alias(kind);
        let response =
            self.client.search(SearchParts::Index(&[&alias])).body(body).send().await.map_err(unavailable)?;
        let status = response.status_code();
        let answer: Value = response.json().await.map_err(unavailable)?;
        if !status.is_success() {
            return Err(IndexError::Failed(format!("search in {alias}: {answer}")));
        }
        Ok(answer)
    }
}

#[async_trait::async_trait]
impl SearchIndex for ElasticIndex {
    async fn apply(&self, changes: Vec<Change>) -> Result<(), IndexError> {
        let (messages, users, files) = (self.alias(MESSAGES), self.alias(USERS), self.alias(FILES));
        self.bulk(&changes, Targets { messages: &messages, users: &users, files: &files }).await
    }

    async fn begin_rebuild(&self) -> Result<(), IndexError> {
        self.abandon_rebuild().await?;
        let mut swaps = Vec::new();
        for kind in KINDS {
            let alias = self.alias(kind);
            let old = self.target(&alias).await?;
            let new = next_generation(&old, &alias);
            // Left by a rebuild a stop interrupted.
            self.delete(&[&new]).await?;
            self.create(&new, kind, false).await?;
            swaps.push(Swap { alias, old, new });
        }
        *self.building.lock().await = Some(swaps);
        Ok(())
    }

    async fn apply_rebuilt(&self, changes: Vec<Change>) -> Result<(), IndexError> {
        let building = self.building.lock().await.clone();
        let Some([messages, users, files]) = building.as_deref() else {
            return Err(IndexError::Failed("no rebuild is in progress".into()));
        };
        self.bulk(&changes, Targets { messages: &messages.new, users: &users.new, files: &files.new }).await
    }

    async fn finish_rebuild(&self) -> Result<(), IndexError> {
        let Some(swaps) = self.building.lock().await.take() else {
            return Err(IndexError::Failed("no rebuild is in progress".into()));
        };
        self.update_aliases(swap_actions(&swaps)).await?;
        let old: Vec<&str> = swaps.iter().map(|s| s.old.as_str()).collect();
        self.delete(&old).await
    }

    async fn abandon_rebuild(&self) -> Result<(), IndexError> {
        let Some(swaps) = self.building.lock().await.take() else { return Ok(()) };
        let new: Vec<&str> = swaps.iter().map(|s| s.new.as_str()).collect();
        self.delete(&new).await
    }

    async fn search_messages(&self, search: MessageSearch) -> Result<Found, IndexError> {
        let answer = self.search(MESSAGES, message_query(&search)).await?;
        read_hits(&answer, search.order)
    }

    async fn search_users(&self, search: UserSearch) -> Result<Found, IndexError> {
        let answer = self.search(USERS, user_query(&search)).await?;
        read_hits(&answer, Order::Relevance)
    }

    async fn search_files(&self, search: FileSearch) -> Result<Found, IndexError> {
        let answer = self.search(FILES, file_query(&search)).await?;
        read_hits(&answer, search.order)
    }
}

/// The index a get-alias answer (`{ "<index>": { "aliases": { "<alias>":
/// {...} } } }`) names for `alias`: its write index when it names several.
pub fn alias_target(answer: &Value, alias: &str) -> Result<String, IndexError> {
    let indices = answer.as_object().ok_or_else(|| IndexError::Failed(format!("alias {alias}: {answer}")))?;
    let mut named: Vec<(&String, bool)> = indices
        .iter()
        .filter_map(|(index, body)| {
            let entry = body.pointer(&format!("/aliases/{alias}"))?;
            Some((index, entry.get("is_write_index").and_then(Value::as_bool).unwrap_or(false)))
        })
        .collect();
    named.sort_by_key(|(_, writes)| !writes);
    named
        .first()
        .map(|(index, _)| (*index).clone())
        .ok_or_else(|| IndexError::Failed(format!("alias {alias}: {answer}")))
}

/// The name of the generation after `index` (`<alias>-<n>`).
pub fn next_generation(index: &str, alias: &str) -> String {
    let number = index.strip_prefix(alias).and_then(|n| n.strip_prefix('-')).and_then(|n| n.parse::<u64>().ok());
    format!("{alias}-{}", number.unwrap_or(0) + 1)
}

/// One alias change moving every alias to its rebuilt index: searches see
/// either all the old indices or all the new ones.
pub fn swap_actions(swaps: &[Swap]) -> Value {
    let mut actions = Vec::new();
    for s in swaps {
        actions.push(json!({ "remove": { "index": s.old, "alias": s.alias } }));
        actions.push(json!({ "add": { "index": s.new, "alias": s.alias, "is_write_index": true } }));
    }
    json!({ "actions": actions })
}

/// The settings and explicit mapping of an index of `kind`.
pub fn index_definition(kind: &str) -> Value {
    let analysis = json!({
        "filter": {
            "colink_bigrams_indexed": { "type": "cjk_bigram", "output_unigrams": true },
            "colink_bigrams_searched": { "type": "cjk_bigram", "output_unigrams": false }
        },
        "analyzer": {
            "colink_indexed": {
                "type": "custom",
                "tokenizer": "standard",
                "filter": ["cjk_width", "lowercase", "asciifolding", "colink_bigrams_indexed"]
            },
            "colink_searched": {
                "type": "custom",
                "tokenizer": "standard",
                "filter": ["cjk_width", "lowercase", "asciifolding", "colink_bigrams_searched"]
            }
        }
    });
    let text = json!({ "type": "text", "analyzer": "colink_indexed", "search_analyzer": "colink_searched" });
    let properties = if kind == USERS {
        json!({
            "id": { "type": "keyword" },
            "username": text,
            "display_name": text
        })
    } else if kind == FILES {
        json!({
            "id": { "type": "keyword" },
            "created_ms": { "type": "long" },
            "owner": { "type": "keyword" },
            "kind": { "type": "keyword" },
            "scope": { "type": "keyword" },
            "channel": { "type": "keyword" },
            "filename": text,
            "description": text
        })
    } else {
        json!({
            "id": { "type": "keyword" },
            "sent_ms": { "type": "long" },
            "channel": { "type": "keyword" },
            "sender": { "type": "keyword" },
            "thread": { "type": "keyword" },
            "flags": { "type": "keyword" },
            "text": text
        })
    };
    json!({
        "settings": { "analysis": analysis },
        "mappings": { "dynamic": "strict", "_source": { "enabled": true }, "properties": properties }
    })
}

/// The lines of a bulk request: an action, then the document for writes.
pub fn bulk_lines(changes: &[Change], targets: Targets<'_>) -> Vec<Value> {
    let Targets { messages, users, files } = targets;
    let mut lines = Vec::with_capacity(changes.len() * 2);
    for change in changes {
        match change {
            Change::Message(m) => {
                let mut flags = Vec::new();
                if !m.thread_id.is_empty() {
                    flags.push("reply");
                }
                if m.has_file {
                    flags.push("file");
                }
                if has_link(&m.text) {
                    flags.push("link");
                }
                lines.push(json!({ "index": { "_index": messages, "_id": m.message_id } }));
                lines.push(json!({
                    "id": m.message_id,
                    "sent_ms": sent_ms(&m.message_id),
                    "channel": m.channel_id,
                    "sender": m.sender_id,
                    "thread": m.thread_id,
                    "flags": flags,
                    "text": m.text
                }));
            }
            Change::RemoveMessage(id) => lines.push(json!({ "delete": { "_index": messages, "_id": id } })),
            Change::User(u) => {
                lines.push(json!({ "index": { "_index": users, "_id": u.user_id } }));
                lines.push(json!({ "id": u.user_id, "username": u.username, "display_name": u.display_name }));
            }
            Change::File(f) => {
                lines.push(json!({ "index": { "_index": files, "_id": f.file_id } }));
                lines.push(json!({
                    "id": f.file_id,
                    "created_ms": sent_ms(&f.file_id),
                    "owner": f.owner_id,
                    "kind": f.file_type,
                    "scope": f.scopes,
                    "channel": f.channels,
                    "filename": f.filename,
                    "description": f.description
                }));
            }
            Change::RemoveFile(id) => lines.push(json!({ "delete": { "_index": files, "_id": id } })),
        }
    }
    lines
}

/// The milliseconds a UUIDv7 starts with.
fn sent_ms(id: &str) -> u64 {
    (id_bits(id) >> 80) as u64
}

/// Whether a bulk answer reports a failed item; removing what is not there
/// is not a failure.
pub fn bulk_outcome(answer: &Value) -> Result<(), IndexError> {
    if answer.get("errors").and_then(Value::as_bool) != Some(true) {
        return Ok(());
    }
    let items = answer.get("items").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    for item in items {
        let Some((action, outcome)) = item.as_object().and_then(|o| o.iter().next()) else { continue };
        let status = outcome.get("status").and_then(Value::as_u64).unwrap_or(0);
        if status >= 300 && !(action == "delete" && status == 404) {
            let reason = outcome.get("error").cloned().unwrap_or(Value::Null);
            return Err(IndexError::Failed(format!("bulk {action} of {}: {status} {reason}", outcome["_id"])));
        }
    }
    Ok(())
}

/// A clause as a query on `field`. The clause holds analyzed terms: joined
/// by spaces they analyze the same again (CJK bigrams stay bigrams).
fn clause_query(field: &str, clause: &Clause) -> Value {
    match clause {
        Clause::Term(t) => json!({ "match": { field: { "query": t } } }),
        Clause::Prefix(p) => json!({ "prefix": { field: { "value": p } } }),
        Clause::Phrase(ts) => json!({ "match_phrase": { field: { "query": ts.join(" ") } } }),
        Clause::PhrasePrefix(ts) => json!({ "match_phrase_prefix": { field: { "query": ts.join(" ") } } }),
    }
}

/// The search body of a message search.
pub fn message_query(s: &MessageSearch) -> Value {
    let must: Vec<Value> = s.query.must.iter().map(|c| clause_query("text", c)).collect();
    let must_not: Vec<Value> = s.query.must_not.iter().map(|c| clause_query("text", c)).collect();
    let mut filter = vec![json!({ "terms": { "channel": s.channel_ids } })];
    for sender in &s.sender_ids {
        filter.push(json!({ "term": { "sender": sender } }));
    }
    if let Some(thread) = &s.thread_id {
        filter.push(json!({ "term": { "thread": thread } }));
    }
    for (wanted, flag) in [(s.has_file, "file"), (s.has_link, "link"), (s.is_thread, "reply")] {
        if wanted {
            filter.push(json!({ "term": { "flags": flag } }));
        }
    }
    if let Some(range) = ms_range(s.after_ms, s.before_ms) {
        filter.push(json!({ "range": { "sent_ms": range } }));
    }
    let page = Page { order: s.order, limit: s.limit, after: s.after_key };
    search_body(json!({ "must": must, "must_not": must_not, "filter": filter }), page)
}

/// The search body of a file search: every clause in the name or the
/// description, among the files of the caller's scopes.
pub fn file_query(s: &FileSearch) -> Value {
    let either =
        |c: &Clause| json!({ "bool": { "should": [clause_query("filename", c), clause_query("description", c)] } });
    let must: Vec<Value> = s.query.must.iter().map(either).collect();
    let must_not: Vec<Value> = s.query.must_not.iter().map(either).collect();
    let mut filter = vec![json!({ "terms": { "scope": s.scopes } })];
    for group in &s.channel_groups {
        filter.push(json!({ "terms": { "channel": group } }));
    }
    for owner in &s.owner_ids {
        filter.push(json!({ "term": { "owner": owner } }));
    }
    if let Some(kind) = &s.file_type {
        filter.push(json!({ "term": { "kind": kind } }));
    }
    if let Some(range) = ms_range(s.after_ms, s.before_ms) {
        filter.push(json!({ "range": { "created_ms": range } }));
    }
    let page = Page { order: s.order, limit: s.limit, after: s.after_key };
    search_body(json!({ "must": must, "must_not": must_not, "filter": filter }), page)
}

/// Where a page of hits starts and how it is ordered.
struct Page {
    order: Order,
    limit: usize,
    after: Option<SortKey>,
}

/// A search body: a bool query, sorted, ids only, continuing after `page.after`.
fn search_body(bool_query: Value, page: Page) -> Value {
    let sort = match page.order {
        Order::Relevance => json!([{ "_score": "desc" }, { "id": "desc" }]),
        Order::Newest => json!([{ "id": "desc" }]),
        Order::Oldest => json!([{ "id": "asc" }]),
    };
    let mut body = json!({
        "query": { "bool": bool_query },
        "sort": sort,
        "size": page.limit,
        "track_total_hits": true,
        "_source": false
    });
    if let Some(after) = &page.after {
        let id = uuid::Uuid::from_u128(after.id).to_string();
        body["search_after"] = match page.order {
            Order::Relevance => json!([after.score, id]),
            _ => json!([id]),
        };
    }
    body
}

/// A range from `after_ms` (included) to `before_ms` (excluded).
fn ms_range(after_ms: Option<u64>, before_ms: Option<u64>) -> Option<Value> {
    if after_ms.is_none() && before_ms.is_none() {
        return None;
    }
    let mut range = serde_json::Map::new();
    if let Some(ms) = after_ms {
        range.insert("gte".into(), json!(ms));
    }
    if let Some(ms) = before_ms {
        range.insert("lt".into(), json!(ms));
    }
    Some(Value::Object(range))
}

/// The search body of a search of people: every clause in either name, a
/// whole word counting more than a word it starts.
pub fn user_query(s: &UserSearch) -> Value {
    let must: Vec<Value> = s
        .query
        .must
        .iter()
        .map(|clause| {
            let mut either = Vec::new();
            for field in ["username", "display_name"] {
                if let Clause::Term(t) = clause {
                    either.push(json!({ "match": { field: { "query": t, "boost": 2.0 } } }));
                    either.push(json!({ "prefix": { field: { "value": t } } }));
                } else {
                    let open = match clause {
                        Clause::Phrase(ts) => Clause::PhrasePrefix(ts.clone()),
                        other => other.clone(),
                    };
                    either.push(clause_query(field, &open));
                }
            }
            json!({ "bool": { "should": either, "minimum_should_match": 1 } })
        })
        .collect();
    let mut filter = Vec::new();
    if let Some(ids) = &s.user_ids {
        filter.push(json!({ "terms": { "id": ids } }));
    }
    let page = Page { order: Order::Relevance, limit: s.limit, after: s.after_key };
    search_body(json!({ "must": must, "filter": filter }), page)
}

/// The hits of a search answer, with the keys to continue after them.
pub fn read_hits(answer: &Value, order: Order) -> Result<Found, IndexError> {
    let malformed = |what: &str| IndexError::Failed(format!("search answer without {what}: {answer}"));
    let hits = answer.pointer("/hits/hits").and_then(Value::as_array).ok_or_else(|| malformed("hits.hits"))?;
    let total = answer.pointer("/hits/total/value").and_then(Value::as_u64).unwrap_or(hits.len() as u64);
    let mut found = Vec::with_capacity(hits.len());
    for hit in hits {
        let id = hit.get("_id").and_then(Value::as_str).ok_or_else(|| malformed("_id"))?;
        let score = match order {
            Order::Relevance => hit
                .pointer("/sort/0")
                .and_then(Value::as_f64)
                .or_else(|| hit.get("_score").and_then(Value::as_f64))
                .unwrap_or(0.0) as f32,
            _ => 0.0,
        };
        found.push(Hit { id: id.to_string(), key: SortKey { score, id: id_bits(id) } });
    }
    Ok(Found { hits: found, total, stats: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{FileDoc, MessageDoc, UserDoc};
    use crate::query::parse;

    const ID: &str = "019ad5a0-0000-7000-8000-000000000001";

    fn search(query: &str) -> MessageSearch {
        MessageSearch {
            query: parse(query, true).expect("parses"),
            channel_ids: vec!["c1".into(), "c2".into()],
            sender_ids: vec!["u1".into()],
            thread_id: None,
            has_file: true,
            has_link: false,
            is_thread: false,
            after_ms: Some(1_000),
            before_ms: Some(2_000),
            order: Order::Relevance,
            after_key: None,
            limit: 21,
            stats: None,
        }
    }

    #[test]
    fn a_message_search_is_one_bool_query_with_filters_that_do_not_score() {
        let body = message_query(&search(r#"deploy* "release notes" -draft 東京都"#));
        assert_eq!(
            body["query"]["bool"]["must"],
            json!([
                { "prefix": { "text": { "value": "deploy" } } },
                { "match_phrase": { "text": { "query": "release notes" } } },
                { "match_phrase": { "text": { "query": "東京 京都" } } }
            ])
        );
        assert_eq!(body["query"]["bool"]["must_not"], json!([{ "match": { "text": { "query": "draft" } } }]));
        assert_eq!(
            body["query"]["bool"]["filter"],
            json!([
                { "terms": { "channel": ["c1", "c2"] } },
                { "term": { "sender": "u1" } },
                { "term": { "flags": "file" } },
                { "range": { "sent_ms": { "gte": 1000, "lt": 2000 } } }
            ])
        );
        assert_eq!(body["sort"], json!([{ "_score": "desc" }, { "id": "desc" }]));
        assert_eq!((body["size"].clone(), body["_source"].clone()), (json!(21), json!(false)));
        assert!(body.get("search_after").is_none());
    }

    #[test]
    fn later_pages_continue_after_the_last_key() {
        let mut s = search("x");
        s.after_key = Some(SortKey { score: 1.5, id: id_bits(ID) });
        assert_eq!(message_query(&s)["search_after"], json!([1.5, ID]));
        s.order = Order::Oldest;
        let body = message_query(&s);
        assert_eq!((body["sort"].clone(), body["search_after"].clone()), (json!([{ "id": "asc" }]), json!([ID])));
    }

    #[test]
    fn bulk_lines_pair_actions_with_documents() {
        let changes = vec![
            Change::Message(MessageDoc {
                message_id: ID.into(),
                channel_id: "c1".into(),
                sender_id: "u1".into(),
                thread_id: "t1".into(),
                text: "see https://example.com".into(),
                has_file: false,
            }),
            Change::RemoveMessage("m2".into()),
            Change::User(UserDoc { user_id: "u1".into(), username: "ann".into(), display_name: "Ann".into() }),
            Change::File(FileDoc {
                file_id: ID.into(),
                owner_id: "u1".into(),
                filename: "Q3 budget.xlsx".into(),
                description: String::new(),
                file_type: "document".into(),
                scopes: vec!["u:u1".into(), "c:c1".into()],
                channels: vec!["c1".into()],
            }),
            Change::RemoveFile("f2".into()),
        ];
        let targets = Targets { messages: "colink-messages", users: "colink-users", files: "colink-files" };
        let lines = bulk_lines(&changes, targets);
        assert_eq!(
            lines,
            vec![
                json!({ "index": { "_index": "colink-messages", "_id": ID } }),
                json!({
                    "id": ID, "sent_ms": 0x019a_d5a0_0000_u64, "channel": "c1", "sender": "u1", "thread": "t1",
                    "flags": ["reply", "link"], "text": "see https://example.com"
                }),
                json!({ "delete": { "_index": "colink-messages", "_id": "m2" } }),
                json!({ "index": { "_index": "colink-users", "_id": "u1" } }),
                json!({ "id": "u1", "username": "ann", "display_name": "Ann" }),
                json!({ "index": { "_index": "colink-files", "_id": ID } }),
                json!({
                    "id": ID, "created_ms": 0x019a_d5a0_0000_u64, "owner": "u1", "kind": "document",
                    "scope": ["u:u1", "c:c1"], "channel": ["c1"], "filename": "Q3 budget.xlsx", "description": ""
                }),
                json!({ "delete": { "_index": "colink-files", "_id": "f2" } }),
            ]
        );
    }

    // The shape of a bulk answer as the Elasticsearch and OpenSearch
    // references document it.
    #[test]
    fn a_bulk_answer_fails_on_a_failed_item_but_not_on_removing_what_is_gone() {
        let ok = json!({ "took": 30, "errors": false, "items": [ { "index": { "_id": "1", "status": 201 } } ] });
        assert!(bulk_outcome(&ok).is_ok());
        let gone = json!({ "took": 3, "errors": true, "items": [
            { "delete": { "_index": "i", "_id": "2", "status": 404, "result": "not_found" } }
        ] });
        assert!(bulk_outcome(&gone).is_ok());
        let failed = json!({ "took": 3, "errors": true, "items": [
            { "index": { "_id": "1", "status": 201 } },
            { "index": { "_index": "i", "_id": "3", "status": 400,
                "error": { "type": "strict_dynamic_mapping_exception", "reason": "mapping set to strict" } } }
        ] });
        let err = bulk_outcome(&failed).expect_err("a failed item").to_string();
        assert!(err.contains("strict_dynamic_mapping_exception") && err.contains("\"3\""), "{err}");
    }

    // A search answer as documented, with `sort` values on each hit.
    #[test]
    fn a_search_answer_gives_ids_keys_and_the_total() {
        let answer = json!({
            "took": 5, "timed_out": false,
            "_shards": { "total": 1, "successful": 1, "skipped": 0, "failed": 0 },
            "hits": {
                "total": { "value": 2, "relation": "eq" },
                "max_score": 1.3,
                "hits": [
                    { "_index": "colink-messages-1", "_id": ID, "_score": 1.3, "sort": [1.3, ID] },
                    { "_index": "colink-messages-1", "_id": "019ad5a0-0000-7000-8000-000000000000", "_score": 0.2,
                      "sort": [0.2, "019ad5a0-0000-7000-8000-000000000000"] }
                ]
            }
        });
        let found = read_hits(&answer, Order::Relevance).expect("reads");
        assert_eq!(found.total, 2);
        assert_eq!(found.hits[0].id, ID);
        assert_eq!(found.hits[0].key, SortKey { score: 1.3, id: id_bits(ID) });
        let by_date = read_hits(&answer, Order::Newest).expect("reads");
        assert_eq!(by_date.hits[1].key.score, 0.0);
        assert!(read_hits(&json!({ "error": "x" }), Order::Newest).is_err());
    }

    #[test]
    fn the_mapping_is_strict_and_analyzes_alike_for_both_kinds() {
        let messages = index_definition(MESSAGES);
        assert_eq!(messages["mappings"]["dynamic"], "strict");
        assert_eq!(messages["mappings"]["properties"]["text"]["search_analyzer"], "colink_searched");
        let filters = &messages["settings"]["analysis"]["analyzer"]["colink_indexed"]["filter"];
        assert_eq!(filters, &json!(["cjk_width", "lowercase", "asciifolding", "colink_bigrams_indexed"]));
        let users = index_definition(USERS);
        assert_eq!(users["mappings"]["properties"]["username"]["analyzer"], "colink_indexed");
    }

    // A get-alias answer as documented; during a swap an alias may name two.
    #[test]
    fn a_rebuild_moves_every_alias_to_the_next_generation_at_once() {
        let one = json!({ "colink-messages-3": { "aliases": { "colink-messages": {} } } });
        assert_eq!(alias_target(&one, "colink-messages").expect("named"), "colink-messages-3");
        let two = json!({
            "colink-messages-3": { "aliases": { "colink-messages": { "is_write_index": false } } },
            "colink-messages-4": { "aliases": { "colink-messages": { "is_write_index": true } } }
        });
        assert_eq!(alias_target(&two, "colink-messages").expect("named"), "colink-messages-4");
        assert!(alias_target(&json!({}), "colink-messages").is_err());
        assert_eq!(next_generation("colink-messages-3", "colink-messages"), "colink-messages-4");
        assert_eq!(next_generation("something-else", "colink-messages"), "colink-messages-1");
        let swaps = [
            Swap { alias: "a-messages".into(), old: "a-messages-1".into(), new: "a-messages-2".into() },
            Swap { alias: "a-users".into(), old: "a-users-4".into(), new: "a-users-5".into() },
        ];
        assert_eq!(
            swap_actions(&swaps),
            json!({ "actions": [
                { "remove": { "index": "a-messages-1", "alias": "a-messages" } },
                { "add": { "index": "a-messages-2", "alias": "a-messages", "is_write_index": true } },
                { "remove": { "index": "a-users-4", "alias": "a-users" } },
                { "add": { "index": "a-users-5", "alias": "a-users", "is_write_index": true } }
            ] })
        );
    }

    #[test]
    fn a_file_search_matches_name_or_description_within_the_callers_scopes() {
        let s = FileSearch {
            query: parse("budget -draft", true).expect("parses"),
            scopes: vec!["u:ann".into(), "c:c1".into(), "w".into()],
            channel_groups: vec![vec!["c1".into()]],
            owner_ids: vec!["bob".into()],
            file_type: Some("document".into()),
            after_ms: None,
            before_ms: Some(2_000),
            order: Order::Newest,
            after_key: Some(SortKey { score: 0.0, id: id_bits(ID) }),
            limit: 11,
        };
        let body = file_query(&s);
        let either = |field_query: Value, other: Value| json!({ "bool": { "should": [field_query, other] } });
        assert_eq!(
            body["query"]["bool"]["must"],
            json!([either(
                json!({ "match": { "filename": { "query": "budget" } } }),
                json!({ "match": { "description": { "query": "budget" } } })
            )])
        );
        assert_eq!(
            body["query"]["bool"]["must_not"][0]["bool"]["should"][1],
            json!({ "match": { "description": { "query": "draft" } } })
        );
        assert_eq!(
            body["query"]["bool"]["filter"],
            json!([
                { "terms": { "scope": ["u:ann", "c:c1", "w"] } },
                { "terms": { "channel": ["c1"] } },
                { "term": { "owner": "bob" } },
                { "term": { "kind": "document" } },
                { "range": { "created_ms": { "lt": 2000 } } }
            ])
        );
        assert_eq!((body["sort"].clone(), body["search_after"].clone()), (json!([{ "id": "desc" }]), json!([ID])));
        let files = index_definition(FILES);
        assert_eq!(files["mappings"]["properties"]["scope"], json!({ "type": "keyword" }));
        assert_eq!(files["mappings"]["properties"]["filename"]["analyzer"], "colink_indexed");
    }

    #[test]
    fn a_people_search_matches_either_name() {
        let s = UserSearch { query: parse("ann", false).expect("parses"), user_ids: None, after_key: None, limit: 5 };
        let body = user_query(&s);
        let should = &body["query"]["bool"]["must"][0]["bool"]["should"];
        assert_eq!(should.as_array().map(Vec::len), Some(4));
        assert_eq!(should[1], json!({ "prefix": { "username": { "value": "ann" } } }));
    }
}
