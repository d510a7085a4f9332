//! The files service's tables.

pub mod file {
    use sea_orm::entity::prelude::*;
    use sea_orm::sea_query::Expr;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "files")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub file_id: String,
        pub owner_id: String,
        /// Empty for none.
        pub channel_id: String,
        pub filename: String,
        pub description: String,
        /// What the uploader said the bytes are.
        pub declared_type: String,
        /// What they are, once confirmed; the declared type before.
        pub mime_type: String,
        /// `FileType`.
        pub file_type: i32,
        pub size_bytes: i64,
        /// The checksum the uploader promised; empty for none.
        pub expected_sha256: String,
        /// The bytes' checksum, once confirmed.
        pub sha256: String,
        /// `FileAccess`.
        pub access: i32,
        /// `FileState`.
        pub state: i32,
        /// `ScanStatus`.
        pub scan_status: i32,
        /// What the scanner found, or why it could not scan.
        pub scan_signature: String,
        pub scan_time: Option<i64>,
        pub width: i32,
        pub height: i32,
        pub retention_days: i32,
        pub keep_forever: bool,
        pub object_key: String,
        /// When the upload URL stops working, in microseconds.
        pub upload_expires_at: i64,
        pub created_at: i64,
        pub uploaded_at: Option<i64>,
        pub updated_at: i64,
        pub deleted_at: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}

    /// Moves a file from one state to a final one (deleted or expired) at
    /// `now`; false when it was no longer in `from`, because someone else
    /// moved it first.
    pub async fn retire<C: ConnectionTrait>(
        conn: &C,
        file_id: &str,
        from: i32,
        to: i32,
        now: i64,
    ) -> Result<bool, DbErr> {
        let update = Entity::update_many()
            .col_expr(Column::State, Expr::value(to))
            .col_expr(Column::DeletedAt, Expr::value(now))
            .col_expr(Column::UpdatedAt, Expr::value(now))
            .filter(Column::FileId.eq(file_id))
            .filter(Column::State.eq(from))
            .exec(conn)
            .await?;
        Ok(update.rows_affected == 1)
    }
}

pub mod quota {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "storage_quotas")]
    pub struct Model {
        /// A user, or [`WORKSPACE`] for everyone's files together.
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: String,
        /// None: the configured default.
        pub quota_bytes: Option<i64>,
        pub used_bytes: i64,
        pub reserved_bytes: i64,
        pub file_count: i64,
        pub updated_at: i64,
    }

    /// The row that counts every user's files.
    pub const WORKSPACE: &str = "*";

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod share {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "file_shares")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub file_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: String,
        /// `SharePermission`.
        pub permission: i32,
        pub shared_by_id: String,
        pub created_at: i64,
        pub expires_at: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod thumbnail {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "file_thumbnails")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub file_id: String,
        /// `ThumbnailSize`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub size: i32,
        pub width: i32,
        pub height: i32,
        pub mime_type: String,
        pub size_bytes: i64,
        pub object_key: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod retention_policy {
    use sea_orm::entity::prelude::*;

    /// A file type's retention as an admin set it; the configuration's
    /// holds for a type without a row.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "file_retention_policies")]
    pub struct Model {
        /// `FileType`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub file_type: i32,
        pub retention_days: i32,
        pub auto_delete: bool,
        pub updated_by: String,
        pub updated_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
