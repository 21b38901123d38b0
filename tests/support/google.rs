//! Fake Google Cloud credential endpoints for the Vertex tests: an OAuth token endpoint
//! (the JWT-bearer grant of service-account keys and the refresh-token grant of
//! `authorized_user` files) and a metadata server as on Cloud Run, GCE and GKE. Both hand
//! out short-lived tokens into one set of live tokens that the fake Gemini, acting as
//! Vertex, accepts.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use ring::signature::{self, KeyPair as _, RsaKeyPair};
use serde_json::{Value, json};

use super::gemini::VertexMode;

/// The project the tests' calls run in.
pub const PROJECT: &str = "acme-voice";
/// The Vertex location the tests use.
pub const LOCATION: &str = "europe-west4";
/// The service account of the test key.
pub const CLIENT_EMAIL: &str = "phone-agent@acme-voice.iam.gserviceaccount.com";
/// The OAuth client of the `authorized_user` file (gcloud's own, in real files).
pub const USER_CLIENT_ID: &str = "764086051850-test.apps.googleusercontent.com";
/// Its secret.
pub const USER_CLIENT_SECRET: &str = "d-FL95Q19q7MQmFpd7hHD0Ty";
/// The refresh token `gcloud auth application-default login` would have written.
pub const USER_REFRESH_TOKEN: &str = "1//0test-refresh-token";
/// The project the user's file bills (`quota_project_id`).
pub const QUOTA_PROJECT: &str = "acme-billing";
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const METADATA_TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";
const METADATA_PROJECT_PATH: &str = "/computeMetadata/v1/project/project-id";

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
/// What a fake credential endpoint shares with its tests and with the fake Gemini: the
/// tokens it issued that are still live, how many it issued, their lifetime, and what it
/// refused and why.
#[derive(Clone)]
pub struct Issuer {
    /// Tokens handed out and not yet lapsed (the fake Gemini accepts exactly these).
    pub live: Arc<Mutex<HashSet<String>>>,
    issued: Arc<AtomicUsize>,
    /// The `expires_in` it announces.
    lifetime_secs: Arc<AtomicU64>,
    /// When a token really stops working; the announced lifetime unless a test shortens it.
    lapse_after: Arc<Mutex<Option<Duration>>>,
    /// Refuse every request (the endpoint is down or the credentials were revoked).
    pub failing: Arc<AtomicBool>,
    problems: Arc<Mutex<Vec<String>>>,
    prefix: &'static str,
}

impl Issuer {
    fn new(prefix: &'static str, lifetime_secs: u64) -> Issuer {
        Issuer {
            live: Arc::default(),
            issued: Arc::default(),
            lifetime_secs: Arc::new(AtomicU64::new(lifetime_secs)),
            lapse_after: Arc::default(),
            failing: Arc::default(),
            problems: Arc::default(),
            prefix,
        }
    }

    /// How many tokens it has issued.
    pub fn issued(&self) -> usize {
        self.issued.load(Ordering::SeqCst)
    }

    /// Each request it refused, and why (empty when the client did everything right).
    pub fn problems(&self) -> Vec<String> {
        self.problems.lock().unwrap().clone()
    }

    /// Tokens stop working `after` their issue, whatever lifetime was announced.
    pub fn lapse_after(&self, after: Duration) {
        *self.lapse_after.lock().unwrap() = Some(after);
    }

    /// The `n`th token it issues (from 1).
    pub fn token(&self, n: usize) -> String {
        format!("ya29.{}-{n}", self.prefix)
    }

    /// Waits until it has issued `n` tokens; false after `limit`.
    pub async fn wait_issued(&self, n: usize, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while self.issued() < n {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// What the fake Gemini should demand to act as Vertex for these tokens.
    pub fn vertex_mode(&self) -> VertexMode {
        VertexMode {
            live_tokens: Arc::clone(&self.live),
            project: PROJECT.into(),
            location: LOCATION.into(),
        }
    }

    /// A new token, live until it lapses: the OAuth answer body.
    fn issue(&self) -> Value {
        let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        let token = self.token(n);
        let lifetime = self.lifetime_secs.load(Ordering::SeqCst);
        let lapse = self
            .lapse_after
            .lock()
            .unwrap()
            .unwrap_or(Duration::from_secs(lifetime));
        self.live.lock().unwrap().insert(token.clone());
        let live = Arc::clone(&self.live);
        let lapsed = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(lapse).await;
            live.lock().unwrap().remove(&lapsed);
        });
        json!({"access_token": token, "expires_in": lifetime, "token_type": "Bearer"})
    }

    fn refuse(&self, status: StatusCode, problem: String) -> Response {
        self.problems.lock().unwrap().push(problem.clone());
        let body = json!({"error": "invalid_grant", "error_description": problem});
        (status, Json(body)).into_response()
    }
}

/// A fake Google OAuth token endpoint. The JWT-bearer grant is checked as Google checks it
/// (RS256 signature with the test key's public half, `iss`, `aud`, `scope`, `exp`); the
/// refresh-token grant must carry the test user's client id, secret and refresh token.
#[derive(Clone)]
pub struct FakeTokenServer {
    /// `http://127.0.0.1:PORT/token`, the `token_uri` of the files it writes.
    pub url: String,
    /// The tokens it issues.
    pub tokens: Issuer,
}

impl FakeTokenServer {
    /// Starts it on loopback; its tokens announce `lifetime_secs`.
    pub async fn start(lifetime_secs: u64) -> FakeTokenServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = FakeTokenServer {
            url: format!("http://{addr}/token"),
            tokens: Issuer::new("fake", lifetime_secs),
        };
        let app = Router::new()
            .route("/token", post(grant))
            .with_state(server.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        server
    }

