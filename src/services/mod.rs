//! Request-reply services over core NATS: enrollment and queries. Requests
//! are idempotent and the requester retries on timeout, so core subscriptions
//! are fit here (unlike for authorizations, which go through JetStream).

pub mod admin;
pub mod awards;
pub mod enrollment;
pub mod query;
pub mod statement;

use serde_json::json;

/// `{"ok": false, "error": {"code", "message"}}`.
pub fn error_reply(code: &str, message: &str) -> bytes::Bytes {
    json!({"ok": false, "error": {"code": code, "message": message}})
        .to_string()
        .into()
}

/// `{"ok": true}`.
pub fn ok_reply() -> bytes::Bytes {
    bytes::Bytes::from_static(br#"{"ok":true}"#)
}
