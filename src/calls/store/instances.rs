//! Which server instance looks after which call, so records left unfinished by an instance
//! that died can be found and settled by one that lives (see `calls::reconcile`).
//!
//! Every running instance keeps a row in `instances` whose `heartbeat_ms` it rewrites every
//! few seconds, and deletes it on a clean exit. A call record's `owner_instance` is the
//! instance that created it or, later, the one running its media stream. A record that is
//! not final and whose owner has no fresh heartbeat is an orphan: nobody will ever end it.
//!
//! Heartbeat times come from the database's clock, not the instance's, so instances on hosts
//! whose clocks disagree still agree on who is alive. `created_ms` of records is the app's
//! clock, as everywhere else in the store.
//!
//! Two instances may look for orphans at the same time; only the one whose conditional
//! `UPDATE … WHERE owner_instance = <the dead owner>` changes the row acts on it. The loser
//! sees zero rows changed (on PostgreSQL its `UPDATE` waits for the winner's row lock and
//! re-reads the row; SQLite serialises writes), so a call is never settled twice.

use std::time::Duration;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::model::{CallStatus, ParseCallStatusError};
use super::{Backend, CallStore, StoreError, expect_one, now_ms, query_error};

/// A call record that is not final and that no live instance looks after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrphanedCall {
    /// Our record id.
    pub id: String,
    /// Provider name (`twilio`, `plivo`).
    pub provider: String,
    /// The provider's id for the call, when it was known.
    pub provider_call_id: Option<String>,
    /// The record's (stale) status: queued, ringing, in-progress or machine.
    pub status: CallStatus,
    /// The instance that owned it and is gone, or `None` for a record written before owners
    /// were kept (or by an older version of the server).
    pub owner: Option<String>,
}

impl CallStore {
    /// Marks this store's instance alive now (creating its row on the first beat). Does
    /// nothing on a store that writes for no instance (see [`CallStore::owned_by`]).
    pub async fn heartbeat(&self) -> Result<(), StoreError> {
        let Some(instance) = self.instance_id() else {
            return Ok(());
        };
        let now = db_now_ms(self.backend);
        sqlx::query(&format!(
            "INSERT INTO instances (id, started_ms, heartbeat_ms) VALUES ($1, {now}, {now}) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_ms = excluded.heartbeat_ms"
        ))
        .bind(instance)
        .execute(&self.pool)
        .await
        .map_err(query_error("heartbeat"))?;
        Ok(())
    }

    /// Deletes this store's instance row: a clean exit, after which nothing it owned is live.
    pub async fn leave(&self) -> Result<(), StoreError> {
        let Some(instance) = self.instance_id() else {
            return Ok(());
        };
        sqlx::query("DELETE FROM instances WHERE id = $1")
            .bind(instance)
            .execute(&self.pool)
            .await
            .map_err(query_error("leave"))?;
        Ok(())
    }

    /// Instances whose heartbeat is younger than `dead_after`, by id.
    pub async fn live_instances(&self, dead_after: Duration) -> Result<Vec<String>, StoreError> {
        const OP: &str = "live_instances";
        let now = db_now_ms(self.backend);
        let rows = sqlx::query(&format!(
            "SELECT id FROM instances WHERE heartbeat_ms >= {now} - $1 ORDER BY id"
        ))
        .bind(millis(dead_after))
        .fetch_all(&self.pool)
        .await
        .map_err(query_error(OP))?;
        rows.iter()
            .map(|row| row.try_get("id").map_err(query_error(OP)))
            .collect()
    }

    /// Deletes the rows of instances silent for longer than `silent_for` (ones that died
    /// without a clean exit), so the table does not grow with every crash. Their records
    /// stay orphans to reconcile: an owner without a row counts as dead. Returns how many.
    pub async fn prune_instances(&self, silent_for: Duration) -> Result<u64, StoreError> {
        let now = db_now_ms(self.backend);
        let result = sqlx::query(&format!(
            "DELETE FROM instances WHERE heartbeat_ms < {now} - $1"
        ))
        .bind(millis(silent_for))
        .execute(&self.pool)
        .await
        .map_err(query_error("prune_instances"))?;
        Ok(result.rows_affected())
    }

