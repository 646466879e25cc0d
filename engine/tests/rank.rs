//! Property tests of the Supercashback rank index against a naive model: a
//! `HashMap` of citizens sorted from scratch into a `Vec` whenever it is asked.
//!
//! Sequences mix what the engine does to the index: first keys, payments
//! (count up, `last_trx` possibly older than the one before: out of order),
//! reversals (count down, possibly to 0), withdrawals, re-enrollments. Times,
//! T&C dates and counts come from tiny domains so that ties on every field of
//! the order are the rule, and citizen ids compare in an order unrelated to
//! the citizen indices. Tiny node capacities make the trees deep so every
//! split, merge and redistribution path runs; the real capacities run too.

use cashback_engine::rank::{RankIndexWith, RankKey};
use cashback_engine::time::Timestamp;
use proptest::prelude::*;
use proptest::test_runner::Config;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// One thing that can happen to a citizen of the period.
#[derive(Clone, Debug)]
enum Op {
    /// A whole new key (enrollment with a count, a T&C change, a replay).
    Set {
        citizen: u32,
        count: u32,
        last: u8,
        tc: u8,
    },
    /// A payment: count + 1, `last_trx` set to `last` (earlier or later).
    Pay { citizen: u32, last: u8 },
    /// A reversal to zero of one payment: count - 1, `last_trx` unchanged.
    Reverse { citizen: u32 },
    /// Withdrawal: the citizen is forgotten.
    Withdraw { citizen: u32 },
    /// Compare everything with the model now.
    Check,
}

/// The instants used: a handful, so ties are frequent; 200..=202 lie outside
/// the range the index squeezes into 64 bits, which must not change the order.
fn instant(code: u8) -> Timestamp {
    const BASE: i128 = 1_609_459_200 * 1_000_000_000;
    const YEAR: i128 = 365 * 86_400 * 1_000_000_000;
    match code {
        200 => Timestamp::from_unix_nanos(BASE + 300 * YEAR),
        201 => Timestamp::from_unix_nanos(BASE + 300 * YEAR + 1),
        202 => Timestamp::from_unix_nanos(BASE - 400 * YEAR),
        c => Timestamp::from_unix_nanos(BASE + c as i128 * 500_000_000),
    }
}

/// A time code: mostly a few half-seconds, sometimes an extreme instant.
fn time_code() -> impl Strategy<Value = u8> {
    prop_oneof![8 => 0u8..5, 1 => 200u8..=202]
}

/// A count for `Set`: mostly tiny (ties), sometimes past the index's initial
/// capacity (16), which must grow.
fn set_count() -> impl Strategy<Value = u32> {
    prop_oneof![10 => 0u32..4, 1 => Just(16u32), 1 => Just(17u32), 1 => 30u32..70]
}

fn op(citizens: u32) -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..citizens, set_count(), time_code(), 0u8..3)
            .prop_map(|(citizen, count, last, tc)| Op::Set { citizen, count, last, tc }),
        5 => (0..citizens, time_code()).prop_map(|(citizen, last)| Op::Pay { citizen, last }),
        3 => (0..citizens).prop_map(|citizen| Op::Reverse { citizen }),
        1 => (0..citizens).prop_map(|citizen| Op::Withdraw { citizen }),
        1 => Just(Op::Check),
    ]
}

/// Citizen ids: a shuffled `0..n` in decimal, so "10" < "9" and "1" is a
/// prefix of "10": unrelated to the index order, byte-wise compared.
fn ids(n: u32) -> impl Strategy<Value = Vec<Arc<str>>> {
    Just((0..n).collect::<Vec<u32>>())
        .prop_shuffle()
        .prop_map(|perm| perm.iter().map(|p| Arc::from(p.to_string())).collect())
}

/// The naive model: every known citizen's key.
struct Model {
    /// Known citizens (count 0: known, not ranked).
    keys: HashMap<u32, RankKey>,
}

