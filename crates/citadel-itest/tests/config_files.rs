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
        jail.set_env("CITADEL_POSTGRES_PASSWORD", "reference-pg-password");
        jail.set_env("CITADEL_QDRANT_API_KEY", "reference-qdrant-key");
        jail.set_env("CITADEL_PROMETHEUS_PASSWORD", "reference-prom-password");
        jail.set_env("CITADEL_PROMETHEUS_TOKEN", "reference-prom-token");
        jail.create_file("reference.yaml", citadel_itest::REFERENCE_YAML)?;
        // The prompts file the reference's load scenario names (read at validation).
        std::fs::create_dir_all(jail.directory().join("config")).unwrap();
        std::fs::copy(
            repo_file("config/prompts.jsonl"),
            jail.directory().join("config/prompts.jsonl"),
        )
        .unwrap();
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
        assert_eq!(
            names,
            [
                "basic",
                "database",
                "external_api",
                "cross_service",
                "load",
                "monitoring",
                "faults"
            ]
        );
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
    Jail::expect_with(|jail| {
        // The stack's secret files and the expected schema, where local.yaml looks for them
        // (relative to the working directory, like `scripts/demo.sh` runs it).
        let dir = jail.directory().to_path_buf();
        for sub in [
            "target/services/postgres",
            "target/services/qdrant",
            "config/database",
        ] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        jail.create_file("target/services/postgres/password", "local-pg-password")?;
        jail.create_file("target/services/qdrant/api_key", "local-qdrant-key")?;
        std::fs::create_dir_all(dir.join("config")).unwrap();
        std::fs::copy(
            repo_file("config/prompts.jsonl"),
            dir.join("config/prompts.jsonl"),
        )
        .unwrap();
        std::fs::copy(
            repo_file("config/database/expected_schema.yaml"),
            dir.join("config/database/expected_schema.yaml"),
        )
        .unwrap();
        let path = repo_file("config/local.yaml");
        let loaded = citadel_itest::load(std::slice::from_ref(&path), Vec::new())
            .unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = loaded.testers.iter().map(|t| t.name()).collect();
        assert_eq!(
            names,
            [
                "basic",
                "database",
                "external_api",
                "cross_service",
                "load",
                "monitoring",
                "faults"
            ]
        );
        let ids: Vec<String> = loaded
            .testers
            .iter()
            .flat_map(|t| t.checks())
            .map(|c| c.id().to_string())
            .collect();
        assert_eq!(
            ids.iter()
                .filter(|i| i.starts_with("external_api."))
                .count(),
            18
        );
        for id in [
            "basic.model_c.health",
            "basic.qdrant.health",
            "database.citadel.pooling",
            "load.gateway_chat_stream",
            "monitoring.drills.drill",
            "faults.gateway_drill.retry",
        ] {
            assert!(ids.iter().any(|i| i == id), "{id} missing: {ids:?}");
        }
        let summary = loaded.config.summary().to_string();
        assert!(!summary.contains("local-pg-password") && !summary.contains("local-qdrant-key"));

        let text = std::fs::read_to_string(path).unwrap();
        for line in text.lines().filter(|l| l.contains("://")) {
            assert!(line.contains("://127.0.0.1:"), "not loopback: {line}");
        }
        Ok(())
    });
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
            "CITADEL_QDRANT_URL",
            "CITADEL_QDRANT_GRPC_URL",
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
        jail.set_env("CITADEL_POSTGRES_PASSWORD", "pg-pa55word");
        jail.set_env("CITADEL_QDRANT_URL", "http://127.0.0.1:6333");
        jail.set_env("CITADEL_QDRANT_GRPC_URL", "http://127.0.0.1:6334");
        jail.set_env("CITADEL_QDRANT_API_KEY", "qdrant-k3y");
        let loaded = citadel_itest::load(&[template], Vec::new()).unwrap_or_else(|e| panic!("{e}"));
        let c = &loaded.config;
        assert_eq!(c.run.timeout, Duration::from_secs(30));
        assert_eq!(c.run.retries, 3);
        assert_eq!(c.run.concurrency, 10);
        let summary = c.summary().to_string();
        assert!(summary.contains("postgres://127.0.0.1:5432"), "{summary}");
        for secret in ["t0ken-value", "pg-pa55word", "qdrant-k3y"] {
            assert!(!summary.contains(secret), "{secret} in {summary}");
        }
        let names: Vec<&str> = loaded.testers.iter().map(|t| t.name()).collect();
        assert_eq!(names, ["basic", "database", "external_api"]);
        Ok(())
    });
}
