//! The few PostgreSQL protocol messages the probe needs: SSLRequest and its one-byte answer,
//! a StartupMessage without TLS, and the server's first answer to it.

/// The SSLRequest packet: length 8, code 80877103.
pub const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xD2, 0x16, 0x2F];

/// The ALPN protocol name PostgreSQL 17+ requires for direct TLS.
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// The server's answer to SSLRequest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SslAnswer {
    /// `S`: go ahead with the TLS handshake.
    Willing,
    /// `N`: the server has TLS off.
    Unwilling,
    /// `E`: an ErrorResponse (a very old server, or no backend slot: "too many clients").
    Error(ErrorFields),
    /// Anything else: not a PostgreSQL server.
    Other(Vec<u8>),
}

/// Interpret the first byte answered to SSLRequest. `E` needs the whole message: pass what
/// was read; [`error_response_len`] says how much that is.
pub fn ssl_answer(bytes: &[u8]) -> SslAnswer {
    match bytes.first() {
        Some(b'S') if bytes.len() == 1 => SslAnswer::Willing,
        Some(b'N') if bytes.len() == 1 => SslAnswer::Unwilling,
        Some(b'E') => match parse_error_response(bytes) {
            Some(f) => SslAnswer::Error(f),
            None => SslAnswer::Other(bytes.iter().copied().take(16).collect()),
        },
        _ => SslAnswer::Other(bytes.iter().copied().take(16).collect()),
    }
}

/// Length of a backend message whose type byte and 4-byte length start `bytes` (type byte
/// included), when known and sane (at most 64 KiB).
pub fn message_len(bytes: &[u8]) -> Option<usize> {
    if bytes.len() < 5 {
        return None;
    }
    let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
    (4..=65_536).contains(&len).then_some(len + 1)
}

/// Length of an ErrorResponse (alias of [`message_len`], kept for clarity at call sites).
pub fn error_response_len(bytes: &[u8]) -> Option<usize> {
    message_len(bytes)
}

/// The fields of an ErrorResponse that matter to us.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFields {
    /// Severity (`FATAL`, ...).
    pub severity: String,
    /// SQLSTATE.
    pub code: String,
    /// Message.
    pub message: String,
}

impl std::fmt::Display for ErrorFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} (SQLSTATE {})",
            self.severity, self.message, self.code
        )
    }
}

/// Parse a complete ErrorResponse message (type byte included).
pub fn parse_error_response(msg: &[u8]) -> Option<ErrorFields> {
    let total = message_len(msg)?;
    if msg.first() != Some(&b'E') || msg.len() < total {
        return None;
    }
    let mut f = ErrorFields::default();
    let mut rest = &msg[5..total];
    while let Some((&kind, tail)) = rest.split_first() {
        if kind == 0 {
            break;
        }
        let end = tail.iter().position(|b| *b == 0)?;
        let value = String::from_utf8_lossy(&tail[..end]).into_owned();
        match kind {
            b'V' => f.severity = value,
            b'S' if f.severity.is_empty() => f.severity = value,
            b'C' => f.code = value,
            b'M' => f.message = value,
            _ => {}
        }
        rest = &tail[end + 1..];
    }
    Some(f)
}

/// A protocol 3.0 StartupMessage for `user` and `database`.
pub fn startup_message(user: &str, database: &str, application_name: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196_608u32.to_be_bytes()); // 3.0
    for (k, v) in [
        ("user", user),
        ("database", database),
        ("application_name", application_name),
    ] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(&body);
    msg
}

/// What the server answered to a StartupMessage sent without TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupAnswer {
    /// AuthenticationOk straight away: trust authentication, no password at all.
    Trusted,
    /// The server asks for a password (in clear, MD5 or SCRAM) over the unencrypted connection.
    AuthRequested {
        /// The authentication request code (3 cleartext, 5 MD5, 10 SASL, ...).
        code: u32,
        /// Its name.
        method: &'static str,
    },
    /// The server refused (pg_hba.conf has no line for a non-TLS connection, or another error).
    Refused(ErrorFields),
    /// Something that is not a PostgreSQL answer.
    Other(Vec<u8>),
}

/// Interpret the first complete message answered to a StartupMessage.
pub fn startup_answer(msg: &[u8]) -> StartupAnswer {
    match msg.first() {
        Some(b'R') if msg.len() >= 9 => {
            let code = u32::from_be_bytes([msg[5], msg[6], msg[7], msg[8]]);
            if code == 0 {
                StartupAnswer::Trusted
            } else {
                StartupAnswer::AuthRequested {
                    code,
                    method: auth_method_name(code),
                }
            }
        }
        Some(b'E') => match parse_error_response(msg) {
            Some(f) => StartupAnswer::Refused(f),
            None => StartupAnswer::Other(msg.iter().copied().take(16).collect()),
        },
        _ => StartupAnswer::Other(msg.iter().copied().take(16).collect()),
    }
}

/// The name of an authentication request code.
pub fn auth_method_name(code: u32) -> &'static str {
    match code {
        2 => "kerberos-v5",
        3 => "password (cleartext)",
        5 => "md5",
        7 => "gss",
        9 => "sspi",
        10 => "scram-sha-256",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(fields: &[(u8, &str)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (k, v) in fields {
            body.push(*k);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut m = vec![b'E'];
        m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        m.extend_from_slice(&body);
        m
    }

    #[test]
    fn ssl_answers() {
        assert_eq!(ssl_answer(b"S"), SslAnswer::Willing);
        assert_eq!(ssl_answer(b"N"), SslAnswer::Unwilling);
        let e = error(&[
            (b'S', "FATAL"),
            (b'V', "FATAL"),
            (b'C', "53300"),
            (b'M', "sorry, too many clients already"),
        ]);
        assert_eq!(error_response_len(&e), Some(e.len()));
        match ssl_answer(&e) {
            SslAnswer::Error(f) => {
                assert_eq!(f.code, "53300");
                assert_eq!(
                    f.to_string(),
                    "FATAL: sorry, too many clients already (SQLSTATE 53300)"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            ssl_answer(b"HTTP/1.1"),
            SslAnswer::Other(b"HTTP/1.1".to_vec())
        );
        assert!(matches!(ssl_answer(b"E\x00\x00"), SslAnswer::Other(_)));
    }

    #[test]
    fn startup_message_layout() {
        let m = startup_message("alice", "shop", "costplus-tls");
        assert_eq!(
            u32::from_be_bytes([m[0], m[1], m[2], m[3]]) as usize,
            m.len()
        );
        assert_eq!(&m[4..8], &[0, 3, 0, 0]);
        assert!(m.ends_with(b"costplus-tls\0\0"));
    }

    #[test]
    fn startup_answers() {
        assert_eq!(
            startup_answer(&[b'R', 0, 0, 0, 8, 0, 0, 0, 0]),
            StartupAnswer::Trusted
        );
        assert_eq!(
            startup_answer(&[b'R', 0, 0, 0, 8, 0, 0, 0, 10]),
            StartupAnswer::AuthRequested {
                code: 10,
                method: "scram-sha-256"
            }
        );
        let e = error(&[
            (b'S', "FATAL"),
            (b'C', "28000"),
            (b'M', "no pg_hba.conf entry"),
        ]);
        assert!(matches!(startup_answer(&e), StartupAnswer::Refused(f) if f.code == "28000"));
        assert!(matches!(startup_answer(b"junk"), StartupAnswer::Other(_)));
    }
}
