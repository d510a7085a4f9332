//! SearchMessages: the caller's conversations from the channels service, the
//! candidates from the index, and each candidate read back from the
//! messaging service as it is now, so that nothing the caller may not read,
//! nothing deleted and no old text is ever returned.

use std::collections::{HashMap, HashSet};

use colink_proto::channels::v1::{Channel, GetChannelRequest, ListMyChannelsRequest};
use colink_proto::messaging::v1::{BatchGetMessagesRequest, Message};
use colink_proto::search::v1::{SearchMessageHit, SearchMessagesRequest, SearchMessagesResponse};
use colink_proto::users::v1::BatchGetUsersRequest;
use colink_runtime::clients::call_on_behalf;
use colink_runtime::error::Violations;
use colink_runtime::ids::{check_text, encode_page_token, now_micros, parse_optional_id};
use colink_runtime::{Caller, Error, Result};
use serde::{Deserialize, Serialize};

use crate::Shared;
use crate::index::{MessageSearch, Order, PinnedStats, SortKey, has_link};
use crate::matcher;
use crate::query::{self, Parsed};
use crate::request;

/// Hits one search pages through at most.
const MAX_HITS: u64 = 1_000;
/// Rounds of candidates one page reads at most, when many are dropped.
const MAX_ROUNDS: usize = 5;
/// The start of a hit's text shown as its snippet, in characters.
const SNIPPET_CHARS: usize = 300;

/// Where a page ended, and what the next one must keep the same.
#[derive(Debug, Serialize, Deserialize)]
struct Token {
    /// The request, without its page fields.
    fingerprint: u64,
    /// Messages sent after the first page was asked for are left out.
    as_of_ms: u64,
    after: SortKey,
    served: u64,
    stats: Option<PinnedStats>,
}

/// A validated request.
struct Asked {
    parsed: Parsed,
    channel_id: Option<String>,
    from_user_id: Option<String>,
    thread_id: Option<String>,
    after_us: Option<i64>,
    before_us: Option<i64>,
    order: Order,
    page_size: u64,
    token: Option<Token>,
    fingerprint: u64,
    /// Messages sent from this millisecond on are left out, on every page.
    as_of_ms: u64,
}

impl Shared {
    pub(crate) async fn search_messages(
        &self,
        caller: &Caller,
        req: &SearchMessagesRequest,
    ) -> Result<SearchMessagesResponse> {
        let asked = validate(req)?;
        let Some(search) = self.scope(caller, &asked).await? else {
            return Ok(SearchMessagesResponse::default());
        };
        self.page(caller, &asked, search).await
    }

    /// The index search the request asks for, limited to the caller's
    /// conversations; None when no conversation is left.
    async fn scope(&self, caller: &Caller, asked: &Asked) -> Result<Option<MessageSearch>> {
        let mine = self.my_channels(caller).await?;
        let mut channel_ids: Vec<String> = mine.iter().map(|c| c.channel_id.clone()).collect();
        if let Some(wanted) = &asked.channel_id {
            self.require_member(caller, &mine, wanted).await?;
            channel_ids.retain(|c| c == wanted);
        }
        for name in &asked.parsed.filters.in_channels {
            let named = named_channels(&mine, name)?;
            channel_ids.retain(|c| named.contains(c.as_str()));
        }
        if channel_ids.is_empty() {
            return Ok(None);
        }
        let mut sender_ids: Vec<String> = asked.from_user_id.iter().cloned().collect();
        sender_ids.extend(self.user_ids(caller, &asked.parsed.filters.from_usernames).await?);
        sender_ids.sort();
        sender_ids.dedup();
        let filters = &asked.parsed.filters;
        let after_ms = asked.after_us.map(ms);
        let before_ms = Some(asked.before_us.map_or(asked.as_of_ms, |b| ms(b).min(asked.as_of_ms)));
        Ok(Some(MessageSearch {
            query: asked.parsed.clone(),
            channel_ids,
            sender_ids,
            thread_id: asked.thread_id.clone(),
            has_file: filters.has_file,
            has_link: filters.has_link,
            is_thread: filters.is_thread,
            after_ms,
            before_ms,
            order: asked.order,
            after_key: asked.token.as_ref().map(|t| t.after),
            limit: 0,
            stats: asked.token.as_ref().and_then(|t| t.stats.clone()),
        }))
    }

