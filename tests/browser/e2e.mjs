// End-to-end test of the SOFT page in Debian's headless Chromium (playwright-core; never a
// downloaded browser). Serves the built folder on 127.0.0.1 and drives every view twice: with
// WebGPU (the page must say "WebGPU: <adapter>") and without (it must say "CPU (wasm)", served by
// the CPU bundle in cpu/, whose wasm must stay within 6 MB, and no other wasm fetched).
// Any console error or page error fails the run. When the export holds LLaRA (manifest
// `model.llara`) both backbones are driven: the switch in Recommend and in Curriculum, LLaRA's
// answers, its epochs and the walkthrough's hybrid prompt with its slot positions; without it,
// the page must show no switch.
//
//   node tests/browser/e2e.mjs [DIST=web/dist] [--screenshots DIR] [--only webgpu|cpu]
//
// Exit status 0 when every check passed, 1 otherwise.

import { chromium } from 'playwright-core';
import { createServer } from 'node:http';
import { mkdtempSync, readFileSync, existsSync, statSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, extname, resolve, normalize } from 'node:path';

const args = process.argv.slice(2);
const opt = (name) => {
  const i = args.indexOf(name);
  if (i < 0) return undefined;
  const v = args[i + 1];
  args.splice(i, 2);
  return v;
};
const shotsDir = opt('--screenshots');
const only = opt('--only');
const dist = resolve(args[0] ?? 'web/dist');
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';
const STARTUP_MS = Number(process.env.SOFT_E2E_STARTUP_MS ?? 180_000);

if (!existsSync(join(dist, 'index.html'))) {
  console.error(`e2e: ${dist}/index.html not found: build first (trunk build --release --config trunk.toml)`);
  process.exit(1);
}
if (!existsSync(chromiumPath)) {
  console.error(`e2e: ${chromiumPath} not found: run scripts/setup-web.sh (apt chromium)`);
  process.exit(1);
}

// ---- a static server over the built folder, on 127.0.0.1 only ----
const TYPES = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.mjs': 'text/javascript',
  '.wasm': 'application/wasm', '.css': 'text/css', '.json': 'application/json',
  '.png': 'image/png', '.svg': 'image/svg+xml', '.txt': 'text/plain', '.csv': 'text/csv',
  '.bin': 'application/octet-stream', '.safetensors': 'application/octet-stream',
};
const server = createServer((req, res) => {
  const url = new URL(req.url, 'http://127.0.0.1');
  let path = normalize(join(dist, decodeURIComponent(url.pathname)));
  if (!path.startsWith(dist)) { res.writeHead(403).end(); return; }
  if (existsSync(path) && statSync(path).isDirectory()) path = join(path, 'index.html');
  if (!existsSync(path)) { res.writeHead(404).end('not found'); return; }
  const body = readFileSync(path);
  res.writeHead(200, { 'content-type': TYPES[extname(path)] ?? 'application/octet-stream', 'content-length': body.length, 'cache-control': 'no-store' });
  res.end(body);
});
await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
const base = `http://127.0.0.1:${server.address().port}/`;

// What the shipped reports hold, to check the charts against.
const manifest = JSON.parse(readFileSync(join(dist, 'assets/manifest.json'), 'utf8'));
const softEntry = manifest.reports.find((r) => JSON.parse(readFileSync(join(dist, 'assets', r.path), 'utf8')).d0 !== undefined);
const softReport = JSON.parse(readFileSync(join(dist, 'assets', softEntry.path), 'utf8'));
const EPOCHS = softReport.epochs.length;
// The exported model, when the assets hold one (`soft-train export`), and its catalog.
const MODEL = manifest.model;
const CATALOG = JSON.parse(readFileSync(join(dist, 'assets', manifest.dataset.items), 'utf8'));
// LLaRA's models and SOFT report, when the export has them.
const LLARA = MODEL?.llara;
const llaraSoftReport = LLARA && (LLARA.reports ?? [])
  .map((r) => JSON.parse(readFileSync(join(dist, 'assets', r.path), 'utf8')))
  .find((r) => r.d0 !== undefined);
