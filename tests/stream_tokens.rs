//! Stream tokens, admission and the answer webhook, driven like a provider and an attacker
//! would: forged `start` parameters, expired and replayed tokens, a full server, replayed
//! answer webhooks and machine detection followed by the hang-up's callback.

mod support;

use std::time::Duration;

use gemini_phone::calls::{CallRecord, CallStatus};
use gemini_phone::signature::{StreamClaims, unix_now};
use gemini_phone::telephony::Direction;
use serde_json::Value;
use support::gemini::Behaviour;
use support::phone::Provider;
use support::rest::FakeRest;
use support::world::World;
use support::{API_TOKEN, Caller, PROVIDERS, TestServer, route, stream_params};

const WAIT: Duration = Duration::from_secs(5);
/// How long a refused stream would have had to reach Gemini.
const QUIET: Duration = Duration::from_millis(300);

impl World {
    async fn start(extra: &[(&str, &str)]) -> World {
        World::with(Behaviour::Normal, extra).await
    }

    /// The answer webhook for an inbound call: its status and XML.
    async fn answer(&self, provider: Provider, call_id: &str) -> (u16, String) {
        let route = route(provider);
        let mut form = vec![(id_field(provider), call_id)];
        form.extend(inbound_form(provider));
        self.server
            .webhook(route, &format!("/{route}/answer"), &form)
            .await
    }

    /// Answers an inbound call that is admitted, returning its stream parameters.
    async fn admitted(&self, provider: Provider, call_id: &str) -> Vec<(String, String)> {
        let (status, xml) = self.answer(provider, call_id).await;
        assert_eq!(status, 200, "{xml}");
        assert!(xml.contains("<Stream"), "{provider:?} {call_id}: {xml}");
        stream_params(&xml)
    }

    /// The provider's callback saying the call ended.
    async fn completed(&self, provider: Provider, call_id: &str, seconds: &str) {
        let (path, duration) = match provider {
            Provider::Twilio => ("/twilio/status", "CallDuration"),
            Provider::Plivo => ("/plivo/hangup", "Duration"),
        };
        let form = [
            (id_field(provider), call_id),
            ("CallStatus", "completed"),
            (duration, seconds),
        ];
        let (status, body) = self.server.webhook(route(provider), path, &form).await;
        assert_eq!(status, 204, "{body}");
    }

    async fn record_of(&self, provider: Provider, call_id: &str) -> CallRecord {
        self.server
            .app
            .store
            .find_by_provider_call_id(route(provider), call_id)
            .await
            .expect("the store answers")
            .unwrap_or_else(|| panic!("{provider:?} {call_id} has no record"))
    }

    async fn api(&self, path: &str) -> Value {
        reqwest::Client::new()
            .get(self.server.http(path))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("JSON")
    }
}

fn id_field(provider: Provider) -> &'static str {
    match provider {
        Provider::Twilio => "CallSid",
        Provider::Plivo => "CallUUID",
    }
}

fn inbound_form(provider: Provider) -> [(&'static str, &'static str); 3] {
    match provider {
        Provider::Twilio => [
            ("From", "+15550001111"),
            ("To", "+15550009999"),
            ("Direction", "inbound"),
        ],
        Provider::Plivo => [
            ("From", "15550001111"),
            ("To", "15550008888"),
            ("Direction", "inbound"),
        ],
    }
}

/// A call id of the provider's real shape (Twilio `CA` + 32 hex, Plivo a UUID).
fn call_id(provider: Provider, n: u32) -> String {
    match provider {
        Provider::Twilio => format!("CA{n:032x}"),
        Provider::Plivo => format!("{n:08x}-7c1e-4b5a-9d2f-{n:012x}"),
    }
}

fn param(params: &[(String, String)], name: &str) -> String {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no `{name}` stream parameter in {params:?}"))
}

fn with_param(params: &[(String, String)], name: &str, value: &str) -> Vec<(String, String)> {
    let mut changed: Vec<(String, String)> =
        params.iter().filter(|(k, _)| k != name).cloned().collect();
    changed.push((name.to_owned(), value.to_owned()));
    changed
}

/// Starts a stream with `params` and expects the server to close it.
async fn assert_refused(
    world: &World,
    provider: Provider,
    call: &str,
    params: &[(String, String)],
) {
    let mut caller = Caller::start_with(&world.server, provider, call, params).await;
    assert!(
        caller.wait_closed(WAIT).await,
        "{provider:?}: a stream with {params:?} was kept open"
    );
}

