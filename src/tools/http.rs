//! The user's HTTP tools: declared in `TOOLS_FILE` (JSON or TOML), called with a POST of
//! `{"call_id","name","args","caller"}`, answered with the endpoint's JSON.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::schema::{self, GeminiParameters};
use crate::config::ConfigError;

/// Used when a tool gives no `timeout_ms`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// No tool may keep a caller waiting longer than this.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// One HTTP tool as declared in the tools file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTool {
    /// Function name the model calls.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON Schema of its arguments.
    #[serde(default)]
    pub parameters: Option<Value>,
    /// Where to POST the call.
    pub url: String,
    /// Extra request headers; `${VAR}` is replaced by the environment variable.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// How long to wait for an answer, in milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// `parameters` as the Live API takes them, converted once when the file is loaded.
    #[serde(skip)]
    gemini_parameters: GeminiParameters,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolsFile {
    tools: Vec<HttpTool>,
}

/// Who is on the call, sent to every HTTP tool.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CallerInfo {
    /// Calling number.
    pub from: String,
    /// Called number.
    pub to: String,
    /// `inbound` or `outbound`.
    pub direction: String,
}

#[derive(Serialize)]
struct ToolRequest<'a> {
    call_id: &'a str,
    name: &'a str,
    args: &'a Value,
    caller: &'a CallerInfo,
}

fn file_error(problem: String) -> ConfigError {
    ConfigError {
        var: "TOOLS_FILE",
        problem,
    }
}

/// Reads and checks a tools file; `${VAR}` in headers comes from the environment.
pub fn load_file(path: &Path) -> Result<Vec<HttpTool>, ConfigError> {
    load_file_with(path, |var| std::env::var(var).ok())
}

/// [`load_file`] with the environment looked up through `env`.
fn load_file_with(
    path: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<HttpTool>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| file_error(format!("cannot read {}: {e}", path.display())))?;
    let is_toml = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
    let file: ToolsFile = if is_toml {
        toml::from_str(&text)
            .map_err(|e| file_error(format!("{} is not a valid tools file: {e}", path.display())))?
    } else {
        serde_json::from_str(&text)
            .map_err(|e| file_error(format!("{} is not a valid tools file: {e}", path.display())))?
    };
    let mut tools = file.tools;
    for (i, tool) in tools.iter_mut().enumerate() {
        if !is_accepted_function_name(&tool.name) {
            return Err(file_error(format!(
                "tool #{} has name {:?}: use 1-64 letters, digits, '_' or '-', starting with \
                 a letter or '_'",
                i + 1,
                tool.name
            )));
        }
        if !(tool.url.starts_with("https://") || tool.url.starts_with("http://")) {
            return Err(file_error(format!(
                "tool `{}` has url {:?}: use an http(s) URL",
                tool.name, tool.url
            )));
        }
        if let Some(parameters) = &tool.parameters {
            tool.gemini_parameters = schema::convert_parameters(parameters)
                .map_err(|e| file_error(format!("tool `{}`, {e}", tool.name)))?;
        }
        for value in tool.headers.values_mut() {
            *value = expand_env(value, &env).map_err(|var| {
                file_error(format!(
                    "tool `{}` uses ${{{var}}} in a header, but {var} is not set",
                    tool.name
                ))
            })?;
        }
    }
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(file_error(format!("two tools are named `{}`", pair[0])));
    }
    Ok(tools)
}

/// Gemini's rule for function names (a letter or `_` first), kept to the characters and
/// length every API version has accepted.
fn is_accepted_function_name(name: &str) -> bool {
    let starts_well = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    starts_well
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Replaces `${VAR}` with the environment's value, so secrets stay out of the file.
fn expand_env(value: &str, env: &impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start + 2..].find('}') else {
            break;
        };
        let var = &rest[start + 2..start + 2 + len];
        out.push_str(&rest[..start]);
        out.push_str(&env(var).ok_or_else(|| var.to_owned())?);
        rest = &rest[start + 3 + len..];
    }
    out.push_str(rest);
    Ok(out)
}

impl HttpTool {
    /// The function declaration for the session setup.
    pub fn declaration(&self) -> Value {
        let mut declaration = json!({"name": self.name, "description": self.description});
        if let Some(parameters) = &self.gemini_parameters.schema {
            declaration["parameters"] = parameters.clone();
        }
        declaration
    }

