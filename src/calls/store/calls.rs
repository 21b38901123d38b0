//! Queries on calls and their events.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};

use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::model::{
    CallFilter, CallRecord, CallStatus, NewCall, ParseCallStatusError, StatusChange, ToolEvent,
    TranscriptLine, rfc3339_ms,
};
use super::{CallStore, StoreError, expect_one, now_ms, query_error};
use crate::telephony::Direction;

/// `list` returns at most this many records.
const MAX_LIST_LIMIT: u32 = 500;

const CALL_COLUMNS: &str = "id, provider, provider_call_id, direction, from_number, to_number, \
     campaign, prompt, vars, status, answered_by, duration_seconds, end_reason, created_ms, \
     updated_ms, recording_file";

const KIND_STATUS: &str = "status";
const KIND_TRANSCRIPT: &str = "transcript";
const KIND_TOOL: &str = "tool";

impl CallStore {
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
        // The creating instance owns the record until another runs its stream, so a crash
        // of this process can be told from calls still looked after (see `instances`).
        sqlx::query(
            "INSERT INTO calls (id, provider, provider_call_id, direction, from_number, \
             to_number, campaign, prompt, vars, status, created_ms, updated_ms, event_seq, \
             owner_instance) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, 1, $12)",
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
        .bind(self.instance_id())
        .execute(&mut *tx)
        .await
        .map_err(query_error(OP))?;
        let event = Event::status(call.status.as_str());
        insert_event(&mut tx, OP, &id, 1, now, event).await?;
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
            events: Vec::new(),
            events_dropped: 0,
            latency: None,
            recording_url: None,
            recording_file: None,
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
            "SELECT kind, name, body, at_ms, interrupted FROM call_events \
             WHERE call_id = $1 ORDER BY seq",
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
                KIND_TRANSCRIPT => {
                    let interrupted: i64 = event.try_get("interrupted").map_err(query_error(OP))?;
                    record.transcript.push(TranscriptLine {
                        who: name,
                        text: body.unwrap_or_default(),
                        at,
                        interrupted: interrupted != 0,
                    })
                }
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
        self.load_timeline(&mut record).await?;
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
        if filter.direction.is_some() {
            conditions.push(format!("direction = ${}", conditions.len() + 1));
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
        if let Some(direction) = filter.direction {
            query = query.bind(direction.as_str());
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
        insert_event(&mut tx, OP, id, seq, at, Event::status(status.as_str())).await?;
        if status.is_final() && !current.is_final() {
            self.enqueue_post_call(&mut tx, OP, id, at).await?;
        }
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
            insert_event(&mut tx, OP, id, seq, at, Event::status(failed)).await?;
            // `advances_to(Failed)` holds only for a call that was not final yet.
            self.enqueue_post_call(&mut tx, OP, id, at).await?;
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
        let event = Event::with_body(KIND_TRANSCRIPT, who, text);
        self.append_event("append_transcript", id, event).await
    }

    /// Appends the line of an agent turn the caller talked over (`text`: what they heard).
    pub async fn append_interrupted_transcript(
        &self,
        id: &str,
        who: &str,
        text: &str,
    ) -> Result<(), StoreError> {
        let event = Event {
            interrupted: true,
            ..Event::with_body(KIND_TRANSCRIPT, who, text)
        };
        self.append_event("append_interrupted_transcript", id, event)
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
        let event = Event::with_body(KIND_TOOL, name, &body);
        self.append_event("append_tool_event", id, event).await
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
        event: Event<'_>,
    ) -> Result<(), StoreError> {
        let at = now_ms();
        let mut tx = self.begin(op).await?;
        let (seq, _) = next_seq(&mut tx, op, id, at).await?;
        insert_event(&mut tx, op, id, seq, at, event).await?;
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

/// A row of `call_events`, apart from its call, number and time.
struct Event<'a> {
    kind: &'static str,
    /// status: the status; transcript: who spoke; tool: the tool's name.
    name: &'a str,
    /// transcript: the text; tool: JSON text; status: none.
    body: Option<&'a str>,
    /// An agent transcript line the caller talked over.
    interrupted: bool,
}

impl<'a> Event<'a> {
    fn status(status: &'a str) -> Self {
        Self {
            kind: KIND_STATUS,
            name: status,
            body: None,
            interrupted: false,
        }
    }

    fn with_body(kind: &'static str, name: &'a str, body: &'a str) -> Self {
        Self {
            kind,
            name,
            body: Some(body),
            interrupted: false,
        }
    }
}

async fn insert_event(
    tx: &mut Transaction<'static, Any>,
    op: &'static str,
    id: &str,
    seq: i64,
    at: i64,
    event: Event<'_>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO call_events (call_id, seq, kind, at_ms, name, body, interrupted) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(seq)
    .bind(event.kind)
    .bind(at)
    .bind(event.name)
    .bind(event.body)
    .bind(i64::from(event.interrupted))
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
    let recording_file = get_opt("recording_file")?;
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
        events: Vec::new(),
        events_dropped: 0,
        latency: None,
        recording_url: recording_file
            .as_ref()
            .map(|_| CallRecord::recording_url_for(&id)),
        recording_file,
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn created_times_strictly_increase() {
        let a = next_created_ms();
        let b = next_created_ms();
        assert!(b > a);
    }
}
