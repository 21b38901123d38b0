//! Campaigns in the records database: the campaigns, their contacts (the dialer's queue),
//! each contact's attempts, and the do-not-call list. One set of SQL for SQLite and
//! PostgreSQL, like the call records beside them.
//!
//! This module creates, reads and controls campaigns and keeps the do-not-call list; `queue`
//! holds what the dialer does with the contacts: claim, bind, settle.

mod queue;

use std::collections::HashMap;

use serde_json::{Map, Value};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Row, Transaction};

use super::model::{
    CampaignSpec, CampaignState, ContactState, NewContact, RetryPolicy, StateCounts,
};
use super::window::CallingWindow;
use crate::calls::{CallStatus, CallStore, StoreError};

pub use queue::{Claim, ClaimLimits, Settled};

/// Contacts inserted per statement when a campaign is created (4 parameters each).
const INSERT_BATCH: usize = 1_000;

const CAMPAIGN_COLUMNS: &str = "id, name, prompt, provider, from_number, state, max_concurrent, \
     calls_per_minute, window_start_min, window_end_min, window_days, timezone, max_attempts, \
     retry_on, backoff_ms, start_at_ms, created_ms, started_ms, finished_ms";

/// A campaign as stored.
#[derive(Debug, Clone)]
pub struct CampaignRow {
    /// Its id.
    pub id: String,
    /// Its settings.
    pub spec: CampaignSpec,
    /// Where it stands.
    pub state: CampaignState,
    /// When it was created (unix ms).
    pub created_ms: i64,
    /// When its first call was placed.
    pub started_ms: Option<i64>,
    /// When its last contact was settled (or, canceled, its last call ended).
    pub finished_ms: Option<i64>,
}

/// One contact as stored, with its attempts.
#[derive(Debug, Clone, PartialEq)]
pub struct ContactRow {
    /// Its line in the upload.
    pub line: u64,
    /// E.164 number.
    pub to: String,
    /// Template variables.
    pub vars: Map<String, Value>,
    /// Its own time zone, if any.
    pub timezone: Option<String>,
    /// Where it stands.
    pub state: ContactState,
    /// Attempts started.
    pub attempts: u32,
    /// When the next attempt is due (pending, retry-scheduled).
    pub next_attempt_ms: i64,
    /// The final status of the last attempt.
    pub last_status: Option<String>,
    /// Each attempt's call, oldest first.
    pub calls: Vec<AttemptRow>,
}

/// One attempt of a contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRow {
    /// 1 for the first.
    pub attempt: u32,
    /// The call record.
    pub call_id: String,
    /// The call's status now.
    pub status: Option<String>,
    /// Its length, once the provider reported it.
    pub duration_seconds: Option<i64>,
    /// When it was placed (unix ms).
    pub started_ms: i64,
}

/// The campaigns' tables, sharing the call records' connection pool.
#[derive(Debug, Clone)]
pub struct CampaignStore {
    pool: AnyPool,
    postgres: bool,
}

fn failed(op: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { op, source }
}

fn corrupt(id: &str, field: &'static str, detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        id: id.to_owned(),
        field,
        detail: detail.into(),
    }
}

