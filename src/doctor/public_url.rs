//! The public URL line: when a server runs on this machine, `PUBLIC_URL/health` must reach
//! *that* server. Both answers carry the server's instance id, so a tunnel that still
//! points at an older process, or at another machine, shows as a mismatch.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::Check;
use crate::config::Config;

const AREA: &str = "public url";

/// What a `/health` request found.
enum Health {
    /// A gemini-phone server answered with this instance id.
    Instance(String),
    /// Something answered, but not as gemini-phone does.
    Foreign(String),
    /// Nothing answered.
    Unreachable(String),
}

/// Compares the instance behind `PUBLIC_URL` with the one listening on `PORT` here.
pub(super) async fn check(config: &Config, http: &reqwest::Client) -> Check {
    let local_url = format!("http://{}/health", local_address(config));
    let local = match health(http, &local_url).await {
        Health::Instance(id) => id,
        Health::Unreachable(_) => {
            return Check::skip(
                AREA,
                format!(
                    "no server answers on port {}: start it (`gemini-phone`), then run doctor again to check that PUBLIC_URL reaches it",
                    config.port
                ),
            );
        }
        Health::Foreign(what) => {
            return Check::fail(
                AREA,
                format!(
                    "something else listens on port {} ({what}): stop it, or set PORT to the port gemini-phone listens on",
                    config.port
                ),
            );
        }
    };
    let public_url = format!("{}/health", config.public_url);
    match health(http, &public_url).await {
        Health::Instance(id) if id == local => Check::ok(
            AREA,
            format!("{public_url} reaches this server (instance {local})"),
        ),
        Health::Instance(other) => Check::fail(
            AREA,
            format!(
                "{public_url} reaches another gemini-phone server (instance {other}, not this one's {local}): a stale tunnel URL? Start the tunnel to port {} (e.g. `ngrok http {}`), put its URL in PUBLIC_URL and restart the server",
                config.port, config.port
            ),
        ),
        Health::Foreign(what) => Check::fail(
            AREA,
            format!(
                "{public_url} answers, but not as gemini-phone ({what}): point the tunnel or proxy at port {} and put its URL in PUBLIC_URL",
                config.port
            ),
        ),
        Health::Unreachable(why) => Check::fail(
            AREA,
            format!(
                "{public_url} cannot be reached ({why}): start the tunnel to port {} (e.g. `ngrok http {}`) and put its current URL in PUBLIC_URL",
                config.port, config.port
            ),
        ),
    }
}

/// Where the local server is reached: its `HOST`, or loopback when it listens everywhere.
fn local_address(config: &Config) -> SocketAddr {
    let ip = match config.host {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, config.port)
}

async fn health(http: &reqwest::Client, url: &str) -> Health {
    let response = match http.get(url).send().await {
        Ok(response) => response,
        Err(e) => return Health::Unreachable(plain_error(&e)),
    };
    let status = response.status();
    if !status.is_success() {
        return Health::Foreign(format!("HTTP {}", status.as_u16()));
    }
    match response.json::<serde_json::Value>().await {
        Ok(body) => match body["instance"].as_str() {
            Some(id) => Health::Instance(id.to_owned()),
            None => Health::Foreign("its /health names no instance".to_owned()),
        },
        Err(_) => Health::Foreign("its /health is not JSON".to_owned()),
    }
}

/// reqwest's error with its causes, which hold the useful part (refused, DNS, TLS).
fn plain_error(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
