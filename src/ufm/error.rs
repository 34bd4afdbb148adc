//! `UfmError`: every way a UFM call can fail, its class (transient, permanent, auth) and a
//! stable reason for Events and metrics, decided here where the failure is seen, and messages
//! that quote UFM's answer (trimmed) but never a credential.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use crate::config::{ConfigError, format_duration};
use crate::engine::{ErrorClass, FabricError, FabricReason};

/// Longest excerpt of a UFM answer carried in an error.
const EXCERPT_CHARS: usize = 300;

/// The UFM operation a request belongs to (metric label and error context).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Version,
    ListPkeys,
    GetPkey,
    AddGuids,
    RemoveGuids,
    RemoveGuidsLegacy,
    CreatePkey,
    UpdateQos,
    DeletePkey,
}

impl Op {
    /// Stable label, e.g. `add_guids`.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Version => "version",
            Op::ListPkeys => "list_pkeys",
            Op::GetPkey => "get_pkey",
            Op::AddGuids => "add_guids",
            Op::RemoveGuids => "remove_guids",
            Op::RemoveGuidsLegacy => "remove_guids_legacy",
            Op::CreatePkey => "create_pkey",
            Op::UpdateQos => "update_qos",
            Op::DeletePkey => "delete_pkey",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a UFM call failed. Messages name the setting to check where one is to blame.
#[derive(Debug, thiserror::Error)]
pub enum UfmError {
    /// The client could not be built from the settings (CA, client certificate, …).
    #[error("{setting}: {detail}")]
    Config { setting: &'static str, detail: String },
    /// The credentials in force could not be read (e.g. a broken Secret mount).
    #[error("UFM credentials: {0}")]
    Credentials(ConfigError),
    /// No TCP connection (refused, unresolvable host, connect timeout).
    #[error("{op}: cannot connect to {target}: {detail}")]
    Connect { op: Op, target: String, detail: String },
    /// The TLS handshake failed (certificate not trusted, wrong name, client certificate refused).
    #[error("{op}: TLS with {target}: {problem}")]
    Tls { op: Op, target: String, problem: String },
    /// No answer within the request timeout.
    #[error("{op}: UFM at {target} did not answer within {}", format_duration(*after))]
    Timeout { op: Op, target: String, after: Duration },
    /// The connection broke before a whole answer arrived (reset, closed).
    #[error("{op}: the connection to {target} broke before UFM answered: {detail}")]
    Broken { op: Op, target: String, detail: String },
    #[error("{op}: UFM answered 401 for {who}: {hint} (UFM said: {answer})")]
    Unauthorized { op: Op, who: String, hint: &'static str, answer: String },
    #[error(
        "{op}: UFM answered 403 for {who}: this user may not do this (writes need a system_admin user) (UFM said: {answer})"
    )]
    Forbidden { op: Op, who: String, answer: String },
    /// A 4xx answer: the request itself is wrong; repeating it will not help.
    #[error("{op}: UFM refused the request with {status}: {answer}")]
    Rejected { op: Op, status: u16, answer: String },
    /// 5xx, 429 or 408: UFM (or the Apache in front of it) cannot serve now.
    #[error("{op}: UFM is unavailable ({status}): {answer}")]
    Unavailable { op: Op, status: u16, answer: String },
    #[error(
        "{op}: UFM answered {status} redirecting to {location}: check UFM_HTTP_SCHEMA, UFM_ADDRESS and UFM_PORT point at UFM itself"
    )]
    Redirected { op: Op, status: u16, location: String },
    /// A 2xx answer whose body is not what UFM sends.
    #[error("{op}: UFM's answer is not what UFM sends: {detail} (UFM said: {answer})")]
    Malformed { op: Op, detail: String, answer: String },
}