/// The ranking order of two keys, written out independently of the index:
/// count descending, then last_trx, tc, id (bytes) ascending.
fn order(a: &RankKey, b: &RankKey) -> Ordering {
    b.count
        .cmp(&a.count)
        .then(a.last_trx.cmp(&b.last_trx))
        .then(a.tc_accepted_at.cmp(&b.tc_accepted_at))
        .then(a.citizen_id.as_bytes().cmp(b.citizen_id.as_bytes()))
}

impl Model {
    /// The ranking from scratch by [`order`], the citizen index last.
    fn ranking(&self) -> Vec<(u32, RankKey)> {
        let mut ranked: Vec<(u32, RankKey)> = self
            .keys
            .iter()
            .filter(|(_, k)| k.count > 0)
            .map(|(c, k)| (*c, k.clone()))
            .collect();
        ranked.sort_by(|(ca, a), (cb, b)| order(a, b).then(ca.cmp(cb)));
        ranked
    }
}

/// `(count, citizens)` of a ranking, highest count first.
fn histogram(ranking: &[(u32, RankKey)]) -> Vec<(u32, u64)> {
    let mut out: Vec<(u32, u64)> = Vec::new();
    for (_, key) in ranking {
        match out.last_mut() {
            Some((count, n)) if *count == key.count => *n += 1,
            _ => out.push((key.count, 1)),
        }
    }
    out
}

/// How many entries of `ranking` sort strictly before `key`.
fn before(ranking: &[(u32, RankKey)], key: &RankKey) -> usize {
    ranking.partition_point(|(_, k)| order(k, key) == Ordering::Less)
}

/// Keys to place with `count_before` and `page_from`: ranked keys (about
/// 64 of them in big populations), each also with its id extended by "0",
/// which sorts right after it and is sometimes another citizen's id (so
/// sometimes another entry's exact key); and keys of nobody from the tiny
/// domains, counts from 0 (not ranked) to beyond every bucket, ids sorting
/// first, in the middle (one some citizen has) and last.
fn probe_keys(ranking: &[(u32, RankKey)]) -> Vec<RankKey> {
    let mut keys = Vec::new();
    for (_, key) in ranking.iter().step_by((ranking.len() / 64).max(1)) {
        keys.push(key.clone());
        keys.push(RankKey {
            citizen_id: Arc::from(format!("{}0", key.citizen_id)),
            ..key.clone()
        });
    }
    let top = ranking.first().map_or(0, |(_, k)| k.count);
    let counts = [0, 1, 2, 3, top, top + 1, 17, 100_000];
    let times = [(0, 0), (2, 1), (4, 2), (200, 0), (202, 1)];
    let ids = ["", "25", "9~"];
    for (i, &count) in counts.iter().enumerate() {
        for (j, &(last, tc)) in times.iter().enumerate() {
            keys.push(RankKey {
                count,
                last_trx: instant(last),
                tc_accepted_at: instant(tc),
                citizen_id: Arc::from(ids[(i + j) % ids.len()]),
            });
        }
    }
    keys
}

/// The queries a cluster merges (`count_before`, `page_from`,
/// `count_histogram`, `bucket_len`, `at_in_bucket`) against the model's
/// ranking of this index alone.
fn check_cluster_queries<const L: usize, const I: usize>(
    index: &RankIndexWith<L, I>,
    ranking: &[(u32, RankKey)],
) {
    let limits = [0, 1, 3, 10, usize::MAX];
    for (i, key) in probe_keys(ranking).iter().enumerate() {
        let lower = before(ranking, key);
        assert_eq!(
            index.count_before(key),
            lower as u64,
            "count_before {key:?}"
        );
        let limit = limits[i % limits.len()];
        let expected: Vec<(u32, &RankKey)> = ranking[lower..]
            .iter()
            .take(limit)
            .map(|(c, k)| (*c, k))
            .collect();
        assert_eq!(
            index.page_from(key, limit),
            expected,
            "page_from({key:?}, {limit})"
        );
    }
    let histogram = histogram(ranking);
    assert_eq!(index.count_histogram(), histogram, "histogram");
    let mut start = 0;
    for &(count, n) in &histogram {
        assert_eq!(index.bucket_len(count), n, "bucket_len({count})");
        for (i, (citizen, key)) in ranking[start..start + n as usize].iter().enumerate() {
            assert_eq!(
                index.at_in_bucket(count, i as u64),
                Some((*citizen, key)),
                "at_in_bucket({count}, {i})"
            );
        }
        assert_eq!(index.at_in_bucket(count, n), None, "past bucket {count}");
        start += n as usize;
    }
    let top = histogram.first().map_or(0, |&(count, _)| count);
    for count in (0..=top + 1).chain([100_000, u32::MAX]) {
        if !histogram.iter().any(|&(c, _)| c == count) {
            assert_eq!(index.bucket_len(count), 0, "bucket_len({count}), empty");
            assert_eq!(index.at_in_bucket(count, 0), None, "empty bucket {count}");
        }
    }
}

