//! Accessors for the workloads of a render: pod specs, containers, their settings.

use std::collections::{BTreeMap, BTreeSet};

use serde_yaml::Value;

use crate::render::Render;
use crate::support::{at, read, repo_root, scalar, seq_at, str_at, workspace_binaries, workspace_packages};

pub const BASE: &str = "k8s/base";
pub const DEV: &str = "k8s/overlays/dev";
pub const PROD: &str = "k8s/overlays/prod";
/// The kustomizations that deploy the pipeline.
pub const APPS: [&str; 3] = [BASE, DEV, PROD];
/// The replay Job kustomizations and the app kustomization each belongs to.
pub const REPLAYS: [(&str, &str); 3] = [("k8s/replay", BASE), ("k8s/overlays/dev/replay", DEV), ("k8s/overlays/prod/replay", PROD)];
/// Secrets created out of band (never rendered for prod), documented in the manifests.
pub const OUT_OF_BAND_SECRETS: [&str; 3] = ["bxb-credentials", "bxb-kafka-admin", "bxb-schema-owner"];

pub fn name(object: &Value) -> &str {
    str_at(object, &["metadata", "name"]).expect("every object has a name")
}

/// Deployments and Jobs with their pod spec.
pub fn workloads(render: &Render) -> Vec<(&Value, &Value)> {
    render
        .objects
        .iter()
        .map(|(o, _)| o)
        .filter(|o| matches!(str_at(o, &["kind"]), Some("Deployment" | "Job")))
        .map(|o| (o, at(o, &["spec", "template", "spec"]).unwrap_or_else(|| panic!("{} has no pod spec", name(o)))))
        .collect()
}

pub fn containers(pod: &Value) -> &[Value] {
    let containers = seq_at(pod, &["containers"]);
    assert!(!containers.is_empty(), "a pod without containers");
    containers
}

pub fn pod_labels(workload: &Value) -> BTreeMap<String, String> {
    labels(at(workload, &["spec", "template", "metadata", "labels"]))
}

pub fn labels(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_mapping)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.as_str()?.to_owned(), scalar(v)?))).collect())
        .unwrap_or_default()
}

/// Whether a `matchLabels` (or Service `selector`) selects pods with these labels.
pub fn selects(selector: &BTreeMap<String, String>, pod: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| pod.get(k) == Some(v))
}

/// The workspace binary a container runs (its command's first word), if it is one of ours.
pub fn our_binary(container: &Value) -> Option<String> {
    let program = seq_at(container, &["command"]).first().and_then(Value::as_str)?;
    workspace_binaries().contains_key(program).then(|| program.to_owned())
}

/// A literal `env` value of a container.
pub fn env_value(container: &Value, variable: &str) -> Option<String> {
    seq_at(container, &["env"]).iter().find(|e| str_at(e, &["name"]) == Some(variable)).and_then(|e| at(e, &["value"])).and_then(scalar)
}

pub fn env_names(container: &Value) -> Vec<String> {
    seq_at(container, &["env"]).iter().filter_map(|e| str_at(e, &["name"]).map(str::to_owned)).collect()
}

pub fn env_ms(container: &Value, variable: &str) -> u64 {
    env_value(container, variable)
        .unwrap_or_else(|| panic!("{variable} is not set on {}", str_at(container, &["name"]).unwrap_or("?")))
        .parse()
        .unwrap_or_else(|e| panic!("{variable} is not a number: {e}"))
}

/// The data of a ConfigMap of the render (or, for a replay render, of its app render).
pub fn config_map(render: &Render, name: &str) -> Option<BTreeMap<String, String>> {
    render.named("ConfigMap", name).map(|cm| labels(at(cm, &["data"])))
}

/// The one Deployment running `binary`.
pub fn deployment_of<'a>(render: &'a Render, binary: &str) -> &'a Value {
    let found: Vec<&Value> = render
        .all("Deployment")
        .filter(|d| seq_at(d, &["spec", "template", "spec", "containers"]).iter().any(|c| our_binary(c).as_deref() == Some(binary)))
        .collect();
    assert_eq!(found.len(), 1, "{}: expected one Deployment running {binary}", render.dir);
    found[0]
}

pub fn first_container(workload: &Value) -> &Value {
    &containers(at(workload, &["spec", "template", "spec"]).expect("a pod spec"))[0]
}

/// The settings each binary reads: the `env = "..."` names in its package and in the workspace
/// crates it depends on, transitively.
pub fn settings_by_binary() -> BTreeMap<String, BTreeSet<String>> {
    let package_dirs = workspace_packages();
    let mut result = BTreeMap::new();
    for (binary, package) in workspace_binaries() {
        let mut names = BTreeSet::new();
        let mut seen = BTreeSet::new();
        let mut queue = vec![package];
        while let Some(package) = queue.pop() {
            if !seen.insert(package.clone()) {
                continue;
            }
            let dir = package_dirs.get(&package).unwrap_or_else(|| panic!("no directory for {package}"));
            names.extend(env_names_under(&repo_root().join(dir)));
            let manifest = read(&format!("{dir}/Cargo.toml"));
            for line in manifest.lines() {
                if let Some(dep) = line.trim().strip_suffix(".workspace = true") {
                    if package_dirs.contains_key(dep) {
                        queue.push(dep.to_owned());
                    }
                }
            }
        }
        result.insert(binary, names);
    }
    for (binary, expected) in [("gateway", "BXB_KAFKA_BROKERS"), ("gateway", "BXB_LOG_FORMAT"), ("consumer-postgres", "BXB_POSTGRES_URL")] {
        let names = result.get(binary).unwrap_or_else(|| panic!("no binary {binary} in the workspace"));
        assert!(names.contains(expected), "the source scan found no {expected} for {binary}: is the scan broken? {names:?}");
    }
    result
}

fn env_names_under(dir: &std::path::Path) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let source = std::fs::read_to_string(&path).expect("UTF-8 source");
                names.extend(crate::support::env_attributes(&source));
            }
        }
    }
    names
}
