//! A sans-IO reader of the server's first flight: ServerHello (or HelloRetryRequest), and for
//! TLS 1.2 and older the plaintext Certificate and ServerKeyExchange that follow, or an alert.
//!
//! Feed it bytes as they arrive with [`ServerFlight::feed`]; it says when it has seen enough.

/// The HelloRetryRequest marker: a ServerHello whose random is SHA-256("HelloRetryRequest").
const HRR_RANDOM: [u8; 32] = [
    0xCF, 0x21, 0xAD, 0x74, 0xE5, 0x9A, 0x61, 0x11, 0xBE, 0x1D, 0x8C, 0x02, 0x1E, 0x65, 0xB8, 0x91,
    0xC2, 0xA2, 0x11, 0x16, 0x7A, 0xBB, 0x8C, 0x5E, 0x07, 0x9E, 0x09, 0xE2, 0xC8, 0xA8, 0x33, 0x9C,
];

/// Largest record we accept (2^14 plus the TLS 1.2 expansion allowance).
const MAX_RECORD: usize = 16_384 + 2_048;
/// Largest handshake message we buffer (certificate chains are a few KiB).
const MAX_HANDSHAKE: usize = 256 * 1024;

/// What the server chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerHello {
    /// The negotiated version (from `supported_versions` when present, else the legacy field).
    pub version: u16,
    /// The legacy `server_version` field.
    pub legacy_version: u16,
    /// The chosen cipher suite.
    pub cipher_suite: u16,
    /// The chosen compression method (anything but 0 is CRIME-prone).
    pub compression: u8,
    /// The ALPN protocol the server selected.
    pub alpn: Option<Vec<u8>>,
    /// This is a HelloRetryRequest (TLS 1.3: the server wants another key share).
    pub hello_retry: bool,
    /// The key share group (TLS 1.3).
    pub key_share_group: Option<u16>,
    /// Extension types present, in order.
    pub extensions: Vec<u16>,
}

/// An alert record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alert {
    /// 1 warning, 2 fatal.
    pub level: u8,
    /// Alert description code.
    pub description: u8,
}

impl Alert {
    /// The RFC name of the description.
    pub fn name(&self) -> &'static str {
        alert_name(self.description)
    }
}

impl std::fmt::Display for Alert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "alert {} ({})", self.name(), self.description)
    }
}

/// The RFC 8446 / 5246 name of an alert description.
pub fn alert_name(code: u8) -> &'static str {
    match code {
        0 => "close_notify",
        10 => "unexpected_message",
        20 => "bad_record_mac",
        21 => "decryption_failed",
        22 => "record_overflow",
        30 => "decompression_failure",
        40 => "handshake_failure",
        41 => "no_certificate",
        42 => "bad_certificate",
        43 => "unsupported_certificate",
        44 => "certificate_revoked",
        45 => "certificate_expired",
        46 => "certificate_unknown",
        47 => "illegal_parameter",
        48 => "unknown_ca",
        49 => "access_denied",
        50 => "decode_error",
        51 => "decrypt_error",
        60 => "export_restriction",
        70 => "protocol_version",
        71 => "insufficient_security",
        80 => "internal_error",
        86 => "inappropriate_fallback",
        90 => "user_canceled",
        100 => "no_renegotiation",
        109 => "missing_extension",
        110 => "unsupported_extension",
        112 => "unrecognized_name",
        116 => "certificate_required",
        120 => "no_application_protocol",
        _ => "unknown",
    }
}

/// How the flight ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// We saw everything we asked for.
    Complete,
    /// The server sent an alert.
    Alert(Alert),
    /// The connection closed before we saw enough.
    Closed,
    /// The first bytes were not a TLS record (another protocol, or an SSLv2 server).
    NotTls(Vec<u8>),
    /// A TLS record or handshake message that does not parse.
    Malformed(String),
}

/// Everything read from the server's first flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flight {
    /// The ServerHello, when one arrived.
    pub hello: Option<ServerHello>,
    /// The certificate chain (DER, leaf first), when sent in clear (TLS 1.2 and older).
    pub certificates: Vec<Vec<u8>>,
    /// The raw ServerKeyExchange body (TLS 1.2 and older, (EC)DHE suites).
    pub server_key_exchange: Option<Vec<u8>>,
    /// How it ended.
    pub end: End,
}