/// Applies `op` to both.
fn apply<const L: usize, const I: usize>(
    index: &mut RankIndexWith<L, I>,
    model: &mut Model,
    ids: &[Arc<str>],
    op: &Op,
) {
    match *op {
        Op::Set {
            citizen,
            count,
            last,
            tc,
        } => {
            let key = RankKey {
                count,
                last_trx: instant(last),
                tc_accepted_at: instant(tc),
                citizen_id: ids[citizen as usize].clone(),
            };
            index.set(citizen, key.clone());
            model.keys.insert(citizen, key);
        }
        Op::Pay { citizen, last } => match model.keys.get_mut(&citizen) {
            Some(key) => {
                key.count += 1;
                key.last_trx = instant(last);
                assert!(index.update(citizen, key.count, key.last_trx));
            }
            None => {
                assert!(!index.update(citizen, 1, instant(last)), "unknown citizen");
                let key = RankKey {
                    count: 1,
                    last_trx: instant(last),
                    tc_accepted_at: instant((citizen % 3) as u8),
                    citizen_id: ids[citizen as usize].clone(),
                };
                index.set(citizen, key.clone());
                model.keys.insert(citizen, key);
            }
        },
        Op::Reverse { citizen } => match model.keys.get_mut(&citizen) {
            Some(key) => {
                key.count = key.count.saturating_sub(1);
                assert!(index.update(citizen, key.count, key.last_trx));
            }
            None => assert!(!index.update(citizen, 0, instant(0)), "unknown citizen"),
        },
        Op::Withdraw { citizen } => {
            index.remove(citizen);
            model.keys.remove(&citizen);
        }
        Op::Check => {}
    }
}

/// Every figure the engine reads from the index, against the model.
fn check<const L: usize, const I: usize>(
    index: &RankIndexWith<L, I>,
    model: &Model,
    citizens: u32,
) {
    index.check_invariants();
    let ranking = model.ranking();
    let len = ranking.len() as u64;
    assert_eq!(index.len(), len, "number ranked");
    assert_eq!(index.is_empty(), len == 0);

    let mut expected_position: HashMap<u32, u64> = HashMap::new();
    for (i, (citizen, key)) in ranking.iter().enumerate() {
        let position = i as u64 + 1;
        expected_position.insert(*citizen, position);
        let (at_citizen, at_key) = index.at(position).expect("a citizen at every position");
        assert_eq!(at_citizen, *citizen, "citizen at position {position}");
        assert_eq!(at_key, key, "key at position {position}");
        assert_eq!(index.count_at(position), Some(key.count));
    }
    assert!(index.at(0).is_none());
    assert!(index.at(len + 1).is_none());
    assert_eq!(index.count_at(0), None);
    assert_eq!(index.count_at(len + 1), None);

    for citizen in 0..citizens + 2 {
        assert_eq!(
            index.position(citizen),
            expected_position.get(&citizen).copied(),
            "position of citizen {citizen}"
        );
        assert_eq!(
            index.get(citizen),
            model.keys.get(&citizen),
            "key of {citizen}"
        );
    }

    let top = ranking.first().map_or(0, |(_, k)| k.count);
    assert_eq!(index.max_transaction_number(), top, "count at position 1");
    let n = citizens as u64;
    for k in [0, 1, 2, 3, 5, 10, n / 2, len, len + 1, n, n + 7] {
        let expected = if k == 0 || len == 0 {
            0
        } else {
            ranking[(k.min(len) - 1) as usize].1.count
        };
        assert_eq!(index.min_transaction_number(k), expected, "count at K={k}");
    }

    for (offset, limit) in [
        (0, 1),
        (0, 7),
        (1, 3),
        (len / 2, 5),
        (len.saturating_sub(2), 10),
        (len, 3),
        (0, 0),
    ] {
        let page = index.page(offset, limit);
        let expected: Vec<(u64, u32, &RankKey)> = ranking
            .iter()
            .enumerate()
            .skip(offset as usize)
            .take(limit)
            .map(|(i, (c, k))| (i as u64 + 1, *c, k))
            .collect();
        assert_eq!(page, expected, "page({offset}, {limit})");
    }
    let whole = index.page(0, usize::MAX);
    assert_eq!(whole.len() as u64, len, "one page with everyone");
    for pair in whole.windows(2) {
        assert_eq!(pair[0].2.rank_cmp(pair[1].2), Ordering::Less, "page order");
    }

    check_cluster_queries(index, &ranking);
}

