//! docker-compose.yml, without a Docker engine: it loads, every service, volume and variable it
//! references exists, the binaries get only settings they read (the same names as ./dev/up),
//! and it binds only the loopback.

use std::collections::{BTreeMap, BTreeSet};

use serde_yaml::Value;

use crate::image::dockerfile_arg;
use crate::support::{at, read, repo_root, scalar, seq_at, str_at, workspace_binaries, yaml_documents};
use crate::workloads::{labels, settings_by_binary};

fn compose() -> (String, Value) {
    let text = read("docker-compose.yml");
    let mut documents = yaml_documents(&text);
    assert_eq!(documents.len(), 1, "docker-compose.yml is one YAML document");
    (text, documents.remove(0))
}

fn services(file: &Value) -> BTreeMap<String, &Value> {
    let services = at(file, &["services"]).and_then(Value::as_mapping).expect("a services map");
    services.iter().map(|(k, v)| (k.as_str().expect("a service name").to_owned(), v)).collect()
}

/// A one-shot service runs to completion (`restart: "no"`); the others keep running.
fn is_one_shot(service: &Value) -> bool {
    str_at(service, &["restart"]) == Some("no")
}

/// The workspace binaries a service of our image runs: its command, or those its shell script calls.
fn binaries_run(service: &Value) -> BTreeSet<String> {
    let words: Vec<String> = seq_at(service, &["command"]).iter().filter_map(scalar).collect();
    let binaries = workspace_binaries();
    let mut run = BTreeSet::new();
    for word in &words {
        if binaries.contains_key(word) {
            run.insert(word.clone());
        }
        for line in word.lines() {
            if let Some(first) = line.split_whitespace().next() {
                if binaries.contains_key(first) {
                    run.insert(first.to_owned());
                }
            }
        }
    }
    run
}

fn uses_our_image(service: &Value) -> bool {
    at(service, &["build"]).is_some()
}

#[test]
fn compose_references_only_what_exists() {
    let (_, file) = compose();
    let services = services(&file);
    for expected in
        ["kafka", "registry", "postgres", "clickhouse", "kafka-topics", "migrate", "gateway", "consumer-clickhouse", "consumer-postgres"]
    {
        assert!(services.contains_key(expected), "docker-compose.yml has no service {expected}");
    }
    let declared: BTreeSet<String> = labels_or_keys(at(&file, &["volumes"])).into_iter().collect();
    let mut used = BTreeSet::new();
    let mut awaited = BTreeSet::new();
    for (name, service) in &services {
        assert!(at(service, &["image"]).is_some(), "{name}: no image");
        if !is_one_shot(service) {
            assert!(at(service, &["healthcheck", "test"]).is_some(), "{name} runs on but has no healthcheck");
        }
        for (target, condition) in depends_on(service) {
            let target_service = services.get(&target).unwrap_or_else(|| panic!("{name} depends on unknown service {target}"));
            match condition.as_str() {
                "service_healthy" => {
                    assert!(at(target_service, &["healthcheck"]).is_some(), "{name} waits for {target}'s health, it has none")
                }
                "service_completed_successfully" => {
                    assert!(is_one_shot(target_service), "{name} waits for {target} to complete, but it keeps running");
                    awaited.insert(target.clone());
                }
                other => panic!("{name}: depends_on {target} with condition {other}: wait for health or completion"),
            }
        }
        for volume in seq_at(service, &["volumes"]).iter().filter_map(Value::as_str) {
            let source = volume.split(':').next().expect("a volume source");
            assert!(!source.starts_with(['.', '/', '~']), "{name}: bind mount {volume}; use a named volume");
            assert!(declared.contains(source), "{name}: volume {source} is not declared under volumes:");
            used.insert(source.to_owned());
        }
        if let Some(build) = at(service, &["build"]) {
            let context = repo_root().join(str_at(build, &["context"]).expect("a build context"));
            let dockerfile = str_at(build, &["dockerfile"]).unwrap_or("Dockerfile");
            assert!(context.join(dockerfile).is_file(), "{name}: no {dockerfile} in the build context");
            assert_eq!(str_at(service, &["image"]), Some("bxb:local"), "{name}: our image is tagged bxb:local");
        }
    }
    assert_eq!(used, declared, "every declared volume is used, every used one declared");
    for (name, service) in &services {
        if is_one_shot(service) {
            assert!(awaited.contains(name), "nothing waits for the one-shot {name} to complete");
        }
    }
}

