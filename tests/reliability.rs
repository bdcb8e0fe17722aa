//! `soft-train` under failure: a run killed (SIGKILL) at every stage and resumed ends exactly
//! where an uninterrupted one does; the same seed gives the same metrics twice; wrong flags, no
//! GPU adapter, an unwritable or full output directory give clear errors and leave no damaged
//! run directory.

mod support;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::{bin, json, run, scratch, small_tiny, stderr, tiny_run_args};

/// Where a run is killed: when `when` holds (it sees the run directory and the last stderr line).
struct KillPoint {
    name: &'static str,
    when: fn(&Path, &str) -> bool,
    /// True once the stage killed in is complete: it must still be false after the kill.
    done: fn(&Path) -> bool,
    /// Sleep this long between a checkpoint's write and its rename (`SOFT_TEST_CHECKPOINT_PAUSE_MS`).
    pause_checkpoints_ms: Option<u64>,
}

const KILL_POINTS: [KillPoint; 5] = [
    KillPoint {
        name: "mid-epoch of SFT (epoch 2)",
        when: |d, _| d.join("sft/checkpoints/epoch-001").exists(),
        done: |d| d.join("sft/run.json").exists(),
        pause_checkpoints_ms: None,
    },
    KillPoint {
        name: "while SFT's epoch-2 checkpoint is being written",
        when: |d, _| d.join("sft/checkpoints/epoch-002.tmp/checksums.json").exists(),
        done: |d| d.join("sft/checkpoints/epoch-002").exists(),
        pause_checkpoints_ms: Some(60_000),
    },
    KillPoint {
        name: "mid-distillation",
        when: |_, line| line.starts_with("== distill"),
        done: |d| d.join("sft/distilled.jsonl").exists(),
        pause_checkpoints_ms: None,
    },
    KillPoint {
        name: "mid-epoch of SOFT (epoch 2)",
        when: |d, _| d.join("soft/checkpoints/epoch-001").exists(),
        done: |d| d.join("soft/run.json").exists(),
        pause_checkpoints_ms: None,
    },
    KillPoint {
        name: "mid-evaluation of SOFT",
        when: |_, line| line.starts_with("== eval") && line.contains("soft (free)"),
        done: |d| d.join("soft/test/metrics.json").exists(),
        pause_checkpoints_ms: None,
    },
];

/// Runs `args` until `point` is reached, then SIGKILLs it.
fn kill_at(args: &[String], out: &Path, point: &KillPoint) {
    let mut command = bin();
    command.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
    if let Some(ms) = point.pause_checkpoints_ms {
        command.env("SOFT_TEST_CHECKPOINT_PAUSE_MS", ms.to_string());
    }
    let mut child: Child = command.spawn().unwrap();
    // Stderr is drained on a thread (a full pipe would block the run) and read here by line.
    let (tx, rx) = mpsc::channel::<String>();
    let pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(pipe).lines().map_while(|l| l.ok()) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut log = Vec::new();
    'watch: loop {
        while let Ok(line) = rx.try_recv() {
            let hit = (point.when)(out, &line);
            log.push(line);
            if hit {
                break 'watch;
            }
        }
        if (point.when)(out, "") {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{}: the run ended ({status}) before it could be killed:\n{}", point.name, log.join("\n"));
        }
        assert!(started.elapsed() < Duration::from_secs(600), "{}: not reached in 10 minutes", point.name);
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL: nothing runs after it
    child.wait().unwrap();
    reader.join().unwrap();
    assert!(!(point.done)(out), "{}: the stage finished before the kill landed", point.name);
}

/// The outputs an interrupted run must reproduce: every method's test metrics (both decodings),
/// the three adapters, the distilled data and the SOFT curriculum; `llm` names the language-model
/// directories' prefix (`""` for BIGRec, `"llara-"`, whose adapters carry the projector).
fn results(out: &Path, llm: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for method in ["popularity", "sasrec"] {
        files.push(format!("{method}/test/metrics.json"));
    }
    for method in ["sft", "soft", "soft-distilled-only"] {
        let method = format!("{llm}{method}");
        files.push(format!("{method}/test/metrics.json"));
        files.push(format!("{method}/test-constrained/metrics.json"));
        files.push(format!("{method}/test/predictions.jsonl"));
        files.push(format!("{method}/adapter/adapter_model.safetensors"));
        if !llm.is_empty() {
            files.push(format!("{method}/adapter/projector.safetensors"));
        }
    }
    files.push(format!("{llm}sft/distilled.jsonl"));
    files
        .into_iter()
        .map(|f| {
            let path = out.join(&f);
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (PathBuf::from(f), bytes)
        })
        .collect()
}

