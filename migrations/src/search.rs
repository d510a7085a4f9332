//! Tables of the search service. The indices themselves live in Tantivy's
//! files or in Elasticsearch/OpenSearch; this database holds what must not
//! be lost on the way there.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{big_integer, big_pk_auto, blob};

use crate::migration_name;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(Initial)]
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
