//! Measures the full `guids_data=true` listing with 100k GUIDs across 1,000 pkeys, over TLS.
//!
//! `CARGO_TARGET_DIR=/work/target-mock cargo run --release -p mock-ufm --example bench_list`
//! (optional args: `<pkeys> <guids-per-pkey> <rounds>`).

use std::time::{Duration, Instant};

use mock_ufm::{Config, Guid, Member, MockUfm, Mutation, PKey};
use reqwest::{Certificate, Client};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>());
    let pkeys = args.next().transpose()?.unwrap_or(1_000);
    let per_pkey = args.next().transpose()?.unwrap_or(100);
    let rounds = args.next().transpose()?.unwrap_or(20).max(1);

    let ufm = MockUfm::start(Config::default()).await?;
    let seeded = Instant::now();
    for p in 1..=pkeys {
        let members = (0..per_pkey)
            .map(|i| Ok((Guid::new((p << 20) | (i + 1))?, Member::default())))
            .collect::<Result<Vec<_>, mock_ufm::state::StateError>>()?;
        ufm.apply(Mutation::AddGuids { pkey: PKey::new(u16::try_from(p)?)?, members, ip_over_ib: None, name: None })?;
    }
    println!("seeded {pkeys} pkeys x {per_pkey} guids in-process in {:?}", seeded.elapsed());

    let ca = ufm.ca_pem().unwrap_or_default();
    let http = Client::builder()
        .tls_certs_only([Certificate::from_pem(ca.as_bytes())?])
        .timeout(Duration::from_secs(60))
        .build()?;
    let url = format!("{}/ufmRest/resources/pkeys?guids_data=true", ufm.url());
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        let body = http.get(&url).basic_auth("admin", Some("123456")).send().await?.error_for_status()?.bytes().await?;
        times.push(t.elapsed());
        bytes = body.len();
    }
    let check: serde_json::Value =
        serde_json::from_slice(&http.get(&url).basic_auth("admin", Some("123456")).send().await?.bytes().await?)?;
    let guids: usize =
        check.as_object().map(|o| o.values().map(|p| p["guids"].as_array().map_or(0, Vec::len)).sum()).unwrap_or(0);
    anyhow::ensure!(guids as u64 == pkeys * per_pkey, "listed {guids} guids");
    times.sort();
    println!(
        "GET /ufmRest/resources/pkeys?guids_data=true: {guids} guids, {} KiB, {rounds} rounds \
         over TLS: min {:?}, median {:?}, max {:?}",
        bytes / 1024,
        times[0],
        times[times.len() / 2],
        times[times.len() - 1]
    );
    ufm.shutdown().await;
    Ok(())
}
