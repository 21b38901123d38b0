//! Gemini on Vertex AI, end to end on loopback: Google Cloud credentials from a
//! service-account key file whose `token_uri` points at a fake OAuth token server, one
//! shared token refreshed before it lapses, the fake Gemini acting as Vertex, and what a
//! user sees when the token endpoint fails.

mod support;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Form, Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use gemini_phone::gemini::auth::SharedCredentials;
use ring::signature::{self, KeyPair as _, RsaKeyPair};
use serde_json::{Value, json};
use support::gemini::{Behaviour, FakeGemini, VertexMode};
use support::phone::Provider;
use support::rest::FakeRest;
use support::{Caller, TestServer};

const WAIT: Duration = Duration::from_secs(10);
const PROJECT: &str = "acme-voice";
const LOCATION: &str = "europe-west4";
const CLIENT_EMAIL: &str = "phone-agent@acme-voice.iam.gserviceaccount.com";
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// base64url with or without padding: gcp_auth pads its JWT segments, and Google accepts that.
const BASE64_URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A throwaway RSA key made for these tests only; it signs nothing anywhere else.
const TEST_KEY_PEM: &str = concat!(
    "-----BEGIN PRIVATE KEY-----\n",
    "MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQDvmNm3fQkb39iL\n",
    "+ORaZihCxlh/VLWqc7yScJ0+QxjMEaMxO8Mz/an64BlsM4Y5nZF3QylSrOrZLEeT\n",
    "+ELr/Owdq+YSLDx15aV94lMvADF8Y3m4bEhkACA134nod7/aDEzTyFQUJ9mPZwIs\n",
    "y3GbJLc5P7cIrmJf7ahLVs6wHppru8WP9ndAQV75650aAfzSyZHxHYReEAU7+FHh\n",
    "r9V4MoHW46jDu8PleOIdvvMN0fykHQTIICae5x/dV4ht/48+dGxs/OFKX81mNTJN\n",
    "jzauFlZ9yQQTKssGWNxCxxGM9DTR2dwjcrrk7tcdlJfppYyzGthFZ5XTR9N0yge/\n",
    "HPoMFpclAgMBAAECggEALULSZAlselXJrj1tA8+3DNAzwRADRmkZJw+7gJrDuS8e\n",
    "xSrtN+nUHbaOTuSX11P2+hDXokzUi4SEHAWCvNo5T2yc6HNvU3U3k0V5IdCXSJBx\n",
    "Gr/n1+43J34sKtxOQ3Zd4AcArRMPE/opTMV810ozC49H+A2bO1RlnZ/PKTGKyc1g\n",
    "FTpWqACkm46jjPDMWtfutWVYzdwEk//InI5FUjZYn1cr4c+cxi7L8XNxI+D4JDKm\n",
    "eGZHKrGyMfdsJYM1Rz9ThTVUZoEW5akp4XVQoQBSNNSKuqbUFk1B3tBEKhPysLS3\n",
    "jb/u/4qnLimuyV4YBZ9ogeAX054JhD0GuTKWzuM7EQKBgQD4ti36M2dtX/XrMBm2\n",
    "gb3tVOuIP5LBS1pVFzJI/zgPZh5l9PdilEUwC32bQP1l0WLhn/OGOICc7+lnb5cN\n",
    "62TPypepzUZDxOeJB1ly2HIhB6QUgwW+B42frzF825u5EutRfQIUKZWDXTT199Fs\n",
    "eAIDQ54JLZ/NQSLFracWBeao0QKBgQD2nks9DLNN8MLkT0uPQsQ4RACEyWXAIdgd\n",
    "0TVEDEJ/g/rGxT61wqvpB1BRM8zHD8s4GP8jd/wdVSYqsXKF2pfpQZ6se81rHUhl\n",
    "1dYGCg0VdtT09L9lwNnHtSWuiIOwnIKGMdjL7AGsXGSDgBIPICZTthklQznrwlYk\n",
    "1HV2Js5eFQKBgQC0T5fLseLE9/IY/TlXCH7ChnNvxu9FdbTaxcNuCqIA//7/2fZU\n",
    "ILx8VYhNu3M6kvAGNWlfIK2VmZV0qQExVTw0LWOA9lJ/pUxbGtntmiA79Acv28GZ\n",
    "AG7bmy7cn3YpWh8CaAfOyEsd/r/7pxvMcMC8zxPPAaW+L//eosPlAog0UQKBgQCu\n",
    "wWy/Tgig6kKwViBM3Br/Y/CaJ7yacWEbf+wm1CkrAvLpd0wAsHnxHuWjJPmu9Voj\n",
    "3lKtZ5CXmIb7KdLlVwjemUk/IFtn09BBmU2X6fdrhlFRYz1ddVLdWVfiXYoz1DQJ\n",
    "s7jUh+CHqtDu/gnN/hIqr5cR+JlKnuM8JfE2UDlcIQKBgBnGw5I37zC4pTdvqkug\n",
    "gddefNOaEt+E583TBPcKjrnB+Z6ahFIPACFwptnBPRDwi9sNeuEbhlBbZMz5faPX\n",
    "Otcz7W4gvDrWzBpqzwnSIKCxlOeGq/eJGkErOkJbP23IBAVbTeOdJ60f+4JkwKvC\n",
    "84KdfDWZBCnKerVo+vuWJxg1\n",
    "-----END PRIVATE KEY-----\n",
);

