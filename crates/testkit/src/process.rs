//! What every launcher shares: finding programs, free ports, temp dirs, running a server as a
//! supervised child with a watchdog, bounded readiness waits and log tails.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::error::ErrorKind;

/// The only address launchers listen on.
pub(crate) const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// How many ports a launcher tries when the one it found is taken before the server binds it.
const PORT_ATTEMPTS: u32 = 3;

/// How many log lines a start-up error carries.
const TAIL_LINES: usize = 30;

/// The signal that asks a server for a fast, clean shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// SIGINT: PostgreSQL's "fast" shutdown (SIGTERM waits for clients to disconnect).
    Int,
    /// SIGTERM.
    Term,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Self::Int => "INT",
            Self::Term => "TERM",
        }
    }
}

/// The effective uid of this process, read from `/proc/self/status`.
pub(crate) fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// A system account from `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SystemUser {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

impl SystemUser {
    /// Looks `name` up in `/etc/passwd`.
    pub(crate) fn lookup(name: &str) -> Option<Self> {
        let passwd = fs::read_to_string("/etc/passwd").ok()?;
        passwd.lines().find_map(|line| {
            let mut fields = line.split(':');
            if fields.next()? != name {
                return None;
            }
            let _password = fields.next()?;
            let uid = fields.next()?.parse().ok()?;
            let gid = fields.next()?.parse().ok()?;
            Some(Self { uid, gid })
        })
    }

    /// Gives `path` to this user.
    pub(crate) fn chown(&self, path: &Path) -> Result<(), ErrorKind> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
            .map_err(|e| ErrorKind::io(format!("chown {}", path.display()), e))
    }
}

/// Finds `program` in `preferred` dirs, then `PATH`, then the usual system dirs.
pub(crate) fn find_program(
    program: &str,
    package: &str,
    preferred: &[PathBuf],
) -> Result<PathBuf, ErrorKind> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let system = [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ]
    .map(PathBuf::from);
    preferred
        .iter()
        .chain(&path_dirs)
        .chain(&system)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| ErrorKind::BinaryNotFound {
            binary: program.to_owned(),
            package: package.to_owned(),
        })
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A port on 127.0.0.1 that nothing listens on right now (bind to port 0, read, release).
pub(crate) fn free_port() -> io::Result<u16> {
    let listener = StdTcpListener::bind(SocketAddr::from((LOCALHOST, 0)))?;
    Ok(listener.local_addr()?.port())
}

/// `bytes` random bytes from `/dev/urandom`, hex-encoded.
pub(crate) fn random_hex(bytes: usize) -> Result<String, ErrorKind> {
    let mut buf = vec![0u8; bytes];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| ErrorKind::io("read /dev/urandom", e))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// A fresh private temp dir named after the service, in `base` or the system temp dir.
pub(crate) fn temp_dir(service: &str, base: Option<&Path>) -> Result<TempDir, ErrorKind> {
    let prefix = format!("citadel-itest-{service}-");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix);
    match base {
        Some(base) => builder.tempdir_in(base),
        None => builder.tempdir(),
    }
    .map_err(|e| ErrorKind::io("create temp dir", e))
}

/// Writes `contents` to `path`, naming the file in the error.
pub(crate) fn write_file(path: &Path, contents: &str) -> Result<(), ErrorKind> {
    fs::write(path, contents).map_err(|e| ErrorKind::io(format!("write {}", path.display()), e))
}

/// Creates the directory `path`, naming it in the error.
pub(crate) fn create_dir(path: &Path) -> Result<(), ErrorKind> {
    fs::create_dir(path).map_err(|e| ErrorKind::io(format!("create {}", path.display()), e))
}

/// The last `lines` lines of a log file (at most 64 KiB are read), or a note why there are none.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let read = || -> io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) if text.trim().is_empty() => "(log is empty)".to_owned(),
        Ok(text) => tail_lines(&text, lines),
        Err(e) => format!("(cannot read log {}: {e})", path.display()),
    }
}

