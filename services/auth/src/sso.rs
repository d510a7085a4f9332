//! Single sign-on with an OpenID provider (`[auth] mode = "oidc"`).
//!
//! Sign-in is the authorization-code flow with PKCE: `BeginSingleSignOn`
//! keeps a state, a nonce and a PKCE verifier and hands out the provider's
//! authorization URL; `FinishSingleSignOn` spends the state, exchanges the
//! code, checks the ID token and opens an ordinary Colink session. The
//! account is made on first sign-in, linked to the provider's issuer and
//! subject, with its username, name, email and role from the configured
//! claims. The provider's own access tokens are accepted too: every node
//! checks their signature, and `CheckSession` (here) says whose account
//! they belong to, making it on first sight.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use colink_proto::auth::v1 as pb;
use colink_proto::events::v1::{UserRoleChanged, event::Payload};
use colink_runtime::auth::provider_session_id;
use colink_runtime::config::OidcConfig;
use colink_runtime::error::{Violations, duplicate_as};
use colink_runtime::events::{self, USER_EVENTS};
use colink_runtime::ids::{new_id, now_micros, timestamp};
use colink_runtime::oidc::{OidcError, OpenIdProvider, url_encode};
use colink_runtime::{Error, Result};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, Set, TransactionTrait,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::domain::{hash_refresh_token, normalize_username, random_bytes};
use crate::roles::is_last_active_admin;
use crate::store::{credential, identity_link, sso_login};
use crate::{AuthService, NewAccount, is_first_account, role_name, to_account};

/// How long a started sign-in can be finished.
const SIGN_IN_TTL_SECS: i64 = 600;
/// Started sign-ins are swept this long after they expired.
const SWEEP_AFTER_SECS: i64 = 86_400;

/// Who the provider says a person is.
#[derive(Debug, Clone, PartialEq)]
struct Identity {
    subject: String,
    username: String,
    display_name: String,
    email: String,
    email_verified: bool,
    /// From the role claim; `None` when roles are not taken from the provider.
    role: Option<pb::Role>,
}

impl AuthService {
    pub(crate) fn sign_in_options(&self) -> pb::GetSignInOptionsResponse {
        pb::GetSignInOptionsResponse {
            password: self.provider.is_none(),
            single_sign_on: self.provider.is_some(),
            single_sign_on_name: self.provider.as_ref().map(|p| p.config().display_name.clone()).unwrap_or_default(),
            passkeys: self.provider.is_none(),
            passkey_rp_id: if self.provider.is_none() { self.config.passkeys.rp_id.clone() } else { String::new() },
        }
    }

    /// Password sign-in, sign-up and resets exist only without single sign-on.
    pub(crate) fn require_passwords(&self) -> Result<()> {
        match self.provider {
            None => Ok(()),
            Some(_) => Err(Error::precondition("this workspace signs in with single sign-on (BeginSingleSignOn)")),
        }
    }

    fn provider(&self) -> Result<&Arc<OpenIdProvider>> {
        self.provider
            .as_ref()
            .ok_or_else(|| Error::precondition("this workspace has no single sign-on ([auth] mode = \"oidc\")"))
    }

