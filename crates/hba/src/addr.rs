//! Numeric addresses exactly as glibc's `getaddrinfo(AI_NUMERICHOST)` and `getnameinfo`
//! (`NI_NUMERICHOST`) treat them, since that is what PostgreSQL calls.
//!
//! IPv4 accepts the legacy `inet_aton` forms (`10` is `0.0.0.10`, `127.1`, `0x7f.1`, octal
//! `010`); IPv6 follows `inet_pton`, with a `%zone` suffix resolved like glibc (interface name
//! for link-local addresses, else a decimal number); output uses glibc's `inet_ntop` rules
//! (a single zero group is not shortened; `::a.b.c.d` for embedded IPv4).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Parse a numeric host as `getaddrinfo(AI_NUMERICHOST)` does. `if_index` maps an interface
/// name to its index (0 when unknown). `None` is `EAI_NONAME` (PostgreSQL then takes the
/// text as a host name).
pub(crate) fn parse_numeric_host(s: &[u8], if_index: &dyn Fn(&[u8]) -> u32) -> Option<IpAddr> {
    if s.is_empty() {
        return None;
    }
    if let Some(v4) = inet_aton_exact(s) {
        return Some(IpAddr::V4(v4));
    }
    let (addr_part, scope) = match memchr::memchr(b'%', s) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let v6 = inet_pton6(addr_part)?;
    if let Some(scope) = scope {
        scopeid_pton(&v6, scope, if_index)?;
    }
    Some(IpAddr::V6(v6))
}

/// glibc `__inet_aton_exact`.
pub(crate) fn inet_aton_exact(s: &[u8]) -> Option<Ipv4Addr> {
    const MAX: [u64; 4] = [0xffff_ffff, 0xff_ffff, 0xffff, 0xff];
    let mut parts = [0u8; 3];
    let mut nparts = 0usize;
    let mut i = 0usize;
    let val: u64;
    loop {
        let c = s.get(i).copied().unwrap_or(0);
        if !c.is_ascii_digit() {
            return None;
        }
        let (v, used) = strtoul0(&s[i..])?;
        i += used;
        let c = s.get(i).copied().unwrap_or(0);
        if c == b'.' {
            if nparts > 2 || v > 0xff {
                return None;
            }
            parts[nparts] = v as u8;
            nparts += 1;
            i += 1;
        } else {
            val = v;
            break;
        }
    }
    if i != s.len() {
        return None;
    }
    if val > MAX[nparts] {
        return None;
    }
    let mut word: u32 = 0;
    for (k, p) in parts[..nparts].iter().enumerate() {
        word |= (*p as u32) << (24 - 8 * k);
    }
    word |= val as u32;
    Some(Ipv4Addr::from(word))
}

/// `strtoul(s, &end, 0)` on a string starting with a digit: (value, bytes used). `None` when
/// the value does not fit 32 bits (glibc rejects those).
fn strtoul0(s: &[u8]) -> Option<(u64, usize)> {
    let (base, start) = if s.len() >= 2 && s[0] == b'0' && (s[1] == b'x' || s[1] == b'X') {
        if s.get(2).is_some_and(|c| c.is_ascii_hexdigit()) {
            (16u64, 2usize)
        } else {
            return Some((0, 1));
        }
    } else if s[0] == b'0' {
        (8, 0)
    } else {
        (10, 0)
    };
    let mut v: u64 = 0;
    let mut i = start;
    while let Some(&c) = s.get(i) {
        let d = match c {
            b'0'..=b'9' => (c - b'0') as u64,
            b'a'..=b'f' => (c - b'a' + 10) as u64,
            b'A'..=b'F' => (c - b'A' + 10) as u64,
            _ => break,
        };
        if d >= base {
            break;
        }
        v = v.saturating_mul(base).saturating_add(d);
        i += 1;
    }
    if v > 0xffff_ffff {
        return None;
    }
    Some((v, i))
}

fn inet_pton4(s: &[u8]) -> Option<[u8; 4]> {
    let mut out = [0u8; 4];
    let mut octets = 0usize;
    let mut saw_digit = false;
    let mut cur: u32 = 0;
    for &ch in s {
        if ch.is_ascii_digit() {
            if saw_digit && cur == 0 {
                return None;
            }
            let new = cur * 10 + (ch - b'0') as u32;
            if new > 255 {
                return None;
            }
            cur = new;
            if !saw_digit {
                octets += 1;
                if octets > 4 {
                    return None;
                }
                saw_digit = true;
            }
            out[octets - 1] = cur as u8;
        } else if ch == b'.' && saw_digit {
            if octets == 4 {
                return None;
            }
            cur = 0;
            saw_digit = false;
        } else {
            return None;
        }
    }
    (octets == 4).then_some(out)
}

