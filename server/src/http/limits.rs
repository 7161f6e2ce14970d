//! Length limits of the text in request bodies, enforced in one place and documented from the
//! same table.
//!
//! Every string of a JSON request body — at any depth, array items included — is limited by the
//! name of the field that holds it: [`TEXT_MAX`] characters unless [`LONG_FIELDS`] names a longer
//! limit. Without a limit, a long value reached PostgreSQL and failed there ("index row size
//! exceeds maximum" on indexed columns such as `environment` or `team_id`): a 500 instead of the
//! client's mistake. [`check_body`] runs inside the shared JSON extractors
//! ([`super::error::parse_json`]) before any handler, so a route cannot forget it, and
//! [`document`] writes the same limits into the served OpenAPI document as `maxLength`.

use serde_json::Value;

use super::error::ApiError;

/// Limit of every text field not listed in [`LONG_FIELDS`], in characters: names, ids and
/// references (indexed columns), statuses, short free text.
pub const TEXT_MAX: usize = 255;

/// Fields that legitimately hold longer text, and their limits in characters. Each is below
/// 10 KB, the probe's value length.
pub const LONG_FIELDS: &[(&str, usize)] =
    &[("csr_pem", 8192), ("description", 4096), ("error", 4096), ("message", 4096), ("url", 2048)];

/// The limit of a string held by `field`.
pub fn limit_of(field: &str) -> usize {
    LONG_FIELDS.iter().find(|(name, _)| *name == field).map_or(TEXT_MAX, |(_, n)| *n)
}

/// 400 naming the field (a path such as `sans[3]` or `config.url`) of the first string in `body`
/// longer than its limit.
pub fn check_body(body: &Value) -> Result<(), ApiError> {
    let mut path = String::new();
    check_value(body, "", &mut path)
}

fn check_value(v: &Value, field: &str, path: &mut String) -> Result<(), ApiError> {
    match v {
        Value::String(s) => {
            let limit = limit_of(field);
            // Cheap first: a string of at most `limit` bytes has at most `limit` characters.
            if s.len() > limit && s.chars().count() > limit {
                return Err(ApiError::BadRequest(format!("{path} must be at most {limit} characters")));
            }
            Ok(())
        }
        Value::Array(items) => {
            let len = path.len();
            for (i, item) in items.iter().enumerate() {
                path.push_str(&format!("[{i}]"));
                check_value(item, field, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        Value::Object(map) => {
            let len = path.len();
            for (key, item) in map {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&super::error::shorten(key));
                check_value(item, key, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Whether a schema (an object of the OpenAPI document) describes a string.
fn is_string(schema: &serde_json::Map<String, Value>) -> bool {
    match schema.get("type") {
        Some(Value::String(t)) => t == "string",
        Some(Value::Array(ts)) => ts.iter().any(|t| t == "string"),
        _ => false,
    }
}

/// Sets `maxLength` on `schema` (the schema of field `field`), its array items and its nested
/// properties, wherever a string is described and no tighter limit is documented already.
fn limit_schema(schema: &mut Value, field: &str, doc_schemas: &mut Vec<String>) {
    if let Some(r) = schema["$ref"].as_str() {
        if let Some(name) = r.strip_prefix("#/components/schemas/") {
            doc_schemas.push(name.to_string());
        }
        return;
    }
    let Some(obj) = schema.as_object_mut() else { return };
    if is_string(obj) {
        let limit = limit_of(field);
        let documented = obj.get("maxLength").and_then(Value::as_u64);
        if documented.is_none_or(|n| n > limit as u64) {
            obj.insert("maxLength".into(), Value::from(limit));
        }
    }
    if let Some(items) = obj.get_mut("items") {
        limit_schema(items, field, doc_schemas);
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(Value::Array(alts)) = obj.get_mut(key) {
            for alt in alts {
                limit_schema(alt, field, doc_schemas);
            }
        }
    }
    if let Some(Value::Object(props)) = obj.get_mut("properties") {
        for (name, prop) in props.iter_mut() {
            limit_schema(prop, name, doc_schemas);
        }
    }
}

/// Writes the limits into `doc` (an OpenAPI document as JSON): every string property of every
/// request body schema — inline or a component, followed through `$ref`s — gets the `maxLength`
/// [`check_body`] enforces.
pub fn document(doc: &mut Value) {
    let mut pending: Vec<String> = Vec::new();
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for item in paths.values_mut() {
            let Some(item) = item.as_object_mut() else { continue };
            for op in item.values_mut() {
                if let Some(content) = op.pointer_mut("/requestBody/content").and_then(Value::as_object_mut) {
                    for media in content.values_mut() {
                        if let Some(schema) = media.get_mut("schema") {
                            limit_schema(schema, "", &mut pending);
                        }
                    }
                }
            }
        }
    }
    let mut done: Vec<String> = Vec::new();
    while let Some(name) = pending.pop() {
        if done.contains(&name) {
            continue;
        }
        done.push(name.clone());
        if let Some(schema) = doc.pointer_mut(&format!("/components/schemas/{name}")) {
            limit_schema(schema, "", &mut pending);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn long_strings_are_refused_naming_their_field_at_any_depth() {
        assert!(check_body(&json!({"name": "a".repeat(255), "description": "d".repeat(4096)})).is_ok());
        let msg = |v: Value| check_body(&v).err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(msg(json!({"environment": "e".repeat(256)})), "environment must be at most 255 characters");
        assert_eq!(msg(json!({"sans": ["ok", "x".repeat(300)]})), "sans[1] must be at most 255 characters");
        assert_eq!(msg(json!({"config": {"url": "u".repeat(2049)}})), "config.url must be at most 2048 characters");
        // Characters, not bytes: 255 four-byte characters fit.
        assert!(check_body(&json!({"name": "😀".repeat(255)})).is_ok());
    }

    #[test]
    fn the_document_gets_max_length_on_request_strings_only() {
        let mut doc = json!({
            "paths": {"/x": {"post": {"requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/In"}}}}}}},
            "components": {"schemas": {
                "In": {"type": "object", "properties": {
                    "name": {"type": "string"},
                    "error": {"type": ["string", "null"]},
                    "sans": {"type": "array", "items": {"type": "string"}},
                    "inner": {"$ref": "#/components/schemas/Inner"},
                    "tight": {"type": "string", "maxLength": 10}
                }},
                "Inner": {"type": "object", "properties": {"csr_pem": {"type": "string"}}},
                "Out": {"type": "object", "properties": {"pem_chain": {"type": "string"}}}
            }}
        });
        document(&mut doc);
        let s = &doc["components"]["schemas"];
        assert_eq!(s["In"]["properties"]["name"]["maxLength"], 255);
        assert_eq!(s["In"]["properties"]["error"]["maxLength"], 4096);
        assert_eq!(s["In"]["properties"]["sans"]["items"]["maxLength"], 255);
        assert_eq!(s["In"]["properties"]["tight"]["maxLength"], 10);
        assert_eq!(s["Inner"]["properties"]["csr_pem"]["maxLength"], 8192);
        assert!(s["Out"]["properties"]["pem_chain"].get("maxLength").is_none(), "responses are not limited");
    }
}
