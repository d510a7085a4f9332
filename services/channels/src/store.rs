//! The channels service's tables.

pub mod channel {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "channels")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub channel_id: String,
        /// A `ChannelKind` value.
        pub kind: i32,
        pub name: Option<String>,
        pub topic: String,
        pub description: String,
        pub creator_id: String,
        pub archived: bool,
        /// Sorted, comma-joined participant ids of a DM.
        pub dm_key: Option<String>,
        pub member_count: i32,
        pub created_at: i64,
        pub updated_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod member {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "channel_members")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub channel_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: String,
        /// A `MemberRole` value.
        pub role: i32,
        pub muted: bool,
        pub hidden: bool,
        pub starred: bool,
        pub joined_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod invitation {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "channel_invitations")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub invitation_id: String,
        pub channel_id: String,
        pub inviter_id: String,
        pub invitee_id: String,
        /// An `InvitationState` value.
        pub state: i32,
        pub created_at: i64,
        pub expires_at: i64,
        pub responded_at: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod idempotency {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "channel_idempotency")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub creator_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub idempotency_key: String,
        pub channel_id: String,
        pub created_at: i64,
        pub request_fingerprint: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod restriction {
    use sea_orm::entity::prelude::*;

    /// A moderator's mute or ban of one user, in one channel or (mutes,
    /// with an empty channel id) everywhere.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "member_restrictions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub channel_id: String,
        /// A `RestrictionKind` value.
        #[sea_orm(primary_key, auto_increment = false)]
        pub kind: i32,
        /// None: for good.
        pub expire_at: Option<i64>,
        pub created_at: i64,
    }

    impl Model {
        pub fn in_force(&self, now: i64) -> bool {
            self.expire_at.is_none_or(|at| at > now)
        }
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
