//! gemini-phone: a Google Gemini Live voice agent on a Twilio or Plivo phone number.
//!
//! A provider's answer webhook is answered with XML that opens a bidirectional μ-law media
//! stream; each stream runs one task that bridges it to a Gemini Live session.

#![warn(missing_docs)]

pub mod admission;
pub mod app;
pub mod audio;
pub mod bridge;
pub mod calls;
pub mod campaigns;
pub mod config;
pub mod doctor;
pub mod e164;
pub mod gemini;
pub mod metrics;
pub mod numbers;
pub mod prompts;
pub mod recording;
pub mod server;
pub mod shutdown;
pub mod signature;
pub mod telephony;
pub mod tools;
pub mod web;
pub mod webhooks;
