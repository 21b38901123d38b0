//! The Live API's rules for `setup.tools`, applied by the fake Gemini the way the real service
//! applies them: one field it does not take and the whole setup is refused (close 1007).
//!
//! Sources: the v1beta protos (`google.ai.generativelanguage.v1beta.Schema`,
//! `FunctionDeclaration`, `Tool`) and their field lists in Google's v1beta clients; the
//! google-genai SDK's `types.py` docs (parameter names); messages the real service sends,
//! quoted in public bug reports (`Unknown name "additionalProperties" at …: Cannot find
//! field.`, `…items: missing field.`, `…properties: should be non-empty for OBJECT type`,
//! `…required[1]: property is not defined`, `…format: only 'enum' and 'date-time' are
//! supported for STRING type`, `…name: Invalid function name…`). Where no real message was
//! found the text is the fake's own, in the same `* BidiGenerateContentRequest.<path>: …` form.
//! Keys are accepted in camelCase or snake_case, as proto JSON parsing does; paths are
//! written in snake_case, as the real messages are.

use serde_json::{Map, Value};

/// Fields of `Tool` (v1beta).
const TOOL_FIELDS: [&str; 8] = [
    "function_declarations",
    "google_search",
    "google_search_retrieval",
    "code_execution",
    "url_context",
    "computer_use",
    "file_search",
    "google_maps",
];

/// Fields of `FunctionDeclaration` (v1beta plus the Live-only `behavior`).
const DECLARATION_FIELDS: [&str; 7] = [
    "name",
    "description",
    "parameters",
    "parameters_json_schema",
    "response",
    "response_json_schema",
    "behavior",
];

/// Fields of `Schema` (v1beta). Not here, so refused: `additional_properties`, `ref`, `defs`
/// (Vertex only) and everything JSON Schema has beyond OpenAPI's subset.
const SCHEMA_FIELDS: [&str; 22] = [
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "items",
    "max_items",
    "min_items",
    "properties",
    "required",
    "min_properties",
    "max_properties",
    "min_length",
    "max_length",
    "pattern",
    "example",
    "any_of",
    "property_ordering",
    "default",
    "minimum",
    "maximum",
];

/// Values of the `Type` enum a field may have.
const TYPES: [&str; 6] = ["STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT"];

/// Values of `FunctionDeclaration.behavior`.
const BEHAVIORS: [&str; 3] = ["UNSPECIFIED", "BLOCKING", "NON_BLOCKING"];

const INVALID_FUNCTION_NAME: &str = "Invalid function name. Must start with a letter or an \
    underscore. Must be alphameric (a-z, A-Z, 0-9), underscores (_), dots (.), colons (:), or \
    dashes (-), with a maximum length of 64.";

/// Checks `setup.tools` of a setup object (the value under `"setup"`); `Err` is the reason
/// the real service would close the socket with (before truncation to a close frame).
pub fn check_setup_tools(setup: &Value) -> Result<(), String> {
    let Some(tools) = field(setup, "tools") else {
        return Ok(());
    };
    let tools = tools
        .as_array()
        .ok_or_else(|| invalid_value("setup.tools", "Tool", tools))?;
    for (i, tool) in tools.iter().enumerate() {
        check_tool(tool, &format!("setup.tools[{i}]"))?;
    }
    Ok(())
}

/// Fields of `RealtimeInputConfig`.
const REALTIME_INPUT_CONFIG_FIELDS: [&str; 3] = [
    "automatic_activity_detection",
    "activity_handling",
    "turn_coverage",
];

/// Fields of `AutomaticActivityDetection`.
const ACTIVITY_DETECTION_FIELDS: [&str; 5] = [
    "disabled",
    "start_of_speech_sensitivity",
    "end_of_speech_sensitivity",
    "prefix_padding_ms",
    "silence_duration_ms",
];

