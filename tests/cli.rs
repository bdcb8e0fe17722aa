//! End-to-end checks of `soft-train` as a user runs it: real data, real files, exit codes.

mod support;

use std::path::Path;
use std::process::Output;

use support::{bin, books_items, json, run, scratch, small_tiny, stderr, tiny_run_args};

/// `soft-train eval` on the CPU backend; paths as the CLI takes them.
fn eval(run_dir: &str, sequences: &str, items: &str, out: &str) -> Output {
    run(&["eval", "--run", run_dir, "--sequences", sequences, "--items", items, "--out", out, "--backend", "cpu"])
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
    let model = small_tiny(&dir);
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

/// Every stage through `soft-train run` on a tiny slice: layout, table, reports, plots, the
/// distilled data, resuming a finished run, and refusing bad or corrupted input.
#[test]
fn run_every_stage_on_a_tiny_slice() {
    let dir = scratch("run");
    let model = small_tiny(&dir);
    let out = dir.join("r");
    let mut args = tiny_run_args(&model, &out);
    args.extend(["--alpha", "1,10", "--backbones", "bigrec,llara"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    for bad in ["nan", "-1", "inf", "1,1"] {
        let o = run(&[&args[..], &["--alpha", bad]].concat());
        assert!(!o.status.success() && stderr(&o).contains("alpha"), "{bad}: {}", stderr(&o));
    }
    assert!(!out.exists(), "a refused run writes nothing");
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));

    for method in ["popularity", "guidance-only", "sasrec", "sft", "soft", "soft-alpha-10", "soft-distilled-only"] {
        let m = json(&out.join(method).join("test/metrics.json"));
        assert!(m["HR@10"].as_f64().is_some(), "{method}");
        assert!(out.join(method).join("report.json").exists(), "{method}");
    }
    assert_eq!(json(&out.join("soft-alpha-10/report.json"))["alpha"], 10.0);
    assert!(out.join("guidance-only/test-constrained/metrics.json").exists());
    assert!(!out.join("guidance-only/adapter").exists(), "Guidance-Only is the untuned model");
    for method in ["sft", "soft", "soft-distilled-only"] {
        assert!(out.join(method).join("test-constrained/metrics.json").exists(), "{method}");
        assert!(out.join(method).join("adapter/adapter_model.safetensors").exists(), "{method}");
    }
    // Constrained decoding only ever answers with a real title.
    let catalog = json(&books_items());
    let titles: std::collections::HashSet<String> =
        catalog.as_object().unwrap().values().map(|t| format!("\"{}\"", t.as_str().unwrap())).collect();
    let predictions = std::fs::read_to_string(out.join("soft/test-constrained/predictions.jsonl")).unwrap();
    for line in predictions.lines() {
        let p: serde_json::Value = serde_json::from_str(line).unwrap();
        let answer = p["generated"].as_str().unwrap();
        assert!(titles.contains(answer), "constrained answer {answer:?} is not a title");
    }
    let table = std::fs::read_to_string(out.join("table.md")).unwrap();
    for row in [
        "| popularity |",
        "| Guidance-Only |",
        "| Guidance-Only, constrained |",
        "| SASRec |",
        "| SFT |",
        "| SFT, constrained |",
        "| SOFT (adaptive, alpha 1) |",
        "| SOFT (adaptive, alpha 10) |",
        "| SOFT without SA |",
        "BIGRec SOFT vs SFT, paired over the same 6 test examples",
        "| free | HR@10 |",
        "| constrained | NDCG@10 |",
        "| LLaRA-Guidance-Only |",
        "| LLaRA-SFT |",
        "| LLaRA-SFT, constrained |",
        "| LLaRA-SOFT (adaptive, alpha 10) |",
        "| LLaRA-SOFT without SA, constrained |",
        "LLaRA SOFT vs SFT, paired over the same 6 test examples",
    ] {
        assert!(table.contains(row), "{row} in {table}");
    }
    // LLaRA's models: each adapter carries its projector and item table; Guidance-Only its
    // untrained projector; the distilled prompts mark every history item.
    for method in ["llara-sft", "llara-soft", "llara-soft-alpha-10", "llara-soft-distilled-only"] {
        assert!(out.join(method).join("adapter/projector.safetensors").exists(), "{method}");
        assert!(out.join(method).join("test-constrained/metrics.json").exists(), "{method}");
    }
    assert!(out.join("llara-guidance-only/projector.safetensors").exists());
    assert!(!out.join("sft/adapter/projector.safetensors").exists(), "BIGRec has no projector");
    let llara_distilled = std::fs::read_to_string(out.join("llara-sft/distilled.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(llara_distilled.lines().next().unwrap()).unwrap();
    assert!(first["prompt"].as_str().unwrap().contains("\" <|item:"), "{first}");
    for f in ["plots/llara/curriculum.svg", "plots/llara/curriculum.png"] {
        assert!(std::fs::metadata(out.join(f)).unwrap().len() > 1000, "{f}");
    }
    // Every cell carries its interval, and the interval holds the value.
    let sft_row = table.lines().find(|l| l.starts_with("| SFT |")).unwrap();
    for cell in sft_row.split('|').map(str::trim).filter(|c| c.contains('[')) {
        let (value, interval) = cell.split_once(" [").unwrap();
        let (low, high) = interval.trim_end_matches(']').split_once(", ").unwrap();
        let (v, l, h): (f64, f64, f64) = (value.parse().unwrap(), low.parse().unwrap(), high.parse().unwrap());
        assert!(l <= v && v <= h, "{cell}");
    }
    let report = json(&out.join("soft/report.json"));
    assert_eq!(report["alpha"], 1.0);
    assert!(report["d0"].as_f64().unwrap() > 0.0);
    let epochs = report["epochs"].as_array().unwrap();
    assert_eq!(epochs[0]["lambda"], 1.0, "epoch 1 schedules with d0");
    for e in epochs {
        for key in ["d", "loss_real", "loss_distilled", "tokens_per_second", "seconds"] {
            assert!(e[key].as_f64().is_some_and(f64::is_finite), "{key} in {e}");
        }
        assert!(e["lambda"].as_f64().unwrap() <= 1.0);
    }
    for key in ["config", "backend", "git_commit", "adapter", "seconds"] {
        assert!(!report[key].is_null(), "{key}");
    }
    let run_report = json(&out.join("report.json"));
    let stages = run_report["stages"].as_array().unwrap().len();
    assert!(stages >= 10);
    for f in ["plots/curriculum.svg", "plots/curriculum.png"] {
        assert!(std::fs::metadata(out.join(f)).unwrap().len() > 1000, "{f}");
    }
    // The distilled dataset: one line per training example, in the training order.
    let train: Vec<String> =
        std::fs::read_to_string(out.join("data/train.csv")).unwrap().lines().skip(1).map(String::from).collect();
    let distilled: Vec<serde_json::Value> = std::fs::read_to_string(out.join("sft/distilled.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(distilled.len(), 8);
    assert_eq!(train.len(), 8);
    for (d, line) in distilled.iter().zip(&train) {
        assert!(d["prompt"].as_str().unwrap().ends_with("### Response:\n") && d["distilled"].is_string());
        let last_id = line.rsplit_once(']').unwrap().0.rsplit([',', '[']).next().unwrap().trim().to_string();
        assert_eq!(d["target"].to_string(), last_id, "{line}");
    }

    // `eval --backend wgpu` (lavapipe here) grounds with the project's WGSL kernel: where it
    // writes the same answer as the CPU run, it ranks the same items.
    let on_gpu = dir.join("sft-wgpu");
    let o = run(&[
        "eval",
        "--run",
        out.join("sft").to_str().unwrap(),
        "--sequences",
        out.join("data/test.csv").to_str().unwrap(),
        "--items",
        books_items().to_str().unwrap(),
        "--out",
        on_gpu.to_str().unwrap(),
        "--backend",
        "wgpu",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("grounding with the WGSL kernel on"), "{}", stderr(&o));
    let predictions = |p: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(p).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let (gpu, cpu) =
        (predictions(&on_gpu.join("predictions.jsonl")), predictions(&out.join("sft/test/predictions.jsonl")));
    assert_eq!(gpu.len(), cpu.len());
    let same_answers: Vec<_> = gpu.iter().zip(&cpu).filter(|(g, c)| g["generated"] == c["generated"]).collect();
    assert!(!same_answers.is_empty(), "wgpu and flex wrote no answer alike");
    for (g, c) in same_answers {
        let top10 = |p: &serde_json::Value| p["ranked"].as_array().unwrap()[..10].to_vec();
        assert_eq!(top10(g), top10(c), "answer {}", g["generated"]);
    }

    // A LLaRA run whose projector file is damaged or missing is refused by name at evaluation.
    let broken = dir.join("llara-broken");
    copy_dir(&out.join("llara-sft"), &broken);
    let projector = broken.join("adapter/projector.safetensors");
    let bytes = std::fs::read(&projector).unwrap();
    std::fs::write(&projector, &bytes[..bytes.len() / 3]).unwrap();
    let test_csv = out.join("data/test.csv");
    let (seqs, items) = (test_csv.to_str().unwrap(), books_items());
    let o = eval(broken.to_str().unwrap(), seqs, items.to_str().unwrap(), dir.join("e1").to_str().unwrap());
    assert!(!o.status.success() && stderr(&o).contains("projector.safetensors"), "{}", stderr(&o));
    std::fs::remove_file(&projector).unwrap();
    let o = eval(broken.to_str().unwrap(), seqs, items.to_str().unwrap(), dir.join("e2").to_str().unwrap());
    assert!(!o.status.success() && stderr(&o).contains("projector"), "{}", stderr(&o));
    // LLaRA's inputs are checked before any work.
    let sft_out = dir.join("never");
    for (flags, want) in [
        (&["--backbone", "llara"][..], "--sasrec"),
        (&["--sasrec", out.join("sasrec").to_str().unwrap()][..], "--backbone llara"),
        (&["--backbone", "llara", "--sasrec", out.join("sft").to_str().unwrap()][..], "not a SASRec run"),
    ] {
        let base = ["sft", "--model", model.to_str().unwrap(), "--out", sft_out.to_str().unwrap(), "--backend", "cpu"];
        let o = run(&[&base[..], flags].concat());
        assert!(!o.status.success() && stderr(&o).contains(want), "{flags:?}: {}", stderr(&o));
    }

    // The table's rows as data (table.json), cell for cell the Markdown's.
    let rows = json(&out.join("table.json"));
    let rows = rows.as_array().unwrap();
    let first_table =
        table.lines().skip_while(|l| !l.starts_with("| method |")).skip(2).take_while(|l| l.starts_with("| "));
    assert_eq!(rows.len(), first_table.count(), "{table}");
    let md_cell = |label: &str, col: usize| -> String {
        let line = table.lines().find(|l| l.starts_with(&format!("| {label} |"))).unwrap();
        line.split('|').map(str::trim).nth(col + 2).unwrap().to_string()
    };
    for row in rows {
        let label = row["label"].as_str().unwrap();
        for (col, cell) in row["cells"].as_array().unwrap().iter().enumerate() {
            let text = format!(
                "{:.4} [{:.4}, {:.4}]",
                cell["mean"].as_f64().unwrap(),
                cell["low"].as_f64().unwrap(),
                cell["high"].as_f64().unwrap()
            );
            assert_eq!(text, md_cell(label, col), "{label} {}", cell["metric"]);
        }
    }

    // The export ships the run's test table beside the models, and refuses models trained by a
    // binary built from uncommitted changes unless told (then the manifest says so).
    let set_commit = |dir: &str, commit: &str| {
        let path = out.join(dir).join("run.json");
        let mut v = json(&path);
        v["git_commit"] = commit.into();
        std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    };
    for d in ["sft", "soft", "llara-sft", "llara-soft"] {
        set_commit(d, "abc1234");
    }
    set_commit("llara-soft", "abc1234-dirty");
    let assets = dir.join("assets");
    let export = |extra: &[&str]| {
        run(&[&["export", "--run", out.to_str().unwrap(), "--out", assets.to_str().unwrap()][..], extra].concat())
    };
    let o = export(&[]);
    assert!(
        !o.status.success() && stderr(&o).contains("llara-soft") && stderr(&o).contains("--allow-dirty"),
        "{}",
        stderr(&o)
    );
    assert!(!assets.join("manifest.json").exists(), "a refused export writes nothing");
    let o = export(&["--allow-dirty"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let manifest = json(&assets.join("manifest.json"));
    assert_eq!(manifest["provenance"]["dirty"], true);
    assert_eq!(std::fs::read_to_string(assets.join("reports/table.md")).unwrap(), table);
    assert_eq!(&manifest["metrics"], &json(&out.join("table.json")), "the run's rows, as the run wrote them");
    set_commit("llara-soft", "abc1234");
    let o = export(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&assets.join("manifest.json"))["provenance"]["dirty"], false);

    // A finished run: a second start is refused, a resume redoes nothing.
    let o = run(&args);
    assert!(!o.status.success() && stderr(&o).contains("--resume"), "{}", stderr(&o));
    let o = run(&["run", "--resume", out.to_str().unwrap(), "--backend", "cpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let resumed = json(&out.join("report.json"));
    let resumed = resumed["stages"].as_array().unwrap();
    assert_eq!(resumed.len(), stages, "the same stages");
    for stage in resumed {
        assert_eq!(stage["skipped"], true, "nothing redone: {stage}");
    }
    // A corrupted stage output is named, and nothing is overwritten.
    std::fs::write(out.join("soft/run.json"), "{ not json").unwrap();
    let o = run(&["run", "--resume", out.to_str().unwrap(), "--backend", "cpu"]);
    assert!(!o.status.success() && stderr(&o).contains("soft/run.json"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(out.join("soft/run.json")).unwrap(), "{ not json");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `run --devices 2 --weights-dtype f16` (burn's CPU backend: two workers on its one device)
/// trains, distills and evaluates every stage of both backbones data-parallel over a base kept
/// in f16, SOFT inheriting both settings from SFT, and its SFT epochs end near those of one
/// device in f32: the steps are the same but for the dropout masks, drawn per micro-batch in a
/// data-parallel run, and the f16 weights (the equalities are soft-core's tests). A setting the
/// device cannot hold by the memory plan is refused before training.
#[test]
fn run_trains_data_parallel_on_two_devices_in_half_precision() {
    let dir = scratch("data-parallel");
    let model = small_tiny(&dir);
    let epoch_losses = |devices: &str, dtype: &str, backbones: &str| {
        let out = dir.join(format!("r{devices}"));
        let mut args = tiny_run_args(&model, &out);
        let settings = ["--micro-batch", "2", "--grad-accum", "2", "--weights-dtype", dtype, "--backbones", backbones];
        args.extend(["--devices", devices].iter().chain(&settings).map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = run(&args);
        assert!(o.status.success(), "{devices} devices: {}", stderr(&o));
        assert_eq!(json(&out.join("run-config.json"))["devices"], devices.parse::<u64>().unwrap());
        let sft = json(&out.join("sft/run.json"));
        assert_eq!(sft["details"]["config"]["train"]["devices"], devices.parse::<u64>().unwrap());
        let soft = json(&out.join("soft/run.json"));
        assert_eq!(soft["details"]["config"]["sft"]["train"]["devices"], devices.parse::<u64>().unwrap());
        assert_eq!(soft["details"]["config"]["sft"]["train"]["base_dtype"], dtype);
        let epochs = sft["details"]["epochs"].as_array().unwrap().clone();
        epochs.iter().map(|e| e["loss"].as_f64().unwrap()).collect::<Vec<f64>>()
    };
    // A setting the device cannot hold by the memory plan is refused before training.
    let refused = dir.join("refused");
    let (m, r) = (model.to_str().unwrap(), refused.to_str().unwrap());
    let o = run(&[
        "sft",
        "--model",
        m,
        "--train-size",
        "8",
        "--valid-size",
        "4",
        "--test-size",
        "6",
        "--epochs",
        "1",
        "--backend",
        "cpu",
        "--devices",
        "2",
        "--device-memory",
        "0.001",
        "--out",
        r,
    ]);
    assert!(!o.status.success() && stderr(&o).contains("does not fit"), "{}", stderr(&o));
    assert!(stderr(&o).contains("by --device-memory") && stderr(&o).contains("2 micro-batch(es)"), "{}", stderr(&o));
    assert!(!refused.exists(), "a refused SFT writes nothing");
    let two = epoch_losses("2", "f16", "bigrec,llara");
    let one = epoch_losses("1", "f32", "bigrec");
    assert_eq!(two.len(), one.len());
    for (a, b) in two.iter().zip(&one) {
        assert!((a - b).abs() <= 0.02 * b, "SFT epoch losses on 2 devices {two:?}, on 1 {one:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A killed SFT run continued with `--resume` ends with the same checkpoint and result as an
/// uninterrupted one with the same seed.
#[test]
fn sft_killed_mid_run_resumes_to_identical_checkpoints() {
    let dir = scratch("kill");
    let model = small_tiny(&dir);
    let sft = |out: &Path| {
        let mut c = bin();
        c.args([
            "sft",
            "--model",
            model.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--train-size",
            "24",
            "--valid-size",
            "4",
            "--epochs",
            "3",
            "--max-new-tokens",
            "8",
            "--beams",
            "2",
            "--grad-accum",
            "1",
            "--backend",
            "cpu",
        ]);
        c
    };
    let (whole, killed) = (dir.join("whole"), dir.join("killed"));
    let o = sft(&whole).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));

    let mut child =
        sft(&killed).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let first = killed.join("checkpoints/epoch-001/state.json");
    let started = std::time::Instant::now();
    while !first.exists() {
        assert!(child.try_wait().unwrap().is_none(), "finished before it could be killed");
        assert!(started.elapsed().as_secs() < 120, "no checkpoint after 2 minutes");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!killed.join("run.json").exists(), "killed before the end");
    assert!(!killed.join("checkpoints/epoch-003").exists());

    let o = sft(&killed).arg("--resume").output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("resuming after epoch"), "{}", stderr(&o));
    let weights = "checkpoints/epoch-003/adapter/adapter_model.safetensors";
    assert!(std::fs::read(whole.join(weights)).unwrap() == std::fs::read(killed.join(weights)).unwrap());
    let (a, b) = (json(&whole.join("run.json")), json(&killed.join("run.json")));
    assert_eq!(a["details"]["best_epoch"], b["details"]["best_epoch"]);
    let key = |r: &serde_json::Value| -> Vec<String> {
        r["details"]["epochs"].as_array().unwrap().iter().map(|e| format!("{} {}", e["loss"], e["valid"])).collect()
    };
    assert_eq!(key(&a), key(&b), "same losses and validation metrics every epoch");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// A bad option of any command is refused with a message naming it before the first piece of
/// work: nothing is written, no stage runs (issue 28's classes: sizes, module names, learning
/// rates, non-finite numbers, prompt options).
#[test]
fn every_bad_option_is_refused_before_any_work() {
    let dir = scratch("bad-options");
    let out = dir.join("never");
    let o = out.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["run", "--out", o, "--history-len", "0"], "history_len"),
        (vec!["run", "--out", o, "--title-tokens", "0"], "title_tokens"),
        (vec!["run", "--out", o, "--lora-targets", "foo_proj"], "foo_proj"),
        (vec!["run", "--out", o, "--lr=-1"], "lr"),
        (vec!["run", "--out", o, "--lr", "nan"], "lr"),
        (vec!["run", "--out", o, "--train-size", "0"], "train_size"),
        (vec!["run", "--out", o, "--epochs", "0"], "epochs"),
        (vec!["run", "--out", o, "--d-samples", "0"], "d_samples"),
        (vec!["run", "--out", o, "--sasrec-epochs", "0"], "--sasrec-epochs"),
        (vec!["prepare", "--out", o, "--train-size", "0"], "train_size"),
        (vec!["sft", "--out", o, "--lr=-1"], "lr"),
        (vec!["sft", "--out", o, "--beams", "0"], "beams"),
        (vec!["soft", "--sft", o, "--out", o, "--d-samples", "0"], "--d-samples"),
        (vec!["baseline", "--method", "sasrec", "--out", o, "--epochs", "0"], "--epochs"),
        (vec!["baseline", "--method", "guidance-only", "--out", o, "--history-len", "0"], "history_len"),
        (vec!["run", "--out", o, "--micro-batch", "0"], "micro_batch"),
        (vec!["run", "--out", o, "--grad-accum", "0"], "grad_accum"),
        (vec!["run", "--out", o, "--weights-dtype", "f8"], "f32, f16, bf16, bf16-dot, stored or int8-dot"),
        (vec!["run", "--out", o, "--profile", "paper"], "--model"),
        (vec!["sft", "--out", o, "--micro-batch", "0"], "micro_batch"),
        (vec!["run", "--out", o, "--devices", "0"], "devices"),
        (vec!["run", "--out", o, "--device-memory", "nan"], "--device-memory"),
        (vec!["sft", "--out", o, "--device-memory", "0"], "--device-memory"),
        (vec!["sft", "--out", o, "--devices", "0"], "devices"),
        // lavapipe, the machine's one adapter, is no discrete GPU.
        (vec!["run", "--out", o, "--devices", "2", "--backend", "wgpu"], "--devices 2"),
        // WGSL has no bf16: cubecl would panic in a worker thread and train on garbage.
        (vec!["run", "--out", o, "--weights-dtype", "bf16", "--backend", "wgpu"], "--weights-dtype bf16"),
        // A GGUF's blocks are read on the CPU backend only.
        (vec!["run", "--out", o, "--weights-dtype", "stored", "--backend", "wgpu"], "--weights-dtype stored"),
        // bf16 dot products are AVX512_BF16's, on the CPU backend.
        (vec!["run", "--out", o, "--weights-dtype", "bf16-dot", "--backend", "wgpu"], "--weights-dtype bf16-dot"),
        // int8 dot products are AVX512_VNNI's, on the CPU backend.
        (vec!["run", "--out", o, "--weights-dtype", "int8-dot", "--backend", "wgpu"], "--weights-dtype int8-dot"),
    ];
    for (args, option) in cases {
        let o = run(&args);
        assert!(!o.status.success() && stderr(&o).contains(option), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("--resume"), "{args:?}: no resume advice for a bad option: {}", stderr(&o));
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
