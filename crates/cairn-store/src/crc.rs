//! CRC-32C (Castagnoli, reflected 0x82F63B78): etcd's hashes and the Raft log's records use it.
//!
//! On x86-64 with SSE4.2 (every such CPU since 2008) the CPU's `crc32` instruction computes it
//! eight bytes at a time; elsewhere a byte-wise table does. Every Raft log record is checksummed
//! when written and again when read back for apply: with the table alone that took about 6% of
//! the servers' CPU under `etcdctl check perf` (BENCHMARKS.md).

/// A running CRC-32C.
pub struct Crc32c(u32);

const fn crc32c_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

static CRC32C: [u32; 256] = crc32c_table();

impl Crc32c {
    pub fn new() -> Self {
        Crc32c(!0)
    }

    pub fn update(&mut self, bytes: &[u8]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("sse4.2") {
            // SAFETY: the CPU has SSE4.2, checked just above.
            self.0 = unsafe { update_sse42(self.0, bytes) };
            return;
        }
        self.0 = update_table(self.0, bytes);
    }

    pub fn int(&mut self, v: i64) {
        self.update(&v.to_be_bytes());
    }

    pub fn finish(&self) -> u32 {
        !self.0
    }

    /// The CRC-32C of `bytes`.
    pub fn of(bytes: &[u8]) -> u32 {
        let mut c = Self::new();
        c.update(bytes);
        c.finish()
    }
}

fn update_table(mut crc: u32, bytes: &[u8]) -> u32 {
    for b in bytes {
        crc = CRC32C[((crc ^ *b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// The same register update as [`update_table`], by the `crc32` instruction.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn update_sse42(crc: u32, bytes: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u64, _mm_crc32_u8};
    let mut words = bytes.chunks_exact(8);
    let mut wide = crc as u64;
    for word in &mut words {
        wide = _mm_crc32_u64(wide, u64::from_le_bytes(word.try_into().expect("8 bytes")));
    }
    let mut crc = wide as u32;
    for b in words.remainder() {
        crc = _mm_crc32_u8(crc, *b);
    }
    crc
}

impl Default for Crc32c {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_check_value() {
        // CRC-32C of "123456789" (RFC 3720's catalogue value).
        assert_eq!(Crc32c::of(b"123456789"), 0xE306_9283);
        assert_eq!(!update_table(!0, b"123456789"), 0xE306_9283);
    }

    #[test]
    fn the_instruction_and_the_table_agree_on_every_length_and_split() {
        let data: Vec<u8> = (0..1000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 999, 1000] {
            let want = !update_table(!0, &data[..len]);
            assert_eq!(Crc32c::of(&data[..len]), want, "length {len}");
            // Fed in two pieces at an odd split, as the records' kind byte and payload are.
            let mut c = Crc32c::new();
            let cut = len / 3;
            c.update(&data[..cut]);
            c.update(&data[cut..len]);
            assert_eq!(c.finish(), want, "length {len} split at {cut}");
        }
    }
}
