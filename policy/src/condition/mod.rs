//! Compiled conditions: a key and a matcher of the key's own type.
//!
//! A missing value (an HTTP key on a tunnel that is not intercepted, a pod label
//! the client does not have) never matches, for negated operators too.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::context::RequestContext;
use crate::domain::is_dns_name;
use crate::domain_value::{DomainSet, DomainValue, DomainValueRef};
use crate::glob::Glob;
use crate::key::{ConditionKey, IpKey, NumberKey, TextKey};
use crate::net::parse_net;
use crate::operator::Operator;
use crate::time::TimeBound;

/// A condition ready to evaluate.
#[derive(Clone, Debug)]
pub(crate) enum Condition {
    Text {
        key: TextKey,
        negated: bool,
        test: TextTest,
    },
    Domain {
        negated: bool,
        test: DomainTest,
    },
    Number {
        key: NumberKey,
        op: Comparison,
        values: Vec<f64>,
    },
    Ip {
        key: IpKey,
        negated: bool,
        nets: Vec<IpNet>,
    },
    Time {
        op: Comparison,
        bounds: Vec<TimeBound>,
    },
}

#[derive(Clone, Debug)]
pub(crate) enum TextTest {
    Equals(Vec<Box<str>>),
    /// Values stored lower-case.
    EqualsIgnoreCase(Vec<Box<str>>),
    Like(Vec<Glob>),
}

#[derive(Clone, Debug)]
pub(crate) enum DomainTest {
    /// Shared with the index when it probes the set itself.
    Equals(Arc<DomainSet>),
    /// Patterns stored lower-case.
    Like(Vec<Glob>),
}

/// How a number or a time compares with a condition's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Comparison {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Comparison {
    fn of(operator: Operator) -> Comparison {
        use Operator::*;
        match operator {
            NumericEquals | DateEquals => Comparison::Eq,
            NumericNotEquals | DateNotEquals => Comparison::Ne,
            NumericLessThan | DateLessThan => Comparison::Lt,
            NumericLessThanEquals | DateLessThanEquals => Comparison::Le,
            NumericGreaterThan | DateGreaterThan => Comparison::Gt,
            _ => Comparison::Ge,
        }
    }

    /// Whether `actual` compared with the values (`ordering(value)` is how
    /// `actual` compares with one) satisfies it: any value for the positive
    /// comparisons, every value for `Ne`.
    fn holds<T>(self, values: &[T], ordering: impl Fn(&T) -> Option<std::cmp::Ordering>) -> bool {
        use std::cmp::Ordering::*;
        let test = |v: &T| match (self, ordering(v)) {
            (_, None) => self == Comparison::Ne,
            (Comparison::Eq, Some(o)) => o == Equal,
            (Comparison::Ne, Some(o)) => o != Equal,
            (Comparison::Lt, Some(o)) => o == Less,
            (Comparison::Le, Some(o)) => o != Greater,
            (Comparison::Gt, Some(o)) => o == Greater,
            (Comparison::Ge, Some(o)) => o != Less,
        };
        if self == Comparison::Ne {
            values.iter().all(test)
        } else {
            values.iter().any(test)
        }
    }
}

/// Domain sets with more values than this are asked by the index directly
/// (one probe per request) instead of filing an entry per value.
const SET_PROBE_SIZE: usize = 256;