/// Losses, lambda, d and validation metrics of every epoch, as the reports record them.
fn curves(out: &Path, llm: &str) -> Vec<String> {
    ["sft", "soft", "soft-distilled-only"]
        .iter()
        .map(|m| {
            let m = format!("{llm}{m}");
            let report = json(&out.join(&m).join("report.json"));
            let epochs = &report["epochs"];
            epochs
                .as_array()
                .unwrap_or_else(|| panic!("{m}: no epochs in {report}"))
                .iter()
                .map(|e| {
                    let mut e = e.clone();
                    let o = e.as_object_mut().unwrap();
                    // Wall-clock fields differ between any two runs.
                    o.remove("seconds");
                    o.remove("tokens_per_second");
                    e.to_string()
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect()
}

fn assert_same_results(a: &Path, b: &Path, what: &str) {
    assert_same_results_of(a, b, what, "")
}

fn assert_same_results_of(a: &Path, b: &Path, what: &str, llm: &str) {
    for ((name, x), (_, y)) in results(a, llm).into_iter().zip(results(b, llm)) {
        assert!(x == y, "{what}: {} differs", name.display());
    }
    assert_eq!(curves(a, llm), curves(b, llm), "{what}: per-epoch records differ");
}

/// One run killed at each of five points in turn (SFT mid-epoch, during a checkpoint write,
/// distillation, SOFT mid-epoch, evaluation), resumed after each, against an uninterrupted run
/// of the same seed: identical adapters, predictions, metrics and per-epoch records. A second
/// uninterrupted run checks that the same seed and backend give the same results at all.
#[test]
fn killed_at_every_stage_then_resumed_equals_an_uninterrupted_run() {
    let dir = scratch("kill-every-stage");
    let model = small_tiny(&dir);
    let (whole, again, killed) = (dir.join("whole"), dir.join("again"), dir.join("killed"));
    for out in [&whole, &again] {
        let o = bin().args(tiny_run_args(&model, out)).output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert_same_results(&whole, &again, "two uninterrupted runs, same seed, flex backend");

    let resume: Vec<String> =
        ["run", "--resume", killed.to_str().unwrap(), "--backend", "cpu"].iter().map(|s| s.to_string()).collect();
    for (i, point) in KILL_POINTS.iter().enumerate() {
        let args = if i == 0 { tiny_run_args(&model, &killed) } else { resume.clone() };
        kill_at(&args, &killed, point);
    }
    // A half-written checkpoint stays a `.tmp` directory until the resume clears it.
    let o = bin().args(&resume).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_results(&whole, &killed, "killed 5 times and resumed");
    let report = json(&killed.join("report.json"));
    let skipped = report["stages"].as_array().unwrap().iter().filter(|s| s["skipped"] == true).count();
    assert!(skipped >= 10, "the last resume redid finished stages: {report}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Where a LLaRA run (`--backbones llara`) is killed: mid-epoch of its SFT and of its SOFT, whose
/// checkpoints carry the item projector beside the adapter.
const LLARA_KILL_POINTS: [KillPoint; 2] = [
    KillPoint {
        name: "mid-epoch of LLaRA-SFT (epoch 2)",
        when: |d, _| d.join("llara-sft/checkpoints/epoch-001").exists(),
        done: |d| d.join("llara-sft/run.json").exists(),
        pause_checkpoints_ms: None,
    },
    KillPoint {
        name: "mid-epoch of LLaRA-SOFT (epoch 2)",
        when: |d, _| d.join("llara-soft/checkpoints/epoch-001").exists(),
        done: |d| d.join("llara-soft/run.json").exists(),
        pause_checkpoints_ms: None,
    },
];

/// A LLaRA run killed in SFT and in SOFT and resumed ends byte-identical to an uninterrupted one:
/// adapters, projectors, predictions, metrics, curricula.
#[test]
fn a_llara_run_killed_and_resumed_equals_an_uninterrupted_run() {
    let dir = scratch("kill-llara");
    let model = small_tiny(&dir);
    let (whole, killed) = (dir.join("whole"), dir.join("killed"));
    let args = |out: &Path| {
        let mut args = tiny_run_args(&model, out);
        args.extend(["--backbones", "llara"].map(String::from));
        args
    };
    let o = bin().args(args(&whole)).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!whole.join("sft").exists(), "a LLaRA-only run trains no BIGRec model");
    let resume: Vec<String> =
        ["run", "--resume", killed.to_str().unwrap(), "--backend", "cpu"].iter().map(|s| s.to_string()).collect();
    for (i, point) in LLARA_KILL_POINTS.iter().enumerate() {
        kill_at(&if i == 0 { args(&killed) } else { resume.clone() }, &killed, point);
    }
    let o = bin().args(&resume).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_results_of(&whole, &killed, "LLaRA, killed twice and resumed", "llara-");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Flags that contradict a resumed run's saved settings are refused before anything is touched.
#[test]
fn resume_refuses_settings_it_would_ignore() {
    let dir = scratch("resume-flags");
    let out = dir.join("r");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("run-config.json"), "precious").unwrap();
    for extra in [["--epochs", "3"], ["--seed", "7"], ["--train-size", "9"], ["--out", "elsewhere"]] {
        let o = run(&[&["run", "--resume", out.to_str().unwrap()][..], &extra[..]].concat());
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("cannot be used with"), "{extra:?}: {}", stderr(&o));
    }
    assert_eq!(std::fs::read_to_string(out.join("run-config.json")).unwrap(), "precious");
    // A resume of something that is not a run is named, not a panic.
    let o = run(&["run", "--resume", out.to_str().unwrap(), "--backend", "cpu"]);
    assert!(!o.status.success() && stderr(&o).contains("run-config.json"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--backend wgpu` where no graphics driver exists: an error that says so, exit 1.
#[test]
fn wgpu_without_an_adapter_is_a_clear_error() {
    let dir = scratch("no-adapter");
    let o = bin()
        .args(["baseline", "--method", "sasrec", "--out", dir.join("s").to_str().unwrap(), "--backend", "wgpu"])
        .env("VK_ICD_FILENAMES", "/nonexistent/icd.json")
        .env("VK_DRIVER_FILES", "/nonexistent/icd.json")
        .env("__EGL_VENDOR_LIBRARY_FILENAMES", "/nonexistent/egl.json")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("no wgpu adapter"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    assert!(!dir.join("s/run.json").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An output path that cannot be a directory: the error names it and nothing is written.
#[test]
fn an_unwritable_output_directory_is_named() {
    let dir = scratch("unwritable");
    let blocker = dir.join("a-file");
    std::fs::write(&blocker, "not a directory").unwrap();
    let out = blocker.join("run");
    for args in [
        vec!["prepare", "--out", out.to_str().unwrap()],
        vec!["baseline", "--method", "popularity", "--out", out.to_str().unwrap(), "--train-on", "sample"],
        vec!["run", "--out", out.to_str().unwrap(), "--backend", "cpu"],
    ] {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(blocker.to_str().unwrap()), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    }
    assert_eq!(std::fs::read_to_string(&blocker).unwrap(), "not a directory");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A full disk (a 64 KiB tmpfs in a private mount namespace): `prepare` fails naming the file it
/// could not write, and leaves only whole files, no temp file. Skipped, with a note, where user
/// namespaces are not allowed.
#[test]
fn a_full_disk_is_an_error_and_leaves_only_whole_files() {
    let dir = scratch("full-disk");
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let script = format!(
        "mount -t tmpfs -o size=64k tmpfs {m} || exit 99; {bin} prepare --out {m}/data; echo \"rc=$?\"; \
         cd {m}/data 2>/dev/null && for f in $(ls -A); do echo \"file=$f $(wc -c < $f)\"; done",
        m = mnt.display(),
        bin = env!("CARGO_BIN_EXE_soft-train"),
    );
    let o = match std::process::Command::new("unshare").args(["-rm", "sh", "-c", &script]).output() {
        Ok(o) if String::from_utf8_lossy(&o.stdout).contains("rc=") => o,
        other => {
            eprintln!("skipped: no private tmpfs here ({other:?})");
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("rc=1"), "{stdout}\n{}", stderr(&o));
    assert!(stderr(&o).contains("No space left on device"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    for line in stdout.lines().filter_map(|l| l.strip_prefix("file=")) {
        assert!(!line.contains(".tmp"), "a temp file was left behind: {line}\n{stdout}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
