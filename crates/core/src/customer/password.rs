//! Customer passwords: 32 characters from the OS CSPRNG, safe in URIs, `.pgpass` and
//! `pg_service.conf` without escaping.

use secrecy::SecretString;

/// 64 symbols: each random byte's low 6 bits pick one, so the choice is exactly uniform.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Length of generated passwords (32 × 6 = 192 bits).
pub const LENGTH: usize = 32;

/// A new password.
pub fn generate() -> Result<SecretString, getrandom::Error> {
    let mut bytes = zeroize::Zeroizing::new([0u8; LENGTH]);
    getrandom::fill(bytes.as_mut())?;
    let s: String = bytes
        .iter()
        .map(|b| ALPHABET[usize::from(b & 63)] as char)
        .collect();
    Ok(SecretString::from(s))
}

/// The SCRAM-SHA-256 verifier of a password, computed here so the plaintext never reaches the
/// server (nor its logs, even with `log_statement = all`).
pub fn scram_verifier(password: &SecretString) -> String {
    use secrecy::ExposeSecret;
    postgres_protocol::password::scram_sha_256(password.expose_secret().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn passwords_are_long_safe_and_distinct() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_eq!(a.expose_secret().len(), LENGTH);
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert!(a.expose_secret().bytes().all(|c| ALPHABET.contains(&c)));
        assert!(
            !a.expose_secret()
                .contains([':', '\\', '@', '/', '?', '#', '%', '\''])
        );
    }

    #[test]
    fn verifier_hides_the_password() {
        let p = generate().unwrap();
        let v = scram_verifier(&p);
        assert!(v.starts_with("SCRAM-SHA-256$4096:"), "{v}");
        assert!(!v.contains(p.expose_secret()));
    }
}
