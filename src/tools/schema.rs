//! Tool parameters for the Live API: the user's JSON Schema in, Gemini's `Schema` out.
//!
//! `FunctionDeclaration.parameters` is not JSON Schema but Google's subset of the OpenAPI 3.0
//! schema object (`google.ai.generativelanguage.v1beta.Schema`), and the service refuses the
//! whole session setup (close 1007) over a single field it does not take. One bad tool would
//! then fail every call, so each schema is converted once, at start-up, into a form the Live
//! models accept:
//!
//! - one upper-case `type` per field; `["string", "null"]` (or `anyOf` with a `null`
//!   alternative) becomes `STRING` + `nullable`; a field without `type` gets one from its
//!   keywords (`properties` → OBJECT, `items` → ARRAY, `minimum` → NUMBER, else STRING);
//! - `enum` (and `const`) become a STRING enum, because the API's enum is a list of strings
//!   on a STRING field; numbers and booleans are written as JSON text and given back their
//!   type ([`EnumRestorer`]) before the tool's endpoint sees the arguments;
//! - `format` is kept where the API knows it (STRING `date-time`, NUMBER `float`/`double`,
//!   INTEGER `int32`/`int64`); any other (`email`, `uri`, `date`…) moves into the
//!   description, as does `default`, so the model still reads them;
//! - keywords the API has no field for that only narrow the values (`additionalProperties`,
//!   `exclusiveMinimum`, `uniqueItems`, `if`/`then`, `$schema`…) are left out: the model is
//!   constrained a little less, and the endpoint still checks what it receives;
//! - what would change the meaning if left out (`$ref`, `allOf`, unions of several types,
//!   tuples, arrays without `items`, objects without `properties`, `required` naming a
//!   property that does not exist, names the API refuses) is an error naming the field, so the
//!   operator fixes the file instead of every call failing.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde_json::{Map, Value, json};

/// Longest property name the API takes.
const MAX_PROPERTY_NAME_LEN: usize = 64;

/// Keywords that shape the value (dropping them would change what the tool is sent), which
/// Gemini's schema cannot carry, with what to write instead. Keywords that only narrow the
/// value (`not`, `if`/`then`/`else`, `dependentSchemas`…) are dropped like
/// `additionalProperties`.
const INEXPRESSIBLE: [(&str, &str); 4] = [
    ("$ref", "write the referenced schema out in place"),
    ("$dynamicRef", "write the referenced schema out in place"),
    ("allOf", "merge its schemas into one"),
    ("prefixItems", "give the array one `items` schema"),
];

/// A tool's parameters as the Live API takes them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GeminiParameters {
    /// `parameters` of the function declaration; `None` for a tool without arguments (an
    /// OBJECT without properties is refused by the API, a declaration without it is not).
    pub schema: Option<Value>,
    /// Gives stringified enum values back their JSON type.
    pub restorer: EnumRestorer,
}

/// A schema the conversion cannot express faithfully.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SchemaError {
    /// Where, as `order.lines[].sku` (`[]` is an array's elements); empty for the root.
    pub field: String,
    /// What is wrong and what to write instead.
    pub problem: String,
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "`parameters`: {}", self.problem)
        } else {
            write!(f, "parameter `{}`: {}", self.field, self.problem)
        }
    }
}

/// Gives enum arguments back the JSON type the tool's schema declared.
///
/// Gemini's enums are strings, so `{"enum": [1, 2, 3]}` is offered as `["1", "2", "3"]` and
/// the model answers `"2"`; the endpoint, which declared integers, gets `2` again.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnumRestorer {
    /// Stringified enum value → the value the schema listed (only non-string ones).
    values: HashMap<String, Value>,
    /// Restorers of an object's properties, by name.
    properties: BTreeMap<String, EnumRestorer>,
    /// Restorer of an array's elements.
    items: Option<Box<EnumRestorer>>,
}

impl EnumRestorer {
    /// True when nothing needs restoring (no enum with non-string values anywhere).
    pub fn is_empty(&self) -> bool {
        self.values.is_empty() && self.properties.is_empty() && self.items.is_none()
    }

