//! PostgreSQL's own rules for the server's private key file (`be-secure-common.c`,
//! `check_ssl_key_file_permissions`): a regular file, either owned by the server's user with no
//! group or other permissions (0600 or less), or owned by root with at most group read
//! (0640 or less) so that the server's group can read it.

use crate::finding::{Finding, Severity, ids};

/// The facts about a key file that the rules look at (from `stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyFileMeta {
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Group gid.
    pub gid: u32,
    /// A regular file (not a directory, socket, device).
    pub regular: bool,
}

/// Who runs the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerIdentity {
    /// User name (for messages).
    pub name: String,
    /// uid.
    pub uid: u32,
    /// Primary gid and supplementary groups.
    pub gids: Vec<u32>,
}

/// Apply the rules. An empty result means PostgreSQL will accept the file.
pub fn check_key_file(path: &str, meta: KeyFileMeta, server: &ServerIdentity) -> Vec<Finding> {
    let mut out = Vec::new();
    if !meta.regular {
        out.push(Finding::new(
            ids::KEY_FILE_NOT_REGULAR,
            Severity::Fail,
            format!("{path} is not a regular file; PostgreSQL refuses it"),
        ));
        return out;
    }
    let mode = meta.mode & 0o777;
    if meta.uid == server.uid {
        if mode & 0o077 != 0 {
            out.push(Finding::new(
                ids::KEY_FILE_PERMISSIONS,
                Severity::Fail,
                format!(
                    "{path} has mode {mode:04o}: group or others have access; PostgreSQL requires 0600 or less when the file is owned by the server user {} (chmod 600 {path})",
                    server.name
                ),
            ));
        }
    } else if meta.uid == 0 {
        if mode & 0o037 != 0 {
            out.push(Finding::new(
                ids::KEY_FILE_PERMISSIONS,
                Severity::Fail,
                format!(
                    "{path} has mode {mode:04o}: PostgreSQL requires 0640 or less when the file is owned by root (chmod 640 {path})"
                ),
            ));
        } else if !(mode & 0o040 != 0 && server.gids.contains(&meta.gid)) {
            out.push(Finding::new(
                ids::KEY_FILE_UNREADABLE_BY_SERVER,
                Severity::Fail,
                format!(
                    "{path} is owned by root with mode {mode:04o} and group {}: the server user {} cannot read it (give it the server's group and mode 0640)",
                    meta.gid, server.name
                ),
            ));
        }
    } else {
        out.push(Finding::new(
            ids::KEY_FILE_OWNER,
            Severity::Fail,
            format!(
                "{path} is owned by uid {}; PostgreSQL requires the server user {} (uid {}) or root",
                meta.uid, server.name, server.uid
            ),
        ));
    }
    if meta.uid == server.uid && mode & 0o400 == 0 {
        out.push(Finding::new(
            ids::KEY_FILE_UNREADABLE_BY_SERVER,
            Severity::Fail,
            format!(
                "{path} has mode {mode:04o}: its owner {} cannot read it",
                server.name
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(mode: u32, uid: u32, gid: u32, regular: bool, expect: &[&str]) {
        let server = ServerIdentity {
            name: "postgres".into(),
            uid: 105,
            gids: vec![110, 111],
        };
        let got = check_key_file(
            "server.key",
            KeyFileMeta {
                mode,
                uid,
                gid,
                regular,
            },
            &server,
        );
        let got: Vec<&str> = got.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(got, expect, "mode {mode:o} uid {uid} gid {gid}");
    }

    #[test]
    fn postgresql_rules() {
        check(0o600, 105, 110, true, &[]);
        check(0o400, 105, 110, true, &[]);
        check(0o640, 105, 110, true, &[ids::KEY_FILE_PERMISSIONS]);
        check(0o604, 105, 110, true, &[ids::KEY_FILE_PERMISSIONS]);
        check(0o200, 105, 110, true, &[ids::KEY_FILE_UNREADABLE_BY_SERVER]);
        check(0o640, 0, 110, true, &[]);
        check(0o640, 0, 111, true, &[]);
        check(0o600, 0, 110, true, &[ids::KEY_FILE_UNREADABLE_BY_SERVER]);
        check(0o640, 0, 0, true, &[ids::KEY_FILE_UNREADABLE_BY_SERVER]);
        check(0o644, 0, 110, true, &[ids::KEY_FILE_PERMISSIONS]);
        check(0o660, 0, 110, true, &[ids::KEY_FILE_PERMISSIONS]);
        check(0o600, 1000, 1000, true, &[ids::KEY_FILE_OWNER]);
        check(0o600, 105, 110, false, &[ids::KEY_FILE_NOT_REGULAR]);
    }
}
