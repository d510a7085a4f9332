//! Passkeys: WebAuthn credentials that sign a person in with no password
//! and no username (the authenticator tells whose passkey it is), or answer
//! the second step of a password sign-in.
//!
//! A ceremony (a registration or a sign-in under way) keeps its challenge
//! state in `passkey_ceremonies`, so any node finishes what another began,
//! and it is finished once. The checks themselves (challenge, origin,
//! relying party, signature, user verification, sign count) are
//! webauthn-rs's.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use colink_proto::auth::v1 as pb;
use colink_runtime::config::PasskeyConfig;
use colink_runtime::error::{FieldError, Violations, duplicate_as};
use colink_runtime::ids::{new_id, now_micros, parse_id, timestamp};
use colink_runtime::{Caller, Error, Result};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set, TransactionTrait,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use webauthn_rs::prelude::{
    DiscoverableAuthentication, Passkey, PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, Url, Uuid, Webauthn, WebauthnBuilder,
};

use crate::store::{credential, passkey, passkey_ceremony};
use crate::{AuthService, to_account};

/// How long a ceremony may be finished.
const CEREMONY_TTL_MICROS: i64 = 5 * 60 * 1_000_000;
/// Finished or expired ceremonies are deleted this long after expiry.
const SWEEP_AFTER_MICROS: i64 = 3600 * 1_000_000;
/// Passkeys one account may have.
const MAX_PER_ACCOUNT: usize = 20;
const MAX_NAME_CHARS: usize = 64;
/// Base64url of the longest credential id WebAuthn allows (1023 bytes).
const MAX_CREDENTIAL_ID_CHARS: usize = 1364;

const PURPOSE_REGISTER: &str = "register";
const PURPOSE_SIGN_IN: &str = "sign_in";
const PURPOSE_SECOND_FACTOR: &str = "second_factor";

/// The relying party passkeys are made for and checked against.
pub(crate) fn relying_party(config: &PasskeyConfig) -> std::result::Result<Webauthn, String> {
    let (origins, any_port) = config.allowed_origins();
    let mut origins = origins.iter().map(|origin| {
        Url::parse(origin).map_err(|err| format!("auth.passkeys.origins: {origin:?} is not a URL: {err}"))
    });
    let first = origins.next().ok_or("auth.passkeys.origins: name at least one")??;
    let mut builder = WebauthnBuilder::new(&config.rp_id, &first)
        .map_err(|err| format!("auth.passkeys: {err}"))?
        .rp_name(&config.rp_name)
        .allow_any_port(any_port);
    for origin in origins {
        builder = builder.append_allowed_origin(&origin?);
    }
    builder.build().map_err(|err| format!("auth.passkeys: {err}"))
}

impl AuthService {
    pub(crate) async fn begin_passkey_registration(
        &self,
        caller: &Caller,
        req: &pb::BeginPasskeyRegistrationRequest,
    ) -> Result<pb::BeginPasskeyRegistrationResponse> {
        self.require_passwords()?;
        let name = req.name.trim();
        match name.chars().count() {
            0 => return Err(Error::invalid("name", "is required")),
            n if n > MAX_NAME_CHARS => return Err(Error::invalid("name", "must be at most 64 characters long")),
            _ => {}
        }
        let owned =
            passkey::Entity::find().filter(passkey::Column::UserId.eq(&caller.user_id)).all(&self.db.reader).await?;
        if owned.len() >= MAX_PER_ACCOUNT {
            return Err(Error::precondition("an account has at most 20 passkeys; delete one first"));
        }
        // The authenticator is told which passkeys it holds already, so it
        // does not make a second for the same account.
        let exclude = owned.iter().map(|row| stored::<Passkey>(&row.credential).map(|p| p.cred_id().clone()));
        let exclude = exclude.collect::<Result<Vec<_>>>()?;
        let user = user_handle(&caller.user_id)?;
        let (options, state) = self
            .passkeys
            .start_passkey_registration(user, &caller.username, &caller.username, Some(exclude))
            .map_err(Error::internal)?;
        // Ask for a discoverable passkey, the kind that signs in without a
        // username; an authenticator that cannot make one makes the other.
        let mut options = serde_json::to_value(options).map_err(Error::internal)?;
        if let Some(selection) = options.pointer_mut("/publicKey/authenticatorSelection") {
            selection["residentKey"] = "preferred".into();
        }
        let ceremony = self.open_ceremony(PURPOSE_REGISTER, &caller.user_id, name, &state).await?;
        Ok(pb::BeginPasskeyRegistrationResponse {
            registration_id: ceremony.ceremony_id,
            creation_options_json: options.to_string(),
            expire_time: Some(timestamp(ceremony.expires_at)),
        })
    }

