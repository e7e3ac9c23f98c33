//! Named lists (`ProxyList`): which conditions may use a list, its entries
//! checked on their own, and the values a condition gets from its lists.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::condition::Condition;
use crate::error::CompileError;
use crate::key::{ConditionKey, IpKey, TextKey};
use crate::named::Named;
use crate::operator::Operator;
use crate::spec::{ConditionSpec, ListType, ProxyListSpec, ProxyRuleGroupSpec};

/// Malformed entries reported per list; a list pasted from elsewhere may be
/// wrong throughout, and a status or a terminal cannot show a million errors.
const ENTRY_ERRORS_SHOWN: usize = 10;

/// Lists by name.
pub(crate) type Lists<'a> = HashMap<&'a str, &'a Named<ProxyListSpec>>;

/// `lists` by their names.
pub(crate) fn by_name(lists: &[Named<ProxyListSpec>]) -> Lists<'_> {
    lists.iter().map(|l| (l.name.as_str(), l)).collect()
}

/// Where a rule group's lists come from, as errors name them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ListKind {
    /// `ProxyList` or `ClusterProxyList`.
    pub(crate) kind: &'static str,
    /// Where such lists are looked for.
    pub(crate) place: &'static str,
}

/// The lists of a namespaced rule group.
pub(crate) const NAMESPACED: ListKind = ListKind {
    kind: "ProxyList",
    place: "in the rule group's namespace",
};

/// The lists of a `ClusterProxyRuleGroup`.
pub(crate) const CLUSTER: ListKind = ListKind {
    kind: "ClusterProxyList",
    place: "of the cluster",
};

/// The lists `groups` name that `find` finds, once each, by name.
pub fn named_lists(
    groups: &[Named<ProxyRuleGroupSpec>],
    find: impl Fn(&str) -> Option<ProxyListSpec>,
) -> Vec<Named<ProxyListSpec>> {
    let named: BTreeSet<&str> = groups.iter().flat_map(|g| g.spec.list_names()).collect();
    named
        .into_iter()
        .filter_map(|name| find(name).map(|spec| Named::new(name, spec)))
        .collect()
}

/// Whether a list of this type may give values to `operator` on `key`.
pub(crate) fn fits(list_type: ListType, key: &ConditionKey, operator: Operator) -> bool {
    use Operator::*;
    match list_type {
        ListType::Domains => {
            *key == ConditionKey::DestinationDomain
                && matches!(
                    operator,
                    StringEquals
                        | StringNotEquals
                        | StringEqualsIgnoreCase
                        | StringNotEqualsIgnoreCase
                )
        }
        ListType::Cidrs => matches!(operator, IpAddress | NotIpAddress),
        ListType::Patterns => matches!(operator, StringLike | StringNotLike),
    }
}

/// The conditions a list of this type is for, in words.
fn usage(list_type: ListType) -> &'static str {
    match list_type {
        ListType::Domains => {
            "StringEquals or StringNotEquals (or their IgnoreCase forms) on request:DestinationDomain"
        }
        ListType::Cidrs => "IpAddress or NotIpAddress on an address key",
        ListType::Patterns => "StringLike or StringNotLike on a text or domain key",
    }
}

/// Checks a list's entries by its type; paths start at its spec (`entries[3]`).
pub fn validate_list(spec: &ProxyListSpec) -> Vec<CompileError> {
    let (key, operator) = match spec.list_type {
        ListType::Domains => (ConditionKey::DestinationDomain, Operator::StringEquals),
        ListType::Cidrs => (ConditionKey::Ip(IpKey::SourceIp), Operator::IpAddress),
        ListType::Patterns => (ConditionKey::Text(TextKey::HttpUri), Operator::StringLike),
    };
    match Condition::check(&key, operator, &spec.entries) {
        Ok(()) => Vec::new(),
        Err(bad) => {
            let count = bad.len();
            let mut errors: Vec<CompileError> = bad
                .into_iter()
                .take(ENTRY_ERRORS_SHOWN)
                .map(|(i, message)| CompileError::new(format!("entries[{i}]"), message))
                .collect();
            if count > ENTRY_ERRORS_SHOWN {
                errors.push(CompileError::new("entries", too_many(count)));
            }
            errors
        }
    }
}