/// The last `lines` non-empty lines of `text`.
pub(crate) fn tail_lines(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether the log file at `path` contains `needle`.
pub(crate) fn log_contains(path: &Path, needle: &str) -> bool {
    fs::read_to_string(path).is_ok_and(|text| text.contains(needle))
}

/// Whether a TCP connection to 127.0.0.1:`port` succeeds within a second.
pub(crate) async fn tcp_accepts(port: u16) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_secs(1),
            TcpStream::connect((LOCALHOST, port))
        )
        .await,
        Ok(Ok(_))
    )
}

/// The status code of `GET path` on 127.0.0.1:`port`, within a couple of seconds.
pub(crate) async fn http_get_status(port: u16, path: &str) -> io::Result<u16> {
    let exchange = async {
        let mut stream = TcpStream::connect((LOCALHOST, port)).await?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut head = Vec::new();
        let mut buf = [0u8; 512];
        while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 8192 {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&head);
        text.split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no HTTP status line"))
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "HTTP request timed out"))?
}

/// Runs a one-shot helper program with a time limit; on success returns its stdout.
pub(crate) async fn run_helper(
    mut command: tokio::process::Command,
    program: &str,
    limit: Duration,
) -> Result<String, ErrorKind> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command
        .spawn()
        .map_err(|e| ErrorKind::io(format!("spawn `{program}`"), e))?;
    let output = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .map_err(|_| ErrorKind::CommandTimedOut {
            program: program.to_owned(),
            after: limit,
        })?
        .map_err(|e| ErrorKind::io(format!("wait for `{program}`"), e))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let both = format!("{stderr}\n{stdout}");
    let tail = tail_lines(&both, TAIL_LINES);
    Err(ErrorKind::CommandFailed {
        program: program.to_owned(),
        status: output.status.to_string(),
        output: if tail.is_empty() {
            "(no output)".to_owned()
        } else {
            tail
        },
    })
}

/// How to start one server process.
pub(crate) struct LaunchSpec {
    /// The file the server's stdout and stderr go to (truncated on every attempt).
    pub(crate) log: PathBuf,
    /// The signal for a clean shutdown.
    pub(crate) signal: Signal,
    /// How long to wait for readiness on each attempt.
    pub(crate) timeout: Duration,
}

/// Starts a server on a free port and waits until `probe(port)` says it is ready.
///
/// `command(port)` builds the command (writing any config that names the port). If the server
/// exits because the port was taken in the meantime, a new port is tried, up to three times.
/// On failure the server is killed and `dir` deleted; the error carries the log tail.
pub(crate) async fn launch<C, P, F>(
    dir: TempDir,
    spec: LaunchSpec,
    mut command: C,
    mut probe: P,
) -> Result<(Running, u16), ErrorKind>
where
    C: FnMut(u16) -> Result<Command, ErrorKind>,
    P: FnMut(u16) -> F,
    F: Future<Output = bool>,
{
    let mut running = Running {
        server: None,
        watchdog: None,
        signal: spec.signal,
        log: spec.log,
        dir,
    };
    let mut last_tail = String::new();
    for _attempt in 0..PORT_ATTEMPTS {
        let port = free_port().map_err(|e| ErrorKind::io("find a free port", e))?;
        let mut cmd = command(port)?;
        let program = Path::new(cmd.get_program())
            .file_name()
            .unwrap_or(OsStr::new("server"))
            .to_string_lossy()
            .into_owned();
        let log = open_log(&running.log)?;
        let log_err = log
            .try_clone()
            .map_err(|e| ErrorKind::io("duplicate log file handle", e))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        let child = cmd
            .spawn()
            .map_err(|e| ErrorKind::io(format!("spawn `{program}`"), e))?;
        running.watchdog = Some(spawn_watchdog(
            Some(child.id()),
            spec.signal,
            running.dir(),
        )?);
        running.server = Some(child);

        match wait_ready(&mut running, port, spec.timeout, &mut probe).await {
            Ok(()) => return Ok((running, port)),
            Err(Some(status)) => {
                last_tail = log_tail(&running.log, TAIL_LINES);
                running.kill_now();
                if !last_tail.to_lowercase().contains("address already in use") {
                    return Err(ErrorKind::Exited {
                        status: status.to_string(),
                        log_tail: last_tail,
                    });
                }
            }
            Err(None) => {
                running.kill_now();
                return Err(ErrorKind::NotReady {
                    waited: spec.timeout,
                    log_tail: log_tail(&running.log, TAIL_LINES),
                });
            }
        }
    }
    Err(ErrorKind::PortInUse {
        attempts: PORT_ATTEMPTS,
        log_tail: last_tail,
    })
}