/// Incremental reader of the server's first flight.
#[derive(Debug)]
pub struct ServerFlight {
    want_rest: bool,
    buf: Vec<u8>,
    hs: Vec<u8>,
    records: usize,
    flight: Flight,
    done: bool,
}

impl ServerFlight {
    /// A reader. With `want_rest`, read on after a TLS 1.2-or-older ServerHello until
    /// ServerHelloDone (to capture the certificate chain and key exchange).
    pub fn new(want_rest: bool) -> Self {
        Self {
            want_rest,
            buf: Vec::new(),
            hs: Vec::new(),
            records: 0,
            flight: Flight {
                hello: None,
                certificates: Vec::new(),
                server_key_exchange: None,
                end: End::Closed,
            },
            done: false,
        }
    }

    /// Whether the reader has seen enough; then call [`ServerFlight::finish`].
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Feed bytes read from the socket. Returns `true` once done.
    pub fn feed(&mut self, data: &[u8]) -> bool {
        if self.done {
            return true;
        }
        self.buf.extend_from_slice(data);
        while !self.done {
            if self.records == 0 && !self.buf.is_empty() && !looks_like_tls(&self.buf) {
                let n = self.buf.len().min(16);
                self.end(End::NotTls(self.buf[..n].to_vec()));
                break;
            }
            if self.buf.len() < 5 {
                break;
            }
            let len = u16::from_be_bytes([self.buf[3], self.buf[4]]) as usize;
            if len > MAX_RECORD {
                self.end(End::Malformed(format!("record of {len} bytes")));
                break;
            }
            if self.buf.len() < 5 + len {
                break;
            }
            let kind = self.buf[0];
            let fragment: Vec<u8> = self.buf[5..5 + len].to_vec();
            self.buf.drain(..5 + len);
            self.records += 1;
            self.record(kind, &fragment);
        }
        self.done
    }

    /// The result; call when done or when the connection closed or timed out.
    pub fn finish(self) -> Flight {
        self.flight
    }

    fn end(&mut self, end: End) {
        self.flight.end = end;
        self.done = true;
    }

    fn record(&mut self, kind: u8, fragment: &[u8]) {
        match kind {
            21 => {
                if fragment.len() < 2 {
                    return self.end(End::Malformed("short alert".into()));
                }
                self.end(End::Alert(Alert {
                    level: fragment[0],
                    description: fragment[1],
                }));
            }
            22 => {
                if self.hs.len() + fragment.len() > MAX_HANDSHAKE {
                    return self.end(End::Malformed("handshake message too long".into()));
                }
                self.hs.extend_from_slice(fragment);
                self.handshake_messages();
            }
            20 => {
                // change_cipher_spec: TLS 1.3 compatibility mode sends one after the hello;
                // TLS 1.2 sends one only after the client's key exchange. Either way we stop.
                if self.flight.hello.is_some() {
                    self.end(End::Complete);
                } else {
                    self.end(End::Malformed(
                        "change_cipher_spec before ServerHello".into(),
                    ));
                }
            }
            other => self.end(End::Malformed(format!(
                "unexpected record type {other} in the first flight"
            ))),
        }
    }

    fn handshake_messages(&mut self) {
        while !self.done && self.hs.len() >= 4 {
            let len = u32::from_be_bytes([0, self.hs[1], self.hs[2], self.hs[3]]) as usize;
            if self.hs.len() < 4 + len {
                return;
            }
            let kind = self.hs[0];
            let body: Vec<u8> = self.hs[4..4 + len].to_vec();
            self.hs.drain(..4 + len);
            self.message(kind, &body);
        }
    }

    fn message(&mut self, kind: u8, body: &[u8]) {
        match (kind, self.flight.hello.is_some()) {
            (2, false) => match parse_server_hello(body) {
                Ok(hello) => {
                    let stop = !self.want_rest || hello.hello_retry || hello.version >= 0x0304;
                    self.flight.hello = Some(hello);
                    if stop {
                        self.end(End::Complete);
                    }
                }
                Err(e) => self.end(End::Malformed(format!("ServerHello: {e}"))),
            },
            (11, true) => match parse_certificate_list(body) {
                Ok(certs) => self.flight.certificates = certs,
                Err(e) => self.end(End::Malformed(format!("Certificate: {e}"))),
            },
            (12, true) => self.flight.server_key_exchange = Some(body.to_vec()),
            (13 | 22, true) => {} // certificate_request, certificate_status
            (14, true) => self.end(End::Complete),
            (other, _) => self.end(End::Malformed(format!(
                "unexpected handshake message {other} in the first flight"
            ))),
        }
    }
}

