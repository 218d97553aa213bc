//! The roaming warm-up: when another node commits a session's turn, this node gets its own
//! llama-server's prompt cache ready for that session's next turn, so a client that roams
//! here pays no more prefill than on the node it left.
//!
//! Warm-ups never cost a real turn anything: they start only while no turn of this proxy is
//! at the model, a turn that starts cancels the one running, they are rate-limited, and only
//! the newest turn of a session waits (a session warmed twice is warmed once).
//!
//! This module is the queue and its bookkeeping; the worker that drives the proxy is
//! `session::warm::run`, so the queue needs nothing from the session (no import cycle).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::store::RemoteTurn;

/// Sessions remembered as last committed elsewhere (to tell a roamed turn); oldest forgotten.
const MAX_REMEMBERED: usize = 10_000;
/// Warm-ups waiting; a burst beyond this drops the oldest (they would be stale anyway).
const MAX_PENDING: usize = 256;
/// How long a warm-up waits for the model to be free of real turns before it is skipped.
pub(crate) const IDLE_WAIT: Duration = Duration::from_secs(1);

/// What happened to warm-ups and to the turns that roamed here, for `/metrics`.
#[derive(Default)]
pub struct WarmCounts {
    pub sent: AtomicU64,
    pub skipped_busy: AtomicU64,
    pub cancelled: AtomicU64,
    pub failed: AtomicU64,
    /// Replaced by a newer turn of the same session, or dropped from a full queue.
    pub superseded: AtomicU64,
    /// Roamed turns (previous turn committed on another node), by warmed or not: turns,
    /// prompt tokens evaluated, prompt tokens from the cache.
    roamed: [[AtomicU64; 3]; 2],
}

impl WarmCounts {
    /// A turn whose previous turn another node committed reached the model here.
    pub fn roamed_turn(&self, warmed: bool, evaluated: u64, cached: u64) {
        let counts = &self.roamed[usize::from(warmed)];
        counts[0].fetch_add(1, Ordering::Relaxed);
        counts[1].fetch_add(evaluated, Ordering::Relaxed);
        counts[2].fetch_add(cached, Ordering::Relaxed);
    }

    /// The Prometheus text of these counters.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# HELP discedge_warmups_total Roaming warm-ups by outcome: sent to llama-server, skipped (a real turn kept the model busy), cancelled (a real turn arrived), failed, superseded (a newer turn of the session, or a full queue).\n# TYPE discedge_warmups_total counter\n",
        );
        for (outcome, n) in [
            ("sent", &self.sent),
            ("skipped_busy", &self.skipped_busy),
            ("cancelled", &self.cancelled),
            ("failed", &self.failed),
            ("superseded", &self.superseded),
        ] {
            out += &format!(
                "discedge_warmups_total{{outcome=\"{outcome}\"}} {}\n",
                n.load(Ordering::Relaxed)
            );
        }
        for (i, (name, help)) in [
            ("discedge_roamed_turns_total", "Turns whose previous turn another node committed (known from the trigger feed), by whether this node warmed up for them."),
            ("discedge_roamed_prompt_tokens_evaluated_total", "Prompt tokens llama-server evaluated for roamed turns."),
            ("discedge_roamed_prompt_tokens_cached_total", "Prompt tokens of roamed turns taken from llama-server's cache."),
        ]
        .into_iter()
        .enumerate()
        {
            out += &format!("# HELP {name} {help}\n# TYPE {name} counter\n");
            for (warmed, counts) in ["no", "yes"].iter().zip(&self.roamed) {
                out += &format!(
                    "{name}{{warmed=\"{warmed}\"}} {}\n",
                    counts[i].load(Ordering::Relaxed)
                );
            }
        }
        out
    }
}

/// A session whose last turn this node heard of from another node.
#[derive(Clone, Copy)]
struct Remote {
    turn: u32,
    warmed: bool,
}

/// Shared by the turns (which mark the model busy) and the warm-up worker.
pub struct Warmer {
    /// Real turns of this proxy between their prompt and their reply.
    busy: watch::Sender<usize>,
    pub(crate) pending: Mutex<VecDeque<RemoteTurn>>,
    wake: Notify,
    remote: Mutex<(HashMap<String, Remote>, VecDeque<String>)>,
    pub counts: WarmCounts,
}

impl Default for Warmer {
    fn default() -> Self {
        Self {
            busy: watch::channel(0).0,
            pending: Mutex::default(),
            wake: Notify::new(),
            remote: Mutex::default(),
            counts: WarmCounts::default(),
        }
    }
}

/// Held by a real turn while it uses the model; says whether the turn roamed here.
pub struct BusyGuard {
    warmer: Arc<Warmer>,
    /// The session's previous turn was committed on another node.
    pub roamed: bool,
    /// ... and this node warmed its prompt cache for this turn.
    pub warmed: bool,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.warmer.busy.send_modify(|n| *n -= 1);
    }
}

impl Warmer {
    /// A real turn of `session_id` starts: the model is busy until the guard drops, a warm-up
    /// running now is cancelled, and one waiting for this session is dropped.
    pub fn turn_started(self: &Arc<Self>, session_id: &str, turn: u32) -> BusyGuard {
        self.busy.send_modify(|n| *n += 1);
        self.pending
            .lock()
            .expect("warm-up queue")
            .retain(|t| t.session_id != session_id);
        let remote = self
            .remote
            .lock()
            .expect("remote sessions")
            .0
            .remove(session_id);
        let roamed = remote.filter(|r| r.turn + 1 == turn);
        BusyGuard {
            warmer: self.clone(),
            roamed: roamed.is_some(),
            warmed: roamed.is_some_and(|r| r.warmed),
        }
    }

