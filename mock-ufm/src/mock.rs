//! [`MockUfm`]: starting, observing, steering and stopping a mock UFM from Rust.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::app::{App, ResetScope, Settings};
use crate::config::{Config, TlsMode};
use crate::faults::{FaultRule, InstalledRule};
use crate::persist::{self, PersistError};
use crate::pipeline::Routes;
use crate::ports::Port;
use crate::reqlog::{Counter, RequestRecord};
use crate::state::{Mutation, PartitionState, Partitions, StateError};
use crate::tls::{self, TestPki, TlsError};
use crate::{admin, handlers, server};

/// Why the mock could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("binding {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Persist(#[from] PersistError),
    #[error("client certificate authentication needs TLS")]
    ClientAuthWithoutTls,
}

/// A running mock UFM. Dropping it stops the server abruptly; [`MockUfm::shutdown`] also
/// writes the state file one last time.
pub struct MockUfm {
    app: Arc<App>,
    addr: SocketAddr,
    url: String,
    ca_pem: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
    applier: JoinHandle<()>,
    persister: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl std::fmt::Debug for MockUfm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockUfm").field("url", &self.url).finish()
    }
}

fn tls_setup(config: &Config) -> Result<(Option<TlsAcceptor>, Option<String>), StartError> {
    let (chain, key, ca) = match &config.tls {
        TlsMode::Plain => {
            if config.client_auth.is_some() {
                return Err(StartError::ClientAuthWithoutTls);
            }
            return Ok((None, None));
        }
        TlsMode::SelfSigned { sans, write_dir } => {
            let pki = TestPki::new("mock-ufm CA")?;
            let leaf = pki.issue_server(sans)?;
            if let Some(dir) = write_dir {
                tls::write_pem(dir, "ca.pem", pki.ca_pem())?;
                tls::write_pem(dir, "server.pem", &leaf.cert_pem)?;
                tls::write_pem(dir, "server-key.pem", &leaf.key_pem)?;
            }
            (leaf.cert_pem, leaf.key_pem, Some(pki.ca_pem().to_string()))
        }
        TlsMode::Pem { cert_chain_pem, key_pem, ca_pem } => (cert_chain_pem.clone(), key_pem.clone(), ca_pem.clone()),
    };
    let server_config = tls::server_config(&chain, &key, config.client_auth.as_ref())?;
    Ok((Some(TlsAcceptor::from(server_config)), ca))
}

/// Applies delayed changes when they fall due, even if nobody reads.
async fn apply_loop(app: Arc<App>) {
    loop {
        let next = app.fabric().next_due();
        match next {
            Some(due) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(due.into()) => {}
                    _ = app.applier.notified() => {}
                }
            }
            None => app.applier.notified().await,
        }
    }
}

async fn save(app: &App, path: &Path) {
    let bytes = match serde_json::to_vec_pretty(&app.saved_state()) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "could not serialise state");
            return;
        }
    };
    let p = path.to_path_buf();
    match tokio::task::spawn_blocking(move || persist::save(&p, &bytes)).await {
        Ok(Ok(())) => tracing::debug!(path = %path.display(), "state saved"),
        Ok(Err(e)) => tracing::warn!(error = %e, "could not save state"),
        Err(e) => tracing::warn!(error = %e, "state writer failed"),
    }
}

/// Saves after every change (coalescing bursts) and once more when told to stop.
async fn persist_loop(app: Arc<App>, path: PathBuf, mut stop: oneshot::Receiver<()>) {
    let mut dirty = app.dirty.subscribe();
    loop {
        tokio::select! {
            changed = dirty.changed() => {
                if changed.is_err() {
                    break;
                }
                save(&app, &path).await;
            }
            _ = &mut stop => break,
        }
    }
    save(&app, &path).await;
}

