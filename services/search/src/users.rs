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
use colink_runtime::ids::{check_text, encode_page_token};
use colink_runtime::{Caller, Error, Result, Role};
use serde::{Deserialize, Serialize};

use crate::Shared;
use crate::index::{SortKey, UserSearch};
use crate::matcher;
use crate::query::{self, Clause, Parsed};
use crate::request;

#[derive(Debug, Serialize, Deserialize)]
struct Token {
    query: String,
    include_deactivated: bool,
    after: SortKey,
}

impl Shared {
    pub(crate) async fn search_users(&self, caller: &Caller, req: &SearchUsersRequest) -> Result<SearchUsersResponse> {
        let mut v = Violations::default();
        let (raw, field) = request::query_text(&mut v, &req.query, &req.q);
        let raw = raw.trim_start().trim_start_matches('@');
        v.check(check_text(field, raw, 1, 100));
        let page_size = request::page_size(&mut v, req.page_size, req.limit) as usize;
        let parsed = query::parse(raw, false).unwrap_or_default();
        if v.is_empty() && parsed.must.is_empty() {
            v.add(field, "has no letters or digits to search by");
        }
        let token = request::page_token(&mut v, &req.page_token, |t: &Token| {
            t.query == raw && t.include_deactivated == req.include_deactivated
        });
        v.finish()?;
        if req.include_deactivated && caller.role != Role::Admin {
            return Err(Error::denied("only admins may find deactivated accounts"));
        }
        let user_ids = if caller.role == Role::Guest { Some(self.people_met(caller).await?) } else { None };
        let search = UserSearch { query: parsed.clone(), user_ids, after_key: None, limit: 0 };
        let open = as_typed(&parsed);
        let (mut hits, total) = request::gather(
            page_size + 1,
            token.as_ref().map(|t| t.after),
            |after_key, limit| self.index.search_users(UserSearch { after_key, limit, ..search.clone() }),
            |found| {
                let open = &open;
                async move {
                    let ids: Vec<String> = found.iter().map(|h| h.id.clone()).collect();
                    let current = self.current_users(caller, &ids).await?;
                    Ok(found
                        .into_iter()
                        .filter_map(|hit| {
                            let user = current.get(&hit.id).filter(|u| req.include_deactivated || !u.deactivated)?;
                            verify(open, user, hit.key.score).map(|shown| (shown, hit.key))
                        })
                        .collect())
                }
            },
        )
        .await?;
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

/// The hit as shown, when the person's names now still match (`open`: the
/// query as typed so far).
fn verify(open: &Parsed, user: &User, score: f32) -> Option<SearchUserHit> {
    let highlights =
        matcher::check_fields(&[("username", &user.username), ("display_name", &user.display_name)], open)?;
    Some(SearchUserHit {
        user_id: user.user_id.clone(),
        username: user.username.clone(),
        display_name: user.display_name.clone(),
        avatar_url: user.avatar_url.clone(),
        deactivated: user.deactivated,
        highlights,
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
