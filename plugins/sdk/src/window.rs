//! The truncate policy's choice of which old turns to leave out of the prompt.
//!
//! llama-server reuses its cache only for the longest common prefix of consecutive prompts,
//! so every change of the window start costs a full re-evaluation of the history. The window
//! therefore stays put while it fits, and when it must move it moves far enough (down to
//! [`low_water`]) that the following turns fit again for a while.

/// The fill level a moving window aims for: three quarters of the context.
pub fn low_water(n_ctx: usize) -> usize {
    // floor(3 * n_ctx / 4), without overflowing for any n_ctx.
    n_ctx / 4 * 3 + n_ctx % 4 * 3 / 4
}

/// Picks the index of the oldest record to keep in the prompt.
///
/// `record_lens_unpinned[i]` is the droppable size of record `i` in tokens; `pinned` (the
/// opening) and `new_len` (this turn's new tokens) are always kept, and `reply_budget` is kept
/// free. The start never moves back before `previous_start` (clamped to the number of records),
/// since dropped turns coming back would miss the cache too. Returns the start, or a
/// context-full message when even the opening and the new message alone do not fit.
pub fn choose_window(
    record_lens_unpinned: &[usize],
    pinned: usize,
    previous_start: usize,
    new_len: usize,
    reply_budget: usize,
    n_ctx: usize,
) -> Result<usize, String> {
    // u128 sums: exact for any sizes from a record or a request, even with a 64-bit usize
    // (saturating u64 sums compared wrong against an n_ctx of u64::MAX, found by proptest).
    let fixed = pinned as u128 + new_len as u128 + reply_budget as u128;
    if fixed > n_ctx as u128 {
        return Err(format!(
            "the conversation opening ({pinned} tokens), the new message ({new_len} tokens) and \
             the reply budget ({reply_budget} tokens) need {fixed} tokens, more than the \
             model's context of {n_ctx}"
        ));
    }
    let records = record_lens_unpinned.len();
    // kept[s]: size of the history from record s on.
    // Fewer than 2^64 records of under 2^64 tokens each: these sums cannot overflow either.
    let mut kept = vec![0u128; records + 1];
    for s in (0..records).rev() {
        kept[s] = kept[s + 1] + record_lens_unpinned[s] as u128;
    }
    let fits = |s: usize, limit: usize| fixed + kept[s] <= limit as u128;

    let previous_start = previous_start.min(records);
    if fits(previous_start, n_ctx) {
        return Ok(previous_start);
    }
    let first_start_within = |limit| (previous_start + 1..=records).find(|&s| fits(s, limit));
    // Dropping all history always fits (checked above), hence the final fallback.
    Ok(first_start_within(low_water(n_ctx))
        .or_else(|| first_start_within(n_ctx))
        .unwrap_or(records))
}

