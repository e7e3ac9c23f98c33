//! The reference's field tables, generated from the CRDs' schemas (so the
//! docs say what the API server enforces: types, enums, patterns, bounds,
//! defaults, and the doc comments of the spec types). `crdgen` writes them
//! between markers in `docs/reference.md`; a test fails when they drift.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray,
};

/// The marker line that opens a kind's generated table.
pub fn begin_marker(plural: &str) -> String {
    format!("<!-- generated from the {plural} CRD by crdgen: do not edit -->")
}

/// The marker line that closes it.
pub const END_MARKER: &str = "<!-- end of generated table -->";

/// The `spec` fields of `crd` as a Markdown table.
pub fn spec_table(crd: &CustomResourceDefinition) -> String {
    let mut rows = Vec::new();
    let spec = crd
        .spec
        .versions
        .first()
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .and_then(|s| s.properties.as_ref())
        .and_then(|p| p.get("spec"));
    if let Some(spec) = spec {
        walk("spec", spec, true, true, &mut rows);
    }
    let mut table = String::from("| field | type | default | meaning |\n|---|---|---|---|\n");
    for row in rows {
        table.push_str(&row);
        table.push('\n');
    }
    table
}

/// Adds the rows of `schema` at `path` (its own row first when `head`).
fn walk(path: &str, schema: &JSONSchemaProps, required: bool, head: bool, rows: &mut Vec<String>) {
    let nested = |s: &JSONSchemaProps| s.properties.is_some() || item_object(s).is_some();
    if head && path != "spec" {
        rows.push(row(path, schema, required));
    }
    if let Some(item) = item_object(schema) {
        walk(&format!("{path}[]"), item, true, false, rows);
        return;
    }
    let Some(properties) = &schema.properties else {
        return;
    };
    let needed = schema.required.clone().unwrap_or_default();
    // Fields of the same shape (the three phases, the two selectors) are
    // described once: `spec.rules.{preDNS,preRequest,postResponse}[].name`.
    let mut shapes: Vec<(Vec<&String>, &JSONSchemaProps, String)> = Vec::new();
    for (name, child) in properties {
        let shape = shape_of(child);
        match shapes
            .iter_mut()
            .find(|(_, _, s)| nested(child) && *s == shape)
        {
            Some((names, _, _)) => names.push(name),
            None => shapes.push((vec![name], child, shape)),
        }
    }
    for (names, child, _) in shapes {
        if let [name] = names.as_slice() {
            walk(
                &format!("{path}.{name}"),
                child,
                needed.contains(name),
                true,
                rows,
            );
            continue;
        }
        for name in &names {
            rows.push(row(
                &format!("{path}.{name}"),
                &properties[*name],
                needed.contains(name),
            ));
        }
        let joined: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
        walk(
            &format!("{path}.{{{}}}", joined.join(",")),
            child,
            false,
            false,
            rows,
        );
    }
}

/// The object schema of a list's items, if it is a list of objects.
fn item_object(schema: &JSONSchemaProps) -> Option<&JSONSchemaProps> {
    match &schema.items {
        Some(JSONSchemaPropsOrArray::Schema(item)) if item.properties.is_some() => Some(item),
        _ => None,
    }
}

/// A schema as JSON without its description, to compare shapes.
fn shape_of(schema: &JSONSchemaProps) -> String {
    let mut value = serde_json::to_value(schema).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        object.remove("description");
    }
    value.to_string()
}

fn row(path: &str, schema: &JSONSchemaProps, required: bool) -> String {
    let default = match (&schema.default, required) {
        (Some(value), _) => format!("`{}`", value.0),
        (None, true) => "required".to_owned(),
        (None, false) => String::new(),
    };
    format!(
        "| `{path}` | {} | {default} | {} |",
        type_of(schema),
        cell(schema.description.as_deref().unwrap_or_default())
    )
}

/// The type and what the schema restricts of it.
fn type_of(schema: &JSONSchemaProps) -> String {
    let (base, limits) = kind_and_limits(schema);
    if limits.is_empty() {
        base
    } else {
        format!("{base}, {}", limits.join(", "))
    }
}

