//! Which rules of a phase can match a request, without looking at them all.
//!
//! Each rule is filed under one of its positive conditions, the most selective
//! that can be indexed: an exact domain or domain suffix, an exact text or
//! number value, an IP bucket, or a literal that a glob requires (found in the
//! request with one Aho-Corasick pass per key). A rule none of whose conditions
//! can be indexed is visited for every request. The rules a request hits are
//! visited in rule order together with those, so first-match semantics hold.

use std::collections::HashMap;
use std::hash::Hash;
use std::ops::ControlFlow;
use std::sync::Arc;

use aho_corasick::AhoCorasick;
use foldhash::fast::RandomState;

use crate::condition::{Condition, IndexEntry, IpBucket};
use crate::context::RequestContext;
use crate::domain_value::DomainSet;
use crate::key::{IpKey, NumberKey, TextKey};

/// Positions of rules in the phase's list, ascending.
type Positions = Vec<u32>;
type Map<K> = HashMap<K, Positions, RandomState>;

/// The index of one phase's rules.
#[derive(Clone, Debug, Default)]
pub(crate) struct RuleIndex {
    domain_exact: Map<Box<str>>,
    domain_suffix: Map<Box<str>>,
    /// Large domain sets, asked in turn, with the rule each belongs to.
    domain_sets: Vec<(Arc<DomainSet>, u32)>,
    text: Vec<TextIndex>,
    numbers: Vec<(NumberKey, Map<i64>)>,
    ips: Vec<(IpKey, Map<IpBucket>)>,
    literals: Vec<LiteralIndex>,
    unindexed: Positions,
}

#[derive(Clone, Debug)]
struct TextIndex {
    key: TextKey,
    lowercase: bool,
    values: Map<Box<str>>,
}

#[derive(Clone, Debug)]
struct LiteralIndex {
    /// `None`: the destination domain.
    key: Option<TextKey>,
    automaton: AhoCorasick,
    /// Rules per automaton pattern.
    positions: Vec<Positions>,
}

/// Collects literals per key before the automata are built.
#[derive(Default)]
struct LiteralsBuilder {
    patterns: Vec<String>,
    ids: HashMap<String, usize>,
    positions: Vec<Positions>,
}

fn file<K: Hash + Eq>(map: &mut Map<K>, key: K, position: u32) {
    let list = map.entry(key).or_default();
    if list.last() != Some(&position) {
        list.push(position);
    }
}

fn find_or_add<'v, K: PartialEq + Clone, V: Default>(
    list: &'v mut Vec<(K, V)>,
    key: &K,
) -> &'v mut V {
    let i = match list.iter().position(|(k, _)| k == key) {
        Some(i) => i,
        None => {
            list.push((key.clone(), V::default()));
            list.len() - 1
        }
    };
    &mut list[i].1
}

