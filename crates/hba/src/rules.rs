//! From tokenized lines to rules, as `parse_hba_line` and `parse_hba_auth_opt` do, and to the
//! rows of the `pg_hba_file_rules` view (`fill_hba_line`, `get_hba_options`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::borrow::Cow;

use serde::Serialize;
use smallvec::SmallVec;

use crate::addr::{cidr_mask, ntop, parse_numeric_host};
use crate::env::Environment;
use crate::tokenize::{Tok, TokLine, Token};
use crate::version::PgVersion;
use crate::{Diagnostic, Severity};

/// Connection type of a rule (first field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ConnType {
    /// Unix-domain socket.
    Local,
    /// TCP/IP, with or without TLS or GSS encryption.
    Host,
    /// TCP/IP with TLS only.
    HostSsl,
    /// TCP/IP without TLS only.
    HostNoSsl,
    /// TCP/IP with GSSAPI encryption only.
    HostGssEnc,
    /// TCP/IP without GSSAPI encryption only.
    HostNoGssEnc,
}

impl ConnType {
    /// The keyword as written in pg_hba.conf and shown by the view.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnType::Local => "local",
            ConnType::Host => "host",
            ConnType::HostSsl => "hostssl",
            ConnType::HostNoSsl => "hostnossl",
            ConnType::HostGssEnc => "hostgssenc",
            ConnType::HostNoGssEnc => "hostnogssenc",
        }
    }
    /// Parse a connection type keyword.
    pub fn parse(s: &[u8]) -> Option<Self> {
        Some(match s {
            b"local" => ConnType::Local,
            b"host" => ConnType::Host,
            b"hostssl" => ConnType::HostSsl,
            b"hostnossl" => ConnType::HostNoSsl,
            b"hostgssenc" => ConnType::HostGssEnc,
            b"hostnogssenc" => ConnType::HostNoGssEnc,
            _ => return None,
        })
    }
    /// Whether the line is for TCP/IP connections.
    pub fn is_network(self) -> bool {
        self != ConnType::Local
    }
}

/// Authentication method (the view's `auth_method` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[non_exhaustive]
pub enum AuthMethod {
    /// `trust`: no password at all.
    Trust,
    /// `reject`.
    Reject,
    /// `md5` (MD5 or SCRAM).
    Md5,
    /// `password`: clear-text password.
    Password,
    /// `scram-sha-256`.
    ScramSha256,
    /// `gss` (GSSAPI).
    Gss,
    /// `sspi` (Windows only).
    Sspi,
    /// `ident` (TCP).
    Ident,
    /// `peer` (local; `local ... ident` is shown as peer).
    Peer,
    /// `pam`.
    Pam,
    /// `bsd` (OpenBSD only).
    Bsd,
    /// `ldap`.
    Ldap,
    /// `cert`: TLS client certificate.
    Cert,
    /// `radius`.
    Radius,
    /// `oauth` (PostgreSQL 18+).
    OAuth,
}

impl AuthMethod {
    /// The method name as written and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Trust => "trust",
            AuthMethod::Reject => "reject",
            AuthMethod::Md5 => "md5",
            AuthMethod::Password => "password",
            AuthMethod::ScramSha256 => "scram-sha-256",
            AuthMethod::Gss => "gss",
            AuthMethod::Sspi => "sspi",
            AuthMethod::Ident => "ident",
            AuthMethod::Peer => "peer",
            AuthMethod::Pam => "pam",
            AuthMethod::Bsd => "bsd",
            AuthMethod::Ldap => "ldap",
            AuthMethod::Cert => "cert",
            AuthMethod::Radius => "radius",
            AuthMethod::OAuth => "oauth",
        }
    }
    /// Parse a method name (case-sensitive, as the server does).
    pub fn parse(s: &[u8]) -> Option<Self> {
        Some(match s {
            b"trust" => AuthMethod::Trust,
            b"reject" => AuthMethod::Reject,
            b"md5" => AuthMethod::Md5,
            b"password" => AuthMethod::Password,
            b"scram-sha-256" => AuthMethod::ScramSha256,
            b"gss" => AuthMethod::Gss,
            b"sspi" => AuthMethod::Sspi,
            b"ident" => AuthMethod::Ident,
            b"peer" => AuthMethod::Peer,
            b"pam" => AuthMethod::Pam,
            b"bsd" => AuthMethod::Bsd,
            b"ldap" => AuthMethod::Ldap,
            b"cert" => AuthMethod::Cert,
            b"radius" => AuthMethod::Radius,
            b"oauth" => AuthMethod::OAuth,
            _ => return None,
        })
    }
    /// Methods that send a password the server can compare without a strong exchange
    /// (`trust` takes none at all).
    pub fn is_weak(self) -> bool {
        matches!(
            self,
            AuthMethod::Trust | AuthMethod::Password | AuthMethod::Md5
        )
    }
}

/// The address a rule matches (absent on `local` lines).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AddressSpec {
    /// `all`.
    All,
    /// `samehost`: any address of this server.
    SameHost,
    /// `samenet`: any subnet this server is on.
    SameNet,
    /// A numeric address and mask (host bits kept as written).
    Ip {
        /// Address as written.
        addr: IpAddr,
        /// Netmask (from `/bits` or the separate netmask field).
        mask: IpAddr,
    },
    /// A host name (a leading `.` matches a suffix).
    Hostname(Vec<u8>),
}

impl AddressSpec {
    /// Whether this address matches every client of the family it names (`all`,
    /// `0.0.0.0/0`, `::/0`).
    pub fn is_catch_all(&self) -> bool {
        match self {
            AddressSpec::All => true,
            AddressSpec::Ip { mask, .. } => match mask {
                IpAddr::V4(m) => m.is_unspecified(),
                IpAddr::V6(m) => m.is_unspecified(),
            },
            _ => false,
        }
    }
}

/// `clientcert` level of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ClientCert {
    /// No client certificate required.
    #[default]
    Off,
    /// A certificate signed by a trusted CA.
    VerifyCa,
    /// A trusted certificate whose name matches the user.
    VerifyFull,
}

