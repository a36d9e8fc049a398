//! HTTP mode (being built): for now forwards like TCP mode.

use std::sync::Arc;

use tokio::net::TcpStream;

use super::Shared;

/// Serves one HTTP-mode connection.
pub(crate) async fn serve(shared: Arc<Shared>, conn: u64, client: TcpStream) {
    super::tcp::serve(shared, conn, client).await;
}
