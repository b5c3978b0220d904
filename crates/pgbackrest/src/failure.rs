//! Typed pgBackRest failures: the process exit code is pgBackRest's error code; together with
//! the message it tells the operator what to do next.

use serde::Serialize;

/// What kind of failure, with the operator's next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum FailureKind {
    /// 82: WAL did not reach the archive in time.
    ArchiveTimeout,
    /// 95: decryption failed (wrong passphrase or a damaged file).
    Crypto,
    /// An encrypted repository's info file does not decrypt to text: wrong passphrase.
    WrongPassphrase,
    /// A repository file has no cipher header: the repository is not encrypted (or the
    /// configuration names a cipher it was not created with).
    NotEncrypted,
    /// 101 (and host/TLS connection errors): the S3 endpoint could not be used.
    Service,
    /// The stanza does not exist (not in the configuration, or `stanza-create` never ran).
    StanzaMissing,
    /// 75: no backup set to restore (or the requested one does not exist).
    NoBackup,
    /// 50: another pgBackRest process holds the lock.
    Locked,
    /// A checksum or format error in the repository: a damaged file.
    Corrupt,
    /// Anything else (the message says what).
    Other,
}

impl FailureKind {
    /// The operator's next step.
    pub fn next_step(self) -> &'static str {
        match self {
            Self::ArchiveTimeout => {
                "WAL is not reaching the archive: check archive_mode=on and archive_command (SHOW archive_command; pg_stat_archiver.last_failed_wal) and the pgBackRest log in the log path"
            }
            Self::Crypto => {
                "decryption failed: check that the repository's cipher passphrase is the one it was created with"
            }
            Self::WrongPassphrase => {
                "the repository does not decrypt: wrong cipher passphrase for this repository (or its backup.info is damaged)"
            }
            Self::NotEncrypted => {
                "the repository is not encrypted the way pgbackrest.conf says: check repoN-cipher-type against how the repository was created, and that the repository path is the right one"
            }
            Self::Service => {
                "the S3 endpoint failed: check the offsite endpoint, port, CA file, bucket and keys, and that the service is reachable"
            }
            Self::StanzaMissing => {
                "the stanza is not set up: run `costplus-backup setup` (it writes pgbackrest.conf and runs stanza-create)"
            }
            Self::NoBackup => {
                "there is no backup to use: run `costplus-backup run --type full` first, or pick an existing set (`costplus-backup info`)"
            }
            Self::Locked => {
                "another pgBackRest command runs for this stanza: wait for it, or find it with `ps`"
            }
            Self::Corrupt => {
                "a repository file is damaged: run `costplus-backup verify`, then take a new full backup"
            }
            Self::Other => "see the message; the pgBackRest log in the log path has details",
        }
    }
}

/// A failed pgBackRest command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("pgbackrest {command} failed{}: {message}\nnext step: {}", code_text(.code), .kind.next_step())]
pub struct Failure {
    /// The command (`backup --type=full --repo=1`), without secrets (there are none in argv).
    pub command: String,
    /// pgBackRest's error code (the exit code), when it exited.
    pub code: Option<i32>,
    /// The kind of failure.
    pub kind: FailureKind,
    /// pgBackRest's message (printable characters only).
    pub message: String,
}

fn code_text(code: &Option<i32>) -> String {
    code.map(|c| format!(" [{c:03}]")).unwrap_or_default()
}

impl Failure {
    /// The operator's next step.
    pub fn next_step(&self) -> &'static str {
        self.kind.next_step()
    }

    /// Build a failure from the exit code and console output of `pgbackrest <command>`.
    pub fn from_output(command: &str, code: Option<i32>, output: &str) -> Self {
        let message = error_message(output);
        let kind = classify(code, &message);
        Self {
            command: command.to_string(),
            code,
            kind,
            message,
        }
    }
}