/// A rule the server loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HbaRule {
    /// Connection type.
    pub conn_type: ConnType,
    /// Database tokens (after `@file` expansion; inline when there is one).
    pub databases: SmallVec<[Token; 1]>,
    /// User tokens (after `@file` expansion; inline when there is one).
    pub users: SmallVec<[Token; 1]>,
    /// Address (`None` for `local`).
    pub address: Option<AddressSpec>,
    /// Method (`ident` on `local` is `peer`).
    pub method: AuthMethod,
    /// Client certificate requirement.
    pub clientcert: ClientCert,
    /// Options as the view shows them (fixed order, some hidden; constant texts are not
    /// allocated).
    pub options: SmallVec<[Cow<'static, str>; 1]>,
}

/// A file rules were read from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceFile {
    /// The path (bytes preserved).
    pub path: PathBuf,
    /// The path lossily as UTF-8 (the view's `file_name`).
    pub name: String,
}

impl SourceFile {
    /// The file at `path`.
    pub fn new(path: &Path) -> Self {
        SourceFile {
            path: path.to_path_buf(),
            name: path.to_string_lossy().into_owned(),
        }
    }
}

/// One row of `pg_hba_file_rules`: what the server makes of one rule line.
///
/// The view's columns are methods computed from the parsed rule ([`RuleRow::database`] ...);
/// serialising a row gives exactly the view's column names, `NULL` as `null`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRow {
    /// Line number (first physical line of a continued line).
    pub line_number: u32,
    /// Why the server refuses the line (also set where PostgreSQL 15's view shows a row of
    /// NULLs without a message: see [`RuleRow::view_hides_error`]). A `hostssl` line on a
    /// server with `ssl = off` has an error and a rule: the server loads it but it never
    /// matches.
    pub error: Option<String>,
    /// The file the line is in (the including file for `@file` tokens): shared by the rows of
    /// one file (one pointer per row, not two).
    pub source: Arc<SourceFile>,
    /// Position among rules without error (the view's `rule_number`, PostgreSQL 16+).
    pub rule_number: Option<u32>,
    /// PostgreSQL shows this row with a NULL `error` although it refuses the line (the error
    /// is only logged, e.g. `clientcert=1` on PostgreSQL 14+).
    pub view_hides_error: bool,
    /// The parsed rule when the server loads the line; the view's columns come from it.
    pub rule: Option<HbaRule>,
}

/// The view's columns of one row, owned (what [`RuleRow`] serialises as).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ViewRow {
    /// `line_number`.
    pub line_number: u32,
    /// `type`.
    #[serde(rename = "type")]
    pub conn_type: Option<&'static str>,
    /// `database`.
    pub database: Option<Vec<String>>,
    /// `user_name`.
    pub user_name: Option<Vec<String>>,
    /// `address`.
    pub address: Option<String>,
    /// `netmask`.
    pub netmask: Option<String>,
    /// `auth_method`.
    pub auth_method: Option<&'static str>,
    /// `options`.
    pub options: Option<Vec<String>>,
    /// `error` (ours: also set where the view hides it).
    pub error: Option<String>,
    /// `file_name` (PostgreSQL 16+).
    pub file_name: String,
    /// `rule_number` (PostgreSQL 16+).
    pub rule_number: Option<u32>,
}

fn token_names(v: &[Token]) -> Option<Vec<String>> {
    (!v.is_empty()).then(|| v.iter().map(|t| s(&t.text)).collect())
}

impl RuleRow {
    /// The file the line is in (the including file for `@file` tokens).
    pub fn file(&self) -> &Path {
        &self.source.path
    }
    /// The file lossily as UTF-8 (the view's `file_name`).
    pub fn file_name(&self) -> &str {
        &self.source.name
    }
    /// `type` column.
    pub fn conn_type(&self) -> Option<&'static str> {
        self.rule.as_ref().map(|r| r.conn_type.as_str())
    }
    /// `database` column.
    pub fn database(&self) -> Option<Vec<String>> {
        self.rule.as_ref().and_then(|r| token_names(&r.databases))
    }
    /// `user_name` column.
    pub fn user_name(&self) -> Option<Vec<String>> {
        self.rule.as_ref().and_then(|r| token_names(&r.users))
    }
    /// `address` column.
    pub fn address(&self) -> Option<String> {
        Some(match self.rule.as_ref()?.address.as_ref()? {
            AddressSpec::All => "all".into(),
            AddressSpec::SameHost => "samehost".into(),
            AddressSpec::SameNet => "samenet".into(),
            AddressSpec::Hostname(h) => s(h),
            AddressSpec::Ip { addr, .. } => ntop(addr),
        })
    }
    /// `netmask` column.
    pub fn netmask(&self) -> Option<String> {
        match self.rule.as_ref()?.address.as_ref()? {
            AddressSpec::Ip { mask, .. } => Some(ntop(mask)),
            _ => None,
        }
    }
    /// `auth_method` column.
    pub fn auth_method(&self) -> Option<&'static str> {
        self.rule.as_ref().map(|r| r.method.as_str())
    }
    /// `options` column.
    pub fn options(&self) -> Option<Vec<String>> {
        self.rule.as_ref().and_then(|r| {
            (!r.options.is_empty()).then(|| r.options.iter().map(|o| o.to_string()).collect())
        })
    }
    /// The `error` column exactly as the view shows it.
    pub fn view_error(&self) -> Option<&str> {
        if self.view_hides_error {
            None
        } else {
            self.error.as_deref()
        }
    }
    /// Whether the server refuses this line (it then refuses the whole file).
    pub fn is_refused(&self) -> bool {
        self.rule.is_none()
    }
    /// All columns, owned.
    pub fn view(&self) -> ViewRow {
        ViewRow {
            line_number: self.line_number,
            conn_type: self.conn_type(),
            database: self.database(),
            user_name: self.user_name(),
            address: self.address(),
            netmask: self.netmask(),
            auth_method: self.auth_method(),
            options: self.options(),
            error: self.error.clone(),
            file_name: self.source.name.clone(),
            rule_number: self.rule_number,
        }
    }
}