    /// Writes a service-account key naming this server as its `token_uri` to `path`.
    pub fn write_key_file(&self, path: &Path) -> PathBuf {
        let key = json!({
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": "0123456789abcdef",
            "private_key": TEST_KEY_PEM,
            "client_email": CLIENT_EMAIL,
            "client_id": "1234567890",
            "token_uri": self.url,
        });
        write_json(path, &key)
    }

    /// A service-account key file in `dir`.
    pub fn key_file(&self, dir: &tempfile::TempDir) -> PathBuf {
        self.write_key_file(&dir.path().join("service-account.json"))
    }

    /// Writes an `authorized_user` file, as `gcloud auth application-default login` does
    /// (plus a `token_uri` naming this server), to `path`.
    pub fn write_user_file(&self, path: &Path) -> PathBuf {
        let user = json!({
            "type": "authorized_user",
            "client_id": USER_CLIENT_ID,
            "client_secret": USER_CLIENT_SECRET,
            "refresh_token": USER_REFRESH_TOKEN,
            "quota_project_id": QUOTA_PROJECT,
            "account": "",
            "universe_domain": "googleapis.com",
            "token_uri": self.url,
        });
        write_json(path, &user)
    }
}

fn write_json(path: &Path, json: &Value) -> PathBuf {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(path, json.to_string()).unwrap();
    path.to_owned()
}

async fn grant(
    State(server): State<FakeTokenServer>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let tokens = &server.tokens;
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if tokens.failing.load(Ordering::SeqCst) {
        let body = json!({"error": "invalid_grant", "error_description": "Token has been expired or revoked."});
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    }
    let checked = match field("grant_type") {
        Some(JWT_BEARER) => check_assertion(field("assertion").unwrap_or_default(), &server.url),
        Some("refresh_token") => check_refresh(&form),
        other => Err(format!("grant_type {other:?}")),
    };
    match checked {
        Ok(()) => Json(tokens.issue()).into_response(),
        Err(problem) => tokens.refuse(StatusCode::BAD_REQUEST, problem),
    }
}

/// Checks a refresh-token grant's client and refresh token.
fn check_refresh(form: &[(String, String)]) -> Result<(), String> {
    let expected = [
        ("client_id", USER_CLIENT_ID),
        ("client_secret", USER_CLIENT_SECRET),
        ("refresh_token", USER_REFRESH_TOKEN),
    ];
    let sent = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    match expected
        .iter()
        .find(|(name, value)| sent(name) != Some(*value))
    {
        Some((name, _)) => Err(format!("wrong or missing {name}")),
        None => Ok(()),
    }
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

/// A fake metadata server as on Cloud Run, GCE and GKE, for `GCE_METADATA_HOST`. Like the
/// real one it answers only requests carrying `Metadata-Flavor: Google` (else HTTP 403) and
/// marks every answer with that header.
#[derive(Clone)]
pub struct FakeMetadataServer {
    /// `127.0.0.1:PORT`, the value for `GCE_METADATA_HOST`.
    pub host: String,
    /// The default service account's tokens.
    pub tokens: Issuer,
    /// Answer without the `Metadata-Flavor` header, as something that is not the metadata
    /// server would.
    pub flavourless: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl FakeMetadataServer {
    /// Starts it on loopback; its tokens announce `lifetime_secs`.
    pub async fn start(lifetime_secs: u64) -> FakeMetadataServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = FakeMetadataServer {
            host: listener.local_addr().unwrap().to_string(),
            tokens: Issuer::new("metadata", lifetime_secs),
            flavourless: Arc::default(),
            requests: Arc::default(),
        };
        let app = Router::new()
            .route(METADATA_TOKEN_PATH, get(metadata_token))
            .route(METADATA_PROJECT_PATH, get(metadata_project))
            .with_state(server.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        server
    }

    /// The paths asked for, in order.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    /// Records the request; the refusal when it lacks the flavour header.
    fn refusal(&self, path: &str, headers: &HeaderMap) -> Option<Response> {
        self.requests.lock().unwrap().push(path.to_owned());
        let flavoured = headers
            .get("metadata-flavor")
            .is_some_and(|v| v == "Google");
        if flavoured {
            return None;
        }
        self.tokens
            .problems
            .lock()
            .unwrap()
            .push(format!("{path} without Metadata-Flavor: Google"));
        Some(self.answer(
            StatusCode::FORBIDDEN,
            "Missing Metadata-Flavor:Google header.".into(),
        ))
    }

    fn answer(&self, status: StatusCode, body: String) -> Response {
        if self.flavourless.load(Ordering::SeqCst) {
            return (status, body).into_response();
        }
        (status, [("metadata-flavor", "Google")], body).into_response()
    }
}

async fn metadata_token(State(server): State<FakeMetadataServer>, headers: HeaderMap) -> Response {
    if let Some(refused) = server.refusal(METADATA_TOKEN_PATH, &headers) {
        return refused;
    }
    if server.tokens.failing.load(Ordering::SeqCst) {
        return server.answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Could not fetch URI /computeMetadata/v1/instance/service-accounts/default/token"
                .into(),
        );
    }
    let token = server.tokens.issue().to_string();
    server.answer(StatusCode::OK, token)
}

async fn metadata_project(
    State(server): State<FakeMetadataServer>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = server.refusal(METADATA_PROJECT_PATH, &headers) {
        return refused;
    }
    server.answer(StatusCode::OK, PROJECT.into())
}
