//! Each service's own database: a SQLite file per service in the embedded
//! deployment, a PostgreSQL database (or schema) per service in the
//! distributed one.

use std::path::Path;
use std::time::Duration;

use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};

use crate::config::DatabaseConfig;

/// A service's database handles. SQLite allows one writer at a time, so
/// writes go through a single connection (no busy retries, no upgrade
/// deadlocks) while reads use a pool that WAL lets run beside it. On
/// PostgreSQL both are the same pool.
#[derive(Clone, Debug)]
pub struct Db {
    pub writer: DatabaseConnection,
    pub reader: DatabaseConnection,
}

/// The URL of a service's database.
pub fn database_url(config: &DatabaseConfig, data_dir: &Path, service: &str) -> String {
    if config.url.is_empty() {
        return format!("sqlite://{}/{service}.db?mode=rwc", data_dir.display());
    }
    config.url.replace("{service}", service).replace("{data_dir}", &data_dir.display().to_string())
}

/// Opens (and for SQLite creates) a service's database.
pub async fn connect(config: &DatabaseConfig, data_dir: &Path, service: &str) -> Result<Db, DbErr> {
    let url = database_url(config, data_dir, service);
    if url.starts_with("sqlite:") {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| DbErr::Custom(format!("cannot create data directory {}: {e}", data_dir.display())))?;
        let writer = Database::connect(sqlite_options(&url, 1)).await?;
        let reader = Database::connect(sqlite_options(&url, config.max_connections)).await?;
        Ok(Db { writer, reader })
    } else {
        let mut options = ConnectOptions::new(url);
        options
            .max_connections(config.max_connections)
            .min_connections(1)
            .connect_timeout(Duration::from_secs(5))
            .acquire_timeout(Duration::from_secs(5))
            // A ping on every checkout is a round trip per statement; only a
            // connection idle long enough for a server or proxy to drop it is
            // worth checking.
            .test_before_acquire_if_idle_for(Duration::from_secs(10))
            .sqlx_logging(false);
        let pool = Database::connect(options).await?;
        Ok(Db { writer: pool.clone(), reader: pool })
    }
}

fn sqlite_options(url: &str, connections: u32) -> ConnectOptions {
    let mut options = ConnectOptions::new(url.to_string());
    options
        .max_connections(connections)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        // A file does not drop connections: no ping on checkout.
        .test_before_acquire(false)
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(|o| {
            o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
        });
    options
}
