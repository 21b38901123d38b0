//! Function calling: what the agent may do besides talking.
//!
//! Built-in tools end, transfer or text; the user's HTTP tools (from `TOOLS_FILE`) look
//! things up in their own systems. All are declared to Gemini in `setup.tools`.

pub mod http;
pub mod schema;

use std::sync::Arc;

use serde_json::{Value, json};

use crate::config::{ConfigError, ToolsConfig};
pub use http::{CallerInfo, HttpTool};

/// A tool built into the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// Say goodbye, let it play, hang up.
    EndCall,
    /// Hand the caller over to a person.
    TransferCall,
    /// Text the caller.
    SendSms,
    /// Press keys: DTMF tones into the call (phone menus on outbound calls).
    SendDtmf,
}

impl Builtin {
    /// The function name the model calls.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::EndCall => "end_call",
            Builtin::TransferCall => "transfer_call",
            Builtin::SendSms => "send_sms",
            Builtin::SendDtmf => "send_dtmf",
        }
    }

    fn declaration(self) -> Value {
        match self {
            Builtin::EndCall => json!({
                "name": "end_call",
                "description": "Hang up the phone call. Say a short goodbye first; the call ends once it has been heard.",
                "parameters": {"type": "OBJECT", "properties": {
                    "reason": {"type": "STRING", "description": "Why the call is ending, for the call record."}
                }}
            }),
            Builtin::TransferCall => json!({
                "name": "transfer_call",
                "description": "Transfer the caller to a human colleague. Tell the caller you are transferring them first.",
                "parameters": {"type": "OBJECT", "properties": {
                    "number": {"type": "STRING", "description": "Optional E.164 number to transfer to; leave empty for the default team."},
                    "reason": {"type": "STRING", "description": "Why the caller is being transferred."}
                }}
            }),
            Builtin::SendSms => json!({
                "name": "send_sms",
                "description": "Send a text message to the caller's phone (for example a confirmation, an address or a link).",
                "parameters": {"type": "OBJECT", "properties": {
                    "body": {"type": "STRING", "description": "The message text, under 300 characters."},
                    "to": {"type": "STRING", "description": "Optional E.164 number; leave empty to text the caller."}
                }, "required": ["body"]}
            }),
            Builtin::SendDtmf => json!({
                "name": "send_dtmf",
                "description": "Press keys on the phone keypad, for example to choose an option in an automated phone menu or to enter a number it asks for. The tones play in the call; then listen to what the menu says next.",
                "parameters": {"type": "OBJECT", "properties": {
                    "digits": {"type": "STRING", "description": "The keys to press in order: 0-9, * and # (A-D exist but are rarely used), at most 32, e.g. \"2\" or \"40213#\"."}
                }, "required": ["digits"]}
            }),
        }
    }
}

/// A tool the model may call.
#[derive(Debug, Clone)]
pub enum Tool {
    /// Built into the server.
    Builtin(Builtin),
    /// One of the user's HTTP tools.
    Http(Arc<HttpTool>),
}

/// The tools offered on every call of this deployment.
#[derive(Debug, Clone, Default)]
pub struct ToolBox {
    builtins: Vec<Builtin>,
    http: Vec<Arc<HttpTool>>,
    transfer_number: Option<String>,
    allowed_numbers: Vec<String>,
}

impl ToolBox {
    /// Builds the tool box, reading `TOOLS_FILE` if set.
    pub fn load(config: &ToolsConfig) -> Result<Self, ConfigError> {
        let builtins = [
            (config.end_call, Builtin::EndCall),
            (config.transfer_call, Builtin::TransferCall),
            (config.send_sms, Builtin::SendSms),
            (config.send_dtmf, Builtin::SendDtmf),
        ]
        .into_iter()
        .filter_map(|(on, tool)| on.then_some(tool))
        .collect::<Vec<_>>();
        let http = match &config.tools_file {
            Some(path) => http::load_file(path)?,
            None => Vec::new(),
        };
        if let Some(clash) = http
            .iter()
            .find(|t| builtins.iter().any(|b| b.name() == t.name))
        {
            return Err(ConfigError {
                var: "TOOLS_FILE",
                problem: format!(
                    "tool `{}` has the name of a built-in tool; rename it",
                    clash.name
                ),
            });
        }
        Ok(Self {
            builtins,
            http: http.into_iter().map(Arc::new).collect(),
            transfer_number: config.transfer_number.clone(),
            allowed_numbers: config.allowed_numbers.clone(),
        })
    }

