//! What each RPC does. Checks run in this order: names, keygroup, role, replica, keygroup kind.
//! Errors are plain messages (the service sends them as status Unknown, as FReD does).

use std::collections::BTreeMap;

use fred_proto::*;

use crate::clock::{Clock, Entry, clock_from_wire, clock_to_wire};
use crate::cluster::{Cluster, Items, Keygroup, State, copy_items};
use crate::relay::Relay;
use crate::trigger::Call;

type Res<T> = Result<T, String>;

const ALL_ROLES: [UserRole; 5] = [
    UserRole::ReadKeygroup,
    UserRole::WriteKeygroup,
    UserRole::ConfigureReplica,
    UserRole::ConfigureTrigger,
    UserRole::ConfigureKeygroups,
];

fn check_name(what: &str, name: &str) -> Res<()> {
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(format!(
            "invalid {what} {name:?}: must match ^[a-zA-Z0-9]+$"
        ))
    }
}

fn check_value(kg: &str, id: &str, val: &str) -> Res<()> {
    if val.is_empty() {
        return Err(format!(
            "empty value for item {id} in keygroup {kg}: values must not be empty"
        ));
    }
    Ok(())
}

/// The keygroup, if `user` holds `role` on it.
fn authorize<'a>(st: &'a State, kg: &str, user: &str, role: UserRole) -> Res<&'a Keygroup> {
    let Some(k) = st.keygroups.get(kg) else {
        return Err(format!(
            "keygroup {kg} does not exist: cannot get replica for keygroup {kg}"
        ));
    };
    if !k.roles.get(user).is_some_and(|r| r.contains(&role)) {
        return Err(format!(
            "permission denied: user {user} does not have role {} for keygroup {kg}",
            role.as_str_name()
        ));
    }
    Ok(k)
}

/// Authorises and checks that the called node is a replica; returns whether the keygroup is
/// mutable.
fn data_access(st: &State, node: &str, kg: &str, user: &str, role: UserRole) -> Res<bool> {
    check_name("keygroup name", kg)?;
    let k = authorize(st, kg, user, role)?;
    if !k.replicas.contains_key(node) {
        return Err(format!(
            "node {node} is not a replica of keygroup {kg}: cannot get replica for keygroup {kg}"
        ));
    }
    Ok(k.mutable)
}

fn items<'a>(st: &'a State, node: &str, kg: &str) -> &'a Items {
    static EMPTY: Items = BTreeMap::new();
    st.nodes[node].data.get(kg).unwrap_or(&EMPTY)
}

fn not_found(kg: &str, id: &str) -> String {
    format!("item {id} not found in keygroup {kg}")
}

fn wrong_kind(kg: &str, op: &str, mutable: bool) -> String {
    if mutable {
        format!("keygroup {kg} is mutable: use Update, {op} works on immutable keygroups only")
    } else {
        format!("keygroup {kg} is immutable: use Append, {op} works on mutable keygroups only")
    }
}

fn item(id: &str, val: &str, clock: &Clock) -> Item {
    Item {
        id: id.to_string(),
        val: val.to_string(),
        version: Some(clock_to_wire(clock)),
    }
}

/// FReD's whole answer to a refused write; the reason is only in its log.
const REFUSED: &str = "error updating item";

/// Every stored version (tombstones included, val "") from `start` on, as FReD's badger store
/// iterates them: keys `keygroup|id|clock`, so ids sort as `id|` bytes and an id comes after
/// the longer ids it is a prefix of; `count` counts versions. `start` must be stored.
fn range<'a>(items: &'a Items, start: &str, count: u64) -> Option<Vec<(&'a String, Item)>> {
    if !items.get(start).is_some_and(Entry::exists) {
        return None;
    }
    let key = |id: &str| [id.as_bytes(), b"|"].concat();
    let from = key(start);
    let mut ids: Vec<(&String, &Entry)> = items
        .iter()
        .filter(|(id, e)| e.exists() && key(id) >= from)
        .collect();
    ids.sort_by_cached_key(|(id, _)| key(id));
    let versions = ids.into_iter().flat_map(|(id, e)| {
        e.siblings()
            .iter()
            .map(move |v| (id, item(id, v.val.as_deref().unwrap_or_default(), &v.clock)))
    });
    Some(
        versions
            .take(usize::try_from(count).unwrap_or(usize::MAX))
            .collect(),
    )
}

