//! The configuration readers: defaults, every variable's bad values, and the messages.

use super::*;
use std::collections::HashMap;

fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_lookup(|name| map.get(name).cloned())
}

const MINIMAL: &[(&str, &str)] = &[
    ("GEMINI_API_KEY", "k"),
    ("PUBLIC_URL", "https://example.ngrok.app/"),
];

#[test]
fn defaults_follow_the_contract() {
    let c = config(MINIMAL).expect("minimal config");
    assert_eq!(c.agent, AgentKind::Gemini);
    let g = c.gemini.as_ref().expect("gemini");
    assert_eq!(g.model, "gemini-3.8-live");
    assert_eq!(g.voice, "Kore");
    assert_eq!(g.live_url, DEFAULT_GEMINI_LIVE_URL);
    assert_eq!(c.port, 8000);
    assert_eq!(c.public_url, "https://example.ngrok.app");
    assert_eq!(c.public_ws_url(), "wss://example.ngrok.app");
    assert_eq!(c.database_url, "sqlite://data/gemini-phone.db");
    assert_eq!(c.max_call_duration, Duration::from_secs(1800));
    assert!(c.tools.end_call && !c.tools.transfer_call && !c.tools.send_sms);
    assert!(c.verify_webhooks);
    assert!(c.twilio.is_none() && c.plivo.is_none());
}

#[test]
fn missing_key_names_the_variable() {
    let err = config(&[("PUBLIC_URL", "https://x.io")]).unwrap_err();
    assert_eq!(err.var, "GEMINI_API_KEY");
    assert!(err.to_string().starts_with("GEMINI_API_KEY: missing"));
}

#[test]
fn echo_needs_no_key() {
    let c = config(&[("AGENT", "echo"), ("PUBLIC_URL", "http://localhost:8000")]).unwrap();
    assert_eq!(c.agent, AgentKind::Echo);
    assert!(c.gemini.is_none());
    assert_eq!(c.public_ws_url(), "ws://localhost:8000");
}

#[test]
fn malformed_values_are_named() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("AGENT", "robot")], "AGENT"),
        (&[("PORT", "eighty")], "PORT"),
        (&[("PUBLIC_URL", "ftp://x")], "PUBLIC_URL"),
        (&[("GEMINI_LIVE_URL", "https://x")], "GEMINI_LIVE_URL"),
        (&[("TWILIO_ACCOUNT_SID", "AC1")], "TWILIO_AUTH_TOKEN"),
        (&[("PLIVO_AUTH_TOKEN", "t")], "PLIVO_AUTH_ID"),
        (&[("HOST", "everywhere")], "HOST"),
        (&[("MAX_CALL_SECONDS", "0")], "MAX_CALL_SECONDS"),
        (&[("BUILTIN_TOOLS", "end_call,fly")], "BUILTIN_TOOLS"),
        (&[("VERIFY_WEBHOOKS", "maybe")], "VERIFY_WEBHOOKS"),
        (&[("METRICS_TOKEN", "two words")], "METRICS_TOKEN"),
        (&[("BUILTIN_TOOLS", "transfer_call")], "TRANSFER_NUMBER"),
        (&[("TRANSFER_NUMBER", "555")], "TRANSFER_NUMBER"),
        (
            &[("TOOL_ALLOWED_NUMBERS", "+15551234567, 12")],
            "TOOL_ALLOWED_NUMBERS",
        ),
        (
            &[("POST_CALL_WEBHOOK_URL", "https://hooks.example.com/calls")],
            "POST_CALL_WEBHOOK_SECRET",
        ),
        (
            &[("POST_CALL_WEBHOOK_SECRET", "0123456789abcdef")],
            "POST_CALL_WEBHOOK_URL",
        ),
        (
            &[
                ("POST_CALL_WEBHOOK_URL", "hooks.example.com/calls"),
                ("POST_CALL_WEBHOOK_SECRET", "0123456789abcdef"),
            ],
            "POST_CALL_WEBHOOK_URL",
        ),
        (
            &[
                ("POST_CALL_WEBHOOK_URL", "https://hooks.example.com/calls"),
                ("POST_CALL_WEBHOOK_SECRET", "short"),
            ],
            "POST_CALL_WEBHOOK_SECRET",
        ),
    ];
    for (extra, var) in cases {
        let mut vars = MINIMAL.to_vec();
        vars.extend_from_slice(extra);
        // Later entries win in the map, so the malformed value replaces the good one.
        let err = config(&vars).unwrap_err();
        assert_eq!(err.var, *var, "{extra:?}");
    }
}

