// Runs a wasm32-wasip1 program (a soft-core bench or test binary built for wasm) under Node's
// WASI, in V8 (Chromium's engine): `node bench/run-wasi.mjs program.wasm [args...]`, the program
// seeing `args` as its command line; exits with the program's status. As cargo's runner for the
// wasm32-wasip1 target it runs the kernels' tests in wasm (scripts/test.sh). See also
// crates/soft-core/benches/page_decoding.rs.
import { readFile } from 'node:fs/promises';
import { WASI } from 'node:wasi';
const [program, ...args] = process.argv.slice(2);
const wasi = new WASI({ version: 'preview1', args: [program, ...args], env: {}, returnOnExit: true });
const wasm = await WebAssembly.compile(await readFile(program));
const instance = await WebAssembly.instantiate(wasm, wasi.getImportObject());
process.exitCode = wasi.start(instance);
