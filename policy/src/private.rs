//! The private-destination guard of design §2: addresses a forward
//! proxy must not reach on a client's behalf unless an operator lists them in
//! `spec.destinations.allowPrivateCIDRs`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Rule name logged when the guard refuses a destination.
pub const PRIVATE_DESTINATION_RULE: &str = "private-destination";

/// Whether `ip` is private, local or otherwise not a public unicast destination:
/// "this network" (0.0.0.0/8, which Linux routes to the host), loopback,
/// link-local (the cloud metadata address 169.254.169.254 among them), RFC 1918,
/// CGNAT (100.64.0.0/10), multicast, reserved and broadcast (240.0.0.0/4),
/// IPv6 unspecified, loopback, link-local, site-local, unique-local and
/// multicast, and IPv6 forms that carry an IPv4 address (IPv4-mapped,
/// IPv4-compatible, NAT64 64:ff9b::/96 and 64:ff9b:1::/48, 6to4 2002::/16),
/// which are judged by the IPv4 address they carry.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => is_private_v4(v4),
            None => is_private_v6(v6),
        },
    }
}

fn is_private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    a == 0
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_private()
        || (a == 100 && (64..128).contains(&b))
        || ip.is_multicast()
        || a >= 240
}

fn is_private_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_unspecified()
        || ip.is_loopback()
        || (first & 0xffc0) == 0xfe80 // link-local
        || (first & 0xffc0) == 0xfec0 // site-local (deprecated, still routed by some stacks)
        || (first & 0xfe00) == 0xfc00 // unique-local
        || ip.is_multicast()
}

/// The IPv4 address carried by an IPv6 address, for the forms that carry one.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, but not :: and ::1)
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(low),
        [0, 0, 0, 0, 0, 0, hi, _] if hi != 0 => Some(low),
        // NAT64 well-known and local-use prefixes
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] | [0x64, 0xff9b, 1, ..] => Some(low),
        // 6to4: 2002:aabb:ccdd::/48
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases = [
            ("0.0.0.0", true),
            ("0.1.2.3", true),
            ("127.0.0.1", true),
            ("127.255.0.9", true),
            ("169.254.169.254", true),
            ("10.1.2.3", true),
            ("172.16.0.1", true),
            ("172.31.255.255", true),
            ("172.32.0.1", false),
            ("192.168.1.1", true),
            ("100.64.0.1", true),
            ("100.127.255.255", true),
            ("100.128.0.1", false),
            ("224.0.0.1", true),
            ("255.255.255.255", true),
            ("8.8.8.8", false),
            ("93.184.215.14", false),
            ("::", true),
            ("::1", true),
            ("fe80::1", true),
            ("fec0::1", true),
            ("fd00::1", true),
            ("fc00::1", true),
            ("ff02::1", true),
            ("2606:4700::1111", false),
            ("::ffff:127.0.0.1", true),
            ("::ffff:169.254.169.254", true),
            ("::ffff:8.8.8.8", false),
            ("::10.0.0.1", true),
            ("64:ff9b::a9fe:a9fe", true),
            ("64:ff9b::808:808", false),
            ("64:ff9b:1::a00:1", true),
            ("2002:7f00:1::", true),
            ("2002:808:808::", false),
        ];
        for (ip, want) in cases {
            let addr: IpAddr = ip.parse().expect(ip);
            assert_eq!(is_private(addr), want, "{ip}");
        }
    }
}
