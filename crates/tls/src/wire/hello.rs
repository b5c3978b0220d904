//! A sans-IO ClientHello builder for every protocol version from SSL 3.0 to TLS 1.3.
//!
//! rustls (like most TLS libraries today) cannot offer SSL 3.0, TLS 1.0 or TLS 1.1, so the
//! probe writes the ClientHello itself, as testssl.sh does, and reads only the server's first
//! flight: a ServerHello (or HelloRetryRequest) or an alert answers "does this server accept
//! this version with one of these cipher suites".

use serde::{Deserialize, Serialize};

/// A protocol version, from SSL 3.0 to TLS 1.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ProtocolVersion {
    /// SSL 3.0 (RFC 6101), broken (POODLE).
    #[serde(rename = "SSLv3")]
    Ssl3,
    /// TLS 1.0 (RFC 2246), deprecated (RFC 8996).
    #[serde(rename = "TLSv1.0")]
    Tls10,
    /// TLS 1.1 (RFC 4346), deprecated (RFC 8996).
    #[serde(rename = "TLSv1.1")]
    Tls11,
    /// TLS 1.2 (RFC 5246).
    #[serde(rename = "TLSv1.2")]
    Tls12,
    /// TLS 1.3 (RFC 8446).
    #[serde(rename = "TLSv1.3")]
    Tls13,
}

impl ProtocolVersion {
    /// Every version, oldest first.
    pub const ALL: [ProtocolVersion; 5] = [
        ProtocolVersion::Ssl3,
        ProtocolVersion::Tls10,
        ProtocolVersion::Tls11,
        ProtocolVersion::Tls12,
        ProtocolVersion::Tls13,
    ];

    /// The two-byte wire value.
    pub fn wire(self) -> u16 {
        match self {
            ProtocolVersion::Ssl3 => 0x0300,
            ProtocolVersion::Tls10 => 0x0301,
            ProtocolVersion::Tls11 => 0x0302,
            ProtocolVersion::Tls12 => 0x0303,
            ProtocolVersion::Tls13 => 0x0304,
        }
    }

    /// The version with this wire value.
    pub fn from_wire(v: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.wire() == v)
    }

    /// The name used in reports (`SSLv3`, `TLSv1.0` ... `TLSv1.3`).
    pub fn name(self) -> &'static str {
        match self {
            ProtocolVersion::Ssl3 => "SSLv3",
            ProtocolVersion::Tls10 => "TLSv1.0",
            ProtocolVersion::Tls11 => "TLSv1.1",
            ProtocolVersion::Tls12 => "TLSv1.2",
            ProtocolVersion::Tls13 => "TLSv1.3",
        }
    }

    /// Whether a cipher suite first defined for `since` can be negotiated in this version.
    /// TLS 1.3 suites are only for TLS 1.3, and TLS 1.3 takes no other suite.
    pub fn can_use(self, since: ProtocolVersion) -> bool {
        match (self, since) {
            (ProtocolVersion::Tls13, s) => s == ProtocolVersion::Tls13,
            (_, ProtocolVersion::Tls13) => false,
            (v, s) => s <= v,
        }
    }
}

impl std::fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Signalling suite: "I support secure renegotiation" (RFC 5746), for TLS 1.2 and older.
pub const EMPTY_RENEGOTIATION_INFO_SCSV: u16 = 0x00FF;

/// Named groups offered in `supported_groups`, most preferred first.
pub const GROUPS: &[u16] = &[
    0x001D, // x25519
    0x0017, // secp256r1
    0x0018, // secp384r1
    0x0019, // secp521r1
    0x001E, // x448
    0x0100, // ffdhe2048
    0x0101, // ffdhe3072
    0x0102, // ffdhe4096
    0x0016, // secp256k1
    0x0015, // secp224r1
    0x0013, // secp192r1
];

