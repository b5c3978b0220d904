//! Findings with stable ids and severities.
//!
//! | id | severity | what |
//! |---|---|---|
//! | HBA001 | error | a line the server refuses (the whole file is then refused) |
//! | HBA002 | warning | reading problems that do not refuse the file (NUL bytes, skipped includes) |
//! | HBA010 | error | `trust` on a network line |
//! | HBA011 | error | `password` (clear text) on a network line |
//! | HBA012 | warning | `md5` on a network line |
//! | HBA020 | warning (error with a weak method) | `host`/`hostnossl` line accepting logins without TLS |
//! | HBA030 | error | `0.0.0.0/0`, `::/0` or `all` with `trust`, `password` or `md5` |
//! | HBA040 | warning | rule that can never match: an earlier rule always wins (shadowed) |
//! | HBA041 | warning | duplicate of an earlier rule |
//! | HBA042 | error | customer (managed block or named-database) rule after a catch-all rule |
//! | HBA050 | warning | no final `reject` rule for network connections |
//! | HBA060 | info | IPv4-only rule without an IPv6 twin |

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use serde::Serialize;
use smallvec::SmallVec;

use crate::rules::{AddressSpec, AuthMethod, ConnType, HbaRule, RuleRow};
use crate::{RuleSet, Severity};

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable id (`HBA0NN`).
    pub id: &'static str,
    /// Severity.
    pub severity: Severity,
    /// File.
    pub file_name: String,
    /// Line (`None` for the file as a whole).
    pub line_number: Option<u32>,
    /// What is wrong and what to do.
    pub message: String,
}

fn covers_type(a: ConnType, b: ConnType) -> bool {
    a == b || (a == ConnType::Host && b != ConnType::Local)
}

/// Whether the database (or user) list `a` matches every name `b` matches: each of `b`'s
/// tokens is in `a`, or `a` says `all`, which in the database field does not match physical
/// replication connections (the keyword `replication`).
fn covers_tokens(a: &[crate::Token], b: &[crate::Token], databases: bool) -> bool {
    let all = a.iter().any(|t| t.is_keyword("all"));
    b.iter()
        .all(|t| a.contains(t) || (all && !(databases && t.is_keyword("replication"))))
}

fn covers_addr(a: &Option<AddressSpec>, b: &Option<AddressSpec>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(AddressSpec::All), Some(_)) => true,
        (
            Some(AddressSpec::Ip { addr: aa, mask: am }),
            Some(AddressSpec::Ip { addr: ba, mask: bm }),
        ) => match (aa, am, ba, bm) {
            (IpAddr::V4(aa), IpAddr::V4(am), IpAddr::V4(ba), IpAddr::V4(bm)) => {
                let (aa, am, ba, bm) = (
                    u32::from(*aa),
                    u32::from(*am),
                    u32::from(*ba),
                    u32::from(*bm),
                );
                am & bm == am && aa & am == ba & am
            }
            (IpAddr::V6(aa), IpAddr::V6(am), IpAddr::V6(ba), IpAddr::V6(bm)) => {
                let (aa, am, ba, bm) = (
                    u128::from(*aa),
                    u128::from(*am),
                    u128::from(*ba),
                    u128::from(*bm),
                );
                am & bm == am && aa & am == ba & am
            }
            _ => false,
        },
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// Whether every connection `b` matches is matched by `a` (so `b` after `a` is dead).
fn covers(a: &HbaRule, b: &HbaRule) -> bool {
    covers_type(a.conn_type, b.conn_type)
        && covers_tokens(&a.databases, &b.databases, true)
        && covers_tokens(&a.users, &b.users, false)
        && covers_addr(&a.address, &b.address)
}

fn is_catch_all(r: &HbaRule) -> bool {
    r.databases.iter().any(|t| t.is_keyword("all"))
        && r.users.iter().any(|t| t.is_keyword("all"))
        && r.address.as_ref().is_none_or(AddressSpec::is_catch_all)
}

fn is_ipv4(r: &HbaRule) -> bool {
    matches!(
        r.address,
        Some(AddressSpec::Ip {
            addr: IpAddr::V4(_),
            ..
        })
    )
}

fn is_ipv6(r: &HbaRule) -> bool {
    matches!(
        r.address,
        Some(AddressSpec::Ip {
            addr: IpAddr::V6(_),
            ..
        })
    )
}

/// What an IPv4 rule's IPv6 twin has in common with it.
type TwinKey<'r> = (ConnType, &'r [crate::Token], &'r [crate::Token], AuthMethod);

fn twin_key(r: &HbaRule) -> TwinKey<'_> {
    (r.conn_type, &r.databases, &r.users, r.method)
}