/// `'machine', 'completed', …`: the final call statuses, for `IN (…)`. Our own constants.
fn final_statuses() -> String {
    CallStatus::ALL
        .iter()
        .filter(|status| status.is_final())
        .map(|status| format!("'{}'", status.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `$from, $from+1, …` for `count` parameters.
fn placeholders(from: usize, count: usize) -> String {
    (from..from + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn to_u32(value: i64) -> u32 {
    u32::try_from(value.max(0)).unwrap_or(u32::MAX)
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl CampaignStore {
    /// The campaigns' tables in `calls`'s database (the migrations made them).
    pub fn new(calls: &CallStore) -> Self {
        CampaignStore {
            pool: calls.pool().clone(),
            postgres: calls.is_postgres(),
        }
    }

    /// `FOR UPDATE SKIP LOCKED` on PostgreSQL; nothing on SQLite, which has no row locks
    /// (its writers take turns on the whole database).
    fn skip_locked(&self) -> &'static str {
        if self.postgres {
            " FOR UPDATE SKIP LOCKED"
        } else {
            ""
        }
    }

    async fn begin(&self, op: &'static str) -> Result<Transaction<'static, Any>, StoreError> {
        self.pool.begin().await.map_err(failed(op))
    }

    // ---- Creating and reading campaigns ----

    /// Stores a campaign and all its contacts in one transaction: all or nothing. Returns its
    /// id.
    pub async fn create(
        &self,
        spec: &CampaignSpec,
        contacts: &[NewContact],
        now_ms: i64,
    ) -> Result<String, StoreError> {
        const OP: &str = "create_campaign";
        let id = new_campaign_id();
        let mut tx = self.begin(OP).await?;
        sqlx::query(
            "INSERT INTO campaigns (id, name, prompt, provider, from_number, state, \
             max_concurrent, calls_per_minute, window_start_min, window_end_min, window_days, \
             timezone, max_attempts, retry_on, backoff_ms, start_at_ms, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
        )
        .bind(&id)
        .bind(&spec.name)
        .bind(&spec.prompt)
        .bind(&spec.provider)
        .bind(&spec.from)
        .bind(CampaignState::Running.as_str())
        .bind(i64::from(spec.max_concurrent))
        .bind(spec.calls_per_minute.map(i64::from))
        .bind(i64::from(spec.window.start_min))
        .bind(i64::from(spec.window.end_min))
        .bind(i64::from(spec.window.days))
        .bind(&spec.timezone)
        .bind(i64::from(spec.retry.max_attempts))
        .bind(spec.retry.on_list())
        .bind(spec.retry.backoff_ms)
        .bind(spec.start_at_ms)
        .bind(now_ms)
        .execute(&mut *tx)
        .await
        .map_err(failed(OP))?;
        for batch in contacts.chunks(INSERT_BATCH) {
            insert_contacts(&mut tx, &id, spec.start_at_ms, now_ms, batch).await?;
        }
        tx.commit().await.map_err(failed(OP))?;
        Ok(id)
    }

    /// The campaign with this id.
    pub async fn campaign(&self, id: &str) -> Result<Option<CampaignRow>, StoreError> {
        const OP: &str = "get_campaign";
        let row = sqlx::query(&format!(
            "SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(failed(OP))?;
        row.as_ref().map(campaign_from_row).transpose()
    }

    /// Up to `limit` campaigns, newest first.
    pub async fn campaigns(&self, limit: u32) -> Result<Vec<CampaignRow>, StoreError> {
        const OP: &str = "list_campaigns";
        let rows = sqlx::query(&format!(
            "SELECT {CAMPAIGN_COLUMNS} FROM campaigns ORDER BY created_ms DESC, id DESC LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(failed(OP))?;
        rows.iter().map(campaign_from_row).collect()
    }

    /// Each campaign's contacts by state, and its attempts in all.
    pub async fn counts(
        &self,
        ids: &[&str],
    ) -> Result<HashMap<String, (StateCounts, u64)>, StoreError> {
        const OP: &str = "campaign_counts";
        let mut counts: HashMap<String, (StateCounts, u64)> = HashMap::new();
        if ids.is_empty() {
            return Ok(counts);
        }
        let sql = format!(
            "SELECT campaign_id, state, COUNT(*) AS n, CAST(SUM(attempts) AS BIGINT) AS a \
             FROM campaign_contacts WHERE campaign_id IN ({}) GROUP BY campaign_id, state",
            placeholders(1, ids.len())
        );
        let mut query = sqlx::query(&sql);
        for id in ids {
            query = query.bind(*id);
        }
        for row in query.fetch_all(&self.pool).await.map_err(failed(OP))? {
            let id: String = row.try_get("campaign_id").map_err(failed(OP))?;
            let state =
                contact_state(&id, &row.try_get::<String, _>("state").map_err(failed(OP))?)?;
            let n: i64 = row.try_get("n").map_err(failed(OP))?;
            let attempts: Option<i64> = row.try_get("a").map_err(failed(OP))?;
            let entry = counts.entry(id).or_default();
            entry.0.add(state, to_u64(n));
            entry.1 += to_u64(attempts.unwrap_or(0));
        }
        Ok(counts)
    }

    /// A campaign's contacts from line `after_line` on (exclusive), in line order, at most
    /// `limit`, optionally only those in `state`, each with its attempts.
    pub async fn contacts(
        &self,
        campaign_id: &str,
        state: Option<ContactState>,
        after_line: u64,
        limit: u32,
    ) -> Result<Vec<ContactRow>, StoreError> {
        const OP: &str = "campaign_contacts";
        let state_filter = if state.is_some() {
            " AND state = $4"
        } else {
            ""
        };
        let sql = format!(
            "SELECT line, to_number, vars, timezone, state, attempts, next_attempt_ms, last_status \
             FROM campaign_contacts WHERE campaign_id = $1 AND line > $2{state_filter} \
             ORDER BY line LIMIT $3"
        );
        let mut query = sqlx::query(&sql)
            .bind(campaign_id)
            .bind(to_i64(after_line))
            .bind(i64::from(limit));
        if let Some(state) = state {
            query = query.bind(state.as_str());
        }
        let rows = query.fetch_all(&self.pool).await.map_err(failed(OP))?;
        let mut contacts = rows
            .iter()
            .map(|row| contact_from_row(campaign_id, row))
            .collect::<Result<Vec<_>, _>>()?;
        let (Some(first), Some(last)) = (contacts.first(), contacts.last()) else {
            return Ok(contacts);
        };
        let attempts = sqlx::query(
            "SELECT a.line, a.attempt, a.call_id, a.started_ms, c.status, c.duration_seconds \
             FROM campaign_attempts a LEFT JOIN calls c ON c.id = a.call_id \
             WHERE a.campaign_id = $1 AND a.line >= $2 AND a.line <= $3 \
             ORDER BY a.line, a.attempt",
        )
        .bind(campaign_id)
        .bind(to_i64(first.line))
        .bind(to_i64(last.line))
        .fetch_all(&self.pool)
        .await
        .map_err(failed(OP))?;
        let mut by_line: HashMap<u64, Vec<AttemptRow>> = HashMap::new();
        for row in &attempts {
            let line: i64 = row.try_get("line").map_err(failed(OP))?;
            by_line.entry(to_u64(line)).or_default().push(AttemptRow {
                attempt: to_u32(row.try_get("attempt").map_err(failed(OP))?),
                call_id: row.try_get("call_id").map_err(failed(OP))?,
                status: row.try_get("status").map_err(failed(OP))?,
                duration_seconds: row.try_get("duration_seconds").map_err(failed(OP))?,
                started_ms: row.try_get("started_ms").map_err(failed(OP))?,
            });
        }
        for contact in &mut contacts {
            contact.calls = by_line.remove(&contact.line).unwrap_or_default();
        }
        Ok(contacts)
    }

    // ---- Pause, resume, cancel ----

    /// Moves a campaign from one of `from` to `to`; false when it was in none of them.
    pub async fn transition(
        &self,
        id: &str,
        from: &[CampaignState],
        to: CampaignState,
    ) -> Result<bool, StoreError> {
        let allowed = from
            .iter()
            .map(|state| format!("'{}'", state.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        let result = sqlx::query(&format!(
            "UPDATE campaigns SET state = $2 WHERE id = $1 AND state IN ({allowed})"
        ))
        .bind(id)
        .bind(to.as_str())
        .execute(&self.pool)
        .await
        .map_err(failed("campaign_transition"))?;
        Ok(result.rows_affected() == 1)
    }

    /// Cancels a running or paused campaign: contacts not being called become `canceled`.
    /// Calls in progress go on (their contacts settle as they end). False when the campaign
    /// was neither running nor paused.
    pub async fn cancel(&self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        const OP: &str = "cancel_campaign";
        let mut tx = self.begin(OP).await?;
        let changed = sqlx::query(
            "UPDATE campaigns SET state = 'canceled' WHERE id = $1 AND state IN ('running', 'paused')",
        )
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(failed(OP))?
        .rows_affected();
        if changed == 0 {
            tx.rollback().await.map_err(failed(OP))?;
            return Ok(false);
        }
        sqlx::query(
            "UPDATE campaign_contacts SET state = 'canceled', updated_ms = $2 \
             WHERE campaign_id = $1 AND state IN ('pending', 'retry-scheduled')",
        )
        .bind(id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await
        .map_err(failed(OP))?;
        tx.commit().await.map_err(failed(OP))?;
        Ok(true)
    }

    /// The call records of a campaign's contacts being called now.
    pub async fn live_calls(&self, campaign_id: &str) -> Result<Vec<String>, StoreError> {
        const OP: &str = "campaign_live_calls";
        let rows = sqlx::query(
            "SELECT current_call_id FROM campaign_contacts \
             WHERE campaign_id = $1 AND state = 'calling' AND current_call_id IS NOT NULL",
        )
        .bind(campaign_id)
        .fetch_all(&self.pool)
        .await
        .map_err(failed(OP))?;
        rows.iter()
            .map(|row| row.try_get("current_call_id").map_err(failed(OP)))
            .collect()
    }

    // ---- The do-not-call list ----

    /// Puts `number` on the do-not-call list; false when it was on it already.
    pub async fn add_do_not_call(&self, number: &str, now_ms: i64) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "INSERT INTO do_not_call (number, added_ms) VALUES ($1, $2) \
             ON CONFLICT (number) DO NOTHING",
        )
        .bind(number)
        .bind(now_ms)
        .execute(&self.pool)
        .await
        .map_err(failed("add_do_not_call"))?;
        Ok(result.rows_affected() == 1)
    }

    /// Takes `number` off the do-not-call list; false when it was not on it.
    pub async fn remove_do_not_call(&self, number: &str) -> Result<bool, StoreError> {
        let result = sqlx::query("DELETE FROM do_not_call WHERE number = $1")
            .bind(number)
            .execute(&self.pool)
            .await
            .map_err(failed("remove_do_not_call"))?;
        Ok(result.rows_affected() == 1)
    }

    /// When `number` was put on the do-not-call list, if it is on it.
    pub async fn do_not_call_since(&self, number: &str) -> Result<Option<i64>, StoreError> {
        const OP: &str = "do_not_call";
        let row = sqlx::query("SELECT added_ms FROM do_not_call WHERE number = $1")
            .bind(number)
            .fetch_optional(&self.pool)
            .await
            .map_err(failed(OP))?;
        row.map(|row| row.try_get("added_ms").map_err(failed(OP)))
            .transpose()
    }
}

async fn insert_contacts(
    tx: &mut Transaction<'static, Any>,
    campaign_id: &str,
    due_ms: i64,
    now_ms: i64,
    contacts: &[NewContact],
) -> Result<(), StoreError> {
    const OP: &str = "insert_contacts";
    let mut sql = String::from(
        "INSERT INTO campaign_contacts (campaign_id, line, to_number, vars, timezone, state, \
         attempts, next_attempt_ms, updated_ms) VALUES ",
    );
    for (index, _) in contacts.iter().enumerate() {
        if index > 0 {
            sql.push_str(", ");
        }
        let first = 4 + index * 4;
        sql.push_str(&format!(
            "($1, ${}, ${}, ${}, ${}, 'pending', 0, $2, $3)",
            first,
            first + 1,
            first + 2,
            first + 3
        ));
    }
    let mut query = sqlx::query(&sql)
        .bind(campaign_id)
        .bind(due_ms)
        .bind(now_ms);
    for contact in contacts {
        let vars = serde_json::to_string(&contact.vars).map_err(|source| StoreError::Encode {
            what: "contact vars",
            source,
        })?;
        query = query
            .bind(to_i64(contact.line))
            .bind(contact.to.clone())
            .bind(vars)
            .bind(contact.timezone.clone());
    }
    query.execute(&mut **tx).await.map_err(failed(OP))?;
    Ok(())
}

fn contact_state(id: &str, value: &str) -> Result<ContactState, StoreError> {
    value
        .parse()
        .map_err(|e: String| corrupt(id, "contact state", e))
}

fn campaign_from_row(row: &AnyRow) -> Result<CampaignRow, StoreError> {
    const OP: &str = "reading a campaign";
    let id: String = row.try_get("id").map_err(failed(OP))?;
    let get_i64 = |column: &str| row.try_get::<i64, _>(column).map_err(failed(OP));
    let state: String = row.try_get("state").map_err(failed(OP))?;
    let state = state
        .parse()
        .map_err(|e: String| corrupt(&id, "state", e))?;
    let window = CallingWindow {
        start_min: u16::try_from(get_i64("window_start_min")?).unwrap_or(0),
        end_min: u16::try_from(get_i64("window_end_min")?).unwrap_or(1440),
        days: u8::try_from(get_i64("window_days")?).unwrap_or(0),
    };
    let retry_on: String = row.try_get("retry_on").map_err(failed(OP))?;
    let spec = CampaignSpec {
        name: row.try_get("name").map_err(failed(OP))?,
        prompt: row.try_get("prompt").map_err(failed(OP))?,
        provider: row.try_get("provider").map_err(failed(OP))?,
        from: row.try_get("from_number").map_err(failed(OP))?,
        max_concurrent: to_u32(get_i64("max_concurrent")?),
        calls_per_minute: row
            .try_get::<Option<i64>, _>("calls_per_minute")
            .map_err(failed(OP))?
            .map(to_u32),
        window,
        timezone: row.try_get("timezone").map_err(failed(OP))?,
        retry: RetryPolicy {
            on: RetryPolicy::parse_on(&retry_on).map_err(|e| corrupt(&id, "retry_on", e))?,
            max_attempts: to_u32(get_i64("max_attempts")?),
            backoff_ms: get_i64("backoff_ms")?,
        },
        start_at_ms: get_i64("start_at_ms")?,
    };
    Ok(CampaignRow {
        spec,
        state,
        created_ms: get_i64("created_ms")?,
        started_ms: row.try_get("started_ms").map_err(failed(OP))?,
        finished_ms: row.try_get("finished_ms").map_err(failed(OP))?,
        id,
    })
}

fn contact_from_row(campaign_id: &str, row: &AnyRow) -> Result<ContactRow, StoreError> {
    const OP: &str = "reading a contact";
    let vars: String = row.try_get("vars").map_err(failed(OP))?;
    let vars = match serde_json::from_str::<Value>(&vars) {
        Ok(Value::Object(vars)) => vars,
        _ => return Err(corrupt(campaign_id, "contact vars", "not a JSON object")),
    };
    let state: String = row.try_get("state").map_err(failed(OP))?;
    Ok(ContactRow {
        line: to_u64(row.try_get("line").map_err(failed(OP))?),
        to: row.try_get("to_number").map_err(failed(OP))?,
        vars,
        timezone: row.try_get("timezone").map_err(failed(OP))?,
        state: contact_state(campaign_id, &state)?,
        attempts: to_u32(row.try_get("attempts").map_err(failed(OP))?),
        next_attempt_ms: row.try_get("next_attempt_ms").map_err(failed(OP))?,
        last_status: row.try_get("last_status").map_err(failed(OP))?,
        calls: Vec::new(),
    })
}

/// A new campaign id: `k` and 24 characters of `[a-z0-9]`, from 122 random bits (the shape
/// of call ids, whose first letter is `c`).
fn new_campaign_id() -> String {
    const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut n = uuid::Uuid::new_v4().as_u128();
    let mut id = String::with_capacity(25);
    id.push('k');
    for _ in 0..24 {
        id.push(char::from(ALPHABET[(n % 36) as usize]));
        n /= 36;
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_statuses_are_the_outcomes() {
        assert_eq!(
            final_statuses(),
            "'machine', 'completed', 'busy', 'no-answer', 'failed', 'canceled'"
        );
        assert_eq!(placeholders(3, 2), "$3, $4");
    }

    #[test]
    fn campaign_ids_look_like_call_ids() {
        let id = new_campaign_id();
        assert_eq!(id.len(), 25);
        assert!(id.starts_with('k'));
        assert_ne!(id, new_campaign_id());
    }
}
