//! Which recording file belongs to which call.

use super::{CallStore, StoreError, expect_one, query_error};

impl CallStore {
    /// Notes that the call is recorded to `file` (a file name inside `RECORDINGS_DIR`).
    pub async fn set_recording_file(&self, id: &str, file: &str) -> Result<(), StoreError> {
        const OP: &str = "set_recording_file";
        let result = sqlx::query("UPDATE calls SET recording_file = $2 WHERE id = $1")
            .bind(id)
            .bind(file)
            .execute(&self.pool)
            .await
            .map_err(query_error(OP))?;
        expect_one(result.rows_affected(), id)
    }

    /// Forgets call `id`'s recording if it is `file` (the file was deleted); returns
    /// whether the record named it.
    pub async fn clear_recording_file(&self, id: &str, file: &str) -> Result<bool, StoreError> {
        const OP: &str = "clear_recording_file";
        let result = sqlx::query(
            "UPDATE calls SET recording_file = NULL WHERE id = $1 AND recording_file = $2",
        )
        .bind(id)
        .bind(file)
        .execute(&self.pool)
        .await
        .map_err(query_error(OP))?;
        Ok(result.rows_affected() > 0)
    }
}
