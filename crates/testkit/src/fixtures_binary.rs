//! Where the `citadel-itest-fixtures` binary of this workspace is, for tests that run a fixture
//! as its own process (to pause it with SIGSTOP, kill it, or stop and start it like a service).

use std::path::PathBuf;
use std::process::Command;

use crate::{ErrorKind, TestkitError};

/// The name of the fixtures binary (feature `fixtures-bin`).
pub const FIXTURES_BINARY: &str = "citadel-itest-fixtures";

/// The path of the workspace's `citadel-itest-fixtures`: `CITADEL_FIXTURES_BIN` when set, else
/// next to the calling test's build (`target/<profile>/`), built with cargo (as
/// `scripts/services.sh` does) when it is not there yet.
pub fn fixtures_binary() -> Result<PathBuf, TestkitError> {
    let err = |what: String, e: std::io::Error| {
        TestkitError::new("locate", "fixtures binary", ErrorKind::io(what, e))
    };
    if let Some(p) = std::env::var_os("CITADEL_FIXTURES_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| err("read the current executable".into(), e))?;
    // target/<profile>/deps/<test> -> target/<profile>/citadel-itest-fixtures
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join(FIXTURES_BINARY))
        .unwrap_or_else(|| PathBuf::from(FIXTURES_BINARY));
    if bin.is_file() {
        return Ok(bin);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(["build", "--quiet", "-p", "citadel-itest-testkit"])
        .args(["--features", "fixtures-bin", "--bin", FIXTURES_BINARY])
        .status()
        .map_err(|e| err(format!("run {cargo} build"), e))?;
    if !status.success() || !bin.is_file() {
        return Err(err(
            format!("build {FIXTURES_BINARY} ({status})"),
            std::io::Error::new(std::io::ErrorKind::NotFound, bin.display().to_string()),
        ));
    }
    Ok(bin)
}
