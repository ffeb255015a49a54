// What the browser tests share: Debian's Chromium as this machine runs it, and JsSIP
// as one script for a page.

import { build } from 'esbuild';
import { chromium } from 'playwright-core';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';

/** Chromium as this machine runs it (see ../shared/CLIENTS.md). */
export async function launch() {
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      // A fake microphone (a beep), no permission prompt, and WebRTC over loopback with
      // plain 127.0.0.1 candidates.
      '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
      '--autoplay-policy=no-user-gesture-required', '--allow-loopback-in-peer-connection',
      '--disable-features=WebRtcHideLocalIpsWithMdns',
      // The TLS test's certificate is self-signed.
      '--ignore-certificate-errors'],
  });
}

/** JsSIP as one script for a page, exposing `JsSIP`. */
export async function jssipBundle() {
  const entry = fileURLToPath(new URL('node_modules/jssip/lib/JsSIP.js', import.meta.url));
  const result = await build({
    entryPoints: [entry], bundle: true, format: 'iife', globalName: 'JsSIP', write: false,
    platform: 'browser', logLevel: 'error',
  });
  return result.outputFiles[0].text;
}

/**
 * Run one browser test: `test(browser, bundle)` with Chromium launched and JsSIP
 * bundled; prints the verdict ("1 passed, 0 failed", or FAILED and why) and exits 1 on
 * failure.
 */
export async function runTest(test) {
  try {
    const bundle = await jssipBundle();
    const browser = await launch();
    try {
      await test(browser, bundle);
    } finally {
      await browser.close();
    }
    console.log('1 passed, 0 failed');
  } catch (error) {
    console.log(`FAILED: ${error.stack || error}`);
    process.exit(1);
  }
}

/** Wait until the test's caller writes `word` on a line of stdin (it has made the host
 * ready for the next step); throws if stdin closes first. */
export async function toldOnStdin(word) {
  const input = createInterface({ input: process.stdin });
  try {
    for await (const line of input) {
      if (line.trim() === word) return;
    }
    throw new Error(`stdin closed before "${word}"`);
  } finally {
    input.close();
  }
}
