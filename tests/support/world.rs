//! The usual whole-call test world: a server with both providers' accounts on a fake REST
//! API, talking to a fake Gemini. Test files add their own helpers in `impl World` blocks.
#![allow(dead_code)]

use super::TestServer;
use super::gemini::{Behaviour, FakeGemini};
use super::rest::FakeRest;

/// A server, its fake provider REST API and its fake Gemini.
pub struct World {
    /// The fake Twilio/Plivo REST API the server's accounts point at.
    pub rest: FakeRest,
    /// The fake Gemini Live server.
    pub gemini: FakeGemini,
    /// The server under test.
    pub server: TestServer,
}

impl World {
    /// A world whose fake Gemini behaves as `behaviour`, with `extra` server variables.
    pub async fn with(behaviour: Behaviour, extra: &[(&str, &str)]) -> World {
        World::with_url(behaviour, extra, FakeGemini::url).await
    }

    /// Like [`World::with`], the server pointed at the fake Gemini's `url` (its v1alpha
    /// endpoint, say).
    pub async fn with_url(
        behaviour: Behaviour,
        extra: &[(&str, &str)],
        url: impl Fn(&FakeGemini) -> String,
    ) -> World {
        let rest = FakeRest::start().await;
        let gemini = FakeGemini::start(behaviour).await;
        let server = TestServer::with_providers(&rest.url(), &url(&gemini), extra).await;
        World {
            rest,
            gemini,
            server,
        }
    }
}
