//! TOTP as a second factor: enrolment, confirmation with a first code,
//! single-use recovery codes, and the login challenge that a password alone
//! no longer completes once a factor is confirmed. The account's passkeys
//! can answer that challenge too.

use colink_proto::auth::v1 as pb;
use colink_runtime::ids::{new_id, now_micros, parse_id, timestamp};
use colink_runtime::{Caller, Error, Result};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter, Set, TransactionTrait,
};

use crate::domain::{hash_refresh_token as hash_secret, random_bytes};
use crate::store::{credential, login_challenge, recovery_code, second_factor};
use crate::totp::{self, STEP_SECS, encode_base32, matching_step};
use crate::{AuthService, to_account};

/// How long a login challenge may be answered.
const CHALLENGE_TTL_MICROS: i64 = 5 * 60 * 1_000_000;
/// Wrong answers before a challenge is spent.
const MAX_ATTEMPTS: i32 = 5;
const RECOVERY_CODES: usize = 8;

impl AuthService {
    /// Whether the account must answer a second factor to sign in.
    pub(crate) async fn second_factor_enabled<C: ConnectionTrait>(&self, conn: &C, user_id: &str) -> Result<bool> {
        let factor = second_factor::Entity::find_by_id(user_id.to_string()).one(conn).await?;
        Ok(factor.is_some_and(|f| f.confirmed_at.is_some()))
    }

    pub(crate) async fn enroll_totp(&self, caller: &Caller) -> Result<pb::EnrollTotpResponse> {
        // With single sign-on, the second factor is the provider's to ask.
        self.require_passwords()?;
        if self.second_factor_enabled(&self.db.writer, &caller.user_id).await? {
            return Err(Error::precondition("TOTP is already enabled; disable it first to enrol a new device"));
        }
        let secret = random_bytes::<20>().map_err(Error::internal)?;
        let row = second_factor::ActiveModel {
            user_id: Set(caller.user_id.clone()),
            totp_secret: Set(secret.to_vec()),
            confirmed_at: Set(None),
            last_step: Set(0),
            created_at: Set(now_micros()),
        };
        // A new enrolment replaces an unconfirmed one.
        second_factor::Entity::insert(row)
            .on_conflict(
                OnConflict::column(second_factor::Column::UserId)
                    .update_columns([second_factor::Column::TotpSecret, second_factor::Column::CreatedAt])
                    .to_owned(),
            )
            .exec(&self.db.writer)
            .await?;
        let secret = encode_base32(&secret);
        let issuer = self.config.issuer.replace(' ', "%20");
        let otpauth_uri = format!(
            "otpauth://totp/{issuer}:{}?secret={secret}&issuer={issuer}&algorithm=SHA1&digits={}&period={STEP_SECS}",
            caller.username,
            totp::DIGITS
        );
        Ok(pb::EnrollTotpResponse { secret, otpauth_uri })
    }

    pub(crate) async fn confirm_totp(&self, caller: &Caller, code: &str) -> Result<pb::ConfirmTotpResponse> {
        check_code_shape(code)?;
        let txn = self.db.writer.begin().await?;
        let factor = second_factor::Entity::find_by_id(caller.user_id.clone())
            .one(&txn)
            .await?
            .filter(|f| f.confirmed_at.is_none())
            .ok_or_else(|| Error::precondition("no pending TOTP enrolment: call EnrollTotp first"))?;
        let step = matching_step(&factor.totp_secret, code, now_micros() / 1_000_000, factor.last_step)
            .ok_or_else(|| Error::invalid("code", "is wrong or expired"))?;
        let mut model = factor.into_active_model();
        model.confirmed_at = Set(Some(now_micros()));
        model.last_step = Set(step);
        model.update(&txn).await?;
        recovery_code::Entity::delete_many()
            .filter(recovery_code::Column::UserId.eq(&caller.user_id))
            .exec(&txn)
            .await?;
        let mut recovery_codes = Vec::with_capacity(RECOVERY_CODES);
        for _ in 0..RECOVERY_CODES {
            let raw = encode_base32(&random_bytes::<5>().map_err(Error::internal)?);
            recovery_code::ActiveModel {
                user_id: Set(caller.user_id.clone()),
                code_hash: Set(hash_secret(&raw)),
                used_at: Set(None),
            }
            .insert(&txn)
            .await?;
            recovery_codes.push(format!("{}-{}", &raw[..4], &raw[4..]));
        }
        txn.commit().await?;
        tracing::info!(user_id = %caller.user_id, "totp enabled");
        Ok(pb::ConfirmTotpResponse { recovery_codes })
    }

    pub(crate) async fn disable_totp(&self, caller: &Caller, code: &str) -> Result<()> {
        if code.trim().is_empty() {
            return Err(Error::invalid("code", "is required"));
        }
        let txn = self.db.writer.begin().await?;
        let factor = second_factor::Entity::find_by_id(caller.user_id.clone())
            .one(&txn)
            .await?
            .filter(|f| f.confirmed_at.is_some())
            .ok_or_else(|| Error::precondition("TOTP is not enabled"))?;
        if !redeem(&txn, &factor, code).await? {
            return Err(Error::invalid("code", "is wrong or expired"));
        }
        second_factor::Entity::delete_by_id(caller.user_id.clone()).exec(&txn).await?;
        recovery_code::Entity::delete_many()
            .filter(recovery_code::Column::UserId.eq(&caller.user_id))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        tracing::info!(user_id = %caller.user_id, "totp disabled");
        Ok(())
    }