fn looks_like_tls(buf: &[u8]) -> bool {
    let ok_type = matches!(buf[0], 20..=23);
    let ok_major = buf.len() < 2 || buf[1] == 3;
    ok_type && ok_major
}

/// A bounds-checked reader over a byte slice.
pub(crate) struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Self {
        Self { b, i: 0 }
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.b.len() - self.i < n {
            return Err(format!(
                "truncated: wanted {n} bytes at offset {}, {} left",
                self.i,
                self.b.len() - self.i
            ));
        }
        let s = &self.b[self.i..self.i + n];
        self.i += n;
        Ok(s)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, String> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }
    pub(crate) fn u24(&mut self) -> Result<usize, String> {
        let s = self.take(3)?;
        Ok(u32::from_be_bytes([0, s[0], s[1], s[2]]) as usize)
    }
    pub(crate) fn rest(&self) -> usize {
        self.b.len() - self.i
    }
}

/// Parse a ServerHello body.
pub fn parse_server_hello(body: &[u8]) -> Result<ServerHello, String> {
    let mut r = Reader::new(body);
    let legacy_version = r.u16()?;
    let random = r.take(32)?;
    let sid = r.u8()? as usize;
    r.take(sid)?;
    let cipher_suite = r.u16()?;
    let compression = r.u8()?;
    let mut hello = ServerHello {
        version: legacy_version,
        legacy_version,
        cipher_suite,
        compression,
        alpn: None,
        hello_retry: random == HRR_RANDOM,
        key_share_group: None,
        extensions: Vec::new(),
    };
    if r.rest() == 0 {
        return Ok(hello);
    }
    let total = r.u16()? as usize;
    let mut e = Reader::new(r.take(total)?);
    while e.rest() > 0 {
        let kind = e.u16()?;
        let len = e.u16()? as usize;
        let data = e.take(len)?;
        hello.extensions.push(kind);
        let mut d = Reader::new(data);
        match kind {
            43 => hello.version = d.u16()?,
            16 => {
                let _list = d.u16()?;
                let n = d.u8()? as usize;
                hello.alpn = Some(d.take(n)?.to_vec());
            }
            51 => hello.key_share_group = Some(d.u16()?),
            _ => {}
        }
    }
    Ok(hello)
}

/// Parse a TLS 1.2-or-older Certificate message body into DER certificates, leaf first.
pub fn parse_certificate_list(body: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut r = Reader::new(body);
    let total = r.u24()?;
    let mut list = Reader::new(r.take(total)?);
    let mut certs = Vec::new();
    while list.rest() > 0 {
        let n = list.u24()?;
        certs.push(list.take(n)?.to_vec());
    }
    Ok(certs)
}

/// What a ServerKeyExchange says about the ephemeral key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyExchange {
    /// ECDHE on a named group (IANA group id).
    Ecdhe {
        /// The group.
        group: u16,
    },
    /// Finite-field DHE with a prime of this many bits.
    Dhe {
        /// Size of the prime p.
        bits: usize,
    },
}

/// Interpret a ServerKeyExchange body for an ECDHE (`ecdhe = true`) or DHE suite.
pub fn parse_key_exchange(body: &[u8], ecdhe: bool) -> Result<KeyExchange, String> {
    let mut r = Reader::new(body);
    if ecdhe {
        let curve_type = r.u8()?;
        if curve_type != 3 {
            return Err(format!(
                "curve type {curve_type} (only named curves are used)"
            ));
        }
        Ok(KeyExchange::Ecdhe { group: r.u16()? })
    } else {
        let n = r.u16()? as usize;
        let p = r.take(n)?;
        let lead = p.iter().take_while(|b| **b == 0).count();
        let bits = match p.get(lead) {
            Some(first) => (p.len() - lead - 1) * 8 + (8 - first.leading_zeros() as usize),
            None => 0,
        };
        Ok(KeyExchange::Dhe { bits })
    }
}

