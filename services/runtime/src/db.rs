//! Each service's own database: a SQLite file per service in the embedded
//! deployment, a PostgreSQL database (or schema) per service in the
//! distributed one.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use futures_util::StreamExt;
use sea_orm::sqlx::pool::PoolConnection;
use sea_orm::sqlx::{self, Either, Executor, Sqlite};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, QueryResult, Statement,
};
use sea_query_sqlx::SqlxValues;

use crate::config::DatabaseConfig;

/// A service's database handles. SQLite allows one writer at a time, so
/// writes go through a single connection (no busy retries, no upgrade
/// deadlocks) while reads use a pool that WAL lets run beside it. On
/// PostgreSQL both are the same pool.
#[derive(Clone, Debug)]
pub struct Db {
    pub writer: DatabaseConnection,
    pub reader: DatabaseConnection,
    /// On SQLite, the newest outbox row the relay has published. Published
    /// rows are deleted a while later, many at once; until then, what is
    /// past this mark is what still waits (see `events`).
    pub(crate) relayed: Arc<AtomicI64>,
}

impl Db {
    pub fn new(writer: DatabaseConnection, reader: DatabaseConnection) -> Self {
        Self { writer, reader, relayed: Arc::default() }
    }
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
        if !plans_are_stable(&writer).await? {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(
                    "this SQLite was built without ENABLE_QPSG: every statement with a LIMIT is compiled again on \
                     each execution; build with the repository's .cargo/config.toml"
                )
            });
        }
        Ok(Db::new(writer, reader))
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
        Ok(Db::new(pool.clone(), pool))
    }
}

/// Whether the SQLite linked in keeps a statement's plan independent of
/// the values bound to it (`.cargo/config.toml` builds it so). Otherwise
/// binding a new value to a parameter the planner looked at, such as the
/// one of `LIMIT ?`, expires the prepared statement, and the next execution
/// compiles it again.
pub async fn plans_are_stable(conn: &DatabaseConnection) -> Result<bool, DbErr> {
    let rows = conn.query_all_raw(Statement::from_string(DbBackend::Sqlite, "PRAGMA compile_options")).await?;
    Ok(rows.iter().any(|row| row.try_get_by_index::<String>(0).is_ok_and(|option| option == "ENABLE_QPSG")))
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
                // A batch's multi-row statements keep a statement journal
                // (to undo one statement alone); past 64 KiB it went to a
                // temporary file, written with a system call per page.
                .pragma("temp_store", "memory")
        });
    options
}

/// Runs statements one after another, as one unit of work inside the
/// caller's transaction, and stops at the first that fails.
///
/// SQLite gets them in one call: its driver runs every call on the
/// connection's own thread, and for a small insert that hand-off (two
/// thread wake-ups) costs several times the insert itself. The driver binds
/// the values of a multi-statement text in order. PostgreSQL takes one
/// statement per call, so there they go one by one.
pub async fn execute_together<C: ConnectionTrait>(conn: &C, statements: Vec<Statement>) -> Result<(), DbErr> {
    let backend = conn.get_database_backend();
    if backend != DbBackend::Sqlite || statements.len() < 2 {
        for statement in statements {
            conn.execute_raw(statement).await?;
        }
        return Ok(());
    }
    conn.execute_raw(join(statements)?).await?;
    Ok(())
}

/// One SQLite text of several statements, their values in order.
fn join(statements: Vec<Statement>) -> Result<Statement, DbErr> {
    let mut sql = String::with_capacity(statements.iter().map(|s| s.sql.len() + 2).sum());
    let mut values = Vec::new();
    for statement in statements {
        if statement.sql.contains('$') || statement.sql.contains("?1") {
            // Numbered parameters would not bind in order across statements.
            return Err(DbErr::Custom(format!("statement with numbered parameters in a batch: {}", statement.sql)));
        }
        if !sql.is_empty() {
            sql.push_str(";\n");
        }
        sql.push_str(&statement.sql);
        values.extend(statement.values.map(|v| v.0).unwrap_or_default());
    }
    Ok(Statement::from_sql_and_values(DbBackend::Sqlite, sql, values))
}

