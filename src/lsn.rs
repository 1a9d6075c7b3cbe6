//! Log sequence numbers: the one ordering every layer shares.

/// A log sequence number: the position of a record in the log. The first record is LSN 1;
/// LSN 0 means "nothing".
pub type Lsn = u64;