impl Serialize for RuleRow {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.view().serialize(s)
    }
}

/// Build-time features of the server (Debian's PostgreSQL has all but SSPI and BSD auth).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BuildFeatures {
    /// Built with GSSAPI (`gss`, `hostgssenc`).
    pub gss: bool,
    /// Built with LDAP (OpenLDAP).
    pub ldap: bool,
    /// Built with PAM.
    pub pam: bool,
    /// Built with BSD authentication.
    pub bsd: bool,
    /// Built with SSPI (Windows).
    pub sspi: bool,
    /// Built with TLS.
    pub ssl: bool,
}

impl Default for BuildFeatures {
    fn default() -> Self {
        BuildFeatures {
            gss: true,
            ldap: true,
            pam: true,
            bsd: false,
            sspi: false,
            ssl: true,
        }
    }
}

/// How to read a file: target version and the server's state that changes the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReadOptions {
    /// Target PostgreSQL major version.
    pub version: PgVersion,
    /// `ssl = on` in the server (else `hostssl` lines carry an error).
    pub ssl_enabled: bool,
    /// The server's build.
    pub build: BuildFeatures,
    /// Read a large file (1 MiB and more) in two parts on two threads when nothing carries
    /// over from one line to the next; the result is the same (default: on).
    pub parallel: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            version: PgVersion::V15,
            ssl_enabled: true,
            build: BuildFeatures::default(),
            parallel: true,
        }
    }
}

impl ReadOptions {
    /// Defaults for one target version.
    pub fn for_version(version: PgVersion) -> Self {
        ReadOptions {
            version,
            ..Default::default()
        }
    }
}

#[derive(Default)]
struct Parsed<'t> {
    conn_type: Option<ConnType>,
    databases: SmallVec<[Token; 1]>,
    users: SmallVec<[Token; 1]>,
    address: Option<AddressSpec>,
    method: Option<AuthMethod>,
    clientcert: ClientCert,
    include_realm: bool,
    ldapscope: i32,
    /// `map=` (common enough to keep out of the boxed options).
    usermap: Option<&'t [u8]>,
    /// Rarely used options, allocated on first use.
    o: Option<Box<Opts>>,
}

/// Options most lines do not have.
#[derive(Default)]
struct Opts {
    krb_realm: Option<Vec<u8>>,
    pamservice: Option<Vec<u8>>,
    ldapserver: Option<Vec<u8>>,
    ldapport: i32,
    ldapscheme: Option<Vec<u8>>,
    ldaptls: bool,
    ldapprefix: Option<Vec<u8>>,
    ldapsuffix: Option<Vec<u8>>,
    ldapbasedn: Option<Vec<u8>>,
    ldapbinddn: Option<Vec<u8>>,
    ldapbindpasswd: Option<Vec<u8>>,
    ldapsearchattribute: Option<Vec<u8>>,
    ldapsearchfilter: Option<Vec<u8>>,
    radiusservers: Option<Vec<Vec<u8>>>,
    radiusservers_s: Option<Vec<u8>>,
    radiussecrets: Option<Vec<Vec<u8>>>,
    radiussecrets_s: Option<Vec<u8>>,
    radiusidentifiers: Option<Vec<Vec<u8>>>,
    radiusidentifiers_s: Option<Vec<u8>>,
    radiusports: Option<Vec<Vec<u8>>>,
    radiusports_s: Option<Vec<u8>>,
    oauth_issuer: Option<Vec<u8>>,
    oauth_scope: Option<Vec<u8>>,
    oauth_validator: Option<Vec<u8>>,
    oauth_skip_usermap: bool,
}

const EMPTY_OPTS: Opts = Opts {
    krb_realm: None,
    pamservice: None,
    ldapserver: None,
    ldapport: 0,
    ldapscheme: None,
    ldaptls: false,
    ldapprefix: None,
    ldapsuffix: None,
    ldapbasedn: None,
    ldapbinddn: None,
    ldapbindpasswd: None,
    ldapsearchattribute: None,
    ldapsearchfilter: None,
    radiusservers: None,
    radiusservers_s: None,
    radiussecrets: None,
    radiussecrets_s: None,
    radiusidentifiers: None,
    radiusidentifiers_s: None,
    radiusports: None,
    radiusports_s: None,
    oauth_issuer: None,
    oauth_scope: None,
    oauth_validator: None,
    oauth_skip_usermap: false,
};

impl Parsed<'_> {
    fn o(&mut self) -> &mut Opts {
        self.o.get_or_insert_with(Box::default)
    }
    fn opts(&self) -> &Opts {
        self.o.as_deref().unwrap_or(&EMPTY_OPTS)
    }
}

/// Outcome of `parse_hba_line`: the parsed line (or none), and the message. `silent` means
/// the view would not show the message.
struct LineResult {
    /// The line parsed (the parse state holds the rule).
    ok: bool,
    err: Option<String>,
    silent: bool,
}

fn s(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// C `atoi`.
fn atoi(b: &[u8]) -> i32 {
    let mut i = 0;
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r') {
        i += 1;
    }
    let mut neg = false;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        neg = b[i] == b'-';
        i += 1;
    }
    let mut v: i64 = 0;
    while i < b.len() && b[i].is_ascii_digit() {
        v = v.saturating_mul(10).saturating_add((b[i] - b'0') as i64);
        i += 1;
    }
    let v = if neg { -v } else { v };
    v as i32
}

