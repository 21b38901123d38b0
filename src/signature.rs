//! Proof of origin: the providers' webhook signatures, and the token that binds a media
//! stream to the answer webhook that opened it.
//!
//! Without these, anyone who learns the public URL could forge call statuses or open media
//! streams that spend the Gemini key.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use subtle::ConstantTimeEq;

use crate::telephony::{Direction, RECORD_PARAM, StreamParams, TOKEN_PARAM};

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

/// Everything a media stream is trusted with, as the answer webhook that opened it knew it:
/// whose call it is, which record it writes, who is on the line, and until when it may start.
///
/// The bridge acts on these (the prompt it renders, the record it finishes, the number
/// `send_sms` texts), so the token signs all of them, not just the call id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamClaims {
    /// The provider's call id (Twilio `CallSid`, Plivo `CallUUID`).
    pub call_id: String,
    /// Our call-record id, when the call has a record.
    pub record: Option<String>,
    /// Calling number, as the stream parameters carry it.
    pub from: String,
    /// Called number, as the stream parameters carry it.
    pub to: String,
    /// Inbound or outbound.
    pub direction: Direction,
    /// The stream must start before this time (unix seconds).
    pub expires_at: u64,
}

/// Why a media stream's token was refused. The messages are for the server's log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The `start` parameters carry no token.
    #[error("the stream's start carries no `token` parameter (not opened by our answer webhook)")]
    Missing,
    /// The token is not of the form `<expiry>t<32 hex digits>`.
    #[error("the stream token is malformed: {0}")]
    Malformed(&'static str),
    /// A `start` parameter the token covers has a value no answer webhook issues.
    #[error("the stream parameter `{param}` is {problem}")]
    BadParameter {
        /// The parameter's name.
        param: &'static str,
        /// What is wrong with its value.
        problem: &'static str,
    },
    /// The token was not issued for this call id, record, from, to and direction together.
    #[error(
        "the stream token does not match this stream's call id, record, from, to and direction: one of them was altered, or the token was issued for another call or with another key"
    )]
    Forged,
    /// A genuine token whose stream came too late.
    #[error("the stream token expired {late_by} s ago (at unix time {expired_at})")]
    Expired {
        /// When it expired (unix seconds).
        expired_at: u64,
        /// How many seconds ago.
        late_by: u64,
    },
}

/// Separates the token's expiry from its MAC (a letter, since Plivo stream parameters allow
/// only letters and digits).
const EXPIRY_SEPARATOR: char = 't';
/// Bytes of HMAC-SHA256 kept in a token: 128 bits, 32 hex digits.
const MAC_BYTES: usize = 16;
/// Bumped if the signed encoding ever changes, so old tokens cannot be read the new way.
const CLAIMS_VERSION: &[u8] = b"gemini-phone stream claims v1";

