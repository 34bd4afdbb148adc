//! Integration tests: a real mock UFM over TLS on loopback, driven by reqwest. One test binary
//! (modules below) keeps link time down.

mod admin;
mod auth;
mod common;
mod concurrency;
mod faults;
mod pkeys;
mod process;