/// `SplitGUCList(val, ',')`.
fn split_guc_list(val: &[u8]) -> Option<Vec<Vec<u8>>> {
    let sp = |c: u8| matches!(c, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c');
    let mut out = Vec::new();
    let mut i = 0;
    while i < val.len() && sp(val[i]) {
        i += 1;
    }
    if i >= val.len() {
        return Some(out);
    }
    loop {
        let name: Vec<u8> = if val[i] == b'"' {
            let mut n = Vec::new();
            i += 1;
            loop {
                let rel = val[i..].iter().position(|&c| c == b'"')?;
                n.extend_from_slice(&val[i..i + rel]);
                i += rel;
                if val.get(i + 1) == Some(&b'"') {
                    n.push(b'"');
                    i += 2;
                } else {
                    i += 1;
                    break;
                }
            }
            n
        } else {
            let start = i;
            while i < val.len() && val[i] != b',' && !sp(val[i]) {
                i += 1;
            }
            if i == start {
                return None;
            }
            val[start..i].to_vec()
        };
        while i < val.len() && sp(val[i]) {
            i += 1;
        }
        out.push(name);
        if i < val.len() && val[i] == b',' {
            i += 1;
            while i < val.len() && sp(val[i]) {
                i += 1;
            }
            if i >= val.len() {
                // "a," : the next round sees an empty unquoted name
                return None;
            }
        } else if i >= val.len() {
            return Some(out);
        } else {
            return None;
        }
    }
}

struct Ctx<'a> {
    opts: &'a ReadOptions,
    env: &'a dyn Environment,
}

macro_rules! fail {
    ($msg:expr) => {
        return LineResult {
            ok: false,
            err: Some($msg.into()),
            silent: false,
        }
    };
}

/// Result of one option: Ok, an error shown by the view, or an error only logged.
enum OptErr {
    Shown(String),
    Silent(String),
}

