//! The call-record store: one set of SQL for SQLite and PostgreSQL through sqlx's `Any` driver.
//!
//! A call is a row of `calls`; everything that happens to it (status changes, transcript
//! lines, tool calls) is a row of `call_events`, numbered per call by `seq` so that reading
//! it back gives insertion order on both backends. Times are stored as unix milliseconds and
//! shown as RFC 3339 UTC with milliseconds (`2026-05-20T09:30:00.125Z`).
//!
//! Status only moves forward: queued → ringing → in-progress → machine → a final status
//! (completed, busy, no-answer, failed, canceled). A report that would move it back or
//! sideways (a late `ringing` after `completed`, a `completed` after we marked it `failed`)
//! is ignored, because provider callbacks arrive out of order; the first final status sticks.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Any, AnyPool, Row, Transaction};

use crate::telephony::Direction;

/// The embedded migrations (`migrations/` at the crate root).
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// SQLite serializes writes, so a few connections are plenty (WAL lets reads run alongside).
const SQLITE_POOL_SIZE: u32 = 4;
/// Connections kept to PostgreSQL.
const POSTGRES_POOL_SIZE: u32 = 8;
/// How long SQLite waits for another connection's write lock before giving up.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 5_000;
/// `list` returns at most this many records.
const MAX_LIST_LIMIT: u32 = 500;
/// `list` returns this many records unless told otherwise.
const DEFAULT_LIST_LIMIT: u32 = 50;

const CALL_COLUMNS: &str = "id, provider, provider_call_id, direction, from_number, to_number, \
     campaign, prompt, vars, status, answered_by, duration_seconds, end_reason, created_ms, \
     updated_ms";

const KIND_STATUS: &str = "status";
const KIND_TRANSCRIPT: &str = "transcript";
const KIND_TOOL: &str = "tool";

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

/// The status of a call, as providers report it (kebab-case on the wire and in the database).
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[serde(rename_all = "kebab-case")]
pub enum CallStatus {
    /// Created; the provider has not started ringing yet (Twilio `queued`/`initiated`).
    Queued,
    /// The called phone is ringing.
    Ringing,
    /// Answered and connected.
    InProgress,
    /// Answered by an answering machine (AMD); the line may still be up.
    Machine,
    /// Ended after being answered.
    Completed,
    /// The called line was busy.
    Busy,
    /// Nobody answered (Plivo `timeout` too).
    NoAnswer,
    /// The call could not be placed or broke down.
    Failed,
    /// Hung up before it was answered.
    Canceled,
}

impl CallStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [CallStatus; 9] = [
        CallStatus::Queued,
        CallStatus::Ringing,
        CallStatus::InProgress,
        CallStatus::Machine,
        CallStatus::Completed,
        CallStatus::Busy,
        CallStatus::NoAnswer,
        CallStatus::Failed,
        CallStatus::Canceled,
    ];

    /// The kebab-case name used in JSON, the database and query strings.
    pub fn as_str(self) -> &'static str {
        match self {
            CallStatus::Queued => "queued",
            CallStatus::Ringing => "ringing",
            CallStatus::InProgress => "in-progress",
            CallStatus::Machine => "machine",
            CallStatus::Completed => "completed",
            CallStatus::Busy => "busy",
            CallStatus::NoAnswer => "no-answer",
            CallStatus::Failed => "failed",
            CallStatus::Canceled => "canceled",
        }
    }

    /// True when the call is over: completed, busy, no-answer, failed or canceled.
    pub fn is_final(self) -> bool {
        self.rank() == 4
    }

    /// Position along queued → ringing → in-progress → machine → final.
    fn rank(self) -> u8 {
        match self {
            CallStatus::Queued => 0,
            CallStatus::Ringing => 1,
            CallStatus::InProgress => 2,
            CallStatus::Machine => 3,
            CallStatus::Completed
            | CallStatus::Busy
            | CallStatus::NoAnswer
            | CallStatus::Failed
            | CallStatus::Canceled => 4,
        }
    }

    /// Whether a report of `next` moves a call that is `self` forward.
    fn advances_to(self, next: CallStatus) -> bool {
        next.rank() > self.rank()
    }
}

