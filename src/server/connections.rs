//! The accept loop: how each HTTP connection is served and how they all end.
//!
//! Every connection gets hyper's header-read deadline, TCP_NODELAY and WebSocket upgrades.
//! When the shutdown future resolves the listener is closed, idle connections close at once,
//! requests in flight finish, and whatever is still open at the drain deadline is cut, so
//! [`serve_connections`] always returns. Media streams are not counted here: once upgraded a
//! stream belongs to its call task, which [`crate::shutdown::Shutdown`] drains.

use std::future::Future;
use std::io;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Largest request head (request line and headers) accepted. Provider webhooks send a few
/// kilobytes; without a limit hyper buffers up to about 400 KiB per connection.
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Pause after an accept error that is not one peer's problem (out of file handles, most
/// likely): accepting again at once would spin a core while nothing can be accepted.
const ACCEPT_RETRY: Duration = Duration::from_secs(1);

/// The time limits of every connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// A request head must be complete this long after the server starts waiting for it:
    /// from the accept, and from the end of the previous response on a kept-alive connection.
    pub head_timeout: Duration,
    /// After shutdown begins, connections still open this long are cut.
    pub drain_timeout: Duration,
}

/// Serves `router` on every connection `listener` accepts, until `shutdown` resolves and the
/// open connections have finished or been cut at `limits.drain_timeout`.
pub async fn serve_connections(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let http = http1_settings(&limits);
    let draining = CancellationToken::new();
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            tcp = next_connection(&listener) => {
                connections.spawn(serve_one(tcp, router.clone(), http.clone(), draining.clone()));
            }
            Some(ended) = connections.join_next(), if !connections.is_empty() => {
                if let Err(error) = ended {
                    tracing::error!(%error, "an HTTP connection task failed");
                }
            }
        }
    }
    // New connections are refused from here on rather than left waiting in the backlog.
    drop(listener);
    draining.cancel();
    close_all(connections, limits.drain_timeout).await;
    Ok(())
}

fn http1_settings(limits: &ConnectionLimits) -> http1::Builder {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.head_timeout)
        .max_header_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    http
}

/// The next accepted connection; accept errors are logged and retried, never returned.
async fn next_connection(listener: &TcpListener) -> TcpStream {
    loop {
        match listener.accept().await {
            Ok((tcp, _peer)) => return tcp,
            Err(error) if is_peer_error(&error) => {}
            Err(error) => {
                tracing::error!(%error, "cannot accept connections (out of file handles?); trying again in 1 s");
                tokio::time::sleep(ACCEPT_RETRY).await;
            }
        }
    }
}

/// Errors that concern one peer that went away during the handshake, not the listener.
fn is_peer_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

async fn serve_one(
    tcp: TcpStream,
    router: Router,
    http: http1::Builder,
    draining: CancellationToken,
) {
    // Frames are sent as soon as they are ready; Nagle would hold each one back until the
    // provider's next packet acknowledges the last, adding up to a frame of delay.
    if let Err(error) = tcp.set_nodelay(true) {
        tracing::debug!(%error, "could not set TCP_NODELAY");
    }
    let connection = http
        .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(router))
        .with_upgrades();
    tokio::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        () = draining.cancelled() => {
            // Closes an idle connection now; one with a request in flight after its response.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = ended {
        // Header time-outs and peers that vanish mid-request: routine on the open internet,
        // and an attacker could flood a louder log.
        tracing::debug!(%error, "HTTP connection closed with an error");
    }
}

/// Waits up to `within` for the connections to finish, then cuts the rest.
async fn close_all(mut connections: JoinSet<()>, within: Duration) {
    let all_closed = tokio::time::timeout(within, async {
        while connections.join_next().await.is_some() {}
    })
    .await
    .is_ok();
    if !all_closed {
        tracing::warn!(
            connections = connections.len(),
            "HTTP connections still open at the drain deadline are cut"
        );
        connections.shutdown().await;
    }
}