/// Values of `StartSensitivity` and `EndSensitivity`.
const START_SENSITIVITIES: [&str; 3] = [
    "START_SENSITIVITY_UNSPECIFIED",
    "START_SENSITIVITY_HIGH",
    "START_SENSITIVITY_LOW",
];
const END_SENSITIVITIES: [&str; 3] = [
    "END_SENSITIVITY_UNSPECIFIED",
    "END_SENSITIVITY_HIGH",
    "END_SENSITIVITY_LOW",
];

/// Values of `ActivityHandling` and `TurnCoverage`.
const ACTIVITY_HANDLINGS: [&str; 3] = [
    "ACTIVITY_HANDLING_UNSPECIFIED",
    "START_OF_ACTIVITY_INTERRUPTS",
    "NO_INTERRUPTION",
];
const TURN_COVERAGES: [&str; 4] = [
    "TURN_COVERAGE_UNSPECIFIED",
    "TURN_INCLUDES_ONLY_ACTIVITY",
    "TURN_INCLUDES_ALL_INPUT",
    "TURN_INCLUDES_AUDIO_ACTIVITY_AND_ALL_VIDEO",
];

/// Fields of `ProactivityConfig`.
const PROACTIVITY_FIELDS: [&str; 2] = ["proactive_audio", "proactive_video"];

/// Checks `setup.realtimeInputConfig`, `setup.generationConfig.enableAffectiveDialog` and
/// `setup.proactivity` the way the service does: known fields, enum values and JSON types
/// first; then the expressive options, which AI Studio has only on v1alpha (`path` is the
/// upgrade request's path; Vertex, `vertex`, takes them on v1beta1) and only the 2.5
/// native-audio models take (3.x models refuse them).
pub fn check_setup_options(setup: &Value, path: &str, vertex: bool) -> Result<(), String> {
    if let Some(config) = field(setup, "realtime_input_config") {
        check_realtime_input_config(config, "setup.realtime_input_config")?;
    }
    let alpha_fields = vertex || path.contains(".v1alpha.");
    let model = setup["model"].as_str().unwrap_or_default();
    let expressive_model = model.contains("native-audio") && !model.contains("gemini-3");
    if let Some(generation) = field(setup, "generation_config")
        && let Some(affective) = field(generation, "enable_affective_dialog")
    {
        let at = "setup.generation_config";
        if !alpha_fields {
            return Err(unknown_name("enableAffectiveDialog", at));
        }
        if !affective.is_boolean() {
            return Err(invalid_value(
                &format!("{at}.enable_affective_dialog"),
                "TYPE_BOOL",
                affective,
            ));
        }
        if !expressive_model {
            return Err(refusal(
                &format!("{at}.enable_affective_dialog"),
                "affective dialog is not supported by this model.",
            ));
        }
    }
    if let Some(proactivity) = field(setup, "proactivity") {
        let at = "setup.proactivity";
        if !alpha_fields {
            return Err(unknown_name("proactivity", "setup"));
        }
        let node = object(proactivity, at, "ProactivityConfig")?;
        known_fields(node, at, &PROACTIVITY_FIELDS)?;
        for (key, value) in node {
            if !value.is_boolean() {
                return Err(invalid_value(
                    &format!("{at}.{}", snake_case(key)),
                    "TYPE_BOOL",
                    value,
                ));
            }
        }
        if !expressive_model {
            return Err(refusal(at, "proactivity is not supported by this model."));
        }
    }
    Ok(())
}

