//! tally's client side: the wire protocol (frames, messages, the key-to-token
//! hash), the async client library and the `tally` CLI.
//!
//! Not built yet: the single-node issue fills this crate. It depends on no
//! other tally crate, so that users and the fault-injection harness can take
//! it alone.