    pub(crate) async fn finish_passkey_registration(
        &self,
        caller: &Caller,
        req: &pb::FinishPasskeyRegistrationRequest,
    ) -> Result<pb::FinishPasskeyRegistrationResponse> {
        self.require_passwords()?;
        let mut v = Violations::default();
        let registration_id = v.id("registration_id", &req.registration_id);
        let answer = parse_credential::<RegisterPublicKeyCredential>("credential_json", &req.credential_json);
        if let Err(err) = &answer {
            v.add(&err.field, err.description.clone());
        }
        v.finish()?;
        let answer = answer?;
        let ceremony = passkey_ceremony::Entity::find_by_id(registration_id.clone())
            .one(&self.db.writer)
            .await?
            .filter(|c| c.purpose == PURPOSE_REGISTER && c.user_id == caller.user_id)
            .ok_or_else(|| Error::not_found("no such passkey registration"))?;
        if ceremony.used_at.is_some() {
            return self.finished_registration(&ceremony, &answer).await;
        }
        if ceremony.expires_at <= now_micros() {
            return Err(Error::precondition("this passkey registration has expired; begin another"));
        }
        let state: PasskeyRegistration = stored(&ceremony.state)?;
        let key = self.passkeys.finish_passkey_registration(&answer, &state).map_err(|err| {
            Error::invalid("credential_json", format!("is not an answer to this registration ({err})"))
        })?;
        let credential_id = URL_SAFE_NO_PAD.encode(key.cred_id());
        let now = now_micros();
        let txn = self.db.writer.begin().await?;
        let finished = passkey_ceremony::Entity::update_many()
            .col_expr(passkey_ceremony::Column::UsedAt, Expr::value(now))
            .col_expr(passkey_ceremony::Column::CredentialId, Expr::value(credential_id.clone()))
            .filter(passkey_ceremony::Column::CeremonyId.eq(&registration_id))
            .filter(passkey_ceremony::Column::UsedAt.is_null())
            .exec(&txn)
            .await?;
        if finished.rows_affected != 1 {
            // Another request finished it in between: answer as a retry.
            drop(txn);
            let ceremony = passkey_ceremony::Entity::find_by_id(registration_id).one(&self.db.writer).await?;
            let ceremony = ceremony.ok_or_else(|| Error::not_found("no such passkey registration"))?;
            return self.finished_registration(&ceremony, &answer).await;
        }
        let row = passkey::ActiveModel {
            credential_id: Set(credential_id),
            user_id: Set(caller.user_id.clone()),
            name: Set(ceremony.name.clone()),
            credential: Set(serde_json::to_string(&key).map_err(Error::internal)?),
            created_at: Set(now),
            last_used_at: Set(None),
        }
        .insert(&txn)
        .await
        .map_err(duplicate_as("this passkey is registered already"))?;
        txn.commit().await?;
        tracing::info!(user_id = %caller.user_id, credential_id = %row.credential_id, "passkey registered");
        Ok(pb::FinishPasskeyRegistrationResponse { passkey: Some(to_passkey(row)) })
    }

