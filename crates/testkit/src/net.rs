//! Network fixtures that need no binary: a listener that never answers and a closed port.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::error::{ErrorKind, TestkitError};
use crate::process::{self, LOCALHOST};

/// A TCP listener on 127.0.0.1 that accepts connections and never answers: it neither reads
/// nor writes, and keeps every connection open until it is dropped. A client that waits for a
/// reply hangs, which is what timeout checks need.
///
/// It runs as a task on the current tokio runtime.
#[derive(Debug)]
pub struct HangingListener {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl HangingListener {
    /// Binds a free port and starts accepting.
    pub async fn start() -> Result<Self, TestkitError> {
        let listener = TcpListener::bind((LOCALHOST, 0)).await.map_err(|e| {
            TestkitError::new(
                "start",
                "hanging listener",
                ErrorKind::io("bind 127.0.0.1:0", e),
            )
        })?;
        let addr = listener.local_addr().map_err(|e| {
            TestkitError::new(
                "start",
                "hanging listener",
                ErrorKind::io("read local address", e),
            )
        })?;
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _peer)) = listener.accept().await {
                held.push(stream);
            }
        });
        Ok(Self { addr, task })
    }

    /// The listening address (127.0.0.1:port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for HangingListener {
    fn drop(&mut self) {
        // Dropping the task's state closes the listener and every held connection.
        self.task.abort();
    }
}

/// A port on 127.0.0.1 where nothing listens: connections to it are refused.
///
/// The port was bound and released, so another process could take it later; that is unlikely
/// within one test.
pub fn closed_port() -> Result<u16, TestkitError> {
    process::free_port()
        .map_err(|e| TestkitError::new("find", "closed port", ErrorKind::io("bind 127.0.0.1:0", e)))
}