/// Issues and checks stream tokens. The answer webhook puts [`StreamTokens::issue`]'s token
/// into the stream parameters next to the claims it signs; the stream's `start` is checked
/// with [`StreamTokens::verify`] before any Gemini session is opened.
///
/// A token is `<expiry>t<MAC>`: the expiry in unix seconds, and 32 hex digits of an
/// HMAC-SHA256 over the claims. It does not make itself single-use; the records store's
/// used-token table does (`CallStore::consume_stream_token`).
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

    /// The token for a stream with these claims: letters and digits only.
    pub fn issue(&self, claims: &StreamClaims) -> String {
        format!(
            "{}{EXPIRY_SEPARATOR}{}",
            claims.expires_at,
            hex(&self.mac(claims))
        )
    }

    /// Checks the token in a stream's `start` parameters against the claims those parameters
    /// and the provider's `call_id` make, at `now_unix` (seconds). On success the claims are
    /// what the answer webhook vouched for, and the only values the call should act on.
    pub fn verify(
        &self,
        call_id: &str,
        params: &StreamParams,
        now_unix: u64,
    ) -> Result<StreamClaims, TokenError> {
        let token = params.get(TOKEN_PARAM).ok_or(TokenError::Missing)?;
        let (expires_at, mac) = parse_token(token)?;
        let claims = StreamClaims {
            call_id: call_id.to_owned(),
            record: params.get(RECORD_PARAM).cloned(),
            from: caller_id_param(params, "from")?,
            to: caller_id_param(params, "to")?,
            direction: direction_param(params)?,
            expires_at,
        };
        // Compared before the expiry, so `Expired` always means a genuine token that came late.
        if !bool::from(self.mac(&claims)[..].ct_eq(&mac[..])) {
            return Err(TokenError::Forged);
        }
        if now_unix >= expires_at {
            return Err(TokenError::Expired {
                expired_at: expires_at,
                late_by: now_unix - expires_at,
            });
        }
        Ok(claims)
    }

    fn mac(&self, claims: &StreamClaims) -> [u8; MAC_BYTES] {
        let full = hmac_sha256(&self.key, &encode_claims(claims));
        let mut mac = [0; MAC_BYTES];
        mac.copy_from_slice(&full[..MAC_BYTES]);
        mac
    }
}

/// The claims as one byte string with no two claim sets alike: each field is preceded by its
/// length, and an absent record differs from an empty one.
///
/// `from` and `to` are signed by their letters and digits only, because that is what survives
/// every provider: Plivo strips everything else from stream parameters (`+14155550100`
/// arrives as `14155550100`), while Twilio carries values unchanged. So a number can be
/// re-punctuated but never changed to another number.
fn encode_claims(claims: &StreamClaims) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    let mut field = |bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
        out.extend_from_slice(bytes);
    };
    field(CLAIMS_VERSION);
    field(claims.call_id.as_bytes());
    match &claims.record {
        Some(record) => {
            field(b"record");
            field(record.as_bytes());
        }
        None => field(b"no record"),
    }
    field(letters_and_digits(&claims.from).as_bytes());
    field(letters_and_digits(&claims.to).as_bytes());
    field(claims.direction.as_str().as_bytes());
    field(&claims.expires_at.to_be_bytes());
    out
}

fn letters_and_digits(text: &str) -> String {
    text.chars().filter(char::is_ascii_alphanumeric).collect()
}

/// Splits `<expiry>t<32 hex>` into the expiry and the MAC bytes.
fn parse_token(token: &str) -> Result<(u64, [u8; MAC_BYTES]), TokenError> {
    let (expiry, mac_hex) = token
        .split_once(EXPIRY_SEPARATOR)
        .ok_or(TokenError::Malformed(
            "no expiry (expected <unix seconds>t<32 hex digits>)",
        ))?;
    if expiry.is_empty() || !expiry.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TokenError::Malformed(
            "the expiry is not a number of seconds",
        ));
    }
    let expires_at = expiry
        .parse()
        .map_err(|_| TokenError::Malformed("the expiry is out of range"))?;
    let mac =
        parse_hex(mac_hex).ok_or(TokenError::Malformed("the signature is not 32 hex digits"))?;
    Ok((expires_at, mac))
}