/// A write transaction on a SQLite writer connection, held outside
/// sea-orm's transaction type so that `BEGIN` and `COMMIT` travel in the
/// same calls to the connection's thread as the statements around them. A
/// batch that needs the rows of its first statements (keys claimed,
/// sequence numbers taken) then costs two calls instead of five.
pub struct SqliteWrite {
    conn: PoolConnection<Sqlite>,
    /// A transaction is open: dropped like this (a cancelled or failed
    /// write), the connection is closed, which rolls it back, rather than
    /// going back to the pool in the middle of a transaction.
    open: bool,
}

impl SqliteWrite {
    /// Takes the writer connection and, in one call, begins an immediate
    /// transaction and runs `statements`; returns the rows each returned.
    pub async fn begin(writer: &DatabaseConnection, statements: Vec<Statement>) -> Result<(Self, Vec<Rows>), DbErr> {
        if writer.get_database_backend() != DbBackend::Sqlite {
            return Err(DbErr::Custom("a SQLite write on another engine".into()));
        }
        let conn = writer.get_sqlite_connection_pool().acquire().await.map_err(sqlx_error)?;
        let mut write = Self { conn, open: true };
        let mut all = vec![Statement::from_string(DbBackend::Sqlite, "BEGIN IMMEDIATE")];
        all.extend(statements);
        let mut rows = write.run(all).await?;
        rows.remove(0);
        Ok((write, rows))
    }

    /// Runs `statements`, then commits, in one call.
    pub async fn commit(mut self, mut statements: Vec<Statement>) -> Result<(), DbErr> {
        statements.push(Statement::from_string(DbBackend::Sqlite, "COMMIT"));
        self.run(statements).await?;
        self.open = false;
        Ok(())
    }

    /// Undoes the transaction.
    pub async fn rollback(mut self) -> Result<(), DbErr> {
        self.run(vec![Statement::from_string(DbBackend::Sqlite, "ROLLBACK")]).await?;
        self.open = false;
        Ok(())
    }

    /// Runs statements in one call and returns each one's rows. On a
    /// failure the transaction is rolled back; if even that fails, the
    /// connection is closed when dropped.
    async fn run(&mut self, statements: Vec<Statement>) -> Result<Vec<Rows>, DbErr> {
        let count = statements.len();
        let joined = join(statements)?;
        let values = joined.values.unwrap_or(sea_orm::Values(Vec::new()));
        let query = sqlx::query_with(sqlx::AssertSqlSafe(joined.sql), SqlxValues(values));
        let mut results = Vec::with_capacity(count);
        let mut current = Vec::new();
        let mut stream = (&mut *self.conn).fetch_many(query);
        let mut failure = None;
        while let Some(item) = stream.next().await {
            match item {
                Ok(Either::Right(row)) => current.push(QueryResult::from(row)),
                Ok(Either::Left(_)) => results.push(std::mem::take(&mut current)),
                Err(err) => {
                    failure = Some(sqlx_error(err));
                    break;
                }
            }
        }
        drop(stream);
        if let Some(err) = failure {
            let rollback = sqlx::raw_sql(sqlx::AssertSqlSafe("ROLLBACK")).execute(&mut *self.conn).await;
            self.open = rollback.is_err();
            return Err(err);
        }
        if results.len() != count {
            return Err(DbErr::Custom(format!("{count} statements ran as {}", results.len())));
        }
        Ok(results)
    }
}

impl Drop for SqliteWrite {
    fn drop(&mut self) {
        if self.open {
            self.conn.close_on_drop();
        }
    }
}

/// The rows one statement returned.
pub type Rows = Vec<QueryResult>;

