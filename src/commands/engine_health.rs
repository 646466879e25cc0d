//! Reads a running engine's `/health` (PROTOCOL section 6) from the client
//! commands, to show its lag and to wait until it has caught up.

use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The engine's `/health` JSON at `addr` (`host:port` of `metrics_listen`),
/// whatever its status code; `None` when it cannot be reached. A plain
/// HTTP/1.0 exchange: this is the only HTTP the clients speak.
pub async fn fetch(addr: &str) -> Option<Value> {
    let exchange = async {
        let mut conn = tokio::net::TcpStream::connect(addr).await.ok()?;
        conn.write_all(b"GET /health HTTP/1.0\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut text = String::new();
        conn.read_to_string(&mut text).await.ok()?;
        serde_json::from_str(text.split_once("\r\n\r\n")?.1).ok()
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .ok()
        .flatten()
}
