//! The used-stream-token table: what makes a stream token single-use.
//!
//! A token is signed, so it cannot be forged, but a signature alone would let one token open
//! any number of streams until it expires. Recording each token here the first time it starts
//! a stream, with the primary key refusing a second insert, makes the first `start` the only
//! one, on every instance that shares the database and after a restart.

use std::hash::{DefaultHasher, Hash, Hasher};

use super::{CallStore, StoreError, now_ms, query_error};

/// About one consumption in this many also deletes long-expired rows. Chosen by the token's
/// hash rather than a counter, so it needs no shared state and spreads evenly over instances.
const PRUNE_ONE_IN: u64 = 32;

/// Rows are kept this long past their expiry before pruning, so an instance whose clock runs
/// behind (and so still accepts the token) still finds it used.
const PRUNE_GRACE_MS: i64 = 10 * 60 * 1000;

impl CallStore {
    /// Marks `token` used; true only the first time it is seen, by any instance sharing this
    /// database. `expires_at_unix` (seconds) is when the token stops being accepted anyway,
    /// after which the row may be pruned.
    ///
    /// `ON CONFLICT DO NOTHING` (SQLite ≥ 3.24 and PostgreSQL alike) makes a second insert a
    /// no-op rather than an error, so "already used" is `rows_affected() == 0` on both
    /// backends, with no backend-specific error codes to read; the primary key makes
    /// concurrent first uses race safely, one winner.
    pub async fn consume_stream_token(
        &self,
        token: &str,
        expires_at_unix: u64,
    ) -> Result<bool, StoreError> {
        const OP: &str = "consume_stream_token";
        let expires_ms = i64::try_from(expires_at_unix)
            .unwrap_or(i64::MAX / 1000)
            .saturating_mul(1000);
        let inserted = sqlx::query(
            "INSERT INTO stream_tokens (token, expires_ms) VALUES ($1, $2) \
             ON CONFLICT (token) DO NOTHING",
        )
        .bind(token)
        .bind(expires_ms)
        .execute(&self.pool)
        .await
        .map_err(query_error(OP))?
        .rows_affected()
            == 1;
        if inserted && is_prune_turn(token) {
            // Pruning is housekeeping: the token has been consumed either way.
            if let Err(error) = self.forget_expired_stream_tokens().await {
                tracing::warn!(%error, "could not prune expired stream tokens");
            }
        }
        Ok(inserted)
    }

    /// Deletes used tokens that expired more than a grace period ago, returning how many.
    /// [`CallStore::consume_stream_token`] calls it now and then; it is cheap (an index range).
    pub async fn forget_expired_stream_tokens(&self) -> Result<u64, StoreError> {
        let result = sqlx::query("DELETE FROM stream_tokens WHERE expires_ms < $1")
            .bind(now_ms().saturating_sub(PRUNE_GRACE_MS))
            .execute(&self.pool)
            .await
            .map_err(query_error("forget_expired_stream_tokens"))?;
        Ok(result.rows_affected())
    }
}

/// Whether consuming `token` should also prune: one token in [`PRUNE_ONE_IN`], decided by a
/// fixed-key hash, so the same token always decides the same way.
fn is_prune_turn(token: &str) -> bool {
    let mut hasher = DefaultHasher::new();
    token.hash(&mut hasher);
    hasher.finish().is_multiple_of(PRUNE_ONE_IN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn about_one_token_in_prune_one_in_prunes() {
        let turns = (0..3200)
            .filter(|i| is_prune_turn(&format!("1800000000t{i:032x}")))
            .count();
        assert!((50..=150).contains(&turns), "{turns} of 3200");
    }
}
