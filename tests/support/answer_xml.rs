//! Reading our answer webhook's XML the way a provider does (shared by the tests and the
//! load tool).

/// `<Stream>` attributes Twilio's `<Connect><Stream>` takes.
const TWILIO_STREAM_ATTRIBUTES: &[&str] = &[
    "url",
    "name",
    "track",
    "statusCallback",
    "statusCallbackMethod",
];
/// `<Stream>` attributes Plivo's audio stream takes.
const PLIVO_STREAM_ATTRIBUTES: &[&str] = &[
    "bidirectional",
    "audioTrack",
    "streamTimeout",
    "statusCallbackUrl",
    "statusCallbackMethod",
    "contentType",
    "extraHeaders",
    "keepCallAlive",
    "noiseCancellation",
    "noiseCancellationLevel",
];

/// The stream parameters in answer XML: Twilio `<Parameter>`s or Plivo `extraHeaders`.
///
/// Panics, naming it, on a `<Stream>` attribute the provider does not take: the real one
/// refuses such a document, so a test must not pass with it.
pub fn stream_params(xml: &str) -> Vec<(String, String)> {
    check_stream_attributes(xml);
    let attr = |text: &str, name: &str| -> Option<String> {
        let start = text.find(&format!("{name}=\""))? + name.len() + 2;
        Some(text[start..].split('"').next()?.to_owned())
    };
    if let Some(extra) = attr(xml, "extraHeaders") {
        return extra
            .split(',')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
    }
    xml.split("<Parameter ")
        .skip(1)
        .filter_map(|p| Some((attr(p, "name")?, attr(p, "value")?)))
        .collect()
}

/// Checks the attribute names of the `<Stream>` element, if any (Twilio's is inside
/// `<Connect>`, Plivo's is not).
fn check_stream_attributes(xml: &str) {
    let Some(start) = xml.find("<Stream ") else {
        return;
    };
    let tag = xml[start + "<Stream ".len()..]
        .split('>')
        .next()
        .unwrap_or_default();
    let allowed = if xml.contains("<Connect>") {
        TWILIO_STREAM_ATTRIBUTES
    } else {
        PLIVO_STREAM_ATTRIBUTES
    };
    // Attribute names are what precedes each `="`; values hold no `"` (they are escaped).
    for (i, part) in tag.split('"').enumerate() {
        if i % 2 == 1 {
            continue;
        }
        let name = part
            .trim()
            .trim_end_matches('=')
            .trim_end_matches('/')
            .trim();
        assert!(
            name.is_empty() || allowed.contains(&name),
            "the provider refuses <Stream> attribute `{name}`: {xml}"
        );
    }
}
