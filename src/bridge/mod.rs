//! The per-call bridge: a sans-I/O [`machine`], the Tokio [`task`] that drives it, and the
//! [`jobs`] that do a call's non-audio work beside it.

pub mod jobs;
pub mod machine;
pub mod task;
pub mod voicemail;

pub use machine::{CallMachine, EndReason, Mode, Output, Speaker};
pub use task::{run_call, run_stream};