/// Runs `ops` from an initial population, checking after every operation
/// when `every_op`, else at `Op::Check` checkpoints; always at the end.
fn run<const L: usize, const I: usize>(
    citizens: u32,
    ids: &[Arc<str>],
    initial: &[(u32, u8, u8)],
    ops: &[Op],
    every_op: bool,
) {
    let mut index = RankIndexWith::<L, I>::new();
    let mut model = Model {
        keys: HashMap::new(),
    };
    for (citizen, &(count, last, tc)) in initial.iter().enumerate() {
        let op = Op::Set {
            citizen: citizen as u32,
            count,
            last,
            tc,
        };
        apply(&mut index, &mut model, ids, &op);
    }
    check(&index, &model, citizens);
    for op in ops {
        apply(&mut index, &mut model, ids, op);
        if every_op || matches!(op, Op::Check) {
            check(&index, &model, citizens);
        }
    }
    check(&index, &model, citizens);
}

/// Proptest settings: bounded case counts so the file runs in seconds in a
/// debug build, and no regression files written into the source tree.
fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2_000,
        ..Config::default()
    }
}

/// A small population, tiny nodes: splits and merges at every few operations.
const SMALL: u32 = 48;

/// A bucket-sized population for the checkpoint runs.
const LARGE: u32 = 1_500;

proptest! {
    #![proptest_config(config(96))]

    /// Tiny nodes (4 entries, 4 children), checked after every operation.
    #[test]
    fn tiny_nodes_match_the_model_after_every_op(
        ids in ids(SMALL),
        initial in prop::collection::vec((0u32..3, time_code(), 0u8..3), 0..SMALL as usize),
        ops in prop::collection::vec(op(SMALL), 0..250),
    ) {
        run::<4, 4>(SMALL, &ids, &initial, &ops, true);
    }

    /// Odd capacities (5, 5): uneven splits and redistributions.
    #[test]
    fn odd_nodes_match_the_model_after_every_op(
        ids in ids(SMALL),
        initial in prop::collection::vec((0u32..3, time_code(), 0u8..3), 0..SMALL as usize),
        ops in prop::collection::vec(op(SMALL), 0..250),
    ) {
        run::<5, 5>(SMALL, &ids, &initial, &ops, true);
    }

    /// The production capacities, checked after every operation.
    #[test]
    fn real_nodes_match_the_model_after_every_op(
        ids in ids(SMALL),
        initial in prop::collection::vec((0u32..3, time_code(), 0u8..3), 0..SMALL as usize),
        ops in prop::collection::vec(op(SMALL), 0..250),
    ) {
        run::<64, 64>(SMALL, &ids, &initial, &ops, true);
    }
}

