//! JSON mechanics of the fake API server: merge patch (RFC 7386), JSON patch (RFC 6902 add,
//! remove, replace, test), label and field selectors, and query-string decoding.

use serde_json::{Map, Value};

/// RFC 7386: objects merge key by key, `null` deletes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else { return };
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// Why a JSON patch was refused; the server answers 422.
#[derive(Debug)]
pub struct PatchError(pub String);

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn split_pointer(path: &str) -> Result<Vec<String>, PatchError> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(PatchError(format!("{path:?} is not a JSON pointer")));
    };
    Ok(rest.split('/').map(unescape).collect())
}

fn parent<'a>(doc: &'a mut Value, tokens: &[String]) -> Result<&'a mut Value, PatchError> {
    let mut cur = doc;
    for t in tokens {
        cur = match cur {
            Value::Object(m) => m.get_mut(t).ok_or_else(|| PatchError(format!("no member {t:?}")))?,
            Value::Array(a) => {
                let i: usize = t.parse().map_err(|_| PatchError(format!("{t:?} is not an index")))?;
                a.get_mut(i).ok_or_else(|| PatchError(format!("index {i} out of range")))?
            }
            _ => return Err(PatchError(format!("cannot descend into a scalar at {t:?}"))),
        };
    }
    Ok(cur)
}

fn get<'a>(doc: &'a Value, tokens: &[String]) -> Option<&'a Value> {
    let mut cur = doc;
    for t in tokens {
        cur = match cur {
            Value::Object(m) => m.get(t)?,
            Value::Array(a) => a.get(t.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Applies an RFC 6902 patch (add, remove, replace, test) to a copy of `doc`.
pub fn json_patch(doc: &Value, ops: &Value) -> Result<Value, PatchError> {
    let Value::Array(ops) = ops else {
        return Err(PatchError("a JSON patch is an array of operations".into()));
    };
    let mut out = doc.clone();
    for op in ops {
        let kind = op.get("op").and_then(Value::as_str).unwrap_or("");
        let path = op.get("path").and_then(Value::as_str).ok_or_else(|| PatchError("op without path".into()))?;
        let tokens = split_pointer(path)?;
        let value = op.get("value").cloned();
        match kind {
            "test" => {
                let want = value.ok_or_else(|| PatchError("test without value".into()))?;
                if get(&out, &tokens) != Some(&want) {
                    return Err(PatchError(format!("test failed: {path} is not {want}")));
                }
            }
            "add" | "replace" => {
                let value = value.ok_or_else(|| PatchError(format!("{kind} without value")))?;
                let Some((last, head)) = tokens.split_last() else {
                    out = value;
                    continue;
                };
                match parent(&mut out, head)? {
                    Value::Object(m) => {
                        if kind == "replace" && !m.contains_key(last) {
                            return Err(PatchError(format!("replace: no member at {path}")));
                        }
                        m.insert(last.clone(), value);
                    }
                    Value::Array(a) => {
                        let i = if last == "-" {
                            a.len()
                        } else {
                            last.parse().map_err(|_| PatchError(format!("bad index {last:?}")))?
                        };
                        match (kind, i <= a.len(), i < a.len()) {
                            ("add", true, _) => a.insert(i, value),
                            ("replace", _, true) => a[i] = value,
                            _ => return Err(PatchError(format!("index {i} out of range"))),
                        }
                    }
                    _ => return Err(PatchError(format!("cannot {kind} under a scalar at {path}"))),
                }
            }
            "remove" => {
                let Some((last, head)) = tokens.split_last() else {
                    return Err(PatchError("cannot remove the whole document".into()));
                };
                match parent(&mut out, head)? {
                    Value::Object(m) => {
                        m.remove(last).ok_or_else(|| PatchError(format!("remove: no member at {path}")))?;
                    }
                    Value::Array(a) => {
                        let i: usize = last.parse().map_err(|_| PatchError(format!("bad index {last:?}")))?;
                        if i >= a.len() {
                            return Err(PatchError(format!("index {i} out of range")));
                        }
                        a.remove(i);
                    }
                    _ => return Err(PatchError(format!("cannot remove under a scalar at {path}"))),
                }
            }
            other => return Err(PatchError(format!("unsupported op {other:?}"))),
        }
    }
    Ok(out)
}

/// `key=value`, `key==value`, `key!=value`, `key`, `!key` terms, comma-separated.
#[derive(Clone, Debug, Default)]
pub struct Selector {
    terms: Vec<Term>,
}

#[derive(Clone, Debug)]
enum Term {
    Eq(String, String),
    Ne(String, String),
    Exists(String),
    Absent(String),
}

impl Selector {
    pub fn parse(text: &str) -> Selector {
        let mut terms = Vec::new();
        for raw in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let term = if let Some((k, v)) = raw.split_once("!=") {
                Term::Ne(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = raw.split_once("==") {
                Term::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = raw.split_once('=') {
                Term::Eq(k.trim().into(), v.trim().into())
            } else if let Some(k) = raw.strip_prefix('!') {
                Term::Absent(k.trim().into())
            } else {
                Term::Exists(raw.into())
            };
            terms.push(term);
        }
        Selector { terms }
    }

    /// Label selector: terms name `metadata.labels` keys.
    pub fn matches_labels(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.terms.iter().all(|t| match t {
            Term::Eq(k, v) => label(k) == Some(v.as_str()),
            Term::Ne(k, v) => label(k) != Some(v.as_str()),
            Term::Exists(k) => label(k).is_some(),
            Term::Absent(k) => label(k).is_none(),
        })
    }

    /// Field selector: terms name dotted paths (`spec.nodeName`, `metadata.name`); a missing
    /// field reads as the empty string, as in the real server.
    pub fn matches_fields(&self, obj: &Value) -> bool {
        let field = |path: &str| -> String {
            let pointer = format!("/{}", path.replace('.', "/"));
            match obj.pointer(&pointer) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Bool(b)) => b.to_string(),
                Some(Value::Number(n)) => n.to_string(),
                _ => String::new(),
            }
        };
        self.terms.iter().all(|t| match t {
            Term::Eq(k, v) => field(k) == *v,
            Term::Ne(k, v) => field(k) != *v,
            Term::Exists(_) | Term::Absent(_) => true,
        })
    }
}

/// Decodes `application/x-www-form-urlencoded` text (`+` and `%XX`).
pub fn url_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Query parameters, decoded.
pub fn query_params(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (url_decode(k), url_decode(v)),
            None => (url_decode(p), String::new()),
        })
        .collect()
}
