//! The packed record format of a retained payment: 40 bytes, with a side
//! table for the rare values that do not fit. Tens of millions of payments
//! are kept (for reversal matching, de-duplication and the statement), so
//! every byte here is hundreds of megabytes.

use crate::period::PeriodIdx;
use crate::time::Timestamp;

/// One payment kept for reversal matching, de-duplication and the
/// statement, packed into 40 bytes.
///
/// What a payment needs and where it lives:
/// - its de-duplication key among the card's messages (64 bits, see
///   `authorization::payment_key`): the card's book is where keys are kept
///   (RULES.md rule 6), so a payment's key costs 8 bytes and no hash-set
///   entry;
/// - `trx_date`, exact to the nanosecond, as i64 nanoseconds since the epoch
///   (exact for 1677-2262; anything else spills, see below);
/// - amount and balance as u32 cents (up to 42,949,672.94 EUR; larger amounts
///   spill);
/// - the terminal and correlation keys folded to 32 bits (see [`fold_key`]);
/// - the arrival order as a 40-bit stream sequence (a trillion messages);
/// - the acquirer code as a u16 index into the ledger's interned table;
/// - circuit type, operation type and the operator's exclusion in one byte;
/// - the citizen is not here: a card's owner changes rarely, so the card
///   keeps runs of owners by position (`CardBook::owners`);
/// - the period is not here either: it is the period containing `trx_date`
///   (that is how the router picked it), found by a binary search.
///
/// A payment with any value that does not fit is *spilled*: its `amount` is
/// [`SPILLED`] and the exact values live in the ledger's side table
/// ([`Spill`]), keyed by (card number, position). Nothing is ever rounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PaymentRecord {
    /// `trx_date` as nanoseconds since the Unix epoch: the first tie-break
    /// between candidates for a total reversal, and the statement's order.
    pub(super) trx_nanos: i64,
    /// The de-duplication key (never spilled: it always fits).
    pub(super) key: u64,
    /// Original amount in cents, or [`SPILLED`].
    pub(super) amount: u32,
    /// What is left after reversals, cents (unused when spilled).
    pub(super) balance: u32,
    /// `Authorization::terminal_key` folded to 32 bits: matches total
    /// reversals without correlation id.
    pub(super) terminal: u32,
    /// `Authorization::correlation_key` folded to 32 bits, 0 when absent.
    pub(super) correlation: u32,
    /// Low 32 bits of the stream sequence: arrival order, the statement's
    /// second sort key across cards (within a card, the position is it).
    pub(super) seq_lo: u32,
    /// Bits 32-39 of the stream sequence.
    pub(super) seq_hi: u8,
    /// Circuit type (bits 0-3, wire values 0-10), operation type (bits 4-5,
    /// wire values 0-3) and [`EXCLUDED`] (bit 7).
    pub(super) kind: u8,
    /// Index of the acquirer code in `Ledger::acquirers`.
    pub(super) acquirer: u16,
}

/// The `amount` of a spilled [`PaymentRecord`]: its exact values are in the
/// ledger's side table. Real amounts of `SPILLED` cents or more spill too.
pub const SPILLED: u32 = u32::MAX;

/// Sequences below this fit a record's 40 bits.
pub const SEQ_LIMIT: u64 = 1 << 40;

/// `PaymentRecord::kind` bit: an operator excluded the payment (RULES.md,
/// "Operator exclusions"). Kept in the record, not the side table, because
/// the statement and reversals read it for every payment.
pub const EXCLUDED: u8 = 0x80;

/// Folds a 64-bit key hash (xxh3, uniformly distributed) to the 32 bits a
/// record keeps, never 0 (0 means "no correlation id").
///
/// Keys are compared only among one card's payments. With n payments on a
/// card, a reversal wrongly matches a payment with another key with
/// probability about n / 2^32 (2.3e-7 for a card with 1,000 payments); over
/// a whole programme of ~10^7 reversals on cards of ~50 payments that is an
/// expected ~0.1 wrong matches, and only when the true payment is not the
/// earlier candidate. The price of 8 bytes less per payment.
pub fn fold_key(key: u64) -> u32 {
    (key as u32).max(1)
}

/// The exact values of a payment whose record could not hold them: rare
/// (amounts of 42,949,672.95 EUR or more, 2^40 stream sequences, dates
/// outside 1677-2262, more than 65,534 acquirer codes in one partition).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Spill {
    /// Stream sequence.
    pub(super) seq: u64,
    /// When the card was used.
    pub(super) trx_date: Timestamp,
    /// Original amount, cents.
    pub(super) amount: u64,
    /// What is left after reversals, cents.
    pub(super) balance: u64,
    /// Which period it counted in (normally derived from `trx_date`).
    pub(super) period: PeriodIdx,
    /// Index into `Ledger::acquirers`.
    pub(super) acquirer: u32,
    /// Wire circuit type.
    pub(super) circuit_type: u8,
    /// Wire operation type.
    pub(super) operation_type: u8,
}

/// What a new payment is, before it is packed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewPayment {
    /// Stream sequence.
    pub seq: u64,
    /// De-duplication key.
    pub key: u64,
    /// When the card was used.
    pub trx_date: Timestamp,
    /// Cents.
    pub amount: u64,
    /// Its period.
    pub period: PeriodIdx,
    /// Index into `Ledger::acquirers` (interned at commit if new: see
    /// `Acquirer`).
    pub acquirer: u32,
    /// Wire circuit type.
    pub circuit_type: u8,
    /// Wire operation type.
    pub operation_type: u8,
    /// `Authorization::terminal_key`.
    pub terminal_key: u64,
    /// `Authorization::correlation_key`.
    pub correlation_key: Option<u64>,
}

