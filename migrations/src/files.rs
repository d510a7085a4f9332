//! Tables of the files service.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{big_integer, big_integer_null, boolean, integer, string_len, text};

use crate::{idempotency_keys_table, index, migration_name, outbox_table, processed_events_table};

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(Initial), Box::new(RetentionPolicies)]
    }
}

migration_name!(Initial, "m0001_files_initial");

#[async_trait::async_trait]
impl MigrationTrait for Initial {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // `object_key` moves with the file: the upload key until the bytes
        // are confirmed, then a key no upload URL can write to, and aside
        // into quarantine when the scanner finds something.
        manager
            .create_table(
                Table::create()
                    .table("files")
                    .if_not_exists()
                    .col(string_len("file_id", 36).primary_key())
                    .col(string_len("owner_id", 36))
                    .col(string_len("channel_id", 36))
                    .col(text("filename"))
                    .col(text("description"))
                    .col(string_len("declared_type", 255))
                    .col(string_len("mime_type", 255))
                    .col(integer("file_type"))
                    .col(big_integer("size_bytes"))
                    .col(string_len("expected_sha256", 64))
                    .col(string_len("sha256", 64))
                    .col(integer("access"))
                    .col(integer("state"))
                    .col(integer("scan_status"))
                    .col(string_len("scan_signature", 255))
                    .col(big_integer_null("scan_time"))
                    .col(integer("width"))
                    .col(integer("height"))
                    .col(integer("retention_days"))
                    .col(boolean("keep_forever"))
                    .col(string_len("object_key", 255))
                    .col(big_integer("upload_expires_at"))
                    .col(big_integer("created_at"))
                    .col(big_integer_null("uploaded_at"))
                    .col(big_integer("updated_at"))
                    .col(big_integer_null("deleted_at"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(index("files_by_owner", "files", &["owner_id", "created_at", "file_id"])).await?;
        manager.create_index(index("files_by_channel", "files", &["channel_id", "created_at", "file_id"])).await?;
        manager.create_index(index("files_by_state", "files", &["state", "upload_expires_at"])).await?;
        manager
            .create_table(
                Table::create()
                    .table("file_thumbnails")
                    .if_not_exists()
                    .col(string_len("file_id", 36))
                    .col(integer("size"))
                    .col(integer("width"))
                    .col(integer("height"))
                    .col(string_len("mime_type", 64))
                    .col(big_integer("size_bytes"))
                    .col(string_len("object_key", 255))
                    .primary_key(Index::create().col("file_id").col("size"))
                    .to_owned(),
            )
            .await?;
        // The conversations a file is attached to a message in: their
        // members may see it.
        manager
            .create_table(
                Table::create()
                    .table("file_attachments")
                    .if_not_exists()
                    .col(string_len("file_id", 36))
                    .col(string_len("message_id", 36))
                    .col(string_len("channel_id", 36))
                    .col(big_integer("created_at"))
                    .primary_key(Index::create().col("file_id").col("message_id"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index("file_attachments_by_channel", "file_attachments", &["channel_id", "file_id"]))
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("file_shares")
                    .if_not_exists()
                    .col(string_len("file_id", 36))
                    .col(string_len("user_id", 36))
                    .col(integer("permission"))
                    .col(string_len("shared_by_id", 36))
                    .col(big_integer("created_at"))
                    .col(big_integer_null("expires_at"))
                    .primary_key(Index::create().col("file_id").col("user_id"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(index("file_shares_by_user", "file_shares", &["user_id", "created_at"])).await?;
        // One row per user, and one for the whole workspace (user id "*").
        // A null quota follows the configured default.
        manager
            .create_table(
                Table::create()
                    .table("storage_quotas")
                    .if_not_exists()
                    .col(string_len("user_id", 36).primary_key())
                    .col(big_integer_null("quota_bytes"))
                    .col(big_integer("used_bytes"))
                    .col(big_integer("reserved_bytes"))
                    .col(big_integer("file_count"))
                    .col(big_integer("updated_at"))
                    .to_owned(),
            )
            .await?;
        // What each retention run deleted: files and bytes, in all and per
        // channel (a JSON object in `per_channel`).
        manager
            .create_table(
                Table::create()
                    .table("retention_runs")
                    .if_not_exists()
                    .col(string_len("run_id", 36).primary_key())
                    .col(big_integer("started_at"))
                    .col(big_integer("finished_at"))
                    .col(big_integer("files_deleted"))
                    .col(big_integer("bytes_deleted"))
                    .col(text("per_channel"))
                    .to_owned(),
            )
            .await?;
        manager.create_table(outbox_table()).await?;
        manager.create_table(processed_events_table()).await?;
        manager.create_table(idempotency_keys_table()).await?;
        Ok(())
    }
}

migration_name!(RetentionPolicies, "m0002_files_retention_policies");

#[async_trait::async_trait]
impl MigrationTrait for RetentionPolicies {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("file_retention_policies")
                    .if_not_exists()
                    // A `FileType` value.
                    .col(integer("file_type").primary_key())
                    .col(integer("retention_days"))
                    .col(boolean("auto_delete"))
                    .col(string_len("updated_by", 36))
                    .col(big_integer("updated_at"))
                    .to_owned(),
            )
            .await?;
        // Runs started by an admin, and dry runs, are reported too.
        for (name, mut column) in [
            ("dry_run", boolean("dry_run").default(false).to_owned()),
            ("started_by", string_len("started_by", 36).default("").to_owned()),
        ] {
            if !manager.has_column("retention_runs", name).await? {
                manager.alter_table(Table::alter().table("retention_runs").add_column(&mut column).to_owned()).await?;
            }
        }
        Ok(())
    }
}
