//! Egress URL guard: SSRF protection for outgoing webhook deliveries.
//!
//! This module owns the decision "may hookledger open a connection to this
//! address?". By default every internal address (loopback, private,
//! link-local, CGNAT, unique-local, multicast, ... see [`InternalKind`]) is
//! refused; operators admit specific receivers through the
//! `HOOKLEDGER_EGRESS_ALLOW` allowlist ([`EgressPolicy::parse_allowlist`]).
//!
//! Invariant: **the address connected to is the address checked; resolution
//! happens once.** [`GuardedResolver`] is installed as reqwest's DNS resolver,
//! performs one lookup per connection, checks every returned address, and
//! fails the whole resolution if any of them is refused. There is no second
//! lookup that a DNS-rebinding attacker could answer differently.
//!
//! IP-literal hosts never reach a resolver, so callers must run
//! [`EgressPolicy::check_url`] on every URL they send to (including redirect
//! targets, if redirects are followed at all).

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

/// A boxed, sendable future (the crate does not depend on `futures`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why an address counts as internal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InternalKind {
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// 0.0.0.0/8, ::.
    Unspecified,
    /// RFC 1918 (10/8, 172.16/12, 192.168/16) and deprecated site-local fec0::/10.
    Private,
    /// 169.254.0.0/16, fe80::/10.
    LinkLocal,
    /// Carrier-grade NAT shared address space 100.64.0.0/10.
    SharedCgnat,
    /// fc00::/7.
    UniqueLocal,
    /// 224.0.0.0/4, ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// 192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32, 3fff::/20.
    Documentation,
    /// 198.18.0.0/15, 2001:2::/48.
    Benchmarking,
    /// 240.0.0.0/4, 192.0.0.0/24 (IETF protocol assignments), 100::/64 (discard).
    Reserved,
}

impl fmt::Display for InternalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Loopback => "loopback",
            Self::Unspecified => "unspecified",
            Self::Private => "private",
            Self::LinkLocal => "link-local",
            Self::SharedCgnat => "shared address space (CGNAT)",
            Self::UniqueLocal => "unique-local",
            Self::Multicast => "multicast",
            Self::Broadcast => "broadcast",
            Self::Documentation => "documentation",
            Self::Benchmarking => "benchmarking",
            Self::Reserved => "reserved",
        })
    }
}

/// Errors raised by the egress guard.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("refused URL scheme {scheme:?}: only http and https are allowed")]
    Scheme { scheme: String },
    #[error("refused URL: it has no host")]
    NoHost,
    #[error(
        "refused host {host}: address {ip} is {kind} (set HOOKLEDGER_EGRESS_ALLOW to admit it)"
    )]
    Refused {
        host: String,
        ip: IpAddr,
        kind: InternalKind,
    },
    #[error("could not resolve host {host}: {source}")]
    Unresolvable {
        host: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "bad HOOKLEDGER_EGRESS_ALLOW entry {entry:?}: expected a hostname, an IP address or a CIDR"
    )]
    BadAllowEntry { entry: String },
}

use InternalKind as K;

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)
}

const fn v6(segments: [u16; 3], len: u8) -> Ipv6Net {
    let [a, b, c] = segments;
    Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, 0, 0, 0, 0, 0), len)
}

/// Refused IPv4 ranges; first match wins (broadcast precedes 240/4).
const V4_REFUSED: &[(Ipv4Net, InternalKind)] = &[
    (v4(0, 0, 0, 0, 8), K::Unspecified),
    (v4(127, 0, 0, 0, 8), K::Loopback),
    (v4(10, 0, 0, 0, 8), K::Private),
    (v4(172, 16, 0, 0, 12), K::Private),
    (v4(192, 168, 0, 0, 16), K::Private),
    (v4(169, 254, 0, 0, 16), K::LinkLocal),
    (v4(100, 64, 0, 0, 10), K::SharedCgnat),
    (v4(224, 0, 0, 0, 4), K::Multicast),
    (v4(255, 255, 255, 255, 32), K::Broadcast),
    (v4(240, 0, 0, 0, 4), K::Reserved),
    (v4(192, 0, 0, 0, 24), K::Reserved),
    (v4(192, 0, 2, 0, 24), K::Documentation),
    (v4(198, 51, 100, 0, 24), K::Documentation),
    (v4(203, 0, 113, 0, 24), K::Documentation),
    (v4(198, 18, 0, 0, 15), K::Benchmarking),
];

