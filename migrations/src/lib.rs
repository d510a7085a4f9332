//! Schema migrations, one migrator per service. Every service has a database
//! of its own (a SQLite file in the embedded deployment, a PostgreSQL
//! database or schema in the distributed one), so table names only need to
//! be unique within a service. The same migrations run on both engines.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{big_integer, big_pk_auto, blob, string, string_len};

pub mod admin;
pub mod auth;
pub mod channels;
pub mod files;
pub mod messaging;
pub mod search;
pub mod users;

pub use sea_orm_migration::MigratorTrait;

/// Declares a migration type with its name, as the migrator records it.
macro_rules! migration_name {
    ($ty:ident, $name:literal) => {
        pub struct $ty;
        impl sea_orm_migration::MigrationName for $ty {
            fn name(&self) -> &str {
                $name
            }
        }
    };
}
pub(crate) use migration_name;

/// The transactional outbox: domain events written in the same transaction as
/// the change they describe, then relayed to the event log and deleted.
pub(crate) fn outbox_table() -> TableCreateStatement {
    Table::create()
        .table("outbox")
        .if_not_exists()
        .col(big_pk_auto("id"))
        .col(string_len("topic", 64))
        .col(string_len("event_key", 64))
        .col(blob("payload"))
        .col(big_integer("created_at"))
        .to_owned()
}

/// Event ids a consumer has already applied, so redelivery changes nothing.
pub(crate) fn processed_events_table() -> TableCreateStatement {
    Table::create()
        .table("processed_events")
        .if_not_exists()
        .col(string("event_id").primary_key())
        .col(big_integer("processed_at"))
        .to_owned()
}

/// Idempotency keys of any call (`colink_runtime::idempotency`): the
/// request's digest, and its answer once it has one.
pub(crate) fn idempotency_keys_table() -> TableCreateStatement {
    Table::create()
        .table("idempotency_keys")
        .if_not_exists()
        .col(string_len("user_id", 36))
        .col(string_len("idempotency_key", 128))
        .col(sea_orm_migration::schema::string_len_null("request_fingerprint", 32))
        .col(sea_orm_migration::schema::blob_null("response"))
        .col(big_integer("created_at"))
        .primary_key(Index::create().col("user_id").col("idempotency_key"))
        .to_owned()
}

/// Adds the digest of the request an idempotency key was first used with
/// (`colink_runtime::ids::request_fingerprint`). Rows from before it have
/// none.
pub(crate) async fn add_request_fingerprint(manager: &SchemaManager<'_>, table: &'static str) -> Result<(), DbErr> {
    if manager.has_column(table, "request_fingerprint").await? {
        return Ok(());
    }
    manager
        .alter_table(
            Table::alter()
                .table(table)
                .add_column(sea_orm_migration::schema::string_len_null("request_fingerprint", 32))
                .to_owned(),
        )
        .await
}

/// A non-unique index.
pub(crate) fn index(name: &'static str, table: &'static str, cols: &[&'static str]) -> IndexCreateStatement {
    let mut index = Index::create();
    index.name(name).table(table).if_not_exists();
    for col in cols {
        index.col(*col);
    }
    index.to_owned()
}

/// A unique index.
pub(crate) fn unique_index(name: &'static str, table: &'static str, cols: &[&'static str]) -> IndexCreateStatement {
    let mut index = index(name, table, cols);
    index.unique();
    index
}