/// glibc `inet_pton(AF_INET6)`.
pub(crate) fn inet_pton6(src: &[u8]) -> Option<Ipv6Addr> {
    let mut tmp = [0u8; 16];
    let mut tp = 0usize;
    let mut colonp: Option<usize> = None;
    let mut i = 0usize;
    if src.is_empty() {
        return None;
    }
    if src[0] == b':' {
        i += 1;
        if src.get(i) != Some(&b':') {
            return None;
        }
    }
    let mut curtok = i;
    let mut xdigits = 0usize;
    let mut val: u32 = 0;
    while i < src.len() {
        let ch = src[i];
        i += 1;
        let digit = match ch {
            b'0'..=b'9' => Some(ch - b'0'),
            b'a'..=b'f' => Some(ch - b'a' + 10),
            b'A'..=b'F' => Some(ch - b'A' + 10),
            _ => None,
        };
        if let Some(d) = digit {
            if xdigits == 4 {
                return None;
            }
            val = (val << 4) | d as u32;
            xdigits += 1;
            continue;
        }
        if ch == b':' {
            curtok = i;
            if xdigits == 0 {
                if colonp.is_some() {
                    return None;
                }
                colonp = Some(tp);
                continue;
            } else if i == src.len() {
                return None;
            }
            if tp + 2 > 16 {
                return None;
            }
            tmp[tp] = (val >> 8) as u8;
            tmp[tp + 1] = val as u8;
            tp += 2;
            xdigits = 0;
            val = 0;
            continue;
        }
        if ch == b'.'
            && tp + 4 <= 16
            && let Some(v4) = inet_pton4(&src[curtok..])
        {
            tmp[tp..tp + 4].copy_from_slice(&v4);
            tp += 4;
            xdigits = 0;
            break;
        }
        return None;
    }
    if xdigits > 0 {
        if tp + 2 > 16 {
            return None;
        }
        tmp[tp] = (val >> 8) as u8;
        tmp[tp + 1] = val as u8;
        tp += 2;
    }
    if let Some(cp) = colonp {
        if tp == 16 {
            return None;
        }
        let n = tp - cp;
        let mut moved = [0u8; 16];
        moved[..n].copy_from_slice(&tmp[cp..tp]);
        for b in &mut tmp[cp..] {
            *b = 0;
        }
        tmp[16 - n..].copy_from_slice(&moved[..n]);
        tp = 16;
    }
    (tp == 16).then(|| Ipv6Addr::from(tmp))
}

/// glibc `__inet6_scopeid_pton`: `Some(())` when the zone is acceptable.
fn scopeid_pton(addr: &Ipv6Addr, scope: &[u8], if_index: &dyn Fn(&[u8]) -> u32) -> Option<()> {
    let o = addr.octets();
    let link_local = o[0] == 0xfe && (o[1] & 0xc0) == 0x80;
    let mc_node_local = o[0] == 0xff && (o[1] & 0x0f) == 0x01;
    let mc_link_local = o[0] == 0xff && (o[1] & 0x0f) == 0x02;
    if (link_local || mc_node_local || mc_link_local) && if_index(scope) != 0 {
        return Some(());
    }
    if scope.first().is_some_and(|c| c.is_ascii_digit()) && scope.iter().all(u8::is_ascii_digit) {
        let text = std::str::from_utf8(scope).ok()?;
        let n: u128 = text.parse().unwrap_or(u128::MAX);
        if n <= u32::MAX as u128 {
            return Some(());
        }
    }
    None
}

/// `pg_sockaddr_cidr_mask`: the netmask for `/bits` (text after the slash), or `None` when
/// PostgreSQL reports "invalid CIDR mask".
pub(crate) fn cidr_mask(bits_text: &[u8], v6: bool) -> Option<IpAddr> {
    let bits = strtol10_exact(bits_text)?;
    if v6 {
        if !(0..=128).contains(&bits) {
            return None;
        }
        let m: u128 = if bits == 0 {
            0
        } else {
            u128::MAX << (128 - bits as u32)
        };
        Some(IpAddr::V6(Ipv6Addr::from(m)))
    } else {
        if !(0..=32).contains(&bits) {
            return None;
        }
        let m: u32 = if bits == 0 {
            0
        } else {
            u32::MAX << (32 - bits as u32)
        };
        Some(IpAddr::V4(Ipv4Addr::from(m)))
    }
}

