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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use base64::Engine as _;
    use serde_json::{Value, json};

    use super::AudioTap;
    use crate::bridge::machine::{CallMachine, Mode, Output};
    use crate::telephony::{Provider, twilio::Twilio};

    const START: &str = r#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC1","streamSid":"MZ1","callSid":"CA1","tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},"customParameters":{}},"streamSid":"MZ1"}"#;

    /// What the tap heard, in order: `c` caller bytes, `a` agent frames, `x` clears.
    #[derive(Default)]
    struct Heard {
        caller: Vec<u8>,
        agent: Vec<u8>,
        order: String,
    }

    struct FakeTap(Arc<Mutex<Heard>>);

    impl AudioTap for FakeTap {
        fn caller_audio(&mut self, mulaw: &[u8]) {
            let mut heard = self.0.lock().unwrap();
            heard.caller.extend_from_slice(mulaw);
            heard.order.push('c');
        }
        fn agent_frame(&mut self, mulaw: &[u8]) {
            let mut heard = self.0.lock().unwrap();
            heard.agent.extend_from_slice(mulaw);
            heard.order.push('a');
        }
        fn agent_cleared(&mut self) {
            self.0.lock().unwrap().order.push('x');
        }
    }

    fn media(frame: &[u8]) -> String {
        let payload = base64::engine::general_purpose::STANDARD.encode(frame);
        json!({"event":"media","sequenceNumber":"2","media":{"track":"inbound","chunk":"1","timestamp":"0","payload":payload},"streamSid":"MZ1"}).to_string()
    }

    /// The μ-law of every `media` message the machine queued for the phone.
    fn played(outputs: &[Output]) -> Vec<u8> {
        outputs
            .iter()
            .filter_map(|o| match o {
                Output::Phone(text) => serde_json::from_str::<Value>(text).ok(),
                _ => None,
            })
            .filter_map(|v| v.pointer("/media/payload")?.as_str().map(str::to_owned))
            .flat_map(|b64| {
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .unwrap_or_default()
            })
            .collect()
    }

    fn tapped(mode: Mode) -> (CallMachine, Arc<Mutex<Heard>>) {
        let heard = Arc::new(Mutex::new(Heard::default()));
        let mut machine = CallMachine::new(mode, Twilio.media_stream(), Instant::now());
        machine.set_audio_tap(Box::new(FakeTap(Arc::clone(&heard))));
        machine.handle_phone_text(START, Instant::now());
        (machine, heard)
    }

    #[test]
    fn the_tap_hears_the_caller_as_sent_and_the_agent_as_queued_with_its_clears() {
        let (mut machine, heard) = tapped(Mode::Gemini);
        let config = crate::config::GeminiConfig {
            api_key: crate::config::Secret::new("k"),
            model: "m".into(),
            voice: "Kore".into(),
            language: None,
            live_url: "ws://127.0.0.1:1".into(),
            setup_timeout: Duration::from_secs(1),
            backend: Default::default(),
        };
        machine.handle_session_setup(crate::gemini::SessionSetup::new(&config, "Hi".into()));
        machine.handle_gemini_ready(Instant::now());
        machine.handle_phone_text(&media(&[0x11; 160]), Instant::now());
        let pcm: Vec<u8> = (0..4_800)
            .flat_map(|i| (((f64::from(i) * 0.1).sin() * 8000.0) as i16).to_le_bytes())
            .collect();
        let data = base64::engine::general_purpose::STANDARD.encode(pcm);
        let audio = json!({"serverContent":{"modelTurn":{"parts":[{"inlineData":{"mimeType":"audio/pcm;rate=24000","data":data}}]}}});
        machine.handle_gemini_frame(audio.to_string().as_bytes(), Instant::now());
        machine.handle_phone_text(&media(&[0x22; 160]), Instant::now());
        machine.handle_gemini_frame(br#"{"serverContent":{"interrupted":true}}"#, Instant::now());
        let outputs: Vec<Output> = std::iter::from_fn(|| machine.poll_output()).collect();

        let heard = heard.lock().unwrap();
        assert_eq!(heard.caller, [[0x11; 160], [0x22; 160]].concat());
        assert_eq!(
            heard.agent,
            played(&outputs),
            "exactly what went to the phone"
        );
        assert_eq!(heard.agent.len(), 10 * 160, "200 ms of model audio");
        assert_eq!(heard.order, "caaaaaaaaaacx");
    }

    #[test]
    fn echoed_audio_is_the_agents_side_too() {
        let (mut machine, heard) = tapped(Mode::Echo);
        machine.handle_phone_text(&media(&[0x33; 160]), Instant::now());
        let outputs: Vec<Output> = std::iter::from_fn(|| machine.poll_output()).collect();
        let heard = heard.lock().unwrap();
        assert_eq!(heard.caller, [0x33; 160]);
        assert_eq!(heard.agent, played(&outputs));
        assert_eq!(heard.agent, [0x33; 160]);
    }
}
