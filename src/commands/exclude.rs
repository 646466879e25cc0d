//! `cashback exclude FILE.csv [--reinstate]`: excludes (or reinstates) many
//! payments at once, the way the 2021 clean-up removed thousands of split
//! purchases, but live (RULES.md "Operator exclusions", PROTOCOL.md
//! section 6).
//!
//! The file is CSV with this header row, exactly, then one payment per row:
//!
//! ```text
//! hpan,acquirer_code,acquirer_id,id_trx_acquirer,operation_type,trx_date,reason
//! ```
//!
//! The first six columns are the payment's de-duplication key, `trx_date`
//! exactly as the payment carried it; `reason` (1-255 characters) is kept in
//! the journal for audit. A field may be enclosed in double quotes (then it
//! may hold commas, and `""` is one quote); fields are taken as they are,
//! never trimmed; a record is one line (`\n` or `\r\n`); empty lines are
//! ignored. The whole file is read and checked before anything is sent: a
//! file without that header sends nothing, and a row that is not 7 fields or
//! fails the engine's own stateless checks (`admin::parse_request`) is
//! reported on stderr as `FILE:LINE` and skipped.
//!
//! Every request goes to `cashback.admin.exclude` (or `.reinstate`) with a
//! window of them in flight; an answer `unavailable` (or none) is retried a
//! few times, which is safe because requests are idempotent. A row the
//! engine refuses is reported as `FILE:LINE: <code>: <message>`. The exit
//! status is 0 unless the file cannot be read or a request gets no answer
//! at all; running the same file again is always safe.

use crate::nats::subjects::Subjects;
use crate::services::protocol::parse_outcome;
use crate::services::request::RequestKind;
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use cashback_engine::admin::{parse_request, ExclusionCommand};
use cashback_engine::item::ExclusionOp;
use cashback_engine::refusal::{ErrorCode, Refusal};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// The header row the file must start with: the request's fields in
/// PROTOCOL.md's order.
pub const HEADER: &str =
    "hpan,acquirer_code,acquirer_id,id_trx_acquirer,operation_type,trx_date,reason";

/// Requests in flight at once: enough to keep the journal busy, well under
/// the admin service's own concurrency (`endpoints::ADMIN`), so that a bulk
/// run leaves room for an operator's single requests.
const IN_FLIGHT: usize = 256;

/// How long one attempt waits for its answer: more than the engine's own
/// wait for the journal entry to be decided (10 s), after which it answers
/// `unavailable` itself.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Attempts per row while the answer is `unavailable` or missing, with a
/// delay from 250 ms doubling in between (about 8 s in all): rides out an
/// engine restart or a JetStream election, not an engine that is down.
const ATTEMPTS: u32 = 6;

/// One usable row: where it is in the file, and its request body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// 1-based line number, for `FILE:LINE`.
    pub line: usize,
    /// The request, as checked by `admin::parse_request`.
    pub body: Bytes,
}

/// A file read and checked, before anything is sent.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    /// Rows to send, in file order.
    pub rows: Vec<Row>,
    /// Rows that cannot be used: (line, why).
    pub unusable: Vec<(usize, String)>,
}

/// What a run did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Rows answered `{"ok": true}`: excluded (reinstated) now, or already
    /// so (the reply does not say which; `cashback_exclusions_total` does).
    pub ok: u64,
    /// Rows the engine refused, by error code (`unknown_payment`,
    /// `period_closed`, `bad_request`, `unavailable` after every retry).
    pub refused: BTreeMap<&'static str, u64>,
    /// Rows reported and skipped without being sent.
    pub skipped: u64,
}

impl Summary {
    /// Rows answered so far.
    fn answered(&self) -> u64 {
        self.ok + self.refused.values().sum::<u64>()
    }

    /// "12 ok, 2 unknown_payment, 1 skipped".
    fn describe(&self) -> String {
        let mut parts = vec![format!("{} ok", self.ok)];
        parts.extend(self.refused.iter().map(|(code, n)| format!("{n} {code}")));
        parts.push(format!("{} skipped", self.skipped));
        parts.join(", ")
    }
}

/// Splits one CSV record into its fields (see the module doc for the
/// dialect), or says what is wrong with it.
pub fn split_record(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => {
                        return Err(format!(
                            "field {} opens a quote that is never closed",
                            fields.len() + 1
                        ))
                    }
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(_) => {
                    return Err(format!(
                        "field {} has text after its closing quote",
                        fields.len() + 1
                    ))
                }
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => {
                        return Err(format!(
                            "field {} has a quote but does not start with one (quote the whole field, and double the quotes in it)",
                            fields.len() + 1
                        ))
                    }
                    Some(c) => field.push(c),
                }
            }
            fields.push(field);
        }
    }
}

