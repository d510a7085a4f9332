//! Codes sent by mail: a password reset for someone who forgot theirs, and
//! the proof that an account's email reaches its owner. A code is 128
//! random bits, works once, expires (an hour for a reset, a day for a
//! verification) and is stored only as its SHA-256. Asking for a reset
//! answers the same whether the address belongs to an account or not.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use colink_proto::auth::v1 as pb;
use colink_runtime::error::Violations;
use colink_runtime::ids::now_micros;
use colink_runtime::{Caller, Error, Result};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set, TransactionTrait};

use crate::domain::{check_password, hash_refresh_token as hash_code, normalize_email, random_bytes};
use crate::sessions::Which;
use crate::store::{credential, mail_code};
use crate::{AuthService, client_address, mail};

const RESET: &str = "reset";
const VERIFY: &str = "verify";
const RESET_TTL: Duration = Duration::from_secs(3600);
const VERIFY_TTL: Duration = Duration::from_secs(24 * 3600);
/// Codes mailed to one account an hour, per purpose.
const PER_ACCOUNT_PER_HOUR: u64 = 5;

impl AuthService {
    pub(crate) async fn request_password_reset(&self, req: &pb::RequestPasswordResetRequest) -> Result<()> {
        self.require_passwords()?;
        let email = normalize_email(&req.email).map_err(Error::from)?;
        let mailer = self.mailer()?;
        self.throttle
            .per_address_hourly("mail", client_address().as_deref(), self.config.mail.requests_per_address_per_hour)
            .await?;
        let account = credential::Entity::find()
            .filter(credential::Column::Email.eq(&email))
            .one(&self.db.reader)
            .await?
            .filter(|a| !a.deactivated);
        // Unknown, deactivated and over-asked accounts get no mail, and the
        // same answer as everyone else.
        let Some(account) = account else { return Ok(()) };
        if !self.account_may_ask(&account.user_id, RESET).await {
            return Ok(());
        }
        let txn = self.db.writer.begin().await?;
        let code = issue_code(&txn, &account, RESET, RESET_TTL).await?;
        let body = format!(
            "Someone asked to reset the password of the Colink account {}.\n\n\
             Your reset code: {code}\n\n\
             It works once, within an hour. If you did not ask, ignore this mail: your password stays as it is.\n",
            account.username
        );
        mail::queue(&txn, &account.email, "Reset your Colink password", body).await?;
        txn.commit().await?;
        mailer.wake();
        Ok(())
    }

    pub(crate) async fn reset_password(&self, req: pb::ResetPasswordRequest) -> Result<()> {
        self.require_passwords()?;
        let mut v = Violations::default();
        let email = v.check(normalize_email(&req.email));
        if req.code.is_empty() {
            v.add("code", "is required");
        }
        v.check(check_password("new_password", &req.new_password));
        v.finish()?;
        let email = email.unwrap_or_default();
        self.mailer()?;
        let wrong = || Error::invalid("code", "is not a valid reset code, or was used or has expired");
        let Some(code) = live_code(&self.db.reader, &req.code, RESET).await?.filter(|c| c.email == email) else {
            return Err(wrong());
        };
        let password_hash = self.hash_password(req.new_password).await?;
        let txn = self.db.writer.begin().await?;
        if !spend_code(&txn, &code.code_hash).await? {
            return Err(wrong());
        }
        // Other reset codes of the account stop working too.
        spend_codes_of(&txn, &code.user_id, RESET).await?;
        credential::Entity::update_many()
            .col_expr(credential::Column::PasswordHash, Expr::value(password_hash))
            .col_expr(credential::Column::EmailVerified, Expr::value(true))
            .col_expr(credential::Column::UpdatedAt, Expr::value(now_micros()))
            .filter(credential::Column::UserId.eq(code.user_id.as_str()))
            .exec(&txn)
            .await?;
        let ended = self.end_sessions(&txn, &code.user_id, Which::All).await?;
        txn.commit().await?;
        self.announce_ended(&ended).await;
        tracing::info!(user_id = %code.user_id, sessions_ended = ended.len(), "password reset by mail");
        Ok(())
    }

    pub(crate) async fn verify_email(&self, caller: &Caller, raw_code: &str) -> Result<()> {
        if raw_code.is_empty() {
            return Err(Error::invalid("code", "is required"));
        }
        let wrong = || Error::invalid("code", "is not a valid verification code, or was used or has expired");
        let account = credential::Entity::find_by_id(caller.user_id.clone())
            .one(&self.db.reader)
            .await?
            .ok_or_else(|| Error::not_found("account not found"))?;
        let code = live_code(&self.db.reader, raw_code, VERIFY)
            .await?
            .filter(|c| c.user_id == caller.user_id && c.email == account.email)
            .ok_or_else(wrong)?;
        let txn = self.db.writer.begin().await?;
        if !spend_code(&txn, &code.code_hash).await? {
            return Err(wrong());
        }
        credential::Entity::update_many()
            .col_expr(credential::Column::EmailVerified, Expr::value(true))
            .col_expr(credential::Column::UpdatedAt, Expr::value(now_micros()))
            .filter(credential::Column::UserId.eq(caller.user_id.as_str()))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(())
    }

