//! Tenant pkey policy: which namespaces may use which pkeys. Rules match namespaces by name
//! (globs) or labels; a pkey is allowed when a rule matching the namespace lists it.
//!
//! ```yaml
//! default: deny            # what namespaces no rule matches get: deny (default) or allow
//! rules:
//!   - name: tenant-a
//!     namespaces: ["tenant-a", "tenant-a-*"]
//!     namespaceSelector: {matchLabels: {tenant: a}}
//!     pkeys: ["0x1000", "0x1100-0x11ff"]
//!   - name: tenant-c              # automatic networks of these namespaces share one pkey
//!     namespaces: ["tenant-c"]
//!     autoPkey: namespace         # (default: network, one pkey per network)
//!     pkeys: []
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::ib::PKey;

/// What the tenant pkey policy does with a violation. (The command line spells it
/// `off|warn|enforce`; the adapter in src/config gives it its clap parser.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PolicyMode {
    /// No policy (as ib-kubernetes).
    #[default]
    Off,
    /// Report violations as Events and metrics, configure anyway.
    Warn,
    /// Refuse violating attachments.
    Enforce,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy {source_name}: {detail}")]
pub struct PolicyError {
    pub source_name: String,
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    default_allow: bool,
    rules: Vec<Rule>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    name: String,
    namespaces: Vec<String>,
    selector: Option<Selector>,
    pkeys: Vec<(PKey, PKey)>,
    /// `autoPkey: namespace`: the namespace's automatic networks share one pkey.
    shared_auto_pkey: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Selector {
    match_labels: BTreeMap<String, String>,
    expressions: Vec<Expression>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Expression {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    default: Option<String>,
    #[serde(default)]
    rules: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRule {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default)]
    namespace_selector: Option<RawSelector>,
    pkeys: Vec<String>,
    #[serde(default)]
    auto_pkey: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSelector {
    #[serde(default)]
    match_labels: BTreeMap<String, String>,
    #[serde(default)]
    match_expressions: Vec<RawExpression>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpression {
    key: String,
    operator: String,
    #[serde(default)]
    values: Vec<String>,
}

impl Policy {
    /// Parses the YAML text; `source_name` (e.g. the file path) goes into every error.
    pub fn parse(source_name: &str, text: &str) -> Result<Policy, PolicyError> {
        let err = |detail: String| PolicyError { source_name: source_name.to_string(), detail };
        let raw: RawPolicy = serde_norway::from_str(text).map_err(|e| err(e.to_string()))?;
        let default_allow = match raw.default.as_deref().map(str::trim) {
            None | Some("deny") => false,
            Some("allow") => true,
            Some(other) => return Err(err(format!("default: {other:?} is neither \"deny\" nor \"allow\""))),
        };
        let mut rules = Vec::with_capacity(raw.rules.len());
        for (i, r) in raw.rules.into_iter().enumerate() {
            let at = |field: &str| format!("rules[{i}].{field}");
            if r.namespaces.is_empty() && r.namespace_selector.is_none() {
                return Err(err(format!("{}: a rule needs namespaces or a namespaceSelector", at("namespaces"))));
            }
            let mut pkeys = Vec::with_capacity(r.pkeys.len());
            for (j, p) in r.pkeys.iter().enumerate() {
                let range = parse_range(p).map_err(|e| err(format!("{}: {e}", at(&format!("pkeys[{j}]")))))?;
                pkeys.push(range);
            }
            let selector = match r.namespace_selector {
                None => None,
                Some(s) => {
                    let mut expressions = Vec::new();
                    for (j, e) in s.match_expressions.into_iter().enumerate() {
                        let field = at(&format!("namespaceSelector.matchExpressions[{j}]"));
                        expressions.push(match e.operator.as_str() {
                            "In" if !e.values.is_empty() => Expression::In(e.key, e.values),
                            "NotIn" if !e.values.is_empty() => Expression::NotIn(e.key, e.values),
                            "Exists" if e.values.is_empty() => Expression::Exists(e.key),
                            "DoesNotExist" if e.values.is_empty() => Expression::DoesNotExist(e.key),
                            "In" | "NotIn" => return Err(err(format!("{field}: {} needs values", e.operator))),
                            "Exists" | "DoesNotExist" => {
                                return Err(err(format!("{field}: {} takes no values", e.operator)));
                            }
                            other => {
                                return Err(err(format!(
                                    "{field}: operator {other:?} is not In, NotIn, Exists or DoesNotExist"
                                )));
                            }
                        });
                    }
                    Some(Selector { match_labels: s.match_labels, expressions })
                }
            };
            let shared_auto_pkey = match r.auto_pkey.as_deref().map(str::trim) {
                None | Some("network") => false,
                Some("namespace") => true,
                Some(other) => {
                    return Err(err(format!(
                        "{}: {other:?} is neither \"network\" (one pkey per automatic network) nor \"namespace\" \
                         (the namespace's automatic networks share one)",
                        at("autoPkey")
                    )));
                }
            };
            rules.push(Rule {
                name: r.name.unwrap_or_else(|| format!("rules[{i}]")),
                namespaces: r.namespaces,
                selector,
                pkeys,
                shared_auto_pkey,
            });
        }
        Ok(Policy { default_allow, rules })
    }

    /// Whether a rule matching the namespace says its automatic networks share one pkey.
    pub fn shares_auto_pkey(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        self.rules.iter().any(|r| r.shared_auto_pkey && r.matches(namespace, labels))
    }

    /// `Ok(())` when `namespace` (with `labels`) may use `pkey`; else why not.
    pub fn check(&self, namespace: &str, labels: &BTreeMap<String, String>, pkey: PKey) -> Result<(), String> {
        let matching: Vec<&Rule> = self.rules.iter().filter(|r| r.matches(namespace, labels)).collect();
        if matching.is_empty() {
            return if self.default_allow {
                Ok(())
            } else {
                Err(format!("no policy rule covers namespace {namespace}, and the policy's default is deny"))
            };
        }
        if matching.iter().any(|r| r.pkeys.iter().any(|&(lo, hi)| lo <= pkey && pkey <= hi)) {
            return Ok(());
        }
        let names: Vec<&str> = matching.iter().map(|r| r.name.as_str()).collect();
        Err(format!(
            "pkey {pkey} is not among the pkeys that policy rule(s) {} allow namespace {namespace}",
            names.join(", ")
        ))
    }
}

impl Rule {
    fn matches(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        self.namespaces.iter().any(|g| glob(g, namespace)) || self.selector.as_ref().is_some_and(|s| s.matches(labels))
    }
}

impl Selector {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.expressions.iter().all(|e| match e {
                Expression::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
                Expression::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
                Expression::Exists(k) => labels.contains_key(k),
                Expression::DoesNotExist(k) => !labels.contains_key(k),
            })
    }
}

/// `0x1000` or `0x1000-0x10ff` (inclusive); the default partition is never allowed.
fn parse_range(text: &str) -> Result<(PKey, PKey), String> {
    let one = |s: &str| PKey::parse_tenant(s).map(|(p, _)| p).map_err(|e| e.to_string());
    match text.split_once('-') {
        None => one(text).map(|p| (p, p)),
        Some((a, b)) => {
            let (lo, hi) = (one(a)?, one(b)?);
            if lo > hi {
                return Err(format!("range {text:?} ends before it starts"));
            }
            Ok((lo, hi))
        }
    }
}

/// Shell-style glob with `*` and `?`.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
rules:
  - name: tenant-a
    namespaces: ["tenant-a", "tenant-a-*"]
    pkeys: ["0x1000", "0x1100-0x11ff"]
  - name: labelled-b
    namespaceSelector:
      matchLabels: {tenant: b}
      matchExpressions: [{key: tier, operator: NotIn, values: [dev]}]
    pkeys: ["0x2000"]
"#;

    fn p(s: &str) -> PKey {
        s.parse().unwrap()
    }

    #[test]
    fn namespaces_get_only_their_pkeys() {
        let pol = Policy::parse("test", POLICY).unwrap();
        let none = BTreeMap::new();
        assert!(pol.check("tenant-a", &none, p("0x1000")).is_ok());
        assert!(pol.check("tenant-a-ml", &none, p("0x1150")).is_ok());
        let err = pol.check("tenant-a", &none, p("0x2000")).unwrap_err();
        assert!(err.contains("tenant-a") && err.contains("0x2000"), "{err}");
        let b: BTreeMap<String, String> = [("tenant".into(), "b".into())].into();
        assert!(pol.check("anything", &b, p("0x2000")).is_ok());
        assert!(pol.check("anything", &b, p("0x1000")).is_err());
        let dev: BTreeMap<String, String> = [("tenant".into(), "b".into()), ("tier".into(), "dev".into())].into();
        assert!(pol.check("anything", &dev, p("0x2000")).unwrap_err().contains("default is deny"));
    }

    #[test]
    fn default_allow_lets_uncovered_namespaces_through() {
        let pol = Policy::parse("t", "default: allow\nrules: []\n").unwrap();
        assert!(pol.check("x", &BTreeMap::new(), p("0x5")).is_ok());
    }

    #[test]
    fn errors_name_the_field() {
        let e = Policy::parse("pol.yaml", "rules:\n  - namespaces: [a]\n    pkeys: ['1000']\n").unwrap_err();
        assert!(e.to_string().contains("pol.yaml") && e.to_string().contains("rules[0].pkeys[0]"), "{e}");
        let e = Policy::parse("p", "rules:\n  - pkeys: ['0x1']\n").unwrap_err();
        assert!(e.to_string().contains("namespaceSelector"), "{e}");
        let e = Policy::parse("p", "rules:\n  - namespaces: [a]\n    pkeys: ['0x1']\n    pkey: ['0x2']\n").unwrap_err();
        assert!(e.to_string().contains("pkey"), "{e}");
        assert!(Policy::parse("p", "rules:\n  - namespaces: [a]\n    pkeys: ['0x20-0x10']\n").is_err());
    }

    #[test]
    fn an_auto_pkey_rule_makes_a_namespace_share_one_pkey() {
        let text = "rules:\n  - namespaces: [team-*]\n    autoPkey: namespace\n    pkeys: []\n  - namespaces: [solo]\n    autoPkey: network\n    pkeys: []\n";
        let pol = Policy::parse("p", text).unwrap();
        assert!(pol.shares_auto_pkey("team-a", &BTreeMap::new()));
        assert!(!pol.shares_auto_pkey("solo", &BTreeMap::new()));
        assert!(!pol.shares_auto_pkey("other", &BTreeMap::new()));
        let e = Policy::parse("p", "rules:\n  - namespaces: [a]\n    autoPkey: tenant\n    pkeys: []\n").unwrap_err();
        assert!(e.to_string().contains("rules[0].autoPkey"), "{e}");
    }

    #[test]
    fn globs() {
        assert!(glob("team-*", "team-x"));
        assert!(glob("t?am", "team"));
        assert!(!glob("team-*", "tea"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
    }
}
