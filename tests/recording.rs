//! Call recordings end to end: a scripted phone and a fake Gemini talk through the real
//! server with `RECORD_CALLS=true`, and the WAV it writes is decoded with hound. The left
//! channel is what the phone sent, the right what the phone received, on one timeline; a
//! barge-in shows as the agent's channel stopping; a SIGKILLed server leaves a file that is
//! playable, and whole after a restart; the route serves it with HTTP Range; the sweeper
//! deletes only what is past its retention.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use gemini_phone::calls::{CallStatus, CallStore, NewCall};
use gemini_phone::recording::sweeper;
use gemini_phone::telephony::Direction;
use serde_json::Value;
use support::binary::{Logs, ServerProcess};
use support::gemini::{Behaviour, FakeGemini, GeminiSession};
use support::phone::{Outbound, Provider, TwilioCaller, mulaw_decode, pcm_tone_24k};
use support::{API_TOKEN, Caller, PROVIDERS, TEST_API_KEY, TestServer, stream_params};

const WAIT: Duration = Duration::from_secs(5);
/// One phone frame: 20 ms at 8 kHz.
const FRAME: usize = 160;
/// How long the fake phone listens after sending each frame: the pace of a live call.
const FRAME_TIME: Duration = Duration::from_millis(20);

fn recording_vars<'a>(gemini_url: &'a str, dir: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("GEMINI_LIVE_URL", gemini_url),
        ("RECORD_CALLS", "true"),
        ("RECORDINGS_DIR", dir),
        ("API_TOKEN", API_TOKEN),
    ]
}

/// `frames` frames of μ-law noise, different in every frame: any misplaced frame shows.
fn caller_noise(frames: usize, seed: u32) -> Vec<Vec<u8>> {
    let mut state = seed.wrapping_mul(2_654_435_761).max(1);
    (0..frames)
        .map(|_| {
            (0..FRAME)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    (state >> 24) as u8
                })
                .collect()
        })
        .collect()
}

/// Speech-like model audio: three tones that come and go, at 24 kHz.
fn agent_speech(ms: u32) -> Vec<i16> {
    let a = pcm_tone_24k(440.0, ms, 6_000);
    let b = pcm_tone_24k(1_250.0, ms, 4_000);
    let c = pcm_tone_24k(2_100.0, ms, 2_500);
    (0..a.len())
        .map(|i| {
            let envelope = 0.6 + 0.4 * (i as f64 / 2_400.0).sin();
            ((f64::from(a[i]) + f64::from(b[i]) + f64::from(c[i])) * envelope) as i16
        })
        .collect()
}

/// Sends model audio in 240 ms chunks, as the real service paces it (far faster than real
/// time).
fn say(session: &GeminiSession, pcm24k: &[i16]) {
    for chunk in pcm24k.chunks(24 * 240) {
        session.send_audio(chunk);
    }
}

/// What the phone heard, each event tagged with how many caller frames it had sent by then.
struct Heard(Vec<(usize, Outbound)>);

impl Heard {
    fn audio(&self) -> Vec<u8> {
        self.0
            .iter()
            .filter_map(|(_, e)| match e {
                Outbound::Media(frame) => Some(frame.as_slice()),
                _ => None,
            })
            .flatten()
            .copied()
            .collect()
    }

    /// Caller frames sent before the first event that `is` picks arrived.
    fn sent_before(&self, is: impl Fn(&Outbound) -> bool) -> usize {
        self.0
            .iter()
            .find(|(_, e)| is(e))
            .map(|(sent, _)| *sent)
            .expect("the event arrived")
    }
}

/// Plays `frames` to the server at a phone's pace, listening between frames; before frame
/// `k` goes, `script(k)` may make the fake model act.
async fn converse(caller: &mut Caller, frames: &[Vec<u8>], mut script: impl FnMut(usize)) -> Heard {
    let mut heard = Vec::new();
    for (k, frame) in frames.iter().enumerate() {
        script(k);
        assert!(caller.send_media(frame).await, "the server took frame {k}");
        let got = caller.collect_for(FRAME_TIME).await;
        heard.extend(got.events.into_iter().map(|e| (k + 1, e)));
    }
    Heard(heard)
}