impl RuleIndex {
    /// Files every rule; `conditions[i]` are the conditions of rule `i`.
    pub(crate) fn build<'a>(conditions: impl IntoIterator<Item = &'a [Condition]>) -> RuleIndex {
        let mut index = RuleIndex::default();
        let mut literals: Vec<(Option<TextKey>, LiteralsBuilder)> = Vec::new();
        for (position, rule_conditions) in conditions.into_iter().enumerate() {
            let position = u32::try_from(position).unwrap_or(u32::MAX);
            let best = rule_conditions
                .iter()
                .filter_map(Condition::index_entries)
                .min_by_key(|(rank, _)| *rank);
            let Some((_, entries)) = best else {
                index.unindexed.push(position);
                continue;
            };
            for entry in entries {
                match entry {
                    IndexEntry::DomainExact(name) => {
                        file(&mut index.domain_exact, name.into(), position)
                    }
                    IndexEntry::DomainSuffix(apex) => {
                        file(&mut index.domain_suffix, apex.into(), position)
                    }
                    IndexEntry::DomainSet(set) => index.domain_sets.push((set.clone(), position)),
                    IndexEntry::Text {
                        key,
                        lowercase,
                        value,
                    } => {
                        let found = index
                            .text
                            .iter()
                            .position(|t| t.key == *key && t.lowercase == lowercase);
                        let i = found.unwrap_or_else(|| {
                            index.text.push(TextIndex {
                                key: key.clone(),
                                lowercase,
                                values: Map::default(),
                            });
                            index.text.len() - 1
                        });
                        file(&mut index.text[i].values, value.into(), position);
                    }
                    IndexEntry::Number { key, value } => {
                        file(find_or_add(&mut index.numbers, &key), value, position)
                    }
                    IndexEntry::Ip { key, bucket } => {
                        file(find_or_add(&mut index.ips, &key), bucket, position)
                    }
                    IndexEntry::Literal { key, literal } => {
                        let builder = find_or_add(&mut literals, &key.cloned());
                        let next = builder.patterns.len();
                        let id = *builder.ids.entry(literal.to_owned()).or_insert(next);
                        if id == next {
                            builder.patterns.push(literal.to_owned());
                            builder.positions.push(Vec::new());
                        }
                        let list = &mut builder.positions[id];
                        if list.last() != Some(&position) {
                            list.push(position);
                        }
                    }
                }
            }
        }
        for (key, builder) in literals {
            match AhoCorasick::new(&builder.patterns) {
                Ok(automaton) => index.literals.push(LiteralIndex {
                    key,
                    automaton,
                    positions: builder.positions,
                }),
                // Too large for the automaton: those rules are visited every time.
                Err(_) => {
                    index
                        .unindexed
                        .extend(builder.positions.into_iter().flatten());
                    index.unindexed.sort_unstable();
                    index.unindexed.dedup();
                }
            }
        }
        index
    }

    /// Visits, in rule order, every rule position that can match `ctx`.
    pub(crate) fn for_each_candidate(
        &self,
        ctx: &RequestContext<'_>,
        mut visit: impl FnMut(u32) -> ControlFlow<()>,
    ) {
        let hits = self.hits(ctx);
        if hits.is_empty() {
            for &position in &self.unindexed {
                if visit(position).is_break() {
                    return;
                }
            }
            return;
        }
        merge_ascending(&hits, &self.unindexed, visit);
    }

    /// Positions of indexed rules whose index entry the request hits, sorted.
    fn hits(&self, ctx: &RequestContext<'_>) -> Vec<u32> {
        let mut hits = Vec::new();
        if let Some(domain) = &ctx.destination_domain {
            if let Some(list) = self.domain_exact.get(domain.as_str()) {
                hits.extend_from_slice(list);
            }
            if !self.domain_suffix.is_empty() {
                for suffix in domain.suffixes() {
                    if let Some(list) = self.domain_suffix.get(suffix) {
                        hits.extend_from_slice(list);
                    }
                }
            }
            for (set, position) in &self.domain_sets {
                if set.matches(domain.as_str()) {
                    hits.push(*position);
                }
            }
        }
        for index in &self.text {
            ctx.for_each_text(&index.key, |value| {
                let list = if index.lowercase && value.chars().any(char::is_uppercase) {
                    index.values.get(value.to_lowercase().as_str())
                } else {
                    index.values.get(value)
                };
                if let Some(list) = list {
                    hits.extend_from_slice(list);
                }
                false
            });
        }
        for (key, values) in &self.numbers {
            if let Some(list) = ctx.number(*key).and_then(|n| values.get(&n)) {
                hits.extend_from_slice(list);
            }
        }
        for (key, buckets) in &self.ips {
            if let Some(list) = ctx.ip(*key).and_then(|ip| buckets.get(&IpBucket::of(ip))) {
                hits.extend_from_slice(list);
            }
        }
        for index in &self.literals {
            let mut search = |haystack: &str| {
                for found in index.automaton.find_overlapping_iter(haystack) {
                    hits.extend_from_slice(&index.positions[found.pattern().as_usize()]);
                }
            };
            match &index.key {
                None => {
                    if let Some(domain) = &ctx.destination_domain {
                        search(domain.as_str());
                    }
                }
                Some(key) => ctx.for_each_text(key, |value| {
                    search(value);
                    false
                }),
            }
        }
        if hits.len() > 1 {
            hits.sort_unstable();
            hits.dedup();
        }
        hits
    }
}

/// Calls `f` with the union of two ascending lists, ascending and without repeats.
fn merge_ascending(a: &[u32], b: &[u32], mut f: impl FnMut(u32) -> ControlFlow<()>) {
    let (mut i, mut j) = (0, 0);
    loop {
        let next = match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) if x < y => {
                i += 1;
                x
            }
            (Some(&x), Some(&y)) if x > y => {
                j += 1;
                y
            }
            (Some(&x), Some(_)) => {
                i += 1;
                j += 1;
                x
            }
            (Some(&x), None) => {
                i += 1;
                x
            }
            (None, Some(&y)) => {
                j += 1;
                y
            }
            (None, None) => return,
        };
        if f(next).is_break() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_is_ascending_without_repeats_and_stops_on_break() {
        let mut seen = Vec::new();
        merge_ascending(&[1, 4, 9], &[0, 4, 5, 10], |p| {
            seen.push(p);
            ControlFlow::Continue(())
        });
        assert_eq!(seen, [0, 1, 4, 5, 9, 10]);

        let mut seen = Vec::new();
        merge_ascending(&[1, 4], &[2, 3], |p| {
            seen.push(p);
            if p == 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        assert_eq!(seen, [1, 2]);
    }
}
