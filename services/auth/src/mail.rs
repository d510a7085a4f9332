//! Mail: written to the `mail_outbox` table in the transaction that asks
//! for it, then sent over SMTP by a relay on every auth node. A mail is
//! claimed before it is sent, so two nodes never send the same one; a
//! failed send is tried again later, with a growing pause. Once the server
//! has taken a mail its body (which holds a code) is blanked.

use std::sync::Arc;
use std::time::Duration;

use colink_runtime::config::MailConfig;
use colink_runtime::db::Db;
use colink_runtime::ids::{new_id, now_micros};
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};
use tokio::sync::Notify;

use crate::store::mail_outbox;

/// How often the relay looks for due mail when nobody tells it.
const POLL: Duration = Duration::from_secs(2);
/// How long a claimed mail is left to its sender before another may try.
const CLAIM: Duration = Duration::from_secs(60);
/// The longest pause between two tries of one mail.
const MAX_BACKOFF: Duration = Duration::from_secs(600);
const BATCH: u64 = 20;

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("auth.mail.url: {0}")]
    Url(String),
    #[error("auth.mail.from: {0}")]
    From(String),
}

/// Sends what the outbox holds.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// Wakes the relay when a mail was just queued.
    queued: Arc<Notify>,
}

impl Mailer {
    /// `None` when the workspace sends no mail.
    pub fn new(config: &MailConfig) -> Result<Option<Arc<Self>>, MailError> {
        if config.url.is_empty() {
            return Ok(None);
        }
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&config.url)
            .map_err(|e| MailError::Url(e.to_string()))?
            .timeout(Some(Duration::from_secs(20)))
            .build();
        let from = config.from.parse::<Mailbox>().map_err(|e| MailError::From(e.to_string()))?;
        Ok(Some(Arc::new(Self { transport, from, queued: Arc::new(Notify::new()) })))
    }

    /// Tells the relay that a mail is waiting (after the queuing commit).
    pub fn wake(&self) {
        self.queued.notify_one();
    }

    /// Sends due mail until the node stops.
    pub async fn relay(self: Arc<Self>, db: Db) {
        loop {
            match self.send_due(&db).await {
                Ok(sent) if sent == BATCH as usize => continue,
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "mail outbox not read"),
            }
            tokio::select! {
                _ = self.queued.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    async fn send_due(&self, db: &Db) -> Result<usize, DbErr> {
        let now = now_micros();
        let due = mail_outbox::Entity::find()
            .filter(mail_outbox::Column::SentAt.is_null())
            .filter(mail_outbox::Column::NextAttemptAt.lte(now))
            .order_by_asc(mail_outbox::Column::CreatedAt)
            .limit(BATCH)
            .all(&db.writer)
            .await?;
        let count = due.len();
        for mail in due {
            // Claim it: only one node's update finds the old time.
            let claimed = mail_outbox::Entity::update_many()
                .col_expr(mail_outbox::Column::NextAttemptAt, Expr::value(now + micros(CLAIM)))
                .filter(mail_outbox::Column::MailId.eq(mail.mail_id.as_str()))
                .filter(mail_outbox::Column::NextAttemptAt.eq(mail.next_attempt_at))
                .exec(&db.writer)
                .await?;
            if claimed.rows_affected != 1 {
                continue;
            }
            let sent = self.send(&mail).await;
            let mut row: mail_outbox::ActiveModel = mail.clone().into();
            match sent {
                Ok(()) => {
                    row.sent_at = Set(Some(now_micros()));
                    row.body = Set(String::new());
                }
                Err(err) => {
                    let attempts = mail.attempts.saturating_add(1);
                    let pause =
                        Duration::from_secs(2u64.saturating_pow(attempts.unsigned_abs().min(16))).min(MAX_BACKOFF);
                    tracing::warn!(mail_id = %mail.mail_id, attempts, error = %err, "mail not sent; trying again later");
                    row.attempts = Set(attempts);
                    row.next_attempt_at = Set(now_micros() + micros(pause));
                }
            }
            row.update(&db.writer).await?;
        }
        Ok(count)
    }

    async fn send(&self, mail: &mail_outbox::Model) -> Result<(), String> {
        let to = mail.recipient.parse::<Mailbox>().map_err(|e| format!("recipient: {e}"))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone())
            .body(mail.body.clone())
            .map_err(|e| e.to_string())?;
        self.transport.send(message).await.map(|_| ()).map_err(|e| e.to_string())
    }
}

/// Queues a mail inside the caller's transaction.
pub async fn queue<C: ConnectionTrait>(conn: &C, recipient: &str, subject: &str, body: String) -> Result<(), DbErr> {
    let now = now_micros();
    mail_outbox::ActiveModel {
        mail_id: Set(new_id()),
        recipient: Set(recipient.to_string()),
        subject: Set(subject.to_string()),
        body: Set(body),
        attempts: Set(0),
        next_attempt_at: Set(now),
        created_at: Set(now),
        sent_at: Set(None),
    }
    .insert(conn)
    .await?;
    Ok(())
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}
