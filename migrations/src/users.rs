//! Tables of the users service.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{big_integer, boolean, integer, string_len};

use crate::{index, migration_name, outbox_table, processed_events_table};

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(Initial)]
    }
}

migration_name!(Initial, "m0001_users_initial");

#[async_trait::async_trait]
impl MigrationTrait for Initial {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("user_profiles")
                    .if_not_exists()
                    .col(string_len("user_id", 36).primary_key())
                    .col(string_len("username", 32).unique_key())
                    .col(string_len("display_name", 64))
                    .col(string_len("avatar_url", 512))
                    .col(string_len("bio", 1000))
                    .col(string_len("status_text", 100))
                    .col(string_len("status_emoji", 32))
                    .col(string_len("time_zone", 64))
                    .col(boolean("deactivated"))
                    .col(big_integer("created_at"))
                    .col(big_integer("updated_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("user_settings")
                    .if_not_exists()
                    .col(string_len("user_id", 36).primary_key())
                    .col(string_len("language", 16))
                    .col(integer("theme"))
                    .col(boolean("show_last_active"))
                    .col(boolean("send_read_receipts"))
                    .col(integer("direct_message_policy"))
                    .col(big_integer("updated_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("contacts")
                    .if_not_exists()
                    .col(string_len("user_id", 36))
                    .col(string_len("contact_id", 36))
                    .col(string_len("relationship", 50))
                    .col(big_integer("created_at"))
                    .primary_key(Index::create().col("user_id").col("contact_id"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("blocks")
                    .if_not_exists()
                    .col(string_len("user_id", 36))
                    .col(string_len("blocked_id", 36))
                    .col(big_integer("created_at"))
                    .primary_key(Index::create().col("user_id").col("blocked_id"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(index("blocks_by_blocked", "blocks", &["blocked_id"])).await?;
        manager.create_table(outbox_table()).await?;
        manager.create_table(processed_events_table()).await
    }
}
