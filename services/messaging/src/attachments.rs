//! Files on messages. The files service decides who may attach what (asked
//! at every send); this side remembers which messages carry which file, so
//! that when a file's scan ends every conversation showing it hears so: a
//! clean file becomes downloadable, an infected one leaves the message.

use std::sync::Arc;

use colink_proto::events::v1::Event;
use colink_proto::events::v1::event::Payload;
use colink_proto::files::v1::ScanStatus;
use colink_proto::messaging::v1::AttachmentChanged;
use colink_proto::messaging::v1::channel_event::Kind;
use colink_runtime::db::Db;
use colink_runtime::events::{EventError, EventHandler, mark_processed};
use colink_runtime::pubsub::{Frame, PubSub, channel_topic};
use prost::Message as _;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, FromQueryResult, Set, Statement,
    StatementBuilder, TransactionTrait,
};

use crate::log;
use crate::store::message;

pub(crate) const TABLE: &str = "message_files";

/// One file on one new message.
pub(crate) struct Attached {
    pub file_id: String,
    pub message_id: String,
    pub channel_id: String,
    /// The file's scan had ended when the message was admitted: there is
    /// nothing left to announce.
    pub settled: bool,
}

/// The statement that remembers the files of new messages; None when
/// they have none.
pub(crate) fn record(backend: DbBackend, attached: &[Attached]) -> Option<Statement> {
    if attached.is_empty() {
        return None;
    }
    let mut insert = Query::insert();
    insert.into_table(TABLE).columns(["file_id", "message_id", "channel_id", "settled"]);
    for a in attached {
        insert.values_panic([
            a.file_id.as_str().into(),
            a.message_id.as_str().into(),
            a.channel_id.as_str().into(),
            a.settled.into(),
        ]);
    }
    insert.on_conflict(OnConflict::columns(["file_id", "message_id"]).do_nothing().to_owned());
    Some(StatementBuilder::build(&insert, &backend))
}

/// How a file's scan ended, as a message carrying it sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Verdict {
    status: ScanStatus,
    /// The file leaves the messages: it was infected or could not be scanned.
    removed: bool,
}

impl Verdict {
    /// The end of a scan, or None while it goes on (or when there is none).
    pub(crate) fn of(status: ScanStatus) -> Option<Self> {
        match status {
            ScanStatus::Clean => Some(Verdict { status, removed: false }),
            ScanStatus::Infected | ScanStatus::Failed => Some(Verdict { status, removed: true }),
            _ => None,
        }
    }

    fn of_event(status: &str) -> Option<Self> {
        match status {
            "clean" => Self::of(ScanStatus::Clean),
            "infected" => Self::of(ScanStatus::Infected),
            "failed" => Self::of(ScanStatus::Failed),
            _ => None,
        }
    }
}

#[derive(FromQueryResult)]
struct Carrier {
    message_id: String,
}

/// Where a scan's end is announced: the conversations' logs and streams.
#[derive(Clone)]
pub(crate) struct Announcer {
    pub db: Db,
    pub pubsub: Arc<dyn PubSub>,
}