/// Where an index may file a rule: one entry per value of a positive
/// condition; a request can only satisfy the condition if it hits one of them.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum IndexEntry<'a> {
    /// The domain equals this name.
    DomainExact(&'a str),
    /// The domain is this apex or below it.
    DomainSuffix(&'a str),
    /// The domain matches this set, asked directly: a set this large would
    /// file one entry per value.
    DomainSet(&'a Arc<DomainSet>),
    /// A text key equals this value (`lowercase`: compared lower-case).
    Text {
        key: &'a TextKey,
        lowercase: bool,
        value: &'a str,
    },
    /// A number key equals this (whole) value.
    Number { key: NumberKey, value: i64 },
    /// An IP key falls in this bucket.
    Ip { key: IpKey, bucket: IpBucket },
    /// The domain (`key` None) or a text key contains this literal.
    Literal {
        key: Option<&'a TextKey>,
        literal: &'a str,
    },
}

/// Coarse IP buckets: IPv4 by first octet (prefixes of /8 or longer), IPv6 by
/// first 16 bits (prefixes of /16 or longer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum IpBucket {
    V4(u8),
    V6(u16),
}

impl IpBucket {
    pub(crate) fn of(ip: IpAddr) -> IpBucket {
        match ip {
            IpAddr::V4(v4) => IpBucket::V4(v4.octets()[0]),
            IpAddr::V6(v6) => IpBucket::V6(v6.segments()[0]),
        }
    }

    fn of_net(net: &IpNet) -> Option<IpBucket> {
        match net {
            IpNet::V4(n) if n.prefix_len() >= 8 => Some(IpBucket::of(IpAddr::V4(n.addr()))),
            IpNet::V6(n) if n.prefix_len() >= 16 => Some(IpBucket::of(IpAddr::V6(n.addr()))),
            _ => None,
        }
    }
}

impl Condition {
    /// Checks the values for `operator` on `key` without building anything;
    /// `Err` carries `(value index, message)` for each bad value.
    pub(crate) fn check(
        key: &ConditionKey,
        operator: Operator,
        values: &[String],
    ) -> Result<(), Vec<(usize, String)>> {
        let mut errors = Vec::new();
        let mut parse_all = |parse: &dyn Fn(&str) -> Result<(), String>| {
            for (i, value) in values.iter().enumerate() {
                if let Err(message) = parse(value) {
                    errors.push((i, message));
                }
            }
        };
        match (key, operator) {
            (ConditionKey::DestinationDomain, Operator::StringLike | Operator::StringNotLike) => {
                parse_all(&|v| check_domain_glob(v))
            }
            (ConditionKey::DestinationDomain, _) => parse_all(&|v| {
                DomainValue::parse(v).map(|_| ()).ok_or_else(|| {
                    format!(
                        "{v:?} is not a domain name (expected a name like example.com, or .example.com for the apex and all its subdomains)"
                    )
                })
            }),
            (ConditionKey::Text(_), Operator::StringLike | Operator::StringNotLike) => {
                parse_all(&|v| check_glob(v))
            }
            (ConditionKey::Text(_), _) => {}
            (ConditionKey::Number(_), _) => parse_all(&|v| parse_number(v).map(|_| ())),
            (ConditionKey::Ip(_), _) => parse_all(&|v| parse_net(v).map(|_| ())),
            (ConditionKey::Time, _) => parse_all(&|v| TimeBound::parse(v).map(|_| ())),
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Builds the condition from already-parsed key and operator; the values are
    /// checked here ([`Condition::check`]), all errors reported together.
    pub(crate) fn build(
        key: ConditionKey,
        operator: Operator,
        values: &[String],
    ) -> Result<Condition, Vec<(usize, String)>> {
        let negated = operator.is_negated();
        Self::check(&key, operator, values)?;
        let fail = |_| vec![(0, "internal: value check and parse disagree".to_owned())];
        Ok(match key {
            ConditionKey::Text(key) => {
                let test = match operator {
                    Operator::StringEquals | Operator::StringNotEquals => {
                        TextTest::Equals(values.iter().map(|v| v.as_str().into()).collect())
                    }
                    Operator::StringEqualsIgnoreCase | Operator::StringNotEqualsIgnoreCase => {
                        TextTest::EqualsIgnoreCase(
                            values.iter().map(|v| v.to_lowercase().into()).collect(),
                        )
                    }
                    _ => TextTest::Like(values.iter().map(|v| Glob::new(v)).collect()),
                };
                Condition::Text { key, negated, test }
            }
            ConditionKey::DestinationDomain => {
                let test = match operator {
                    Operator::StringLike | Operator::StringNotLike => DomainTest::Like(
                        values
                            .iter()
                            .map(|v| Glob::new(&crate::domain::normalize(v)))
                            .collect(),
                    ),
                    _ => DomainTest::Equals(Arc::new(
                        values
                            .iter()
                            .filter_map(|v| DomainValue::parse(v))
                            .collect(),
                    )),
                };
                Condition::Domain { negated, test }
            }
            ConditionKey::Number(key) => Condition::Number {
                key,
                op: Comparison::of(operator),
                values: values
                    .iter()
                    .map(|v| parse_number(v))
                    .collect::<Result<_, _>>()
                    .map_err(fail)?,
            },
            ConditionKey::Ip(key) => Condition::Ip {
                key,
                negated,
                nets: values
                    .iter()
                    .map(|v| parse_net(v))
                    .collect::<Result<_, _>>()
                    .map_err(fail)?,
            },
            ConditionKey::Time => Condition::Time {
                op: Comparison::of(operator),
                bounds: values
                    .iter()
                    .map(|v| TimeBound::parse(v))
                    .collect::<Result<_, _>>()
                    .map_err(fail)?,
            },
        })
    }

    /// Whether the condition holds for the request.
    pub(crate) fn holds(&self, ctx: &RequestContext<'_>) -> bool {
        match self {
            Condition::Text { key, negated, test } => {
                let mut present = false;
                let mut matched = false;
                ctx.for_each_text(key, |actual| {
                    present = true;
                    matched = test.matches(actual);
                    matched // stop at the first matching value
                });
                present && matched != *negated
            }
            Condition::Domain { negated, test } => match &ctx.destination_domain {
                Some(domain) => test.matches(domain.as_str()) != *negated,
                None => false,
            },
            Condition::Number { key, op, values } => match ctx.number(*key) {
                Some(actual) => op.holds(values, |v| (actual as f64).partial_cmp(v)),
                None => false,
            },
            Condition::Ip { key, negated, nets } => match ctx.ip(*key) {
                Some(actual) => nets.iter().any(|net| net.contains(&actual)) != *negated,
                None => false,
            },
            Condition::Time { op, bounds } => match ctx.time {
                Some(now) => op.holds(bounds, |b| Some(b.compare(now))),
                None => false,
            },
        }
    }

    /// The index entries of a positive condition whose every value has one,
    /// with a rank (lower is more selective) to choose among a rule's conditions.
    pub(crate) fn index_entries(&self) -> Option<(u8, Vec<IndexEntry<'_>>)> {
        fn all<'a, T: 'a>(
            items: impl IntoIterator<Item = &'a T>,
            f: impl Fn(&'a T) -> Option<IndexEntry<'a>>,
        ) -> Option<Vec<IndexEntry<'a>>> {
            items.into_iter().map(f).collect()
        }
        match self {
            Condition::Domain {
                negated: false,
                test: DomainTest::Equals(set),
            } if set.len() > SET_PROBE_SIZE => Some((0, vec![IndexEntry::DomainSet(set)])),
            Condition::Domain {
                negated: false,
                test: DomainTest::Equals(set),
            } => Some((
                0,
                set.values()
                    .map(|v| match v {
                        DomainValueRef::Exact(name) => IndexEntry::DomainExact(name),
                        DomainValueRef::ApexAndSubdomains(apex) => IndexEntry::DomainSuffix(apex),
                    })
                    .collect(),
            )),
            Condition::Domain {
                negated: false,
                test: DomainTest::Like(globs),
            } => {
                let entries = all(globs, domain_glob)?;
                Some((glob_rank(&entries, 0), entries))
            }
            Condition::Text {
                key,
                negated: false,
                test,
            } => match test {
                TextTest::Equals(values) | TextTest::EqualsIgnoreCase(values) => {
                    // Values of `EqualsIgnoreCase` are stored lower-case.
                    let lowercase = matches!(test, TextTest::EqualsIgnoreCase(_));
                    all(values, |value| {
                        Some(IndexEntry::Text {
                            key,
                            lowercase,
                            value,
                        })
                    })
                    .map(|e| (1, e))
                }
                TextTest::Like(globs) => {
                    let entries = all(globs, |g| text_glob(key, g))?;
                    Some((glob_rank(&entries, 1), entries))
                }
            },
            // Whole values only (a key's numbers are whole: a decimal value
            // never equals one, and leaves the rule out of the index).
            Condition::Number {
                key,
                op: Comparison::Eq,
                values,
            } => all(values, |v| {
                (v.fract() == 0.0 && v.abs() < 9.0e15).then_some(IndexEntry::Number {
                    key: *key,
                    value: *v as i64,
                })
            })
            .map(|e| (1, e)),
            Condition::Ip {
                key,
                negated: false,
                nets,
            } => all(nets, |n| {
                IpBucket::of_net(n).map(|bucket| IndexEntry::Ip { key: *key, bucket })
            })
            .map(|e| (2, e)),
            _ => None,
        }
    }

    /// Relative cost, so cheap conditions of a rule are tried first.
    pub(crate) fn cost(&self) -> u8 {
        match self {
            Condition::Number { .. } | Condition::Ip { .. } | Condition::Time { .. } => 0,
            Condition::Domain {
                test: DomainTest::Equals(_),
                ..
            } => 1,
            Condition::Text {
                test: TextTest::Equals(_),
                ..
            } => 1,
            _ => 2,
        }
    }
}

/// The rank of a glob condition's index entries: `rank`, unless one of them
/// is only a literal the value must contain (the least selective entry).
fn glob_rank(entries: &[IndexEntry<'_>], rank: u8) -> u8 {
    if entries
        .iter()
        .any(|e| matches!(e, IndexEntry::Literal { .. }))
    {
        3
    } else {
        rank
    }
}

fn text_glob<'a>(key: &'a TextKey, glob: &'a Glob) -> Option<IndexEntry<'a>> {
    match glob.exact() {
        Some(value) => Some(IndexEntry::Text {
            key,
            lowercase: false,
            value,
        }),
        None => glob.required_literal().map(|literal| IndexEntry::Literal {
            key: Some(key),
            literal,
        }),
    }
}

fn domain_glob(glob: &Glob) -> Option<IndexEntry<'_>> {
    if let Some(name) = glob.exact() {
        return Some(IndexEntry::DomainExact(name));
    }
    // `*.example.com` can only match below example.com: file it under that suffix.
    let below = glob
        .literal_suffix()
        .and_then(|s| s.strip_prefix('.'))
        .filter(|apex| is_dns_name(apex));
    match below {
        Some(apex) => Some(IndexEntry::DomainSuffix(apex)),
        None => glob
            .required_literal()
            .map(|literal| IndexEntry::Literal { key: None, literal }),
    }
}

impl TextTest {
    fn matches(&self, actual: &str) -> bool {
        match self {
            TextTest::Equals(values) => values.iter().any(|v| &**v == actual),
            TextTest::EqualsIgnoreCase(values) => values.iter().any(|v| eq_lowercase(actual, v)),
            TextTest::Like(globs) => globs.iter().any(|g| g.matches(actual)),
        }
    }
}

impl DomainTest {
    fn matches(&self, domain: &str) -> bool {
        match self {
            DomainTest::Equals(set) => set.matches(domain),
            DomainTest::Like(globs) => globs.iter().any(|g| g.matches(domain)),
        }
    }
}

/// `actual` equals `lower` (already lower-case) ignoring case, without allocating.
fn eq_lowercase(actual: &str, lower: &str) -> bool {
    if actual.is_ascii() {
        actual.eq_ignore_ascii_case(lower)
    } else {
        actual
            .chars()
            .flat_map(char::to_lowercase)
            .eq(lower.chars())
    }
}

/// An integer or a decimal number (`404`, `-1`, `2.5`), as IAM's numeric
/// operators take them.
fn parse_number(value: &str) -> Result<f64, String> {
    let text = value.trim();
    let plain = !text.is_empty()
        && text
            .trim_start_matches(['-', '+'])
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.');
    text.parse::<f64>()
        .ok()
        .filter(|n| plain && n.is_finite())
        .ok_or_else(|| {
            format!("{value:?} is not a number (expected an integer or a decimal like 2.5)")
        })
}

const MAX_PATTERN_LEN: usize = 1024;

fn check_glob(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err(
            "an empty pattern only matches the empty string; use StringEquals \"\" for that"
                .to_owned(),
        );
    }
    if pattern.len() > MAX_PATTERN_LEN {
        return Err(format!("pattern is longer than {MAX_PATTERN_LEN} bytes"));
    }
    if pattern.chars().any(char::is_control) {
        return Err(format!("{pattern:?} contains a control character"));
    }
    Ok(())
}

fn check_domain_glob(pattern: &str) -> Result<(), String> {
    check_glob(pattern)?;
    let literal_ok = pattern
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '*' | '?' | ':'));
    if !literal_ok {
        return Err(format!(
            "{pattern:?} is not a domain pattern (letters, digits, '-', '_', '.', and the wildcards '*' and '?')"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
