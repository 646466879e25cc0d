//! The engine's NATS connection events: what `/health` and the metrics show
//! of the connection, and what is worth a warning.
//!
//! A connection lost while the engine runs is news for the operator (a
//! warning); the same event during an orderly stop is the stop itself. So
//! once shutdown begins, events are logged at info, and the engine closes
//! its connection (drain: unsubscribe, flush, close) before an embedded
//! nats-server goes, instead of leaving the client to find the server gone
//! and report I/O errors while it tries to reconnect.

use crate::progress::Progress;
use async_nats::Event;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Receives the connection's events; shared with the client's callback.
pub struct ConnectionEvents {
    /// Where the connection state is mirrored for `/health` and the metrics.
    progress: Arc<Progress>,
    /// Set once shutdown has begun: disconnects are expected from then on.
    stopping: AtomicBool,
    /// Becomes true when the client reports its connection closed, which
    /// [`ConnectionEvents::close`] waits for.
    closed: watch::Sender<bool>,
}

impl ConnectionEvents {
    /// Events that update `progress`.
    pub fn new(progress: Arc<Progress>) -> Arc<ConnectionEvents> {
        Arc::new(ConnectionEvents {
            progress,
            stopping: AtomicBool::new(false),
            closed: watch::channel(false).0,
        })
    }

    /// `options` with the callback that hands every event to these.
    pub fn install(
        self: &Arc<Self>,
        options: async_nats::ConnectOptions,
    ) -> async_nats::ConnectOptions {
        let events = self.clone();
        options.event_callback(move |event| {
            let events = events.clone();
            async move { events.handle(event) }
        })
    }

    /// Marks the start of an orderly shutdown.
    pub fn stopping(&self) {
        self.stopping.store(true, Relaxed);
    }

    /// Drains and closes `client`'s connection (every clone shares it) and
    /// waits up to `within` for the client to report it closed. Returns
    /// whether it did.
    pub async fn close(&self, client: &async_nats::Client, within: Duration) -> bool {
        self.stopping();
        let mut closed = self.closed.subscribe();
        if client.drain().await.is_err() {
            // The connection handler is gone already: nothing to close.
            return true;
        }
        tokio::time::timeout(within, closed.wait_for(|c| *c))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    fn handle(&self, event: Event) {
        let stopping = self.stopping.load(Relaxed);
        match &event {
            Event::Connected => self.progress.connected.store(true, Relaxed),
            Event::Disconnected | Event::Closed => self.progress.connected.store(false, Relaxed),
            _ => {}
        }
        if event == Event::Closed {
            self.closed.send_replace(true);
        }
        match event {
            // async-nats logs these itself, at info.
            Event::Connected | Event::Draining => {}
            Event::SlowConsumer(_) => tracing::warn!(event = %event, "nats"),
            _ if stopping => tracing::info!(event = %event, "nats (shutting down)"),
            Event::Disconnected => {
                tracing::warn!("lost the NATS connection; reconnecting")
            }
            other => tracing::warn!(event = %other, "nats"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_state_follows_the_events() {
        let events = ConnectionEvents::new(Arc::new(Progress::default()));
        events.handle(Event::Connected);
        assert!(events.progress.connected.load(Relaxed));
        events.handle(Event::Disconnected);
        assert!(!events.progress.connected.load(Relaxed));
        events.handle(Event::Connected);
        events.stopping();
        assert!(!*events.closed.borrow());
        events.handle(Event::Closed);
        assert!(!events.progress.connected.load(Relaxed));
        assert!(*events.closed.borrow());
    }
}
