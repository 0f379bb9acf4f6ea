//! Small shared vocabulary: identifiers, time, CRDT primitives, record encoding, files and
//! free space, and the memory budget.

pub mod budget;
pub mod crdt;
pub mod encode;
pub mod fault;
pub mod fs;
pub mod id;
pub mod memory;
pub mod space;
pub mod time;
