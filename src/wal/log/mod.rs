//! The log's files: frame and record encoding ([`record`]), segments, the archive, the
//! quarantine of what opening cuts ([`quarantine`]), the one
//! I/O trait all log file I/O goes through ([`fs`]), and recovery (a pure plan, then its
//! execution). Knows nothing above it: nothing here imports the pipeline.

pub(crate) mod archive;
pub mod fs;
pub(crate) mod op_stream;
pub(crate) mod pieces;
pub mod quarantine;
pub mod record;
pub(crate) mod recovery;
pub(crate) mod segment;
pub(crate) mod txn_payload;