fn check_realtime_input_config(config: &Value, path: &str) -> Result<(), String> {
    let node = object(config, path, "RealtimeInputConfig")?;
    known_fields(node, path, &REALTIME_INPUT_CONFIG_FIELDS)?;
    enum_field(
        node,
        "activity_handling",
        path,
        "ActivityHandling",
        &ACTIVITY_HANDLINGS,
    )?;
    enum_field(node, "turn_coverage", path, "TurnCoverage", &TURN_COVERAGES)?;
    let Some(detection) = field_in(node, "automatic_activity_detection") else {
        return Ok(());
    };
    let path = format!("{path}.automatic_activity_detection");
    let node = object(detection, &path, "AutomaticActivityDetection")?;
    known_fields(node, &path, &ACTIVITY_DETECTION_FIELDS)?;
    enum_field(
        node,
        "start_of_speech_sensitivity",
        &path,
        "StartSensitivity",
        &START_SENSITIVITIES,
    )?;
    enum_field(
        node,
        "end_of_speech_sensitivity",
        &path,
        "EndSensitivity",
        &END_SENSITIVITIES,
    )?;
    if let Some(disabled) = field_in(node, "disabled")
        && !disabled.is_boolean()
    {
        return Err(invalid_value(
            &format!("{path}.disabled"),
            "TYPE_BOOL",
            disabled,
        ));
    }
    for name in ["prefix_padding_ms", "silence_duration_ms"] {
        if let Some(value) = field_in(node, name)
            && !is_int32(value)
        {
            return Err(invalid_value(
                &format!("{path}.{name}"),
                "TYPE_INT32",
                value,
            ));
        }
    }
    Ok(())
}

/// An enum field's value must be one of `values`, written as its name.
fn enum_field(
    node: &Map<String, Value>,
    name: &str,
    path: &str,
    enum_name: &str,
    values: &[&str],
) -> Result<(), String> {
    match field_in(node, name) {
        Some(value) if !value.as_str().is_some_and(|v| values.contains(&v)) => {
            Err(invalid_value(&format!("{path}.{name}"), enum_name, value))
        }
        _ => Ok(()),
    }
}

/// An int32 in proto JSON: a whole number in range, or one written as a decimal string.
fn is_int32(value: &Value) -> bool {
    let fits = |n: i64| i32::try_from(n).is_ok();
    value.as_i64().is_some_and(fits)
        || value
            .as_str()
            .and_then(|s| s.parse::<i64>().ok())
            .is_some_and(fits)
}

fn unknown_name(name: &str, path: &str) -> String {
    format!(
        "Invalid JSON payload received. Unknown name \"{name}\" at '{path}': Cannot find field."
    )
}

fn check_tool(tool: &Value, path: &str) -> Result<(), String> {
    let tool = object(tool, path, "Tool")?;
    known_fields(tool, path, &TOOL_FIELDS)?;
    let Some(declarations) = field_in(tool, "function_declarations") else {
        return Ok(());
    };
    let path = format!("{path}.function_declarations");
    let declarations = declarations
        .as_array()
        .ok_or_else(|| invalid_value(&path, "FunctionDeclaration", declarations))?;
    for (i, declaration) in declarations.iter().enumerate() {
        check_declaration(declaration, &format!("{path}[{i}]"))?;
    }
    Ok(())
}

fn check_declaration(declaration: &Value, path: &str) -> Result<(), String> {
    let declaration = object(declaration, path, "FunctionDeclaration")?;
    known_fields(declaration, path, &DECLARATION_FIELDS)?;
    match field_in(declaration, "name") {
        None => return Err(refusal(&format!("{path}.name"), "missing field.")),
        Some(Value::String(name)) if is_function_name(name) => {}
        Some(Value::String(_)) => {
            return Err(refusal(&format!("{path}.name"), INVALID_FUNCTION_NAME));
        }
        Some(other) => return Err(invalid_value(&format!("{path}.name"), "TYPE_STRING", other)),
    }
    if let Some(description) = field_in(declaration, "description") {
        string(description, &format!("{path}.description"))?;
    }
    if let Some(behavior) = field_in(declaration, "behavior") {
        let ok = behavior.as_str().is_some_and(|b| BEHAVIORS.contains(&b));
        if !ok {
            return Err(invalid_value(
                &format!("{path}.behavior"),
                "Behavior",
                behavior,
            ));
        }
    }
    let parameters = field_in(declaration, "parameters");
    if parameters.is_some() && field_in(declaration, "parameters_json_schema").is_some() {
        return Err(refusal(
            path,
            "parameters and parameters_json_schema are mutually exclusive.",
        ));
    }
    if let Some(parameters) = parameters {
        let path = format!("{path}.parameters");
        check_schema(parameters, &path)?;
        // A function's arguments arrive as one JSON object (a Struct).
        if field(parameters, "type").and_then(Value::as_str) != Some("OBJECT") {
            return Err(refusal(&format!("{path}.type"), "must be OBJECT."));
        }
    }
    if let Some(response) = field_in(declaration, "response") {
        check_schema(response, &format!("{path}.response"))?;
    }
    Ok(())
}

