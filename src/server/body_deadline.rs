//! A deadline for a whole request body.
//!
//! tower-http's `RequestBodyTimeout` restarts its timer on every chunk, so a client that sends
//! one byte every few seconds is never cut. Here the deadline is set once, when the request's
//! head has arrived, and the body fails with [`BodyTimedOut`] if it is not complete by then.
//! Requests without a body get no timer at all.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use http_body::{Frame, SizeHint};
use tokio::time::Sleep;

/// The request body did not arrive in time.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the request body did not arrive within {} s", .0.as_secs())]
pub struct BodyTimedOut(pub Duration);

/// Gives `request`'s body until `within` from now to arrive in full.
pub fn limit_body_time(request: Request, within: Duration) -> Request {
    if request.body().is_end_stream() {
        return request;
    }
    request.map(|body| Body::new(DeadlineBody::new(body, within)))
}

/// The [`BodyTimedOut`] that `error` is, or was caused by, if any.
pub fn body_timeout_in(error: &(dyn std::error::Error + 'static)) -> Option<BodyTimedOut> {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(timed_out) = error.downcast_ref::<BodyTimedOut>() {
            return Some(*timed_out);
        }
        cause = error.source();
    }
    None
}

struct DeadlineBody {
    body: Body,
    within: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl DeadlineBody {
    fn new(body: Body, within: Duration) -> Self {
        Self {
            body,
            within,
            deadline: Box::pin(tokio::time::sleep(within)),
        }
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut(this.within)))));
        }
        Pin::new(&mut this.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::to_bytes;

    fn trickling_body(bytes: usize, every: Duration) -> Body {
        let chunks = futures_util::stream::unfold(0, move |sent| async move {
            if sent == bytes {
                return None;
            }
            tokio::time::sleep(every).await;
            Some((Ok::<_, std::io::Error>(Bytes::from_static(b"x")), sent + 1))
        });
        Body::from_stream(chunks)
    }

    fn post(body: Body) -> Request {
        Request::post("/").body(body).unwrap()
    }

    #[tokio::test]
    async fn a_trickling_body_is_cut_at_the_deadline_though_every_byte_is_prompt() {
        let within = Duration::from_millis(300);
        let request = limit_body_time(post(trickling_body(100, Duration::from_millis(20))), within);
        let started = tokio::time::Instant::now();
        let error = to_bytes(request.into_body(), 1024).await.unwrap_err();
        assert!(body_timeout_in(&error).is_some(), "{error}");
        let cut_after = started.elapsed();
        assert!(
            (within..within * 3).contains(&cut_after),
            "cut after {cut_after:?}"
        );
    }

    #[tokio::test]
    async fn a_body_that_arrives_in_time_is_untouched() {
        let request = limit_body_time(
            post(trickling_body(5, Duration::from_millis(10))),
            Duration::from_secs(5),
        );
        let body = to_bytes(request.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], b"xxxxx");
    }

    #[test]
    fn other_errors_are_not_time_outs() {
        let error = axum::Error::new(std::io::Error::other("reset"));
        assert!(body_timeout_in(&error).is_none());
        let error = axum::Error::new(BodyTimedOut(Duration::from_secs(1)));
        assert!(body_timeout_in(&error).is_some());
    }
}
