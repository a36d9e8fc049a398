//! Connection pooling against a real PostgreSQL: contention within size + overflow, acquire
//! waits and timeouts, no leaks, headroom, and recovery after a real server restart.

mod common;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use citadel_itest_core::{Category, Check, CheckExt, Status, Suite};
use citadel_itest_database::{
    HeadroomCheck, HeadroomNeed, PoolConfig, PoolingCheck, PoolingConfig, RecoveryCheck,
    RecoveryConfig,
};
use citadel_itest_testkit::Postgres;
use common::{Server, failed, run, value};
use sqlx::Connection as _;

fn small_pool(acquire_timeout: Duration) -> PoolConfig {
    PoolConfig {
        size: 3,
        max_overflow: 2,
        acquire_timeout,
    }
}

#[tokio::test]
async fn the_pool_never_exceeds_size_plus_overflow_and_leaks_nothing() {
    let server = Server::start().await;
    let db = server.database("pool", "").await;
    let target = db.target().pool(small_pool(Duration::from_secs(10)));
    let workload = PoolingConfig::new()
        .tasks(12)
        .iterations(3)
        .hold(Duration::from_millis(30));
    let check = PoolingCheck::new(&target, workload);
    assert_eq!(check.id().as_str(), "database.db.pooling");
    assert_eq!(check.category(), Category::Pooling);
    assert_eq!(check.timeout(), Some(Duration::from_secs(70)));
    let result = run(&check).await;
    result.assert_passed();
    assert_eq!(value(&result, "tasks"), 12.0);
    assert_eq!(value(&result, "acquisitions"), 36.0);
    assert_eq!(value(&result, "acquire_timeouts"), 0.0);
    let peak = value(&result, "peak_server_connections");
    assert!((1.0..=5.0).contains(&peak), "peak {peak}");
    assert!(value(&result, "peak_pool_connections") <= 5.0);
    let (p50, p95, max) = (
        value(&result, "acquire_wait_p50"),
        value(&result, "acquire_wait_p95"),
        value(&result, "acquire_wait_max"),
    );
    assert!(p50 <= p95 && p95 <= max, "{p50} {p95} {max}");
    // 12 tasks share 5 connections held 30 ms each: some of them waited.
    assert!(max >= 20.0, "max wait {max} ms");
    assert_eq!(value(&result, "leaked_connections"), 0.0);
    let left = server
        .scalar(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'citadel-itest/%'",
        )
        .await;
    assert_eq!(left, "0");
}

#[tokio::test]
async fn a_tiny_acquire_timeout_produces_reported_failures() {
    let server = Server::start().await;
    let db = server.database("pool", "").await;
    let target = db.target().pool(small_pool(Duration::from_millis(1)));
    let workload = PoolingConfig::new()
        .tasks(12)
        .iterations(2)
        .hold(Duration::from_millis(50));
    let result = run(&PoolingCheck::new(&target, workload)).await;
    let message = failed(&result);
    let timeouts = value(&result, "acquire_timeouts");
    assert!(timeouts > 0.0);
    assert!(
        message.starts_with(&format!(
            "{timeouts} of 24 acquisitions timed out after 1ms (pool.acquire_timeout)"
        )),
        "{message}"
    );
    assert!(value(&result, "peak_server_connections") <= 5.0);
    assert_eq!(value(&result, "leaked_connections"), 0.0);
}

#[tokio::test]
async fn headroom_compares_free_connections_with_what_the_pools_need() {
    let pg = Postgres::builder()
        .setting("max_connections", "20")
        .start()
        .await
        .unwrap();
    let server = Server { pg };
    let db = server.database("app", "").await;
    // Two connections in use by someone else.
    let _a = sqlx::PgConnection::connect(&db.dsn).await.unwrap();
    let _b = sqlx::PgConnection::connect(&db.dsn).await.unwrap();

    let fits = vec![HeadroomNeed::new("gateway", 5, 2, 2)];
    let check = HeadroomCheck::new(&db.target(), fits);
    assert_eq!(check.id().as_str(), "database.db.headroom");
    let result = run(&check).await;
    result.assert_passed();
    assert_eq!(value(&result, "max_connections"), 20.0);
    assert_eq!(value(&result, "reserved_connections"), 3.0);
    assert_eq!(value(&result, "connections_in_use"), 2.0);
    assert_eq!(value(&result, "connections_needed"), 14.0);
    assert_eq!(value(&result, "headroom"), 1.0);

    let too_many = vec![
        HeadroomNeed::new("gateway", 5, 2, 2),
        HeadroomNeed::new("worker", 4, 0, 1),
    ];
    let result = run(&HeadroomCheck::new(&db.target(), too_many)).await;
    assert_eq!(
        failed(&result),
        "the pools need 18 connections (gateway 2 x (5 + 2), worker 1 x (4 + 0)) but only 15 are \
         free (max_connections 20 - 3 reserved - 2 in use)"
    );
    assert_eq!(value(&result, "headroom"), -3.0);

    // The harness's own connections (application_name `citadel-itest/...`) are not in use by a
    // service: counted apart, never against the headroom.
    let mut own = sqlx::postgres::PgConnectOptions::from_str(&db.dsn).unwrap();
    own = own.application_name("citadel-itest/pool/other-check");
    let _own = sqlx::PgConnection::connect_with(&own).await.unwrap();
    let fits = vec![HeadroomNeed::new("gateway", 5, 2, 2)];
    let result = run(&HeadroomCheck::new(&db.target(), fits)).await;
    result.assert_passed();
    assert_eq!(value(&result, "connections_in_use"), 2.0);
    assert!(value(&result, "harness_connections") >= 2.0); // its own and `_own`

    // Without a list, the database's own pool (default 20 + 10) is what is needed.
    let result = run(&HeadroomCheck::new(&db.target(), Vec::new())).await;
    assert!(
        failed(&result).starts_with("the pools need 30 connections (database db 1 x (20 + 10))")
    );
}