fn tokens_of(f: &[Tok<'_>]) -> SmallVec<[Token; 1]> {
    if let [one] = f {
        smallvec::smallvec![one.to_token()]
    } else {
        f.iter().map(Tok::to_token).collect()
    }
}

/// Parse into `p` (a fresh `Parsed`); on success `ok` is set and `p` holds the rule.
fn parse_line<'t>(tl: &'t TokLine<'_>, ctx: &Ctx<'_>, p: &mut Parsed<'t>) -> LineResult {
    let v = ctx.opts.version.major();
    // A warning that does not stop parsing (hostssl without ssl, hostgssenc without gss).
    let mut soft_err: Option<String> = None;
    let mut fields = tl.fields();
    let Some(first) = fields.next() else {
        fail!("empty line")
    };
    if first.len() > 1 {
        fail!("multiple values specified for connection type");
    }
    let tok = &first[0];
    let Some(ct) = ConnType::parse(&tok.text) else {
        fail!(format!("invalid connection type \"{}\"", s(&tok.text)));
    };
    match ct {
        ConnType::HostSsl => {
            if !ctx.opts.build.ssl {
                soft_err = Some(
                    "hostssl record cannot match because SSL is not supported by this build".into(),
                );
            } else if !ctx.opts.ssl_enabled {
                soft_err = Some("hostssl record cannot match because SSL is disabled".into());
            }
        }
        ConnType::HostGssEnc if !ctx.opts.build.gss => {
            soft_err = Some(
                "hostgssenc record cannot match because GSSAPI is not supported by this build"
                    .into(),
            );
        }
        _ => {}
    }
    p.conn_type = Some(ct);
    let Some(dbs) = fields.next() else {
        fail!("end-of-line before database specification");
    };
    if v >= 16 {
        for t in dbs {
            if let Some(e) = check_regex(&t.text) {
                fail!(e);
            }
        }
    }
    p.databases = tokens_of(dbs);
    let Some(users) = fields.next() else {
        fail!("end-of-line before role specification");
    };
    if v >= 16 {
        for t in users {
            if let Some(e) = check_regex(&t.text) {
                fail!(e);
            }
        }
    }
    p.users = tokens_of(users);
    if ct != ConnType::Local {
        let Some(addr) = fields.next() else {
            fail!("end-of-line before IP address specification");
        };
        if addr.len() > 1 {
            fail!("multiple values specified for host address");
        }
        let t = &addr[0];
        if t.is_keyword("all") {
            p.address = Some(AddressSpec::All);
        } else if t.is_keyword("samehost") {
            p.address = Some(AddressSpec::SameHost);
        } else if t.is_keyword("samenet") {
            p.address = Some(AddressSpec::SameNet);
        } else {
            let text = &t.text;
            let (host, bits) = match text.iter().position(|&c| c == b'/') {
                Some(i) => (&text[..i], Some(&text[i + 1..])),
                None => (&text[..], None),
            };
            let if_index = |n: &[u8]| ctx.env.interface_index(n);
            match parse_numeric_host(host, &if_index) {
                None => {
                    if bits.is_some() {
                        fail!(format!(
                            "specifying both host name and CIDR mask is invalid: \"{}\"",
                            s(text)
                        ));
                    }
                    p.address = Some(AddressSpec::Hostname(host.to_vec()));
                }
                Some(ip) => {
                    let mask = match bits {
                        Some(b) => match cidr_mask(b, ip.is_ipv6()) {
                            Some(m) => m,
                            None => fail!(format!("invalid CIDR mask in address \"{}\"", s(text))),
                        },
                        None => {
                            let Some(mf) = fields.next() else {
                                fail!("end-of-line before netmask specification");
                            };
                            if mf.len() > 1 {
                                fail!("multiple values specified for netmask");
                            }
                            let mt = &mf[0].text;
                            let Some(m) = parse_numeric_host(mt, &if_index) else {
                                fail!(format!(
                                    "invalid IP mask \"{}\": Name or service not known",
                                    s(mt)
                                ));
                            };
                            if m.is_ipv6() != ip.is_ipv6() {
                                fail!("IP address and mask do not match");
                            }
                            m
                        }
                    };
                    p.address = Some(AddressSpec::Ip { addr: ip, mask });
                }
            }
        }
    }
    let Some(mfield) = fields.next() else {
        fail!("end-of-line before authentication method");
    };
    if mfield.len() > 1 {
        fail!("multiple values specified for authentication type");
    }
    let mt = &mfield[0].text;
    let method = match AuthMethod::parse(mt) {
        Some(AuthMethod::OAuth) if v < 18 => None,
        m => m,
    };
    let Some(mut method) = method else {
        fail!(format!("invalid authentication method \"{}\"", s(mt)));
    };
    let b = ctx.opts.build;
    let unsupported = match method {
        AuthMethod::Gss => !b.gss,
        AuthMethod::Sspi => !b.sspi,
        AuthMethod::Pam => !b.pam,
        AuthMethod::Bsd => !b.bsd,
        AuthMethod::Ldap => !b.ldap,
        AuthMethod::Cert => !b.ssl,
        _ => false,
    };
    if unsupported {
        fail!(format!(
            "invalid authentication method \"{}\": not supported by this build",
            s(mt)
        ));
    }
    if ct == ConnType::Local && method == AuthMethod::Ident {
        method = AuthMethod::Peer;
    }
    if ct == ConnType::Local && method == AuthMethod::Gss {
        fail!("gssapi authentication is not supported on local sockets");
    }
    if ct != ConnType::Local && method == AuthMethod::Peer {
        fail!("peer authentication is only supported on local sockets");
    }
    if ct != ConnType::HostSsl && method == AuthMethod::Cert {
        fail!("cert authentication is only supported on hostssl connections");
    }
    p.method = Some(method);
    if matches!(method, AuthMethod::Gss | AuthMethod::Sspi) {
        p.include_realm = true;
    }
    for f in fields {
        for t in f {
            let Some(eq) = t.text.iter().position(|&c| c == b'=') else {
                fail!(format!(
                    "authentication option not in name=value format: {}",
                    s(&t.text)
                ));
            };
            let name = &t.text[..eq];
            let val = &t.text[eq + 1..];
            match parse_option(p, name, val, ctx) {
                Ok(()) => {}
                Err(OptErr::Shown(m)) => fail!(m),
                Err(OptErr::Silent(m)) => {
                    return LineResult {
                        ok: false,
                        silent: soft_err.is_none(),
                        err: Some(soft_err.unwrap_or(m)),
                    };
                }
            }
        }
    }
    if method == AuthMethod::Ldap {
        if p.opts().ldapprefix.is_some() || p.opts().ldapsuffix.is_some() {
            if p.opts().ldapbasedn.is_some()
                || p.opts().ldapbinddn.is_some()
                || p.opts().ldapbindpasswd.is_some()
                || p.opts().ldapsearchattribute.is_some()
                || p.opts().ldapsearchfilter.is_some()
            {
                if v >= 17 {
                    fail!("cannot mix options for simple bind and search+bind modes");
                }
                fail!(
                    "cannot use ldapbasedn, ldapbinddn, ldapbindpasswd, ldapsearchattribute, ldapsearchfilter, or ldapurl together with ldapprefix"
                );
            }
        } else if p.opts().ldapbasedn.is_none() {
            fail!(
                "authentication method \"ldap\" requires argument \"ldapbasedn\", \"ldapprefix\", or \"ldapsuffix\" to be set"
            );
        }
        if p.opts().ldapsearchattribute.is_some() && p.opts().ldapsearchfilter.is_some() {
            fail!("cannot use ldapsearchattribute together with ldapsearchfilter");
        }
    }
    if method == AuthMethod::Radius {
        let empty = |l: &Option<Vec<Vec<u8>>>| l.as_ref().is_none_or(|l| l.is_empty());
        if empty(&p.opts().radiusservers) {
            fail!("authentication method \"radius\" requires argument \"radiusservers\" to be set");
        }
        if empty(&p.opts().radiussecrets) {
            fail!("authentication method \"radius\" requires argument \"radiussecrets\" to be set");
        }
        let len = |l: &Option<Vec<Vec<u8>>>| l.as_ref().map_or(0, |l| l.len());
        let n = len(&p.opts().radiusservers);
        let ns = len(&p.opts().radiussecrets);
        if !(ns == 1 || ns == n) {
            fail!(format!(
                "the number of RADIUS secrets ({ns}) must be 1 or the same as the number of RADIUS servers ({n})"
            ));
        }
        let np = len(&p.opts().radiusports);
        if !(np == 0 || np == 1 || np == n) {
            fail!(format!(
                "the number of RADIUS ports ({np}) must be 1 or the same as the number of RADIUS servers ({n})"
            ));
        }
        let ni = len(&p.opts().radiusidentifiers);
        if !(ni == 0 || ni == 1 || ni == n) {
            fail!(format!(
                "the number of RADIUS identifiers ({ni}) must be 1 or the same as the number of RADIUS servers ({n})"
            ));
        }
    }
    if method == AuthMethod::Cert {
        p.clientcert = if v >= 14 {
            ClientCert::VerifyFull
        } else if p.clientcert == ClientCert::Off {
            ClientCert::VerifyCa
        } else {
            p.clientcert
        };
    }
    if method == AuthMethod::OAuth {
        if p.opts().oauth_scope.is_none() {
            fail!("authentication method \"oauth\" requires argument \"scope\" to be set");
        }
        if p.opts().oauth_issuer.is_none() {
            fail!("authentication method \"oauth\" requires argument \"issuer\" to be set");
        }
        if p.opts().oauth_skip_usermap && p.usermap.is_some() {
            fail!("map cannot be used in combination with delegate_ident_mapping");
        }
    }
    LineResult {
        ok: true,
        err: soft_err,
        silent: false,
    }
}