    /// Reads candidates until a page of hits that pass the check is full.
    async fn page(&self, caller: &Caller, asked: &Asked, mut search: MessageSearch) -> Result<SearchMessagesResponse> {
        let served = asked.token.as_ref().map_or(0, |t| t.served);
        let room = MAX_HITS.saturating_sub(served);
        // One more than the page, to know whether another page follows.
        let wanted = usize::try_from(asked.page_size.min(room) + 1).unwrap_or(1);
        let mut hits: Vec<(SearchMessageHit, SortKey)> = Vec::new();
        let mut total = 0;
        let mut stats = search.stats.clone();
        for round in 0..MAX_ROUNDS {
            // A few more than needed: some may be dropped by the check.
            search.limit = wanted - hits.len() + 10;
            let found =
                self.index.search_messages(search.clone()).await.map_err(|e| Error::Unavailable(e.to_string()))?;
            if round == 0 {
                total = found.total;
                if stats.is_none() {
                    stats = found.stats.clone();
                    search.stats = found.stats;
                }
            }
            let exhausted = found.hits.len() < search.limit;
            let Some(last) = found.hits.last() else { break };
            search.after_key = Some(last.key);
            let ids: Vec<String> = found.hits.iter().map(|h| h.id.clone()).collect();
            let current = self.current_messages(caller, &ids).await?;
            for hit in found.hits {
                let Some(message) = current.get(&hit.id) else { continue };
                if let Some(shown) = verify(asked, &search, message, hit.key) {
                    hits.push((shown, hit.key));
                    if hits.len() == wanted {
                        break;
                    }
                }
            }
            if hits.len() == wanted || exhausted {
                break;
            }
        }
        let page_size = usize::try_from(asked.page_size.min(room)).unwrap_or(0);
        let more = hits.len() > page_size && served + (page_size as u64) < MAX_HITS;
        hits.truncate(page_size);
        let next_page_token = match (more, hits.last()) {
            (true, Some((_, key))) => {
                let token = Token {
                    fingerprint: asked.fingerprint,
                    as_of_ms: asked.as_of_ms,
                    after: *key,
                    served: served + hits.len() as u64,
                    stats,
                };
                encode_page_token(&serde_json::to_string(&token).map_err(Error::internal)?)
            }
            _ => String::new(),
        };
        Ok(SearchMessagesResponse {
            hits: hits.into_iter().map(|(h, _)| h).collect(),
            total_estimate: i64::try_from(total).unwrap_or(i64::MAX),
            next_page_token,
        })
    }

    /// Nothing when the caller is in conversation `wanted` (one of `mine`);
    /// else NOT_FOUND when they cannot see it at all, PERMISSION_DENIED when
    /// they can.
    pub(crate) async fn require_member(&self, caller: &Caller, mine: &[Channel], wanted: &str) -> Result<()> {
        if mine.iter().any(|c| c.channel_id == wanted) {
            return Ok(());
        }
        let request = GetChannelRequest { channel_id: wanted.to_string() };
        call_on_behalf(&self.channels, caller, request, |mut c, r| async move { c.get_channel(r).await }).await?;
        Err(Error::denied(format!("you are not a member of channel {wanted}")))
    }

    /// Every conversation the caller is in, archived ones too.
    pub(crate) async fn my_channels(&self, caller: &Caller) -> Result<Vec<Channel>> {
        let mut all = Vec::new();
        let mut page_token = String::new();
        loop {
            let request =
                ListMyChannelsRequest { include_archived: true, page_size: 200, page_token, ..Default::default() };
            let page =
                call_on_behalf(&self.channels, caller, request, |mut c, r| async move { c.list_my_channels(r).await })
                    .await?;
            all.extend(page.channels);
            if page.next_page_token.is_empty() {
                return Ok(all);
            }
            page_token = page.next_page_token;
        }
    }

    /// The ids of users named in `from:` filters.
    pub(crate) async fn user_ids(&self, caller: &Caller, usernames: &[String]) -> Result<Vec<String>> {
        if usernames.is_empty() {
            return Ok(Vec::new());
        }
        let request = BatchGetUsersRequest { usernames: usernames.to_vec(), ..Default::default() };
        let found =
            call_on_behalf(&self.users, caller, request, |mut c, r| async move { c.batch_get_users(r).await }).await?;
        let mut ids = Vec::new();
        for name in usernames {
            match found.users.iter().find(|u| u.username.to_lowercase() == *name) {
                Some(user) => ids.push(user.user_id.clone()),
                None => return Err(Error::invalid("query", format!("from:@{name}: there is no such user"))),
            }
        }
        Ok(ids)
    }

