//! Prometheus metrics at `/metrics` and a health check at `/health`
//! (PROTOCOL.md section 6), on one small HTTP listener.
//!
//! The exporter is built without its own HTTP listener (which would bring a
//! TLS stack and panics on a taken port); this listener reports a taken port
//! as an ordinary error at start. Histograms get explicit buckets (otherwise
//! the exporter renders summaries) and the upkeep task runs (otherwise
//! histogram memory grows).

use crate::progress::Progress;
use anyhow::{Context, Result};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Latency buckets, seconds: 100 µs to 30 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// The process-wide recorder handle (a process has one global recorder).
static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the recorder once and returns its handle.
pub fn install() -> Result<PrometheusHandle> {
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .context("histogram buckets")?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).context("a metrics recorder is already installed")?;
    let _ = HANDLE.set(handle.clone());
    describe();
    Ok(handle)
}

/// Help texts, and zeros for every labelled series an operator expects.
fn describe() {
    use cashback_engine::reason::Reason;
    metrics::describe_counter!(
        "cashback_authorizations_total",
        "Authorizations by outcome: counted, reversal_applied, reversal_parked, rejected"
    );
    metrics::describe_counter!(
        "cashback_rejections_total",
        "Rejected authorizations by reason"
    );
    metrics::describe_histogram!(
        "cashback_apply_latency_seconds",
        metrics::Unit::Seconds,
        "From broker receive time to applied by the shards"
    );
    metrics::describe_gauge!(
        "cashback_stream_lag_messages",
        "Messages in the stream not yet applied"
    );
    metrics::describe_counter!(
        "cashback_enrollment_requests_total",
        "Enrollment requests by subject and outcome"
    );
    for r in Reason::ALL {
        metrics::counter!("cashback_rejections_total", "reason" => r.as_str()).absolute(0);
    }
    metrics::gauge!("cashback_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// Binds `listen` now (so a taken port is a clear error at start) and serves
/// `/metrics` and `/health` in the background.
pub async fn serve(
    listen: &str,
    handle: PrometheusHandle,
    progress: Arc<Progress>,
    max_lag: u64,
) -> Result<std::net::SocketAddr> {
    let listener = TcpListener::bind(listen).await.with_context(|| {
        format!("cannot listen on {listen} for /metrics (port taken? set metrics_listen or CASHBACK_METRICS_LISTEN)")
    })?;
    let addr = listener.local_addr()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                continue;
            };
            let (handle, progress) = (handle.clone(), progress.clone());
            tokio::spawn(async move {
                let _ = respond(conn, &handle, &progress, max_lag).await;
            });
        }
    });
    Ok(addr)
}

/// Whether the engine is connected, has replayed the log, and keeps up.
pub fn healthy(progress: &Progress, max_lag: u64) -> bool {
    progress.connected.load(Relaxed) && progress.replayed.load(Relaxed) && progress.lag() <= max_lag
}

async fn respond(
    mut conn: TcpStream,
    handle: &PrometheusHandle,
    progress: &Progress,
    max_lag: u64,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    // Read the request head; bodies are not expected.
    while len < buf.len() {
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf[len..]))
            .await
            .map_err(|_| std::io::ErrorKind::TimedOut)??;
        if n == 0 {
            break;
        }
        len += n;
        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let path = head.split_whitespace().nth(1).unwrap_or("/");
    let (status, ctype, body) = match path.split('?').next().unwrap_or("/") {
        "/metrics" => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            handle.render(),
        ),
        "/health" => {
            let body = format!(
                "{{\"connected\":{},\"replayed\":{},\"lag\":{},\"applied_seq\":{}}}\n",
                progress.connected.load(Relaxed),
                progress.replayed.load(Relaxed),
                progress.lag(),
                progress.applied_seq.load(Relaxed)
            );
            if healthy(progress, max_lag) {
                ("200 OK", "application/json", body)
            } else {
                ("503 Service Unavailable", "application/json", body)
            }
        }
        _ => (
            "404 Not Found",
            "text/plain",
            "see /metrics and /health\n".into(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(response.as_bytes()).await?;
    conn.shutdown().await
}