    /// Replaces stringified enum values in `args` with the values the schema listed.
    pub fn restore(&self, args: &mut Value) {
        match args {
            Value::String(text) => {
                if let Some(original) = self.values.get(text.as_str()) {
                    *args = original.clone();
                }
            }
            Value::Object(fields) => {
                for (name, restorer) in &self.properties {
                    if let Some(value) = fields.get_mut(name) {
                        restorer.restore(value);
                    }
                }
            }
            Value::Array(elements) => {
                if let Some(restorer) = &self.items {
                    elements.iter_mut().for_each(|e| restorer.restore(e));
                }
            }
            _ => {}
        }
    }
}

/// Converts a tool's JSON Schema `parameters` into what the Live API takes.
pub fn convert_parameters(json_schema: &Value) -> Result<GeminiParameters, SchemaError> {
    let mut converter = Converter::default();
    let Value::Object(root) = json_schema else {
        return Err(converter.error(
            "must be a JSON Schema object describing the tool's arguments, e.g. \
             {\"type\": \"object\", \"properties\": {…}}",
        ));
    };
    if takes_no_arguments(root) {
        return Ok(GeminiParameters::default());
    }
    let converted = converter.convert(json_schema, false)?;
    if converted.schema.get("type") != Some(&json!("OBJECT")) {
        return Err(converter.error(
            "must describe an object (`\"type\": \"object\"` with `properties`): the model \
             passes a tool its arguments as one JSON object",
        ));
    }
    Ok(GeminiParameters {
        schema: Some(converted.schema),
        restorer: converted.restorer,
    })
}

/// `{}` or `{"type": "object"}` with no properties: a tool called without arguments.
fn takes_no_arguments(root: &Map<String, Value>) -> bool {
    let no_properties = root
        .get("properties")
        .is_none_or(|p| p.as_object().is_some_and(Map::is_empty));
    let object_or_untyped = root
        .get("type")
        .is_none_or(|t| t.as_str().is_some_and(|t| t.eq_ignore_ascii_case("object")));
    let requires_something = root
        .get("required")
        .is_some_and(|r| r.as_array().is_none_or(|r| !r.is_empty()));
    let shaped_otherwise = requires_something
        || ["anyOf", "oneOf", "enum", "const", "items"]
            .iter()
            .any(|k| root.contains_key(*k));
    no_properties && object_or_untyped && !shaped_otherwise
}

/// The Live API's data types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    String,
    Number,
    Integer,
    Boolean,
    Array,
    Object,
}

impl Kind {
    fn from_json_schema(name: &str) -> Option<Kind> {
        Some(match name.to_ascii_lowercase().as_str() {
            "string" => Kind::String,
            "number" => Kind::Number,
            "integer" => Kind::Integer,
            "boolean" => Kind::Boolean,
            "array" => Kind::Array,
            "object" => Kind::Object,
            _ => return None,
        })
    }

    fn gemini_name(self) -> &'static str {
        match self {
            Kind::String => "STRING",
            Kind::Number => "NUMBER",
            Kind::Integer => "INTEGER",
            Kind::Boolean => "BOOLEAN",
            Kind::Array => "ARRAY",
            Kind::Object => "OBJECT",
        }
    }

    /// The `format`s the API accepts for this type (`enum` is set by the enum conversion).
    fn accepted_formats(self) -> &'static [&'static str] {
        match self {
            Kind::String => &["date-time"],
            Kind::Number => &["float", "double"],
            Kind::Integer => &["int32", "int64"],
            Kind::Boolean | Kind::Array | Kind::Object => &[],
        }
    }

    /// The type a schema without `type` has, read from the keywords it uses.
    fn inferred(node: &Map<String, Value>) -> Kind {
        let uses = |keys: &[&str]| keys.iter().any(|k| node.contains_key(*k));
        if uses(&["properties", "required", "minProperties", "maxProperties"]) {
            Kind::Object
        } else if uses(&["items", "minItems", "maxItems"]) {
            Kind::Array
        } else if uses(&[
            "minimum",
            "maximum",
            "exclusiveMinimum",
            "exclusiveMaximum",
            "multipleOf",
        ]) {
            Kind::Number
        } else {
            // A leaf that says nothing about its values (`{}`, or only a description):
            // text is what a model can always fill in.
            Kind::String
        }
    }
}

