//! Application requests we sent and still await answers for, with a deadline each. Both
//! ends of a connection may send them (the MME its AIR/ULR/PUR, the HSS its CLR), so the
//! client and the server peer share this bookkeeping.

use std::collections::BTreeMap;
use std::time::Instant;

#[derive(Debug, Default)]
pub(crate) struct Outstanding {
    /// Hop-by-hop id -> (command code, answer deadline).
    by_hop: BTreeMap<u32, (u32, Instant)>,
}

impl Outstanding {
    pub(crate) fn insert(&mut self, hop_by_hop: u32, command_code: u32, deadline: Instant) {
        self.by_hop.insert(hop_by_hop, (command_code, deadline));
    }

    /// Whether `hop_by_hop` answers one of ours; forgets it.
    pub(crate) fn take(&mut self, hop_by_hop: u32) -> bool {
        self.by_hop.remove(&hop_by_hop).is_some()
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.by_hop.values().map(|(_, d)| *d).min()
    }

    /// (hop-by-hop, command code) of the requests whose deadline passed, forgotten.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<(u32, u32)> {
        let gone: Vec<(u32, u32)> = self
            .by_hop
            .iter()
            .filter(|(_, (_, d))| now >= *d)
            .map(|(h, (c, _))| (*h, *c))
            .collect();
        for (h, _) in &gone {
            self.by_hop.remove(h);
        }
        gone
    }

    /// Everything still outstanding, forgotten (the connection went away).
    pub(crate) fn drain(&mut self) -> Vec<(u32, u32)> {
        std::mem::take(&mut self.by_hop)
            .into_iter()
            .map(|(h, (c, _))| (h, c))
            .collect()
    }
}
