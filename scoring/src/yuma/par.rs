//! Splitting an epoch's passes across threads without changing a single output bit.
//!
//! The epoch's matrices are cut into contiguous row blocks, one per thread. Per-row results
//! (trust, dividends, rows of the new bonds) are computed independently and concatenated in
//! row order. Per-column results are combined in block order with rules that are exact for
//! any cut: column maxima are order-free, and a column sum is built from per-block partial
//! sums only when every term was non-negative, where a saturating sum is
//! `min(exact sum, MAX)` whatever the grouping. (Every term in the epoch is a product of
//! non-negative proportions, so that always holds; a block that saw a negative term makes the
//! caller redo that sum in one sequential pass, as the single-threaded epoch does.)

use super::math::{ZERO, add};
use std::ops::Range;
use std::sync::{Mutex, OnceLock};
use substrate_fixed::types::I32F32;

/// Below this many stored weight and bond entries an epoch runs on one thread: starting a
/// thread per pass (about ten passes, tens of microseconds each) would cost more than it saves.
pub const MIN_PARALLEL_ENTRIES: usize = 1 << 16;

/// At most this many threads by default; beyond that each extra thread's per-column partial
/// vectors and start-up cost outweigh its share of the work at subnet sizes (≤ 65535 uids).
pub const MAX_DEFAULT_THREADS: usize = 8;

/// The threads [`super::epoch`] uses for an epoch with `entries` stored entries: 1 for small
/// epochs, else the CPUs this process may use (asked once per process), capped at
/// [`MAX_DEFAULT_THREADS`]. Results never depend on it.
pub fn default_threads(entries: usize) -> usize {
    static CPUS: OnceLock<usize> = OnceLock::new();
    if entries < MIN_PARALLEL_ENTRIES {
        return 1;
    }
    *CPUS.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, std::num::NonZeroUsize::get)
            .clamp(1, MAX_DEFAULT_THREADS)
    })
}

/// Cuts rows `0..costs.len()` into at most `parts` contiguous, non-empty ranges of about equal
/// total cost (a row costs `costs[i] + 1`), in order. At least one range, even for no rows.
pub fn split_rows(costs: &[usize], parts: usize) -> Vec<Range<usize>> {
    let n = costs.len();
    let parts = parts.clamp(1, n.max(1));
    let total: usize = costs
        .iter()
        .fold(0usize, |acc, c| acc.saturating_add(c.saturating_add(1)));
    let mut ranges = Vec::with_capacity(parts);
    let mut start = 0usize;
    let mut acc = 0usize;
    for (i, c) in costs.iter().enumerate() {
        acc = acc.saturating_add(c.saturating_add(1));
        // Close range k once the running cost reaches k/parts of the total.
        let k = ranges.len().saturating_add(1);
        let due = total.saturating_mul(k).checked_div(parts).unwrap_or(0);
        if k < parts && acc >= due {
            let end = i.saturating_add(1);
            ranges.push(start..end);
            start = end;
        }
    }
    if start < n || ranges.is_empty() {
        ranges.push(start..n);
    }
    ranges
}

/// `f` on every item; item 0 on the calling thread, the others on scoped threads. Results are
/// in item order. A worker's panic is re-raised here, as it would have been inline; an item
/// whose thread cannot be started runs here instead.
pub fn map<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    if items.len() <= 1 {
        return items.into_iter().map(f).collect();
    }
    let f = &f;
    // Each item waits in a cell the worker takes it from, so it is still here to run inline
    // if its thread cannot be started.
    let cells: Vec<Mutex<Option<T>>> = items.into_iter().map(|t| Mutex::new(Some(t))).collect();
    let take = |c: &Mutex<Option<T>>| c.lock().ok().and_then(|mut g| g.take());
    std::thread::scope(|s| {
        let Some((first, rest)) = cells.split_first() else {
            return Vec::new();
        };
        let handles: Vec<_> = rest
            .iter()
            .map(|cell| {
                std::thread::Builder::new()
                    .spawn_scoped(s, move || take(cell).map(f))
                    .ok()
            })
            .collect();
        let mut out = Vec::with_capacity(cells.len());
        out.extend(take(first).map(f));
        for (cell, handle) in rest.iter().zip(handles) {
            let r = match handle {
                Some(h) => h
                    .join()
                    .unwrap_or_else(|payload| std::panic::resume_unwind(payload)),
                None => take(cell).map(f),
            };
            out.extend(r);
        }
        out
    })
}

/// Column sums from per-block partial sums, combined in block order; `None` when a block saw a
/// negative term (the caller then sums sequentially). `columns` long.
pub fn combine_sums(parts: &[(Vec<I32F32>, bool)], columns: usize) -> Option<Vec<I32F32>> {
    if let [(only, _)] = parts {
        // One block: its sums are the sequential ones, whatever the signs.
        let mut v = only.clone();
        v.resize(columns, ZERO);
        return Some(v);
    }
    if parts.iter().any(|(_, nonneg)| !nonneg) {
        return None;
    }
    let mut out = vec![ZERO; columns];
    for (p, _) in parts {
        for (o, x) in out.iter_mut().zip(p) {
            *o = add(*o, *x);
        }
    }
    Some(out)
}

/// Column maxima (starting from 0) from per-block maxima: the maximum is order-free.
pub fn combine_max(parts: &[Vec<I32F32>], columns: usize) -> Vec<I32F32> {
    let mut out = vec![ZERO; columns];
    for p in parts {
        for (o, x) in out.iter_mut().zip(p) {
            if *o < *x {
                *o = *x;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn split_rows_covers_every_row_once_in_order(costs in prop::collection::vec(0usize..5000, 0..300), parts in 1usize..10) {
            let ranges = split_rows(&costs, parts);
            prop_assert!(!ranges.is_empty() && ranges.len() <= parts.max(1));
            let mut next = 0;
            for r in &ranges {
                prop_assert_eq!(r.start, next);
                prop_assert!(r.end > r.start || costs.is_empty());
                next = r.end;
            }
            prop_assert_eq!(next, costs.len());
        }

        #[test]
        fn map_keeps_item_order(items in prop::collection::vec(any::<u32>(), 0..9)) {
            let want: Vec<u64> = items.iter().map(|x| u64::from(*x) * 3).collect();
            prop_assert_eq!(map(items, |x| u64::from(x) * 3), want);
        }

        #[test]
        fn combined_nonnegative_sums_equal_one_sequential_sum(
            cols in prop::collection::vec(prop::collection::vec(prop_oneof![0i64..(1 << 40), Just(i64::MAX / 3), Just(i64::MAX)], 1..8), 3),
            cut in 0usize..8,
        ) {
            // Three columns, each a sequence of non-negative terms cut into two blocks.
            let seq: Vec<I32F32> = cols.iter().map(|c| c.iter().fold(ZERO, |a, x| add(a, I32F32::from_bits(*x)))).collect();
            let part = |lo: usize, hi: usize| -> (Vec<I32F32>, bool) {
                (cols.iter().map(|c| c.iter().skip(lo).take(hi.saturating_sub(lo)).fold(ZERO, |a, x| add(a, I32F32::from_bits(*x)))).collect(), true)
            };
            let parts = [part(0, cut), part(cut, usize::MAX)];
            prop_assert_eq!(combine_sums(&parts, 3), Some(seq));
        }
    }

    #[test]
    fn a_negative_term_refuses_to_combine() {
        let parts = [(vec![ZERO], true), (vec![ZERO], false)];
        assert_eq!(combine_sums(&parts, 1), None);
    }
}
