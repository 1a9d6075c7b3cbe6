//! The workload both benchmarks use: 1-op transactions of a random 16-byte key and a
//! 100-byte value (50 random bytes, then 50 bytes of text), from a deterministic generator.

use std::time::{SystemTime, UNIX_EPOCH};

use walmdb::{Op, Record, TxnRecord};

/// xorshift64*: a small deterministic generator, so the crate needs no `rand` dev-dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let r = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
    }
}

const TEXT: &[u8] = b"user profile: status=active; plan=standard; region=eu-west; \
                      flags=none; the quick brown fox jumps over the lazy dog. ";

pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A 100-byte value: 50 random bytes, then 50 bytes of repetitive text.
pub fn value(rng: &mut Rng) -> Vec<u8> {
    let mut v = vec![0u8; 100];
    rng.fill(&mut v[..50]);
    v[50..].copy_from_slice(&TEXT[..50]);
    v
}

/// A 1-op transaction: a put of a random 16-byte key and a 100-byte value.
pub fn txn(rng: &mut Rng) -> Record {
    let mut key = vec![0u8; 16];
    rng.fill(&mut key);
    Record::Txn(TxnRecord {
        commit_micros: now_micros(),
        ops: vec![Op::Put {
            table: "users".into(),
            key,
            value: value(rng),
        }],
    })
}
