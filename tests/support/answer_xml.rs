//! Reading our answer webhook's XML the way a provider does (shared by the tests and the
//! load tool).

/// The stream parameters in answer XML: Twilio `<Parameter>`s or Plivo `extraHeaders`.
pub fn stream_params(xml: &str) -> Vec<(String, String)> {
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