#[tokio::test]
async fn forged_record_from_to_or_direction_never_reach_gemini() {
    for provider in PROVIDERS {
        let world = World::start(&[]).await;
        let victim = call_id(provider, 1);
        let victim_record = param(&world.admitted(provider, &victim).await, "record");
        let call = call_id(provider, 2);
        let genuine = world.admitted(provider, &call).await;

        for (name, forged) in [
            ("record", victim_record.as_str()),
            ("from", "15557770000"),
            ("to", "15557770001"),
            ("direction", "outbound"),
        ] {
            assert_refused(&world, provider, &call, &with_param(&genuine, name, forged)).await;
        }
        // Each answer webhook opened its call's session; no forged start took either.
        assert_eq!(
            world.server.app.prewarm.waiting(),
            2,
            "{provider:?}: a forged start took a pre-warmed Gemini session"
        );
        assert!(world.server.wait_active_calls(0, WAIT).await);
        let victim_now = world.server.app.store.get(&victim_record).await.unwrap();
        assert_eq!(
            victim_now.map(|r| r.status),
            Some(CallStatus::InProgress),
            "{provider:?}: a forged stream touched another call's record"
        );

        // The same parameters, unaltered, do start the call.
        let mut caller = Caller::start_with(&world.server, provider, &call, &genuine).await;
        assert!(!caller.wait_closed(QUIET).await, "{provider:?}");
        assert_eq!(
            world.gemini.connection_count(),
            2,
            "{provider:?}: the two webhooks' sessions, and no other"
        );
        world.server.stop().await;
    }
}

#[tokio::test]
async fn an_expired_token_never_reaches_gemini() {
    for provider in PROVIDERS {
        let world = World::start(&[]).await;
        let call = call_id(provider, 3);
        let claims = |expires_at| StreamClaims {
            call_id: call.clone(),
            record: None,
            from: "15550001111".into(),
            to: "15550009999".into(),
            direction: Direction::Inbound,
            expires_at,
        };
        let params = |claims: &StreamClaims| {
            vec![
                ("from".to_owned(), claims.from.clone()),
                ("to".to_owned(), claims.to.clone()),
                ("direction".to_owned(), "inbound".to_owned()),
                (
                    "token".to_owned(),
                    world.server.app.stream_tokens.issue(claims),
                ),
            ]
        };
        let expired = claims(unix_now() - 1);
        assert_refused(&world, provider, &call, &params(&expired)).await;
        assert_eq!(world.gemini.connection_count(), 0, "{provider:?}");

        let fresh = claims(unix_now() + 60);
        let mut caller = Caller::start_with(&world.server, provider, &call, &params(&fresh)).await;
        assert!(!caller.wait_closed(QUIET).await, "{provider:?}");
        assert_eq!(world.gemini.connection_count(), 1, "{provider:?}");
        world.server.stop().await;
    }
}

#[tokio::test]
async fn one_token_opens_one_session_however_many_streams_replay_it() {
    for provider in PROVIDERS {
        let world = World::start(&[]).await;
        let call = call_id(provider, 4);
        let params = world.admitted(provider, &call).await;
        let starts = (0..30).map(|_| Caller::start_with(&world.server, provider, &call, &params));
        let _callers = futures_util::future::join_all(starts).await;
        tokio::time::sleep(QUIET).await;
        assert_eq!(
            world.gemini.connection_count(),
            1,
            "{provider:?}: 30 concurrent replays of one token"
        );
        world.server.stop().await;
    }
}

#[tokio::test]
async fn a_used_token_is_refused_after_its_call_on_this_and_another_instance() {
    let data = tempfile::tempdir().expect("temp dir");
    let database = format!("sqlite://{}/shared.db", data.path().display());
    let extra = [("DATABASE_URL", database.as_str())];
    let world = World::start(&extra).await;
    let rest = FakeRest::start().await;
    let other_instance = TestServer::with_providers(&rest.url(), &world.gemini.url(), &extra).await;
    for provider in PROVIDERS {
        let call = call_id(provider, 5);
        let sessions_before = world.gemini.connection_count();
        let params = world.admitted(provider, &call).await;
        let mut caller = Caller::start_with(&world.server, provider, &call, &params).await;
        assert!(!caller.wait_closed(QUIET).await);
        caller.hang_up().await;
        assert!(world.server.wait_active_calls(0, WAIT).await);

        assert_refused(&world, provider, &call, &params).await;
        let mut elsewhere = Caller::start_with(&other_instance, provider, &call, &params).await;
        assert!(
            elsewhere.wait_closed(WAIT).await,
            "{provider:?}: another instance accepted a used token"
        );
        assert_eq!(world.gemini.connection_count(), sessions_before + 1);
    }
    other_instance.stop().await;
    world.server.stop().await;
}

