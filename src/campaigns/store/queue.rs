//! The dialer's side of the campaign store: claiming due contacts, binding calls to them,
//! settling them when their calls end.
//!
//! ## How a contact is worked through
//! A due contact (`pending` or `retry-scheduled`, its `next_attempt_ms` reached) is *claimed*
//! by one instance's dialer: it becomes `calling` with a lease (owner and expiry) and its
//! attempt count goes up. The dialer then creates the call record, *binds* it to the contact
//! (`current_call_id`, and a row of `campaign_attempts`) and only then asks the provider to
//! dial. The lease matters until then: one that runs out on a contact without a call record
//! (its instance died before creating one) gives the contact back; one with a call record is
//! never dialled again for that attempt: the record's final status (from the provider's
//! callbacks) settles it, or, when the record shows the provider never took the call, it is
//! settled `failed` ([`CampaignStore::unplaced_calls`]). That is what makes "each contact is
//! dialled once per attempt" hold through a SIGKILL.
//!
//! Any instance *settles* a `calling` contact once its call record has a final status:
//! `done`, `failed`, or `retry-scheduled` after the back-off. The settling `UPDATE` names the
//! call it settles, so of two instances settling at once only one changes the row.
//!
//! ## Limits across instances
//! A claim runs in one transaction that first locks the single `campaign_dialer` row (on
//! PostgreSQL with `FOR UPDATE SKIP LOCKED`: an instance that finds it taken skips this round
//! instead of queueing; on SQLite the first `UPDATE` takes the database's write lock). Under
//! that lock it counts the live (`calling`) contacts of every campaign and of each one, so a
//! campaign's `max_concurrent` and the server's `MAX_CONCURRENT_CALLS` hold however many
//! instances claim. Contacts are read `FOR UPDATE SKIP LOCKED` too, so a contact that a
//! settling or canceling transaction holds is passed over rather than waited for.

use std::collections::HashSet;

use serde_json::{Map, Value};
use sqlx::{Any, Row, Transaction};

use super::{
    CAMPAIGN_COLUMNS, CampaignRow, CampaignStore, campaign_from_row, corrupt, failed,
    final_statuses, placeholders, to_i64, to_u32, to_u64,
};
use crate::calls::{CallStatus, StoreError};
use crate::campaigns::model::{CampaignState, ContactState, RetryPolicy};
use crate::campaigns::window::time_zone;

/// Due contacts looked at per campaign and claim beyond the free slots: those outside their
/// window or on the do-not-call list are moved aside in the same pass.
const SCAN_EXTRA: i64 = 100;
/// Calling contacts settled per pass.
const SETTLE_BATCH: i64 = 500;

/// A contact this instance has claimed and must now call.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    /// The campaign.
    pub campaign_id: String,
    /// The contact's line.
    pub line: u64,
    /// Which attempt this is (1 for the first).
    pub attempt: u32,
    /// Number to dial.
    pub to: String,
    /// Template variables.
    pub vars: Map<String, Value>,
    /// The campaign's prompt template.
    pub prompt: String,
    /// The campaign's provider.
    pub provider: String,
    /// The campaign's caller id.
    pub from: String,
}

/// What a claim may take.
#[derive(Debug, Clone)]
pub struct ClaimLimits<'a> {
    /// The claiming instance.
    pub owner: &'a str,
    /// Now, on the dialer's clock.
    pub now_ms: i64,
    /// How long the claim holds while the call is placed.
    pub lease_ms: i64,
    /// Live campaign calls at most, across every campaign and instance.
    pub max_live: u64,
}

/// A contact whose attempt ended, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// The campaign.
    pub campaign_id: String,
    /// The contact's line.
    pub line: u64,
    /// The call that ended.
    pub call_id: String,
    /// Its final status.
    pub status: CallStatus,
    /// The contact's new state.
    pub state: ContactState,
}