    pub(crate) async fn begin_single_sign_on(
        &self,
        req: &pb::BeginSingleSignOnRequest,
    ) -> Result<pb::BeginSingleSignOnResponse> {
        let provider = self.provider()?;
        let config = provider.config();
        let mut v = Violations::default();
        let redirect_uri = if req.redirect_uri.is_empty() {
            config.redirect_urls.first().cloned().unwrap_or_default()
        } else if config.redirect_urls.contains(&req.redirect_uri) {
            req.redirect_uri.clone()
        } else {
            v.add("redirect_uri", "is not one of the configured redirect URLs");
            String::new()
        };
        if req.device_name.chars().count() > 128 {
            v.add("device_name", "must be at most 128 characters long");
        }
        v.finish()?;
        let endpoint = provider.discovery().await.map_err(unavailable)?.authorization_endpoint.clone();
        let state = random_text()?;
        let nonce = random_text()?;
        let code_verifier = random_text()?;
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(code_verifier.as_bytes()));
        let now = now_micros();
        let expires_at = now + SIGN_IN_TTL_SECS * 1_000_000;
        sso_login::Entity::delete_many()
            .filter(sso_login::Column::ExpiresAt.lt(now - SWEEP_AFTER_SECS * 1_000_000))
            .exec(&self.db.writer)
            .await?;
        sso_login::ActiveModel {
            state_hash: Set(hash_refresh_token(&state)),
            nonce: Set(nonce.clone()),
            code_verifier: Set(code_verifier),
            redirect_uri: Set(redirect_uri.clone()),
            device_name: Set(req.device_name.clone()),
            created_at: Set(now),
            expires_at: Set(expires_at),
            used_at: Set(None),
        }
        .insert(&self.db.writer)
        .await?;
        let query = [
            ("response_type", "code"),
            ("client_id", config.client_id.as_str()),
            ("redirect_uri", redirect_uri.as_str()),
            ("scope", config.scopes.as_str()),
            ("state", state.as_str()),
            ("nonce", nonce.as_str()),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ]
        .iter()
        .map(|(key, value)| format!("{key}={}", url_encode(value)))
        .collect::<Vec<_>>()
        .join("&");
        let separator = if endpoint.contains('?') { '&' } else { '?' };
        Ok(pb::BeginSingleSignOnResponse {
            authorization_url: format!("{endpoint}{separator}{query}"),
            state,
            expire_time: Some(timestamp(expires_at)),
        })
    }

    pub(crate) async fn finish_single_sign_on(
        &self,
        req: &pb::FinishSingleSignOnRequest,
    ) -> Result<pb::FinishSingleSignOnResponse> {
        let provider = self.provider()?.clone();
        let mut v = Violations::default();
        if req.state.is_empty() {
            v.add("state", "is required");
        }
        if req.code.is_empty() {
            v.add("code", "is required");
        } else if req.code.len() > 2048 {
            v.add("code", "must be at most 2048 characters long");
        }
        v.finish()?;
        let started = self.spend_state(&req.state).await?;
        let answer = provider.exchange_code(&req.code, &started.redirect_uri, &started.code_verifier).await.map_err(
            |e| match e {
                OidcError::Unreachable(_) => unavailable(e),
                other => Error::Unauthenticated(other.to_string()),
            },
        )?;
        let id_token = answer
            .id_token
            .ok_or_else(|| Error::Unauthenticated("the provider answered without an ID token".into()))?;
        let claims: Value = provider
            .verify(&id_token, &provider.config().client_id)
            .await
            .map_err(|e| Error::Unauthenticated(format!("the ID token does not check out: {e}")))?;
        if claims.get("nonce").and_then(Value::as_str) != Some(started.nonce.as_str()) {
            return Err(Error::Unauthenticated("the ID token is not for this sign-in (nonce)".into()));
        }
        let identity = identity_of(&claims, provider.config())?;
        let (account, created) = self.account_for(provider.issuer(), &identity).await?;
        if let Some(barred) = account.barred(now_micros()) {
            return Err(barred);
        }
        let txn = self.db.writer.begin().await?;
        identity_link::Entity::update_many()
            .col_expr(identity_link::Column::LastSignInAt, Expr::value(now_micros()))
            .filter(identity_link::Column::Issuer.eq(provider.issuer()))
            .filter(identity_link::Column::Subject.eq(&identity.subject))
            .exec(&txn)
            .await?;
        let tokens = self.open_session(&txn, &account, &started.device_name).await?;
        txn.commit().await?;
        if created && !self.profile_exists(&account.user_id, &tokens.access_token).await {
            tracing::warn!(user_id = %account.user_id, "user.created not yet applied by users");
        }
        tracing::info!(user_id = %account.user_id, created, "signed in with single sign-on");
        Ok(pb::FinishSingleSignOnResponse { account: Some(to_account(&account, false)), tokens: Some(tokens), created })
    }

    /// `CheckSession` for one of the provider's access tokens: whose
    /// account it is (made on first sight), unless that account is barred.
    pub(crate) async fn check_provider_token(&self, access_token: &str) -> Result<pb::CheckSessionResponse> {
        let provider = self.provider()?.clone();
        let claims: Value = provider
            .verify(access_token, provider.config().audience())
            .await
            .map_err(|e| Error::Unauthenticated(e.to_string()))?;
        let identity = identity_of(&claims, provider.config())?;
        let (account, _) = self.account_for(provider.issuer(), &identity).await?;
        if account.barred(now_micros()).is_some() {
            return Err(Error::Unauthenticated(
                "the session has ended (the account was deactivated or suspended)".into(),
            ));
        }
        Ok(pb::CheckSessionResponse {
            session_id: provider_session_id(&account.user_id),
            user_id: account.user_id,
            username: account.username,
            role: role_name(account.role).to_string(),
        })
    }

    /// The state of a started sign-in, spent: it works once, and only
    /// until it expires.
    async fn spend_state(&self, state: &str) -> Result<sso_login::Model> {
        let hash = hash_refresh_token(state);
        let now = now_micros();
        let spent = sso_login::Entity::update_many()
            .col_expr(sso_login::Column::UsedAt, Expr::value(now))
            .filter(sso_login::Column::StateHash.eq(&hash))
            .filter(sso_login::Column::UsedAt.is_null())
            .filter(sso_login::Column::ExpiresAt.gt(now))
            .exec(&self.db.writer)
            .await?;
        let started = match spent.rows_affected {
            1 => sso_login::Entity::find_by_id(hash).one(&self.db.writer).await?,
            _ => None,
        };
        started.ok_or_else(|| Error::invalid("state", "is unknown, already used or expired; start the sign-in again"))
    }

    /// The account linked to a provider identity, made (or linked by a
    /// verified email) when there is none, and its email and role brought
    /// up to date; and whether it was made now.
    async fn account_for(&self, issuer: &str, identity: &Identity) -> Result<(credential::Model, bool)> {
        // Most calls find a linked account with nothing to change: they
        // take no write transaction.
        let key = (issuer.to_string(), identity.subject.clone());
        if let Some(link) = identity_link::Entity::find_by_id(key.clone()).one(&self.db.reader).await? {
            let account = credential::Entity::find_by_id(link.user_id).one(&self.db.reader).await?;
            if let Some(account) = account.filter(|a| is_up_to_date(a, identity)) {
                return Ok((account, false));
            }
        }
        let txn = self.db.writer.begin().await?;
        let link = identity_link::Entity::find_by_id(key).one(&txn).await?;
        let existing = match &link {
            Some(link) => credential::Entity::find_by_id(link.user_id.clone()).one(&txn).await?,
            // An account from before single sign-on takes the identity when
            // the provider vouches for the address.
            None if identity.email_verified => {
                credential::Entity::find().filter(credential::Column::Email.eq(&identity.email)).one(&txn).await?
            }
            None => None,
        };
        let (account, created) = match existing {
            Some(account) => (self.bring_up_to_date(&txn, account, identity).await?, false),
            None => (self.make_account(&txn, identity).await?, true),
        };
        if link.is_none() {
            let now = now_micros();
            identity_link::ActiveModel {
                issuer: Set(issuer.to_string()),
                subject: Set(identity.subject.clone()),
                user_id: Set(account.user_id.clone()),
                created_at: Set(now),
                last_sign_in_at: Set(now),
            }
            .insert(&txn)
            .await
            .map_err(duplicate_as("this identity was linked by a sign-in at the same moment; try again"))?;
        }
        txn.commit().await?;
        if created {
            self.outbox.notify();
            tracing::info!(user_id = %account.user_id, username = %account.username, "account made by single sign-on");
        }
        Ok((account, created))
    }

    async fn make_account<C: ConnectionTrait>(&self, txn: &C, identity: &Identity) -> Result<credential::Model> {
        let username = self.free_username(txn, &identity.username).await?;
        // The first account of a workspace administers it, whatever the
        // provider says, so that someone can.
        let role =
            if is_first_account(txn).await? { pb::Role::Admin } else { identity.role.unwrap_or(pb::Role::Member) };
        let email = if identity.email.is_empty() { format!("{username}@sso.invalid") } else { identity.email.clone() };
        // No password: this account signs in at the provider only.
        let new =
            NewAccount { username, email, password_hash: String::new(), role, email_verified: identity.email_verified };
        new.insert(txn, &identity.display_name, "the provider's email address belongs to another account").await
    }

    /// Takes the provider's email and (when roles come from it) role.
    async fn bring_up_to_date<C: ConnectionTrait>(
        &self,
        txn: &C,
        account: credential::Model,
        identity: &Identity,
    ) -> Result<credential::Model> {
        if is_up_to_date(&account, identity) {
            return Ok(account);
        }
        let mut role = identity.role.map_or(account.role, |role| role as i32);
        // The provider cannot take the workspace's last admin away.
        if role != pb::Role::Admin as i32 && is_last_active_admin(txn, &account).await? {
            tracing::warn!(user_id = %account.user_id, "the provider gives the last admin another role; kept admin");
            role = account.role;
        }
        let email_changed = !identity.email.is_empty() && identity.email != account.email;
        if role == account.role && !email_changed {
            return Ok(account);
        }
        let previous_role = account.role;
        let username = account.username.clone();
        let mut change: credential::ActiveModel = account.into();
        change.role = Set(role);
        if email_changed {
            change.email = Set(identity.email.clone());
            change.email_verified = Set(identity.email_verified);
        }
        change.updated_at = Set(now_micros());
        let account = change
            .update(txn)
            .await
            .map_err(duplicate_as("the provider's email address belongs to another account"))?;
        if role != previous_role {
            let event = events::event(
                "user.role_changed",
                &account.user_id,
                Payload::UserRoleChanged(UserRoleChanged {
                    user_id: account.user_id.clone(),
                    username,
                    role: role_name(role).to_string(),
                    previous_role: role_name(previous_role).to_string(),
                    reason: "role given by the identity provider".into(),
                }),
            );
            events::enqueue(txn, USER_EVENTS, &account.user_id, &event).await?;
        }
        Ok(account)
    }

    /// The provider's username made valid here and free: `alice`, else
    /// `alice-2`, `alice-3`...
    async fn free_username<C: ConnectionTrait>(&self, txn: &C, wanted: &str) -> Result<String> {
        let base = username_from(wanted);
        for n in 1..=50 {
            let candidate = if n == 1 { base.clone() } else { format!("{}-{n}", truncate(&base, 28)) };
            let taken =
                credential::Entity::find().filter(credential::Column::Username.eq(&candidate)).count(txn).await? > 0;
            if !taken {
                return Ok(candidate);
            }
        }
        Ok(format!("{}-{}", truncate(&base, 19), &new_id()[24..]))
    }
}