    /// Makes this store's instance the owner of a record: called when the instance starts
    /// running the call's media stream, which may be on another instance than the one that
    /// created the record. Does nothing on a store that writes for no instance.
    pub async fn take_ownership(&self, record_id: &str) -> Result<(), StoreError> {
        let Some(instance) = self.instance_id() else {
            return Ok(());
        };
        let result = sqlx::query("UPDATE calls SET owner_instance = $2 WHERE id = $1")
            .bind(record_id)
            .bind(instance)
            .execute(&self.pool)
            .await
            .map_err(query_error("take_ownership"))?;
        expect_one(result.rows_affected(), record_id)
    }

    /// The instance that owns a record (`None`: a record from before owners were kept).
    pub async fn owner_of(&self, record_id: &str) -> Result<Option<String>, StoreError> {
        const OP: &str = "owner_of";
        let row = sqlx::query("SELECT owner_instance FROM calls WHERE id = $1")
            .bind(record_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_error(OP))?
            .ok_or_else(|| StoreError::NotFound {
                id: record_id.to_owned(),
            })?;
        row.try_get("owner_instance").map_err(query_error(OP))
    }

    /// Up to `limit` records, oldest first, that are not final and that no live instance
    /// looks after:
    ///
    /// - owned by an instance other than this store's whose heartbeat is older than
    ///   `dead_after` or whose row is gone;
    /// - or owned by nobody and created more than `unowned_grace` ago. Such a record may
    ///   belong to an instance of an older version still running (it stamps no owner), so it
    ///   is only an orphan once no call that old can still be live.
    pub async fn orphaned_calls(
        &self,
        dead_after: Duration,
        unowned_grace: Duration,
        limit: u32,
    ) -> Result<Vec<OrphanedCall>, StoreError> {
        const OP: &str = "orphaned_calls";
        let now = db_now_ms(self.backend);
        let open = open_statuses();
        let rows = sqlx::query(&format!(
            "SELECT id, provider, provider_call_id, status, owner_instance FROM calls \
             WHERE status IN ({open}) AND ( \
               (owner_instance IS NULL AND created_ms < $1) \
               OR (owner_instance IS NOT NULL AND owner_instance <> $2 AND NOT EXISTS ( \
                 SELECT 1 FROM instances WHERE instances.id = calls.owner_instance \
                 AND instances.heartbeat_ms >= {now} - $3))) \
             ORDER BY created_ms, id LIMIT $4"
        ))
        .bind(now_ms().saturating_sub(millis(unowned_grace)))
        .bind(self.instance_id().unwrap_or_default())
        .bind(millis(dead_after))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(query_error(OP))?;
        rows.iter().map(orphan_from_row).collect()
    }

    /// Takes an orphan over for this store's instance, unless another instance took it
    /// first, its owner came back to life (a heartbeat within `dead_after`), or it ended
    /// meanwhile. True when this instance now owns it and alone may settle it.
    pub async fn claim_orphan(
        &self,
        orphan: &OrphanedCall,
        dead_after: Duration,
    ) -> Result<bool, StoreError> {
        const OP: &str = "claim_orphan";
        let Some(instance) = self.instance_id() else {
            return Ok(false);
        };
        let open = open_statuses();
        let result = match &orphan.owner {
            Some(owner) => {
                let now = db_now_ms(self.backend);
                sqlx::query(&format!(
                    "UPDATE calls SET owner_instance = $1 \
                     WHERE id = $2 AND owner_instance = $3 AND status IN ({open}) \
                     AND NOT EXISTS (SELECT 1 FROM instances WHERE instances.id = $3 \
                       AND instances.heartbeat_ms >= {now} - $4)"
                ))
                .bind(instance)
                .bind(&orphan.id)
                .bind(owner.as_str())
                .bind(millis(dead_after))
                .execute(&self.pool)
                .await
            }
            None => {
                sqlx::query(&format!(
                    "UPDATE calls SET owner_instance = $1 \
                     WHERE id = $2 AND owner_instance IS NULL AND status IN ({open})"
                ))
                .bind(instance)
                .bind(&orphan.id)
                .execute(&self.pool)
                .await
            }
        }
        .map_err(query_error(OP))?;
        Ok(result.rows_affected() == 1)
    }

