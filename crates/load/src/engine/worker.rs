//! A worker thread: a single-threaded runtime running its share of the connections, each a
//! task, all recording into the thread's own sink.

use std::cell::{Cell, RefCell};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Request;
use tokio::task::JoinSet;
use tokio::time::{Instant as TokioInstant, Sleep};
use tokio_util::sync::CancellationToken;

use super::Live;
use super::conn::{Conn, Outcome, ReqBody, exchange};
use super::plan::{Model, Plan};
use super::schedule::Schedule;
use crate::config::Protocol;
use crate::sample::{ErrorClass, Sample, SampleSink};

/// Live counters are pushed to the shared atomics at most this often per thread.
const FLUSH_EVERY: Duration = Duration::from_millis(10);

/// An open-model connection task opens its connection this long before its first arrival.
const PRE_CONNECT: Duration = Duration::from_secs(1);

/// What every thread shares.
pub(crate) struct Shared {
    plan: Plan,
    start: Instant,
    stop: CancellationToken,
    live: Arc<Live>,
    /// Closed model: requests started (for the `iterations` cap).
    tickets: AtomicU64,
    /// Request numbers (to pick bodies) when there are several bodies.
    numbers: AtomicU64,
    /// Open model: the arrival schedule, taken in order.
    schedule: Option<Mutex<Schedule>>,
}

impl Shared {
    pub(crate) fn new(
        plan: Plan,
        start: Instant,
        stop: CancellationToken,
        live: Arc<Live>,
    ) -> Self {
        let schedule = match &plan.model {
            Model::Open {
                stages,
                arrivals,
                seed,
                ..
            } => Some(Mutex::new(
                Schedule::new(stages, *arrivals, *seed).with_phase(plan.phase),
            )),
            _ => None,
        };
        Shared {
            plan,
            start,
            stop,
            live,
            tickets: AtomicU64::new(0),
            numbers: AtomicU64::new(0),
            schedule,
        }
    }

    fn next_arrival(&self) -> Option<(u64, Duration)> {
        let schedule = self.schedule.as_ref()?;
        let mut guard = schedule.lock().unwrap_or_else(|e| e.into_inner());
        guard.next_arrival()
    }
}

/// A thread's counters not yet added to [`Live`].
#[derive(Default)]
struct Pending {
    sent: Cell<u64>,
    completed: Cell<u64>,
    errors: Cell<u64>,
    dropped: Cell<u64>,
}

/// One thread's state, shared by its connection tasks (never across threads).
struct Local<S> {
    shared: Arc<Shared>,
    sink: RefCell<S>,
    pending: Pending,
    last_flush: Cell<Instant>,
    /// Requests started and finished by this thread, for the abandoned count.
    started: Cell<u64>,
    finished: Cell<u64>,
}

impl<S: SampleSink> Local<S> {
    fn note_sent(&self, now: Instant) {
        self.started.set(self.started.get() + 1);
        self.pending.sent.set(self.pending.sent.get() + 1);
        self.maybe_flush(now);
    }

    fn record(&self, sample: &Sample, now: Instant) {
        self.sink.borrow_mut().record(sample);
        self.finished.set(self.finished.get() + 1);
        self.pending.completed.set(self.pending.completed.get() + 1);
        if sample.error.is_some() {
            self.pending.errors.set(self.pending.errors.get() + 1);
        }
        self.maybe_flush(now);
    }

    fn dropped(&self, intended: Duration, now: Instant) {
        self.sink.borrow_mut().dropped(intended);
        self.pending.dropped.set(self.pending.dropped.get() + 1);
        self.maybe_flush(now);
    }

    fn maybe_flush(&self, now: Instant) {
        if now.saturating_duration_since(self.last_flush.get()) >= FLUSH_EVERY {
            self.last_flush.set(now);
            self.flush();
        }
    }