fn kind_and_limits(schema: &JSONSchemaProps) -> (String, Vec<String>) {
    let mut limits = Vec::new();
    let base = if let Some(values) = &schema.enum_ {
        let values: Vec<String> = values
            .iter()
            .map(|v| {
                format!(
                    "`{}`",
                    v.0.as_str().map(str::to_owned).unwrap_or(v.0.to_string())
                )
            })
            .collect();
        values.join(" \\| ")
    } else {
        match schema.type_.as_deref() {
            Some("array") => match &schema.items {
                Some(JSONSchemaPropsOrArray::Schema(item)) if item.properties.is_some() => {
                    "list of objects".to_owned()
                }
                Some(JSONSchemaPropsOrArray::Schema(item)) => {
                    let (kind, item_limits) = kind_and_limits(item);
                    if item_limits.is_empty() {
                        format!("list of {kind}")
                    } else {
                        format!("list of {kind} (each {})", item_limits.join(", "))
                    }
                }
                _ => "list".to_owned(),
            },
            Some("object") if schema.additional_properties.is_some() => "map of strings".to_owned(),
            Some(other) => other.to_owned(),
            None if schema.x_kubernetes_int_or_string == Some(true) => "int or string".to_owned(),
            None => "any".to_owned(),
        }
    };
    if let Some(pattern) = &schema.pattern {
        limits.push(format!("`{}`", cell(pattern)));
    }
    match (schema.minimum, schema.maximum) {
        (Some(min), Some(max)) => limits.push(format!("{min} to {max}")),
        (Some(min), None) => limits.push(format!("at least {min}")),
        (None, Some(max)) => limits.push(format!("at most {max}")),
        (None, None) => {}
    }
    if let Some(max) = schema.max_items {
        limits.push(format!("at most {max} items"));
    }
    if let Some(max) = schema.max_length {
        limits.push(format!("at most {max} characters"));
    }
    (base, limits)
}

/// Text fit for a table cell: one line, pipes escaped.
fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// `document` with each kind's table replaced by the generated one; the
/// kinds whose markers are missing are named in the error.
pub fn update(document: &str, crds: &[(&str, CustomResourceDefinition)]) -> Result<String, String> {
    let mut text = document.to_owned();
    let mut missing = Vec::new();
    for (_, crd) in crds {
        let begin = begin_marker(&crd.spec.names.plural);
        let Some(start) = text.find(&begin) else {
            missing.push(crd.spec.names.plural.clone());
            continue;
        };
        let body_start = start + begin.len();
        let Some(end) = text[body_start..].find(END_MARKER) else {
            missing.push(crd.spec.names.plural.clone());
            continue;
        };
        text.replace_range(
            body_start..body_start + end,
            &format!("\n{}", spec_table(crd)),
        );
    }
    if missing.is_empty() {
        Ok(text)
    } else {
        Err(format!(
            "no generated-table markers for {}",
            missing.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_carries_what_the_schema_enforces() {
        let crds = crate::crd::all();
        let table_of = |file: &str| {
            let (_, crd) = crds.iter().find(|(f, _)| *f == file).expect(file);
            spec_table(crd)
        };
        let table = table_of("egressproxies.yaml");
        assert!(
            table.contains("| `spec.configurationRef.name` | string | required |"),
            "{table}"
        );
        assert!(
            table.contains("| `spec.listeners.httpPort` | integer, 1 to 65535 | `1080` |"),
            "{table}"
        );
        assert!(
            table.contains("| `spec.clients.listener` | `http` \\| `https` | `\"http\"` |"),
            "{table}"
        );
        assert!(
            table.contains(
                "`spec.clients.{namespaceSelector,podSelector}.matchExpressions[].operator`"
            ),
            "{table}"
        );
        let table = table_of("proxyrulegroups.yaml");
        assert!(table.contains("`spec.rules.{postResponse,preDNS,preRequest}[].name` | string, `^[a-zA-Z0-9-]{1,128}$`"), "{table}");
        assert!(
            table.contains("| `spec.rules.preDNS` | list of objects, at most 1000 items |"),
            "{table}"
        );
    }

    #[test]
    fn only_the_marked_tables_change() {
        let crds = crate::crd::all();
        let (_, crd) = &crds[0];
        let begin = begin_marker(&crd.spec.names.plural);
        let document = format!("# Title\n\n{begin}\nSTALE TABLE\n{END_MARKER}\n\nprose\n");
        let updated = update(&document, &crds[..1]).expect("markers");
        assert!(updated.starts_with("# Title\n\n"));
        assert!(updated.ends_with(&format!("{END_MARKER}\n\nprose\n")));
        assert!(!updated.contains("STALE TABLE"));
        assert_eq!(
            update(&updated, &crds[..1]).expect("again"),
            updated,
            "stable"
        );
        assert!(update("no markers", &crds[..1]).is_err());
    }
}
