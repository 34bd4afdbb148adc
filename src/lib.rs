//! fabric-sync keeps InfiniBand partition membership in NVIDIA UFM in step with the pods of a
//! Kubernetes cluster. See ARCHITECTURE in the design notes and README for the shape.
//!
//! Pure core (`ib`, `netdef`, `alloc`) and adapters (`ops`, later `ufm`, `kube`, `agent`, `sim`).

pub mod agent;
pub mod alloc;
pub mod audit;
pub mod config;
pub mod controller;
pub mod engine;
pub mod ib;
pub mod kube;
pub mod netdef;
pub mod ops;
pub mod sim;
pub mod ufm;
pub mod wire;

/// Version and the git commit the binary was built from.
pub fn version_string() -> String {
    format!("fabric-sync {} (commit {})", env!("CARGO_PKG_VERSION"), env!("FABRIC_SYNC_GIT_COMMIT"))
}

/// Installs aws-lc-rs as the process-wide rustls provider. Call first thing in `main` and in
/// test helpers: kube, reqwest and the mock UFM must agree on one provider.
pub fn install_crypto_provider() {
    // An error only means a provider is installed already.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