/// The twin keys of the IPv6 rules.
fn ipv6_twin_keys<'r>(rules: &[(&RuleRow, &'r HbaRule)]) -> HashSet<TwinKey<'r>> {
    rules
        .iter()
        .filter(|(_, o)| is_ipv6(o))
        .map(|(_, o)| twin_key(o))
        .collect()
}

/// A database or user of an index key: the keyword `all`, or one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Name<'r> {
    All,
    Token(&'r crate::Token),
}

/// Rules with more (database, user) pairs than this are kept in one list scanned for every
/// rule, instead of under each pair.
const MAX_PAIRS: usize = 64;

/// The rules seen so far, indexed so that finding the first one that covers a rule does not
/// scan them all: a rule that covers another names its first database (or `all`) and its
/// first user (or `all`), so the candidates are the rules under four (database, user) keys.
/// Customer rules name their own database and user, so a file of 10,000 customers is linted
/// in time linear in its rules; rules with `all` in both fields (and the wide ones) are still
/// tried for every rule, so a long list of `host all all <address>` lines stays quadratic.
#[derive(Default)]
struct Earlier<'r> {
    /// Rule indexes (ascending) under each (database, user) pair they name.
    by_pair: HashMap<(Name<'r>, Name<'r>), Vec<usize>>,
    /// Rules naming more than [`MAX_PAIRS`] pairs, and rules naming no database or user.
    wide: Vec<usize>,
}

fn names<'r>(tokens: &'r [crate::Token]) -> impl Iterator<Item = Name<'r>> {
    let all = tokens.iter().any(|t| t.is_keyword("all"));
    all.then_some(Name::All)
        .into_iter()
        .chain(tokens.iter().map(Name::Token))
}

impl<'r> Earlier<'r> {
    fn add(&mut self, i: usize, r: &'r HbaRule) {
        let pairs = r.databases.len().saturating_add(1) * r.users.len().saturating_add(1);
        if pairs > MAX_PAIRS || r.databases.is_empty() || r.users.is_empty() {
            self.wide.push(i);
            return;
        }
        for d in names(&r.databases) {
            for u in names(&r.users) {
                let list = self.by_pair.entry((d, u)).or_default();
                // `all` listed next to a name would add the rule twice under one key
                if list.last() != Some(&i) {
                    list.push(i);
                }
            }
        }
    }

    /// The lists that hold every earlier rule that can cover (or duplicate) rule `r`.
    fn candidates(&self, r: &'r HbaRule) -> Option<SmallVec<[&[usize]; 5]>> {
        let (d, u) = (r.databases.first()?, r.users.first()?);
        let mut lists: SmallVec<[&[usize]; 5]> = SmallVec::new();
        lists.push(&self.wide);
        for key in [
            (Name::Token(d), Name::Token(u)),
            (Name::Token(d), Name::All),
            (Name::All, Name::Token(u)),
            (Name::All, Name::All),
        ] {
            if let Some(list) = self.by_pair.get(&key) {
                lists.push(list);
            }
        }
        Some(lists)
    }

