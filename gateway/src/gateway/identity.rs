//! Who the client is: an index from pod IP to the pod's namespace, name,
//! service account and labels, kept from a watch of pods, looked up once per
//! client connection by its source address.
//!
//! Only what the identity keys need is kept, so memory stays bounded
//! (`cargo run --release -p egress-gateway --example identity_index` prints
//! bytes per pod). Host-network pods share their node's address and are
//! never indexed. An address belongs to the pod that claimed it last: a
//! deletion that arrives after the address was reused by another pod does not
//! remove the new owner.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use egress_policy::SourceIdentity;

/// What the index needs of a pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodView {
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `spec.serviceAccountName` (`default` when unset).
    pub service_account: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `status.podIPs`.
    pub ips: Vec<IpAddr>,
    /// `spec.hostNetwork`.
    pub host_network: bool,
    /// Phase `Succeeded` or `Failed`: its addresses may go to other pods.
    pub finished: bool,
}

#[derive(Debug)]
struct Owner {
    uid: Box<str>,
    identity: Arc<SourceIdentity>,
}

/// The index (pure; see [`Identities`] for the shared, locked one).
#[derive(Debug, Default)]
pub struct PodIndex {
    by_ip: HashMap<IpAddr, Owner>,
    ips_of: HashMap<Box<str>, Vec<IpAddr>>,
}

impl PodIndex {
    /// Adds or updates a pod.
    pub fn apply(&mut self, pod: &PodView) {
        let keep: Vec<IpAddr> = if pod.host_network || pod.finished {
            Vec::new()
        } else {
            pod.ips.iter().map(|ip| ip.to_canonical()).collect()
        };
        // Addresses the pod no longer has.
        if let Some(old) = self.ips_of.get(pod.uid.as_str()) {
            let gone: Vec<IpAddr> = old
                .iter()
                .filter(|ip| !keep.contains(ip))
                .copied()
                .collect();
            for ip in gone {
                self.release(&pod.uid, ip);
            }
        }
        if keep.is_empty() {
            self.ips_of.remove(pod.uid.as_str());
            return;
        }
        let identity = Arc::new(SourceIdentity {
            namespace: pod.namespace.clone(),
            service_account: pod.service_account.clone(),
            pod: pod.name.clone(),
            labels: pod.labels.clone(),
        });
        for ip in &keep {
            let previous = self.by_ip.insert(
                *ip,
                Owner {
                    uid: pod.uid.as_str().into(),
                    identity: identity.clone(),
                },
            );
            // The address was another pod's: it is no longer.
            if let Some(previous) = previous
                && *previous.uid != *pod.uid
                && let Some(theirs) = self.ips_of.get_mut(&previous.uid)
            {
                theirs.retain(|other| other != ip);
                // A pod with no address left is not indexed at all (so
                // every entry here is found through an address it owns).
                if theirs.is_empty() {
                    self.ips_of.remove(&previous.uid);
                }
            }
        }
        self.ips_of.insert(pod.uid.as_str().into(), keep);
    }

    /// Removes a deleted pod's addresses, those it still owns.
    pub fn delete(&mut self, uid: &str) {
        if let Some(ips) = self.ips_of.remove(uid) {
            for ip in ips {
                if self.by_ip.get(&ip).is_some_and(|o| &*o.uid == uid) {
                    self.by_ip.remove(&ip);
                }
            }
        }
    }

    fn release(&mut self, uid: &str, ip: IpAddr) {
        if self.by_ip.get(&ip).is_some_and(|o| &*o.uid == uid) {
            self.by_ip.remove(&ip);
        }
    }

    /// Replaces the pods of `namespace` (after a re-list of it); other
    /// namespaces' stay.
    pub fn replace_namespace(&mut self, namespace: &str, pods: &[PodView]) {
        self.remove_namespace(namespace);
        for pod in pods {
            self.apply(pod);
        }
    }

    /// Removes every pod of `namespace` (no longer served).
    pub fn remove_namespace(&mut self, namespace: &str) {
        let uids: std::collections::HashSet<Box<str>> = self
            .by_ip
            .values()
            .filter(|owner| owner.identity.namespace == namespace)
            .map(|owner| owner.uid.clone())
            .collect();
        for uid in uids {
            self.delete(&uid);
        }
    }

    /// The pod at `ip`, if any.
    pub fn lookup(&self, ip: IpAddr) -> Option<Arc<SourceIdentity>> {
        self.by_ip
            .get(&ip.to_canonical())
            .map(|o| o.identity.clone())
    }

