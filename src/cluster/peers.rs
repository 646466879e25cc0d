//! The national ranking, and everything else a request needs from every
//! node, asked of every node and merged.
//!
//! Each node ranks its own citizens exactly (`cashback_engine::rank`), so:
//! - a citizen's position is 1 + the sum over the nodes of their citizens
//!   that sort before the citizen's key; `total_participants` the sum of the
//!   nodes' counts, `max_transaction_number` their maximum, and the cut-off
//!   (`min_transaction_number`) the count at the winners' position in the
//!   summed per-count histograms;
//! - a leaderboard page starts at the key at the page's first position
//!   (found by bisection within its count, see [`Peers::key_at`]), and is
//!   the merge of the nodes' runs from that key.
//!
//! Positions pushed to the app are asked for in batches (one question per
//! node per push round, whatever the number of pushes), and the histograms
//! a citizen query needs for the cut-off are kept for [`CUTOFF_TTL`]: the
//! cut-off is the same for every citizen and moves slowly.

use super::wire::{
    AtAsk, BeforeAnswer, BeforeAsk, Found, HistogramAsk, Key, LinesAsk, LookupAsk, PageAsk,
    ProgressAnswer,
};
use crate::nats::subjects::Subjects;
use crate::progress::Progress;
use actix::Addr;
use cashback_actors::ranking::{
    AtInBucket, CountBefore, Histogram, Page, PageEntry, PageFrom, RankingAggregator,
};
use cashback_actors::{CitizenShard, Lookup, LookupMany, StatementOf};
use cashback_engine::directory::CitizenIdx;
use cashback_engine::ledger::StatementLine;
use cashback_engine::partition::Ownership;
use cashback_engine::period::PeriodIdx;
use cashback_engine::query::RankFields;
use cashback_engine::rank::RankKey;
use cashback_engine::refusal::{ErrorCode, Refusal};
use futures::future::join_all;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a node waits for another node's answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the summed histograms serve the cut-off of citizen queries.
pub const CUTOFF_TTL: Duration = Duration::from_millis(250);

/// A count and how many ranked citizens have it, highest first.
type Histogram_ = Vec<(u32, u64)>;

/// Every node of the cluster, this one included.
#[derive(Clone)]
pub struct Peers {
    /// For asking the other nodes.
    client: async_nats::Client,
    /// Subject names.
    subjects: Subjects,
    /// This node and how many there are.
    ownership: Ownership,
    /// This node's ranking.
    ranking: Addr<RankingAggregator>,
    /// This node's shards.
    shards: Vec<Addr<CitizenShard>>,
    /// This node's progress.
    progress: Arc<Progress>,
    /// Summed histograms per period, with when they were asked for.
    histograms: Arc<Mutex<HashMap<PeriodIdx, (Instant, Histogram_)>>>,
}

fn unavailable(what: impl std::fmt::Display) -> Refusal {
    Refusal::new(
        ErrorCode::Unavailable,
        format!("a node of the cluster did not answer ({what}); retry"),
    )
}

impl Peers {
    /// The cluster as this node sees it.
    pub fn new(
        client: async_nats::Client,
        subjects: Subjects,
        ownership: Ownership,
        ranking: Addr<RankingAggregator>,
        shards: Vec<Addr<CitizenShard>>,
        progress: Arc<Progress>,
    ) -> Peers {
        Peers {
            client,
            subjects,
            ownership,
            ranking,
            shards,
            progress,
            histograms: Default::default(),
        }
    }

    /// Which partitions are whose.
    pub fn ownership(&self) -> Ownership {
        self.ownership
    }

    /// Whether there is more than this node.
    pub fn clustered(&self) -> bool {
        self.ownership.nodes > 1
    }

