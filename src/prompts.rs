//! System-prompt templates: `PROMPTS_DIR/<name>.md` with `{{placeholders}}` filled from a
//! call's `vars`.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// Why a prompt could not be rendered; the message is shown to the API caller.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PromptError {
    /// The name is not a plain file name (letters, digits, `-`, `_`).
    #[error("prompt name `{0}` is not valid: use letters, digits, '-' and '_' only")]
    BadName(String),
    /// No such template file.
    #[error("unknown prompt template `{0}`: no {0}.md in the prompts folder")]
    Unknown(String),
    /// Placeholders without a value in `vars`.
    #[error("prompt `{template}` needs values for: {}", names.join(", "))]
    MissingVars {
        /// The template.
        template: String,
        /// Placeholder names without a value.
        names: Vec<String>,
    },
    /// The template exists but could not be read.
    #[error("prompt `{template}` could not be read: {reason}")]
    Unreadable {
        /// The template.
        template: String,
        /// The I/O error.
        reason: String,
    },
}

/// The folder of templates.
#[derive(Debug, Clone)]
pub struct Prompts {
    dir: PathBuf,
}

impl Prompts {
    /// Templates in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Renders template `name` with `vars`.
    pub fn render(&self, name: &str, vars: &Map<String, Value>) -> Result<String, PromptError> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(PromptError::BadName(name.to_owned()));
        }
        let path = self.dir.join(format!("{name}.md"));
        let template = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => PromptError::Unknown(name.to_owned()),
            _ => PromptError::Unreadable {
                template: name.to_owned(),
                reason: e.to_string(),
            },
        })?;
        render(&template, vars).map_err(|names| PromptError::MissingVars {
            template: name.to_owned(),
            names,
        })
    }
}

/// Fills `{{name}}` placeholders (spaces inside the braces allowed); returns the names that
/// have no value, each once, in order of appearance.
pub fn render(template: &str, vars: &Map<String, Value>) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(template.len());
    let mut missing: Vec<String> = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        let Some(close) = rest[open + 2..].find("}}") else {
            break;
        };
        let name = rest[open + 2..open + 2 + close].trim();
        out.push_str(&rest[..open]);
        let is_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !is_name {
            // Not a placeholder (e.g. literal braces in prose): keep it as written.
            out.push_str(&rest[open..open + 4 + close]);
        } else {
            match vars.get(name) {
                Some(Value::String(s)) => out.push_str(s),
                Some(Value::Null) | None => {
                    if !missing.iter().any(|m| m == name) {
                        missing.push(name.to_owned());
                    }
                }
                Some(other) => out.push_str(&other.to_string()),
            }
        }
        rest = &rest[open + 4 + close..];
    }
    out.push_str(rest);
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn placeholders_are_filled() {
        let out = render(
            "Hi {{name}}, {{ n }} items{{name}}",
            &vars(json!({"name": "Asha", "n": 3})),
        );
        assert_eq!(out.unwrap(), "Hi Asha, 3 itemsAsha");
    }

    #[test]
    fn missing_values_are_named_once() {
        let err = render(
            "{{a}} {{b}} {{a}} {{c}}",
            &vars(json!({"b": "x", "c": null})),
        )
        .unwrap_err();
        assert_eq!(err, ["a", "c"]);
    }

    #[test]
    fn non_placeholders_stay() {
        assert_eq!(
            render("{{ }} {{x y}} {{", &Map::new()).unwrap(),
            "{{ }} {{x y}} {{"
        );
    }

    #[test]
    fn shipped_outbound_template_renders() {
        let prompts = Prompts::new(concat!(env!("CARGO_MANIFEST_DIR"), "/prompts"));
        let err = prompts.render("outbound", &Map::new()).unwrap_err();
        let PromptError::MissingVars { names, .. } = err else {
            panic!("{err:?}")
        };
        assert_eq!(names, ["company", "name", "reason"]);
        let text = prompts
            .render(
                "outbound",
                &vars(json!({"company": "Acme", "name": "Asha", "reason": "a delivery"})),
            )
            .unwrap();
        assert!(text.contains("calling Asha about the following: a delivery"));
        assert!(!text.contains("{{"));
    }

    #[test]
    fn names_cannot_escape_the_folder() {
        let prompts = Prompts::new("prompts");
        assert!(matches!(
            prompts.render("../etc/passwd", &Map::new()),
            Err(PromptError::BadName(_))
        ));
        assert!(matches!(
            prompts.render("nope", &Map::new()),
            Err(PromptError::Unknown(_))
        ));
    }
}
