//! The post-call webhook: each ended call's final record, POSTed to `POST_CALL_WEBHOOK_URL`.
//!
//! **When.** The store queues a delivery in the same transaction that writes a call's first
//! final status (the outbox, `store::outbox`), so no ended call is missed, whichever path
//! ended it: the bridge, a provider's status callback, `POST /calls` failing, crash
//! reconciliation. The final status is not always the record's last write, though: a
//! provider's `completed` callback may land while the bridge is still writing the transcript
//! and end reason. So a delivery waits until the record has been unchanged for
//! [`Settings::settle`] (every later write pushes it back), and the body is built from the
//! record at that moment, never from a snapshot taken when the status changed.
//!
//! **What.** The body is the record exactly as `GET /calls/{id}` shows it: whatever the
//! record gains (latency, a recording URL) the webhook carries too. Headers carry the rest:
//! `X-Gemini-Phone-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` keyed
//! with `POST_CALL_WEBHOOK_SECRET`, `X-Gemini-Phone-Event: call.ended`,
//! `X-Gemini-Phone-Delivery` (the call id; the same on every retry) and
//! `X-Gemini-Phone-Attempt`.
//!
//! **Retries.** Any answer but a 2xx, a connection error or no answer within
//! [`Settings::request_timeout`] is retried with exponential back-off ([`Backoff`]) for up to
//! an hour after the call ended; then the delivery is given up with an error in the log.
//! Once a receiver answers 2xx the record is never sent again. A process that dies between
//! the receiver's 2xx and marking the row may send it once more, so receivers should treat
//! `X-Gemini-Phone-Delivery` as an idempotency key.
//!
//! **Where.** One worker task per instance, off the audio path: calls only write their final
//! status, as they always did. Instances sharing a database claim rows with a lease, so each
//! record goes out once; a row whose instance died mid-attempt is taken over when its lease
//! runs out. Rows queued while no worker runs (during a restart) are delivered once one does.

use std::time::Duration;

use futures_util::StreamExt as _;
use hmac::{Hmac, KeyInit, Mac};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::store::{CallStore, PostCallDelivery, StoreError};
use crate::config::{Config, PostCallWebhook, Secret};
use crate::shutdown::Shutdown;
use crate::signature::unix_now;
use crate::telephony::rest::install_crypto_provider;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "X-Gemini-Phone-Signature";
/// The header that names what happened (`call.ended`).
pub const EVENT_HEADER: &str = "X-Gemini-Phone-Event";
/// The header that identifies a delivery across retries: the call's record id.
pub const DELIVERY_HEADER: &str = "X-Gemini-Phone-Delivery";
/// The header that numbers the attempt, from 1.
pub const ATTEMPT_HEADER: &str = "X-Gemini-Phone-Attempt";
/// The event every delivery reports today.
pub const CALL_ENDED: &str = "call.ended";

/// How long a record must be unchanged before it is sent: the bridge's last writes (the
/// transcript's tail, the end reason) land within milliseconds of the call's end, or of a
/// provider's earlier final callback; seconds leave room for a busy database.
pub const SETTLE: Duration = Duration::from_secs(5);
/// A receiver that has not answered in this long has failed the attempt.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the worker looks for due deliveries (one indexed query).
pub const POLL_EVERY: Duration = Duration::from_secs(1);
/// How long a claim keeps other instances off a row: well over one request, so a slow
/// receiver is never sent the same record by two instances at once.
pub const LEASE: Duration = Duration::from_secs(60);
/// Deliveries claimed per look.
const BATCH: u32 = 16;
/// Deliveries in flight at once.
const IN_FLIGHT: usize = 4;
/// The largest share of a retry delay added at random, so records that failed together
/// (a receiver that was down) do not all come back in the same instant.
const JITTER: f64 = 0.1;

/// When failed deliveries are tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Wait after the first failed attempt; it doubles after each further one.
    pub first_retry: Duration,
    /// The longest wait between two attempts.
    pub max_interval: Duration,
    /// No attempt is made later than this after the call's final status.
    pub retry_for: Duration,
}

