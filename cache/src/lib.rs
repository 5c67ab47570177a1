pub mod digest;
pub use digest::{Digest, DigestParseError, Sha256Hasher};