    /// Addresses indexed.
    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    /// Heap bytes the index holds, counted from its allocations' capacities
    /// (what a memory profile would attribute to it, allocator overhead aside).
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        let table = |capacity: usize, entry: usize| capacity * (entry + 1);
        let mut bytes = table(self.by_ip.capacity(), size_of::<(IpAddr, Owner)>())
            + table(self.ips_of.capacity(), size_of::<(Box<str>, Vec<IpAddr>)>());
        let mut identities = std::collections::HashSet::new();
        for owner in self.by_ip.values() {
            bytes += owner.uid.len();
            // Pods with several addresses share one identity.
            if identities.insert(Arc::as_ptr(&owner.identity)) {
                let id = &owner.identity;
                bytes += size_of::<SourceIdentity>() + 2 * size_of::<usize>();
                bytes +=
                    id.namespace.capacity() + id.pod.capacity() + id.service_account.capacity();
                // A B-tree node holds up to 11 entries; count what is used.
                bytes += id
                    .labels
                    .iter()
                    .map(|(k, v)| k.capacity() + v.capacity() + 2 * size_of::<String>())
                    .sum::<usize>();
            }
        }
        for (uid, ips) in &self.ips_of {
            bytes += uid.len() + ips.capacity() * size_of::<IpAddr>();
        }
        bytes
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }
}

/// The index shared by the pod watcher (writer) and every connection (readers).
#[derive(Debug, Default)]
pub struct Identities {
    index: RwLock<PodIndex>,
}

impl Identities {
    /// The pod at `ip`, if any.
    pub fn lookup(&self, ip: IpAddr) -> Option<Arc<SourceIdentity>> {
        self.index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .lookup(ip)
    }

    /// Changes the index.
    pub fn update(&self, change: impl FnOnce(&mut PodIndex)) {
        change(&mut self.index.write().unwrap_or_else(|e| e.into_inner()));
    }

    /// Addresses indexed.
    pub fn len(&self) -> usize {
        self.index.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, name: &str, ips: &[&str]) -> PodView {
        PodView {
            uid: uid.to_owned(),
            namespace: "team-a".to_owned(),
            name: name.to_owned(),
            service_account: "default".to_owned(),
            labels: BTreeMap::from([("app".to_owned(), name.to_owned())]),
            ips: ips.iter().map(|ip| ip.parse().expect("ip")).collect(),
            ..PodView::default()
        }
    }

    fn at(index: &PodIndex, ip: &str) -> Option<String> {
        index.lookup(ip.parse().expect("ip")).map(|i| i.pod.clone())
    }

    #[test]
    fn add_update_and_delete() {
        let mut index = PodIndex::default();
        index.apply(&pod("u1", "web", &[]));
        assert!(index.is_empty(), "no address yet");
        index.apply(&pod("u1", "web", &["10.0.0.5", "fd00::5"]));
        assert_eq!(at(&index, "10.0.0.5").as_deref(), Some("web"));
        assert_eq!(at(&index, "fd00::5").as_deref(), Some("web"));
        assert_eq!(
            at(&index, "::ffff:10.0.0.5").as_deref(),
            Some("web"),
            "mapped addresses too"
        );
        let mut relabelled = pod("u1", "web", &["10.0.0.5"]);
        relabelled
            .labels
            .insert("tier".to_owned(), "front".to_owned());
        index.apply(&relabelled);
        let identity = index.lookup("10.0.0.5".parse().expect("ip")).expect("web");
        assert_eq!(identity.labels["tier"], "front");
        assert_eq!(
            at(&index, "fd00::5"),
            None,
            "an address the pod lost is gone"
        );
        index.delete("u1");
        assert!(index.is_empty());
    }

    #[test]
    fn a_reused_address_belongs_to_its_new_pod() {
        let mut index = PodIndex::default();
        index.apply(&pod("old", "old", &["10.0.0.7"]));
        index.apply(&pod("new", "new", &["10.0.0.7"]));
        assert_eq!(at(&index, "10.0.0.7").as_deref(), Some("new"));
        // The old pod's deletion arrives late: the new owner stays.
        index.delete("old");
        assert_eq!(at(&index, "10.0.0.7").as_deref(), Some("new"));
        // A finished pod gives its address up.
        let mut done = pod("new", "new", &["10.0.0.7"]);
        done.finished = true;
        index.apply(&done);
        assert_eq!(at(&index, "10.0.0.7"), None);
    }

    #[test]
    fn host_network_pods_are_never_indexed() {
        let mut index = PodIndex::default();
        let mut node_agent = pod("u9", "agent", &["192.168.1.10"]);
        node_agent.host_network = true;
        index.apply(&node_agent);
        assert_eq!(at(&index, "192.168.1.10"), None);
    }

    #[test]
    fn a_namespace_is_relisted_or_dropped_without_touching_the_others() {
        let mut index = PodIndex::default();
        let mut other = pod("o", "other", &["10.0.1.1"]);
        other.namespace = "team-b".to_owned();
        index.apply(&other);
        index.apply(&pod("gone", "gone", &["10.0.0.9"]));
        index.replace_namespace(
            "team-a",
            &[pod("a", "a", &["10.0.0.1"]), pod("b", "b", &["10.0.0.2"])],
        );
        assert_eq!(index.len(), 3);
        assert_eq!(at(&index, "10.0.0.2").as_deref(), Some("b"));
        assert_eq!(at(&index, "10.0.0.9"), None, "not in the new list");
        assert_eq!(at(&index, "10.0.1.1").as_deref(), Some("other"));
        index.remove_namespace("team-a");
        assert_eq!(index.len(), 1);
        assert_eq!(at(&index, "10.0.1.1").as_deref(), Some("other"));
    }
}
