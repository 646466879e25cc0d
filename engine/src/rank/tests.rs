//! Edge cases of the index, by hand; `engine/tests/rank.rs` checks every
//! query against a naive model over random operation sequences.

use super::*;

fn ts(secs: i64) -> Timestamp {
    Timestamp::from_unix_nanos(secs as i128 * 1_000_000_000)
}

fn key(count: u32, last: i64, tc: i64, id: &str) -> RankKey {
    RankKey {
        count,
        last_trx: ts(last),
        tc_accepted_at: ts(tc),
        citizen_id: Arc::from(id),
    }
}

#[test]
fn empty_index_answers_nothing() {
    let idx = RankIndex::new();
    idx.check_invariants();
    assert_eq!(idx.len(), 0);
    assert!(idx.is_empty());
    assert_eq!(idx.position(0), None);
    assert_eq!(idx.position(123_456), None);
    assert!(idx.at(0).is_none());
    assert!(idx.at(1).is_none());
    assert!(idx.page(0, 10).is_empty());
    assert_eq!(idx.count_at(1), None);
    assert_eq!(idx.max_transaction_number(), 0);
    assert_eq!(idx.min_transaction_number(100_000), 0);
    assert_eq!(idx.min_transaction_number(0), 0);
}

#[test]
fn single_citizen() {
    let mut idx = RankIndex::new();
    idx.set(7, key(3, 10, 1, "A"));
    idx.check_invariants();
    assert_eq!(idx.len(), 1);
    assert_eq!(idx.position(7), Some(1));
    assert_eq!(idx.position(6), None);
    assert_eq!(idx.at(1).map(|(c, k)| (c, k.count)), Some((7, 3)));
    assert!(idx.at(2).is_none());
    assert_eq!(idx.count_at(1), Some(3));
    assert_eq!(idx.max_transaction_number(), 3);
    assert_eq!(idx.min_transaction_number(1), 3);
    let page = idx.page(0, 100);
    assert_eq!(page.len(), 1);
    assert_eq!((page[0].0, page[0].1), (1, 7));
    assert!(idx.page(1, 100).is_empty());
}

#[test]
fn setting_the_same_key_changes_nothing() {
    let mut idx = RankIndex::new();
    idx.set(1, key(5, 10, 1, "B"));
    idx.set(2, key(5, 10, 1, "A"));
    idx.set(1, key(5, 10, 1, "B"));
    assert!(idx.update(2, 5, ts(10)));
    idx.check_invariants();
    assert_eq!(idx.len(), 2);
    assert_eq!(idx.position(2), Some(1), "id A before B on a full tie");
    assert_eq!(idx.position(1), Some(2));
}

#[test]
fn count_zero_leaves_the_ranking_and_withdrawal_forgets() {
    let mut idx = RankIndex::new();
    idx.set(1, key(2, 10, 1, "A"));
    idx.set(2, key(1, 10, 1, "B"));
    assert!(idx.update(1, 0, ts(10)));
    idx.check_invariants();
    assert_eq!(idx.len(), 1);
    assert_eq!(idx.position(1), None);
    assert_eq!(idx.get(1).map(|k| k.count), Some(0), "known, not ranked");
    assert_eq!(idx.position(2), Some(1));
    assert!(idx.update(1, 1, ts(5)), "a known citizen comes back");
    assert_eq!(idx.position(1), Some(1), "earlier last_trx wins");
    idx.set(2, key(0, 10, 1, "B"));
    assert_eq!(idx.len(), 1);
    idx.remove(1);
    idx.check_invariants();
    assert_eq!(idx.len(), 0);
    assert!(idx.get(1).is_none());
    assert!(!idx.update(1, 3, ts(5)), "withdrawn: unknown");
    idx.remove(1);
    idx.remove(99);
    idx.check_invariants();
}

#[test]
fn k_beyond_len_uses_the_last_position() {
    let mut idx = RankIndex::new();
    idx.set(0, key(9, 10, 1, "A"));
    idx.set(1, key(4, 10, 1, "B"));
    idx.set(2, key(4, 11, 1, "C"));
    assert_eq!(idx.count_at(3), Some(4));
    assert_eq!(idx.count_at(4), None);
    assert_eq!(idx.min_transaction_number(100_000), 4);
    assert_eq!(idx.min_transaction_number(1), 9);
    assert_eq!(idx.min_transaction_number(0), 0);
    assert_eq!(idx.max_transaction_number(), 9);
    let page: Vec<u32> = idx.page(1, 100).iter().map(|e| e.1).collect();
    assert_eq!(page, vec![1, 2]);
}