impl UfmError {
    /// Stable reason for Events and metrics.
    pub fn reason(&self) -> FabricReason {
        match self {
            UfmError::Config { .. } => FabricReason::UfmConfig,
            UfmError::Credentials(_) => FabricReason::UfmCredentials,
            UfmError::Connect { .. } => FabricReason::UfmUnreachable,
            UfmError::Tls { .. } => FabricReason::UfmTls,
            UfmError::Timeout { .. } => FabricReason::UfmTimeout,
            UfmError::Broken { .. } => FabricReason::UfmConnectionLost,
            UfmError::Unauthorized { .. } => FabricReason::UfmUnauthorized,
            UfmError::Forbidden { .. } => FabricReason::UfmForbidden,
            UfmError::Rejected { .. } => FabricReason::UfmRejected,
            UfmError::Unavailable { .. } => FabricReason::UfmUnavailable,
            UfmError::Redirected { .. } => FabricReason::UfmRedirected,
            UfmError::Malformed { .. } => FabricReason::UfmMalformedAnswer,
        }
    }

    /// What another attempt can achieve: the same request later (transient), nothing until
    /// the request changes (permanent), nothing until UFM accepts who we are (auth).
    pub fn class(&self) -> ErrorClass {
        match self {
            UfmError::Connect { .. }
            | UfmError::Timeout { .. }
            | UfmError::Broken { .. }
            | UfmError::Unavailable { .. } => ErrorClass::Transient,
            // Who we are is refused, cannot be proven (credentials unreadable or unsendable),
            // or the peer cannot be trusted with it (TLS): every request fails alike.
            UfmError::Unauthorized { .. }
            | UfmError::Forbidden { .. }
            | UfmError::Credentials(_)
            | UfmError::Tls { .. } => ErrorClass::Auth,
            UfmError::Rejected { .. }
            | UfmError::Redirected { .. }
            | UfmError::Malformed { .. }
            | UfmError::Config { .. } => ErrorClass::Permanent,
        }
    }

    /// Whether the same request may succeed if sent again later.
    pub fn is_transient(&self) -> bool {
        self.class() == ErrorClass::Transient
    }

    /// The HTTP status UFM answered, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            UfmError::Unauthorized { .. } => Some(401),
            UfmError::Forbidden { .. } => Some(403),
            UfmError::Rejected { status, .. }
            | UfmError::Unavailable { status, .. }
            | UfmError::Redirected { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Short label for metrics: the HTTP status, or the kind of transport failure.
    pub(crate) fn status_label(&self) -> String {
        match (self.status(), self) {
            (Some(s), _) => s.to_string(),
            (None, UfmError::Timeout { .. }) => "timeout".into(),
            (None, UfmError::Connect { .. }) => "connect".into(),
            (None, UfmError::Tls { .. }) => "tls".into(),
            (None, UfmError::Broken { .. }) => "broken".into(),
            (None, UfmError::Malformed { .. }) => "malformed".into(),
            (None, _) => "error".into(),
        }
    }
}

impl From<UfmError> for FabricError {
    fn from(e: UfmError) -> FabricError {
        FabricError { class: e.class(), reason: e.reason(), message: e.to_string() }
    }
}

/// What the client trusts, for messages about a certificate it refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Trust {
    /// A CA given in the settings; the label names where it came from.
    Ca(String),
    SystemRoots,
    /// Verification is off (`UFM_INSECURE_SKIP_VERIFY=true`).
    Nothing,
}

impl fmt::Display for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trust::Ca(label) => write!(f, "the CA in {label}"),
            Trust::SystemRoots => f.write_str("any CA of the system trust store (set UFM_CERTIFICATE to UFM's CA)"),
            Trust::Nothing => f.write_str("nothing (verification is off)"),
        }
    }
}

/// Context for turning a reqwest failure into a [`UfmError`].
pub(crate) struct FailureContext<'a> {
    pub op: Op,
    /// `host:port`.
    pub target: &'a str,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub trust: &'a Trust,
}

