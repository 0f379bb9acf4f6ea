//! Versioned layout (placeholder while assign is measured).
