// Drives the studio's trace pages in real headless Chromium (through playwright-core) as a
// Data Scientist and a Reader would: the experiment's trace list and its filter, a trace's
// span timeline (nesting, a bar per span, folded inputs and the exception event), its
// assessments added, updated and deleted from the page, links between a trace and its run and
// from a logged model to its traces; the experiment's evaluation datasets and a dataset's
// records; a Reader sees the same page but its forms are refused. Exits non-zero, saying what it
// expected, at the first thing that is wrong.
//
//   TARN_URL=… TARN_TOKEN=… TARN_READER_TOKEN=… TARN_EXPERIMENT=… TARN_OK_TRACE=…
//   TARN_ERROR_TRACE=… TARN_RUN=… TARN_MODEL=… TARN_MODEL_TRACE=… node studio_traces.mjs

import { chromium } from 'playwright-core';

const env = (k) => {
  if (!process.env[k]) throw new Error(`${k} is not set`);
  return process.env[k];
};
const url = env('TARN_URL');
const ws = 'default';
const experiment = env('TARN_EXPERIMENT');
const okTrace = env('TARN_OK_TRACE');
const errorTrace = env('TARN_ERROR_TRACE');
const run = env('TARN_RUN');
const model = env('TARN_MODEL');
const modelTrace = env('TARN_MODEL_TRACE');

function expect(ok, what) {
  if (!ok) throw new Error(`expected ${what}`);
  console.log(`ok: ${what}`);
}