impl Default for Backoff {
    /// 10 s, 20 s, 40 s, … capped at 10 minutes, for an hour: 11 attempts in all.
    fn default() -> Self {
        Backoff {
            first_retry: Duration::from_secs(10),
            max_interval: Duration::from_secs(10 * 60),
            retry_for: Duration::from_secs(60 * 60),
        }
    }
}

impl Backoff {
    /// The wait after `failed` attempts have failed (`failed` ≥ 1), before any jitter.
    pub fn delay_after(&self, failed: u32) -> Duration {
        let doublings = failed.saturating_sub(1).min(31);
        self.first_retry
            .saturating_mul(1 << doublings)
            .min(self.max_interval)
    }

    /// When each attempt is made, measured from the first, for a receiver that always
    /// fails (no jitter): the whole schedule, for documentation and tests.
    pub fn attempt_offsets(&self) -> Vec<Duration> {
        let mut offsets = vec![Duration::ZERO];
        let mut at = Duration::ZERO;
        for failed in 1.. {
            at += self.delay_after(failed);
            if at > self.retry_for {
                break;
            }
            offsets.push(at);
        }
        offsets
    }
}

/// Everything the delivery worker needs; [`Settings::for_config`] gives the server's,
/// tests shorten the timings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The receiver (`POST_CALL_WEBHOOK_URL`).
    pub url: String,
    /// The signing key (`POST_CALL_WEBHOOK_SECRET`).
    pub secret: Secret,
    /// A record must be unchanged this long before it is sent.
    pub settle: Duration,
    /// One attempt's time limit.
    pub request_timeout: Duration,
    /// How often to look for due deliveries.
    pub poll_every: Duration,
    /// How long a claimed row is this instance's alone.
    pub lease: Duration,
    /// When to retry.
    pub backoff: Backoff,
}

impl Settings {
    /// The defaults above for `webhook`.
    pub fn new(webhook: &PostCallWebhook) -> Self {
        Settings {
            url: webhook.url.clone(),
            secret: webhook.secret.clone(),
            settle: SETTLE,
            request_timeout: REQUEST_TIMEOUT,
            poll_every: POLL_EVERY,
            lease: LEASE,
            backoff: Backoff::default(),
        }
    }

    /// The server's settings, or `None` when `POST_CALL_WEBHOOK_URL` is unset.
    pub fn for_config(config: &Config) -> Option<Self> {
        config.post_call_webhook.as_ref().map(Settings::new)
    }
}

/// The `X-Gemini-Phone-Signature` value for `body` sent at `timestamp` (unix seconds):
/// `t=<timestamp>,v1=<lowercase hex HMAC-SHA256 of "<timestamp>.<body>">`. Signing the time
/// with the body lets a receiver refuse replays of an old delivery.
pub fn signature_header(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC-SHA256 takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

/// Starts the delivery worker for the records in `store`, claiming rows as `owner` (this
/// instance's id). It stops at `shutdown`'s signal; deliveries not yet made stay queued for
/// the next start or another instance.
pub fn start(
    store: CallStore,
    settings: Settings,
    owner: &str,
    shutdown: &Shutdown,
) -> Result<JoinHandle<()>, reqwest::Error> {
    install_crypto_provider();
    let client = reqwest::Client::builder()
        .timeout(settings.request_timeout)
        // A redirect would turn the POST into a GET elsewhere; a receiver must answer itself.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("gemini-phone/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let worker = Worker {
        shown_url: shown_url(&settings.url),
        store,
        settings,
        client,
        owner: owner.to_owned(),
        shutdown: shutdown.clone(),
    };
    Ok(tokio::spawn(worker.run()))
}

/// What became of one attempt.
enum Outcome {
    /// The receiver answered 2xx.
    Accepted(u16),
    /// Anything else, described for the log and the outbox.
    Failed(String),
}

