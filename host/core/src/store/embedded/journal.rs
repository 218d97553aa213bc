//! The commit journal: what makes a group of turns durable with one contiguous write.
//!
//! A durable redb commit writes about eight pages in as many places, and on a virtual disk
//! each place costs its own request: 590 µs against 230 µs for one page and an fdatasync on
//! the development machine. So a group's turns go to redb in a commit that is not flushed,
//! and their bytes to this file in one frame, written and fdatasynced in one place. The
//! file is zero-filled once at its full size, so a frame never changes its length or
//! extents and the fdatasync writes data only.
//!
//! A frame: magic `DJ01`, its sequence number (u64), its payload length (u32), a CRC-32 of
//! the three (u32), then the payload. Frames follow each other from the position the last
//! durable redb commit recorded; replay reads them in order while each is whole and
//! carries the next sequence number. A frame that does not fit goes to redb as a durable
//! commit instead (a checkpoint), and the next frame starts at 0 again.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

const MAGIC: [u8; 4] = *b"DJ01";
const HEADER: usize = 20;

/// Size of a new journal: frames of one lap between two checkpoints. Zero-filled once.
pub(super) const JOURNAL_BYTES: u64 = 4 << 20;

/// The journal file and where its next frame goes.
pub(super) struct Journal {
    file: File,
    size: u64,
    /// Where the next frame starts.
    pub(super) pos: u64,
}

/// A frame read back by [`Journal::replay`].
pub(super) struct Frame {
    pub(super) seq: u64,
    pub(super) payload: Vec<u8>,
}

impl Journal {
    /// Opens `path`, creating it zero-filled at [`JOURNAL_BYTES`] if it is missing.
    pub(super) fn open(path: &Path) -> io::Result<Self> {
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let mut journal = Self {
            size: file.metadata()?.len(),
            file,
            pos: 0,
        };
        if journal.size < JOURNAL_BYTES {
            journal.zero_fill(JOURNAL_BYTES)?;
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
        }
        Ok(journal)
    }