    /// A finished registration asked again: the same passkey when the
    /// answer names it, else a refusal.
    async fn finished_registration(
        &self,
        ceremony: &passkey_ceremony::Model,
        answer: &RegisterPublicKeyCredential,
    ) -> Result<pb::FinishPasskeyRegistrationResponse> {
        let again = URL_SAFE_NO_PAD.encode(&answer.raw_id) == ceremony.credential_id;
        let row = match again {
            true => passkey::Entity::find_by_id(ceremony.credential_id.clone()).one(&self.db.writer).await?,
            false => None,
        };
        let row = row.ok_or_else(|| Error::precondition("this passkey registration is finished; begin another"))?;
        Ok(pb::FinishPasskeyRegistrationResponse { passkey: Some(to_passkey(row)) })
    }

    pub(crate) async fn list_passkeys(&self, caller: &Caller) -> Result<pb::ListPasskeysResponse> {
        let rows = passkey::Entity::find()
            .filter(passkey::Column::UserId.eq(&caller.user_id))
            .order_by_desc(passkey::Column::CreatedAt)
            .all(&self.db.reader)
            .await?;
        Ok(pb::ListPasskeysResponse { passkeys: rows.into_iter().map(to_passkey).collect() })
    }

    pub(crate) async fn delete_passkey(&self, caller: &Caller, credential_id: &str) -> Result<()> {
        check_credential_id(credential_id)?;
        let deleted = passkey::Entity::delete_many()
            .filter(passkey::Column::CredentialId.eq(credential_id))
            .filter(passkey::Column::UserId.eq(&caller.user_id))
            .exec(&self.db.writer)
            .await?;
        if deleted.rows_affected == 0 {
            return Err(Error::not_found("no such passkey"));
        }
        tracing::info!(user_id = %caller.user_id, %credential_id, "passkey deleted");
        Ok(())
    }

    pub(crate) async fn begin_passkey_sign_in(&self) -> Result<pb::BeginPasskeySignInResponse> {
        self.require_passwords()?;
        let (options, state) = self.passkeys.start_discoverable_authentication().map_err(Error::internal)?;
        let ceremony = self.open_ceremony(PURPOSE_SIGN_IN, "", "", &state).await?;
        Ok(pb::BeginPasskeySignInResponse {
            sign_in_id: ceremony.ceremony_id,
            request_options_json: serde_json::to_string(&options).map_err(Error::internal)?,
            expire_time: Some(timestamp(ceremony.expires_at)),
        })
    }

    pub(crate) async fn finish_passkey_sign_in(
        &self,
        req: &pb::FinishPasskeySignInRequest,
        address: Option<&str>,
    ) -> Result<pb::FinishPasskeySignInResponse> {
        self.require_passwords()?;
        let mut v = Violations::default();
        let sign_in_id = v.id("sign_in_id", &req.sign_in_id);
        let answer = parse_credential::<PublicKeyCredential>("credential_json", &req.credential_json);
        if let Err(err) = &answer {
            v.add(&err.field, err.description.clone());
        }
        if req.device_name.chars().count() > 128 {
            v.add("device_name", "must be at most 128 characters long");
        }
        v.finish()?;
        let answer = answer?;
        let (user, credential_id) = self.passkeys.identify_discoverable_authentication(&answer).map_err(|_| {
            Error::invalid("credential_json", "names no account (response.userHandle): the passkey is not discoverable")
        })?;
        let user_id = user.hyphenated().to_string();
        self.throttle.check(&user_id, address).await?;
        let ceremony = self.spend_ceremony(&sign_in_id, PURPOSE_SIGN_IN).await?.ok_or_else(|| {
            Error::invalid("sign_in_id", "is unknown, already used or expired; begin the sign-in again")
        })?;
        let state: DiscoverableAuthentication = stored(&ceremony.state)?;
        let row = passkey::Entity::find_by_id(URL_SAFE_NO_PAD.encode(credential_id))
            .one(&self.db.reader)
            .await?
            .filter(|row| row.user_id == user_id);
        let Some(row) = row else {
            self.throttle.failed(&user_id, address).await;
            return Err(Error::Unauthenticated(
                "this passkey is not registered here (it may have been deleted)".into(),
            ));
        };
        let mut key: Passkey = stored(&row.credential)?;
        let Ok(result) = self.passkeys.finish_discoverable_authentication_v2(&answer, state, &key) else {
            self.throttle.failed(&user_id, address).await;
            return Err(Error::Unauthenticated("the passkey's answer does not check out".into()));
        };
        let txn = self.db.writer.begin().await?;
        let changed = key.update_credential(&result) == Some(true);
        record_use(&txn, &row, &key, changed).await?;
        let account = credential::Entity::find_by_id(user_id.clone())
            .one(&txn)
            .await?
            .ok_or_else(|| Error::Unauthenticated("this passkey's account is gone".into()))?;
        if let Some(barred) = account.barred(now_micros()) {
            return Err(barred);
        }
        let tokens = self.open_session(&txn, &account, &req.device_name).await?;
        txn.commit().await?;
        let second_factor = self.second_factor_enabled(&self.db.writer, &user_id).await?;
        tracing::info!(%user_id, credential_id = %row.credential_id, "signed in with a passkey");
        Ok(pb::FinishPasskeySignInResponse { tokens: Some(tokens), account: Some(to_account(&account, second_factor)) })
    }