fn labels_or_keys(value: Option<&Value>) -> Vec<String> {
    value.and_then(Value::as_mapping).map(|m| m.keys().filter_map(|k| k.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

/// `depends_on` as (service, condition); the short list form waits for nothing and is refused.
fn depends_on(service: &Value) -> Vec<(String, String)> {
    match at(service, &["depends_on"]) {
        None => Vec::new(),
        Some(Value::Mapping(m)) => m
            .iter()
            .map(|(k, v)| (k.as_str().expect("a name").to_owned(), str_at(v, &["condition"]).expect("a condition").to_owned()))
            .collect(),
        Some(other) => panic!("depends_on must name a condition for each service: {other:?}"),
    }
}

#[test]
fn compose_gives_the_binaries_only_settings_they_read_and_those_of_dev_up() {
    let (_, file) = compose();
    let by_binary = settings_by_binary();
    let mut set_somewhere = BTreeSet::new();
    for (name, service) in services(&file) {
        let environment = labels(at(service, &["environment"]));
        assert!(at(service, &["environment"]).is_none_or(Value::is_mapping), "{name}: environment as a map");
        if !uses_our_image(service) {
            for variable in environment.keys() {
                assert!(!variable.starts_with("BXB_"), "{name}: {variable} is not for this image");
            }
            continue;
        }
        let run = binaries_run(service);
        assert!(!run.is_empty(), "{name}: runs none of the workspace binaries");
        for variable in environment.keys() {
            assert!(run.iter().any(|b| by_binary[b].contains(variable)), "{name}: {variable} is read by none of {run:?}");
            set_somewhere.insert(variable.clone());
        }
    }
    // The addresses ./dev/up hands the binaries (.dev/env), by the same names.
    let lib = read("dev/lib.sh");
    let env_file = lib.split("cat > \"$BXB_STATE/env\" <<EOF").nth(1).expect("write_env_file in dev/lib.sh");
    let env_file = &env_file[..env_file.find("\nEOF").expect("the heredoc ends")];
    let dev_names: Vec<&str> = env_file
        .lines()
        .filter_map(|l| l.split_once('=').map(|(n, _)| n))
        .filter(|n| n.starts_with("BXB_") && !n.starts_with("BXB_DEV_") && *n != "BXB_GATEWAY_URL")
        .collect();
    assert!(dev_names.len() >= 4, "found too few names in .dev/env: {dev_names:?}");
    for variable in dev_names {
        assert!(set_somewhere.contains(variable), "docker-compose.yml never sets {variable}, which ./dev/up does");
    }
}

#[test]
fn compose_interpolates_only_dev_variables_with_their_defaults() {
    let (text, _) = compose();
    let scripts = read("dev/lib.sh") + &read("dev/up");
    let mut found = 0;
    for (at, _) in text.match_indices("${") {
        if text[..at].ends_with('$') {
            continue; // `$${...}`: for the container's shell, not for compose
        }
        let expression = &text[at + 2..at + text[at..].find('}').expect("${ closes")];
        let (variable, default) =
            expression.split_once(":-").unwrap_or_else(|| panic!("${{{expression}}} has no default: compose would need it set"));
        let declared = format!(": \"${{{variable}:={default}}}\"");
        assert!(scripts.contains(&declared), "${{{expression}}}: dev/lib.sh or dev/up must declare {declared}");
        found += 1;
    }
    assert!(found > 0, "the port variables of ./dev/up are expected to move the compose ports too");
}

#[test]
fn compose_binds_the_loopback_and_pins_images() {
    let (_, file) = compose();
    for (name, service) in services(&file) {
        for port in seq_at(service, &["ports"]) {
            let port = scalar(port).expect("short port syntax");
            assert!(port.starts_with("127.0.0.1:"), "{name}: {port} is reachable from other machines");
        }
        let image = str_at(service, &["image"]).expect("an image");
        let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or_else(|| panic!("{name}: {image} has no tag"));
        assert!(tag != "latest" && !tag.is_empty(), "{name}: {image} is not pinned");
    }
}

#[test]
fn compose_grace_periods_and_probes_fit_the_binaries() {
    let (_, file) = compose();
    let gateway_config = read("gateway/src/config.rs");
    let default_ms = |variable: &str| default_of(&gateway_config, variable).unwrap_or_else(|| panic!("no default for {variable}"));
    let drain_s = (default_ms("BXB_REQUEST_TIMEOUT_MS") + 1000 + default_ms("BXB_SHUTDOWN_FLUSH_TIMEOUT_MS")).div_ceil(1000);
    let services = services(&file);
    let grace = str_at(services["gateway"], &["stop_grace_period"]).expect("gateway stop_grace_period");
    let grace_s: u64 = grace.trim_end_matches('s').parse().expect("seconds");
    assert!(grace_s > drain_s, "gateway: stop_grace_period {grace} <= drain {drain_s} s");
    let shipped = dockerfile_arg(&read("Dockerfile"), "BINS");
    for (name, service) in &services {
        if !uses_our_image(service) {
            continue;
        }
        for binary in binaries_run(service) {
            assert!(shipped.contains(&binary), "{name}: {binary} is not in the image");
        }
        let environment = labels(at(service, &["environment"]));
        let Some(listen) = environment.get("BXB_LISTEN_ADDR") else { continue };
        let port = listen.rsplit_once(':').expect("host:port").1;
        let probe: String = seq_at(service, &["healthcheck", "test"]).iter().filter_map(scalar).collect::<Vec<_>>().join(" ");
        assert!(probe.contains(&format!("/{port} ")) && probe.contains("/readyz"), "{name}: healthcheck does not ask /readyz on {port}");
        for mapping in seq_at(service, &["ports"]).iter().filter_map(scalar) {
            assert!(mapping.ends_with(&format!(":{port}")), "{name}: {mapping} does not publish {listen}");
        }
    }
}

/// The `default_value_t` of the clap setting read from `variable`, in a config source.
fn default_of(source: &str, variable: &str) -> Option<u64> {
    let line = source.lines().find(|l| l.contains(&format!("env = \"{variable}\"")))?;
    let value = line.split("default_value_t = ").nth(1)?;
    let digits: String = value.chars().take_while(|c| c.is_ascii_digit() || *c == '_').filter(|c| *c != '_').collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_defaults_are_read() {
        let source = r#"#[arg(long = "x", env = "BXB_X_MS", default_value_t = 30_000)]"#;
        assert_eq!(default_of(source, "BXB_X_MS"), Some(30_000));
        assert_eq!(default_of(source, "BXB_Y_MS"), None);
    }
}
