//! Kubernetes manifests for a distributed run, built from k8s-openapi's typed API structs
//! (valid by construction) and printed as YAML documents:
//!
//! - a ConfigMap with the configuration file;
//! - a headless Service and a Pod for the coordinator (`load coordinate`), listening on the
//!   pod's own address (`$(POD_IP)` from the downward API);
//! - an Indexed Job (`completionMode: Indexed`, `completions = parallelism = N`,
//!   `backoffLimitPerIndex`) whose pods run `load --coordinator …`; Kubernetes sets
//!   `JOB_COMPLETION_INDEX` in each pod, the Job sets `CITADEL_ITEST_SHARDS`;
//! - the bearer token is read from an existing Secret (key `token`), mounted as a file in
//!   every pod; the manifests never carry it.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    ObjectFieldSelector, Pod, PodSpec, PodTemplateSpec, SecretVolumeSource, Service, ServicePort,
    ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The Kubernetes API types the manifests are made of.
pub use k8s_openapi;

/// Where the configuration is mounted in every pod.
pub const CONFIG_DIR: &str = "/etc/citadel-itest";
/// Where the token Secret is mounted in every pod.
pub const TOKEN_DIR: &str = "/var/run/secrets/citadel-itest";
/// The coordinator's port.
pub const PORT: u16 = 7070;

/// What the manifests describe.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ManifestOptions {
    /// Prefix of every object's name (and the `app` label).
    pub name: String,
    /// Shards (Job completions and parallelism).
    pub shards: u32,
    /// The container image holding `citadel-itest`.
    pub image: String,
    /// The configuration file's name inside the ConfigMap (`load.yaml`).
    pub config_file: String,
    /// The configuration file's text.
    pub config: String,
    /// The scenario to run (needed when several are configured).
    pub scenario: Option<String>,
    /// Namespace of every object (omitted: the current one).
    pub namespace: Option<String>,
    /// The Secret holding the bearer token under key `token`.
    pub token_secret: String,
    /// The coordinator's deadline.
    pub deadline: Duration,
    /// Retries of each shard's pod (`backoffLimitPerIndex`).
    pub backoff_limit_per_index: i32,
}

impl ManifestOptions {
    /// `shards` shards of the configuration `config` (file name `config_file`), image
    /// `image`; defaults: name `citadel-itest-load`, Secret `citadel-itest-load-token`,
    /// deadline 15 minutes, no pod retries.
    pub fn new(
        shards: u32,
        image: impl Into<String>,
        config_file: impl Into<String>,
        config: impl Into<String>,
    ) -> Self {
        ManifestOptions {
            name: "citadel-itest-load".into(),
            shards,
            image: image.into(),
            config_file: config_file.into(),
            config: config.into(),
            scenario: None,
            namespace: None,
            token_secret: "citadel-itest-load-token".into(),
            deadline: Duration::from_secs(900),
            backoff_limit_per_index: 0,
        }
    }
}

/// The manifests cannot be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// An option is not usable.
    #[error("k8s-manifests: {0}")]
    Invalid(String),
    /// Serialising failed (a bug).
    #[error("k8s-manifests: serialise: {0}")]
    Serialise(String),
}

fn dns_label(what: &str, v: &str) -> Result<(), ManifestError> {
    let ok = !v.is_empty()
        && v.len() <= 50
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !v.starts_with('-')
        && !v.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ManifestError::Invalid(format!(
            "{what} `{v}` is not a DNS label (lowercase letters, digits, `-`; at most 50)"
        )))
    }
}

