//! The log's metadata file (`meta`): the log start offset and the recovery
//! point, with a CRC, rewritten atomically (with the leader-epoch checkpoint
//! before it) whenever either moves. Recovery reads it first.

use std::rc::Rc;

use crate::epochs::EPOCHS_FILE;
use crate::error::Result;
use crate::file;

use super::Inner;

pub(super) const META_FILE: &str = "meta";

/// What the metadata file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Meta {
    pub log_start_offset: i64,
    pub recovery_point: i64,
}

impl Meta {
    pub(super) fn encode(&self) -> Vec<u8> {
        let body = format!(
            "log_start_offset={}\nrecovery_point={}\n",
            self.log_start_offset, self.recovery_point
        );
        let crc = crc32c::crc32c(body.as_bytes());
        format!("{body}crc={crc}\n").into_bytes()
    }

    /// `None` when the file is damaged (then recovery scans everything).
    pub(super) fn decode(bytes: &[u8]) -> Option<Meta> {
        let text = std::str::from_utf8(bytes).ok()?;
        let crc_at = text.find("crc=")?;
        let (body, crc_line) = text.split_at(crc_at);
        let crc: u32 = crc_line.trim_start_matches("crc=").trim().parse().ok()?;
        if crc32c::crc32c(body.as_bytes()) != crc {
            return None;
        }
        let mut meta = Meta {
            log_start_offset: 0,
            recovery_point: 0,
        };
        for line in body.lines() {
            let (k, v) = line.split_once('=')?;
            let v: i64 = v.parse().ok()?;
            match k {
                "log_start_offset" => meta.log_start_offset = v,
                "recovery_point" => meta.recovery_point = v,
                _ => return None,
            }
        }
        Some(meta)
    }
}

/// Writes the metadata file; `recovery_point` = None keeps the current one.
pub(super) async fn persist_meta(inner: &Rc<Inner>, recovery_point: Option<i64>) -> Result<()> {
    let (path, meta, epochs_path, epochs) = {
        let mut st = inner.state.borrow_mut();
        if let Some(rp) = recovery_point {
            st.set_recovery_point(rp);
        }
        (
            st.dir().join(META_FILE),
            Meta {
                log_start_offset: st.log_start_offset(),
                recovery_point: st.recovery_point(),
            },
            st.dir().join(EPOCHS_FILE),
            st.epochs().encode(),
        )
    };
    // Before the meta: a recovery point that trusts a segment must find
    // the epochs starting in it in the file (see `epochs.rs`).
    file::write_atomic(&epochs_path, epochs).await?;
    file::write_atomic(&path, meta.encode()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips_and_detects_damage() {
        let m = Meta {
            log_start_offset: 7,
            recovery_point: 42,
        };
        let mut b = m.encode();
        assert_eq!(Meta::decode(&b), Some(m));
        b[17] ^= 1;
        assert_eq!(Meta::decode(&b), None);
    }
}
