//! Network addresses as logs write them, for every place that reads one.

use std::net::{IpAddr, Ipv4Addr};

/// Parses an address, accepting dotted IPv4 with zero-padded octets
/// (`035.249.253.232` is 35.249.253.232) besides what `std` takes. The
/// standard parser rejects padding because some C parsers read a leading
/// zero as octal; logs that pad (anonymisers, some appliances) mean decimal,
/// and an address that does not parse silently drops out of every network
/// comparison.
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    s.parse().ok().or_else(|| padded_v4(s).map(IpAddr::V4))
}

/// The standard text of an address `std` rejects only for its zero-padded
/// octets; `None` for any other text (standard already, or no address).
pub fn unpadded(s: &str) -> Option<String> {
    if s.parse::<IpAddr>().is_ok() {
        return None;
    }
    padded_v4(s).map(|a| a.to_string())
}

fn padded_v4(s: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = s.split('.');
    for o in &mut octets {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *o = p.parse().ok()?;
    }
    parts.next().is_none().then(|| Ipv4Addr::from(octets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_octets_are_decimal() {
        assert_eq!(parse_ip("035.249.253.232"), "35.249.253.232".parse().ok());
        assert_eq!(parse_ip(" 010.001.002.003 "), "10.1.2.3".parse().ok());
        assert_eq!(unpadded("035.249.253.232").as_deref(), Some("35.249.253.232"));
        assert_eq!(unpadded("000.000.000.000").as_deref(), Some("0.0.0.0"));
        // Standard text and non-addresses are left as they are.
        assert_eq!(unpadded("35.249.253.232"), None);
        assert_eq!(unpadded("2001:db8::1"), None);
        for junk in ["256.1.1.1", "0035.1.1.1", "1.2.3", "1.2.3.4.5", "1..2.3", "ec2.amazonaws.com", "", "1.2.3.+4"] {
            assert_eq!(unpadded(junk), None, "{junk}");
            assert_eq!(parse_ip(junk), None, "{junk}");
        }
        assert_eq!(parse_ip("2001:db8::1"), "2001:db8::1".parse().ok());
    }
}
