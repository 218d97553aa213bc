//! The commit journal: what makes a group of turns durable with one contiguous write.
//!
//! A durable redb commit writes about eight pages in as many places, and on a virtual disk
//! each place costs its own request (590 µs against 230 µs for one page and an fdatasync on
//! the development machine). So a group's turns go to a journal file as one frame, written
//! and fdatasynced in one place, and reach the database later, many groups in one commit
//! (`checkpoint`). Each file is zero-filled once, so a frame normally changes no length or
//! extent and the fdatasync writes data only; a frame past the end simply extends the file.
//!
//! A frame: magic `DJ02`, its sequence number (u64), its payload length (u32), a CRC-32 of
//! the number, the length and the payload (u32), then the payload. A file's frames follow each other from offset 0 with
//! consecutive sequence numbers; reading stops at the first frame that is torn, retracted,
//! or not the next number (an older lap's leftovers).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

const MAGIC: [u8; 4] = *b"DJ02";
const HEADER: usize = 20;

/// Size a new journal file is zero-filled to.
pub(super) const JOURNAL_BYTES: u64 = 4 << 20;

/// One journal file.
pub(super) struct Journal {
    file: File,
}

/// The journal as the writing turn uses it (only the holder of `writing` touches it).
pub(super) struct Log {
    /// Two files, used in turn: frames go to one while the other's reach the database.
    pub(super) files: [Arc<Journal>; 2],
    /// The file new frames go to.
    pub(super) current: usize,
    /// Where in it the next frame goes.
    pub(super) pos: u64,
    /// The last frame written.
    pub(super) seq: u64,
    /// Set when a failed frame could not be retracted: every later write fails with it.
    pub(super) broken: Option<String>,
}

/// A frame read back by [`Journal::frames`].
pub(super) struct Frame {
    pub(super) seq: u64,
    pub(super) payload: Vec<u8>,
}

impl Journal {
    /// Opens `path`, zero-filling it to [`JOURNAL_BYTES`] if it is shorter.
    pub(super) fn open(path: &Path) -> io::Result<Self> {
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let size = file.metadata()?.len();
        if size < JOURNAL_BYTES {
            // From the current end only: a file left short by a crash keeps its frames.
            let zeros = vec![0u8; 1 << 20];
            let mut at = size;
            while at < JOURNAL_BYTES {
                let n = (JOURNAL_BYTES - at).min(zeros.len() as u64) as usize;
                file.write_all_at(&zeros[..n], at)?;
                at += n as u64;
            }
            file.sync_all()?;
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
        }
        Ok(Self { file })
    }

    /// The file's frames from offset 0 while each is whole and numbered one after the
    /// previous one.
    pub(super) fn frames(&self) -> io::Result<Vec<Frame>> {
        let size = self.file.metadata()?.len();
        let mut frames: Vec<Frame> = Vec::new();
        let mut pos = 0u64;
        let mut header = [0u8; HEADER];
        while pos + HEADER as u64 <= size {
            self.file.read_exact_at(&mut header, pos)?;
            let seq = u64::from_le_bytes(header[4..12].try_into().expect("8 bytes"));
            let len = u32::from_le_bytes(header[12..16].try_into().expect("4 bytes"));
            let crc = u32::from_le_bytes(header[16..20].try_into().expect("4 bytes"));
            let end = pos + (HEADER as u64) + u64::from(len);
            let follows = frames.last().is_none_or(|last| last.seq + 1 == seq);
            if header[..4] != MAGIC || !follows || end > size {
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

    /// Writes frame `seq` at `pos` and waits until it is on disk; returns the offset after it.
    pub(super) fn append(&self, pos: u64, seq: u64, payload: &[u8]) -> io::Result<u64> {
        let len = u32::try_from(payload.len())
            .map_err(|_| io::Error::other("a journal frame over 4 GiB"))?;
        let mut frame = Vec::with_capacity(HEADER + payload.len());
        frame.extend_from_slice(&MAGIC);
        frame.extend_from_slice(&seq.to_le_bytes());
        frame.extend_from_slice(&len.to_le_bytes());
        let crc = checksum(&frame[4..16], payload);
        frame.extend_from_slice(&crc.to_le_bytes());
        frame.extend_from_slice(payload);
        self.file.write_all_at(&frame, pos)?;
        self.file.sync_data()?;
        Ok(pos + frame.len() as u64)
    }

    /// Unmakes a frame written at `pos` whose group then failed: its magic is zeroed on
    /// disk, so no replay applies a group whose turns were told it failed.
    pub(super) fn retract(&self, pos: u64) -> io::Result<()> {
        self.file.write_all_at(&[0u8; 4], pos)?;
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

    fn payloads(frames: Vec<Frame>) -> Vec<(u64, Vec<u8>)> {
        frames.into_iter().map(|f| (f.seq, f.payload)).collect()
    }

    #[test]
    fn a_new_journal_is_zero_filled_and_empty() {
        let (dir, journal) = journal();
        assert_eq!(
            std::fs::metadata(dir.path().join("j")).unwrap().len(),
            JOURNAL_BYTES
        );
        assert!(journal.frames().unwrap().is_empty());
    }

    #[test]
    fn reads_back_the_frames_that_follow_in_order() {
        let (_dir, journal) = journal();
        let pos = journal.append(0, 7, b"a").unwrap();
        let pos = journal.append(pos, 8, b"bb").unwrap();
        journal.append(pos, 9, b"").unwrap();
        assert_eq!(
            payloads(journal.frames().unwrap()),
            [(7, b"a".to_vec()), (8, b"bb".to_vec()), (9, vec![])]
        );
    }

    #[test]
    fn a_frame_of_an_earlier_lap_ends_the_reading() {
        let (_dir, journal) = journal();
        let pos = journal.append(0, 1, b"first lap, one").unwrap();
        journal.append(pos, 2, b"first lap, two").unwrap();
        let pos = journal.append(0, 5, b"second lap").unwrap();
        // What follows frame 5 is the middle of frame 1, then frame 2: neither follows.
        assert!(pos < 2 * HEADER as u64 + 28);
        assert_eq!(
            payloads(journal.frames().unwrap()),
            [(5, b"second lap".to_vec())]
        );
    }

    #[test]
    fn a_torn_or_retracted_frame_ends_the_reading() {
        let (dir, journal) = journal();
        let second = journal.append(0, 1, b"kept").unwrap();
        let end = journal.append(second, 2, b"torn").unwrap();
        let path = dir.path().join("j");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[end as usize - 1] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(journal.frames().unwrap().len(), 1);

        journal.append(second, 2, b"whole").unwrap();
        assert_eq!(journal.frames().unwrap().len(), 2);
        journal.retract(second).unwrap();
        assert_eq!(journal.frames().unwrap().len(), 1);
    }

    #[test]
    fn a_frame_past_the_end_extends_the_file() {
        let (_dir, journal) = journal();
        let big = vec![3u8; JOURNAL_BYTES as usize];
        let pos = journal.append(0, 1, b"small").unwrap();
        journal.append(pos, 2, &big).unwrap();
        let frames = journal.frames().unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1].payload, big);
    }
}