/// Hangs up, waits for the call to end and its recording to be finished; returns the record.
async fn end_call(server: &TestServer, mut caller: Caller, call_id: &str) -> Value {
    caller.hang_up().await;
    assert!(server.wait_active_calls(0, WAIT).await, "the call ended");
    // The task is gone, and with it the tap: the writer finishes the file.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(server.app.recordings.flush(WAIT).await);
    server.record(call_id).await
}

/// The two channels of a recording, checked to be 8 kHz 16-bit stereo.
fn channels(path: &Path) -> (Vec<i16>, Vec<i16>) {
    let mut reader = hound::WavReader::open(path).expect("hound opens the recording");
    let spec = reader.spec();
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (2, 8_000, 16)
    );
    let samples: Vec<i16> = reader
        .samples::<i16>()
        .collect::<Result<_, _>>()
        .expect("every sample the header states is there");
    samples.chunks_exact(2).map(|s| (s[0], s[1])).unzip()
}

fn ncc(a: &[i16], b: &[i16]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa * bb).sqrt()
    }
}

/// Where in `channel` `reference` fits best, searching a second either side of `expected`:
/// (start sample, normalised cross-correlation there).
fn best_fit(channel: &[i16], reference: &[i16], expected: usize) -> (usize, f64) {
    let from = expected.saturating_sub(8_000);
    let to = (expected + 8_000).min(channel.len().saturating_sub(reference.len()));
    (from..=to)
        .step_by(1)
        .map(|lag| (lag, ncc(&channel[lag..lag + reference.len()], reference)))
        .fold(
            (0, f64::MIN),
            |best, next| if next.1 > best.1 { next } else { best },
        )
}

fn recording_path(dir: &Path, record: &Value) -> PathBuf {
    let id = record["id"].as_str().expect("record id");
    assert_eq!(
        record["recording_url"],
        format!("/calls/{id}/recording"),
        "{record}"
    );
    dir.join(format!("{id}.wav"))
}

