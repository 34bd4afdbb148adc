//! Fabric readiness: UFM accepting a GUID into a pkey (the controller then writes the attachment
//! `configured`) is not the end; the subnet manager still has to put the pkey into the port's
//! pkey table. The agent watches that table (`class/infiniband/<dev>/ports/<n>/pkeys/*`, the VF's
//! own RDMA device when the host has one, else its PF's port) until the pod's pkey appears, or a
//! timeout. Time comes in as a value (the agent's injectable clock), so tests drive it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::sysfs::{Sysfs, SysfsError};
use crate::ib::PKey;

/// The full-membership bit of a pkey-table entry (0x8005 is pkey 0x0005, full member).
pub const FULL_MEMBER_BIT: u16 = 0x8000;

/// How often a waiting table is read again, and when waiting becomes a timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadinessSettings {
    pub poll: Duration,
    pub timeout: Duration,
}

impl Default for ReadinessSettings {
    fn default() -> Self {
        ReadinessSettings { poll: Duration::from_secs(1), timeout: Duration::from_secs(300) }
    }
}

/// Whose pkey table shows the attachment's pkey.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TableRef {
    /// RDMA device (`mlx5_4`).
    pub device: String,
    pub port: u32,
    /// `true`: the VF's own device; `false`: its PF's port (VFIO: the VF has no host device;
    /// the PF's table holds the union of its VFs' pkeys).
    pub vf: bool,
}

impl TableRef {
    pub fn describe(&self) -> String {
        format!(
            "{} port {} ({})",
            self.device,
            self.port,
            if self.vf { "the VF's own table" } else { "the PF's table" }
        )
    }
}

/// Where one attachment stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadyState {
    Waiting,
    /// The pkey appeared `after` the agent saw the attachment configured; `entry` as the table
    /// holds it (with the membership bit).
    Ready {
        after: Duration,
        index: u32,
        entry: u16,
    },
    /// Not there `after` the timeout; still looked for.
    TimedOut {
        after: Duration,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watch {
    pub pkey: PKey,
    pub table: Result<TableRef, String>,
    pub since: Instant,
    pub state: ReadyState,
    /// The last read of the table failed with this.
    pub read_error: Option<String>,
}

/// A watch that changed state in a poll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub key: (String, String),
    pub state: ReadyState,
}

/// Key: (pod UID, attachment label).
pub type AttachmentKey = (String, String);

#[derive(Clone, Debug, Default)]
pub struct Readiness {
    pub settings: ReadinessSettings,
    watches: BTreeMap<AttachmentKey, Watch>,
}

impl Readiness {
    pub fn new(settings: ReadinessSettings) -> Readiness {
        Readiness { settings, watches: BTreeMap::new() }
    }

    /// Starts watching (unless already watched for the same pkey); a new table location
    /// (the VF moved after a rebind) is taken over without restarting the clock.
    pub fn track(&mut self, key: AttachmentKey, pkey: PKey, table: Result<TableRef, String>, now: Instant) {
        match self.watches.get_mut(&key) {
            Some(w) if w.pkey == pkey => w.table = table,
            _ => {
                self.watches
                    .insert(key, Watch { pkey, table, since: now, state: ReadyState::Waiting, read_error: None });
            }
        }
    }

    /// Forgets attachments that are gone (or not configured any more).
    pub fn retain(&mut self, live: &BTreeSet<AttachmentKey>) {
        self.watches.retain(|k, _| live.contains(k));
    }

    pub fn get(&self, key: &AttachmentKey) -> Option<&Watch> {
        self.watches.get(key)
    }

    /// Attachments whose pkey has not appeared yet and are not timed out.
    pub fn waiting(&self) -> usize {
        self.watches.values().filter(|w| w.state == ReadyState::Waiting).count()
    }

