//! The Gemini Live side: protocol types and the session client.

pub mod auth;
pub mod client;
pub mod expressive;
pub mod protocol;

pub use client::{ConnectError, GeminiSocket, connect};
pub use protocol::{ServerMessage, SessionSetup};
