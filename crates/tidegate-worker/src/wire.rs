//! The text protocol between the Worker and its counter objects (host-testable).
//!
//! A cell travels as `absent` or `<value> <version>` in decimal: counters are `u64` (a GCRA
//! cell holds nanoseconds since the epoch), more than a JavaScript number holds exactly, so
//! they never pass through JSON numbers.

use tidegate_core::store::Version;

use crate::replay::{CasResult, Cell};

/// Renders a cell.
pub fn cell(c: Cell) -> String {
    match c {
        None => "absent".into(),
        Some((v, ver)) => format!("{v} {}", ver.0),
    }
}

/// Parses a cell; `None` when the text is not one.
pub fn parse_cell(text: &str) -> Option<Cell> {
    let t = text.trim();
    if t == "absent" {
        return Some(None);
    }
    let (v, ver) = t.split_once(' ')?;
    Some(Some((v.parse().ok()?, Version(ver.parse().ok()?))))
}

/// A compare-and-swap request: key, expected version (or `-` for "only if absent"), value.
pub fn cas_request(key: &str, expected: Option<Version>, value: u64) -> String {
    let e = expected.map_or_else(|| "-".to_owned(), |v| v.0.to_string());
    format!("{e} {value}\n{key}")
}

/// Parses a compare-and-swap request.
pub fn parse_cas_request(text: &str) -> Option<(String, Option<Version>, u64)> {
    let (head, key) = text.split_once('\n')?;
    let (e, v) = head.split_once(' ')?;
    let expected = match e {
        "-" => None,
        n => Some(Version(n.parse().ok()?)),
    };
    if key.is_empty() {
        return None;
    }
    Some((key.to_owned(), expected, v.parse().ok()?))
}

/// Renders a compare-and-swap result.
pub fn cas_result(r: &CasResult) -> String {
    match r {
        CasResult::Written(v) => format!("written {}", v.0),
        CasResult::Lost(c) => format!("lost {}", cell(*c)),
    }
}

/// Parses a compare-and-swap result.
pub fn parse_cas_result(text: &str) -> Option<CasResult> {
    let t = text.trim();
    if let Some(v) = t.strip_prefix("written ") {
        return Some(CasResult::Written(Version(v.parse().ok()?)));
    }
    parse_cell(t.strip_prefix("lost ")?).map(CasResult::Lost)
}

/// One step of the object's cell: the compare-and-swap itself, pure. A cell written while
/// absent gets version `first` ([`crate::watch::first_version`]).
pub fn apply_cas(
    current: Cell,
    expected: Option<Version>,
    value: u64,
    first: Version,
) -> (Cell, CasResult) {
    if current.map(|(_, v)| v) != expected {
        return (current, CasResult::Lost(current));
    }
    let next = expected.map_or(first, |v| Version(v.0.wrapping_add(1)));
    (Some((value, next)), CasResult::Written(next))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn big_counters_round_trip_exactly() {
        let c = Some((1_764_000_000_123_456_789u64, Version(u64::MAX)));
        assert_eq!(parse_cell(&cell(c)), Some(c));
        assert_eq!(parse_cell("absent"), Some(None));
        for bad in ["", "1", "x 1", "1 -2", "1 2 3"] {
            assert_eq!(parse_cell(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn cas_messages_round_trip_and_reject_garbage() {
        let r = cas_request("user:a b\nc", Some(Version(7)), 42);
        assert_eq!(
            parse_cas_request(&r),
            Some(("user:a b\nc".into(), Some(Version(7)), 42))
        );
        assert_eq!(
            parse_cas_request(&cas_request("k", None, 1)).unwrap().1,
            None
        );
        for bad in ["", "1 2", "- x\nk", "1 2\n"] {
            assert_eq!(parse_cas_request(bad), None, "{bad:?}");
        }
        for r in [
            CasResult::Written(Version(3)),
            CasResult::Lost(None),
            CasResult::Lost(Some((1, Version(2)))),
        ] {
            assert_eq!(parse_cas_result(&cas_result(&r)), Some(r));
        }
    }

    #[test]
    fn cas_step_is_insert_if_absent_then_versioned() {
        let (c, r) = apply_cas(None, None, 5, Version(1));
        assert_eq!(r, CasResult::Written(Version(1)));
        let (c2, r2) = apply_cas(c, None, 6, Version(9));
        assert_eq!(
            (c2, r2),
            (c, CasResult::Lost(c)),
            "second blind insert loses"
        );
        let (c3, _) = apply_cas(c, Some(Version(1)), 6, Version(9));
        assert_eq!(c3, Some((6, Version(2))));
    }
}
