//! Instants, parsed strictly from the RFC 3339 subset of the wire protocol.
//!
//! Every rule compares instants, never strings (RULES.md, "Determinism"), and a
//! `trx_date` may carry up to nine fractional digits, so an instant is kept as
//! whole seconds plus nanoseconds rather than as a float or a millisecond count.

use chrono::{DateTime, FixedOffset, NaiveDate, Offset, TimeZone, Utc};
use chrono_tz::Europe::Rome;

/// One instant on the UTC time line, exact to the nanosecond.
///
/// Field order makes the derived `Ord` chronological.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Timestamp {
    /// Seconds since the Unix epoch (negative before 1970).
    secs: i64,
    /// Nanoseconds within that second, always below 1e9.
    nanos: u32,
}

/// Nanoseconds in one second.
const NANOS_PER_SEC: i128 = 1_000_000_000;

impl Timestamp {
    /// The instant `nanos` nanoseconds after the Unix epoch.
    pub fn from_unix_nanos(nanos: i128) -> Timestamp {
        let secs = nanos.div_euclid(NANOS_PER_SEC) as i64;
        let nanos = nanos.rem_euclid(NANOS_PER_SEC) as u32;
        Timestamp { secs, nanos }
    }

    /// Nanoseconds since the Unix epoch.
    pub fn unix_nanos(self) -> i128 {
        self.secs as i128 * NANOS_PER_SEC + self.nanos as i128
    }

    /// Whole seconds since the epoch and nanoseconds within that second:
    /// for records that pack an instant without padding.
    pub fn parts(self) -> (i64, u32) {
        (self.secs, self.nanos)
    }

    /// The instant of [`parts`](Self::parts).
    pub fn from_parts(secs: i64, nanos: u32) -> Timestamp {
        Timestamp::from_unix_nanos(secs as i128 * NANOS_PER_SEC + nanos as i128)
    }

    /// Seconds since the Unix epoch, rounded down.
    pub fn unix_secs(self) -> i64 {
        self.secs
    }

    /// The current wall-clock time. Rules never call this (they use broker
    /// time); it is for defaults such as "the period containing today".
    pub fn now() -> Timestamp {
        let now = Utc::now();
        Timestamp {
            secs: now.timestamp(),
            nanos: now.timestamp_subsec_nanos(),
        }
    }

    /// This instant moved by a signed number of seconds, saturating at the ends.
    pub fn plus_secs(self, secs: i64) -> Timestamp {
        Timestamp {
            secs: self.secs.saturating_add(secs),
            nanos: self.nanos,
        }
    }

    /// Parses the protocol's RFC 3339 shape:
    /// `YYYY-MM-DDTHH:MM:SS[.fraction]` then `Z` or `±HH:MM`, upper-case `T`
    /// and `Z`, 1 to 9 fractional digits. Anything else is `None`; so are
    /// impossible dates (February 30th) and leap seconds.
    pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
        let b = text.as_bytes();
        if b.len() < 20 {
            return None;
        }
        let year = digits(&b[0..4])? as i32;
        let month = expect(b, 4, b'-').and_then(|_| digits(&b[5..7]))?;
        let day = expect(b, 7, b'-').and_then(|_| digits(&b[8..10]))?;
        let hour = expect(b, 10, b'T').and_then(|_| digits(&b[11..13]))?;
        let minute = expect(b, 13, b':').and_then(|_| digits(&b[14..16]))?;
        let second = expect(b, 16, b':').and_then(|_| digits(&b[17..19]))?;
        let mut pos = 19;
        let mut nanos: u32 = 0;
        if b[pos] == b'.' {
            pos += 1;
            let start = pos;
            while pos < b.len() && b[pos].is_ascii_digit() {
                pos += 1;
            }
            let count = pos - start;
            if count == 0 || count > 9 {
                return None;
            }
            nanos = digits(&b[start..pos])? * 10u32.pow(9 - count as u32);
        }
        let offset_secs: i32 = match b.get(pos..)? {
            [b'Z'] => 0,
            [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
                let h = digits(&[*h1, *h2])? as i32;
                let m = digits(&[*m1, *m2])? as i32;
                if h > 23 || m > 59 {
                    return None;
                }
                let magnitude = h * 3600 + m * 60;
                if *sign == b'-' {
                    -magnitude
                } else {
                    magnitude
                }
            }
            _ => return None,
        };
        if hour > 23 || minute > 59 || second > 59 {
            return None;
        }
        let date = NaiveDate::from_ymd_opt(year, month, day)?;
        let local = date.and_hms_opt(hour, minute, second)?;
        let utc_secs = local.and_utc().timestamp() - offset_secs as i64;
        Some(Timestamp {
            secs: utc_secs,
            nanos,
        })
    }

    /// The calendar date of this instant in Europe/Rome (CET/CEST).
    pub fn rome_date(self) -> NaiveDate {
        self.to_chrono().with_timezone(&Rome).date_naive()
    }

    /// Renders the instant as RFC 3339 with the Europe/Rome offset of that
    /// moment, as the app shows it to Italian citizens; the fraction appears
    /// only when it is not zero, with as many digits as it needs.
    pub fn to_rome_rfc3339(self) -> String {
        let rome = self.to_chrono().with_timezone(&Rome);
        let offset: FixedOffset = rome.offset().fix();
        let fixed = rome.with_timezone(&offset);
        let mut text = fixed.format("%Y-%m-%dT%H:%M:%S").to_string();
        if self.nanos != 0 {
            let frac = format!("{:09}", self.nanos);
            text.push('.');
            text.push_str(frac.trim_end_matches('0'));
        }
        text.push_str(&fixed.format("%:z").to_string());
        text
    }

    fn to_chrono(self) -> DateTime<Utc> {
        Utc.timestamp_opt(self.secs, self.nanos)
            .single()
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    /// The instant of midnight in Europe/Rome that starts `date`.
    pub fn rome_midnight(date: NaiveDate) -> Timestamp {
        let local = date.and_hms_opt(0, 0, 0).expect("midnight exists");
        // Italy changes clocks at 02:00/03:00, never at midnight, so midnight
        // is never skipped or doubled; `earliest` covers a future rule change.
        let instant = Rome
            .from_local_datetime(&local)
            .earliest()
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_else(|| local.and_utc());
        Timestamp {
            secs: instant.timestamp(),
            nanos: 0,
        }
    }
}