    /// For the second step of a password sign-in: the request options that
    /// let the account's passkeys answer `challenge_id`, if it has any.
    pub(crate) async fn second_factor_options(&self, user_id: &str, challenge_id: &str) -> Result<Option<String>> {
        let rows = passkey::Entity::find().filter(passkey::Column::UserId.eq(user_id)).all(&self.db.reader).await?;
        if rows.is_empty() {
            return Ok(None);
        }
        let keys = rows.iter().map(|row| stored::<Passkey>(&row.credential)).collect::<Result<Vec<_>>>()?;
        let (options, state) = self.passkeys.start_passkey_authentication(&keys).map_err(Error::internal)?;
        let ceremony = passkey_ceremony::ActiveModel {
            ceremony_id: Set(challenge_id.to_string()),
            ..ceremony(PURPOSE_SECOND_FACTOR, user_id, "", &state)?
        };
        ceremony.insert(&self.db.writer).await?;
        Ok(Some(serde_json::to_string(&options).map_err(Error::internal)?))
    }

    /// Whether a passkey's answer to the second step of a password sign-in
    /// checks out, recording its use inside `txn`.
    pub(crate) async fn second_factor_answered<C: ConnectionTrait>(
        &self,
        txn: &C,
        challenge_id: &str,
        user_id: &str,
        answer_json: &str,
    ) -> Result<bool> {
        let answer = parse_credential::<PublicKeyCredential>("webauthn_assertion_json", answer_json)?;
        let ceremony = passkey_ceremony::Entity::find_by_id(challenge_id.to_string())
            .one(txn)
            .await?
            .filter(|c| c.purpose == PURPOSE_SECOND_FACTOR && c.user_id == user_id)
            .ok_or_else(|| Error::invalid("method", "the account has no passkey to answer with; use TOTP"))?;
        let state: PasskeyAuthentication = stored(&ceremony.state)?;
        let Ok(result) = self.passkeys.finish_passkey_authentication(&answer, &state) else {
            return Ok(false);
        };
        let row = passkey::Entity::find_by_id(URL_SAFE_NO_PAD.encode(result.cred_id())).one(txn).await?;
        let Some(row) = row.filter(|row| row.user_id == user_id) else {
            // Deleted since the challenge was made.
            return Ok(false);
        };
        let mut key: Passkey = stored(&row.credential)?;
        let changed = key.update_credential(&result) == Some(true);
        record_use(txn, &row, &key, changed).await?;
        Ok(true)
    }

    async fn open_ceremony<S: Serialize>(
        &self,
        purpose: &str,
        user_id: &str,
        name: &str,
        state: &S,
    ) -> Result<passkey_ceremony::Model> {
        passkey_ceremony::Entity::delete_many()
            .filter(passkey_ceremony::Column::ExpiresAt.lt(now_micros() - SWEEP_AFTER_MICROS))
            .exec(&self.db.writer)
            .await?;
        Ok(ceremony(purpose, user_id, name, state)?.insert(&self.db.writer).await?)
    }

