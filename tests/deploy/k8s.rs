//! The Kubernetes manifests: every kustomization renders and validates strictly; the workloads
//! are probed, sized and locked down; every name they reference exists.

use std::collections::BTreeSet;

use serde_yaml::Value;

use crate::render::{kustomization_dirs, partition_kinds, rendered, renders, run_validator, validate_strict, KUBERNETES_VERSIONS};
use crate::support::{at, scalar, seq_at, str_at};
use crate::workloads::*;

#[test]
fn every_kustomization_renders_and_validates_strictly() {
    let dirs = kustomization_dirs();
    for expected in APPS.iter().chain(REPLAYS.iter().map(|(replay, _)| replay)) {
        assert!(dirs.iter().any(|d| d == expected), "missing kustomization {expected}; found {dirs:?}");
    }
    for (dir, render) in renders() {
        let (standard, _custom) = partition_kinds(dir, &render.objects);
        let documents: Vec<&str> = standard.iter().map(|(_, text)| text.as_str()).collect();
        for version in KUBERNETES_VERSIONS {
            validate_strict(dir, &documents, version);
        }
    }
}

/// The validator really is strict here: a misspelt field and a wrong type are refused.
#[test]
fn strict_validation_refuses_unknown_fields_and_wrong_types() {
    let gateway = deployment_of(rendered(PROD), "gateway").clone();
    let mut misspelt = gateway.clone();
    let pod = misspelt["spec"]["template"]["spec"].as_mapping_mut().expect("a pod spec");
    pod.insert("terminationGracePeriod".into(), 60.into());
    let mut wrong_type = gateway;
    wrong_type["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "a minute".into();
    for broken in [misspelt, wrong_type] {
        let output = run_validator(&serde_yaml::to_string(&broken).expect("serialises"), KUBERNETES_VERSIONS[0]);
        let report = String::from_utf8_lossy(&output.stdout);
        assert!(!output.status.success() && report.contains("ERROR"), "a broken Deployment passed:\n{report}");
    }
}

#[test]
fn workloads_are_probed_sized_and_locked_down() {
    for dir in APPS.iter().chain(REPLAYS.iter().map(|(replay, _)| replay)) {
        let render = rendered(dir);
        for (workload, pod) in workloads(render) {
            let what = format!("{dir}: {}", name(workload));
            assert_eq!(at(pod, &["automountServiceAccountToken"]), Some(&Value::Bool(false)), "{what}: token mounted");
            assert_eq!(at(pod, &["securityContext", "runAsNonRoot"]), Some(&Value::Bool(true)), "{what}: runAsNonRoot");
            let user = at(pod, &["securityContext", "runAsUser"]).and_then(Value::as_u64);
            assert!(user.is_some_and(|u| u > 0), "{what}: a numeric non-root runAsUser is needed for runAsNonRoot");
            assert_eq!(str_at(pod, &["securityContext", "seccompProfile", "type"]), Some("RuntimeDefault"), "{what}");
            for container in containers(pod) {
                let security = at(container, &["securityContext"]).unwrap_or_else(|| panic!("{what}: no securityContext"));
                assert_eq!(at(security, &["allowPrivilegeEscalation"]), Some(&Value::Bool(false)), "{what}");
                assert_eq!(at(security, &["readOnlyRootFilesystem"]), Some(&Value::Bool(true)), "{what}");
                let dropped: Vec<&str> = seq_at(security, &["capabilities", "drop"]).iter().filter_map(Value::as_str).collect();
                assert_eq!(dropped, ["ALL"], "{what}: capabilities");
                assert!(at(security, &["capabilities", "add"]).is_none(), "{what}: adds capabilities");
                for bound in ["requests", "limits"] {
                    for resource in ["cpu", "memory"] {
                        assert!(at(container, &["resources", bound, resource]).is_some(), "{what}: no {bound}.{resource}");
                    }
                }
                let image = str_at(container, &["image"]).expect("an image");
                if *dir != BASE && !dir.starts_with("k8s/replay") {
                    assert!(image.contains(':') && !image.ends_with(":latest"), "{what}: unpinned image {image}");
                }
            }
        }
        for deployment in render.all("Deployment") {
            check_serving_container(dir, deployment);
        }
    }
}

/// Probes on the real endpoints of the real port, and the scrape annotations pointing at it.
fn check_serving_container(dir: &str, deployment: &Value) {
    let what = format!("{dir}: {}", name(deployment));
    let container = first_container(deployment);
    assert!(our_binary(container).is_some(), "{what}: does not run a workspace binary");
    let listen = env_value(container, "BXB_LISTEN_ADDR").unwrap_or_else(|| panic!("{what}: BXB_LISTEN_ADDR unset"));
    let port: u64 = listen.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).expect("BXB_LISTEN_ADDR has a port");
    assert!(listen.starts_with("0.0.0.0:"), "{what}: {listen} is not reachable from the kubelet");
    let http = seq_at(container, &["ports"])
        .iter()
        .find(|p| str_at(p, &["name"]) == Some("http"))
        .unwrap_or_else(|| panic!("{what}: no port named http"));
    assert_eq!(at(http, &["containerPort"]).and_then(Value::as_u64), Some(port), "{what}: port differs from BXB_LISTEN_ADDR");
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"), ("startupProbe", "/healthz")] {
        assert_eq!(str_at(container, &[probe, "httpGet", "path"]), Some(path), "{what}: {probe}");
        assert_eq!(str_at(container, &[probe, "httpGet", "port"]), Some("http"), "{what}: {probe} port");
    }
    let annotations = labels(at(deployment, &["spec", "template", "metadata", "annotations"]));
    assert_eq!(annotations.get("prometheus.io/scrape").map(String::as_str), Some("true"), "{what}");
    assert_eq!(annotations.get("prometheus.io/port"), Some(&port.to_string()), "{what}");
    assert_eq!(annotations.get("prometheus.io/path").map(String::as_str), Some("/metrics"), "{what}");
}