/// `pg_ctl` of the newest installed PostgreSQL (as the testkit uses), else from `PATH`.
fn pg_ctl() -> PathBuf {
    let mut found: Vec<(f64, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<f64>().ok()?;
            let p = e.path().join("bin/pg_ctl");
            p.is_file().then_some((v, p))
        })
        .collect();
    found.sort_by(|a, b| a.0.total_cmp(&b.0));
    found
        .pop()
        .map(|(_, p)| p)
        .unwrap_or_else(|| PathBuf::from("pg_ctl"))
}

/// `pg_ctl ARGS` as the user that owns the cluster (`postgres` when the test runs as root).
fn as_cluster_owner(args: &[String]) -> Vec<String> {
    let mut cmd = Vec::new();
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    if root {
        cmd.extend(["runuser", "-u", "postgres", "--"].map(String::from));
    }
    cmd.push(pg_ctl().display().to_string());
    cmd.extend(args.iter().cloned());
    cmd
}

/// After `pg_ctl restart` the server is pg_ctl's child, not the testkit's: stop it at the end of
/// the test (before the testkit deletes its directory), even when the test fails.
struct StopRestarted(Vec<String>);

impl Drop for StopRestarted {
    fn drop(&mut self) {
        let _ = std::process::Command::new(&self.0[0])
            .args(&self.0[1..])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn restart_command(data: &Path) -> Vec<String> {
    let log = data.parent().unwrap().join("restarted.log");
    as_cluster_owner(&[
        "restart".into(),
        "-D".into(),
        data.display().to_string(),
        "-m".into(),
        "fast".into(),
        "-w".into(),
        "-t".into(),
        "30".into(),
        "-l".into(),
        log.display().to_string(),
    ])
}

#[tokio::test]
async fn recovery_after_a_real_restart_is_timed() {
    let server = Server::start().await;
    let db = server.database("app", "").await;
    let target = db.target().pool(small_pool(Duration::from_secs(5)));

    // Without a restart command the check says why it does not run.
    let mut recovery = RecoveryConfig::disposable(Vec::<String>::new());
    let result = run(&RecoveryCheck::new(&target, recovery.clone(), false)).await;
    assert_eq!(result.outcome.status(), Status::Skipped);
    assert!(
        result
            .outcome
            .message()
            .unwrap()
            .starts_with("no pooling.recovery.restart_command")
    );
    recovery.restart_command = vec!["true".into()];
    let result = run(&RecoveryCheck::new(&target, recovery.clone(), true)).await;
    assert_eq!(result.outcome.status(), Status::Skipped, "read-only mode");

    // A command that does not restart anything is caught.
    let result = run(&RecoveryCheck::new(&target, recovery.clone(), false)).await;
    assert_eq!(result.outcome.status(), Status::Error);
    assert!(
        result
            .outcome
            .message()
            .unwrap()
            .contains("exited 0 but the server did not restart"),
        "{:?}",
        result.outcome
    );

    let data = server.pg.data_dir().to_path_buf();
    let _stop = StopRestarted(as_cluster_owner(&[
        "stop".into(),
        "-D".into(),
        data.display().to_string(),
        "-m".into(),
        "immediate".into(),
    ]));
    recovery.restart_command = restart_command(&data);
    recovery.timeout = Duration::from_secs(30);
    let check = RecoveryCheck::new(&target, recovery, false);
    assert_eq!(check.id().as_str(), "database.db.recovery");
    let result = run(&check).await;
    result.assert_passed();
    assert!(value(&result, "restart_time") > 0.0);
    let recovery_time = value(&result, "recovery_time");
    assert!(recovery_time >= value(&result, "restart_time"));
    assert_eq!(value(&result, "stale_connection_errors"), 0.0);
    eprintln!("recovery_time = {recovery_time:.1} ms");
    // The restarted server serves.
    assert_eq!(server.scalar("app", "SELECT 1").await, "1");
}

/// The demo's first-run failure: the pooling check's 30 connections counted by the headroom
/// check running at the same moment. Both claim the server's connections, so the runner runs
/// them one after the other, and the headroom check does not count harness connections.
#[tokio::test]
async fn pooling_and_headroom_on_one_server_never_measure_each_other() {
    let pg = Postgres::builder()
        .setting("max_connections", "40")
        .start()
        .await
        .unwrap();
    let server = Server { pg };
    let db = server.database("app", "").await;
    let target = db.target().pool(PoolConfig {
        size: 20,
        max_overflow: 10,
        acquire_timeout: Duration::from_secs(10),
    });
    // 40 - 3 reserved = 37 free; the pool needs 30: fits only if the pooling check's own 30
    // connections are not counted.
    let pooling = PoolingCheck::new(
        &target,
        PoolingConfig::new()
            .tasks(40)
            .iterations(4)
            .hold(Duration::from_millis(40)),
    );
    let headroom = HeadroomCheck::new(&target, Vec::new());
    assert_eq!(pooling.exclusive(), headroom.exclusive());
    assert!(!pooling.exclusive().is_empty());
    let suite = Suite::builder()
        .concurrency(10)
        .check("database", Arc::new(pooling))
        .check("database", headroom.boxed())
        .build();
    let out = suite.run(Vec::new()).await;
    for r in &out.results {
        assert_eq!(
            r.outcome.status(),
            Status::Passed,
            "{}: {:?}",
            r.id,
            r.outcome
        );
    }
}