async function login(browser, token) {
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
  await page.goto(`${url}/login`);
  await page.fill('#token', token);
  await page.click('button[type=submit]');
  await page.waitForURL(`**/ws/${ws}/jobs`);
  return page;
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
});
try {
  const page = await login(browser, env('TARN_TOKEN'));

  // The experiment links to its traces; the list shows both, newest first, and filters.
  await page.goto(`${url}/ws/${ws}/experiments/${experiment}`);
  await page.click('text=Traces of this experiment');
  await page.waitForURL(`**/experiments/${experiment}/traces`);
  const ids = await page.$$eval('tbody tr td:first-child a', (as) => as.map((a) => a.textContent));
  expect(ids.length === 4 && ids.includes(okTrace) && ids.includes(errorTrace) && ids[0] === modelTrace, `four traces listed, newest first (${ids})`);
  await page.fill('input[name=filter]', "trace.status = 'ERROR'");
  await page.click('text=Search');
  const failed = await page.$$eval('tbody tr td:first-child a', (as) => as.map((a) => a.textContent));
  expect(failed.length === 1 && failed[0] === errorTrace, `the filter to leave the failed trace (${failed})`);
  await page.fill('input[name=filter]', "trace.status = 'sideways' OR x");
  await page.click('text=Search');
  expect(await page.getByRole('alert').isVisible(), 'a bad filter to be shown as an error');

  // The failed trace: one span, its exception as an event.
  await page.goto(`${url}/ws/${ws}/traces/${errorTrace}`);
  expect((await page.textContent('.facts')).includes('ERROR'), 'the failed trace to say ERROR');
  await page.click('li.span summary:has-text("Events")');
  expect((await page.textContent('li.span')).includes('boom'), 'the exception message among the events');

  // The good trace: the span tree, nested, a bar each, inputs folded.
  await page.goto(`${url}/ws/${ws}/traces/${okTrace}`);
  const names = await page.$$eval('li.span .span-head strong', (s) => s.map((e) => e.textContent));
  expect(JSON.stringify(names) === JSON.stringify(['answer', 'retrieve', 'generate', 'format']), `spans in tree order (${names})`);
  const margins = await page.$$eval('li.span', (s) => s.map((e) => e.style.marginLeft));
  expect(JSON.stringify(margins) === JSON.stringify(['0em', '2em', '2em', '4em']), `spans nested by parent (${margins})`);
  expect((await page.$$('li.span .bar')).length === 4, 'a timeline bar per span');
  const inputs = page.locator('li.span').nth(1).locator('details', { hasText: 'Inputs' });
  expect(!(await inputs.locator('pre').isVisible()), 'inputs folded at first');
  await inputs.locator('summary').click();
  expect((await inputs.locator('pre').textContent()).includes('what is tarn?'), 'the unfolded inputs of retrieve');
  expect((await page.textContent('table')).includes('relevance'), 'the feedback logged by the client shown');

  // Assessments from the page: add, update, delete.
  await page.fill('input[name=name]', 'helpful');
  await page.fill('form:has(legend) input[name=value]', 'true');
  await page.fill('input[name=rationale]', 'clear answer');
  await page.click('form:has(legend) button[type=submit]');
  const row = page.locator('tbody tr', { hasText: 'helpful' });
  expect((await row.textContent()).includes('clear answer') && (await row.textContent()).includes('HUMAN'), 'the added feedback, by a human');
  await row.locator('input[name=value]').fill('false');
  await row.locator('button[value=update]').click();
  expect((await page.locator('tbody tr', { hasText: 'helpful' }).locator('code').textContent()) === 'false', 'the updated value');
  await page.locator('tbody tr', { hasText: 'helpful' }).locator('button[value=delete]').click();
  expect((await page.locator('tbody tr', { hasText: 'helpful' }).count()) === 0, 'the feedback deleted');

  // The trace links to its run, whose row in the experiment links to the run's traces.
  await page.goto(`${url}/ws/${ws}/traces/${okTrace}`);
  await page.click(`.facts a:has-text("${run}")`);
  await page.waitForURL(/\/experiments\/[^/]+\?run=/);
  await page.click(`a[aria-label="Traces of ${run}"]`);
  await page.waitForURL(/\/traces\?filter=/);
  const linked = await page.$$eval('tbody tr td:first-child a', (as) => as.map((a) => a.textContent));
  expect(linked.length === 1 && linked[0] === okTrace, `the run's trace only (${linked})`);

  // The experiment's logged models, each linking to the traces made with it.
  await page.goto(`${url}/ws/${ws}/experiments/${experiment}`);
  const models = page.locator('table', { has: page.locator('caption', { hasText: 'Logged models' }) });
  expect((await models.textContent()).includes('assistant-v1'), 'the logged model listed on its experiment');
  await models.locator(`a[aria-label="Traces of ${model}"]`).click();
  await page.waitForURL(/\/traces\?filter=/);
  const made = await page.$$eval('tbody tr td:first-child a', (as) => as.map((a) => a.textContent));
  expect(made.length === 1 && made[0] === modelTrace, `the logged model's trace only (${made})`);

  // The experiment's evaluation datasets; a dataset's records, one made from a trace linking
  // to it.
  await page.goto(`${url}/ws/${ws}/experiments/${experiment}`);
  await page.click('text=Evaluation datasets of this experiment');
  await page.waitForURL(`**/experiments/${experiment}/datasets`);
  const listed = page.locator('tbody tr', { hasText: 'studio-qa' });
  expect((await listed.textContent()).includes('stage: draft') && (await listed.locator('td.num').textContent()) === '2', 'the dataset listed with its two records and tag');
  await listed.locator('a').click();
  await page.waitForURL(/\/datasets\/d-/);
  const records = await page.textContent('table');
  expect(records.includes('capital of France?') && records.includes('Paris'), `the record from a dict (${records})`);
  expect(records.includes('what is tarn?') && records.includes('a workspace'), `the record from the trace, with its expectation (${records})`);
  await page.click(`a:has-text("trace ${okTrace}")`);
  await page.waitForURL(`**/traces/${okTrace}`);

  // A Reader sees the trace, but cannot change its assessments.
  const reader = await login(browser, env('TARN_READER_TOKEN'));
  await reader.goto(`${url}/ws/${ws}/traces/${okTrace}`);
  expect((await reader.$$('li.span')).length === 4, 'a Reader to see the spans');
  await reader.fill('input[name=name]', 'sneaky');
  await reader.fill('form:has(legend) input[name=value]', '1');
  await reader.click('form:has(legend) button[type=submit]');
  expect((await reader.textContent('h1')) === 'Something went wrong' && (await reader.getByRole('alert').isVisible()), 'a Reader\'s assessment refused');
  await reader.goto(`${url}/ws/${ws}/traces/${okTrace}`);
  expect((await reader.locator('tbody tr', { hasText: 'sneaky' }).count()) === 0, 'nothing added by the Reader');
  console.log('studio traces: all checks passed');
} finally {
  await browser.close();
}