/// Checks that byte `at` of `b` is `want`.
fn expect(b: &[u8], at: usize, want: u8) -> Option<()> {
    (b.get(at) == Some(&want)).then_some(())
}

/// Parses a run of ASCII digits (at most 9) as a number.
fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() || b.len() > 9 {
        return None;
    }
    let mut value: u32 = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        value = value * 10 + (c - b'0') as u32;
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).unwrap_or_else(|| panic!("{s} should parse"))
    }

    #[test]
    fn accepts_the_protocol_shapes() {
        assert_eq!(ts("2021-01-01T00:00:00Z").unix_secs(), 1_609_459_200);
        assert_eq!(ts("2021-01-01T01:00:00+01:00"), ts("2021-01-01T00:00:00Z"));
        assert_eq!(ts("2020-12-31T23:00:00-01:00"), ts("2021-01-01T00:00:00Z"));
        assert_eq!(
            ts("2021-01-01T00:00:00.5Z").unix_nanos() - ts("2021-01-01T00:00:00Z").unix_nanos(),
            500_000_000
        );
        assert_eq!(ts("2021-01-01T00:00:00.000000001Z").unix_nanos() % 10, 1);
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "2021-01-01t00:00:00Z",
            "2021-01-01T00:00:00z",
            "2021-01-01 00:00:00Z",
            "2021-01-01T00:00:00",
            "2021-01-01T00:00:00.Z",
            "2021-01-01T00:00:00.1234567890Z",
            "2021-02-30T00:00:00Z",
            "2021-01-01T24:00:00Z",
            "2021-01-01T00:00:60Z",
            "2021-01-01T00:00:00+0100",
            "2021-01-01T00:00:00+24:00",
            "21-01-01T00:00:00Z",
            "2021-1-01T00:00:00Z",
            "2021-01-01T00:00:00Z ",
            "２021-01-01T00:00:00Z",
            "",
        ] {
            assert_eq!(Timestamp::parse_rfc3339(bad), None, "{bad} must not parse");
        }
    }

    #[test]
    fn rome_dates_follow_daylight_saving() {
        // 2021-03-28: clocks go from 02:00 CET to 03:00 CEST.
        assert_eq!(
            ts("2021-03-27T23:00:00Z").rome_date(),
            NaiveDate::from_ymd_opt(2021, 3, 28).unwrap()
        );
        assert_eq!(
            ts("2021-03-27T22:59:59.999999999Z").rome_date(),
            NaiveDate::from_ymd_opt(2021, 3, 27).unwrap()
        );
        // Summer: midnight Rome is 22:00 UTC.
        assert_eq!(
            ts("2021-06-30T22:00:00Z").rome_date(),
            NaiveDate::from_ymd_opt(2021, 7, 1).unwrap()
        );
        assert_eq!(
            Timestamp::rome_midnight(NaiveDate::from_ymd_opt(2021, 7, 1).unwrap()),
            ts("2021-06-30T22:00:00Z")
        );
        assert_eq!(
            Timestamp::rome_midnight(NaiveDate::from_ymd_opt(2021, 1, 1).unwrap()),
            ts("2020-12-31T23:00:00Z")
        );
    }

    #[test]
    fn renders_in_rome_time() {
        assert_eq!(
            ts("2021-03-14T09:22:33Z").to_rome_rfc3339(),
            "2021-03-14T10:22:33+01:00"
        );
        assert_eq!(
            ts("2021-07-14T09:22:33.25Z").to_rome_rfc3339(),
            "2021-07-14T11:22:33.25+02:00"
        );
    }
}