    /// Writes zeros from the current end to `size` and makes them durable (a journal left
    /// short by a crash while it was made keeps its frames).
    fn zero_fill(&mut self, size: u64) -> io::Result<()> {
        let zeros = vec![0u8; 1 << 20];
        let mut at = self.size;
        while at < size {
            let n = (size - at).min(zeros.len() as u64) as usize;
            self.file.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
        self.file.sync_all()?;
        self.size = size;
        Ok(())
    }

    /// The frames from `pos` on that follow sequence number `after` one by one, stopping at
    /// the first that is torn, foreign or older (a frame of an earlier lap).
    pub(super) fn replay(&self, mut pos: u64, after: u64) -> io::Result<Vec<Frame>> {
        let mut frames = Vec::new();
        let mut header = [0u8; HEADER];
        while pos + HEADER as u64 <= self.size {
            self.file.read_exact_at(&mut header, pos)?;
            let seq = u64::from_le_bytes(header[4..12].try_into().expect("8 bytes"));
            let len = u32::from_le_bytes(header[12..16].try_into().expect("4 bytes"));
            let crc = u32::from_le_bytes(header[16..20].try_into().expect("4 bytes"));
            let end = pos + (HEADER as u64) + u64::from(len);
            if header[..4] != MAGIC || seq != after + 1 + frames.len() as u64 || end > self.size {
                break;
            }
            let mut payload = vec![0u8; len as usize];
            self.file.read_exact_at(&mut payload, pos + HEADER as u64)?;
            if checksum(&header[4..16], &payload) != crc {
                break;
            }
            frames.push(Frame { seq, payload });
            pos = end;
        }
        Ok(frames)
    }

    /// The bytes a frame of `payload` bytes takes.
    pub(super) fn framed(payload: usize) -> u64 {
        (HEADER + payload) as u64
    }

    /// Whether a frame of `payload` bytes fits after the current position.
    pub(super) fn fits(&self, payload: usize) -> bool {
        self.pos + (HEADER + payload) as u64 <= self.size
    }

    /// Writes frame `seq` at the current position and waits until it is on disk; returns the
    /// position after it (the caller moves `pos` there once the group is committed).
    pub(super) fn append(&self, seq: u64, payload: &[u8]) -> io::Result<u64> {
        let len = u32::try_from(payload.len())
            .map_err(|_| io::Error::other("a journal frame over 4 GiB"))?;
        let mut frame = Vec::with_capacity(HEADER + payload.len());
        frame.extend_from_slice(&MAGIC);
        frame.extend_from_slice(&seq.to_le_bytes());
        frame.extend_from_slice(&len.to_le_bytes());
        let crc = checksum(&frame[4..16], payload);
        frame.extend_from_slice(&crc.to_le_bytes());
        frame.extend_from_slice(payload);
        self.file.write_all_at(&frame, self.pos)?;
        self.file.sync_data()?;
        Ok(self.pos + frame.len() as u64)
    }

    /// Unmakes a frame written at the current position whose group then failed: its magic is
    /// zeroed on disk, so replay never applies a group whose turns were told it failed.
    pub(super) fn retract(&self) -> io::Result<()> {
        self.file.write_all_at(&[0u8; 4], self.pos)?;
        self.file.sync_data()
    }
}

fn checksum(header: &[u8], payload: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(header);
    crc.update(payload);
    crc.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal() -> (tempfile::TempDir, Journal) {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(&dir.path().join("j")).unwrap();
        (dir, journal)
    }

    fn write(journal: &mut Journal, seq: u64, payload: &[u8]) {
        journal.pos = journal.append(seq, payload).unwrap();
    }

    fn payloads(frames: Vec<Frame>) -> Vec<(u64, Vec<u8>)> {
        frames.into_iter().map(|f| (f.seq, f.payload)).collect()
    }

    #[test]
    fn a_new_journal_is_zero_filled_at_its_full_size() {
        let (dir, journal) = journal();
        assert_eq!(
            std::fs::metadata(dir.path().join("j")).unwrap().len(),
            JOURNAL_BYTES
        );
        assert!(journal.replay(0, 0).unwrap().is_empty());
    }

    #[test]
    fn replays_the_frames_that_follow_in_order() {
        let (_dir, mut journal) = journal();
        write(&mut journal, 1, b"a");
        write(&mut journal, 2, b"bb");
        write(&mut journal, 3, b"");
        let all = payloads(journal.replay(0, 0).unwrap());
        assert_eq!(all, [(1, b"a".to_vec()), (2, b"bb".to_vec()), (3, vec![])]);
        // From the second frame's position, after the first.
        let from = Journal::framed(1);
        assert_eq!(journal.replay(from, 1).unwrap().len(), 2);
        // A mark that does not match the frame there finds nothing.
        assert!(journal.replay(from, 5).unwrap().is_empty());
    }

    #[test]
    fn a_frame_of_an_earlier_lap_ends_the_replay() {
        let (_dir, mut journal) = journal();
        write(&mut journal, 1, b"first lap, one");
        write(&mut journal, 2, b"first lap, two");
        journal.pos = 0;
        write(&mut journal, 3, b"second");
        // Frame 3 is shorter: what follows it is the middle of frame 1, then frame 2.
        assert_eq!(
            payloads(journal.replay(0, 2).unwrap()),
            [(3, b"second".to_vec())]
        );
    }

    #[test]
    fn a_torn_or_retracted_frame_ends_the_replay() {
        let (dir, mut journal) = journal();
        write(&mut journal, 1, b"kept");
        let second = journal.pos;
        write(&mut journal, 2, b"torn");
        let mut bytes = std::fs::read(dir.path().join("j")).unwrap();
        bytes[journal.pos as usize - 1] ^= 1;
        std::fs::write(dir.path().join("j"), &bytes).unwrap();
        assert_eq!(journal.replay(0, 0).unwrap().len(), 1);

        journal.pos = second;
        write(&mut journal, 2, b"whole");
        assert_eq!(journal.replay(0, 0).unwrap().len(), 2);
        journal.pos = second;
        journal.retract().unwrap();
        assert_eq!(journal.replay(0, 0).unwrap().len(), 1);
    }

    #[test]
    fn a_frame_fits_only_inside_the_file() {
        let (_dir, mut journal) = journal();
        assert!(journal.fits(JOURNAL_BYTES as usize - HEADER));
        assert!(!journal.fits(JOURNAL_BYTES as usize - HEADER + 1));
        journal.pos = JOURNAL_BYTES - HEADER as u64;
        assert!(journal.fits(0));
    }
}