struct Worker {
    store: CallStore,
    settings: Settings,
    client: reqwest::Client,
    owner: String,
    shutdown: Shutdown,
    /// The receiver's URL without query or credentials, for logs.
    shown_url: String,
}

impl Worker {
    async fn run(self) {
        let stop = self.shutdown.signal();
        tokio::pin!(stop);
        let mut ticks = tokio::time::interval(self.settings.poll_every);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut stop => break,
                _ = ticks.tick() => {}
            }
            if let Err(error) = self.pass().await {
                tracing::error!(%error, "post-call webhook: cannot read the delivery queue");
            }
        }
    }

    /// Claims the due deliveries and makes them, a few at a time.
    async fn pass(&self) -> Result<(), StoreError> {
        let claimed = self
            .store
            .claim_post_calls(
                &self.owner,
                self.settings.lease,
                self.settings.settle,
                BATCH,
            )
            .await?;
        futures_util::stream::iter(claimed)
            .for_each_concurrent(IN_FLIGHT, |delivery| async move {
                if let Err(error) = self.deliver(&delivery).await {
                    tracing::error!(
                        %error,
                        call_id = %delivery.call_id,
                        "post-call webhook: cannot update the delivery queue"
                    );
                }
            })
            .await;
        Ok(())
    }

    /// Makes one attempt and records its outcome.
    async fn deliver(&self, delivery: &PostCallDelivery) -> Result<(), StoreError> {
        let call_id = delivery.call_id.as_str();
        if self.shutdown.has_begun() {
            // Not started: hand it back for whoever runs next, uncounted.
            return self.store.release_post_call(call_id, &self.owner).await;
        }
        let Some(record) = self.store.get(call_id).await? else {
            return self
                .store
                .give_up_post_call(call_id, &self.owner, "the call record is gone")
                .await;
        };
        let body = serde_json::to_vec(&record).map_err(|source| StoreError::Encode {
            what: "the post-call webhook body",
            source,
        })?;
        match self.post(call_id, delivery.attempt, body).await {
            Outcome::Accepted(status) => {
                self.store.mark_post_call_delivered(call_id).await?;
                tracing::info!(
                    call_id,
                    attempt = delivery.attempt,
                    status,
                    url = %self.shown_url,
                    "post-call webhook delivered"
                );
                Ok(())
            }
            Outcome::Failed(error) => self.after_failure(delivery, &error).await,
        }
    }

    async fn post(&self, call_id: &str, attempt: u32, body: Vec<u8>) -> Outcome {
        let signature =
            signature_header(self.settings.secret.expose().as_bytes(), unix_now(), &body);
        let sent = self
            .client
            .post(&self.settings.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .header(EVENT_HEADER, CALL_ENDED)
            .header(DELIVERY_HEADER, call_id)
            .header(ATTEMPT_HEADER, attempt.to_string())
            .body(body)
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {
                Outcome::Accepted(response.status().as_u16())
            }
            Ok(response) => Outcome::Failed(format!("the receiver answered {}", response.status())),
            Err(error) if error.is_timeout() => Outcome::Failed(format!(
                "no answer within {} ms",
                self.settings.request_timeout.as_millis()
            )),
            // Without the URL: it may carry a token of the receiver's.
            Err(error) => Outcome::Failed(format!(
                "cannot reach the receiver: {}",
                error.without_url()
            )),
        }
    }

    /// Schedules the next attempt, or gives up once the retry window is spent.
    async fn after_failure(
        &self,
        delivery: &PostCallDelivery,
        error: &str,
    ) -> Result<(), StoreError> {
        let call_id = delivery.call_id.as_str();
        let backoff = &self.settings.backoff;
        let retry_in = with_jitter(backoff.delay_after(delivery.attempt));
        let since_end_ms = unix_millis().saturating_sub(delivery.enqueued_ms);
        let next_since_end =
            Duration::from_millis(u64::try_from(since_end_ms).unwrap_or(0)) + retry_in;
        if next_since_end > backoff.retry_for {
            tracing::error!(
                call_id,
                attempts = delivery.attempt,
                error,
                url = %self.shown_url,
                "post-call webhook: giving up on this call's record; no attempt succeeded within the retry window"
            );
            return self
                .store
                .give_up_post_call(call_id, &self.owner, error)
                .await;
        }
        tracing::warn!(
            call_id,
            attempt = delivery.attempt,
            error,
            retry_in_ms = u64::try_from(retry_in.as_millis()).unwrap_or(u64::MAX),
            url = %self.shown_url,
            "post-call webhook attempt failed; will retry"
        );
        self.store
            .retry_post_call(call_id, &self.owner, retry_in, error)
            .await
    }
}