#[tokio::test]
async fn over_the_limit_callers_hear_the_busy_message_and_no_session_opens() {
    for provider in PROVIDERS {
        let world = World::start(&[
            ("MAX_CONCURRENT_CALLS", "2"),
            ("BUSY_MESSAGE", "All lines are busy & we're sorry."),
            // Sessions are counted as streams open them (B's webhook would open one too).
            ("GEMINI_PREWARM_SECS", "0"),
        ])
        .await;
        let [a, b, c, d, e] = [10, 11, 12, 13, 14].map(|n| call_id(provider, n));
        let a_params = world.admitted(provider, &a).await;
        world.admitted(provider, &b).await;

        let (status, xml) = world.answer(provider, &c).await;
        assert_eq!(status, 200);
        assert_well_formed(&xml);
        let verb = match provider {
            Provider::Twilio => "Say",
            Provider::Plivo => "Speak",
        };
        assert!(
            xml.contains(&format!(
                "<Response><{verb}>All lines are busy &amp; we&apos;re sorry.</{verb}><Hangup/></Response>"
            )),
            "{provider:?}: {xml}"
        );
        assert!(stream_params(&xml).is_empty(), "a refused call got a token");
        let refused = world.record_of(provider, &c).await;
        assert_eq!(refused.status, CallStatus::Failed);
        assert!(
            refused
                .end_reason
                .as_deref()
                .is_some_and(|r| r.contains("over capacity")),
            "{:?}",
            refused.end_reason
        );

        let mut first = Caller::start_with(&world.server, provider, &a, &a_params).await;
        assert!(!first.wait_closed(QUIET).await);
        // B hangs up before its stream starts: its slot comes back at once.
        world.completed(provider, &b, "0").await;
        let d_params = world.admitted(provider, &d).await;
        let (_, xml) = world.answer(provider, &e).await;
        assert!(
            xml.contains("<Hangup/>") && !xml.contains("<Stream"),
            "{xml}"
        );

        let mut second = Caller::start_with(&world.server, provider, &d, &d_params).await;
        assert!(!second.wait_closed(QUIET).await);
        assert_eq!(
            world.gemini.connection_count(),
            2,
            "{provider:?}: only the two admitted calls reach Gemini"
        );
        assert_eq!(world.server.health().await["active_calls"], 2);
        world.server.stop().await;
    }
}

#[tokio::test]
async fn a_replayed_answer_webhook_reuses_the_record_and_a_finished_call_stays_finished() {
    for provider in PROVIDERS {
        let world = World::start(&[]).await;
        let call = call_id(provider, 20);
        let first = param(&world.admitted(provider, &call).await, "record");
        let again = param(&world.admitted(provider, &call).await, "record");
        assert_eq!(
            first, again,
            "{provider:?}: the replay made a second record"
        );

        world.completed(provider, &call, "4").await;
        let (status, xml) = world.answer(provider, &call).await;
        assert_eq!(status, 200);
        assert!(
            xml.contains("<Hangup/>") && !xml.contains("<Stream"),
            "{provider:?}: a replay after the call ended was answered: {xml}"
        );
        let records = world.api("/calls?limit=500").await;
        let ours = records["calls"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["provider_call_id"] == call.as_str())
            .count();
        assert_eq!(ours, 1, "{provider:?}: {records}");
        assert_eq!(
            world.record_of(provider, &call).await.status,
            CallStatus::Completed
        );
        world.server.stop().await;
    }
}