impl Announcer {
    /// Each live message carrying the file that has not heard how its scan
    /// ended gets an `attachment_changed` entry in its conversation's log,
    /// and loses the file when it was found infected or could not be
    /// scanned. Only `message_id` when one is named. With an `event_id`, an
    /// event already handled changes nothing.
    ///
    /// Both the send (for files still scanning when it was admitted) and the
    /// consumer of `file.scanned` call this, since the scan may end while the
    /// message is being stored; claiming the row (`settled = false` becoming
    /// true, or the row going) lets exactly one of them announce it.
    pub(crate) async fn settle(
        &self,
        file_id: &str,
        verdict: Verdict,
        actor_id: &str,
        message_id: Option<&str>,
        event_id: Option<&str>,
    ) -> Result<(), DbErr> {
        let mut query = Query::select()
            .column("message_id")
            .from(TABLE)
            .and_where(Expr::col("file_id").eq(file_id))
            .and_where(Expr::col("settled").eq(false))
            .to_owned();
        if let Some(message_id) = message_id {
            query.and_where(Expr::col("message_id").eq(message_id));
        }
        let backend = self.db.writer.get_database_backend();
        let carriers =
            Carrier::find_by_statement(StatementBuilder::build(&query, &backend)).all(&self.db.writer).await?;
        if carriers.is_empty() {
            return Ok(());
        }
        let txn = self.db.writer.begin().await?;
        if let Some(event_id) = event_id
            && !mark_processed(&txn, event_id).await?
        {
            return Ok(());
        }
        let mut appended = Vec::new();
        for carrier in carriers {
            if !claim(&txn, file_id, &carrier.message_id, verdict.removed).await? {
                continue;
            }
            let Some(found) = message::Entity::find_by_id(carrier.message_id.clone()).one(&txn).await? else {
                continue;
            };
            if found.deleted_at.is_some() || found.recalled {
                continue;
            }
            if verdict.removed {
                let kept: Vec<&str> = found.file_ids.split(',').filter(|id| !id.is_empty() && *id != file_id).collect();
                let mut change: message::ActiveModel = found.clone().into();
                change.file_ids = Set(kept.join(","));
                change.update(&txn).await?;
            }
            let kind = Kind::AttachmentChanged(AttachmentChanged {
                message_id: found.message_id.clone(),
                thread_id: found.thread_id.clone().unwrap_or_default(),
                file_id: file_id.to_string(),
                scan_status: verdict.status as i32,
                removed: verdict.removed,
            });
            appended.push(log::append(&txn, &found.channel_id, actor_id, kind).await?);
        }
        txn.commit().await?;
        for entry in appended {
            let frame = Frame::Event(entry.encode_to_vec().into()).encode();
            self.pubsub.publish(&channel_topic(&entry.channel_id), frame).await;
        }
        Ok(())
    }
}

/// Takes the announcement of a file's verdict on a message for this
/// transaction: false when another one took it first. A removed file's row
/// goes; a kept file's row is marked settled.
async fn claim<C: ConnectionTrait>(conn: &C, file_id: &str, message_id: &str, removed: bool) -> Result<bool, DbErr> {
    let claimed = if removed {
        let delete = Query::delete()
            .from_table(TABLE)
            .and_where(Expr::col("file_id").eq(file_id))
            .and_where(Expr::col("message_id").eq(message_id))
            .and_where(Expr::col("settled").eq(false))
            .to_owned();
        conn.execute(&delete).await?
    } else {
        let update = Query::update()
            .table(TABLE)
            .value("settled", true)
            .and_where(Expr::col("file_id").eq(file_id))
            .and_where(Expr::col("message_id").eq(message_id))
            .and_where(Expr::col("settled").eq(false))
            .to_owned();
        conn.execute(&update).await?
    };
    Ok(claimed.rows_affected() == 1)
}

/// Consumes `file.scanned`: announces the verdict to the messages carrying
/// the file.
pub(crate) struct ScanWatcher(pub Announcer);

