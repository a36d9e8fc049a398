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
            } else {
                v.name("name", &t.name);
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

/// One target's url and password as loaded from `demo.yaml`.
fn load_one(jail: &Jail, yaml: &str) -> Result<DemoSection, Vec<ConfigProblem>> {
    jail.create_file("demo.yaml", yaml).unwrap();
    let config = ConfigLoader::new()
        .env(false)
        .section("demo")
        .file("demo.yaml")
        .load()
        .map_err(|e| e.problems)?;
    let mut problems = Vec::new();
    let demo = config.section::<DemoSection>("demo", &mut problems);
    match demo {
        Some(d) if problems.is_empty() => Ok(d),
        _ => Err(problems),
    }
}

#[test]
fn an_expanded_value_is_exactly_one_scalar_whatever_it_holds() {
    Jail::expect_with(|jail| {
        let hostile = [
            "line1\n    - name: injected\n      url: http://127.0.0.1:9/",
            "half-token #rest-of-token",
            "it's \"quoted\"",
            "key: value",
            "- leading-dash",
            "{ env: NOT_A_REFERENCE }",
            "[1, 2]",
            "&anchor *alias !tag | > % @ `",
        ];
        for (i, value) in hostile.iter().enumerate() {
            jail.set_env("CITADEL_TEST_HOSTILE", value);
            for form in [
                "${CITADEL_TEST_HOSTILE}",
                "'${CITADEL_TEST_HOSTILE}'",
                "\"${CITADEL_TEST_HOSTILE}\"",
            ] {
                let demo = load_one(
                    jail,
                    &format!(
                        "demo:\n  targets:\n    - name: a\n      url: http://127.0.0.1:1/\n      password: {form} # comment ${{NOT_EXPANDED}}\n"
                    ),
                )
                .unwrap_or_else(|p| panic!("value {i} in {form}: {p:?}"));
                assert_eq!(demo.targets.len(), 1, "value {i} injected a target");
                let password = demo.targets[0]
                    .password
                    .as_ref()
                    .unwrap()
                    .resolve()
                    .unwrap();
                assert_eq!(password.expose(), *value, "value {i} in {form} changed");
            }
            // Inside a longer plain scalar too.
            let demo = load_one(
                jail,
                "demo:\n  targets:\n    - name: a\n      url: http://127.0.0.1:1/\n      password: pre-${CITADEL_TEST_HOSTILE}-post\n",
            )
            .unwrap();
            assert_eq!(
                demo.targets[0]
                    .password
                    .as_ref()
                    .unwrap()
                    .resolve()
                    .unwrap()
                    .expose(),
                format!("pre-{value}-post")
            );
        }
        Ok(())
    });
}

#[test]
fn a_whole_reference_keeps_numbers_and_bools_typed() {
    Jail::expect_with(|jail| {
        jail.set_env("CITADEL_TEST_N", "4");
        jail.set_env("CITADEL_TEST_B", "true");
        jail.set_env("CITADEL_TEST_ZERO_LED", "0123");
        jail.create_file(
            "run.yaml",
            "run:\n  concurrency: ${CITADEL_TEST_N}\n  retries: ${CITADEL_TEST_MISSING:-7}\n  fail_fast: ${CITADEL_TEST_B}\n",
        )?;
        let c = ConfigLoader::new()
            .env(false)
            .file("run.yaml")
            .load()
            .unwrap();
        assert_eq!(
            (c.run.concurrency, c.run.retries, c.run.fail_fast),
            (4, 7, true)
        );

        // Quoted, or with text around it, a reference is a string.
        jail.create_file(
            "quoted.yaml",
            "run:\n  concurrency: \"${CITADEL_TEST_N}\"\n",
        )?;
        let err = ConfigLoader::new()
            .env(false)
            .file("quoted.yaml")
            .load()
            .unwrap_err();
        assert!(
            err.to_string().contains("invalid type: found string \"4\""),
            "{err}"
        );
        // A value that would lose characters as a number (leading zero) stays a string.
        let demo = load_one(
            jail,
            "demo:\n  targets:\n    - name: a\n      url: http://127.0.0.1:1/\n      password: ${CITADEL_TEST_ZERO_LED}\n",
        )
        .unwrap();
        assert_eq!(
            demo.targets[0]
                .password
                .as_ref()
                .unwrap()
                .resolve()
                .unwrap()
                .expose(),
            "0123"
        );
        Ok(())
    });
}

#[test]
fn an_unterminated_reference_names_file_line_and_key() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "open.yaml",
            "run:\n  retries: 1\n  timeout: ${CITADEL_TEST_OPEN\n",
        )?;
        let err = ConfigLoader::new()
            .env(false)
            .file("open.yaml")
            .load()
            .unwrap_err();
        let p = &err.problems[0];
        assert_eq!(p.source.as_deref(), Some("open.yaml:3"), "{err}");
        assert_eq!(p.path, "run.timeout", "{err}");
        assert!(p.message.contains("unterminated `${`"), "{err}");
        Ok(())
    });
}

