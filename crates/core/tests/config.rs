//! Layered configuration: precedence, every problem with key path and file, secrets.

// figment::Jail closures return figment::Error, which is large by design.
#![allow(clippy::result_large_err)]

use std::time::Duration;

use citadel_itest_core::config::{
    ConfigLoader, ConfigProblem, REDACTED, ReportFormat, Secret, Validate, Validator,
};
use figment::Jail;
use serde::Deserialize;

/// A tester section as a tester crate would declare it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DemoSection {
    targets: Vec<DemoTarget>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DemoTarget {
    name: String,
    url: String,
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
    password: Option<Secret>,
}

impl Validate for DemoSection {
    fn validate(&self, v: &mut Validator<'_>) {
        for (i, t) in self.targets.iter().enumerate() {
            let mut v = v.at(&format!("targets[{i}]"));
            v.url("url", &t.url);
            if let Some(p) = &t.password {
                v.secret("password", p);
            }
            if t.name.is_empty() {
                v.error("name", "must not be empty");
            }
            if let Some(d) = t.timeout {
                v.positive("timeout", d);
            }
        }
    }
}

fn load_demo(files: &[&str]) -> Result<(), Vec<ConfigProblem>> {
    let mut loader = ConfigLoader::new().section("demo");
    for f in files {
        loader = loader.file(f);
    }
    let config = loader.load().map_err(|e| e.problems)?;
    let mut problems = Vec::new();
    config.section::<DemoSection>("demo", &mut problems);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

#[test]
fn defaults_files_env_and_overrides_layer_in_order() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "a.yaml",
            "run:\n  concurrency: 3\n  timeout: 10s\n  retries: 1\n",
        )?;
        jail.create_file("b.yaml", "run:\n  concurrency: 5\n")?;
        jail.set_env("CITADEL_ITEST__RUN__TIMEOUT", "7s");
        jail.set_env("CITADEL_ITEST__PERFORMANCE_TARGETS__LATENCY_P95", "150ms");
        let c = ConfigLoader::new()
            .file("a.yaml")
            .file("b.yaml")
            .load()
            .unwrap();
        assert_eq!(c.run.concurrency, 5, "later file wins");
        assert_eq!(c.run.timeout, Duration::from_secs(7), "env beats files");
        assert_eq!(c.run.retries, 1, "earlier file kept where not overridden");
        assert_eq!(
            c.performance_targets.latency_p95,
            Duration::from_millis(150)
        );
        assert_eq!(c.performance_targets.max_memory_mb, 2048, "default");
        assert_eq!(
            c.run.formats,
            vec![
                ReportFormat::Console,
                ReportFormat::Json,
                ReportFormat::Junit
            ]
        );

        let c = ConfigLoader::new()
            .file("a.yaml")
            .set("run.concurrency", 9)
            .set("run.fail_fast", true)
            .load()
            .unwrap();
        assert_eq!(
            c.run.concurrency, 9,
            "explicit override (CLI flag) beats everything"
        );
        assert!(c.run.fail_fast);
        Ok(())
    });
}

#[test]
fn every_problem_is_reported_with_key_path_and_file() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "bad.yaml",
            "run:\n  concurrency: lots\n  timout: 5s\nperformance_targets:\n  latency_p95: fast\nmystery: 1\n",
        )?;
        let err = ConfigLoader::new()
            .env(false)
            .file("bad.yaml")
            .load()
            .unwrap_err();
        let text = err.to_string();
        let has = |needle: &str| err.problems.iter().any(|p| p.to_string().contains(needle));
        assert!(has("unknown section `mystery`"), "{text}");
        assert!(has("performance_targets.latency_p95"), "{text}");
        assert!(
            err.problems
                .iter()
                .all(|p| p.source.as_deref().is_some_and(|s| s.ends_with("bad.yaml"))),
            "{text}"
        );
        // The run section reports its first serde error (unknown key or wrong type) with path.
        assert!(
            err.problems.iter().any(|p| p.path.starts_with("run")),
            "{text}"
        );
        assert!(err.problems.len() >= 3, "{text}");
        Ok(())
    });
}

#[test]
fn unknown_key_wrong_type_and_bad_duration_each_name_their_path() {
    Jail::expect_with(|jail| {
        jail.create_file("unknown.yaml", "run:\n  timout: 5s\n")?;
        jail.create_file("type.yaml", "run:\n  concurrency: [1]\n")?;
        jail.create_file("dur.yaml", "run:\n  timeout: 5 parsecs\n")?;
        for (file, path, words) in [
            (
                "unknown.yaml",
                "run.timout",
                "unknown field: found `timout`",
            ),
            ("type.yaml", "run.concurrency", "invalid type"),
            ("dur.yaml", "run.timeout", "5 parsecs"),
        ] {
            let err = ConfigLoader::new()
                .env(false)
                .file(file)
                .load()
                .unwrap_err();
            let p = &err.problems[0];
            assert_eq!(p.path, path, "{err}");
            assert!(p.message.contains(words), "{file}: {err}");
            assert!(p.source.as_deref().unwrap().ends_with(file), "{err}");
        }
        Ok(())
    });
}

#[test]
fn a_missing_file_is_an_error_not_an_empty_config() {
    let err = ConfigLoader::new()
        .env(false)
        .file("/nonexistent/itest.yaml")
        .load()
        .unwrap_err();
    assert_eq!(err.problems.len(), 1);
    assert!(
        err.to_string()
            .contains("cannot read config file /nonexistent/itest.yaml"),
        "{err}"
    );
}

