//! Ending sessions, everywhere at once. A session ends when its user signs
//! out, revokes it, changes their password (all but the current one) or is
//! deactivated, and when a spent refresh token comes back. Its refresh
//! tokens stop at once (they are checked against the table); its access
//! tokens stop because every node asks `CheckSession` before it trusts a
//! token, and forgets the answer when the ended session is announced on
//! pub/sub.

use bytes::Bytes;
use colink_proto::auth::v1 as pb;
use colink_runtime::ids::now_micros;
use colink_runtime::pubsub::{Frame, SESSIONS_ENDED_TOPIC};
use colink_runtime::token::{self, TokenError};
use colink_runtime::{Error, Result};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};

use crate::AuthService;
use crate::store::{credential, session};

/// Which of a user's live sessions to end.
pub(crate) enum Which<'a> {
    All,
    Only(&'a str),
    AllBut(&'a str),
}

impl AuthService {
    /// Ends sessions of a user inside `conn` and returns their ids; the
    /// caller announces them with `announce_ended` once committed.
    pub(crate) async fn end_sessions<C: ConnectionTrait>(
        &self,
        conn: &C,
        user_id: &str,
        which: Which<'_>,
    ) -> Result<Vec<String>> {
        let mut live = session::Entity::find()
            .select_only()
            .column(session::Column::SessionId)
            .filter(session::Column::UserId.eq(user_id))
            .filter(session::Column::RevokedAt.is_null());
        live = match which {
            Which::All => live,
            Which::Only(id) => live.filter(session::Column::SessionId.eq(id)),
            Which::AllBut(id) => live.filter(session::Column::SessionId.ne(id)),
        };
        let ids: Vec<String> = live.into_tuple().all(conn).await?;
        if ids.is_empty() {
            return Ok(ids);
        }
        session::Entity::update_many()
            .col_expr(session::Column::RevokedAt, Expr::value(now_micros()))
            .filter(session::Column::SessionId.is_in(ids.iter().map(String::as_str)))
            .filter(session::Column::RevokedAt.is_null())
            .exec(conn)
            .await?;
        Ok(ids)
    }

    /// Tells every node that these sessions ended: they forget the tokens
    /// they trusted and close the sessions' streams. Best-effort like all
    /// pub/sub; a node that missed it checks every token again when its
    /// broker connection comes back.
    pub(crate) async fn announce_ended(&self, session_ids: &[String]) {
        if session_ids.is_empty() {
            return;
        }
        let body = Bytes::from(session_ids.join("\n"));
        self.pubsub.publish(SESSIONS_ENDED_TOPIC, Frame::Event(body).encode()).await;
    }

    /// Whether the session of a token is live, and its account active;
    /// and whose it is. Tokens signed here name their session; the
    /// provider's are for `check_provider_token`.
    pub(crate) async fn check_session(&self, access_token: &str) -> Result<pb::CheckSessionResponse> {
        let refused = |why: &str| Error::Unauthenticated(format!("invalid access token: {why}"));
        if access_token.is_empty() {
            return Err(refused("access_token is required"));
        }
        let issuer = token::peek(access_token).map(|seen| seen.iss).unwrap_or_default();
        if self.provider.as_ref().is_some_and(|provider| provider.issuer() == issuer) {
            return self.check_provider_token(access_token).await;
        }
        let now = now_micros();
        let kid = token::key_id(access_token).map_err(|e| refused(&e.to_string()))?;
        let key = self.keys.verifying(&kid).ok_or_else(|| refused(&TokenError::UnknownKey(kid).to_string()))?;
        let claims = token::verify(access_token, &key, &self.config.issuer).map_err(|e| refused(&e.to_string()))?;
        let live = session::Entity::find_by_id(claims.sid.clone())
            .one(&self.db.reader)
            .await?
            .filter(|s| s.user_id == claims.sub && s.revoked_at.is_none() && s.expires_at > now);
        let active = match live {
            Some(_) => credential::Entity::find_by_id(claims.sub.clone())
                .one(&self.db.reader)
                .await?
                .filter(|c| c.barred(now).is_none()),
            None => None,
        };
        let Some(account) = active else {
            return Err(Error::Unauthenticated(
                "the session has ended (signed out, revoked, or the account was deactivated or suspended)".into(),
            ));
        };
        Ok(pb::CheckSessionResponse {
            user_id: account.user_id,
            username: account.username,
            role: crate::role_name(account.role).to_string(),
            session_id: claims.sid,
        })
    }
}