/// One converted schema node.
struct Converted {
    schema: Value,
    restorer: EnumRestorer,
}

/// Walks a schema, keeping the path of the field being converted for error messages.
#[derive(Default)]
struct Converter {
    path: Vec<String>,
}

impl Converter {
    fn error(&self, problem: impl Into<String>) -> SchemaError {
        let mut field = String::new();
        for segment in &self.path {
            if segment != "[]" && !field.is_empty() {
                field.push('.');
            }
            field.push_str(segment);
        }
        SchemaError {
            field,
            problem: problem.into(),
        }
    }

    /// Converts one node; `nullable` carries a `null` alternative found by the caller.
    fn convert(&mut self, schema: &Value, nullable: bool) -> Result<Converted, SchemaError> {
        let node = match schema {
            Value::Object(node) => node,
            // `true` is JSON Schema for "anything".
            Value::Bool(true) => return self.convert(&json!({}), nullable),
            _ => return Err(self.error(format!("{schema} is not a schema (a JSON object)"))),
        };
        self.refuse_inexpressible(node)?;
        if let Some(merged) = self.collapse_union(node)? {
            return self.convert(&Value::Object(merged.node), nullable || merged.nullable);
        }
        let (kind, null_in_type) = self.kind(node)?;
        let nullable = nullable || null_in_type || node.get("nullable") == Some(&json!(true));

        let mut out = Map::new();
        let mut notes = Vec::new();
        let mut restorer = EnumRestorer::default();
        if let Some(values) = self.enum_values(node)? {
            if matches!(kind, Kind::Array | Kind::Object) {
                return Err(self.error(
                    "an `enum` of arrays or objects cannot be expressed: Gemini's enums are \
                     text; list the choices in `description` instead",
                ));
            }
            let choices = self.stringify_enum(values)?;
            out.insert("type".into(), json!("STRING"));
            out.insert("format".into(), json!("enum"));
            out.insert("enum".into(), json!(choices.texts));
            if let Some(format) = self.string_keyword(node, "format")?
                && format != "enum"
            {
                notes.push(format!("format: {format}"));
            }
            restorer.values = choices.originals;
            return self.finish(node, out, notes, nullable || choices.had_null, restorer);
        }

        out.insert("type".into(), json!(kind.gemini_name()));
        if let Some(format) = self.string_keyword(node, "format")? {
            if kind.accepted_formats().contains(&format) {
                out.insert("format".into(), json!(format));
            } else {
                notes.push(format!("format: {format}"));
            }
        }
        match kind {
            Kind::String => {
                self.copy_count(node, &mut out, &["minLength", "maxLength"])?;
                if let Some(pattern) = self.string_keyword(node, "pattern")? {
                    out.insert("pattern".into(), json!(pattern));
                }
            }
            Kind::Number | Kind::Integer => {
                for key in ["minimum", "maximum"] {
                    match node.get(key) {
                        None => {}
                        Some(bound @ Value::Number(_)) => {
                            out.insert(key.into(), bound.clone());
                        }
                        Some(other) => {
                            return Err(self.error(format!("`{key}` is {other}, not a number")));
                        }
                    }
                }
            }
            Kind::Boolean => {}
            Kind::Array => {
                let items = node.get("items").ok_or_else(|| {
                    self.error(
                        "an array needs `items`: Gemini refuses an ARRAY without the schema \
                         of its elements",
                    )
                })?;
                self.path.push("[]".into());
                let element = self.convert(items, false)?;
                self.path.pop();
                out.insert("items".into(), element.schema);
                if !element.restorer.is_empty() {
                    restorer.items = Some(Box::new(element.restorer));
                }
                self.copy_count(node, &mut out, &["minItems", "maxItems"])?;
            }
            Kind::Object => {
                restorer.properties = self.convert_properties(node, &mut out)?;
                self.copy_count(node, &mut out, &["minProperties", "maxProperties"])?;
            }
        }
        self.finish(node, out, notes, nullable, restorer)
    }

