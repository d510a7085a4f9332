//! Tables of the channels service.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{big_integer, big_integer_null, boolean, integer, string_len, string_len_null};

use crate::{add_request_fingerprint, index, migration_name, outbox_table, unique_index};

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(Initial), Box::new(RequestFingerprints), Box::new(IdempotencyKeys), Box::new(Restrictions)]
    }
}

migration_name!(Initial, "m0001_channels_initial");

#[async_trait::async_trait]
impl MigrationTrait for Initial {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("channels")
                    .if_not_exists()
                    .col(string_len("channel_id", 36).primary_key())
                    .col(integer("kind"))
                    // NULL for DMs; unique among channels.
                    .col(string_len_null("name", 80))
                    .col(string_len("topic", 250))
                    .col(string_len("description", 1000))
                    .col(string_len("creator_id", 36))
                    .col(boolean("archived"))
                    // Sorted participant ids of a DM; NULL for channels.
                    .col(string_len_null("dm_key", 400))
                    .col(integer("member_count"))
                    .col(big_integer("created_at"))
                    .col(big_integer("updated_at"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(unique_index("channels_name", "channels", &["name"])).await?;
        manager.create_index(unique_index("channels_dm_key", "channels", &["dm_key"])).await?;
        manager
            .create_table(
                Table::create()
                    .table("channel_members")
                    .if_not_exists()
                    .col(string_len("channel_id", 36))
                    .col(string_len("user_id", 36))
                    .col(integer("role"))
                    .col(boolean("muted"))
                    .col(boolean("hidden"))
                    .col(boolean("starred"))
                    .col(big_integer("joined_at"))
                    .primary_key(Index::create().col("channel_id").col("user_id"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(index("channel_members_by_user", "channel_members", &["user_id", "joined_at"])).await?;
        manager
            .create_table(
                Table::create()
                    .table("channel_invitations")
                    .if_not_exists()
                    .col(string_len("invitation_id", 36).primary_key())
                    .col(string_len("channel_id", 36))
                    .col(string_len("inviter_id", 36))
                    .col(string_len("invitee_id", 36))
                    .col(integer("state"))
                    .col(big_integer("created_at"))
                    .col(big_integer("expires_at"))
                    .col(big_integer_null("responded_at"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(index("invitations_by_invitee", "channel_invitations", &["invitee_id", "state"])).await?;
        manager
            .create_table(
                Table::create()
                    .table("channel_idempotency")
                    .if_not_exists()
                    .col(string_len("creator_id", 36))
                    .col(string_len("idempotency_key", 128))
                    .col(string_len("channel_id", 36))
                    .col(big_integer("created_at"))
                    .primary_key(Index::create().col("creator_id").col("idempotency_key"))
                    .to_owned(),
            )
            .await?;
        manager.create_table(outbox_table()).await
    }
}

migration_name!(RequestFingerprints, "m0002_channels_request_fingerprints");

#[async_trait::async_trait]
impl MigrationTrait for RequestFingerprints {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        add_request_fingerprint(manager, "channel_idempotency").await
    }
}

migration_name!(IdempotencyKeys, "m0003_channels_idempotency_keys");

#[async_trait::async_trait]
impl MigrationTrait for IdempotencyKeys {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.create_table(crate::idempotency_keys_table()).await?;
        manager.create_index(crate::index("idempotency_keys_by_age", "idempotency_keys", &["created_at"])).await
    }
}

migration_name!(Restrictions, "m0004_channels_member_restrictions");

#[async_trait::async_trait]
impl MigrationTrait for Restrictions {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("member_restrictions")
                    .if_not_exists()
                    .col(string_len("user_id", 36))
                    // Empty for the whole workspace.
                    .col(string_len("channel_id", 36))
                    // A `RestrictionKind` value.
                    .col(integer("kind"))
                    // NULL: for good.
                    .col(big_integer_null("expire_at"))
                    .col(big_integer("created_at"))
                    .primary_key(Index::create().col("user_id").col("channel_id").col("kind"))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}