/// Signature schemes offered in `signature_algorithms` (TLS 1.2+), strong first, then the
/// legacy ones so that servers with SHA-1 or DSA keys still answer.
pub const SIGNATURE_SCHEMES: &[u16] = &[
    0x0403, 0x0503, 0x0603, // ecdsa_secp{256,384,521}r1_sha{256,384,512}
    0x0807, 0x0808, // ed25519, ed448
    0x0804, 0x0805, 0x0806, // rsa_pss_rsae_sha{256,384,512}
    0x0809, 0x080A, 0x080B, // rsa_pss_pss_sha{256,384,512}
    0x0401, 0x0501, 0x0601, // rsa_pkcs1_sha{256,384,512}
    0x0303, 0x0301, 0x0302, // sha224 ecdsa/rsa/dsa
    0x0203, 0x0201, 0x0202, // sha1 ecdsa/rsa/dsa
    0x0402, 0x0502, 0x0602, // dsa sha256/384/512
];

/// What to put into one ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// The one version offered (for TLS 1.3 through `supported_versions` only).
    pub version: ProtocolVersion,
    /// Cipher suites, in preference order.
    pub cipher_suites: Vec<u16>,
    /// Server name for SNI (a DNS name; never an IP address, RFC 6066).
    pub server_name: Option<String>,
    /// ALPN protocols (`postgresql` for PostgreSQL 17 direct TLS).
    pub alpn: Vec<Vec<u8>>,
    /// Client random (32 bytes); also used to derive the TLS 1.3 session id and key share.
    pub random: [u8; 32],
}

impl ClientHello {
    /// A hello for `version` offering `cipher_suites`, with a fresh random.
    pub fn new(version: ProtocolVersion, cipher_suites: Vec<u16>) -> Self {
        let mut random = [0u8; 32];
        // A probe hello needs no secrecy: fall back to a fixed pattern if the OS RNG fails.
        if getrandom::fill(&mut random).is_err() {
            random = [0x5a; 32];
        }
        Self {
            version,
            cipher_suites,
            server_name: None,
            alpn: Vec::new(),
            random,
        }
    }

    /// Set the SNI name (ignored when it is an IP address).
    pub fn server_name(mut self, name: Option<&str>) -> Self {
        self.server_name = name
            .filter(|n| n.parse::<std::net::IpAddr>().is_err() && !n.is_empty())
            .map(|n| n.trim_end_matches('.').to_string());
        self
    }

    /// Add an ALPN protocol.
    pub fn alpn(mut self, proto: &[u8]) -> Self {
        self.alpn.push(proto.to_vec());
        self
    }

    /// The hello as one TLS record (or several when it is longer than 2^14 bytes, which our
    /// catalogue never is), ready to write to the socket.
    pub fn encode(&self) -> Vec<u8> {
        let body = self.handshake_body();
        let mut hs = Vec::with_capacity(body.len() + 4);
        hs.push(1); // client_hello
        put_u24(&mut hs, body.len());
        hs.extend_from_slice(&body);
        // Record version: SSL 3.0 for an SSL 3.0 hello, TLS 1.0 otherwise (what browsers and
        // OpenSSL send; some servers reject a higher record version in the first record).
        let record_version = if self.version == ProtocolVersion::Ssl3 {
            0x0300
        } else {
            0x0301
        };
        let mut out = Vec::with_capacity(hs.len() + 5);
        for chunk in hs.chunks(16_384) {
            out.push(22); // handshake
            out.extend_from_slice(&u16::to_be_bytes(record_version));
            out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            out.extend_from_slice(chunk);
        }
        out
    }

    fn handshake_body(&self) -> Vec<u8> {
        let tls13 = self.version == ProtocolVersion::Tls13;
        let legacy_version = if tls13 { 0x0303 } else { self.version.wire() };
        let mut b = Vec::with_capacity(512);
        b.extend_from_slice(&legacy_version.to_be_bytes());
        b.extend_from_slice(&self.random);
        if tls13 {
            // Middlebox compatibility mode (RFC 8446 D.4): a 32-byte legacy session id.
            b.push(32);
            let mut sid = self.random;
            sid.reverse();
            b.extend_from_slice(&sid);
        } else {
            b.push(0);
        }
        let mut suites = self.cipher_suites.clone();
        if !tls13 {
            suites.push(EMPTY_RENEGOTIATION_INFO_SCSV);
        }
        put_u16(&mut b, suites.len() * 2);
        for s in suites {
            b.extend_from_slice(&s.to_be_bytes());
        }
        b.extend_from_slice(&[1, 0]); // compression: null only
        if self.version != ProtocolVersion::Ssl3 {
            let ext = self.extensions();
            put_u16(&mut b, ext.len());
            b.extend_from_slice(&ext);
        }
        b
    }