/// Rejects token records a window policy cannot have written: only the first one pins an
/// opening, and a window never starts after the turn that recorded it.
pub fn check_window_heads(history: &[crate::TokenRecordHead]) -> Result<(), String> {
    for (i, r) in history.iter().enumerate() {
        if i > 0 && r.pinned != 0 {
            return Err(format!("record {i}: only the first record may pin"));
        }
        if r.window_start as usize > i {
            let start = r.window_start;
            return Err(format!("record {i}: window starts at {start}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const N_CTX: usize = 1000;

    fn total(lens: &[usize], pinned: usize, start: usize, new_len: usize, budget: usize) -> usize {
        pinned + lens[start..].iter().sum::<usize>() + new_len + budget
    }

    #[test]
    fn window_heads_pin_only_first_and_never_start_ahead() {
        let head = |pinned, window_start| crate::TokenRecordHead {
            pinned,
            window_start,
            tokens: 10,
        };
        assert_eq!(
            check_window_heads(&[head(3, 0), head(0, 1), head(0, 1)]),
            Ok(())
        );
        let err = check_window_heads(&[head(3, 0), head(2, 0)]).unwrap_err();
        assert!(
            err.contains("record 1: only the first record may pin"),
            "{err}"
        );
        let err = check_window_heads(&[head(3, 0), head(0, 2)]).unwrap_err();
        assert!(err.contains("record 1: window starts at 2"), "{err}");
    }

    #[test]
    fn low_water_is_three_quarters() {
        assert_eq!(low_water(1000), 750);
        assert_eq!(low_water(4096), 3072);
        assert_eq!(low_water(7), 5);
        assert_eq!(low_water(usize::MAX), usize::MAX / 4 * 3 + 2);
    }

    #[test]
    fn keeps_previous_start_while_it_fits() {
        // 50 + 700 + 100 + 100 = 950: above low water, but it fits, so nothing moves.
        assert_eq!(
            choose_window(&[300, 200, 200], 50, 0, 100, 100, N_CTX),
            Ok(0)
        );
        assert_eq!(
            choose_window(&[300, 200, 200], 50, 1, 100, 100, N_CTX),
            Ok(1)
        );
        assert_eq!(choose_window(&[], 50, 0, 100, 100, N_CTX), Ok(0));
    }

    #[test]
    fn drops_down_to_low_water() {
        let lens = [100; 10];
        // 50 + 1000 + 100 + 100 = 1250 > 1000. Start 3 would fit (950), but low water (750)
        // needs start 5: 50 + 500 + 200 = 750.
        assert_eq!(choose_window(&lens, 50, 0, 100, 100, N_CTX), Ok(5));
        // Never moves back, even when an earlier start would fit.
        assert_eq!(choose_window(&lens, 50, 8, 100, 100, N_CTX), Ok(8));
    }

    #[test]
    fn settles_for_a_fit_when_low_water_is_out_of_reach() {
        // The opening, the new message and the budget alone take 800 > 750 = low water.
        // 800 + 150 fits, so only the oldest record goes.
        assert_eq!(choose_window(&[100, 150], 300, 0, 300, 200, N_CTX), Ok(1));
        // Nothing but the new message fits: all history is dropped.
        assert_eq!(choose_window(&[100, 150], 300, 0, 300, 350, N_CTX), Ok(2));
    }

    #[test]
    fn context_full_names_the_sizes() {
        let err = choose_window(&[10], 400, 0, 500, 101, N_CTX).unwrap_err();
        for size in ["400", "500", "101", "1001", "1000"] {
            assert!(err.contains(size), "{err} lacks {size}");
        }
        assert_eq!(
            choose_window(&[10], 400, 0, 500, 100, N_CTX),
            Ok(1),
            "exactly full is fine"
        );
    }

    #[test]
    fn clamps_a_start_beyond_the_records() {
        assert_eq!(choose_window(&[100, 100], 0, 9, 100, 100, N_CTX), Ok(2));
    }

    #[test]
    fn survives_huge_sizes() {
        let max = usize::MAX;
        assert!(choose_window(&[max, max], max, 0, max, max, N_CTX).is_err());
        assert_eq!(choose_window(&[max, max], 0, 0, 0, 0, N_CTX), Ok(2));
        // Found by the property tests: with a 64-bit usize, saturated u64 sums made this fit
        // an n_ctx of usize::MAX although it needs twice that.
        let near = usize::MAX - 16;
        assert!(choose_window(&[], 0, 0, near, near, max).is_err());
        assert_eq!(choose_window(&[near, near], 0, 0, 1, 1, max), Ok(2));
    }

    /// A long conversation: the window keeps the opening and the new message, fits every turn,
    /// only moves forward, and stays put on most turns so the prompt cache keeps hitting.
    #[test]
    fn fifty_long_turns_stay_within_the_context() {
        let (n_ctx, pinned, budget) = (4096, 120, 512);
        let mut lens = Vec::new();
        let mut start = 0;
        let mut moves = 0;
        for turn in 0..50 {
            let new_len = 150 + turn * 37 % 200;
            let next = choose_window(&lens, pinned, start, new_len, budget, n_ctx).unwrap();
            assert!(
                next >= start,
                "turn {turn}: start went back from {start} to {next}"
            );
            assert!(
                next <= lens.len(),
                "turn {turn}: the new message was dropped"
            );
            let used = total(&lens, pinned, next, new_len, budget);
            assert!(used <= n_ctx, "turn {turn}: {used} tokens > {n_ctx}");
            moves += usize::from(next != start);
            start = next;
            // The stored record: the new tokens plus a reply of up to the budget.
            lens.push(new_len + 300 + turn * 53 % 212);
        }
        assert!(start > 0, "a long conversation must have dropped turns");
        // Turns of ~650 tokens against ~1000 tokens of slack above low water: the window moves
        // about every other turn, where dropping only what is needed would move on every one.
        assert!(moves <= 50 / 2, "the window moved on {moves} of 50 turns");
    }
}