#[test]
fn duplicate_keys_and_sections_name_both_lines_and_a_bom_is_accepted() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "dup.yaml",
            "demo:\n  targets:\n    - name: first\n      url: http://127.0.0.1:1/\nrun:\n  retries: 1\ndemo:\n  targets: []\n",
        )?;
        let err = ConfigLoader::new()
            .env(false)
            .section("demo")
            .file("dup.yaml")
            .load()
            .unwrap_err();
        let p = &err.problems[0];
        assert_eq!(p.path, "demo", "{err}");
        assert_eq!(p.source.as_deref(), Some("dup.yaml:7"), "{err}");
        assert!(
            p.message.contains("given at line 1 and again at line 7"),
            "{err}"
        );

        jail.create_file(
            "dupkey.yaml",
            "run:\n  retries: 1\n  timeout: 5s\n  retries: 2\n",
        )?;
        let err = ConfigLoader::new()
            .env(false)
            .file("dupkey.yaml")
            .load()
            .unwrap_err();
        assert_eq!(err.problems[0].path, "run.retries", "{err}");
        assert!(
            err.problems[0]
                .message
                .contains("line 2 and again at line 4"),
            "{err}"
        );

        std::fs::write("bom.yaml", "\u{feff}run:\n  retries: 2\n").unwrap();
        let c = ConfigLoader::new()
            .env(false)
            .file("bom.yaml")
            .load()
            .unwrap();
        assert_eq!(c.run.retries, 2);
        Ok(())
    });
}

/// Assert `f` returns within 2 s.
fn quickly<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let started = std::time::Instant::now();
    let out = f();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{what} took {:?}",
        started.elapsed()
    );
    out
}

#[test]
fn config_and_secret_files_must_be_small_regular_files() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    let big = dir.path().join("big.yaml");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&big).unwrap();
        f.write_all(b"run:\n  timeout: '").unwrap();
        let chunk = vec![b'x'; 1024 * 1024];
        for _ in 0..50 {
            f.write_all(&chunk).unwrap();
        }
        f.write_all(b"'\n").unwrap();
    }
    for (path, what) in [
        (fifo.as_path(), "a FIFO (named pipe), not a regular file"),
        (
            std::path::Path::new("/dev/zero"),
            "a character device, not a regular file",
        ),
        (dir.path(), "a directory, not a regular file"),
        (big.as_path(), "larger than the 1 MiB limit ("),
    ] {
        let err = quickly(&format!("config {}", path.display()), || {
            ConfigLoader::new()
                .env(false)
                .file(path)
                .load()
                .unwrap_err()
        });
        let text = err.to_string();
        assert!(
            text.contains(&format!("cannot read config file {}", path.display())),
            "{text}"
        );
        assert!(text.contains(what), "{text}");
        assert!(text.len() < 1000, "{} bytes", text.len());

        let err = quickly(&format!("secret {}", path.display()), || {
            Secret::file(path).resolve().unwrap_err()
        });
        let text = citadel_itest_core::error_chain(&err);
        assert!(
            text.contains(&format!("read secret file {}", path.display())),
            "{text}"
        );
        let what = what.replace("1 MiB", "64 KiB");
        assert!(text.contains(&what), "{text}");
    }
}

#[test]
fn a_huge_value_makes_a_short_message() {
    Jail::expect_with(|jail| {
        let huge = "y".repeat(50 * 1024 * 1024);
        jail.set_env("CITADEL_ITEST__RUN__TIMEOUT", &huge);
        let err = quickly("50 MB env value", || {
            ConfigLoader::new().load().unwrap_err()
        });
        let text = err.to_string();
        assert!(text.len() < 2000, "{} bytes", text.len());
        assert!(
            text.contains("run.timeout"),
            "{}",
            &text[..text.len().min(500)]
        );
        assert!(
            text.contains(
                "CITADEL_ITEST__RUN__TIMEOUT is 52428800 bytes, more than the 64 KiB limit"
            ),
            "says how long the value was: {text}"
        );

        // Under the env cap, the value echoed by the duration error is cut.
        jail.set_env("CITADEL_ITEST__RUN__TIMEOUT", "z".repeat(60 * 1024));
        let text = ConfigLoader::new().load().unwrap_err().to_string();
        assert!(text.len() < 1500, "{} bytes", text.len());
        assert!(
            text.contains("... (") && text.contains("run.timeout"),
            "{text}"
        );
        jail.set_env("CITADEL_ITEST__RUN__TIMEOUT", "5s");

        let err = quickly("50 MB name", || {
            let config = ConfigLoader::new()
                .env(false)
                .section("demo")
                .set(
                    "demo.targets",
                    serde_json::json!([{ "name": huge, "url": "http://127.0.0.1:1/" }]),
                )
                .load()
                .unwrap();
            let mut problems = Vec::new();
            config.section::<DemoSection>("demo", &mut problems);
            problems
        });
        let text: String = err.iter().map(|p| p.to_string()).collect();
        assert!(
            text.contains("demo.targets[0].name"),
            "{}",
            &text[..text.len().min(500)]
        );
        assert!(
            text.contains("at most 64") || text.contains("1 to 64"),
            "{text}"
        );
        assert!(text.len() < 1500, "{} bytes", text.len());
        Ok(())
    });
}

