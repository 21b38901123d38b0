//! Pre-warming: a call's Gemini session is opened when its answer webhook is answered, not
//! when its media stream starts.
//!
//! Between answering a webhook and sending the stream's `start`, a provider takes hundreds of
//! milliseconds; opening a Live session (handshake, `setup`, `setupComplete`) takes about as
//! long. Doing both at once takes the session's opening off the time to the caller's first
//! words. The session is keyed by the call's admission key (its record id, or the provider's
//! call id without one), which the stream's checked token names; the stream's start adopts it.
//! Only the opening is done early: the model is asked to greet once the stream exists, so the
//! caller hears the greeting from its start.
//!
//! Each waiting session has one task, a *warmer*, that opens it and closes it when no stream
//! came for it in time, when the server shuts down, or when the stream gave up on it. A
//! session that failed to open is dropped at once, and the start path opens a fresh one.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::config::GeminiConfig;
use crate::gemini::{self, ConnectError, GeminiSocket, SessionSetup};
use crate::shutdown::Shutdown;

/// How long closing an unused session may take before it is simply dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// What the warmer hands over: the open session, or why it could not be opened.
/// An opened session and when its WebSocket handshake finished (for the call's timeline).
type Opened = Result<(GeminiSocket, Instant), ConnectError>;

/// Sessions opened at answer webhooks, waiting for their streams.
#[derive(Debug)]
pub struct Prewarm {
    /// `None`: pre-warming is off (`GEMINI_PREWARM_SECS=0`).
    hold: Option<Duration>,
    registry: Arc<Registry>,
}

#[derive(Debug)]
struct Registry {
    waiting: Mutex<HashMap<String, Waiting>>,
    /// At most this many sessions wait at once: one per call slot.
    capacity: usize,
    next_id: AtomicU64,
}

/// One session waiting for its stream.
#[derive(Debug)]
struct Waiting {
    /// Tells this session from a later one under the same key.
    id: u64,
    setup: SessionSetup,
    message: String,
    opened: oneshot::Receiver<Opened>,
}

/// A pre-warmed session taken by its call's stream: open already, or still opening.
#[derive(Debug)]
pub struct WarmSession {
    setup: SessionSetup,
    message: String,
    opened: oneshot::Receiver<Opened>,
}

impl Prewarm {
    /// Sessions wait up to `hold` for their stream (`None`: nothing is pre-warmed); at most
    /// `capacity` wait at once (the call limit: each waiting session belongs to a call slot).
    pub fn new(hold: Option<Duration>, capacity: usize) -> Self {
        Self {
            hold,
            registry: Arc::new(Registry {
                waiting: Mutex::new(HashMap::new()),
                capacity,
                next_id: AtomicU64::new(0),
            }),
        }
    }

    /// Starts opening the session of the call admitted under `key`, set up with `setup`. Does
    /// nothing when pre-warming is off, the server is shutting down, `key` already has one (a
    /// replayed webhook) or every slot's session is waiting.
    pub fn start(
        &self,
        key: &str,
        setup: SessionSetup,
        config: &GeminiConfig,
        shutdown: &Shutdown,
    ) {
        let Some(hold) = self.hold else { return };
        if shutdown.has_begun() {
            return;
        }
        let message = setup.to_message(None);
        let (handover, opened) = oneshot::channel();
        let id = self.registry.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut waiting = self.registry.waiting();
            if waiting.contains_key(key) || waiting.len() >= self.registry.capacity {
                return;
            }
            waiting.insert(
                key.to_owned(),
                Waiting {
                    id,
                    setup,
                    message: message.clone(),
                    opened,
                },
            );
        }
        let warmer = Warmer {
            registry: Arc::clone(&self.registry),
            key: key.to_owned(),
            id,
        };
        let config = config.clone();
        let stop = shutdown.signal();
        shutdown.spawn_helper(warmer.run(config, message, handover, hold, stop));
    }

    /// Takes the session pre-warmed for `key`, if one is waiting. Only a stream whose token
    /// proved it belongs to `key` may take it.
    pub fn adopt(&self, key: &str) -> Option<WarmSession> {
        let Waiting {
            setup,
            message,
            opened,
            ..
        } = self.registry.waiting().remove(key)?;
        Some(WarmSession {
            setup,
            message,
            opened,
        })
    }

    /// Closes the session waiting for `key`: its call ended before its stream started.
    pub fn cancel(&self, key: &str) {
        let Some(waiting) = self.registry.waiting().remove(key) else {
            return;
        };
        tracing::info!(call = %key, "the call ended before its stream; closing its pre-warmed Gemini session");
        tokio::spawn(waiting.close());
    }

    /// True unless pre-warming is off (`GEMINI_PREWARM_SECS=0`).
    pub fn is_on(&self) -> bool {
        self.hold.is_some()
    }

    /// Sessions waiting for their stream now.
    pub fn waiting(&self) -> usize {
        self.registry.waiting().len()
    }
}

