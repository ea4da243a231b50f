//! Rendering the kustomizations of `k8s/` and validating the output strictly against the
//! Kubernetes OpenAPI schemas, offline.
//!
//! kubernetes-validate passes a kind it has no schema for with a warning, so the objects of
//! custom resources are taken out first: only the KEDA kinds in [`CUSTOM_KINDS`] are allowed,
//! and tests/deploy/k8s.rs checks them against the rest of the render instead.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_yaml::Value;

use crate::support::{repo_root, str_at, tool, yaml_documents};

/// The oldest Kubernetes release the manifests must work on, and the newest the validator knows.
pub const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

/// Custom resources the manifests may use (apiVersion, kind).
pub const CUSTOM_KINDS: [(&str, &str); 2] = [("keda.sh/v1alpha1", "ScaledObject"), ("keda.sh/v1alpha1", "TriggerAuthentication")];

/// One rendered kustomization.
pub struct Render {
    /// `k8s/...`, relative to the repository.
    pub dir: String,
    /// The objects, in kustomize's order, with their YAML text.
    pub objects: Vec<(Value, String)>,
}

impl Render {
    pub fn all<'a, 'k>(&'a self, kind: &'k str) -> impl Iterator<Item = &'a Value> + use<'a, 'k> {
        self.objects.iter().map(|(o, _)| o).filter(move |o| str_at(o, &["kind"]) == Some(kind))
    }

    pub fn named(&self, kind: &str, name: &str) -> Option<&Value> {
        self.all(kind).find(|o| str_at(o, &["metadata", "name"]) == Some(name))
    }
}

/// Every directory of `k8s/` holding a kustomization.yaml.
pub fn kustomization_dirs() -> Vec<String> {
    let root = repo_root();
    let mut found = Vec::new();
    let mut stack = vec![root.join("k8s")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == "kustomization.yaml") {
                let dir = path.parent().expect("a file has a parent").strip_prefix(&root).expect("under the root");
                found.push(dir.to_string_lossy().into_owned());
            }
        }
    }
    found.sort();
    found
}

/// Every kustomization rendered once per test process (kustomize is deterministic).
pub fn renders() -> &'static BTreeMap<String, Render> {
    static RENDERS: OnceLock<BTreeMap<String, Render>> = OnceLock::new();
    RENDERS.get_or_init(|| kustomization_dirs().into_iter().map(|dir| (dir.clone(), render(&dir))).collect())
}

pub fn rendered(dir: &str) -> &'static Render {
    renders().get(dir).unwrap_or_else(|| panic!("no kustomization at {dir}; found {:?}", renders().keys()))
}

fn render(dir: &str) -> Render {
    let output = Command::new(tool("kustomize")).arg("build").arg(repo_root().join(dir)).output().expect("kustomize runs");
    assert!(output.status.success(), "kustomize build {dir} failed:\n{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).expect("kustomize prints UTF-8");
    let objects: Vec<(Value, String)> = split_documents(&text)
        .into_iter()
        .map(|doc| {
            let mut parsed = yaml_documents(&doc);
            assert_eq!(parsed.len(), 1, "one object per document in {dir}");
            (parsed.remove(0), doc)
        })
        .collect();
    assert!(!objects.is_empty(), "kustomize build {dir} rendered nothing");
    Render { dir: dir.to_owned(), objects }
}

/// kustomize separates objects with a line `---`; a block scalar's lines are indented, so the
/// separator cannot occur inside one.
fn split_documents(text: &str) -> Vec<String> {
    let mut documents = vec![String::new()];
    for line in text.lines() {
        if line == "---" {
            documents.push(String::new());
        } else {
            let current = documents.last_mut().expect("never empty");
            current.push_str(line);
            current.push('\n');
        }
    }
    documents.retain(|d| !d.trim().is_empty());
    documents
}

/// Whether an apiVersion belongs to Kubernetes itself (core, `apps/v1`, `*.k8s.io/...`).
pub fn is_kubernetes_api(api_version: &str) -> bool {
    match api_version.split_once('/') {
        None => true,
        Some((group, _)) => !group.contains('.') || group.ends_with(".k8s.io"),
    }
}

/// Splits objects into Kubernetes' own (validated by schema) and allowed custom resources;
/// any other custom resource is an error.
pub fn partition_kinds<'a>(dir: &str, objects: &'a [(Value, String)]) -> (Vec<&'a (Value, String)>, Vec<&'a Value>) {
    let mut standard = Vec::new();
    let mut custom = Vec::new();
    for object in objects {
        let api_version = str_at(&object.0, &["apiVersion"]).unwrap_or_else(|| panic!("an object in {dir} has no apiVersion"));
        let kind = str_at(&object.0, &["kind"]).unwrap_or_else(|| panic!("an object in {dir} has no kind"));
        if is_kubernetes_api(api_version) {
            standard.push(object);
        } else {
            assert!(
                CUSTOM_KINDS.contains(&(api_version, kind)),
                "{dir}: {api_version} {kind} is neither a Kubernetes kind nor an allowed custom resource {CUSTOM_KINDS:?}"
            );
            custom.push(&object.0);
        }
    }
    (standard, custom)
}

/// Validates YAML objects with `kubernetes-validate --strict` (no unknown fields, right types,
/// required fields) for one Kubernetes version. Fails on an error, and on a warning too (a
/// warning means a kind had no schema and was not checked).
pub fn validate_strict(label: &str, documents: &[&str], version: &str) {
    let mut stdin = String::new();
    for doc in documents {
        stdin.push_str("---\n");
        stdin.push_str(doc);
    }
    let output = run_validator(&stdin, version);
    let report = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    let problems: Vec<&str> = report.lines().filter(|l| !l.starts_with("INFO ")).collect();
    assert!(output.status.success() && problems.is_empty(), "{label} does not validate against Kubernetes {version}:\n{report}");
    let passed = report.lines().filter(|l| l.contains(" passed for resource ")).count();
    assert_eq!(passed, documents.len(), "{label}: every object must be validated, report:\n{report}");
}

/// Runs the validator on YAML text; the caller reads the status and report.
pub fn run_validator(yaml: &str, version: &str) -> std::process::Output {
    let mut child = Command::new(tool("kubernetes-validate"))
        .args(["--strict", "--kubernetes-version", version, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubernetes-validate runs");
    child.stdin.take().expect("piped stdin").write_all(yaml.as_bytes()).expect("writing to kubernetes-validate");
    child.wait_with_output().expect("kubernetes-validate finishes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_groups_are_told_apart() {
        for api in ["v1", "apps/v1", "batch/v1", "autoscaling/v2", "policy/v1", "networking.k8s.io/v1"] {
            assert!(is_kubernetes_api(api), "{api}");
        }
        for api in ["keda.sh/v1alpha1", "monitoring.coreos.com/v1"] {
            assert!(!is_kubernetes_api(api), "{api}");
        }
    }

    #[test]
    fn documents_split_on_separator_lines_only() {
        let docs = split_documents("a: 1\n---\nb: |\n  x\n  ---\n---\nc: 3\n");
        assert_eq!(docs, ["a: 1\n", "b: |\n  x\n  ---\n", "c: 3\n"]);
    }
}
