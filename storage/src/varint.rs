//! Kafka's zig-zag varints, as record fields encode them: the one reader
//! that `batch.rs` (record positions) and `records.rs` (the cleaner's view of
//! records) share, and the writer the batch builders in `testing.rs` use.

use bytes::{BufMut, BytesMut};

/// Bytes a 64-bit varint takes at most.
const VARINT_BYTES_MAX: usize = 10;

/// Reads one zig-zag varint from the front of `b`: the value and the bytes
/// it took. `None` when `b` ends inside it or it runs past 10 bytes.
pub(crate) fn read_varint(b: &[u8]) -> Option<(i64, usize)> {
    let mut raw: u64 = 0;
    for (i, byte) in b.iter().enumerate().take(VARINT_BYTES_MAX) {
        raw |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let value = (raw >> 1) as i64 ^ -((raw & 1) as i64);
            return Some((value, i + 1));
        }
    }
    None
}

/// Appends `value` as a zig-zag varint.
pub(crate) fn put_varint(out: &mut BytesMut, value: i64) {
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    while raw >= 0x80 {
        out.put_u8((raw as u8) | 0x80);
        raw >>= 7;
    }
    out.put_u8(raw as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_a_cut_varint_is_refused() {
        for v in [
            0,
            1,
            -1,
            63,
            -64,
            64,
            300,
            -300,
            i64::from(i32::MAX),
            i64::MIN,
            i64::MAX,
        ] {
            let mut out = BytesMut::new();
            put_varint(&mut out, v);
            assert_eq!(read_varint(&out), Some((v, out.len())));
            assert_eq!(read_varint(&out[..out.len() - 1]), None);
        }
        assert_eq!(read_varint(&[0x80; 11]), None);
    }
}