/// PostgreSQL 16+ compiles `/regex` tokens; report what its regex compiler would reject.
fn check_regex(text: &[u8]) -> Option<String> {
    if text.first() != Some(&b'/') {
        return None;
    }
    let re = &text[1..];
    let mut paren = 0i32;
    let mut i = 0;
    while i < re.len() {
        match re[i] {
            b'\\' => {
                if i + 1 >= re.len() {
                    return Some(format!(
                        "invalid regular expression \"{}\": invalid escape \\ sequence",
                        s(re)
                    ));
                }
                i += 1;
            }
            b'[' => {
                let mut j = i + 1;
                if re.get(j) == Some(&b'^') {
                    j += 1;
                }
                if re.get(j) == Some(&b']') {
                    j += 1;
                }
                while j < re.len() && re[j] != b']' {
                    j += 1;
                }
                if j >= re.len() {
                    return Some(format!(
                        "invalid regular expression \"{}\": brackets [] not balanced",
                        s(re)
                    ));
                }
                i = j;
            }
            b'(' => paren += 1,
            b')' => {
                paren -= 1;
                if paren < 0 {
                    return Some(format!(
                        "invalid regular expression \"{}\": parentheses () not balanced",
                        s(re)
                    ));
                }
            }
            _ => {}
        }
        i += 1;
    }
    if paren != 0 {
        return Some(format!(
            "invalid regular expression \"{}\": parentheses () not balanced",
            s(re)
        ));
    }
    None
}

fn invalid_for(name: &str, methods: &str) -> OptErr {
    OptErr::Shown(format!(
        "authentication option \"{name}\" is only valid for authentication methods {methods}"
    ))
}

