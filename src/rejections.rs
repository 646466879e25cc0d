//! Publishing rejections to `cashback.rejected.<reason>` (PROTOCOL.md section 5).

use crate::nats::subjects::Subjects;
use crate::progress::Progress;
use bytes::Bytes;
use cashback_engine::reason::Rejection;
use serde::Serialize;
use serde_json::value::RawValue;
use std::sync::Arc;

/// The rejection payload.
#[derive(Serialize)]
struct Body<'a> {
    reason: &'static str,
    message: &'a str,
    subject: &'a str,
    seq: u64,
    /// The original JSON when it was JSON, else the bytes as a (lossy) string.
    payload: Payload<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Payload<'a> {
    Json(&'a RawValue),
    Text(String),
}

/// Publishes rejections and counts them.
#[derive(Clone)]
pub struct RejectionPublisher {
    /// Core NATS: rejections are notifications; operators de-duplicate by `seq`.
    client: async_nats::Client,
    /// Subject builder.
    subjects: Subjects,
    /// Counters.
    progress: Arc<Progress>,
}

impl RejectionPublisher {
    /// A publisher on `client`.
    pub fn new(client: async_nats::Client, subjects: Subjects, progress: Arc<Progress>) -> Self {
        RejectionPublisher {
            client,
            subjects,
            progress,
        }
    }

    /// Publishes and counts one rejection of message `seq`.
    pub async fn publish(&self, seq: u64, subject: &str, payload: &[u8], rejection: &Rejection) {
        self.progress.reject(rejection.reason);
        let text = std::str::from_utf8(payload).ok();
        let raw = text.and_then(|t| serde_json::from_str::<&RawValue>(t).ok());
        let body = Body {
            reason: rejection.reason.as_str(),
            message: &rejection.message,
            subject,
            seq,
            payload: match raw {
                Some(raw) => Payload::Json(raw),
                None => Payload::Text(String::from_utf8_lossy(payload).into_owned()),
            },
        };
        let bytes = Bytes::from(serde_json::to_vec(&body).expect("rejection serializes"));
        let to = self.subjects.rejected(rejection.reason.as_str());
        if let Err(e) = self.client.publish(to, bytes).await {
            tracing::warn!(seq, error = %e, "could not publish a rejection");
        }
    }
}