/// Classify by the error codes that say it all, then by what reading an info file says, then
/// by the other codes, then by message.
pub fn classify(code: Option<i32>, message: &str) -> FailureKind {
    let m = message;
    match code {
        Some(82) => return FailureKind::ArchiveTimeout,
        Some(101) | Some(49) | Some(105) => return FailureKind::Service,
        Some(50) => return FailureKind::Locked,
        _ => {}
    }
    if m.contains("unable to load info file") {
        if m.contains("cipher header invalid") {
            return FailureKind::NotEncrypted;
        }
        // a truncated file (a wrong key never changes the length)
        if m.contains("wrong final block length") {
            return FailureKind::Corrupt;
        }
        // Read with the wrong key, an info file decrypts to garbage (FormatError) or, when
        // the final block's padding does not check, fails to decrypt (CryptoError: unable to
        // flush, bad decrypt): which one depends on the passphrase.
        if m.contains("FormatError") || m.contains("CryptoError") {
            return FailureKind::WrongPassphrase;
        }
    }
    match code {
        Some(95) => return FailureKind::Crypto,
        Some(75) => return FailureKind::NoBackup,
        _ => {}
    }
    if m.contains("has a stanza-create been performed") || m.contains("does this stanza exist") {
        FailureKind::StanzaMissing
    } else if m.contains("TLS") || m.contains("HostConnectError") || m.contains("ServiceError") {
        FailureKind::Service
    } else if m.contains("ChecksumError")
        || m.contains("checksum")
        || m.contains("CryptoError")
        || m.contains("FormatError")
    {
        FailureKind::Corrupt
    } else {
        FailureKind::Other
    }
}

/// The `ERROR:` (and `WARN: repoN:`) lines of pgBackRest's console output with their
/// continuation lines, cleaned of unprintable bytes; the whole output when there are none.
pub fn error_message(output: &str) -> String {
    let mut kept: Vec<String> = Vec::new();
    let mut keep = false;
    for line in output.lines() {
        let body = strip_timestamp(line);
        if body.starts_with("ERROR:") || (body.starts_with("WARN:") && body.contains("repo")) {
            keep = !body.contains("unable to open log file");
            if keep {
                kept.push(body.to_string());
            }
        } else if line.starts_with(' ') && keep {
            kept.push(line.trim().to_string());
        } else {
            keep = false;
        }
    }
    let text = if kept.is_empty() {
        output.trim().to_string()
    } else {
        kept.join("\n")
    };
    printable(&text, 4000)
}

/// pgBackRest prefixes console lines with a timestamp and process id at higher log levels.
fn strip_timestamp(line: &str) -> &str {
    for marker in ["ERROR:", "WARN:"] {
        if let Some(i) = line.find(marker)
            && (i == 0 || line[..i].contains(" P0"))
        {
            return &line[i..];
        }
    }
    line
}

