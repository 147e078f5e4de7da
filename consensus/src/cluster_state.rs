//! [`ClusterState`]: the cluster metadata that Raft agrees on, and the
//! [`Command`]s that change it.
//!
//! Members with host ids, addresses, racks, tokens and states; the
//! replication factor; namespaces; and an epoch raised by every change.
//! Commands are applied in log order on every node, so `apply` is
//! deterministic: tokens and ids are decided *before* the command is
//! proposed (the proposer runs the token allocator) or by the state itself
//! (the next host id), never by the applying node's clock or randomness.
//!
//! Business rules are answered in the [`CommandResult`] (`Refused { .. }`),
//! never as storage errors: a refused command is still a committed log
//! entry, it just changes nothing. The rules that keep the ring whole:
//!
//! - host ids are assigned from the log, never reused: a removed id is
//!   banned for ever;
//! - a node of another cluster (wrong name) is refused;
//! - one topology change at a time: a join or a leave in progress refuses
//!   another one until it finishes (or is rolled back);
//! - a member leaves in two steps, never one: `StartLeave` (only while
//!   enough normal members remain) then `Remove` (only of a leaving one);
//! - a token belongs to one member.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::cluster_map::{ClusterMap, MapError, Member};
use crate::ring::HostId;

/// Where a member is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Registered, streaming the ranges it gains; not yet read from.
    Joining,
    /// Owns its tokens.
    Normal,
    /// Streaming its ranges away before it leaves.
    Leaving,
    /// Gone; its id is banned for ever.
    Left,
}

/// One member as the metadata records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// Its address.
    pub address: String,
    /// Its rack, if racks are configured.
    pub rack: Option<String>,
    /// Its tokens (empty once it left).
    pub tokens: Vec<u64>,
    /// Its state.
    pub state: MemberState,
}

/// A change to the metadata, proposed through Raft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Starts a new cluster with its first member (host id 1, normal).
    Bootstrap {
        /// The cluster's name (nodes of other clusters are refused).
        cluster_name: String,
        /// Copies of each key.
        replication_factor: usize,
        /// The first member's address.
        address: String,
        /// Its rack.
        rack: Option<String>,
        /// Its tokens.
        tokens: Vec<u64>,
    },
    /// Registers a joining node: it gets the next host id and `tokens`.
    Join {
        /// Must equal the cluster's name.
        cluster_name: String,
        /// The joining node's address.
        address: String,
        /// Its rack.
        rack: Option<String>,
        /// Its tokens (from the allocator, run by the proposer).
        tokens: Vec<u64>,
    },
    /// A joining node has streamed its ranges: it becomes normal.
    FinishJoin {
        /// The node.
        host: u64,
    },
    /// A normal node starts streaming its ranges away.
    StartLeave {
        /// The node.
        host: u64,
    },
    /// Rolls a join or a leave in progress back (e.g. its node died).
    Abort {
        /// The node.
        host: u64,
    },
    /// A leaving node is done, or a dead node is removed: it is gone.
    Remove {
        /// The node.
        host: u64,
    },
    /// Creates a namespace.
    CreateNamespace {
        /// `[a-z0-9_]{1,64}`.
        name: String,
        /// Resolutions and retention, e.g. `minute:7d, hour:90d, total`.
        spec: String,
    },
    /// Changes an existing namespace's definition (the proposer checked
    /// that the change keeps every resolution it had).
    AlterNamespace {
        /// The namespace.
        name: String,
        /// Its new spec.
        spec: String,
    },
}

/// What applying a command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    /// Applied; the metadata is now at `epoch`.
    Applied {
        /// The new epoch.
        epoch: u64,
        /// The host id a `Bootstrap` or `Join` assigned.
        host_id: Option<u64>,
    },
    /// Refused by a business rule; nothing changed.
    Refused {
        /// Why, for people.
        reason: String,
    },
}