    fn extensions(&self) -> Vec<u8> {
        let tls13 = self.version == ProtocolVersion::Tls13;
        let mut e = Vec::with_capacity(256);
        if let Some(name) = &self.server_name {
            let mut list = Vec::new();
            list.push(0); // host_name
            put_u16(&mut list, name.len());
            list.extend_from_slice(name.as_bytes());
            let mut data = Vec::new();
            put_u16(&mut data, list.len());
            data.extend_from_slice(&list);
            put_ext(&mut e, 0, &data);
        }
        // supported_groups and ec_point_formats: needed for any ECDHE suite.
        let mut groups = Vec::new();
        put_u16(&mut groups, GROUPS.len() * 2);
        for g in GROUPS {
            groups.extend_from_slice(&g.to_be_bytes());
        }
        put_ext(&mut e, 10, &groups);
        if !tls13 {
            put_ext(&mut e, 11, &[1, 0]); // uncompressed points
        }
        if matches!(
            self.version,
            ProtocolVersion::Tls12 | ProtocolVersion::Tls13
        ) {
            let mut sig = Vec::new();
            put_u16(&mut sig, SIGNATURE_SCHEMES.len() * 2);
            for s in SIGNATURE_SCHEMES {
                sig.extend_from_slice(&s.to_be_bytes());
            }
            put_ext(&mut e, 13, &sig);
        }
        if !self.alpn.is_empty() {
            let mut list = Vec::new();
            for p in &self.alpn {
                list.push(p.len() as u8);
                list.extend_from_slice(p);
            }
            let mut data = Vec::new();
            put_u16(&mut data, list.len());
            data.extend_from_slice(&list);
            put_ext(&mut e, 16, &data);
        }
        if !tls13 {
            put_ext(&mut e, 22, &[]); // encrypt_then_mac
        }
        put_ext(&mut e, 23, &[]); // extended_master_secret
        if tls13 {
            put_ext(&mut e, 43, &[2, 0x03, 0x04]); // supported_versions: TLS 1.3 only
            put_ext(&mut e, 45, &[1, 1]); // psk_key_exchange_modes: psk_dhe_ke
            // key_share: one x25519 share. Any 32 bytes are a valid X25519 public key; we never
            // complete the handshake, so no private key is needed. A server preferring another
            // group answers with a HelloRetryRequest, which also proves TLS 1.3.
            let mut share = Vec::new();
            share.extend_from_slice(&0x001Du16.to_be_bytes());
            put_u16(&mut share, 32);
            let mut key = self.random;
            key[0] ^= 0xa5;
            share.extend_from_slice(&key);
            let mut data = Vec::new();
            put_u16(&mut data, share.len());
            data.extend_from_slice(&share);
            put_ext(&mut e, 51, &data);
        }
        e
    }
}

fn put_u16(out: &mut Vec<u8>, v: usize) {
    out.extend_from_slice(&(v as u16).to_be_bytes());
}

fn put_u24(out: &mut Vec<u8>, v: usize) {
    out.extend_from_slice(&(v as u32).to_be_bytes()[1..]);
}