#[async_trait::async_trait]
impl EventHandler for ScanWatcher {
    async fn handle(&self, event: &Event) -> Result<(), EventError> {
        let Some(Payload::FileChanged(file)) = &event.payload else { return Ok(()) };
        if event.r#type != "file.scanned" {
            return Ok(());
        }
        let Some(verdict) = Verdict::of_event(&file.scan_status) else { return Ok(()) };
        self.0
            .settle(&file.file_id, verdict, &event.actor_id, None, Some(&event.event_id))
            .await
            .map_err(|e| EventError::Consumer(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use colink_runtime::pubsub::MemoryPubSub;
    use sea_orm::{Database, PaginatorTrait};
    use sea_orm_migration::MigratorTrait;

    use super::*;
    use crate::store::channel_event;

    async fn db() -> Db {
        let conn = Database::connect("sqlite::memory:").await.expect("opens");
        colink_migrations::messaging::Migrator::up(&conn, None).await.expect("migrates");
        Db::new(conn.clone(), conn)
    }

    /// A message carrying `file_id`, as a send stores it.
    async fn carrying(db: &Db, message_id: &str, file_id: &str, settled: bool) {
        let seq = message::Entity::find().count(&db.writer).await.expect("counts") as i64 + 1;
        let row = message::Model {
            message_id: message_id.into(),
            channel_id: "general".into(),
            seq,
            sender_id: "ann".into(),
            text: String::new(),
            thread_id: None,
            file_ids: file_id.into(),
            version: 1,
            created_at: 0,
            edited_at: None,
            deleted_at: None,
            recalled: false,
            pinned_at: None,
            pinned_by: None,
            also_in_channel: false,
            ordinal: Some(0),
            mentioned_ids: String::new(),
            mentions_channel: false,
            mentions_here: false,
            expired_at: None,
            hidden_at: None,
        };
        message::ActiveModel::from(row).insert(&db.writer).await.expect("stores the message");
        let attached =
            Attached { file_id: file_id.into(), message_id: message_id.into(), channel_id: "general".into(), settled };
        let statement = record(db.writer.get_database_backend(), &[attached]).expect("a statement for a file");
        db.writer.execute_raw(statement).await.expect("records the file");
    }

    async fn announcements(db: &Db) -> u64 {
        channel_event::Entity::find().count(&db.writer).await.expect("counts")
    }

    fn announcer(db: &Db) -> Announcer {
        Announcer { db: db.clone(), pubsub: Arc::new(MemoryPubSub::new(16)) }
    }

    #[tokio::test]
    async fn a_verdict_reaches_a_message_once_whoever_settles_it_first() {
        let db = db().await;
        let announcer = announcer(&db);
        let clean = Verdict::of(ScanStatus::Clean).expect("a verdict");
        // The scan's consumer first, then the send that stored the message.
        carrying(&db, "m1", "f1", false).await;
        announcer.settle("f1", clean, "scanner", None, Some("event-1")).await.expect("settles");
        announcer.settle("f1", clean, "ann", Some("m1"), None).await.expect("settles");
        assert_eq!(announcements(&db).await, 1);
        // The send first (the scan ended before the message was stored), then
        // the consumer, which finds nothing left to tell.
        carrying(&db, "m2", "f2", false).await;
        announcer.settle("f2", clean, "ann", Some("m2"), None).await.expect("settles");
        announcer.settle("f2", clean, "scanner", None, Some("event-2")).await.expect("settles");
        assert_eq!(announcements(&db).await, 2);
    }

    #[tokio::test]
    async fn an_infected_file_leaves_the_message_once() {
        let db = db().await;
        let announcer = announcer(&db);
        let infected = Verdict::of(ScanStatus::Infected).expect("a verdict");
        carrying(&db, "m1", "f1", false).await;
        announcer.settle("f1", infected, "ann", Some("m1"), None).await.expect("settles");
        announcer.settle("f1", infected, "scanner", None, Some("event-1")).await.expect("settles");
        assert_eq!(announcements(&db).await, 1);
        let found = message::Entity::find_by_id("m1").one(&db.writer).await.expect("reads").expect("kept");
        assert_eq!(found.file_ids, "", "the file left the message");
    }

    #[tokio::test]
    async fn a_file_clean_before_the_send_is_not_announced_again() {
        let db = db().await;
        let clean = Verdict::of(ScanStatus::Clean).expect("a verdict");
        carrying(&db, "m1", "f1", true).await;
        announcer(&db).settle("f1", clean, "scanner", None, Some("event-1")).await.expect("settles");
        assert_eq!(announcements(&db).await, 0);
    }
}