    /// The model's arguments with enum values given back the JSON type the tool's schema
    /// declared (Gemini only offers text enums, so it answers `"2"` for an integer 2).
    fn typed_args<'a>(&self, args: &'a Value) -> Cow<'a, Value> {
        let restorer = &self.gemini_parameters.restorer;
        if restorer.is_empty() {
            return Cow::Borrowed(args);
        }
        let mut typed = args.clone();
        restorer.restore(&mut typed);
        Cow::Owned(typed)
    }

    fn timeout(&self) -> Duration {
        self.timeout_ms
            .map_or(DEFAULT_TIMEOUT, Duration::from_millis)
            .min(MAX_TIMEOUT)
    }

    /// Calls the endpoint. Always returns a response object for the model: the endpoint's
    /// JSON, or `{"error": …}` that says what failed so the model can tell the caller.
    pub async fn call(
        &self,
        http: &reqwest::Client,
        call_id: &str,
        args: &Value,
        caller: &CallerInfo,
    ) -> Value {
        let args = self.typed_args(args);
        let body = ToolRequest {
            call_id,
            name: &self.name,
            args: &args,
            caller,
        };
        let mut request = http.post(&self.url).timeout(self.timeout()).json(&body);
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) if e.is_timeout() => {
                return json!({"error": format!("the {} service did not answer within {:?}", self.name, self.timeout())});
            }
            Err(e) => {
                tracing::warn!(tool = %self.name, error = %e, "HTTP tool unreachable");
                return json!({"error": format!("the {} service could not be reached", self.name)});
            }
        };
        let status = response.status();
        let text = match response.text().await {
            Ok(text) => text,
            Err(e) if e.is_timeout() => {
                return json!({"error": format!("the {} service did not answer within {:?}", self.name, self.timeout())});
            }
            Err(_) => String::new(),
        };
        if !status.is_success() {
            tracing::warn!(tool = %self.name, %status, "HTTP tool failed");
            return json!({"error": format!("the {} service failed with HTTP {}", self.name, status.as_u16())});
        }
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(object)) => Value::Object(object),
            Ok(other) => json!({"result": other}),
            Err(_) => json!({"result": text}),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn json_and_toml_files_load() {
        let (_d, json_path) = write(
            "tools.json",
            r#"{"tools":[{"name":"order_status","description":"d","url":"https://x/o","parameters":{"type":"object"},"timeout_ms":500}]}"#,
        );
        let tools = load_file(&json_path).unwrap();
        assert_eq!(tools[0].timeout(), Duration::from_millis(500));
        let (_d, toml_path) = write(
            "tools.toml",
            "[[tools]]\nname = \"book\"\ndescription = \"d\"\nurl = \"http://127.0.0.1/b\"\n[tools.headers]\nX-Key = \"k\"\n",
        );
        let tools = load_file(&toml_path).unwrap();
        assert_eq!(tools[0].headers["X-Key"], "k");
        assert_eq!(tools[0].timeout(), DEFAULT_TIMEOUT);
    }

    #[test]
    fn bad_files_name_the_problem() {
        for (text, needle) in [
            (
                r#"{"tools":[{"name":"a b","description":"d","url":"https://x"}]}"#,
                "\"a b\"",
            ),
            (
                r#"{"tools":[{"name":"2fa_check","description":"d","url":"https://x"}]}"#,
                "\"2fa_check\"",
            ),
            (
                r#"{"tools":[{"name":"lookup_order","description":"d","url":"https://x","parameters":{"type":"object","properties":{"items":{"type":"array","items":{"type":"object","properties":{"status":{"type":"object"}}}}}}}]}"#,
                "tool `lookup_order`, parameter `items[].status`: an object needs `properties`",
            ),
            (
                r#"{"tools":[{"name":"a","description":"d","url":"ftp://x"}]}"#,
                "ftp://x",
            ),
            (
                r#"{"tools":[{"name":"a","description":"d","url":"https://x","colour":1}]}"#,
                "colour",
            ),
            (
                r#"{"tools":[{"name":"a","description":"d","url":"https://x"},{"name":"a","description":"d","url":"https://y"}]}"#,
                "two tools",
            ),
            (
                r#"{"tools":[{"name":"a","description":"d","url":"https://x","headers":{"K":"${GEMINI_PHONE_SURELY_UNSET}"}}]}"#,
                "GEMINI_PHONE_SURELY_UNSET",
            ),
        ] {
            let (_d, path) = write("t.json", text);
            let err = load_file(&path).unwrap_err();
            assert_eq!(err.var, "TOOLS_FILE");
            assert!(
                err.problem.contains(needle),
                "{} should mention {needle}",
                err.problem
            );
        }
    }

    #[test]
    fn shipped_example_loads() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/prompts/tools.example.json"
        ));
        let err = load_file_with(path, |_| None).unwrap_err();
        assert!(err.problem.contains("ORDERS_API_TOKEN"), "{}", err.problem);
        let tools = load_file_with(path, |var| {
            (var == "ORDERS_API_TOKEN").then(|| "t0k".to_owned())
        })
        .unwrap();
        let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["order_status", "schedule_callback"]);
        assert_eq!(tools[0].headers["Authorization"], "Bearer t0k");
        assert_eq!(
            tools[0].declaration()["parameters"]["properties"]["order_number"]["type"],
            "STRING"
        );
    }
}