#[tokio::test]
async fn a_machine_stays_a_machine_after_the_completed_callback() {
    for provider in PROVIDERS {
        let world = World::start(&[]).await;
        let call = call_id(provider, 30);
        let record = param(&world.admitted(provider, &call).await, "record");
        let verdict: &[(&str, &str)] = match provider {
            Provider::Twilio => &[("AnsweredBy", "machine_start")],
            Provider::Plivo => &[("Machine", "true"), ("CallStatus", "in-progress")],
        };
        let mut form = vec![(id_field(provider), call.as_str())];
        form.extend_from_slice(verdict);
        let path = format!("/{}/status", route(provider));
        let (status, _) = world.server.webhook(route(provider), &path, &form).await;
        assert_eq!(status, 204);
        world.completed(provider, &call, "9").await;

        let machines = world.api("/calls?status=machine").await;
        let found = machines["calls"]
            .as_array()
            .and_then(|list| list.iter().find(|r| r["id"] == record.as_str()))
            .unwrap_or_else(|| panic!("{provider:?}: ?status=machine misses the call: {machines}"));
        assert_eq!(found["status"], "machine");
        assert_eq!(found["duration_seconds"], 9);
        world.server.stop().await;
    }
}

#[tokio::test]
async fn a_control_character_in_a_caller_id_still_gives_well_formed_xml_and_a_call() {
    for provider in PROVIDERS {
        let world = World::start(&[]).await;
        let call = call_id(provider, 40);
        let form = [
            (id_field(provider), call.as_str()),
            ("From", "+1555\u{1}000\u{7f}1111"),
            ("To", "+15550009999"),
        ];
        let route = route(provider);
        let (status, xml) = world
            .server
            .webhook(route, &format!("/{route}/answer"), &form)
            .await;
        assert_eq!(status, 200);
        assert_well_formed(&xml);
        let params = stream_params(&xml);
        assert_eq!(
            param(&params, "from").trim_start_matches('+'),
            "15550001111"
        );
        let mut caller = Caller::start_with(&world.server, provider, &call, &params).await;
        assert!(!caller.wait_closed(QUIET).await, "{provider:?}");
        assert_eq!(world.gemini.connection_count(), 1, "{provider:?}");
        world.server.stop().await;
    }
}

/// Fails unless `xml` is a well-formed document: allowed characters only, one root, every
/// element closed in order, attribute values quoted, `&` only in the five XML entities.
fn assert_well_formed(xml: &str) {
    assert!(
        !xml.chars()
            .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')),
        "control character in {xml:?}"
    );
    let mut rest = xml.trim_start();
    if rest.starts_with("<?xml") {
        let end = rest.find("?>").expect("XML declaration closes");
        rest = &rest[end + 2..];
    }
    let mut open: Vec<&str> = Vec::new();
    let mut roots = 0;
    while let Some(start) = rest.find('<') {
        check_text(&rest[..start], xml);
        let end = rest[start..].find('>').expect("tag closes") + start;
        let tag = &rest[start + 1..end];
        rest = &rest[end + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(
                open.pop(),
                Some(name.trim()),
                "mismatched </{name}> in {xml}"
            );
            continue;
        }
        if open.is_empty() {
            roots += 1;
        }
        let (body, self_closing) = match tag.strip_suffix('/') {
            Some(body) => (body, true),
            None => (tag, false),
        };
        let name = body.split_whitespace().next().expect("tag name");
        check_attributes(&body[name.len()..], xml);
        if !self_closing {
            open.push(name);
        }
    }
    check_text(rest, xml);
    assert!(open.is_empty(), "unclosed {open:?} in {xml}");
    assert_eq!(roots, 1, "one root element in {xml}");
}

fn check_text(text: &str, xml: &str) {
    let mut pieces = text.split('&');
    pieces.next();
    for piece in pieces {
        let entity = piece.split(';').next().unwrap_or_default();
        assert!(
            piece.contains(';') && ["amp", "lt", "gt", "quot", "apos"].contains(&entity),
            "bare & in {xml}"
        );
    }
}

fn check_attributes(mut attrs: &str, xml: &str) {
    while let Some(eq) = attrs.find('=') {
        let after = attrs[eq + 1..].trim_start();
        let quote = after.chars().next().expect("attribute value");
        assert!(quote == '"' || quote == '\'', "unquoted attribute in {xml}");
        let close = after[1..].find(quote).expect("attribute value closes") + 1;
        let value = &after[1..close];
        assert!(!value.contains('<'), "< in an attribute in {xml}");
        check_text(value, xml);
        attrs = &after[close + 1..];
    }
}
