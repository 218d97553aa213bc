//! Sibling resolution on FReD: when a turn's versions disagree (two nodes committed it), this
//! node repairs what it lacks from the other replicas and settles which version won.

use fred_proto::{Key, Version};

use crate::codec::{turn_key, turn_prefix};
use crate::log::SessionLog;
use crate::scan::{SCAN_BATCH, group_turns};
use crate::{FredError, FredStore};
use discedge_core::store::StoreError;

impl FredStore {
    /// Copies to this node the turns after `log` that another replica holds and this node
    /// lacks, the same bytes, and adds them to `log`; true if any were copied. Failures are
    /// logged: the caller then answers as it would have without the repair.
    pub(crate) async fn repair_from_peers(&self, session_id: &str, log: &mut SessionLog) -> bool {
        let prefix = turn_prefix(session_id);
        let mut copied = false;
        for (node, peer) in &self.peers {
            let start = turn_key(session_id, log.turn() + 1);
            let items = match peer.scan(&start, SCAN_BATCH).await {
                Ok(items) => items,
                Err(FredError::NotFound(_)) => continue,
                Err(e) => {
                    tracing::warn!(
                        node,
                        session_id,
                        "cannot read the session on this replica: {e}"
                    );
                    continue;
                }
            };
            for (turn, versions) in group_turns(&prefix, &items) {
                let Ok(Some((item, value))) = log.resolve(versions) else {
                    break;
                };
                if turn != log.turn() + 1 {
                    break;
                }
                let key = turn_key(session_id, turn);
                let versions = log.next_turn_versions();
                if let Err(e) = self.client.update(&key, value.to_owned(), versions).await {
                    tracing::warn!(
                        session_id,
                        turn,
                        "cannot copy a turn from another replica: {e}"
                    );
                    return copied;
                }
                if log.push(item, value).is_err() {
                    return copied;
                }
                copied = true;
            }
        }
        copied
    }

    /// After an Update of turn `key` (answered or not): which version of that turn every
    /// node will keep. `Ok(true)` if ours (`value`), `Ok(false)` if another (now in `log`),
    /// `Err` if none extends the chain (the write did not happen). Reads the item here and,
    /// when confirming on replicas, on every other replica at once: an Update returns once
    /// relayed everywhere, so any version of this turn written concurrently elsewhere is by
    /// then on the node that wrote it, and no node will accept another.
    /// Whether `version` (the one this node's Update just wrote) is the only version of `key`
    /// on this node and on every replica that answers: then it won, and the values need not
    /// be read. Asks for the ids and versions only ([`FredClient::keys`]), two entries from
    /// `key`, so a sibling (listed next to it) shows; on this node the trigger feed, when it
    /// can tell ([`crate::cache::SessionCache::alone`]), answers instead of a Keys call. Any doubt answers
    /// false, and [`Self::settle`] reads the values.
    pub(crate) async fn only_version(
        &self,
        key: &str,
        version: &Version,
        fed: Option<bool>,
    ) -> bool {
        let alone = |keys: &[Key]| {
            let mut of_key = keys.iter().filter(|k| k.id == key);
            of_key
                .next()
                .is_some_and(|k| k.version.as_ref() == Some(version))
                && of_key.next().is_none()
        };
        let peers = futures_util::future::join_all(
            self.peers
                .iter()
                .map(|(node, peer)| async move { (node, peer.keys(key, 2).await) }),
        );
        let here = async {
            match fed {
                Some(alone_here) => alone_here,
                None => self
                    .client
                    .keys(key, 2)
                    .await
                    .is_ok_and(|keys| alone(&keys)),
            }
        };
        let (here, there) = tokio::join!(here, peers);
        if !here {
            return false;
        }
        there.into_iter().all(|(node, keys)| match keys {
            Ok(keys) => alone(&keys),
            Err(e) => {
                tracing::warn!(node, key, "cannot confirm the turn on this replica: {e}");
                true
            }
        })
    }

    pub(crate) async fn settle(
        &self,
        key: &str,
        value: &str,
        log: &mut SessionLog,
        failure: StoreError,
    ) -> Result<bool, StoreError> {
        let peer_reads = futures_util::future::join_all(
            self.peers
                .iter()
                .map(|(node, peer)| async move { (node, peer.read(key).await) }),
        );
        let (here, there) = tokio::join!(self.client.read(key), peer_reads);
        let mut versions = match here {
            Ok(versions) => versions,
            Err(FredError::NotFound(_)) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        if versions.is_empty() {
            return Err(failure);
        }
        for (node, read) in there {
            match read {
                Ok(more) => versions.extend(more),
                Err(e) => tracing::warn!(node, key, "cannot confirm the turn on this replica: {e}"),
            }
        }
        match log.resolve(&versions)? {
            Some((item, winner)) => {
                let ours = winner == value;
                log.push(item, winner)?;
                Ok(ours)
            }
            None => Err(failure),
        }
    }
}
