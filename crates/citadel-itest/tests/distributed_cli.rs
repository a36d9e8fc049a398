//! A distributed load run end to end: real `citadel-itest` processes on loopback, a
//! coordinator and its shards against testkit nginx. The merged run is exactly the sum of
//! its shards, its thresholds are judged on the whole, and a shard killed mid-run fails the
//! coordinator at its deadline, naming the shard.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::cargo_bin;
use citadel_itest::load::result::{HistMetric, LoadResult};
use citadel_itest_testkit::Nginx;

async fn nginx() -> Nginx {
    Nginx::builder()
        .http_snippet("keepalive_requests 1000000;")
        .start()
        .await
        .expect("start testkit nginx (Debian package nginx-light)")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(args: &[&str], dir: &Path) -> Child {
    Command::new(cargo_bin("citadel-itest"))
        .args(args)
        .current_dir(dir)
        .env_remove("CITADEL_ITEST_LOG")
        .env_remove("JOB_COMPLETION_INDEX")
        .env_remove("CITADEL_ITEST_SHARDS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn citadel-itest")
}

/// Wait for `child` at most `bound`, killing it after; its output and how long it took.
fn finish(mut child: Child, bound: Duration) -> (Output, Duration) {
    let start = Instant::now();
    while start.elapsed() < bound {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    (out, start.elapsed())
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn read(path: &Path) -> LoadResult {
    LoadResult::from_json_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_shards_merge_exactly_and_thresholds_are_judged_on_the_whole() {
    let gw = nginx().await;
    let dir = tempfile::tempdir().unwrap();
    // 400 requests split 100 per shard: `http_reqs < 300` holds on every shard and fails on
    // the whole run; `http_reqs >= 400` fails on every shard and holds on the whole.
    std::fs::write(
        dir.path().join("load.yaml"),
        format!(
            "load:\n  scenarios:\n    - name: root\n      request: {{ url: \"{}/\" }}\n      closed: {{ vus: 4, duration: 30s, iterations: 400 }}\n      thresholds: [\"http_reqs < 300\", \"http_reqs >= 400\", \"error_rate < 1%\"]\n",
            gw.url()
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("token"), "s3cret-token\n").unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let url = format!("http://{listen}");
    let coordinator = spawn(
        &[
            "load",
            "coordinate",
            "-c",
            "load.yaml",
            "--shards",
            "4",
            "--listen",
            &listen,
            "--token-file",
            "token",
            "--deadline",
            "40s",
            "--start-lead",
            "1s",
            "--out-dir",
            "merged",
        ],
        dir.path(),
    );
    let shards: Vec<Child> = (0..4)
        .map(|i| {
            let shard = format!("{i}/4");
            spawn(
                &[
                    "load",
                    "-c",
                    "load.yaml",
                    "--quiet",
                    "--coordinator",
                    &url,
                    "--shard",
                    &shard,
                    "--token-file",
                    "token",
                    "--out-dir",
                    "out",
                ],
                dir.path(),
            )
        })
        .collect();
    for (i, s) in shards.into_iter().enumerate() {
        let (out, _) = finish(s, Duration::from_secs(60));
        assert_eq!(out.status.code(), Some(0), "shard {i}: {}", text(&out));
    }
    let (out, _) = finish(coordinator, Duration::from_secs(60));
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report.contains("threshold `http_reqs < 300` failed"),
        "{report}"
    );
    assert!(
        !report.contains("threshold `http_reqs >= 400` failed"),
        "{report}"
    );
    assert!(!report.contains("s3cret-token"), "{report}");

    let merged = read(&dir.path().join("merged/load-root.json"));
    let shards: Vec<LoadResult> = (0..4)
        .map(|i| {
            read(
                &dir.path()
                    .join(format!("out/load-root.shard-{i}-of-4.json")),
            )
        })
        .collect();
    // Every shard alone: 100 requests, `http_reqs < 300` held, `>= 400` failed.
    for (i, s) in shards.iter().enumerate() {
        assert_eq!(s.counts.requests, 100, "shard {i}");
        assert_eq!(s.shard.map(|p| (p.index, p.count)), Some((i as u32, 4)));
        assert!(s.thresholds[0].passed, "shard {i}: {:?}", s.thresholds[0]);
        assert!(!s.thresholds[1].passed, "shard {i}: {:?}", s.thresholds[1]);
        assert!(s.late_start_ms.is_some(), "shard {i}");
    }
    let sum: u64 = shards.iter().map(|s| s.counts.requests).sum();
    assert_eq!(merged.counts.requests, sum);
    assert_eq!(merged.counts.requests, 400);
    assert_eq!(merged.runs, 4);
    assert!(!merged.thresholds[0].passed);
    assert!(merged.thresholds[1].passed);
    assert_eq!(
        merged.late_start_ms,
        shards.iter().filter_map(|s| s.late_start_ms).max()
    );

    // One histogram fed every shard's samples has exactly the merged percentiles.
    for metric in [HistMetric::Duration, HistMetric::Service] {
        let mut all = shards[0].histogram(metric).unwrap().unwrap();
        for s in &shards[1..] {
            all.add(s.histogram(metric).unwrap().unwrap()).unwrap();
        }
        let m = merged.histogram(metric).unwrap().unwrap();
        assert_eq!(m.len(), all.len());
        for q in [0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
            assert_eq!(
                m.value_at_quantile(q),
                all.value_at_quantile(q),
                "{metric:?} q{q}"
            );
        }
        let table = &merged.metrics[metric.name()];
        assert_eq!(table.p95, Some(all.value_at_quantile(0.95) as f64 / 1000.0));
        assert_eq!(table.p99, Some(all.value_at_quantile(0.99) as f64 / 1000.0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_shard_fails_the_coordinator_at_its_deadline_naming_it() {
    let gw = nginx().await;
    let dir = tempfile::tempdir().unwrap();
    let config = |duration: &str| {
        format!(
            "load:\n  scenarios:\n    - name: root\n      request: {{ url: \"{}/\" }}\n      closed: {{ vus: 2, duration: {duration} }}\n",
            gw.url()
        )
    };
    // Same scenario; shard 0 runs 1 s and reports, shard 1 would run 60 s and is killed.
    std::fs::write(dir.path().join("short.yaml"), config("1s")).unwrap();
    std::fs::write(dir.path().join("long.yaml"), config("60s")).unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let url = format!("http://{listen}");
    let started = Instant::now();
    let coordinator = spawn(
        &[
            "load",
            "coordinate",
            "-c",
            "short.yaml",
            "--shards",
            "2",
            "--listen",
            &listen,
            "--deadline",
            "6s",
            "--start-lead",
            "500ms",
            "--out-dir",
            "merged",
        ],
        dir.path(),
    );
    let shard0 = spawn(
        &[
            "load",
            "-c",
            "short.yaml",
            "-q",
            "--coordinator",
            &url,
            "--shard",
            "0/2",
            "--out-dir",
            "out",
        ],
        dir.path(),
    );
    let mut shard1 = spawn(
        &[
            "load",
            "-c",
            "long.yaml",
            "-q",
            "--coordinator",
            &url,
            "--shard",
            "1/2",
            "--out-dir",
            "out",
        ],
        dir.path(),
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(shard1.try_wait().unwrap().is_none(), "shard 1 ended early");
    shard1.kill().unwrap();
    let _ = shard1.wait();
    let (out0, _) = finish(shard0, Duration::from_secs(30));
    assert_eq!(out0.status.code(), Some(0), "{}", text(&out0));
    let (out, _) = finish(coordinator, Duration::from_secs(30));
    let took = started.elapsed();
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report.contains("shard(s) 1 of 2 did not report within the deadline of 6s"),
        "{report}"
    );
    assert!(took >= Duration::from_secs(6), "{took:?}");
    assert!(took < Duration::from_secs(12), "no hang: {took:?}");
    assert!(!dir.path().join("merged/load-root.json").exists());
}

#[test]
fn k8s_manifests_parse_back_with_index_parallelism_image_config_and_secret() {
    use citadel_itest::load::distributed::k8s;
    let dir = tempfile::tempdir().unwrap();
    let config = "load:\n  scenarios:\n    - name: chat\n      request: { url: \"http://gateway:8080/v1/chat\" }\n      open: { rate: 400, duration: 5m }\n";
    std::fs::write(dir.path().join("load.yaml"), config).unwrap();
    let out = Command::new(cargo_bin("citadel-itest"))
        .args([
            "load",
            "k8s-manifests",
            "--shards",
            "8",
            "--image",
            "registry.example/citadel-itest:1.2",
            "--config",
            "load.yaml",
            "--namespace",
            "perf",
            "--token-secret",
            "load-token",
            "--scenario",
            "chat",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let yaml = String::from_utf8(out.stdout).unwrap();
    assert!(
        yaml.contains("apiVersion: batch/v1") && yaml.contains("kind: Job"),
        "{yaml}"
    );
    let (cm, svc, pod, job) = k8s::parse(&yaml).unwrap();

    let spec = job.spec.unwrap();
    assert_eq!(spec.completion_mode.as_deref(), Some("Indexed"));
    assert_eq!((spec.completions, spec.parallelism), (Some(8), Some(8)));
    assert_eq!(spec.backoff_limit_per_index, Some(0));
    assert_eq!(job.metadata.namespace.as_deref(), Some("perf"));
    let shard_pod = spec.template.spec.unwrap();
    let c = &shard_pod.containers[0];
    assert_eq!(
        c.image.as_deref(),
        Some("registry.example/citadel-itest:1.2")
    );
    let args = c.args.clone().unwrap();
    assert!(
        args.windows(2).any(|w| w[0] == "--coordinator"
            && w[1] == "http://citadel-itest-load-coordinator.perf.svc:7070"),
        "{args:?}"
    );
    assert!(
        args.windows(2).any(|w| w == ["--scenario", "chat"]),
        "{args:?}"
    );
    let env = c.env.clone().unwrap();
    assert!(
        env.iter()
            .any(|e| e.name == "CITADEL_ITEST_SHARDS" && e.value.as_deref() == Some("8"))
    );
    let secret_of = |vols: &Option<Vec<k8s::k8s_openapi::api::core::v1::Volume>>| {
        vols.as_ref()
            .unwrap()
            .iter()
            .find_map(|v| v.secret.as_ref().and_then(|s| s.secret_name.clone()))
    };
    assert_eq!(secret_of(&shard_pod.volumes).as_deref(), Some("load-token"));

    assert_eq!(cm.data.unwrap()["load.yaml"], config);
    let svc_spec = svc.spec.unwrap();
    assert_eq!(svc_spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(svc_spec.ports.unwrap()[0].port, 7070);
    let coord = pod.spec.unwrap();
    assert_eq!(secret_of(&coord.volumes).as_deref(), Some("load-token"));
    let cargs = coord.containers[0].args.clone().unwrap();
    assert!(
        cargs.windows(2).any(|w| w == ["--shards", "8"]),
        "{cargs:?}"
    );
    assert!(
        cargs
            .windows(2)
            .any(|w| w == ["--listen", "$(POD_IP):7070"]),
        "{cargs:?}"
    );
    assert_eq!(coord.containers[0].image, c.image);

    // A bad name is refused, naming the option.
    let out = Command::new(cargo_bin("citadel-itest"))
        .args([
            "load",
            "k8s-manifests",
            "--shards",
            "2",
            "--image",
            "img",
            "--config",
            "load.yaml",
            "--namespace",
            "Not_A_Label",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--namespace `Not_A_Label`"));
}