/// A fake Google OAuth token endpoint for the JWT-bearer grant. It verifies the assertion as
/// Google does (RS256 signature with the key's public half, `iss`, `aud`, `scope`, `exp`)
/// and issues tokens that lapse after `lifetime`; the tokens it has issued and that have
/// not lapsed are in `live`, which the fake Gemini shares.
#[derive(Clone)]
struct FakeTokenServer {
    url: String,
    live: Arc<Mutex<HashSet<String>>>,
    issued: Arc<AtomicUsize>,
    lifetime_secs: Arc<AtomicU64>,
    failing: Arc<AtomicBool>,
    problems: Arc<Mutex<Vec<String>>>,
}

impl FakeTokenServer {
    async fn start(lifetime_secs: u64) -> FakeTokenServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = FakeTokenServer {
            url: format!("http://{addr}/token"),
            live: Arc::default(),
            issued: Arc::default(),
            lifetime_secs: Arc::new(AtomicU64::new(lifetime_secs)),
            failing: Arc::default(),
            problems: Arc::default(),
        };
        let app = Router::new()
            .route("/token", post(grant))
            .with_state(server.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        server
    }

    fn issued(&self) -> usize {
        self.issued.load(Ordering::SeqCst)
    }

    fn problems(&self) -> Vec<String> {
        self.problems.lock().unwrap().clone()
    }

    /// A service-account key file naming this server as its `token_uri`.
    fn key_file(&self, dir: &tempfile::TempDir) -> PathBuf {
        let path = dir.path().join("service-account.json");
        let key = json!({
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": "0123456789abcdef",
            "private_key": TEST_KEY_PEM,
            "client_email": CLIENT_EMAIL,
            "client_id": "1234567890",
            "token_uri": self.url,
        });
        std::fs::write(&path, key.to_string()).unwrap();
        path
    }

    fn vertex_mode(&self) -> VertexMode {
        VertexMode {
            live_tokens: Arc::clone(&self.live),
            project: PROJECT.into(),
            location: LOCATION.into(),
        }
    }
}

async fn grant(
    State(server): State<FakeTokenServer>,
    Form(form): Form<Vec<(String, String)>>,
) -> (StatusCode, Json<Value>) {
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if server.failing.load(Ordering::SeqCst) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."})),
        );
    }
    if field("grant_type") != Some(JWT_BEARER) {
        return refuse(&server, format!("grant_type {:?}", field("grant_type")));
    }
    if let Err(problem) = check_assertion(field("assertion").unwrap_or_default(), &server.url) {
        return refuse(&server, problem);
    }
    let n = server.issued.fetch_add(1, Ordering::SeqCst) + 1;
    let token = format!("ya29.fake-{n}");
    let lifetime = server.lifetime_secs.load(Ordering::SeqCst);
    server.live.lock().unwrap().insert(token.clone());
    let live = Arc::clone(&server.live);
    let lapsed = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(lifetime)).await;
        live.lock().unwrap().remove(&lapsed);
    });
    (
        StatusCode::OK,
        Json(json!({"access_token": token, "expires_in": lifetime, "token_type": "Bearer"})),
    )
}

fn refuse(server: &FakeTokenServer, problem: String) -> (StatusCode, Json<Value>) {
    server.problems.lock().unwrap().push(problem.clone());
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": "invalid_grant", "error_description": problem})),
    )
}