/// The manifests, in apply order: ConfigMap, Service, coordinator Pod, Job.
pub fn build(o: &ManifestOptions) -> Result<(ConfigMap, Service, Pod, Job), ManifestError> {
    dns_label("--name", &o.name)?;
    dns_label("--token-secret", &o.token_secret)?;
    if let Some(ns) = &o.namespace {
        dns_label("--namespace", ns)?;
    }
    if o.shards == 0 || o.shards > crate::shard::MAX_SHARDS {
        return Err(ManifestError::Invalid(format!(
            "--shards must be from 1 to {}",
            crate::shard::MAX_SHARDS
        )));
    }
    if o.image.trim().is_empty() || o.image.chars().any(char::is_whitespace) {
        return Err(ManifestError::Invalid(format!(
            "--image `{}` is not an image reference",
            o.image
        )));
    }
    if o.config_file.is_empty() || o.config_file.contains('/') {
        return Err(ManifestError::Invalid(format!(
            "config file name `{}` must be a plain file name",
            o.config_file
        )));
    }
    let coordinator = format!("{}-coordinator", o.name);
    let config_map = format!("{}-config", o.name);
    let labels = |role: &str| {
        BTreeMap::from([
            ("app.kubernetes.io/name".to_string(), o.name.clone()),
            ("app.kubernetes.io/component".to_string(), role.to_string()),
        ])
    };
    let meta = |name: &str, role: &str| ObjectMeta {
        name: Some(name.into()),
        namespace: o.namespace.clone(),
        labels: Some(labels(role)),
        ..ObjectMeta::default()
    };
    let config_path = format!("{CONFIG_DIR}/{}", o.config_file);
    let token_path = format!("{TOKEN_DIR}/token");
    let volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map.clone(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "token".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(o.token_secret.clone()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
    ];
    let mounts = vec![
        VolumeMount {
            name: "config".into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "token".into(),
            mount_path: TOKEN_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
    ];
    let mut scenario_args = Vec::new();
    if let Some(s) = &o.scenario {
        scenario_args = vec!["--scenario".to_string(), s.clone()];
    }

    let cm = ConfigMap {
        metadata: meta(&config_map, "config"),
        data: Some(BTreeMap::from([(o.config_file.clone(), o.config.clone())])),
        ..ConfigMap::default()
    };

    let service = Service {
        metadata: meta(&coordinator, "coordinator"),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(labels("coordinator")),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: i32::from(PORT),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };

    let mut coord_args = vec![
        "load".to_string(),
        "coordinate".into(),
        "-c".into(),
        config_path.clone(),
        "--shards".into(),
        o.shards.to_string(),
        "--listen".into(),
        format!("$(POD_IP):{PORT}"),
        "--token-file".into(),
        token_path.clone(),
        "--deadline".into(),
        humantime::format_duration(o.deadline).to_string(),
        "--out-dir".into(),
        "/tmp/citadel-itest".into(),
    ];
    coord_args.extend(scenario_args.iter().cloned());
    let pod = Pod {
        metadata: meta(&coordinator, "coordinator"),
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            containers: vec![Container {
                name: "coordinator".into(),
                image: Some(o.image.clone()),
                args: Some(coord_args),
                env: Some(vec![EnvVar {
                    name: "POD_IP".into(),
                    value_from: Some(EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "status.podIP".into(),
                            ..ObjectFieldSelector::default()
                        }),
                        ..EnvVarSource::default()
                    }),
                    ..EnvVar::default()
                }]),
                ports: Some(vec![ContainerPort {
                    name: Some("http".into()),
                    container_port: i32::from(PORT),
                    ..ContainerPort::default()
                }]),
                volume_mounts: Some(mounts.clone()),
                ..Container::default()
            }],
            volumes: Some(volumes.clone()),
            ..PodSpec::default()
        }),
        ..Pod::default()
    };

    let service_host = match &o.namespace {
        Some(ns) => format!("{coordinator}.{ns}.svc"),
        None => coordinator.clone(),
    };
    let mut shard_args = vec![
        "load".to_string(),
        "-c".into(),
        config_path,
        "--quiet".into(),
        "--coordinator".into(),
        format!("http://{service_host}:{PORT}"),
        "--token-file".into(),
        token_path,
        "--out-dir".into(),
        "/tmp/citadel-itest".into(),
    ];
    shard_args.extend(scenario_args);
    let n = i32::try_from(o.shards).unwrap_or(i32::MAX);
    let job = Job {
        metadata: meta(&format!("{}-shards", o.name), "shard"),
        spec: Some(JobSpec {
            completion_mode: Some("Indexed".into()),
            completions: Some(n),
            parallelism: Some(n),
            backoff_limit_per_index: Some(o.backoff_limit_per_index.max(0)),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels("shard")),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    containers: vec![Container {
                        name: "shard".into(),
                        image: Some(o.image.clone()),
                        args: Some(shard_args),
                        env: Some(vec![EnvVar {
                            name: crate::shard::ENV_COUNT.into(),
                            value: Some(o.shards.to_string()),
                            ..EnvVar::default()
                        }]),
                        volume_mounts: Some(mounts),
                        ..Container::default()
                    }],
                    volumes: Some(volumes),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    };
    Ok((cm, service, pod, job))
}

/// The manifests as YAML documents separated by `---`.
pub fn yaml(o: &ManifestOptions) -> Result<String, ManifestError> {
    let (cm, service, pod, job) = build(o)?;
    let ser = |v: Result<String, serde_yaml::Error>| {
        v.map_err(|e| ManifestError::Serialise(e.to_string()))
    };
    let docs = [
        ser(serde_yaml::to_string(&cm))?,
        ser(serde_yaml::to_string(&service))?,
        ser(serde_yaml::to_string(&pod))?,
        ser(serde_yaml::to_string(&job))?,
    ];
    Ok(docs.iter().map(|d| format!("---\n{d}")).collect::<String>())
}

/// The manifests printed by [`yaml`], parsed back into their types (for checks and tests):
/// every document must be one of the four kinds, each exactly once.
pub fn parse(text: &str) -> Result<(ConfigMap, Service, Pod, Job), ManifestError> {
    use serde::Deserialize as _;
    let bad = |m: String| ManifestError::Invalid(format!("parse: {m}"));
    let (mut cm, mut svc, mut pod, mut job) = (None, None, None, None);
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| bad(e.to_string()))?;
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or_default()
            .to_string();
        let de = |e: serde_yaml::Error| bad(format!("{kind}: {e}"));
        let dup = |k: &str| bad(format!("{k} appears twice"));
        match kind.as_str() {
            "ConfigMap" => {
                if cm
                    .replace(serde_yaml::from_value(value).map_err(de)?)
                    .is_some()
                {
                    return Err(dup("ConfigMap"));
                }
            }
            "Service" => {
                if svc
                    .replace(serde_yaml::from_value(value).map_err(de)?)
                    .is_some()
                {
                    return Err(dup("Service"));
                }
            }
            "Pod" => {
                if pod
                    .replace(serde_yaml::from_value(value).map_err(de)?)
                    .is_some()
                {
                    return Err(dup("Pod"));
                }
            }
            "Job" => {
                if job
                    .replace(serde_yaml::from_value(value).map_err(de)?)
                    .is_some()
                {
                    return Err(dup("Job"));
                }
            }
            other => return Err(bad(format!("unexpected kind `{other}`"))),
        }
    }
    match (cm, svc, pod, job) {
        (Some(a), Some(b), Some(c), Some(d)) => Ok((a, b, c, d)),
        _ => Err(bad(
            "a ConfigMap, a Service, a Pod and a Job are expected".into()
        )),
    }
}
