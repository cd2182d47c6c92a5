//! python-paillier 1.5 interoperability on top of the [`paillier`] library:
//!
//! - [`phe`](mod@phe): pheutil's JWK-style key files and `{"v", "e"}` ciphertexts;
//! - [`bench`](mod@bench): wall-clock timings of the library's main operations, printed
//!   by `paillier bench` (with `--vs-phe`, next to python-paillier's);
//! - the `paillier` binary (`src/main.rs`): pheutil's command line.
//!
//! The library `paillier` knows nothing of these: it does no I/O and needs no
//! base64, clap or anyhow.

pub mod bench;
pub mod phe;