proptest! {
    #![proptest_config(config(12))]

    /// Buckets of hundreds of citizens on tiny nodes: trees five or six levels
    /// deep; checked at random checkpoints and at the end.
    #[test]
    fn deep_trees_match_the_model_at_checkpoints(
        ids in ids(LARGE),
        initial in prop::collection::vec((0u32..4, time_code(), 0u8..3), LARGE as usize),
        ops in prop::collection::vec(op(LARGE), 0..3_000),
    ) {
        run::<4, 4>(LARGE, &ids, &initial, &ops, false);
    }

    /// Buckets of hundreds of citizens on the production capacities.
    #[test]
    fn real_trees_match_the_model_at_checkpoints(
        ids in ids(LARGE),
        initial in prop::collection::vec((0u32..4, time_code(), 0u8..3), LARGE as usize),
        ops in prop::collection::vec(op(LARGE), 0..3_000),
    ) {
        run::<64, 64>(LARGE, &ids, &initial, &ops, false);
    }
}

/// The workload's own shape, deterministic: everyone pays in turn with ever
/// newer `last_trx` (appends at the right edge of the next bucket), some pay
/// with an old date, some payments are reversed.
#[test]
fn payment_waves_match_the_model() {
    let citizens = 700u32;
    let ids: Vec<Arc<str>> = (0..citizens)
        .map(|c| Arc::from(format!("{:x}", (c * 7_919) % 1_009)))
        .collect();
    let mut index = RankIndexWith::<8, 4>::new();
    let mut model = Model {
        keys: HashMap::new(),
    };
    let mut ops = Vec::new();
    for wave in 0..6u32 {
        for c in 0..citizens {
            let citizen = (c * 13 + wave * 101) % citizens;
            let last = if citizen.is_multiple_of(11) { 0 } else { 4 };
            ops.push(Op::Pay { citizen, last });
            if (c + wave).is_multiple_of(9) {
                ops.push(Op::Reverse {
                    citizen: (citizen * 7) % citizens,
                });
            }
        }
        ops.push(Op::Check);
    }
    for op in &ops {
        apply(&mut index, &mut model, &ids, op);
        if matches!(op, Op::Check) {
            check(&index, &model, citizens);
        }
    }
}

/// Where citizen `c` of the whole population lives in a cluster of `nodes`
/// nodes: on node `c % nodes`, as its citizen `c / nodes` (each node numbers
/// its own citizens, as separate engines would).
fn place(citizen: u32, nodes: u32) -> (usize, u32) {
    ((citizen % nodes) as usize, citizen / nodes)
}

/// `op` as the node of its citizen sees it; `None` for `Check`.
fn localize(op: &Op, nodes: u32) -> Option<(usize, Op)> {
    let mut local = op.clone();
    let citizen = match &mut local {
        Op::Set { citizen, .. }
        | Op::Pay { citizen, .. }
        | Op::Reverse { citizen }
        | Op::Withdraw { citizen } => citizen,
        Op::Check => return None,
    };
    let (node, at) = place(*citizen, nodes);
    *citizen = at;
    Some((node, local))
}