// The run's test table as the run wrote it (`table.md`, shipped by the export): the numbers the
// page shows beside each answer must be these, cell for cell.
const TABLE = manifest.table ? parseTable(readFileSync(join(dist, 'assets', manifest.table), 'utf8')) : null;
function parseTable(md) {
  const lines = md.split('\n').filter((l) => l.startsWith('| '));
  const header = lines[0].split('|').slice(1, -1).map((c) => c.trim());
  const rows = {};
  for (const l of lines.slice(1)) {
    const cells = l.split('|').slice(1, -1).map((c) => c.trim());
    // The first table only: the paired SOFT-vs-SFT blocks that follow have other columns.
    if (cells.length !== header.length || rows[cells[0]]) continue;
    rows[cells[0]] = Object.fromEntries(header.map((h, i) => [h, cells[i]]));
  }
  return rows;
}
// A word of a real catalog title to type into the search (whatever dataset the export ships).
const SEARCH_WORD = Object.values(CATALOG).map((t) => String(t).split(/[^A-Za-z]+/).find((w) => w.length >= 5)).find(Boolean);
// Per mode, what SFT and SOFT answered for the same history (compared across backends at the end).
const answers = {};

const COMMON = [
  '--headless', '--no-sandbox', '--disable-background-networking', '--disable-component-update',
  '--no-first-run', '--disable-dev-shm-usage',
];
const MODES = [
  { name: 'webgpu', args: ['--enable-unsafe-webgpu', '--use-webgpu-adapter=swiftshader', '--enable-features=Vulkan'], backend: /^WebGPU: \S/, bundle: /^\/$/ },
  { name: 'cpu', args: [], backend: /^CPU \(wasm\)$/, bundle: /^\/cpu\/$/ },
].filter((m) => !only || m.name === only);

let failures = 0;
const results = [];

function check(mode, what, ok, detail = '') {
  results.push({ mode, what, ok });
  console.log(`${ok ? 'ok  ' : 'FAIL'} [${mode}] ${what}${detail ? ` (${detail})` : ''}`);
  if (!ok) failures++;
}

async function text(page, selector) {
  return (await page.locator(selector).first().textContent({ timeout: 15_000 }))?.trim() ?? '';
}

