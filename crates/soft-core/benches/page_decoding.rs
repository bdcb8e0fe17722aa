//! The page's decoding work on the `tiny` model's shape (random weights, LoRA r 8 on q/v): a
//! 200-token prompt with 4 beams and a 100-token prompt with 10 beams (the page's setting), 32
//! new tokens without EOS. Prints the prompt's forward pass, 32 steps through `Llama::forward`
//! with a cache (burn's ops), and the whole beam search (its steps through the fused step where
//! it runs). Three rounds each; the first pays for warm-up (in wasm, the engine's tier-up).
//!
//! Natively: `cargo bench -p soft-core --bench page_decoding`. In wasm, outside a browser (V8,
//! the engine of Chromium, through Node's WASI), with the page's SIMD128:
//!
//! ```sh
//! rustup target add wasm32-wasip1
//! CARGO_TARGET_WASM32_WASIP1_RUSTFLAGS="-C target-feature=+simd128" \
//!   cargo build --release -p soft-core --no-default-features --bench page_decoding --target wasm32-wasip1
//! node bench/run-wasi.mjs "$CARGO_TARGET_DIR"/wasm32-wasip1/release/deps/page_decoding-*.wasm
//! ```

use std::time::Instant;

use burn::tensor::{Device, Int, Tensor, TensorData};
use soft_core::model::config::{LlamaConfig, LoraConfig};
use soft_core::model::decoding::generate::{beam_search, BeamConfig};
use soft_core::model::llama::Llama;

fn main() {
    let device = Device::flex();
    let config = LlamaConfig::tiny(1612);
    let lora = LoraConfig { dropout: 0.0, ..LoraConfig::default() };
    let model = Llama::init(&config, &device).unwrap().with_lora(&lora, 3).unwrap();
    for (prompt_len, beams) in [(200usize, 4usize), (100, 10)] {
        let prompt: Vec<u32> = (0..prompt_len).map(|i| (i * 7 % 1600) as u32 + 1).collect();
        for _ in 0..3 {
            let ids: Vec<i64> = prompt.iter().map(|&t| t as i64).collect();
            let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, prompt_len]), &device);
            let mut cache = model.new_cache(prompt_len + 40);
            let start = Instant::now();
            let _ = model.forward(ids, Tensor::ones([1, prompt_len], &device), Some(&mut cache)).into_data();
            let prompt_ms = start.elapsed().as_secs_f64() * 1e3;
            cache.reorder(&vec![0; beams]);
            let start = Instant::now();
            for s in 0..32 {
                let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![5 + s as i64; beams], [beams, 1]), &device);
                let _ = model.forward(ids, Tensor::ones([beams, 1], &device), Some(&mut cache)).into_data();
            }
            let steps_ms = start.elapsed().as_secs_f64() * 1e3;
            // An EOS id outside the vocabulary: exactly 32 new tokens.
            let mut search = BeamConfig::new(config.vocab_size as u32);
            (search.num_beams, search.num_return_sequences, search.max_new_tokens) = (beams, beams, 32);
            let start = Instant::now();
            beam_search(&model, &[prompt.clone()], &search).unwrap();
            let search_ms = start.elapsed().as_secs_f64() * 1e3;
            println!(
                "prompt {prompt_len}, {beams} beams: prompt {prompt_ms:.1} ms; 32 steps by burn's ops {steps_ms:.1} ms \
                 ({:.2} ms a step); beam search {search_ms:.1} ms",
                steps_ms / 32.0
            );
        }
    }
}
