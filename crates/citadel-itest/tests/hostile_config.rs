//! The binary against hostile configuration and planted secrets: out-of-range numbers from file,
//! env and flag; every problem listed at once; strict `.env`; FIFOs and devices as input; no
//! colour codes in captured logs; and no secret in any output in any form it travels in.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use assert_cmd::cargo::cargo_bin;
use common::citadel;

const TARGET: &str = "basic:\n  targets:\n    - name: gw\n      url: tcp://127.0.0.1:9\n";

#[test]
fn concurrency_beyond_the_bound_exits_2_from_file_env_and_flag() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("big.yaml"),
        format!("run:\n  concurrency: 99999999999999\n{TARGET}"),
    )
    .unwrap();
    std::fs::write(dir.path().join("ok.yaml"), TARGET).unwrap();
    let runs = [
        citadel(&["run", "--config", "big.yaml"], dir.path(), &[]),
        citadel(
            &["run", "--config", "ok.yaml"],
            dir.path(),
            &[("CITADEL_ITEST__RUN__CONCURRENCY", "99999999999999")],
        ),
        citadel(
            &[
                "run",
                "--config",
                "ok.yaml",
                "--concurrency",
                "99999999999999",
            ],
            dir.path(),
            &[],
        ),
    ];
    for (how, r) in ["file", "env", "flag"].iter().zip(&runs) {
        assert_eq!(r.code, 2, "{how}: {}", r.stderr);
        assert!(
            r.stderr
                .contains("run.concurrency: 99999999999999 is out of range 1..=10000"),
            "{how}: {}",
            r.stderr
        );
        assert!(!r.stderr.contains("panicked"), "{how}: {}", r.stderr);
    }
}

#[test]
fn the_readmes_two_problem_example_prints_both() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("itest.yaml"),
        "run:\n  timeout: 3 fortnights\nbasic:\n  targets:\n    - name: gateway\n      url: http://127.0.0.1:58080\n      health_path: /health\n      auth:\n        bearer: { env: GATEWAY_TOKEN }\n",
    )
    .unwrap();
    let mut cmd = Command::new(cargo_bin("citadel-itest"));
    let out = cmd
        .args(["validate", "--config", "itest.yaml"])
        .current_dir(dir.path())
        .env_remove("GATEWAY_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid configuration (2 problems)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("run.timeout: invalid value string \"3 fortnights\", expected a duration"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "basic.targets[0].auth.bearer: environment variable GATEWAY_TOKEN is not set"
        ),
        "{stderr}"
    );
}

#[test]
fn a_duplicate_section_names_both_lines() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("dup.yaml"),
        format!("{TARGET}run:\n  retries: 1\n{TARGET}"),
    )
    .unwrap();
    let r = citadel(&["validate", "--config", "dup.yaml"], dir.path(), &[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("basic: duplicate key `basic`: given at line 1 and again at line 7")
            && r.stderr.contains("dup.yaml:7"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_bad_env_line_is_an_error_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ok.yaml"), TARGET).unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "CITADEL_ITEST__RUN__RETRIES=1\nthis line is not an assignment\nCITADEL_ITEST__RUN__TIMEOUT=5s\n",
    )
    .unwrap();
    let r = citadel(&["validate", "--config", "ok.yaml"], dir.path(), &[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains(".env:2"), "{}", r.stderr);
    assert!(r.stderr.contains("line 2 of"), "{}", r.stderr);
    assert!(
        !r.stderr.contains("not an assignment"),
        "the line is not echoed (it may hold a secret): {}",
        r.stderr
    );

    // A good .env still loads, and its values count.
    std::fs::write(
        dir.path().join(".env"),
        "# comment\nCITADEL_ITEST__RUN__CONCURRENCY=0\n",
    )
    .unwrap();
    let r = citadel(&["validate", "--config", "ok.yaml"], dir.path(), &[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("run.concurrency: 0 is out of range"),
        "{}",
        r.stderr
    );

    // A .env that is not a regular file.
    std::fs::remove_file(dir.path().join(".env")).unwrap();
    std::fs::create_dir(dir.path().join(".env")).unwrap();
    let r = citadel(&["validate", "--config", "ok.yaml"], dir.path(), &[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("is a directory, not a regular file"),
        "{}",
        r.stderr
    );
}

#[test]
fn fifos_and_devices_as_config_exit_2_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("config.fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    for (path, what) in [
        (
            fifo.to_str().unwrap(),
            "a FIFO (named pipe), not a regular file",
        ),
        ("/dev/zero", "a character device, not a regular file"),
    ] {
        let r = citadel(&["validate", "--config", path], dir.path(), &[]);
        assert_eq!(r.code, 2, "{path}: {}", r.stderr);
        assert!(r.stderr.contains(what), "{path}: {}", r.stderr);
        assert!(
            r.elapsed < Duration::from_secs(2),
            "{path}: {:?}",
            r.elapsed
        );
    }
}

#[test]
fn log_lines_carry_no_colour_codes_when_stderr_is_captured() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::fs::write(
        dir.path().join("itest.yaml"),
        format!(
            "run:\n  report_dir: reports\n  timeout: 5s\nbasic:\n  targets:\n    - name: gw\n      url: tcp://127.0.0.1:{port}\n"
        ),
    )
    .unwrap();
    let r = citadel(
        &["run", "--config", "itest.yaml"],
        dir.path(),
        &[("CITADEL_ITEST_LOG", "trace")],
    );
    drop(listener);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("TRACE") || r.stderr.contains("DEBUG"),
        "log lines are written: {}",
        r.stderr
    );
    assert!(!r.stderr.contains("\x1b["), "colour codes: {:?}", r.stderr);
}

/// A server that answers every request with 500 and the request head (request line and
/// headers, credentials included) echoed on one line of the body.
fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head);
                // Credentials first, so they sit inside any excerpt.
                let mut lines: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
                lines.sort_by_key(|l| !l.to_ascii_lowercase().starts_with("authorization"));
                let body = format!("ECHO {}", lines.join(" | "));
                let answer = format!(
                    "HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes());
            });
        }
    });
    port
}

