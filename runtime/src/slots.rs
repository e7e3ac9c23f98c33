//! Connection slots for the listeners that must answer under a flood (the
//! admin port's probes, the webhook): every connection is accepted at once
//! and then given a slot or closed, so a flood never queues a prober behind
//! it. A cap per peer address keeps one peer (a pod that opens connections
//! and sends nothing) from taking more than its share; when all slots are
//! taken, the peer holding the most gives up its oldest connection to a peer
//! holding fewer, so however many peers flood, one that opens a connection
//! now and then (the kubelet, the API server) is served.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// Slots: at most `total` connections, at most `per_peer` from one address.
#[derive(Debug)]
pub struct Slots {
    total: usize,
    per_peer: usize,
    held: Mutex<Held>,
}

/// The connections holding slots, by peer, oldest first.
#[derive(Debug, Default)]
struct Held {
    next: u64,
    by_peer: HashMap<IpAddr, Vec<(u64, CancellationToken)>>,
}

/// One connection's slot, given back when dropped. Serve the connection
/// until [`Slot::evicted`] fires: then another peer needs the slot.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    peer: IpAddr,
    id: u64,
    evicted: CancellationToken,
}

impl Slots {
    /// Slots for at most `total` connections, `per_peer` from one address.
    pub fn new(total: usize, per_peer: usize) -> Arc<Slots> {
        Arc::new(Slots {
            total,
            per_peer,
            held: Mutex::new(Held::default()),
        })
    }

    /// A slot for a connection from `peer`, or `None` when that peer holds
    /// its share, or all slots are taken by peers holding no more than it
    /// would (close the connection then).
    pub fn take(self: &Arc<Slots>, peer: IpAddr) -> Option<Slot> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let mine = held.by_peer.get(&peer).map_or(0, Vec::len);
        if mine >= self.per_peer {
            return None;
        }
        let all: usize = held.by_peer.values().map(Vec::len).sum();
        if all >= self.total {
            // The largest holder; among equals, the one with the oldest
            // connection.
            let (&largest, count) = held
                .by_peer
                .iter()
                .max_by_key(|(_, slots)| {
                    (
                        slots.len(),
                        std::cmp::Reverse(slots.first().map(|(id, _)| *id)),
                    )
                })
                .map(|(peer, slots)| (peer, slots.len()))?;
            if count <= mine + 1 {
                return None;
            }
            let slots = held.by_peer.get_mut(&largest)?;
            let (_, evicted) = slots.remove(0);
            evicted.cancel();
        }
        held.next += 1;
        let (id, evicted) = (held.next, CancellationToken::new());
        held.by_peer
            .entry(peer)
            .or_default()
            .push((id, evicted.clone()));
        Some(Slot {
            slots: self.clone(),
            peer,
            id,
            evicted,
        })
    }

    /// Connections holding slots now.
    pub fn held(&self) -> usize {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.by_peer.values().map(Vec::len).sum()
    }
}

impl Slot {
    /// Completes when the slot is given to another peer: stop serving.
    pub async fn evicted(&self) {
        self.evicted.cancelled().await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slots) = held.by_peer.get_mut(&self.peer) {
            slots.retain(|(id, _)| *id != self.id);
            if slots.is_empty() {
                held.by_peer.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    #[test]
    fn one_peer_cannot_take_more_than_its_share() {
        let slots = Slots::new(6, 2);
        let flood: Vec<Slot> = (0..10).filter_map(|_| slots.take(ip("10.0.0.9"))).collect();
        assert_eq!(flood.len(), 2, "its own share only");
        let prober = slots.take(ip("10.0.0.1"));
        assert!(prober.is_some(), "another peer is served");
        drop(flood);
        assert_eq!(slots.held(), 1, "slots come back when dropped");
    }

    #[test]
    fn when_all_are_taken_the_largest_holder_gives_up_its_oldest() {
        let slots = Slots::new(4, 2);
        let first = slots.take(ip("10.0.0.1")).expect("slot");
        let second = slots.take(ip("10.0.0.1")).expect("slot");
        let third = slots.take(ip("10.0.0.2")).expect("slot");
        let fourth = slots.take(ip("10.0.0.2")).expect("slot");
        assert_eq!(slots.held(), 4);
        // A newcomer is served: the oldest connection of the largest
        // holders is told to go.
        let prober = slots.take(ip("10.0.0.3")).expect("served");
        assert!(first.evicted.is_cancelled());
        assert!(!second.evicted.is_cancelled() && !third.evicted.is_cancelled());
        assert_eq!(slots.held(), 4);
        // Peers holding no more than the asker would are not evicted for it.
        assert!(slots.take(ip("10.0.0.3")).is_none());
        // The evicted connection ending does not give back another's slot.
        drop(first);
        assert_eq!(slots.held(), 4);
        drop((second, third, fourth, prober));
        assert_eq!(slots.held(), 0);
        assert!(slots.take(ip("10.0.0.1")).is_some());
    }
}
