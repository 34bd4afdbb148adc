//! Records the git commit for `fabric-sync version` (FABRIC_SYNC_GIT_COMMIT overrides, e.g. in
//! an image build without `.git`).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=FABRIC_SYNC_GIT_COMMIT");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    let commit = std::env::var("FABRIC_SYNC_GIT_COMMIT").ok().filter(|c| !c.is_empty()).or_else(|| {
        let out = Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output().ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        out.status.success().then(|| text.trim().to_string())
    });
    println!("cargo:rustc-env=FABRIC_SYNC_GIT_COMMIT={}", commit.unwrap_or_else(|| "unknown".into()));
}
