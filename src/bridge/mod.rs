//! The per-call bridge: a sans-I/O [`machine`] and the Tokio [`task`] that drives it.

pub mod machine;
pub mod task;

pub use machine::{CallMachine, EndReason, Mode, Output, Speaker};
pub use task::run_call;