/// FReD checks `count` before the start id.
fn check_count(count: u64) -> Res<()> {
    if count == 0 {
        return Err("count must be at least 1, got 0".to_string());
    }
    Ok(())
}

impl Cluster {
    pub(crate) fn create_keygroup(
        &self,
        node: &str,
        user: &str,
        r: CreateKeygroupRequest,
    ) -> Res<Empty> {
        check_name("keygroup name", &r.keygroup)?;
        let mut st = self.state();
        if st.keygroups.contains_key(&r.keygroup) {
            return Err(format!("keygroup {} already exists", r.keygroup));
        }
        let keygroup = Keygroup {
            mutable: r.mutable,
            replicas: [(node.to_string(), r.expiry)].into(),
            roles: [(user.to_string(), ALL_ROLES.into())].into(),
        };
        st.keygroups.insert(r.keygroup.clone(), keygroup);
        st.nodes
            .get_mut(node)
            .expect("known node")
            .data
            .insert(r.keygroup, BTreeMap::new());
        Ok(Empty {})
    }

    pub(crate) fn delete_keygroup(
        &self,
        _node: &str,
        user: &str,
        r: DeleteKeygroupRequest,
    ) -> Res<Empty> {
        check_name("keygroup name", &r.keygroup)?;
        let mut st = self.state();
        authorize(&st, &r.keygroup, user, UserRole::ConfigureKeygroups)?;
        st.keygroups.remove(&r.keygroup);
        for n in st.nodes.values_mut() {
            n.data.remove(&r.keygroup);
            n.triggers.remove(&r.keygroup);
        }
        Ok(Empty {})
    }

    pub(crate) fn read(&self, node: &str, user: &str, r: ReadRequest) -> Res<ReadResponse> {
        check_name("item id", &r.id)?;
        let st = self.state();
        data_access(&st, node, &r.keygroup, user, UserRole::ReadKeygroup)?;
        let entry = items(&st, node, &r.keygroup).get(&r.id);
        let data: Vec<Item> = match entry {
            None => Vec::new(),
            Some(e) if r.versions.is_empty() => e
                .live()
                .map(|v| item(&r.id, v.val.as_deref().unwrap_or_default(), &v.clock))
                .collect(),
            Some(e) => {
                let given: Vec<Clock> = r
                    .versions
                    .iter()
                    .map(|w| clock_from_wire(&w.version))
                    .collect();
                e.covered_by_any(&given)
                    .filter_map(|v| Some(item(&r.id, v.val.as_deref()?, &v.clock)))
                    .collect()
            }
        };
        if data.is_empty() {
            return Err(not_found(&r.keygroup, &r.id));
        }
        Ok(ReadResponse { data })
    }

    pub(crate) fn scan(&self, node: &str, user: &str, r: ScanRequest) -> Res<ScanResponse> {
        check_name("item id", &r.id)?;
        let st = self.state();
        data_access(&st, node, &r.keygroup, user, UserRole::ReadKeygroup)?;
        check_count(r.count)?;
        let data = range(items(&st, node, &r.keygroup), &r.id, r.count).ok_or_else(|| {
            format!(
                "error scanning {} items starting at {} from keygroup {}",
                r.count, r.id, r.keygroup
            )
        })?;
        Ok(ScanResponse {
            data: data.into_iter().map(|(_, i)| i).collect(),
        })
    }