/// Classifies a failure to get an answer at all (no HTTP status).
pub(crate) fn from_transport(err: &reqwest::Error, cx: &FailureContext<'_>) -> UfmError {
    let (op, target) = (cx.op, cx.target.to_string());
    if let Some(tls) = find_in_chain::<rustls::Error>(err) {
        return UfmError::Tls { op, target, problem: describe_tls(tls, cx) };
    }
    let io_kind = find_in_chain::<std::io::Error>(err).map(std::io::Error::kind);
    if err.is_connect() {
        let detail = match io_kind {
            _ if err.is_timeout() => format!(
                "no answer within {} (wrong address, or a firewall drops the packets?)",
                format_duration(cx.connect_timeout)
            ),
            Some(std::io::ErrorKind::ConnectionRefused) => {
                format!("nothing listens on {} (connection refused)", cx.target)
            }
            _ if chain_text(err).contains("dns error") => {
                format!("cannot resolve the host name ({}): check UFM_ADDRESS", innermost(err))
            }
            _ => innermost(err),
        };
        return UfmError::Connect { op, target, detail };
    }
    if err.is_timeout() {
        return UfmError::Timeout { op, target, after: cx.request_timeout };
    }
    let detail = innermost(err);
    if detail.contains("invalid HTTP") {
        let detail =
            format!("it did not answer in HTTP ({detail}): if UFM serves HTTPS there, set UFM_HTTP_SCHEMA=https");
        return UfmError::Broken { op, target, detail };
    }
    UfmError::Broken { op, target, detail }
}

/// A message a person can act on for a failed handshake.
fn describe_tls(e: &rustls::Error, cx: &FailureContext<'_>) -> String {
    use rustls::CertificateError as C;
    let target = cx.target;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer | C::BadSignature => {
                format!("the certificate of {target} is not signed by {}", cx.trust)
            }
            C::NotValidForName => {
                format!("the certificate of {target} is not valid for that name: set UFM_ADDRESS to a name it holds")
            }
            C::NotValidForNameContext { presented, .. } => format!(
                "the certificate of {target} is not valid for the name {} (it names: {}): set UFM_ADDRESS to one of those",
                host_of(target),
                cert_names(presented)
            ),
            C::Expired | C::ExpiredContext { .. } => format!("the certificate of {target} has expired"),
            C::NotValidYet | C::NotValidYetContext { .. } => {
                format!("the certificate of {target} is not valid yet (check the clocks)")
            }
            other => format!("the certificate of {target} was refused ({other:?})"),
        },
        rustls::Error::AlertReceived(alert) => format!(
            "UFM refused the handshake ({alert:?}): if UFM requires a client certificate, set UFM_CLIENT_CERT_FILE and UFM_CLIENT_KEY_FILE to one UFM trusts"
        ),
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            format!("{target} does not speak TLS: if UFM serves plain HTTP there, set UFM_HTTP_SCHEMA=http")
        }
        other => format!("handshake failed: {other}"),
    }
}

/// `host` of `host:port` (IPv6 brackets removed).
fn host_of(target: &str) -> &str {
    let host = target.rsplit_once(':').map_or(target, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// webpki's `DnsName("ufm.example")` / `IpAddress(10.0.0.1)` as plain names, at most eight.
fn cert_names(presented: &[String]) -> String {
    const SHOWN: usize = 8;
    let plain = |s: &String| {
        let s = s.as_str();
        s.strip_prefix("DnsName(\"")
            .and_then(|r| r.strip_suffix("\")"))
            .or_else(|| s.strip_prefix("IpAddress(").and_then(|r| r.strip_suffix(')')))
            .unwrap_or(s)
            .to_string()
    };
    let mut names: Vec<String> = presented.iter().take(SHOWN).map(plain).collect();
    if presented.len() > SHOWN {
        names.push(format!("and {} more", presented.len() - SHOWN));
    }
    if names.is_empty() { "no names".to_string() } else { names.join(", ") }
}

/// Finds an error of type `T` in `err`'s source chain, looking inside `io::Error`s too
/// (whose `source()` skips the error they wrap).
pub(crate) fn find_in_chain<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        if let Some(inner) = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            let inner: &(dyn StdError + 'static) = inner;
            if let Some(t) = find_in_chain::<T>(inner) {
                return Some(t);
            }
        }
        current = e.source();
    }
    None
}