    /// Another node committed `turn`: remember it, and queue a warm-up if `queue`.
    pub fn heard(&self, turn: RemoteTurn, queue: bool) {
        self.remember(&turn.session_id, turn.turn, false);
        if !queue {
            return;
        }
        let mut pending = self.pending.lock().expect("warm-up queue");
        let before = pending.len();
        pending.retain(|t| t.session_id != turn.session_id);
        let mut superseded = before - pending.len();
        if pending.len() >= MAX_PENDING {
            pending.pop_front();
            superseded += 1;
        }
        pending.push_back(turn);
        drop(pending);
        self.counts
            .superseded
            .fetch_add(superseded as u64, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// The next warm-up to run, waiting for one.
    pub(crate) async fn next(&self) -> RemoteTurn {
        loop {
            if let Some(turn) = self.pending.lock().expect("warm-up queue").pop_front() {
                return turn;
            }
            self.wake.notified().await;
        }
    }

    /// Whether a real turn is at the model now.
    pub fn is_busy(&self) -> bool {
        *self.busy.borrow() > 0
    }

    /// Waits up to `max` for no real turn to be at the model; false if one still is.
    pub async fn idle_within(&self, max: Duration) -> bool {
        let mut busy = self.busy.subscribe();
        tokio::time::timeout(max, busy.wait_for(|&n| n == 0))
            .await
            .is_ok()
    }

    /// Resolves when a real turn starts.
    pub(crate) async fn busy_again(&self) {
        let mut busy = self.busy.subscribe();
        let _ = busy.wait_for(|&n| n > 0).await;
    }

    /// `session_id`'s last turn, `turn`, was committed elsewhere (and its next prompt is in
    /// the model's cache if `warmed`).
    pub(crate) fn remember(&self, session_id: &str, turn: u32, warmed: bool) {
        let mut guard = self.remote.lock().expect("remote sessions");
        let (map, order) = &mut *guard;
        if map
            .insert(session_id.to_owned(), Remote { turn, warmed })
            .is_none()
        {
            order.push_back(session_id.to_owned());
        }
        while map.len() > MAX_REMEMBERED {
            match order.pop_front() {
                Some(oldest) => {
                    map.remove(&oldest);
                }
                None => break,
            }
        }
        if order.len() > 2 * MAX_REMEMBERED {
            order.retain(|id| map.contains_key(id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(session: &str, turn: u32) -> RemoteTurn {
        RemoteTurn {
            session_id: session.into(),
            turn,
        }
    }

    #[test]
    fn only_the_newest_turn_of_a_session_waits() {
        let w = Warmer::default();
        w.heard(turn("a", 1), true);
        w.heard(turn("b", 1), true);
        w.heard(turn("a", 2), true);
        let pending: Vec<_> = w.pending.lock().unwrap().iter().cloned().collect();
        assert_eq!(pending, [turn("b", 1), turn("a", 2)]);
        assert_eq!(w.counts.superseded.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_real_turn_drops_its_sessions_warm_up_and_tells_whether_it_roamed() {
        let w = Arc::new(Warmer::default());
        w.heard(turn("a", 3), true);
        w.heard(turn("b", 1), false);
        let guard = w.turn_started("a", 4);
        assert!(guard.roamed && !guard.warmed);
        assert!(w.pending.lock().unwrap().is_empty());
        assert_eq!(*w.busy.borrow(), 1);
        drop(guard);
        assert_eq!(*w.busy.borrow(), 0);
        let not_next = w.turn_started("b", 5);
        assert!(!not_next.roamed, "turn 5 does not follow remote turn 1");
        let again = w.turn_started("a", 4);
        assert!(!again.roamed, "forgotten once served here");
        w.remember("c", 2, true);
        assert!(w.turn_started("c", 3).warmed);
    }

    #[tokio::test]
    async fn idle_waits_for_the_last_real_turn() {
        let w = Arc::new(Warmer::default());
        assert!(w.idle_within(Duration::from_millis(1)).await);
        let guard = w.turn_started("a", 1);
        assert!(!w.idle_within(Duration::from_millis(20)).await);
        let waiting = tokio::spawn({
            let w = w.clone();
            async move { w.idle_within(Duration::from_secs(5)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(guard);
        assert!(waiting.await.unwrap());
    }

    #[test]
    fn counts_render_for_prometheus() {
        let w = Warmer::default();
        w.counts.sent.fetch_add(2, Ordering::Relaxed);
        w.counts.roamed_turn(true, 7, 150);
        let text = w.counts.render();
        assert!(
            text.contains("discedge_warmups_total{outcome=\"sent\"} 2"),
            "{text}"
        );
        assert!(text.contains("discedge_roamed_turns_total{warmed=\"yes\"} 1"));
        assert!(text.contains("discedge_roamed_prompt_tokens_cached_total{warmed=\"yes\"} 150"));
        assert!(text.contains("discedge_roamed_prompt_tokens_evaluated_total{warmed=\"no\"} 0"));
    }

    #[test]
    fn remembered_sessions_are_bounded() {
        let w = Warmer::default();
        for i in 0..MAX_REMEMBERED + 50 {
            w.heard(turn(&i.to_string(), 1), false);
        }
        let remote = w.remote.lock().unwrap();
        assert_eq!(remote.0.len(), MAX_REMEMBERED);
        assert!(!remote.0.contains_key("0"), "the oldest went first");
    }
}
