//! Reads a running engine's `/health` and `/metrics` (PROTOCOL section 6)
//! from the client commands, the benchmarks and the tests: to show its
//! lag, to wait until it has caught up, and to read a metric.

use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One GET of `path` on `addr` (`host:port` of `metrics_listen`):
/// (status, body), or `None` when the engine cannot be reached within 5 s.
/// A plain HTTP/1.0 exchange: this is the only HTTP the clients speak.
pub async fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let exchange = async {
        let mut conn = tokio::net::TcpStream::connect(addr).await.ok()?;
        conn.write_all(format!("GET {path} HTTP/1.0\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut text = String::new();
        conn.read_to_string(&mut text).await.ok()?;
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, text.split_once("\r\n\r\n")?.1.to_owned()))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}

/// The engine's `/health` JSON at `addr`, whatever its status code.
pub async fn fetch(addr: &str) -> Option<Value> {
    serde_json::from_str(&get(addr, "/health").await?.1).ok()
}

/// The value of one series (`name{labels}` exactly as rendered) in a
/// Prometheus text exposition.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}