    /// The keywords every type shares: the description (with the notes about what the API
    /// could not take) and `nullable`.
    fn finish(
        &self,
        node: &Map<String, Value>,
        mut out: Map<String, Value>,
        mut notes: Vec<String>,
        nullable: bool,
        restorer: EnumRestorer,
    ) -> Result<Converted, SchemaError> {
        if let Some(default) = node.get("default") {
            notes.push(format!("default: {default}"));
        }
        let text = match self.string_keyword(node, "description")? {
            Some(description) => Some(description),
            None => self.string_keyword(node, "title")?,
        };
        let description = match (text, notes.is_empty()) {
            (Some(text), true) => Some(text.to_owned()),
            (Some(text), false) => Some(format!("{text} ({})", notes.join("; "))),
            (None, false) => Some(notes.join("; ")),
            (None, true) => None,
        };
        if let Some(description) = description {
            out.insert("description".into(), json!(description));
        }
        if nullable {
            out.insert("nullable".into(), json!(true));
        }
        Ok(Converted {
            schema: Value::Object(out),
            restorer,
        })
    }

    fn refuse_inexpressible(&self, node: &Map<String, Value>) -> Result<(), SchemaError> {
        if let Some((keyword, advice)) = INEXPRESSIBLE.iter().find(|(k, _)| node.contains_key(*k)) {
            return Err(self.error(format!(
                "`{keyword}` cannot be expressed in Gemini's schema; {advice}"
            )));
        }
        if node.get("items").is_some_and(Value::is_array) {
            return Err(self.error(
                "tuple arrays (`items` as a list) cannot be expressed in Gemini's schema; \
                 give the array one `items` schema",
            ));
        }
        if node.contains_key("anyOf") && node.contains_key("oneOf") {
            return Err(self.error("has both `anyOf` and `oneOf`; keep one"));
        }
        Ok(())
    }

    /// `anyOf`/`oneOf` of one schema and `null` is that schema, nullable; the node's own
    /// keywords (a description, say) apply on top. A choice between several types is refused:
    /// Gemini takes one type per field.
    fn collapse_union(
        &self,
        node: &Map<String, Value>,
    ) -> Result<Option<CollapsedUnion>, SchemaError> {
        let Some((keyword, alternatives)) = ["anyOf", "oneOf"]
            .iter()
            .find_map(|k| node.get(*k).map(|v| (*k, v)))
        else {
            return Ok(None);
        };
        let Some(alternatives) = alternatives.as_array().filter(|a| !a.is_empty()) else {
            return Err(self.error(format!("`{keyword}` must be a non-empty list of schemas")));
        };
        let (nulls, others): (Vec<&Value>, Vec<&Value>) =
            alternatives.iter().partition(|a| is_null_schema(a));
        let single = match others.as_slice() {
            [single] => single,
            [] => return Err(self.error(format!("`{keyword}` allows only null"))),
            several => {
                return Err(self.error(format!(
                    "`{keyword}` offers {} alternatives, but Gemini takes one type per field; \
                     keep one, or take text and describe the choices in `description`",
                    several.len()
                )));
            }
        };
        let Value::Object(single) = single else {
            return Err(self.error(format!(
                "`{keyword}` holds {single}, which is not a schema (a JSON object)"
            )));
        };
        let mut merged = single.clone();
        for (key, value) in node.iter().filter(|(k, _)| k.as_str() != keyword) {
            merged.insert(key.clone(), value.clone());
        }
        Ok(Some(CollapsedUnion {
            node: merged,
            nullable: !nulls.is_empty(),
        }))
    }

