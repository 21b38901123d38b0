//! The per-call bridge: a sans-I/O [`machine`], the Tokio [`task`] that drives it, the
//! [`jobs`] that do a call's non-audio work beside it, and the Gemini sessions [`prewarm`]
//! opens at answer webhooks.

pub mod jobs;
pub mod machine;
pub mod prewarm;
pub mod task;
pub mod voicemail;

pub use machine::{CallMachine, EndReason, Mode, Output, Speaker};
pub use task::{run_call, run_stream};
