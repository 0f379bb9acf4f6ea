//! Small shared vocabulary: identifiers, time, CRDT primitives and record encoding.

pub mod crdt;
pub mod encode;
pub mod fault;
pub mod fs;
pub mod id;
pub mod time;