fn parse_option<'t>(
    p: &mut Parsed<'t>,
    name: &[u8],
    val: &'t [u8],
    ctx: &Ctx<'_>,
) -> Result<(), OptErr> {
    let v = ctx.opts.version.major();
    let method = p.method.unwrap_or(AuthMethod::Trust);
    let ct = p.conn_type.unwrap_or(ConnType::Host);
    if ctx.opts.build.ldap {
        p.ldapscope = 2;
    }
    let require = |m: AuthMethod, n: &str, list: &str| -> Result<(), OptErr> {
        if method != m {
            Err(invalid_for(n, list))
        } else {
            Ok(())
        }
    };
    match name {
        b"map" => {
            let ok = matches!(
                method,
                AuthMethod::Ident
                    | AuthMethod::Peer
                    | AuthMethod::Gss
                    | AuthMethod::Sspi
                    | AuthMethod::Cert
            ) || (v >= 18 && method == AuthMethod::OAuth);
            if !ok {
                return Err(invalid_for(
                    "map",
                    if v >= 18 {
                        "ident, peer, gssapi, sspi, cert, and oauth"
                    } else {
                        "ident, peer, gssapi, sspi, and cert"
                    },
                ));
            }
            p.usermap = Some(val);
        }
        b"clientcert" => {
            if ct != ConnType::HostSsl {
                return Err(OptErr::Shown(
                    "clientcert can only be configured for \"hostssl\" rows".into(),
                ));
            }
            if v >= 14 {
                match val {
                    b"verify-full" => p.clientcert = ClientCert::VerifyFull,
                    b"verify-ca" => {
                        if method == AuthMethod::Cert {
                            return Err(OptErr::Shown(
                                "clientcert can only be set to \"verify-full\" when using \"cert\" authentication".into(),
                            ));
                        }
                        p.clientcert = ClientCert::VerifyCa;
                    }
                    _ => {
                        return Err(OptErr::Silent(format!(
                            "invalid value for clientcert: \"{}\"",
                            s(val)
                        )));
                    }
                }
            } else {
                match val {
                    b"1" | b"verify-ca" => p.clientcert = ClientCert::VerifyCa,
                    b"verify-full" => p.clientcert = ClientCert::VerifyFull,
                    b"0" | b"no-verify" => {
                        if method == AuthMethod::Cert {
                            return Err(OptErr::Shown(
                                "clientcert cannot be set to \"no-verify\" when using \"cert\" authentication".into(),
                            ));
                        }
                        p.clientcert = ClientCert::Off;
                    }
                    _ => {
                        return Err(OptErr::Silent(format!(
                            "invalid value for clientcert: \"{}\"",
                            s(val)
                        )));
                    }
                }
            }
        }
        b"clientname" => {
            if ct != ConnType::HostSsl {
                return Err(OptErr::Shown(
                    "clientname can only be configured for \"hostssl\" rows".into(),
                ));
            }
            if val != b"CN" && val != b"DN" {
                return Err(OptErr::Silent(format!(
                    "invalid value for clientname: \"{}\"",
                    s(val)
                )));
            }
        }
        b"pamservice" => {
            require(AuthMethod::Pam, "pamservice", "pam")?;
            p.o().pamservice = Some(val.to_vec());
        }
        b"pam_use_hostname" => require(AuthMethod::Pam, "pam_use_hostname", "pam")?,
        b"ldapurl" => {
            require(AuthMethod::Ldap, "ldapurl", "ldap")?;
            let u = crate::ldapurl::parse(val).map_err(|e| {
                OptErr::Shown(format!("could not parse LDAP URL \"{}\": {}", s(val), e))
            })?;
            if u.scheme != "ldap" && u.scheme != "ldaps" {
                return Err(OptErr::Shown(format!(
                    "unsupported LDAP URL scheme: {}",
                    u.scheme
                )));
            }
            p.o().ldapscheme = Some(u.scheme.as_bytes().to_vec());
            if let Some(h) = u.host {
                p.o().ldapserver = Some(h);
            }
            p.o().ldapport = u.port;
            if let Some(d) = u.dn {
                p.o().ldapbasedn = Some(d);
            }
            if let Some(a) = u.first_attr {
                p.o().ldapsearchattribute = Some(a);
            }
            p.ldapscope = u.scope;
            if let Some(f) = u.filter {
                p.o().ldapsearchfilter = Some(f);
            }
        }
        b"ldaptls" => {
            require(AuthMethod::Ldap, "ldaptls", "ldap")?;
            p.o().ldaptls = val == b"1";
        }
        b"ldapscheme" => {
            require(AuthMethod::Ldap, "ldapscheme", "ldap")?;
            p.o().ldapscheme = Some(val.to_vec());
        }
        b"ldapserver" => {
            require(AuthMethod::Ldap, "ldapserver", "ldap")?;
            p.o().ldapserver = Some(val.to_vec());
        }
        b"ldapport" => {
            require(AuthMethod::Ldap, "ldapport", "ldap")?;
            p.o().ldapport = atoi(val);
            if p.o().ldapport == 0 {
                return Err(OptErr::Shown(format!(
                    "invalid LDAP port number: \"{}\"",
                    s(val)
                )));
            }
        }
        b"ldapbinddn" => {
            require(AuthMethod::Ldap, "ldapbinddn", "ldap")?;
            p.o().ldapbinddn = Some(val.to_vec());
        }
        b"ldapbindpasswd" => {
            require(AuthMethod::Ldap, "ldapbindpasswd", "ldap")?;
            p.o().ldapbindpasswd = Some(val.to_vec());
        }
        b"ldapsearchattribute" => {
            require(AuthMethod::Ldap, "ldapsearchattribute", "ldap")?;
            p.o().ldapsearchattribute = Some(val.to_vec());
        }
        b"ldapsearchfilter" => {
            require(AuthMethod::Ldap, "ldapsearchfilter", "ldap")?;
            p.o().ldapsearchfilter = Some(val.to_vec());
        }
        b"ldapbasedn" => {
            require(AuthMethod::Ldap, "ldapbasedn", "ldap")?;
            p.o().ldapbasedn = Some(val.to_vec());
        }
        b"ldapprefix" => {
            require(AuthMethod::Ldap, "ldapprefix", "ldap")?;
            p.o().ldapprefix = Some(val.to_vec());
        }
        b"ldapsuffix" => {
            require(AuthMethod::Ldap, "ldapsuffix", "ldap")?;
            p.o().ldapsuffix = Some(val.to_vec());
        }
        b"krb_realm" => {
            if !matches!(method, AuthMethod::Gss | AuthMethod::Sspi) {
                return Err(invalid_for("krb_realm", "gssapi and sspi"));
            }
            p.o().krb_realm = Some(val.to_vec());
        }
        b"include_realm" => {
            if !matches!(method, AuthMethod::Gss | AuthMethod::Sspi) {
                return Err(invalid_for("include_realm", "gssapi and sspi"));
            }
            p.include_realm = val == b"1";
        }
        b"compat_realm" => {
            if method != AuthMethod::Sspi {
                return Err(invalid_for("compat_realm", "sspi"));
            }
        }
        b"upn_username" => {
            if method != AuthMethod::Sspi {
                return Err(invalid_for("upn_username", "sspi"));
            }
        }
        b"radiusservers" => {
            require(AuthMethod::Radius, "radiusservers", "radius")?;
            let Some(list) = split_guc_list(val) else {
                return Err(OptErr::Silent(format!(
                    "could not parse RADIUS server list \"{}\"",
                    s(val)
                )));
            };
            for srv in &list {
                if !ctx.env.resolves(srv) {
                    return Err(OptErr::Silent(format!(
                        "could not translate RADIUS server name \"{}\" to address",
                        s(srv)
                    )));
                }
            }
            p.o().radiusservers = Some(list);
            p.o().radiusservers_s = Some(val.to_vec());
        }
        b"radiusports" => {
            require(AuthMethod::Radius, "radiusports", "radius")?;
            let Some(list) = split_guc_list(val) else {
                return Err(OptErr::Shown(format!(
                    "invalid RADIUS port number: \"{}\"",
                    s(val)
                )));
            };
            if list.iter().any(|p| atoi(p) == 0) {
                return Err(OptErr::Silent(format!(
                    "invalid RADIUS port number: \"{}\"",
                    s(val)
                )));
            }
            p.o().radiusports = Some(list);
            p.o().radiusports_s = Some(val.to_vec());
        }
        b"radiussecrets" => {
            require(AuthMethod::Radius, "radiussecrets", "radius")?;
            let Some(list) = split_guc_list(val) else {
                return Err(OptErr::Silent(format!(
                    "could not parse RADIUS secret list \"{}\"",
                    s(val)
                )));
            };
            p.o().radiussecrets = Some(list);
            p.o().radiussecrets_s = Some(val.to_vec());
        }
        b"radiusidentifiers" => {
            require(AuthMethod::Radius, "radiusidentifiers", "radius")?;
            let Some(list) = split_guc_list(val) else {
                return Err(OptErr::Silent(format!(
                    "could not parse RADIUS identifiers list \"{}\"",
                    s(val)
                )));
            };
            p.o().radiusidentifiers = Some(list);
            p.o().radiusidentifiers_s = Some(val.to_vec());
        }
        b"issuer" if v >= 18 => {
            require(AuthMethod::OAuth, "issuer", "oauth")?;
            p.o().oauth_issuer = Some(val.to_vec());
        }
        b"scope" if v >= 18 => {
            require(AuthMethod::OAuth, "scope", "oauth")?;
            p.o().oauth_scope = Some(val.to_vec());
        }
        b"validator" if v >= 18 => {
            require(AuthMethod::OAuth, "validator", "oauth")?;
            p.o().oauth_validator = Some(val.to_vec());
        }
        b"delegate_ident_mapping" if v >= 18 => {
            require(AuthMethod::OAuth, "delegate_ident_mapping", "oauth")?;
            p.o().oauth_skip_usermap = val == b"1";
        }
        _ => {
            return Err(OptErr::Shown(format!(
                "unrecognized authentication option name: \"{}\"",
                s(name)
            )));
        }
    }
    Ok(())
}