fn vertex(extra: &[(&str, &str)]) -> Result<GeminiConfig, ConfigError> {
    let mut vars = vec![("GEMINI_BACKEND", "vertex"), ("PUBLIC_URL", "https://x.io")];
    vars.extend_from_slice(extra);
    Ok(config(&vars)?.gemini.expect("gemini"))
}

#[test]
fn vertex_with_a_project_uses_the_regional_endpoint_and_full_model_path() {
    let g = vertex(&[("GOOGLE_CLOUD_PROJECT", "acme")]).unwrap();
    assert_eq!(
        g.live_url,
        "wss://us-central1-aiplatform.googleapis.com/ws/google.cloud.aiplatform.v1beta1.LlmBidiService/BidiGenerateContent"
    );
    assert_eq!(
        g.model_resource(),
        "projects/acme/locations/us-central1/publishers/google/models/gemini-3.8-live"
    );
    assert!(g.api_key.expose().is_empty());
    let v = g.vertex().expect("vertex");
    assert!(matches!(
        &v.access,
        VertexAccess::Credentials { sources, .. } if sources.key_file.is_none()
    ));

    let eu = vertex(&[
        ("GOOGLE_CLOUD_PROJECT", "acme"),
        ("GOOGLE_CLOUD_LOCATION", "europe-west4"),
        ("GEMINI_MODEL", "models/gemini-live-2.5-flash-native-audio"),
        ("GOOGLE_APPLICATION_CREDENTIALS", "/keys/sa.json"),
    ])
    .unwrap();
    assert!(
        eu.live_url
            .starts_with("wss://europe-west4-aiplatform.googleapis.com/ws/")
    );
    assert_eq!(
        eu.model_resource(),
        "projects/acme/locations/europe-west4/publishers/google/models/gemini-live-2.5-flash-native-audio"
    );
    assert!(matches!(
        &eu.vertex().unwrap().access,
        VertexAccess::Credentials { sources, .. } if sources.key_file.as_deref() == Some(std::path::Path::new("/keys/sa.json"))
    ));
}

#[test]
fn vertex_global_and_express_mode_use_the_global_host() {
    let global = vertex(&[
        ("GOOGLE_CLOUD_PROJECT", "acme"),
        ("GOOGLE_CLOUD_LOCATION", "global"),
    ])
    .unwrap();
    assert!(global.live_url.starts_with(
        "wss://aiplatform.googleapis.com/ws/google.cloud.aiplatform.v1beta1.LlmBidiService/"
    ));
    assert_eq!(
        global.model_resource(),
        "projects/acme/locations/global/publishers/google/models/gemini-3.8-live"
    );

    let express = vertex(&[("GEMINI_API_KEY", "vertex-key")]).unwrap();
    assert!(
        express
            .live_url
            .starts_with("wss://aiplatform.googleapis.com/ws/")
    );
    assert_eq!(
        express.model_resource(),
        "publishers/google/models/gemini-3.8-live"
    );
    assert_eq!(express.api_key.expose(), "vertex-key");
}

#[test]
fn vertex_live_url_can_still_be_overridden() {
    let g = vertex(&[
        ("GOOGLE_CLOUD_PROJECT", "acme"),
        ("GEMINI_LIVE_URL", "ws://127.0.0.1:9/vertex"),
    ])
    .unwrap();
    assert_eq!(g.live_url, "ws://127.0.0.1:9/vertex");
    assert!(g.model_resource().starts_with("projects/acme/"));
}