/// `strtol(s, &end, 10)` requiring a non-empty string fully consumed (C isspace skipped first).
fn strtol10_exact(s: &[u8]) -> Option<i64> {
    if s.is_empty() {
        return None;
    }
    let mut i = 0;
    while i < s.len() && matches!(s[i], b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r') {
        i += 1;
    }
    let mut neg = false;
    if i < s.len() && (s[i] == b'+' || s[i] == b'-') {
        neg = s[i] == b'-';
        i += 1;
    }
    let start = i;
    let mut v: i64 = 0;
    while i < s.len() && s[i].is_ascii_digit() {
        v = v.saturating_mul(10).saturating_add((s[i] - b'0') as i64);
        i += 1;
    }
    if i == start || i != s.len() {
        return None;
    }
    Some(if neg { -v } else { v })
}

/// `getnameinfo(NI_NUMERICHOST)` + `clean_ipv6_addr`: the text the view shows.
pub(crate) fn ntop(addr: &IpAddr) -> String {
    match addr {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => ntop6(a),
    }
}

fn ntop6(a: &Ipv6Addr) -> String {
    let w = a.segments();
    let (mut best_base, mut best_len) = (usize::MAX, 0usize);
    let (mut cur_base, mut cur_len) = (usize::MAX, 0usize);
    for (i, word) in w.iter().enumerate() {
        if *word == 0 {
            if cur_base == usize::MAX {
                cur_base = i;
                cur_len = 1;
            } else {
                cur_len += 1;
            }
        } else if cur_base != usize::MAX {
            if best_base == usize::MAX || cur_len > best_len {
                best_base = cur_base;
                best_len = cur_len;
            }
            cur_base = usize::MAX;
        }
    }
    if cur_base != usize::MAX && (best_base == usize::MAX || cur_len > best_len) {
        best_base = cur_base;
        best_len = cur_len;
    }
    if best_base != usize::MAX && best_len < 2 {
        best_base = usize::MAX;
    }
    let mut out = String::new();
    let o = a.octets();
    for i in 0..8 {
        if best_base != usize::MAX && i >= best_base && i < best_base + best_len {
            if i == best_base {
                out.push(':');
            }
            continue;
        }
        if i != 0 {
            out.push(':');
        }
        if i == 6 && best_base == 0 && (best_len == 6 || (best_len == 5 && w[5] == 0xffff)) {
            out.push_str(&format!("{}.{}.{}.{}", o[12], o[13], o[14], o[15]));
            return out;
        }
        out.push_str(&format!("{:x}", w[i]));
    }
    if best_base != usize::MAX && best_base + best_len == 8 {
        out.push(':');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(s: &str) -> Option<String> {
        parse_numeric_host(s.as_bytes(), &|n| u32::from(n == b"lo")).map(|a| ntop(&a))
    }

    #[test]
    fn ipv4_legacy_forms() {
        assert_eq!(host("10").as_deref(), Some("0.0.0.10"));
        assert_eq!(host("127.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(host("0x7f.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(host("010.0.0.1").as_deref(), Some("8.0.0.1"));
        assert_eq!(host("1.2.3.256"), None);
        assert_eq!(host("08.1.1.1"), None);
        assert_eq!(host("1.2.3.4 "), None);
        assert_eq!(host("a.b"), None);
    }

    #[test]
    fn ipv6_forms() {
        assert_eq!(host("::2:3").as_deref(), Some("::0.2.0.3"));
        assert_eq!(host("::ffff:1.2.3.4").as_deref(), Some("::ffff:1.2.3.4"));
        assert_eq!(host("1:0:2::").as_deref(), Some("1:0:2::"));
        assert_eq!(host("fe80::1%lo").as_deref(), Some("fe80::1"));
        assert_eq!(host("fe80::1%eth9"), None);
        assert_eq!(host("::1%7").as_deref(), Some("::1"));
        assert_eq!(host("1::2::3"), None);
        assert_eq!(host("::1.2.3.04"), None);
    }

    #[test]
    fn masks() {
        assert_eq!(ntop(&cidr_mask(b"+8", false).unwrap()), "255.0.0.0");
        assert_eq!(ntop(&cidr_mask(b" 24", false).unwrap()), "255.255.255.0");
        assert_eq!(ntop(&cidr_mask(b"0", false).unwrap()), "0.0.0.0");
        assert!(cidr_mask(b"", false).is_none());
        assert!(cidr_mask(b"33", false).is_none());
        assert_eq!(
            ntop(&cidr_mask(b"64", true).unwrap()),
            "ffff:ffff:ffff:ffff::"
        );
    }
}