fn open_log(path: &Path) -> Result<File, ErrorKind> {
    File::create(path)
        .and_then(|_| OpenOptions::new().append(true).open(path))
        .map_err(|e| ErrorKind::io(format!("open log {}", path.display()), e))
}

/// `Ok` when ready, `Err(Some(status))` when the server exited, `Err(None)` on timeout.
async fn wait_ready<P, F>(
    running: &mut Running,
    port: u16,
    timeout: Duration,
    probe: &mut P,
) -> Result<(), Option<ExitStatus>>
where
    P: FnMut(u16) -> F,
    F: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = running.try_wait() {
            return Err(Some(status));
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(None);
        }
        let probe_limit = remaining.min(Duration::from_secs(2));
        if let Ok(true) = tokio::time::timeout(probe_limit, probe(port)).await {
            // The server may have died right after answering (or something else answered).
            return match running.try_wait() {
                Some(status) => Err(Some(status)),
                None => Ok(()),
            };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A started server: its process, its watchdog and its temp dir.
///
/// Dropping it kills the server (clean signal, then SIGKILL after a grace period), kills the
/// watchdog and deletes the dir.
#[derive(Debug)]
pub(crate) struct Running {
    server: Option<Child>,
    watchdog: Option<Child>,
    signal: Signal,
    log: PathBuf,
    // Declared last: dropped (deleted) after the processes are gone.
    dir: TempDir,
}

/// How long a server gets to shut down cleanly before it is killed.
const GRACE: Duration = Duration::from_secs(10);

impl Running {
    /// The temp dir the server runs in.
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's log file.
    pub(crate) fn log(&self) -> &Path {
        &self.log
    }

    /// The server's process id, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(Child::id)
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        let child = self.server.as_mut()?;
        child.try_wait().ok().flatten()
    }

    /// Stops the server cleanly (SIGKILL after a grace period), keeping the dir.
    pub(crate) async fn stop(&mut self) -> Result<(), ErrorKind> {
        let Some(mut child) = self.server.take() else {
            return Ok(());
        };
        signal(child.id(), self.signal);
        let deadline = Instant::now() + GRACE;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ => {
                    let _ = child.kill();
                    child
                        .wait()
                        .map_err(|e| ErrorKind::io("wait for the server to exit", e))?;
                    break;
                }
            }
        }
        // The old watchdog names a pid that is gone now (and could be reused): replace it with
        // one that only deletes the dir.
        kill_child(&mut self.watchdog);
        self.watchdog = Some(spawn_watchdog(None, self.signal, self.dir())?);
        Ok(())
    }

    /// Kills the server at once (no grace period), keeping the dir.
    fn kill_now(&mut self) {
        kill_child(&mut self.server);
        kill_child(&mut self.watchdog);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.server.take() {
            signal(child.id(), self.signal);
            let deadline = Instant::now() + GRACE;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        kill_child(&mut self.watchdog);
    }
}