/// Whether an account already has the email and role the provider gives.
fn is_up_to_date(account: &credential::Model, identity: &Identity) -> bool {
    let role_matches = identity.role.is_none_or(|role| role as i32 == account.role);
    let email_matches = identity.email.is_empty() || identity.email == account.email;
    role_matches && email_matches
}

/// Reads the identity out of an ID token's or access token's claims.
fn identity_of(claims: &Value, config: &OidcConfig) -> Result<Identity> {
    let text = |path: &str| claim(claims, path).and_then(Value::as_str).unwrap_or_default().trim().to_string();
    let subject = text("sub");
    if subject.is_empty() || subject.len() > 255 {
        return Err(Error::Unauthenticated("the provider's token names no usable subject (sub)".into()));
    }
    let username = text(&config.username_claim);
    let email = text(&config.email_claim).to_lowercase();
    let email = if email.contains('@') && email.len() <= 254 { email } else { String::new() };
    let role = (!config.role_claim.is_empty()).then(|| role_of(claim(claims, &config.role_claim), config));
    Ok(Identity {
        username: if username.is_empty() { subject.clone() } else { username },
        display_name: text(&config.name_claim),
        email_verified: !email.is_empty() && claim(claims, "email_verified").and_then(Value::as_bool) == Some(true),
        email,
        subject,
        role,
    })
}