    /// The other nodes.
    fn others(&self) -> impl Iterator<Item = u16> + '_ {
        (0..self.ownership.nodes).filter(move |n| *n != self.ownership.node)
    }

    /// Asks node `node` `op` (another node, over NATS).
    pub async fn ask<A: Serialize, R: DeserializeOwned>(
        &self,
        node: u16,
        op: &str,
        ask: &A,
    ) -> Result<R, Refusal> {
        let body = serde_json::to_vec(ask).expect("questions serialize");
        let answer = tokio::time::timeout(
            ASK_TIMEOUT,
            self.client
                .request(self.subjects.node(node, op), body.into()),
        )
        .await
        .map_err(|_| unavailable(format!("node {node}, {op}: timeout")))?
        .map_err(|e| unavailable(format!("node {node}, {op}: {e}")))?;
        serde_json::from_slice(&answer.payload)
            .map_err(|e| unavailable(format!("node {node}, {op}: {e}")))
    }

    /// Forwards a public request to the node owning its citizen, and
    /// returns that node's reply as it is.
    pub async fn forward(
        &self,
        node: u16,
        kind: &str,
        body: &[u8],
    ) -> Result<bytes::Bytes, Refusal> {
        let subject = self.subjects.node(node, &format!("query.{kind}"));
        let answer = tokio::time::timeout(
            ASK_TIMEOUT,
            self.client
                .request(subject, bytes::Bytes::copy_from_slice(body)),
        )
        .await
        .map_err(|_| unavailable(format!("node {node}: timeout")))?
        .map_err(|e| unavailable(format!("node {node}: {e}")))?;
        Ok(answer.payload)
    }

    /// Each node's count of citizens before each key, with its size and
    /// highest count: this node's first.
    async fn before(
        &self,
        period: PeriodIdx,
        keys: &[RankKey],
    ) -> Result<Vec<BeforeAnswer>, Refusal> {
        let local = self.ranking.send(CountBefore {
            period,
            keys: keys.to_vec(),
        });
        let ask = BeforeAsk {
            period,
            keys: keys.iter().map(Key::from).collect(),
        };
        let remote = join_all(
            self.others()
                .map(|n| self.ask::<_, BeforeAnswer>(n, "before", &ask)),
        );
        let (local, remote) = futures::join!(local, remote);
        let local = local.map_err(|_| unavailable("the ranking is restarting"))?;
        let mut out = vec![BeforeAnswer {
            before: local.before,
            len: local.len,
            max: local.max,
        }];
        for r in remote {
            out.push(r?);
        }
        Ok(out)
    }

    /// Each node's histogram of `period`: this node's first.
    async fn node_histograms(&self, period: PeriodIdx) -> Result<Vec<Histogram_>, Refusal> {
        let local = self.ranking.send(Histogram(period));
        let ask = HistogramAsk { period };
        let remote = join_all(
            self.others()
                .map(|n| self.ask::<_, Histogram_>(n, "histogram", &ask)),
        );
        let (local, remote) = futures::join!(local, remote);
        let mut out = vec![local.map_err(|_| unavailable("the ranking is restarting"))?];
        for r in remote {
            out.push(r?);
        }
        Ok(out)
    }

    /// The summed histogram, at most [`CUTOFF_TTL`] old.
    async fn summed(&self, period: PeriodIdx) -> Result<Histogram_, Refusal> {
        if let Some((at, h)) = self.histograms.lock().expect("not poisoned").get(&period) {
            if at.elapsed() < CUTOFF_TTL {
                return Ok(h.clone());
            }
        }
        let h = sum(&self.node_histograms(period).await?);
        self.histograms
            .lock()
            .expect("not poisoned")
            .insert(period, (Instant::now(), h.clone()));
        Ok(h)
    }

    /// The national ranking fields of these keys (count 0: not ranked).
    pub async fn fields(
        &self,
        period: PeriodIdx,
        keys: &[RankKey],
        winners: u64,
    ) -> Result<Vec<RankFields>, Refusal> {
        let answers = self.before(period, keys).await?;
        let total: u64 = answers.iter().map(|a| a.len).sum();
        let max = answers.iter().map(|a| a.max).max().unwrap_or(0);
        let min = if winners == 0 || total == 0 {
            0
        } else {
            count_at(&self.summed(period).await?, winners.min(total))
        };
        Ok(keys
            .iter()
            .enumerate()
            .map(|(i, k)| RankFields {
                ranking: (k.count > 0)
                    .then(|| 1 + answers.iter().map(|a| a.before[i]).sum::<u64>()),
                total_participants: total,
                max_transaction_number: max,
                min_transaction_number: min,
            })
            .collect())
    }

    /// Each node's run of ranked citizens from `from`: this node's first.
    async fn runs(
        &self,
        period: PeriodIdx,
        from: Option<&RankKey>,
        limit: usize,
    ) -> Result<Vec<Vec<(CitizenIdx, RankKey)>>, Refusal> {
        let local = self.ranking.send(PageFrom {
            period,
            from: from.cloned(),
            limit,
        });
        let ask = PageAsk {
            period,
            from: from.map(Key::from),
            limit,
        };
        let remote = join_all(
            self.others()
                .map(|n| self.ask::<_, Vec<(CitizenIdx, Key)>>(n, "page", &ask)),
        );
        let (local, remote) = futures::join!(local, remote);
        let mut out = vec![local.map_err(|_| unavailable("the ranking is restarting"))?];
        for r in remote {
            out.push(r?.into_iter().map(|(c, k)| (c, k.into())).collect());
        }
        Ok(out)
    }

    /// Node `node`'s `index`-th citizen with `count` payments.
    async fn at(
        &self,
        node: u16,
        period: PeriodIdx,
        count: u32,
        index: u64,
    ) -> Result<RankKey, Refusal> {
        let key = if node == self.ownership.node {
            self.ranking
                .send(AtInBucket {
                    period,
                    count,
                    index,
                })
                .await
                .map_err(|_| unavailable("the ranking is restarting"))?
        } else {
            self.ask::<_, Option<Key>>(
                node,
                "at",
                &AtAsk {
                    period,
                    count,
                    index,
                },
            )
            .await?
            .map(Into::into)
        };
        key.ok_or_else(|| unavailable("the ranking moved while a page was read"))
    }

    /// The key at national position `position` (0-based), given each
    /// node's histogram (this node's first): the histograms name its count
    /// and its place among everyone's citizens with that count; a bisection
    /// over the nodes' entries of that count finds it, each candidate
    /// placed among all nodes with one `before` question.
    async fn key_at(
        &self,
        period: PeriodIdx,
        histograms: &[Histogram_],
        position: u64,
    ) -> Result<RankKey, Refusal> {
        let summed = sum(histograms);
        let (count, rank) = locate(&summed, position)
            .ok_or_else(|| unavailable("the ranking moved while a page was read"))?;
        let above =
            |h: &Histogram_| -> u64 { h.iter().filter(|(c, _)| *c > count).map(|(_, n)| n).sum() };
        let above: Vec<u64> = histograms.iter().map(above).collect();
        let mut lo = vec![0u64; histograms.len()];
        let mut hi: Vec<u64> = histograms
            .iter()
            .map(|h| h.iter().find(|(c, _)| *c == count).map_or(0, |(_, n)| *n))
            .collect();
        // Node indexes: 0 is this node, then the others in order.
        let nodes: Vec<u16> = std::iter::once(self.ownership.node)
            .chain(self.others())
            .collect();
        loop {
            let (j, width) = (0..nodes.len())
                .map(|i| (i, hi[i].saturating_sub(lo[i])))
                .max_by_key(|(_, w)| *w)
                .expect("at least one node");
            if width == 0 {
                return Err(unavailable("the ranking moved while a page was read"));
            }
            let mid = lo[j] + width / 2;
            let candidate = self.at(nodes[j], period, count, mid).await?;
            let answers = self
                .before(period, std::slice::from_ref(&candidate))
                .await?;
            let within: Vec<u64> = answers
                .iter()
                .zip(&above)
                .map(|(a, above)| a.before[0].saturating_sub(*above))
                .collect();
            let place: u64 = within.iter().sum();
            match place.cmp(&rank) {
                Ordering::Equal => return Ok(candidate),
                Ordering::Less => {
                    for i in 0..nodes.len() {
                        let floor = within[i] + (i == j) as u64;
                        lo[i] = lo[i].max(floor);
                    }
                }
                Ordering::Greater => {
                    for i in 0..nodes.len() {
                        hi[i] = hi[i].min(within[i]);
                    }
                }
            }
        }
    }

    /// A page of the national ranking.
    pub async fn page(
        &self,
        period: PeriodIdx,
        offset: u64,
        limit: usize,
        winners: u64,
    ) -> Result<Page, Refusal> {
        let histograms = self.node_histograms(period).await?;
        let summed = sum(&histograms);
        let total: u64 = summed.iter().map(|(_, n)| n).sum();
        let max = summed.first().map_or(0, |(c, _)| *c);
        let min = if winners == 0 || total == 0 {
            0
        } else {
            count_at(&summed, winners.min(total))
        };
        let mut page = Page {
            total_participants: total,
            max_transaction_number: max,
            min_transaction_number: min,
            entries: Vec::new(),
        };
        if offset >= total || limit == 0 {
            return Ok(page);
        }
        let from = match offset {
            0 => None,
            _ => Some(self.key_at(period, &histograms, offset).await?),
        };
        let mut merged: Vec<(CitizenIdx, RankKey)> = self
            .runs(period, from.as_ref(), limit)
            .await?
            .into_iter()
            .flatten()
            .collect();
        merged.sort_by(|a, b| a.1.rank_cmp(&b.1));
        page.entries = merged
            .into_iter()
            .take(limit)
            .enumerate()
            .map(|(i, (citizen, key))| PageEntry {
                ranking: offset + 1 + i as u64,
                citizen,
                citizen_id: key.citizen_id,
                transaction_count: key.count,
                last_trx: key.last_trx,
            })
            .collect();
        Ok(page)
    }

    /// A citizen's statement lines on every node.
    pub async fn lines(
        &self,
        citizen: CitizenIdx,
        period: PeriodIdx,
    ) -> Result<Vec<StatementLine>, Refusal> {
        let local = local_lines(&self.shards, citizen, period);
        let ask = LinesAsk { citizen, period };
        let remote = join_all(
            self.others()
                .map(|n| self.ask::<_, Vec<StatementLine>>(n, "lines", &ask)),
        );
        let (local, remote) = futures::join!(local, remote);
        let mut out = local?;
        for r in remote {
            out.extend(r?);
        }
        Ok(out)
    }

    /// The IBAN and standing of each citizen (partition, number), each
    /// asked of its node.
    pub async fn lookup(
        &self,
        period: PeriodIdx,
        citizens: &[(u16, CitizenIdx)],
    ) -> Result<Vec<Option<Found>>, Refusal> {
        let mut by_node: HashMap<u16, Vec<usize>> = HashMap::new();
        for (i, (p, _)) in citizens.iter().enumerate() {
            by_node.entry(self.ownership.owner(*p)).or_default().push(i);
        }
        let mut out: Vec<Option<Found>> = (0..citizens.len()).map(|_| None).collect();
        for (node, indexes) in by_node {
            let asked: Vec<(u16, CitizenIdx)> = indexes.iter().map(|&i| citizens[i]).collect();
            let found = if node == self.ownership.node {
                local_lookup(&self.shards, self.ownership, period, &asked).await?
            } else {
                self.ask(
                    node,
                    "lookup",
                    &LookupAsk {
                        period,
                        citizens: asked,
                    },
                )
                .await?
            };
            for (i, f) in indexes.into_iter().zip(found) {
                out[i] = f;
            }
        }
        Ok(out)
    }

    /// Whether every node replayed what it found and has nothing left to
    /// apply.
    pub async fn all_caught_up(&self) -> bool {
        let local = self.progress.replayed.load(Relaxed) && self.progress.lag() == 0;
        let remote = join_all(
            self.others()
                .map(|n| self.ask::<_, ProgressAnswer>(n, "progress", &())),
        )
        .await;
        local
            && remote
                .into_iter()
                .all(|r| r.is_ok_and(|p| p.replayed && p.lag == 0))
    }
}

