//! What the searches have in common in checking a request: the query and
//! the page size under either of their names, the order, and page tokens.

use colink_proto::search::v1::SearchOrder;
use colink_runtime::error::Violations;
use std::hash::{Hash, Hasher};

use colink_runtime::ids::{decode_page_token, micros_of};
use colink_runtime::{Error, Result};
use serde::de::DeserializeOwned;

use crate::index::{Hit, IndexError, Order, SortKey};

/// The query, given as `query` or as `q` (the REST name of earlier
/// versions), and the name it came under.
pub(crate) fn query_text<'a>(v: &mut Violations, query: &'a str, q: &'a str) -> (&'a str, &'static str) {
    match (query.is_empty(), q.is_empty()) {
        (false, false) if query != q => {
            v.add("q", "give the query as query or as q, not both");
            ("", "query")
        }
        (true, false) => (q, "q"),
        _ => (query, "query"),
    }
}

/// The page size, given as `page_size` or as `limit`: 1..=100, 50 when
/// neither is given.
pub(crate) fn page_size(v: &mut Violations, page_size: i32, limit: i32) -> u64 {
    let size = match (page_size, limit) {
        (0, limit) => limit,
        (size, 0) => size,
        (size, limit) if size == limit => size,
        _ => {
            v.add("limit", "give the page size as page_size or as limit, not both");
            0
        }
    };
    let field = if page_size == 0 && limit != 0 { "limit" } else { "page_size" };
    v.check(colink_runtime::ids::page_size(field, size, 50, 100)).unwrap_or(50)
}

pub(crate) fn order(v: &mut Violations, raw: i32) -> Order {
    match SearchOrder::try_from(raw) {
        Ok(SearchOrder::Unspecified | SearchOrder::Relevance) => Order::Relevance,
        Ok(SearchOrder::Newest) => Order::Newest,
        Ok(SearchOrder::Oldest) => Order::Oldest,
        Err(_) => {
            v.add("order", "is not a known order");
            Order::Relevance
        }
    }
}

/// A page token of this search; one of another search, or not a token at
/// all, is named as `page_token`.
pub(crate) fn page_token<T: DeserializeOwned>(v: &mut Violations, raw: &str, ours: impl Fn(&T) -> bool) -> Option<T> {
    let text = v.check(decode_page_token("page_token", raw)).flatten()?;
    match serde_json::from_str::<T>(&text) {
        Ok(token) if ours(&token) => Some(token),
        Ok(_) => {
            v.add("page_token", "belongs to a different search; start again without it");
            None
        }
        Err(_) => {
            v.add("page_token", "is not a valid page token");
            None
        }
    }
}

/// Rounds of candidates one page reads at most, when many are dropped.
const MAX_ROUNDS: usize = 5;

/// Reads candidates from the index round by round, after `after`, until
/// `wanted` of them pass `keep` (which checks a batch with the service that
/// owns them and returns the hits that pass, in order) or the index has no
/// more; returns those and the index's count of matches.
pub(crate) async fn gather<T, Found, Kept>(
    wanted: usize,
    mut after: Option<SortKey>,
    mut search: impl FnMut(Option<SortKey>, usize) -> Found,
    mut keep: impl FnMut(Vec<Hit>) -> Kept,
) -> Result<(Vec<(T, SortKey)>, u64)>
where
    Found: Future<Output = std::result::Result<crate::index::Found, IndexError>>,
    Kept: Future<Output = Result<Vec<(T, SortKey)>>>,
{
    let mut hits = Vec::new();
    let mut total = 0;
    for round in 0..MAX_ROUNDS {
        // A few more than needed: some may be dropped by the check.
        let limit = wanted - hits.len() + 10;
        let found = search(after, limit).await.map_err(|e| Error::Unavailable(e.to_string()))?;
        if round == 0 {
            total = found.total;
        }
        let exhausted = found.hits.len() < limit;
        let Some(last) = found.hits.last() else { break };
        after = Some(last.key);
        for kept in keep(found.hits).await? {
            hits.push(kept);
            if hits.len() == wanted {
                return Ok((hits, total));
            }
        }
        if exhausted {
            break;
        }
    }
    Ok((hits, total))
}

/// The dates a search keeps to, from the request's fields and the query's
/// filters together (the later `after`, the earlier `before`), in
/// microseconds; fields that contradict each other are named.
pub(crate) fn dates(
    v: &mut Violations,
    after: Option<&prost_types::Timestamp>,
    before: Option<&prost_types::Timestamp>,
    filters: &crate::query::Filters,
) -> (Option<i64>, Option<i64>) {
    let after_us = [after.map(micros_of), filters.after].into_iter().flatten().max();
    let before_us = [before.map(micros_of), filters.before].into_iter().flatten().min();
    if let (Some(after), Some(before)) = (after, before)
        && micros_of(after) >= micros_of(before)
    {
        v.add("after", "must be earlier than before");
    }
    (after_us, before_us)
}

/// Identifies a search across its pages: `unpaged` is the request with its
/// paging fields cleared.
pub(crate) fn fingerprint(unpaged: &impl prost::Message) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    unpaged.encode_to_vec().hash(&mut hasher);
    hasher.finish()
}
