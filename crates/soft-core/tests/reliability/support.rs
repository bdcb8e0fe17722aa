//! Valid files of every format the project reads, made here from scratch, and the assertion every
//! bad-input case shares: an error (never a panic) whose message names the file and what is wrong.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::tensor::Device;
use soft_core::model::config::{LlamaConfig, LoraConfig};
use soft_core::model::formats::gguf::writer::{q8_0_bytes, write_gguf, Out};
use soft_core::model::formats::gguf::MetaValue;
use soft_core::model::llama::Llama;
use soft_core::model::weights::{expected_shapes, FloatEncoding};
use soft_core::train::distill::{to_jsonl, Distilled};
use soft_core::train::{LmExample, LmTrainer, TrainConfig};

/// A fresh, empty directory under the system temp dir.
pub fn scratch(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("soft-reliability-{}-{n}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Asserts `result` is an error whose message names `path` and contains every one of `needles`;
/// returns the message.
#[track_caller]
pub fn expect_error<T>(result: soft_core::Result<T>, path: &Path, needles: &[&str]) -> String {
    let err = match result {
        Ok(_) => panic!("{}: accepted, but an error naming {needles:?} was expected", path.display()),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(&path.display().to_string()), "the error does not name {}: {err}", path.display());
    for needle in needles {
        assert!(err.contains(needle), "the error lacks {needle:?}: {err}");
    }
    err
}

/// A line of `n` bytes of `byte` (the "10 MB line" cases).
pub fn long_line(n: usize, byte: u8) -> Vec<u8> {
    vec![byte; n]
}

pub const TEN_MB: usize = 10 << 20;

pub fn catalog_json() -> &'static str {
    "{\n\"1\": \"Alpha\",\n\"2\": \"Beta\",\n\"3\": \"Gamma\",\n\"4\": \"Delta &amp; Co\"\n}\n"
}

pub fn sequences_csv() -> &'static str {
    "user_id,item_ids,timestamp\nu1,\"[1, 2, 3]\",10\nu2,\"[2, 4]\",11\nu3,\"[4, 1, 2, 3]\",12\n"
}

/// 12 interactions of 3 users on 4 titled items (k = 2 keeps them all).
pub fn interaction_csv() -> String {
    let mut s = String::from("user_id,parent_asin,rating,timestamp\n");
    for (u, user) in ["A", "B", "C"].iter().enumerate() {
        for i in 0..4 {
            s += &format!("{user},x{i},5.0,{}\n", 1_600_000_000_000u64 + (u * 10 + i) as u64 * 1000);
        }
    }
    s
}

pub fn metadata_jsonl() -> String {
    (0..4).map(|i| format!("{{\"parent_asin\": \"x{i}\", \"title\": \"Item {i}\", \"price\": null}}\n")).collect()
}

pub fn recbole_inter() -> String {
    let mut s = String::from("user_id:token\titem_id:token\trating:float\ttimestamp:float\n");
    for u in 1..=3 {
        for i in 1..=4 {
            s += &format!("{u}\t{i}\t4\t{}\n", 880_000_000 + u * 100 + i);
        }
    }
    s
}

pub fn recbole_item() -> &'static str {
    "item_id:token\tmovie_title:token_seq\trelease_year:token\n1\tHeat\t1995\n2\tUsual Suspects, The\t1995\n3\tFargo\t1996\n4\tBabe\t1995\n"
}

pub fn distilled_jsonl() -> String {
    let row = |i: u32| Distilled {
        prompt: format!("prompt {i}"),
        target: i,
        real: format!("\"Item {i}\""),
        distilled: "\"Item 1\"".into(),
        grounds_to_target: i == 1,
    };
    to_jsonl(&[row(1), row(2), row(3)])
}

/// A model small enough to build in milliseconds: vocabulary 300 (the byte-level tokenizer's 256
/// byte symbols and a few merges), two layers of width 32.
pub fn small_config() -> LlamaConfig {
    let mut c = LlamaConfig::tiny(VOCAB);
    (c.hidden_size, c.intermediate_size, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim) = (32, 64, 2, 2, 1, 16);
    c.max_seq_len = 64;
    c
}

pub fn small_model() -> Llama {
    Llama::init(&small_config(), &Device::flex()).unwrap()
}

/// `config.json` of [`small_config`] in Hugging Face's naming.
pub fn hf_config_json() -> String {
    let c = small_config();
    serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.n_layers,
        "num_attention_heads": c.n_heads,
        "num_key_value_heads": c.n_kv_heads,
        "vocab_size": c.vocab_size,
        "max_position_embeddings": c.max_seq_len,
        "tie_word_embeddings": c.tie_embeddings,
        "rms_norm_eps": 1e-5,
        "eos_token_id": 0
    })
    .to_string()
}

/// Every tensor of [`small_config`] as f32, in one safetensors file.
pub fn model_safetensors() -> Vec<u8> {
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = expected_shapes(&small_config())
        .into_iter()
        .enumerate()
        .map(|(t, (name, shape))| {
            let values: Vec<f32> = (0..shape.iter().product::<usize>()).map(|i| ((i + t) % 13) as f32 * 0.01).collect();
            (name, shape, FloatEncoding::F32.encode(&values))
        })
        .collect();
    let views = tensors.iter().map(|(name, shape, bytes)| {
        (name.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes).unwrap())
    });
    safetensors::serialize(views, None).unwrap()
}