impl NewPayment {
    /// Packs the payment: its record, and its side-table entry when a value
    /// does not fit. `period_of_date` is the period containing `trx_date`
    /// (a record that would unpack to another period spills).
    pub fn pack(&self, period_of_date: Option<PeriodIdx>) -> (PaymentRecord, Option<Spill>) {
        let trx_nanos = i64::try_from(self.trx_date.unix_nanos()).ok();
        let packs = self.amount < SPILLED as u64
            && self.seq < SEQ_LIMIT
            && self.acquirer < u16::MAX as u32
            && self.circuit_type < 16
            && self.operation_type < 4
            && trx_nanos.is_some()
            && period_of_date == Some(self.period);
        let record = PaymentRecord {
            trx_nanos: trx_nanos.unwrap_or(0),
            key: self.key,
            amount: self.amount as u32,
            balance: self.amount as u32,
            terminal: fold_key(self.terminal_key),
            correlation: self.correlation_key.map_or(0, fold_key),
            seq_lo: self.seq as u32,
            seq_hi: (self.seq >> 32) as u8,
            kind: self.circuit_type | self.operation_type << 4,
            acquirer: self.acquirer as u16,
        };
        if packs {
            return (record, None);
        }
        let spilled = PaymentRecord {
            amount: SPILLED,
            balance: 0,
            trx_nanos: 0,
            seq_lo: 0,
            seq_hi: 0,
            acquirer: 0,
            kind: 0,
            ..record
        };
        let spill = Spill {
            seq: self.seq,
            trx_date: self.trx_date,
            amount: self.amount,
            balance: self.amount,
            period: self.period,
            acquirer: self.acquirer,
            circuit_type: self.circuit_type,
            operation_type: self.operation_type,
        };
        (spilled, Some(spill))
    }
}

impl PaymentRecord {
    /// Whether the exact values are in the side table.
    pub fn spilled(&self) -> bool {
        self.amount == SPILLED
    }

    /// Whether an operator excluded it.
    pub fn excluded(&self) -> bool {
        self.kind & EXCLUDED != 0
    }

    /// Sets or clears the exclusion.
    pub(super) fn set_excluded(&mut self, excluded: bool) {
        if excluded {
            self.kind |= EXCLUDED;
        } else {
            self.kind &= !EXCLUDED;
        }
    }

    /// The de-duplication key.
    pub fn key(&self) -> u64 {
        self.key
    }

    /// The stream sequence (when not spilled).
    pub(super) fn packed_seq(&self) -> u64 {
        self.seq_lo as u64 | (self.seq_hi as u64) << 32
    }

    /// `trx_date` (when not spilled).
    pub(super) fn packed_trx_date(&self) -> Timestamp {
        Timestamp::from_unix_nanos(self.trx_nanos as i128)
    }

    /// Circuit type (when not spilled).
    pub(super) fn circuit_type(&self) -> u8 {
        self.kind & 0x0f
    }

    /// Operation type (when not spilled).
    pub(super) fn operation_type(&self) -> u8 {
        (self.kind >> 4) & 0x03
    }
}

/// Appends to a card's payments growing the buffer by a quarter (at least
/// one) instead of doubling: most cards have a handful of payments, and
/// doubling from Vec's minimum of four would leave most of each buffer
/// empty. Still amortised O(1) per push.
pub fn push_compact<T>(items: &mut Vec<T>, item: T) {
    if items.len() == items.capacity() {
        items.reserve_exact((items.len() / 4).max(1));
    }
    items.push(item);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retained_payment_costs_40_bytes() {
        // 32 bytes of payment and the 8-byte de-duplication key that used to
        // sit in a hash set of 128-bit keys (~30 bytes a key with the set's
        // overhead).
        assert_eq!(std::mem::size_of::<PaymentRecord>(), 40);
    }

    #[test]
    fn folding_never_makes_a_correlation_id_absent() {
        assert_eq!(fold_key(0x1234_5678_0000_0000), 1);
        assert_eq!(fold_key(0xffff_ffff_0000_0002), 2);
    }

    #[test]
    fn what_does_not_fit_spills_and_the_exclusion_bit_is_its_own() {
        let p = NewPayment {
            seq: SEQ_LIMIT - 1,
            key: 9,
            trx_date: Timestamp::parse_rfc3339("2021-03-01T10:00:00.123456789+01:00").unwrap(),
            amount: SPILLED as u64 - 1,
            period: 0,
            acquirer: 3,
            circuit_type: 10,
            operation_type: 3,
            terminal_key: 5,
            correlation_key: None,
        };
        let (mut r, spill) = p.pack(Some(0));
        assert!(spill.is_none());
        assert_eq!(r.packed_seq(), SEQ_LIMIT - 1);
        assert_eq!(r.packed_trx_date(), p.trx_date);
        assert_eq!((r.circuit_type(), r.operation_type()), (10, 3));
        r.set_excluded(true);
        assert!(r.excluded());
        assert_eq!((r.circuit_type(), r.operation_type()), (10, 3));
        r.set_excluded(false);
        assert!(!r.excluded());
        for odd in [
            NewPayment {
                amount: SPILLED as u64,
                ..p.clone()
            },
            NewPayment {
                seq: SEQ_LIMIT,
                ..p.clone()
            },
            NewPayment {
                period: 1,
                ..p.clone()
            },
        ] {
            let (r, spill) = odd.pack(Some(0));
            assert!(r.spilled());
            assert_eq!(r.key(), 9);
            assert_eq!(spill.unwrap().amount, odd.amount);
        }
    }
}
