// Drives Tarn's studio in real headless Chromium (Debian's `chromium`, through playwright-core)
// the way a user would: log in with a token, find a completed job, open its metric chart and
// log, compare two runs, stop and start a compute instance and open its JupyterLab, and
// test-invoke an online endpoint. Screenshots of the main pages go to $TARN_SCREENSHOTS when
// it is set. Exits non-zero, saying what it expected, at the first thing that is wrong.
//
//   TARN_URL=… TARN_TOKEN=… TARN_JOB=… TARN_JOB2=… TARN_INSTANCE=… TARN_ENDPOINT=… node studio.mjs

import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';

const env = (k) => {
  if (!process.env[k]) throw new Error(`${k} is not set`);
  return process.env[k];
};
const url = env('TARN_URL');
const token = env('TARN_TOKEN');
const job = env('TARN_JOB');
const job2 = env('TARN_JOB2');
const instance = env('TARN_INSTANCE');
const endpoint = env('TARN_ENDPOINT');
const schedule = env('TARN_SCHEDULE');
const scheduledJob = env('TARN_SCHEDULED_JOB');
const shots = process.env.TARN_SCREENSHOTS;
const ws = 'default';

function expect(ok, what) {
  if (!ok) throw new Error(`expected ${what}`);
  console.log(`ok: ${what}`);
}

async function shot(page, name) {
  if (!shots) return;
  mkdirSync(shots, { recursive: true });
  await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
}