impl CampaignStore {
    /// Claims due contacts for `limits.owner`, as many as the limits allow: see the module
    /// documentation. Due contacts on the do-not-call list become `skipped`; those outside
    /// their calling window get their next attempt moved to the window's opening.
    pub async fn claim(&self, limits: &ClaimLimits<'_>) -> Result<Vec<Claim>, StoreError> {
        const OP: &str = "claim_contacts";
        // The claim writes (it takes the dialer's row); an idle dialer only reads.
        let due = sqlx::query(
            "SELECT 1 AS due FROM campaigns c JOIN campaign_contacts k ON k.campaign_id = c.id \
             WHERE c.state = 'running' AND c.start_at_ms <= $1 AND c.next_dial_ms <= $1 \
             AND k.state IN ('pending', 'retry-scheduled') AND k.next_attempt_ms <= $1 LIMIT 1",
        )
        .bind(limits.now_ms)
        .fetch_optional(&self.pool)
        .await
        .map_err(failed(OP))?;
        if due.is_none() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin(OP).await?;
        if !self.lock_dialer(&mut tx, limits.now_ms).await? {
            tx.rollback().await.map_err(failed(OP))?;
            return Ok(Vec::new());
        }
        let live: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM campaign_contacts WHERE state = 'calling'")
                .fetch_one(&mut *tx)
                .await
                .and_then(|row| row.try_get("n"))
                .map_err(failed(OP))?;
        let mut free_overall = to_i64(limits.max_live).saturating_sub(live);
        let mut claims = Vec::new();
        if free_overall > 0 {
            for campaign in self.due_campaigns(&mut tx, limits.now_ms).await? {
                if free_overall <= 0 {
                    break;
                }
                let taken = self
                    .claim_in(&mut tx, &campaign, free_overall, limits)
                    .await?;
                free_overall -= i64::try_from(taken.len()).unwrap_or(i64::MAX);
                claims.extend(taken);
            }
        }
        tx.commit().await.map_err(failed(OP))?;
        Ok(claims)
    }

    /// Takes the dialer's lock for this transaction; false when another instance holds it.
    async fn lock_dialer(
        &self,
        tx: &mut Transaction<'static, Any>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        const OP: &str = "lock_dialer";
        if self.postgres {
            let row =
                sqlx::query("SELECT id FROM campaign_dialer WHERE id = 1 FOR UPDATE SKIP LOCKED")
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(failed(OP))?;
            if row.is_none() {
                return Ok(false);
            }
        }
        // On SQLite this first write takes the database's write lock for the transaction.
        sqlx::query("UPDATE campaign_dialer SET last_claim_ms = $1 WHERE id = 1")
            .bind(now_ms)
            .execute(&mut **tx)
            .await
            .map_err(failed(OP))?;
        Ok(true)
    }

    /// Running campaigns that may dial now, oldest first, with their live calls.
    async fn due_campaigns(
        &self,
        tx: &mut Transaction<'static, Any>,
        now_ms: i64,
    ) -> Result<Vec<DueCampaign>, StoreError> {
        const OP: &str = "due_campaigns";
        let rows = sqlx::query(&format!(
            "SELECT {CAMPAIGN_COLUMNS}, (SELECT COUNT(*) FROM campaign_contacts k \
               WHERE k.campaign_id = campaigns.id AND k.state = 'calling') AS live \
             FROM campaigns WHERE state = 'running' AND start_at_ms <= $1 AND next_dial_ms <= $1 \
             ORDER BY created_ms, id"
        ))
        .bind(now_ms)
        .fetch_all(&mut **tx)
        .await
        .map_err(failed(OP))?;
        rows.iter()
            .map(|row| {
                Ok(DueCampaign {
                    campaign: campaign_from_row(row)?,
                    live: row.try_get("live").map_err(failed(OP))?,
                })
            })
            .collect()
    }

