//! What the deployment checks share: the repository, the external tools, the settings and
//! binaries the Rust sources define, and small YAML accessors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_yaml::Value;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

pub fn read(relative: &str) -> String {
    let path = repo_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

pub use bxb_tests::tools::tool;

/// The names in `env = "NAME"` of one source file.
pub fn env_attributes(source: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find("env = \"") {
        rest = &rest[at + "env = \"".len()..];
        if let Some(end) = rest.find('"') {
            let name = &rest[..end];
            if !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') {
                found.push(name.to_owned());
            }
        }
    }
    found
}

/// The workspace members: package name -> directory.
pub fn workspace_packages() -> BTreeMap<String, String> {
    let members = section_array(&read("Cargo.toml"), "members");
    assert!(!members.is_empty(), "no workspace members found in Cargo.toml");
    members
        .into_iter()
        .map(|dir| {
            let manifest = read(&format!("{dir}/Cargo.toml"));
            let package = manifest
                .lines()
                .find_map(|l| l.trim().strip_prefix("name = \"").and_then(|v| v.strip_suffix('"')))
                .unwrap_or_else(|| panic!("{dir}/Cargo.toml names no package"))
                .to_owned();
            (package, dir)
        })
        .collect()
}

/// The workspace's binaries: `[[bin]]` name -> package name.
pub fn workspace_binaries() -> BTreeMap<String, String> {
    let mut binaries = BTreeMap::new();
    for member in workspace_packages().into_values() {
        let manifest = read(&format!("{member}/Cargo.toml"));
        let mut package = None;
        let mut section = "";
        for line in manifest.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line;
                continue;
            }
            if let Some(value) = line.strip_prefix("name = \"").and_then(|v| v.strip_suffix('"')) {
                match section {
                    "[package]" => package = Some(value.to_owned()),
                    "[[bin]]" => {
                        let package = package.clone().expect("[package] comes before [[bin]]");
                        binaries.insert(value.to_owned(), package);
                    }
                    _ => {}
                }
            }
        }
    }
    binaries
}

/// The quoted strings of `key = [ ... ]` in a TOML text.
fn section_array(toml: &str, key: &str) -> Vec<String> {
    let start = toml.find(&format!("{key} = [")).unwrap_or_else(|| panic!("no `{key} = [` in Cargo.toml"));
    let body = &toml[start..];
    let body = &body[..body.find(']').expect("the array closes")];
    body.split('"').skip(1).step_by(2).map(str::to_owned).collect()
}

/// The documents of a multi-document YAML text.
pub fn yaml_documents(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("YAML does not parse: {e}")))
        .filter(|doc| !doc.is_null())
        .collect()
}

pub fn at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |value, key| value.get(*key))
}

pub fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    at(value, path).and_then(Value::as_str)
}

pub fn seq_at<'a>(value: &'a Value, path: &[&str]) -> &'a [Value] {
    at(value, path).and_then(Value::as_sequence).map(Vec::as_slice).unwrap_or_default()
}

/// A scalar as text, as Kubernetes and Compose read numbers and booleans in string fields.
pub fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_attributes_are_read_from_clap_settings() {
        let source = r#"
            #[arg(long = "kafka-brokers", env = "BXB_KAFKA_BROKERS", default_value = "x")]
            #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
            let not_a_setting = "env = \"lowercase\"";
        "#;
        assert_eq!(env_attributes(source), ["BXB_KAFKA_BROKERS", "OTEL_EXPORTER_OTLP_ENDPOINT"]);
    }
}