fn put_ext(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
    out.extend_from_slice(&kind.to_be_bytes());
    put_u16(out, data.len());
    out.extend_from_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], i: usize) -> u16 {
        u16::from_be_bytes([b[i], b[i + 1]])
    }

    /// Walk the encoded hello and return (record version, client_version, suites, extension ids).
    fn dissect(bytes: &[u8]) -> (u16, u16, Vec<u16>, Vec<u16>) {
        assert_eq!(bytes[0], 22);
        let record_version = u16_at(bytes, 1);
        let len = u16_at(bytes, 3) as usize;
        assert_eq!(len, bytes.len() - 5, "one record");
        let hs = &bytes[5..];
        assert_eq!(hs[0], 1);
        let body_len = u32::from_be_bytes([0, hs[1], hs[2], hs[3]]) as usize;
        assert_eq!(body_len, hs.len() - 4);
        let b = &hs[4..];
        let version = u16_at(b, 0);
        let mut i = 2 + 32;
        let sid = b[i] as usize;
        i += 1 + sid;
        let n = u16_at(b, i) as usize;
        i += 2;
        let suites = (0..n / 2).map(|k| u16_at(b, i + 2 * k)).collect();
        i += n;
        assert_eq!(&b[i..i + 2], &[1, 0]);
        i += 2;
        let mut exts = Vec::new();
        if i < b.len() {
            let total = u16_at(b, i) as usize;
            i += 2;
            assert_eq!(total, b.len() - i);
            while i < b.len() {
                exts.push(u16_at(b, i));
                let l = u16_at(b, i + 2) as usize;
                i += 4 + l;
            }
            assert_eq!(i, b.len());
        }
        (record_version, version, suites, exts)
    }

    #[test]
    fn hellos_are_well_formed_for_every_version() {
        let check = |v: ProtocolVersion, rec: u16, ver: u16, has_exts: &[u16], no_exts: &[u16]| {
            let h = ClientHello::new(v, vec![0xC02B, 0x002F])
                .server_name(Some("db.example.com"))
                .alpn(b"postgresql");
            let (r, cv, suites, exts) = dissect(&h.encode());
            assert_eq!((r, cv), (rec, ver), "{v}");
            assert_eq!(&suites[..2], &[0xC02B, 0x002F]);
            for e in has_exts {
                assert!(exts.contains(e), "{v}: extension {e} missing in {exts:?}");
            }
            for e in no_exts {
                assert!(!exts.contains(e), "{v}: extension {e} present in {exts:?}");
            }
        };
        check(ProtocolVersion::Ssl3, 0x0300, 0x0300, &[], &[0, 10, 16]);
        check(
            ProtocolVersion::Tls10,
            0x0301,
            0x0301,
            &[0, 10, 11, 16],
            &[13, 43],
        );
        check(
            ProtocolVersion::Tls11,
            0x0301,
            0x0302,
            &[0, 10, 16],
            &[13, 43],
        );
        check(
            ProtocolVersion::Tls12,
            0x0301,
            0x0303,
            &[0, 10, 13, 16],
            &[43, 51],
        );
        check(
            ProtocolVersion::Tls13,
            0x0301,
            0x0303,
            &[0, 10, 13, 16, 43, 45, 51],
            &[11],
        );
    }

    #[test]
    fn renegotiation_scsv_only_below_tls13() {
        let (_, _, s12, _) = dissect(&ClientHello::new(ProtocolVersion::Tls12, vec![1]).encode());
        assert_eq!(s12.last(), Some(&EMPTY_RENEGOTIATION_INFO_SCSV));
        let (_, _, s13, _) =
            dissect(&ClientHello::new(ProtocolVersion::Tls13, vec![0x1301]).encode());
        assert_eq!(s13, vec![0x1301]);
    }

    #[test]
    fn no_sni_for_ip_addresses() {
        let h = ClientHello::new(ProtocolVersion::Tls12, vec![1]).server_name(Some("127.0.0.1"));
        assert_eq!(h.server_name, None);
        let (_, _, _, exts) = dissect(&h.encode());
        assert!(!exts.contains(&0));
    }

    #[test]
    fn version_rules() {
        use ProtocolVersion::*;
        assert!(Tls12.can_use(Ssl3));
        assert!(!Tls11.can_use(Tls12));
        assert!(!Tls13.can_use(Tls12));
        assert!(!Tls12.can_use(Tls13));
        assert_eq!(ProtocolVersion::from_wire(0x0302), Some(Tls11));
        for v in ProtocolVersion::ALL {
            let json = serde_json::to_string(&v).unwrap();
            assert_eq!(json, format!("\"{v}\""), "serde names are the report names");
        }
    }
}
