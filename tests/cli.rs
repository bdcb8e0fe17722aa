//! End-to-end checks of `soft-train` as a user runs it: real data, real files, exit codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_soft-train"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("soft-train runs")
}

/// `soft-train eval` on the CPU backend; paths as the CLI takes them.
fn eval(run_dir: &str, sequences: &str, items: &str, out: &str) -> Output {
    run(&["eval", "--run", run_dir, "--sequences", sequences, "--items", items, "--out", out, "--backend", "cpu"])
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("soft-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn books_items() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/amazon-books/id2name.json")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn every_subcommand_has_help() {
    for sub in ["prepare", "baseline", "eval", "pretrain", "generate", "sft", "distill", "soft", "run"] {
        let o = run(&[sub, "--help"]);
        assert!(o.status.success(), "{sub}: {}", stderr(&o));
        assert!(String::from_utf8_lossy(&o.stdout).contains("--"), "{sub}");
    }
}

#[test]
fn prepare_then_popularity_then_eval_on_held_out_and_unseen_histories() {
    let dir = scratch("pop");
    let data = dir.join("data");
    let o = run(&["prepare", "--out", data.to_str().unwrap(), "--test-size", "200"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for f in ["sequences.csv", "id2name.json", "dataset.json", "train.csv", "valid.csv", "test.csv", "split.json"] {
        assert!(data.join(f).exists(), "{f}");
    }
    let run_dir = dir.join("pop");
    let o = run(&["baseline", "--method", "popularity", "--out", run_dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));

    // A hand-written file: histories of 1 and 10 items, one user never seen in training.
    let seqs = dir.join("mine.csv");
    std::fs::write(
        &seqs,
        "user_id,item_ids,timestamp\nnobody,\"[5, 17]\",1\nx,\"[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]\",2\n",
    )
    .unwrap();
    let out = dir.join("eval");
    let o =
        eval(run_dir.to_str().unwrap(), seqs.to_str().unwrap(), books_items().to_str().unwrap(), out.to_str().unwrap());
    assert!(o.status.success(), "{}", stderr(&o));
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics.as_object().unwrap().len(), 10);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(out.join("predictions.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["target"], 17);
    assert_eq!(lines[1]["target"], 11);
    assert_eq!(lines[0]["ranked"].as_array().unwrap().len(), 50);
    assert!(lines[0]["generated"].is_null());

    // The prepared test split evaluates too.
    let o = eval(
        run_dir.to_str().unwrap(),
        data.join("test.csv").to_str().unwrap(),
        data.join("id2name.json").to_str().unwrap(),
        out.to_str().unwrap(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("on 200 examples: HR@10"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_names_file_and_line_and_keeps_existing_outputs() {
    let dir = scratch("bad");
    let run_dir = dir.join("pop");
    assert!(run(&["baseline", "--method", "popularity", "--out", run_dir.to_str().unwrap(), "--train-on", "sample"])
        .status
        .success());
    let out = dir.join("eval");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("metrics.json"), "precious").unwrap();
    let cases: [(&[u8], &str); 5] = [
        (b"user_id,item_ids,timestamp\n1,\"[1, 2]\",5\n2,\"[1, 2]\"\n", "bad.csv:3: expected 3 fields"),
        (b"user_id,item_ids,timestamp\n1,\"[1, 2\",5\n", "bad.csv:2: item_ids"),
        (b"user_id,item_ids,timestamp\n1,\"[1, 99999]\",5\n", "bad.csv:2: item id 99999 is not in the item catalog"),
        (b"user_id,item_ids,timestamp\n1,\"[7]\",5\n", "bad.csv:2: empty history"),
        (b"user_id,item_ids,timestamp\n1,\"[1, 2]\",5\n\xff\xfe,\"[1, 2]\",5\n", "bad.csv:3: invalid UTF-8"),
    ];
    for (text, want) in cases {
        let seqs = dir.join("bad.csv");
        std::fs::write(&seqs, text).unwrap();
        let o = eval(
            run_dir.to_str().unwrap(),
            seqs.to_str().unwrap(),
            books_items().to_str().unwrap(),
            out.to_str().unwrap(),
        );
        assert!(!o.status.success());
        assert!(stderr(&o).contains(want), "want {want:?}, got {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"));
    }
    assert_eq!(std::fs::read_to_string(out.join("metrics.json")).unwrap(), "precious");

    let inter_dir = dir.join("recbole");
    std::fs::create_dir_all(&inter_dir).unwrap();
    std::fs::write(inter_dir.join("x.inter"), "user_id:token\ttimestamp:float\n1\t2\n").unwrap();
    std::fs::write(inter_dir.join("x.item"), "item_id:token\tmovie_title:token_seq\n1\tHeat\n").unwrap();
    let o = run(&["prepare", "--dataset", inter_dir.to_str().unwrap(), "--out", dir.join("p").to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("x.inter:1: missing column `item_id`"), "{}", stderr(&o));
    assert!(!dir.join("p").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sasrec_trains_saves_loads_and_evaluates() {
    let dir = scratch("sasrec");
    let run_dir = dir.join("sasrec");
    let o = run(&[
        "baseline",
        "--method",
        "sasrec",
        "--out",
        run_dir.to_str().unwrap(),
        "--train-on",
        "sample",
        "--train-size",
        "512",
        "--valid-size",
        "64",
        "--epochs",
        "1",
        "--backend",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(info["method"], "sasrec");
    assert_eq!(info["details"]["epochs"].as_array().unwrap().len(), 1);
    let seqs = dir.join("s.csv");
    std::fs::write(&seqs, "user_id,item_ids,timestamp\nu,\"[1948, 1807, 1702]\",1\n").unwrap();
    let out = dir.join("eval");
    let o =
        eval(run_dir.to_str().unwrap(), seqs.to_str().unwrap(), books_items().to_str().unwrap(), out.to_str().unwrap());
    assert!(o.status.success(), "{}", stderr(&o));
    let line = std::fs::read_to_string(out.join("predictions.jsonl")).unwrap();
    let p: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(p["ranked"].as_array().unwrap().len(), 50);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn pretrain_a_small_tiny_model_then_generate_from_it() {
    let dir = scratch("tiny");
    let model = dir.join("tiny");
    let o =
        run(&["pretrain", "--steps", "3", "--vocab-size", "600", "--out", model.to_str().unwrap(), "--backend", "cpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for f in ["llama.json", "model.bpk", "tokenizer.json", "pretrain.json"] {
        assert!(model.join(f).exists(), "{f}");
    }
    let o = run(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "\"The Hobbit\", ",
        "--max-new-tokens",
        "5",
        "--beams",
        "2",
        "--print-ids",
        "--backend",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let ids = out.lines().last().unwrap();
    assert!(ids.split_whitespace().count() <= 5 && ids.split_whitespace().all(|t| t.parse::<u32>().is_ok()), "{out}");

    // SFT (stage 1) on a handful of examples, then the run evaluates like any other.
    let sft = dir.join("sft");
    let o = run(&[
        "sft",
        "--model",
        model.to_str().unwrap(),
        "--out",
        sft.to_str().unwrap(),
        "--train-size",
        "16",
        "--valid-size",
        "4",
        "--epochs",
        "1",
        "--max-new-tokens",
        "8",
        "--beams",
        "2",
        "--backend",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for f in ["run.json", "adapter/adapter_model.safetensors", "adapter/adapter_config.json"] {
        assert!(sft.join(f).exists(), "{f}");
    }
    let seqs = dir.join("two.csv");
    std::fs::write(&seqs, "user_id,item_ids,timestamp\na,\"[1948, 1807, 1702]\",1\nb,\"[5, 6]\",2\n").unwrap();
    let out = dir.join("sft-eval");
    let o = eval(sft.to_str().unwrap(), seqs.to_str().unwrap(), books_items().to_str().unwrap(), out.to_str().unwrap());
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(out.join("predictions.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0]["generated"].is_string());
    assert_eq!(lines[1]["target"], 6);
    assert_eq!(lines[1]["ranked"].as_array().unwrap().len(), 50);

    // Stage 2: one distilled target per training prompt, in order; stage 3 on top of it.
    let split = ["--train-size", "16", "--valid-size", "4", "--backend", "cpu"];
    let o = run(&[&["distill", "--run", sft.to_str().unwrap()][..], &split[..]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let distilled: Vec<serde_json::Value> = std::fs::read_to_string(sft.join("distilled.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(distilled.len(), 16);
    assert!(distilled
        .iter()
        .all(|d| d["prompt"].as_str().unwrap().ends_with("### Response:\n") && d["distilled"].is_string()));
    for bad in ["nan", "-1", "inf"] {
        let o = run(&[
            &["soft", "--sft", sft.to_str().unwrap(), "--out", dir.join("x").to_str().unwrap(), "--alpha", bad][..],
            &split[..],
        ]
        .concat());
        assert!(!o.status.success() && stderr(&o).contains("alpha"), "{bad}: {}", stderr(&o));
    }
    let soft = dir.join("soft");
    let o = run(&[
        &["soft", "--sft", sft.to_str().unwrap(), "--out", soft.to_str().unwrap(), "--epochs", "1", "--d-samples", "4"]
            [..],
        &split[..],
    ]
    .concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(soft.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["alpha"], 1.0);
    assert!(report["d0"].as_f64().unwrap() > 0.0);
    assert_eq!(report["epochs"][0]["lambda"], 1.0);
    assert!(report["epochs"][0]["d"].as_f64().unwrap() > 0.0);
    let o =
        eval(soft.to_str().unwrap(), seqs.to_str().unwrap(), books_items().to_str().unwrap(), out.to_str().unwrap());
    assert!(o.status.success(), "{}", stderr(&o));

    // A vocabulary that does not fit the model is named, not a panic.
    let tok = std::fs::read_to_string(model.join("tokenizer.json")).unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("llama.json")).unwrap()).unwrap();
    cfg["vocab_size"] = 100.into();
    std::fs::write(model.join("llama.json"), cfg.to_string()).unwrap();
    let o = run(&["generate", "--model", model.to_str().unwrap(), "--prompt", "x", "--backend", "cpu"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("tokenizer.json"), "{}", stderr(&o));
    assert!(!tok.is_empty() && !stderr(&o).contains("panicked"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn corrupt_model_files_are_named() {
    let dir = scratch("corrupt");
    let gguf = dir.join("broken.gguf");
    let mut bytes = b"GGUF".to_vec();
    bytes.extend_from_slice(&3u32.to_le_bytes());
    bytes.extend_from_slice(&[1, 0, 0]); // cut inside the tensor count
    std::fs::write(&gguf, bytes).unwrap();
    let o = run(&["generate", "--model", gguf.to_str().unwrap(), "--prompt", "x", "--backend", "cpu"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("broken.gguf"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"));
    let o = run(&["generate", "--model", dir.join("nothing").to_str().unwrap(), "--prompt", "x", "--backend", "cpu"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no model here"), "{}", stderr(&o));
    std::fs::remove_dir_all(&dir).unwrap();
}
