//! Sans-IO wire formats: the TLS ClientHello we send, the server's first flight we read, the
//! cipher suite catalogue, and the PostgreSQL messages around them. No sockets here.

pub mod hello;
pub mod pg;
pub mod server;
pub mod suites;

pub use hello::{ClientHello, ProtocolVersion};
pub use suites::CipherSuite;

/// The catalogue entry for a code point.
pub fn suite(id: u16) -> Option<&'static CipherSuite> {
    suites::ALL
        .binary_search_by_key(&id, |s| s.id)
        .ok()
        .map(|i| &suites::ALL[i])
}

/// The IANA name of a code point (or `0xXXXX` when unknown).
pub fn suite_name(id: u16) -> String {
    suite(id).map_or_else(|| format!("0x{id:04X}"), |s| s.name.to_string())
}

/// Every catalogue suite that `version` can negotiate, strongest-looking first (AEAD with
/// forward secrecy, then the rest in code point order): what a hello offers by default.
pub fn suites_for(version: ProtocolVersion) -> Vec<u16> {
    let mut v: Vec<&CipherSuite> = suites::ALL
        .iter()
        .filter(|s| version.can_use(s.since))
        .collect();
    v.sort_by_key(|s| (weaknesses(s).len(), s.id));
    v.into_iter().map(|s| s.id).collect()
}

/// A known weakness of a cipher suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Weakness {
    /// No encryption at all.
    Null,
    /// No authentication of the server (anonymous DH/ECDH): trivially man-in-the-middled.
    Anonymous,
    /// 40/56-bit export-grade cryptography (FREAK, Logjam).
    Export,
    /// RC4 (RFC 7465 forbids it).
    Rc4,
    /// Single DES (56-bit).
    Des,
    /// Triple DES or IDEA: 64-bit blocks (Sweet32).
    SmallBlock,
    /// MD5 as the record MAC.
    Md5,
    /// Static RSA / ECDH / PSK key exchange: no forward secrecy.
    NoForwardSecrecy,
    /// CBC mode (MAC-then-encrypt; Lucky13-class padding oracles).
    Cbc,
}

impl Weakness {
    /// Whether a server must not offer a suite with this weakness (fail) or merely should
    /// not (warn), or it is informational.
    pub fn severity(self) -> crate::Severity {
        use crate::Severity::*;
        match self {
            Weakness::Null | Weakness::Anonymous | Weakness::Export | Weakness::Rc4 => Fail,
            Weakness::Des | Weakness::Md5 => Fail,
            Weakness::SmallBlock | Weakness::NoForwardSecrecy => Warn,
            Weakness::Cbc => Info,
        }
    }
}

/// The weaknesses of a suite, judged from its IANA name.
pub fn weaknesses(s: &CipherSuite) -> Vec<Weakness> {
    let n = s.name;
    let mut w = Vec::new();
    if s.since == ProtocolVersion::Tls13 {
        return w;
    }
    if n.contains("_NULL_") || n.ends_with("_NULL_SHA") || n.contains("WITH_NULL") {
        w.push(Weakness::Null);
    }
    if n.contains("_anon_") {
        w.push(Weakness::Anonymous);
    }
    if n.contains("EXPORT") {
        w.push(Weakness::Export);
    }
    if n.contains("RC4") {
        w.push(Weakness::Rc4);
    }
    if n.contains("_DES_CBC_") || n.contains("DES40") {
        w.push(Weakness::Des);
    }
    if n.contains("3DES") || n.contains("IDEA") {
        w.push(Weakness::SmallBlock);
    }
    if n.ends_with("_MD5") {
        w.push(Weakness::Md5);
    }
    let kx = n
        .trim_start_matches("TLS_")
        .split("_WITH_")
        .next()
        .unwrap_or("");
    let forward_secret = kx.starts_with("DHE_")
        || kx.starts_with("ECDHE_")
        || kx.starts_with("DH_anon")
        || kx.starts_with("ECDH_anon")
        || kx.starts_with("SRP_");
    if !forward_secret {
        w.push(Weakness::NoForwardSecrecy);
    }
    if n.contains("_CBC") && !w.contains(&Weakness::Des) && !w.contains(&Weakness::SmallBlock) {
        w.push(Weakness::Cbc);
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_is_sorted_and_unique() {
        for pair in suites::ALL.windows(2) {
            assert!(pair[0].id < pair[1].id, "{:?} {:?}", pair[0], pair[1]);
        }
        assert_eq!(
            suite(0xC02B).unwrap().openssl_name,
            "ECDHE-ECDSA-AES128-GCM-SHA256"
        );
        assert_eq!(suite_name(0xFFFE), "0xFFFE");
    }

    #[test]
    fn per_version_lists() {
        let t13 = suites_for(ProtocolVersion::Tls13);
        assert_eq!(t13.len(), 5);
        assert!(t13.iter().all(|id| (0x1301..=0x1305).contains(id)));
        let t10 = suites_for(ProtocolVersion::Tls10);
        assert!(t10.contains(&0xC009), "ECDHE-ECDSA-AES128-SHA is TLS 1.0");
        assert!(!t10.contains(&0xC02B), "GCM is TLS 1.2 only");
        let t12 = suites_for(ProtocolVersion::Tls12);
        let first = suite(t12[0]).unwrap();
        assert!(
            weaknesses(first).is_empty(),
            "strong suites first: {}",
            first.name
        );
        let last = suite(*t12.last().unwrap()).unwrap();
        assert!(weaknesses(last).len() >= 3, "weakest last: {}", last.name);
        assert!(suites_for(ProtocolVersion::Ssl3).len() < t10.len());
    }

    #[test]
    fn weakness_classification() {
        let check = |id: u16, expect: &[Weakness]| {
            let s = suite(id).unwrap();
            assert_eq!(weaknesses(s), expect, "{}", s.name);
        };
        check(0xC02B, &[]);
        check(0x1301, &[]);
        check(0xCCA9, &[]);
        check(0xC009, &[Weakness::Cbc]);
        check(0x002F, &[Weakness::NoForwardSecrecy, Weakness::Cbc]);
        check(0x000A, &[Weakness::SmallBlock, Weakness::NoForwardSecrecy]);
        check(
            0x0004,
            &[Weakness::Rc4, Weakness::Md5, Weakness::NoForwardSecrecy],
        );
        check(
            0x0003,
            &[
                Weakness::Export,
                Weakness::Rc4,
                Weakness::Md5,
                Weakness::NoForwardSecrecy,
            ],
        );
        check(
            0x0001,
            &[Weakness::Null, Weakness::Md5, Weakness::NoForwardSecrecy],
        );
        check(0xC006, &[Weakness::Null]);
        check(0x0034, &[Weakness::Anonymous, Weakness::Cbc]);
        check(0x0015, &[Weakness::Des]);
    }
}