#[test]
fn no_secret_in_any_form_in_any_output() {
    let port = echo_server();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("itest.yaml"),
        format!(
            "run:\n  report_dir: reports\n  timeout: 5s\n  retries: 0\n\
             basic:\n  targets:\n    - name: echo\n      url: http://127.0.0.1:{port}\n      health_path: /health?token=tok%2Fen-secret-42\n      samples: 1\n      auth:\n        basic: {{ username: itest, password: {{ env: CITADEL_TEST_BASIC_PW }} }}\n\
             external_api:\n  prometheus:\n    - name: prom\n      url: http://127.0.0.1:{port}\n      auth:\n        basic: {{ username: prom, password: {{ env: CITADEL_TEST_PROM_PW }} }}\n      connect_timeout: 2s\n      request_timeout: 2s\n"
        ),
    )
    .unwrap();
    let r = citadel(
        &["run", "--config", "itest.yaml"],
        dir.path(),
        &[
            ("CITADEL_TEST_BASIC_PW", "echo-Pass/w0rd+1"),
            ("CITADEL_TEST_PROM_PW", "prom-Secret:99"),
        ],
    );
    assert_eq!(
        r.code, 1,
        "checks against a 500 server fail: {}\n{}",
        r.stdout, r.stderr
    );
    let report = std::fs::read_to_string(dir.path().join("reports/report.json")).unwrap();
    let junit = std::fs::read_to_string(dir.path().join("reports/junit.xml")).unwrap();
    let outputs = [
        ("stdout", r.stdout.as_str()),
        ("stderr", r.stderr.as_str()),
        ("report.json", report.as_str()),
        ("junit.xml", junit.as_str()),
    ];
    // The echoed bodies did reach the output, so the secrets had a way out.
    assert!(
        outputs.iter().any(|(_, o)| o.contains("ECHO")),
        "no echoed body in any output: {}",
        r.stdout
    );
    assert!(report.contains("<redacted>"), "{report}");
    for secret in [
        "echo-Pass/w0rd+1",
        "prom-Secret:99",
        "tok/en-secret-42",
        // percent-encoded forms
        "tok%2Fen-secret-42",
        "echo-Pass%2Fw0rd%2B1",
        "prom-Secret%3A99",
        // the Basic header values: base64 of user:password
        "aXRlc3Q6ZWNoby1QYXNzL3cwcmQrMQ",
        "cHJvbTpwcm9tLVNlY3JldDo5OQ",
    ] {
        for (name, text) in outputs {
            assert!(!text.contains(secret), "{secret} in {name}:\n{text}");
        }
    }
}

#[test]
fn port_zero_huge_timeouts_and_long_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let long = "n".repeat(10_000);
    std::fs::write(
        dir.path().join("bad.yaml"),
        format!(
            "basic:\n  targets:\n    - name: zero\n      url: http://127.0.0.1:0\n    - name: slow\n      url: tcp://127.0.0.1:9\n      timeout: 500000years\n    - name: {long}\n      url: tcp://127.0.0.1:9\nexternal_api:\n  prometheus:\n    - name: prom\n      url: http://127.0.0.1:0\n"
        ),
    )
    .unwrap();
    let r = citadel(&["validate", "--config", "bad.yaml"], dir.path(), &[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    for needle in [
        "basic.targets[0].url: port 0 is not a usable port",
        "basic.targets[1].timeout: 500000years is out of range 1ms..=1day",
        "basic.targets[2].name: `nnnn",
        "... (10000 bytes)` is not a valid name: use 1 to 64 lowercase",
        "external_api.prometheus[0].url: port 0 is not a usable port",
    ] {
        assert!(r.stderr.contains(needle), "{needle}\n{}", r.stderr);
    }
    assert!(r.stderr.len() < 3000, "{} bytes", r.stderr.len());
}

#[test]
fn a_50_mb_config_is_refused_quickly_in_little_memory() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.yaml");
    {
        let mut f = std::fs::File::create(&big).unwrap();
        f.write_all(b"run:\n  timeout: '").unwrap();
        let chunk = vec![b'x'; 1024 * 1024];
        for _ in 0..50 {
            f.write_all(&chunk).unwrap();
        }
        f.write_all(b"'\n").unwrap();
    }
    // Address space capped at 256 MiB: reading and parsing the whole file (as before, 2.9 GB)
    // would abort; a bounded reader never gets near it.
    for config in [big.to_str().unwrap(), "/dev/zero"] {
        let start = Instant::now();
        let out = Command::new("sh")
            .arg("-c")
            .arg("ulimit -v 262144 && exec \"$0\" validate --config \"$1\"")
            .arg(cargo_bin("citadel-itest"))
            .arg(config)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{config}: {stderr}");
        assert!(
            stderr.contains("larger than the 1 MiB limit")
                || stderr.contains("a character device, not a regular file"),
            "{config}: {stderr}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{config}: {:?}",
            start.elapsed()
        );
        assert!(stderr.len() < 1000, "{config}: {} bytes", stderr.len());
    }
}