#[tokio::test]
async fn the_recording_holds_what_the_phone_sent_and_heard_on_one_timeline() {
    for provider in PROVIDERS {
        let dir = tempfile::tempdir().unwrap();
        let mut gemini = FakeGemini::start(Behaviour::Normal).await;
        let url = gemini.url();
        let dir_text = dir.path().display().to_string();
        let server = TestServer::start(&recording_vars(&url, &dir_text)).await;
        let call_id = format!("rec-{provider:?}");
        let mut caller = Caller::start(&server, provider, &call_id).await;
        let mut session = gemini.next_session(WAIT).await;
        // The session was opened at the answer webhook; the call is live, and recorded, once
        // it gets its greeting cue.
        session.recv(WAIT).await.expect("the greeting cue");

        // Half a second of the caller, then a second of the agent (sent in a burst) while
        // the caller goes on, then a moment of the caller alone.
        let sent = caller_noise(100, 7);
        let heard = converse(&mut caller, &sent, |k| {
            if k == 25 {
                say(&session, &agent_speech(1_000));
                session.send_turn_complete();
            }
        })
        .await;
        let record = end_call(&server, caller, &call_id).await;
        let (left, right) = channels(&recording_path(dir.path(), &record));

        let sent_pcm = mulaw_decode(&sent.concat());
        assert!(
            left.len() >= sent_pcm.len(),
            "{provider:?}: {} samples",
            left.len()
        );
        assert_eq!(
            &left[..sent_pcm.len()],
            &sent_pcm[..],
            "{provider:?}: left is the caller"
        );

        let received = mulaw_decode(&heard.audio());
        assert!(
            received.len() >= 7_900,
            "{provider:?}: the phone heard {}",
            received.len()
        );
        let expected_start = heard.sent_before(|e| matches!(e, Outbound::Media(_))) * FRAME;
        let (start, similarity) = best_fit(&right, &received, expected_start);
        assert!(
            similarity >= 0.99,
            "{provider:?}: right channel vs what the phone heard: {similarity:.4}"
        );
        assert!(
            start.abs_diff(expected_start) <= FRAME,
            "{provider:?}: agent audio at sample {start}, the phone heard it at {expected_start}"
        );
        let end = start + received.len();
        assert!(
            right[..start].iter().chain(&right[end..]).all(|s| *s == 0),
            "{provider:?}: silence where the agent did not speak"
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn a_barge_in_stops_the_agents_channel_where_the_phone_was_cleared() {
    for provider in PROVIDERS {
        let dir = tempfile::tempdir().unwrap();
        let mut gemini = FakeGemini::start(Behaviour::Normal).await;
        let url = gemini.url();
        let dir_text = dir.path().display().to_string();
        let server = TestServer::start(&recording_vars(&url, &dir_text)).await;
        let call_id = format!("barge-{provider:?}");
        let mut caller = Caller::start(&server, provider, &call_id).await;
        let mut session = gemini.next_session(WAIT).await;
        // The session was opened at the answer webhook; the call is live, and recorded, once
        // it gets its greeting cue.
        session.recv(WAIT).await.expect("the greeting cue");

        // Three seconds of agent audio come from the model at once and play paced; the
        // caller talks over it 600 ms in, and the provider drops what it holds.
        let sent = caller_noise(80, 11);
        let heard = converse(&mut caller, &sent, |k| match k {
            10 => say(&session, &agent_speech(3_000)),
            40 => session.send_interrupted(),
            _ => {}
        })
        .await;
        let record = end_call(&server, caller, &call_id).await;
        let (_, right) = channels(&recording_path(dir.path(), &record));

        let started = heard.sent_before(|e| matches!(e, Outbound::Media(_))) * FRAME;
        let cleared = heard.sent_before(|e| matches!(e, Outbound::Clear)) * FRAME;
        let received = mulaw_decode(&heard.audio());
        // Paced: the phone got what played before the clear and at most the 200 ms lead more
        // (a frame either way for where the caller's frames fall).
        let lead = 200 * 8;
        assert!(
            received.len() <= cleared - started + lead + 2 * FRAME,
            "{provider:?}: the phone got {} samples, {} before the clear",
            received.len(),
            cleared - started
        );
        let (start, similarity) = best_fit(&right, &received[..4_000], started);
        assert!(
            similarity >= 0.99 && start.abs_diff(started) <= FRAME,
            "{provider:?}: agent audio at {start} ({similarity:.4}), the phone heard it at {started}"
        );
        let last = right
            .iter()
            .rposition(|s| *s != 0)
            .expect("the agent spoke")
            + 1;
        assert!(
            last.abs_diff(cleared) <= FRAME,
            "{provider:?}: the agent's channel stops at {last}, the phone was cleared at {cleared}"
        );
        assert!(
            ncc(&right[start..last], &received[..last - start]) >= 0.99,
            "{provider:?}: what played is the start of what was sent"
        );
        server.stop().await;
    }
}

async fn get_recording(server: &TestServer, id: &str, range: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .get(server.http(&format!("/calls/{id}/recording")))
        .bearer_auth(API_TOKEN);
    if let Some(range) = range {
        request = request.header("Range", range);
    }
    request.send().await.expect("GET recording")
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header"))
}

#[tokio::test]
async fn the_recording_route_serves_ranges_and_refuses_strangers() {
    let dir = tempfile::tempdir().unwrap();
    let mut gemini = FakeGemini::start(Behaviour::Normal).await;
    let url = gemini.url();
    let dir_text = dir.path().display().to_string();
    let server = TestServer::start(&recording_vars(&url, &dir_text)).await;
    let call_sid = "CA0000000000000000000000000000ec01";
    let mut caller = Caller::start(&server, Provider::Twilio, call_sid).await;
    let _session = gemini.next_session(WAIT).await;
    converse(&mut caller, &caller_noise(10, 3), |_| {}).await;
    let record = end_call(&server, caller, call_sid).await;
    let id = record["id"].as_str().unwrap().to_owned();
    let file = std::fs::read(recording_path(dir.path(), &record)).unwrap();
    let len = file.len();

    let anonymous = reqwest::get(server.http(&format!("/calls/{id}/recording")))
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    // Whole, by our id and by the provider's.
    for by in [id.as_str(), call_sid] {
        let whole = get_recording(&server, by, None).await;
        assert_eq!(whole.status(), 200);
        assert_eq!(header(&whole, "content-type"), "audio/wav");
        assert_eq!(header(&whole, "accept-ranges"), "bytes");
        assert_eq!(header(&whole, "content-length"), len.to_string());
        assert_eq!(whole.bytes().await.unwrap(), file);
    }

    for (range, first, last) in [
        ("bytes=0-43", 0, 43),
        ("bytes=100-", 100, len - 1),
        ("bytes=-10", len - 10, len - 1),
        ("bytes=50-999999", 50, len - 1),
    ] {
        let part = get_recording(&server, &id, Some(range)).await;
        assert_eq!(part.status(), 206, "{range}");
        assert_eq!(
            header(&part, "content-range"),
            format!("bytes {first}-{last}/{len}"),
            "{range}"
        );
        assert_eq!(
            header(&part, "content-length"),
            (last - first + 1).to_string()
        );
        assert_eq!(part.bytes().await.unwrap(), file[first..=last], "{range}");
    }

    let past_the_end = get_recording(&server, &id, Some(&format!("bytes={len}-"))).await;
    assert_eq!(past_the_end.status(), 416);
    assert_eq!(
        header(&past_the_end, "content-range"),
        format!("bytes */{len}")
    );

    // A call without a recording, and a recording whose file is gone.
    let unrecorded = server
        .app
        .store
        .create(NewCall {
            provider: "twilio".into(),
            provider_call_id: None,
            direction: Direction::Outbound,
            from: "+15550009999".into(),
            to: "+15551234567".into(),
            campaign: None,
            prompt: None,
            vars: serde_json::Map::new(),
            status: CallStatus::Queued,
        })
        .await
        .unwrap();
    assert_eq!(
        server.record(&unrecorded.id).await["recording_url"],
        Value::Null
    );
    let none = get_recording(&server, &unrecorded.id, None).await;
    assert_eq!(none.status(), 404);
    let message = none.json::<Value>().await.unwrap()["error"].to_string();
    assert!(message.contains("has no recording"), "{message}");
    std::fs::remove_file(recording_path(dir.path(), &record)).unwrap();
    assert_eq!(get_recording(&server, &id, None).await.status(), 410);
    assert_eq!(
        get_recording(&server, "c-no-such-call", None)
            .await
            .status(),
        404
    );
    server.stop().await;
}

#[tokio::test]
async fn the_sweeper_deletes_only_recordings_past_their_retention() {
    let dir = tempfile::tempdir().unwrap();
    let store = CallStore::connect(&format!("sqlite://{}/records.db", dir.path().display()))
        .await
        .unwrap();
    let recordings = dir.path().join("recordings");
    std::fs::create_dir(&recordings).unwrap();
    let retention = Duration::from_secs(30 * 86_400);
    let now = SystemTime::now();
    let mut ids = Vec::new();
    for age_days in [31, 29] {
        let id = store
            .create(NewCall {
                provider: "plivo".into(),
                provider_call_id: None,
                direction: Direction::Inbound,
                from: "15550001111".into(),
                to: "15550002222".into(),
                campaign: None,
                prompt: None,
                vars: serde_json::Map::new(),
                status: CallStatus::Completed,
            })
            .await
            .unwrap()
            .id;
        let name = format!("{id}.wav");
        store.set_recording_file(&id, &name).await.unwrap();
        let file = std::fs::File::create(recordings.join(&name)).unwrap();
        file.set_modified(now - Duration::from_secs(age_days * 86_400))
            .unwrap();
        ids.push(id);
    }
    // Not a recording, however old: never touched.
    let notes = recordings.join("notes.txt");
    std::fs::File::create(&notes)
        .unwrap()
        .set_modified(now - Duration::from_secs(400 * 86_400))
        .unwrap();

    let report = sweeper::sweep(&recordings, retention, now, &store).await;
    assert_eq!(
        report,
        sweeper::SweepReport {
            deleted: 1,
            failed: 0
        }
    );
    let (old, young) = (&ids[0], &ids[1]);
    assert!(!recordings.join(format!("{old}.wav")).exists());
    assert!(recordings.join(format!("{young}.wav")).exists());
    assert!(notes.exists());
    let old_record = store.get(old).await.unwrap().unwrap();
    assert_eq!(
        (old_record.recording_url, old_record.recording_file),
        (None, None)
    );
    let young_record = store.get(young).await.unwrap().unwrap();
    assert_eq!(
        young_record.recording_url,
        Some(format!("/calls/{young}/recording"))
    );
    // Nothing more is due.
    let again = sweeper::sweep(&recordings, retention, now, &store).await;
    assert_eq!(again.deleted, 0);
}

/// The binary, recording, logging to `log` in `dir`.
async fn start_binary(
    gemini_url: &str,
    database_url: &str,
    dir: &Path,
    log: &str,
) -> ServerProcess {
    let recordings = dir.join("recordings").display().to_string();
    let vars = [
        ("GEMINI_API_KEY", TEST_API_KEY),
        ("GEMINI_LIVE_URL", gemini_url),
        ("DATABASE_URL", database_url),
        ("API_TOKEN", API_TOKEN),
        ("RECORD_CALLS", "true"),
        ("RECORDINGS_DIR", recordings.as_str()),
        ("RUST_LOG", "info"),
    ];
    ServerProcess::start(&vars, Logs::File { dir, name: log }).await
}

/// Samples a finished header states and the file holds.
fn stated_and_held(path: &Path) -> (u32, u64) {
    let bytes = std::fs::read(path).expect("the recording");
    let stated = u32::from_le_bytes(bytes[40..44].try_into().unwrap());
    (stated, (bytes.len() as u64 - 44) / 4 * 4)
}

#[tokio::test]
async fn a_sigkilled_server_leaves_a_playable_recording_made_whole_at_restart() {
    gemini_phone::telephony::rest::install_crypto_provider();
    let mut gemini = FakeGemini::start(Behaviour::Normal).await;
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}/records.db", dir.path().display());
    let mut server = start_binary(&gemini.url(), &database_url, dir.path(), "first.log").await;

    let call_sid = "CA0000000000000000000000000000dead";
    let xml = reqwest::Client::new()
        .post(server.http("/twilio/answer"))
        .form(&[
            ("CallSid", call_sid),
            ("From", "+15550001111"),
            ("To", "+15550002222"),
            ("Direction", "inbound"),
        ])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let params = stream_params(&xml);
    let record_id = support::record_param(&params);
    let mut phone = TwilioCaller::connect(&server.ws("/twilio/stream"), WAIT).await;
    assert!(phone.send_connected().await);
    let custom: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert!(phone.send_start(call_sid, "MZdead", &custom).await);
    let mut session = gemini.next_session(WAIT).await;
    // The session was opened at the answer webhook; the call is live, and recorded, once
    // it gets its greeting cue.
    session.recv(WAIT).await.expect("the greeting cue");
    say(&session, &agent_speech(500));
    // 1.6 s of the caller at a phone's pace, then the process is killed mid-call.
    let sent = caller_noise(80, 5).concat();
    assert!(phone.send_media_realtime(&sent).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.kill();

    let path = dir
        .path()
        .join("recordings")
        .join(format!("{record_id}.wav"));
    // Playable as it is: the header stated the sizes a second ago.
    let (left, right) = channels(&path);
    assert!(
        left.len() >= 8_000,
        "{} samples readable before the restart",
        left.len()
    );
    assert!(right.iter().any(|s| *s != 0), "the agent is on the right");

    // The next start sets the header from what the file holds.
    let restarted = start_binary(&gemini.url(), &database_url, dir.path(), "second.log").await;
    let deadline = Instant::now() + WAIT;
    while stated_and_held(&path).0 as u64 != stated_and_held(&path).1 {
        assert!(Instant::now() < deadline, "the recording was not repaired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (left, _) = channels(&path);
    let sent_pcm = mulaw_decode(&sent);
    // Everything but the last write batch (200 ms) reached the file before the kill.
    assert!(
        left.len() + 1_600 >= sent_pcm.len(),
        "{} of {} samples",
        left.len(),
        sent_pcm.len()
    );
    assert_eq!(&left[..], &sent_pcm[..left.len()]);
    let served = reqwest::Client::new()
        .get(restarted.http(&format!("/calls/{record_id}/recording")))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    let body = served.bytes().await.unwrap();
    let reader = hound::WavReader::new(std::io::Cursor::new(body)).expect("a WAV");
    assert_eq!(reader.len() as usize, left.len() * 2);
}
