//! Tests that need a downloaded asset (SmolLM2's GGUF, MovieLens-100k, a wgpu adapter) skip with
//! a note where it is missing, so a fresh clone's `cargo test` passes; `SOFT_REQUIRE_MODELS=1`
//! (set by scripts/test.sh once its set-up has fetched them) turns every such skip into a
//! failure, so a test that checks nothing can never pass there.

/// The variable that makes missing assets fail the tests.
pub(crate) const REQUIRE_ENV: &str = "SOFT_REQUIRE_MODELS";

/// Whether missing assets fail the tests (`SOFT_REQUIRE_MODELS=1`).
pub(crate) fn required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1")
}

/// `found`, or `None` with a note when the asset `what` is missing; a test failure instead when
/// [`required`].
pub(crate) fn present_or_required<T>(what: &str, found: Option<T>) -> Option<T> {
    if found.is_none() {
        assert!(!required(), "{what} is missing but {REQUIRE_ENV}=1 requires it (run scripts/setup.sh)");
        eprintln!("skipped: {what} is missing (set {REQUIRE_ENV}=1 to make this a failure)");
    }
    found
}
