//! What one request costs: the route's `cost`, or the value of its `cost_header`, which must be a
//! whole number from 1 to `max_cost`. Anything else is refused (400), never read as 0 or as the
//! default: a client must not be able to make its requests free, or cheaper than it says.

use http::HeaderMap;

use crate::config::compiled::Cost;

/// The request's cost header was unusable; the error names the header and the range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{header} must be a whole number from 1 to {max}")]
pub(crate) struct BadCost {
    pub(crate) header: String,
    pub(crate) max: u64,
}

/// The units this request charges: `cost.fixed` without the header.
pub(crate) fn of(cost: &Cost, headers: &HeaderMap) -> Result<u64, BadCost> {
    let Some(name) = &cost.header else {
        return Ok(cost.fixed);
    };
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(cost.fixed);
    };
    let bad = || BadCost {
        header: name.as_str().to_owned(),
        max: cost.max,
    };
    // Two values would be ambiguous (the upstream may read either one).
    if values.next().is_some() {
        return Err(bad());
    }
    let text = value.to_str().map_err(|_| bad())?.trim();
    // Plain ASCII digits only: no sign, no exponent, no leading `+` that `parse` would take.
    if text.is_empty() || text.len() > 19 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match text.parse::<u64>() {
        Ok(n) if (1..=cost.max).contains(&n) => Ok(n),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};

    fn cost() -> Cost {
        Cost {
            fixed: 3,
            header: Some(HeaderName::from_static("x-request-cost")),
            max: 100,
        }
    }

    fn with(values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-request-cost", HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn header_or_fixed() {
        assert_eq!(of(&cost(), &HeaderMap::new()), Ok(3));
        assert_eq!(of(&cost(), &with(&["7"])), Ok(7));
        assert_eq!(of(&cost(), &with(&[" 100 "])), Ok(100));
        assert_eq!(of(&Cost::default(), &with(&["50"])), Ok(1));
    }

    #[test]
    fn never_zero_never_out_of_range_never_garbage() {
        for bad in [
            &["0"][..],
            &["101"],
            &["-1"],
            &["+5"],
            &["1e2"],
            &["2.5"],
            &[""],
            &["abc"],
            &["99999999999999999999999"],
            &["1", "2"],
        ] {
            let e = of(&cost(), &with(bad)).unwrap_err();
            assert_eq!(
                e.to_string(),
                "x-request-cost must be a whole number from 1 to 100"
            );
        }
    }
}