/// Refused IPv6 ranges (:: and ::1 are handled before embedded IPv4).
const V6_REFUSED: &[(Ipv6Net, InternalKind)] = &[
    (v6([0xfe80, 0, 0], 10), K::LinkLocal),
    (v6([0xfec0, 0, 0], 10), K::Private),
    (v6([0xfc00, 0, 0], 7), K::UniqueLocal),
    (v6([0xff00, 0, 0], 8), K::Multicast),
    (v6([0x2001, 0xdb8, 0], 32), K::Documentation),
    (v6([0x3fff, 0, 0], 20), K::Documentation),
    (v6([0x2001, 0x2, 0], 48), K::Benchmarking),
    (v6([0x100, 0, 0], 64), K::Reserved),
];

/// Why `ip` is internal, or `None` if it is a public address.
pub fn internal_kind(ip: IpAddr) -> Option<InternalKind> {
    match ip {
        IpAddr::V4(ip) => v4_kind(ip),
        IpAddr::V6(ip) => v6_kind(ip),
    }
}

/// True if `ip` must not be connected to without an allowlist entry.
pub fn is_internal(ip: IpAddr) -> bool {
    internal_kind(ip).is_some()
}

fn v4_kind(ip: Ipv4Addr) -> Option<InternalKind> {
    V4_REFUSED
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|&(_, kind)| kind)
}

fn v6_kind(ip: Ipv6Addr) -> Option<InternalKind> {
    if ip.is_unspecified() {
        return Some(K::Unspecified);
    }
    if ip.is_loopback() {
        return Some(K::Loopback);
    }
    embedded_v4(ip).and_then(v4_kind).or_else(|| {
        V6_REFUSED
            .iter()
            .find(|(net, _)| net.contains(&ip))
            .map(|&(_, kind)| kind)
    })
}

/// The IPv4 address carried inside an IPv4-mapped (::ffff:0:0/96),
/// IPv4-compatible (::/96), NAT64 (64:ff9b::/96) or 6to4 (2002::/16) address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0, 0, _, _] => Some(low),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        _ => None,
    }
}

/// One `HOOKLEDGER_EGRESS_ALLOW` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowEntry {
    /// A hostname, stored lowercase without a trailing dot.
    Host(String),
    /// An address range; a bare IP is a /32 or /128.
    Net(IpNet),
}

impl FromStr for AllowEntry {
    type Err = GuardError;

    fn from_str(raw: &str) -> Result<Self, GuardError> {
        let entry = raw.trim();
        let bad = || GuardError::BadAllowEntry {
            entry: entry.to_owned(),
        };
        if entry.contains('/') {
            return entry
                .parse::<IpNet>()
                .map(|net| Self::Net(net.trunc()))
                .map_err(|_| bad());
        }
        if let Some(ip) = parse_ip_literal(entry) {
            return Ok(Self::Net(IpNet::from(ip)));
        }
        let host = normalize_host(entry);
        if is_valid_hostname(&host) {
            Ok(Self::Host(host))
        } else {
            Err(bad())
        }
    }
}

/// Parses `1.2.3.4`, `::1` or `[::1]`.
fn parse_ip_literal(s: &str) -> Option<IpAddr> {
    let bare = s
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(s);
    bare.parse().ok()
}

fn normalize_host(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// LDH(+underscore) labels of 1..=63 bytes, at most 253 bytes in total, and
/// a non-numeric last label (URL parsers treat `127.1` and the like as IPv4).
fn is_valid_hostname(host: &str) -> bool {
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let last_numeric = host
        .rsplit('.')
        .next()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()) || l.starts_with("0x"));
    host.len() <= 253 && host.split('.').all(label_ok) && !last_numeric
}

