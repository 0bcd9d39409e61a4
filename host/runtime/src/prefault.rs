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
//! So one activation of each plugin version notes, before `on-activate`,
//! which pages of its memories are written already (by instantiation, or
//! kept from the slot's last user), and after its first batch of turns,
//! which it has written since. It reads both from `/proc/self/pagemap`:
//! a written page is mapped, the process's own and no longer the file's.
//! Instances made ahead of their activations (`warm.rs`) then get those
//! pages written in advance with `madvise(MADV_POPULATE_WRITE)`, which
//! faults them in writable without changing what they hold. The pages the
//! first turns only read (a string in the plugin's data the host copies
//! out, say; the kernel maps a read page's neighbours with it) are learned
//! too, mapped and still the file's, and faulted in read-only with
//! `MADV_POPULATE_READ`: a slot prepared while the host is idle otherwise
//! takes that read fault at its first call, where a slot a deactivated
//! actor left keeps the page mapped. An activation
//! finds them ready, and the faults are taken off the call's path, by the
//! task making instances. An activation in a crowd that finds no
//! instance made ahead (the pool runs dry) faults them in itself as soon
//! as it has instantiated. The faults stay on its path, but a page faulted
//! in writable before anything reads it interrupts no other core, and in a
//! crowd the other cores run the host's threads. Nothing is faulted in
//! before an activation has shown which pages, nor more than
//! [`MOST_PAGES`] of them, nor those a memory holds already (one read of
//! the page map tells).
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
use std::sync::{Mutex, OnceLock, PoisonError};

use wasmtime::Store;

/// The most pages faulted in ahead per instance (256 KiB with 4 KiB
/// pages): a plugin whose first turns write more has the lowest of them
/// faulted in.
pub(crate) const MOST_PAGES: usize = 64;

/// The pages a plugin version's first turns write, once one of its
/// activations has shown which.
#[derive(Default)]
pub(crate) struct FirstTurnPages {
    /// Whether an activation has taken the job of learning them.
    claimed: AtomicBool,
    /// What that activation's memories held mapped and written before its
    /// first turn (by instantiation, or kept from the slot's last user):
    /// those pages are not learned.
    before: Mutex<Vec<Vec<Page>>>,
    /// The pages learned, once they are.
    learned: OnceLock<Learned>,
}

/// The pages a plugin version's first turns write, and those they only
/// read.
#[derive(Default)]
struct Learned {
    written: Vec<Run>,
    /// Pages of the plugin's image read (a string in its data, say) and
    /// not written: a read maps such a page with a fault of its own.
    read: Vec<Run>,
}

/// What a page of a linear memory holds, as `/proc/self/pagemap` tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Page {
    /// Not mapped: the next access faults.
    Absent,
    /// Mapped and still shared (the plugin's image, read).
    Read,
    /// Mapped and the process's own: written (or written ahead).
    Written,
}

/// Consecutive pages of one memory: `count` pages from page `first`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    /// The memory's place in [`Store::defined_memories`], the same for
    /// every instance of one plugin version.
    memory: usize,
    first: usize,
    count: usize,
}

impl FirstTurnPages {
    /// Takes the job of learning the pages, unless an activation of this
    /// version has; `store` is the taker's, before its first turn. True if
    /// the caller took it: it then [`learn`](Self::learn)s, or
    /// [`give_up`](Self::give_up)s if it ends first.
    pub(crate) fn start_learning<T>(&self, store: &Store<T>) -> bool {
        if self.claimed.load(Ordering::Relaxed) || self.claimed.swap(true, Ordering::Relaxed) {
            return false;
        }
        let before = ranges(store)
            .into_iter()
            .map(|(base, len)| pages(base, len).unwrap_or_default())
            .collect();
        *self.before.lock().unwrap_or_else(PoisonError::into_inner) = before;
        true
    }