/// Checks one `Schema` node and everything under it.
pub fn check_schema(schema: &Value, path: &str) -> Result<(), String> {
    let node = object(schema, path, "Schema")?;
    known_fields(node, path, &SCHEMA_FIELDS)?;
    check_field_shapes(node, path)?;
    let any_of = field_in(node, "any_of").and_then(Value::as_array);
    let kind = match field_in(node, "type") {
        Some(Value::String(kind)) if TYPES.contains(&kind.as_str()) => Some(kind.as_str()),
        Some(other) => return Err(invalid_value(&format!("{path}.type"), "Type", other)),
        None if any_of.is_some() => None,
        None => return Err(refusal(&format!("{path}.type"), "missing field.")),
    };
    if let Some(format) = field_in(node, "format").and_then(Value::as_str) {
        check_format(kind, format, path)?;
    }
    if field_in(node, "enum").is_some() && kind != Some("STRING") {
        return Err(refusal(
            &format!("{path}.enum"),
            "enum is only supported for STRING type.",
        ));
    }
    match kind {
        Some("OBJECT") => check_object(node, path)?,
        Some("ARRAY") => {
            let items = field_in(node, "items")
                .ok_or_else(|| refusal(&format!("{path}.items"), "missing field."))?;
            check_schema(items, &format!("{path}.items"))?;
        }
        _ => {}
    }
    for (i, alternative) in any_of.into_iter().flatten().enumerate() {
        check_schema(alternative, &format!("{path}.any_of[{i}]"))?;
    }
    Ok(())
}

fn check_object(node: &Map<String, Value>, path: &str) -> Result<(), String> {
    let properties = field_in(node, "properties")
        .and_then(Value::as_object)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            refusal(
                &format!("{path}.properties"),
                "should be non-empty for OBJECT type",
            )
        })?;
    for (name, property) in properties {
        let property_path = format!("{path}.properties[{name}]");
        if !is_parameter_name(name) {
            return Err(refusal(
                &property_path,
                "Invalid parameter name. Must start with a letter or an underscore and contain \
                 only a-z, A-Z, 0-9 or underscores, with a maximum length of 64.",
            ));
        }
        check_schema(property, &property_path)?;
    }
    for list in ["required", "property_ordering"] {
        let names = field_in(node, list).and_then(Value::as_array);
        for (i, name) in names.into_iter().flatten().enumerate() {
            if !name.as_str().is_some_and(|n| properties.contains_key(n)) {
                return Err(refusal(
                    &format!("{path}.{list}[{i}]"),
                    "property is not defined",
                ));
            }
        }
    }
    Ok(())
}

fn check_format(kind: Option<&str>, format: &str, path: &str) -> Result<(), String> {
    let (accepted, message): (&[&str], String) = match kind {
        Some("STRING") => (
            &["enum", "date-time"],
            "only 'enum' and 'date-time' are supported for STRING type".into(),
        ),
        Some("NUMBER") => (
            &["float", "double"],
            "only 'float' and 'double' are supported for NUMBER type".into(),
        ),
        Some("INTEGER") => (
            &["int32", "int64"],
            "only 'int32' and 'int64' are supported for INTEGER type".into(),
        ),
        other => (
            &[],
            format!(
                "format is not supported for {} type",
                other.unwrap_or("an untyped")
            ),
        ),
    };
    if accepted.contains(&format) {
        Ok(())
    } else {
        Err(refusal(&format!("{path}.format"), &message))
    }
}

