//! Tables of the search service. The indices themselves live in Tantivy's
//! files or in Elasticsearch/OpenSearch; this database holds what must not
//! be lost on the way there.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{big_integer, big_pk_auto, blob, boolean};

use crate::migration_name;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(Initial), Box::new(Replay)]
    }
}

migration_name!(Initial, "m0001_search_initial");

/// Changes received from the event log and not yet in an index: a consumer
/// writes here before acknowledging an event, and the indexer deletes what
/// it has applied and committed.
#[async_trait::async_trait]
impl MigrationTrait for Initial {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("search_queue")
                    .if_not_exists()
                    .col(big_pk_auto("id"))
                    .col(blob("change"))
                    .col(big_integer("event_time"))
                    .col(big_integer("queued_at"))
                    .to_owned(),
            )
            .await
    }
}

migration_name!(Replay, "m0002_search_replay");

/// While an index is rebuilt, the changes that arrive are kept after the
/// live index has them (`applied`), until the rebuilt one has them too
/// (`replayed`); only then may they go.
#[async_trait::async_trait]
impl MigrationTrait for Replay {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column a statement: SQLite adds no more at once.
        for column in ["applied", "replayed"] {
            manager
                .alter_table(Table::alter().table("search_queue").add_column(boolean(column).default(false)).to_owned())
                .await?;
        }
        Ok(())
    }
}
