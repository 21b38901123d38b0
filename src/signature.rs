//! Proof of origin: the providers' webhook signatures, and the token that binds a media
//! stream to the answer webhook that opened it.
//!
//! Without these, anyone who learns the public URL could forge call statuses or open media
//! streams that spend the Gemini key.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use subtle::ConstantTimeEq;

type HmacSha1 = Hmac<sha1::Sha1>;
type HmacSha256 = Hmac<sha2::Sha256>;

fn hmac_sha1(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha1::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

fn equal(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Form parameters sorted by name, then value, as both providers sign them.
fn sorted(params: &[(String, String)]) -> Vec<&(String, String)> {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    sorted.dedup();
    sorted
}

/// Twilio's `X-Twilio-Signature`: base64 HMAC-SHA1 of the full URL followed by each POST
/// parameter's name and value, sorted by name.
pub fn twilio_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut message = url.to_owned();
    for (name, value) in sorted(params) {
        message.push_str(name);
        message.push_str(value);
    }
    STANDARD.encode(hmac_sha1(auth_token.as_bytes(), message.as_bytes()))
}

/// Checks a Twilio signature. Twilio's own validators also accept the URL with the default
/// port added or removed, since the signing side is not consistent about it.
pub fn verify_twilio(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    header: &str,
) -> bool {
    url_port_variants(url)
        .iter()
        .any(|candidate| equal(&twilio_signature(auth_token, candidate, params), header))
}

fn url_port_variants(url: &str) -> Vec<String> {
    let mut variants = vec![url.to_owned()];
    let Some((scheme, rest)) = url.split_once("://") else {
        return variants;
    };
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let default_port = if scheme == "https" || scheme == "wss" {
        "443"
    } else {
        "80"
    };
    match authority.rsplit_once(':') {
        Some((host, port)) if port == default_port => {
            variants.push(format!("{scheme}://{host}{tail}"))
        }
        Some(_) => {}
        None => variants.push(format!("{scheme}://{authority}:{default_port}{tail}")),
    }
    variants
}

/// Plivo's `X-Plivo-Signature-V3` for a POST: base64 HMAC-SHA256 of
/// `scheme://host/path?[sorted query.]name+value…` then `.` and the nonce.
pub fn plivo_v3_signature(
    auth_token: &str,
    url: &str,
    nonce: &str,
    params: &[(String, String)],
) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut query_pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query).unwrap_or_default();
    query_pairs.sort();
    let sorted_query = query_pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut message = base.to_owned();
    if !params.is_empty() {
        message.push('?');
        if !sorted_query.is_empty() {
            message.push_str(&sorted_query);
            message.push('.');
        }
        for (name, value) in sorted(params) {
            message.push_str(name);
            message.push_str(value);
        }
    } else if !sorted_query.is_empty() {
        message.push('?');
        message.push_str(&sorted_query);
    }
    message.push('.');
    message.push_str(nonce);
    STANDARD.encode(hmac_sha256(auth_token.as_bytes(), message.as_bytes()))
}

/// Checks a Plivo V3 signature header, which may list several signatures separated by commas.
pub fn verify_plivo_v3(
    auth_token: &str,
    url: &str,
    nonce: &str,
    params: &[(String, String)],
    header: &str,
) -> bool {
    let expected = plivo_v3_signature(auth_token, url, nonce, params);
    header
        .split(',')
        .any(|candidate| equal(candidate.trim(), &expected))
}

/// Binds media streams to answer webhooks: the webhook puts `token(call id)` into the stream
/// parameters, and a stream whose `start` does not carry it is refused before any Gemini
/// session is opened.
#[derive(Clone)]
pub struct StreamTokens {
    key: Vec<u8>,
}

impl std::fmt::Debug for StreamTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamTokens(***)")
    }
}

impl StreamTokens {
    /// Tokens keyed by `secret`; every instance behind a load balancer must share it.
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: hmac_sha256(b"gemini-phone stream token", secret),
        }
    }

    /// The token for a provider call id: 32 lowercase hex digits (Plivo allows only
    /// letters and digits in stream parameters).
    pub fn token(&self, provider_call_id: &str) -> String {
        hmac_sha256(&self.key, provider_call_id.as_bytes())[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Whether `token` was issued for `provider_call_id`.
    pub fn verify(&self, provider_call_id: &str, token: &str) -> bool {
        equal(&self.token(provider_call_id), token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    // Vectors computed with the providers' official SDK validators
    // (../shared/protocols/telephony.md A5 and B5).
    #[test]
    fn twilio_reference_vectors() {
        let p = params(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]);
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(
            twilio_signature("12345", url, &p),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
        assert!(verify_twilio(
            "12345",
            url,
            &p,
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        ));
        assert!(verify_twilio(
            "12345",
            "https://mycompany.com:443/myapp.php?foo=1&bar=2",
            &p,
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        ));
        assert!(!verify_twilio(
            "12346",
            url,
            &p,
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        ));
        assert_eq!(
            twilio_signature("12345", "wss://example.com/media", &[]),
            "7PR3qMkpDyEJtMrVOY/LDyNq8J8="
        );
    }

    #[test]
    fn plivo_reference_vectors() {
        let p = params(&[
            ("CallUUID", "abc-123"),
            ("From", "14155550100"),
            ("To", "14155550199"),
            ("Direction", "inbound"),
        ]);
        let nonce = "05429567804466091622";
        let url = "https://example.com/answer/?x=1";
        let sig = "jAL1VJvjs++7+j3AobqfXJS9l+mi/ke8yFrW13YH4wI=";
        assert_eq!(plivo_v3_signature("MY_AUTH_TOKEN", url, nonce, &p), sig);
        assert!(verify_plivo_v3(
            "MY_AUTH_TOKEN",
            url,
            nonce,
            &p,
            &format!("other=,{sig}")
        ));
        assert!(!verify_plivo_v3("MY_AUTH_TOKEN", url, "1", &p, sig));
    }

    #[test]
    fn stream_tokens_bind_to_the_call() {
        let tokens = StreamTokens::new(b"secret");
        let token = tokens.token("CA1");
        assert_eq!(token.len(), 32);
        assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(tokens.verify("CA1", &token));
        assert!(!tokens.verify("CA2", &token));
        assert!(!StreamTokens::new(b"other").verify("CA1", &token));
    }
}
