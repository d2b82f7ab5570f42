//! The UE IPv6 prefix pool: one /64 per PDN connection out of a shorter prefix (TS 23.401
//! §5.3.1.2.2: the P-GW allocates a globally unique /64 prefix per UE). The first /64 of the
//! pool belongs to the SGi side (its address routes the whole pool through the TUN), so UEs
//! get the second onwards.

use std::collections::HashSet;
use std::net::Ipv6Addr;

/// Bits of a UE prefix.
pub const UE_PREFIX_LEN: u8 = 64;

#[derive(Debug, Clone)]
pub struct Ipv6Pool {
    /// The pool prefix, host bits zero.
    net: u128,
    prefix_len: u8,
    /// Index (within the pool) of each /64 in use.
    used: HashSet<u64>,
    cursor: u64,
}

impl Ipv6Pool {
    /// `prefix_len` must be 16..=63 so the pool holds the SGi /64 and at least one UE's.
    pub fn new(net: Ipv6Addr, prefix_len: u8) -> Result<Self, String> {
        if !(16..=63).contains(&prefix_len) {
            return Err(format!(
                "UE IPv6 pool prefix /{prefix_len} must be between /16 and /63 (one /64 per UE)"
            ));
        }
        let mask = u128::MAX << (128 - u32::from(prefix_len));
        Ok(Ipv6Pool {
            net: u128::from(net) & mask,
            prefix_len,
            used: HashSet::new(),
            cursor: 1,
        })
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The SGi side's address: `::1` in the pool's first /64.
    pub fn gateway(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.net | 1)
    }

    /// Number of /64s in the pool, the SGi one included.
    fn size(&self) -> u64 {
        // prefix_len >= 16, so this fits in 48 bits.
        1u64 << (UE_PREFIX_LEN - self.prefix_len)
    }

    fn prefix(&self, index: u64) -> Ipv6Addr {
        Ipv6Addr::from(self.net | (u128::from(index) << 64))
    }

    /// The pool index of a UE /64 (host bits zero), or `None` outside the UE range.
    fn index(&self, prefix: Ipv6Addr) -> Option<u64> {
        let a = u128::from(prefix);
        let mask = u128::MAX << (128 - u32::from(self.prefix_len));
        if a & mask != self.net || a as u64 != 0 {
            return None;
        }
        let i = ((a & !mask) >> 64) as u64;
        (i != 0).then_some(i)
    }

    /// Whether `prefix` is a UE /64 of this pool.
    pub fn contains(&self, prefix: Ipv6Addr) -> bool {
        self.index(prefix).is_some()
    }

    /// Next free /64 after the last one handed out (next-fit, as the IPv4 pool).
    pub fn allocate(&mut self) -> Option<Ipv6Addr> {
        let size = self.size();
        for _ in 1..size {
            let i = self.cursor;
            self.cursor = if i + 1 >= size { 1 } else { i + 1 };
            if self.used.insert(i) {
                return Some(self.prefix(i));
            }
        }
        None
    }

    /// Marks a /64 used (restoring sessions); false if outside or taken.
    pub fn reserve(&mut self, prefix: Ipv6Addr) -> bool {
        self.index(prefix).is_some_and(|i| self.used.insert(i))
    }

    pub fn release(&mut self, prefix: Ipv6Addr) {
        if let Some(i) = self.index(prefix) {
            self.used.remove(&i);
        }
    }
}

/// The /64 an IPv6 address belongs to.
pub fn prefix64(a: Ipv6Addr) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(a) & (u128::MAX << 64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn one_64_per_ue_after_the_sgi_one() {
        let mut p = Ipv6Pool::new(a("2001:db8:77::5"), 62).unwrap();
        assert_eq!(p.gateway(), a("2001:db8:77::1"));
        assert_eq!(p.allocate(), Some(a("2001:db8:77:1::")));
        assert_eq!(p.allocate(), Some(a("2001:db8:77:2::")));
        assert_eq!(p.allocate(), Some(a("2001:db8:77:3::")));
        // /62 = four /64s, the first is the SGi side's.
        assert_eq!(p.allocate(), None);
        p.release(a("2001:db8:77:2::"));
        assert_eq!(p.allocate(), Some(a("2001:db8:77:2::")));
        assert!(!p.reserve(a("2001:db8:77:2::")), "taken");
        assert!(!p.reserve(a("2001:db8:77::")), "the SGi /64");
        assert!(!p.reserve(a("2001:db8:78:1::")), "outside");
        assert!(!p.contains(a("2001:db8:77:1::9")), "not a prefix");
        assert_eq!(prefix64(a("2001:db8:77:1::9")), a("2001:db8:77:1::"));
        assert!(Ipv6Pool::new(a("2001:db8::"), 64).is_err());
        assert!(Ipv6Pool::new(a("2001:db8::"), 8).is_err());
    }
}
