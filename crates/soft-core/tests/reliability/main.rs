//! The reliability suite of the core: every input format fed hand-made bad files (`bad_input`)
//! and randomly damaged ones (`corruption`). `cargo test --release -p soft-core --test reliability`.
//! The kill/resume tests of the binary are in the workspace's tests/reliability.rs.

mod bad_input;
mod corruption;
mod support;
