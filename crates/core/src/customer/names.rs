//! Customer names: what is allowed, and the role and database they map to.

use serde::Serialize;

use crate::config::NamingPolicy;

/// PostgreSQL's identifier limit (NAMEDATALEN - 1).
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// Names that can never be customers, whatever the policy makes of them.
const RESERVED: &[&str] = &[
    "postgres",
    "template0",
    "template1",
    "public",
    "all",
    "sameuser",
    "samerole",
    "samegroup",
    "replication",
    "costplus",
    "root",
    "admin",
    "pgbackrest",
];

/// A validated customer with its role and database names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CustomerNames {
    /// The customer name.
    pub customer: String,
    /// The login role.
    pub role: String,
    /// The database.
    pub database: String,
}

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// Empty or only blanks.
    #[error("the customer name is empty")]
    Empty,
    /// A character outside `a-z 0-9 _`, or not starting with a letter.
    #[error(
        "customer name {name:?}: {problem}; use lowercase letters, digits and _ and start with a letter"
    )]
    Characters {
        /// The name as given.
        name: String,
        /// What is wrong.
        problem: String,
    },
    /// Too long once the policy adds its prefix/suffix.
    #[error(
        "customer name {name:?} is too long: {what} {derived:?} is {len} bytes, PostgreSQL allows {MAX_IDENTIFIER_BYTES}"
    )]
    TooLong {
        /// The name.
        name: String,
        /// `role` or `database`.
        what: &'static str,
        /// The derived identifier.
        derived: String,
        /// Its length.
        len: usize,
    },
    /// A reserved or system name.
    #[error("customer name {name:?} is reserved ({why})")]
    Reserved {
        /// The name.
        name: String,
        /// Why.
        why: String,
    },
}

/// Validate `name` against the policy and derive its role and database. `admin_names` are the
/// administrator's role and database, which a customer may never be or map onto.
pub fn validate(
    name: &str,
    policy: &NamingPolicy,
    admin_names: &[&str],
) -> Result<CustomerNames, NameError> {
    if name.trim().is_empty() {
        return Err(NameError::Empty);
    }
    let chars = |problem: &str| NameError::Characters {
        name: name.into(),
        problem: problem.into(),
    };
    let first = name.chars().next().unwrap_or(' ');
    if !first.is_ascii_lowercase() {
        return Err(chars(&format!("it starts with {first:?}")));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
    {
        let what = if bad.is_ascii_uppercase() {
            format!("uppercase {bad:?}")
        } else if bad.is_whitespace() {
            "whitespace".to_string()
        } else if !bad.is_ascii() {
            format!("non-ASCII character {bad:?} (U+{:04X})", bad as u32)
        } else {
            format!("character {bad:?}")
        };
        return Err(chars(&format!("it contains {what}")));
    }
    let reserved = |why: &str| NameError::Reserved {
        name: name.into(),
        why: why.into(),
    };
    if name.starts_with("pg_") {
        return Err(reserved("names starting with pg_ belong to PostgreSQL"));
    }
    if RESERVED.contains(&name) {
        return Err(reserved("a system or keyword name"));
    }
    let role = policy.role_for(name);
    let database = policy.database_for(name);
    for (what, derived) in [("role", &role), ("database", &database)] {
        if derived.len() > MAX_IDENTIFIER_BYTES {
            return Err(NameError::TooLong {
                name: name.into(),
                what,
                derived: derived.clone(),
                len: derived.len(),
            });
        }
        if derived.starts_with("pg_")
            || RESERVED.contains(&derived.as_str())
            || admin_names.contains(&derived.as_str())
        {
            return Err(reserved(&format!("its {what} would be {derived:?}")));
        }
    }
    if admin_names.contains(&name) {
        return Err(reserved("the administrator's role or database"));
    }
    if role == database {
        return Err(reserved(
            "the naming policy gives the role and the database the same name",
        ));
    }
    Ok(CustomerNames {
        customer: name.into(),
        role,
        database,
    })
}

/// Quote an SQL identifier (names are validated, but quoting is never skipped).
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quote an SQL string literal.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, expect: Result<(&str, &str), &str>) {
        let got = validate(name, &NamingPolicy::default(), &["postgres", "admin_db"]);
        match (got, expect) {
            (Ok(n), Ok((role, db))) => assert_eq!(
                (n.role.as_str(), n.database.as_str()),
                (role, db),
                "{name:?}"
            ),
            (Err(e), Err(fragment)) => assert!(e.to_string().contains(fragment), "{name:?}: {e}"),
            (got, expect) => panic!("{name:?}: got {got:?}, expected {expect:?}"),
        }
    }

    #[test]
    fn hostile_and_valid_names() {
        check("acme", Ok(("acme_user", "acme_db")));
        check("a1_b2", Ok(("a1_b2_user", "a1_b2_db")));
        check("", Err("empty"));
        check("   ", Err("empty"));
        check("Acme", Err("starts with 'A'"));
        check("acMe", Err("uppercase 'M'"));
        check("a b", Err("whitespace"));
        check("acme;", Err("character ';'"));
        check("x\"; DROP ROLE postgres; --", Err("character '\"'"));
        check("a'b", Err("character '\\''"));
        check("аcme", Err("starts with")); // Cyrillic а
        check("acmе", Err("non-ASCII")); // Cyrillic е at the end
        check("1acme", Err("starts with '1'"));
        check("_acme", Err("starts with '_'"));
        check("pg_acme", Err("pg_"));
        check("postgres", Err("reserved"));
        check("template1", Err("reserved"));
        check("public", Err("reserved"));
        check("replication", Err("reserved"));
        check("admin", Err("reserved"));
        check(&"a".repeat(200), Err("too long"));
    }

    #[test]
    fn length_limit_is_exact() {
        let p = NamingPolicy::default();
        assert!(validate(&"a".repeat(58), &p, &[]).is_ok()); // a×58 + "_user" = 63 bytes
        let err = validate(&"a".repeat(59), &p, &[]).unwrap_err();
        assert!(
            matches!(
                err,
                NameError::TooLong {
                    what: "role",
                    len: 64,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn admin_database_collision() {
        let p = NamingPolicy::default();
        let err = validate("admin", &p, &["admin_db"]).unwrap_err();
        assert!(matches!(err, NameError::Reserved { .. }));
        let err = validate("ops", &p, &["ops_db"]).unwrap_err();
        assert!(err.to_string().contains("its database would be"), "{err}");
    }
}