/// The JSON shape of each field, as proto JSON parsing checks it before any rule runs.
fn check_field_shapes(node: &Map<String, Value>, path: &str) -> Result<(), String> {
    for (key, value) in node {
        let name = snake_case(key);
        let at = format!("{path}.{name}");
        match name.as_str() {
            "format" | "title" | "description" | "pattern" => string(value, &at)?,
            "nullable" if !value.is_boolean() => {
                return Err(invalid_value(&at, "TYPE_BOOL", value));
            }
            "minimum" | "maximum" if !value.is_number() => {
                return Err(invalid_value(&at, "TYPE_DOUBLE", value));
            }
            "max_items" | "min_items" | "min_properties" | "max_properties" | "min_length"
            | "max_length"
                if !is_int64(value) =>
            {
                return Err(invalid_value(&at, "TYPE_INT64", value));
            }
            "enum" | "required" | "property_ordering" => string_list(value, &at)?,
            "properties" if !value.is_object() => {
                return Err(invalid_value(&at, "Schema", value));
            }
            "any_of" if !value.is_array() => return Err(invalid_value(&at, "Schema", value)),
            _ => {}
        }
    }
    Ok(())
}

fn object<'a>(
    value: &'a Value,
    path: &str,
    message: &str,
) -> Result<&'a Map<String, Value>, String> {
    value
        .as_object()
        .ok_or_else(|| invalid_value(path, message, value))
}

fn string(value: &Value, path: &str) -> Result<(), String> {
    if value.is_string() {
        Ok(())
    } else {
        Err(invalid_value(path, "TYPE_STRING", value))
    }
}

fn string_list(value: &Value, path: &str) -> Result<(), String> {
    let list = value
        .as_array()
        .ok_or_else(|| invalid_value(path, "TYPE_STRING", value))?;
    for (i, item) in list.iter().enumerate() {
        string(item, &format!("{path}[{i}]"))?;
    }
    Ok(())
}

/// An int64 in proto JSON: a whole number, or one written as a decimal string.
fn is_int64(value: &Value) -> bool {
    value.is_i64() || value.is_u64() || value.as_str().is_some_and(|s| s.parse::<i64>().is_ok())
}

/// Refuses keys the message does not have, like proto JSON parsing does.
fn known_fields(node: &Map<String, Value>, path: &str, known: &[&str]) -> Result<(), String> {
    match node
        .keys()
        .find(|k| !known.contains(&snake_case(k).as_str()))
    {
        Some(unknown) => Err(format!(
            "Invalid JSON payload received. Unknown name \"{unknown}\" at '{path}': Cannot find field."
        )),
        None => Ok(()),
    }
}

/// A field by its snake_case name, spelled either way.
fn field_in<'a>(node: &'a Map<String, Value>, snake: &str) -> Option<&'a Value> {
    node.iter()
        .find(|(k, _)| snake_case(k) == snake)
        .map(|(_, v)| v)
}

fn field<'a>(value: &'a Value, snake: &str) -> Option<&'a Value> {
    value.as_object().and_then(|node| field_in(node, snake))
}

fn snake_case(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// `^[a-zA-Z_][a-zA-Z0-9_.:-]{0,63}$`
fn is_function_name(name: &str) -> bool {
    starts_like_identifier(name)
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
}

/// `^[a-zA-Z_][a-zA-Z0-9_]{0,63}$` (google-genai: "Parameter names must start with a letter
/// or an underscore and must only contain chars a-z, A-Z, 0-9, or underscores with a maximum
/// length of 64").
fn is_parameter_name(name: &str) -> bool {
    starts_like_identifier(name)
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn starts_like_identifier(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
}

/// A rule violation, worded like the service's validation errors.
fn refusal(path: &str, message: &str) -> String {
    format!("* BidiGenerateContentRequest.{path}: {message}")
}

/// A value of the wrong JSON shape, worded like proto JSON parse errors.
fn invalid_value(path: &str, expected: &str, value: &Value) -> String {
    format!("Invalid value at '{path}' ({expected}), {value}")
}
