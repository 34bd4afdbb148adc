//! The way out: `fabric-sync ledger release --all` (the released binary, against the fake API
//! server and mock-ufm over TLS) removes every claimed GUID from UFM and releases every claim, so
//! that deleting a namespace afterwards does not wait for a controller that is gone.

mod support;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_all_empties_ufm_of_claimed_guids_and_frees_every_finalizer() {
    let env = Env::new().await;
    env.nad("ib", "0x10", false);
    for i in 0..3 {
        env.pod(&format!("p{i}"), "ib", &[]);
    }
    let c = env.controller("ctrl", UfmAuth::Basic).await;
    eventually("three members", || env.members(0x10).len() == 3).await;
    eventually("three claims", || env.claims().len() == 3).await;
    c.stop().await;

    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = fabric_sync_binary(&env, dir.path());
    cmd.args(["ledger", "release", "--all"]);
    // A dry run changes nothing.
    let dry = tokio::task::spawn_blocking({
        let mut c = fabric_sync_binary(&env, dir.path());
        c.args(["ledger", "release", "--all", "--dry-run"]);
        move || c.output()
    })
    .await
    .expect("joined")
    .expect("runs");
    assert!(dry.status.success(), "{}", String::from_utf8_lossy(&dry.stderr));
    assert!(String::from_utf8_lossy(&dry.stdout).contains("would remove 3 GUIDs from pkey 0x10"));
    assert_eq!(env.members(0x10).len(), 3);
    assert_eq!(env.claims().len(), 3);

    let out = tokio::task::spawn_blocking(move || cmd.output()).await.expect("joined").expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("released 3 claims"), "{stdout}");
    assert!(env.members(0x10).is_empty(), "UFM holds no claimed GUID");
    assert!(env.claims().is_empty(), "no claim left");
    // The namespace goes at once: nothing holds it.
    env.delete_namespace("t");
    eventually("namespace t deleted", || env.api.get(Res::Namespaces, "", "t").is_none()).await;
}
