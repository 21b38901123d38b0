//! The tools lines: `TOOLS_FILE` loads as the server loads it, and each HTTP tool's host
//! resolves (a typo in a host only shows during a call, as a tool error the caller hears).

use std::time::Duration;

use futures_util::future::join_all;

use super::Check;
use crate::config::ToolsConfig;
use crate::tools::{Tool, ToolBox};

const AREA: &str = "tools";

/// The tools lines, and the tool box for the Gemini check when it loaded.
pub(super) struct ToolsCheck {
    /// The report lines.
    pub checks: Vec<Check>,
    /// The tools a call would offer.
    pub toolbox: Option<ToolBox>,
}

/// Loads the tools and resolves each HTTP tool's host, every lookup within `limit`.
pub(super) async fn check(config: &ToolsConfig, limit: Duration) -> ToolsCheck {
    let toolbox = match ToolBox::load(config) {
        Ok(toolbox) => toolbox,
        Err(error) => {
            return ToolsCheck {
                checks: vec![Check::fail(AREA, error.to_string())],
                toolbox: None,
            };
        }
    };
    let names = tool_names(&toolbox);
    let http_tools: Vec<(String, String)> = names
        .iter()
        .filter_map(|name| match toolbox.find(name) {
            Some(Tool::Http(tool)) => Some((tool.name.clone(), tool.url.clone())),
            _ => None,
        })
        .collect();
    let failures: Vec<Check> = join_all(
        http_tools
            .iter()
            .map(|(name, url)| resolve(name, url, limit)),
    )
    .await
    .into_iter()
    .flatten()
    .collect();
    let checks = if failures.is_empty() {
        let listed = if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        };
        let resolved = match http_tools.len() {
            0 => String::new(),
            n => format!("; the hosts of {n} HTTP tool(s) resolve"),
        };
        vec![Check::ok(
            AREA,
            format!("{} offered: {listed}{resolved}", names.len()),
        )]
    } else {
        failures
    };
    ToolsCheck {
        checks,
        toolbox: Some(toolbox),
    }
}

fn tool_names(toolbox: &ToolBox) -> Vec<String> {
    toolbox
        .declarations()
        .iter()
        .filter_map(|declaration| declaration["name"].as_str().map(str::to_owned))
        .collect()
}

/// A FAIL line when the host of `url` does not resolve in time.
async fn resolve(name: &str, url: &str, limit: Duration) -> Option<Check> {
    let parsed = match reqwest::Url::parse(url) {
        Ok(parsed) => parsed,
        Err(e) => {
            return Some(Check::fail(
                AREA,
                format!("tool `{name}`: url {url:?} cannot be read ({e}); fix it in TOOLS_FILE"),
            ));
        }
    };
    let (Some(host), Some(port)) = (parsed.host_str(), parsed.port_or_known_default()) else {
        return Some(Check::fail(
            AREA,
            format!("tool `{name}`: url {url:?} names no host; fix it in TOOLS_FILE"),
        ));
    };
    // IPv6 literals come bracketed from the URL; the resolver wants them bare.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let problem = match tokio::time::timeout(limit, tokio::net::lookup_host((host, port))).await {
        Ok(Ok(addresses)) => match addresses.count() {
            0 => "has no address".to_owned(),
            _ => return None,
        },
        Ok(Err(e)) => format!("does not resolve ({e})"),
        Err(_) => format!("did not resolve within {}s", limit.as_secs()),
    };
    Some(Check::fail(
        AREA,
        format!(
            "tool `{name}`: host {host} {problem}; fix the tool's url in TOOLS_FILE, or the host's DNS"
        ),
    ))
}
