//! Each launcher against the real binary: it starts, answers as the real service does, and
//! leaves nothing behind when dropped. A missing binary fails these tests; it never skips them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use citadel_itest_testkit::{
    HangingListener, Nginx, PgAuth, Postgres, Prometheus, TestkitError, closed_port,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("build HTTP client")
}

async fn refuses(port: u16) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(("127.0.0.1", port))).await,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

/// Runs `psql -c 'SELECT 1'` with `password`; returns (success, stderr).
async fn select_one_with(pg: &Postgres, password: &str) -> (bool, String) {
    let mut cmd = pg.psql_command("postgres").expect("psql is installed");
    cmd.env("PGPASSWORD", password)
        .args(["-At", "-c", "SELECT 1"]);
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("psql finishes")
        .expect("psql runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.success() && stdout.trim() == "1", stderr)
}

async fn timed<T>(what: &str, fut: impl Future<Output = Result<T, TestkitError>>) -> T {
    let started = Instant::now();
    let value = fut.await.unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{what} started in {:?}", started.elapsed());
    value
}

#[tokio::test]
async fn postgres_with_scram_requires_the_right_password() {
    let pg = timed("postgres (scram)", Postgres::builder().start()).await;
    assert_eq!(pg.host(), "127.0.0.1");
    assert_eq!(pg.database(), "postgres");
    assert_eq!(
        pg.dsn(),
        format!(
            "postgres://citadel:{}@127.0.0.1:{}/postgres",
            pg.password(),
            pg.port()
        )
    );
    TcpStream::connect(("127.0.0.1", pg.port()))
        .await
        .expect("TCP connect to postgres");

    let (ok, stderr) = select_one_with(&pg, pg.password()).await;
    assert!(ok, "right password refused: {stderr}");
    let (ok, stderr) = select_one_with(&pg, "wrong-password").await;
    assert!(!ok, "wrong password accepted");
    assert!(
        stderr.contains("password authentication failed"),
        "unexpected error: {stderr}"
    );
    assert!(!format!("{pg:?}").contains(pg.password()));

    let dsn = pg.create_database("orders").await.expect("create database");
    assert_eq!(dsn, pg.dsn_for("orders"));
    assert!(dsn.ends_with("/orders"));
    let current = pg
        .execute_in("orders", "SELECT current_database()")
        .await
        .expect("query the new database");
    assert_eq!(current.trim(), "orders");
    let err = pg
        .create_database("orders")
        .await
        .expect_err("a second create fails");
    assert!(
        err.to_string()
            .starts_with("create database on postgres: psql failed"),
        "{err}"
    );
    assert!(err.to_string().contains("already exists"), "{err}");

    let data_dir = pg.data_dir().to_path_buf();
    let port = pg.port();
    assert!(data_dir.join("PG_VERSION").is_file());
    drop(pg);
    assert!(!data_dir.exists(), "data dir left behind");
    assert!(refuses(port).await, "port {port} still accepts connections");
}

#[tokio::test]
async fn postgres_with_trust_accepts_any_password() {
    let pg = timed(
        "postgres (trust)",
        Postgres::builder()
            .auth(PgAuth::Trust)
            .user("trusting")
            .password("given-password")
            .start(),
    )
    .await;
    assert_eq!(pg.user(), "trusting");
    assert_eq!(pg.password(), "given-password");
    let (ok, stderr) = select_one_with(&pg, "anything-at-all").await;
    assert!(ok, "trust server refused a wrong password: {stderr}");
}

#[tokio::test]
async fn postgres_stop_keeps_the_dir_and_refuses_connections() {
    let mut pg = timed(
        "postgres (stop)",
        Postgres::builder().setting("max_connections", "20").start(),
    )
    .await;
    assert_eq!(
        pg.execute("SHOW max_connections").await.unwrap().trim(),
        "20"
    );
    let started = Instant::now();
    pg.stop().await.expect("stop");
    eprintln!("postgres stopped in {:?}", started.elapsed());
    assert!(pg.pid().is_none());
    assert!(pg.data_dir().join("PG_VERSION").is_file());
    assert!(refuses(pg.port()).await);
    let err = pg.execute("SELECT 1").await.expect_err("stopped server");
    assert!(
        err.to_string()
            .starts_with("run sql on postgres: psql failed"),
        "{err}"
    );
    pg.stop().await.expect("second stop is a no-op");
    let data_dir = pg.data_dir().to_path_buf();
    drop(pg);
    assert!(!data_dir.exists());
}

#[tokio::test]
async fn prometheus_serves_its_api_and_loads_rule_files() {
    let rules = "groups:\n- name: citadel_test_rules\n  rules:\n  - alert: CitadelAlwaysFiring\n    expr: vector(1)\n";
    let prom = timed(
        "prometheus",
        Prometheus::builder()
            .scrape_target(
                "nothing_there",
                [format!("127.0.0.1:{}", closed_port().unwrap())],
            )
            .scrape_config(
                "- job_name: raw_fragment\n  static_configs:\n  - targets: ['127.0.0.1:1']",
            )
            .rule_file("alerts.yml", rules)
            .alertmanager(format!("127.0.0.1:{}", closed_port().unwrap()))
            .start(),
    )
    .await;
    assert_eq!(prom.url(), format!("http://127.0.0.1:{}", prom.port()));
    let client = http();
    let ready = client
        .get(format!("{}/-/ready", prom.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    let info: serde_json::Value = client
        .get(format!("{}/api/v1/status/buildinfo", prom.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .expect("buildinfo is JSON");
    assert_eq!(info["status"], "success", "{info}");
    assert!(info["data"]["version"].is_string(), "{info}");

    let rules: serde_json::Value = client
        .get(format!("{}/api/v1/rules", prom.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rules["status"], "success", "{rules}");
    let groups = rules["data"]["groups"].as_array().expect("groups");
    assert!(
        groups
            .iter()
            .any(|g| g["name"] == "citadel_test_rules"
                && g["rules"][0]["name"] == "CitadelAlwaysFiring"),
        "{rules}"
    );

    // Service discovery hands targets to the scrape manager a few seconds after start-up.
    let polled = Instant::now();
    let mut jobs = Vec::new();
    while polled.elapsed() < Duration::from_secs(20) {
        let targets: serde_json::Value = client
            .get(format!("{}/api/v1/targets", prom.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        jobs = targets["data"]["activeTargets"]
            .as_array()
            .expect("active targets")
            .iter()
            .filter_map(|t| t["labels"]["job"].as_str().map(str::to_owned))
            .collect();
        if jobs.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("prometheus targets active after {:?}", polled.elapsed());
    jobs.sort();
    assert_eq!(jobs, ["nothing_there", "raw_fragment"]);

    let port = prom.port();
    let dir = prom.config_path().parent().unwrap().to_path_buf();
    drop(prom);
    assert!(!dir.exists());
    assert!(refuses(port).await);
}

/// A minimal HTTP/1.1 backend: answers every request with `hello` and `x-backend: a`.
async fn hello_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let reply =
                            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-backend: a\r\n\r\nhello";
                        if stream.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn nginx_answers_health_and_proxies_to_the_upstream() {
    let backend = hello_backend().await;
    let gateway = timed("nginx (proxy)", Nginx::proxy_to([backend])).await;
    let client = http();

    let health = client
        .get(format!("{}/health", gateway.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(
        health.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    assert_eq!(health.text().await.unwrap(), r#"{"status":"ok"}"#);

    for _ in 0..3 {
        let proxied = client
            .get(format!("{}/v1/models", gateway.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(proxied.status(), 200);
        assert_eq!(proxied.headers()["x-backend"], "a");
        assert_eq!(proxied.text().await.unwrap(), "hello");
    }

    let port = gateway.port();
    drop(gateway);
    assert!(refuses(port).await);
}

#[tokio::test]
async fn nginx_without_upstream_answers_ok() {
    let gateway = timed("nginx (no upstream)", Nginx::start()).await;
    let client = http();
    let root = client
        .get(format!("{}/anything", gateway.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(root.status(), 200);
    assert_eq!(root.text().await.unwrap(), "ok\n");
    let health = client
        .get(format!("{}/health", gateway.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn nginx_reports_a_bad_config_with_its_log() {
    let err = Nginx::builder()
        .location("this_is_not_a_directive;")
        .start()
        .await
        .expect_err("bad config");
    let msg = err.to_string();
    assert!(
        msg.starts_with("start nginx: server exited during start-up"),
        "{msg}"
    );
    assert!(msg.contains("unknown directive"), "{msg}");
}

#[tokio::test]
async fn hanging_listener_accepts_but_never_answers() {
    let listener = HangingListener::start().await.unwrap();
    assert_eq!(listener.addr().ip().to_string(), "127.0.0.1");
    let mut stream = TcpStream::connect(listener.addr()).await.expect("connect");
    stream.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf)).await;
    assert!(read.is_err(), "expected the read to time out, got {read:?}");

    let port = listener.port();
    drop(listener);
    tokio::task::yield_now().await;
    // The held connection is closed: reads end instead of hanging.
    let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    assert!(refuses(port).await);
}

#[tokio::test]
async fn closed_port_refuses_connections() {
    let port = closed_port().unwrap();
    assert!(refuses(port).await);
}

const WATCHDOG_HELPER_ENV: &str = "CITADEL_TESTKIT_WATCHDOG_HELPER";

/// Not a test on its own: `watchdog_cleans_up_after_a_test_process_dies` runs this test binary
/// again with only this test and the env var set; it then starts a server and exits without
/// dropping it, as a test killed by its runner would.
#[tokio::test]
async fn helper_for_watchdog_test() {
    if std::env::var_os(WATCHDOG_HELPER_ENV).is_none() {
        return;
    }
    let pg = Postgres::builder().start().await.unwrap();
    println!(
        "dir={} pid={} port={}",
        pg.data_dir().parent().unwrap().display(),
        pg.pid().unwrap(),
        pg.port()
    );
    std::process::exit(0);
}

fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|s| !s.trim_start().starts_with('Z'))
    })
}

#[tokio::test]
async fn watchdog_cleans_up_after_a_test_process_dies() {
    let out = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "helper_for_watchdog_test",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WATCHDOG_HELPER_ENV, "1")
        .stdin(std::process::Stdio::null())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.find("dir=").map(|at| &l[at..]))
        .unwrap_or_else(|| {
            panic!(
                "helper printed no handle: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let fields: Vec<&str> = line
        .split(' ')
        .map(|f| f.split_once('=').unwrap().1)
        .collect();
    let (dir, pid, port) = (std::path::PathBuf::from(fields[0]), fields[1], fields[2]);
    let port: u16 = port.parse().unwrap();

    let started = Instant::now();
    while (dir.exists() || alive(pid)) && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("watchdog cleaned up in {:?}", started.elapsed());
    assert!(!alive(pid), "server {pid} survived its test process");
    assert!(!dir.exists(), "{} survived its test process", dir.display());
    assert!(refuses(port).await);
}

/// Runs `SELECT ssl FROM pg_stat_ssl` for this session with `psql "<conninfo>"` (its keywords
/// override the `-h/-p/-U` and `PGSSLMODE` of [`Postgres::psql_command`]); returns (success,
/// stdout, stderr).
async fn session_ssl(pg: &Postgres, conninfo: &str) -> (bool, String, String) {
    let mut cmd = pg.psql_command("postgres").expect("psql is installed");
    cmd.arg("-d").arg(conninfo).args([
        "-At",
        "-c",
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    ]);
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("psql finishes")
        .expect("psql runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A self-signed CA that signed nothing the server has, written next to `pg`'s own CA (in its
/// temp dir, so it goes when `pg` is dropped).
async fn unrelated_ca(pg: &Postgres) -> std::path::PathBuf {
    let dir = pg.ca_cert_path().unwrap().parent().unwrap();
    let (key, cert) = (dir.join("other-ca.key"), dir.join("other-ca.crt"));
    let out = tokio::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=unrelated CA", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .expect("openssl finishes")
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cert
}

#[tokio::test]
async fn postgres_with_tls_serves_sessions_verified_against_its_ca() {
    let pg = timed("postgres (tls)", Postgres::builder().tls(true).start()).await;
    assert!(pg.tls());
    let ca = pg
        .ca_cert_path()
        .expect("a TLS server has a CA")
        .to_path_buf();
    let tls_dir = ca.parent().unwrap().to_path_buf();
    assert!(tls_dir.starts_with(pg.data_dir().parent().unwrap()));
    assert!(ca.is_file());
    assert!(!tls_dir.join("ca.key").exists(), "the CA key is not kept");

    // PostgreSQL insists its key is private and its own.
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let key = std::fs::metadata(tls_dir.join("server.key")).unwrap();
    assert_eq!(key.permissions().mode() & 0o777, 0o600);
    let data = std::fs::metadata(pg.data_dir()).unwrap();
    assert_eq!(
        key.uid(),
        data.uid(),
        "the key belongs to the server's user"
    );
    let out = std::process::Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-subject",
            "-ext",
            "subjectAltName,basicConstraints",
            "-in",
        ])
        .arg(tls_dir.join("server.crt"))
        .output()
        .expect("openssl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("CN = 127.0.0.1"), "{text}");
    assert!(
        text.contains("IP Address:127.0.0.1, DNS:localhost"),
        "{text}"
    );
    assert!(text.contains("CA:FALSE"), "{text}");

    // verify-full: the chain ends at the testkit CA and the certificate names 127.0.0.1...
    let verified = format!(
        "host=127.0.0.1 port={} dbname=postgres sslmode=verify-full sslrootcert={}",
        pg.port(),
        ca.display()
    );
    let (ok, ssl, stderr) = session_ssl(&pg, &verified).await;
    assert!(ok, "verify-full refused: {stderr}");
    assert_eq!(ssl, "t");
    // ... and localhost.
    let by_name = format!(
        "host=localhost hostaddr=127.0.0.1 port={} dbname=postgres sslmode=verify-full \
         sslrootcert={}",
        pg.port(),
        ca.display()
    );
    let (ok, ssl, stderr) = session_ssl(&pg, &by_name).await;
    assert!(
        ok && ssl == "t",
        "verify-full for localhost: {ssl} {stderr}"
    );
    // `execute` goes over verified TLS on a TLS server.
    assert_eq!(
        pg.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .await
            .unwrap()
            .trim(),
        "t"
    );
    // Without `require_tls` a client may still choose plain TCP.
    let plain = format!(
        "host=127.0.0.1 port={} dbname=postgres sslmode=disable",
        pg.port()
    );
    let (ok, ssl, stderr) = session_ssl(&pg, &plain).await;
    assert!(ok && ssl == "f", "plain session: {ssl} {stderr}");

    // A CA that did not sign the server's certificate is refused.
    let wrong = unrelated_ca(&pg).await;
    let unverified = format!(
        "host=127.0.0.1 port={} dbname=postgres sslmode=verify-full sslrootcert={}",
        pg.port(),
        wrong.display()
    );
    let (ok, _, stderr) = session_ssl(&pg, &unverified).await;
    assert!(!ok, "verify-full accepted a wrong CA");
    assert!(
        stderr.contains("certificate verify failed"),
        "unexpected error: {stderr}"
    );

    let dir = pg.data_dir().parent().unwrap().to_path_buf();
    drop(pg);
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[tokio::test]
async fn postgres_with_require_tls_refuses_plain_connections() {
    let pg = timed(
        "postgres (require_tls, trust)",
        Postgres::builder()
            .require_tls(true)
            .auth(PgAuth::Trust)
            .start(),
    )
    .await;
    assert!(pg.tls());
    assert_eq!(
        pg.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .await
            .unwrap()
            .trim(),
        "t"
    );
    let (ok, stderr) = select_one_with(&pg, "any-password").await;
    assert!(ok, "trust over TLS refused: {stderr}");

    let plain = format!(
        "host=127.0.0.1 port={} dbname=postgres sslmode=disable",
        pg.port()
    );
    let (ok, _, stderr) = session_ssl(&pg, &plain).await;
    assert!(!ok, "a plain session was let in");
    assert!(
        stderr.contains("no pg_hba.conf entry") && stderr.contains("no encryption"),
        "unexpected error: {stderr}"
    );
}
