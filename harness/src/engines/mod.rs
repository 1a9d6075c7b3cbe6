//! One module per engine: each opens its engine and implements `Engine` and `Worker`.

#[cfg(test)]
mod conformance;
#[cfg(feature = "fjall")]
pub mod fjall;
pub mod heed;
#[cfg(feature = "redb")]
pub mod redb;
#[cfg(feature = "rocksdb")]
pub mod rocksdb;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub mod walmdb;
