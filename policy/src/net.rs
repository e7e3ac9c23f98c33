//! Addresses and CIDRs as policies write them: one reading for conditions,
//! the private-destination exceptions and credentials' source CIDRs.

use std::net::IpAddr;

use ipnet::IpNet;

/// A CIDR (host bits are ignored, as the cloud API does) or a single address.
/// IPv4-mapped IPv6 values are read as the IPv4 they carry, like request
/// addresses, so they can match.
pub(crate) fn parse_net(value: &str) -> Result<IpNet, String> {
    if value.contains('/') {
        let net: IpNet = value
            .parse()
            .map_err(|_| format!("{value:?} is not a CIDR"))?;
        if let IpNet::V6(v6) = net
            && let Some(v4) = v6.addr().to_ipv4_mapped()
            && v6.prefix_len() >= 96
        {
            let v4 = ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map_err(|_| format!("{value:?} is not a CIDR"))?;
            return Ok(IpNet::V4(v4.trunc()));
        }
        Ok(net.trunc())
    } else {
        let addr: IpAddr = value
            .parse()
            .map_err(|_| format!("{value:?} is not an IP address or CIDR"))?;
        Ok(IpNet::from(addr.to_canonical()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(value: &str) -> String {
        parse_net(value).expect(value).to_string()
    }

    #[test]
    fn addresses_and_cidrs_are_read_as_request_addresses_are_matched() {
        assert_eq!(read("10.1.2.3/8"), "10.0.0.0/8");
        assert_eq!(read("10.1.2.3"), "10.1.2.3/32");
        assert_eq!(read("::ffff:10.1.2.3"), "10.1.2.3/32");
        assert_eq!(read("::ffff:10.0.0.0/104"), "10.0.0.0/8");
        assert_eq!(read("fd00::1/8"), "fd00::/8");
        assert!(parse_net("10.0.0.0/33").is_err());
        assert!(parse_net("example.com").is_err());
    }
}
