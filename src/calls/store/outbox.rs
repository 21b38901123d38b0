//! The post-call webhook's outbox: which calls' final records are still to be POSTed.
//!
//! A row is inserted in the same transaction that writes a call's first final status (see
//! `record_status` and `fail`), on a store made with [`CallStore::with_post_call_outbox`].
//! The delivery worker (`calls::post_call`) then claims due rows, POSTs each record and marks
//! the row delivered, or schedules the next attempt.
//!
//! Several instances may share the database: a claim is a conditional `UPDATE` that sets a
//! lease (an owner and an expiry), so only one instance holds a row at a time; a lease that
//! runs out (its instance died mid-attempt) lets another take the row over. A row once
//! delivered is never claimed again. Times are the app's clock, like the records' own; a
//! lease lasts far longer than any clock difference between hosts.

use std::time::Duration;

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{CallStore, StoreError, now_ms, query_error};

/// One call whose record a worker has claimed for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostCallDelivery {
    /// The call's record id.
    pub call_id: String,
    /// Attempts started so far, this one included (1 on the first).
    pub attempt: u32,
    /// When the call's final status was written (unix milliseconds).
    pub enqueued_ms: i64,
}

/// Where a call's post-call delivery stands, as the outbox says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostCallState {
    /// Attempts started so far.
    pub attempts: u32,
    /// The error of the last failed attempt.
    pub last_error: Option<String>,
    /// When a receiver accepted it (unix milliseconds).
    pub delivered_ms: Option<i64>,
    /// When the retry window ran out without success (unix milliseconds).
    pub gave_up_ms: Option<i64>,
    /// When the next attempt is due (unix milliseconds).
    pub next_attempt_ms: i64,
}

impl CallStore {
    /// This store, queueing a post-call delivery whenever it writes a call's final status.
    /// Only a server with `POST_CALL_WEBHOOK_URL` set makes one, so no outbox rows pile up
    /// without a worker to deliver them. Shares the pool.
    pub fn with_post_call_outbox(self) -> CallStore {
        CallStore {
            post_call_outbox: true,
            ..self
        }
    }

    /// Queues the delivery of call `id`'s record, inside the transaction that moves it to a
    /// final status at `at`. Once per call: a later final status (a late `machine` replacing
    /// `completed`) finds the row there and adds none; the delivery, built when it is sent,
    /// shows whatever the record says then.
    pub(super) async fn enqueue_post_call(
        &self,
        tx: &mut Transaction<'static, Any>,
        op: &'static str,
        id: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        if !self.post_call_outbox {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO post_call_outbox (call_id, enqueued_ms, next_attempt_ms) \
             VALUES ($1, $2, $2) ON CONFLICT (call_id) DO NOTHING",
        )
        .bind(id)
        .bind(at)
        .execute(&mut **tx)
        .await
        .map_err(query_error(op))?;
        Ok(())
    }

    /// Claims up to `limit` due deliveries for `owner` for `lease`, oldest first, counting
    /// an attempt on each. Due: not delivered or given up, its next attempt time reached,
    /// no live lease held by anyone, and its call record unchanged for `settle` — the bridge
    /// may still be writing the transcript and end reason just after a provider's final
    /// callback arrived, and each such write pushes the delivery back.
    pub async fn claim_post_calls(
        &self,
        owner: &str,
        lease: Duration,
        settle: Duration,
        limit: u32,
    ) -> Result<Vec<PostCallDelivery>, StoreError> {
        const OP: &str = "claim_post_calls";
        let now = now_ms();
        // The inner SELECT picks candidates; the outer conditions are checked again on the
        // row itself, so of two instances racing for a row only the first UPDATE takes it
        // (PostgreSQL re-reads a row another transaction changed; SQLite serialises writes).
        let rows = sqlx::query(
            "UPDATE post_call_outbox \
             SET lease_owner = $1, lease_until_ms = $2, attempts = attempts + 1 \
             WHERE call_id IN ( \
               SELECT o.call_id FROM post_call_outbox o JOIN calls c ON c.id = o.call_id \
               WHERE o.delivered_ms IS NULL AND o.gave_up_ms IS NULL \
                 AND o.next_attempt_ms <= $3 \
                 AND (o.lease_until_ms IS NULL OR o.lease_until_ms <= $3) \
                 AND c.updated_ms <= $4 \
               ORDER BY o.next_attempt_ms, o.call_id LIMIT $5) \
             AND delivered_ms IS NULL AND gave_up_ms IS NULL \
             AND (lease_until_ms IS NULL OR lease_until_ms <= $3) \
             RETURNING call_id, attempts, enqueued_ms",
        )
        .bind(owner)
        .bind(now.saturating_add(millis(lease)))
        .bind(now)
        .bind(now.saturating_sub(millis(settle)))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(query_error(OP))?;
        let mut claimed = rows
            .iter()
            .map(delivery_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        // RETURNING gives no order; deliver the oldest first.
        claimed.sort_by(|a, b| (a.enqueued_ms, &a.call_id).cmp(&(b.enqueued_ms, &b.call_id)));
        Ok(claimed)
    }

    /// Records that a receiver accepted call `call_id`'s record: it is never sent again.
    /// Whoever holds the lease, since the 2xx is what counts.
    pub async fn mark_post_call_delivered(&self, call_id: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE post_call_outbox SET delivered_ms = $2, lease_owner = NULL, \
             lease_until_ms = NULL, last_error = NULL \
             WHERE call_id = $1 AND delivered_ms IS NULL",
        )
        .bind(call_id)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(query_error("mark_post_call_delivered"))?;
        Ok(())
    }

