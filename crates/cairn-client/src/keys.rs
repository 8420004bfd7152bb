//! Key-range arithmetic shared by every etcd client: etcd expresses "all keys with this prefix"
//! and "all keys from here on" as a half-open range `[key, range_end)`.

/// `range_end` meaning "no upper bound" (with a non-empty key: every key >= key).
pub const RANGE_END_UNBOUNDED: &[u8] = b"\0";

/// The smallest key greater than every key that starts with `prefix`: the prefix with its last
/// byte below 0xff incremented and everything after it dropped. A prefix of only 0xff bytes (or an
/// empty one) has no such key, so the range is unbounded.
pub fn prefix_range_end(prefix: &[u8]) -> Vec<u8> {
    match prefix.iter().rposition(|&b| b != 0xff) {
        Some(i) => {
            let mut end = prefix[..=i].to_vec();
            end[i] += 1;
            end
        }
        None => RANGE_END_UNBOUNDED.to_vec(),
    }
}

/// The `(key, range_end)` pair of a request covering every key that starts with `prefix`.
/// An empty prefix means every key, which etcd spells `("\0", "\0")`.
pub fn prefix_range(prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    if prefix.is_empty() {
        (RANGE_END_UNBOUNDED.to_vec(), RANGE_END_UNBOUNDED.to_vec())
    } else {
        (prefix.to_vec(), prefix_range_end(prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_range_end(b"abc"), b"abd");
        assert_eq!(prefix_range_end(b"bench/"), b"bench0");
    }

    #[test]
    fn trailing_ff_bytes_are_dropped() {
        assert_eq!(prefix_range_end(&[b'a', 0xff, 0xff]), b"b");
        assert_eq!(prefix_range_end(&[0x01, 0xfe, 0xff]), vec![0x01, 0xff]);
    }

    #[test]
    fn all_ff_or_empty_prefix_is_unbounded() {
        assert_eq!(prefix_range_end(&[0xff, 0xff]), RANGE_END_UNBOUNDED);
        assert_eq!(prefix_range_end(b""), RANGE_END_UNBOUNDED);
    }

    #[test]
    fn empty_prefix_covers_every_key() {
        assert_eq!(prefix_range(b""), (b"\0".to_vec(), b"\0".to_vec()));
        assert_eq!(prefix_range(b"a"), (b"a".to_vec(), b"b".to_vec()));
    }
}
