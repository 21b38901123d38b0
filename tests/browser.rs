//! The web console in a real browser: Debian's `chromium` driven by npm `playwright-core`
//! (tests/browser/console.test.mjs), with Chromium's fake microphone playing a speech-like
//! WAV into a browser call and a fake Gemini that echoes it back.
//!
//! Needs `node`, `chromium` and `npm ci --prefix tests/browser` (.ci/run installs all three).
//! Without them the test is skipped with a message, except in CI (`CI=true`), where it fails.
//! Screenshots of every view land in `target/console-screenshots/`; with
//! `CONSOLE_DOCS_SCREENSHOT=1` the call page's also replaces `docs/console-call.png`.

mod support;

use std::f32::consts::PI;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use support::gemini::{Behaviour, FakeGemini};
use support::{API_TOKEN, TestServer};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// The whole browser run: launch, a call of a few seconds, four views.
const BROWSER_RUN: Duration = Duration::from_secs(120);

/// What the browser test needs, found on this machine.
struct Tools {
    node: PathBuf,
    chromium: PathBuf,
}

/// The tools, or why they are missing.
fn find_tools() -> Result<Tools, String> {
    let node = which("node").ok_or("`node` is not on the PATH")?;
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| {
            // Debian's /usr/bin/chromium is a wrapper script; the binary is beside its libraries.
            let binary = Path::new("/usr/lib/chromium/chromium");
            binary.exists().then(|| binary.to_owned())
        })
        .or_else(|| which("chromium"))
        .ok_or("`chromium` is not installed (apt-get install chromium)")?;
    let playwright = Path::new(ROOT).join("tests/browser/node_modules/playwright-core");
    if !playwright.exists() {
        return Err("playwright-core is not installed: run `npm ci --prefix tests/browser`".into());
    }
    Ok(Tools { node, chromium })
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|path| path.is_file())
}

/// Three seconds of something a voice detector takes for speech: a voiced source at a
/// gliding pitch through three formant-like resonances, in syllables with short pauses.
fn speech_like(rate: u32, seconds: u32, pitch_hz: f32) -> Vec<i16> {
    let formants = [(700.0f32, 1.0f32), (1_200.0, 0.5), (2_500.0, 0.2)];
    let mut phase = 0.0f32;
    let mut samples = Vec::with_capacity((rate * seconds) as usize);
    for n in 0..rate * seconds {
        let t = n as f32 / rate as f32;
        let pitch = pitch_hz + 25.0 * (2.0 * PI * 0.7 * t).sin();
        phase = (phase + pitch / rate as f32) % 1.0;
        // Harmonics of the pitch, each weighted by how near it is to a formant.
        let mut sample = 0.0;
        for harmonic in 1..30 {
            let frequency = pitch * harmonic as f32;
            let weight: f32 = formants
                .iter()
                .map(|(centre, gain)| gain / (1.0 + ((frequency - centre) / 150.0).powi(2)))
                .sum();
            sample += weight * (2.0 * PI * phase * harmonic as f32).sin();
        }
        // 4 syllables a second, every third one a pause.
        let syllable = (t * 4.0).fract();
        let envelope = if (t * 4.0) as u32 % 3 == 2 {
            0.0
        } else {
            (PI * syllable).sin().powi(2)
        };
        samples.push((sample * envelope * 3_000.0).clamp(-32_000.0, 32_000.0) as i16);
    }
    samples
}

/// Writes interleaved 16-bit `channels` at `rate` as a WAV file.
fn write_wav(path: &Path, rate: u32, channels: &[Vec<i16>]) {
    let spec = hound::WavSpec {
        channels: channels.len() as u16,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec).expect("create the WAV");
    for n in 0..channels[0].len() {
        for channel in channels {
            writer.write_sample(channel[n]).expect("write a sample");
        }
    }
    writer.finalize().expect("finish the WAV");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_a_real_browser() {
    let tools = match find_tools() {
        Ok(tools) => tools,
        Err(missing) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("the browser test cannot run in CI: {missing}")
        }
        Err(missing) => {
            eprintln!("skipping the browser test: {missing}");
            return;
        }
    };
    let mut gemini = FakeGemini::start(Behaviour::Echo).await;
    let server =
        TestServer::start(&[("API_TOKEN", API_TOKEN), ("GEMINI_LIVE_URL", &gemini.url())]).await;
    let scratch = tempfile::tempdir().expect("temp dir");
    let wav = scratch.path().join("speech.wav");
    write_wav(&wav, 48_000, &[speech_like(48_000, 3, 140.0)]);
    // A recording as the recorder writes one: 8 kHz, caller left, agent right (later).
    let recording = scratch.path().join("recording.wav");
    let caller = speech_like(8_000, 6, 130.0);
    let mut agent = vec![0; 8_000 * 2];
    agent.extend(speech_like(8_000, 4, 210.0));
    write_wav(&recording, 8_000, &[caller, agent]);
    let screenshots = Path::new(ROOT).join("target/console-screenshots");

    let mut command = tokio::process::Command::new(&tools.node);
    command
        .arg(Path::new(ROOT).join("tests/browser/console.test.mjs"))
        .current_dir(Path::new(ROOT).join("tests/browser"))
        .env("BASE_URL", server.http(""))
        .env("API_TOKEN", API_TOKEN)
        .env("CHROMIUM", &tools.chromium)
        .env("FAKE_AUDIO", &wav)
        .env("RECORDING_WAV", &recording)
        .env("SCREENSHOTS", &screenshots)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if std::env::var("CONSOLE_DOCS_SCREENSHOT").as_deref() == Ok("1") {
        command.env(
            "DOCS_SCREENSHOT",
            Path::new(ROOT).join("docs/console-call.png"),
        );
    }
    let browser = command.spawn().expect("start node");
    let mut run = tokio::spawn(tokio::time::timeout(
        BROWSER_RUN,
        browser.wait_with_output(),
    ));

    // The agent's side of the call: the fake echoes the browser's audio; the words are ours.
    // A browser run that ends before its call reached Gemini is reported as it is.
    // The session is held to the end: dropping it would hang up the agent.
    let (_session, ended_early) = tokio::select! {
        session = gemini.try_next_session(Duration::from_secs(60)) => {
            let session = session.expect("the browser's call reached Gemini");
            session.send_input_transcription("hello from the browser");
            session.send_output_transcription("hi, this is your agent");
            session.send_turn_complete();
            (Some(session), None)
        }
        result = &mut run => (None, Some(result)),
    };
    let output = match ended_early {
        Some(result) => result,
        None => run.await,
    }
    .expect("the browser run's task")
    .expect("the browser run finished in time")
    .expect("node ran");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{report}");
    assert!(
        output.status.success(),
        "the browser checks failed:\n{report}"
    );
    server.stop().await;
}