#[test]
fn counts_beyond_the_initial_capacity_grow_the_index() {
    let mut idx = RankIndex::new();
    idx.set(0, key(3, 10, 1, "A"));
    idx.set(1, key(1_000_000, 10, 1, "B"));
    idx.set(2, key(17, 10, 1, "C"));
    idx.check_invariants();
    assert_eq!(idx.position(1), Some(1));
    assert_eq!(idx.position(2), Some(2));
    assert_eq!(idx.position(0), Some(3));
    assert_eq!(idx.max_transaction_number(), 1_000_000);
    let page: Vec<u32> = idx.page(0, 10).iter().map(|e| e.1).collect();
    assert_eq!(page, vec![1, 2, 0]);
}

#[test]
fn tie_breaks_follow_the_rules() {
    let mut idx = RankIndex::new();
    idx.set(0, key(5, 20, 1, "A")); // later last_trx
    idx.set(1, key(5, 10, 2, "B")); // later tc
    idx.set(2, key(5, 10, 1, "D"));
    idx.set(3, key(5, 10, 1, "C")); // smaller id
    idx.set(4, key(6, 99, 9, "Z")); // higher count
    let order: Vec<u32> = idx.page(0, 10).iter().map(|e| e.1).collect();
    assert_eq!(order, vec![4, 3, 2, 1, 0]);
    for (i, c) in order.iter().enumerate() {
        assert_eq!(idx.position(*c), Some(i as u64 + 1));
    }
}

#[test]
fn deep_trees_with_tiny_nodes() {
    let mut idx = RankIndexWith::<4, 4>::new();
    for c in 0..2_000u32 {
        // Knuth's multiplicative hash: counts and times scattered over the
        // citizens, the same on every run.
        let h = c.wrapping_mul(2_654_435_761);
        let k = key(1 + (h >> 7) % 3, ((h >> 11) % 50) as i64, 0, &c.to_string());
        idx.set(c, k);
    }
    idx.check_invariants();
    for c in (0..2_000u32).step_by(3) {
        idx.remove(c);
    }
    idx.check_invariants();
    let page = idx.page(0, 5_000);
    assert_eq!(page.len() as u64, idx.len());
    for w in page.windows(2) {
        assert_eq!(w[0].2.rank_cmp(w[1].2), Ordering::Less);
    }
    for (p, c, _) in page {
        assert_eq!(idx.position(c), Some(p));
    }
}

#[test]
fn keys_of_other_nodes_are_placed_among_these_entries() {
    let mut idx = RankIndex::new();
    idx.set(0, key(5, 20, 1, "A"));
    idx.set(1, key(5, 10, 1, "C"));
    idx.set(2, key(6, 99, 9, "Z"));
    // Order: 2 (count 6), 1 (count 5, earlier), 0.
    assert_eq!(idx.count_before(&key(7, 0, 0, "X")), 0, "a higher count");
    assert_eq!(
        idx.count_before(&key(1_000_000, 0, 0, "X")),
        0,
        "beyond any bucket"
    );
    assert_eq!(
        idx.count_before(&key(6, 99, 9, "Y")),
        0,
        "ties up to the id"
    );
    assert_eq!(
        idx.count_before(&key(6, 99, 9, "Z")),
        0,
        "citizen 2's own key"
    );
    assert_eq!(idx.count_before(&key(5, 10, 1, "B")), 1, "just before C");
    assert_eq!(idx.count_before(&key(5, 10, 1, "D")), 2, "just after C");
    assert_eq!(
        idx.count_before(&key(5, 30, 0, "A")),
        3,
        "after everyone of 5"
    );
    assert_eq!(idx.count_before(&key(0, 0, 0, "")), 3, "count 0 ranks last");

    let ids = |page: Vec<(u32, &RankKey)>| page.into_iter().map(|(c, _)| c).collect::<Vec<_>>();
    assert_eq!(ids(idx.page_from(&key(5, 10, 1, "C"), 10)), vec![1, 0]);
    assert_eq!(ids(idx.page_from(&key(5, 10, 1, "B"), 1)), vec![1]);
    assert_eq!(ids(idx.page_from(&key(0, 0, 0, ""), 10)), Vec::<u32>::new());

    assert_eq!(idx.count_histogram(), vec![(6, 1), (5, 2)]);
    assert_eq!(
        (idx.bucket_len(5), idx.bucket_len(4), idx.bucket_len(0)),
        (2, 0, 0)
    );
    assert_eq!(idx.at_in_bucket(5, 1).map(|(c, _)| c), Some(0));
    assert!(idx.at_in_bucket(5, 2).is_none());
    assert!(idx.at_in_bucket(u32::MAX, 0).is_none());
}
