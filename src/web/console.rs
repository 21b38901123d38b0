//! The console's files, compiled into the binary (`assets/console/`): no Node, bundler or
//! file on disk is needed to serve it. Every answer carries a strict Content-Security-Policy:
//! scripts, styles, workers and connections only from this server, so the page makes no
//! third-party request and an injected script would not run.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The policy every console answer carries. `blob:` media is the recording player (fetched
/// with the bearer token, then played from memory); `data:` images are none today but keep
/// the browser's own icons working.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self' blob:; connect-src 'self'; worker-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file: its name under `/console/`, content type and bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_str!(concat!("../../assets/console/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the console.
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("console.css", "text/css; charset=utf-8"),
    asset!("icon.svg", "image/svg+xml"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("talk.js", JS),
    asset!("audio-worklet.js", JS),
    asset!("mulaw.js", JS),
    asset!("calls.js", JS),
    asset!("call.js", JS),
    asset!("start.js", JS),
];

/// The embedded file `name` as its content type and text, if there is one.
pub fn asset(name: &str) -> Option<(&'static str, &'static str)> {
    ASSETS
        .iter()
        .find(|asset| asset.name == name)
        .map(|asset| (asset.content_type, asset.body))
}

fn serve(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // The files change only with the binary: revalidate, so an upgrade shows at once.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `GET /`: the console's page. Signing in happens in the page; the page itself is public
/// (it holds no data), every request it makes needs the token.
pub async fn index() -> Response {
    match asset("index.html") {
        Some((content_type, body)) => serve(content_type, body),
        None => (StatusCode::INTERNAL_SERVER_ERROR, "the console is missing").into_response(),
    }
}

/// `GET /console/{file}`: a script, style sheet or icon of the console.
pub async fn file(Path(name): Path<String>) -> Response {
    match asset(&name) {
        Some((content_type, body)) => serve(content_type, body),
        None => (StatusCode::NOT_FOUND, "no such console file").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_the_page_names_is_embedded() {
        let (_, page) = asset("index.html").expect("index");
        for name in page
            .split("/console/")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
        {
            assert!(asset(name).is_some(), "index.html names missing {name}");
        }
    }

    #[test]
    fn scripts_import_only_embedded_modules() {
        for script in ASSETS.iter().filter(|a| a.content_type == JS) {
            for line in script.body.lines().filter(|l| l.starts_with("import ")) {
                let target = line
                    .rsplit("./")
                    .next()
                    .and_then(|rest| rest.split('\'').next())
                    .unwrap_or_default();
                assert!(asset(target).is_some(), "{} imports {target}", script.name);
            }
        }
    }
}
