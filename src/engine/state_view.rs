//! Read-only views of [`State`] for the adapters that report on it (`fabric-sync audit`). The
//! fields stay private to the engine: only its own methods (`apply`, `assign`, the `*_result`
//! handlers) change them, and those keep the invariants between the ledger, the pools and the
//! per-attachment indexes. Nothing here hands out a `&mut`.

use std::collections::{HashMap, HashSet};

use super::ledger::{Claim, Migration};
use super::model::{AttachmentId, PodUid, PodView};
use super::partitions::PartitionClaim;
use super::per_fabric::FabricState;
use super::ports::EventRecord;
use super::state::{Assignment, EngineConfig, NetworkDefs, Standing, State};
use crate::ib::Guid;
use crate::netdef::NetworkKey;

impl State {
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    pub fn networks(&self) -> &HashMap<NetworkKey, NetworkDefs> {
        &self.networks
    }

    pub fn pods(&self) -> &HashMap<PodUid, PodView> {
        &self.pods
    }

    /// The durable ledger (`GuidClaim`s) as last seen.
    pub fn claims(&self) -> &HashMap<PodUid, Claim> {
        &self.claims
    }

    /// The in-memory ledger: who holds each GUID.
    pub fn ledger(&self) -> &HashMap<Guid, Assignment> {
        &self.ledger
    }

    /// Attachments refused or waiting, with why.
    pub fn standing(&self) -> &HashMap<AttachmentId, Standing> {
        &self.standing
    }

    /// Attachments whose `configured` marker the ledger does not back.
    pub fn forged(&self) -> &HashSet<AttachmentId> {
        &self.forged
    }

    pub fn migration(&self) -> Option<&Migration> {
        self.migration.as_ref()
    }

    /// Per fabric: pool, UFM knowledge, pkey budgets (index = `FabricId`).
    pub fn fabrics(&self) -> &[FabricState] {
        &self.fabrics
    }

    /// The partition ledger (`PartitionClaim`s) by object name.
    pub fn partition_claims(&self) -> &HashMap<String, PartitionClaim> {
        &self.partition_claims
    }

    /// GUIDs whose UFM membership the next plan looks at.
    pub fn dirty_guids(&self) -> impl Iterator<Item = Guid> + '_ {
        self.dirty_guids.iter().copied()
    }

    /// The Events decided since the last call, for the caller to publish (or report).
    pub fn take_events(&mut self) -> Vec<EventRecord> {
        std::mem::take(&mut self.events)
    }
}