#[test]
fn vertex_mistakes_name_their_variable() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[], "GOOGLE_CLOUD_PROJECT"),
        (
            &[("GOOGLE_CLOUD_PROJECT", "p"), ("GEMINI_API_KEY", "k")],
            "GEMINI_API_KEY",
        ),
        (
            &[
                ("GOOGLE_CLOUD_PROJECT", "p"),
                ("GOOGLE_CLOUD_LOCATION", "US Central"),
            ],
            "GOOGLE_CLOUD_LOCATION",
        ),
    ];
    for (extra, var) in cases {
        assert_eq!(vertex(extra).unwrap_err().var, *var, "{extra:?}");
    }
    let err = config(&[
        ("GEMINI_BACKEND", "bard"),
        ("GEMINI_API_KEY", "k"),
        ("PUBLIC_URL", "https://x.io"),
    ])
    .unwrap_err();
    assert_eq!(err.var, "GEMINI_BACKEND");
    // Echo mode needs no Vertex project either.
    let echo = config(&[
        ("AGENT", "echo"),
        ("GEMINI_BACKEND", "vertex"),
        ("PUBLIC_URL", "https://x.io"),
    ])
    .unwrap();
    assert!(echo.gemini.is_none());
}

#[test]
fn secrets_do_not_print() {
    let c = config(&[
        ("GEMINI_API_KEY", "super-secret-key"),
        ("PUBLIC_URL", "https://x.io"),
        ("TWILIO_ACCOUNT_SID", "AC1"),
        ("TWILIO_AUTH_TOKEN", "tok-secret"),
        ("POST_CALL_WEBHOOK_URL", "https://hooks.example.com/calls"),
        ("POST_CALL_WEBHOOK_SECRET", "hook-secret-0123456789"),
    ])
    .unwrap();
    let printed = format!("{c:?}");
    assert!(!printed.contains("super-secret-key"));
    assert!(!printed.contains("tok-secret"));
    assert!(!printed.contains("hook-secret"));
}

#[test]
fn post_call_webhook_is_off_unless_its_url_is_set() {
    assert!(config(MINIMAL).unwrap().post_call_webhook.is_none());
    let mut vars = MINIMAL.to_vec();
    vars.push(("POST_CALL_WEBHOOK_URL", "http://127.0.0.1:9000/hook"));
    vars.push(("POST_CALL_WEBHOOK_SECRET", " 0123456789abcdef "));
    let hook = config(&vars).unwrap().post_call_webhook.expect("a webhook");
    assert_eq!(hook.url, "http://127.0.0.1:9000/hook");
    assert_eq!(hook.secret.expose(), "0123456789abcdef");
}

#[test]
fn prewarming_holds_sessions_ten_seconds_unless_turned_off() {
    let prewarm = |value: Option<&str>| {
        let mut vars = MINIMAL.to_vec();
        vars.extend(value.map(|v| ("GEMINI_PREWARM_SECS", v)));
        config(&vars).map(|c| c.prewarm)
    };
    assert_eq!(prewarm(None).unwrap(), Some(Duration::from_secs(10)));
    assert_eq!(prewarm(Some("3")).unwrap(), Some(Duration::from_secs(3)));
    assert_eq!(prewarm(Some("0")).unwrap(), None);
    let too_long = prewarm(Some("61")).unwrap_err();
    assert_eq!(too_long.var, "GEMINI_PREWARM_SECS");
    assert!(too_long.problem.contains("at most 60"), "{too_long}");
    assert!(prewarm(Some("soon")).is_err());
}

#[test]
fn recordings_are_off_and_kept_forever_by_default() {
    let r = config(MINIMAL).unwrap().recordings;
    assert!(!r.enabled);
    assert_eq!(r.dir, PathBuf::from("data/recordings"));
    assert_eq!(r.retention, None);
    let mut vars = MINIMAL.to_vec();
    vars.extend([
        ("RECORD_CALLS", "true"),
        ("RECORDINGS_DIR", "/var/rec"),
        ("RECORDING_RETENTION_DAYS", "30"),
    ]);
    let r = config(&vars).unwrap().recordings;
    assert!(r.enabled);
    assert_eq!(r.dir, PathBuf::from("/var/rec"));
    assert_eq!(r.retention, Some(Duration::from_secs(30 * 86_400)));
    for (var, bad) in [
        ("RECORD_CALLS", "yes"),
        ("RECORDING_RETENTION_DAYS", "0"),
        ("RECORDING_RETENTION_DAYS", "a week"),
        ("RECORDING_RETENTION_DAYS", "99999999"),
    ] {
        let mut vars = MINIMAL.to_vec();
        vars.push((var, bad));
        assert_eq!(config(&vars).unwrap_err().var, var, "{var}={bad}");
    }
}
