//! SearchFiles: files by name and description. The index narrows the
//! search to files the caller's scopes reach (their own, shared with them,
//! of their conversations, of the workspace); each candidate is then read
//! back from the files service on the caller's behalf, which shows only
//! what the caller may see now, confirmed, and clean or unscanned.

use std::collections::HashMap;

use colink_proto::files::v1::{BatchGetFilesRequest, File, FileType};
use colink_proto::search::v1::{SearchFileHit, SearchFilesRequest, SearchFilesResponse};
use colink_runtime::clients::call_on_behalf;
use colink_runtime::error::Violations;
use colink_runtime::ids::{check_text, encode_page_token, micros_of, parse_optional_id};
use colink_runtime::{Caller, Error, Result, Role};
use serde::{Deserialize, Serialize};

use crate::Shared;
use crate::index::{FileDoc, FileSearch, Order, SortKey};
use crate::matcher;
use crate::messages::{ms, named_channels};
use crate::query::{self, Parsed};
use crate::request;

/// Hits one search pages through at most.
const MAX_HITS: u64 = 1_000;

#[derive(Debug, Serialize, Deserialize)]
struct Token {
    /// The request, without its page fields.
    fingerprint: u64,
    after: SortKey,
    served: u64,
}

/// A validated request.
struct Asked {
    parsed: Parsed,
    channel_id: Option<String>,
    owner_id: Option<String>,
    file_type: Option<FileType>,
    after_us: Option<i64>,
    before_us: Option<i64>,
    order: Order,
    page_size: u64,
    token: Option<Token>,
}

impl Shared {
    pub(crate) async fn search_files(&self, caller: &Caller, req: &SearchFilesRequest) -> Result<SearchFilesResponse> {
        let asked = validate(req)?;
        let mine = self.my_channels(caller).await?;
        let mut channel_groups: Vec<Vec<String>> = Vec::new();
        if let Some(wanted) = &asked.channel_id {
            self.require_member(caller, &mine, wanted).await?;
            channel_groups.push(vec![wanted.clone()]);
        }
        for name in &asked.parsed.filters.in_channels {
            let mut named: Vec<String> = named_channels(&mine, name)?.into_iter().map(str::to_string).collect();
            named.sort();
            channel_groups.push(named);
        }
        let mut owner_ids: Vec<String> = asked.owner_id.iter().cloned().collect();
        owner_ids.extend(self.user_ids(caller, &asked.parsed.filters.from_usernames).await?);
        owner_ids.sort();
        owner_ids.dedup();
        let my_ids: Vec<String> = mine.iter().map(|c| c.channel_id.clone()).collect();
        let search = FileSearch {
            query: asked.parsed.clone(),
            scopes: FileDoc::scopes_of(&caller.user_id, &my_ids, caller.role == Role::Guest),
            channel_groups,
            owner_ids,
            file_type: asked.file_type.map(kind_name),
            after_ms: asked.after_us.map(ms),
            before_ms: asked.before_us.map(ms),
            order: asked.order,
            after_key: None,
            limit: 0,
        };
        let served = asked.token.as_ref().map_or(0, |t| t.served);
        let room = MAX_HITS.saturating_sub(served);
        let page_size = usize::try_from(asked.page_size.min(room)).unwrap_or(0);
        let (mut hits, total) = request::gather(
            page_size + 1,
            asked.token.as_ref().map(|t| t.after),
            |after_key, limit| self.index.search_files(FileSearch { after_key, limit, ..search.clone() }),
            |found| {
                let (asked, search) = (&asked, &search);
                async move {
                    let ids: Vec<String> = found.iter().map(|h| h.id.clone()).collect();
                    let current = self.current_files(caller, &ids).await?;
                    Ok(found
                        .into_iter()
                        .filter_map(|hit| {
                            let file = current.get(&hit.id)?;
                            verify(asked, search, file, hit.key).map(|shown| (shown, hit.key))
                        })
                        .collect())
                }
            },
        )
        .await?;
        let more = hits.len() > page_size && served + (page_size as u64) < MAX_HITS;
        hits.truncate(page_size);
        let next_page_token = match (more, hits.last()) {
            (true, Some((_, key))) => {
                let token = Token { fingerprint: fingerprint(req), after: *key, served: served + hits.len() as u64 };
                encode_page_token(&serde_json::to_string(&token).map_err(Error::internal)?)
            }
            _ => String::new(),
        };
        Ok(SearchFilesResponse {
            hits: hits.into_iter().map(|(h, _)| h).collect(),
            total_estimate: i64::try_from(total).unwrap_or(i64::MAX),
            next_page_token,
        })
    }

