//! CRC-32C (Castagnoli, reflected 0x82F63B78): etcd's hashes and the Raft log's records use it.

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
        for b in bytes {
            self.0 = CRC32C[((self.0 ^ *b as u32) & 0xff) as usize] ^ (self.0 >> 8);
        }
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

impl Default for Crc32c {
    fn default() -> Self {
        Self::new()
    }
}