/// A claim by dotted path: `realm_access.roles`.
fn claim<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(claims, |value, key| value.get(key))
}

/// The workspace role the provider's roles give: the highest that matches.
fn role_of(roles: Option<&Value>, config: &OidcConfig) -> pb::Role {
    let held: Vec<&str> = match roles {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        Some(Value::String(one)) => one.split([' ', ',']).filter(|r| !r.is_empty()).collect(),
        _ => Vec::new(),
    };
    let holds = |wanted: &[String]| wanted.iter().any(|w| held.contains(&w.as_str()));
    if holds(&config.admin_roles) {
        pb::Role::Admin
    } else if holds(&config.moderator_roles) {
        pb::Role::Moderator
    } else if holds(&config.guest_roles) {
        pb::Role::Guest
    } else {
        pb::Role::Member
    }
}

/// A valid username from whatever the provider calls the person.
fn username_from(wanted: &str) -> String {
    let local = wanted.split('@').next().unwrap_or_default().to_ascii_lowercase();
    let cleaned: String = local
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '-' })
        .skip_while(|c| !c.is_ascii_alphanumeric())
        .collect();
    let cleaned = truncate(&cleaned, 32);
    match normalize_username(&cleaned) {
        Ok(name) => name,
        Err(_) if cleaned.is_empty() => "user".into(),
        Err(_) => format!("user-{}", truncate(&cleaned, 27)),
    }
}

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