#[test]
fn grace_periods_outlast_the_drain() {
    for dir in APPS {
        let render = rendered(dir);
        let grace = |d: &Value| at(d, &["spec", "template", "spec", "terminationGracePeriodSeconds"]).and_then(Value::as_u64).unwrap_or(30);

        let gateway = deployment_of(render, "gateway");
        let container = first_container(gateway);
        let pre_stop: u64 = match seq_at(container, &["lifecycle", "preStop", "exec", "command"]) {
            [sleep, seconds] if sleep.as_str() == Some("sleep") => scalar(seconds).and_then(|s| s.parse().ok()).expect("sleep seconds"),
            other => panic!("{dir}: gateway preStop is not `sleep N`: {other:?}"),
        };
        // gateway::run: in-flight requests get the request timeout + 1 s, then the producer flush.
        let drain_ms =
            pre_stop * 1000 + env_ms(container, "BXB_REQUEST_TIMEOUT_MS") + 1000 + env_ms(container, "BXB_SHUTDOWN_FLUSH_TIMEOUT_MS");
        assert!(grace(gateway) * 1000 > drain_ms, "{dir}: gateway grace {} s <= drain {drain_ms} ms", grace(gateway));

        let postgres = deployment_of(render, "consumer-postgres");
        let container = first_container(postgres);
        let drain_ms = env_ms(container, "BXB_BATCH_MAX_WAIT_MS") + env_ms(container, "BXB_POSTGRES_STATEMENT_TIMEOUT_MS");
        assert!(grace(postgres) * 1000 > drain_ms, "{dir}: consumer-postgres grace <= drain {drain_ms} ms");

        let clickhouse = deployment_of(render, "consumer-clickhouse");
        let container = first_container(clickhouse);
        let drain_ms = env_ms(container, "BXB_BATCH_MAX_WAIT_MS") + env_ms(container, "BXB_CLICKHOUSE_WRITE_TIMEOUT_MS");
        assert!(grace(clickhouse) * 1000 > drain_ms, "{dir}: consumer-clickhouse grace <= drain {drain_ms} ms");
    }
}

