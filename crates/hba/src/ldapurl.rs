//! `ldapurl=` as OpenLDAP's `ldap_url_parse` (historic flags) splits it, and the error text
//! PostgreSQL prints for its failures (`ldap_err2string` of the URL error code, which is why
//! a bad scheme reads "Time limit exceeded").

/// The parts PostgreSQL copies out of an LDAP URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LdapUrl {
    pub scheme: &'static str,
    pub host: Option<Vec<u8>>,
    pub port: i32,
    pub dn: Option<Vec<u8>>,
    pub first_attr: Option<Vec<u8>>,
    pub scope: i32,
    pub filter: Option<Vec<u8>>,
}

/// `ldap_err2string` for the `LDAP_URL_ERR_*` codes `ldap_url_parse` returns.
fn err_text(code: u8) -> &'static str {
    match code {
        1 => "Operations error",
        2 => "Protocol error",
        3 => "Time limit exceeded",
        4 => "Size limit exceeded",
        5 => "Compare False",
        6 => "Compare True",
        7 => "Authentication method not supported",
        8 => "Strong(er) authentication required",
        9 => "Partial results and referral received",
        10 => "Referral",
        _ => "Unknown error",
    }
}

const BADSCHEME: u8 = 3;
const BADENCLOSURE: u8 = 4;
const BADURL: u8 = 5;
const BADSCOPE: u8 = 8;
const BADFILTER: u8 = 9;
const BADEXTS: u8 = 10;