    /// Claims up to the campaign's free slots (and `free_overall`) of its due contacts.
    async fn claim_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        due: &DueCampaign,
        free_overall: i64,
        limits: &ClaimLimits<'_>,
    ) -> Result<Vec<Claim>, StoreError> {
        const OP: &str = "claim_in_campaign";
        let campaign = &due.campaign;
        let spec = &campaign.spec;
        let mut free = (i64::from(spec.max_concurrent) - due.live).min(free_overall);
        if spec.calls_per_minute.is_some() {
            // Paced: one call per interval, the interval kept by `next_dial_ms`.
            free = free.min(1);
        }
        if free <= 0 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&format!(
            "SELECT line, to_number, vars, timezone, attempts FROM campaign_contacts \
             WHERE campaign_id = $1 AND state IN ('pending', 'retry-scheduled') \
             AND next_attempt_ms <= $2 ORDER BY next_attempt_ms, line LIMIT $3{}",
            self.skip_locked()
        ))
        .bind(&campaign.id)
        .bind(limits.now_ms)
        .bind(free + SCAN_EXTRA)
        .fetch_all(&mut **tx)
        .await
        .map_err(failed(OP))?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut candidates = Vec::with_capacity(rows.len());
        for row in &rows {
            candidates.push(Candidate {
                line: to_u64(row.try_get("line").map_err(failed(OP))?),
                to: row.try_get("to_number").map_err(failed(OP))?,
                vars: row.try_get("vars").map_err(failed(OP))?,
                timezone: row.try_get("timezone").map_err(failed(OP))?,
                attempts: to_u32(row.try_get("attempts").map_err(failed(OP))?),
            });
        }
        let blocked = self.listed_numbers(tx, &candidates).await?;
        let default_zone =
            time_zone(&spec.timezone).map_err(|e| corrupt(&campaign.id, "timezone", e.0))?;
        let now = jiff::Timestamp::from_millisecond(limits.now_ms)
            .map_err(|e| corrupt(&campaign.id, "clock", e.to_string()))?;
        let mut claims = Vec::new();
        for candidate in candidates {
            if blocked.contains(&candidate.to) {
                self.set_contact(
                    tx,
                    &campaign.id,
                    candidate.line,
                    ContactUpdate::Skip,
                    limits,
                )
                .await?;
                continue;
            }
            let zone = match &candidate.timezone {
                Some(name) => {
                    time_zone(name).map_err(|e| corrupt(&campaign.id, "contact timezone", e.0))?
                }
                None => default_zone.clone(),
            };
            if let Some(opens) = spec.window.next_opening(now, &zone) {
                let opens_ms = opens.as_millisecond();
                self.set_contact(
                    tx,
                    &campaign.id,
                    candidate.line,
                    ContactUpdate::Defer(opens_ms),
                    limits,
                )
                .await?;
                continue;
            }
            if i64::try_from(claims.len()).unwrap_or(i64::MAX) >= free {
                // Within its window, but the slots are taken: it stays due.
                continue;
            }
            self.set_contact(
                tx,
                &campaign.id,
                candidate.line,
                ContactUpdate::Claim,
                limits,
            )
            .await?;
            let vars = match serde_json::from_str::<Value>(&candidate.vars) {
                Ok(Value::Object(vars)) => vars,
                _ => return Err(corrupt(&campaign.id, "contact vars", "not a JSON object")),
            };
            claims.push(Claim {
                campaign_id: campaign.id.clone(),
                line: candidate.line,
                attempt: candidate.attempts + 1,
                to: candidate.to,
                vars,
                prompt: spec.prompt.clone(),
                provider: spec.provider.clone(),
                from: spec.from.clone(),
            });
        }
        if !claims.is_empty() {
            let next_dial_ms = spec.calls_per_minute.map_or(0, |per_minute| {
                limits.now_ms + 60_000 / i64::from(per_minute.max(1))
            });
            sqlx::query(
                "UPDATE campaigns SET next_dial_ms = $2, started_ms = COALESCE(started_ms, $3) \
                 WHERE id = $1",
            )
            .bind(&campaign.id)
            .bind(next_dial_ms)
            .bind(limits.now_ms)
            .execute(&mut **tx)
            .await
            .map_err(failed(OP))?;
        }
        Ok(claims)
    }

    /// The candidates' numbers that are on the do-not-call list.
    async fn listed_numbers(
        &self,
        tx: &mut Transaction<'static, Any>,
        candidates: &[Candidate],
    ) -> Result<HashSet<String>, StoreError> {
        const OP: &str = "do_not_call_lookup";
        let sql = format!(
            "SELECT number FROM do_not_call WHERE number IN ({})",
            placeholders(1, candidates.len())
        );
        let mut query = sqlx::query(&sql);
        for candidate in candidates {
            query = query.bind(candidate.to.as_str());
        }
        let rows = query.fetch_all(&mut **tx).await.map_err(failed(OP))?;
        rows.iter()
            .map(|row| row.try_get("number").map_err(failed(OP)))
            .collect()
    }

    async fn set_contact(
        &self,
        tx: &mut Transaction<'static, Any>,
        campaign_id: &str,
        line: u64,
        update: ContactUpdate,
        limits: &ClaimLimits<'_>,
    ) -> Result<(), StoreError> {
        const OP: &str = "update_due_contact";
        let query = match update {
            ContactUpdate::Skip => sqlx::query(
                "UPDATE campaign_contacts SET state = 'skipped', last_status = NULL, updated_ms = $3 \
                 WHERE campaign_id = $1 AND line = $2",
            )
            .bind(campaign_id)
            .bind(to_i64(line))
            .bind(limits.now_ms),
            ContactUpdate::Defer(opens_ms) => sqlx::query(
                "UPDATE campaign_contacts SET next_attempt_ms = $3, updated_ms = $4 \
                 WHERE campaign_id = $1 AND line = $2",
            )
            .bind(campaign_id)
            .bind(to_i64(line))
            .bind(opens_ms)
            .bind(limits.now_ms),
            ContactUpdate::Claim => sqlx::query(
                "UPDATE campaign_contacts SET state = 'calling', attempts = attempts + 1, \
                 lease_owner = $3, lease_until_ms = $4, current_call_id = NULL, updated_ms = $5 \
                 WHERE campaign_id = $1 AND line = $2",
            )
            .bind(campaign_id)
            .bind(to_i64(line))
            .bind(limits.owner)
            .bind(limits.now_ms.saturating_add(limits.lease_ms))
            .bind(limits.now_ms),
        };
        query.execute(&mut **tx).await.map_err(failed(OP))?;
        Ok(())
    }

    /// Binds the call record `call_id` to a claimed contact, before it is dialled, and
    /// records the attempt. False when the claim is no longer this owner's (its lease ran out
    /// and the contact was given back) or the campaign stopped running meanwhile: then the
    /// call must not be placed.
    pub async fn bind(
        &self,
        claim: &Claim,
        owner: &str,
        call_id: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        const OP: &str = "bind_call";
        let mut tx = self.begin(OP).await?;
        let bound = sqlx::query(
            "UPDATE campaign_contacts SET current_call_id = $3, updated_ms = $4 \
             WHERE campaign_id = $1 AND line = $2 AND state = 'calling' AND lease_owner = $5 \
             AND attempts = $6 AND current_call_id IS NULL \
             AND EXISTS (SELECT 1 FROM campaigns WHERE id = $1 AND state = 'running')",
        )
        .bind(&claim.campaign_id)
        .bind(to_i64(claim.line))
        .bind(call_id)
        .bind(now_ms)
        .bind(owner)
        .bind(i64::from(claim.attempt))
        .execute(&mut *tx)
        .await
        .map_err(failed(OP))?
        .rows_affected();
        if bound == 0 {
            tx.rollback().await.map_err(failed(OP))?;
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO campaign_attempts (campaign_id, line, attempt, call_id, started_ms) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&claim.campaign_id)
        .bind(to_i64(claim.line))
        .bind(i64::from(claim.attempt))
        .bind(call_id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await
        .map_err(failed(OP))?;
        tx.commit().await.map_err(failed(OP))?;
        Ok(true)
    }

    /// Gives an unbound claim back, not counting its attempt: due again at `due_ms`
    /// (`skipped` instead when `skip`: its number went on the do-not-call list meanwhile).
    pub async fn give_back(
        &self,
        claim: &Claim,
        owner: &str,
        due_ms: i64,
        skip: bool,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE campaign_contacts SET \
               state = CASE WHEN $6 = 1 THEN 'skipped' WHEN attempts > 1 THEN 'retry-scheduled' \
                            ELSE 'pending' END, \
               attempts = attempts - 1, lease_owner = NULL, lease_until_ms = NULL, \
               next_attempt_ms = $5, updated_ms = $5 \
             WHERE campaign_id = $1 AND line = $2 AND state = 'calling' AND lease_owner = $3 \
             AND attempts = $4 AND current_call_id IS NULL",
        )
        .bind(&claim.campaign_id)
        .bind(to_i64(claim.line))
        .bind(owner)
        .bind(i64::from(claim.attempt))
        .bind(due_ms)
        .bind(i64::from(skip))
        .execute(&self.pool)
        .await
        .map_err(failed("give_back_claim"))?;
        Ok(())
    }

    /// Gives back claims whose lease ran out before a call record was bound to them (their
    /// instance died, or hung): due again now, their attempt not counted. Contacts of a
    /// canceled campaign become `canceled`. Returns how many.
    pub async fn free_expired_claims(&self, now_ms: i64) -> Result<u64, StoreError> {
        let result = sqlx::query(
            "UPDATE campaign_contacts SET \
               state = CASE \
                 WHEN EXISTS (SELECT 1 FROM campaigns WHERE campaigns.id = campaign_contacts.campaign_id \
                              AND campaigns.state = 'canceled') THEN 'canceled' \
                 WHEN attempts > 1 THEN 'retry-scheduled' ELSE 'pending' END, \
               attempts = attempts - 1, lease_owner = NULL, lease_until_ms = NULL, \
               next_attempt_ms = $1, updated_ms = $1 \
             WHERE state = 'calling' AND current_call_id IS NULL AND lease_until_ms < $1",
        )
        .bind(now_ms)
        .execute(&self.pool)
        .await
        .map_err(failed("free_expired_claims"))?;
        Ok(result.rows_affected())
    }

    /// Call records bound to a contact whose claim's lease ran out before the provider was
    /// known to have accepted the call: the record is still `queued`, without a provider call
    /// id, so no callback about it ever arrived. Its dialer stopped between creating the
    /// record and hearing the provider's answer. The lease outlasts a provider request
    /// (`CAMPAIGN_LEASE_SECS` > `PROVIDER_TIMEOUT_SECS`), and a call the provider did place
    /// reports `ringing` long before the lease ends, so these were never dialled.
    pub async fn unplaced_calls(&self, now_ms: i64) -> Result<Vec<String>, StoreError> {
        const OP: &str = "unplaced_calls";
        let rows = sqlx::query(
            "SELECT k.current_call_id FROM campaign_contacts k \
             JOIN calls c ON c.id = k.current_call_id \
             WHERE k.state = 'calling' AND k.lease_until_ms < $1 \
             AND c.status = 'queued' AND c.provider_call_id IS NULL",
        )
        .bind(now_ms)
        .fetch_all(&self.pool)
        .await
        .map_err(failed(OP))?;
        rows.iter()
            .map(|row| row.try_get("current_call_id").map_err(failed(OP)))
            .collect()
    }

    /// Settles `calling` contacts whose call has a final status: `done`, `failed`, or
    /// `retry-scheduled` per the campaign's retry policy (`canceled` instead of a retry once
    /// the campaign is canceled).
    pub async fn settle_ended(&self, now_ms: i64) -> Result<Vec<Settled>, StoreError> {
        const OP: &str = "settle_ended_calls";
        let rows = sqlx::query(&format!(
            "SELECT k.campaign_id, k.line, k.attempts, k.current_call_id, c.status, \
               p.state AS campaign_state, p.max_attempts, p.retry_on, p.backoff_ms \
             FROM campaign_contacts k \
             JOIN calls c ON c.id = k.current_call_id \
             JOIN campaigns p ON p.id = k.campaign_id \
             WHERE k.state = 'calling' AND c.status IN ({}) \
             ORDER BY k.campaign_id, k.line LIMIT $1",
            final_statuses()
        ))
        .bind(SETTLE_BATCH)
        .fetch_all(&self.pool)
        .await
        .map_err(failed(OP))?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        // One commit for the batch. Rows are changed in (campaign, line) order, so instances
        // settling the same batch at once wait for each other instead of deadlocking.
        let mut tx = self.begin(OP).await?;
        let mut settled = Vec::with_capacity(rows.len());
        for row in &rows {
            let campaign_id: String = row.try_get("campaign_id").map_err(failed(OP))?;
            let call_id: String = row.try_get("current_call_id").map_err(failed(OP))?;
            let status: CallStatus = row
                .try_get::<String, _>("status")
                .map_err(failed(OP))?
                .parse()
                .map_err(|e: crate::calls::ParseCallStatusError| {
                    corrupt(&call_id, "status", e.to_string())
                })?;
            let policy = RetryPolicy {
                on: RetryPolicy::parse_on(
                    &row.try_get::<String, _>("retry_on").map_err(failed(OP))?,
                )
                .map_err(|e| corrupt(&campaign_id, "retry_on", e))?,
                max_attempts: to_u32(row.try_get("max_attempts").map_err(failed(OP))?),
                backoff_ms: row.try_get("backoff_ms").map_err(failed(OP))?,
            };
            let attempts = to_u32(row.try_get("attempts").map_err(failed(OP))?);
            let (mut state, next_ms) = policy.after(status, attempts, now_ms);
            let campaign_state: String = row.try_get("campaign_state").map_err(failed(OP))?;
            if state == ContactState::RetryScheduled
                && campaign_state == CampaignState::Canceled.as_str()
            {
                state = ContactState::Canceled;
            }
            let line = to_u64(row.try_get("line").map_err(failed(OP))?);
            let changed = sqlx::query(
                "UPDATE campaign_contacts SET state = $4, next_attempt_ms = $5, last_status = $6, \
                 current_call_id = NULL, lease_owner = NULL, lease_until_ms = NULL, updated_ms = $7 \
                 WHERE campaign_id = $1 AND line = $2 AND state = 'calling' AND current_call_id = $3",
            )
            .bind(&campaign_id)
            .bind(to_i64(line))
            .bind(&call_id)
            .bind(state.as_str())
            .bind(next_ms)
            .bind(status.as_str())
            .bind(now_ms)
            .execute(&mut *tx)
            .await
            .map_err(failed(OP))?
            .rows_affected();
            if changed == 1 {
                settled.push(Settled {
                    campaign_id,
                    line,
                    call_id,
                    status,
                    state,
                });
            }
        }
        tx.commit().await.map_err(failed(OP))?;
        Ok(settled)
    }

    /// Marks running campaigns with no open contact `finished`, and canceled ones whose last
    /// call ended as finished at that time. Returns how many changed.
    pub async fn finish_campaigns(&self, now_ms: i64) -> Result<u64, StoreError> {
        const OP: &str = "finish_campaigns";
        let finished = sqlx::query(
            "UPDATE campaigns SET state = 'finished', finished_ms = $1 \
             WHERE state = 'running' AND start_at_ms <= $1 AND NOT EXISTS ( \
               SELECT 1 FROM campaign_contacts k WHERE k.campaign_id = campaigns.id \
               AND k.state IN ('pending', 'calling', 'retry-scheduled'))",
        )
        .bind(now_ms)
        .execute(&self.pool)
        .await
        .map_err(failed(OP))?
        .rows_affected();
        let ended = sqlx::query(
            "UPDATE campaigns SET finished_ms = $1 \
             WHERE state = 'canceled' AND finished_ms IS NULL AND NOT EXISTS ( \
               SELECT 1 FROM campaign_contacts k WHERE k.campaign_id = campaigns.id \
               AND k.state = 'calling')",
        )
        .bind(now_ms)
        .execute(&self.pool)
        .await
        .map_err(failed(OP))?
        .rows_affected();
        Ok(finished + ended)
    }

    /// Of the call records `ids`, those with a final status.
    pub async fn ended_calls(&self, ids: &[String]) -> Result<Vec<String>, StoreError> {
        const OP: &str = "ended_calls";
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT id FROM calls WHERE id IN ({}) AND status IN ({})",
            placeholders(1, ids.len()),
            final_statuses()
        );
        let mut query = sqlx::query(&sql);
        for id in ids {
            query = query.bind(id.as_str());
        }
        let rows = query.fetch_all(&self.pool).await.map_err(failed(OP))?;
        rows.iter()
            .map(|row| row.try_get("id").map_err(failed(OP)))
            .collect()
    }
}

/// A running campaign that may dial, with its live calls.
struct DueCampaign {
    campaign: CampaignRow,
    live: i64,
}

/// A due contact read by a claim.
struct Candidate {
    line: u64,
    to: String,
    vars: String,
    timezone: Option<String>,
    attempts: u32,
}

/// What a claim does to a due contact.
#[derive(Debug, Clone, Copy)]
enum ContactUpdate {
    /// On the do-not-call list.
    Skip,
    /// Outside its window, which opens then (unix ms).
    Defer(i64),
    /// Claimed for this instance.
    Claim,
}