fn sqlx_error(err: sqlx::Error) -> DbErr {
    DbErr::Custom(format!("SQLite: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn statements_run_together_bind_their_values_in_order_and_stop_at_a_failure() {
        let db = Database::connect("sqlite::memory:").await.expect("opens");
        db.execute_unprepared("CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER NOT NULL)").await.expect("creates");
        let insert = |k: &str, n: i64| {
            Statement::from_sql_and_values(
                DbBackend::Sqlite,
                "INSERT INTO t (k, n) VALUES (?, ?)",
                [k.into(), n.into()],
            )
        };
        let update = Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "UPDATE t SET n = n + ? WHERE k = ?",
            [10.into(), "a".into()],
        );
        execute_together(&db, vec![insert("a", 1), insert("b", 2), update]).await.expect("runs");
        let rows = db
            .query_all_raw(Statement::from_string(DbBackend::Sqlite, "SELECT k, n FROM t ORDER BY k"))
            .await
            .expect("reads");
        let read: Vec<(String, i64)> =
            rows.iter().map(|r| (r.try_get_by_index(0).expect("k"), r.try_get_by_index(1).expect("n"))).collect();
        assert_eq!(read, [("a".to_string(), 11), ("b".to_string(), 2)]);

        // The second collides: the third never runs.
        let failed = execute_together(&db, vec![insert("c", 3), insert("a", 4), insert("d", 5)]).await;
        assert!(failed.is_err());
        let d = db
            .query_all_raw(Statement::from_string(DbBackend::Sqlite, "SELECT k FROM t WHERE k = 'd'"))
            .await
            .expect("reads");
        assert!(d.is_empty());
    }

    #[tokio::test]
    async fn a_sqlite_write_begins_and_commits_with_its_statements_and_leaves_nothing_behind_on_failure() {
        let path = std::env::temp_dir().join(format!("colink-write-{}.db", uuid::Uuid::now_v7()));
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let writer = Database::connect(sqlite_options(&url, 1)).await.expect("opens");
        writer.execute_unprepared("CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER NOT NULL)").await.expect("creates");
        let insert = |k: &str, n: i64| {
            Statement::from_sql_and_values(
                DbBackend::Sqlite,
                "INSERT INTO t (k, n) VALUES (?, ?) ON CONFLICT DO NOTHING RETURNING k",
                [k.into(), n.into()],
            )
        };
        let count = |writer: DatabaseConnection| async move {
            let rows = writer
                .query_all_raw(Statement::from_string(DbBackend::Sqlite, "SELECT k FROM t ORDER BY k"))
                .await
                .expect("reads");
            rows.iter().map(|r| r.try_get_by_index::<String>(0).expect("k")).collect::<Vec<_>>()
        };

        // Each statement's rows come back on their own.
        let (write, rows) = SqliteWrite::begin(&writer, vec![insert("a", 1), insert("b", 2)]).await.expect("begins");
        let keys: Vec<Vec<String>> =
            rows.iter().map(|rows| rows.iter().map(|r| r.try_get_by_index(0).expect("k")).collect()).collect();
        assert_eq!(keys, [vec!["a".to_string()], vec!["b".to_string()]]);
        write.commit(vec![insert("c", 3)]).await.expect("commits");
        assert_eq!(count(writer.clone()).await, ["a", "b", "c"]);

        // A repeat returns no row; rolled back, it leaves nothing.
        let (write, rows) = SqliteWrite::begin(&writer, vec![insert("a", 9), insert("d", 4)]).await.expect("begins");
        assert_eq!(rows.iter().map(Vec::len).collect::<Vec<_>>(), [0, 1]);
        write.rollback().await.expect("rolls back");
        assert_eq!(count(writer.clone()).await, ["a", "b", "c"]);

        // A failing statement undoes the whole call, and the connection
        // takes the next write.
        let broken = Statement::from_string(DbBackend::Sqlite, "INSERT INTO missing VALUES (1)");
        let (write, _) = SqliteWrite::begin(&writer, vec![insert("e", 5)]).await.expect("begins");
        assert!(write.commit(vec![broken]).await.is_err());
        assert_eq!(count(writer.clone()).await, ["a", "b", "c"]);

        // Dropped half way (a cancelled write), the transaction goes with
        // its connection; the pool opens another.
        let (write, _) = SqliteWrite::begin(&writer, vec![insert("f", 6)]).await.expect("begins");
        drop(write);
        let (write, _) = SqliteWrite::begin(&writer, vec![insert("g", 7)]).await.expect("begins again");
        write.commit(Vec::new()).await.expect("commits");
        assert_eq!(count(writer.clone()).await, ["a", "b", "c", "g"]);
        let _ = std::fs::remove_file(&path);
    }

    #[tokio::test]
    async fn the_sqlite_built_in_keeps_plans_independent_of_bound_values() {
        let db = Database::connect("sqlite::memory:").await.expect("opens");
        assert!(plans_are_stable(&db).await.expect("reads the compile options"));
    }
}