/// The statement lines of a citizen in these shards.
pub async fn local_lines(
    shards: &[Addr<CitizenShard>],
    citizen: CitizenIdx,
    period: PeriodIdx,
) -> Result<Vec<StatementLine>, Refusal> {
    let mut lines = Vec::new();
    for shard in shards {
        let mut part = shard
            .send(StatementOf { citizen, period })
            .await
            .map_err(|_| unavailable("a shard is restarting"))?;
        lines.append(&mut part);
    }
    Ok(lines)
}

/// The IBAN and standing of citizens of this node.
pub async fn local_lookup(
    shards: &[Addr<CitizenShard>],
    ownership: Ownership,
    period: PeriodIdx,
    citizens: &[(u16, CitizenIdx)],
) -> Result<Vec<Option<Found>>, Refusal> {
    let mut by_shard: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, (p, _)) in citizens.iter().enumerate() {
        by_shard
            .entry(ownership.shard_of(*p, shards.len()))
            .or_default()
            .push(i);
    }
    let mut out: Vec<Option<Found>> = (0..citizens.len()).map(|_| None).collect();
    for (shard, indexes) in by_shard {
        let asked = indexes
            .iter()
            .map(|&i| (citizens[i].0, citizens[i].1, period))
            .collect();
        let answers = shards[shard]
            .send(LookupMany { citizens: asked })
            .await
            .map_err(|_| unavailable("a shard is restarting"))?;
        for (i, answer) in indexes.into_iter().zip(answers) {
            out[i] = match answer {
                Lookup::Found(facts, standing) => Some(Found {
                    iban: facts.iban,
                    count: standing.count,
                    cashback: standing.cashback,
                }),
                Lookup::Unknown => None,
            };
        }
    }
    Ok(out)
}