/// Reads the file's text: its header, then every row as a request body or
/// the reason it cannot be used. `Err` when the header is not [`HEADER`]:
/// the columns would be misread, so nothing may be sent.
pub fn parse(text: &str) -> Result<Parsed, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .enumerate();
    let header = lines.next().map_or("", |(_, l)| l);
    if header != HEADER {
        return Err(format!(
            "1: the first line must be the header {HEADER} (found {header:?})"
        ));
    }
    let mut parsed = Parsed::default();
    for (i, line) in lines {
        if line.is_empty() {
            continue;
        }
        let n = i + 1;
        let fields = match split_record(line) {
            Ok(f) if f.len() == 7 => f,
            Ok(f) => {
                parsed.unusable.push((
                    n,
                    format!(
                        "expected 7 comma-separated fields ({HEADER}), found {}",
                        f.len()
                    ),
                ));
                continue;
            }
            Err(why) => {
                parsed.unusable.push((n, why));
                continue;
            }
        };
        let [hpan, acquirer_code, acquirer_id, id_trx_acquirer, operation_type, trx_date, reason]: [String; 7] =
            fields.try_into().expect("7 fields");
        let command = ExclusionCommand {
            hpan,
            acquirer_code,
            acquirer_id,
            id_trx_acquirer,
            operation_type,
            trx_date,
            reason,
        };
        let body = serde_json::to_vec(&command).expect("a command always serializes");
        match parse_request(&body) {
            Ok(_) => parsed.rows.push(Row {
                line: n,
                body: body.into(),
            }),
            Err(refusal) => parsed.unusable.push((n, refusal.message)),
        }
    }
    Ok(parsed)
}