/** Reloads until `test` holds (the controller acts in the background). */
async function until(page, test, what, seconds = 120) {
  const end = Date.now() + seconds * 1000;
  while (Date.now() < end) {
    if (await test()) return;
    await page.waitForTimeout(500);
    await page.reload();
  }
  throw new Error(`timed out waiting for ${what}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });

  // Not logged in: the login page, and a wrong token is refused.
  await page.goto(`${url}/ws/${ws}/jobs`);
  expect(page.url().includes('/login'), 'a visitor to be sent to the login page');
  await page.fill('#token', 'tarn_not-a-token');
  await page.click('button[type=submit]');
  expect(await page.getByRole('alert').textContent() === 'That token is not valid.', 'a wrong token to be refused');
  await page.fill('#token', token);
  await page.click('button[type=submit]');
  await page.waitForURL(`**/ws/${ws}/jobs`);
  expect(true, 'to land on the jobs page after logging in');

  // The address the stock MLflow client prints after a run ("View run … at: …") opens the
  // run's job page; an experiment's address opens the experiment.
  const runLink = env('TARN_MLFLOW_LINK');
  await page.goto(runLink);
  await page.waitForURL(`**/ws/${ws}/jobs/${job}`);
  expect((await page.textContent('h1')).includes(job), `the MLflow run link ${runLink} to open job ${job}`);
  const experimentLink = runLink.replace(/\/runs\/.*$/, '');
  await page.goto(experimentLink);
  await page.waitForURL(/\/experiments\/[^/]+$/);
  expect((await page.textContent('h1')).includes('studio-test'), `the MLflow experiment link to open the experiment`);
  await page.goto(`${url}/ws/${ws}/jobs`);
  // Keyboard: the first Tab reaches the skip link.
  await page.keyboard.press('Tab');
  expect(await page.evaluate(() => document.activeElement.textContent) === 'Skip to content', 'a skip link first in the tab order');

  // The completed job, with its status.
  const row = page.locator('tr', { has: page.getByRole('link', { name: job, exact: true }) });
  expect(await row.locator('.badge').textContent() === 'Completed', `job ${job} listed as Completed`);
  await page.evaluate(() => document.activeElement.blur());
  await shot(page, 'jobs');

  // Its page: a metric chart drawn from the history, and the log.
  await page.getByRole('link', { name: job, exact: true }).click();
  await page.waitForURL(`**/jobs/${job}`);
  const chart = page.locator('figure.chart', { hasText: 'loss' });
  const points = await chart.locator('polyline').getAttribute('points');
  expect(points && points.split(' ').length >= 100, 'a loss chart with its history (100+ points)');
  expect((await chart.locator('svg').getAttribute('aria-label')).includes('steps 0 to 199'), 'the chart described in text');
  expect((await page.locator('#log').textContent()).includes('epoch 199'), 'the job log on its page');
  await shot(page, 'job');

  // Two runs compared.
  await page.goto(`${url}/ws/${ws}/experiments`);
  await page.getByRole('link', { name: 'studio-test' }).click();
  await page.getByRole('checkbox', { name: `Compare ${job}` }).check();
  await page.getByRole('checkbox', { name: `Compare ${job2}` }).check();
  await page.getByRole('button', { name: 'Compare' }).click();
  const overlay = page.locator('figure.chart', { hasText: 'loss' });
  expect(await overlay.locator('polyline').count() === 2, 'both runs overlaid on one chart');
  expect(await page.locator('tr.differs', { hasText: 'lr' }).count() === 1, 'the differing parameter marked');
  await shot(page, 'compare');

  // The compute instance: stop, start, open JupyterLab.
  await page.goto(`${url}/ws/${ws}/computes`);
  const irow = () => page.locator('tr', { hasText: instance });
  await until(page, async () => (await irow().locator('.badge').textContent()) === 'Running', 'the instance to be Running');
  await shot(page, 'computes');
  await page.getByRole('button', { name: `Stop ${instance}` }).click();
  await until(page, async () => (await irow().locator('.badge').textContent()) === 'Stopped', 'the instance to stop');
  expect(true, 'the instance stopped from the studio');
  await page.getByRole('button', { name: `Start ${instance}` }).click();
  await until(page, async () => (await irow().locator('.badge').textContent()) === 'Running', 'the instance to start');
  const lab = await irow().getByRole('link', { name: 'Open JupyterLab' }).getAttribute('href');
  const status = await page.request.get(`${url}${lab}api/status`);
  expect(status.status() === 200 && (await status.json()).started, "JupyterLab's API through the proxy, with the session");
  await page.goto(`${url}${lab}lab`);
  await page.locator('.jp-LauncherCard').first().waitFor({ timeout: 60000 });
  expect(true, 'JupyterLab itself loaded in the browser, with its launcher');
  const config = JSON.parse(await page.locator('#jupyter-config-data').textContent());
  expect(config.token === '', "no JupyterLab token in the page (it never leaves the server)");
  await shot(page, 'jupyterlab');

  // A schedule: its next and last run, turned off and on again.
  await page.goto(`${url}/ws/${ws}/schedules`);
  const srow = () => page.locator('tr', { hasText: schedule });
  expect((await srow().locator('.badge').first().textContent()) === 'Enabled', 'the schedule listed as enabled');
  expect(await srow().getByRole('link', { name: scheduledJob }).count() === 1, 'its last run linked');
  expect(/\d{4}-\d{2}-\d{2} \d{2}:\d{2}/.test(await srow().locator('td').nth(3).textContent()), 'its next run shown');
  await shot(page, 'schedules');
  await page.getByRole('button', { name: `Disable ${schedule}` }).click();
  await until(page, async () => (await srow().locator('.badge').first().textContent()) === 'Disabled', 'the schedule to be disabled');
  expect((await srow().locator('td').nth(3).textContent()).trim() === '—', 'no next run while disabled');
  await page.getByRole('button', { name: `Enable ${schedule}` }).click();
  await until(page, async () => (await srow().locator('.badge').first().textContent()) === 'Enabled', 'the schedule to be enabled again');

  // The endpoint: test-invoke through the router.
  await page.goto(`${url}/ws/${ws}/endpoints/${endpoint}`);
  await page.fill('#test-body', '{"data": [1, 2, 3]}');
  await page.getByRole('button', { name: 'Send' }).click();
  const response = await page.locator('#test-response').textContent();
  expect(response.includes('"total": 60') || response.includes('"total":60'), `the scoring answer shown (${response})`);
  await shot(page, 'endpoint');

  for (const [name, path] of [['models', 'models'], ['datastores', 'datastores/workspaceblobstore']]) {
    await page.goto(`${url}/ws/${ws}/${path}`);
    await shot(page, name);
  }
  console.log('studio: all checks passed');
} finally {
  await browser.close();
}