#[test]
fn tester_sections_are_validated_with_paths_into_arrays() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "demo.yaml",
            "demo:\n  targets:\n    - name: ok\n      url: http://127.0.0.1:1\n    - name: ''\n      url: 'not a url'\n      timeout: 0s\n      password: { env: CITADEL_TEST_UNSET_PASSWORD }\n",
        )?;
        let problems = load_demo(&["demo.yaml"]).unwrap_err();
        let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        let has = |needle: &str| text.iter().any(|t| t.contains(needle));
        assert!(
            has("demo.targets[1].url: invalid URL `not a url`"),
            "{text:#?}"
        );
        assert!(has("demo.targets[1].name: must not be empty"), "{text:#?}");
        assert!(
            has("demo.targets[1].timeout: must be greater than 0s"),
            "{text:#?}"
        );
        assert!(
            has(
                "demo.targets[1].password: environment variable CITADEL_TEST_UNSET_PASSWORD is not set"
            ),
            "{text:#?}"
        );
        assert!(
            problems
                .iter()
                .all(|p| p.source.as_deref() == Some("demo.yaml")
                    || p.source
                        .as_deref()
                        .is_some_and(|s| s.ends_with("demo.yaml"))),
            "{problems:#?}"
        );
        Ok(())
    });
}

#[test]
fn a_wrong_type_inside_a_tester_section_names_the_key() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "demo.yaml",
            "demo:\n  targets:\n    - name: a\n      url: http://127.0.0.1:1\n      extra: 1\n",
        )?;
        let problems = load_demo(&["demo.yaml"]).unwrap_err();
        assert!(
            problems[0].path.starts_with("demo.targets"),
            "{problems:#?}"
        );
        assert!(problems[0].message.contains("extra"), "{problems:#?}");
        Ok(())
    });
}

#[test]
fn secrets_resolve_from_env_and_file_and_never_print() {
    Jail::expect_with(|jail| {
        jail.set_env("CITADEL_TEST_PW", "pw-from-env-1234");
        jail.create_file("pw.txt", "pw-from-file-5678\n")?;
        jail.create_file(
            "demo.yaml",
            "demo:\n  targets:\n    - name: a\n      url: postgres://app:inline-pw-9999@127.0.0.1:5432/db\n      password: inline-pw-9999\n    - name: b\n      url: http://127.0.0.1:1\n      password: { env: CITADEL_TEST_PW }\n    - name: c\n      url: http://127.0.0.1:2\n      password: { file: pw.txt }\n",
        )?;
        load_demo(&["demo.yaml"]).unwrap();
        let config = ConfigLoader::new()
            .section("demo")
            .file("demo.yaml")
            .load()
            .unwrap();
        let mut problems = Vec::new();
        let demo: DemoSection = config.section("demo", &mut problems).unwrap();
        assert!(problems.is_empty());
        assert_eq!(
            demo.targets[1]
                .password
                .as_ref()
                .unwrap()
                .resolve()
                .unwrap()
                .expose(),
            "pw-from-env-1234"
        );
        assert_eq!(
            demo.targets[2]
                .password
                .as_ref()
                .unwrap()
                .resolve()
                .unwrap()
                .expose(),
            "pw-from-file-5678"
        );
        let secrets: Vec<_> = demo.targets.iter().map(|t| t.password.clone()).collect();
        let printed = format!(
            "{secrets:?} {} {}",
            config.summary(),
            secrets[0].as_ref().unwrap()
        );
        for secret in ["inline-pw-9999", "pw-from-env-1234", "pw-from-file-5678"] {
            assert!(!printed.contains(secret), "{secret} leaked: {printed}");
        }
        assert!(printed.contains(REDACTED));
        assert!(
            printed.contains("CITADEL_TEST_PW"),
            "references stay visible"
        );
        Ok(())
    });
}

#[test]
fn env_references_in_files_expand_with_defaults_escapes_and_comments() {
    Jail::expect_with(|jail| {
        jail.set_env("CITADEL_TEST_HOST", "127.0.0.1");
        jail.create_file(
            "demo.yaml",
            "demo:\n  targets:\n    - name: a # ${NOT_EXPANDED}\n      url: http://${CITADEL_TEST_HOST}:${CITADEL_TEST_PORT:-8080}/ # ${NOT_EXPANDED}\n    - name: b\n      url: 'http://127.0.0.1/$${KEPT}'\n",
        )?;
        let config = ConfigLoader::new()
            .section("demo")
            .file("demo.yaml")
            .load()
            .unwrap();
        let mut problems = Vec::new();
        let demo: DemoSection = config.section("demo", &mut problems).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(demo.targets[0].url, "http://127.0.0.1:8080/");
        assert_eq!(demo.targets[1].url, "http://127.0.0.1/${KEPT}");

        jail.create_file(
            "missing.yaml",
            "run:\n  retries: 1\n  timeout: ${CITADEL_TEST_MISSING}\n",
        )?;
        let err = ConfigLoader::new().file("missing.yaml").load().unwrap_err();
        let p = &err.problems[0];
        assert_eq!(p.path, "run.timeout", "{err}");
        assert_eq!(p.source.as_deref(), Some("missing.yaml:3"), "{err}");
        assert!(
            p.message
                .contains("environment variable CITADEL_TEST_MISSING is not set")
        );
        Ok(())
    });
}