fn kill_child(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Sends `sig` to `pid` with the `kill` program (std can only send SIGKILL without `unsafe`).
fn signal(pid: u32, sig: Signal) {
    let _ = Command::new("kill")
        .arg(format!("-{}", sig.name()))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Cleans up after a test process that died without dropping its handles (a panic that aborts,
/// SIGKILL from a test runner's timeout, Ctrl-C): polls the test's pid every second and, once it
/// is gone, stops the server and deletes its dir. It runs in its own process group so a signal
/// sent to the test's group does not take it down too, and holds none of the test's stdio.
const WATCHDOG_SCRIPT: &str = r#"
while kill -0 "$1" 2>/dev/null; do sleep 1; done
if [ -n "$2" ]; then
  kill -"$3" "$2" 2>/dev/null
  i=0
  while kill -0 "$2" 2>/dev/null && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  kill -KILL "$2" 2>/dev/null
fi
rm -rf "$4"
"#;

fn spawn_watchdog(server: Option<u32>, sig: Signal, dir: &Path) -> Result<Child, ErrorKind> {
    Command::new("sh")
        .arg("-c")
        .arg(WATCHDOG_SCRIPT)
        .arg("citadel-itest-watchdog")
        .arg(std::process::id().to_string())
        .arg(server.map(|pid| pid.to_string()).unwrap_or_default())
        .arg(sig.name())
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| ErrorKind::io("spawn the watchdog `sh`", e))
}

/// Formats a duration the way Prometheus and nginx read it: `1500ms`, `2s`.
pub(crate) fn duration_literal(d: Duration) -> String {
    let ms = d.as_millis().max(1);
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_non_empty_lines() {
        assert_eq!(tail_lines("a\n\nb\nc\n\n", 2), "b\nc");
        assert_eq!(tail_lines("a", 5), "a");
        assert_eq!(tail_lines("", 5), "");
    }

    #[test]
    fn durations_read_like_prometheus_durations() {
        assert_eq!(duration_literal(Duration::from_secs(2)), "2s");
        assert_eq!(duration_literal(Duration::from_millis(1500)), "1500ms");
        assert_eq!(duration_literal(Duration::ZERO), "1ms");
    }

    #[test]
    fn missing_program_names_the_package() {
        let err = find_program("citadel-no-such-binary", "citadel-pkg", &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "binary `citadel-no-such-binary` not found (install the Debian package `citadel-pkg`)"
        );
    }

    #[test]
    fn root_is_found_in_passwd() {
        assert_eq!(
            SystemUser::lookup("root"),
            Some(SystemUser { uid: 0, gid: 0 })
        );
        assert_eq!(SystemUser::lookup("citadel-no-such-user"), None);
    }

    #[test]
    fn random_hex_has_the_asked_length() {
        let a = random_hex(16).unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, random_hex(16).unwrap());
    }

    fn sh(script: &'static str) -> impl FnMut(u16) -> Result<Command, ErrorKind> {
        move |_port| {
            let mut cmd = Command::new("sh");
            cmd.arg("-c").arg(script);
            Ok(cmd)
        }
    }

    fn spec(dir: &TempDir, timeout: Duration) -> LaunchSpec {
        LaunchSpec {
            log: dir.path().join("server.log"),
            signal: Signal::Term,
            timeout,
        }
    }

    #[tokio::test]
    async fn a_taken_port_is_retried_then_reported() {
        let dir = temp_dir("unit", None).unwrap();
        let path = dir.path().to_path_buf();
        let spec = spec(&dir, Duration::from_secs(5));
        let script = "echo 'listen tcp: bind: address already in use' >&2; exit 1";
        let err = launch(dir, spec, sh(script), |_| async { false })
            .await
            .unwrap_err();
        assert!(
            matches!(err, ErrorKind::PortInUse { attempts: 3, .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains("bind: address already in use"),
            "{err}"
        );
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn an_early_exit_is_reported_with_the_log_tail() {
        let dir = temp_dir("unit", None).unwrap();
        let spec = spec(&dir, Duration::from_secs(5));
        let err = launch(dir, spec, sh("echo 'bad config' >&2; exit 3"), |_| async {
            false
        })
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "server exited during start-up (exit status: 3); log tail:\nbad config"
        );
    }

    #[tokio::test]
    async fn a_server_that_never_gets_ready_is_killed_after_the_timeout() {
        let dir = temp_dir("unit", None).unwrap();
        let path = dir.path().to_path_buf();
        let spec = spec(&dir, Duration::from_millis(300));
        let started = Instant::now();
        let err = launch(dir, spec, sh("echo starting; exec sleep 30"), |_| async {
            false
        })
        .await
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(matches!(err, ErrorKind::NotReady { .. }), "{err}");
        assert!(err.to_string().ends_with("log tail:\nstarting"), "{err}");
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn a_ready_server_is_stopped_on_drop() {
        let dir = temp_dir("unit", None).unwrap();
        let path = dir.path().to_path_buf();
        let spec = spec(&dir, Duration::from_secs(5));
        let (mut running, _port) = launch(dir, spec, sh("exec sleep 30"), |_| async { true })
            .await
            .unwrap();
        let pid = running.pid().unwrap();
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        running.stop().await.unwrap();
        assert!(running.pid().is_none());
        assert!(path.exists(), "stop keeps the dir");
        drop(running);
        assert!(!path.exists());
    }
}
