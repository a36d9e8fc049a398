//! A service that embeds one tester (`default-features = false, features = ["basic"]`) does
//! not compile the binary's dependencies: no clap, no tracing-subscriber (and its regex), no
//! anyhow, no dotenvy. Read from `cargo tree` (offline, bounded).

use std::collections::BTreeSet;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The normal (non-dev, non-build) dependencies of the facade with these cargo arguments, as
/// package names.
fn normal_deps(features: &[&str]) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let mut child = Command::new(cargo)
        .args(["tree", "--offline", "--quiet", "-p", "citadel-itest"])
        .args([
            "--manifest-path",
            manifest,
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .args(features)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run cargo tree");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).map(|_| s)
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for cargo tree") {
            break status;
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("cargo tree did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = reader.join().unwrap().expect("read cargo tree output");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "cargo tree failed: {err}");
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

const BINARY_ONLY: [&str; 7] = [
    "clap",
    "clap_builder",
    "tracing-subscriber",
    "anyhow",
    "dotenvy",
    "regex-automata",
    "libtest-mimic",
];

#[test]
fn one_tester_without_default_features_pulls_no_cli_dependencies() {
    let lean = normal_deps(&["--no-default-features", "--features", "basic"]);
    // Positive evidence that the tree was read: the tester and the runtime are there.
    for needed in [
        "citadel-itest-core",
        "citadel-itest-basic",
        "tokio",
        "async-trait",
    ] {
        assert!(lean.contains(needed), "{needed} missing from {lean:?}");
    }
    let pulled: Vec<&str> = BINARY_ONLY
        .iter()
        .copied()
        .filter(|name| lean.contains(*name))
        .collect();
    assert!(
        pulled.is_empty(),
        "`default-features = false, features = [\"basic\"]` pulls {pulled:?}"
    );
    // No other tester either.
    assert!(
        !lean
            .iter()
            .any(|p| p == "citadel-itest-database" || p == "sqlx")
    );

    // The binary's features do bring them, so the test can tell the difference.
    let cli = normal_deps(&["--no-default-features", "--features", "basic,cli"]);
    for name in ["clap", "tracing-subscriber", "dotenvy"] {
        assert!(cli.contains(name), "{name} missing with feature cli");
    }
    eprintln!(
        "normal dependencies: {} with basic, {} with basic,cli",
        lean.len(),
        cli.len()
    );
}