/// The IANA name of a named group.
pub fn group_name(group: u16) -> String {
    match group {
        0x0013 => "secp192r1".into(),
        0x0015 => "secp224r1".into(),
        0x0016 => "secp256k1".into(),
        0x0017 => "secp256r1".into(),
        0x0018 => "secp384r1".into(),
        0x0019 => "secp521r1".into(),
        0x001D => "x25519".into(),
        0x001E => "x448".into(),
        0x0100 => "ffdhe2048".into(),
        0x0101 => "ffdhe3072".into(),
        0x0102 => "ffdhe4096".into(),
        0x0103 => "ffdhe6144".into(),
        0x0104 => "ffdhe8192".into(),
        other => format!("0x{other:04x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![kind, 3, 3];
        v.extend_from_slice(&(body.len() as u16).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn handshake(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![kind];
        v.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        v.extend_from_slice(body);
        v
    }

    fn server_hello(
        version: u16,
        suite: u16,
        exts: &[(u16, Vec<u8>)],
        random: [u8; 32],
    ) -> Vec<u8> {
        let mut b = version.to_be_bytes().to_vec();
        b.extend_from_slice(&random);
        b.push(0);
        b.extend_from_slice(&suite.to_be_bytes());
        b.push(0);
        let mut e = Vec::new();
        for (k, d) in exts {
            e.extend_from_slice(&k.to_be_bytes());
            e.extend_from_slice(&(d.len() as u16).to_be_bytes());
            e.extend_from_slice(d);
        }
        b.extend_from_slice(&(e.len() as u16).to_be_bytes());
        b.extend_from_slice(&e);
        handshake(2, &b)
    }

    fn cert_msg(certs: &[&[u8]]) -> Vec<u8> {
        let mut list = Vec::new();
        for c in certs {
            list.extend_from_slice(&(c.len() as u32).to_be_bytes()[1..]);
            list.extend_from_slice(c);
        }
        let mut b = (list.len() as u32).to_be_bytes()[1..].to_vec();
        b.extend_from_slice(&list);
        handshake(11, &b)
    }

    /// Feed `bytes` one byte at a time (worst case fragmentation) and in one go; both must agree.
    fn check(bytes: &[u8], want_rest: bool) -> Flight {
        let mut whole = ServerFlight::new(want_rest);
        whole.feed(bytes);
        let mut drip = ServerFlight::new(want_rest);
        for b in bytes {
            if drip.feed(std::slice::from_ref(b)) {
                break;
            }
        }
        let (a, b) = (whole.finish(), drip.finish());
        if matches!(a.end, End::NotTls(_)) {
            // The evidence kept depends on how much had arrived; the verdict does not.
            assert!(matches!(b.end, End::NotTls(_)), "{b:?}");
        } else {
            assert_eq!(a, b);
        }
        a
    }

    #[test]
    fn tls12_hello_certificate_and_done() {
        let mut hs = server_hello(
            0x0303,
            0xC02B,
            &[(
                16,
                vec![
                    0, 11, 10, b'p', b'o', b's', b't', b'g', b'r', b'e', b's', b'q', b'l',
                ],
            )],
            [1; 32],
        );
        hs.extend(cert_msg(&[b"leaf", b"ca"]));
        hs.extend(handshake(12, &[3, 0, 0x1d, 32]));
        hs.extend(handshake(14, &[]));
        // Split the handshake over two records.
        let mut bytes = record(22, &hs[..20]);
        bytes.extend(record(22, &hs[20..]));
        let f = check(&bytes, true);
        assert_eq!(f.end, End::Complete);
        let h = f.hello.unwrap();
        assert_eq!((h.version, h.cipher_suite), (0x0303, 0xC02B));
        assert_eq!(h.alpn.as_deref(), Some(&b"postgresql"[..]));
        assert_eq!(f.certificates, vec![b"leaf".to_vec(), b"ca".to_vec()]);
        let kx = parse_key_exchange(&f.server_key_exchange.unwrap(), true).unwrap();
        assert_eq!(kx, KeyExchange::Ecdhe { group: 0x1d });
    }

    #[test]
    fn without_want_rest_stops_at_the_hello() {
        let mut hs = server_hello(0x0301, 0x002F, &[], [1; 32]);
        hs.extend(cert_msg(&[b"leaf"]));
        let f = check(&record(22, &hs), false);
        assert_eq!(f.end, End::Complete);
        assert!(f.certificates.is_empty());
        assert_eq!(f.hello.unwrap().version, 0x0301);
    }

    #[test]
    fn tls13_hello_and_retry() {
        let hs = server_hello(
            0x0303,
            0x1301,
            &[(43, vec![3, 4]), (51, vec![0, 0x1d, 0, 0])],
            [7; 32],
        );
        let f = check(&record(22, &hs), true);
        let h = f.hello.unwrap();
        assert_eq!(
            (h.version, h.legacy_version, h.hello_retry),
            (0x0304, 0x0303, false)
        );
        assert_eq!(h.key_share_group, Some(0x1d));
        let hrr = server_hello(
            0x0303,
            0x1302,
            &[(43, vec![3, 4]), (51, vec![0, 0x17])],
            HRR_RANDOM,
        );
        let f = check(&record(22, &hrr), true);
        assert!(f.hello.unwrap().hello_retry);
    }

    #[test]
    fn alerts_junk_and_truncation() {
        let f = check(&record(21, &[2, 70]), true);
        assert_eq!(
            f.end,
            End::Alert(Alert {
                level: 2,
                description: 70
            })
        );
        assert_eq!(
            Alert {
                level: 2,
                description: 70
            }
            .to_string(),
            "alert protocol_version (70)"
        );
        let f = check(b"HTTP/1.1 400 Bad Request\r\n", true);
        assert!(matches!(f.end, End::NotTls(ref b) if b.starts_with(b"HTTP")));
        let f = check(&[0x80, 0x2e, 0x04, 0x00], true);
        assert!(matches!(f.end, End::NotTls(_)), "SSLv2 framing is not TLS");
        // A truncated hello: the reader waits for more; finish() reports Closed.
        let hs = server_hello(0x0303, 0xC02B, &[], [1; 32]);
        let bytes = record(22, &hs);
        let f = check(&bytes[..bytes.len() - 3], true);
        assert_eq!(f.end, End::Closed);
        assert!(f.hello.is_none());
        // A hello whose inner lengths lie.
        let mut bad = hs.clone();
        bad[4 + 34] = 200; // session id length beyond the message
        let f = check(&record(22, &bad), true);
        assert!(
            matches!(f.end, End::Malformed(ref m) if m.contains("ServerHello")),
            "{:?}",
            f.end
        );
        let f = check(&[22, 3, 3, 0xff, 0xff], true);
        assert!(matches!(f.end, End::Malformed(_)));
    }

    #[test]
    fn dh_prime_size() {
        let mut body = vec![0x01, 0x01, 0x00];
        body.extend(std::iter::repeat_n(0xff, 256));
        body.truncate(2 + 257);
        assert_eq!(
            parse_key_exchange(&body, false).unwrap(),
            KeyExchange::Dhe { bits: 2048 }
        );
        assert_eq!(group_name(0x17), "secp256r1");
    }

    proptest::proptest! {
        /// Whatever a server sends, the reader neither panics nor reads past its input, and
        /// chunking does not change its verdict.
        #[test]
        fn never_panics_on_server_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600), cut in 0usize..600) {
            let mut a = ServerFlight::new(true);
            a.feed(&bytes);
            let mut b = ServerFlight::new(true);
            let cut = cut.min(bytes.len());
            if !b.feed(&bytes[..cut]) {
                b.feed(&bytes[cut..]);
            }
            let (a, b) = (a.finish(), b.finish());
            proptest::prop_assert_eq!(a.hello, b.hello);
            let _ = parse_server_hello(&bytes);
            let _ = parse_certificate_list(&bytes);
            let _ = parse_key_exchange(&bytes, true);
            let _ = parse_key_exchange(&bytes, false);
            let _ = crate::wire::pg::ssl_answer(&bytes);
            let _ = crate::wire::pg::startup_answer(&bytes);
        }

        /// Records that look like TLS (valid header) with random bodies.
        #[test]
        fn never_panics_on_tls_shaped_records(kind in 20u8..24, body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let mut rec = vec![kind, 3, 3];
            rec.extend_from_slice(&(body.len() as u16).to_be_bytes());
            rec.extend_from_slice(&body);
            let mut f = ServerFlight::new(true);
            f.feed(&rec);
            let _ = f.finish();
        }
    }
}