impl fmt::Display for CallStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status name that is neither ours nor a Twilio/Plivo spelling of one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown call status {0:?} (expected queued, ringing, in-progress, machine, completed, busy, no-answer, failed or canceled)"
)]
pub struct ParseCallStatusError(pub String);

impl FromStr for CallStatus {
    type Err = ParseCallStatusError;

    /// Reads our names and the providers' spellings, case-insensitively: Twilio `initiated`
    /// is `Queued`, Plivo `timeout` is `NoAnswer`, `cancel`/`cancelled` are `Canceled`.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let lower = value.trim().to_ascii_lowercase();
        let status = match lower.as_str() {
            "queued" | "initiated" => CallStatus::Queued,
            "ringing" => CallStatus::Ringing,
            "in-progress" | "in_progress" | "inprogress" => CallStatus::InProgress,
            "machine" => CallStatus::Machine,
            "completed" => CallStatus::Completed,
            "busy" => CallStatus::Busy,
            "no-answer" | "no_answer" | "noanswer" | "timeout" => CallStatus::NoAnswer,
            "failed" => CallStatus::Failed,
            "canceled" | "cancelled" | "cancel" => CallStatus::Canceled,
            _ => return Err(ParseCallStatusError(value.to_owned())),
        };
        Ok(status)
    }
}

/// What is known about a call when its record is created.
#[derive(Debug, Clone)]
pub struct NewCall {
    /// Provider name (`twilio`, `plivo`).
    pub provider: String,
    /// The provider's id for the call, when already known.
    pub provider_call_id: Option<String>,
    /// Inbound or outbound.
    pub direction: Direction,
    /// Calling number.
    pub from: String,
    /// Called number.
    pub to: String,
    /// Campaign tag given with `POST /calls`.
    pub campaign: Option<String>,
    /// Prompt template name.
    pub prompt: Option<String>,
    /// Template variables.
    pub vars: Map<String, Value>,
    /// Initial status, recorded as the first history entry.
    pub status: CallStatus,
}

/// One call as stored, with its history.
#[derive(Debug, Clone, Serialize)]
pub struct CallRecord {
    /// Our id: `c` followed by 24 characters of `[a-z0-9]`.
    pub id: String,
    /// Provider name.
    pub provider: String,
    /// The provider's id for the call, once known.
    pub provider_call_id: Option<String>,
    /// Inbound or outbound.
    pub direction: Direction,
    /// Calling number.
    pub from: String,
    /// Called number.
    pub to: String,
    /// Campaign tag.
    pub campaign: Option<String>,
    /// Prompt template name.
    pub prompt: Option<String>,
    /// Template variables.
    pub vars: Map<String, Value>,
    /// Current status.
    pub status: CallStatus,
    /// Who answered, as the provider's machine detection said (`human`, `machine_start`, …).
    pub answered_by: Option<String>,
    /// Call length the provider reported.
    pub duration_seconds: Option<i64>,
    /// Why the call ended (provider hangup cause, or our failure reason).
    pub end_reason: Option<String>,
    /// When the record was created (RFC 3339 UTC).
    pub created_at: String,
    /// When the record last changed (RFC 3339 UTC).
    pub updated_at: String,
    /// Status changes, oldest first; the first is the initial status.
    pub history: Vec<StatusChange>,
    /// What was said, oldest first (empty in [`CallStore::list`] results).
    pub transcript: Vec<TranscriptLine>,
    /// The agent's tool calls and results, oldest first (empty in [`CallStore::list`] results).
    pub tool_events: Vec<ToolEvent>,
}