fn parse_hex(text: &str) -> Option<[u8; MAC_BYTES]> {
    if text.len() != MAC_BYTES * 2 {
        return None;
    }
    let mut bytes = [0; MAC_BYTES];
    for (byte, pair) in bytes.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A `from`/`to` stream parameter; absent reads as empty (Twilio may drop empty parameters).
/// Control characters are refused: they are outside the signed letters and digits, and a
/// forged line break would reach logs and tools.
fn caller_id_param(params: &StreamParams, param: &'static str) -> Result<String, TokenError> {
    let value = params.get(param).cloned().unwrap_or_default();
    if value.chars().any(char::is_control) {
        return Err(TokenError::BadParameter {
            param,
            problem: "holding control characters",
        });
    }
    Ok(value)
}

fn direction_param(params: &StreamParams) -> Result<Direction, TokenError> {
    match params.get("direction").map(String::as_str) {
        Some("inbound") => Ok(Direction::Inbound),
        Some("outbound") => Ok(Direction::Outbound),
        Some(_) => Err(TokenError::BadParameter {
            param: "direction",
            problem: "neither `inbound` nor `outbound`",
        }),
        None => Err(TokenError::BadParameter {
            param: "direction",
            problem: "missing",
        }),
    }
}

/// Wall-clock unix seconds, the time stream tokens are issued and checked against.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
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

    const NOW: u64 = 1_800_000_000;

    fn claims() -> StreamClaims {
        StreamClaims {
            call_id: "CA1".into(),
            record: Some("c0123456789abcdefghijklmn".into()),
            from: "+15550001111".into(),
            to: "+15550002222".into(),
            direction: Direction::Outbound,
            expires_at: NOW + 60,
        }
    }

    /// The stream parameters an answer webhook would write for `claims`.
    fn stream_params(tokens: &StreamTokens, claims: &StreamClaims) -> StreamParams {
        let mut params = StreamParams::new();
        params.insert("from".into(), claims.from.clone());
        params.insert("to".into(), claims.to.clone());
        params.insert("direction".into(), claims.direction.as_str().into());
        if let Some(record) = &claims.record {
            params.insert(RECORD_PARAM.into(), record.clone());
        }
        params.insert(TOKEN_PARAM.into(), tokens.issue(claims));
        params
    }

    #[test]
    fn a_token_proves_its_claims_until_it_expires() {
        let tokens = StreamTokens::new(b"secret");
        let params = stream_params(&tokens, &claims());
        let token = &params[TOKEN_PARAM];
        assert!(
            token.chars().all(|c| c.is_ascii_alphanumeric()),
            "Plivo would strip {token}"
        );
        assert_eq!(token.len(), "1800000060".len() + 1 + 32);
        assert_eq!(tokens.verify("CA1", &params, NOW), Ok(claims()));
        assert_eq!(tokens.verify("CA1", &params, NOW + 59), Ok(claims()));

        let inbound = StreamClaims {
            record: None,
            direction: Direction::Inbound,
            ..claims()
        };
        let params = stream_params(&tokens, &inbound);
        assert_eq!(tokens.verify("CA1", &params, NOW), Ok(inbound));
    }

    #[test]
    fn numbers_may_arrive_without_punctuation_as_plivo_sends_them() {
        let tokens = StreamTokens::new(b"secret");
        let mut params = stream_params(&tokens, &claims());
        params.insert("from".into(), "15550001111".into());
        let proved = tokens.verify("CA1", &params, NOW).unwrap();
        assert_eq!(proved.from, "15550001111");
    }

    #[test]
    fn a_missing_or_malformed_token_is_refused() {
        let tokens = StreamTokens::new(b"secret");
        let mut params = stream_params(&tokens, &claims());
        params.remove(TOKEN_PARAM);
        assert_eq!(tokens.verify("CA1", &params, NOW), Err(TokenError::Missing));
        let good = tokens.issue(&claims());
        let mac = good.split_once('t').unwrap().1.to_owned();
        for bad in [
            String::new(),
            mac.clone(),
            format!("t{mac}"),
            format!("-5t{mac}"),
            format!("99999999999999999999999t{mac}"),
            format!("{}t{}", NOW + 60, &mac[..31]),
            format!("{}t{}zz", NOW + 60, &mac[..30]),
            format!("{}t{mac}0", NOW + 60),
        ] {
            params.insert(TOKEN_PARAM.into(), bad.clone());
            assert!(
                matches!(
                    tokens.verify("CA1", &params, NOW),
                    Err(TokenError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn changing_any_claim_is_refused_as_forged() {
        let tokens = StreamTokens::new(b"secret");
        let genuine = stream_params(&tokens, &claims());
        let altered = |change: &dyn Fn(&mut StreamParams)| {
            let mut params = genuine.clone();
            change(&mut params);
            params
        };
        let cases: Vec<(&str, StreamParams)> = vec![
            (
                "another record",
                altered(&|p| {
                    p.insert(RECORD_PARAM.into(), "c9999999999999999999999999".into());
                }),
            ),
            (
                "record removed",
                altered(&|p| {
                    p.remove(RECORD_PARAM);
                }),
            ),
            (
                "from",
                altered(&|p| {
                    p.insert("from".into(), "+15550001112".into());
                }),
            ),
            (
                "from removed",
                altered(&|p| {
                    p.remove("from");
                }),
            ),
            (
                "to",
                altered(&|p| {
                    p.insert("to".into(), "+15559990000".into());
                }),
            ),
            (
                "direction",
                altered(&|p| {
                    p.insert("direction".into(), "inbound".into());
                }),
            ),
            (
                "expiry pushed back",
                altered(&|p| {
                    let token = p[TOKEN_PARAM].replacen("1800000060", "1900000060", 1);
                    p.insert(TOKEN_PARAM.into(), token);
                }),
            ),
        ];
        for (what, params) in &cases {
            assert_eq!(
                tokens.verify("CA1", params, NOW),
                Err(TokenError::Forged),
                "{what}"
            );
        }
        assert_eq!(
            tokens.verify("CA2", &genuine, NOW),
            Err(TokenError::Forged),
            "another call's token"
        );
        assert_eq!(
            StreamTokens::new(b"other").verify("CA1", &genuine, NOW),
            Err(TokenError::Forged),
            "another key"
        );
        // A record added to a call that had none.
        let inbound = StreamClaims {
            record: None,
            ..claims()
        };
        let mut params = stream_params(&tokens, &inbound);
        params.insert(RECORD_PARAM.into(), String::new());
        assert_eq!(tokens.verify("CA1", &params, NOW), Err(TokenError::Forged));
    }

    #[test]
    fn odd_parameter_values_are_refused_before_the_signature_is_checked() {
        let tokens = StreamTokens::new(b"secret");
        let genuine = stream_params(&tokens, &claims());
        let mut params = genuine.clone();
        params.insert("from".into(), "+1555000\n1111".into());
        assert_eq!(
            tokens.verify("CA1", &params, NOW),
            Err(TokenError::BadParameter {
                param: "from",
                problem: "holding control characters"
            })
        );
        let mut params = genuine.clone();
        params.insert("direction".into(), "outbound-api".into());
        assert!(matches!(
            tokens.verify("CA1", &params, NOW),
            Err(TokenError::BadParameter {
                param: "direction",
                ..
            })
        ));
        let mut params = genuine;
        params.remove("direction");
        assert!(matches!(
            tokens.verify("CA1", &params, NOW),
            Err(TokenError::BadParameter {
                param: "direction",
                problem: "missing"
            })
        ));
    }

    #[test]
    fn an_expired_token_is_refused_and_says_so() {
        let tokens = StreamTokens::new(b"secret");
        let params = stream_params(&tokens, &claims());
        let error = tokens.verify("CA1", &params, NOW + 75).unwrap_err();
        assert_eq!(
            error,
            TokenError::Expired {
                expired_at: NOW + 60,
                late_by: 15
            }
        );
        assert!(error.to_string().contains("expired 15 s ago"), "{error}");
        assert!(matches!(
            tokens.verify("CA1", &params, NOW + 60),
            Err(TokenError::Expired { late_by: 0, .. })
        ));
    }

    #[test]
    fn refusals_explain_themselves_for_the_log() {
        let messages = [
            TokenError::Missing.to_string(),
            TokenError::Malformed("the expiry is not a number of seconds").to_string(),
            TokenError::Forged.to_string(),
        ];
        assert!(messages[0].contains("no `token` parameter"));
        assert!(messages[1].contains("expiry is not a number"));
        assert!(messages[2].contains("record, from, to and direction"));
    }
}