fn hex_unescape(s: &[u8]) -> Vec<u8> {
    fn unhex(c: u8) -> i32 {
        match c {
            b'0'..=b'9' => (c - b'0') as i32,
            b'A'..=b'F' => (c - b'A' + 10) as i32,
            b'a'..=b'f' => (c - b'a' + 10) as i32,
            _ => -1,
        }
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            i += 1;
            if i >= s.len() {
                break;
            }
            let hi = unhex(s[i]) << 4;
            i += 1;
            if i >= s.len() {
                out.push(hi as u8);
                break;
            }
            out.push((hi + unhex(s[i])) as u8);
            i += 1;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

fn split_once(s: &[u8], c: u8) -> (&[u8], Option<&[u8]>) {
    match s.iter().position(|&b| b == c) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    }
}

fn starts_with_ci(s: &[u8], p: &str) -> bool {
    s.len() >= p.len() && s[..p.len()].eq_ignore_ascii_case(p.as_bytes())
}

fn str2scope(s: &[u8]) -> i32 {
    let l = s.to_ascii_lowercase();
    match l.as_slice() {
        b"one" | b"onelevel" => 1,
        b"base" => 0,
        b"sub" | b"subtree" => 2,
        b"subord" | b"subordinate" | b"children" => 3,
        _ => -1,
    }
}

/// Parse like `ldap_url_parse`; the error is the text PostgreSQL puts after the URL.
pub(crate) fn parse(url_in: &[u8]) -> Result<LdapUrl, &'static str> {
    let mut p = url_in;
    let enclosed = p.first() == Some(&b'<');
    if enclosed {
        p = &p[1..];
    }
    if starts_with_ci(p, "URL:") {
        p = &p[4..];
    }
    let (scheme, rest) = if starts_with_ci(p, "ldap://") {
        ("ldap", &p[7..])
    } else if starts_with_ci(p, "ldaps://") {
        ("ldaps", &p[8..])
    } else if starts_with_ci(p, "ldapi://") {
        ("ldapi", &p[8..])
    } else if starts_with_ci(p, "cldap://") {
        ("cldap", &p[8..])
    } else {
        return Err(err_text(BADSCHEME));
    };
    let mut url = rest;
    if enclosed {
        if url.last() != Some(&b'>') {
            return Err(err_text(BADENCLOSURE));
        }
        url = &url[..url.len() - 1];
    }
    let mut out = LdapUrl {
        scheme,
        ..Default::default()
    };
    // hostport ends at the first '/' (or, Novell kludge, '?')
    let (hostport, dn_part, mut novell_q): (&[u8], Option<&[u8]>, Option<&[u8]>) =
        match url.iter().position(|&b| b == b'/') {
            Some(i) => (&url[..i], Some(&url[i + 1..]), None),
            None => match url.iter().position(|&b| b == b'?') {
                Some(i) => (&url[..i], None, Some(&url[i + 1..])),
                None => (url, None, None),
            },
        };
    let mut host = hostport;
    if scheme != "ldapi" {
        let mut is_v6 = false;
        let port_part: Option<&[u8]>;
        if host.first() == Some(&b'[') {
            let Some(r) = host.iter().position(|&b| b == b']') else {
                return Err(err_text(BADURL));
            };
            let after = &host[r + 1..];
            let q = after.iter().position(|&b| b == b':');
            if let Some(qi) = q
                && qi != 0
            {
                return Err(err_text(BADURL));
            }
            port_part = q.map(|qi| &after[qi + 1..]);
            host = &host[..r];
            is_v6 = true;
        } else {
            match host.iter().position(|&b| b == b':') {
                Some(qi) => {
                    port_part = Some(&host[qi + 1..]);
                    host = &host[..qi];
                }
                None => port_part = None,
            }
        }
        if let Some(pp) = port_part {
            let pp = hex_unescape(pp);
            if pp.is_empty() {
                return Err(err_text(BADURL));
            }
            let digits_end = {
                let mut i = 0;
                if i < pp.len() && (pp[i] == b'+' || pp[i] == b'-') {
                    i += 1;
                }
                let s = i;
                while i < pp.len() && pp[i].is_ascii_digit() {
                    i += 1;
                }
                if i == s { 0 } else { i }
            };
            if digits_end == 0 || digits_end != pp.len() {
                return Err(err_text(BADURL));
            }
            let text = String::from_utf8_lossy(&pp).into_owned();
            out.port = text.parse::<i64>().unwrap_or(0) as i32;
            if dn_part.is_none() {
                novell_q = None;
            }
        }
        if out.port == 0 {
            out.port = if scheme == "ldaps" { 636 } else { 389 };
        }
        if is_v6 {
            // keep the bracket-less host
        }
    }
    let host = hex_unescape(host);
    out.host = (!host.is_empty()).then_some(host);
    let _ = novell_q;
    let Some(p) = dn_part else {
        return Ok(out);
    };
    let (dn, q) = split_once(p, b'?');
    out.dn = Some(hex_unescape(dn));
    let Some(p) = q else { return Ok(out) };
    let (attrs, q) = split_once(p, b'?');
    if !attrs.is_empty() {
        let a = hex_unescape(attrs);
        let first: Vec<u8> = a.split(|&b| b == b',').next().unwrap_or(&[]).to_vec();
        out.first_attr = Some(first);
    }
    let Some(p) = q else { return Ok(out) };
    let (scope, q) = split_once(p, b'?');
    if !scope.is_empty() {
        let s = str2scope(&hex_unescape(scope));
        if s == -1 {
            return Err(err_text(BADSCOPE));
        }
        out.scope = s;
    }
    let Some(p) = q else { return Ok(out) };
    let (filter, q) = split_once(p, b'?');
    if !filter.is_empty() {
        let f = hex_unescape(filter);
        if f.is_empty() {
            return Err(err_text(BADFILTER));
        }
        out.filter = Some(f);
    }
    let Some(p) = q else { return Ok(out) };
    if p.contains(&b'?') {
        return Err(err_text(BADURL));
    }
    let exts: Vec<&[u8]> = p.split(|&b| b == b',').filter(|e| !e.is_empty()).collect();
    if exts.is_empty() {
        return Err(err_text(BADEXTS));
    }
    Ok(out)
}
