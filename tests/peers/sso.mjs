// Signs a person in through the test OpenID provider (tests/peers/oidc.mjs) in real headless
// Chromium (Debian's `chromium`, through playwright-core), the way they would: from Tarn's
// studio login page ("Sign in with …"), or from the link `tarn login` prints (the device flow).
// The provider's development pages ask for a login (any password) and a consent.
//
//   MODE=studio TARN_URL=… OIDC_USER=alice node sso.mjs    prints "signed in: <studio header>"
//   MODE=studio-refused TARN_URL=… OIDC_USER=alice node sso.mjs   prints "refused: <message>"
//   MODE=device LINK=… OIDC_USER=alice node sso.mjs        prints "device: confirmed"

import { chromium } from 'playwright-core';

const env = (k) => {
  if (!process.env[k]) throw new Error(`${k} is not set`);
  return process.env[k];
};
const mode = env('MODE');
const user = env('OIDC_USER');

/** Answers the provider's pages (login, consent, device confirmation) until `done` holds. */
async function walk(page, done) {
  for (let step = 0; step < 12; step += 1) {
    await page.waitForLoadState('load');
    if (await done()) return;
    if (await page.locator('input[name=login]').count()) {
      await page.fill('input[name=login]', user);
      await page.fill('input[name=password]', 'any password');
      await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
      continue;
    }
    const button = page.locator('button[type=submit], button[autofocus]').first();
    if (await button.count()) {
      await Promise.all([page.waitForNavigation(), button.click()]);
      continue;
    }
    await page.waitForTimeout(200);
  }
  throw new Error(`stuck at ${page.url()}: ${(await page.content()).slice(0, 800)}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
});
try {
  const page = await browser.newPage();
  if (mode === 'device') {
    await page.goto(env('LINK'));
    await walk(page, async () => /success|signed in|you can close/i.test(await page.content())
      && !(await page.locator('input[name=login]').count()));
    console.log('device: confirmed');
  } else {
    const url = env('TARN_URL');
    await page.goto(`${url}${process.env.TARN_NEXT || '/ws/default/jobs'}`);
    await Promise.all([page.waitForNavigation(), page.click('text=/Sign in with/')]);
    const atTarn = () => page.url().startsWith(url);
    if (mode === 'studio') {
      await walk(page, async () => atTarn() && !page.url().includes('/login'));
      if (!(await page.locator('header.top').count())) {
        const at = page.url();
        const body = (await page.content()).slice(0, 800);
        await page.goto(`${url}/`);
        throw new Error(`no studio page at ${at}: ${body}\nthe home page: ${(await page.content()).slice(0, 3000)}`);
      }
      const header = (await page.locator('header.top').textContent()).replace(/\s+/g, ' ');
      console.log(`signed in: ${header} at ${new URL(page.url()).pathname}`);
    } else {
      await walk(page, async () => atTarn() && (await page.getByRole('alert').count()) > 0);
      console.log(`refused: ${await page.getByRole('alert').textContent()}`);
    }
  }
} finally {
  await browser.close();
}
