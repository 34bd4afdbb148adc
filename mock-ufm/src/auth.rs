//! Who may call the UFM API: Basic user:password and client certificates on `/ufmRest`,
//! `Authorization: Basic <token>` on `/ufmRestV3`, and the access tokens UFM issues.

use std::collections::BTreeMap;
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::Rng;
use rand::distr::Alphanumeric;
use serde::{Deserialize, Serialize};

use crate::clock;
use crate::reqlog::AuthKind;

/// Why a request was not authenticated (all answered 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials")]
    Missing,
    #[error("authorization header is not `Basic <credentials>`")]
    Malformed,
    #[error("wrong user name or password")]
    BadPassword,
    #[error("unknown access token")]
    UnknownToken,
    #[error("access token was revoked")]
    Revoked,
}

/// The two API flavours the mock serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `/ufmRest`: Basic user:password, or a client certificate.
    Basic,
    /// `/ufmRestV3`: `Authorization: Basic <access token>`.
    Token,
}

impl Api {
    pub fn prefix(self) -> &'static str {
        match self {
            Api::Basic => "/ufmRest",
            Api::Token => "/ufmRestV3",
        }
    }
}

/// What a user may do: viewers read, admins also write and create tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    SystemAdmin,
    Viewer,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user: String,
    pub role: Role,
    pub kind: AuthKind,
}

/// An access token as `GET/POST /app/tokens` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub access_token: String,
    pub revoked: bool,
    pub issued_at: String,
    pub expires_in: u64,
    pub username: String,
}

/// Ten years, as UFM's examples show.
const TOKEN_LIFETIME_SECS: u64 = 315_360_000;

/// Users, passwords and tokens.
#[derive(Debug, Clone)]
pub struct Credentials {
    users: BTreeMap<String, (String, Role)>,
    admin: String,
    tokens: BTreeMap<String, Token>,
}

impl Credentials {
    /// `admin` is the system_admin user; client certificates authenticate as them.
    pub fn new(admin: (&str, &str), viewers: &[(String, String)]) -> Credentials {
        let mut users = BTreeMap::new();
        for (u, p) in viewers {
            users.insert(u.clone(), (p.clone(), Role::Viewer));
        }
        users.insert(admin.0.to_string(), (admin.1.to_string(), Role::SystemAdmin));
        Credentials { users, admin: admin.0.to_string(), tokens: BTreeMap::new() }
    }

    /// What a request presented, for the log.
    pub fn presented(api: Api, header: Option<&str>, client_cert: bool) -> AuthKind {
        match (api, header, client_cert) {
            (Api::Basic, Some(_), _) => AuthKind::Basic,
            (Api::Token, Some(_), _) => AuthKind::Token,
            (Api::Basic, None, true) => AuthKind::ClientCert,
            _ => AuthKind::None,
        }
    }