pub const VOCAB: usize = 300;

/// A byte-level BPE tokenizer of at most [`VOCAB`] tokens, as `tokenizer.json` text.
pub fn tokenizer_json() -> String {
    let texts: Vec<String> = ["Alpha", "Beta", "Gamma", "Delta and Co"].iter().map(|t| t.repeat(3)).collect();
    let tokenizer = soft_core::model::formats::tokenizer::train_bpe(&texts, VOCAB, &[]).unwrap();
    tokenizer.to_string(false).unwrap()
}

/// A Hugging Face checkpoint directory of [`small_config`] in `dir`.
pub fn write_hf_dir(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), hf_config_json()).unwrap();
    std::fs::write(dir.join("model.safetensors"), model_safetensors()).unwrap();
    std::fs::write(dir.join("tokenizer.json"), tokenizer_json()).unwrap();
}

/// A PEFT adapter directory (LoRA r 8 on q/v) for [`small_model`] in `dir`.
pub fn write_adapter(dir: &Path) {
    let lora = LoraConfig { dropout: 0.0, ..LoraConfig::default() };
    small_model().with_lora(&lora, 3).unwrap().save_adapter(dir, "small").unwrap();
}

/// A LLaRA adapter directory: the adapter of [`write_adapter`] and `projector.safetensors` (a
/// 12-item table of width 6 and the projector into [`small_model`]).
pub fn write_llara_adapter(dir: &Path) {
    let lora = LoraConfig { dropout: 0.0, ..LoraConfig::default() };
    llara_model().with_lora(&lora, 3).unwrap().save_adapter(dir, "small").unwrap();
}

/// [`small_model`] reading item slots through a projector over a fixed 12 x 6 item table.
pub fn llara_model() -> Llama {
    let device = Device::flex();
    let values: Vec<f32> = (0..12 * 6).map(|i| ((i * 37 % 23) as f32 - 11.0) / 10.0).collect();
    let table = burn::tensor::Tensor::<2>::from_data(burn::tensor::TensorData::new(values, [12, 6]), &device);
    small_model().with_items(table, 5).unwrap()
}

/// AdamW's state after one step on [`small_model`] with LoRA, written to `path`.
pub fn write_optimizer(path: &Path) {
    let mut trainer = fresh_trainer();
    let examples = [LmExample::response_only(&[1, 2, 3], &[4, 5, 2]), LmExample::response_only(&[6, 7], &[8, 2])];
    trainer.micro_step(&examples.iter().collect::<Vec<_>>()).unwrap();
    trainer.flush();
    trainer.save_optimizer(path).unwrap();
}

/// A trainer for [`small_model`] with LoRA, to load optimizer states into.
pub fn fresh_trainer() -> LmTrainer {
    let device = Device::flex().autodiff();
    let model = Llama::init(&small_config(), &device).unwrap().with_lora(&LoraConfig::default(), 3).unwrap();
    let config = TrainConfig {
        lr: 1e-2,
        warmup_steps: 0,
        weight_decay: 0.0,
        micro_batch: 2,
        grad_accum: 1,
        seed: 1,
        max_steps: None,
        activation_checkpointing: false,
        base_dtype: Default::default(),
        devices: 1,
    };
    LmTrainer::new(model, config, 0)
}

/// The checkpoint layout `train/checkpoint.rs` writes, for epoch 1 under `dir/epoch-001/`:
/// adapter, optimizer state, `state.json` and `checksums.json`. Returns the epoch directory.
pub fn write_checkpoint(dir: &Path) -> PathBuf {
    let epoch = dir.join("epoch-001");
    write_adapter(&epoch.join("adapter"));
    write_optimizer(&epoch.join("optimizer.bpk"));
    let state = r#"{"epoch": 1, "steps": 1, "records": [2.5], "best": [1, 0.25], "extra": null}"#;
    std::fs::write(epoch.join("state.json"), state).unwrap();
    soft_core::checksums::write_manifest(&epoch).unwrap();
    epoch
}

/// A GGUF holding metadata of every value type and tensors in F32, F16, BF16 and Q8_0.
pub fn gguf_bytes() -> Vec<u8> {
    let meta = vec![
        ("general.architecture", MetaValue::Str("llama".into())),
        ("general.alignment", MetaValue::U32(32)),
        ("test.array", MetaValue::Array(vec![MetaValue::I32(-1), MetaValue::I32(2)])),
        ("test.nested", MetaValue::Array(vec![MetaValue::Array(vec![MetaValue::U8(1)])])),
        ("test.f64", MetaValue::F64(0.5)),
        ("test.bool", MetaValue::Bool(true)),
    ];
    let values: Vec<f32> = (0..64).map(|i| (i % 9) as f32 * 0.5 - 2.0).collect();
    let tensors = vec![
        Out { name: "a.f32".into(), shape: vec![2, 32], type_id: 0, bytes: FloatEncoding::F32.encode(&values) },
        Out { name: "b.f16".into(), shape: vec![64], type_id: 1, bytes: FloatEncoding::F16.encode(&values) },
        Out { name: "c.bf16".into(), shape: vec![4, 16], type_id: 30, bytes: FloatEncoding::BF16.encode(&values) },
        Out { name: "d.q8_0".into(), shape: vec![2, 32], type_id: 8, bytes: q8_0_bytes(&values) },
    ];
    write_gguf(&meta, &tensors, 32)
}
