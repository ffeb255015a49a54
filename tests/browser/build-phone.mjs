// Builds the browser phone's JsSIP bundle (host/phone/jssip.js, embedded in the binary)
// from the locked npm packages. With --check it only compares: CI fails when the
// committed bundle is not what the lockfile builds.
//
//   node tests/browser/build-phone.mjs [--check]

import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const entry = fileURLToPath(new URL('node_modules/jssip/lib/JsSIP.js', import.meta.url));
const target = fileURLToPath(new URL('../../host/phone/jssip.js', import.meta.url));
const result = await build({
  entryPoints: [entry], bundle: true, format: 'iife', globalName: 'JsSIP', write: false,
  platform: 'browser', minify: true, legalComments: 'inline', logLevel: 'error',
});
const built = result.outputFiles[0].text;
if (process.argv.includes('--check')) {
  const committed = readFileSync(target, 'utf8');
  if (committed !== built) {
    console.log('host/phone/jssip.js differs from what tests/browser/package-lock.json builds: run node tests/browser/build-phone.mjs');
    process.exit(1);
  }
  console.log('host/phone/jssip.js matches the lockfile');
} else {
  writeFileSync(target, built);
  console.log(`wrote host/phone/jssip.js (${built.length} bytes)`);
}