    /// Authenticates one request. On `/ufmRest` a verified client certificate is enough when no
    /// Authorization header is sent; a header sent alongside must itself be valid.
    pub fn authenticate(&self, api: Api, header: Option<&str>, client_cert: bool) -> Result<Principal, AuthError> {
        let Some(header) = header else {
            if api == Api::Basic && client_cert {
                return Ok(Principal { user: self.admin.clone(), role: Role::SystemAdmin, kind: AuthKind::ClientCert });
            }
            return Err(AuthError::Missing);
        };
        let (scheme, value) = header.trim().split_once(' ').ok_or(AuthError::Malformed)?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(AuthError::Malformed);
        }
        let value = value.trim();
        match api {
            Api::Token => {
                let token = self.tokens.get(value).ok_or(AuthError::UnknownToken)?;
                if token.revoked {
                    return Err(AuthError::Revoked);
                }
                let role = self.users.get(&token.username).map_or(Role::SystemAdmin, |(_, r)| *r);
                Ok(Principal { user: token.username.clone(), role, kind: AuthKind::Token })
            }
            Api::Basic => {
                let decoded = STANDARD.decode(value).map_err(|_| AuthError::Malformed)?;
                let text = String::from_utf8(decoded).map_err(|_| AuthError::Malformed)?;
                let (user, pass) = text.split_once(':').ok_or(AuthError::Malformed)?;
                match self.users.get(user) {
                    Some((p, role)) if p == pass => {
                        Ok(Principal { user: user.to_string(), role: *role, kind: AuthKind::Basic })
                    }
                    _ => Err(AuthError::BadPassword),
                }
            }
        }
    }

    /// Adds a token chosen by the operator (`--token`), owned by the admin user.
    pub fn add_static_token(&mut self, token: &str, now: SystemTime) {
        let t = Token {
            access_token: token.to_string(),
            revoked: false,
            issued_at: clock::format_iso(now),
            expires_in: TOKEN_LIFETIME_SECS,
            username: self.admin.clone(),
        };
        self.tokens.insert(token.to_string(), t);
    }

    /// Issues a new random token for `user`.
    pub fn issue(&mut self, user: &str, now: SystemTime, rng: &mut impl Rng) -> Token {
        let access_token: String = (0..30).map(|_| rng.sample(Alphanumeric) as char).collect();
        let t = Token {
            access_token: access_token.clone(),
            revoked: false,
            issued_at: clock::format_iso(now),
            expires_in: TOKEN_LIFETIME_SECS,
            username: user.to_string(),
        };
        self.tokens.insert(access_token, t.clone());
        t
    }

    /// Marks a token revoked; false if unknown.
    pub fn revoke(&mut self, token: &str) -> bool {
        match self.tokens.get_mut(token) {
            Some(t) => {
                t.revoked = true;
                true
            }
            None => false,
        }
    }

    pub fn tokens(&self) -> Vec<Token> {
        self.tokens.values().cloned().collect()
    }

    /// Replaces the token table (state restore).
    pub fn set_tokens(&mut self, tokens: Vec<Token>) {
        self.tokens = tokens.into_iter().map(|t| (t.access_token.clone(), t)).collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn creds() -> Credentials {
        Credentials::new(("admin", "secret"), &[("guest".to_string(), "guest".to_string())])
    }

    fn basic(user: &str, pass: &str) -> String {
        format!("Basic {}", STANDARD.encode(format!("{user}:{pass}")))
    }

    #[test]
    fn basic_auth_checks_user_and_password() {
        let c = creds();
        let ok = c.authenticate(Api::Basic, Some(&basic("admin", "secret")), false).unwrap();
        assert_eq!((ok.user.as_str(), ok.role), ("admin", Role::SystemAdmin));
        let viewer = c.authenticate(Api::Basic, Some(&basic("guest", "guest")), false).unwrap();
        assert_eq!(viewer.role, Role::Viewer);
        assert_eq!(c.authenticate(Api::Basic, Some(&basic("admin", "nope")), false), Err(AuthError::BadPassword));
        assert_eq!(c.authenticate(Api::Basic, Some("Bearer abc"), false), Err(AuthError::Malformed));
        assert_eq!(c.authenticate(Api::Basic, None, false), Err(AuthError::Missing));
    }

    #[test]
    fn client_certificate_authenticates_only_without_header_on_ufm_rest() {
        let c = creds();
        let p = c.authenticate(Api::Basic, None, true).unwrap();
        assert_eq!(p.kind, AuthKind::ClientCert);
        assert_eq!(c.authenticate(Api::Token, None, true), Err(AuthError::Missing));
        assert_eq!(c.authenticate(Api::Basic, Some(&basic("admin", "x")), true), Err(AuthError::BadPassword));
    }

    #[test]
    fn tokens_work_only_on_the_token_api_until_revoked() {
        let mut c = creds();
        let t = c.issue("admin", SystemTime::UNIX_EPOCH, &mut StdRng::seed_from_u64(1));
        assert_eq!(t.access_token.len(), 30);
        assert_eq!(t.issued_at, "1970-01-01 00:00:00");
        let header = format!("Basic {}", t.access_token);
        assert_eq!(c.authenticate(Api::Token, Some(&header), false).unwrap().kind, AuthKind::Token);
        assert!(c.authenticate(Api::Basic, Some(&header), false).is_err());
        assert_eq!(c.authenticate(Api::Token, Some(&basic("admin", "secret")), false), Err(AuthError::UnknownToken));
        assert!(c.revoke(&t.access_token));
        assert_eq!(c.authenticate(Api::Token, Some(&header), false), Err(AuthError::Revoked));
        assert!(!c.revoke("nope"));
    }
}