impl MockUfm {
    /// Binds, prepares TLS, loads the state file (if any) and starts serving.
    pub async fn start(config: Config) -> Result<MockUfm, StartError> {
        let saved = match &config.state_file {
            Some(p) => persist::load(p)?,
            None => None,
        };
        let (acceptor, ca_pem) = tls_setup(&config)?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartError::Bind { addr: config.listen, source })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: config.listen, source })?;
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        let host = if addr.ip().is_unspecified() { SocketAddr::from(([127, 0, 0, 1], addr.port())) } else { addr };
        let url = format!("{scheme}://{host}");
        let state_file = config.state_file.clone();
        let app = Arc::new(App::new(config, saved));
        let routes = Routes { app: app.clone(), ufm: handlers::router(app.clone()), admin: admin::router(app.clone()) };
        let (stop_tx, stop_rx) = oneshot::channel();
        let server = tokio::spawn(server::serve(listener, acceptor, routes, stop_rx));
        let applier = tokio::spawn(apply_loop(app.clone()));
        let persister = state_file.map(|path| {
            let (tx, rx) = oneshot::channel();
            (tx, tokio::spawn(persist_loop(app.clone(), path, rx)))
        });
        tracing::info!(%url, "mock UFM listening");
        Ok(MockUfm { app, addr, url, ca_pem, stop: Some(stop_tx), server, applier, persister })
    }

    /// Base URL, e.g. `https://127.0.0.1:40123`; clients append `/ufmRest/...`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// PEM of the CA that signed the server certificate (`None` for plain HTTP, or when a
    /// supplied certificate came without its CA).
    pub fn ca_pem(&self) -> Option<String> {
        self.ca_pem.clone()
    }

    /// Replaces all fault rules; returns their ids.
    pub fn set_faults(&self, rules: Vec<FaultRule>) -> Vec<u64> {
        self.app.set_faults(rules)
    }

    /// Adds one fault rule; returns its id.
    pub fn add_fault(&self, rule: FaultRule) -> u64 {
        self.app.add_fault(rule)
    }

    /// Removes one fault rule; false if it was not installed (or already used up).
    pub fn remove_fault(&self, id: u64) -> bool {
        self.app.remove_fault(id)
    }

    pub fn clear_faults(&self) {
        self.app.clear_faults();
    }

    /// The fault rules still active.
    pub fn faults(&self) -> Vec<InstalledRule> {
        self.app.faults()
    }

    /// Every logged UFM request, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.app.log().since(0)
    }

    /// Logged requests with `seq > since`.
    pub fn requests_since(&self, since: u64) -> Vec<RequestRecord> {
        self.app.log().since(since)
    }

    /// Forgets the request log and counters.
    pub fn clear_requests(&self) {
        self.app.log().clear();
    }

    /// Calls per endpoint (`"POST /resources/pkeys"`, `"GET /resources/pkeys/{pkey}"`, ...).
    pub fn counters(&self) -> BTreeMap<String, Counter> {
        self.app.log().counters()
    }

    /// The visible partition table, keyed by pkey value (0x7fff included).
    pub fn snapshot(&self) -> BTreeMap<u16, PartitionState> {
        self.app.fabric().visible().iter().map(|(k, v)| (k.value(), v.clone())).collect()
    }

    /// The visible partition table as typed data.
    pub fn partitions(&self) -> Partitions {
        self.app.fabric().visible().clone()
    }

    /// Changes accepted but not yet visible (see `apply_delay`).
    pub fn pending_changes(&self) -> usize {
        self.app.fabric().pending_len()
    }

    /// Makes every pending change visible now; true if anything changed.
    pub fn apply_pending(&self) -> bool {
        self.app.flush()
    }

    /// `last_updated` exactly as `GET /resources/pkeys/last_updated` reports it.
    pub fn last_updated(&self) -> Option<String> {
        self.app.last_updated()
    }

    /// Makes a change as the REST API would (same checks, same apply delay).
    pub fn apply(&self, mutation: Mutation) -> Result<bool, StateError> {
        self.app.submit(mutation)
    }

    /// Issues an access token for the admin user, valid on `/ufmRestV3`.
    pub fn issue_token(&self) -> String {
        self.app.issue_token(&self.app.admin_user()).access_token
    }

    /// Revokes a token; false if unknown.
    pub fn revoke_token(&self, token: &str) -> bool {
        self.app.revoke_token(token)
    }

    /// Replaces the ports `GET /resources/ports` lists.
    pub fn set_ports(&self, ports: Vec<Port>) {
        self.app.set_ports(ports);
    }

    pub fn settings(&self) -> Settings {
        self.app.settings()
    }

    /// Changes runtime settings (version string, unknown-pkey 404, apply delay, ...).
    pub fn update_settings(&self, change: impl FnOnce(&mut Settings)) {
        let mut s = self.app.settings();
        change(&mut s);
        self.app.set_settings(s);
    }

    /// Back to the start: empty table, no faults, empty log.
    pub fn reset(&self) {
        self.app.reset(ResetScope::default());
    }

    /// Resets only the chosen parts.
    pub fn reset_only(&self, scope: ResetScope) {
        self.app.reset(scope);
    }

    /// Stops accepting, drops open connections and writes the state file once more.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let server = std::mem::replace(&mut self.server, tokio::spawn(async {}));
        if let Err(e) = server.await {
            tracing::warn!(error = %e, "server task failed");
        }
        self.applier.abort();
        if let Some((stop, task)) = self.persister.take() {
            let _ = stop.send(());
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "state writer task failed");
            }
        }
    }
}

impl Drop for MockUfm {
    fn drop(&mut self) {
        self.server.abort();
        self.applier.abort();
        if let Some((_, task)) = &self.persister {
            task.abort();
        }
    }
}
