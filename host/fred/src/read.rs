//! Reading a session from FReD: what this node holds brought up to date (one Scan from its
//! last turn, a Read of turn 1 in parallel), or the whole log read again.

use crate::codec::{turn_key, turn_prefix};
use crate::log::{SessionLog, versions_of};
use crate::scan::{SCAN_BATCH, group_turns};
use crate::{FredError, FredStore, item};
use discedge_core::store::{StoreError, StoredSession};

/// Versions asked for by the first Scan of a session this node holds (its last turn, maybe
/// one more and a sibling) and of one it reads from turn 1; each further Scan asks for 4x.
const FIRST_WARM_SCAN: u64 = 4;
const FIRST_COLD_SCAN: u64 = 16;

impl FredStore {
    /// What this node knows of a session, brought up to date with FReD: one Scan from its
    /// last turn (which must still win there) and, in parallel, a Read of turn 1 (a session
    /// deleted and begun anew elsewhere changes it). Reads everything again when what it had
    /// no longer holds.
    pub(crate) async fn fresh_log(&self, session_id: &str) -> Result<SessionLog, StoreError> {
        let Some((mut log, _)) = self.cache.get(session_id) else {
            return self.read_log(session_id).await;
        };
        let (Some(&first), true) = (log.chains.first(), log.turn() > 1) else {
            // Turn 1 (or none): the Scan from it checks it.
            return match self.catch_up(session_id, &mut log).await? {
                true => Ok(log),
                false => self.read_log(session_id).await,
            };
        };
        let first_key = turn_key(session_id, 1);
        let (turn_one, holds) = tokio::join!(
            self.client.read(&first_key),
            self.catch_up(session_id, &mut log)
        );
        let same_session = match turn_one {
            Ok(versions) => SessionLog::default()
                .resolve(&versions)?
                .is_some_and(|(_, value)| item::chain(&[0; 16], value) == first),
            Err(FredError::NotFound(_)) => false,
            Err(e) => return Err(e.into()),
        };
        if same_session && holds? {
            return Ok(log);
        }
        self.read_log(session_id).await
    }

    /// Reads a session from turn 1.
    pub(crate) async fn read_log(&self, session_id: &str) -> Result<SessionLog, StoreError> {
        let mut log = SessionLog::default();
        self.catch_up(session_id, &mut log).await?;
        Ok(log)
    }

    /// Brings the session up to date from FReD and keeps it in the cache. Asked for by turn
    /// `turn` and still behind it, the turns may be on their way, or their relay to this node
    /// was lost (FReD only notes a failed relay, and a node reads those notes at its next
    /// start): another replica that has them gives them to this node.
    pub(crate) async fn refresh(
        &self,
        session_id: &str,
        turn: Option<u32>,
    ) -> Result<Option<StoredSession>, StoreError> {
        let since = self.cache.mark();
        let mut log = self.fresh_log(session_id).await?;
        if turn.is_some_and(|turn| log.turn() + 1 < turn)
            && self.repair_from_peers(session_id, &mut log).await
        {
            tracing::info!(
                session_id,
                turn = log.turn(),
                "turns this node lacked copied from another replica"
            );
        }
        let stored = log.stored();
        self.cache.put(session_id, log, since);
        Ok(stored)
    }

    /// Extends `log` with the turns FReD holds after it, resolving siblings, until the chain
    /// ends (no item, or no version extending it). The first Scan starts at the log's last
    /// turn; `Ok(false)` if that turn no longer wins there (or is gone).
    pub(crate) async fn catch_up(
        &self,
        session_id: &str,
        log: &mut SessionLog,
    ) -> Result<bool, StoreError> {
        let prefix = turn_prefix(session_id);
        let mut checked = log.turn() == 0;
        // A Scan runs on past the session into other items, so ask for few at first: a node
        // that served the last turn expects one or two items, a cold read a short session.
        let mut count = if checked {
            FIRST_COLD_SCAN
        } else {
            FIRST_WARM_SCAN
        };
        loop {
            log.next_versions.clear();
            let from = if checked { log.turn() + 1 } else { log.turn() };
            let items = match self.client.scan(&turn_key(session_id, from), count).await {
                Ok(items) => items,
                Err(FredError::NotFound(_)) => return Ok(checked),
                Err(e) => return Err(e.into()),
            };
            let full = items.len() as u64 >= count;
            count = (count * 4).min(SCAN_BATCH);
            let mut groups = group_turns(&prefix, &items);
            // A full batch may end inside an item's versions: read that item again next round.
            if full && groups.len() > 1 {
                groups.pop();
            }
            for (turn, versions) in groups {
                if !checked {
                    if turn != log.turn() || !log.last_turn_holds(versions)? {
                        return Ok(false);
                    }
                    checked = true;
                    continue;
                }
                if turn != log.turn() + 1 {
                    return Ok(true);
                }
                match log.resolve(versions)? {
                    Some((item, value)) => log.push(item, value)?,
                    None => {
                        log.next_versions = versions_of(versions);
                        return Ok(true);
                    }
                }
            }
            if !full {
                return Ok(checked);
            }
        }
    }
}
