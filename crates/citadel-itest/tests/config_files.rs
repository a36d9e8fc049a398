//! The config files shipped in config/ stay valid: reference.yaml (every key), local.yaml (the
//! local stack) and integration_tests.yaml (the deployment template).

// figment::Jail closures return figment::Error, which is large by design.
#![allow(clippy::result_large_err)]

use std::path::PathBuf;
use std::time::Duration;

use figment::Jail;

fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

#[test]
fn reference_yaml_parses_and_sets_every_core_key() {
    Jail::expect_with(|jail| {
        jail.set_env("CITADEL_GATEWAY_TOKEN", "reference-token");
        jail.create_file("reference.yaml", citadel_itest::REFERENCE_YAML)?;
        let loaded = citadel_itest::load(&["reference.yaml".into()], Vec::new())
            .unwrap_or_else(|e| panic!("{e}"));
        let run = &loaded.config.run;
        assert_eq!(run.concurrency, 10);
        assert_eq!(run.timeout, Duration::from_secs(30));
        assert_eq!(run.retries, 3);
        assert_eq!(
            loaded.config.performance_targets.latency_p95,
            Duration::from_millis(200)
        );
        let names: Vec<&str> = loaded.testers.iter().map(|t| t.name()).collect();
        assert_eq!(names, ["basic"]);
        // Every section this build knows is documented in the reference.
        for entry in citadel_itest::registry() {
            assert!(
                citadel_itest::REFERENCE_YAML.contains(&format!("\n{}:\n", entry.section)),
                "reference.yaml lacks section {}",
                entry.section
            );
        }
        Ok(())
    });
}

#[test]
fn local_yaml_is_valid_and_loopback_only() {
    let path = repo_file("config/local.yaml");
    let loaded = citadel_itest::load(std::slice::from_ref(&path), Vec::new())
        .unwrap_or_else(|e| panic!("{e}"));
    let checks: usize = loaded.testers.iter().map(|t| t.checks().len()).sum();
    assert!(checks >= 7, "{checks}");
    let text = std::fs::read_to_string(path).unwrap();
    for line in text.lines().filter(|l| l.contains("://")) {
        assert!(line.contains("://127.0.0.1:"), "not loopback: {line}");
    }
}

#[test]
fn the_deployment_template_takes_hosts_from_env() {
    Jail::expect_with(|jail| {
        let template = repo_file("config/integration_tests.yaml");
        let err = match citadel_itest::load(std::slice::from_ref(&template), Vec::new()) {
            Ok(_) => panic!("must fail without its environment"),
            Err(e) => e.to_string(),
        };
        for var in [
            "CITADEL_GATEWAY_URL",
            "CITADEL_PROMETHEUS_URL",
            "CITADEL_POSTGRES_HOST",
        ] {
            assert!(
                err.contains(&format!("environment variable {var} is not set")),
                "{err}"
            );
        }
        assert!(
            err.contains("integration_tests.yaml:"),
            "names file and line: {err}"
        );
        assert!(
            !err.contains("CITADEL_POSTGRES_PORT is not set"),
            "has a default: {err}"
        );

        jail.set_env("CITADEL_GATEWAY_URL", "https://gateway.example.invalid");
        jail.set_env("CITADEL_PROMETHEUS_URL", "http://127.0.0.1:9090");
        jail.set_env("CITADEL_POSTGRES_HOST", "127.0.0.1");
        jail.set_env("CITADEL_GATEWAY_TOKEN", "t0ken-value");
        let loaded = citadel_itest::load(&[template], Vec::new()).unwrap_or_else(|e| panic!("{e}"));
        let c = &loaded.config;
        assert_eq!(c.run.timeout, Duration::from_secs(30));
        assert_eq!(c.run.retries, 3);
        assert_eq!(c.run.concurrency, 10);
        let summary = c.summary().to_string();
        assert!(summary.contains("postgres://127.0.0.1:5432"), "{summary}");
        assert!(!summary.contains("t0ken-value"));
        Ok(())
    });
}