fn random_text() -> Result<String> {
    Ok(URL_SAFE_NO_PAD.encode(random_bytes::<32>().map_err(Error::internal)?))
}

fn unavailable(err: OidcError) -> Error {
    Error::Unavailable(err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> OidcConfig {
        OidcConfig {
            role_claim: "realm_access.roles".into(),
            admin_roles: vec!["colink-admin".into()],
            moderator_roles: vec!["colink-moderator".into()],
            guest_roles: vec!["colink-guest".into()],
            ..OidcConfig::default()
        }
    }

    #[test]
    fn identities_come_from_the_configured_claims() {
        let claims = serde_json::json!({
            "sub": "f:1234",
            "preferred_username": "Ada.Lovelace",
            "name": "Ada Lovelace",
            "email": "Ada@Example.com",
            "email_verified": true,
            "realm_access": {"roles": ["offline_access", "colink-moderator", "colink-guest"]}
        });
        let identity = identity_of(&claims, &config()).unwrap();
        assert_eq!(identity.subject, "f:1234");
        assert_eq!(identity.username, "Ada.Lovelace");
        assert_eq!(identity.display_name, "Ada Lovelace");
        assert_eq!(identity.email, "ada@example.com");
        assert!(identity.email_verified);
        assert_eq!(identity.role, Some(pb::Role::Moderator), "the highest role held");
        let unmapped = identity_of(&claims, &OidcConfig::default()).unwrap();
        assert_eq!(unmapped.role, None, "no role claim: roles stay Colink's");
        let bare = identity_of(&serde_json::json!({"sub": "x1", "email": "nope"}), &config()).unwrap();
        assert_eq!((bare.username.as_str(), bare.email.as_str(), bare.role), ("x1", "", Some(pb::Role::Member)));
        assert!(identity_of(&serde_json::json!({"email": "a@b.c"}), &config()).is_err());
    }

    #[test]
    fn usernames_are_made_valid() {
        assert_eq!(username_from("Ada.Lovelace"), "ada.lovelace");
        assert_eq!(username_from("grace@navy.mil"), "grace");
        assert_eq!(username_from("_émile zola"), "mile-zola");
        assert_eq!(username_from("x"), "user-x");
        assert_eq!(username_from(&"a".repeat(40)).len(), 32);
    }
}