    /// Learns the pages of `store`'s memories written since
    /// [`start_learning`](Self::start_learning).
    pub(crate) fn learn<T>(&self, store: &Store<T>) {
        let before =
            std::mem::take(&mut *self.before.lock().unwrap_or_else(PoisonError::into_inner));
        let (mut written, mut read) = (Vec::new(), Vec::new());
        for (memory, (base, len)) in ranges(store).into_iter().enumerate() {
            let Some(now) = pages(base, len) else {
                // Nothing is learned where the map cannot be read.
                let _ = self.learned.set(Learned::default());
                return;
            };
            let was = before.get(memory).map_or(&[][..], Vec::as_slice);
            let was = |page: usize| was.get(page).copied().unwrap_or(Page::Absent);
            let since = |state: Page, before: &[Page]| -> Vec<bool> {
                now.iter()
                    .enumerate()
                    .map(|(page, &now)| now == state && before.contains(&was(page)))
                    .collect()
            };
            written.push(since(Page::Written, &[Page::Absent, Page::Read]));
            read.push(since(Page::Read, &[Page::Absent]));
        }
        let learned = Learned {
            written: runs_within(&written, MOST_PAGES),
            read: runs_within(&read, MOST_PAGES),
        };
        tracing::debug!(
            written = pages_in(&learned.written),
            read = pages_in(&learned.read),
            "learned the pages a first turn writes and reads"
        );
        let _ = self.learned.set(learned);
    }

    /// Gives the job of learning back: the activation that took it ended
    /// before its first turns did.
    pub(crate) fn give_up(&self) {
        self.before
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.claimed.store(false, Ordering::Relaxed);
    }

    /// How many pages are learned (0 until they are, and where they cannot
    /// be).
    pub(crate) fn len(&self) -> usize {
        self.learned
            .get()
            .map_or(0, |learned| pages_in(&learned.written))
    }

    /// Faults in, in the memories of `store`, the pages learned: writable
    /// those written, read-only those read. Pages the memory holds so
    /// already are left alone: a slot its plugin's last activation left
    /// keeps the pages that activation wrote, and faulting them in again
    /// would cost a walk of each. The store's instances must run no code
    /// meanwhile.
    pub(crate) fn fault_in<T>(&self, store: &Store<T>) {
        let Some(learned) = self
            .learned
            .get()
            .filter(|learned| !learned.written.is_empty() || !learned.read.is_empty())
        else {
            return;
        };
        let page = page_size();
        for (memory, (base, len)) in ranges(store).into_iter().enumerate() {
            // Every instance of a version has the same memories.
            let runs: Vec<(Run, Populate)> =
                (learned.written.iter().map(|&run| (run, Populate::Write)))
                    .chain(learned.read.iter().map(|&run| (run, Populate::Read)))
                    .filter(|(run, _)| run.memory == memory)
                    .map(|(run, populate)| {
                        let count = run.count.min((len / page).saturating_sub(run.first));
                        (Run { count, ..run }, populate)
                    })
                    .filter(|(run, _)| run.count > 0)
                    .collect();
            let (Some(lo), Some(hi)) = (
                runs.iter().map(|(run, _)| run.first).min(),
                runs.iter().map(|(run, _)| run.first + run.count).max(),
            ) else {
                continue;
            };
            // One read of the page map for the memory's runs; where it
            // cannot be read, every page is faulted in.
            let held = pages(base + lo * page, (hi - lo) * page);
            for (run, populate) in runs {
                for (first, count) in still_to_fault(run, populate, held.as_deref(), lo) {
                    populate.fault_in(base + first * page, count * page);
                }
            }
        }
    }
}

/// `(first, count)` for each stretch of `run`'s pages that `held` (what
/// the memory's pages from page `lo` on hold, if known) does not hold as
/// `populate` would leave them.
fn still_to_fault(
    run: Run,
    populate: Populate,
    held: Option<&[Page]>,
    lo: usize,
) -> Vec<(usize, usize)> {
    let needed: Vec<bool> = (run.first..run.first + run.count)
        .map(|at| {
            held.and_then(|held| held.get(at - lo))
                .is_none_or(|&held| populate.needed(held))
        })
        .collect();
    runs_of(&needed)
        .into_iter()
        .map(|(offset, count)| (run.first + offset, count))
        .collect()
}

