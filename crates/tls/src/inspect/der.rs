//! Private keys: just enough DER to find the public half and compare it with a certificate.
//!
//! PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) and SEC1 (`EC PRIVATE KEY`) carry the
//! public key (RSA modulus and exponent; the EC point in SEC1's optional field, which OpenSSL
//! always writes). When it is absent we derive it with rcgen (aws-lc).

/// One DER element: tag byte, contents, and what follows it.
fn tlv(b: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
    if b.len() < 2 {
        return Err("truncated DER".into());
    }
    let tag = b[0];
    let (len, hdr) = match b[1] {
        n if n < 0x80 => (n as usize, 2),
        0x81 if b.len() >= 3 => (b[2] as usize, 3),
        0x82 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
        0x83 if b.len() >= 5 => (u32::from_be_bytes([0, b[2], b[3], b[4]]) as usize, 5),
        _ => return Err("unsupported DER length".into()),
    };
    if b.len() < hdr + len {
        return Err("truncated DER".into());
    }
    Ok((tag, &b[hdr..hdr + len], &b[hdr + len..]))
}

fn expect<'a>(b: &'a [u8], want: u8, what: &str) -> Result<(&'a [u8], &'a [u8]), String> {
    let (tag, content, rest) = tlv(b)?;
    if tag != want {
        return Err(format!(
            "{what}: expected tag 0x{want:02x}, found 0x{tag:02x}"
        ));
    }
    Ok((content, rest))
}

fn strip_int(i: &[u8]) -> &[u8] {
    let lead = i.iter().take_while(|b| **b == 0).count();
    &i[lead.min(i.len().saturating_sub(1))..]
}

/// The public half of a private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicHalf {
    /// RSA modulus and exponent (big-endian, no leading zeros).
    Rsa {
        /// Modulus n.
        n: Vec<u8>,
        /// Public exponent e.
        e: Vec<u8>,
    },
    /// An EC point (uncompressed encoding) or an Ed25519/Ed448 public key: the raw bytes of
    /// the certificate's subjectPublicKey.
    Raw(Vec<u8>),
    /// The key carries no public half and none could be derived.
    Unknown(String),
}

const OID_RSA: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01];
const OID_RSA_PSS: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x0A];
const OID_EC: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];

/// The public half of an RSAPrivateKey (PKCS#1).
pub fn rsa_private_key(der: &[u8]) -> Result<PublicHalf, String> {
    let (seq, _) = expect(der, 0x30, "RSAPrivateKey")?;
    let (_version, rest) = expect(seq, 0x02, "version")?;
    let (n, rest) = expect(rest, 0x02, "modulus")?;
    let (e, _) = expect(rest, 0x02, "publicExponent")?;
    Ok(PublicHalf::Rsa {
        n: strip_int(n).to_vec(),
        e: strip_int(e).to_vec(),
    })
}

/// The public half of an ECPrivateKey (SEC1), when it carries one.
pub fn ec_private_key(der: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let (seq, _) = expect(der, 0x30, "ECPrivateKey")?;
    let (_version, rest) = expect(seq, 0x02, "version")?;
    let (_key, mut rest) = expect(rest, 0x04, "privateKey")?;
    while !rest.is_empty() {
        let (tag, content, tail) = tlv(rest)?;
        if tag == 0xA1 {
            let (bits, _) = expect(content, 0x03, "publicKey")?;
            // BIT STRING: first byte is the number of unused bits (0).
            return Ok(bits.get(1..).map(<[u8]>::to_vec));
        }
        rest = tail;
    }
    Ok(None)
}

/// The public half of a PKCS#8 PrivateKeyInfo.
pub fn pkcs8(der: &[u8]) -> Result<PublicHalf, String> {
    let (seq, _) = expect(der, 0x30, "PrivateKeyInfo")?;
    let (_version, rest) = expect(seq, 0x02, "version")?;
    let (alg, rest) = expect(rest, 0x30, "algorithm")?;
    let (oid, _) = expect(alg, 0x06, "algorithm OID")?;
    let (inner, mut rest) = expect(rest, 0x04, "privateKey")?;
    if oid == OID_RSA || oid == OID_RSA_PSS {
        return rsa_private_key(inner);
    }
    if oid == OID_EC
        && let Some(point) = ec_private_key(inner)?
    {
        return Ok(PublicHalf::Raw(point));
    }
    // PKCS#8 v2 ([1] publicKey), e.g. Ed25519 keys written by some tools.
    while !rest.is_empty() {
        let (tag, content, tail) = tlv(rest)?;
        if tag == 0x81 {
            return Ok(PublicHalf::Raw(
                content.get(1..).unwrap_or_default().to_vec(),
            ));
        }
        rest = tail;
    }
    derive_with_rcgen(der)
}

fn derive_with_rcgen(pkcs8_der: &[u8]) -> Result<PublicHalf, String> {
    let der = rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8_der);
    match rcgen::KeyPair::try_from(&der) {
        Ok(kp) => Ok(PublicHalf::Raw(kp.public_key_raw().to_vec())),
        Err(e) => Ok(PublicHalf::Unknown(format!(
            "the key has no public half and it could not be derived: {e}"
        ))),
    }
}

/// Compare a key's public half with a certificate's subjectPublicKeyInfo.
pub fn matches(
    half: &PublicHalf,
    spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>,
) -> Option<bool> {
    match half {
        PublicHalf::Rsa { n, e } => match spki.parsed() {
            Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => Some(
                strip_int(rsa.modulus) == n.as_slice() && strip_int(rsa.exponent) == e.as_slice(),
            ),
            _ => Some(false),
        },
        PublicHalf::Raw(raw) => Some(spki.subject_public_key.data.as_ref() == raw.as_slice()),
        PublicHalf::Unknown(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths() {
        assert_eq!(
            tlv(&[0x02, 0x01, 0x05]).unwrap(),
            (0x02, &[5u8][..], &[][..])
        );
        let mut long = vec![0x04, 0x81, 0x80];
        long.extend([7u8; 0x80]);
        assert_eq!(tlv(&long).unwrap().1.len(), 0x80);
        assert!(tlv(&[0x30, 0x05, 1]).is_err());
        assert!(tlv(&[0x30]).is_err());
        assert!(pkcs8(b"\x30\x03\x02\x01\x00").is_err());
    }

    #[test]
    fn rcgen_keys_match_their_certificates() {
        for alg in [&rcgen::PKCS_ECDSA_P256_SHA256, &rcgen::PKCS_ED25519] {
            let kp = rcgen::KeyPair::generate_for(alg).unwrap();
            let cert = rcgen::CertificateParams::new(vec!["x".into()])
                .unwrap()
                .self_signed(&kp)
                .unwrap();
            let (_, x) = x509_parser::parse_x509_certificate(cert.der()).unwrap();
            let half = pkcs8(&kp.serialize_der()).unwrap();
            assert_eq!(matches(&half, x.public_key()), Some(true), "{alg:?}");
            let other = rcgen::KeyPair::generate_for(alg).unwrap();
            let half = pkcs8(&other.serialize_der()).unwrap();
            assert_eq!(matches(&half, x.public_key()), Some(false), "{alg:?}");
        }
    }
}
