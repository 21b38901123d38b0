//! The call-record store: one set of SQL for SQLite and PostgreSQL through sqlx's `Any` driver.
//!
//! A call is a row of `calls`; everything that happens to it (status changes, transcript
//! lines, tool calls) is a row of `call_events`, numbered per call by `seq` so that reading
//! it back gives insertion order on both backends. Times are stored as unix milliseconds and
//! shown as RFC 3339 UTC with milliseconds (`2026-05-20T09:30:00.125Z`).
//!
//! Status only moves forward: queued → ringing → in-progress → a final status (machine,
//! completed, busy, no-answer, failed, canceled). A report that would move it back or
//! sideways (a late `ringing` after `completed`, a `completed` after we marked it `failed` or
//! `machine`) is ignored, because provider callbacks arrive out of order; the first final
//! status sticks, except that a late `machine` verdict replaces `completed`.
//!
//! This module holds the connection and the errors; [`model`] the record types; [`calls`]
//! the queries on calls and their events; `instances` which server instance owns which call
//! (heartbeats, and claiming calls a dead instance left behind). Other concerns add their own
//! `impl CallStore` block in a file of their own.

mod calls;
mod instances;
pub mod model;
mod outbox;
mod recordings;
pub mod timeline;
mod tokens;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::AnyPoolOptions;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Any, AnyPool, Transaction};

pub use instances::OrphanedCall;
pub use model::{
    CallFilter, CallRecord, CallStatus, NewCall, ParseCallStatusError, StatusChange, ToolEvent,
    TranscriptLine,
};
pub use outbox::{PostCallDelivery, PostCallState};
pub use timeline::{CallTimeline, LatencySummary, ResponseLatency, TimelineEntry, TimelineEvent};

/// The embedded migrations (`migrations/` at the crate root).
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// SQLite serializes writes, so a few connections are plenty (WAL lets reads run alongside).
const SQLITE_POOL_SIZE: u32 = 4;
/// Connections kept to PostgreSQL.
const POSTGRES_POOL_SIZE: u32 = 8;
/// How long SQLite waits for another connection's write lock before giving up.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 5_000;

/// Why a call-record operation failed. Messages never contain a database password.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `DATABASE_URL` names no backend we support.
    #[error(
        "`{url}` is not supported: use sqlite://path/to/file.db or postgres://user:password@host/database"
    )]
    UnsupportedUrl {
        /// The URL with any password removed.
        url: String,
    },
    /// The folder for the SQLite file could not be created.
    #[error("cannot create the folder {path} for the call-record database: {source}")]
    CreateDir {
        /// The folder.
        path: PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },
    /// The database could not be opened or reached.
    #[error("cannot open the call-record database {url}: {source}")]
    Connect {
        /// The URL with any password removed.
        url: String,
        /// What sqlx said.
        source: sqlx::Error,
    },
    /// The embedded migrations could not be applied.
    #[error("cannot migrate the call-record database {url}: {source}")]
    Migrate {
        /// The URL with any password removed.
        url: String,
        /// What the migrator said.
        source: sqlx::migrate::MigrateError,
    },
    /// A query failed.
    #[error("call records: {op} failed: {source}")]
    Query {
        /// The store operation, e.g. `record_status`.
        op: &'static str,
        /// What sqlx said.
        source: sqlx::Error,
    },
    /// No call record has this id.
    #[error("no call record with id {id:?}")]
    NotFound {
        /// The id asked for.
        id: String,
    },
    /// A value could not be turned into JSON text.
    #[error("call records: cannot encode {what} as JSON: {source}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// What serde_json said.
        source: serde_json::Error,
    },
    /// A stored value could not be read back.
    #[error("call record {id:?} holds an unreadable {field}: {detail}")]
    Corrupt {
        /// The call's id.
        id: String,
        /// The column or event.
        field: &'static str,
        /// What is wrong with it.
        detail: String,
    },
}

/// Which database the store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn of(url: &str) -> Option<Backend> {
        let scheme = url.split_once(':')?.0.to_ascii_lowercase();
        match scheme.as_str() {
            "sqlite" => Some(Backend::Sqlite),
            "postgres" | "postgresql" => Some(Backend::Postgres),
            _ => None,
        }
    }
}

/// The call-record store; cheap to clone (it wraps a connection pool).
#[derive(Debug, Clone)]
pub struct CallStore {
    pool: AnyPool,
    backend: Backend,
    /// The server instance this handle writes for: records it creates are stamped as owned
    /// by it, and its heartbeat is this id's. `None` for a handle that belongs to no running
    /// server (tools, tests); its records have no owner.
    instance: Option<Arc<str>>,
    /// Queue a post-call webhook delivery with each call's final status (see `outbox`).
    post_call_outbox: bool,
}