    /// The first earlier rule matching `pred`, among the candidates of rule `i` (all earlier
    /// rules when it names no database or user).
    fn first(
        &self,
        rules: &[(&RuleRow, &'r HbaRule)],
        i: usize,
        pred: impl Fn(&HbaRule) -> bool,
    ) -> Option<usize> {
        match self.candidates(rules[i].1) {
            Some(lists) => lists
                .iter()
                .filter_map(|list| list.iter().copied().find(|&j| pred(rules[j].1)))
                .min(),
            None => (0..i).find(|&j| pred(rules[j].1)),
        }
    }

    /// The first earlier rule that matches every connection rule `i` matches.
    fn covering(&self, rules: &[(&RuleRow, &'r HbaRule)], i: usize) -> Option<usize> {
        let r = rules[i].1;
        self.first(rules, i, |p| covers(p, r))
    }

    /// The first earlier rule identical to rule `i` (but for its line).
    fn duplicate(&self, rules: &[(&RuleRow, &'r HbaRule)], i: usize) -> Option<usize> {
        let r = rules[i].1;
        self.first(rules, i, |p| same_rule(p, r))
    }
}

fn same_rule(p: &HbaRule, r: &HbaRule) -> bool {
    p.conn_type == r.conn_type
        && p.databases == r.databases
        && p.users == r.users
        && p.address == r.address
        && p.method == r.method
        && p.options == r.options
}

/// Lint a file: `customer_lines` are the line numbers of customer rules (the managed
/// block); when empty, rules naming specific databases count as customer rules.
pub fn lint(set: &RuleSet, customer_lines: &[u32]) -> Vec<Finding> {
    let mut customer_lines = customer_lines.to_vec();
    customer_lines.sort_unstable();
    let mut out = Vec::new();
    let f = |id, severity, row: &RuleRow, message: String| Finding {
        id,
        severity,
        file_name: row.file_name().to_string(),
        line_number: Some(row.line_number),
        message,
    };
    for d in &set.diagnostics {
        let (id, sev) = if d.severity == Severity::Error {
            ("HBA001", Severity::Error)
        } else {
            ("HBA002", Severity::Warning)
        };
        out.push(Finding {
            id,
            severity: sev,
            file_name: d.file.display().to_string(),
            line_number: d.line,
            message: d.message.clone(),
        });
    }
    let rules: Vec<(&RuleRow, &HbaRule)> = set.rules().collect();
    let mut earlier = Earlier::default();
    let ipv6_twins = ipv6_twin_keys(&rules);
    let mut catch_all_seen: Option<u32> = None;
    for (i, (row, r)) in rules.iter().enumerate() {
        let net = r.conn_type.is_network();
        if net {
            match r.method {
                AuthMethod::Trust => out.push(f(
                    "HBA010",
                    Severity::Error,
                    row,
                    "trust on a network line: anyone who reaches the port logs in without a password".into(),
                )),
                AuthMethod::Password => out.push(f(
                    "HBA011",
                    Severity::Error,
                    row,
                    "password sends the password in clear text; use scram-sha-256".into(),
                )),
                AuthMethod::Md5 => out.push(f(
                    "HBA012",
                    Severity::Warning,
                    row,
                    "md5 accepts MD5 password hashes; use scram-sha-256".into(),
                )),
                _ => {}
            }
            if matches!(r.conn_type, ConnType::Host | ConnType::HostNoSsl)
                && r.method != AuthMethod::Reject
            {
                let sev = if r.method.is_weak() {
                    Severity::Error
                } else {
                    Severity::Warning
                };
                out.push(f(
                    "HBA020",
                    sev,
                    row,
                    format!(
                        "{} accepts logins without TLS; use hostssl",
                        r.conn_type.as_str()
                    ),
                ));
            }
            if r.method.is_weak() && r.address.as_ref().is_some_and(AddressSpec::is_catch_all) {
                out.push(f(
                    "HBA030",
                    Severity::Error,
                    row,
                    format!(
                        "{} from every address ({})",
                        r.method.as_str(),
                        row.address().unwrap_or_else(|| "all".into())
                    ),
                ));
            }
        }
        // shadowed / duplicate
        if let Some(j) = earlier.covering(&rules, i) {
            match earlier.duplicate(&rules, i) {
                Some(d) => out.push(f(
                    "HBA041",
                    Severity::Warning,
                    row,
                    format!("duplicate of line {}", rules[d].0.line_number),
                )),
                None => out.push(f(
                    "HBA040",
                    Severity::Warning,
                    row,
                    format!(
                        "can never match: line {} matches every connection this rule would",
                        rules[j].0.line_number
                    ),
                )),
            }
        }
        earlier.add(i, r);
        let is_customer = if customer_lines.is_empty() {
            r.databases.iter().all(|t| {
                t.quoted
                    || !matches!(
                        t.text.as_slice(),
                        b"all" | b"replication" | b"sameuser" | b"samerole" | b"samegroup"
                    )
            })
        } else {
            customer_lines.binary_search(&row.line_number).is_ok()
        };
        if is_customer
            && net
            && let Some(l) = catch_all_seen
        {
            out.push(f(
                "HBA042",
                Severity::Error,
                row,
                format!("customer rule after the catch-all rule on line {l}"),
            ));
        }
        if net && is_catch_all(r) && catch_all_seen.is_none() {
            catch_all_seen = Some(row.line_number);
        }
        if is_ipv4(r) && !ipv6_twins.contains(&twin_key(r)) {
            out.push(f(
                "HBA060",
                Severity::Info,
                row,
                "IPv4 rule without an IPv6 twin (same type, databases, users, method)".into(),
            ));
        }
    }
    // missing final reject
    let net_rules: Vec<&(&RuleRow, &HbaRule)> = rules
        .iter()
        .filter(|(_, r)| r.conn_type.is_network())
        .collect();
    let ends_with_reject = |pred: &dyn Fn(&HbaRule) -> bool| {
        net_rules
            .iter()
            .rev()
            .take_while(|(_, r)| r.method == AuthMethod::Reject)
            .any(|(_, r)| {
                r.conn_type == ConnType::Host
                    && r.databases.iter().any(|t| t.is_keyword("all"))
                    && r.users.iter().any(|t| t.is_keyword("all"))
                    && pred(r)
            })
    };
    let v4 = ends_with_reject(&|r| {
        matches!(r.address, Some(AddressSpec::All))
            || (is_ipv4(r) && r.address.as_ref().is_some_and(AddressSpec::is_catch_all))
    });
    let v6 = ends_with_reject(&|r| {
        matches!(r.address, Some(AddressSpec::All))
            || (is_ipv6(r) && r.address.as_ref().is_some_and(AddressSpec::is_catch_all))
    });
    let complete = v4 && v6;
    if !rules.is_empty() && !complete {
        let file_name = set
            .rows
            .first()
            .map(|r| r.file_name().to_string())
            .unwrap_or_default();
        out.push(Finding {
            id: "HBA050",
            severity: Severity::Warning,
            file_name,
            line_number: None,
            message: "no final reject rule for network connections (e.g. `host all all 0.0.0.0/0 reject` and `host all all ::/0 reject`)".into(),
        });
    }
    out.sort_by_key(|x| (x.line_number.unwrap_or(u32::MAX), x.id));
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a test fails by panicking
    use super::*;
    use crate::{MemEnv, ReadOptions, read_rules};
    use proptest::prelude::*;

    const TYPES: &[&str] = &["local", "host", "hostssl", "hostnossl"];
    const DBS: &[&str] = &[
        "all",
        "a",
        "b",
        "a,b",
        "b,a",
        "\"all\"",
        "replication",
        "all,replication",
        "b,all",
        "a,b,c,d,e,f,g,h",
    ];
    const USERS: &[&str] = &["all", "u", "v", "u,v", "+g", "all,u", "u,v,w,x,y,z,q,r"];
    const ADDRS: &[&str] = &[
        "10.0.0.0/8",
        "10.1.0.0/16",
        "10.1.2.3/32",
        "0.0.0.0/0",
        "::/0",
        "fe80::/10",
        "all",
        "samehost",
    ];
    const METHODS: &[&str] = &["md5", "scram-sha-256", "reject", "trust", "cert"];

    fn line() -> impl Strategy<Value = String> {
        (
            prop::sample::select(TYPES),
            prop::sample::select(DBS),
            prop::sample::select(USERS),
            prop::sample::select(ADDRS),
            prop::sample::select(METHODS),
        )
            .prop_map(|(t, d, u, a, m)| {
                if t == "local" {
                    format!("{t} {d} {u} {m}\n")
                } else {
                    format!("{t} {d} {u} {a} {m}\n")
                }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The index finds the same first covering and first identical earlier rule as
        /// scanning every earlier rule, and the twin set agrees with a scan.
        #[test]
        fn the_index_agrees_with_a_scan(lines in prop::collection::vec(line(), 1..80)) {
            let text = lines.concat();
            let set = read_rules(text.as_bytes(), "/d/pg_hba.conf", &ReadOptions::default(), &MemEnv::new());
            let rules: Vec<(&RuleRow, &HbaRule)> = set.rules().collect();
            let mut earlier = Earlier::default();
            let twins = ipv6_twin_keys(&rules);
            for (i, (_, r)) in rules.iter().enumerate() {
                let scan_cover = (0..i).find(|&j| covers(rules[j].1, r));
                let scan_dup = (0..i).find(|&j| same_rule(rules[j].1, r));
                prop_assert_eq!(earlier.covering(&rules, i), scan_cover, "rule {}", i);
                prop_assert_eq!(earlier.duplicate(&rules, i), scan_dup, "rule {}", i);
                let scan_twin = rules.iter().any(|(_, o)| {
                    is_ipv6(o)
                        && o.conn_type == r.conn_type
                        && o.databases == r.databases
                        && o.users == r.users
                        && o.method == r.method
                });
                prop_assert_eq!(twins.contains(&twin_key(r)), scan_twin);
                earlier.add(i, r);
            }
        }
    }

    #[test]
    fn wide_rules_are_kept_apart_and_still_found() {
        let text =
            "host a,b,c,d,e,f,g,h u,v,w,x,y,z,q,r 10.0.0.0/8 md5\nhost h r 10.1.0.0/16 md5\n";
        let set = read_rules(
            text.as_bytes(),
            "/d/pg_hba.conf",
            &ReadOptions::default(),
            &MemEnv::new(),
        );
        let rules: Vec<(&RuleRow, &HbaRule)> = set.rules().collect();
        let mut earlier = Earlier::default();
        earlier.add(0, rules[0].1);
        assert_eq!(earlier.wide, vec![0]);
        assert!(earlier.by_pair.is_empty());
        assert_eq!(earlier.covering(&rules, 1), Some(0));
    }
}