/// Histograms summed, highest count first.
fn sum(histograms: &[Histogram_]) -> Histogram_ {
    let mut total: std::collections::BTreeMap<u32, u64> = Default::default();
    for h in histograms {
        for (c, n) in h {
            *total.entry(*c).or_default() += n;
        }
    }
    total.into_iter().rev().collect()
}

/// The count at 1-based national `position`.
fn count_at(summed: &Histogram_, position: u64) -> u32 {
    locate(summed, position.saturating_sub(1)).map_or(0, |(c, _)| c)
}

/// The count of the 0-based national `position` and its place among the
/// citizens with that count.
fn locate(summed: &Histogram_, position: u64) -> Option<(u32, u64)> {
    let mut before = 0;
    for (count, n) in summed {
        if position < before + n {
            return Some((*count, position - before));
        }
        before += n;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summed_histograms_place_positions() {
        let a = vec![(5, 2), (3, 1)];
        let b = vec![(7, 1), (3, 4), (1, 1)];
        let s = sum(&[a, b]);
        assert_eq!(s, vec![(7, 1), (5, 2), (3, 5), (1, 1)]);
        assert_eq!(count_at(&s, 1), 7);
        assert_eq!(count_at(&s, 3), 5);
        assert_eq!(count_at(&s, 4), 3);
        assert_eq!(count_at(&s, 9), 1);
        assert_eq!(locate(&s, 5), Some((3, 2)));
        assert_eq!(locate(&s, 9), None);
    }
}