#[test]
fn numeric_settings_are_range_checked_with_the_bound_named() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "big.yaml",
            "run:\n  concurrency: 99999999999999\n  retries: 4000000000\n  timeout: 1000years\n  deadline: 20days\n  cancel_grace: 2h\nperformance_targets:\n  max_cpu_percent: 1e300\n  min_throughput_rps: -1\n  max_memory_mb: 0\n",
        )?;
        let err = ConfigLoader::new()
            .env(false)
            .file("big.yaml")
            .load()
            .unwrap_err();
        let text = err.to_string();
        for needle in [
            "run.concurrency: 99999999999999 is out of range 1..=10000",
            "run.retries: 4000000000 is out of range 0..=100",
            "run.timeout: ",
            "..=1day",
            "run.deadline: 20days is out of range 1ms..=7days",
            "run.cancel_grace: 2h is out of range 0s..=10m",
            "performance_targets.max_cpu_percent",
            "performance_targets.min_throughput_rps: -1 is out of range 0..=1000000",
            "performance_targets.max_memory_mb: 0 is out of range 1..=16777216",
        ] {
            assert!(text.contains(needle), "{needle}\n{text}");
        }
        jail.set_env("CITADEL_ITEST__RUN__CONCURRENCY", "99999999999999");
        let err = ConfigLoader::new().load().unwrap_err();
        assert!(err.to_string().contains("1..=10000"), "{err}");
        Ok(())
    });
}

#[test]
fn ports_and_names_have_limits() {
    struct Ports(u16, String);
    impl Validate for Ports {
        fn validate(&self, v: &mut Validator<'_>) {
            v.port("port", self.0);
            v.name("name", &self.1);
        }
    }
    let figment = figment::Figment::new();
    let mut problems = Vec::new();
    Ports(0, "a".repeat(65)).validate(&mut Validator::new(&figment, &mut problems));
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(text.len(), 2, "{text:?}");
    assert!(
        text[0].contains("port: port 0 is not a usable port"),
        "{text:?}"
    );
    assert!(text[1].contains("1 to 64 lowercase"), "{text:?}");
    let mut problems = Vec::new();
    Ports(5432, "a".repeat(64)).validate(&mut Validator::new(&figment, &mut problems));
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn core_problems_do_not_hide_tester_problems() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "both.yaml",
            "run:\n  timeout: 3 fortnights\n  concurrency: 0\ndemo:\n  targets:\n    - name: a\n      url: 'not a url'\n",
        )?;
        let err = ConfigLoader::new()
            .env(false)
            .section("demo")
            .file("both.yaml")
            .load_with(|config, problems| {
                config.section::<DemoSection>("demo", problems);
            })
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("run.timeout"), "{text}");
        assert!(text.contains("demo.targets[0].url: invalid URL"), "{text}");
        Ok(())
    });
}

#[test]
fn secrets_are_redacted_in_the_forms_they_travel_in() {
    use citadel_itest_core::config::{
        redact_text, register_basic_credentials, register_url_secrets,
    };
    let secret = Secret::inline("s3cr:t/p@ss w0rd+%").resolve().unwrap();
    register_basic_credentials("itest", secret.expose());
    for form in [
        "s3cr:t/p@ss w0rd+%",
        "s3cr%3At%2Fp%40ss%20w0rd%2B%25",
        "s3cr%3at%2fp%40ss%20w0rd%2b%25",
        "s3cr%3At%2Fp%40ss+w0rd%2B%25",
        // base64 of the secret alone, and of `itest:<secret>` (the Basic header value)
        "czNjcjp0L3BAc3MgdzByZCsl",
        "aXRlc3Q6czNjcjp0L3BAc3MgdzByZCsl",
    ] {
        let shown = redact_text(&format!("echo [{form}]"));
        assert_eq!(shown, "echo [<redacted>]", "{form}");
    }
    // Query tokens and userinfo of a URL.
    let url =
        url::Url::parse("http://user:pa%2Fss-77@127.0.0.1:1/h?token=q-tok%2Fen-1&x=1").unwrap();
    register_url_secrets(&url).unwrap();
    assert_eq!(
        redact_text("got q-tok/en-1 and q-tok%2Fen-1"),
        "got <redacted> and <redacted>"
    );
    assert_eq!(redact_text("pw pa/ss-77"), "pw <redacted>");
    // base64("user:pa/ss-77")
    assert_eq!(
        redact_text("Basic dXNlcjpwYS9zcy03Nw=="),
        "Basic <redacted>"
    );
    // Too short to redact: refused, with the rule named.
    let err = Secret::inline("abc").resolve().unwrap_err();
    assert!(
        err.to_string().contains("shorter than 4 characters"),
        "{err}"
    );
    let short = url::Url::parse("http://u:ab@127.0.0.1:1/").unwrap();
    assert!(register_url_secrets(&short).is_err());
}
