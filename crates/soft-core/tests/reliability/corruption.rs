//! Randomised corruption: valid files of every format, truncated, bit-flipped or overwritten at
//! random offsets (proptest, a bounded number of cases per format). A loader must return an error
//! naming a file of the set, or a valid value; it must never panic or hang. A checkpoint must
//! always be refused: its checksums see every change. Failing cases found are kept as fixed
//! cases in `bad_input.rs`.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestRunner};

use crate::bad_input::*;
use crate::support::scratch;

/// How one valid file is damaged.
#[derive(Debug, Clone)]
enum Damage {
    /// Keep the bytes before the offset.
    Truncate(Index),
    /// XOR one byte with a non-zero mask.
    Flip(Index, u8),
    /// Overwrite up to 8 bytes from the offset with one value (a length or count gone wild).
    Overwrite(Index, usize, u8),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<Index>().prop_map(Damage::Truncate),
        (any::<Index>(), 1..=255u8).prop_map(|(at, mask)| Damage::Flip(at, mask)),
        (any::<Index>(), 1..=8usize, prop_oneof![Just(0u8), Just(0xff), Just(0x7f), any::<u8>()])
            .prop_map(|(at, n, b)| Damage::Overwrite(at, n, b)),
    ]
}

fn apply(bytes: &[u8], damage: &Damage) -> Vec<u8> {
    let mut out = bytes.to_vec();
    match *damage {
        Damage::Truncate(ref at) => out.truncate(at.index(bytes.len())),
        Damage::Flip(ref at, mask) => out[at.index(bytes.len())] ^= mask,
        Damage::Overwrite(ref at, n, b) => {
            let start = at.index(bytes.len());
            let end = (start + n).min(out.len());
            out[start..end].fill(b);
        }
    }
    out
}

/// Damages one of `files` of `format`'s valid set per case and loads the set. With `reseal`,
/// the checkpoint's checksums are rewritten after the damage, so the file's own loader is
/// reached; with `must_fail`, every damaged set must be refused.
fn fuzz(format: &'static Format, files: &[&str], cases: u32, reseal: bool, must_fail: bool) {
    let dir = scratch(&format!("fuzz-{}", format.name.replace(' ', "-")));
    (format.setup)(&dir);
    let all = every_file(&dir);
    let valid: Vec<(PathBuf, Vec<u8>)> = all.iter().map(|p| (p.clone(), std::fs::read(p).unwrap())).collect();
    let targets: Vec<usize> =
        files.iter().map(|f| valid.iter().position(|(p, _)| *p == dir.join(f)).expect("a file of the set")).collect();
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&(any::<Index>(), damage()), |(which, damage)| {
        for (path, bytes) in &valid {
            std::fs::write(path, bytes).unwrap();
        }
        let (path, bytes) = &valid[targets[which.index(targets.len())]];
        let damaged = apply(bytes, &damage);
        std::fs::write(path, &damaged).unwrap();
        if reseal {
            soft_core::checksums::write_manifest(&dir.join("epoch-001")).unwrap();
        }
        match (format.load)(&dir) {
            Ok(()) => prop_assert!(!must_fail || damaged == *bytes, "{}: a damaged set was accepted", path.display()),
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.contains(&dir.display().to_string()), "the error names no file of the set: {msg}");
                prop_assert!(msg.len() < 4_000, "an unreadably long message ({} bytes)", msg.len());
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{}: {e}", format.name);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every regular file under `dir`, sorted.
fn every_file(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(every_file(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Cases per format: enough to reach every header field of these small files, few enough for
/// the whole suite to take seconds.
const CASES: u32 = 160;

#[test]
fn damaged_gguf_is_an_error_or_a_valid_file() {
    fuzz(&GGUF, &["m.gguf"], 2 * CASES, false, false);
}

#[test]
fn damaged_safetensors_and_hf_files_are_errors_or_valid() {
    fuzz(&HF, &["model.safetensors", "config.json", "tokenizer.json"], CASES, false, false);
}

#[test]
fn damaged_peft_adapters_are_errors_or_valid() {
    fuzz(&PEFT, &["adapter_model.safetensors", "adapter_config.json"], CASES, false, false);
}

#[test]
fn damaged_llara_projectors_are_errors_or_valid() {
    fuzz(&LLARA, &["projector.safetensors"], CASES, false, false);
}

#[test]
fn a_damaged_checkpoint_is_always_refused() {
    let files = [
        "adapter/adapter_model.safetensors",
        "adapter/adapter_config.json",
        "optimizer.bpk",
        "state.json",
        "checksums.json",
    ]
    .map(|f| Box::leak(format!("epoch-001/{f}").into_boxed_str()) as &str);
    fuzz(&CHECKPOINT, &files, CASES / 2, false, true);
}

/// Beneath the checksums: each checkpoint file's own loader, given damaged bytes.
#[test]
fn damaged_checkpoint_files_behind_valid_checksums_are_errors_or_valid() {
    let files = ["optimizer.bpk", "state.json", "adapter/adapter_model.safetensors"]
        .map(|f| Box::leak(format!("epoch-001/{f}").into_boxed_str()) as &str);
    fuzz(&CHECKPOINT, &files, CASES / 2, true, false);
}

#[test]
fn damaged_text_inputs_are_errors_or_valid() {
    fuzz(&PROCESSED, &["sequences.csv", "id2name.json"], CASES, false, false);
    fuzz(&AMAZON, &["interaction.csv", "metadata.jsonl"], CASES, false, false);
    fuzz(&RECBOLE, &["x.inter", "x.item"], CASES, false, false);
    fuzz(&DISTILLED, &["distilled.jsonl"], CASES, false, false);
    fuzz(&TOKENIZER, &["tokenizer.json"], CASES, false, false);
}
