//! Does a certificate name a host? libpq's rules (`verify-full`), which are RFC 6125 plus one
//! leniency: when the certificate has no subjectAltName of the host's type (DNS name or IP
//! address), the subject common name is compared instead.

use std::net::IpAddr;

/// How a certificate names a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum HostMatch {
    /// A subjectAltName entry matches.
    SubjectAltName,
    /// Only the common name matches (no SAN of the host's type exists).
    CommonNameOnly,
    /// Nothing matches.
    None,
}

/// Match `host` against the DNS and IP SANs and common names of a certificate.
pub fn match_host(
    host: &str,
    dns: &[String],
    ips: &[IpAddr],
    common_names: &[String],
) -> HostMatch {
    let host = host.trim_end_matches('.');
    if let Ok(ip) = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        if ips.contains(&ip) {
            return HostMatch::SubjectAltName;
        }
        if ips.is_empty()
            && common_names
                .iter()
                .any(|cn| cn.parse::<IpAddr>().ok() == Some(ip))
        {
            return HostMatch::CommonNameOnly;
        }
        return HostMatch::None;
    }
    if dns.iter().any(|pattern| dns_matches(pattern, host)) {
        return HostMatch::SubjectAltName;
    }
    if dns.is_empty() && common_names.iter().any(|cn| dns_matches(cn, host)) {
        return HostMatch::CommonNameOnly;
    }
    HostMatch::None
}

/// Case-insensitive DNS name match; `*` only as the whole leftmost label, matching exactly one
/// label (`*.example.com` matches `db.example.com`, not `example.com` nor `a.b.example.com`).
pub fn dns_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
    let host = host.to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(suffix) => match host.split_once('.') {
            Some((first, rest)) => !first.is_empty() && rest == suffix && suffix.contains('.'),
            None => false,
        },
        None => pattern == host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(host: &str, dns: &[&str], ips: &[&str], cns: &[&str], expect: HostMatch) {
        let dns: Vec<String> = dns.iter().map(|s| s.to_string()).collect();
        let ips: Vec<IpAddr> = ips.iter().map(|s| s.parse().unwrap()).collect();
        let cns: Vec<String> = cns.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            match_host(host, &dns, &ips, &cns),
            expect,
            "{host} vs {dns:?} {ips:?} {cns:?}"
        );
    }

    #[test]
    fn libpq_rules() {
        use HostMatch::*;
        check("localhost", &["localhost"], &[], &[], SubjectAltName);
        check("LocalHost.", &["localhost"], &[], &[], SubjectAltName);
        check(
            "db.example.com",
            &["*.example.com"],
            &[],
            &[],
            SubjectAltName,
        );
        check("example.com", &["*.example.com"], &[], &[], None);
        check("a.b.example.com", &["*.example.com"], &[], &[], None);
        check("x.com", &["*.com"], &[], &[], None);
        check(
            "127.0.0.1",
            &["localhost"],
            &["127.0.0.1"],
            &[],
            SubjectAltName,
        );
        check("::1", &[], &["::1"], &[], SubjectAltName);
        check("[::1]", &[], &["::1"], &[], SubjectAltName);
        check("127.0.0.2", &[], &["127.0.0.1"], &["127.0.0.2"], None);
        // No SAN of the host's type: the CN counts (libpq), reported as CN-only.
        check(
            "db.example.com",
            &[],
            &[],
            &["db.example.com"],
            CommonNameOnly,
        );
        check(
            "127.0.0.1",
            &["localhost"],
            &[],
            &["127.0.0.1"],
            CommonNameOnly,
        );
        check(
            "db.example.com",
            &["other.example.com"],
            &[],
            &["db.example.com"],
            None,
        );
        check("wrong.example.com", &[], &[], &["db.example.com"], None);
    }
}
