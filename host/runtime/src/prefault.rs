//! The pages an activation's first turns write, faulted in ahead.
//!
//! An instance's linear memory maps its plugin's initial memory
//! copy-on-write (`engine.rs`). The first write to a page of it faults:
//! the kernel copies the page for the instance. A page the guest read
//! before writing (a global in its data, say) was mapped read-only by the
//! read, so the write must also take that mapping away from every core
//! running the host: the kernel sends the other cores an interrupt and
//! waits for them. On a virtual machine with two cores, the first call of
//! an activation on a slot its plugin never used spent most of its time so
//! (`docs/benchmarks.md`, "Faulting in ahead the pages a first turn
//! writes").
//!
//! So the first activation of each plugin version to finish a turn after
//! `on-activate` reads from `/proc/self/pagemap` which pages of its
//! memories it has written (mapped and no longer the file's), and instances
//! made ahead of their activations (`warm.rs`) get those pages written in
//! advance with `madvise(MADV_POPULATE_WRITE)`, which faults them in
//! writable without changing what they hold. An activation then finds
//! them ready, and the faults are taken off the call's path, by the task
//! making instances. Nothing is faulted in before the first activation
//! has taught which pages, nor beyond [`MOST_PAGES`].
//!
//! An instance holds those pages whether or not its actor writes them:
//! they are the pages its plugin's first activation wrote, which other
//! actors of the same plugin write too. A slot an activation left keeps
//! the pages it wrote (`linear_memory_keep_resident`), so there this finds
//! nothing left to do.
//!
//! Only on Linux (5.14 or later for `MADV_POPULATE_WRITE`); elsewhere, or
//! where `/proc/self/pagemap` cannot be read, nothing is learned and
//! nothing faulted in.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use wasmtime::Store;

/// The most pages faulted in ahead per instance (256 KiB of 4 KiB pages):
/// a plugin whose first turns write more has the lowest of them faulted
/// in.
pub(crate) const MOST_PAGES: usize = 64;

/// The pages a plugin version's first turns write, once one of its
/// activations has shown which.
#[derive(Default)]
pub(crate) struct FirstTurnPages {
    /// Whether an activation has taken the job of learning them.
    claimed: AtomicBool,
    runs: OnceLock<Vec<Run>>,
}

/// Consecutive pages of one memory: `count` pages from page `first`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    /// The memory's place in [`Store::defined_memories`].
    memory: usize,
    first: usize,
    count: usize,
}

impl FirstTurnPages {
    /// Whether the caller is to learn the pages: true for the first to ask.
    pub(crate) fn claim(&self) -> bool {
        !self.claimed.load(Ordering::Relaxed) && !self.claimed.swap(true, Ordering::Relaxed)
    }

    /// Learns the pages the instances in `store` have written so far.
    pub(crate) fn learn<T>(&self, store: &Store<T>) {
        let runs = written_runs(store);
        tracing::debug!(
            pages = runs.iter().map(|r| r.count).sum::<usize>(),
            "learned the pages a first turn writes"
        );
        let _ = self.runs.set(runs);
    }

    /// How many pages are faulted in ahead for each instance (0 until they
    /// are learned).
    pub(crate) fn len(&self) -> usize {
        self.runs
            .get()
            .map_or(0, |runs| runs.iter().map(|r| r.count).sum())
    }

    /// Faults in writable, in the memories of `store`, the pages learned.
    /// The store's instances must run no code meanwhile.
    pub(crate) fn fault_in<T>(&self, store: &Store<T>) {
        let Some(runs) = self.runs.get() else { return };
        if runs.is_empty() {
            return;
        }
        let memories = ranges(store);
        for run in runs {
            let Some(&(base, len)) = memories.get(run.memory) else {
                continue;
            };
            let page = page_size();
            let start = run.first * page;
            let end = ((run.first + run.count) * page).min(len);
            if start < end {
                populate_write(base + start, end - start);
            }
        }
    }
}

/// Where each memory of `store` lies: its base address and accessible
/// length in bytes.
fn ranges<T>(store: &Store<T>) -> Vec<(usize, usize)> {
    store
        .defined_memories()
        .iter()
        .map(|memory| (memory.data_ptr(store) as usize, memory.data_size(store)))
        .collect()
}

/// The pages of `store`'s memories that are mapped and belong to the
/// process alone (written since they were mapped from the image), as runs,
/// at most [`MOST_PAGES`] pages.
fn written_runs<T>(store: &Store<T>) -> Vec<Run> {
    let mut runs = Vec::new();
    let mut left = MOST_PAGES;
    for (memory, (base, len)) in ranges(store).into_iter().enumerate() {
        let Some(written) = written_pages(base, len) else {
            return Vec::new();
        };
        for first in runs_of(&written) {
            if left == 0 {
                return runs;
            }
            let count = first.1.min(left);
            left -= count;
            runs.push(Run {
                memory,
                first: first.0,
                count,
            });
        }
    }
    runs
}

/// `(first, count)` for each run of `true` in `pages`.
fn runs_of(pages: &[bool]) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (i, &written) in pages.iter().enumerate() {
        if !written {
            continue;
        }
        match runs.last_mut() {
            Some((first, count)) if *first + *count == i => *count += 1,
            _ => runs.push((i, 1)),
        }
    }
    runs
}

#[cfg(target_os = "linux")]
fn page_size() -> usize {
    // SAFETY: `sysconf` only reads a system setting.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

#[cfg(not(target_os = "linux"))]
fn page_size() -> usize {
    4096
}

/// For each page of `[base, base + len)`: whether it is mapped and no
/// longer shared with a file (`/proc/self/pagemap`: bit 63 "present", bit
/// 61 "file page or shared anonymous"). `None` if the map cannot be read.
#[cfg(target_os = "linux")]
fn written_pages(base: usize, len: usize) -> Option<Vec<bool>> {
    use std::os::unix::fs::FileExt;
    const PRESENT: u64 = 1 << 63;
    const FILE_OR_SHARED: u64 = 1 << 61;
    let page = page_size();
    let pages = len / page;
    let file = std::fs::File::open("/proc/self/pagemap").ok()?;
    let mut entries = vec![0u8; pages * 8];
    file.read_exact_at(&mut entries, (base / page * 8) as u64)
        .ok()?;
    Some(
        entries
            .chunks_exact(8)
            .map(|entry| {
                let entry = u64::from_ne_bytes(entry.try_into().expect("8 bytes"));
                entry & PRESENT != 0 && entry & FILE_OR_SHARED == 0
            })
            .collect(),
    )
}

#[cfg(not(target_os = "linux"))]
fn written_pages(_base: usize, _len: usize) -> Option<Vec<bool>> {
    None
}

/// Faults `[start, start + len)` in writable. Errors (a kernel before
/// 5.14, memory short) leave the pages to fault when written, as without.
#[cfg(target_os = "linux")]
fn populate_write(start: usize, len: usize) {
    // SAFETY: the range lies inside a linear memory of a store whose
    // instances run no code now (`FirstTurnPages::fault_in`); populating
    // maps its pages writable and changes nothing they hold.
    let done = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_POPULATE_WRITE) };
    if done != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "pages not faulted in ahead");
    }
}

#[cfg(not(target_os = "linux"))]
fn populate_write(_start: usize, _len: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_join_neighbouring_pages_only() {
        let pages = [
            false, true, true, false, true, false, false, true, true, true,
        ];
        assert_eq!(runs_of(&pages), vec![(1, 2), (4, 1), (7, 3)]);
        assert_eq!(runs_of(&[false; 4]), vec![]);
    }
}
