//! Consumers against partitions, the KEDA objects of prod (custom resources, which no bundled
//! schema covers: checked here against the rest of the render), and the replay Jobs.

use std::collections::BTreeSet;

use serde_yaml::Value;

use crate::render::rendered;
use crate::support::{at, read, scalar, seq_at, str_at, workspace_binaries, workspace_packages};
use crate::workloads::*;

const CONSUMERS: [&str; 2] = ["consumer-clickhouse", "consumer-postgres"];

/// The partitions, replication factor and min ISR the topic Job of a render creates.
fn topic_settings(dir: &str) -> (u64, u64, u64) {
    let job = rendered(dir).named("Job", "bxb-create-topics").unwrap_or_else(|| panic!("{dir}: no topic Job"));
    let container = first_container(job);
    let number = |v: &str| env_value(container, v).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{dir}: {v}"));
    (number("EVENTS_PARTITIONS"), number("REPLICATION_FACTOR"), number("MIN_INSYNC_REPLICAS"))
}

/// The default consumer group a consumer's source declares (`pub const DEFAULT_...GROUP: &str`).
fn default_group(binary: &str) -> String {
    let dir = &workspace_packages()[&workspace_binaries()[binary]];
    let source = read(&format!("{dir}/src/lib.rs"));
    let line = source
        .lines()
        .find(|l| l.starts_with("pub const DEFAULT_") && l.contains("GROUP: &str = \""))
        .unwrap_or_else(|| panic!("{dir}/src/lib.rs declares no `pub const DEFAULT_...GROUP: &str`"));
    line.split('"').nth(1).expect("a quoted group").to_owned()
}

/// KEDA's name of a SASL mechanism.
fn keda_sasl(mechanism: &str) -> &'static str {
    match mechanism {
        "PLAIN" => "plaintext",
        "SCRAM-SHA-256" => "scram_sha256",
        "SCRAM-SHA-512" => "scram_sha512",
        "GSSAPI" => "gssapi",
        "OAUTHBEARER" => "oauthbearer",
        other => panic!("unknown SASL mechanism {other}"),
    }
}

#[test]
fn consumers_never_outnumber_partitions() {
    for dir in APPS {
        let render = rendered(dir);
        let (partitions, replication, min_insync) = topic_settings(dir);
        assert!(min_insync >= 1 && min_insync <= replication, "{dir}: min.insync.replicas {min_insync} > RF {replication}");
        for binary in CONSUMERS {
            let deployment = deployment_of(render, binary);
            if let Some(replicas) = at(deployment, &["spec", "replicas"]).and_then(Value::as_u64) {
                assert!(replicas <= partitions, "{dir}: {binary} has {replicas} replicas for {partitions} partitions");
            }
            for scaled in render.all("ScaledObject").filter(|s| str_at(s, &["spec", "scaleTargetRef", "name"]) == Some(name(deployment))) {
                let max = at(scaled, &["spec", "maxReplicaCount"]).and_then(Value::as_u64).expect("maxReplicaCount");
                assert!(max <= partitions, "{dir}: KEDA may scale {binary} to {max} > {partitions} partitions");
            }
        }
    }
    let (_, replication, min_insync) = topic_settings(PROD);
    assert!(min_insync < replication, "prod: with min ISR = RF one broker down stops every write");
}

#[test]
fn consumer_groups_are_the_binaries_defaults() {
    for dir in APPS {
        for binary in CONSUMERS {
            let group = env_value(first_container(deployment_of(rendered(dir), binary)), "BXB_CONSUMER_GROUP");
            assert_eq!(group, Some(default_group(binary)), "{dir}: {binary} group differs from the binary's default");
        }
    }
}

