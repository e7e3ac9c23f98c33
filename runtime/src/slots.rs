//! Connection slots for the listeners that must answer under a flood (the
//! admin port's probes, the webhook): every connection is accepted at once
//! and then given a slot or closed, so a flood never queues a prober behind
//! it. A cap per peer address keeps one peer (a pod that opens connections
//! and sends nothing) from taking the slots another peer (the kubelet, the
//! API server) needs; the total cap bounds what all of them can take.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Slots: at most `total` connections, at most `per_peer` from one address.
#[derive(Debug)]
pub struct Slots {
    total: usize,
    per_peer: usize,
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's slot, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    peer: IpAddr,
}

impl Slots {
    /// Slots for at most `total` connections, `per_peer` from one address.
    pub fn new(total: usize, per_peer: usize) -> Arc<Slots> {
        Arc::new(Slots {
            total,
            per_peer,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for a connection from `peer`, or `None` when that peer or
    /// everyone together holds all they may (close the connection then).
    pub fn take(self: &Arc<Slots>, peer: IpAddr) -> Option<Slot> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let all: usize = held.values().sum();
        let count = held.entry(peer).or_insert(0);
        if *count >= self.per_peer || all >= self.total {
            if *count == 0 {
                held.remove(&peer);
            }
            return None;
        }
        *count += 1;
        Some(Slot {
            slots: self.clone(),
            peer,
        })
    }

    /// Connections held now.
    pub fn held(&self) -> usize {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.values().sum()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = held.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.peer);
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
    fn one_peer_cannot_take_the_slots_another_needs() {
        let slots = Slots::new(6, 2);
        let flood: Vec<Slot> = (0..10).filter_map(|_| slots.take(ip("10.0.0.9"))).collect();
        assert_eq!(flood.len(), 2, "its own share only");
        let prober = slots.take(ip("10.0.0.1"));
        assert!(prober.is_some(), "another peer is served");
        drop(flood);
        assert_eq!(slots.held(), 1, "slots come back when dropped");
    }

    #[test]
    fn the_total_bounds_every_peer_together() {
        let slots = Slots::new(3, 2);
        let held: Vec<Slot> = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
            .iter()
            .filter_map(|peer| slots.take(ip(peer)))
            .collect();
        assert_eq!(held.len(), 3);
        assert!(slots.take(ip("10.0.0.1")).is_none());
        drop(held);
        assert_eq!(slots.held(), 0);
        assert!(slots.take(ip("10.0.0.1")).is_some());
    }
}
