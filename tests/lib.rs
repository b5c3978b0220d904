//! Cross-crate end-to-end scenarios live in this package's test targets; it has no library
//! code of its own (their shared sandbox fixture is `costplus_testsupport::sandbox`).