    /// Reads the table of every watch not ready yet; returns the watches that became ready or
    /// timed out.
    pub fn poll(&mut self, sys: &Sysfs, now: Instant) -> Vec<Transition> {
        let mut out = Vec::new();
        for (key, w) in self.watches.iter_mut() {
            if matches!(w.state, ReadyState::Ready { .. }) {
                continue;
            }
            let after = now.saturating_duration_since(w.since);
            let found = match &w.table {
                Ok(t) => match find_pkey(sys, t, w.pkey) {
                    Ok(f) => {
                        w.read_error = None;
                        f
                    }
                    Err(e) => {
                        w.read_error = Some(e.to_string());
                        None
                    }
                },
                Err(_) => None,
            };
            let next = match (found, &w.state) {
                (Some((index, entry)), _) => ReadyState::Ready { after, index, entry },
                (None, ReadyState::Waiting) if after >= self.settings.timeout => ReadyState::TimedOut { after },
                (None, s) => s.clone(),
            };
            if next != w.state {
                w.state = next.clone();
                out.push(Transition { key: key.clone(), state: next });
            }
        }
        out
    }
}

/// The first entry of `table` holding `pkey` (either membership), as (index, raw entry).
pub fn find_pkey(sys: &Sysfs, table: &TableRef, pkey: PKey) -> Result<Option<(u32, u16)>, SysfsError> {
    let dir = format!("class/infiniband/{}/ports/{}/pkeys", table.device, table.port);
    let mut indexes: Vec<u32> = sys.list(&dir)?.iter().filter_map(|n| n.parse().ok()).collect();
    indexes.sort_unstable();
    for i in indexes {
        let Some(text) = sys.read_optional(&format!("{dir}/{i}"))? else { continue };
        let Some(raw) = text.strip_prefix("0x").and_then(|h| u16::from_str_radix(h, 16).ok()) else { continue };
        if raw != 0 && raw & !FULL_MEMBER_BIT == pkey.value() {
            return Ok(Some((i, raw)));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(dir: &std::path::Path, entries: &[(u32, &str)]) -> Sysfs {
        let base = dir.join("class/infiniband/mlx5_4/ports/1/pkeys");
        std::fs::create_dir_all(&base).unwrap();
        for i in 0..8u32 {
            let v = entries.iter().find(|(x, _)| *x == i).map_or("0x0000", |(_, v)| v);
            std::fs::write(base.join(i.to_string()), format!("{v}\n")).unwrap();
        }
        Sysfs::new(dir.to_path_buf())
    }

    #[test]
    fn either_membership_of_the_pkey_counts_and_zero_never_does() {
        let dir = tempfile::tempdir().unwrap();
        let sys = table(dir.path(), &[(0, "0xffff"), (3, "0x9000")]);
        let t = TableRef { device: "mlx5_4".into(), port: 1, vf: true };
        assert_eq!(find_pkey(&sys, &t, PKey::new(0x1000).unwrap()), Ok(Some((3, 0x9000))));
        assert_eq!(find_pkey(&sys, &t, PKey::new(0x7fff).unwrap()), Ok(Some((0, 0xffff))));
        assert_eq!(find_pkey(&sys, &t, PKey::new(0x1001).unwrap()), Ok(None));
        let sys = table(dir.path(), &[(5, "0x1001")]);
        assert_eq!(find_pkey(&sys, &t, PKey::new(0x1001).unwrap()), Ok(Some((5, 0x1001))), "limited member");
    }

    #[test]
    fn a_watch_times_out_once_and_still_becomes_ready_later() {
        let dir = tempfile::tempdir().unwrap();
        let sys = table(dir.path(), &[(0, "0xffff")]);
        let t = TableRef { device: "mlx5_4".into(), port: 1, vf: true };
        let mut r =
            Readiness::new(ReadinessSettings { poll: Duration::from_secs(1), timeout: Duration::from_secs(10) });
        let key = ("uid".to_string(), "t/ib".to_string());
        let t0 = Instant::now();
        r.track(key.clone(), PKey::new(0x1000).unwrap(), Ok(t), t0);
        assert!(r.poll(&sys, t0 + Duration::from_secs(9)).is_empty());
        let timed_out = r.poll(&sys, t0 + Duration::from_secs(10));
        assert_eq!(timed_out[0].state, ReadyState::TimedOut { after: Duration::from_secs(10) });
        assert!(r.poll(&sys, t0 + Duration::from_secs(11)).is_empty(), "reported once");
        // The pkey shows up in the table (the files are rewritten; the handle is not needed).
        table(dir.path(), &[(0, "0xffff"), (1, "0x9000")]);
        let ready = r.poll(&sys, t0 + Duration::from_secs(12));
        assert_eq!(ready[0].state, ReadyState::Ready { after: Duration::from_secs(12), index: 1, entry: 0x9000 });
        assert_eq!(r.waiting(), 0);
    }
}
