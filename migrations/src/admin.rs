//! Tables of the admin service.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{big_integer, integer, string_len, string_len_null, text};

use crate::{index, migration_name, outbox_table, unique_index};

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(Initial)]
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
