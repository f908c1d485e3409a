//! The leader epochs of a partition replica's log: for each epoch stamped
//! on its batches (`partitionLeaderEpoch`), the offset of the first batch
//! that carries it. Replication finds where a follower's log diverges from
//! its leader's with these (Kafka's leader-epoch-checkpoint).
//!
//! Persisted beside the log meta, and always before it: a segment becomes
//! trusted by recovery (not rescanned) only once the meta's recovery point
//! passes it, and by then the epochs that start in it are in this file.
//! Epochs that start in the active segment are found again by recovery's
//! scan of it, so appends never wait for this file.

/// The file's name in the log directory.
pub(crate) const EPOCHS_FILE: &str = "leader-epoch-checkpoint";

/// Epochs in increasing order with non-decreasing start offsets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LeaderEpochs {
    entries: Vec<(i32, i64)>,
}

impl LeaderEpochs {
    /// Notes a batch of `epoch` at `base_offset`; true when it starts a new
    /// epoch. Negative epochs (clients' batches before any leader stamped
    /// them) and epochs older than the latest are not epochs of this log.
    pub(crate) fn observe(&mut self, epoch: i32, base_offset: i64) -> bool {
        if epoch < 0 {
            return false;
        }
        match self.entries.last() {
            Some(&(last, start)) if last >= epoch || start > base_offset => false,
            _ => {
                self.entries.push((epoch, base_offset));
                true
            }
        }
    }

    /// Forgets epochs that start at or past `offset`.
    pub(crate) fn truncate_to(&mut self, offset: i64) {
        while self
            .entries
            .last()
            .is_some_and(|&(_, start)| start >= offset)
        {
            self.entries.pop();
        }
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }

    pub(crate) fn entries(&self) -> &[(i32, i64)] {
        &self.entries
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut body = format!("version=1\ncount={}\n", self.entries.len());
        for (epoch, start) in &self.entries {
            body.push_str(&format!("{epoch} {start}\n"));
        }
        let crc = crc32c::crc32c(body.as_bytes());
        format!("{body}crc={crc}\n").into_bytes()
    }

    /// `None` when the file is damaged or not in this format.
    pub(crate) fn decode(bytes: &[u8]) -> Option<LeaderEpochs> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (body, crc_line) = text.trim_end_matches('\n').rsplit_once('\n')?;
        let body = format!("{body}\n");
        let crc: u32 = crc_line.strip_prefix("crc=")?.parse().ok()?;
        if crc32c::crc32c(body.as_bytes()) != crc {
            return None;
        }
        let mut lines = body.lines();
        if lines.next()? != "version=1" {
            return None;
        }
        let count: usize = lines.next()?.strip_prefix("count=")?.parse().ok()?;
        let mut out = LeaderEpochs::default();
        for line in lines {
            let (epoch, start) = line.split_once(' ')?;
            let (epoch, start) = (epoch.parse().ok()?, start.parse().ok()?);
            if !out.observe(epoch, start) {
                return None;
            }
        }
        (out.entries.len() == count).then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observe_keeps_first_starts_of_newer_epochs() {
        let mut e = LeaderEpochs::default();
        assert!(!e.observe(-1, 0), "unstamped client batches");
        assert!(e.observe(0, 0));
        assert!(!e.observe(0, 5));
        assert!(e.observe(3, 10));
        assert!(!e.observe(2, 20), "older than the latest");
        assert!(e.observe(4, 20));
        assert_eq!(e.entries(), &[(0, 0), (3, 10), (4, 20)]);
        e.truncate_to(20);
        assert_eq!(e.entries(), &[(0, 0), (3, 10)]);
        e.truncate_to(11);
        assert_eq!(e.entries(), &[(0, 0), (3, 10)]);
    }

    #[test]
    fn the_file_round_trips_and_damage_is_detected() {
        let mut e = LeaderEpochs::default();
        for (epoch, start) in [(0, 0), (2, 100), (7, 5_000)] {
            e.observe(epoch, start);
        }
        let bytes = e.encode();
        assert_eq!(LeaderEpochs::decode(&bytes), Some(e.clone()));
        assert_eq!(
            LeaderEpochs::decode(&LeaderEpochs::default().encode()),
            Some(LeaderEpochs::default())
        );
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert_ne!(LeaderEpochs::decode(&bad), Some(e.clone()), "flip at {i}");
        }
        assert_eq!(LeaderEpochs::decode(b""), None);
        assert_eq!(LeaderEpochs::decode(&bytes[..bytes.len() / 2]), None);
    }
}