    fn flush(&self) {
        let live = &self.shared.live;
        let sent = self.pending.sent.take();
        let completed = self.pending.completed.take();
        let errors = self.pending.errors.take();
        let dropped = self.pending.dropped.take();
        if sent > 0 {
            live.sent.fetch_add(sent, Ordering::Relaxed);
        }
        if completed > 0 {
            live.completed.fetch_add(completed, Ordering::Relaxed);
        }
        if errors > 0 {
            live.errors.fetch_add(errors, Ordering::Relaxed);
        }
        if dropped > 0 {
            live.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        let delta = sent as i64 - completed as i64;
        if delta != 0 {
            live.in_flight.fetch_add(delta, Ordering::Relaxed);
        }
    }

    fn body_number(&self) -> u64 {
        if self.shared.plan.bodies.len() > 1 {
            self.shared.numbers.fetch_add(1, Ordering::Relaxed)
        } else {
            0
        }
    }

    fn request(&self, number: u64) -> Request<ReqBody> {
        let plan = &self.shared.plan;
        let mut req = Request::new(ReqBody::new(plan.bodies.pick(number)));
        *req.method_mut() = plan.method.clone();
        *req.uri_mut() = plan.uri.clone();
        *req.headers_mut() = plan.headers.clone();
        req
    }

    /// Make sure `conn` holds a connection ready for a request, opening one if needed
    /// (bounded by the request timeout).
    async fn ensure_conn(&self, conn: &mut Option<Conn>) -> Result<(), ErrorClass> {
        let plan = &self.shared.plan;
        if let Some(c) = conn {
            // The usual case, ready at once: no timer.
            match c.ready_now().await {
                Some(true) => return Ok(()),
                Some(false) => *conn = None,
                None => {}
            }
        }
        let deadline = TokioInstant::from_std(later(Instant::now(), plan.timeout));
        if let Some(c) = conn {
            match tokio::time::timeout_at(deadline, c.ready()).await {
                Ok(true) => return Ok(()),
                _ => *conn = None,
            }
        }
        match tokio::time::timeout_at(deadline, Conn::connect(plan)).await {
            Ok(Ok(c)) => {
                *conn = Some(c);
                Ok(())
            }
            _ => Err(ErrorClass::Connect),
        }
    }

    /// Count a request as started and make sure `conn` holds a ready connection; a failed
    /// connect is recorded as the request's sample and gives `false`.
    async fn start_request(&self, conn: &mut Option<Conn>, intended: Option<Instant>) -> bool {
        let begin = Instant::now();
        self.note_sent(begin);
        let class = match self.ensure_conn(conn).await {
            Ok(()) if conn.is_some() => return true,
            Ok(()) => ErrorClass::Connect,
            Err(class) => class,
        };
        let end = Instant::now();
        let intended = intended.unwrap_or(begin);
        let mut s = Sample::new(
            intended.saturating_duration_since(self.shared.start),
            end.saturating_duration_since(intended),
            end.saturating_duration_since(begin),
        );
        s.error = Some(class);
        self.record(&s, end);
        false
    }

    /// Send request `number` on `c` now, read the whole answer within the request timeout
    /// (`timer` is reset to it) and record it; `intended` is when it was due (the open
    /// model) or `None` (the closed model: due when sent). Returns whether the connection
    /// can carry no further request.
    async fn exchange_and_record(
        &self,
        c: &mut Conn,
        mut timer: Pin<&mut Sleep>,
        number: u64,
        intended: Option<Instant>,
    ) -> bool {
        let plan = &self.shared.plan;
        let req = self.request(number);
        // Sent once the connection is ready (after a reconnect, like wrk).
        let sent = Instant::now();
        let intended = intended.unwrap_or(sent);
        let mut out = Outcome::default();
        timer
            .as_mut()
            .reset(TokioInstant::from_std(later(sent, plan.timeout)));
        let timed_out = tokio::select! {
            biased;
            _ = exchange(c, req, plan.stream.as_ref(), sent, &mut out) => false,
            _ = timer.as_mut() => true,
        };
        if timed_out {
            out.error = Some(ErrorClass::Timeout);
            out.broken = c.lost_with_request();
        }
        let end = Instant::now();
        let mut s = Sample::new(
            intended.saturating_duration_since(self.shared.start),
            end.saturating_duration_since(intended),
            end.saturating_duration_since(sent),
        );
        s.status = out.status;
        s.error = out.error;
        s.bytes = out.bytes;
        s.stream = out.stream;
        self.record(&s, end);
        out.broken
    }

    /// Send one request on the slot's connection (opening it if needed) and record it;
    /// `false` when no connection could be made (the request is recorded as `connect`).
    async fn send_one(&self, slot: &mut Slot, number: u64, intended: Option<Instant>) -> bool {
        if !self.start_request(&mut slot.conn, intended).await {
            return false;
        }
        let Some(c) = slot.conn.as_mut() else {
            return false;
        };
        // The slot's timer is reset rather than a new one made for each request.
        if self
            .exchange_and_record(c, slot.timer.as_mut(), number, intended)
            .await
        {
            slot.conn = None;
        }
        true
    }
}

/// After a failed connect a closed-model user waits before its next iteration: 10 ms, doubling
/// up to 1 s, back to none once a connection is made. Without it a user facing a refused port
/// loops as fast as the kernel refuses (tens of thousands of `connect` samples a second, a
/// core spent), which says nothing more than the first few did.
const CONNECT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// `t + d`, or a time far beyond any run (about 30 years) when that would overflow.
fn later(t: Instant, d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 3600);
    t.checked_add(d.min(FAR))
        .or_else(|| t.checked_add(FAR))
        .unwrap_or(t)
}

