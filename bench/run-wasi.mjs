// Runs a wasm32-wasip1 program (a soft-core bench built for wasm) under Node's WASI:
// `node bench/run-wasi.mjs program.wasm`. See crates/soft-core/benches/page_decoding.rs.
import { readFile } from 'node:fs/promises';
import { WASI } from 'node:wasi';
const wasi = new WASI({ version: 'preview1', args: [], env: {} });
const wasm = await WebAssembly.compile(await readFile(process.argv[2]));
const instance = await WebAssembly.instantiate(wasm, wasi.getImportObject());
wasi.start(instance);
