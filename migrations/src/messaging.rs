//! Tables of the messaging service.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_integer, big_integer_null, big_pk_auto, blob, boolean, integer, string_len, string_len_null, text,
};

use crate::{add_request_fingerprint, index, migration_name, outbox_table, processed_events_table, unique_index};

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(Initial),
            Box::new(RequestFingerprints),
            Box::new(ThreadsAndReactions),
            Box::new(UnreadAndMentions),
            Box::new(IdempotencyKeys),
            Box::new(ReadStatesByUser),
            Box::new(MessageFiles),
            Box::new(SettledAttachments),
            Box::new(Retention),
            Box::new(HiddenMessages),
            Box::new(Mutes),
        ]
    }
}

migration_name!(Initial, "m0001_messaging_initial");

#[async_trait::async_trait]
impl MigrationTrait for Initial {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("messages")
                    .if_not_exists()
                    .col(string_len("message_id", 36).primary_key())
                    .col(string_len("channel_id", 36))
                    .col(big_integer("seq"))
                    .col(string_len("sender_id", 36))
                    .col(text("text"))
                    .col(string_len_null("thread_id", 36))
                    // Comma-separated file ids.
                    .col(string_len("file_ids", 400))
                    .col(integer("version"))
                    .col(big_integer("created_at"))
                    .col(big_integer_null("edited_at"))
                    .col(big_integer_null("deleted_at"))
                    .col(boolean("recalled"))
                    .col(big_integer_null("pinned_at"))
                    .col(string_len_null("pinned_by", 36))
                    .to_owned(),
            )
            .await?;
        manager.create_index(unique_index("messages_by_channel_seq", "messages", &["channel_id", "seq"])).await?;
        manager.create_index(index("messages_by_thread", "messages", &["thread_id", "seq"])).await?;
        manager
            .create_table(
                Table::create()
                    .table("message_edits")
                    .if_not_exists()
                    .col(big_pk_auto("id"))
                    .col(string_len("message_id", 36))
                    .col(integer("version"))
                    .col(text("text"))
                    .col(string_len("editor_id", 36))
                    .col(big_integer("edited_at"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(index("message_edits_by_message", "message_edits", &["message_id", "version"])).await?;
        manager
            .create_table(
                Table::create()
                    .table("channel_events")
                    .if_not_exists()
                    .col(string_len("channel_id", 36))
                    .col(big_integer("seq"))
                    // An encoded colink.messaging.v1.ChannelEvent.
                    .col(blob("payload"))
                    .col(big_integer("created_at"))
                    .primary_key(Index::create().col("channel_id").col("seq"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("channel_heads")
                    .if_not_exists()
                    .col(string_len("channel_id", 36).primary_key())
                    .col(big_integer("last_seq"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("message_idempotency")
                    .if_not_exists()
                    .col(string_len("sender_id", 36))
                    .col(string_len("idempotency_key", 128))
                    .col(string_len("message_id", 36))
                    .col(big_integer("created_at"))
                    .primary_key(Index::create().col("sender_id").col("idempotency_key"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("read_states")
                    .if_not_exists()
                    .col(string_len("channel_id", 36))
                    .col(string_len("user_id", 36))
                    .col(big_integer("last_read_seq"))
                    .col(big_integer("updated_at"))
                    .primary_key(Index::create().col("channel_id").col("user_id"))
                    .to_owned(),
            )
            .await?;
        manager.create_table(outbox_table()).await?;
        manager.create_table(processed_events_table()).await
    }
}

migration_name!(RequestFingerprints, "m0002_messaging_request_fingerprints");

#[async_trait::async_trait]
impl MigrationTrait for RequestFingerprints {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        add_request_fingerprint(manager, "message_idempotency").await
    }
}

migration_name!(ThreadsAndReactions, "m0003_messaging_threads_reactions");

#[async_trait::async_trait]
impl MigrationTrait for ThreadsAndReactions {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if !manager.has_column("messages", "also_in_channel").await? {
            manager
                .alter_table(
                    Table::alter().table("messages").add_column(boolean("also_in_channel").default(false)).to_owned(),
                )
                .await?;
        }
        manager
            .create_table(
                Table::create()
                    .table("threads")
                    .if_not_exists()
                    // The id of the root message.
                    .col(string_len("thread_id", 36).primary_key())
                    .col(string_len("channel_id", 36))
                    .col(string_len("creator_id", 36))
                    .col(string_len("root_sender_id", 36))
                    .col(string_len("first_reply_id", 36))
                    // Live replies: not deleted, not recalled.
                    .col(integer("reply_count"))
                    .col(string_len_null("last_reply_id", 36))
                    .col(big_integer("last_reply_seq"))
                    .col(big_integer_null("last_reply_at"))
                    .col(big_integer("created_at"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(index("threads_by_channel", "threads", &["channel_id", "last_reply_at"])).await?;
        manager
            .create_table(
                Table::create()
                    .table("thread_participants")
                    .if_not_exists()
                    .col(string_len("thread_id", 36))
                    .col(string_len("user_id", 36))
                    .col(integer("reply_count"))
                    .col(big_integer("last_reply_at"))
                    .primary_key(Index::create().col("thread_id").col("user_id"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("thread_followers")
                    .if_not_exists()
                    .col(string_len("thread_id", 36))
                    .col(string_len("user_id", 36))
                    .col(string_len("channel_id", 36))
                    .col(boolean("following"))
                    .col(big_integer("last_read_seq"))
                    .col(string_len_null("last_read_id", 36))
                    .col(big_integer("updated_at"))
                    .primary_key(Index::create().col("thread_id").col("user_id"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(index("thread_followers_by_user", "thread_followers", &["user_id", "channel_id"])).await?;
        manager
            .create_table(
                Table::create()
                    .table("reactions")
                    .if_not_exists()
                    .col(string_len("message_id", 36))
                    .col(string_len("user_id", 36))
                    .col(string_len("emoji", 64))
                    .col(string_len("channel_id", 36))
                    .col(big_integer("created_at"))
                    .primary_key(Index::create().col("message_id").col("user_id").col("emoji"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(index("reactions_by_emoji", "reactions", &["message_id", "emoji", "created_at"])).await?;
        manager
            .create_table(
                Table::create()
                    .table("reaction_counts")
                    .if_not_exists()
                    .col(string_len("message_id", 36))
                    .col(string_len("emoji", 64))
                    .col(integer("count"))
                    .col(big_integer("first_at"))
                    .primary_key(Index::create().col("message_id").col("emoji"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("reaction_idempotency")
                    .if_not_exists()
                    .col(string_len("user_id", 36))
                    .col(string_len("idempotency_key", 128))
                    .col(string_len("message_id", 36))
                    .col(string_len("emoji", 64))
                    .col(big_integer("created_at"))
                    .col(string_len_null("request_fingerprint", 32))
                    .primary_key(Index::create().col("user_id").col("idempotency_key"))
                    .to_owned(),
            )
            .await
    }
}

migration_name!(UnreadAndMentions, "m0004_messaging_unread_mentions");

#[async_trait::async_trait]
impl MigrationTrait for UnreadAndMentions {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let columns: [(&str, ColumnDef); 8] = [
            // A member's read state is kept from their joining on.
            ("read_states", boolean("muted").default(false).to_owned()),
            ("read_states", big_integer("delivered_seq").default(0).to_owned()),
            // How many main-flow messages the conversation had up to the read position.
            ("read_states", big_integer("read_ordinal").default(0).to_owned()),
            // Main-flow messages ever posted; a message's ordinal is the count after it.
            ("channel_heads", big_integer("message_count").default(0).to_owned()),
            ("messages", big_integer_null("ordinal").to_owned()),
            // Comma-separated ids of the members mentioned.
            ("messages", text("mentioned_ids").default("").to_owned()),
            ("messages", boolean("mentions_channel").default(false).to_owned()),
            ("messages", boolean("mentions_here").default(false).to_owned()),
        ];
        for (table, mut column) in columns {
            let name = column.get_column_name();
            if !manager.has_column(table, &name).await? {
                manager.alter_table(Table::alter().table(table).add_column(&mut column).to_owned()).await?;
            }
        }
        manager
            .create_table(
                Table::create()
                    .table("mentions")
                    .if_not_exists()
                    .col(string_len("user_id", 36))
                    .col(string_len("message_id", 36))
                    .col(string_len("channel_id", 36))
                    .col(big_integer("seq"))
                    .col(string_len_null("thread_id", 36))
                    // The mention counts in the channel's main flow.
                    .col(boolean("in_channel"))
                    .col(string_len("sender_id", 36))
                    .col(big_integer("created_at"))
                    .primary_key(Index::create().col("user_id").col("message_id"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(index("mentions_by_channel", "mentions", &["user_id", "channel_id", "seq"])).await?;
        manager.create_index(index("mentions_by_message", "mentions", &["message_id"])).await?;
        manager
            .create_table(
                Table::create()
                    .table("broadcasts")
                    .if_not_exists()
                    .col(string_len("message_id", 36).primary_key())
                    .col(string_len("channel_id", 36))
                    .col(big_integer("seq"))
                    .col(string_len_null("thread_id", 36))
                    .col(boolean("in_channel"))
                    .col(string_len("sender_id", 36))
                    .col(big_integer("created_at"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(index("broadcasts_by_channel", "broadcasts", &["channel_id", "seq"])).await?;
        manager
            .create_table(
                Table::create()
                    .table("removed_messages")
                    .if_not_exists()
                    .col(string_len("channel_id", 36))
                    .col(big_integer("seq"))
                    .primary_key(Index::create().col("channel_id").col("seq"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(index("read_states_by_user", "read_states", &["user_id"])).await
    }
}

migration_name!(IdempotencyKeys, "m0005_messaging_idempotency_keys");

#[async_trait::async_trait]
impl MigrationTrait for IdempotencyKeys {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.create_table(crate::idempotency_keys_table()).await?;
        manager.create_index(index("idempotency_keys_by_age", "idempotency_keys", &["created_at"])).await
    }
}

migration_name!(ReadStatesByUser, "m0006_messaging_read_states_by_user");

/// Unread counts read every read position of one user. With the positions
/// of a workspace's other members around them, reaching each row through an
/// index on the user alone scatters those reads over the whole table; an
/// index that also holds what the counts read keeps them together.
#[async_trait::async_trait]
impl MigrationTrait for ReadStatesByUser {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(index(
                "read_states_counts",
                "read_states",
                &["user_id", "channel_id", "last_read_seq", "read_ordinal", "muted"],
            ))
            .await?;
        // The new index leads with the user too.
        manager.drop_index(Index::drop().name("read_states_by_user").table("read_states").if_exists().to_owned()).await
    }
}

migration_name!(MessageFiles, "m0007_messaging_message_files");

/// Which messages carry which files, so that a file's scan result reaches
/// every message it is attached to.
#[async_trait::async_trait]
impl MigrationTrait for MessageFiles {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("message_files")
                    .if_not_exists()
                    .col(string_len("file_id", 36))
                    .col(string_len("message_id", 36))
                    .col(string_len("channel_id", 36))
                    .primary_key(Index::create().col("file_id").col("message_id"))
                    .to_owned(),
            )
            .await
    }
}

migration_name!(SettledAttachments, "m0008_messaging_settled_attachments");

/// Whether a message has heard the end of its file's scan. The scan may end
/// while the message is being stored, so both the send and the scan's
/// consumer try to settle the attachment, and this flag lets exactly one of
/// them announce it.
#[async_trait::async_trait]
impl MigrationTrait for SettledAttachments {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(Table::alter().table("message_files").add_column(boolean("settled").default(false)).to_owned())
            .await
    }
}

migration_name!(Retention, "m0009_messaging_retention");

/// When a message passed its conversation's retention, and how far each
/// conversation has expired, so the next run starts after it.
#[async_trait::async_trait]
impl MigrationTrait for Retention {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(Table::alter().table("messages").add_column(big_integer_null("expired_at")).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table("channel_heads")
                    .add_column(big_integer("expired_through_seq").default(0))
                    .to_owned(),
            )
            .await?;
        // The workspace default has the empty channel id.
        manager
            .create_table(
                Table::create()
                    .table("message_retention_policies")
                    .if_not_exists()
                    .col(string_len("channel_id", 36).primary_key())
                    .col(integer("retention_days"))
                    .col(string_len("updated_by", 36))
                    .col(big_integer("updated_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("message_retention_runs")
                    .if_not_exists()
                    .col(string_len("run_id", 36).primary_key())
                    .col(integer("trigger"))
                    .col(boolean("dry_run"))
                    .col(integer("state"))
                    .col(string_len("started_by", 36))
                    // "running" while the run is, NULL after: one run at a time.
                    .col(string_len_null("running_key", 16).unique_key())
                    .col(big_integer("started_at"))
                    .col(big_integer("heartbeat_at"))
                    .col(big_integer_null("finished_at"))
                    .col(big_integer("message_count"))
                    .col(big_integer("channel_count"))
                    .col(text("error"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("message_retention_run_channels")
                    .if_not_exists()
                    .col(string_len("run_id", 36))
                    .col(string_len("channel_id", 36))
                    .col(integer("retention_days"))
                    .col(big_integer("message_count"))
                    .col(big_integer("oldest_at"))
                    .col(big_integer("newest_at"))
                    .primary_key(Index::create().col("run_id").col("channel_id"))
                    .to_owned(),
            )
            .await
    }
}

migration_name!(HiddenMessages, "m0010_messaging_hidden_messages");

/// When a moderator hid a message from everyone but its sender, moderators
/// and admins.
#[async_trait::async_trait]
impl MigrationTrait for HiddenMessages {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table("messages").add_column(big_integer_null("hidden_at")).to_owned()).await
    }
}

migration_name!(Mutes, "m0011_messaging_mutes");

/// Who may read but not post, as the admin service's sanctions say.
#[async_trait::async_trait]
impl MigrationTrait for Mutes {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("mutes")
                    .if_not_exists()
                    .col(string_len("sanction_id", 36).primary_key())
                    .col(string_len("user_id", 36))
                    .col(string_len("channel_id", 36))
                    .col(big_integer_null("expire_at"))
                    .to_owned(),
            )
            .await
    }
}