/// Checks a JWT-bearer assertion as Google's token endpoint does.
fn check_assertion(jwt: &str, token_uri: &str) -> Result<(), String> {
    let parts: Vec<&str> = jwt.split('.').collect();
    let [header, claims, sig] = parts[..] else {
        return Err("assertion is not a JWS".into());
    };
    let decode = |part: &str| BASE64_URL.decode(part).map_err(|e| e.to_string());
    let header: Value = serde_json::from_slice(&decode(header)?).map_err(|e| e.to_string())?;
    if header["alg"] != "RS256" {
        return Err(format!("alg {}", header["alg"]));
    }
    let public = signature::UnparsedPublicKey::new(
        &signature::RSA_PKCS1_2048_8192_SHA256,
        test_key().public_key().as_ref().to_vec(),
    );
    let signed = &jwt[..jwt.rfind('.').unwrap_or(0)];
    public
        .verify(signed.as_bytes(), &decode(sig)?)
        .map_err(|_| "bad signature".to_owned())?;
    let claims: Value = serde_json::from_slice(&decode(claims)?).map_err(|e| e.to_string())?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap_or(0),
        claims["exp"].as_i64().unwrap_or(0),
    );
    let checks = [
        (claims["iss"] == CLIENT_EMAIL, "iss"),
        (claims["aud"] == token_uri, "aud"),
        (
            claims["scope"]
                .as_str()
                .is_some_and(|s| s.split(' ').any(|s| s == SCOPE)),
            "scope",
        ),
        (exp > now && exp - iat <= 3600 && iat <= now + 60, "iat/exp"),
    ];
    match checks.iter().find(|(ok, _)| !ok) {
        Some((_, claim)) => Err(format!("bad claim {claim}: {claims}")),
        None => Ok(()),
    }
}

fn test_key() -> RsaKeyPair {
    let body: String = TEST_KEY_PEM
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    RsaKeyPair::from_pkcs8(&STANDARD.decode(body).unwrap()).unwrap()
}

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
    let loaded = credentials.load(Some(&tokens.key_file(&dir))).await;
    assert!(
        loaded.is_ok(),
        "{loaded:?}; the token server saw {:?}",
        tokens.problems()
    );
    assert_eq!(tokens.issued(), 1);

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
    assert_eq!(tokens.issued(), 1, "eight calls, one token fetch");

    // Nobody asks; the background refresher renews the token before it lapses.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokens.issued() < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(tokens.issued(), 2, "refreshed in the background");
    let started = tokio::time::Instant::now();
    let fresh = credentials.bearer().await.unwrap();
    assert_eq!(fresh.token.expose(), "ya29.fake-2");
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "a call found the token ready"
    );
    assert!(tokens.problems().is_empty(), "{:?}", tokens.problems());
}

#[tokio::test]
async fn a_call_runs_end_to_end_on_vertex() {
    for provider in [Provider::Twilio, Provider::Plivo] {
        let tokens = FakeTokenServer::start(3600).await;
        let dir = tempfile::tempdir().unwrap();
        let key_file = tokens.key_file(&dir).display().to_string();
        let rest = FakeRest::start().await;
        let mut gemini = FakeGemini::start(Behaviour::AnswerText).await;
        gemini.act_as_vertex(tokens.vertex_mode());
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
            tokens.issued(),
            1,
            "start-up fetched the one token the call used"
        );
    }
}

#[tokio::test]
async fn a_failing_token_endpoint_stops_start_up_with_a_clear_error() {
    let tokens = FakeTokenServer::start(3600).await;
    tokens.failing.store(true, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let key_file = tokens.key_file(&dir).display().to_string();
    let vars: Vec<(String, String)> = vertex_vars(&key_file, "ws://127.0.0.1:9/x")
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .chain([
            (
                "PUBLIC_URL".to_owned(),
                "https://phone.example.com".to_owned(),
            ),
            (
                "PROMPTS_DIR".to_owned(),
                concat!(env!("CARGO_MANIFEST_DIR"), "/prompts").to_owned(),
            ),
            (
                "DATABASE_URL".to_owned(),
                format!("sqlite://{}/r.db", dir.path().display()),
            ),
        ])
        .collect();
    let config = gemini_phone::config::Config::from_lookup(|name| {
        vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    })
    .unwrap();
    let err = gemini_phone::app::App::new(config)
        .await
        .unwrap_err()
        .to_string();
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
    gemini.act_as_vertex(tokens.vertex_mode());
    let url = gemini.vertex_url();
    let server = TestServer::with_providers(&rest.url(), &url, &vertex_vars(&key_file, &url)).await;
    tokens.failing.store(true, Ordering::SeqCst);
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
