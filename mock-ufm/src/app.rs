//! The mock's shared, lock-protected state (pkey table, faults, request log, credentials,
//! settings) and the small operations handlers perform on it. Locks are never held across
//! an `.await`.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use crate::auth::{Credentials, Token};
use crate::clock::{self, TimeFormat};
use crate::config::Config;
use crate::fabric::Fabric;
use crate::faults::{Decision, FaultRule, FaultSet, InstalledRule};
use crate::persist::SavedState;
use crate::ports::Port;
use crate::reqlog::RequestLog;
use crate::state::{Mutation, Partitions, StateError};

/// Locks `m`, recovering the data if a panicking thread poisoned it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Settings that can change at runtime (`PATCH /mock/settings`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub ufm_version: String,
    pub unknown_pkey_404: bool,
    pub last_updated_format: TimeFormat,
    pub apply_delay_ms: u64,
}

/// What `reset` clears; every part defaults to `true`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetScope {
    /// Partitions, `last_updated`, pending changes and issued tokens.
    #[serde(default = "yes")]
    pub state: bool,
    /// Fault rules.
    #[serde(default = "yes")]
    pub faults: bool,
    /// Request log and counters.
    #[serde(default = "yes")]
    pub log: bool,
}

fn yes() -> bool {
    true
}

impl Default for ResetScope {
    fn default() -> Self {
        ResetScope { state: true, faults: true, log: true }
    }
}

pub(crate) struct App {
    config: Config,
    fabric: Mutex<Fabric>,
    faults: Mutex<FaultSet>,
    rng: Mutex<StdRng>,
    log: Mutex<RequestLog>,
    creds: Mutex<Credentials>,
    settings: Mutex<Settings>,
    ports: Mutex<Vec<Port>>,
    /// Wakes the task that applies delayed changes.
    pub applier: Notify,
    /// Bumped whenever persistent state changes.
    pub dirty: watch::Sender<u64>,
}

impl App {
    pub fn new(config: Config, saved: Option<SavedState>) -> App {
        let now = SystemTime::now();
        let mut creds = Credentials::new((&config.username, &config.password), &config.viewers);
        for t in &config.tokens {
            creds.add_static_token(t, now);
        }
        let (table, last_updated) = match &saved {
            Some(s) => {
                let mut tokens = creds.tokens();
                tokens.extend(s.tokens.iter().cloned());
                creds.set_tokens(tokens);
                (s.table(), s.last_updated())
            }
            None => (Partitions::new(), None),
        };
        let mut faults = FaultSet::default();
        faults.replace(config.faults.clone(), Instant::now());
        let rng = match config.fault_seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        let settings = Settings {
            ufm_version: config.ufm_version.clone(),
            unknown_pkey_404: config.unknown_pkey_404,
            last_updated_format: config.last_updated_format,
            apply_delay_ms: config.apply_delay.as_millis() as u64,
        };
        App {
            fabric: Mutex::new(Fabric::new(table, last_updated, config.apply_delay)),
            faults: Mutex::new(faults),
            rng: Mutex::new(rng),
            log: Mutex::new(RequestLog::new(config.log_capacity)),
            creds: Mutex::new(creds),
            settings: Mutex::new(settings),
            ports: Mutex::new(config.ports.clone()),
            applier: Notify::new(),
            dirty: watch::Sender::new(0),
            config,
        }
    }

    /// The rate limits this UFM accepts.
    pub fn rate_limits(&self) -> &[f64] {
        &self.config.rate_limits
    }

    fn mark_dirty(&self) {
        self.dirty.send_modify(|v| *v += 1);
    }