/// `delay` plus up to [`JITTER`] of it, at random.
fn with_jitter(delay: Duration) -> Duration {
    let fraction = (uuid::Uuid::new_v4().as_u128() % 1_000) as f64 / 1_000.0;
    delay.mul_f64(1.0 + JITTER * fraction)
}

/// Wall-clock unix milliseconds, the store's clock.
fn unix_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `url` as logs may show it: scheme, host, port and path, without credentials or query.
fn shown_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(parsed) => {
            let host = parsed.host_str().unwrap_or("");
            let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!("{}://{host}{port}{}", parsed.scheme(), parsed.path())
        }
        Err(_) => "(unparsable URL)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hex_hmac_sha256_of_timestamp_dot_body() {
        // Computed independently: printf '1700000000.{"id":"c1"}' |
        //   openssl dgst -sha256 -hmac 'whsec_test_0123456789'
        let header = signature_header(b"whsec_test_0123456789", 1_700_000_000, br#"{"id":"c1"}"#);
        assert_eq!(
            header,
            "t=1700000000,v1=1f3ad6622bd86e289a1615c502e7e58b30b96743a0ca51ef7fc651cae0ba76b7"
        );
    }

    #[test]
    fn a_different_body_time_or_key_changes_the_signature() {
        let base = signature_header(b"key-0123456789abcdef", 10, b"{}");
        assert_ne!(base, signature_header(b"key-0123456789abcdef", 10, b"{ }"));
        assert_ne!(
            base.split_once(",v1=").map(|(_, v)| v.to_owned()),
            signature_header(b"key-0123456789abcdef", 11, b"{}")
                .split_once(",v1=")
                .map(|(_, v)| v.to_owned())
        );
        assert_ne!(base, signature_header(b"key-0123456789abcdeg", 10, b"{}"));
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_stops_after_an_hour() {
        let backoff = Backoff::default();
        let secs: Vec<u64> = (1..=9).map(|n| backoff.delay_after(n).as_secs()).collect();
        assert_eq!(secs, [10, 20, 40, 80, 160, 320, 600, 600, 600]);
        assert_eq!(backoff.delay_after(u32::MAX), Duration::from_secs(600));
        let offsets: Vec<u64> = backoff
            .attempt_offsets()
            .iter()
            .map(Duration::as_secs)
            .collect();
        assert_eq!(
            offsets,
            [0, 10, 30, 70, 150, 310, 630, 1230, 1830, 2430, 3030]
        );
    }

    #[test]
    fn jitter_only_lengthens_and_by_at_most_a_tenth() {
        for _ in 0..200 {
            let jittered = with_jitter(Duration::from_secs(10));
            assert!(jittered >= Duration::from_secs(10));
            assert!(jittered <= Duration::from_secs(11));
        }
    }

    #[test]
    fn logged_urls_lose_credentials_and_query() {
        assert_eq!(
            shown_url("https://user:pw@hooks.example.com:8443/calls?token=abc"),
            "https://hooks.example.com:8443/calls"
        );
        assert_eq!(shown_url("http://127.0.0.1/x"), "http://127.0.0.1/x");
    }
}