/// Replace control characters and undecodable bytes (a wrongly decrypted file shows up as
/// binary in messages), collapse runs of them, and cap the length.
pub fn printable(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    let mut junk = false;
    for c in text.chars() {
        let bad = (c.is_control() && c != '\n') || c == char::REPLACEMENT_CHARACTER;
        let odd = !c.is_ascii() && !c.is_alphanumeric();
        if bad || odd {
            if !junk {
                out.push_str("<binary>");
            }
            junk = true;
            continue;
        }
        junk = false;
        out.push(c);
        if out.len() >= max {
            out.push_str("...");
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(code: Option<i32>, output: &str, kind: FailureKind, message_has: &str) {
        let f = Failure::from_output("backup", code, output);
        assert_eq!(f.kind, kind, "{output}");
        assert!(f.message.contains(message_has), "{}", f.message);
        let shown = f.to_string();
        assert!(shown.contains("next step:"), "{shown}");
    }

    #[test]
    fn classifies_real_messages() {
        check(
            Some(55),
            "WARN: unable to open log file '/x/main-backup.log': No such file or directory\n      NOTE: process will continue without log file.\nERROR: [055]: unable to load info file '/r/backup/fresh/backup.info' or '/r/backup/fresh/backup.info.copy':\n       FileMissingError: unable to open missing file '/r/backup/fresh/backup.info' for read\n       HINT: has a stanza-create been performed?\n",
            FailureKind::StanzaMissing,
            "unable to load info file",
        );
        check(
            Some(37),
            "ERROR: [037]: backup command requires option: pg1-path\n       HINT: does this stanza exist?\n",
            FailureKind::StanzaMissing,
            "pg1-path",
        );
        check(
            Some(82),
            "ERROR: [082]: WAL segment 000000010000000000000003 was not archived before the 60000ms timeout\n       HINT: check the archive_command to ensure that all options are correct\n",
            FailureKind::ArchiveTimeout,
            "was not archived",
        );
        check(
            Some(95),
            "ERROR: [095]: unable to flush: [101155461] wrong final block length",
            FailureKind::Crypto,
            "final block",
        );
        check(
            Some(75),
            "WARN: repo1: [FormatError] unable to load info file '/r/backup.info':\n      FormatError: key/value found outside of section at line 1: ;\u{1}\u{2}\u{fffd}G\u{fffd}b\nERROR: [075]: no backup set found to restore\n",
            FailureKind::WrongPassphrase,
            "<binary>",
        );
        // The same wrong passphrase, when the last block's padding does not check (the status
        // of `info --output=json`, no exit code).
        check(
            None,
            "[CryptoError] unable to load info file '/r/backup/main/backup.info' or '/r/backup/main/backup.info.copy':\nCryptoError: unable to flush\nHINT: is or was the repo encrypted?\nCryptoError: unable to flush\nHINT: is or was the repo encrypted?\nHINT: backup.info cannot be opened and is required to perform a backup.\nHINT: has a stanza-create been performed?",
            FailureKind::WrongPassphrase,
            "unable to flush",
        );
        check(
            Some(95),
            "ERROR: [095]: unable to load info file '/r/backup/main/backup.info' or '/r/backup/main/backup.info.copy':\n       CryptoError: unable to flush: [101077092] bad decrypt\n       HINT: is or was the repo encrypted?\n",
            FailureKind::WrongPassphrase,
            "bad decrypt",
        );
        // A plain repository read with a cipher configured: no passphrase will help.
        check(
            Some(95),
            "ERROR: [095]: unable to load info file '/r/backup/main/backup.info' or '/r/backup/main/backup.info.copy':\n       CryptoError: cipher header invalid\n       HINT: is or was the repo encrypted?\n",
            FailureKind::NotEncrypted,
            "cipher header invalid",
        );
        // A truncated info file is damage, not a wrong passphrase.
        check(
            Some(95),
            "ERROR: [095]: unable to load info file '/r/backup/main/backup.info' or '/r/backup/main/backup.info.copy':\n       CryptoError: unable to flush: [101077117] wrong final block length\n",
            FailureKind::Corrupt,
            "wrong final block length",
        );
        // An info file warning about one repository does not hide what the command failed of.
        check(
            Some(82),
            "WARN: repo2: [CryptoError] unable to load info file '/r2/archive/main/archive.info':\n      CryptoError: unable to flush\nERROR: [082]: WAL segment 000000010000000000000003 was not archived before the 60000ms timeout\n",
            FailureKind::ArchiveTimeout,
            "was not archived",
        );
        check(
            Some(101),
            "ERROR: [101]: TLS error [1:336130315] wrong version number",
            FailureKind::Service,
            "TLS error",
        );
        check(
            Some(49),
            "ERROR: [049]: unable to get address for 'nowhere.invalid': [-2] Name or service not known",
            FailureKind::Service,
            "nowhere.invalid",
        );
        check(
            Some(1),
            "something odd",
            FailureKind::Other,
            "something odd",
        );
    }

    #[test]
    fn timestamps_are_stripped() {
        let m = error_message("2026-12-04 15:57:55.942 P00  ERROR: [082]: timeout\n");
        assert_eq!(m, "ERROR: [082]: timeout");
    }

    #[test]
    fn binary_is_cleaned() {
        assert_eq!(printable("a\u{1}\u{2}\u{3}b", 100), "a<binary>b");
        assert_eq!(
            printable(&"x".repeat(50), 10),
            format!("{}...", "x".repeat(10))
        );
    }
}
