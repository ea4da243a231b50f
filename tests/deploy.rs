//! The deployment files, proven without a cluster or a Docker engine.
//!
//! - k8s/: every kustomization renders with kustomize and its output validates strictly and
//!   offline with kubernetes-validate (bundled OpenAPI schemas, fixed Kubernetes versions); the
//!   KEDA custom resources, which no bundled schema covers, are checked against the rest of the
//!   render; probes, resources, security contexts, grace periods, replicas against partitions
//!   and every reference between objects are checked too.
//! - docker-compose.yml: it loads and references only services, volumes and variables that
//!   exist; the binaries get only settings they read, by the names ./dev/up uses.
//! - Dockerfile: it ships every workspace binary the manifests and the compose file run.
//!
//! The settings the binaries read are taken from the `env = "..."` of their clap structs, so a
//! renamed setting fails here. kustomize and kubernetes-validate come from ./dev/install
//! ($BXB_TOOLS_BIN); without them the suite fails, it never skips.

#[path = "deploy/compose.rs"]
mod compose;
#[path = "deploy/image.rs"]
mod image;
#[path = "deploy/k8s.rs"]
mod k8s;
#[path = "deploy/render.rs"]
mod render;
#[path = "deploy/scaling.rs"]
mod scaling;
#[path = "deploy/support.rs"]
mod support;
#[path = "deploy/workloads.rs"]
mod workloads;