    pub(crate) fn keys(&self, node: &str, user: &str, r: KeysRequest) -> Res<KeysResponse> {
        check_name("item id", &r.id)?;
        let st = self.state();
        data_access(&st, node, &r.keygroup, user, UserRole::ReadKeygroup)?;
        check_count(r.count)?;
        let data = range(items(&st, node, &r.keygroup), &r.id, r.count).ok_or_else(|| {
            let (n, id, kg) = (r.count, &r.id, &r.keygroup);
            format!("error scanning keys for {n} items starting at {id} from keygroup {kg}")
        })?;
        let keys = data
            .into_iter()
            .map(|(id, i)| Key {
                id: id.clone(),
                version: i.version,
            })
            .collect();
        Ok(KeysResponse { keys })
    }

    pub(crate) fn update(
        &self,
        node: &str,
        user: &str,
        r: UpdateRequest,
    ) -> Res<(UpdateResponse, Relay)> {
        check_name("item id", &r.id)?;
        check_value(&r.keygroup, &r.id, &r.data)?;
        let (clock, relay) = self.write(
            node,
            user,
            &r.keygroup,
            &r.id,
            Some(r.data),
            &r.versions,
            "Update",
        )?;
        let version = Some(clock_to_wire(&clock));
        Ok((UpdateResponse { version }, relay))
    }

    pub(crate) fn delete(
        &self,
        node: &str,
        user: &str,
        r: DeleteRequest,
    ) -> Res<(DeleteResponse, Relay)> {
        check_name("item id", &r.id)?;
        let (clock, relay) =
            self.write(node, user, &r.keygroup, &r.id, None, &r.versions, "Delete")?;
        Ok((
            DeleteResponse {
                version: Some(clock_to_wire(&clock)),
            },
            relay,
        ))
    }