    /// The fabric with every due change applied.
    pub fn fabric(&self) -> MutexGuard<'_, Fabric> {
        let mut f = lock(&self.fabric);
        if f.apply_due(Instant::now()) {
            self.mark_dirty();
        }
        f
    }

    /// Accepts a change (visible now or after the apply delay).
    pub fn submit(&self, m: Mutation) -> Result<bool, StateError> {
        let mut f = self.fabric();
        let before = f.version();
        let changed = f.submit(m, Instant::now(), SystemTime::now())?;
        if f.version() != before {
            self.mark_dirty();
        }
        if f.pending_len() > 0 {
            self.applier.notify_one();
        }
        Ok(changed)
    }

    /// Applies every pending change now.
    pub fn flush(&self) -> bool {
        let changed = lock(&self.fabric).flush();
        if changed {
            self.mark_dirty();
        }
        changed
    }

    /// `last_updated` as UFM prints it.
    pub fn last_updated(&self) -> Option<String> {
        let format = self.settings().last_updated_format;
        self.fabric().last_updated().map(|t| clock::format_last_updated(t, format))
    }

    pub fn decide(&self, method: &str, endpoint: &str, full_path: &str) -> Decision {
        let mut rng = lock(&self.rng);
        lock(&self.faults).decide(method, endpoint, full_path, Instant::now(), &mut *rng)
    }

    pub fn faults(&self) -> Vec<InstalledRule> {
        lock(&self.faults).list(Instant::now())
    }

    pub fn add_fault(&self, rule: FaultRule) -> u64 {
        lock(&self.faults).add(rule, Instant::now())
    }

    pub fn set_faults(&self, rules: Vec<FaultRule>) -> Vec<u64> {
        lock(&self.faults).replace(rules, Instant::now())
    }

    pub fn remove_fault(&self, id: u64) -> bool {
        lock(&self.faults).remove(id)
    }

    pub fn clear_faults(&self) {
        lock(&self.faults).clear();
    }

    pub fn log(&self) -> MutexGuard<'_, RequestLog> {
        lock(&self.log)
    }

    pub fn creds(&self) -> MutexGuard<'_, Credentials> {
        lock(&self.creds)
    }

    /// Issues a token for `user`.
    pub fn issue_token(&self, user: &str) -> Token {
        let t = {
            let mut rng = lock(&self.rng);
            self.creds().issue(user, SystemTime::now(), &mut *rng)
        };
        self.mark_dirty();
        t
    }

    pub fn revoke_token(&self, token: &str) -> bool {
        let found = self.creds().revoke(token);
        if found {
            self.mark_dirty();
        }
        found
    }

    /// The system_admin user name.
    pub fn admin_user(&self) -> String {
        self.config.username.clone()
    }

    pub fn settings(&self) -> Settings {
        lock(&self.settings).clone()
    }

    pub fn set_settings(&self, s: Settings) {
        lock(&self.fabric).set_delay(Duration::from_millis(s.apply_delay_ms));
        *lock(&self.settings) = s;
    }

    pub fn ports(&self) -> Vec<Port> {
        lock(&self.ports).clone()
    }

    pub fn set_ports(&self, ports: Vec<Port>) {
        *lock(&self.ports) = ports;
    }

    /// The persistent part of the state (visible table only).
    pub fn saved_state(&self) -> SavedState {
        let tokens = self.creds().tokens();
        let f = self.fabric();
        SavedState {
            partitions: f.visible().as_map().clone(),
            last_updated_ms: f.last_updated().map(clock::unix_ms),
            tokens,
        }
    }

    /// Replaces the partition table, `last_updated` and issued tokens.
    pub fn restore(&self, saved: &SavedState) {
        {
            let mut creds = self.creds();
            let mut tokens: Vec<Token> = Vec::new();
            let now = SystemTime::now();
            let mut fresh = Credentials::new((&self.config.username, &self.config.password), &self.config.viewers);
            for t in &self.config.tokens {
                fresh.add_static_token(t, now);
            }
            tokens.extend(fresh.tokens());
            tokens.extend(saved.tokens.iter().cloned());
            creds.set_tokens(tokens);
        }
        lock(&self.fabric).replace(saved.table(), saved.last_updated());
        self.mark_dirty();
    }

    pub fn reset(&self, scope: ResetScope) {
        if scope.state {
            self.restore(&SavedState::default());
            self.set_ports(self.config.ports.clone());
        }
        if scope.faults {
            self.clear_faults();
        }
        if scope.log {
            self.log().clear();
        }
    }
}