    /// `functionDeclarations` for the session setup.
    pub fn declarations(&self) -> Vec<Value> {
        self.builtins
            .iter()
            .map(|b| b.declaration())
            .chain(self.http.iter().map(|t| t.declaration()))
            .collect()
    }

    /// The tool called `name`, if offered.
    pub fn find(&self, name: &str) -> Option<Tool> {
        if let Some(builtin) = self.builtins.iter().find(|b| b.name() == name) {
            return Some(Tool::Builtin(*builtin));
        }
        self.http
            .iter()
            .find(|t| t.name == name)
            .map(|t| Tool::Http(Arc::clone(t)))
    }

    /// Where a transfer goes: the requested number if it is allowed, else the default.
    pub fn transfer_target(&self, requested: Option<&str>) -> Result<String, String> {
        match requested.map(str::trim).filter(|n| !n.is_empty()) {
            Some(number) if self.is_allowed(number) => Ok(number.to_owned()),
            Some(number) => Err(format!(
                "{number} is not a number calls may be transferred to"
            )),
            None => self
                .transfer_number
                .clone()
                .ok_or_else(|| "no transfer number is configured".to_owned()),
        }
    }

    /// Who a text goes to: the caller, or a requested number on the allow-list.
    pub fn sms_target(&self, requested: Option<&str>, caller: &str) -> Result<String, String> {
        match requested.map(str::trim).filter(|n| !n.is_empty()) {
            Some(number) if number == caller || self.is_allowed(number) => Ok(number.to_owned()),
            Some(number) => Err(format!("{number} is not a number texts may be sent to")),
            None if caller.is_empty() => Err("the caller's number is unknown".to_owned()),
            None => Ok(caller.to_owned()),
        }
    }

    fn is_allowed(&self, number: &str) -> bool {
        self.transfer_number.as_deref() == Some(number)
            || self.allowed_numbers.iter().any(|n| n == number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toolbox() -> ToolBox {
        ToolBox::load(&ToolsConfig {
            end_call: true,
            transfer_call: true,
            send_sms: true,
            send_dtmf: true,
            transfer_number: Some("+15550100000".into()),
            allowed_numbers: vec!["+15550100001".into()],
            tools_file: None,
        })
        .unwrap()
    }

    #[test]
    fn builtins_are_declared_and_found() {
        let tools = toolbox();
        let names: Vec<String> = tools
            .declarations()
            .iter()
            .map(|d| d["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            names,
            ["end_call", "transfer_call", "send_sms", "send_dtmf"]
        );
        assert!(matches!(
            tools.find("end_call"),
            Some(Tool::Builtin(Builtin::EndCall))
        ));
        assert!(tools.find("launch").is_none());
    }

    #[test]
    fn numbers_outside_the_allow_list_are_refused() {
        let tools = toolbox();
        assert_eq!(tools.transfer_target(None).unwrap(), "+15550100000");
        assert_eq!(
            tools.transfer_target(Some("+15550100001")).unwrap(),
            "+15550100001"
        );
        assert!(tools.transfer_target(Some("+19005550000")).is_err());
        assert_eq!(
            tools.sms_target(None, "+15557770000").unwrap(),
            "+15557770000"
        );
        assert_eq!(
            tools
                .sms_target(Some("+15557770000"), "+15557770000")
                .unwrap(),
            "+15557770000"
        );
        assert!(
            tools
                .sms_target(Some("+19005550000"), "+15557770000")
                .is_err()
        );
        assert!(tools.sms_target(None, "").is_err());
    }
}
