//! Gemini on Vertex AI, end to end on loopback, with each kind of Application Default
//! Credentials: a service-account key whose `token_uri` points at a fake OAuth token server,
//! an `authorized_user` file (from `GOOGLE_APPLICATION_CREDENTIALS` or gcloud's own place),
//! and a fake metadata server at `GCE_METADATA_HOST`. One shared token, refreshed before it
//! lapses; the fake Gemini acting as Vertex; what a user sees when credentials fail.

mod support;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use gemini_phone::doctor::Outcome;
use gemini_phone::gemini::auth::{CredentialSources, SharedCredentials};
use support::gemini::{Behaviour, FakeGemini};
use support::google::{
    FakeMetadataServer, FakeTokenServer, Issuer, LOCATION, PROJECT, QUOTA_PROJECT,
};
use support::phone::Provider;
use support::rest::FakeRest;
use support::{Caller, TestServer};

const WAIT: Duration = Duration::from_secs(10);

fn vertex_vars<'a>(key_file: &'a str, gemini_url: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("GEMINI_BACKEND", "vertex"),
        ("GEMINI_API_KEY", ""),
        ("GOOGLE_CLOUD_PROJECT", PROJECT),
        ("GOOGLE_CLOUD_LOCATION", LOCATION),
        ("GOOGLE_APPLICATION_CREDENTIALS", key_file),
        ("GEMINI_LIVE_URL", gemini_url),
    ]
}

#[tokio::test]
async fn one_token_is_fetched_shared_by_every_call_and_refreshed_before_it_lapses() {
    // gcp_auth stops trusting a token 20 s before it lapses: a 21 s token is stale after 1 s.
    let tokens = FakeTokenServer::start(21).await;
    let dir = tempfile::tempdir().unwrap();
    let credentials = SharedCredentials::default();
    let sources = CredentialSources {
        key_file: Some(tokens.key_file(&dir)),
        ..Default::default()
    };
    let loaded = credentials.load(&sources).await;
    assert!(
        loaded.is_ok(),
        "{loaded:?}; the token server saw {:?}",
        tokens.tokens.problems()
    );
    assert_eq!(tokens.tokens.issued(), 1);

    let handles: Vec<_> = (0..8)
        .map(|_| {
            let shared = credentials.clone();
            tokio::spawn(async move { shared.bearer().await.unwrap().token.expose().to_owned() })
        })
        .collect();
    let mut seen = HashSet::new();
    for handle in handles {
        seen.insert(handle.await.unwrap());
    }
    assert_eq!(seen, HashSet::from(["ya29.fake-1".to_owned()]));
    assert_eq!(tokens.tokens.issued(), 1, "eight calls, one token fetch");

    // Nobody asks; the background refresher renews the token before it lapses.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokens.tokens.issued() < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(tokens.tokens.issued(), 2, "refreshed in the background");
    let started = tokio::time::Instant::now();
    let fresh = credentials.bearer().await.unwrap();
    assert_eq!(fresh.token.expose(), "ya29.fake-2");
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "a call found the token ready"
    );
    assert!(
        tokens.tokens.problems().is_empty(),
        "{:?}",
        tokens.tokens.problems()
    );
}

#[tokio::test]
async fn a_call_runs_end_to_end_on_vertex() {
    for provider in [Provider::Twilio, Provider::Plivo] {
        let tokens = FakeTokenServer::start(3600).await;
        let dir = tempfile::tempdir().unwrap();
        let key_file = tokens.key_file(&dir).display().to_string();
        let rest = FakeRest::start().await;
        let mut gemini = FakeGemini::start(Behaviour::AnswerText).await;
        gemini.act_as_vertex(tokens.tokens.vertex_mode());
        let url = gemini.vertex_url();
        let server =
            TestServer::with_providers(&rest.url(), &url, &vertex_vars(&key_file, &url)).await;
        let call_id = match provider {
            Provider::Twilio => "CA000000000000000000000000000000e1",
            Provider::Plivo => "0e0e0e0e-0000-4000-8000-0000000000e1",
        };
        let mut caller = Caller::start(&server, provider, call_id).await;
        let session = gemini.next_session(WAIT).await;
        assert_eq!(
            session.setup()["setup"]["model"],
            format!(
                "projects/{PROJECT}/locations/{LOCATION}/publishers/google/models/gemini-3.8-live"
            )
        );
        assert_eq!(
            session.handshake().header("authorization"),
            Some("Bearer ya29.fake-1")
        );
        assert_eq!(session.api_key(), None, "no API key travels on Vertex");
        // The greeting turn is answered in audio and the caller hears it.
        let heard = caller.recv_audio(5, WAIT).await;
        assert!(
            !heard.audio().is_empty(),
            "{provider:?}: the caller heard the agent"
        );
        session.assert_no_violations();
        caller.hang_up().await;
        assert_eq!(
            tokens.tokens.issued(),
            1,
            "start-up fetched the one token the call used"
        );
    }
}

