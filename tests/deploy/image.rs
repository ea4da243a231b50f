//! The Dockerfile (which cannot be built without a Docker engine): it ships exactly the
//! workspace's binaries, every command the manifests and the compose file run is among them,
//! and its user is the one the manifests declare.

use std::collections::{BTreeMap, BTreeSet};

use serde_yaml::Value;

use crate::render::renders;
use crate::support::{at, read, workspace_binaries};
use crate::workloads::{containers, our_binary, workloads};

/// `ARG NAME="a b c"` of the Dockerfile, split into words.
pub fn dockerfile_arg(dockerfile: &str, arg: &str) -> Vec<String> {
    let prefix = format!("ARG {arg}=\"");
    let line = dockerfile.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("Dockerfile has no {prefix}...\""));
    line[prefix.len()..].trim_end_matches('"').split_whitespace().map(str::to_owned).collect()
}

/// Packages whose binaries are development tools, run from a checkout, never deployed.
const NOT_DEPLOYED: &[&str] = &["bxb-bench", "bxb-chaos"];

#[test]
fn the_image_ships_every_workspace_binary() {
    let dockerfile = read("Dockerfile");
    let shipped: BTreeSet<String> = dockerfile_arg(&dockerfile, "BINS").into_iter().collect();
    let packages: BTreeSet<String> = dockerfile_arg(&dockerfile, "PACKAGES").into_iter().collect();
    let binaries: BTreeMap<String, String> =
        workspace_binaries().into_iter().filter(|(_, package)| !NOT_DEPLOYED.contains(&package.as_str())).collect();
    let all: BTreeSet<String> = binaries.keys().cloned().collect();
    assert_eq!(shipped, all, "the Dockerfile's BINS must be every deployable [[bin]] of the workspace");
    let needed: BTreeSet<String> = binaries.values().cloned().collect();
    assert_eq!(packages, needed, "the Dockerfile's PACKAGES must be the packages of those binaries");
}

#[test]
fn everything_run_from_the_image_exists_in_it_and_runs_as_its_user() {
    let dockerfile = read("Dockerfile");
    let shipped = dockerfile_arg(&dockerfile, "BINS");
    let user_line = dockerfile.lines().rfind(|l| l.starts_with("USER ")).expect("the runtime stage sets USER");
    let (uid, gid) = user_line["USER ".len()..].split_once(':').expect("USER uid:gid");
    let (uid, gid): (u64, u64) = (uid.parse().expect("a numeric uid"), gid.parse().expect("a numeric gid"));
    assert!(uid > 0 && gid > 0, "the image must not run as root");

    let mut run = 0;
    for (dir, render) in renders() {
        for (workload, pod) in workloads(render) {
            for container in containers(pod) {
                let Some(binary) = our_binary(container) else { continue };
                run += 1;
                assert!(shipped.contains(&binary), "{dir}: runs {binary}, which the image does not ship");
                let user = at(pod, &["securityContext", "runAsUser"]).and_then(Value::as_u64);
                assert_eq!(user, Some(uid), "{dir}: {workload:?} runs the image as another user", workload = workload["metadata"]["name"]);
            }
        }
    }
    assert!(run > 0, "no container of the manifests runs a workspace binary");
}
