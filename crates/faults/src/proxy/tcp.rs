//! TCP mode: copy bytes both ways, through the TCP faults drawn for the connection.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::fault::SplitMix;
use super::{ActiveFault, Direction, EventKind, Fault, Shared};

/// Read buffer of the plain copy.
const COPY_BUF: usize = 64 * 1024;
/// Read buffer of a faulty direction; chunks queued for latency are at most this big.
const FAULT_BUF: usize = 16 * 1024;
/// Chunks queued between reading and delayed writing (bounds memory to 32 × 16 KiB).
const QUEUE: usize = 32;
/// How long a reset connection waits for the client's first bytes before the RST.
const RESET_WAIT: Duration = Duration::from_secs(1);

/// What happens to one direction of a connection.
#[derive(Debug, Clone, Default)]
pub(crate) struct DirPlan {
    latency: Option<(Duration, Duration)>,
    bandwidth: Option<u64>,
    close_after: Option<u64>,
    slice: Option<(usize, Duration)>,
    seed: u64,
}

impl DirPlan {
    fn is_plain(&self) -> bool {
        self.latency.is_none()
            && self.bandwidth.is_none()
            && self.close_after.is_none()
            && self.slice.is_none()
    }
}

/// The TCP faults drawn for one connection.
#[derive(Debug, Clone, Default)]
pub(crate) struct Plan {
    pub(crate) reset: bool,
    pub(crate) blackhole: bool,
    up: DirPlan,
    down: DirPlan,
}

impl Plan {
    /// Draws the TCP faults for connection `conn` and logs each one hit.
    pub(crate) fn draw(shared: &Shared, conn: u64) -> Self {
        let faults = shared.draw(false);
        Self::from_faults(shared, conn, &faults)
    }

    pub(crate) fn is_plain(&self) -> bool {
        !self.reset && !self.blackhole && self.up.is_plain() && self.down.is_plain()
    }

    fn from_faults(shared: &Shared, conn: u64, faults: &[Arc<ActiveFault>]) -> Self {
        let mut plan = Plan::default();
        for f in faults {
            shared.record(
                conn,
                EventKind::Fault {
                    id: f.id,
                    what: f.spec.fault.describe(),
                },
            );
            match &f.spec.fault {
                Fault::Reset => plan.reset = true,
                Fault::Blackhole => plan.blackhole = true,
                Fault::Latency {
                    delay,
                    jitter,
                    direction,
                } => {
                    let d = plan.dir(*direction);
                    let (old_delay, old_jitter) = d.latency.unwrap_or_default();
                    d.latency = Some((
                        old_delay.saturating_add(*delay),
                        old_jitter.saturating_add(*jitter),
                    ));
                    d.seed = f.spec.seed ^ conn;
                }
                Fault::Bandwidth {
                    bytes_per_sec,
                    direction,
                } => {
                    let d = plan.dir(*direction);
                    d.bandwidth = Some(
                        d.bandwidth
                            .map_or(*bytes_per_sec, |b| b.min(*bytes_per_sec)),
                    );
                }
                Fault::CloseAfter { bytes, direction } => {
                    let d = plan.dir(*direction);
                    d.close_after = Some(d.close_after.map_or(*bytes, |b| b.min(*bytes)));
                }
                Fault::Slice {
                    size,
                    delay,
                    direction,
                } => plan.dir(*direction).slice = Some(((*size).max(1), *delay)),
                // HTTP faults are drawn per request, not here.
                _ => {}
            }
        }
        plan
    }

    fn dir(&mut self, d: Direction) -> &mut DirPlan {
        match d {
            Direction::Upstream => &mut self.up,
            Direction::Downstream => &mut self.down,
        }
    }
}

/// Serves one TCP-mode connection.
pub(crate) async fn serve(shared: Arc<Shared>, conn: u64, client: TcpStream) {
    let plan = Plan::draw(&shared, conn);
    let (up, down) = if plan.reset {
        reset(&shared, client).await
    } else if plan.blackhole {
        (blackhole(&shared, client).await, 0)
    } else {
        match shared.connect_upstream(conn).await {
            Some(upstream) => pipe(&shared, client, upstream, &plan).await,
            None => (0, 0),
        }
    };
    shared.record(
        conn,
        EventKind::Closed {
            up_bytes: up,
            down_bytes: down,
        },
    );
}

/// Waits (bounded) for the client's first bytes, then closes with an RST.
pub(crate) async fn reset(shared: &Shared, mut client: TcpStream) -> (u64, u64) {
    let mut buf = [0u8; 4096];
    let read = tokio::select! {
        r = tokio::time::timeout(RESET_WAIT, client.read(&mut buf)) => r,
        () = shared.cancel.cancelled() => Ok(Ok(0)),
    };
    let up = match read {
        Ok(Ok(n)) => n as u64,
        _ => 0,
    };
    if let Err(e) = client.set_zero_linger() {
        tracing::debug!(error = %e, "set SO_LINGER 0 failed");
    }
    drop(client);
    (up, 0)
}

/// Reads and discards until the client closes or the proxy stops; returns the bytes read.
pub(crate) async fn blackhole<S: AsyncRead + Unpin>(shared: &Shared, mut client: S) -> u64 {
    let mut buf = vec![0u8; FAULT_BUF];
    let mut total = 0u64;
    loop {
        let read = tokio::select! {
            r = client.read(&mut buf) => r,
            () = shared.cancel.cancelled() => break,
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => total = total.saturating_add(n as u64),
        }
    }
    total
}