async function runMode(mode) {
  const profile = mkdtempSync(join(tmpdir(), `soft-e2e-${mode.name}-`));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: chromiumPath,
    headless: true,
    args: [...COMMON, ...mode.args],
    viewport: { width: 1280, height: 900 },
    deviceScaleFactor: 1,
  });
  const page = context.pages()[0] ?? (await context.newPage());
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(`console.error: ${m.text()}`); });
  page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  page.on('dialog', async (d) => { errors.push(`unexpected dialog: ${d.message()}`); await d.dismiss(); });
  page.on('requestfailed', (r) => errors.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
  const logs = [];
  page.on('console', (m) => { if (m.type() !== 'error') logs.push(m.text()); });
  // Every wasm the first page load fetches, with its size.
  const wasms = [];
  page.on('response', async (r) => {
    if (r.url().endsWith('.wasm')) wasms.push({ path: new URL(r.url()).pathname, bytes: Number(r.headers()['content-length']) });
  });

  try {
    const t0 = Date.now();
    await page.goto(`${base}#/recommend`);
    await page.waitForFunction(
      () => {
        const el = document.querySelector('[data-testid=backend] .backend-label');
        return el && !el.textContent.startsWith('starting');
      },
      null,
      { timeout: STARTUP_MS },
    );
    const label = await text(page, '[data-testid=backend] .backend-label');
    check(mode.name, `backend label "${label}"`, mode.backend.test(label), `started in ${Date.now() - t0} ms`);
    // The root page keeps a browser with a WebGPU adapter and sends one without to the CPU bundle
    // before fetching any wasm: one wasm per mode, the CPU one within 6 MB.
    const at = new URL(page.url()).pathname;
    const fetched = wasms.map((w) => `${w.path} ${w.bytes} B`).join(', ');
    check(mode.name, `served by the ${mode.name === 'cpu' ? 'CPU' : 'WebGPU'} bundle (${at}), its wasm alone fetched`,
      mode.bundle.test(at) && wasms.length === 1 && wasms[0].path.startsWith(at) && (mode.name !== 'cpu' || wasms[0].bytes <= 6e6), fetched);

    // ---- Recommend ----
    await page.waitForSelector('[data-view=recommend] [data-testid=search]', { timeout: 60_000 });
    await page.click('[data-testid=recommend]');
    check(mode.name, 'empty history: message', /empty/i.test(await text(page, '[data-testid=history-message]')));

    await page.fill('[data-testid=search]', SEARCH_WORD.toLowerCase());
    await page.waitForSelector('[data-testid=suggestions] button', { timeout: 10_000 });
    const first = await text(page, '[data-testid=suggestions] button .title');
    await page.click('[data-testid=suggestions] button');
    const items = await page.locator('[data-testid=history] li').count();
    check(mode.name, `type-ahead ("${SEARCH_WORD.toLowerCase()}") adds a catalog title`, items === 1 && first.toLowerCase().includes(SEARCH_WORD.toLowerCase()), first);

    await page.fill('[data-testid=search]', '<script>alert(1)</script> 🙂 %00 ∑ \\"');
    check(mode.name, 'odd characters: no match message', /no catalog title matches/i.test(await text(page, '[data-testid=no-match]')));
    await page.press('[data-testid=search]', 'Enter');
    check(mode.name, 'odd characters + Enter: message', /no catalog title matches/i.test(await text(page, '[data-testid=history-message]')));
    await page.fill('[data-testid=search]', '');

    await page.click('details.paste summary');
    const fifty = Array.from({ length: 50 }, (_, i) => String(i + 1)).join(', ');
    await page.fill('[data-testid=paste]', fifty);
    await page.click('[data-testid=use-ids]');
    check(mode.name, '50 items: message', /50 items/.test(await text(page, '[data-testid=history-message]')));
    await page.fill('[data-testid=paste]', '12, twelve');
    await page.click('[data-testid=use-ids]');
    check(mode.name, 'a non-id: message', /not an item id/.test(await text(page, '[data-testid=history-message]')));
    check(mode.name, 'bad input leaves the history as it was', (await page.locator('[data-testid=history] li').count()) === 1);

    await page.fill('[data-testid=paste]', '');
    await page.click('details.paste summary');
    await page.click('[data-testid=real-user]');
    const real = await page.locator('[data-testid=history] li').count();
    const truth = await text(page, '[data-testid=truth]');
    // Most windows hold ten items before the next; some users have fewer (the page says how many).
    const said = Number(/: (\d+) [a-z]+ in the order [a-z]+\./.exec(await text(page, '[data-testid=history-message]'))?.[1]);
    check(mode.name, 'a real user from the test split: their items (at most 10, as many as the page says) and the true next one', real === said && real >= 1 && real <= 10 && truth.length > 20, `${real} items; ${truth}`);

    // With a model: one click once it has loaded, then wait until both answers are in (minutes
    // on WebGPU through SwiftShader, a CPU emulating a GPU).
    if (MODEL) {
      await page.waitForFunction(() => /Model:|did not load|No model/.test(document.querySelector('[data-testid=model-status]')?.textContent ?? ''), null, { timeout: STARTUP_MS });
      const status = await text(page, '[data-testid=model-status]');
      check(mode.name, 'the model loaded', status.startsWith('Model:'), status.slice(0, 100));
      if (mode.name === 'webgpu') {
        // The page checks the project's WGSL grounding kernel against the tensor ranking at load.
        const k = /WGSL kernel on .+ the same top-10 as the tensor ranking for (\d+) of (\d+) probe queries/.exec(status);
        check(mode.name, 'the WGSL grounding kernel ranks like the tensor ops in the page', Boolean(k) && k[1] === k[2] && Number(k[2]) > 0, status.slice(status.indexOf('grounding by')));
      }
      await page.click('[data-testid=recommend]');
      await page.waitForFunction(() => !document.querySelector('[data-testid=recommend]')?.disabled && document.querySelector('.results, [data-testid=recommend-message]'), null, { timeout: 600_000 });
    } else {
      await page.click('[data-testid=recommend]');
    }
    await page.waitForSelector('[data-testid=recommend-message], .results', { timeout: 120_000 });
    const rec = await page.locator('[data-testid=recommend-message]').count()
      ? await text(page, '[data-testid=recommend-message]')
      : await text(page, '.results');
    check(mode.name, 'Recommend answers (or says why not)', rec.length > 10, rec.slice(0, 120));
    if (MODEL) {
      const truthId = Number(/#(\d+)\s*$/.exec(truth)?.[1]);
      // The two answer cards on the page, checked for `want` (e.g. ['SFT', 'SOFT']).
      const checkCards = async (want) => {
        const cards = await page.locator('.results .result').evaluateAll((els) => els.map((e) => ({
          model: e.dataset.model,
          generated: e.querySelector('.generated q')?.textContent ?? '',
          numbers: (({ row, hr10, ndcg10 } = e.querySelector('[data-testid=test-numbers]')?.dataset ?? {}) => ({ row, hr10, ndcg10, text: e.querySelector('[data-testid=test-numbers]')?.textContent ?? '' }))(),
          timings: e.querySelector('[data-testid=timings]')?.textContent ?? '',
          error: e.querySelector('.message')?.textContent ?? '',
          items: [...e.querySelectorAll('[data-testid=top10] li')].map((li) => ({
            id: Number(li.dataset.id),
            title: li.querySelector('.title')?.textContent ?? '',
            hit: li.classList.contains('hit'),
            dist: Number(li.querySelector('.dist')?.textContent),
          })),
        })));
        check(mode.name, `${want.join(' and ')} answer side by side`, cards.map((c) => c.model).join() === want.join(), cards.map((c) => c.error || c.model).join(' | '));
        for (const c of cards) {
          check(mode.name, `${c.model}: ten real catalog titles`, c.items.length === 10 && c.items.every((i) => CATALOG[String(i.id)] !== undefined && i.title.length > 0), `wrote "${c.generated}"`);
          check(mode.name, `${c.model}: the true next item highlighted exactly where it appears`, c.items.every((i) => i.hit === (i.id === truthId)));
          const t = /tokenize (\d+) ms · generate (\d+) ms · ground (\d+) ms · (\d+) ms in all on (.+) · answered by (.+)$/.exec(c.timings);
          check(mode.name, `${c.model}: latency per stage, on the backend in use, answered by that model`, Boolean(t) && t[5] === label && t[6] === c.model, c.timings);
          check(mode.name, `${c.model}: the answer shown without the response format's quotes`, c.generated.length > 0 && !c.generated.startsWith('"') && !c.generated.endsWith('"'), c.generated);
          if (TABLE) {
            // The page's numbers are the run's table's: the model's row, then the baselines'.
            const row = TABLE[c.numbers.row];
            const pop = TABLE['popularity']?.['HR@10'];
            const sas = TABLE['SASRec']?.['HR@10'];
            const ok = Boolean(row) && row['HR@10'] === c.numbers.hr10 && row['NDCG@10'] === c.numbers.ndcg10
              && c.numbers.text.includes(`HR@10 ${row['HR@10']}`) && c.numbers.text.includes(`NDCG@10 ${row['NDCG@10']}`)
              && (!pop || c.numbers.text.includes(`popularity ${pop}`)) && (!sas || c.numbers.text.includes(`SASRec ${sas}`));
            check(mode.name, `${c.model}: its test HR@10 and NDCG@10 with intervals beside the answer, as in the run's table.md (row "${c.numbers.row}")`, ok, c.numbers.text.slice(0, 220));
          } else {
            check(mode.name, `${c.model}: the page says the export has no test table`, /no test table/.test(c.numbers.text), c.numbers.text);
          }
        }
        if (cards.length === 2) {
          const same = JSON.stringify(cards[0].items.map((i) => i.id)) === JSON.stringify(cards[1].items.map((i) => i.id));
          const said = (await page.locator('[data-testid=same-answer]').count()) === 1;
          check(mode.name, `${want.join(' and ')}: the page says when both give the same ten answers, and only then`, same === said, `same: ${same}`);
        }
        return cards;
      };
      const recommendAgain = async () => {
        await page.click('[data-testid=recommend]');
        await page.waitForFunction(() => !document.querySelector('[data-testid=recommend]')?.disabled && document.querySelector('.results, [data-testid=recommend-message]'), null, { timeout: 600_000 });
      };
      answers[mode.name] = await checkCards(['SFT', 'SOFT']);
      const constrainedRun = async (what) => {
        await page.locator('input[name=decoding]').nth(1).check();
        await page.click('[data-testid=recommend]');
        await page.waitForFunction(() => !document.querySelector('[data-testid=recommend]')?.disabled, null, { timeout: 300_000 });
        const constrained = await page.locator('.results [data-testid=top10]').evaluateAll((els) => els.map((e) => e.children.length));
        check(mode.name, `constrained decoding: both ${what} models answer with ten items`, constrained.join() === '10,10', constrained.join());
        await page.locator('input[name=decoding]').nth(0).check();
      };
      // The other decoding: every answer is then a real title (the trie), still ten items. Once,
      // on the CPU path: through SwiftShader it would cost another four minutes of the test.
      if (mode.name === 'cpu') await constrainedRun('BIGRec');
      const switches = await page.locator('[data-testid=backbone-recommend]').count();
      if (LLARA) {
        // The same history through LLaRA: titles plus each item's projected SASRec embedding.
        check(mode.name, 'the backbone switch is shown (the export has LLaRA)', switches === 1);
        const t0 = Date.now();
        await page.click('[data-testid=backbone-recommend] [data-backbone=llara]');
        check(mode.name, 'the switch selects LLaRA', (await page.locator('[data-testid=backbone-recommend] [data-backbone=llara]').getAttribute('aria-pressed')) === 'true');
        await recommendAgain();
        answers[`${mode.name}-llara`] = await checkCards(['LLaRA-SFT', 'LLaRA-SOFT']);
        console.log(`     [${mode.name}] LLaRA-SFT + LLaRA-SOFT answered in ${Date.now() - t0} ms (their adapters and projectors fetched on first use)`);
        if (mode.name === 'cpu') await constrainedRun('LLaRA');
        // And back: BIGRec's models answer again, as they did before.
        await page.click('[data-testid=backbone-recommend] [data-backbone=bigrec]');
        if (mode.name === 'cpu') {
          await recommendAgain();
          const again = await checkCards(['SFT', 'SOFT']);
          check(mode.name, 'switching back to BIGRec gives its answers again', JSON.stringify(again.map((c) => c.generated)) === JSON.stringify(answers[mode.name].map((c) => c.generated)));
        }
      } else {
        check(mode.name, 'no backbone switch (the export has no LLaRA)', switches === 0);
      }
    }
    if (shotsDir && mode.name === MODES[0].name) {
      await page.screenshot({ path: join(shotsDir, 'recommend.png'), fullPage: true });
    }

    // ---- Curriculum ----
    await page.click('[data-tab=curriculum]');
    await page.waitForSelector('svg[data-chart=lambda]', { timeout: 30_000 });
    for (const [chart, series] of [['distance', ['d_t']], ['lambda', ['λ']], ['loss', ['real targets', 'distilled targets']], ['hr10', ['SOFT']]]) {
      for (const s of series) {
        const n = await page.locator(`svg[data-chart=${chart}] g.pt[data-series="${s}"]`).count();
        check(mode.name, `curriculum chart ${chart}/${s}: one point per epoch`, n === EPOCHS, `${n} of ${EPOCHS}`);
      }
      const ticks = await page.locator(`svg[data-chart=${chart}] .tick text`).count();
      const tips = await page.locator(`svg[data-chart=${chart}] g.pt title`).count();
      check(mode.name, `curriculum chart ${chart}: axes and tooltips`, ticks >= 4 && tips >= EPOCHS, `${ticks} tick labels, ${tips} tooltips`);
    }
    // The whole run's report exists once every stage and evaluation is done; an export of a run
    // still evaluating ships without it.
    if (manifest.reports.some((r) => r.path.endsWith('run.json'))) {
      check(mode.name, 'curriculum: run stages table', (await page.locator('[data-testid=run-stages] tbody tr').count()) > 3);
    }
    // The epoch slider: each epoch's adapter answers for the history, and the page names it.
    const slide = async (epochs, name) => {
      for (const e of epochs) {
        await page.locator('[data-testid=epoch-slider]').fill(String(e));
        await page.waitForSelector(`[data-testid=epoch-result][data-epoch="${name} after epoch ${e}"]`, { timeout: 600_000 });
        const n = await page.locator('[data-testid=epoch-result] .top10 li').count();
        const named = await text(page, '[data-testid=epoch-result] h4');
        check(mode.name, `epoch slider: ${name} epoch ${e}'s adapter answers with ten items and is named`, n === 10 && named === `Answered by ${name} after epoch ${e}`, named);
      }
    };
    if (MODEL) await slide(MODEL.soft.epochs.map((x) => x.epoch), 'SOFT');
    const curriculumSwitch = await page.locator('[data-testid=backbone-curriculum]').count();
    if (LLARA) {
      check(mode.name, 'curriculum: the backbone switch is shown', curriculumSwitch === 1);
      await page.click('[data-testid=backbone-curriculum] [data-backbone=llara]');
      const source = await text(page, '[data-testid=soft-source]');
      check(mode.name, 'curriculum: the switch draws LLaRA-SOFT\'s report', /LLaRA-SOFT/.test(source), source);
      if (llaraSoftReport) {
        const n = await page.locator('svg[data-chart=lambda] g.pt').count();
        check(mode.name, 'curriculum: λ per LLaRA-SOFT epoch', n === llaraSoftReport.epochs.length, `${n} of ${llaraSoftReport.epochs.length}`);
      }
      // Every LLaRA epoch on the CPU path; on SwiftShader the last one (minutes per answer).
      const epochs = LLARA.soft.epochs.map((x) => x.epoch);
      await slide(mode.name === 'cpu' ? epochs : epochs.slice(-1), 'LLaRA-SOFT');
      await page.click('[data-testid=backbone-curriculum] [data-backbone=bigrec]');
      check(mode.name, 'curriculum: back to BIGRec\'s report', !/LLaRA/.test(await text(page, '[data-testid=soft-source]')));
    } else {
      check(mode.name, 'curriculum: no backbone switch (the export has no LLaRA)', curriculumSwitch === 0);
    }
    if (shotsDir && mode.name === MODES[0].name) {
      await page.screenshot({ path: join(shotsDir, 'curriculum.png'), fullPage: true });
    }

    // ---- Walkthrough ----
    await page.click('[data-tab=walkthrough]');
    await page.waitForSelector('section.stage', { timeout: 30_000 });
    const stages = await page.locator('section.stage').evaluateAll((els) =>
      els.map((e) => ({ id: e.dataset.stage, h: e.querySelector('h3')?.textContent ?? '', len: e.textContent.length })));
    const want = ['prompt', 'sft', 'distill', 'scheduler', 'mixed-loss', 'grounding'];
    check(mode.name, 'walkthrough: every stage, in order', JSON.stringify(stages.map((s) => s.id)) === JSON.stringify(want), stages.map((s) => s.id).join(','));
    check(mode.name, 'walkthrough: every stage has a title and text', stages.every((s) => s.h.length > 3 && s.len > 200));
    const prompt = await text(page, '[data-testid=prompt]');
    check(mode.name, 'walkthrough: the prompt of a real window', prompt.includes('### Instruction:') && prompt.includes('### Response:') && /The user has [a-z]+ the following [a-z ]+ before: "/.test(prompt));
    if (LLARA) {
      // LLaRA's hybrid prompt of the same window: the markers in the text, and a table of the
      // token positions that take an item embedding (from the page's own tokenizer).
      await page.waitForSelector('[data-testid=slot-positions] tbody tr', { timeout: STARTUP_MS });
      const hybrid = await text(page, '[data-testid=hybrid-prompt]');
      const markers = [...hybrid.matchAll(/<\|item:(\d+)\|>/g)].map((m) => Number(m[1]));
      const rows = await page.locator('[data-testid=slot-positions] tbody tr').evaluateAll((els) => els.map((e) => ({ pos: Number(e.dataset.position), item: Number(e.dataset.item), title: e.children[2]?.textContent ?? '' })));
      const titled = rows.every((r, i) => r.item === markers[i] && r.title.length > 0 && hybrid.includes(`" <|item:${r.item}|>`));
      const increasing = rows.every((r, i) => i === 0 || r.pos > rows[i - 1].pos);
      check(mode.name, 'walkthrough: the hybrid prompt, one marker after each history title', markers.length > 0 && hybrid.includes('### Response:'), `${markers.length} markers`);
      check(mode.name, 'walkthrough: one slot position per marker, in order, each after its title', rows.length === markers.length && titled && increasing, rows.map((r) => r.pos).join(','));
      const strip = await page.locator('[data-testid=token-strip] .tok.slot').count();
      const summary = await text(page, '[data-testid=slot-summary]');
      check(mode.name, 'walkthrough: the token strip and the summary name the same positions', strip === rows.length && summary.includes(`positions ${rows.map((r) => r.pos).join(', ')}`), summary.slice(0, 160));
    } else {
      check(mode.name, 'walkthrough: no hybrid prompt (the export has no LLaRA)', (await page.locator('[data-testid=hybrid]').count()) === 0);
    }
    await page.click('[data-alpha="100"]');
    check(mode.name, 'alpha 100 selected', (await text(page, '[data-testid=alpha-value]')) === '100');
    const curves = await page.locator('svg[data-chart=alpha-curve] g.series').count();
    check(mode.name, 'alpha chart: four reference curves and the chosen one', curves === 5, `${curves}`);
    const pts = await page.locator('svg[data-chart=alpha-lambda] g.pt').count();
    check(mode.name, 'alpha-lambda chart: the chosen and the run\'s λ per epoch', pts === 2 * EPOCHS, `${pts}`);
    const cells = await page.locator('[data-testid=metrics-table] tbody tr').count();
    check(mode.name, 'worked metrics example', cells === 5);
    if (shotsDir && mode.name === MODES[0].name) {
      await page.click('[data-alpha="10"]');
      await page.screenshot({ path: join(shotsDir, 'walkthrough.png'), fullPage: true });
      await page.locator('#stage-scheduler').screenshot({ path: join(shotsDir, 'scheduler.png') });
    }
    // ---- Curriculum: files a person drops in ----
    await page.click('[data-tab=curriculum]');
    await page.waitForSelector('[data-testid=report-file]', { state: 'attached', timeout: 30_000 });
    const upload = async (name, body) => {
      await page.setInputFiles('[data-testid=report-file]', { name, mimeType: 'application/json', buffer: Buffer.from(body) });
      await page.waitForFunction((n) => document.querySelector('[data-testid=report-message]')?.textContent.includes(n), name, { timeout: 10_000 });
      return text(page, '[data-testid=report-message]');
    };
    check(mode.name, 'a JSON file that is not a report: message', /not a report written by soft-train/.test(await upload('other.json', '{"hello": 1}')));
    check(mode.name, 'a file that is not JSON: message', /not JSON/.test(await upload('garbage.json', 'this is \u0000 not json')));
    const old = structuredClone(softReport);
    old.epochs.forEach((e) => delete e.lambda);
    check(mode.name, 'a report of another version: message', /another version/.test(await upload('old.json', JSON.stringify(old))));
    // A report with one more epoch is drawn with one more point.
    const longer = structuredClone(softReport);
    const extra = structuredClone(longer.epochs.at(-1));
    extra.epoch += 1; extra.lambda *= 0.5; extra.d *= 0.97; extra.loss_real *= 0.95; extra.loss_distilled *= 0.8;
    longer.epochs.push(extra);
    const msg = await upload('longer.json', JSON.stringify(longer));
    const n = await page.locator('svg[data-chart=lambda] g.pt').count();
    check(mode.name, 'a dropped report is drawn', /Drawn/.test(msg) && n === EPOCHS + 1, `${n} points`);

    // ---- ?backend=cpu forces the CPU path even where WebGPU works ----
    if (mode.name === 'webgpu') {
      await page.goto(`${base}?backend=cpu#/walkthrough`);
      await page.waitForFunction(
        () => document.querySelector('[data-testid=backend] .backend-label')?.textContent === 'CPU (wasm)',
        null,
        { timeout: STARTUP_MS },
      );
      check(mode.name, '?backend=cpu: the page reports CPU (wasm)', true);
    }
    // ---- a corrupt weight file: a visible message naming it, and the page keeps working ----
    if (MODEL && mode.name === MODES.at(-1).name) {
      const bad = await context.newPage();
      await bad.route(`**/assets/${MODEL.weights}`, (r) => r.fulfill({ status: 200, contentType: 'application/octet-stream', body: Buffer.from('not a safetensors file') }));
      await bad.goto(`${base}#/recommend`);
      await bad.waitForFunction(() => /did not load/.test(document.querySelector('[data-testid=model-status]')?.textContent ?? ''), null, { timeout: STARTUP_MS });
      const status = (await bad.locator('[data-testid=model-status]').textContent()) ?? '';
      check(mode.name, 'a corrupt weight file: a visible message naming the file', status.includes(MODEL.weights.split('/').pop()), status.slice(0, 160));
      await bad.click('[data-testid=real-user]');
      await bad.click('[data-testid=recommend]');
      await bad.waitForSelector('[data-testid=recommend-message]', { timeout: 30_000 });
      await bad.click('[data-tab=walkthrough]');
      check(mode.name, 'a corrupt weight file: the rest of the page still works', (await bad.locator('section.stage').count()) === 6);
      await bad.close();
    }
    // ---- a corrupt LLaRA projector: that model's card names the file, the other still answers ----
    if (LLARA && mode.name === MODES.at(-1).name) {
      const bad = await context.newPage();
      const layers = LLARA.soft.projector;
      await bad.route(`**/assets/${layers}`, (r) => r.fulfill({ status: 200, contentType: 'application/octet-stream', body: Buffer.from('not a safetensors file') }));
      await bad.goto(`${base}#/recommend`);
      await bad.waitForFunction(() => /Model:|did not load|No model/.test(document.querySelector('[data-testid=model-status]')?.textContent ?? ''), null, { timeout: STARTUP_MS });
      await bad.click('[data-testid=real-user]');
      await bad.click('[data-testid=backbone-recommend] [data-backbone=llara]');
      await bad.click('[data-testid=recommend]');
      await bad.waitForFunction(() => !document.querySelector('[data-testid=recommend]')?.disabled && document.querySelector('.results, [data-testid=recommend-message]'), null, { timeout: 300_000 });
      const cards = await bad.locator('.results .result').evaluateAll((els) => els.map((e) => ({ model: e.dataset.model, error: e.querySelector('.message')?.textContent ?? '', n: e.querySelectorAll('[data-testid=top10] li').length })));
      const soft = cards.find((c) => c.model === 'LLaRA-SOFT');
      const sft = cards.find((c) => c.model === 'LLaRA-SFT');
      check(mode.name, 'a corrupt LLaRA projector: LLaRA-SOFT says so, naming the file', Boolean(soft) && soft.error.includes(layers.split('/').pop()), soft?.error.slice(0, 160));
      check(mode.name, 'a corrupt LLaRA projector: LLaRA-SFT still answers', sft?.n === 10);
      await bad.close();
    }
  } catch (e) {
    check(mode.name, 'no exception while driving the page', false, e.message.split('\n')[0]);
    if (shotsDir) await page.screenshot({ path: join(shotsDir, `failure-${mode.name}.png`), fullPage: true }).catch(() => {});
  }
  check(mode.name, 'no console error, page error or failed request', errors.length === 0, errors.slice(0, 5).join(' | '));
  for (const l of logs.filter((l) => l.startsWith('backend:'))) console.log(`     [${mode.name}] ${l}`);
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}

if (shotsDir) mkdirSync(shotsDir, { recursive: true });
try {
  for (const mode of MODES) await runMode(mode);
} finally {
  server.close();
}
// Both backends ran the same models on the same history: the same answers and the same top-10
// (distances within float tolerance; the page shows them to 4 significant digits).
for (const [gpu, cpu] of [['webgpu', 'cpu'], ['webgpu-llara', 'cpu-llara']]) {
  if (!answers[gpu] || !answers[cpu]) continue;
  for (const [i, g] of answers[gpu].entries()) {
    const c = answers[cpu][i];
    const same = g.generated === c?.generated && JSON.stringify(g.items.map((x) => x.id)) === JSON.stringify(c.items.map((x) => x.id));
    const diff = Math.max(...g.items.map((x, j) => Math.abs(x.dist - (c?.items[j]?.dist ?? Infinity))));
    check('both', `${g.model}: the same answer and top-10 on WebGPU and CPU`, same && diff <= 0.02 * Math.max(1, ...g.items.map((x) => x.dist)), `max distance difference ${diff}`);
  }
}
console.log(`\n${results.length - failures} of ${results.length} checks passed`);
process.exit(failures ? 1 : 0);