    /// The node's type, and whether `null` was one of its types.
    fn kind(&self, node: &Map<String, Value>) -> Result<(Kind, bool), SchemaError> {
        let named = |name: &str| {
            Kind::from_json_schema(name).ok_or_else(|| {
                self.error(format!(
                    "type `{name}` is unknown; use string, number, integer, boolean, array or \
                     object"
                ))
            })
        };
        match node.get("type") {
            None => Ok((Kind::inferred(node), false)),
            Some(Value::String(name)) if name == "null" => {
                Err(self.error("a parameter that can only be null cannot be expressed"))
            }
            Some(Value::String(name)) => Ok((named(name)?, false)),
            Some(Value::Array(names)) => {
                let mut has_null = false;
                let mut kinds = Vec::new();
                for name in names {
                    match name.as_str() {
                        Some("null") => has_null = true,
                        Some(name) => kinds.push(named(name)?),
                        None => return Err(self.error(format!("`type` lists {name}"))),
                    }
                }
                match kinds.as_slice() {
                    [kind] => Ok((*kind, has_null)),
                    [] => Err(self.error("a parameter that can only be null cannot be expressed")),
                    _ => Err(self.error(format!(
                        "`type` {} allows several types, but Gemini takes one type per field",
                        Value::Array(names.clone())
                    ))),
                }
            }
            Some(other) => Err(self.error(format!("`type` is {other}, not a type name"))),
        }
    }

    /// The `enum` values, or `const` as a one-value enum.
    fn enum_values<'a>(
        &self,
        node: &'a Map<String, Value>,
    ) -> Result<Option<Vec<&'a Value>>, SchemaError> {
        if let Some(values) = node.get("enum") {
            return match values.as_array() {
                Some(values) if !values.is_empty() => Ok(Some(values.iter().collect())),
                _ => Err(self.error("`enum` must be a non-empty list")),
            };
        }
        Ok(node.get("const").map(|value| vec![value]))
    }

    fn stringify_enum(&self, values: Vec<&Value>) -> Result<EnumChoices, SchemaError> {
        let mut choices = EnumChoices::default();
        let mut seen: HashMap<String, &Value> = HashMap::new();
        for value in values {
            let text = match value {
                Value::Null => {
                    choices.had_null = true;
                    continue;
                }
                Value::String(text) => text.clone(),
                Value::Number(_) | Value::Bool(_) => value.to_string(),
                Value::Array(_) | Value::Object(_) => {
                    return Err(self.error(format!(
                        "`enum` value {value} is not a string, number or boolean; Gemini's \
                         enums are text"
                    )));
                }
            };
            if let Some(earlier) = seen.insert(text.clone(), value) {
                return Err(self.error(format!(
                    "`enum` lists {earlier} and {value}, which are the same text to Gemini"
                )));
            }
            if !value.is_string() {
                choices.originals.insert(text.clone(), value.clone());
            }
            choices.texts.push(text);
        }
        if choices.texts.is_empty() {
            return Err(self.error("`enum` allows only null"));
        }
        Ok(choices)
    }

    fn convert_properties(
        &mut self,
        node: &Map<String, Value>,
        out: &mut Map<String, Value>,
    ) -> Result<BTreeMap<String, EnumRestorer>, SchemaError> {
        let properties = match node.get("properties") {
            Some(Value::Object(properties)) if !properties.is_empty() => properties,
            Some(Value::Object(_)) | None => {
                return Err(self.error(
                    "an object needs `properties`: Gemini refuses an OBJECT without them; \
                     list its fields, or take it as a JSON string",
                ));
            }
            Some(other) => {
                return Err(self.error(format!("`properties` is {other}, not an object")));
            }
        };
        let mut converted = Map::new();
        let mut restorers = BTreeMap::new();
        for (name, schema) in properties {
            self.path.push(name.clone());
            if !is_accepted_property_name(name) {
                return Err(self.error(format!(
                    "the name is not one Gemini accepts: use letters, digits and `_`, not \
                     starting with a digit, at most {MAX_PROPERTY_NAME_LEN} characters"
                )));
            }
            let property = self.convert(schema, false)?;
            self.path.pop();
            converted.insert(name.clone(), property.schema);
            if !property.restorer.is_empty() {
                restorers.insert(name.clone(), property.restorer);
            }
        }
        out.insert("properties".into(), Value::Object(converted));
        if let Some(required) = node.get("required") {
            let names = required
                .as_array()
                .and_then(|names| names.iter().map(Value::as_str).collect::<Option<Vec<_>>>())
                .ok_or_else(|| self.error("`required` must be a list of property names"))?;
            if let Some(missing) = names.iter().find(|n| !properties.contains_key(**n)) {
                return Err(self.error(format!(
                    "`required` names `{missing}`, which is not in `properties`"
                )));
            }
            out.insert("required".into(), json!(names));
        }
        Ok(restorers)
    }

    /// Copies whole-number keywords (`minItems`…), refusing anything else there.
    fn copy_count(
        &self,
        node: &Map<String, Value>,
        out: &mut Map<String, Value>,
        keys: &[&str],
    ) -> Result<(), SchemaError> {
        for key in keys {
            if let Some(value) = node.get(*key) {
                if value.as_u64().is_none() {
                    return Err(self.error(format!("`{key}` is {value}, not a whole number")));
                }
                out.insert((*key).into(), value.clone());
            }
        }
        Ok(())
    }

    fn string_keyword<'a>(
        &self,
        node: &'a Map<String, Value>,
        key: &str,
    ) -> Result<Option<&'a str>, SchemaError> {
        match node.get(key) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(other) => Err(self.error(format!("`{key}` is {other}, not a string"))),
        }
    }
}