    /// The candidates as the messaging service has them now, by id; those
    /// the caller cannot read are missing.
    async fn current_messages(&self, caller: &Caller, ids: &[String]) -> Result<HashMap<String, Message>> {
        let asks = ids.chunks(100).map(|chunk| {
            let request = BatchGetMessagesRequest { message_ids: chunk.to_vec() };
            call_on_behalf(&self.messaging, caller, request, |mut c, r| async move { c.batch_get_messages(r).await })
        });
        let mut out = HashMap::with_capacity(ids.len());
        for found in futures_util::future::join_all(asks).await {
            out.extend(found?.messages.into_iter().map(|m| (m.message_id.clone(), m)));
        }
        Ok(out)
    }
}

/// The ids of the caller's conversations an `in:#name` filter names;
/// INVALID_ARGUMENT on `query` when there is none.
pub(crate) fn named_channels<'a>(mine: &'a [Channel], name: &str) -> Result<HashSet<&'a str>> {
    let named: HashSet<&str> =
        mine.iter().filter(|c| c.name.to_lowercase() == *name).map(|c| c.channel_id.as_str()).collect();
    if named.is_empty() {
        return Err(Error::invalid("query", format!("in:#{name}: you are in no channel of that name")));
    }
    Ok(named)
}

/// The hit as shown, when the message as it is now still passes the search.
fn verify(asked: &Asked, search: &MessageSearch, m: &Message, key: SortKey) -> Option<SearchMessageHit> {
    if m.deleted || m.recalled || !search.channel_ids.contains(&m.channel_id) {
        return None;
    }
    if search.sender_ids.iter().any(|s| *s != m.sender_id)
        || (search.has_file && m.file_ids.is_empty())
        || (search.has_link && !has_link(&m.text))
        || (search.is_thread && m.thread_id.is_empty())
        || search.thread_id.as_ref().is_some_and(|t| *t != m.thread_id)
    {
        return None;
    }
    let highlight = matcher::check(&m.text, "text", &asked.parsed)?;
    Some(SearchMessageHit {
        message_id: m.message_id.clone(),
        channel_id: m.channel_id.clone(),
        thread_id: m.thread_id.clone(),
        sender_id: m.sender_id.clone(),
        snippet: m.text.chars().take(SNIPPET_CHARS).collect(),
        highlights: highlight.into_iter().collect(),
        create_time: m.create_time,
        has_files: !m.file_ids.is_empty(),
        score: if asked.order == Order::Relevance { key.score } else { 0.0 },
    })
}

pub(crate) fn ms(micros: i64) -> u64 {
    u64::try_from(micros.div_euclid(1_000)).unwrap_or(0)
}

/// Checks a request and parses its query.
fn validate(req: &SearchMessagesRequest) -> Result<Asked> {
    let mut v = Violations::default();
    let (raw, query_field) = request::query_text(&mut v, &req.query, &req.q);
    v.check(check_text(query_field, raw, 1, 500));
    let page_size = request::page_size(&mut v, req.page_size, req.limit);
    let channel_id = v.check(parse_optional_id("channel_id", &req.channel_id)).flatten();
    let from_user_id = v.check(parse_optional_id("from_user_id", &req.from_user_id)).flatten();
    let thread_id = v.check(parse_optional_id("thread_id", &req.thread_id)).flatten();
    let order = request::order(&mut v, req.order);
    let mut parsed = match query::parse(raw, true) {
        Ok(parsed) => parsed,
        Err(err) => {
            v.add(query_field, err.0);
            Parsed::default()
        }
    };
    parsed.filters.has_file |= req.has_file;
    parsed.filters.has_link |= req.has_link;
    parsed.filters.is_thread |= req.is_thread;
    let (after_us, before_us) = request::dates(&mut v, req.after.as_ref(), req.before.as_ref(), &parsed.filters);
    let nothing_asked = parsed.is_empty() && channel_id.is_none() && from_user_id.is_none() && thread_id.is_none();
    if v.is_empty() && nothing_asked {
        v.add(query_field, "has no words or filters to search by");
    }
    let fingerprint = fingerprint(req);
    let token = request::page_token(&mut v, &req.page_token, |t: &Token| t.fingerprint == fingerprint);
    v.finish()?;
    let as_of_ms = token.as_ref().map_or_else(|| ms(now_micros()), |t| t.as_of_ms);
    Ok(Asked {
        parsed,
        channel_id,
        from_user_id,
        thread_id,
        after_us,
        before_us,
        order,
        page_size,
        token,
        fingerprint,
        as_of_ms,
    })
}

/// Identifies a search across its pages: the request without its paging.
fn fingerprint(req: &SearchMessagesRequest) -> u64 {
    request::fingerprint(&SearchMessagesRequest {
        page_token: String::new(),
        page_size: 0,
        limit: 0,
        query: if req.query.is_empty() { req.q.clone() } else { req.query.clone() },
        q: String::new(),
        ..req.clone()
    })
}