    pub(crate) async fn request_email_verification(&self, caller: &Caller) -> Result<()> {
        let mailer = self.mailer()?;
        let account = credential::Entity::find_by_id(caller.user_id.clone())
            .one(&self.db.reader)
            .await?
            .ok_or_else(|| Error::not_found("account not found"))?;
        if account.email_verified {
            return Ok(());
        }
        if !self.account_may_ask(&account.user_id, VERIFY).await {
            return Err(Error::Throttled {
                message: format!("at most {PER_ACCOUNT_PER_HOUR} verification mails an hour; try later"),
                retry_after: Duration::from_secs(3600),
            });
        }
        let txn = self.db.writer.begin().await?;
        self.queue_verification(&txn, &account).await?;
        txn.commit().await?;
        mailer.wake();
        Ok(())
    }

    /// Queues a verification code for the account's email, inside `txn`,
    /// when the workspace sends mail; returns whether it did.
    pub(crate) async fn queue_verification<C: ConnectionTrait>(
        &self,
        txn: &C,
        account: &credential::Model,
    ) -> Result<bool> {
        if self.mailer.is_none() {
            return Ok(false);
        }
        let code = issue_code(txn, account, VERIFY, VERIFY_TTL).await?;
        let body = format!(
            "Confirm that {} is the email address of the Colink account {}.\n\n\
             Your verification code: {code}\n\n\
             It works once, within a day.\n",
            account.email, account.username
        );
        mail::queue(txn, &account.email, "Confirm your email for Colink", body).await?;
        Ok(true)
    }

    fn mailer(&self) -> Result<&std::sync::Arc<mail::Mailer>> {
        self.mailer
            .as_ref()
            .ok_or_else(|| Error::precondition("this workspace does not send mail (auth.mail.url is not set)"))
    }

    /// Counts a mail for an account; false once it had its hourly share.
    async fn account_may_ask(&self, user_id: &str, purpose: &str) -> bool {
        self.throttle
            .counted(&format!("mail:{purpose}:account:{user_id}"), Duration::from_secs(3600), PER_ACCOUNT_PER_HOUR)
            .await
    }
}

/// Makes a code, stores its hash, and returns it.
async fn issue_code<C: ConnectionTrait>(
    conn: &C,
    account: &credential::Model,
    purpose: &str,
    ttl: Duration,
) -> Result<String> {
    let code = URL_SAFE_NO_PAD.encode(random_bytes::<16>().map_err(Error::internal)?);
    let now = now_micros();
    mail_code::ActiveModel {
        code_hash: Set(hash_code(&code)),
        user_id: Set(account.user_id.clone()),
        purpose: Set(purpose.to_string()),
        email: Set(account.email.clone()),
        created_at: Set(now),
        expires_at: Set(now + i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX / 2)),
        used_at: Set(None),
    }
    .insert(conn)
    .await?;
    Ok(code)
}

/// The unused, unexpired code of a purpose that `raw` is, if any.
async fn live_code<C: ConnectionTrait>(conn: &C, raw: &str, purpose: &str) -> Result<Option<mail_code::Model>> {
    let found = mail_code::Entity::find_by_id(hash_code(raw.trim())).one(conn).await?;
    let now = now_micros();
    Ok(found.filter(|c| c.purpose == purpose && c.used_at.is_none() && c.expires_at > now))
}

/// Spends a code; false if another request spent it first.
async fn spend_code<C: ConnectionTrait>(conn: &C, code_hash: &str) -> Result<bool> {
    let spent = mail_code::Entity::update_many()
        .col_expr(mail_code::Column::UsedAt, Expr::value(now_micros()))
        .filter(mail_code::Column::CodeHash.eq(code_hash))
        .filter(mail_code::Column::UsedAt.is_null())
        .exec(conn)
        .await?;
    Ok(spent.rows_affected == 1)
}

async fn spend_codes_of<C: ConnectionTrait>(conn: &C, user_id: &str, purpose: &str) -> Result<()> {
    mail_code::Entity::update_many()
        .col_expr(mail_code::Column::UsedAt, Expr::value(now_micros()))
        .filter(mail_code::Column::UserId.eq(user_id))
        .filter(mail_code::Column::Purpose.eq(purpose))
        .filter(mail_code::Column::UsedAt.is_null())
        .exec(conn)
        .await?;
    Ok(())
}