/// How many pages `runs` hold.
fn pages_in(runs: &[Run]) -> usize {
    runs.iter().map(|run| run.count).sum()
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

/// The runs of pages written in `written` (a list of pages per memory),
/// the lowest `most` pages of them.
fn runs_within(written: &[Vec<bool>], most: usize) -> Vec<Run> {
    let mut runs = Vec::new();
    let mut left = most;
    for (memory, pages) in written.iter().enumerate() {
        for (first, count) in runs_of(pages) {
            if left == 0 {
                return runs;
            }
            let count = count.min(left);
            left -= count;
            runs.push(Run {
                memory,
                first,
                count,
            });
        }
    }
    runs
}

/// `(first, count)` for each run of `true` in `pages`.
fn runs_of(pages: &[bool]) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (page, &written) in pages.iter().enumerate() {
        if !written {
            continue;
        }
        match runs.last_mut() {
            Some((first, count)) if *first + *count == page => *count += 1,
            _ => runs.push((page, 1)),
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

/// What each page of `[base, base + len)` holds: written if it is mapped,
/// no longer shared with a file, and the process's own; read if it is
/// mapped otherwise (`/proc/self/pagemap`: bit 63 "present", bit 61 "file
/// page or shared anonymous", bit 56 "exclusively mapped", which the shared
/// zero page a read maps is not). `None` if the map cannot be read.
#[cfg(target_os = "linux")]
fn pages(base: usize, len: usize) -> Option<Vec<Page>> {
    use std::os::unix::fs::FileExt;
    const PRESENT: u64 = 1 << 63;
    const FILE_OR_SHARED: u64 = 1 << 61;
    const EXCLUSIVE: u64 = 1 << 56;
    // Kept open: activations in a crowd read it, and opening it each time
    // cost each of them two system calls more. A failed open is tried
    // again at the next read.
    static PAGEMAP: OnceLock<std::fs::File> = OnceLock::new();
    let page = page_size();
    let pages = len / page;
    let file = match PAGEMAP.get() {
        Some(file) => file,
        None => {
            let opened = std::fs::File::open("/proc/self/pagemap").ok()?;
            PAGEMAP.get_or_init(|| opened)
        }
    };
    let mut entries = vec![0u8; pages * 8];
    file.read_exact_at(&mut entries, (base / page * 8) as u64)
        .ok()?;
    Some(
        entries
            .chunks_exact(8)
            .map(|entry| {
                let mut word = [0u8; 8];
                word.copy_from_slice(entry);
                let entry = u64::from_ne_bytes(word);
                if entry & PRESENT == 0 {
                    Page::Absent
                } else if entry & EXCLUSIVE != 0 && entry & FILE_OR_SHARED == 0 {
                    Page::Written
                } else {
                    Page::Read
                }
            })
            .collect(),
    )
}

#[cfg(not(target_os = "linux"))]
fn pages(_base: usize, _len: usize) -> Option<Vec<Page>> {
    None
}

/// How pages are faulted in ahead.
#[derive(Clone, Copy)]
enum Populate {
    /// Writable: the process's own copy, as a write would make it.
    Write,
    /// Readable: mapped as a read would map it, still shared.
    Read,
}

impl Populate {
    /// Whether a page holding `held` is still to be faulted in so.
    fn needed(self, held: Page) -> bool {
        match self {
            Populate::Write => held != Page::Written,
            Populate::Read => held == Page::Absent,
        }
    }

    /// Faults `[start, start + len)` in. Errors (a kernel before 5.14,
    /// memory short) leave the pages to fault when touched, as without.
    #[cfg(target_os = "linux")]
    fn fault_in(self, start: usize, len: usize) {
        let advice = match self {
            Populate::Write => libc::MADV_POPULATE_WRITE,
            Populate::Read => libc::MADV_POPULATE_READ,
        };
        // SAFETY: the range lies inside a linear memory of a store whose
        // instances run no code now (`FirstTurnPages::fault_in`);
        // populating maps its pages and changes nothing they hold.
        let done = unsafe { libc::madvise(start as *mut libc::c_void, len, advice) };
        if done != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "pages not faulted in ahead");
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn fault_in(self, _start: usize, _len: usize) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_join_neighbouring_pages_and_stop_at_the_most() {
        let pages = vec![
            false, true, true, false, true, false, false, true, true, true,
        ];
        assert_eq!(runs_of(&pages), vec![(1, 2), (4, 1), (7, 3)]);
        assert_eq!(runs_of(&[false; 4]), vec![]);
        let run = |memory, first, count| Run {
            memory,
            first,
            count,
        };
        let memories = [pages, vec![true, true]];
        assert_eq!(
            runs_within(&memories, 64),
            vec![run(0, 1, 2), run(0, 4, 1), run(0, 7, 3), run(1, 0, 2)]
        );
        assert_eq!(
            runs_within(&memories, 4),
            vec![run(0, 1, 2), run(0, 4, 1), run(0, 7, 1)]
        );
    }

    #[test]
    fn pages_held_already_are_not_faulted_in_again() {
        use Page::{Absent, Read, Written};
        let run = Run {
            memory: 0,
            first: 11,
            count: 4,
        };
        // The page map read from page 10 on.
        let held = [Written, Written, Absent, Read, Written, Absent];
        assert_eq!(
            still_to_fault(run, Populate::Write, Some(&held), 10),
            vec![(12, 2)]
        );
        assert_eq!(
            still_to_fault(run, Populate::Read, Some(&held), 10),
            vec![(12, 1)]
        );
        // A used slot holding them all: nothing to do.
        assert_eq!(
            still_to_fault(run, Populate::Write, Some(&[Written; 6]), 10),
            vec![]
        );
        // Where the map cannot be read, the whole run.
        assert_eq!(
            still_to_fault(run, Populate::Write, None, 10),
            vec![(11, 4)]
        );
    }

    /// A memory file of four pages, page `i` filled with byte `i`, mapped
    /// privately and writable, as an instance maps its plugin's image.
    #[cfg(target_os = "linux")]
    fn image_mapping(file: &std::fs::File, page: usize) -> usize {
        use std::os::fd::AsRawFd;
        // SAFETY: a new private mapping of a file this test owns, at an
        // address the kernel picks.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4 * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        base as usize
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn pages_written_and_read_are_found_and_faulting_them_in_ahead_keeps_their_contents() {
        use std::io::Write;
        use std::os::fd::FromRawFd;
        let page = page_size();
        // SAFETY: `memfd_create` makes a new file; its descriptor is owned
        // by the `File` from here on.
        let mut file = unsafe {
            let fd = libc::memfd_create(c"prefault-test".as_ptr(), 0);
            assert!(fd >= 0);
            std::fs::File::from_raw_fd(fd)
        };
        for i in 0..4u8 {
            file.write_all(&vec![i; page]).unwrap();
        }

        // One instance reads pages 0 and 2, and reads then writes page 1.
        let first = image_mapping(&file, page);
        // SAFETY: every address lies inside the four pages just mapped.
        unsafe {
            let at = |i: usize| (first + i * page) as *mut u8;
            assert_eq!(at(0).read_volatile(), 0);
            assert_eq!(at(2).read_volatile(), 2);
            assert_eq!(at(1).read_volatile(), 1);
            at(1).add(8).write_volatile(0xaa);
        }
        // Pages 0 and 2 are mapped and still the file's; page 3 may be too
        // (the kernel maps a read page's neighbours with it).
        let first_pages = pages(first, 4 * page).unwrap();
        assert_eq!(first_pages[..3], [Page::Read, Page::Written, Page::Read]);
        assert_ne!(first_pages[3], Page::Written);

        // Another instance gets page 1 written ahead, and page 2 read ahead:
        // page 1 is its own now, page 2 mapped and still shared, and both
        // still hold the file's contents.
        let second = image_mapping(&file, page);
        assert_eq!(pages(second, 4 * page).unwrap(), [Page::Absent; 4]);
        Populate::Write.fault_in(second + page, page);
        Populate::Read.fault_in(second + 2 * page, page);
        let second_pages = pages(second, 4 * page).unwrap();
        assert_eq!(second_pages[1..3], [Page::Written, Page::Read]);
        assert_ne!(second_pages[0], Page::Written);
        assert_ne!(second_pages[3], Page::Written);
        // SAFETY: the second mapping's page 2, read only.
        let read = unsafe { std::slice::from_raw_parts((second + 2 * page) as *const u8, page) };
        assert!(read.iter().all(|&byte| byte == 2));
        // SAFETY: the second mapping's page 1, read only.
        let contents = unsafe { std::slice::from_raw_parts((second + page) as *const u8, page) };
        assert!(contents.iter().all(|&byte| byte == 1));

        for base in [first, second] {
            // SAFETY: the mappings made above, no longer used.
            unsafe { libc::munmap(base as *mut libc::c_void, 4 * page) };
        }
    }
}