/// Copies both ways through the plan until both directions end, either fails, a close-after
/// fires, or the proxy stops. Returns (bytes from the client, bytes to the client).
pub(crate) async fn pipe<C, U>(shared: &Shared, client: C, upstream: U, plan: &Plan) -> (u64, u64)
where
    C: AsyncRead + AsyncWrite + Send,
    U: AsyncRead + AsyncWrite + Send,
{
    let (cr, cw) = tokio::io::split(client);
    let (ur, uw) = tokio::io::split(upstream);
    let done = shared.cancel.child_token();
    let up_bytes = AtomicU64::new(0);
    let down_bytes = AtomicU64::new(0);
    let up = direction(cr, uw, &plan.up, &done, &up_bytes);
    let down = direction(ur, cw, &plan.down, &done, &down_bytes);
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        () = done.cancelled() => {}
    }
    (
        up_bytes.load(Ordering::Relaxed),
        down_bytes.load(Ordering::Relaxed),
    )
}

/// One direction; ends the whole connection (`done`) on an error or a close-after.
async fn direction<R, W>(
    r: R,
    mut w: W,
    plan: &DirPlan,
    done: &CancellationToken,
    count: &AtomicU64,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let result = if plan.is_plain() {
        plain_copy(r, &mut w, count).await
    } else {
        faulty_copy(r, &mut w, plan, count).await
    };
    match result {
        Ok(()) => {
            let _ = w.shutdown().await;
        }
        Err(_) => {
            let _ = w.flush().await;
            done.cancel();
        }
    }
}

async fn plain_copy<R, W>(mut r: R, w: &mut W, count: &AtomicU64) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        w.write_all(&buf[..n]).await?;
        w.flush().await?;
        count.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Per-direction writer state.
struct Writer<'a> {
    plan: &'a DirPlan,
    written: u64,
    next_slot: Option<Instant>,
    first_slice: bool,
}

impl Writer<'_> {
    /// Writes one chunk through bandwidth, slice and close-after; `Err` ends the connection.
    async fn write<W: AsyncWrite + Unpin>(
        &mut self,
        w: &mut W,
        chunk: &[u8],
        count: &AtomicU64,
    ) -> io::Result<()> {
        let mut data = chunk;
        let mut close = false;
        if let Some(limit) = self.plan.close_after {
            let left = limit.saturating_sub(self.written);
            if data.len() as u64 >= left {
                data = &data[..usize::try_from(left).unwrap_or(data.len()).min(data.len())];
                close = true;
            }
        }
        let mut piece = data.len().max(1);
        if let Some((size, _)) = self.plan.slice {
            piece = piece.min(size);
        }
        if let Some(rate) = self.plan.bandwidth {
            let per_tick = usize::try_from(rate / 20)
                .unwrap_or(usize::MAX)
                .clamp(1, FAULT_BUF);
            piece = piece.min(per_tick);
        }
        for part in data.chunks(piece) {
            if let Some((_, delay)) = self.plan.slice {
                if !self.first_slice && !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                self.first_slice = false;
            }
            if let Some(rate) = self.plan.bandwidth {
                let now = Instant::now();
                let slot = self.next_slot.map_or(now, |s| s.max(now));
                tokio::time::sleep_until(slot).await;
                let cost = Duration::from_secs_f64(part.len() as f64 / rate as f64);
                self.next_slot = Some(slot + cost);
            }
            w.write_all(part).await?;
            w.flush().await?;
            self.written = self.written.saturating_add(part.len() as u64);
            count.fetch_add(part.len() as u64, Ordering::Relaxed);
        }
        if close {
            return Err(io::Error::other("close-after limit reached"));
        }
        Ok(())
    }
}

async fn faulty_copy<R, W>(mut r: R, w: &mut W, plan: &DirPlan, count: &AtomicU64) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if plan.close_after == Some(0) {
        return Err(io::Error::other("close-after limit reached"));
    }
    let (tx, mut rx) = mpsc::channel::<(Instant, Bytes)>(QUEUE);
    let reader = async move {
        let mut buf = vec![0u8; FAULT_BUF];
        loop {
            let n = r.read(&mut buf).await?;
            if n == 0 {
                return Ok::<(), io::Error>(());
            }
            if tx
                .send((Instant::now(), Bytes::copy_from_slice(&buf[..n])))
                .await
                .is_err()
            {
                return Ok(());
            }
        }
    };
    let writer = async move {
        let mut rng = SplitMix::new(plan.seed);
        let mut state = Writer {
            plan,
            written: 0,
            next_slot: None,
            first_slice: true,
        };
        while let Some((read_at, chunk)) = rx.recv().await {
            if let Some((delay, jitter)) = plan.latency {
                let offset = jitter.mul_f64(rng.next_unit() * 2.0);
                let wait = delay.saturating_add(offset).saturating_sub(jitter);
                tokio::time::sleep_until(read_at + wait).await;
            }
            state.write(w, &chunk, count).await?;
        }
        Ok::<(), io::Error>(())
    };
    tokio::try_join!(reader, writer).map(|_| ())
}