    /// After a failed attempt: the next one is due `retry_in` from now, and the lease is let
    /// go. Does nothing when `owner` no longer holds the row (its lease ran out and another
    /// instance took it over).
    pub async fn retry_post_call(
        &self,
        call_id: &str,
        owner: &str,
        retry_in: Duration,
        error: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE post_call_outbox SET next_attempt_ms = $3, last_error = $4, \
             lease_owner = NULL, lease_until_ms = NULL \
             WHERE call_id = $1 AND lease_owner = $2 AND delivered_ms IS NULL",
        )
        .bind(call_id)
        .bind(owner)
        .bind(now_ms().saturating_add(millis(retry_in)))
        .bind(error)
        .execute(&self.pool)
        .await
        .map_err(query_error("retry_post_call"))?;
        Ok(())
    }

    /// After a failed attempt with no time left to retry: the row is settled as given up.
    pub async fn give_up_post_call(
        &self,
        call_id: &str,
        owner: &str,
        error: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE post_call_outbox SET gave_up_ms = $3, last_error = $4, \
             lease_owner = NULL, lease_until_ms = NULL \
             WHERE call_id = $1 AND lease_owner = $2 AND delivered_ms IS NULL",
        )
        .bind(call_id)
        .bind(owner)
        .bind(now_ms())
        .bind(error)
        .execute(&self.pool)
        .await
        .map_err(query_error("give_up_post_call"))?;
        Ok(())
    }

    /// Hands a claimed row back unattempted (the server is stopping): due at once for the
    /// next instance, and the attempt its claim counted is taken back.
    pub async fn release_post_call(&self, call_id: &str, owner: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE post_call_outbox SET attempts = attempts - 1, \
             lease_owner = NULL, lease_until_ms = NULL \
             WHERE call_id = $1 AND lease_owner = $2 AND delivered_ms IS NULL",
        )
        .bind(call_id)
        .bind(owner)
        .execute(&self.pool)
        .await
        .map_err(query_error("release_post_call"))?;
        Ok(())
    }

    /// Where call `call_id`'s delivery stands; `None` when none was queued.
    pub async fn post_call_state(
        &self,
        call_id: &str,
    ) -> Result<Option<PostCallState>, StoreError> {
        const OP: &str = "post_call_state";
        let row = sqlx::query(
            "SELECT attempts, last_error, delivered_ms, gave_up_ms, next_attempt_ms \
             FROM post_call_outbox WHERE call_id = $1",
        )
        .bind(call_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(query_error(OP))?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(PostCallState {
            attempts: attempts(&row, OP)?,
            last_error: row.try_get("last_error").map_err(query_error(OP))?,
            delivered_ms: row.try_get("delivered_ms").map_err(query_error(OP))?,
            gave_up_ms: row.try_get("gave_up_ms").map_err(query_error(OP))?,
            next_attempt_ms: row.try_get("next_attempt_ms").map_err(query_error(OP))?,
        }))
    }
}

fn delivery_from_row(row: &AnyRow) -> Result<PostCallDelivery, StoreError> {
    const OP: &str = "reading a post-call delivery";
    Ok(PostCallDelivery {
        call_id: row.try_get("call_id").map_err(query_error(OP))?,
        attempt: attempts(row, OP)?,
        enqueued_ms: row.try_get("enqueued_ms").map_err(query_error(OP))?,
    })
}

fn attempts(row: &AnyRow, op: &'static str) -> Result<u32, StoreError> {
    let attempts: i64 = row.try_get("attempts").map_err(query_error(op))?;
    Ok(u32::try_from(attempts.max(0)).unwrap_or(u32::MAX))
}

/// Milliseconds of `duration`, saturating (a lease or delay never overflows the clock).
fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