impl Registry {
    fn waiting(&self) -> MutexGuard<'_, HashMap<String, Waiting>> {
        // A panic while holding the lock leaves a plain map behind: still usable.
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Removes session `id` of `key` unless its stream took it first.
    fn withdraw(&self, key: &str, id: u64) -> Option<Waiting> {
        let mut waiting = self.waiting();
        match waiting.get(key) {
            Some(entry) if entry.id == id => waiting.remove(key),
            _ => None,
        }
    }
}

impl WarmSession {
    /// The setup the session was opened with (the call's prompt, rendered at the webhook).
    pub fn setup(&self) -> &SessionSetup {
        &self.setup
    }

    /// The open session, once it is: waits for a session still opening. A session opened
    /// with another setup than `setup_message`, or one that failed, is not used; a fresh
    /// one is opened instead, as without pre-warming.
    pub async fn connect(self, config: &GeminiConfig, setup_message: &str) -> Opened {
        if self.message == setup_message {
            match self.opened.await {
                Ok(Ok(socket)) => {
                    tracing::debug!("using the Gemini session opened at the answer webhook");
                    return Ok(socket);
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, "the pre-warmed Gemini session failed; opening another");
                }
                Err(_) => tracing::warn!("the pre-warmed Gemini session was lost; opening another"),
            }
        }
        gemini::client::connect_timed(config, setup_message).await
    }
}

/// The task that opens one pre-warmed session and closes it if no stream takes it.
struct Warmer {
    registry: Arc<Registry>,
    key: String,
    id: u64,
}

impl Warmer {
    async fn run(
        self,
        config: GeminiConfig,
        message: String,
        mut handover: oneshot::Sender<Opened>,
        hold: Duration,
        stop: impl Future<Output = ()>,
    ) {
        let expiry = tokio::time::sleep(hold);
        let connecting = gemini::client::connect_timed(&config, &message);
        tokio::pin!(expiry, connecting, stop);
        // Set once the deadline or shutdown came but the session was no longer in the
        // registry: its stream took it, and it is handed over however long it takes.
        let mut taken = false;
        let opened = loop {
            tokio::select! {
                opened = &mut connecting => break opened,
                // Its call ended (before or after its stream took it): nobody will use it.
                () = handover.closed() => return,
                () = &mut expiry, if !taken => {
                    if self.give_up("no stream came in time") {
                        return;
                    }
                    taken = true;
                }
                () = &mut stop, if !taken => {
                    if self.give_up("the server is shutting down") {
                        return;
                    }
                    taken = true;
                }
            }
        };
        if let Err(error) = &opened
            && !taken
            && self.registry.withdraw(&self.key, self.id).is_some()
        {
            // Withdrawn rather than left to fail again at the start: the stream opens a
            // fresh session instead.
            tracing::warn!(%error, call = %self.key, "could not pre-warm the Gemini session; the stream's start will open one");
            return;
        }
        if let Err(unwanted) = handover.send(opened) {
            close(unwanted).await;
            return;
        }
        if taken {
            return;
        }
        let why = tokio::select! {
            () = &mut expiry => "no stream came in time",
            () = &mut stop => "the server is shutting down",
        };
        if let Some(waiting) = self.registry.withdraw(&self.key, self.id) {
            tracing::info!(call = %self.key, why, "closing an unused pre-warmed Gemini session");
            waiting.close().await;
        }
    }