/// A connection task's connection and request timer.
struct Slot {
    conn: Option<Conn>,
    timer: Pin<Box<Sleep>>,
}

impl Slot {
    fn new() -> Self {
        Slot {
            conn: None,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }
    }
}

/// A closed-model user: send, read, think, until the duration, the iteration cap or a stop.
async fn closed_user<S: SampleSink>(local: Rc<Local<S>>) {
    let shared = local.shared.clone();
    let Model::Closed {
        duration,
        iterations,
        think_time,
        ..
    } = shared.plan.model
    else {
        return;
    };
    let deadline = later(shared.start, duration);
    let mut slot = Slot::new();
    let mut backoff = Duration::ZERO;
    loop {
        if Instant::now() >= deadline {
            break;
        }
        if let Some(cap) = iterations {
            if shared.tickets.fetch_add(1, Ordering::Relaxed) >= cap {
                break;
            }
        }
        let number = local.body_number();
        if local.send_one(&mut slot, number, None).await {
            backoff = Duration::ZERO;
        } else {
            backoff = (backoff * 2).clamp(CONNECT_BACKOFF.0, CONNECT_BACKOFF.1);
            let until = later(Instant::now(), backoff).min(deadline);
            tokio::time::sleep_until(TokioInstant::from_std(until)).await;
            continue;
        }
        if !think_time.is_zero() {
            let until = later(Instant::now(), think_time).min(deadline);
            tokio::time::sleep_until(TokioInstant::from_std(until)).await;
        }
    }
}