/// One entry of a call's status history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusChange {
    /// The status the call moved to.
    pub status: CallStatus,
    /// When (RFC 3339 UTC).
    pub at: String,
}

/// One line of a call's transcript.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TranscriptLine {
    /// Who spoke (e.g. `caller`, `agent`).
    pub who: String,
    /// What was said.
    pub text: String,
    /// When (RFC 3339 UTC).
    pub at: String,
}

/// One tool call or result of the agent during a call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolEvent {
    /// The tool's name.
    pub name: String,
    /// Arguments or result, as given.
    pub detail: Value,
    /// When (RFC 3339 UTC).
    pub at: String,
}

/// Which records [`CallStore::list`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallFilter {
    /// Only this campaign.
    pub campaign: Option<String>,
    /// Only calls currently in this status.
    pub status: Option<CallStatus>,
    /// At most this many (clamped to 1..=500).
    pub limit: u32,
}

impl Default for CallFilter {
    fn default() -> Self {
        CallFilter {
            campaign: None,
            status: None,
            limit: DEFAULT_LIST_LIMIT,
        }
    }
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
        Ok(CallStore { pool, backend })
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// Closes the pool's connections; the store is unusable afterwards.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Stores a new call with a fresh id and its initial status as the first history entry.
    pub async fn create(&self, call: NewCall) -> Result<CallRecord, StoreError> {
        const OP: &str = "create";
        let id = new_call_id();
        let now = next_created_ms();
        let vars = serde_json::to_string(&call.vars).map_err(|source| StoreError::Encode {
            what: "vars",
            source,
        })?;

        let mut tx = self.begin(OP).await?;
        sqlx::query(
            "INSERT INTO calls (id, provider, provider_call_id, direction, from_number, \
             to_number, campaign, prompt, vars, status, created_ms, updated_ms, event_seq) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, 1)",
        )
        .bind(&id)
        .bind(&call.provider)
        .bind(call.provider_call_id.as_deref())
        .bind(call.direction.as_str())
        .bind(&call.from)
        .bind(&call.to)
        .bind(call.campaign.as_deref())
        .bind(call.prompt.as_deref())
        .bind(&vars)
        .bind(call.status.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(query_error(OP))?;
        insert_event(
            &mut tx,
            OP,
            &id,
            1,
            KIND_STATUS,
            now,
            call.status.as_str(),
            None,
        )
        .await?;
        tx.commit().await.map_err(query_error(OP))?;

        let at = rfc3339_ms(now);
        Ok(CallRecord {
            id,
            provider: call.provider,
            provider_call_id: call.provider_call_id,
            direction: call.direction,
            from: call.from,
            to: call.to,
            campaign: call.campaign,
            prompt: call.prompt,
            vars: call.vars,
            status: call.status,
            answered_by: None,
            duration_seconds: None,
            end_reason: None,
            created_at: at.clone(),
            updated_at: at.clone(),
            history: vec![StatusChange {
                status: call.status,
                at,
            }],
            transcript: Vec::new(),
            tool_events: Vec::new(),
        })
    }

    /// The full record: history, transcript and tool events.
    pub async fn get(&self, id: &str) -> Result<Option<CallRecord>, StoreError> {
        const OP: &str = "get";
        let row = sqlx::query(&format!("SELECT {CALL_COLUMNS} FROM calls WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_error(OP))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut record = record_from_row(&row)?;

        let events = sqlx::query(
            "SELECT kind, name, body, at_ms FROM call_events WHERE call_id = $1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(query_error(OP))?;
        for event in &events {
            let kind: String = event.try_get("kind").map_err(query_error(OP))?;
            let name: String = event.try_get("name").map_err(query_error(OP))?;
            let body: Option<String> = event.try_get("body").map_err(query_error(OP))?;
            let at = rfc3339_ms(event.try_get("at_ms").map_err(query_error(OP))?);
            match kind.as_str() {
                KIND_STATUS => record.history.push(StatusChange {
                    status: parse_status(id, &name)?,
                    at,
                }),
                KIND_TRANSCRIPT => record.transcript.push(TranscriptLine {
                    who: name,
                    text: body.unwrap_or_default(),
                    at,
                }),
                KIND_TOOL => {
                    let detail = match body {
                        Some(text) => {
                            serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
                                id: id.to_owned(),
                                field: "tool event",
                                detail: e.to_string(),
                            })?
                        }
                        None => Value::Null,
                    };
                    record.tool_events.push(ToolEvent { name, detail, at });
                }
                // A kind added by a later version: not ours to show.
                _ => {}
            }
        }
        Ok(Some(record))
    }

    /// The newest record with this provider call id (Twilio `CallSid`, Plivo `CallUUID`).
    pub async fn find_by_provider_call_id(
        &self,
        provider: &str,
        provider_call_id: &str,
    ) -> Result<Option<CallRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id FROM calls WHERE provider = $1 AND provider_call_id = $2 \
             ORDER BY created_ms DESC, id DESC LIMIT 1",
        )
        .bind(provider)
        .bind(provider_call_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(query_error("find_by_provider_call_id"))?;
        match row {
            Some(row) => {
                let id: String = row
                    .try_get("id")
                    .map_err(query_error("find_by_provider_call_id"))?;
                self.get(&id).await
            }
            None => Ok(None),
        }
    }

    /// Records matching `filter`, newest first, with their status history; `transcript` and
    /// `tool_events` are left empty here (use [`CallStore::get`] for them).
    pub async fn list(&self, filter: &CallFilter) -> Result<Vec<CallRecord>, StoreError> {
        const OP: &str = "list";
        let mut conditions = Vec::new();
        if filter.campaign.is_some() {
            conditions.push(format!("campaign = ${}", conditions.len() + 1));
        }
        if filter.status.is_some() {
            conditions.push(format!("status = ${}", conditions.len() + 1));
        }
        let where_clause = if conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conditions.join(" AND "))
        };
        let sql = format!(
            "SELECT {CALL_COLUMNS} FROM calls{where_clause} \
             ORDER BY created_ms DESC, id DESC LIMIT ${}",
            conditions.len() + 1
        );
        let mut query = sqlx::query(&sql);
        if let Some(campaign) = &filter.campaign {
            query = query.bind(campaign.as_str());
        }
        if let Some(status) = filter.status {
            query = query.bind(status.as_str());
        }
        let limit = i64::from(filter.limit.clamp(1, MAX_LIST_LIMIT));
        let rows = query
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(query_error(OP))?;
        let mut records = rows
            .iter()
            .map(record_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        if records.is_empty() {
            return Ok(records);
        }

        let placeholders = (1..=records.len())
            .map(|n| format!("${n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT call_id, name, at_ms FROM call_events \
             WHERE kind = 'status' AND call_id IN ({placeholders}) ORDER BY call_id, seq"
        );
        let mut query = sqlx::query(&sql);
        for record in &records {
            query = query.bind(record.id.as_str());
        }
        let events = query.fetch_all(&self.pool).await.map_err(query_error(OP))?;
        let mut histories: HashMap<String, Vec<StatusChange>> = HashMap::new();
        for event in &events {
            let call_id: String = event.try_get("call_id").map_err(query_error(OP))?;
            let name: String = event.try_get("name").map_err(query_error(OP))?;
            let at = rfc3339_ms(event.try_get("at_ms").map_err(query_error(OP))?);
            let status = parse_status(&call_id, &name)?;
            histories
                .entry(call_id)
                .or_default()
                .push(StatusChange { status, at });
        }
        for record in &mut records {
            record.history = histories.remove(&record.id).unwrap_or_default();
        }
        Ok(records)
    }

    /// Sets the provider's id for the call (known once the provider accepted the dial).
    pub async fn set_provider_call_id(
        &self,
        id: &str,
        provider_call_id: &str,
    ) -> Result<(), StoreError> {
        self.update_one(
            "set_provider_call_id",
            "UPDATE calls SET provider_call_id = $2, updated_ms = $3 WHERE id = $1",
            id,
            Some(provider_call_id),
        )
        .await
    }

    /// Moves the call to `status` and appends it to the history, unless that would move it
    /// back or sideways (same status again, anything after a final status, an earlier stage
    /// after a later one): such late or repeated reports are ignored.
    pub async fn record_status(&self, id: &str, status: CallStatus) -> Result<(), StoreError> {
        const OP: &str = "record_status";
        let at = now_ms();
        let mut tx = self.begin(OP).await?;
        let (seq, current) = next_seq(&mut tx, OP, id, at).await?;
        if !current.advances_to(status) {
            tx.rollback().await.map_err(query_error(OP))?;
            return Ok(());
        }
        sqlx::query("UPDATE calls SET status = $2 WHERE id = $1")
            .bind(id)
            .bind(status.as_str())
            .execute(&mut *tx)
            .await
            .map_err(query_error(OP))?;
        insert_event(&mut tx, OP, id, seq, KIND_STATUS, at, status.as_str(), None).await?;
        tx.commit().await.map_err(query_error(OP))
    }

    /// Sets who answered (the provider's machine-detection result).
    pub async fn set_answered_by(&self, id: &str, answered_by: &str) -> Result<(), StoreError> {
        self.update_one(
            "set_answered_by",
            "UPDATE calls SET answered_by = $2, updated_ms = $3 WHERE id = $1",
            id,
            Some(answered_by),
        )
        .await
    }

    /// Sets the duration and end reason that are given, keeping the ones that are `None`.
    pub async fn finish(
        &self,
        id: &str,
        duration_seconds: Option<i64>,
        end_reason: Option<&str>,
    ) -> Result<(), StoreError> {
        const OP: &str = "finish";
        let result = sqlx::query(
            "UPDATE calls SET duration_seconds = COALESCE($2, duration_seconds), \
             end_reason = COALESCE($3, end_reason), updated_ms = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(duration_seconds)
        .bind(end_reason)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(query_error(OP))?;
        expect_one(result.rows_affected(), id)
    }

    /// Like [`Self::finish`], but only fills fields that are still empty, in one statement,
    /// so a value the provider reported is never replaced by a later, rougher one.
    pub async fn finish_if_unset(
        &self,
        id: &str,
        duration_seconds: Option<i64>,
        end_reason: Option<&str>,
    ) -> Result<(), StoreError> {
        const OP: &str = "finish_if_unset";
        let result = sqlx::query(
            "UPDATE calls SET duration_seconds = COALESCE(duration_seconds, $2), \
             end_reason = COALESCE(end_reason, $3), updated_ms = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(duration_seconds)
        .bind(end_reason)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(query_error(OP))?;
        expect_one(result.rows_affected(), id)
    }

    /// Marks the call `Failed` with `reason` as its end reason. On a call that already has a
    /// final status, the status is kept and `reason` only fills an empty end reason.
    pub async fn fail(&self, id: &str, reason: &str) -> Result<(), StoreError> {
        const OP: &str = "fail";
        let at = now_ms();
        let mut tx = self.begin(OP).await?;
        let (seq, current) = next_seq(&mut tx, OP, id, at).await?;
        if current.advances_to(CallStatus::Failed) {
            sqlx::query("UPDATE calls SET status = $2, end_reason = $3 WHERE id = $1")
                .bind(id)
                .bind(CallStatus::Failed.as_str())
                .bind(reason)
                .execute(&mut *tx)
                .await
                .map_err(query_error(OP))?;
            let failed = CallStatus::Failed.as_str();
            insert_event(&mut tx, OP, id, seq, KIND_STATUS, at, failed, None).await?;
        } else {
            sqlx::query("UPDATE calls SET end_reason = COALESCE(end_reason, $2) WHERE id = $1")
                .bind(id)
                .bind(reason)
                .execute(&mut *tx)
                .await
                .map_err(query_error(OP))?;
        }
        tx.commit().await.map_err(query_error(OP))
    }

    /// Appends a transcript line (`who`: e.g. `caller` or `agent`).
    pub async fn append_transcript(
        &self,
        id: &str,
        who: &str,
        text: &str,
    ) -> Result<(), StoreError> {
        self.append_event("append_transcript", id, KIND_TRANSCRIPT, who, text)
            .await
    }

    /// Appends a tool call or result of the agent; `detail` is stored as JSON text.
    pub async fn append_tool_event(
        &self,
        id: &str,
        name: &str,
        detail: &Value,
    ) -> Result<(), StoreError> {
        let body = serde_json::to_string(detail).map_err(|source| StoreError::Encode {
            what: "tool event detail",
            source,
        })?;
        self.append_event("append_tool_event", id, KIND_TOOL, name, &body)
            .await
    }

    async fn begin(&self, op: &'static str) -> Result<Transaction<'static, Any>, StoreError> {
        self.pool.begin().await.map_err(query_error(op))
    }

    /// Runs `sql` with `$1` = id, `$2` = value, `$3` = now, expecting one row changed.
    async fn update_one(
        &self,
        op: &'static str,
        sql: &str,
        id: &str,
        value: Option<&str>,
    ) -> Result<(), StoreError> {
        let result = sqlx::query(sql)
            .bind(id)
            .bind(value)
            .bind(now_ms())
            .execute(&self.pool)
            .await
            .map_err(query_error(op))?;
        expect_one(result.rows_affected(), id)
    }

    async fn append_event(
        &self,
        op: &'static str,
        id: &str,
        kind: &str,
        name: &str,
        body: &str,
    ) -> Result<(), StoreError> {
        let at = now_ms();
        let mut tx = self.begin(op).await?;
        let (seq, _) = next_seq(&mut tx, op, id, at).await?;
        insert_event(&mut tx, op, id, seq, kind, at, name, Some(body)).await?;
        tx.commit().await.map_err(query_error(op))
    }
}

/// Takes the call's next event number under its row's write lock (so concurrent appends on
/// either backend get distinct, commit-ordered numbers) and returns it with the current status.
async fn next_seq(
    tx: &mut Transaction<'static, Any>,
    op: &'static str,
    id: &str,
    at: i64,
) -> Result<(i64, CallStatus), StoreError> {
    let row = sqlx::query(
        "UPDATE calls SET event_seq = event_seq + 1, updated_ms = $2 WHERE id = $1 \
         RETURNING event_seq, status",
    )
    .bind(id)
    .bind(at)
    .fetch_optional(&mut **tx)
    .await
    .map_err(query_error(op))?;
    let Some(row) = row else {
        return Err(StoreError::NotFound { id: id.to_owned() });
    };
    let seq: i64 = row.try_get("event_seq").map_err(query_error(op))?;
    let status: String = row.try_get("status").map_err(query_error(op))?;
    Ok((seq, parse_status(id, &status)?))
}

#[allow(clippy::too_many_arguments)]
async fn insert_event(
    tx: &mut Transaction<'static, Any>,
    op: &'static str,
    id: &str,
    seq: i64,
    kind: &str,
    at: i64,
    name: &str,
    body: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO call_events (call_id, seq, kind, at_ms, name, body) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(seq)
    .bind(kind)
    .bind(at)
    .bind(name)
    .bind(body)
    .execute(&mut **tx)
    .await
    .map_err(query_error(op))?;
    Ok(())
}

fn record_from_row(row: &AnyRow) -> Result<CallRecord, StoreError> {
    const OP: &str = "reading a call";
    let get_text = |column: &str| -> Result<String, StoreError> {
        row.try_get::<String, _>(column).map_err(query_error(OP))
    };
    let get_opt = |column: &str| -> Result<Option<String>, StoreError> {
        row.try_get::<Option<String>, _>(column)
            .map_err(query_error(OP))
    };
    let id = get_text("id")?;
    let direction = match get_text("direction")?.as_str() {
        "inbound" => Direction::Inbound,
        "outbound" => Direction::Outbound,
        other => {
            return Err(StoreError::Corrupt {
                id,
                field: "direction",
                detail: format!("{other:?} is neither inbound nor outbound"),
            });
        }
    };
    let vars = match serde_json::from_str::<Value>(&get_text("vars")?) {
        Ok(Value::Object(map)) => map,
        Ok(other) => {
            return Err(StoreError::Corrupt {
                id,
                field: "vars",
                detail: format!("expected a JSON object, found {other}"),
            });
        }
        Err(e) => {
            return Err(StoreError::Corrupt {
                id,
                field: "vars",
                detail: e.to_string(),
            });
        }
    };
    let status = parse_status(&id, &get_text("status")?)?;
    let created_ms: i64 = row.try_get("created_ms").map_err(query_error(OP))?;
    let updated_ms: i64 = row.try_get("updated_ms").map_err(query_error(OP))?;
    Ok(CallRecord {
        provider: get_text("provider")?,
        provider_call_id: get_opt("provider_call_id")?,
        direction,
        from: get_text("from_number")?,
        to: get_text("to_number")?,
        campaign: get_opt("campaign")?,
        prompt: get_opt("prompt")?,
        vars,
        status,
        answered_by: get_opt("answered_by")?,
        duration_seconds: row
            .try_get::<Option<i64>, _>("duration_seconds")
            .map_err(query_error(OP))?,
        end_reason: get_opt("end_reason")?,
        created_at: rfc3339_ms(created_ms),
        updated_at: rfc3339_ms(updated_ms),
        history: Vec::new(),
        transcript: Vec::new(),
        tool_events: Vec::new(),
        id,
    })
}

fn parse_status(id: &str, value: &str) -> Result<CallStatus, StoreError> {
    value
        .parse()
        .map_err(|e: ParseCallStatusError| StoreError::Corrupt {
            id: id.to_owned(),
            field: "status",
            detail: e.to_string(),
        })
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

/// A new call id: `c` and 24 characters of `[a-z0-9]` (safe in URLs and Plivo stream
/// parameters, which allow only `[A-Za-z0-9]`), from 122 random bits.
fn new_call_id() -> String {
    const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut n = uuid::Uuid::new_v4().as_u128();
    let mut id = String::with_capacity(25);
    id.push('c');
    for _ in 0..24 {
        id.push(char::from(ALPHABET[(n % 36) as usize]));
        n /= 36;
    }
    id
}

/// Wall-clock unix milliseconds.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Unix milliseconds for a new record, strictly increasing within this process so that
/// records created in the same millisecond still list newest first.
fn next_created_ms() -> i64 {
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = now_ms();
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-05-20T09:30:00.125Z`.
fn rfc3339_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let of_day = secs.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// Proleptic Gregorian (year, month, day) of a count of days since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339_utc_milliseconds() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_779_269_400_125), "2026-05-20T09:30:00.125Z");
        assert_eq!(rfc3339_ms(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
        assert_eq!(rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn call_ids_are_alphanumeric_and_distinct() {
        let a = new_call_id();
        let b = new_call_id();
        assert_ne!(a, b);
        for id in [a, b] {
            assert_eq!(id.len(), 25);
            assert!(id.starts_with('c'));
            assert!(
                id.bytes()
                    .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
            );
        }
    }

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
    fn created_times_strictly_increase() {
        let a = next_created_ms();
        let b = next_created_ms();
        assert!(b > a);
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
