//! 64 clients add and remove GUIDs on 16 pkeys at once; the result must equal the serial one.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use mock_ufm::Membership;
use serde_json::{Value, json};

use crate::common::{PASS, USER, client_for, start};

const CLIENTS: u64 = 64;
const PKEYS: u64 = 16;
const STEPS: u64 = 12;

#[derive(Debug, Clone)]
enum Op {
    Add { pkey: u64, guid: u64, limited: bool },
    RemovePath { pkey: u64, guid: u64 },
    RemoveLegacy { pkey: u64, guid: u64 },
}

/// Each client owns its GUIDs, so only its own order matters; clients interleave freely.
fn ops_for(client: u64) -> Vec<Op> {
    let guid_of = |k: u64| (client << 8) | (k % 6) | 0x0100_0000_0000;
    let mut ops = Vec::new();
    for step in 0..STEPS {
        let pkey = (client + step * 5) % PKEYS + 1;
        let guid = guid_of(step);
        ops.push(Op::Add { pkey, guid, limited: (client + step) % 3 == 0 });
        if step % 3 == 1 {
            ops.push(Op::RemovePath { pkey, guid });
        }
        if step % 4 == 3 {
            // Remove an earlier GUID from an earlier pkey (may be a no-op).
            let back = step - 2;
            ops.push(Op::RemoveLegacy { pkey: (client + back * 5) % PKEYS + 1, guid: guid_of(back) });
        }
    }
    ops
}

/// The expected final table, computed without the mock: pkey -> guid -> limited?
fn serial_model() -> BTreeMap<u64, BTreeMap<u64, bool>> {
    let mut model: BTreeMap<u64, BTreeMap<u64, bool>> = BTreeMap::new();
    for c in 0..CLIENTS {
        for op in ops_for(c) {
            match op {
                Op::Add { pkey, guid, limited } => {
                    model.entry(pkey).or_default().insert(guid, limited);
                }
                Op::RemovePath { pkey, guid } | Op::RemoveLegacy { pkey, guid } => {
                    if let Some(members) = model.get_mut(&pkey) {
                        members.remove(&guid);
                        if members.is_empty() {
                            model.remove(&pkey);
                        }
                    }
                }
            }
        }
    }
    model
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_end_in_the_serial_result() {
    let ufm = start(Default::default()).await;
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let http = client_for(&ufm, None, Duration::from_secs(30));
        let base = format!("{}/ufmRest", ufm.url());
        tasks.push(tokio::spawn(async move {
            for op in ops_for(c) {
                let req = match &op {
                    Op::Add { pkey, guid, limited } => http.post(format!("{base}/resources/pkeys")).json(&json!({
                        "pkey": format!("0x{pkey:04X}"),
                        "guids": [format!("{guid:016X}")],
                        "membership": if *limited { "limited" } else { "full" },
                    })),
                    Op::RemovePath { pkey, guid } => {
                        http.delete(format!("{base}/resources/pkeys/0x{pkey:x}/guids/{guid:016x}"))
                    }
                    Op::RemoveLegacy { pkey, guid } => http
                        .post(format!("{base}/actions/remove_guids_from_pkey"))
                        .json(&json!({"pkey": format!("0x{pkey:x}"), "guids": [format!("{guid:016x}")]})),
                };
                let r = req.basic_auth(USER, Some(PASS)).send().await.unwrap();
                assert_eq!(r.status(), 200, "{op:?}: {}", r.text().await.unwrap());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }

    let want = serial_model();
    assert!(want.len() > 8, "the scenario should leave many pkeys populated");
    let got: BTreeMap<u64, BTreeMap<u64, bool>> = ufm
        .snapshot()
        .into_iter()
        .filter(|(k, _)| *k != 0x7fff)
        .map(|(k, p)| {
            let members = p.members.iter().map(|(g, m)| (g.value(), m.membership == Membership::Limited)).collect();
            (u64::from(k), members)
        })
        .collect();
    assert_eq!(got, want);

    // The REST view agrees with the in-process one.
    let http = client_for(&ufm, None, Duration::from_secs(30));
    let listed: Value = http
        .get(format!("{}/ufmRest/resources/pkeys?guids_data=true", ufm.url()))
        .basic_auth(USER, Some(PASS))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rest_keys: BTreeSet<String> = listed.as_object().unwrap().keys().cloned().collect();
    let want_keys: BTreeSet<String> = want.keys().map(|k| format!("0x{k:x}")).chain(["0x7fff".to_string()]).collect();
    assert_eq!(rest_keys, want_keys);
    // Every operation plus the listing above reached the mock exactly once.
    let total: usize = ops_for(0).len() * CLIENTS as usize + 1;
    assert_eq!(ufm.requests().len(), total);
}