/// An open-model connection task: take the next arrival, wait for its time, send.
///
/// HTTP/1.1 carries one request at a time, so the task sends and waits for the answer before
/// taking the next arrival. HTTP/2 multiplexes: each request becomes a stream of the task's
/// connection, run as its own task, and the connection task goes on to the next arrival at
/// once (the server's stream limit queues streams in hyper; the wait counts in the latency).
async fn open_connection<S: SampleSink>(local: Rc<Local<S>>) {
    let shared = local.shared.clone();
    let Model::Open { max_lag, .. } = shared.plan.model else {
        return;
    };
    let multiplex = shared.plan.protocol == Protocol::Http2;
    let mut streams = JoinSet::new();
    let mut slot = Slot::new();
    while let Some((number, offset)) = shared.next_arrival() {
        while streams.try_join_next().is_some() {}
        let due = later(shared.start, offset);
        let now = Instant::now();
        if now.saturating_duration_since(due) > max_lag {
            local.dropped(offset, now);
            continue;
        }
        if slot.conn.is_none() && now < due {
            // Connect while waiting, shortly before the arrival (so a server's idle timeout
            // does not close it first); a failure is retried (and recorded) at send time.
            if let Some(at) = due.checked_sub(PRE_CONNECT) {
                if at > now {
                    tokio::time::sleep_until(TokioInstant::from_std(at)).await;
                }
            }
            let until = TokioInstant::from_std(due);
            let _ = tokio::time::timeout_at(until, local.ensure_conn(&mut slot.conn)).await;
        }
        tokio::time::sleep_until(TokioInstant::from_std(due)).await;
        if !multiplex {
            // A failed connect is this arrival's sample; the next arrival keeps its own time.
            let _ = local.send_one(&mut slot, number, Some(due)).await;
            continue;
        }
        if !local.start_request(&mut slot.conn, Some(due)).await {
            continue;
        }
        match slot.conn.as_mut() {
            Some(Conn::H2(sender)) => {
                let mut stream = Conn::H2(sender.clone());
                let local = local.clone();
                streams.spawn_local(async move {
                    let timer = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
                    local
                        .exchange_and_record(&mut stream, timer, number, Some(due))
                        .await;
                });
            }
            Some(c) => {
                let broken = local
                    .exchange_and_record(c, slot.timer.as_mut(), number, Some(due))
                    .await;
                if broken {
                    slot.conn = None;
                }
            }
            None => {}
        }
    }
    // The streams still in flight finish (each bounded by the request timeout).
    while streams.join_next().await.is_some() {}
}

/// The body of worker thread `index` of `threads`: returns its sink and the requests it
/// abandoned on a stop.
pub(crate) fn thread_main<S: SampleSink>(
    shared: Arc<Shared>,
    index: usize,
    threads: usize,
    sink: S,
) -> std::io::Result<(S, u64)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = Rc::new(Local {
        shared: shared.clone(),
        sink: RefCell::new(sink),
        pending: Pending::default(),
        last_flush: Cell::new(Instant::now()),
        started: Cell::new(0),
        finished: Cell::new(0),
    });
    // Connections i with i % threads == index run here.
    let total = shared.plan.model.connections();
    let mine = (index..total).step_by(threads.max(1)).count();
    let set = tokio::task::LocalSet::new();
    let stop = shared.stop.clone();
    set.block_on(&runtime, async {
        let mut tasks = JoinSet::new();
        for _ in 0..mine {
            let local = local.clone();
            let stop = stop.clone();
            tasks.spawn_local(async move {
                let work = async {
                    match local.shared.plan.model {
                        Model::Closed { .. } => closed_user(local.clone()).await,
                        _ => open_connection(local.clone()).await,
                    }
                };
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => {}
                    _ = work => {}
                }
            });
        }
        // Counts that wait in `pending` (less than FLUSH_EVERY after the last flush) reach
        // the live counters within 100 ms even when no further request finishes.
        let ticker = async {
            let mut every = tokio::time::interval(Duration::from_millis(100));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                local.flush();
            }
        };
        tokio::select! {
            _ = async { while tasks.join_next().await.is_some() {} } => {}
            _ = ticker => {}
        }
    });
    // Close every connection before handing the results back.
    drop(set);
    drop(runtime);
    local.flush();
    let abandoned = local.started.get().saturating_sub(local.finished.get());
    if abandoned > 0 {
        shared
            .live
            .in_flight
            .fetch_sub(abandoned as i64, Ordering::Relaxed);
    }
    match Rc::try_unwrap(local) {
        Ok(l) => Ok((l.sink.into_inner(), abandoned)),
        Err(_) => Err(std::io::Error::other("worker state still in use")),
    }
}
