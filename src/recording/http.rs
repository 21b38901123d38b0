//! `GET /calls/{id}/recording`: the call's WAV, streamed from its file, with single-range
//! HTTP Range support so players can seek (RFC 9110 §14).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use crate::app::App;
use crate::calls::api::{ApiError, Authorized, find_record};

/// Bytes read from the file at a time while streaming.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// What a `Range` header asks of a file of a given length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAnswer {
    /// The whole file (no Range, or one we ignore as RFC 9110 allows: another unit, several
    /// ranges, bad syntax).
    Full,
    /// Bytes `first..=last`.
    Partial {
        /// First byte sent.
        first: u64,
        /// Last byte sent (inclusive).
        last: u64,
    },
    /// Nothing of the file is in the range: 416.
    Unsatisfiable,
}

/// Reads a `Range` header value for a file of `len` bytes: `bytes=a-b`, `bytes=a-` or
/// `bytes=-n` (the last `n` bytes).
pub fn parse_range(value: &str, len: u64) -> RangeAnswer {
    let Some((unit, spec)) = value.trim().split_once('=') else {
        return RangeAnswer::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return RangeAnswer::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeAnswer::Full;
    };
    let number = |text: &str| -> Option<u64> {
        let text = text.trim();
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Digits too many for a u64 are a length past any file's end.
        Some(text.parse().unwrap_or(u64::MAX))
    };
    match (first.trim().is_empty(), number(first), number(last)) {
        // `-n`: the last n bytes.
        (true, _, Some(suffix)) => {
            if suffix == 0 || len == 0 {
                RangeAnswer::Unsatisfiable
            } else {
                RangeAnswer::Partial {
                    first: len - suffix.min(len),
                    last: len - 1,
                }
            }
        }
        // `a-` or `a-b`.
        (false, Some(first), last) => {
            let wanted_last = match (last, spec.trim().ends_with('-')) {
                (Some(last), _) if last >= first => last,
                (None, true) => u64::MAX,
                _ => return RangeAnswer::Full,
            };
            if first >= len {
                RangeAnswer::Unsatisfiable
            } else {
                RangeAnswer::Partial {
                    first,
                    last: wanted_last.min(len - 1),
                }
            }
        }
        _ => RangeAnswer::Full,
    }
}

/// Why the recording could not be served.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    /// No call, no token, over the rate: as the rest of the API answers.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The call exists but has no recording.
    #[error("call {id} has no recording ({why})")]
    NoRecording {
        /// The call's record id.
        id: String,
        /// Why there may be none.
        why: &'static str,
    },
    /// The record names a recording whose file is gone.
    #[error("the recording of call {0} was deleted")]
    Gone(String),
    /// The Range asks for bytes past the end.
    #[error("the range is outside the recording's {0} bytes")]
    Unsatisfiable(u64),
    /// The file could not be read.
    #[error("cannot read the recording: {0}")]
    Io(#[from] std::io::Error),
}

