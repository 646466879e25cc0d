//! The request-reply subjects as endpoints of NATS services (the NATS
//! services protocol), so that standard tooling finds and measures them:
//! `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS` list each service with its
//! endpoints, request and error counts and processing time (PROTOCOL.md
//! section 3, last paragraph). Subjects, bodies and the queue group are the
//! protocol's; the services protocol only adds the discovery subjects.

use super::context::ServiceContext;
use super::dispatch::answer;
use super::protocol::error_body;
use super::request::RequestKind;
use crate::nats::subjects::Subjects;
use anyhow::{anyhow, Result};
use async_nats::service::{self, Request, ServiceExt};
use async_nats::{HeaderMap, Subject};
use bytes::Bytes;
use cashback_actors::shard::MAX_QUERIES_IN_FLIGHT;
use cashback_engine::enrollment::EnrollKind;
use cashback_engine::item::ExclusionOp;
use cashback_engine::refusal::{ErrorCode, Refusal};
use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};

/// One NATS service: a name operators see and the subjects it answers.
#[derive(Debug)]
pub struct ServiceSpec {
    /// The service's name in `$SRV` (what `nats micro ls` lists).
    pub name: &'static str,
    /// One line for operators.
    pub description: &'static str,
    /// Its endpoints, one per subject.
    pub endpoints: &'static [RequestKind],
    /// Requests handled at once; beyond it the subscriptions buffer, so a
    /// burst cannot exhaust memory or the shards' mailboxes.
    pub concurrency: usize,
}

/// `cashback.enroll.*`: requests wait on the journal, not on the shards,
/// so many may be in flight.
pub const ENROLLMENT: ServiceSpec = ServiceSpec {
    name: "cashback-enrollment",
    description: "Cashback enrollment: citizens and cards (PROTOCOL.md section 2)",
    endpoints: &[
        RequestKind::Enroll(EnrollKind::Citizen),
        RequestKind::Enroll(EnrollKind::Card),
        RequestKind::Enroll(EnrollKind::CardRemove),
        RequestKind::Enroll(EnrollKind::CitizenRemove),
    ],
    concurrency: 4096,
};

/// `cashback.query.*`. Every shard may take `MAX_QUERIES_IN_FLIGHT`; this
/// bound keeps the shards' mailboxes from ever filling (see
/// `shard::MAILBOX_CAPACITY`).
pub const QUERY: ServiceSpec = ServiceSpec {
    name: "cashback-query",
    description: "Cashback queries: standings, statements, rankings, periods, payouts (PROTOCOL.md section 3)",
    endpoints: &[
        RequestKind::Citizen,
        RequestKind::Transactions,
        RequestKind::Leaderboard,
        RequestKind::Wallet,
        RequestKind::Periods,
        RequestKind::Awards,
    ],
    concurrency: MAX_QUERIES_IN_FLIGHT,
};

/// `cashback.admin.*`: operators' exclusions and reinstatements, journaled
/// and answered once decided; the bulk `cashback exclude` keeps a window of
/// them in flight.
pub const ADMIN: ServiceSpec = ServiceSpec {
    name: "cashback-admin",
    description:
        "Cashback operator controls: exclusions and reinstatements (PROTOCOL.md section 6)",
    endpoints: &[
        RequestKind::Admin(ExclusionOp::Exclude),
        RequestKind::Admin(ExclusionOp::Reinstate),
    ],
    concurrency: 1024,
};

/// Every service `cashback serve` runs, each with its own concurrency.
pub const SERVICES: [&ServiceSpec; 3] = [&ENROLLMENT, &QUERY, &ADMIN];

/// The queue group of every endpoint: each request is answered by one
/// engine process (PROTOCOL.md section 8), as before the services protocol.
pub const QUEUE_GROUP: &str = "cashback-engine";

/// Registers `spec` as a NATS service and answers its requests until
/// `shutdown`.
pub async fn serve(
    client: async_nats::Client,
    subjects: Subjects,
    spec: &'static ServiceSpec,
    ctx: ServiceContext,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let nats_service = client
        .service_builder()
        .description(spec.description)
        .queue_group(QUEUE_GROUP)
        .start(spec.name, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| anyhow!("cannot start the NATS service {}: {e}", spec.name))?;
    let mut endpoints = Vec::with_capacity(spec.endpoints.len());
    for &kind in spec.endpoints {
        let endpoint = nats_service
            .endpoint_builder()
            .name(kind.token())
            .add(kind.subject(&subjects))
            .await
            .map_err(|e| anyhow!("cannot add endpoint {}: {e}", kind.subject(&subjects)))?;
        endpoints.push(endpoint.map(move |request| (kind, request)));
    }
    let mut requests = futures::stream::select_all(endpoints);
    let limit = Arc::new(Semaphore::new(spec.concurrency));
    loop {
        let (kind, request) = tokio::select! {
            _ = shutdown.changed() => break,
            r = requests.next() => match r { Some(r) => r, None => break },
        };
        // Nobody to answer; an enrollment must then change nothing either.
        if request.message.reply.is_none() {
            continue;
        }
        // While every permit is taken, shutdown must still stop the loop.
        let permit = tokio::select! {
            _ = shutdown.changed() => break,
            p = limit.clone().acquire_owned() => p?,
        };
        let (client, ctx) = (client.clone(), ctx.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let answer = answer(&ctx, kind, &request.message.payload).await;
            // Recorded before the reply leaves: whoever has a reply finds
            // it in the metrics.
            record(
                kind,
                answer.as_ref().map(|_| ()).map_err(|r| r.code),
                started.elapsed(),
            );
            respond(&client, request, answer).await;
            drop(permit);
        });
    }
    // Stops answering $SRV requests too: the endpoints are already gone.
    let _ = nats_service.stop().await;
    Ok(())
}