fn too_many(count: usize) -> String {
    format!("{count} entries are malformed; the first {ENTRY_ERRORS_SHOWN} are shown")
}

/// The values of a condition: its own, then its lists' entries in the order
/// it names them, with where each came from so an error can point at it.
pub(crate) struct Values<'a> {
    pub(crate) all: Cow<'a, [String]>,
    kind: &'static str,
    /// `(first value index, valuesFrom index, list name)` per list.
    origins: Vec<(usize, usize, &'a str)>,
}

impl<'a> Values<'a> {
    /// The condition's own values only.
    pub(crate) fn inline(condition: &'a ConditionSpec) -> Values<'a> {
        Values {
            all: Cow::Borrowed(&condition.values),
            kind: NAMESPACED.kind,
            origins: Vec::new(),
        }
    }

    /// Gathers the values; `Err` names each list that is missing (`kind`
    /// says where lists are looked for) or does not fit the condition
    /// (paths relative to the condition).
    pub(crate) fn gather(
        condition: &'a ConditionSpec,
        key: &ConditionKey,
        operator: Operator,
        lists: &Lists<'a>,
        ListKind { kind, place }: ListKind,
    ) -> Result<Values<'a>, Vec<CompileError>> {
        let mut errors = Vec::new();
        let mut found = Vec::new();
        for (m, reference) in condition.values_from.iter().enumerate() {
            let path = format!("valuesFrom[{m}].list");
            match lists.get(reference.list.as_str()) {
                None => errors.push(CompileError::new(
                    path,
                    format!("{kind} {:?} not found (a {kind} {place})", reference.list),
                )),
                Some(list) if !fits(list.spec.list_type, key, operator) => {
                    errors.push(CompileError::new(
                        path,
                        format!(
                            "{kind} {:?} holds {}, which are for {}; this condition is {operator} on {key}",
                            reference.list,
                            list.spec.list_type.as_str(),
                            usage(list.spec.list_type)
                        ),
                    ))
                }
                Some(list) => found.push((m, *list)),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        // One list and nothing inline (the common case, and the large one):
        // its entries are used where they are.
        if let ([], [(m, list)]) = (condition.values.as_slice(), found.as_slice()) {
            return Ok(Values {
                all: Cow::Borrowed(&list.spec.entries),
                kind,
                origins: vec![(0, *m, list.name.as_str())],
            });
        }
        let mut all = condition.values.clone();
        let mut origins = Vec::new();
        for (m, list) in found {
            origins.push((all.len(), m, list.name.as_str()));
            all.extend(list.spec.entries.iter().cloned());
        }
        Ok(Values {
            all: Cow::Owned(all),
            kind,
            origins,
        })
    }

    /// Errors for malformed values (`(value index, message)`), each at its
    /// inline value or at the list it came from, naming the entry.
    pub(crate) fn errors(&self, bad: Vec<(usize, String)>) -> Vec<CompileError> {
        let mut errors = Vec::new();
        let mut per_list: BTreeMap<usize, usize> = BTreeMap::new();
        for (v, message) in bad {
            match self.origins.iter().rev().find(|(start, _, _)| *start <= v) {
                None => errors.push(CompileError::new(format!("values[{v}]"), message)),
                Some((start, m, name)) => {
                    let count = per_list.entry(*m).or_default();
                    *count += 1;
                    if *count <= ENTRY_ERRORS_SHOWN {
                        errors.push(CompileError::new(
                            format!("valuesFrom[{m}]"),
                            format!("{} {name:?} entries[{}]: {message}", self.kind, v - start),
                        ));
                    }
                }
            }
        }
        for (m, count) in per_list {
            if count > ENTRY_ERRORS_SHOWN {
                errors.push(CompileError::new(
                    format!("valuesFrom[{m}]"),
                    too_many(count),
                ));
            }
        }
        errors
    }
}