impl CallStore {
    /// Opens `database_url` (`sqlite://…` or `postgres://…`) and applies the embedded
    /// migrations. A SQLite file and its folder are created when missing; `sqlite::memory:`
    /// works too (one connection, so every query sees the same database).
    pub async fn connect(database_url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let shown = redact_url(database_url);
        let backend = Backend::of(database_url)
            .ok_or_else(|| StoreError::UnsupportedUrl { url: shown.clone() })?;
        let connect_error = |source| StoreError::Connect {
            url: shown.clone(),
            source,
        };

        let mut options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        let mut url = database_url.to_owned();
        let mut in_memory = false;
        match backend {
            Backend::Sqlite => {
                let sqlite = SqliteTarget::parse(database_url).map_err(connect_error)?;
                in_memory = sqlite.in_memory;
                if let Some(dir) = &sqlite.folder {
                    std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                        path: dir.clone(),
                        source,
                    })?;
                }
                if !sqlite.has_mode {
                    let joiner = if url.contains('?') { '&' } else { '?' };
                    url = format!("{url}{joiner}mode=rwc");
                }
                options = if in_memory {
                    // Each connection to `:memory:` would be a database of its own.
                    options
                        .max_connections(1)
                        .min_connections(1)
                        .idle_timeout(None)
                        .max_lifetime(None)
                } else {
                    options.max_connections(SQLITE_POOL_SIZE)
                };
                options = options.after_connect(|conn, _meta| {
                    Box::pin(async move {
                        sqlx::query(&format!("PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}"))
                            .execute(&mut *conn)
                            .await?;
                        Ok(())
                    })
                });
            }
            Backend::Postgres => options = options.max_connections(POSTGRES_POOL_SIZE),
        }

        let pool = options.connect(&url).await.map_err(connect_error)?;
        if backend == Backend::Sqlite && !in_memory {
            // Persistent in the file: readers no longer block the writer.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await
                .map_err(connect_error)?;
        }
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                url: shown.clone(),
                source,
            })?;
        Ok(CallStore {
            pool,
            backend,
            instance: None,
            post_call_outbox: false,
        })
    }

    /// This store, writing for the server instance `instance_id`: records it creates from
    /// now on are owned by that instance (see [`CallStore::heartbeat`]). Shares the pool.
    pub fn owned_by(self, instance_id: &str) -> CallStore {
        CallStore {
            instance: Some(Arc::from(instance_id)),
            ..self
        }
    }

    /// The instance this store writes for, if any.
    pub fn instance_id(&self) -> Option<&str> {
        self.instance.as_deref()
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// The connection pool, for the stores of other concerns that keep their tables in the
    /// same database (campaigns).
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// True on PostgreSQL, where several instances may share the database and row locks
    /// (`FOR UPDATE SKIP LOCKED`) exist; false on SQLite.
    pub(crate) fn is_postgres(&self) -> bool {
        self.backend == Backend::Postgres
    }

    /// Closes the pool's connections; the store is unusable afterwards.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub(crate) async fn begin(
        &self,
        op: &'static str,
    ) -> Result<Transaction<'static, Any>, StoreError> {
        self.pool.begin().await.map_err(query_error(op))
    }
}

fn query_error(op: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { op, source }
}

fn expect_one(rows_affected: u64, id: &str) -> Result<(), StoreError> {
    if rows_affected == 0 {
        Err(StoreError::NotFound { id: id.to_owned() })
    } else {
        Ok(())
    }
}

/// What `connect` needs to know about a `sqlite:` URL.
struct SqliteTarget {
    in_memory: bool,
    /// The database file's folder, when it has one to create.
    folder: Option<PathBuf>,
    /// The URL already says `mode=…`.
    has_mode: bool,
}

impl SqliteTarget {
    fn parse(url: &str) -> Result<SqliteTarget, sqlx::Error> {
        let options = SqliteConnectOptions::from_str(url)?;
        let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
        let has_mode = query.split('&').any(|p| p.starts_with("mode="));
        let in_memory = url.contains(":memory:") || query.split('&').any(|p| p == "mode=memory");
        let folder = if in_memory {
            None
        } else {
            options
                .get_filename()
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map(PathBuf::from)
        };
        Ok(SqliteTarget {
            in_memory,
            folder,
            has_mode,
        })
    }
}

/// `url` without its password and query (which may carry one): `postgres://me:***@host/db`.
fn redact_url(url: &str) -> String {
    let without_query = url.split(['?', '#']).next().unwrap_or("");
    let Some((scheme, rest)) = without_query.split_once("://") else {
        return without_query.to_owned();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => without_query.to_owned(),
    }
}

/// Wall-clock unix milliseconds.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://gp:s3cret@127.0.0.1:5432/db?password=x"),
            "postgres://gp:***@127.0.0.1:5432/db"
        );
        assert_eq!(
            redact_url("sqlite://data/x.db?mode=rwc"),
            "sqlite://data/x.db"
        );
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
    }

    #[test]
    fn sqlite_targets() -> Result<(), sqlx::Error> {
        let t = SqliteTarget::parse("sqlite://data/gemini-phone.db")?;
        assert_eq!(t.folder, Some(PathBuf::from("data")));
        assert!(!t.in_memory && !t.has_mode);
        let t = SqliteTarget::parse("sqlite::memory:")?;
        assert!(t.in_memory && t.folder.is_none());
        let t = SqliteTarget::parse("sqlite:x.db?mode=ro")?;
        assert!(t.has_mode && t.folder.is_none());
        Ok(())
    }
}
