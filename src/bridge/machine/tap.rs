//! A listener on the call's audio, as the phone hears and sends it: what call recording
//! hangs on. The machine stays free of I/O; whatever the tap does with the audio (hand it to
//! a file writer, say) is its own business, and it must not block.

/// Hears the call's audio at the one place each kind passes: the caller's as it arrives from
/// the phone, the agent's 20 ms frames as they are queued for the phone, and barge-in clears.
///
/// Calls come in the order the machine handles its inputs, so the caller's audio can serve
/// as the clock the agent's frames are placed against.
pub trait AudioTap: Send {
    /// μ-law the phone sent, as received (any length).
    fn caller_audio(&mut self, mulaw: &[u8]);
    /// One μ-law frame queued for the phone (agent speech, the fallback message, echo).
    fn agent_frame(&mut self, mulaw: &[u8]);
    /// The provider was told to drop whatever it has not played yet.
    fn agent_cleared(&mut self);
}