    /// Gives a claimed orphan back to its previous owner, so that a later pass (of any
    /// instance) looks at it again; unless an instance took it over meanwhile.
    pub async fn release_orphan(&self, orphan: &OrphanedCall) -> Result<(), StoreError> {
        let Some(instance) = self.instance_id() else {
            return Ok(());
        };
        sqlx::query("UPDATE calls SET owner_instance = $1 WHERE id = $2 AND owner_instance = $3")
            .bind(orphan.owner.as_deref())
            .bind(&orphan.id)
            .bind(instance)
            .execute(&self.pool)
            .await
            .map_err(query_error("release_orphan"))?;
        Ok(())
    }

    /// True while this store's instance owns the record and it is not final: checked just
    /// before settling a claimed orphan, so that a call whose stream another instance took
    /// over, or that the provider's own callback ended, while we asked the provider about
    /// it is left alone.
    pub async fn still_claimed(&self, record_id: &str) -> Result<bool, StoreError> {
        let Some(instance) = self.instance_id() else {
            return Ok(false);
        };
        let open = open_statuses();
        let row = sqlx::query(&format!(
            "SELECT id FROM calls WHERE id = $1 AND owner_instance = $2 AND status IN ({open})"
        ))
        .bind(record_id)
        .bind(instance)
        .fetch_optional(&self.pool)
        .await
        .map_err(query_error("still_claimed"))?;
        Ok(row.is_some())
    }
}

/// SQL for "now" in unix milliseconds on the database's clock.
fn db_now_ms(backend: Backend) -> &'static str {
    match backend {
        // Julian day 2440587.5 is the unix epoch; `now` has millisecond resolution.
        Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
        Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
    }
}

/// `'queued', 'ringing', …`: the statuses of a call that has not ended, for `IN (…)`.
/// Our own constants, never user input.
fn open_statuses() -> String {
    CallStatus::ALL
        .iter()
        .filter(|status| !status.is_final())
        .map(|status| format!("'{}'", status.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Milliseconds of `duration`, capped so that `now - cap` cannot overflow a BIGINT.
fn millis(duration: Duration) -> i64 {
    const CAP_MS: i64 = 100 * 365 * 24 * 3600 * 1000;
    i64::try_from(duration.as_millis()).map_or(CAP_MS, |ms| ms.min(CAP_MS))
}

fn orphan_from_row(row: &AnyRow) -> Result<OrphanedCall, StoreError> {
    const OP: &str = "reading an orphaned call";
    let id: String = row.try_get("id").map_err(query_error(OP))?;
    let status: String = row.try_get("status").map_err(query_error(OP))?;
    let status = status
        .parse()
        .map_err(|e: ParseCallStatusError| StoreError::Corrupt {
            id: id.clone(),
            field: "status",
            detail: e.to_string(),
        })?;
    Ok(OrphanedCall {
        provider: row.try_get("provider").map_err(query_error(OP))?,
        provider_call_id: row.try_get("provider_call_id").map_err(query_error(OP))?,
        owner: row.try_get("owner_instance").map_err(query_error(OP))?,
        status,
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_statuses_are_the_unfinished_ones() {
        assert_eq!(open_statuses(), "'queued', 'ringing', 'in-progress'");
    }

    #[test]
    fn durations_never_overflow_the_clock_arithmetic() {
        assert_eq!(millis(Duration::from_secs(15)), 15_000);
        assert!(millis(Duration::MAX) < i64::MAX / 2);
    }
}