fn chain_text(err: &(dyn StdError + 'static)) -> String {
    let mut parts = Vec::new();
    let mut current = Some(err);
    while let Some(e) = current {
        parts.push(e.to_string());
        current = e.source();
    }
    parts.join(": ")
}

/// The most specific message in the chain (reqwest's own wording adds the URL and nothing else).
fn innermost(err: &(dyn StdError + 'static)) -> String {
    let mut last = err.to_string();
    let mut current = err.source();
    while let Some(e) = current {
        last = e.to_string();
        current = e.source();
    }
    last
}

/// A readable, bounded excerpt of a UFM answer body: JSON `error`/`message` fields as they
/// are, HTML reduced to its text, at most 300 characters, with any of `secrets` blanked.
pub(crate) fn excerpt(body: &[u8], secrets: &[&str]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".into();
    }
    let mut out = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(map)) => ["error", "message", "detail", "description"]
            .iter()
            .find_map(|k| map.get(*k).and_then(|v| v.as_str()).map(str::to_string))
            .unwrap_or_else(|| text.to_string()),
        _ if looks_like_html(text) => html_text(text),
        _ => text.to_string(),
    };
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(s, "<redacted>");
    }
    let collapsed = out.split_whitespace().collect::<Vec<_>>().join(" ");
    match collapsed.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}…", &collapsed[..cut]),
        None => collapsed,
    }
}

pub(crate) fn looks_like_html(text: &str) -> bool {
    let head: String = text.chars().take(200).collect::<String>().to_ascii_lowercase();
    head.contains("<html") || head.contains("<!doctype") || head.contains("<head") || head.contains("<body")
}

/// The visible text of an HTML page: tags dropped, `<head>` reduced to its title.
fn html_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len().min(4096));
    let mut in_tag = false;
    let mut tag = String::new();
    let mut skipping = false; // inside <script> or <style>
    for ch in html.chars() {
        match (in_tag, ch) {
            (false, '<') => {
                in_tag = true;
                tag.clear();
            }
            (true, '>') => {
                in_tag = false;
                let name = tag.trim_start_matches('/').split_whitespace().next().unwrap_or("").to_ascii_lowercase();
                if name == "script" || name == "style" {
                    skipping = !tag.starts_with('/');
                }
                out.push(' ');
            }
            (true, c) => tag.push(c),
            (false, c) if !skipping => out.push(c),
            (false, _) => {}
        }
    }
    // Apache repeats the title as <h1>; say it once. Only the start matters: the excerpt is short.
    let words: Vec<&str> = out.split_whitespace().take(120).collect();
    dedupe_leading_phrase(&words)
}