    /// A challenge that only a second factor answers.
    pub(crate) async fn challenge(&self, user_id: &str, device_name: &str) -> Result<pb::SecondFactorChallenge> {
        let expires_at = now_micros() + CHALLENGE_TTL_MICROS;
        let row = login_challenge::ActiveModel {
            challenge_id: Set(new_id()),
            user_id: Set(user_id.to_string()),
            device_name: Set(device_name.chars().take(128).collect()),
            attempts: Set(0),
            expires_at: Set(expires_at),
            used_at: Set(None),
        }
        .insert(&self.db.writer)
        .await?;
        let mut methods = vec![pb::SecondFactorMethod::Totp as i32];
        let passkey_options = self.second_factor_options(user_id, &row.challenge_id).await?;
        if passkey_options.is_some() {
            methods.push(pb::SecondFactorMethod::Webauthn as i32);
        }
        Ok(pb::SecondFactorChallenge {
            challenge_id: row.challenge_id,
            methods,
            webauthn_options_json: passkey_options.unwrap_or_default(),
            expire_time: Some(timestamp(expires_at)),
        })
    }

    pub(crate) async fn verify_second_factor(
        &self,
        req: pb::VerifySecondFactorRequest,
    ) -> Result<pb::VerifySecondFactorResponse> {
        let challenge_id = parse_id("challenge_id", &req.challenge_id)?;
        let method = match pb::SecondFactorMethod::try_from(req.method) {
            Ok(pb::SecondFactorMethod::Totp) if req.code.trim().is_empty() => {
                return Err(Error::invalid("code", "is required"));
            }
            Ok(pb::SecondFactorMethod::Webauthn) if req.webauthn_assertion_json.trim().is_empty() => {
                return Err(Error::invalid("webauthn_assertion_json", "is required"));
            }
            Ok(method @ (pb::SecondFactorMethod::Totp | pb::SecondFactorMethod::Webauthn)) => method,
            _ => return Err(Error::invalid("method", "must be SECOND_FACTOR_METHOD_TOTP or _WEBAUTHN")),
        };
        let spent = || Error::Unauthenticated("this sign-in attempt has expired; sign in again".into());
        let now = now_micros();
        let txn = self.db.writer.begin().await?;
        let challenge = login_challenge::Entity::find_by_id(challenge_id)
            .one(&txn)
            .await?
            .filter(|c| c.used_at.is_none() && c.expires_at > now && c.attempts < MAX_ATTEMPTS)
            .ok_or_else(spent)?;
        let factor = second_factor::Entity::find_by_id(challenge.user_id.clone())
            .one(&txn)
            .await?
            .filter(|f| f.confirmed_at.is_some())
            .ok_or_else(spent)?;
        let answered = match method {
            pb::SecondFactorMethod::Webauthn => {
                let answer = &req.webauthn_assertion_json;
                self.second_factor_answered(&txn, &challenge.challenge_id, &challenge.user_id, answer).await?
            }
            _ => redeem(&txn, &factor, &req.code).await?,
        };
        if !answered {
            login_challenge::Entity::update_many()
                .col_expr(login_challenge::Column::Attempts, Expr::col(login_challenge::Column::Attempts).add(1))
                .filter(login_challenge::Column::ChallengeId.eq(&challenge.challenge_id))
                .exec(&txn)
                .await?;
            txn.commit().await?;
            let wrong = if method == pb::SecondFactorMethod::Webauthn {
                "the passkey's answer does not check out"
            } else {
                "wrong code"
            };
            return Err(Error::Unauthenticated(wrong.into()));
        }
        let account = credential::Entity::find_by_id(challenge.user_id.clone()).one(&txn).await?.ok_or_else(spent)?;
        if let Some(barred) = account.barred(now) {
            return Err(barred);
        }
        let mut used = challenge.clone().into_active_model();
        used.used_at = Set(Some(now));
        used.update(&txn).await?;
        let tokens = self.open_session(&txn, &account, &challenge.device_name).await?;
        txn.commit().await?;
        Ok(pb::VerifySecondFactorResponse { tokens: Some(tokens), account: Some(to_account(&account, true)) })
    }
}

fn check_code_shape(code: &str) -> Result<()> {
    if totp::is_code(code) { Ok(()) } else { Err(Error::invalid("code", "must be the 6 digits shown by the app")) }
}

/// Accepts a current TOTP code (each time step once) or an unused recovery
/// code, recording its use in `txn`.
async fn redeem<C: ConnectionTrait>(txn: &C, factor: &second_factor::Model, code: &str) -> Result<bool> {
    let code = code.trim();
    if totp::is_code(code) {
        let Some(step) = matching_step(&factor.totp_secret, code, now_micros() / 1_000_000, factor.last_step) else {
            return Ok(false);
        };
        // Conditional, so that two requests with the same code cannot both pass.
        let moved = second_factor::Entity::update_many()
            .col_expr(second_factor::Column::LastStep, Expr::value(step))
            .filter(second_factor::Column::UserId.eq(&factor.user_id))
            .filter(second_factor::Column::LastStep.lt(step))
            .exec(txn)
            .await?;
        return Ok(moved.rows_affected == 1);
    }
    let normalized: String =
        code.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_ascii_uppercase();
    let used = recovery_code::Entity::update_many()
        .col_expr(recovery_code::Column::UsedAt, Expr::value(now_micros()))
        .filter(recovery_code::Column::UserId.eq(&factor.user_id))
        .filter(recovery_code::Column::CodeHash.eq(hash_secret(&normalized)))
        .filter(recovery_code::Column::UsedAt.is_null())
        .exec(txn)
        .await?;
    Ok(used.rows_affected == 1)
}
