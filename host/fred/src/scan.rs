//! Reading Scan results: how many versions a Scan asks for, and a result grouped into turns.
//! Shared by the readers (`read`) and the repair (`siblings`), which call each other's users.

use fred_proto::Item;

use crate::codec::turn_of;

/// Most item versions fetched per Scan call (FReD's messages are limited to 4 MiB; a Scan
/// counts versions, not ids).
pub(crate) const SCAN_BATCH: u64 = 256;
/// The items of `prefix`'s turns in a Scan result, grouped by id (an id's versions are
/// adjacent), with their turn numbers; stops at the first id that is not one of them.
pub(crate) fn group_turns<'a>(prefix: &str, items: &'a [Item]) -> Vec<(u32, &'a [Item])> {
    let mut groups: Vec<(u32, &[Item])> = Vec::new();
    let mut start = 0;
    while start < items.len() {
        let id = &items[start].id;
        let Some(turn) = turn_of(prefix, id) else {
            break;
        };
        let len = items[start..].iter().take_while(|i| &i.id == id).count();
        groups.push((turn, &items[start..start + len]));
        start += len;
    }
    groups
}
