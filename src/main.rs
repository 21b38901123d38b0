//! The `gemini-phone` server binary.
//!
//! `gemini-phone` serves calls; `gemini-phone audio-report` prints the audio path's
//! measured fidelity.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use gemini_phone::config::Config;
use gemini_phone::server::{self, App};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        None | Some("serve") => {}
        Some("audio-report") => {
            print!("{}", gemini_phone::audio::report::fidelity_report());
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("unknown command `{other}`; use `serve` (default) or `audio-report`");
            return ExitCode::from(2);
        }
    }

    // A missing .env is normal in containers, where the environment is set directly.
    let _ = dotenvy::dotenv();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();

    let app = match Config::from_env().and_then(App::new) {
        Ok(app) => Arc::new(app),
        Err(e) => {
            eprintln!("configuration error: {e}");
            return ExitCode::from(2);
        }
    };

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(app)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
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
    server::serve(listener, app, shutdown_signal())
        .await
        .context("server failed")
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
