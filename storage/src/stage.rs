//! Staging: appends copy their batch straight into block-aligned DMA
//! buffers, in file order, while the flusher's previous write is still on
//! its way to the disk. The flusher then only issues writes, so the device
//! sees back-to-back writes instead of a write, a pause to copy, a write;
//! and when several stagings wait, their writes go out together.

use glommio::io::DmaBuffer;

use crate::file::{align_down, align_up};
use crate::log::State;

/// Smallest and largest staging buffer. Buffers grow while appends fill
/// them faster than the disk drains them, and shrink when it keeps up, so
/// a trickle of small appends does not allocate megabytes each time.
const STAGING_BYTES_MIN: usize = 64 << 10;
const STAGING_BYTES_MAX: usize = 4 << 20;

/// One batch inside a staging buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StagedBatch {
    pub base_offset: i64,
    pub next_offset: i64,
    pub max_timestamp: i64,
}

/// A run of batches bound for one segment, laid out as they will be on
/// disk: `buf[..head_len]` repeats the segment's partial last block (O_DIRECT
/// rewrites whole blocks), then the batches follow.
pub(crate) struct Staged {
    pub segment_base: i64,
    /// Block-aligned file position of `buf[0]`.
    pub pos: u64,
    pub head_len: usize,
    pub used: usize,
    pub buf: DmaBuffer,
    pub batches: Vec<StagedBatch>,
    /// Set once a later staging took over: nothing more goes in.
    pub closed: bool,
    /// Bytes to write when a later staging of the same segment took over
    /// this one's partial last block: then the two writes do not overlap
    /// and may be in flight together. `None`: write every block, padded.
    pub write_len: Option<usize>,
}

impl Staged {
    /// Segment size once this staging is written.
    pub(crate) fn end(&self) -> u64 {
        self.pos + self.used as u64
    }

    pub(crate) fn base_offset(&self) -> i64 {
        self.batches.first().map(|b| b.base_offset).unwrap_or(-1)
    }

    /// The partial last block this staging leaves: (its position, bytes).
    pub(crate) fn tail(&self) -> (u64, &[u8]) {
        let tail_pos = align_down(self.end());
        let from = (tail_pos - self.pos) as usize;
        (tail_pos, &self.buf.as_bytes()[from..self.used])
    }
}

impl State {
    /// Copies a stamped batch into the staging area of `segment_base`.
    pub(crate) fn stage(&mut self, segment_base: i64, data: &[u8], batch: StagedBatch) {
        let fits = self.staged.back().is_some_and(|s| {
            !s.closed && s.segment_base == segment_base && s.used + data.len() <= s.buf.len()
        });
        if !fits {
            self.open_staging(segment_base, data.len());
        }
        let s = self
            .staged
            .back_mut()
            .expect("a staging buffer was just opened");
        s.buf.as_bytes_mut()[s.used..s.used + data.len()].copy_from_slice(data);
        s.used += data.len();
        s.batches.push(batch);
    }

    fn open_staging(&mut self, segment_base: i64, need: usize) {
        let previous_full = match self.staged.back_mut() {
            Some(prev) => {
                prev.closed = true;
                prev.segment_base == segment_base
            }
            None => false,
        };
        if previous_full {
            self.staging_bytes = (self.staging_bytes * 2).min(STAGING_BYTES_MAX);
        }
        let (pos, head): (u64, Vec<u8>) = match self.staged.back_mut() {
            Some(prev) if prev.segment_base == segment_base => {
                // The partial last block moves to the new staging, so the
                // previous one writes whole blocks only.
                let (p, t) = prev.tail();
                let head = t.to_vec();
                prev.write_len = Some((p - prev.pos) as usize);
                (p, head)
            }
            Some(_) => (0, Vec::new()),
            None if self.writer.tail_segment == segment_base => {
                (self.writer.tail_pos, self.writer.tail.clone())
            }
            None => (0, Vec::new()),
        };
        let size = align_up((head.len() + need).max(self.staging_bytes) as u64) as usize;
        let mut buf = glommio::allocate_dma_buffer(size);
        buf.as_bytes_mut()[..head.len()].copy_from_slice(&head);
        self.staged.push_back(Staged {
            segment_base,
            pos,
            head_len: head.len(),
            used: head.len(),
            buf,
            batches: Vec::new(),
            closed: false,
            write_len: None,
        });
    }

    /// Hands every staging to the flusher and remembers where the last one
    /// ends, for the stagings that come after.
    pub(crate) fn take_staged(&mut self) -> Vec<Staged> {
        let taken: Vec<Staged> = self.staged.drain(..).collect();
        if let Some(last) = taken.last() {
            let (pos, tail) = last.tail();
            self.writer.tail_segment = last.segment_base;
            self.writer.tail_pos = pos;
            self.writer.tail = tail.to_vec();
            if last.used + last.used / 2 < last.buf.len() {
                self.staging_bytes = (self.staging_bytes / 2).max(STAGING_BYTES_MIN);
            }
        }
        taken
    }

    pub(crate) fn staging_bytes_initial() -> usize {
        STAGING_BYTES_MIN
    }
}