/// The metadata every node holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// The cluster's name (`None` before bootstrap).
    pub cluster_name: Option<String>,
    /// Copies of each key.
    pub replication_factor: usize,
    /// Raised by every applied command.
    pub epoch: u64,
    /// The next host id to assign.
    pub next_host_id: u64,
    /// Every member ever, by host id (left ones stay, with no tokens).
    pub members: BTreeMap<u64, MemberRecord>,
    /// Ids that may never be used again.
    pub banned: BTreeSet<u64>,
    /// Namespaces: name -> spec.
    pub namespaces: BTreeMap<String, String>,
}

fn refused(reason: impl Into<String>) -> CommandResult {
    CommandResult::Refused {
        reason: reason.into(),
    }
}

fn valid_namespace(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl ClusterState {
    /// The member whose join or leave is in progress, if any.
    pub fn change_in_progress(&self) -> Option<(u64, MemberState)> {
        self.members
            .iter()
            .find(|(_, m)| matches!(m.state, MemberState::Joining | MemberState::Leaving))
            .map(|(id, m)| (*id, m.state))
    }

    fn check_tokens(&self, tokens: &[u64]) -> Result<(), String> {
        if tokens.is_empty() {
            return Err("a member needs at least one token".into());
        }
        let mut seen = BTreeSet::new();
        let taken: BTreeSet<u64> = self
            .members
            .values()
            .flat_map(|m| m.tokens.iter().copied())
            .collect();
        for t in tokens {
            if !seen.insert(*t) || taken.contains(t) {
                return Err(format!("token {t} is already owned"));
            }
        }
        Ok(())
    }

    fn bump(&mut self, host_id: Option<u64>) -> CommandResult {
        self.epoch += 1;
        CommandResult::Applied {
            epoch: self.epoch,
            host_id,
        }
    }

    /// Applies `command`; a refusal changes nothing.
    pub fn apply(&mut self, command: &Command) -> CommandResult {
        match command {
            Command::Bootstrap {
                cluster_name,
                replication_factor,
                address,
                rack,
                tokens,
            } => {
                if let Some(name) = &self.cluster_name {
                    return refused(format!("the cluster {name:?} is already bootstrapped"));
                }
                if *replication_factor == 0 {
                    return refused("the replication factor must be at least 1");
                }
                if let Err(e) = self.check_tokens(tokens) {
                    return refused(e);
                }
                self.cluster_name = Some(cluster_name.clone());
                self.replication_factor = *replication_factor;
                self.next_host_id = 2;
                self.members.insert(
                    1,
                    MemberRecord {
                        address: address.clone(),
                        rack: rack.clone(),
                        tokens: tokens.clone(),
                        state: MemberState::Normal,
                    },
                );
                self.bump(Some(1))
            }
            Command::Join {
                cluster_name,
                address,
                rack,
                tokens,
            } => {
                match &self.cluster_name {
                    None => return refused("the cluster is not bootstrapped"),
                    Some(name) if name != cluster_name => {
                        return refused(format!("this is cluster {name:?}, not {cluster_name:?}"))
                    }
                    Some(_) => {}
                }
                if let Some((host, state)) = self.change_in_progress() {
                    return refused(format!(
                        "host {host} is {state:?}: one topology change at a time"
                    ));
                }
                if self
                    .members
                    .values()
                    .any(|m| m.state != MemberState::Left && m.address == *address)
                {
                    return refused(format!("{address} is already a member"));
                }
                if let Err(e) = self.check_tokens(tokens) {
                    return refused(e);
                }
                let host_id = self.next_host_id.max(1);
                self.next_host_id = host_id + 1;
                self.members.insert(
                    host_id,
                    MemberRecord {
                        address: address.clone(),
                        rack: rack.clone(),
                        tokens: tokens.clone(),
                        state: MemberState::Joining,
                    },
                );
                self.bump(Some(host_id))
            }
            Command::FinishJoin { host } => match self.members.get_mut(host) {
                Some(m) if m.state == MemberState::Joining => {
                    m.state = MemberState::Normal;
                    self.bump(None)
                }
                Some(m) => refused(format!("host {host} is {:?}, not joining", m.state)),
                None => refused(format!("host {host} is not a member")),
            },
            Command::StartLeave { host } => {
                if let Some((other, state)) = self.change_in_progress() {
                    return refused(format!(
                        "host {other} is {state:?}: one topology change at a time"
                    ));
                }
                let normal = self
                    .members
                    .values()
                    .filter(|m| m.state == MemberState::Normal)
                    .count();
                if normal <= self.replication_factor {
                    return refused(format!(
                        "{normal} normal members cannot keep {} replicas with one fewer",
                        self.replication_factor
                    ));
                }
                match self.members.get_mut(host) {
                    Some(m) if m.state == MemberState::Normal => {
                        m.state = MemberState::Leaving;
                        self.bump(None)
                    }
                    Some(m) => refused(format!("host {host} is {:?}, not normal", m.state)),
                    None => refused(format!("host {host} is not a member")),
                }
            }
            Command::Abort { host } => match self.members.get(host).map(|m| m.state) {
                Some(MemberState::Joining) => {
                    // A join that never finished: the node never served
                    // reads, so it leaves no data behind; its id is spent.
                    if let Some(m) = self.members.get_mut(host) {
                        m.state = MemberState::Left;
                        m.tokens.clear();
                    }
                    self.banned.insert(*host);
                    self.bump(None)
                }
                Some(MemberState::Leaving) => {
                    if let Some(m) = self.members.get_mut(host) {
                        m.state = MemberState::Normal;
                    }
                    self.bump(None)
                }
                Some(state) => refused(format!("host {host} is {state:?}: nothing to abort")),
                None => refused(format!("host {host} is not a member")),
            },
            // Only a leave ends in a removal: `StartLeave` checked the
            // one-change-at-a-time and enough-members rules and made the
            // next owners pending replicas, and the leader streams their
            // ranges before it proposes this. A normal or joining member is
            // never removed in one step, whoever asks.
            Command::Remove { host } => match self.members.get_mut(host) {
                Some(m) if m.state == MemberState::Leaving => {
                    m.state = MemberState::Left;
                    m.tokens.clear();
                    self.banned.insert(*host);
                    self.bump(None)
                }
                Some(m) if m.state == MemberState::Left => {
                    refused(format!("host {host} already left"))
                }
                Some(m) => refused(format!(
                    "host {host} is {:?}: only a leaving member is removed (decommission it, or removenode it once it is down)",
                    m.state
                )),
                None => refused(format!("host {host} is not a member")),
            },
            Command::CreateNamespace { name, spec } => {
                if !valid_namespace(name) {
                    return refused(format!(
                        "namespace name {name:?} must match [a-z0-9_]{{1,64}}"
                    ));
                }
                if self.namespaces.contains_key(name) {
                    return refused(format!("namespace {name:?} exists"));
                }
                self.namespaces.insert(name.clone(), spec.clone());
                self.bump(None)
            }
            Command::AlterNamespace { name, spec } => match self.namespaces.get_mut(name) {
                Some(current) => {
                    *current = spec.clone();
                    self.bump(None)
                }
                None => refused(format!("namespace {name:?} does not exist")),
            },
        }
    }

    /// Tokens for the next member to join: the replication-aware
    /// allocator over the members that own tokens (run by the proposer,
    /// so that applying the join stays deterministic).
    pub fn allocate_tokens(
        &self,
        vnodes: usize,
        rack: Option<&str>,
        rng: &mut impl rand::Rng,
    ) -> Vec<u64> {
        let host = HostId(self.next_host_id.max(1));
        let present = || {
            self.members
                .iter()
                .filter(|(_, m)| m.state != MemberState::Left)
        };
        let ring = crate::ring::Ring::new(present().map(|(id, m)| (HostId(*id), m.tokens.clone())));
        let racks: Vec<(HostId, Option<String>)> = present()
            .map(|(id, m)| (HostId(*id), m.rack.clone()))
            .chain([(host, rack.map(str::to_owned))])
            .collect();
        crate::token_allocator::replication_aware(
            &ring,
            &racks,
            host,
            vnodes.max(1),
            self.replication_factor.max(1),
            rng,
        )
    }

    /// The metadata group's voters for the members now: 1 below 3 members
    /// (two voters would be less available than one), 3 below 5, else 5;
    /// members that are not leaving or gone, spread over racks (the rack
    /// with the fewest voters gets the next one), keeping `current` voters
    /// where they qualify so that membership changes stay few.
    pub fn choose_voters(&self, current: &BTreeSet<u64>) -> BTreeSet<u64> {
        let candidates: Vec<(u64, Option<&String>)> = self
            .members
            .iter()
            .filter(|(_, m)| matches!(m.state, MemberState::Normal | MemberState::Joining))
            .map(|(id, m)| (*id, m.rack.as_ref()))
            .collect();
        let want = match candidates.len() {
            0..=2 => 1,
            3..=4 => 3,
            _ => 5,
        }
        .min(candidates.len());
        let mut chosen: BTreeSet<u64> = BTreeSet::new();
        let mut per_rack: BTreeMap<Option<&String>, usize> = BTreeMap::new();
        for (_, rack) in &candidates {
            per_rack.entry(*rack).or_insert(0);
        }
        let racks = per_rack.len();
        for (id, rack) in &candidates {
            // Keep a current voter unless its rack already has more than
            // its share.
            let share = want.div_ceil(racks);
            if current.contains(id) && chosen.len() < want && per_rack[rack] < share {
                chosen.insert(*id);
                *per_rack.entry(*rack).or_insert(0) += 1;
            }
        }
        while chosen.len() < want {
            let next = candidates
                .iter()
                .filter(|(id, _)| !chosen.contains(id))
                .min_by_key(|(id, rack)| (per_rack[rack], *id));
            let Some((id, rack)) = next else { break };
            chosen.insert(*id);
            *per_rack.entry(*rack).or_insert(0) += 1;
        }
        chosen
    }

    /// The data path's view: members that own tokens now (normal and
    /// leaving) with their ranges; while a join or a leave is in progress,
    /// the ring after it (normal and joining) gives the pending replicas
    /// writes also go to. Before bootstrap: the empty map.
    pub fn cluster_map(&self) -> Result<ClusterMap, MapError> {
        let select = |states: &[MemberState]| -> Vec<Member> {
            self.members
                .iter()
                .filter(|(_, m)| states.contains(&m.state))
                .map(|(id, m)| Member {
                    host_id: HostId(*id),
                    address: m.address.clone(),
                    tokens: m.tokens.clone(),
                    rack: m.rack.clone(),
                })
                .collect()
        };
        let now = select(&[MemberState::Normal, MemberState::Leaving]);
        if now.is_empty() {
            return Ok(ClusterMap::empty());
        }
        let map = ClusterMap::new(self.epoch, self.replication_factor, now)?;
        Ok(match self.change_in_progress() {
            Some(_) => map.with_next(select(&[MemberState::Normal, MemberState::Joining])),
            None => map,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bootstrap() -> Command {
        bootstrap_rf(1)
    }

    fn bootstrap_rf(replication_factor: usize) -> Command {
        Command::Bootstrap {
            cluster_name: "c".into(),
            replication_factor,
            address: "a1".into(),
            rack: None,
            tokens: vec![10],
        }
    }

    fn join(address: &str, token: u64) -> Command {
        Command::Join {
            cluster_name: "c".into(),
            address: address.into(),
            rack: None,
            tokens: vec![token],
        }
    }

    fn host_of(r: &CommandResult) -> u64 {
        match r {
            CommandResult::Applied {
                host_id: Some(h), ..
            } => *h,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn joins_get_fresh_ids_one_at_a_time() {
        let mut s = ClusterState::default();
        assert_eq!(host_of(&s.apply(&bootstrap())), 1);
        assert_eq!(host_of(&s.apply(&join("a2", 20))), 2);
        assert!(
            matches!(s.apply(&join("a3", 30)), CommandResult::Refused { .. }),
            "serialized"
        );
        s.apply(&Command::FinishJoin { host: 2 });
        assert_eq!(host_of(&s.apply(&join("a3", 30))), 3);
        let epoch = s.epoch;
        assert!(
            matches!(s.apply(&join("a4", 20)), CommandResult::Refused { .. }),
            "token taken"
        );
        assert_eq!(s.epoch, epoch, "a refusal changes nothing");
    }

    #[test]
    fn a_wrong_cluster_and_a_reused_address_are_refused() {
        let mut s = ClusterState::default();
        s.apply(&bootstrap());
        let wrong = Command::Join {
            cluster_name: "other".into(),
            address: "a2".into(),
            rack: None,
            tokens: vec![20],
        };
        assert!(matches!(s.apply(&wrong), CommandResult::Refused { .. }));
        assert!(matches!(
            s.apply(&join("a1", 20)),
            CommandResult::Refused { .. }
        ));
        assert!(matches!(
            s.apply(&bootstrap()),
            CommandResult::Refused { .. }
        ));
    }

    #[test]
    fn voters_are_one_three_or_five_spread_over_racks_and_stable() {
        let mut s = ClusterState::default();
        s.apply(&bootstrap());
        assert_eq!(s.choose_voters(&BTreeSet::new()), BTreeSet::from([1]));
        for (i, rack) in ["a", "a", "b", "b", "c", "c"].iter().enumerate() {
            let address = format!("n{i}");
            let r = s.apply(&Command::Join {
                cluster_name: "c".into(),
                address,
                rack: Some((*rack).into()),
                tokens: vec![100 + i as u64],
            });
            let host = host_of(&r);
            s.apply(&Command::FinishJoin { host });
        }
        // Host 1 has no rack; 2,3 in a; 4,5 in b; 6,7 in c.
        let voters = s.choose_voters(&BTreeSet::from([1]));
        assert_eq!(voters.len(), 5);
        let racks: BTreeSet<Option<String>> =
            voters.iter().map(|v| s.members[v].rack.clone()).collect();
        assert_eq!(racks.len(), 4, "every rack has a voter: {voters:?}");
        assert!(voters.contains(&1), "a current voter is kept");
        assert_eq!(s.choose_voters(&voters), voters, "stable");
        s.apply(&Command::StartLeave { host: 1 });
        let after = s.choose_voters(&voters);
        assert!(!after.contains(&1), "a leaving member stops voting");
        assert_eq!(after.len(), 5);
    }

    #[test]
    fn a_removed_id_is_never_reused_and_an_aborted_join_leaves_nothing() {
        let mut s = ClusterState::default();
        s.apply(&bootstrap());
        let two = host_of(&s.apply(&join("a2", 20)));
        s.apply(&Command::Abort { host: two });
        assert_eq!(s.members[&two].state, MemberState::Left);
        assert!(s.banned.contains(&two));
        let three = host_of(&s.apply(&join("a2", 20)));
        assert_eq!(three, 3, "the address may come back, the id may not");
        s.apply(&Command::FinishJoin { host: three });
        s.apply(&Command::StartLeave { host: three });
        s.apply(&Command::Remove { host: three });
        assert!(s.cluster_map().unwrap().member(HostId(3)).is_none());
        assert_eq!(host_of(&s.apply(&join("a5", 50))), 4);
    }

    #[test]
    fn only_a_leaving_member_is_removed() {
        let mut s = ClusterState::default();
        s.apply(&bootstrap_rf(2));
        for (a, t) in [("a2", 20), ("a3", 30), ("a4", 40)] {
            let h = host_of(&s.apply(&join(a, t)));
            s.apply(&Command::FinishJoin { host: h });
        }
        let before = s.clone();
        for host in 1..=4 {
            assert!(
                matches!(
                    s.apply(&Command::Remove { host }),
                    CommandResult::Refused { .. }
                ),
                "a normal member removed in one step"
            );
        }
        assert_eq!(s, before, "refusals change nothing");
        let five = host_of(&s.apply(&join("a5", 50)));
        assert!(matches!(
            s.apply(&Command::Remove { host: five }),
            CommandResult::Refused { .. }
        ));
        s.apply(&Command::Abort { host: five });
        assert!(matches!(
            s.apply(&Command::StartLeave { host: 2 }),
            CommandResult::Applied { .. }
        ));
        assert!(
            matches!(
                s.apply(&Command::StartLeave { host: 3 }),
                CommandResult::Refused { .. }
            ),
            "one leave at a time"
        );
        assert!(matches!(
            s.apply(&Command::Remove { host: 2 }),
            CommandResult::Applied { .. }
        ));
        assert!(matches!(
            s.apply(&Command::StartLeave { host: 3 }),
            CommandResult::Applied { .. }
        ));
        assert!(matches!(
            s.apply(&Command::Remove { host: 3 }),
            CommandResult::Applied { .. }
        ));
        assert!(
            matches!(
                s.apply(&Command::StartLeave { host: 4 }),
                CommandResult::Refused { .. }
            ),
            "two normal members keep RF 2: no further leave"
        );
        assert_eq!(
            s.members
                .values()
                .filter(|m| m.state == MemberState::Normal)
                .count(),
            2
        );
    }

    #[test]
    fn only_an_existing_namespace_is_altered() {
        let mut s = ClusterState::default();
        s.apply(&bootstrap());
        let alter = Command::AlterNamespace {
            name: "views".into(),
            spec: "hour:60d, total".into(),
        };
        let before = s.clone();
        assert!(matches!(s.apply(&alter), CommandResult::Refused { .. }));
        assert_eq!(s, before);
        s.apply(&Command::CreateNamespace {
            name: "views".into(),
            spec: "hour:30d, total".into(),
        });
        assert!(matches!(s.apply(&alter), CommandResult::Applied { .. }));
        assert_eq!(s.namespaces["views"], "hour:60d, total");
    }

    proptest! {
        #[test]
        fn epochs_rise_ids_stay_unique_and_the_map_stays_whole(
            ops in proptest::collection::vec((0u8..6, 0u64..6, 0u64..1000), 1..60)
        ) {
            let mut s = ClusterState::default();
            s.apply(&bootstrap());
            let mut assigned = BTreeSet::new();
            assigned.insert(1);
            for (kind, host, token) in ops {
                let before = s.clone();
                let command = match kind {
                    0 => join(&format!("a{token}"), token + 100),
                    1 => Command::FinishJoin { host },
                    2 => Command::StartLeave { host },
                    3 => Command::Abort { host },
                    4 => Command::Remove { host },
                    _ => Command::CreateNamespace { name: format!("n{token}"), spec: "total".into() },
                };
                match s.apply(&command) {
                    CommandResult::Applied { epoch, host_id } => {
                        prop_assert_eq!(epoch, before.epoch + 1);
                        if let Some(h) = host_id {
                            prop_assert!(assigned.insert(h), "host id {} reused", h);
                            prop_assert!(!before.banned.contains(&h));
                        }
                    }
                    CommandResult::Refused { .. } => prop_assert_eq!(&s, &before),
                }
                prop_assert!(s.change_in_progress().is_none() || s.members.values().filter(|m| matches!(m.state, MemberState::Joining | MemberState::Leaving)).count() == 1);
                if s.members.values().any(|m| m.state == MemberState::Normal) {
                    prop_assert!(s.cluster_map().is_ok(), "{:?}", s.cluster_map().err());
                }
            }
        }
    }
}