/// The error `App::new` stops start-up with, for Vertex with `credentials` (variables).
async fn start_up_error(credentials: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let prompts = concat!(env!("CARGO_MANIFEST_DIR"), "/prompts");
    let database = format!("sqlite://{}/r.db", dir.path().display());
    let mut vars = vertex_vars("", "ws://127.0.0.1:9/x");
    vars.retain(|(k, _)| *k != "GOOGLE_APPLICATION_CREDENTIALS");
    vars.extend_from_slice(credentials);
    vars.extend([
        ("PUBLIC_URL", "https://phone.example.com"),
        ("PROMPTS_DIR", prompts),
        ("DATABASE_URL", database.as_str()),
    ]);
    let config = gemini_phone::config::Config::from_lookup(|name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    })
    .unwrap();
    match gemini_phone::app::App::new(config).await {
        Ok(_) => panic!("start-up succeeded without a token"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn a_failing_token_endpoint_stops_start_up_with_a_clear_error() {
    let tokens = FakeTokenServer::start(3600).await;
    tokens.tokens.failing.store(true, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let key_file = tokens.key_file(&dir).display().to_string();
    let err = start_up_error(&[("GOOGLE_APPLICATION_CREDENTIALS", &key_file)]).await;
    assert!(
        err.starts_with("GEMINI_BACKEND=vertex: cannot get a Google Cloud access token"),
        "{err}"
    );
    assert!(
        err.contains("gcloud auth application-default login"),
        "{err}"
    );
}

#[tokio::test]
async fn a_token_failure_during_a_call_plays_the_fallback() {
    // The start-up token lapses (for gcp_auth) after 1 s, and every refresh then fails.
    let tokens = FakeTokenServer::start(21).await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = tokens.key_file(&dir).display().to_string();
    let rest = FakeRest::start().await;
    let gemini = FakeGemini::start(Behaviour::AnswerText).await;
    gemini.act_as_vertex(tokens.tokens.vertex_mode());
    let url = gemini.vertex_url();
    let server = TestServer::with_providers(&rest.url(), &url, &vertex_vars(&key_file, &url)).await;
    tokens.tokens.failing.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let mut caller = Caller::start(
        &server,
        Provider::Twilio,
        "CA000000000000000000000000000000e2",
    )
    .await;
    let heard = caller
        .recv_until(WAIT, |r| r.marks().contains(&"playout".to_owned()))
        .await
        .expect("the fallback message, then a mark");
    assert!(
        heard.audio().len() > 160 * 100,
        "the caller heard the apology"
    );
    assert_eq!(
        gemini.connection_count(),
        0,
        "no session was attempted without a token"
    );
}

/// Variables for a Vertex server whose credentials come from `credentials` alone: no
/// `GOOGLE_APPLICATION_CREDENTIALS` unless given there, and never the developer's own
/// gcloud files (the configuration sees only these variables, so no `HOME`).
fn vertex_with<'a>(
    gemini_url: &'a str,
    credentials: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut vars = vertex_vars("", gemini_url);
    vars.retain(|(k, _)| *k != "GOOGLE_APPLICATION_CREDENTIALS");
    vars.extend_from_slice(credentials);
    vars
}

/// One call on `provider` through a server started with `vars`: the caller hears the agent;
/// returns the Vertex handshake's `Authorization` and `x-goog-user-project` headers.
async fn one_call(
    provider: Provider,
    gemini: &mut FakeGemini,
    server: &TestServer,
    call_id: &str,
) -> (Option<String>, Option<String>) {
    let mut caller = Caller::start(server, provider, call_id).await;
    let session = gemini.next_session(WAIT).await;
    let heard = caller.recv_audio(5, WAIT).await;
    assert!(
        !heard.audio().is_empty(),
        "{provider:?}: the caller heard the agent"
    );
    session.assert_no_violations();
    caller.hang_up().await;
    let header = |name| session.handshake().header(name).map(str::to_owned);
    (header("authorization"), header("x-goog-user-project"))
}

fn call_id(provider: Provider, n: u8) -> String {
    match provider {
        Provider::Twilio => format!("CA0000000000000000000000000000{n:04x}"),
        Provider::Plivo => format!("0e0e0e0e-0000-4000-8000-00000000{n:04x}"),
    }
}

#[tokio::test]
async fn user_credentials_in_google_application_credentials_run_calls_billed_to_their_quota_project()
 {
    for provider in [Provider::Twilio, Provider::Plivo] {
        let tokens = FakeTokenServer::start(3600).await;
        let dir = tempfile::tempdir().unwrap();
        let user_file = tokens.write_user_file(&dir.path().join("adc.json"));
        let user_file = user_file.display().to_string();
        let rest = FakeRest::start().await;
        let mut gemini = FakeGemini::start(Behaviour::AnswerText).await;
        gemini.act_as_vertex(tokens.tokens.vertex_mode());
        let url = gemini.vertex_url();
        let vars = vertex_with(&url, &[("GOOGLE_APPLICATION_CREDENTIALS", &user_file)]);
        let server = TestServer::with_providers(&rest.url(), &url, &vars).await;

        let (bearer, billed) =
            one_call(provider, &mut gemini, &server, &call_id(provider, 1)).await;
        assert_eq!(bearer, Some(format!("Bearer {}", tokens.tokens.token(1))));
        assert_eq!(
            billed.as_deref(),
            Some(QUOTA_PROJECT),
            "x-goog-user-project"
        );
        assert_eq!(tokens.tokens.issued(), 1);
        assert!(
            tokens.tokens.problems().is_empty(),
            "the refresh-token grant carried the file's client and refresh token: {:?}",
            tokens.tokens.problems()
        );
    }
}

#[tokio::test]
async fn gcloud_adc_file_is_found_under_cloudsdk_config_or_home_whatever_its_kind() {
    let tokens = FakeTokenServer::start(3600).await;
    let dir = tempfile::tempdir().unwrap();

    // `gcloud auth application-default login` with CLOUDSDK_CONFIG set: user credentials.
    let config_dir = dir.path().join("gcloud-config");
    tokens.write_user_file(&config_dir.join("application_default_credentials.json"));
    let sources = CredentialSources::from_lookup(|name| match name {
        "CLOUDSDK_CONFIG" => Some(config_dir.display().to_string()),
        "HOME" => Some(dir.path().join("elsewhere").display().to_string()),
        "GCE_METADATA_HOST" => Some("127.0.0.1:9".into()),
        _ => None,
    });
    let user = SharedCredentials::default();
    user.load(&sources).await.unwrap();
    let bearer = user.bearer().await.unwrap();
    assert_eq!(bearer.token.expose(), tokens.tokens.token(1));
    assert_eq!(bearer.quota_project.as_deref(), Some(QUOTA_PROJECT));
    let described = user.describe().unwrap();
    assert!(
        described.contains("user credentials (authorized_user) from gcloud's ADC file"),
        "{described}"
    );
    assert!(described.contains("gcloud-config"), "{described}");

    // A service-account key copied to the same place under $HOME/.config/gcloud.
    let home = dir.path().join("home");
    tokens.write_key_file(&home.join(".config/gcloud/application_default_credentials.json"));
    let sources = CredentialSources::from_lookup(|name| match name {
        "HOME" => Some(home.display().to_string()),
        "GCE_METADATA_HOST" => Some("127.0.0.1:9".into()),
        _ => None,
    });
    let account = SharedCredentials::default();
    account.load(&sources).await.unwrap();
    assert_eq!(
        account.bearer().await.unwrap().token.expose(),
        tokens.tokens.token(2)
    );
    assert!(
        account
            .describe()
            .unwrap()
            .starts_with("service-account key from gcloud's ADC file")
    );
    assert!(
        tokens.tokens.problems().is_empty(),
        "{:?}",
        tokens.tokens.problems()
    );
}

#[tokio::test]
async fn the_metadata_server_at_gce_metadata_host_runs_calls() {
    for provider in [Provider::Twilio, Provider::Plivo] {
        let metadata = FakeMetadataServer::start(3600).await;
        let rest = FakeRest::start().await;
        let mut gemini = FakeGemini::start(Behaviour::AnswerText).await;
        gemini.act_as_vertex(metadata.tokens.vertex_mode());
        let url = gemini.vertex_url();
        let vars = vertex_with(&url, &[("GCE_METADATA_HOST", &metadata.host)]);
        let server = TestServer::with_providers(&rest.url(), &url, &vars).await;

        let (bearer, billed) =
            one_call(provider, &mut gemini, &server, &call_id(provider, 2)).await;
        assert_eq!(bearer, Some(format!("Bearer {}", metadata.tokens.token(1))));
        assert_eq!(billed, None, "the metadata server names no quota project");
        assert_eq!(
            metadata.requests(),
            [
                "/computeMetadata/v1/project/project-id",
                "/computeMetadata/v1/instance/service-accounts/default/token"
            ],
            "one probe and one token at start-up; none per call"
        );
        assert!(
            metadata.tokens.problems().is_empty(),
            "every request carried Metadata-Flavor: Google: {:?}",
            metadata.tokens.problems()
        );
    }
}

#[tokio::test]
async fn an_answer_without_the_metadata_flavor_is_not_taken_for_the_metadata_server() {
    let metadata = FakeMetadataServer::start(3600).await;
    metadata.flavourless.store(true, Ordering::SeqCst);
    let err = start_up_error(&[("GCE_METADATA_HOST", &metadata.host)]).await;
    assert!(
        err.contains(&format!("GCE_METADATA_HOST={}", metadata.host)),
        "{err}"
    );
    assert!(err.contains("not the metadata server"), "{err}");
    assert_eq!(metadata.tokens.issued(), 0);
}

#[tokio::test]
async fn failing_user_and_metadata_credentials_stop_start_up_with_a_clear_error() {
    let tokens = FakeTokenServer::start(3600).await;
    tokens.tokens.failing.store(true, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let user_file = tokens.write_user_file(&dir.path().join("adc.json"));
    let user_file = user_file.display().to_string();
    let revoked = start_up_error(&[("GOOGLE_APPLICATION_CREDENTIALS", &user_file)]).await;
    assert!(
        revoked.starts_with(&format!(
            "GEMINI_BACKEND=vertex: cannot get a Google Cloud access token: the token endpoint {} refused the refresh token (HTTP 400 invalid_grant: Token has been expired or revoked.)",
            tokens.url
        )),
        "{revoked}"
    );
    assert!(
        revoked.contains("`gcloud auth application-default login` again"),
        "{revoked}"
    );
    assert!(
        !revoked.contains(support::google::USER_REFRESH_TOKEN),
        "{revoked}"
    );

    let metadata = FakeMetadataServer::start(3600).await;
    metadata.tokens.failing.store(true, Ordering::SeqCst);
    let broken = start_up_error(&[("GCE_METADATA_HOST", &metadata.host)]).await;
    assert!(
        broken.contains("cannot get a Google Cloud access token: the metadata server at"),
        "{broken}"
    );
    assert!(broken.contains("refused a token (HTTP 500"), "{broken}");

    let nothing = start_up_error(&[("GCE_METADATA_HOST", "127.0.0.1:9")]).await;
    assert!(
        nothing.contains("GCE_METADATA_HOST=127.0.0.1:9: cannot reach"),
        "{nothing}"
    );
}

/// Tokens that announce 21 s but stop working after 3.5 s: the client treats them as stale
/// after 1 s and renews them about 3 s in, so a token it did not renew is refused by the
/// time the second call starts.
async fn a_lapsed_token_is_replaced_before_the_next_call(
    issuer: &Issuer,
    credentials: &[(&str, &str)],
) {
    issuer.lapse_after(Duration::from_millis(3_500));
    let rest = FakeRest::start().await;
    let mut gemini = FakeGemini::start(Behaviour::AnswerText).await;
    gemini.act_as_vertex(issuer.vertex_mode());
    let url = gemini.vertex_url();
    let vars = vertex_with(&url, credentials);
    let server = TestServer::with_providers(&rest.url(), &url, &vars).await;
    let provider = Provider::Twilio;
    let (first, _) = one_call(provider, &mut gemini, &server, &call_id(provider, 3)).await;
    assert_eq!(first, Some(format!("Bearer {}", issuer.token(1))));

    assert!(
        issuer.wait_issued(2, Duration::from_secs(5)).await,
        "renewed in the background"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        !issuer.live.lock().unwrap().contains(&issuer.token(1)),
        "the first token lapsed"
    );
    let (second, _) = one_call(provider, &mut gemini, &server, &call_id(provider, 4)).await;
    assert_eq!(second, Some(format!("Bearer {}", issuer.token(2))));
    assert!(issuer.problems().is_empty(), "{:?}", issuer.problems());
}

#[tokio::test]
async fn a_user_token_that_lapses_mid_run_is_renewed_before_use() {
    let tokens = FakeTokenServer::start(21).await;
    let dir = tempfile::tempdir().unwrap();
    let user_file = tokens.write_user_file(&dir.path().join("adc.json"));
    let user_file = user_file.display().to_string();
    a_lapsed_token_is_replaced_before_the_next_call(
        &tokens.tokens,
        &[("GOOGLE_APPLICATION_CREDENTIALS", &user_file)],
    )
    .await;
}

#[tokio::test]
async fn a_metadata_token_that_lapses_mid_run_is_renewed_before_use() {
    let metadata = FakeMetadataServer::start(21).await;
    a_lapsed_token_is_replaced_before_the_next_call(
        &metadata.tokens,
        &[("GCE_METADATA_HOST", &metadata.host)],
    )
    .await;
}

#[tokio::test]
async fn doctor_names_the_credentials_or_says_why_there_is_no_token() {
    let tokens = FakeTokenServer::start(3600).await;
    let dir = tempfile::tempdir().unwrap();
    let user_file = tokens.write_user_file(&dir.path().join("adc.json"));
    let user_file = user_file.display().to_string();
    let gemini = FakeGemini::start(Behaviour::AnswerText).await;
    gemini.act_as_vertex(tokens.tokens.vertex_mode());
    let url = gemini.vertex_url();
    let database = format!("sqlite://{}/r.db", dir.path().display());
    let prompts = concat!(env!("CARGO_MANIFEST_DIR"), "/prompts");
    let mut vars = vertex_with(&url, &[("GOOGLE_APPLICATION_CREDENTIALS", &user_file)]);
    vars.extend([
        ("PUBLIC_URL", "https://phone.example.com"),
        ("PROMPTS_DIR", prompts),
        ("DATABASE_URL", database.as_str()),
        ("DOCTOR_TIMEOUT_SECS", "3"),
    ]);
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let doctor = || {
        gemini_phone::doctor::run::run(
            |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
            |_| {},
        )
    };
    let report = doctor().await;
    let line = |report: &gemini_phone::doctor::Report, area: &str| {
        report
            .checks
            .iter()
            .find(|c| c.area == area)
            .cloned()
            .unwrap()
    };
    let credentials = line(&report, "credentials");
    assert_eq!(credentials.outcome, Outcome::Ok, "{credentials:?}");
    assert!(
        credentials
            .detail
            .contains("user credentials (authorized_user) from GOOGLE_APPLICATION_CREDENTIALS"),
        "{credentials:?}"
    );
    assert!(
        credentials
            .detail
            .contains(&format!("quota project {QUOTA_PROJECT}")),
        "{credentials:?}"
    );
    assert!(
        !credentials.detail.contains("ya29"),
        "never the token: {credentials:?}"
    );
    assert_eq!(
        line(&report, "gemini").outcome,
        Outcome::Ok,
        "{:?}",
        line(&report, "gemini")
    );

    tokens.tokens.failing.store(true, Ordering::SeqCst);
    let report = doctor().await;
    let credentials = line(&report, "credentials");
    assert_eq!(credentials.outcome, Outcome::Fail, "{credentials:?}");
    assert!(
        credentials.detail.contains("invalid_grant"),
        "{credentials:?}"
    );
    assert!(
        credentials
            .detail
            .contains("gcloud auth application-default login"),
        "{credentials:?}"
    );
    assert_eq!(
        line(&report, "gemini").outcome,
        Outcome::Skip,
        "no second failure for the same cause"
    );
}
