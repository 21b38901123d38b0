//! The `gemini-phone` server binary.
//!
//! `gemini-phone` serves calls; `gemini-phone healthcheck` asks a running server's
//! `/health` (for container health checks, where no curl is installed);
//! `gemini-phone audio-report` prints the audio path's measured fidelity;
//! `gemini-phone doctor` checks everything a first call depends on.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use gemini_phone::app::App;
use gemini_phone::calls::CallStatus;
use gemini_phone::config::Config;
use gemini_phone::server;
use tracing_subscriber::EnvFilter;

/// How long after the drain deadline the last record writes may take: the records of calls
/// cut at the deadline are written in this time.
const RECORD_FLUSH_GRACE: Duration = Duration::from_secs(1);
/// How long tasks still running at exit (a call cut at the deadline, a provider request) get
/// to stop before the process exits without them. With [`RECORD_FLUSH_GRACE`] this keeps the
/// exit within two seconds of the drain deadline.
const RUNTIME_STOP_GRACE: Duration = Duration::from_millis(500);

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        None | Some("serve") => {}
        Some("healthcheck") => return healthcheck(),
        Some("configure") => return configure(),
        Some("doctor") => return gemini_phone::doctor::run::main(),
        Some("audio-report") => {
            print!("{}", gemini_phone::audio::report::fidelity_report());
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!(
                "unknown command `{other}`; use `serve` (default), `doctor`, `configure`, `healthcheck` or `audio-report`"
            );
            return ExitCode::from(2);
        }
    }

    // A missing .env is normal in containers, where the environment is set directly.
    let _ = dotenvy::dotenv();
    if let Err(problem) = init_logging() {
        eprintln!("configuration error: {problem}");
        return ExitCode::from(2);
    }

    let (config, runtime) = match config_and_runtime() {
        Ok(both) => both,
        Err(code) => return code,
    };
    let app = match runtime.block_on(App::new(config)) {
        Ok(app) => Arc::new(app),
        Err(e) => {
            eprintln!("configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = runtime.block_on(run(app));
    // Dropping the runtime would wait for every task, however stuck; this does not.
    runtime.shutdown_timeout(RUNTIME_STOP_GRACE);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Sets up the log output `LOG_FORMAT` asks for, filtered by `RUST_LOG`. Read here, not in
/// [`Config`], because logging starts before the configuration is read (and reports on it).
fn init_logging() -> Result<(), String> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let format = std::env::var("LOG_FORMAT").unwrap_or_default();
    match format.trim() {
        "" | "text" => tracing_subscriber::fmt()
            .with_env_filter(filter)
            // Colour codes only for a person at a terminal; `docker logs` and log shippers
            // get plain text.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .init(),
        // One JSON object a line, the event's fields at the top level beside `timestamp`,
        // `level`, `target` and `message`, as log shippers index them.
        "json" => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .json()
            .flatten_event(true)
            .with_span_list(false)
            .init(),
        other => {
            return Err(format!(
                "LOG_FORMAT: `{other}` is not a log format; use text (the default) or json"
            ));
        }
    }
    Ok(())
}

async fn run(app: Arc<App>) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let addr = SocketAddr::new(app.config.host, app.config.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (set HOST/PORT)"))?;
    tracing::info!(
        %addr,
        agent = app.config.agent.as_str(),
        public_url = %app.config.public_url,
        twilio = app.config.twilio.is_some(),
        plivo = app.config.plivo.is_some(),
        "gemini-phone listening; point webhooks at PUBLIC_URL/twilio/answer or PUBLIC_URL/plivo/answer"
    );
    let signalled = Arc::clone(&app);
    tokio::spawn(async move {
        shutdown_signal().await;
        signalled.shutdown.begin();
    });
    // One deadline for everything: HTTP connections and calls drain at the same time.
    let drain = app.config.limits.drain_timeout;
    let (deadline_tx, deadline_rx) = tokio::sync::oneshot::channel();
    let signal = app.shutdown.signal();
    let stop_accepting = async move {
        signal.await;
        let _ = deadline_tx.send(Instant::now() + drain);
    };
    server::serve(listener, Arc::clone(&app), stop_accepting)
        .await
        .context("server failed")?;
    let deadline = deadline_rx.await.unwrap_or_else(|_| Instant::now() + drain);
    finish_calls(&app, deadline).await;
    // Other instances may now settle whatever this one still owns.
    if tokio::time::timeout(RECORD_FLUSH_GRACE, app.leave())
        .await
        .is_err()
    {
        tracing::warn!("could not sign this instance out of the records database in time");
    }
    Ok(())
}

/// Gives the calls in progress, which have heard the shutdown signal, until `deadline` to end
/// themselves; records the ones cut at the deadline; flushes the records.
async fn finish_calls(app: &App, deadline: Instant) {
    let running = app.shutdown.running_calls();
    if running > 0 {
        tracing::info!(
            calls = running,
            deadline_seconds = app.config.limits.drain_timeout.as_secs(),
            "ending calls in progress"
        );
    }
    let left = deadline.saturating_duration_since(Instant::now());
    if !app.shutdown.drain(left).await {
        let cut = app.admission.live_records();
        tracing::warn!(
            calls = cut.len(),
            "calls still running at the drain deadline are cut"
        );
        for id in &cut {
            app.recorder.finish(
                id,
                None,
                "server shutdown: cut at the drain deadline".to_owned(),
            );
            app.recorder.status(id, CallStatus::Completed);
        }
    }
    // What the calls wrote last (transcripts, end reasons) must reach the database.
    let flushed_by = deadline.max(Instant::now()) + RECORD_FLUSH_GRACE;
    if tokio::time::timeout_at(flushed_by, app.recorder.flush())
        .await
        .is_err()
    {
        tracing::warn!("call records still unwritten at exit");
    }
    // The ended calls' recordings are finished (exact sizes) before the process exits.
    if !app.recordings.flush(RECORD_FLUSH_GRACE).await {
        tracing::warn!(
            "call recordings still being written at exit; they are repaired at the next start"
        );
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}

/// Points each configured provider's number at `PUBLIC_URL`; prints one line per provider
/// and exits 0 only when every number is set up.
fn configure() -> ExitCode {
    let _ = dotenvy::dotenv();
    let (config, runtime) = match config_and_runtime() {
        Ok(both) => both,
        Err(code) => return code,
    };
    let report = runtime.block_on(gemini_phone::numbers::configure_all(&config));
    print!("{report}");
    if report.succeeded() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The configuration from the environment and a runtime to run on, or the exit status after
/// saying what is wrong (2 for configuration, 1 for the runtime).
fn config_and_runtime() -> Result<(Config, tokio::runtime::Runtime), ExitCode> {
    let config = Config::from_env().map_err(|e| {
        eprintln!("configuration error: {e}");
        ExitCode::from(2)
    })?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| {
        eprintln!("cannot start the async runtime: {e}");
        ExitCode::FAILURE
    })?;
    Ok((config, runtime))
}

/// Exits 0 when the server on `PORT` answers `/health` with 200.
fn healthcheck() -> ExitCode {
    use std::io::{Read, Write};
    let _ = dotenvy::dotenv();
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8000);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let timeout = Duration::from_secs(2);
    let answer = std::net::TcpStream::connect_timeout(&addr, timeout).and_then(|mut stream| {
        stream.set_read_timeout(Some(timeout))?;
        stream.write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head)?;
        Ok(head)
    });
    match answer {
        Ok(head) if head.ends_with(b" 200") => ExitCode::SUCCESS,
        Ok(head) => {
            eprintln!("unhealthy: {}", String::from_utf8_lossy(&head));
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("unhealthy: {e}");
            ExitCode::FAILURE
        }
    }
}