    /// Update (value) or Delete (tombstone) on a mutable keygroup, then replication (the
    /// returned relay, which the caller finishes before answering).
    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        node: &str,
        user: &str,
        kg: &str,
        id: &str,
        val: Option<String>,
        versions: &[Version],
        op: &str,
    ) -> Res<(Clock, Relay)> {
        let mut st = self.state();
        if !data_access(&st, node, kg, user, UserRole::WriteKeygroup)? {
            return Err(wrong_kind(kg, op, false));
        }
        let given: Vec<Clock> = versions
            .iter()
            .map(|v| clock_from_wire(&v.version))
            .collect();
        let n = st.nodes.get_mut(node).expect("known node");
        let entry = n
            .data
            .entry(kg.to_string())
            .or_default()
            .entry(id.to_string())
            .or_default();
        // FReD: an Update naming versions must cover every stored version; a Delete naming
        // versions must name none older than a stored one; a Delete needs a stored id (a
        // tombstone will do).
        let version = if val.is_none() {
            if !entry.exists() {
                return Err("item does not exist so it cannot be deleted".to_string());
            }
            if given.is_empty() {
                entry.write_local(node, None, &[])
            } else if entry.delete_allowed(&given) {
                entry.delete_versions(node, &given)
            } else {
                return Err(REFUSED.to_string());
            }
        } else {
            if !given.is_empty() && !entry.covered_by(&given) {
                return Err(REFUSED.to_string());
            }
            // Counted under the same lock as the write, so stats never show one without the other.
            n.stats.bytes_written += val.as_ref().map_or(0, |v| v.len() as u64);
            entry.write_local(node, val, &given)
        };
        // FReD's messages when a trigger of this node fails after the write was stored.
        let (call, fail) = match &version.val {
            Some(v) => (Call::Put(v.clone()), "error updating item"),
            None => (Call::Delete, "error deleting item"),
        };
        let relay = self.replicate(&mut st, node, kg, id, &version, call, fail);
        Ok((version.clock, relay))
    }

    pub(crate) fn append(
        &self,
        node: &str,
        user: &str,
        r: AppendRequest,
    ) -> Res<(AppendResponse, Relay)> {
        let id = r.id.to_string();
        check_value(&r.keygroup, &id, &r.data)?;
        let bytes = r.data.len() as u64;
        let mut st = self.state();
        if data_access(&st, node, &r.keygroup, user, UserRole::WriteKeygroup)? {
            return Err(wrong_kind(&r.keygroup, "Append", true));
        }
        let n = st.nodes.get_mut(node).expect("known node");
        let entry = n
            .data
            .entry(r.keygroup.clone())
            .or_default()
            .entry(id.clone())
            .or_default();
        if !entry.siblings().is_empty() {
            return Err(format!(
                "item {id} already exists in keygroup {}: Append needs a new id",
                r.keygroup
            ));
        }
        let call = Call::Put(r.data.clone());
        let version = entry.write_local(node, Some(r.data), &[]);
        n.stats.bytes_written += bytes;
        let fail = "error updating item";
        let relay = self.replicate(&mut st, node, &r.keygroup, &id, &version, call, fail);
        Ok((AppendResponse { id }, relay))
    }

    pub(crate) fn add_replica(&self, node: &str, user: &str, r: AddReplicaRequest) -> Res<Empty> {
        let mut st = self.state();
        data_access(&st, node, &r.keygroup, user, UserRole::ConfigureReplica)?;
        let Some(target) = st.nodes.get(&r.node_id) else {
            return Err(format!("unknown node {:?}", r.node_id));
        };
        let running = target.running;
        let k = st
            .keygroups
            .get_mut(&r.keygroup)
            .expect("authorized keygroup");
        if k.replicas.contains_key(&r.node_id) {
            return Err(format!(
                "node {} is already a replica of keygroup {}",
                r.node_id, r.keygroup
            ));
        }
        k.replicas.insert(r.node_id.clone(), r.expiry);
        // A stopped new replica gets the items when it restarts (catch-up).
        if running {
            copy_items(&mut st, &r.keygroup, node, &r.node_id);
        }
        Ok(Empty {})
    }

    pub(crate) fn get_keygroup_info(
        &self,
        _node: &str,
        user: &str,
        r: GetKeygroupInfoRequest,
    ) -> Res<GetKeygroupInfoResponse> {
        check_name("keygroup name", &r.keygroup)?;
        let st = self.state();
        let k = authorize(&st, &r.keygroup, user, UserRole::ConfigureReplica)?;
        let replica = k
            .replicas
            .iter()
            .map(|(id, expiry)| KeygroupReplica {
                node_id: id.clone(),
                expiry: *expiry,
                host: st.nodes[id].host.to_string(),
            })
            .collect();
        Ok(GetKeygroupInfoResponse {
            mutable: k.mutable,
            replica,
        })
    }

    pub(crate) fn remove_replica(
        &self,
        _node: &str,
        user: &str,
        r: RemoveReplicaRequest,
    ) -> Res<Empty> {
        check_name("keygroup name", &r.keygroup)?;
        let mut st = self.state();
        authorize(&st, &r.keygroup, user, UserRole::ConfigureReplica)?;
        let k = st
            .keygroups
            .get_mut(&r.keygroup)
            .expect("authorized keygroup");
        if !k.replicas.contains_key(&r.node_id) {
            return Err(format!(
                "node {} is not a replica of keygroup {}",
                r.node_id, r.keygroup
            ));
        }
        if k.replicas.len() == 1 {
            return Err(format!(
                "cannot remove node {}: it is the last replica of keygroup {}",
                r.node_id, r.keygroup
            ));
        }
        k.replicas.remove(&r.node_id);
        if let Some(n) = st.nodes.get_mut(&r.node_id) {
            n.data.remove(&r.keygroup);
            n.triggers.remove(&r.keygroup);
        }
        Ok(Empty {})
    }

    pub(crate) fn get_replica(
        &self,
        _node: &str,
        _user: &str,
        r: GetReplicaRequest,
    ) -> Res<GetReplicaResponse> {
        let st = self.state();
        let n = st
            .nodes
            .get(&r.node_id)
            .ok_or_else(|| format!("unknown node {:?}", r.node_id))?;
        Ok(GetReplicaResponse {
            node_id: r.node_id,
            host: n.host.to_string(),
        })
    }

    pub(crate) fn get_all_replica(
        &self,
        _node: &str,
        _user: &str,
        _r: Empty,
    ) -> Res<GetAllReplicaResponse> {
        let replicas = self
            .state()
            .nodes
            .iter()
            .map(|(id, n)| Replica {
                node_id: id.clone(),
                host: n.host.to_string(),
            })
            .collect();
        Ok(GetAllReplicaResponse { replicas })
    }

    /// Trigger registrations are node-local and need the keygroup on the node called; FReD's
    /// messages for a node without it differ per RPC. Writes call them (`trigger.rs`).
    fn triggers_of<'a>(
        st: &'a mut State,
        node: &str,
        user: &str,
        kg: &str,
        missing: &str,
    ) -> Res<&'a mut BTreeMap<String, String>> {
        check_name("keygroup name", kg)?;
        authorize(st, kg, user, UserRole::ConfigureTrigger)?;
        let n = st.nodes.get_mut(node).expect("known node");
        if !n.data.contains_key(kg) {
            return Err(missing.to_string());
        }
        Ok(n.triggers.entry(kg.to_string()).or_default())
    }

    pub(crate) fn add_trigger(&self, node: &str, user: &str, r: AddTriggerRequest) -> Res<Empty> {
        let mut st = self.state();
        // Sic: FReD says "replica" here.
        let t = Self::triggers_of(&mut st, node, user, &r.keygroup, "error adding replica")?;
        t.insert(r.trigger_id, r.trigger_host);
        Ok(Empty {})
    }

    pub(crate) fn remove_trigger(
        &self,
        node: &str,
        user: &str,
        r: RemoveTriggerRequest,
    ) -> Res<Empty> {
        let mut st = self.state();
        let t = Self::triggers_of(&mut st, node, user, &r.keygroup, "error removing trigger")?;
        t.remove(&r.trigger_id);
        Ok(Empty {})
    }

    pub(crate) fn get_keygroup_triggers(
        &self,
        node: &str,
        user: &str,
        r: GetKeygroupTriggerRequest,
    ) -> Res<GetKeygroupTriggerResponse> {
        let mut st = self.state();
        let missing = format!("no such keygroup in store: {}", r.keygroup);
        let t = Self::triggers_of(&mut st, node, user, &r.keygroup, &missing)?;
        let triggers = t
            .iter()
            .map(|(id, host)| Trigger {
                id: id.clone(),
                host: host.clone(),
            })
            .collect();
        Ok(GetKeygroupTriggerResponse { triggers })
    }

    pub(crate) fn add_user(&self, _node: &str, user: &str, r: AddUserRequest) -> Res<Empty> {
        self.change_role(user, &r.keygroup, &r.user, r.role, true)
    }

    pub(crate) fn remove_user(&self, _node: &str, user: &str, r: RemoveUserRequest) -> Res<Empty> {
        self.change_role(user, &r.keygroup, &r.user, r.role, false)
    }

    fn change_role(
        &self,
        caller: &str,
        kg: &str,
        user: &str,
        role: i32,
        grant: bool,
    ) -> Res<Empty> {
        check_name("keygroup name", kg)?;
        let role = UserRole::try_from(role).map_err(|_| format!("unknown role {role}"))?;
        if user.is_empty() {
            return Err("empty user name".to_string());
        }
        let mut st = self.state();
        authorize(&st, kg, caller, UserRole::ConfigureKeygroups)?;
        let roles = &mut st.keygroups.get_mut(kg).expect("authorized keygroup").roles;
        if grant {
            roles.entry(user.to_string()).or_default().insert(role);
        } else if let Some(r) = roles.get_mut(user) {
            r.remove(&role);
        }
        Ok(Empty {})
    }
}