const SCALED_OBJECT_SPEC: [&str; 10] = [
    "scaleTargetRef",
    "pollingInterval",
    "cooldownPeriod",
    "initialCooldownPeriod",
    "idleReplicaCount",
    "minReplicaCount",
    "maxReplicaCount",
    "advanced",
    "fallback",
    "triggers",
];
const KAFKA_TRIGGER_METADATA: [&str; 14] = [
    "bootstrapServers",
    "consumerGroup",
    "topic",
    "lagThreshold",
    "activationLagThreshold",
    "offsetResetPolicy",
    "allowIdleConsumers",
    "scaleToZeroOnInvalidOffset",
    "excludePersistentLag",
    "limitToPartitionsWithLag",
    "partitionLimitation",
    "version",
    "sasl",
    "tls",
];
const TRIGGER_AUTH_PARAMETERS: [&str; 8] = ["sasl", "username", "password", "tls", "ca", "cert", "key", "keyPassword"];

fn keys(value: Option<&Value>) -> Vec<String> {
    value.and_then(Value::as_mapping).map(|m| m.keys().filter_map(|k| k.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

#[test]
fn keda_scales_each_consumer_on_its_own_lag() {
    let render = rendered(PROD);
    let settings = config_map(render, "bxb-settings").expect("prod settings");
    let protocol = settings.get("BXB_KAFKA_SECURITY_PROTOCOL").map(String::as_str).unwrap_or("plaintext");
    let (partitions, _, _) = topic_settings(PROD);
    for binary in CONSUMERS {
        let deployment = deployment_of(render, binary);
        assert!(at(deployment, &["spec", "replicas"]).is_none(), "prod: KEDA owns {binary}'s replica count");
        let scaled: Vec<&Value> =
            render.all("ScaledObject").filter(|s| str_at(s, &["spec", "scaleTargetRef", "name"]) == Some(name(deployment))).collect();
        assert_eq!(scaled.len(), 1, "prod: {binary} needs one ScaledObject");
        let scaled = scaled[0];
        for key in keys(at(scaled, &["spec"])) {
            assert!(SCALED_OBJECT_SPEC.contains(&key.as_str()), "ScaledObject {}: unknown field spec.{key}", name(scaled));
        }
        let min = at(scaled, &["spec", "minReplicaCount"]).and_then(Value::as_u64).expect("minReplicaCount");
        let max = at(scaled, &["spec", "maxReplicaCount"]).and_then(Value::as_u64).expect("maxReplicaCount");
        assert!(1 <= min && min <= max && max <= partitions, "{binary}: {min}..{max} for {partitions} partitions");

        let triggers = seq_at(scaled, &["spec", "triggers"]);
        assert_eq!(triggers.len(), 1, "{binary}: one lag trigger");
        let trigger = &triggers[0];
        assert_eq!(str_at(trigger, &["type"]), Some("kafka"));
        for key in keys(at(trigger, &["metadata"])) {
            assert!(KAFKA_TRIGGER_METADATA.contains(&key.as_str()), "{binary}: unknown kafka trigger field {key}");
        }
        let meta = |k: &str| str_at(trigger, &["metadata", k]).unwrap_or_else(|| panic!("{binary}: trigger {k} is not a string"));
        let container = first_container(deployment);
        assert_eq!(Some(meta("consumerGroup").to_owned()), env_value(container, "BXB_CONSUMER_GROUP"), "{binary}: lag of another group");
        assert_eq!(Some(meta("topic")), settings.get("BXB_EVENTS_TOPIC").map(String::as_str), "{binary}: topic");
        assert_eq!(Some(meta("bootstrapServers")), settings.get("BXB_KAFKA_BROKERS").map(String::as_str), "{binary}: brokers");
        assert!(meta("lagThreshold").parse::<u64>().is_ok_and(|n| n > 0), "{binary}: lagThreshold");
        assert_eq!(meta("allowIdleConsumers"), "false", "{binary}: idle consumers beyond the partitions");
        let uses_tls = protocol.ends_with("ssl");
        assert_eq!(str_at(trigger, &["metadata", "tls"]) == Some("enable"), uses_tls, "{binary}: tls vs {protocol}");
        if protocol.starts_with("sasl_") {
            let mechanism = keda_sasl(settings.get("BXB_KAFKA_SASL_MECHANISM").expect("a SASL mechanism"));
            assert_eq!(meta("sasl"), mechanism, "{binary}: KEDA's SASL mechanism differs from the consumers'");
            check_trigger_authentication(binary, trigger, container);
        }
    }
}

/// The TriggerAuthentication exists and takes the same Secret keys as the consumer itself.
fn check_trigger_authentication(binary: &str, trigger: &Value, container: &Value) {
    let auth_name = str_at(trigger, &["authenticationRef", "name"]).unwrap_or_else(|| panic!("{binary}: SASL without authenticationRef"));
    let auth = rendered(PROD).named("TriggerAuthentication", auth_name).unwrap_or_else(|| panic!("no TriggerAuthentication {auth_name}"));
    for key in keys(at(auth, &["spec"])) {
        assert_eq!(key, "secretTargetRef", "TriggerAuthentication {auth_name}: only Secret references expected");
    }
    let consumer_refs: BTreeSet<(String, String)> = seq_at(container, &["env"])
        .iter()
        .filter_map(|e| {
            let r = at(e, &["valueFrom", "secretKeyRef"])?;
            Some((str_at(r, &["name"])?.to_owned(), str_at(r, &["key"])?.to_owned()))
        })
        .collect();
    let mut parameters = BTreeSet::new();
    for target in seq_at(auth, &["spec", "secretTargetRef"]) {
        let parameter = str_at(target, &["parameter"]).expect("a parameter");
        assert!(TRIGGER_AUTH_PARAMETERS.contains(&parameter), "unknown TriggerAuthentication parameter {parameter}");
        parameters.insert(parameter);
        let reference = (str_at(target, &["name"]).expect("a Secret").to_owned(), str_at(target, &["key"]).expect("a key").to_owned());
        assert!(consumer_refs.contains(&reference), "{auth_name}: {reference:?} is not the Secret key {binary} uses");
    }
    assert!(parameters.contains("username") && parameters.contains("password"), "{auth_name}: SCRAM needs username and password");
}

#[test]
fn replay_jobs_run_bxbctl_with_their_overlay_image() {
    let bxbctl = read("bxbctl/src/main.rs");
    for (replay, app) in REPLAYS {
        let job = rendered(replay).named("Job", "bxb-replay").unwrap_or_else(|| panic!("{replay}: no Job bxb-replay"));
        let container = first_container(job);
        assert_eq!(our_binary(container).as_deref(), Some("bxbctl"), "{replay}");
        let args: Vec<String> = seq_at(container, &["args"]).iter().filter_map(scalar).collect();
        assert_eq!(args.first().map(String::as_str), Some("replay"), "{replay}: {args:?}");
        let value_of = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
        let groups: Vec<Option<String>> =
            CONSUMERS.iter().map(|b| env_value(first_container(deployment_of(rendered(app), b)), "BXB_CONSUMER_GROUP")).collect();
        assert!(groups.contains(&value_of("--group")), "{replay}: --group is none of the consumer groups {groups:?}");
        let topic = config_map(rendered(app), "bxb-settings").and_then(|s| s.get("BXB_EVENTS_TOPIC").cloned());
        assert_eq!(value_of("--topic"), topic, "{replay}: --topic");
        for flag in ["--group", "--topic", "--to-earliest", "--execute"] {
            assert!(args.iter().any(|a| a == flag), "{replay}: {flag} missing");
            // clap derives `--to-earliest` from the field `to_earliest`.
            let field = flag.trim_start_matches("--").replace('-', "_");
            assert!(bxbctl.contains(&format!("{field}:")), "bxbctl has no flag {flag}");
        }
        let app_image = str_at(first_container(deployment_of(rendered(app), "gateway")), &["image"]);
        assert_eq!(str_at(container, &["image"]), app_image, "{replay}: image differs from {app}");
        let app_namespace = str_at(deployment_of(rendered(app), "gateway"), &["metadata", "namespace"]);
        assert_eq!(str_at(job, &["metadata", "namespace"]), app_namespace, "{replay}: namespace differs from {app}");
    }
}