#[test]
fn settings_are_ones_the_binaries_read() {
    let by_binary = settings_by_binary();
    let all: BTreeSet<&String> = by_binary.values().flatten().collect();
    for (dir, render) in renders() {
        for config_map in render.all("ConfigMap") {
            for key in labels(at(config_map, &["data"])).keys() {
                assert!(all.contains(key), "{dir}: ConfigMap {} sets {key}, which no binary reads", name(config_map));
            }
        }
        for secret in render.all("Secret") {
            for key in labels(at(secret, &["stringData"])).keys().chain(labels(at(secret, &["data"])).keys()) {
                assert!(all.contains(key), "{dir}: Secret {} holds {key}, which no binary reads", name(secret));
            }
        }
        for (workload, pod) in workloads(render) {
            for container in containers(pod) {
                let what = format!("{dir}: {}", name(workload));
                match our_binary(container) {
                    Some(binary) => {
                        let reads = &by_binary[&binary];
                        for variable in env_names(container) {
                            assert!(reads.contains(&variable), "{what}: {binary} does not read {variable}");
                        }
                    }
                    // A tool's own variables must not look like settings of ours.
                    None => {
                        for variable in env_names(container) {
                            assert!(!variable.starts_with("BXB_"), "{what}: {variable} is not read by any binary");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn references_resolve() {
    for dir in APPS {
        let render = rendered(dir);
        for (workload, pod) in workloads(render) {
            check_references(dir, render, name(workload), pod, render);
        }
        let secrets: Vec<&str> = render.all("Secret").map(name).collect();
        if dir == PROD {
            assert!(secrets.is_empty(), "{dir} renders Secrets {secrets:?}: production credentials are created out of band");
        }
        check_gateway_service_and_autoscaler(dir, render);
        check_disruption_budgets(dir, render);
        check_network_policies(dir, render);
    }
    for (replay, app) in REPLAYS {
        for (workload, pod) in workloads(rendered(replay)) {
            check_references(replay, rendered(replay), name(workload), pod, rendered(app));
        }
    }
}

/// ConfigMaps must exist (in the render or the app it belongs to); Secrets must exist with the
/// key, or be one of the documented out-of-band Secrets.
fn check_references(dir: &str, render: &crate::render::Render, workload: &str, pod: &Value, app: &crate::render::Render) {
    let config_exists = |n: &str| render.named("ConfigMap", n).is_some() || app.named("ConfigMap", n).is_some();
    for container in containers(pod) {
        for source in seq_at(container, &["envFrom"]) {
            if let Some(cm) = str_at(source, &["configMapRef", "name"]) {
                assert!(config_exists(cm), "{dir}: {workload} reads ConfigMap {cm}, which is not rendered");
            }
            assert!(at(source, &["secretRef"]).is_none(), "{dir}: {workload}: take single keys, not a whole Secret");
        }
        for variable in seq_at(container, &["env"]) {
            if let Some(reference) = at(variable, &["valueFrom", "secretKeyRef"]) {
                let secret = str_at(reference, &["name"]).expect("a Secret name");
                let key = str_at(reference, &["key"]).expect("a key");
                let optional = at(reference, &["optional"]) == Some(&Value::Bool(true));
                match render.named("Secret", secret).or_else(|| app.named("Secret", secret)) {
                    Some(found) => {
                        let keys = labels(at(found, &["stringData"]));
                        assert!(optional || keys.contains_key(key), "{dir}: {workload} needs {secret}/{key}, not in the example");
                    }
                    None => assert!(OUT_OF_BAND_SECRETS.contains(&secret), "{dir}: {workload} reads unknown Secret {secret}"),
                }
            }
            if let Some(cm) = str_at(variable, &["valueFrom", "configMapKeyRef", "name"]) {
                assert!(config_exists(cm), "{dir}: {workload} reads ConfigMap {cm}, which is not rendered");
            }
        }
    }
    for volume in seq_at(pod, &["volumes"]) {
        if let Some(secret) = str_at(volume, &["secret", "secretName"]) {
            let rendered = render.named("Secret", secret).is_some();
            assert!(rendered || OUT_OF_BAND_SECRETS.contains(&secret), "{dir}: {workload} mounts unknown Secret {secret}");
        }
    }
}

fn check_gateway_service_and_autoscaler(dir: &str, render: &crate::render::Render) {
    let gateway = deployment_of(render, "gateway");
    assert!(at(gateway, &["spec", "replicas"]).is_none(), "{dir}: the HPA owns the gateway's replica count");
    let service = render.named("Service", "gateway").unwrap_or_else(|| panic!("{dir}: no gateway Service"));
    assert!(selects(&labels(at(service, &["spec", "selector"])), &pod_labels(gateway)), "{dir}: Service misses the gateway pods");
    let port_names: Vec<&str> = seq_at(first_container(gateway), &["ports"]).iter().filter_map(|p| str_at(p, &["name"])).collect();
    for port in seq_at(service, &["spec", "ports"]) {
        let target = str_at(port, &["targetPort"]).expect("a named targetPort");
        assert!(port_names.contains(&target), "{dir}: Service targets port {target}, not one of {port_names:?}");
    }
    let hpa = render.named("HorizontalPodAutoscaler", "gateway").unwrap_or_else(|| panic!("{dir}: no gateway HPA"));
    assert_eq!(str_at(hpa, &["spec", "scaleTargetRef", "kind"]), Some("Deployment"));
    assert_eq!(str_at(hpa, &["spec", "scaleTargetRef", "name"]), Some(name(gateway)), "{dir}: HPA target");
    let min = at(hpa, &["spec", "minReplicas"]).and_then(Value::as_u64).expect("minReplicas");
    let max = at(hpa, &["spec", "maxReplicas"]).and_then(Value::as_u64).expect("maxReplicas");
    assert!(1 <= min && min <= max, "{dir}: HPA {min}..{max}");
}

fn check_disruption_budgets(dir: &str, render: &crate::render::Render) {
    for deployment in render.all("Deployment") {
        let pods = pod_labels(deployment);
        let budgets: Vec<&Value> = render
            .all("PodDisruptionBudget")
            .filter(|pdb| selects(&labels(at(pdb, &["spec", "selector", "matchLabels"])), &pods))
            .collect();
        assert_eq!(budgets.len(), 1, "{dir}: Deployment {} needs exactly one PodDisruptionBudget", name(deployment));
        // maxUnavailable keeps a single-replica Deployment drainable; minAvailable would block it.
        assert!(at(budgets[0], &["spec", "maxUnavailable"]).is_some(), "{dir}: {} budget", name(deployment));
    }
}

fn check_network_policies(dir: &str, render: &crate::render::Render) {
    let policies: Vec<&Value> = render.all("NetworkPolicy").collect();
    for (workload, _) in workloads(render) {
        let pods = pod_labels(workload);
        let denies_all = policies.iter().any(|p| {
            let types: Vec<&str> = seq_at(p, &["spec", "policyTypes"]).iter().filter_map(Value::as_str).collect();
            selects(&labels(at(p, &["spec", "podSelector", "matchLabels"])), &pods)
                && types.contains(&"Ingress")
                && types.contains(&"Egress")
                && at(p, &["spec", "ingress"]).is_none()
                && at(p, &["spec", "egress"]).is_none()
        });
        assert!(denies_all, "{dir}: no default-deny NetworkPolicy selects {}", name(workload));
    }
    let gateway = deployment_of(render, "gateway");
    let api_port = seq_at(first_container(gateway), &["ports"])[0]["containerPort"].as_u64();
    let open = policies.iter().any(|p| {
        selects(&labels(at(p, &["spec", "podSelector", "matchLabels"])), &pod_labels(gateway))
            && seq_at(p, &["spec", "ingress"]).iter().any(|rule| {
                at(rule, &["from"]).is_none()
                    && seq_at(rule, &["ports"]).iter().any(|port| at(port, &["port"]).and_then(Value::as_u64) == api_port)
            })
    });
    assert!(open, "{dir}: no NetworkPolicy lets clients reach the gateway's port");
}