    /// The ceremony, spent: each works once, and only until it expires.
    async fn spend_ceremony(&self, ceremony_id: &str, purpose: &str) -> Result<Option<passkey_ceremony::Model>> {
        let now = now_micros();
        let spent = passkey_ceremony::Entity::update_many()
            .col_expr(passkey_ceremony::Column::UsedAt, Expr::value(now))
            .filter(passkey_ceremony::Column::CeremonyId.eq(ceremony_id))
            .filter(passkey_ceremony::Column::Purpose.eq(purpose))
            .filter(passkey_ceremony::Column::UsedAt.is_null())
            .filter(passkey_ceremony::Column::ExpiresAt.gt(now))
            .exec(&self.db.writer)
            .await?;
        if spent.rows_affected != 1 {
            return Ok(None);
        }
        Ok(passkey_ceremony::Entity::find_by_id(ceremony_id.to_string()).one(&self.db.writer).await?)
    }
}

fn ceremony<S: Serialize>(
    purpose: &str,
    user_id: &str,
    name: &str,
    state: &S,
) -> Result<passkey_ceremony::ActiveModel> {
    Ok(passkey_ceremony::ActiveModel {
        ceremony_id: Set(new_id()),
        purpose: Set(purpose.to_string()),
        user_id: Set(user_id.to_string()),
        name: Set(name.to_string()),
        state: Set(serde_json::to_string(state).map_err(Error::internal)?),
        expires_at: Set(now_micros() + CEREMONY_TTL_MICROS),
        used_at: Set(None),
        credential_id: Set(String::new()),
    })
}

/// Notes a passkey's use, and its new sign count when it moved (a clone of
/// the authenticator would then answer with a count already seen).
async fn record_use<C: ConnectionTrait>(txn: &C, row: &passkey::Model, key: &Passkey, changed: bool) -> Result<()> {
    let mut update = passkey::Entity::update_many()
        .col_expr(passkey::Column::LastUsedAt, Expr::value(now_micros()))
        .filter(passkey::Column::CredentialId.eq(&row.credential_id));
    if changed {
        let credential = serde_json::to_string(key).map_err(Error::internal)?;
        update = update.col_expr(passkey::Column::Credential, Expr::value(credential));
    }
    update.exec(txn).await?;
    Ok(())
}

/// The WebAuthn user handle of an account: its id, a UUID.
fn user_handle(user_id: &str) -> Result<Uuid> {
    Uuid::parse_str(&parse_id("user_id", user_id).map_err(Error::from)?).map_err(Error::internal)
}

/// A credential the browser sent, in the WebAuthn JSON form, from `field`.
fn parse_credential<T: DeserializeOwned>(field: &str, json: &str) -> std::result::Result<T, FieldError> {
    if json.trim().is_empty() {
        return Err(FieldError::new(field, "is required"));
    }
    serde_json::from_str(json)
        .map_err(|err| FieldError::new(field, format!("is not a WebAuthn credential in JSON form ({err})")))
}

fn check_credential_id(credential_id: &str) -> Result<()> {
    let well_formed = !credential_id.is_empty()
        && credential_id.len() <= MAX_CREDENTIAL_ID_CHARS
        && credential_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if well_formed {
        Ok(())
    } else {
        Err(Error::invalid("credential_id", "is not a passkey's credential id (base64url)"))
    }
}

/// A value webauthn-rs asked us to keep, read back.
fn stored<T: DeserializeOwned>(json: &str) -> Result<T> {
    serde_json::from_str(json).map_err(Error::internal)
}

fn to_passkey(row: passkey::Model) -> pb::Passkey {
    pb::Passkey {
        credential_id: row.credential_id,
        name: row.name,
        create_time: Some(timestamp(row.created_at)),
        last_used_time: row.last_used_at.map(timestamp),
    }
}
