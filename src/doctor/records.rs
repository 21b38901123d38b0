//! The records line: the call-record database opens and its schema is current.
//!
//! Opening the store the way the server does applies any pending migrations, so after an
//! ok line the schema *is* current. Doctor does not merely compare `_sqlx_migrations` with
//! the embedded list: the server would migrate at its next start anyway, and applying them
//! now proves they apply (a user without the right to alter the schema learns it here,
//! not at start-up). The line says so, since it is a write.

use std::time::Duration;

use super::Check;
use crate::calls::CallStore;

const AREA: &str = "records";

/// Opens `database_url` within `limit`.
pub(super) async fn check(database_url: &str, limit: Duration) -> Check {
    match tokio::time::timeout(limit, CallStore::connect(database_url)).await {
        Ok(Ok(store)) => {
            let backend = store.backend();
            store.close().await;
            Check::ok(
                AREA,
                format!(
                    "{backend} database opened; migrations current (any pending ones were applied now, as the server does at start)"
                ),
            )
        }
        Ok(Err(error)) => Check::fail(
            AREA,
            format!("DATABASE_URL: {error}; fix DATABASE_URL, or the database's permissions"),
        ),
        Err(_) => Check::fail(
            AREA,
            format!(
                "DATABASE_URL: the database did not answer within {}s; is the database server running and reachable?",
                limit.as_secs()
            ),
        ),
    }
}