/// `get_hba_options`.
fn render_options(p: &Parsed<'_>) -> SmallVec<[Cow<'static, str>; 1]> {
    let op = p.opts();
    let mut o: SmallVec<[Cow<'static, str>; 1]> = SmallVec::new();
    let method = p.method.unwrap_or(AuthMethod::Trust);
    let kv = |k: &str, v: &[u8]| -> Cow<'static, str> {
        let v = String::from_utf8_lossy(v);
        let mut out = String::with_capacity(k.len() + 1 + v.len());
        out.push_str(k);
        out.push('=');
        out.push_str(&v);
        Cow::Owned(out)
    };
    if matches!(method, AuthMethod::Gss | AuthMethod::Sspi) {
        if p.include_realm {
            o.push(Cow::Borrowed("include_realm=true"));
        }
        if let Some(r) = &op.krb_realm {
            o.push(kv("krb_realm", r));
        }
    }
    if let Some(m) = &p.usermap {
        o.push(kv("map", m));
    }
    match p.clientcert {
        ClientCert::Off => {}
        ClientCert::VerifyCa => o.push(Cow::Borrowed("clientcert=verify-ca")),
        ClientCert::VerifyFull => o.push(Cow::Borrowed("clientcert=verify-full")),
    }
    if let Some(x) = &op.pamservice {
        o.push(kv("pamservice", x));
    }
    if method == AuthMethod::Ldap {
        if let Some(x) = &op.ldapserver {
            o.push(kv("ldapserver", x));
        }
        if op.ldapport != 0 {
            o.push(Cow::Owned(format!("ldapport={}", op.ldapport)));
        }
        if let Some(x) = &op.ldapscheme {
            o.push(kv("ldapscheme", x));
        }
        if op.ldaptls {
            o.push(Cow::Borrowed("ldaptls=true"));
        }
        for (k, x) in [
            ("ldapprefix", &op.ldapprefix),
            ("ldapsuffix", &op.ldapsuffix),
            ("ldapbasedn", &op.ldapbasedn),
            ("ldapbinddn", &op.ldapbinddn),
            ("ldapbindpasswd", &op.ldapbindpasswd),
            ("ldapsearchattribute", &op.ldapsearchattribute),
            ("ldapsearchfilter", &op.ldapsearchfilter),
        ] {
            if let Some(x) = x {
                o.push(kv(k, x));
            }
        }
        if p.ldapscope != 0 {
            o.push(Cow::Owned(format!("ldapscope={}", p.ldapscope)));
        }
    }
    if method == AuthMethod::Radius {
        for (k, x) in [
            ("radiusservers", &op.radiusservers_s),
            ("radiussecrets", &op.radiussecrets_s),
            ("radiusidentifiers", &op.radiusidentifiers_s),
            ("radiusports", &op.radiusports_s),
        ] {
            if let Some(x) = x {
                o.push(kv(k, x));
            }
        }
    }
    if method == AuthMethod::OAuth {
        for (k, x) in [
            ("issuer", &op.oauth_issuer),
            ("scope", &op.oauth_scope),
            ("validator", &op.oauth_validator),
        ] {
            if let Some(x) = x {
                o.push(kv(k, x));
            }
        }
        if op.oauth_skip_usermap {
            o.push(Cow::Borrowed("delegate_ident_mapping=true"));
        }
    }
    o
}

/// Turns tokenized lines into rows as they come (`fill_hba_view`).
pub(crate) struct RowBuilder<'a> {
    ctx: Ctx<'a>,
    /// Rows given a `rule_number` so far.
    pub rule_number: u32,
    /// One diagnostic per row with an error, in row order.
    pub diagnostics: Vec<Diagnostic>,
    /// Some row has a rule the server loads.
    pub any_rule: bool,
}

impl<'a> RowBuilder<'a> {
    pub fn new(opts: &'a ReadOptions, env: &'a dyn Environment) -> Self {
        RowBuilder {
            ctx: Ctx { opts, env },
            rule_number: 0,
            diagnostics: Vec::new(),
            any_rule: false,
        }
    }

    fn diagnose(&mut self, tl: &TokLine<'_>, message: &str, loaded: bool) {
        self.diagnostics.push(Diagnostic {
            file: tl.file.path.clone(),
            line: Some(tl.line_number),
            // a rule the server loads but that never matches is a warning
            severity: if loaded {
                Severity::Warning
            } else {
                Severity::Error
            },
            message: message.to_string(),
        });
    }

    /// Append the row of `tl` to `rows` (built in one expression: a row is large, and
    /// moving it through temporaries showed in profiles).
    pub fn push_row(&mut self, tl: &TokLine<'_>, rows: &mut Vec<RuleRow>) {
        let source = tl.file.clone();
        if let Some(e) = &tl.err {
            self.diagnose(tl, e, false);
            rows.push(RuleRow {
                line_number: tl.line_number,
                error: Some(e.clone()),
                source,
                rule_number: None,
                view_hides_error: false,
                rule: None,
            });
            return;
        }
        let mut p = Parsed::default();
        let res = parse_line(tl, &self.ctx, &mut p);
        let rule_number = if res.err.is_none() || res.silent {
            self.rule_number += 1;
            Some(self.rule_number)
        } else {
            None
        };
        if let Some(e) = &res.err {
            self.diagnose(tl, e, res.ok);
        }
        self.any_rule |= res.ok;
        rows.push(RuleRow {
            line_number: tl.line_number,
            error: res.err,
            source,
            rule_number,
            view_hides_error: res.silent,
            rule: None,
        });
        if res.ok
            && let Some(row) = rows.last_mut()
        {
            // written in place: no row-sized temporary to copy
            row.rule = Some(HbaRule {
                conn_type: p.conn_type.unwrap_or(ConnType::Host),
                options: render_options(&p),
                databases: p.databases,
                users: p.users,
                address: p.address,
                method: p.method.unwrap_or(AuthMethod::Reject),
                clientcert: p.clientcert,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guc_lists() {
        assert_eq!(
            split_guc_list(b"a, b").unwrap(),
            vec![b"a".to_vec(), b"b".to_vec()]
        );
        assert_eq!(split_guc_list(b"\"a,b\"").unwrap(), vec![b"a,b".to_vec()]);
        assert_eq!(split_guc_list(b"").unwrap(), Vec::<Vec<u8>>::new());
        assert!(split_guc_list(b"a,").is_none());
        assert!(split_guc_list(b"a b").is_none());
        assert!(split_guc_list(b"\"a").is_none());
    }

    #[test]
    fn c_atoi() {
        assert_eq!(atoi(b" 389abc"), 389);
        assert_eq!(atoi(b"x"), 0);
        assert_eq!(atoi(b"-5"), -5);
    }
}