/// `"503 Service Unavailable Service Unavailable The server…"` → `"503 Service Unavailable: The server…"`.
fn dedupe_leading_phrase(words: &[&str]) -> String {
    for len in (1..=words.len() / 2).rev() {
        for start in 0..=1.min(words.len().saturating_sub(2 * len)) {
            let a = &words[start..start + len];
            let b = words.get(start + len..start + 2 * len);
            if b == Some(a) {
                let head = words[..start + len].join(" ");
                let tail = words[start + 2 * len..].join(" ");
                return if tail.is_empty() { head } else { format!("{head}: {tail}") };
            }
        }
    }
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apache_pages_become_one_short_line() {
        let page = "<!DOCTYPE HTML PUBLIC \"-//IETF//DTD HTML 2.0//EN\">\n<html><head>\n<title>503 Service Temporarily Unavailable</title>\n</head><body>\n<h1>Service Temporarily Unavailable</h1>\n<p>The server is temporarily unable to service your request.</p>\n</body></html>\n";
        let e = excerpt(page.as_bytes(), &[]);
        assert_eq!(e, "503 Service Temporarily Unavailable: The server is temporarily unable to service your request.");
    }

    #[test]
    fn json_errors_are_quoted_and_long_bodies_cut() {
        assert_eq!(excerpt(br#"{"error": "pkey 0x5 not found"}"#, &[]), "pkey 0x5 not found");
        let long = "x".repeat(1000);
        let e = excerpt(long.as_bytes(), &[]);
        assert_eq!(e.chars().count(), EXCERPT_CHARS + 1);
        assert!(e.ends_with('…'));
        assert_eq!(excerpt(b"  ", &[]), "(empty body)");
        // Multi-byte text is cut on a character boundary.
        let wide = "é".repeat(400);
        assert!(excerpt(wide.as_bytes(), &[]).ends_with('…'));
    }

    #[test]
    fn secrets_in_an_answer_are_blanked() {
        let e = excerpt(b"bad password hunter2 for admin", &["hunter2", ""]);
        assert_eq!(e, "bad password <redacted> for admin");
    }

    #[test]
    fn classes_and_reasons_follow_the_kind_of_failure() {
        use ErrorClass::{Auth, Permanent, Transient};
        let op = Op::AddGuids;
        let t = || "ufm:443".to_string();
        let cases: Vec<(UfmError, ErrorClass, FabricReason)> = vec![
            (UfmError::Unavailable { op, status: 503, answer: String::new() }, Transient, FabricReason::UfmUnavailable),
            (UfmError::Unavailable { op, status: 429, answer: String::new() }, Transient, FabricReason::UfmUnavailable),
            (
                UfmError::Timeout { op, target: t(), after: Duration::from_millis(300) },
                Transient,
                FabricReason::UfmTimeout,
            ),
            (UfmError::Connect { op, target: t(), detail: String::new() }, Transient, FabricReason::UfmUnreachable),
            (UfmError::Broken { op, target: t(), detail: String::new() }, Transient, FabricReason::UfmConnectionLost),
            (UfmError::Rejected { op, status: 400, answer: String::new() }, Permanent, FabricReason::UfmRejected),
            (UfmError::Rejected { op, status: 404, answer: String::new() }, Permanent, FabricReason::UfmRejected),
            (
                UfmError::Malformed { op, detail: String::new(), answer: String::new() },
                Permanent,
                FabricReason::UfmMalformedAnswer,
            ),
            (UfmError::Redirected { op, status: 302, location: String::new() }, Permanent, FabricReason::UfmRedirected),
            (
                UfmError::Config { setting: "UFM_CERTIFICATE", detail: String::new() },
                Permanent,
                FabricReason::UfmConfig,
            ),
            (
                UfmError::Unauthorized { op, who: "user admin".into(), hint: "", answer: String::new() },
                Auth,
                FabricReason::UfmUnauthorized,
            ),
            (
                UfmError::Forbidden { op, who: "user admin".into(), answer: String::new() },
                Auth,
                FabricReason::UfmForbidden,
            ),
            (
                UfmError::Credentials(ConfigError { setting: "UFM_PASSWORD".into(), detail: String::new() }),
                Auth,
                FabricReason::UfmCredentials,
            ),
            (UfmError::Tls { op, target: t(), problem: String::new() }, Auth, FabricReason::UfmTls),
        ];
        for (e, class, reason) in cases {
            assert_eq!((e.class(), e.reason()), (class, reason), "{e:?}");
            assert_eq!(e.is_transient(), class == Transient);
            let f = FabricError::from(e);
            assert_eq!((f.class, f.reason), (class, reason));
            assert_eq!(
                (f.is_transient(), f.is_auth(), f.is_permanent()),
                (class == Transient, class == Auth, class == Permanent)
            );
        }
        let timeout = UfmError::Timeout { op, target: t(), after: Duration::from_millis(300) };
        assert_eq!(timeout.to_string(), "add_guids: UFM at ufm:443 did not answer within 300ms");
        assert_eq!(FabricError::from(timeout).message, "add_guids: UFM at ufm:443 did not answer within 300ms");
        assert_eq!(UfmError::Connect { op, target: t(), detail: String::new() }.status_label(), "connect");
        assert_eq!(UfmError::Unavailable { op, status: 503, answer: String::new() }.status_label(), "503");
        let labels: std::collections::BTreeSet<&str> = FabricReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), FabricReason::ALL.len(), "labels are distinct");
    }

    #[test]
    fn certificate_names_are_shown_plainly() {
        let presented = vec![r#"DnsName("ufm.example")"#.to_string(), "IpAddress(10.0.0.1)".to_string()];
        assert_eq!(cert_names(&presented), "ufm.example, 10.0.0.1");
        let many: Vec<String> = (0..10).map(|i| format!(r#"DnsName("h{i}")"#)).collect();
        assert!(cert_names(&many).ends_with("h7, and 2 more"));
        assert_eq!(host_of("[fd00::1]:443"), "fd00::1");
        assert_eq!(host_of("127.0.0.1:8443"), "127.0.0.1");
    }
}
