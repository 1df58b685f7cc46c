//! Where webhooks may go: public addresses, and whatever the operator's allow-list adds.
//!
//! Loopback, private (RFC 1918, unique-local), link-local, carrier-grade NAT, unspecified,
//! multicast, broadcast, documentation and reserved ranges are refused by default: a webhook URL
//! is given by a client, and the server must not become its way into the internal network
//! (SSRF). The check runs on every address a name resolves to, when a subscription is saved and
//! again when each request connects (a name can resolve elsewhere later), and redirects are never
//! followed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// A CIDR range, e.g. `127.0.0.0/8` or `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (address, prefix) = text.split_once('/').unwrap_or((text, ""));
        let network: IpAddr = address
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an address or CIDR range"))?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix.trim() {
            "" => bits,
            p => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(|| format!("{text:?} has no valid prefix length"))?,
        };
        Ok(Self { network, prefix })
    }
}

impl Cidr {
    pub fn contains(&self, address: IpAddr) -> bool {
        match (self.network, address) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(network) & mask == u32::from(address) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(network) & mask == u128::from(address) & mask
            }
            _ => false,
        }
    }
}

/// The operator's exceptions (`--webhook-allow-cidr`).
#[derive(Debug, Clone, Default)]
pub struct AllowList(Arc<Vec<Cidr>>);

impl AllowList {
    pub fn new(ranges: Vec<Cidr>) -> Self {
        Self(Arc::new(ranges))
    }

    /// Whether a webhook may connect to `address`.
    pub fn permits(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        is_public(address) || self.0.iter().any(|range| range.contains(address))
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is its IPv4 address.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn is_public(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(a: Ipv4Addr) -> bool {
    let [first, second, third, _] = a.octets();
    !(a.is_unspecified()
        || a.is_loopback()
        || a.is_private()
        || a.is_link_local()
        || a.is_multicast()
        || a.is_broadcast()
        || a.is_documentation()
        || first == 0
        || first >= 240 // reserved
        || (first == 100 && (64..128).contains(&second)) // carrier-grade NAT
        || (first == 192 && second == 0 && third == 0) // IETF protocol assignments
        || (first == 198 && (18..20).contains(&second))) // benchmarking
}

fn is_public_v6(a: Ipv6Addr) -> bool {
    let first = a.segments()[0];
    !(a.is_unspecified()
        || a.is_loopback()
        || a.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || (first == 0x2001 && a.segments()[1] == 0x0db8) // documentation
        || (first == 0x0064 && a.segments()[1] == 0xff9b)) // NAT64 (reaches IPv4 inside)
}

/// Resolves `host:port` and keeps the addresses the allow-list permits; an error names why
/// nothing is left. Used when a subscription is saved and, through [`Resolver`], on connect.
pub async fn resolve(
    allow: &AllowList,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, AddressError> {
    let found: Vec<SocketAddr> = match host.trim_matches(['[', ']']).parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|_| AddressError::Unresolved)?
            .collect(),
    };
    if found.is_empty() {
        return Err(AddressError::Unresolved);
    }
    // Every address must pass: a name that also resolves inside is refused as a whole, so a
    // client cannot count on the order addresses are tried in.
    if found.iter().any(|address| !allow.permits(address.ip())) {
        return Err(AddressError::Refused);
    }
    Ok(found)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("the host does not resolve")]
    Unresolved,
    #[error("the host is a loopback, private, link-local or otherwise non-public address")]
    Refused,
}

/// reqwest's DNS hook: every name a webhook request resolves goes through [`resolve`].
pub struct Resolver(pub AllowList);

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.0.clone();
        Box::pin(async move {
            let addresses = resolve(&allow, name.as_str(), 0).await?;
            let addresses: reqwest::dns::Addrs = Box::new(addresses.into_iter());
            Ok(addresses)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn internal_addresses_are_refused_unless_allowed() {
        let none = AllowList::default();
        for refused in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd12::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(!none.permits(ip(refused)), "{refused} is refused");
        }
        for public in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(none.permits(ip(public)), "{public} is public");
        }
        let loopback = AllowList::new(vec!["127.0.0.0/8".parse().expect("cidr")]);
        assert!(loopback.permits(ip("127.0.0.1")));
        assert!(loopback.permits(ip("::ffff:127.0.0.2")));
        assert!(!loopback.permits(ip("10.0.0.1")));
    }

    #[test]
    fn ranges_parse_and_match() {
        let range: Cidr = "10.0.0.0/8".parse().expect("cidr");
        assert!(range.contains(ip("10.255.0.1")));
        assert!(!range.contains(ip("11.0.0.1")));
        let one: Cidr = "::1".parse().expect("an address alone");
        assert!(one.contains(ip("::1")));
        assert!(!one.contains(ip("::2")));
        let all: Cidr = "0.0.0.0/0".parse().expect("cidr");
        assert!(all.contains(ip("203.0.113.9")));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("example.com".parse::<Cidr>().is_err());
    }

    #[tokio::test]
    async fn a_name_is_refused_when_any_of_its_addresses_is() {
        let none = AllowList::default();
        assert_eq!(
            resolve(&none, "localhost", 80).await,
            Err(AddressError::Refused)
        );
        assert_eq!(
            resolve(&none, "[::1]", 80).await,
            Err(AddressError::Refused)
        );
        let loopback = AllowList::new(vec![
            "127.0.0.0/8".parse().expect("cidr"),
            "::1".parse().expect("cidr"),
        ]);
        assert!(resolve(&loopback, "localhost", 80).await.is_ok());
    }
}