/// A `anyOf`/`oneOf` reduced to its one non-null alternative.
struct CollapsedUnion {
    node: Map<String, Value>,
    nullable: bool,
}

/// An enum as Gemini takes it.
#[derive(Default)]
struct EnumChoices {
    texts: Vec<String>,
    originals: HashMap<String, Value>,
    had_null: bool,
}

fn is_null_schema(schema: &Value) -> bool {
    match schema.get("type") {
        Some(Value::String(t)) => t == "null",
        Some(Value::Array(types)) => types.iter().all(|t| t == "null"),
        _ => false,
    }
}

/// The API's rule for parameter names: a letter or `_`, then letters, digits or `_`.
fn is_accepted_property_name(name: &str) -> bool {
    let mut chars = name.chars();
    let starts_well = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    starts_well
        && name.len() <= MAX_PROPERTY_NAME_LEN
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn converted(schema: Value) -> Value {
        convert_parameters(&schema)
            .unwrap()
            .schema
            .expect("parameters")
    }

    /// The converted schema of the single property `p`.
    fn property(schema: Value) -> Value {
        converted(json!({"type": "object", "properties": {"p": schema}}))["properties"]["p"].clone()
    }

    fn refusal(schema: Value) -> String {
        convert_parameters(&schema).unwrap_err().to_string()
    }

    #[test]
    fn plain_json_schema_becomes_gemini_schema() {
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "order_id": {"type": "string", "description": "Order number", "minLength": 3},
                "lines": {"type": "array", "items": {"type": "integer", "minimum": 1}, "maxItems": 5},
                "note": {"type": ["string", "null"]}
            },
            "required": ["order_id"]
        });
        assert_eq!(
            converted(schema),
            json!({
                "type": "OBJECT",
                "properties": {
                    "order_id": {"type": "STRING", "description": "Order number", "minLength": 3},
                    "lines": {"type": "ARRAY", "items": {"type": "INTEGER", "minimum": 1}, "maxItems": 5},
                    "note": {"type": "STRING", "nullable": true}
                },
                "required": ["order_id"]
            })
        );
    }

    #[test]
    fn integer_enum_becomes_a_string_enum_and_comes_back_as_integers() {
        let parameters = convert_parameters(&json!({"type": "object", "properties": {
            "quantity": {"type": "integer", "enum": [1, 2, 3], "description": "How many"},
            "express": {"enum": [true, false, null]}
        }}))
        .unwrap();
        let schema = parameters.schema.unwrap();
        assert_eq!(
            schema["properties"]["quantity"],
            json!({"type": "STRING", "format": "enum", "enum": ["1", "2", "3"], "description": "How many"})
        );
        assert_eq!(
            schema["properties"]["express"],
            json!({"type": "STRING", "format": "enum", "enum": ["true", "false"], "nullable": true})
        );
        let mut args = json!({"quantity": "2", "express": "false", "other": "2"});
        parameters.restorer.restore(&mut args);
        assert_eq!(args, json!({"quantity": 2, "express": false, "other": "2"}));
    }

    #[test]
    fn string_enums_need_no_restoring_and_const_is_a_one_value_enum() {
        let parameters = convert_parameters(&json!({"properties": {
            "status": {"type": "string", "enum": ["open", "closed"]},
            "kind": {"const": "order"}
        }}))
        .unwrap();
        assert!(parameters.restorer.is_empty());
        let schema = parameters.schema.unwrap();
        assert_eq!(
            schema["properties"]["status"]["enum"],
            json!(["open", "closed"])
        );
        assert_eq!(
            schema["properties"]["kind"],
            json!({"type": "STRING", "format": "enum", "enum": ["order"]})
        );
    }

    #[test]
    fn unsupported_formats_move_into_the_description() {
        assert_eq!(
            property(json!({"type": "string", "format": "email", "description": "Where to write"})),
            json!({"type": "STRING", "description": "Where to write (format: email)"})
        );
        assert_eq!(
            property(json!({"type": "string", "format": "uri"})),
            json!({"type": "STRING", "description": "format: uri"})
        );
        assert_eq!(
            property(json!({"type": "string", "format": "date-time"})),
            json!({"type": "STRING", "format": "date-time"})
        );
        assert_eq!(
            property(json!({"type": "integer", "format": "int64"})),
            json!({"type": "INTEGER", "format": "int64"})
        );
        assert_eq!(
            property(json!({"type": "number", "format": "int8", "default": 2.5})),
            json!({"type": "NUMBER", "description": "format: int8; default: 2.5"})
        );
        assert_eq!(
            property(json!({"type": "integer", "enum": [5, 10], "format": "int32"})),
            json!({"type": "STRING", "format": "enum", "enum": ["5", "10"], "description": "format: int32"})
        );
    }

    #[test]
    fn typeless_fields_get_a_type_from_their_keywords() {
        assert_eq!(
            property(json!({"description": "Anything the caller said"})),
            json!({"type": "STRING", "description": "Anything the caller said"})
        );
        assert_eq!(property(json!({})), json!({"type": "STRING"}));
        assert_eq!(property(json!(true)), json!({"type": "STRING"}));
        assert_eq!(
            property(json!({"minimum": 0})),
            json!({"type": "NUMBER", "minimum": 0})
        );
        assert_eq!(
            property(json!({"items": {"type": "string"}})),
            json!({"type": "ARRAY", "items": {"type": "STRING"}})
        );
        assert_eq!(
            property(json!({"properties": {"city": {}}})),
            json!({"type": "OBJECT", "properties": {"city": {"type": "STRING"}}})
        );
    }

    #[test]
    fn nullable_unions_become_one_nullable_type() {
        let expected = json!({"type": "INTEGER", "nullable": true, "description": "Floor"});
        assert_eq!(
            property(json!({"type": ["null", "integer"], "description": "Floor"})),
            expected
        );
        assert_eq!(
            property(
                json!({"anyOf": [{"type": "integer"}, {"type": "null"}], "description": "Floor"})
            ),
            expected
        );
        assert_eq!(
            property(
                json!({"oneOf": [{"type": "null"}, {"type": "integer", "description": "Floor"}]})
            ),
            expected
        );
        assert_eq!(
            property(json!({"type": "integer", "nullable": true, "title": "Floor"})),
            expected
        );
    }

    #[test]
    fn nested_arrays_and_objects_convert_all_the_way_down() {
        let parameters = convert_parameters(&json!({"type": "object", "properties": {
            "order": {"type": "object", "properties": {
                "lines": {"type": "array", "minItems": 1, "items": {
                    "type": "object",
                    "properties": {
                        "sku": {"type": "string", "pattern": "^[A-Z0-9]+$"},
                        "size": {"enum": [38, 40, 42.5]},
                        "tags": {"type": "array", "items": {"type": "array", "items": {"enum": [1, "x"]}}}
                    },
                    "required": ["sku"],
                    "additionalProperties": {"type": "string"}
                }}
            }, "required": ["lines"]}
        }}))
        .unwrap();
        assert_eq!(
            parameters.schema.unwrap()["properties"]["order"],
            json!({"type": "OBJECT", "required": ["lines"], "properties": {
                "lines": {"type": "ARRAY", "minItems": 1, "items": {
                    "type": "OBJECT",
                    "required": ["sku"],
                    "properties": {
                        "sku": {"type": "STRING", "pattern": "^[A-Z0-9]+$"},
                        "size": {"type": "STRING", "format": "enum", "enum": ["38", "40", "42.5"]},
                        "tags": {"type": "ARRAY", "items": {"type": "ARRAY", "items":
                            {"type": "STRING", "format": "enum", "enum": ["1", "x"]}}}
                    }
                }}
            }})
        );
        let mut args = json!({"order": {"lines": [
            {"sku": "A1", "size": "42.5", "tags": [["1", "x"], ["1"]]},
            {"sku": "38", "size": "38"}
        ]}});
        parameters.restorer.restore(&mut args);
        assert_eq!(
            args,
            json!({"order": {"lines": [
                {"sku": "A1", "size": 42.5, "tags": [[1, "x"], [1]]},
                {"sku": "38", "size": 38}
            ]}})
        );
    }

    #[test]
    fn a_tool_without_arguments_has_no_parameters() {
        for schema in [
            json!({}),
            json!({"type": "object"}),
            json!({"type": "object", "properties": {}, "additionalProperties": false}),
            json!({"type": "object", "required": []}),
        ] {
            assert_eq!(
                convert_parameters(&schema).unwrap(),
                GeminiParameters::default(),
                "{schema}"
            );
        }
    }

    #[test]
    fn schemas_gemini_cannot_take_are_refused_naming_the_field() {
        let cases = [
            (
                json!({"type": "object", "properties": {"order": {"$ref": "#/$defs/Order"}}}),
                "parameter `order`: `$ref` cannot be expressed",
            ),
            (
                json!({"properties": {"a": {"allOf": [{"type": "string"}]}}}),
                "parameter `a`: `allOf` cannot be expressed",
            ),
            (
                json!({"properties": {"id": {"anyOf": [{"type": "string"}, {"type": "integer"}]}}}),
                "parameter `id`: `anyOf` offers 2 alternatives",
            ),
            (
                json!({"properties": {"id": {"type": ["string", "integer"]}}}),
                "parameter `id`: `type` [\"string\",\"integer\"] allows several types",
            ),
            (
                json!({"properties": {"items": {"type": "array", "items": {"type": "object",
                    "properties": {"status": {"enum": [{"a": 1}]}}}}}}),
                "parameter `items[].status`: `enum` value {\"a\":1} is not a string",
            ),
            (
                json!({"properties": {"tags": {"type": "array"}}}),
                "parameter `tags`: an array needs `items`",
            ),
            (
                json!({"properties": {"point": {"type": "array", "prefixItems": [{"type": "number"}]}}}),
                "parameter `point`: `prefixItems` cannot be expressed",
            ),
            (
                json!({"properties": {"point": {"type": "array", "items": [{"type": "number"}]}}}),
                "parameter `point`: tuple arrays",
            ),
            (
                json!({"properties": {"meta": {"type": "object"}}}),
                "parameter `meta`: an object needs `properties`",
            ),
            (
                json!({"properties": {"a": {"type": "string"}}, "required": ["a", "b"]}),
                "`parameters`: `required` names `b`, which is not in `properties`",
            ),
            (
                json!({"properties": {"order-no": {"type": "string"}}}),
                "parameter `order-no`: the name is not one Gemini accepts",
            ),
            (
                json!({"properties": {"when": {"type": "date"}}}),
                "parameter `when`: type `date` is unknown",
            ),
            (
                json!({"properties": {"size": {"enum": [1, "1"]}}}),
                "parameter `size`: `enum` lists 1 and \"1\", which are the same text",
            ),
            (
                json!({"type": "array", "items": {"type": "string"}}),
                "`parameters`: must describe an object",
            ),
            (
                json!("object"),
                "`parameters`: must be a JSON Schema object",
            ),
        ];
        for (schema, expected) in cases {
            let message = refusal(schema.clone());
            assert!(
                message.starts_with(expected),
                "{schema}\n  gave: {message}\n  want: {expected}…"
            );
        }
    }
}