/// Sends the reply. A refusal is counted as the endpoint's error in
/// `$SRV.STATS` and carries the services protocol's error headers, but its
/// body stays the protocol's `{"ok": false, "error": ...}`: the services
/// API's own error reply has an empty body, so it is given an empty reply
/// subject, which the client refuses before sending anything (async-nats
/// 0.51 checks it before every publish), and the protocol's reply is
/// published here. Counting first also means the stats include a request
/// before its requester can see the reply.
async fn respond(
    client: &async_nats::Client,
    mut request: Request,
    answer: Result<Bytes, Refusal>,
) {
    let refusal = match answer {
        Ok(body) => {
            let _ = request.respond(Ok(body)).await;
            return;
        }
        Err(refusal) => refusal,
    };
    let Some(reply) = request.message.reply.replace(Subject::from("")) else {
        return;
    };
    let code = service_error_code(refusal.code);
    let _ = request
        .respond(Err(service::error::Error {
            status: refusal.code.as_str().to_owned(),
            code,
        }))
        .await;
    let mut headers = HeaderMap::new();
    headers.insert(service::NATS_SERVICE_ERROR, refusal.code.as_str());
    headers.insert(service::NATS_SERVICE_ERROR_CODE, code.to_string().as_str());
    let _ = client
        .publish_with_headers(reply, headers, error_body(&refusal))
        .await;
}

/// The services protocol's numeric error code (HTTP-like, as its tools
/// expect) for a protocol error code: the client's fault (400), something
/// not found (404), a conflict with the state (409), or retry later (503).
fn service_error_code(code: ErrorCode) -> usize {
    match code {
        ErrorCode::BadRequest
        | ErrorCode::InvalidCitizenId
        | ErrorCode::InvalidIban
        | ErrorCode::InvalidHpan => 400,
        ErrorCode::UnknownCitizen
        | ErrorCode::UnknownCard
        | ErrorCode::UnknownAwardPeriod
        | ErrorCode::UnknownPayment => 404,
        ErrorCode::CitizenWithdrawn
        | ErrorCode::CardOwnedByOtherCitizen
        | ErrorCode::PeriodClosed => 409,
        ErrorCode::Unavailable => 503,
    }
}

/// The request's metrics (names and labels as in README "Metrics").
fn record(kind: RequestKind, outcome: Result<(), ErrorCode>, elapsed: Duration) {
    let seconds = elapsed.as_secs_f64();
    match kind {
        RequestKind::Enroll(enroll) => {
            let outcome = outcome.map_or_else(ErrorCode::as_str, |()| "ok");
            metrics::counter!("cashback_enrollment_requests_total",
                "subject" => enroll.token(), "outcome" => outcome)
            .increment(1);
            metrics::histogram!("cashback_enrollment_latency_seconds", "subject" => enroll.token())
                .record(seconds);
        }
        RequestKind::Admin(_) => {
            metrics::histogram!("cashback_admin_latency_seconds", "op" => kind.token())
                .record(seconds);
        }
        query => {
            metrics::histogram!("cashback_query_latency_seconds", "query" => query.token())
                .record(seconds);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subject_is_one_endpoint_of_one_service() {
        let subjects = Subjects::new("cashback");
        let mut all: Vec<String> = SERVICES
            .iter()
            .flat_map(|s| s.endpoints.iter().map(|k| k.subject(&subjects)))
            .collect();
        all.sort();
        let before = all.len();
        all.dedup();
        assert_eq!(all.len(), before, "a subject in two services");
        assert_eq!(
            all,
            [
                "cashback.admin.exclude",
                "cashback.admin.reinstate",
                "cashback.enroll.card",
                "cashback.enroll.card_remove",
                "cashback.enroll.citizen",
                "cashback.enroll.citizen_remove",
                "cashback.query.awards",
                "cashback.query.citizen",
                "cashback.query.leaderboard",
                "cashback.query.periods",
                "cashback.query.transactions",
                "cashback.query.wallet",
            ]
        );
    }
}
