//! Go's duration syntax (`time.ParseDuration`), which Consul clients write every duration in:
//! `10s`, `1m0s`, `500ms`, `1h2m3.5s`, `1.5h`, `0`. The Go client formats a query's `wait` as
//! `…ms`; registrations carry whatever the user wrote in Go's format.
//!
//! Written here rather than borrowed: `humantime` reads a different language (spaces,
//! `min`, `sec`, no fractions), and a duration Go reads differently from us would register a
//! different check than the client meant. Negative durations, which Go allows, are refused:
//! no Consul duration signpost reads means anything negative.

use std::time::Duration;

/// Nanoseconds per unit, longest unit names first so `ms` is not read as `m`.
const UNITS: [(&str, u128); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("\u{b5}s", 1_000),  // µ (micro sign), as Go accepts
    ("\u{3bc}s", 1_000), // μ (Greek mu), as Go accepts
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Parses a Go duration; the error says what is wrong, for the caller to prefix the field.
pub(crate) fn parse(raw: &str) -> Result<Duration, String> {
    let bad = |why: &str| format!("{raw:?} is not a Go duration like \"10s\" or \"1m30s\": {why}");
    let s = raw.strip_prefix('+').unwrap_or(raw);
    if s.starts_with('-') {
        return Err(bad("negative"));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(bad("empty"));
    }
    let mut rest = s;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int, after) = rest.split_at(int_len);
        let (frac, after) = match after.strip_prefix('.') {
            Some(a) => {
                let n = a.bytes().take_while(u8::is_ascii_digit).count();
                a.split_at(n)
            }
            None => ("", after),
        };
        if int.is_empty() && frac.is_empty() {
            return Err(bad("expected a number"));
        }
        let unit_len = after
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(after.len(), |(i, _)| i);
        let (unit, after) = after.split_at(unit_len);
        let per = UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, n)| *n)
            .ok_or_else(|| {
                if unit.is_empty() {
                    bad("a number needs a unit (ns, us, ms, s, m, h)")
                } else {
                    bad(&format!("unknown unit {unit:?}"))
                }
            })?;
        // Digits past 30 cannot change a u128 product that must fit 64 bits; the overflow
        // check below refuses what is too large.
        if int.len() > 30 {
            return Err(bad("too large"));
        }
        let whole: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| bad("too large"))?
        };
        let mut part = whole.checked_mul(per).ok_or_else(|| bad("too large"))?;
        // The fraction, to the nanosecond (further digits are dropped, as Go rounds down).
        let mut scale = per;
        for d in frac.bytes() {
            if scale < 10 {
                break;
            }
            scale /= 10;
            part = part
                .checked_add(u128::from(d - b'0') * scale)
                .ok_or_else(|| bad("too large"))?;
        }
        total = total.checked_add(part).ok_or_else(|| bad("too large"))?;
        if total > u128::from(i64::MAX as u64) {
            return Err(bad("too large (Go durations stop at about 292 years)"));
        }
        rest = after;
    }
    Ok(Duration::from_nanos(total as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_go_writes() {
        let ms = Duration::from_millis;
        for (raw, want) in [
            ("0", Duration::ZERO),
            ("10s", ms(10_000)),
            ("1m0s", ms(60_000)),
            ("500ms", ms(500)),
            ("1h2m3.5s", ms(3_723_500)),
            ("1.5h", ms(5_400_000)),
            (".5s", ms(500)),
            ("5.s", ms(5_000)),
            ("+3s", ms(3_000)),
            ("300000ms", ms(300_000)),
            ("1us", Duration::from_micros(1)),
            ("1\u{b5}s", Duration::from_micros(1)),
            ("1\u{3bc}s", Duration::from_micros(1)),
            ("2ns", Duration::from_nanos(2)),
            ("1.000000001s", Duration::from_nanos(1_000_000_001)),
            ("1.0000000019s", Duration::from_nanos(1_000_000_001)),
            ("72h3m0.5s", ms(72 * 3_600_000 + 180_000 + 500)),
        ] {
            assert_eq!(parse(raw), Ok(want), "{raw}");
        }
    }

    #[test]
    fn refuses_what_go_refuses_and_negatives() {
        for raw in [
            "",
            "s",
            "10",
            "1.5",
            ".",
            "-1s",
            "1x",
            "1 s",
            "1s ",
            "1m-1s",
            "1sec",
            "1min",
            "10S",
            "99999999999h",
            "1e3s",
            // The most whole hours a u128 of nanoseconds holds, and a fraction past it.
            "94522879700260684295381835.9999999999999h",
        ] {
            assert!(parse(raw).is_err(), "{raw:?} parsed");
        }
        assert!(parse("10").unwrap_err().contains("needs a unit"));
    }
}
