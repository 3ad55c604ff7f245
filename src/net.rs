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

/// Whether an address is routable on the internet: not private, loopback,
/// link-local or unique-local (nor text that is no address).
pub fn is_public(ip: &str) -> bool {
    match parse_ip(ip) {
        Some(IpAddr::V4(v4)) => !(v4.is_private() || v4.is_loopback() || v4.is_link_local()),
        Some(IpAddr::V6(v6)) => !(v6.is_loopback() || (v6.segments()[0] & 0xfe00) == 0xfc00),
        None => false,
    }
}

/// Whether AWS relayed a request for its caller, so its address is AWS's,
/// not the caller's: the consoles' backends (the S3, RDS or CloudTrail
/// console) call for a console session with user agent `aws-internal/…`,
/// and other internal calls carry the user agent `AWS Internal`; CloudTrail
/// records them from addresses inside AWS. A user agent is the caller's to
/// choose, so it only counts with an address the internet cannot reach: a
/// stolen key used from outside with a forged agent keeps its address.
pub fn relayed_by_aws(source_ip: &str, user_agent: &str) -> bool {
    is_aws_relay_agent(user_agent) && is_relay_address(source_ip)
}

/// The address half of [`relayed_by_aws`]: one the internet cannot reach.
pub fn is_relay_address(source_ip: &str) -> bool {
    !is_public(source_ip)
}

/// The user-agent half of [`relayed_by_aws`].
pub fn is_aws_relay_agent(user_agent: &str) -> bool {
    user_agent.contains("aws-internal/") || user_agent.trim().eq_ignore_ascii_case("AWS Internal")
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

    #[test]
    fn only_an_internal_address_with_an_aws_agent_is_a_relay() {
        let console = "[S3Console/0.4, aws-internal/3 aws-sdk-java/1.12.488 Linux/5.10]";
        assert!(relayed_by_aws("10.8.8.10", console));
        assert!(relayed_by_aws("10.248.16.43", "AWS Internal"));
        assert!(relayed_by_aws("AWS Internal", "AWS Internal"));
        // A forged agent from the internet keeps its address; an ordinary agent is the caller's.
        assert!(!relayed_by_aws("203.0.113.7", console));
        assert!(!relayed_by_aws("10.8.8.10", "aws-cli/2.15.0 Python/3.11"));
        assert!(!relayed_by_aws("10.8.8.10", "boto3 internal-tools/1"));
        assert!(is_public("035.249.253.232") && !is_public("fd00::1") && !is_public("ec2.amazonaws.com"));
    }
}
