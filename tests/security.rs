//! Safe to expose: forged webhooks are refused, and a media stream that our answer webhook
//! did not open never reaches Gemini.

mod support;

use std::time::Duration;

use support::gemini::{Behaviour, FakeGemini};
use support::phone::Provider;
use support::rest::FakeRest;
use support::{Caller, TestServer};

const WAIT: Duration = Duration::from_secs(5);

async fn server_with_providers(extra: &[(&str, &str)], gemini_url: &str) -> TestServer {
    let rest = FakeRest::start().await;
    TestServer::with_providers(&rest.url(), gemini_url, extra).await
}

#[tokio::test]
async fn unsigned_or_forged_webhooks_are_refused() {
    let gemini = FakeGemini::start(Behaviour::Normal).await;
    let server = server_with_providers(&[], &gemini.url()).await;
    let http = reqwest::Client::new();
    let form = [
        ("CallSid", "CA1"),
        ("From", "+15550001111"),
        ("To", "+15550002222"),
    ];

    for path in [
        "/twilio/answer",
        "/twilio/status",
        "/plivo/answer",
        "/plivo/hangup",
        "/plivo/status",
    ] {
        let unsigned = http
            .post(server.http(path))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(
            unsigned.status(),
            403,
            "{path} accepted an unsigned request"
        );
    }
    let forged = http
        .post(server.http("/twilio/answer"))
        .header("X-Twilio-Signature", "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let forged = http
        .post(server.http("/plivo/answer"))
        .header(
            "X-Plivo-Signature-V3",
            "jAL1VJvjs++7+j3AobqfXJS9l+mi/ke8yFrW13YH4wI=",
        )
        .header("X-Plivo-Signature-V3-Nonce", "05429567804466091622")
        .form(&[("CallUUID", "u-1")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);

    // Signed over the public URL, as the providers sign them, they pass.
    let (status, _) = server.webhook("twilio", "/twilio/answer", &form).await;
    assert_eq!(status, 200);
    let (status, _) = server
        .webhook("plivo", "/plivo/answer", &[("CallUUID", "u-1")])
        .await;
    assert_eq!(status, 200);
    // A genuine signature does not carry over to other parameters.
    let pairs: Vec<(String, String)> = form
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let signature = gemini_phone::signature::twilio_signature(
        support::rest::TWILIO_TOKEN,
        "https://phone.example.com/twilio/answer",
        &pairs,
    );
    let tampered = http
        .post(server.http("/twilio/answer"))
        .header("X-Twilio-Signature", signature)
        .form(&[
            ("CallSid", "CA2"),
            ("From", "+15550001111"),
            ("To", "+15550002222"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(tampered.status(), 403);
    server.stop().await;
}

#[tokio::test]
async fn signature_checks_can_be_turned_off_for_proxies_that_rewrite_urls() {
    let gemini = FakeGemini::start(Behaviour::Normal).await;
    let server = server_with_providers(&[("VERIFY_WEBHOOKS", "false")], &gemini.url()).await;
    let response = reqwest::Client::new()
        .post(server.http("/twilio/answer"))
        .form(&[("CallSid", "CA1")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn a_stream_without_our_token_never_reaches_gemini() {
    for provider in [Provider::Twilio, Provider::Plivo] {
        let gemini = FakeGemini::start(Behaviour::Normal).await;
        let server = TestServer::with_gemini(&gemini.url()).await;

        let no_token = vec![("from".to_owned(), "+15550001111".to_owned())];
        let mut caller = Caller::start_with(&server, provider, "CAforged", &no_token).await;
        assert!(
            caller.wait_closed(WAIT).await,
            "{provider:?}: stream without a token kept open"
        );

        assert_eq!(
            gemini.connection_count(),
            0,
            "{provider:?}: a forged stream opened a Gemini session"
        );

        // A real token, but issued for another call.
        let params = server.answer(provider, "CAreal", &[]).await;
        let mut caller = Caller::start_with(&server, provider, "CAother", &params).await;
        assert!(
            caller.wait_closed(WAIT).await,
            "{provider:?}: token reused for another call"
        );
        assert_eq!(
            server.app.prewarm.waiting(),
            1,
            "{provider:?}: a forged stream took the session opened for the real call"
        );
        assert!(server.wait_active_calls(0, WAIT).await);

        // The real call's stream takes the session its answer webhook opened.
        let mut genuine = Caller::start_with(&server, provider, "CAreal", &params).await;
        assert!(!genuine.wait_closed(Duration::from_millis(300)).await);
        assert_eq!(gemini.connection_count(), 1);
        server.stop().await;
    }
}