    /// Withdraws the session from the registry; false when something took it first.
    fn give_up(&self, why: &str) -> bool {
        let withdrawn = self.registry.withdraw(&self.key, self.id).is_some();
        if withdrawn {
            tracing::info!(call = %self.key, why, "closing a pre-warmed Gemini session before it opened");
        }
        withdrawn
    }
}

impl Waiting {
    /// Closes the session: politely if it is open; one still opening is abandoned, as its
    /// warmer sees nobody waits for it.
    async fn close(self) {
        let mut opened = self.opened;
        if let Ok(unused) = opened.try_recv() {
            close(unused).await;
        }
    }
}

/// Closes a session no call uses, politely if it opened.
async fn close(unused: Opened) {
    if let Ok((mut socket, _)) = unused {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "no call took this session".into(),
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.close(Some(frame))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    /// A Gemini that accepts connections and never answers, so sessions stay opening.
    async fn silent_gemini() -> (tokio::net::TcpListener, GeminiConfig) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let config = GeminiConfig {
            api_key: Secret::new("k"),
            model: "gemini-3.8-live".into(),
            voice: "Kore".into(),
            language: None,
            live_url: format!("ws://{addr}/live"),
            setup_timeout: Duration::from_secs(5),
            backend: Default::default(),
        };
        (listener, config)
    }

    fn setup(config: &GeminiConfig) -> SessionSetup {
        SessionSetup::new(config, "Be brief.".into())
    }

    #[tokio::test]
    async fn no_more_sessions_wait_than_there_are_call_slots() {
        let (_gemini, config) = silent_gemini().await;
        let shutdown = Shutdown::new();
        let prewarm = Prewarm::new(Some(Duration::from_secs(10)), 2);
        for key in ["a", "b", "c"] {
            prewarm.start(key, setup(&config), &config, &shutdown);
        }
        assert_eq!(prewarm.waiting(), 2);
        assert!(
            prewarm.adopt("c").is_none(),
            "over the limit, nothing opened"
        );
        // A replayed webhook does not open a second session for its call.
        prewarm.start("a", setup(&config), &config, &shutdown);
        assert_eq!(prewarm.waiting(), 2);
        assert!(prewarm.adopt("a").is_some());
        assert!(prewarm.adopt("a").is_none(), "taken once");
        prewarm.cancel("b");
        assert_eq!(prewarm.waiting(), 0);
    }

    #[tokio::test]
    async fn nothing_is_opened_when_off_or_shutting_down() {
        let (_gemini, config) = silent_gemini().await;
        let shutdown = Shutdown::new();
        let off = Prewarm::new(None, 10);
        assert!(!off.is_on());
        off.start("a", setup(&config), &config, &shutdown);
        assert_eq!(off.waiting(), 0);

        let on = Prewarm::new(Some(Duration::from_secs(10)), 10);
        shutdown.begin();
        on.start("a", setup(&config), &config, &shutdown);
        assert_eq!(on.waiting(), 0);
    }

    #[tokio::test]
    async fn a_session_opened_with_another_setup_is_not_used() {
        let (_gemini, config) = silent_gemini().await;
        let prewarm = Prewarm::new(Some(Duration::from_secs(10)), 1);
        prewarm.start("a", setup(&config), &config, &Shutdown::new());
        let warm = prewarm.adopt("a").expect("waiting");
        let mut other = setup(&config);
        other.system_instruction = "Another prompt.".into();
        let fast_fail = GeminiConfig {
            live_url: "ws://127.0.0.1:1/live".into(),
            ..config.clone()
        };
        // Not the still-opening session (which would hang until its timeout): a fresh one.
        let opened = tokio::time::timeout(
            Duration::from_secs(2),
            warm.connect(&fast_fail, &other.to_message(None)),
        )
        .await
        .expect("did not wait for the pre-warmed session");
        assert!(matches!(opened, Err(ConnectError::Transport(_))));
    }
}