    /// The candidates as the files service shows them to the caller now, by
    /// id; those the caller may not see are missing.
    async fn current_files(&self, caller: &Caller, ids: &[String]) -> Result<HashMap<String, File>> {
        let asks = ids.chunks(100).map(|chunk| {
            let request = BatchGetFilesRequest { file_ids: chunk.to_vec() };
            call_on_behalf(&self.files, caller, request, |mut c, r| async move { c.batch_get_files(r).await })
        });
        let mut out = HashMap::with_capacity(ids.len());
        for found in futures_util::future::join_all(asks).await {
            out.extend(found?.files.into_iter().map(|f| (f.file_id.clone(), f)));
        }
        Ok(out)
    }
}

/// A kind of file as the index keeps it ("image", ...).
pub(crate) fn kind_name(kind: FileType) -> String {
    kind.as_str_name().trim_start_matches("FILE_TYPE_").to_ascii_lowercase()
}

/// The hit as shown, when the file as it is now still passes the search.
fn verify(asked: &Asked, search: &FileSearch, f: &File, key: SortKey) -> Option<SearchFileHit> {
    let created_us = f.create_time.as_ref().map(micros_of).unwrap_or_default();
    if search.owner_ids.iter().any(|o| *o != f.owner_id)
        || asked.file_type.is_some_and(|k| k as i32 != f.file_type)
        || asked.after_us.is_some_and(|after| created_us < after)
        || asked.before_us.is_some_and(|before| created_us >= before)
    {
        return None;
    }
    let fields = [("filename", f.filename.as_str()), ("description", f.description.as_str())];
    let highlights = matcher::check_fields(&fields, &asked.parsed)?;
    Some(SearchFileHit {
        file_id: f.file_id.clone(),
        filename: f.filename.clone(),
        mime_type: f.mime_type.clone(),
        file_type: f.file_type,
        size_bytes: f.size_bytes,
        owner_id: f.owner_id.clone(),
        channel_id: f.channel_id.clone(),
        create_time: f.create_time,
        highlights,
        score: if asked.order == Order::Relevance { key.score } else { 0.0 },
    })
}

/// Checks a request and parses its query.
fn validate(req: &SearchFilesRequest) -> Result<Asked> {
    let mut v = Violations::default();
    let (raw, query_field) = request::query_text(&mut v, &req.query, &req.q);
    v.check(check_text(query_field, raw, 1, 500));
    let page_size = request::page_size(&mut v, req.page_size, req.limit);
    let channel_id = v.check(parse_optional_id("channel_id", &req.channel_id)).flatten();
    let owner_id = v.check(parse_optional_id("owner_id", &req.owner_id)).flatten();
    let file_type = match FileType::try_from(req.file_type) {
        Ok(FileType::Unspecified) => None,
        Ok(kind) => Some(kind),
        Err(_) => {
            v.add("file_type", "is not a known file type");
            None
        }
    };
    let order = request::order(&mut v, req.order);
    let parsed = match query::parse(raw, true) {
        Ok(parsed) => parsed,
        Err(err) => {
            v.add(query_field, err.0);
            Parsed::default()
        }
    };
    let filters = &parsed.filters;
    if filters.has_file || filters.has_link || filters.is_thread {
        v.add(query_field, "has:file, has:link and is:thread are filters of messages, not of files");
    }
    let (after_us, before_us) = request::dates(&mut v, req.after.as_ref(), req.before.as_ref(), filters);
    let nothing_asked = parsed.is_empty() && channel_id.is_none() && owner_id.is_none() && file_type.is_none();
    if v.is_empty() && nothing_asked {
        v.add(query_field, "has no words or filters to search by");
    }
    let fingerprint = fingerprint(req);
    let token = request::page_token(&mut v, &req.page_token, |t: &Token| t.fingerprint == fingerprint);
    v.finish()?;
    Ok(Asked { parsed, channel_id, owner_id, file_type, after_us, before_us, order, page_size, token })
}

/// Identifies a search across its pages: the request without its paging.
fn fingerprint(req: &SearchFilesRequest) -> u64 {
    request::fingerprint(&SearchFilesRequest {
        page_token: String::new(),
        page_size: 0,
        limit: 0,
        query: if req.query.is_empty() { req.q.clone() } else { req.query.clone() },
        q: String::new(),
        ..req.clone()
    })
}