/// Sends one request until it gets an answer other than `unavailable`, or
/// the attempts run out: then the last `unavailable` is its outcome, and a
/// request that was never answered at all is an error.
async fn send(
    client: &async_nats::Client,
    subject: &str,
    body: Bytes,
) -> Result<Result<(), Refusal>> {
    let mut delay = Duration::from_millis(250);
    let mut attempt = 1;
    loop {
        let last = attempt == ATTEMPTS;
        match client.request(subject.to_owned(), body.clone()).await {
            Ok(reply) => match parse_outcome(&reply.payload) {
                Err(r) if r.code == ErrorCode::Unavailable && !last => {}
                outcome => return Ok(outcome),
            },
            Err(e) if last => {
                bail!("no answer on {subject} after {ATTEMPTS} attempts (is the engine running?): {e}")
            }
            Err(_) => {}
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
        attempt += 1;
    }
}

/// Excludes (or reinstates, per `op`) every payment of `file`.
pub async fn run(url: &str, prefix: &str, file: &Path, op: ExclusionOp) -> Result<Summary> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let name = file.display().to_string();
    let parsed = parse(&text).map_err(|why| anyhow::anyhow!("{name}:{why}; nothing was sent"))?;
    let mut summary = Summary::default();
    for (line, why) in &parsed.unusable {
        eprintln!("{name}:{line}: skipped: {why}");
        summary.skipped += 1;
    }
    let client = crate::config::NatsClientOptions::from_env()?
        .connect(
            url,
            async_nats::ConnectOptions::new().request_timeout(Some(REQUEST_TIMEOUT)),
        )
        .await?;
    let subject = RequestKind::Admin(op).subject(&Subjects::new(prefix));
    let verb = match op {
        ExclusionOp::Exclude => "exclude",
        ExclusionOp::Reinstate => "reinstate",
    };
    let total = parsed.rows.len();
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut progress_shown = false;
    let mut answers = futures::stream::iter(parsed.rows)
        .map(|row| {
            let (client, subject) = (&client, subject.as_str());
            async move { (row.line, send(client, subject, row.body).await) }
        })
        .buffer_unordered(IN_FLIGHT);
    while let Some((line, answer)) = answers.next().await {
        let outcome = match answer {
            Ok(outcome) => outcome,
            Err(e) => {
                if progress_shown {
                    eprintln!();
                }
                eprintln!(
                    "{verb}: stopped after {} of {total} rows ({}); running the file again is safe",
                    summary.answered(),
                    summary.describe()
                );
                return Err(e.context(format!("{name}:{line}")));
            }
        };
        match outcome {
            Ok(()) => summary.ok += 1,
            Err(refusal) => {
                *summary.refused.entry(refusal.code.as_str()).or_default() += 1;
                if progress_shown {
                    eprintln!();
                    progress_shown = false;
                }
                eprintln!("{name}:{line}: {}: {}", refusal.code, refusal.message);
            }
        }
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            progress_shown = true;
            eprint!(
                "\r{verb}: {}/{total} rows answered ({}), {:.0}/s   ",
                summary.answered(),
                summary.describe(),
                summary.answered() as f64 / started.elapsed().as_secs_f64()
            );
            let _ = std::io::stderr().flush();
        }
    }
    if progress_shown {
        eprintln!();
    }
    eprintln!(
        "{verb}: {total} rows sent in {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        summary.describe()
    );
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn hpan() -> String {
        "ab".repeat(32)
    }

    fn row(reason: &str) -> String {
        format!(
            "{},32875,A1,T-1,00,2021-03-14T10:22:33+01:00,{reason}",
            hpan()
        )
    }

    #[test]
    fn records_split_on_commas_with_quoted_fields() {
        assert_eq!(split_record("a,b,,c").unwrap(), ["a", "b", "", "c"]);
        assert_eq!(split_record("").unwrap(), [""]);
        assert_eq!(
            split_record(r#"a,"b, with ""quotes""",c"#).unwrap(),
            ["a", r#"b, with "quotes""#, "c"]
        );
        assert_eq!(split_record(r#""",x"#).unwrap(), ["", "x"]);
        assert_eq!(
            split_record("a, b ").unwrap(),
            ["a", " b "],
            "never trimmed"
        );
        assert!(split_record(r#"a,"b"#)
            .unwrap_err()
            .contains("never closed"));
        assert!(split_record(r#"a,"b"c"#)
            .unwrap_err()
            .contains("after its closing quote"));
        assert!(split_record(r#"a,b"c"#)
            .unwrap_err()
            .contains("does not start with one"));
    }

    #[test]
    fn rows_become_the_protocols_requests() {
        let text = format!(
            "\u{feff}{HEADER}\r\n{}\r\n\n{}\n",
            row("split purchase"),
            row(r#""court order 12/2021, ""urgent""""#)
        );
        let parsed = parse(&text).unwrap();
        assert_eq!(parsed.unusable, []);
        assert_eq!(
            parsed.rows.iter().map(|r| r.line).collect::<Vec<_>>(),
            [2, 4]
        );
        let first: Value = serde_json::from_slice(&parsed.rows[0].body).unwrap();
        assert_eq!(
            first,
            json!({"hpan": hpan(), "acquirer_code": "32875", "acquirer_id": "A1",
                   "id_trx_acquirer": "T-1", "operation_type": "00",
                   "trx_date": "2021-03-14T10:22:33+01:00", "reason": "split purchase"})
        );
        let second: Value = serde_json::from_slice(&parsed.rows[1].body).unwrap();
        assert_eq!(second["reason"], json!(r#"court order 12/2021, "urgent""#));
    }

    #[test]
    fn unusable_rows_are_reported_by_line_and_the_rest_kept() {
        let text = [
            HEADER.to_owned(),
            row("ok"),
            "a,b,c".to_owned(),
            row("ok").replace(&hpan(), &hpan().to_uppercase()),
            row(""),
            row("ok").replace("2021-03-14T10:22:33+01:00", "2021-03-14 10:22:33"),
            row("too,many"),
            row(r#"bad"quote"#),
            row("ok").replace(",00,", ",0,"),
            row("last"),
        ]
        .join("\n");
        let parsed = parse(&text).unwrap();
        assert_eq!(
            parsed.rows.iter().map(|r| r.line).collect::<Vec<_>>(),
            [2, 10]
        );
        let lines: Vec<usize> = parsed.unusable.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, [3, 4, 5, 6, 7, 8, 9]);
        let why = |line| &parsed.unusable.iter().find(|(l, _)| *l == line).unwrap().1;
        assert!(why(3).contains("found 3"), "{}", why(3));
        assert!(why(4).contains("hpan"), "{}", why(4));
        assert!(why(5).contains("reason"), "{}", why(5));
        assert!(why(6).contains("trx_date"), "{}", why(6));
        assert!(why(7).contains("found 8"), "{}", why(7));
        assert!(why(8).contains("quote"), "{}", why(8));
        assert!(why(9).contains("operation_type"), "{}", why(9));
    }

    #[test]
    fn a_file_without_the_header_is_refused_whole() {
        for text in [
            String::new(),
            row("no header"),
            format!("{}\n{}", HEADER.replace("reason", "why"), row("x")),
            format!("{HEADER},extra\n{}", row("x")),
        ] {
            let e = parse(&text).unwrap_err();
            assert!(e.starts_with("1: the first line must be the header"), "{e}");
        }
        assert_eq!(parse(HEADER).unwrap(), Parsed::default());
    }

    #[test]
    fn the_summary_names_every_outcome() {
        let mut s = Summary {
            ok: 12,
            skipped: 1,
            ..Summary::default()
        };
        s.refused.insert("unknown_payment", 2);
        s.refused.insert("period_closed", 1);
        assert_eq!(s.answered(), 15);
        assert_eq!(
            s.describe(),
            "12 ok, 1 period_closed, 2 unknown_payment, 1 skipped"
        );
    }
}
