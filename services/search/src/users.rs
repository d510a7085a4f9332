//! SearchUsers: people by username and display name, as they are typed.
//! Candidates come from the index; each is read back from the users service
//! as they are now (names, deactivation), and guests find only the people
//! they share a conversation with.

use std::collections::{HashMap, HashSet};

use colink_proto::channels::v1::{ListMembersRequest, ListMyChannelsRequest};
use colink_proto::search::v1::{SearchUserHit, SearchUsersRequest, SearchUsersResponse};
use colink_proto::users::v1::{BatchGetUsersRequest, User};
use colink_runtime::clients::call_on_behalf;
use colink_runtime::error::Violations;
use colink_runtime::ids::{check_text, decode_page_token, encode_page_token};
use colink_runtime::{Caller, Error, Result, Role};
use serde::{Deserialize, Serialize};
use tantivy::tokenizer::TextAnalyzer;

use crate::Shared;
use crate::analysis::index_analyzer;
use crate::index::{SortKey, UserSearch};
use crate::matcher::Analyzed;
use crate::query::{self, Clause, Parsed};

const MAX_ROUNDS: usize = 5;

#[derive(Debug, Serialize, Deserialize)]
struct Token {
    query: String,
    include_deactivated: bool,
    after: SortKey,
}

impl Shared {
    pub(crate) async fn search_users(&self, caller: &Caller, req: &SearchUsersRequest) -> Result<SearchUsersResponse> {
        let mut v = Violations::default();
        let (raw, field) = match (req.query.is_empty(), req.q.is_empty()) {
            (false, false) if req.query != req.q => {
                v.add("q", "give the query as query or as q, not both");
                ("", "query")
            }
            (true, false) => (req.q.as_str(), "q"),
            _ => (req.query.as_str(), "query"),
        };
        let raw = raw.trim_start().trim_start_matches('@');
        v.check(check_text(field, raw, 1, 100));
        let size = if req.page_size == 0 { req.limit } else { req.page_size };
        if req.page_size != 0 && req.limit != 0 && req.page_size != req.limit {
            v.add("limit", "give the page size as page_size or as limit, not both");
        }
        let size_field = if req.page_size == 0 && req.limit != 0 { "limit" } else { "page_size" };
        let page_size = v.check(colink_runtime::ids::page_size(size_field, size, 50, 100)).unwrap_or(50) as usize;
        let parsed = query::parse(raw, false).unwrap_or_default();
        if v.is_empty() && parsed.must.is_empty() {
            v.add(field, "has no letters or digits to search by");
        }
        let token = match v.check(decode_page_token("page_token", &req.page_token)).flatten() {
            None => None,
            Some(text) => match serde_json::from_str::<Token>(&text) {
                Ok(t) if t.query == raw && t.include_deactivated == req.include_deactivated => Some(t),
                Ok(_) => {
                    v.add("page_token", "belongs to a different search; start again without it");
                    None
                }
                Err(_) => {
                    v.add("page_token", "is not a valid page token");
                    None
                }
            },
        };
        v.finish()?;
        if req.include_deactivated && caller.role != Role::Admin {
            return Err(Error::denied("only admins may find deactivated accounts"));
        }
        let user_ids = if caller.role == Role::Guest { Some(self.people_met(caller).await?) } else { None };
        let mut search =
            UserSearch { query: parsed.clone(), user_ids, after_key: token.as_ref().map(|t| t.after), limit: 0 };
        let wanted = page_size + 1;
        let mut analyzer = index_analyzer();
        let mut hits: Vec<(SearchUserHit, SortKey)> = Vec::new();
        let mut total = 0;
        for round in 0..MAX_ROUNDS {
            search.limit = wanted - hits.len() + 10;
            let found = self.index.search_users(search.clone()).await.map_err(|e| Error::Unavailable(e.to_string()))?;
            if round == 0 {
                total = found.total;
            }
            let exhausted = found.hits.len() < search.limit;
            let Some(last) = found.hits.last() else { break };
            search.after_key = Some(last.key);
            let ids: Vec<String> = found.hits.iter().map(|h| h.id.clone()).collect();
            let current = self.current_users(caller, &ids).await?;
            for hit in found.hits {
                let Some(user) = current.get(&hit.id) else { continue };
                if user.deactivated && !req.include_deactivated {
                    continue;
                }
                if let Some(shown) = verify(&mut analyzer, &parsed, user, hit.key.score) {
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
        let more = hits.len() > page_size;
        hits.truncate(page_size);
        let next_page_token = match (more, hits.last()) {
            (true, Some((_, key))) => {
                let token = Token { query: raw.to_string(), include_deactivated: req.include_deactivated, after: *key };
                encode_page_token(&serde_json::to_string(&token).map_err(Error::internal)?)
            }
            _ => String::new(),
        };
        Ok(SearchUsersResponse {
            hits: hits.into_iter().map(|(h, _)| h).collect(),
            total_estimate: i64::try_from(total).unwrap_or(i64::MAX),
            next_page_token,
        })
    }

    /// Everyone in the caller's conversations, the caller included.
    async fn people_met(&self, caller: &Caller) -> Result<Vec<String>> {
        let mut people: HashSet<String> = HashSet::from([caller.user_id.clone()]);
        let mut page_token = String::new();
        loop {
            let request =
                ListMyChannelsRequest { include_archived: true, page_size: 200, page_token, ..Default::default() };
            let page =
                call_on_behalf(&self.channels, caller, request, |mut c, r| async move { c.list_my_channels(r).await })
                    .await?;
            for channel in &page.channels {
                if !channel.participant_ids.is_empty() {
                    people.extend(channel.participant_ids.iter().cloned());
                    continue;
                }
                let mut members_token = String::new();
                loop {
                    let request = ListMembersRequest {
                        channel_id: channel.channel_id.clone(),
                        page_size: 1000,
                        page_token: members_token,
                    };
                    let members =
                        call_on_behalf(
                            &self.channels,
                            caller,
                            request,
                            |mut c, r| async move { c.list_members(r).await },
                        )
                        .await?;
                    people.extend(members.members.into_iter().map(|m| m.user_id));
                    if members.next_page_token.is_empty() {
                        break;
                    }
                    members_token = members.next_page_token;
                }
            }
            if page.next_page_token.is_empty() {
                return Ok(people.into_iter().collect());
            }
            page_token = page.next_page_token;
        }
    }

    async fn current_users(&self, caller: &Caller, ids: &[String]) -> Result<HashMap<String, User>> {
        let mut out = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(100) {
            let request = BatchGetUsersRequest { user_ids: chunk.to_vec(), ..Default::default() };
            let found =
                call_on_behalf(&self.users, caller, request, |mut c, r| async move { c.batch_get_users(r).await })
                    .await?;
            out.extend(found.users.into_iter().map(|u| (u.user_id.clone(), u)));
        }
        Ok(out)
    }
}

/// The hit as shown, when the person's names now still match.
fn verify(analyzer: &mut TextAnalyzer, parsed: &Parsed, user: &User, score: f32) -> Option<SearchUserHit> {
    let open = as_typed(parsed);
    let username = Analyzed::new(analyzer, &user.username);
    let display_name = Analyzed::new(analyzer, &user.display_name);
    let each = |clause: &Clause| {
        let one = Parsed { must: vec![clause.clone()], ..Parsed::default() };
        username.satisfies(&one) || display_name.satisfies(&one)
    };
    if !open.must.iter().all(each) || open.must_not.iter().any(each) {
        return None;
    }
    let highlights =
        [username.highlight("username", &open), display_name.highlight("display_name", &open)].into_iter().flatten();
    Some(SearchUserHit {
        user_id: user.user_id.clone(),
        username: user.username.clone(),
        display_name: user.display_name.clone(),
        avatar_url: user.avatar_url.clone(),
        deactivated: user.deactivated,
        highlights: highlights.collect(),
        score,
    })
}

/// Words match as prefixes too: people are searched as they are typed.
fn as_typed(parsed: &Parsed) -> Parsed {
    let open = |c: &Clause| match c {
        Clause::Term(t) => Clause::Prefix(t.clone()),
        Clause::Phrase(ts) => Clause::PhrasePrefix(ts.clone()),
        other => other.clone(),
    };
    Parsed { must: parsed.must.iter().map(open).collect(), must_not: parsed.must_not.clone(), ..parsed.clone() }
}