/// What a checked URL points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A literal address that has already passed the check.
    Ip(IpAddr),
    /// A domain name; its addresses are checked by [`GuardedResolver`].
    Name(String),
}

/// The egress policy: refuse internal addresses unless allowlisted.
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    hosts: Vec<String>,
    nets: Vec<IpNet>,
}

impl EgressPolicy {
    pub fn new(allow: &[AllowEntry]) -> Self {
        let mut policy = Self::default();
        for entry in allow {
            match entry {
                AllowEntry::Host(h) => policy.hosts.push(normalize_host(h)),
                AllowEntry::Net(n) => policy.nets.push(*n),
            }
        }
        policy
    }

    /// Parses a comma-separated `HOOKLEDGER_EGRESS_ALLOW` value. Entries are
    /// trimmed; empty entries (and an empty string) are ignored.
    pub fn parse_allowlist(s: &str) -> Result<Self, GuardError> {
        let entries = s
            .split(',')
            .filter(|e| !e.trim().is_empty())
            .map(AllowEntry::from_str)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(&entries))
    }

    /// True when nothing is allowlisted (the default).
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.nets.is_empty()
    }

    /// Allows `ip` (reached via `host`) if it is public or allowlisted.
    pub fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), GuardError> {
        let Some(kind) = internal_kind(ip) else {
            return Ok(());
        };
        if self.admits(host, ip) {
            return Ok(());
        }
        Err(GuardError::Refused {
            host: host.to_owned(),
            ip,
            kind,
        })
    }

    fn admits(&self, host: &str, ip: IpAddr) -> bool {
        let host = normalize_host(host);
        let canonical = ip.to_canonical();
        self.hosts.contains(&host)
            || self
                .nets
                .iter()
                .any(|net| net.contains(&ip) || net.contains(&canonical))
    }

    /// Checks scheme and host. Literal IPs are checked now; domain names are
    /// returned as [`Target::Name`] and checked when [`GuardedResolver`]
    /// resolves them.
    pub fn check_url(&self, url: &Url) -> Result<Target, GuardError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(GuardError::Scheme {
                scheme: url.scheme().to_owned(),
            });
        }
        let host = url.host_str().ok_or(GuardError::NoHost)?;
        match parse_ip_literal(host) {
            Some(ip) => self.check_ip(host, ip).map(|()| Target::Ip(ip)),
            None => Ok(Target::Name(host.to_owned())),
        }
    }
}

/// How long registration waits for DNS before accepting a name (every delivery checks again).
const REGISTRATION_LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

impl EgressPolicy {
    /// The check when a webhook is registered or its URL changed: [`Self::check_url`], and a
    /// name that resolves now must not resolve to a refused address. A name that does not
    /// resolve (yet), or not within a few seconds, is accepted: every delivery resolves it and
    /// checks again ([`GuardedResolver`]).
    pub async fn check_registration(
        &self,
        url: &Url,
        lookup: &dyn Lookup,
    ) -> Result<(), GuardError> {
        let Target::Name(host) = self.check_url(url)? else {
            return Ok(());
        };
        let resolved = tokio::time::timeout(
            REGISTRATION_LOOKUP_TIMEOUT,
            resolve_with(self, lookup, &host, 0),
        )
        .await;
        match resolved {
            Ok(Err(refused @ GuardError::Refused { .. })) => Err(refused),
            _ => Ok(()),
        }
    }
}

/// Address lookup used by [`GuardedResolver`]; swappable for tests.
pub trait Lookup: Send + Sync {
    fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>>;
}

/// The system resolver, at most a bounded number of lookups at once (see [`super::dns`]).
pub use super::dns::SystemLookup;

