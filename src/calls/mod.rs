//! Call records and the user's `/calls` API: outbound and inbound calls, their status
//! history, transcript and tool events.

pub mod api;
pub mod dial;
pub mod post_call;
pub mod reconcile;
pub mod recorder;
pub mod store;

pub use store::{
    CallFilter, CallRecord, CallStatus, CallStore, NewCall, ParseCallStatusError, StatusChange,
    StoreError, ToolEvent, TranscriptLine,
};
