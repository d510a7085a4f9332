//! Tables of the admin service.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{big_integer, big_integer_null, integer, string_len, string_len_null, text};

use crate::{idempotency_keys_table, index, migration_name, outbox_table, unique_index};

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(Initial), Box::new(IdempotencyKeys), Box::new(AuditChain), Box::new(Reports), Box::new(Sanctions)]
    }
}

migration_name!(Initial, "m0001_admin_initial");

#[async_trait::async_trait]
impl MigrationTrait for Initial {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // An entry made from a domain event takes the event's id, so a
        // redelivered event finds its entry already there.
        manager
            .create_table(
                Table::create()
                    .table("audit_logs")
                    .if_not_exists()
                    .col(string_len("audit_log_id", 36).primary_key())
                    .col(string_len("actor_id", 36))
                    .col(string_len("actor_role", 16))
                    .col(string_len("action", 64))
                    .col(string_len("target_type", 32))
                    .col(string_len("target_id", 36))
                    .col(string_len("reason", 1000))
                    .col(text("metadata"))
                    .col(string_len("request_id", 64))
                    .col(string_len("client_ip", 64))
                    .col(big_integer("created_at"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(index("audit_logs_by_time", "audit_logs", &["created_at", "audit_log_id"])).await?;
        manager.create_index(index("audit_logs_by_actor", "audit_logs", &["actor_id", "created_at"])).await?;
        manager.create_index(index("audit_logs_by_target", "audit_logs", &["target_id", "created_at"])).await?;
        manager
            .create_table(
                Table::create()
                    .table("moderations")
                    .if_not_exists()
                    .col(string_len("moderation_id", 36).primary_key())
                    .col(string_len("message_id", 36))
                    .col(string_len("channel_id", 36))
                    .col(string_len("sender_id", 36))
                    .col(integer("action"))
                    .col(string_len("reason", 1000))
                    .col(string_len("actor_id", 36))
                    .col(string_len("report_id", 36))
                    .col(string_len_null("idempotency_key", 128))
                    .col(big_integer("created_at"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(index("moderations_by_message", "moderations", &["message_id", "created_at"])).await?;
        manager
            .create_index(unique_index(
                "moderations_by_idempotency_key",
                "moderations",
                &["actor_id", "idempotency_key", "message_id"],
            ))
            .await?;
        manager.create_table(outbox_table()).await
    }
}

migration_name!(IdempotencyKeys, "m0002_admin_idempotency_keys");

#[async_trait::async_trait]
impl MigrationTrait for IdempotencyKeys {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.create_table(idempotency_keys_table()).await
    }
}

migration_name!(AuditChain, "m0003_admin_audit_chain");

#[async_trait::async_trait]
impl MigrationTrait for AuditChain {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Entries written before the chain have no position; the admin
        // service chains them when it starts.
        let columns = [
            big_integer_null("chain_position"),
            string_len("previous_hash", 64).default("").to_owned(),
            string_len("entry_hash", 64).default("").to_owned(),
        ];
        for mut column in columns {
            manager.alter_table(Table::alter().table("audit_logs").add_column(&mut column).to_owned()).await?;
        }
        manager.create_index(unique_index("audit_logs_by_position", "audit_logs", &["chain_position"])).await?;
        // The chain's newest link, one row: every append locks it, so that
        // appends on any node form one chain.
        manager
            .create_table(
                Table::create()
                    .table("audit_chain_head")
                    .if_not_exists()
                    .col(integer("chain_id").primary_key())
                    .col(big_integer("position"))
                    .col(string_len("hash", 64))
                    .to_owned(),
            )
            .await?;
        let genesis = Query::insert()
            .into_table("audit_chain_head")
            .columns(["chain_id", "position", "hash"])
            .values_panic([1.into(), 0i64.into(), "".into()])
            .to_owned();
        manager.exec_stmt(genesis).await
    }
}

migration_name!(Reports, "m0004_admin_reports");

#[async_trait::async_trait]
impl MigrationTrait for Reports {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("message_reports")
                    .if_not_exists()
                    .col(string_len("report_id", 36).primary_key())
                    .col(string_len("message_id", 36))
                    .col(string_len("channel_id", 36))
                    .col(string_len("reported_user_id", 36))
                    .col(string_len("reporter_id", 36))
                    .col(integer("reason"))
                    .col(string_len("details", 1000))
                    .col(text("message_text_snapshot"))
                    .col(integer("status"))
                    // "<reporter>:<message>" while open, NULL once resolved: one
                    // open report per reporter and message.
                    .col(string_len_null("open_key", 80).unique_key())
                    .col(string_len("resolution_note", 1000))
                    .col(string_len("resolved_by", 36))
                    .col(string_len("moderation_id", 36))
                    .col(big_integer("created_at"))
                    .col(big_integer_null("resolved_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index("message_reports_queue", "message_reports", &["status", "created_at", "report_id"]))
            .await
    }
}

migration_name!(Sanctions, "m0005_admin_sanctions");

#[async_trait::async_trait]
impl MigrationTrait for Sanctions {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("user_sanctions")
                    .if_not_exists()
                    .col(string_len("sanction_id", 36).primary_key())
                    .col(string_len("user_id", 36))
                    .col(integer("kind"))
                    .col(string_len("channel_id", 36))
                    .col(string_len("reason", 1000))
                    .col(string_len("created_by", 36))
                    .col(big_integer("created_at"))
                    .col(big_integer_null("expire_at"))
                    .col(big_integer_null("lifted_at"))
                    .col(string_len("lifted_by", 36))
                    .col(string_len("lift_reason", 1000))
                    // "<user>:<kind>:<channel>" while it may be in force, NULL
                    // once lifted: one such sanction per scope.
                    .col(string_len_null("active_key", 120).unique_key())
                    .to_owned(),
            )
            .await?;
        manager.create_index(index("user_sanctions_by_user", "user_sanctions", &["user_id", "created_at"])).await?;
        manager.create_index(index("user_sanctions_by_time", "user_sanctions", &["created_at", "sanction_id"])).await
    }
}