/// reqwest DNS resolver that refuses the whole resolution if any resolved
/// address is refused by the policy. Install with
/// `ClientBuilder::dns_resolver(Arc::new(GuardedResolver::new(policy)))`.
pub struct GuardedResolver<L = SystemLookup> {
    policy: Arc<EgressPolicy>,
    lookup: Arc<L>,
}

impl GuardedResolver<SystemLookup> {
    pub fn new(policy: Arc<EgressPolicy>) -> Self {
        Self::with_lookup(policy, SystemLookup)
    }
}

impl<L: Lookup> GuardedResolver<L> {
    pub fn with_lookup(policy: Arc<EgressPolicy>, lookup: L) -> Self {
        Self {
            policy,
            lookup: Arc::new(lookup),
        }
    }

    pub fn policy(&self) -> &EgressPolicy {
        &self.policy
    }

    /// Resolves `host` once and checks every address. `Unresolvable` means
    /// "could not tell yet": registration accepts it, delivery re-checks.
    pub async fn resolve_checked(
        &self,
        host: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, GuardError> {
        resolve_with(&self.policy, &*self.lookup, host, port).await
    }
}

async fn resolve_with<L: Lookup + ?Sized>(
    policy: &EgressPolicy,
    lookup: &L,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, GuardError> {
    let unresolvable = |source| GuardError::Unresolvable {
        host: host.to_owned(),
        source,
    };
    let ips = lookup.lookup(host).await.map_err(unresolvable)?;
    if ips.is_empty() {
        let none = io::Error::new(io::ErrorKind::NotFound, "no addresses returned");
        return Err(unresolvable(none));
    }
    for &ip in &ips {
        if let Err(err) = policy.check_ip(host, ip) {
            tracing::debug!(host, %ip, "egress guard refused resolved address");
            return Err(err);
        }
    }
    Ok(ips
        .into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect())
}

impl<L: Lookup + 'static> Resolve for GuardedResolver<L> {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = Arc::clone(&self.policy);
        let lookup = Arc::clone(&self.lookup);
        Box::pin(async move {
            // Port 0 is replaced by reqwest with the URL's (default) port.
            let addrs = resolve_with(&policy, &*lookup, name.as_str(), 0).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn url(s: &str) -> Url {
        Url::parse(s).expect("test URL")
    }

    fn refused_kind(result: Result<impl fmt::Debug, GuardError>) -> (IpAddr, InternalKind) {
        match result {
            Err(GuardError::Refused { ip, kind, .. }) => (ip, kind),
            other => panic!("expected Refused, got {other:?}"),
        }
    }

    #[test]
    fn refused_addresses_table() {
        let table = [
            ("127.0.0.1", K::Loopback),
            ("127.1.2.3", K::Loopback),
            ("0.0.0.0", K::Unspecified),
            ("10.1.2.3", K::Private),
            ("172.16.0.1", K::Private),
            ("172.31.255.255", K::Private),
            ("192.168.1.1", K::Private),
            ("169.254.169.254", K::LinkLocal),
            ("100.100.100.200", K::SharedCgnat),
            ("100.64.0.1", K::SharedCgnat),
            ("::1", K::Loopback),
            ("::", K::Unspecified),
            ("fc00::1", K::UniqueLocal),
            ("fd12::1", K::UniqueLocal),
            ("fe80::1", K::LinkLocal),
            ("::ffff:127.0.0.1", K::Loopback),
            ("::ffff:10.0.0.1", K::Private),
            ("::127.0.0.1", K::Loopback),
            ("2002:7f00:0001::1", K::Loopback),
            ("2002:0a00:0001::1", K::Private),
            ("224.0.0.1", K::Multicast),
            ("ff02::1", K::Multicast),
            ("255.255.255.255", K::Broadcast),
            ("64:ff9b::a00:1", K::Private),
            ("64:ff9b::7f00:1", K::Loopback),
            ("192.0.2.1", K::Documentation),
            ("2001:db8::1", K::Documentation),
            ("198.18.0.1", K::Benchmarking),
            ("240.0.0.1", K::Reserved),
        ];
        let policy = EgressPolicy::default();
        for (addr, want) in table {
            assert_eq!(internal_kind(ip(addr)), Some(want), "{addr}");
            assert!(is_internal(ip(addr)), "{addr}");
            let (_, kind) = refused_kind(policy.check_ip("h", ip(addr)));
            assert_eq!(kind, want, "{addr}");
        }
    }

    #[test]
    fn public_addresses_allowed_table() {
        let table = [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "172.32.0.1",
            "172.15.255.255",
            "100.128.0.1",
            "100.63.255.255",
            "2002:0808:0808::1",
            "64:ff9b::808:808",
            "::ffff:8.8.8.8",
        ];
        let policy = EgressPolicy::default();
        for addr in table {
            assert_eq!(internal_kind(ip(addr)), None, "{addr}");
            assert!(policy.check_ip("h", ip(addr)).is_ok(), "{addr}");
        }
    }

    #[test]
    fn literal_ip_spellings_are_refused() {
        let policy = EgressPolicy::default();
        for spelling in [
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://0x7f.0.0.1/",
            "http://127.1/",
            "https://127.0.0.1:8443/x",
        ] {
            let (got, kind) = refused_kind(policy.check_url(&url(spelling)));
            assert_eq!((got, kind), (ip("127.0.0.1"), K::Loopback), "{spelling}");
        }
        let (got, kind) = refused_kind(policy.check_url(&url("http://[::ffff:127.0.0.1]/")));
        assert_eq!((got, kind), (ip("::ffff:127.0.0.1"), K::Loopback));
    }

    #[test]
    fn check_url_targets() {
        let policy = EgressPolicy::default();
        let target = policy.check_url(&url("https://8.8.8.8/hook"));
        assert_eq!(target.ok(), Some(Target::Ip(ip("8.8.8.8"))));
        let target = policy.check_url(&url("http://[2606:4700::1111]:8080/"));
        assert_eq!(target.ok(), Some(Target::Ip(ip("2606:4700::1111"))));
        let target = policy.check_url(&url("HTTPS://Example.COM/hook"));
        assert_eq!(target.ok(), Some(Target::Name("example.com".into())));
    }

    #[test]
    fn non_http_schemes_refused() {
        let policy = EgressPolicy::default();
        for (u, scheme) in [
            ("ftp://example.com/f", "ftp"),
            ("file:///etc/passwd", "file"),
        ] {
            match policy.check_url(&url(u)) {
                Err(GuardError::Scheme { scheme: s }) => assert_eq!(s, scheme),
                other => panic!("{u}: expected Scheme, got {other:?}"),
            }
        }
    }

    #[test]
    fn allowlist_exact_ip() {
        let policy = EgressPolicy::parse_allowlist("127.0.0.1").expect("allowlist");
        assert!(policy.check_ip("h", ip("127.0.0.1")).is_ok());
        assert!(policy.check_ip("h", ip("::ffff:127.0.0.1")).is_ok());
        assert!(policy.check_url(&url("http://127.1/")).is_ok());
        refused_kind(policy.check_ip("h", ip("127.0.0.2")));
        refused_kind(policy.check_ip("h", ip("::1")));
    }

    #[test]
    fn allowlist_cidr_admits_its_range_only() {
        let policy = EgressPolicy::parse_allowlist("10.0.0.0/8, fc00::/7").expect("allowlist");
        for addr in ["10.0.0.1", "10.255.255.255", "::ffff:10.1.2.3", "fd12::1"] {
            assert!(policy.check_ip("h", ip(addr)).is_ok(), "{addr}");
        }
        for addr in ["172.16.0.1", "192.168.1.1", "127.0.0.1", "fe80::1"] {
            refused_kind(policy.check_ip("h", ip(addr)));
        }
    }

    #[test]
    fn allowlist_hostname_admits_that_name_only() {
        let policy = EgressPolicy::parse_allowlist("Receiver.Internal.").expect("allowlist");
        let private = ip("10.0.0.5");
        for host in [
            "receiver.internal",
            "RECEIVER.internal",
            "receiver.internal.",
        ] {
            assert!(policy.check_ip(host, private).is_ok(), "{host}");
        }
        for host in [
            "other.internal",
            "evil.receiver.internal",
            "receiver.internal.evil",
        ] {
            refused_kind(policy.check_ip(host, private));
        }
    }

    #[test]
    fn parse_allowlist_entries() {
        assert!(EgressPolicy::parse_allowlist("").expect("empty").is_empty());
        assert!(EgressPolicy::parse_allowlist(" , ")
            .expect("blank")
            .is_empty());
        let list = " receiver.internal , 127.0.0.1,10.0.0.0/8 ,::1, [fe80::1], fc00::/7 ";
        let policy = EgressPolicy::parse_allowlist(list).expect("allowlist");
        assert_eq!(policy.hosts, ["receiver.internal"]);
        assert_eq!(policy.nets.len(), 5);
        assert_eq!(
            AllowEntry::from_str("10.1.2.3/8").ok(),
            Some(AllowEntry::Net("10.0.0.0/8".parse().expect("net")))
        );
    }

    #[test]
    fn bad_allowlist_entries_are_named() {
        for bad in [
            "10.0.0.0/33",
            "http://x",
            "127.1",
            "0x7f.1",
            "bad host",
            "a..b",
            "::1/129",
            "fe80::1%eth0",
        ] {
            let input = format!("ok.example, {bad} ,10.0.0.0/8");
            match EgressPolicy::parse_allowlist(&input) {
                Err(err @ GuardError::BadAllowEntry { .. }) => {
                    assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
                }
                other => panic!("{bad}: expected BadAllowEntry, got {other:?}"),
            }
        }
    }

    #[test]
    fn refused_message_is_actionable() {
        let err = EgressPolicy::default()
            .check_ip("x", ip("10.0.0.1"))
            .expect_err("private");
        assert_eq!(
            err.to_string(),
            "refused host x: address 10.0.0.1 is private (set HOOKLEDGER_EGRESS_ALLOW to admit it)"
        );
    }

    /// Answers each lookup with the next scripted result.
    struct Scripted {
        answers: Mutex<VecDeque<io::Result<Vec<IpAddr>>>>,
        calls: AtomicUsize,
    }

    impl Scripted {
        fn new(answers: Vec<io::Result<Vec<&str>>>) -> Self {
            let answers = answers
                .into_iter()
                .map(|a| a.map(|ips| ips.into_iter().map(ip).collect()))
                .collect();
            Self {
                answers: Mutex::new(answers),
                calls: AtomicUsize::new(0),
            }
        }
    }

    impl Lookup for Scripted {
        fn lookup<'a>(&'a self, _host: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let next = self.answers.lock().expect("lock").pop_front();
            Box::pin(async move { next.expect("unscripted lookup") })
        }
    }

    fn resolver(answers: Vec<io::Result<Vec<&str>>>) -> GuardedResolver<Scripted> {
        GuardedResolver::with_lookup(Arc::default(), Scripted::new(answers))
    }

    #[tokio::test]
    async fn each_resolution_checks_what_it_returns() {
        let r = resolver(vec![Ok(vec!["93.184.216.34"]), Ok(vec!["10.0.0.1"])]);
        let first = r
            .resolve_checked("rebind.example", 443)
            .await
            .expect("public");
        assert_eq!(first, [SocketAddr::new(ip("93.184.216.34"), 443)]);
        let (got, kind) = refused_kind(r.resolve_checked("rebind.example", 443).await);
        assert_eq!((got, kind), (ip("10.0.0.1"), K::Private));
        assert_eq!(r.lookup.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn reqwest_resolve_refuses_second_answer() {
        let r = resolver(vec![Ok(vec!["8.8.8.8"]), Ok(vec!["127.0.0.1"])]);
        let name = || Name::from_str("rebind.example").expect("name");
        let addrs: Vec<_> = r.resolve(name()).await.expect("public").collect();
        assert_eq!(addrs, [SocketAddr::new(ip("8.8.8.8"), 0)]);
        let err = r.resolve(name()).await.err().expect("private refused");
        let guard = err.downcast_ref::<GuardError>().expect("GuardError");
        assert!(matches!(
            guard,
            GuardError::Refused {
                kind: K::Loopback,
                ..
            }
        ));
        assert_eq!(r.lookup.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn any_refused_address_fails_the_whole_resolution() {
        let r = resolver(vec![Ok(vec!["8.8.8.8", "169.254.169.254"])]);
        let (got, _) = refused_kind(r.resolve_checked("mixed.example", 80).await);
        assert_eq!(got, ip("169.254.169.254"));
    }

    #[tokio::test]
    async fn allowlisted_name_resolves_to_internal() {
        let policy = EgressPolicy::parse_allowlist("receiver.internal").expect("allowlist");
        let lookup = Scripted::new(vec![Ok(vec!["10.0.0.7"])]);
        let r = GuardedResolver::with_lookup(Arc::new(policy), lookup);
        let addrs = r
            .resolve_checked("receiver.internal", 80)
            .await
            .expect("ok");
        assert_eq!(addrs, [SocketAddr::new(ip("10.0.0.7"), 80)]);
    }

    #[tokio::test]
    async fn lookup_failure_or_empty_is_unresolvable() {
        let failure = io::Error::new(io::ErrorKind::NotFound, "nxdomain");
        let r = resolver(vec![Err(failure), Ok(vec![])]);
        for _ in 0..2 {
            match r.resolve_checked("nope.example", 80).await {
                Err(GuardError::Unresolvable { host, .. }) => assert_eq!(host, "nope.example"),
                other => panic!("expected Unresolvable, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn registration_refuses_names_resolving_inside_and_accepts_unresolved_ones() {
        let policy = EgressPolicy::default();
        let nxdomain = || Err(io::Error::new(io::ErrorKind::NotFound, "nxdomain"));
        let lookup = Scripted::new(vec![
            Ok(vec!["10.1.2.3"]),
            Ok(vec!["93.184.216.34"]),
            nxdomain(),
        ]);
        let check = |u: &'static str| registration(&policy, u, &lookup);
        let (got, kind) = refused_kind(check("https://inside.example/hook").await);
        assert_eq!((got, kind), (ip("10.1.2.3"), K::Private));
        check("https://public.example/hook").await.expect("public");
        check("https://later.example/hook")
            .await
            .expect("not yet resolvable");
        assert!(
            check("http://10.0.0.1/").await.is_err(),
            "literals need no lookup"
        );
        assert_eq!(lookup.calls.load(Ordering::SeqCst), 3);
        let allowed = EgressPolicy::parse_allowlist("inside.example").expect("allowlist");
        let lookup = Scripted::new(vec![Ok(vec!["10.1.2.3"])]);
        allowed
            .check_registration(&url("https://inside.example/"), &lookup)
            .await
            .expect("allowlisted");
    }

    async fn registration(
        policy: &EgressPolicy,
        u: &str,
        lookup: &dyn Lookup,
    ) -> Result<(), GuardError> {
        policy.check_registration(&url(u), lookup).await
    }

    #[tokio::test]
    async fn system_lookup_checks_addresses() {
        let r = GuardedResolver::new(Arc::default());
        let (got, kind) = refused_kind(r.resolve_checked("127.0.0.1", 80).await);
        assert_eq!((got, kind), (ip("127.0.0.1"), K::Loopback));
        let policy = EgressPolicy::parse_allowlist("127.0.0.0/8").expect("allowlist");
        let r = GuardedResolver::new(Arc::new(policy));
        let addrs = r
            .resolve_checked("127.0.0.1", 80)
            .await
            .expect("allowlisted");
        assert_eq!(addrs, [SocketAddr::new(ip("127.0.0.1"), 80)]);
    }
}
