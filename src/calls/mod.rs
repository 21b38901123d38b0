//! Call records: outbound and inbound calls, their status history, transcript and tool events.

pub mod store;

pub use store::{
    CallFilter, CallRecord, CallStatus, CallStore, NewCall, ParseCallStatusError, StatusChange,
    StoreError, ToolEvent, TranscriptLine,
};
