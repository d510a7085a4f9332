//! The messaging service's tables.

pub mod message {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "messages")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub message_id: String,
        pub channel_id: String,
        pub seq: i64,
        pub sender_id: String,
        pub text: String,
        pub thread_id: Option<String>,
        /// Comma-separated file ids.
        pub file_ids: String,
        pub version: i32,
        pub created_at: i64,
        pub edited_at: Option<i64>,
        pub deleted_at: Option<i64>,
        pub recalled: bool,
        pub pinned_at: Option<i64>,
        pub pinned_by: Option<String>,
        /// A reply that was also posted to the channel's main flow.
        pub also_in_channel: bool,
        /// For a message of the main flow: the conversation's message count
        /// after it.
        pub ordinal: Option<i64>,
        /// Comma-separated ids of the members mentioned.
        pub mentioned_ids: String,
        pub mentions_channel: bool,
        pub mentions_here: bool,
        /// When it passed its conversation's retention; it is then gone
        /// from history.
        pub expired_at: Option<i64>,
        /// When a moderator hid it; its text then shows only to its
        /// sender, moderators and admins.
        pub hidden_at: Option<i64>,
    }

    impl Model {
        /// Neither deleted nor recalled.
        pub fn is_live(&self) -> bool {
            self.deleted_at.is_none() && !self.recalled
        }
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod message_edit {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "message_edits")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub message_id: String,
        pub version: i32,
        pub text: String,
        pub editor_id: String,
        pub edited_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod channel_event {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "channel_events")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub channel_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub seq: i64,
        /// An encoded `ChannelEvent`.
        pub payload: Vec<u8>,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod channel_head {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "channel_heads")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub channel_id: String,
        pub last_seq: i64,
        /// Main-flow messages ever posted.
        pub message_count: i64,
        /// Retention expired the conversation up to here.
        pub expired_through_seq: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod idempotency {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "message_idempotency")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub sender_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub idempotency_key: String,
        pub message_id: String,
        pub created_at: i64,
        pub request_fingerprint: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod read_state {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "read_states")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub channel_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: String,
        pub last_read_seq: i64,
        pub updated_at: i64,
        pub muted: bool,
        /// How far the member's clients have received the conversation.
        pub delivered_seq: i64,
        /// The conversation's message count at the read position.
        pub read_ordinal: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod thread {
    //! A thread's summary, changed in the transaction of each reply.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "threads")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        /// The id of the root message.
        pub thread_id: String,
        pub channel_id: String,
        pub creator_id: String,
        pub root_sender_id: String,
        /// The reply that created the thread.
        pub first_reply_id: String,
        /// Live replies.
        pub reply_count: i32,
        pub last_reply_id: Option<String>,
        /// 0 when no live reply is left.
        pub last_reply_seq: i64,
        pub last_reply_at: Option<i64>,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod thread_participant {
    //! Who replied in a thread.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "thread_participants")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub thread_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: String,
        /// Their live replies in the thread.
        pub reply_count: i32,
        pub last_reply_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod thread_follower {
    //! Who follows a thread, and every member's read position in it.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "thread_followers")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub thread_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: String,
        pub channel_id: String,
        pub following: bool,
        /// The member's read position in the thread: a reply's sequence.
        pub last_read_seq: i64,
        pub last_read_id: Option<String>,
        pub updated_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod reaction {
    //! One user's reaction with one emoji.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "reactions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub message_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub emoji: String,
        pub channel_id: String,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod reaction_count {
    //! How many users reacted to a message with an emoji.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "reaction_counts")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub message_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub emoji: String,
        pub count: i32,
        /// When the emoji was first used on the message; orders groups.
        pub first_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod reaction_idempotency {
    //! Idempotency keys of AddReaction.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "reaction_idempotency")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub idempotency_key: String,
        pub message_id: String,
        pub emoji: String,
        pub created_at: i64,
        pub request_fingerprint: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod mention {
    //! A member mentioned by name (or by being online for @here).
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "mentions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub message_id: String,
        pub channel_id: String,
        pub seq: i64,
        pub thread_id: Option<String>,
        /// The message is in the channel's main flow.
        pub in_channel: bool,
        pub sender_id: String,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod broadcast {
    //! A message that mentions every member (@channel, @all).
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "broadcasts")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub message_id: String,
        pub channel_id: String,
        pub seq: i64,
        pub thread_id: Option<String>,
        pub in_channel: bool,
        pub sender_id: String,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod removed_message {
    //! A main-flow message that was deleted or recalled: it no longer counts as unread.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "removed_messages")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub channel_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub seq: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod retention_policy {
    //! How long a conversation's messages are kept; the workspace default
    //! has the empty channel id.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "message_retention_policies")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub channel_id: String,
        pub retention_days: i32,
        pub updated_by: String,
        pub updated_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod retention_run {
    //! One retention run and its totals.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "message_retention_runs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub run_id: String,
        pub trigger: i32,
        pub dry_run: bool,
        pub state: i32,
        pub started_by: String,
        /// "running" while it runs, so that only one does.
        pub running_key: Option<String>,
        pub started_at: i64,
        /// Moved on as the run goes; a running run whose heartbeat stopped
        /// lost its node.
        pub heartbeat_at: i64,
        pub finished_at: Option<i64>,
        pub message_count: i64,
        pub channel_count: i64,
        pub error: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod retention_run_channel {
    //! What one run deleted in one conversation.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "message_retention_run_channels")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub run_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub channel_id: String,
        pub retention_days: i32,
        pub message_count: i64,
        pub oldest_at: i64,
        pub newest_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod mute {
    //! A mute of a user, in the workspace (empty channel id) or one
    //! conversation, as the admin service announced it.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "mutes")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub sanction_id: String,
        pub user_id: String,
        pub channel_id: String,
        /// NULL for permanent.
        pub expire_at: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