impl IntoResponse for RecordingError {
    fn into_response(self) -> Response {
        let error = match self {
            RecordingError::Api(api) => return api.into_response(),
            other => other,
        };
        let status = match &error {
            RecordingError::Api(_) => StatusCode::INTERNAL_SERVER_ERROR,
            RecordingError::NoRecording { .. } => StatusCode::NOT_FOUND,
            RecordingError::Gone(_) => StatusCode::GONE,
            RecordingError::Unsatisfiable(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            RecordingError::Io(error) => {
                tracing::error!(%error, "cannot read a recording");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let mut response = (status, Json(json!({"error": error.to_string()}))).into_response();
        if let RecordingError::Unsatisfiable(len) = error
            && let Ok(value) = HeaderValue::from_str(&format!("bytes */{len}"))
        {
            response.headers_mut().insert(header::CONTENT_RANGE, value);
        }
        response
    }
}

/// `GET /calls/{id}/recording` (`{id}`: our id or the provider's call id).
pub async fn download(
    _: Authorized,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, RecordingError> {
    let record = find_record(&app, &id).await?;
    let recordings = &app.recordings;
    let Some(path) = record
        .recording_file
        .as_deref()
        .and_then(|name| recordings.path_of(name))
    else {
        let why = match (recordings.enabled(), recordings.retention()) {
            (_, Some(_)) => "not recorded, or deleted after RECORDING_RETENTION_DAYS",
            (true, None) => "not recorded",
            (false, None) => "calls are recorded only with RECORD_CALLS=true",
        };
        return Err(RecordingError::NoRecording { id: record.id, why });
    };
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(RecordingError::Gone(record.id));
        }
        Err(e) => return Err(e.into()),
    };
    // The length now: a call still being recorded grows, and this response is a snapshot.
    let len = file.metadata().await?.len();
    // Without validators to compare, a conditional range (If-Range) gets the whole file.
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(value) if !headers.contains_key(header::IF_RANGE) => parse_range(value, len),
        _ => RangeAnswer::Full,
    };
    let (status, first, count) = match range {
        RangeAnswer::Full => (StatusCode::OK, 0, len),
        RangeAnswer::Partial { first, last } => {
            (StatusCode::PARTIAL_CONTENT, first, last - first + 1)
        }
        RangeAnswer::Unsatisfiable => return Err(RecordingError::Unsatisfiable(len)),
    };
    file.seek(std::io::SeekFrom::Start(first)).await?;
    let body = Body::from_stream(ReaderStream::with_capacity(
        file.take(count),
        READ_CHUNK_BYTES,
    ));
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let out = response.headers_mut();
    out.insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/wav"));
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    // A recording is personal data: no shared cache keeps it.
    out.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    if let Ok(disposition) =
        HeaderValue::from_str(&format!("inline; filename=\"{}.wav\"", record.id))
    {
        out.insert(header::CONTENT_DISPOSITION, disposition);
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(value) =
            HeaderValue::from_str(&format!("bytes {first}-{}/{len}", first + count - 1))
    {
        out.insert(header::CONTENT_RANGE, value);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(first: u64, last: u64) -> RangeAnswer {
        RangeAnswer::Partial { first, last }
    }

    #[test]
    fn single_ranges_of_every_form() {
        let len = 1_000;
        assert_eq!(parse_range("bytes=0-99", len), part(0, 99));
        assert_eq!(parse_range("bytes=500-", len), part(500, 999));
        assert_eq!(parse_range("bytes=-100", len), part(900, 999));
        assert_eq!(
            parse_range("bytes=990-5000", len),
            part(990, 999),
            "clipped"
        );
        assert_eq!(parse_range("bytes=-5000", len), part(0, 999), "clipped");
        assert_eq!(parse_range("BYTES = 1-1", len), part(1, 1));
        assert_eq!(parse_range("bytes=999-999", len), part(999, 999));
    }

    #[test]
    fn ranges_past_the_end_are_unsatisfiable() {
        assert_eq!(
            parse_range("bytes=1000-", 1_000),
            RangeAnswer::Unsatisfiable
        );
        assert_eq!(
            parse_range("bytes=1000-2000", 1_000),
            RangeAnswer::Unsatisfiable
        );
        assert_eq!(parse_range("bytes=-0", 1_000), RangeAnswer::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), RangeAnswer::Unsatisfiable);
        assert_eq!(
            parse_range("bytes=99999999999999999999999-", 1_000),
            RangeAnswer::Unsatisfiable
        );
    }

    #[test]
    fn what_cannot_be_read_as_one_byte_range_gets_the_whole_file() {
        for ignored in [
            "items=0-1",
            "bytes=0-1,5-6",
            "bytes=5-1",
            "bytes=a-b",
            "bytes=-",
            "bytes=1",
            "bytes=+1-2",
            "0-1",
            "",
        ] {
            assert_eq!(
                parse_range(ignored, 1_000),
                RangeAnswer::Full,
                "{ignored:?}"
            );
        }
    }
}
