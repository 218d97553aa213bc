//! Byte-pair merging inside one pre-tokenized piece.
//!
//! The rule: among all adjacent pairs of symbols that have a merge, merge the one of lowest
//! rank (earliest in the file's merge list); between equal ranks, the leftmost; repeat until no
//! adjacent pair has a merge. Symbols are token ids (the loader refuses vocabularies whose
//! merges name or make a text that is no token, so every symbol is always a token).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// Pieces up to this many symbols are merged by rescanning all pairs each round (no
/// allocation, and faster for the short words that are most pieces); longer ones use a heap.
const SCAN_MAX: usize = 24;

/// A multiply-shift hasher for the `u64` pair keys: the merge table is looked up for every
/// adjacent pair of every piece, and SipHash would be most of the time spent.
#[derive(Default)]
pub(crate) struct PairHasher(u64);

impl Hasher for PairHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, v: u64) {
        let h = v.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 29);
    }
}

fn key(l: u32, r: u32) -> u64 {
    (l as u64) << 32 | r as u64
}

/// The merge table: (left token, right token) to (rank, merged token).
#[derive(Debug, Default)]
pub(crate) struct Merges {
    map: HashMap<u64, (u32, u32), BuildHasherDefault<PairHasher>>,
}

/// A heap entry: a candidate merge of symbol `left` with symbol `right`, valid while both
/// still hold the tokens it was made for.
type Candidate = Reverse<(u32, u32, u32, u32, u32)>; // (rank, left, right, left id, right id)

/// Buffers for the heap path, reused across pieces.
#[derive(Default)]
pub(crate) struct Scratch {
    heap: BinaryHeap<Candidate>,
    next: Vec<u32>,
    prev: Vec<u32>,
    dead: Vec<bool>,
}

const NONE: u32 = u32::MAX;

impl Merges {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self {
            map: HashMap::with_capacity_and_hasher(n, Default::default()),
        }
    }

    /// Adds merge `l r -> merged` at `rank`; a pair listed twice keeps its first (lowest) rank.
    pub(crate) fn insert(&mut self, l: u32, r: u32, rank: u32, merged: u32) {
        self.map.entry(key(l, r)).or_insert((rank, merged));
    }

    fn get(&self, l: u32, r: u32) -> Option<(u32, u32)> {
        self.map.get(&key(l, r)).copied()
    }

    /// Merges `syms` (the tokens of one piece's bytes) in place down to the piece's tokens.
    pub(crate) fn apply(&self, syms: &mut Vec<u32>, s: &mut Scratch) {
        if syms.len() <= SCAN_MAX {
            self.apply_scan(syms)
        } else {
            self.apply_heap(syms, s)
        }
    }

    pub(crate) fn apply_scan(&self, syms: &mut Vec<u32>) {
        loop {
            let mut best: Option<(u32, usize, u32)> = None;
            for i in 0..syms.len().saturating_sub(1) {
                if let Some((rank, merged)) = self.get(syms[i], syms[i + 1])
                    && best.is_none_or(|(b, _, _)| rank < b)
                {
                    best = Some((rank, i, merged));
                }
            }
            let Some((_, i, merged)) = best else { return };
            syms[i] = merged;
            syms.remove(i + 1);
        }
    }

    pub(crate) fn apply_heap(&self, syms: &mut Vec<u32>, s: &mut Scratch) {
        let n = syms.len();
        s.heap.clear();
        s.next.clear();
        s.prev.clear();
        s.next
            .extend((1..=n as u32).map(|i| if i as usize == n { NONE } else { i }));
        s.prev
            .extend((0..n as u32).map(|i| if i == 0 { NONE } else { i - 1 }));
        let push = |heap: &mut BinaryHeap<Candidate>, syms: &[u32], l: u32, r: u32| {
            if let Some((rank, _)) = self.get(syms[l as usize], syms[r as usize]) {
                heap.push(Reverse((rank, l, r, syms[l as usize], syms[r as usize])));
            }
        };
        for i in 0..n as u32 - 1 {
            push(&mut s.heap, syms, i, i + 1);
        }
        // A symbol merged into its left neighbour is dead.
        let dead = &mut s.dead;
        dead.clear();
        dead.resize(n, false);
        while let Some(Reverse((_, l, r, lid, rid))) = s.heap.pop() {
            let (lu, ru) = (l as usize, r as usize);
            if dead[lu] || dead[ru] || s.next[lu] != r || syms[lu] != lid || syms[ru] != rid {
                continue; // stale: one side has changed since this candidate was made
            }
            let (_, merged) = self.get(lid, rid).expect("candidate pairs have merges");
            syms[lu] = merged;
            dead[ru] = true;
            let after = s.next[ru];
            s.next[lu] = after;
            if after != NONE {
                s.prev[after as usize] = l;
                push(&mut s.heap, syms, l, after);
            }
            if s.prev[lu] != NONE {
                push(&mut s.heap, syms, s.prev[lu], l);
            }
        }
        let mut w = 0;
        for i in 0..n {
            if !dead[i] {
                syms[w] = syms[i];
                w += 1;
            }
        }
        syms.truncate(w);
    }
}
