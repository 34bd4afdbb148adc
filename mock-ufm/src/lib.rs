//! A stateful, strict NVIDIA UFM REST simulator (pkeys, GUIDs, ports, tokens) with TLS, Basic,
//! token and client-certificate auth, delayed application, and fault injection.
//!
//! Use it in-process from tests:
//!
//! ```no_run
//! # async fn demo() -> Result<(), mock_ufm::StartError> {
//! use std::time::Duration;
//! let ufm = mock_ufm::MockUfm::start(mock_ufm::Config {
//!     tokens: vec!["t0ken".into()],
//!     apply_delay: Duration::from_millis(200),
//!     ..Default::default()
//! })
//! .await?;
//! let base = ufm.url(); // https://127.0.0.1:PORT
//! let ca = ufm.ca_pem(); // trust only this
//! ufm.add_fault(mock_ufm::FaultRule::error_rate(0.5, &[502, 503]).path("/resources/pkeys"));
//! // ... drive a client against `base` ...
//! let log = ufm.requests();
//! let table = ufm.snapshot();
//! ufm.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! or run the `mock-ufm` binary (see the crate README).
//!
//! # UFM API
//!
//! Served under `/ufmRest` (Basic `user:password`, or a client certificate signed by the
//! configured client CA when no `Authorization` header is sent) and `/ufmRestV3`
//! (`Authorization: Basic <access token>`). 401, 403 and injected 5xx answers are Apache-style
//! HTML; UFM-level errors are `400`/`404` with `{"error": "..."}`. Viewers (read-only users) get
//! 403 for anything but `GET`/`HEAD`.
//!
//! | method + path (after the prefix) | behaviour |
//! |---|---|
//! | `GET /app/ufm_version` | `{"ufm_release_version": "6.19.0-7"}` |
//! | `GET /app/tokens`, `POST /app/tokens` | list / issue tokens (`access_token, revoked, issued_at, expires_in, username`) |
//! | `POST /app/tokens/revoke` | form, multipart or JSON field `token`; 404 if unknown |
//! | `GET /resources/pkeys` | no flags: `["0x5","0x7fff"]`; `guids_data=true` or `qos_conf=true`: object keyed by pkey; both: 400 |
//! | `GET /resources/pkeys/<pkey>` | both flags allowed; unknown pkey: `200 {}` (or 404 if configured) |
//! | `POST /resources/pkeys` | add GUIDs (creates `api_pkey_0x<hex>`): `pkey, guids, membership \| memberships, index0, ip_over_ib, partition_name` |
//! | `PUT /resources/pkeys` | replace the member set (same fields) |
//! | `POST /resources/pkeys/add` | create an empty pkey: `pkey, ip_over_ib, index0, mtu_limit, service_level, rate_limit`; 400 if it exists |
//! | `DELETE /resources/pkeys/<pkey>/guids/<g1>,<g2>` | remove GUIDs; non-members are a no-op; the last GUID deletes the pkey |
//! | `POST /actions/remove_guids_from_pkey` | legacy remove, body `{"pkey","guids"}` |
//! | `DELETE /resources/pkeys/<pkey>` | 404 if absent |
//! | `PUT /resources/pkeys/qos_conf` | `pkey, mtu_limit, service_level, rate_limit`; 404 if absent |
//! | `GET /resources/pkeys/last_updated` | `{"last_updated": null}` until the first visible change |
//! | `GET /resources/ports[?sys_type=Computer]` | port objects |
//!
//! pkeys are accepted as `0x5`, `0x0005`, `0X0005` and returned as `0x5`; writes need
//! `0x1..=0x7ffe` (`0x7fff`, the management partition, is read-only). GUIDs are exactly 16 hex
//! digits (optional `0x`, any case), never all-zero, returned lowercase. Bodies reject unknown
//! fields, duplicate GUIDs and empty GUID lists.
//!
//! # Admin API
//!
//! Under `/mock/`, no auth, never faulted, never logged. JSON in and out; errors are
//! `400`/`404` `{"error": "..."}`.
//!
//! | method + path | body / answer |
//! |---|---|
//! | `GET /mock/health` | `{"ok": true}` |
//! | `GET /mock/faults` | `{"rules": [{"id", ...rule, "remaining", "expires_in_ms"}]}` |
//! | `POST /mock/faults` | one rule → `{"id": 1}` |
//! | `PUT /mock/faults` | `{"rules": [rule, ...]}` replaces all → `{"ids": [...]}` |
//! | `DELETE /mock/faults`, `DELETE /mock/faults/<id>` | remove all / one |
//! | `GET /mock/requests[?since=<seq>]` | `[{"seq","time_ms","method","path","query","body","auth","user","status","fault","latency_ms","endpoint"}]`; `auth` is `basic`, `token`, `client_cert` or `none`; `status` is `null` for hang/reset |
//! | `DELETE /mock/requests` | clear log and counters |
//! | `GET /mock/counters` | `{"POST /resources/pkeys": {"count": 3, "failed": 1}, ...}` (failed: status ≥ 400 or no answer) |
//! | `GET /mock/state` | `{"state": {"partitions", "last_updated_ms", "tokens"}, "last_updated", "pending_changes", "settings", "faults", "ports"}` |
//! | `PUT /mock/state` | `{"partitions": {...}, "last_updated_ms": n, "tokens": [...]}` (the `state` part of the dump) |
//! | `POST /mock/apply` | apply pending (delayed) changes now → `{"changed": bool}` |
//! | `POST /mock/reset` | optional `{"state": bool, "faults": bool, "log": bool}` (all default true) |
//! | `GET /mock/settings`, `PATCH /mock/settings` | `{"ufm_version", "unknown_pkey_404", "last_updated_format": "day_first"\|"ctime", "apply_delay_ms"}` |
//! | `GET /mock/ports`, `PUT /mock/ports` | the port list |
//! | `POST /mock/tokens` | issue a token for the admin user |
//!
//! A fault rule is one flat object: `kind` plus optional scope (`method`, `path_prefix` matched
//! against the path without `/ufmRest`/`/ufmRestV3`, or against the full path), `probability`
//! (default 1), `count` (fire at most N times) and `duration_ms` (active for N ms from now):
//!
//! | kind | extra fields | effect |
//! |---|---|---|
//! | `latency` | `ms`, or `min_ms` + `max_ms` | delay, then serve normally (latencies add up) |
//! | `error` | `statuses` (default `[500]`) | answer one of them, Apache HTML body |
//! | `outage` | `duration_ms` required | answer 503 "Service Temporarily Unavailable" |
//! | `hang` | `ms` (optional) | never answer; after `ms` (default 600 s) close without answering |
//! | `reset` | | drop the TCP connection with a reset (SO_LINGER 0), no answer |
//! | `unauthorized` | | answer 401 whatever the credentials (use `count` or `duration_ms` for a storm) |
//!
//! Latency rules all apply; of the other kinds the first matching rule (in installation order)
//! wins. Example: `{"kind":"error","statuses":[502,503],"probability":0.2,"method":"POST",
//! "path_prefix":"/resources/pkeys"}`.

mod admin;
mod app;
pub mod auth;
pub mod clock;
pub mod config;
pub mod fabric;
pub mod faults;
mod handlers;
mod mock;
pub mod pages;
pub mod persist;
mod pipeline;
pub mod ports;
pub mod reqlog;
mod server;
pub mod state;
pub mod tls;
pub mod wire;

pub use app::{ResetScope, Settings};
pub use auth::Token;
pub use clock::TimeFormat;
pub use config::{Cli, Config, TlsMode};
pub use faults::{FaultKind, FaultRule, InstalledRule, Scope};
pub use mock::{MockUfm, StartError};
pub use ports::Port;
pub use reqlog::{AuthKind, Counter, RequestRecord};
pub use state::{Guid, Member, Membership, Mutation, PKey, PartitionState, Partitions, Qos};
pub use tls::{ClientAuth, Issued, TestPki};
