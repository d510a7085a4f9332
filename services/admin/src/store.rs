//! The admin service's tables.

pub mod audit_log {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_logs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub audit_log_id: String,
        pub actor_id: String,
        pub actor_role: String,
        pub action: String,
        pub target_type: String,
        pub target_id: String,
        pub reason: String,
        /// A JSON object of strings.
        pub metadata: String,
        pub request_id: String,
        pub client_ip: String,
        pub created_at: i64,
        /// Place in the hash chain, from 1; NULL until chained.
        pub chain_position: Option<i64>,
        pub previous_hash: String,
        pub entry_hash: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod audit_chain_head {
    use sea_orm::entity::prelude::*;

    /// The audit chain's newest link.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_chain_head")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub chain_id: i32,
        pub position: i64,
        pub hash: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod moderation {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "moderations")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub moderation_id: String,
        pub message_id: String,
        pub channel_id: String,
        pub sender_id: String,
        pub action: i32,
        pub reason: String,
        pub actor_id: String,
        pub report_id: String,
        pub idempotency_key: Option<String>,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod report {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "message_reports")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub report_id: String,
        pub message_id: String,
        pub channel_id: String,
        pub reported_user_id: String,
        pub reporter_id: String,
        /// A `ReportReason` value.
        pub reason: i32,
        pub details: String,
        pub message_text_snapshot: String,
        /// A `ReportStatus` value.
        pub status: i32,
        /// Set while open, so that a reporter has one open report a message.
        pub open_key: Option<String>,
        pub resolution_note: String,
        pub resolved_by: String,
        /// The moderation applied on resolving; empty for none.
        pub moderation_id: String,
        pub created_at: i64,
        pub resolved_at: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod sanction {
    //! A ban or mute of one user, in the workspace or one channel.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "user_sanctions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub sanction_id: String,
        pub user_id: String,
        pub kind: i32,
        /// Empty for the whole workspace.
        pub channel_id: String,
        pub reason: String,
        pub created_by: String,
        pub created_at: i64,
        /// NULL for permanent.
        pub expire_at: Option<i64>,
        pub lifted_at: Option<i64>,
        pub lifted_by: String,
        pub lift_reason: String,
        /// Set while it may be in force; see the migration.
        pub active_key: Option<String>,
    }

    impl Model {
        /// In force at `now`: not lifted, not expired.
        pub fn active(&self, now: i64) -> bool {
            self.lifted_at.is_none() && self.expire_at.is_none_or(|at| at > now)
        }
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