/// What a cluster merges from its nodes' answers, as the `cluster` module of
/// the index describes it, against the model's ranking of everyone.
fn check_merged<const L: usize, const I: usize>(nodes: &[RankIndexWith<L, I>], models: &[Model]) {
    let n = nodes.len() as u32;
    let global = |node: usize, citizen: u32| citizen * n + node as u32;
    let everyone = Model {
        keys: models
            .iter()
            .enumerate()
            .flat_map(|(node, m)| {
                m.keys
                    .iter()
                    .map(move |(c, k)| (global(node, *c), k.clone()))
            })
            .collect(),
    };
    let ranking = everyone.ranking();
    for index in nodes {
        index.check_invariants();
    }

    // A position: 1 + the entries before the key on every node.
    for (i, (citizen, key)) in ranking.iter().enumerate() {
        let before: u64 = nodes.iter().map(|index| index.count_before(key)).sum();
        assert_eq!(
            before, i as u64,
            "entries before citizen {citizen} nationally"
        );
    }

    // The histograms, summed.
    let mut summed: BTreeMap<u32, u64> = BTreeMap::new();
    for index in nodes {
        for (count, citizens) in index.count_histogram() {
            *summed.entry(count).or_default() += citizens;
        }
    }
    let summed: Vec<(u32, u64)> = summed.into_iter().rev().collect();
    assert_eq!(summed, histogram(&ranking), "summed histograms");

    // A page: the nodes' runs from the same key, merged.
    for start in probe_keys(&ranking) {
        const LIMIT: usize = 6;
        let mut merged: Vec<(u32, &RankKey)> = nodes
            .iter()
            .enumerate()
            .flat_map(|(node, index)| {
                let run = index.page_from(&start, LIMIT);
                run.into_iter().map(move |(c, k)| (global(node, c), k))
            })
            .collect();
        merged.sort_by(|a, b| a.1.rank_cmp(b.1));
        merged.truncate(LIMIT);
        let expected: Vec<(u32, &RankKey)> = ranking[before(&ranking, &start)..]
            .iter()
            .take(LIMIT)
            .map(|(c, k)| (*c, k))
            .collect();
        assert_eq!(merged, expected, "merged page from {start:?}");
    }

    // The entries of one count nationally: every node's, each placed by
    // `count_before` on all nodes minus the entries of higher counts.
    let mut above = 0;
    for &(count, citizens) in &summed {
        let mut placed: Vec<(u64, u32, &RankKey)> = Vec::new();
        for (node, index) in nodes.iter().enumerate() {
            for r in 0..index.bucket_len(count) {
                let (citizen, key) = index.at_in_bucket(count, r).expect("below bucket_len");
                let national: u64 = nodes.iter().map(|other| other.count_before(key)).sum();
                placed.push((national - above, global(node, citizen), key));
            }
        }
        placed.sort_by_key(|&(j, _, _)| j);
        let expected: Vec<(u64, u32, &RankKey)> = ranking
            [above as usize..(above + citizens) as usize]
            .iter()
            .enumerate()
            .map(|(j, (c, k))| (j as u64, *c, k))
            .collect();
        assert_eq!(placed, expected, "national bucket {count}");
        above += citizens;
    }
}

/// Runs `ops` on a cluster of `nodes` nodes sharing `SMALL` citizens,
/// checking the merged answers at `Op::Check` checkpoints and at the end.
fn run_cluster(nodes: u32, ids: &[Arc<str>], initial: &[(u32, u8, u8)], ops: &[Op]) {
    let mut indexes: Vec<RankIndexWith<4, 4>> = (0..nodes).map(|_| RankIndexWith::new()).collect();
    let mut models: Vec<Model> = (0..nodes)
        .map(|_| Model {
            keys: HashMap::new(),
        })
        .collect();
    let mut node_ids: Vec<Vec<Arc<str>>> = vec![Vec::new(); nodes as usize];
    for (citizen, id) in ids.iter().enumerate() {
        let (node, local) = place(citizen as u32, nodes);
        assert_eq!(node_ids[node].len(), local as usize);
        node_ids[node].push(id.clone());
    }
    let initial = initial
        .iter()
        .enumerate()
        .map(|(citizen, &(count, last, tc))| Op::Set {
            citizen: citizen as u32,
            count,
            last,
            tc,
        });
    for op in initial.chain(ops.iter().cloned()) {
        match localize(&op, nodes) {
            Some((node, local)) => apply(
                &mut indexes[node],
                &mut models[node],
                &node_ids[node],
                &local,
            ),
            None => check_merged(&indexes, &models),
        }
    }
    check_merged(&indexes, &models);
}

proptest! {
    #![proptest_config(config(64))]

    /// One to four nodes share the population (tiny nodes, deep trees): the
    /// merged answers are those of one ranking of everyone.
    #[test]
    fn nodes_merged_match_one_ranking(
        nodes in 1u32..=4,
        ids in ids(SMALL),
        initial in prop::collection::vec((0u32..3, time_code(), 0u8..3), 0..SMALL as usize),
        ops in prop::collection::vec(op(SMALL), 0..400),
    ) {
        run_cluster(nodes, &ids, &initial, &ops);
    }
}
